#!/bin/sh
# SPDX-License-Identifier: MIT
# Run by every rank of the virtual cluster (tests/vm/bench-cluster.sh): first
# ranks 0 and RPN (node 0 and node 1) measure the link with spardl-verbs lat
# and bw on their own 2-rank communicator, then all ranks run the benchmark.
# usage: cluster-bench.sh BUILD_DIR RANKS_PER_NODE BENCH_ARGS...
build=$1 rpn=$2
shift 2
if [ "$SPARDL_RANK" = 0 ] || [ "$SPARDL_RANK" = "$rpn" ]; then
	r=$((SPARDL_RANK / rpn))
	env -u SPARDL_TRACE SPARDL_RANK=$r SPARDL_SIZE=2 SPARDL_LOCAL_RANK=0 SPARDL_LOCAL_SIZE=1 \
		SPARDL_BOOTSTRAP=192.0.2.10:18601 "$build/tools/spardl-verbs" lat -s 8 -n 200 --json || exit 1
	env -u SPARDL_TRACE SPARDL_RANK=$r SPARDL_SIZE=2 SPARDL_LOCAL_RANK=0 SPARDL_LOCAL_SIZE=1 \
		SPARDL_BOOTSTRAP=192.0.2.10:18602 "$build/tools/spardl-verbs" bw -s 1048576 -n 20 -t 8 --json || exit 1
fi
exec "$build/tools/spardl-bench" "$@"
