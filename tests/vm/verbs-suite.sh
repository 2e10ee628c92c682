#!/bin/sh
# SPDX-License-Identifier: MIT
# The verbs test suite (TAP): runs inside the SoftRoCE VM over the host's build tree.
# usage: verbs-suite.sh BUILD_DIR
build=${1:?usage: verbs-suite.sh BUILD_DIR}
run="$build/tools/spardl-run --timeout 600"
export SPARDL_TRANSPORT=verbs SPARDL_TIMEOUT=60 SPARDL_DEBUG=warn
n=0
failed=0
log=$(mktemp)

check() {
	name=$1
	shift
	n=$((n + 1))
	if "$@" >"$log" 2>&1; then
		echo "ok $n - $name"
	else
		echo "not ok $n - $name"
		sed 's/^/# /' "$log" | tail -40
		failed=$((failed + 1))
	fi
}

# A command that must fail quickly with a message containing $2.
fails_with() {
	want=$1
	shift
	if timeout 60 "$@" >"$log.out" 2>&1; then
		echo "unexpected success"
		cat "$log.out"
		return 1
	fi
	grep -q -- "$want" "$log.out" || { echo "message lacks '$want':"; cat "$log.out"; return 1; }
	cat "$log.out"
}

echo "1..19"
check "devices: rxe0 is listed and picked" sh -c "$build/tools/spardl-verbs devices | tee /dev/stderr | grep -q 'spardl would pick: rxe0 port 1'"
check "allreduce P=2, every algorithm and variant, large blocks" $run -n 2 "$build/tests/mp_allreduce"
for p in 3 4 5 6 8; do
	check "allreduce P=$p, teams, both SAG and SRS variants, dense, TopkA" $run -n $p "$build/tests/mp_allreduce" --quick
done
check "collective errors and a killed peer, P=4" $run -n 4 "$build/tests/mp_errors"
check "strangers at a listener are rejected with the reason; the job is unaffected, P=3" \
	$run -n 3 "$build/tests/mp_verbs_intruder"
check "a peer killed before each step: survivors roll back and resume, P=4" \
	"$build/tests/mp_rollback" --driver "$build/tools/spardl-run" --ranks 4 --quick
check "a rank's own call fails before each step: it tells its peers, every rank rolls back and resumes, P=4" \
	"$build/tests/mp_rollback" --driver "$build/tools/spardl-run" --ranks 4 --quick --local
check "every message in 4 KiB pieces, the dense ring's adds a piece at a time, P=3" \
	env SPARDL_MAX_WRITE=4096 $run -n 3 "$build/tests/mp_allreduce" --quick
check "the dense ring pipelined in 1 MiB pieces, results checked, P=2" \
	$run -n 2 "$build/tools/spardl-bench" -n 4194304 --iters 3 --warmup 1 --algos dense
check "a peer killed before a piece of each pipelined dense add: survivors roll back and resume, P=4" \
	env SPARDL_MAX_WRITE=64 "$build/tests/mp_rollback" --driver "$build/tools/spardl-run" --ranks 4 --only 5 --piece 3
check "a bad device name is a clear error" fails_with "SPARDL_VERBS_DEVICE names 'nosuch0'" \
	env SPARDL_VERBS_DEVICE=nosuch0 $run -n 2 "$build/tests/mp_allreduce" --quick
check "an excluded device leaves nothing: clear error" fails_with "no ACTIVE port" \
	env SPARDL_VERBS_DEVICE=^rxe0 $run -n 2 "$build/tests/mp_allreduce" --quick
check "bw and lat through the transport" sh -c "$run -n 2 $build/tools/spardl-verbs bw -n 50 -s 65536 --json && $run -n 2 $build/tools/spardl-verbs lat -n 100 --json"
check "SparDL bench over verbs, results checked" $run -n 4 "$build/tools/spardl-bench" -n 262144 -d 0.01 --iters 3 --warmup 1 --algos spardl,dense,topka
tdir=$(mktemp -d)
check "traced over verbs: writes with QP numbers and completions, as scheduled" sh -c "
	SPARDL_TRACE=$tdir/v-%r.trace $run -n 4 $build/tools/spardl-bench -n 65536 -d 0.01 --iters 2 --warmup 1 \
		--algos spardl,dense,gtopk --teams 2 &&
	$build/tools/spardl-verbs trace --chrome $tdir/v.json $tdir/v-*.trace | tee $tdir/out &&
	grep -q 'every write as scheduled' $tdir/out && grep -q '\"qpn\":[1-9]' $tdir/v.json &&
	grep -q '\"name\":\"completed\"' $tdir/v.json && grep -q 'connected' $tdir/v.json"
rm -rf "$tdir"
rm -f "$log" "$log.out"
[ "$failed" = 0 ]
