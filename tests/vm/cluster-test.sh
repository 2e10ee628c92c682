#!/bin/sh
# SPDX-License-Identifier: MIT
# The verbs suite's virtual-cluster test (run on the host): 4 VMs x 2 ranks
# on a shaped virtual switch. Every rank runs the multi-process allreduce
# test and a checked sweep of every algorithm with SPARDL_TRACE on; the
# ranks' traces (written to the host through the VMs' shared root) must then
# agree with the compiled schedules and name the four nodes. TAP output;
# skips (77) with the reason where no VM can be had.
# usage: cluster-test.sh BUILD_DIR
build=$(cd "${1:?usage: cluster-test.sh BUILD_DIR}" && pwd -P)
here=$(cd "$(dirname "$0")" && pwd -P)
tdir=$(mktemp -d "$build/cluster-trace.XXXXXX")
trap 'rm -rf "$tdir"' EXIT
"$here/cluster.sh" --nodes 4 --ranks-per-node 2 --rate 1gbit --delay 0.1ms --timeout 1200 \
	--env SPARDL_TIMEOUT=300 -- sh -c "
	$build/tests/mp_allreduce --quick &&
	SPARDL_TRACE=$tdir/c-%r.trace $build/tools/spardl-bench -n 65536 -d 0.01,1 --algos all --iters 2 \
		--warmup 1 --check --no-progress" >"$tdir/log" 2>&1
rc=$?
if [ $rc = 77 ]; then
	cat "$tdir/log" >&2
	exit 77
fi
echo "1..3"
bad=0
if [ $rc = 0 ] && [ "$(grep -c 'checks, 0 failures' "$tdir/log")" = 8 ]; then
	echo "ok 1 - P=8 on 4 VMs: every rank's allreduce checks pass"
else
	echo "not ok 1 - P=8 on 4 VMs (status $rc)"; bad=1
	sed 's/^/# /' "$tdir/log" | tail -n 60
fi
if [ $rc = 0 ] && ! grep -q 'FAILED' "$tdir/log" && grep -q 'spardl:teams=2 ' "$tdir/log"; then
	echo "ok 2 - checked sweep of every algorithm across the nodes"
else
	echo "not ok 2 - checked sweep across the nodes"; bad=1
fi
if "$build/tools/spardl-verbs" trace --chrome "$tdir/c.json" "$tdir"/c-*.trace >"$tdir/out" 2>&1 &&
	grep -q 'every write as scheduled' "$tdir/out" && grep -q 'node3' "$tdir/c.json" &&
	grep -q '"qpn":[1-9]' "$tdir/c.json"; then
	echo "ok 3 - the 8 ranks' traces agree with the schedules ($(grep '^check' "$tdir/out"))"
else
	echo "not ok 3 - cluster traces"; bad=1
	sed 's/^/# /' "$tdir/out" | tail -n 30
fi
exit $bad
