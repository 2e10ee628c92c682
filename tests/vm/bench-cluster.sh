#!/bin/sh
# SPDX-License-Identifier: MIT
# The virtual-cluster benchmark (docs/PERFORMANCE.md): one boot of NODES VMs x
# RPN ranks on a shaped virtual switch; ranks 0 and RPN measure the link
# (spardl-verbs lat and bw: alpha and beta), then every rank runs spardl-bench
# (dense, SparDL, TopkA) with SPARDL_TRACE on. The host then feeds the
# simulator the same parameters and prints measured against predicted ratios:
# with the idle link's alpha and beta, with beta fitted to the measured dense
# time, and with alpha and beta fitted to the run's traces (trace --fit).
# usage: bench-cluster.sh [BUILD_DIR [NODES RPN RATE DELAY COUNT DENSITY ITERS]]
set -eu
build=$(cd "${1:-build}" && pwd -P)
nodes=${2:-4} rpn=${3:-2} rate=${4:-100mbit} delay=${5:-0.2ms} count=${6:-4194304} density=${7:-0.01}
iters=${8:-5}
here=$(cd "$(dirname "$0")" && pwd -P)
out=$(mktemp)
# Traces go to the build tree, which the VMs share with the host.
tdir=$(mktemp -d "$build/bench-cluster-trace.XXXXXX")
trap 'rm -rf "$out" "$tdir"' EXIT
"$here/cluster.sh" --nodes "$nodes" --ranks-per-node "$rpn" --rate "$rate" --delay "$delay" --timeout 1800 \
	--env SPARDL_TIMEOUT=1200 --env "SPARDL_TRACE=$tdir/b-%r.trace" -- sh "$here/cluster-bench.sh" "$build" "$rpn" -n "$count" -d "$density" \
	--algos spardl,topka --iters "$iters" --warmup 1 --no-check --no-progress --json | tee "$out"
"$build/tools/spardl-verbs" trace --fit "$tdir"/b-*.trace | tee "$tdir/fit"
python3 "$here/cluster-report.py" "$out" "$build/tools/spardl-bench" "$nodes" "$rpn" "$count" "$density" "$tdir/fit"
