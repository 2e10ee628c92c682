#!/bin/sh
# SPDX-License-Identifier: MIT
# spardl-verbs schedule --check over a matrix of sizes and algorithms: every
# rank's compiled schedule agrees with every other's (each write has its
# receive slot, each slot one write), also with messages split into pieces.
# Invalid parameters fail with the library's message.
set -u
tool=$1
n=0 failed=0
run() {
	n=$((n + 1))
	if out=$("$tool" schedule --check "$@" 2>&1) && echo "$out" | grep -q "every write has its receive slot"; then
		echo "ok $n - $* : $(echo "$out" | tail -n 1 | cut -c1-60)"
	else
		failed=$((failed + 1))
		echo "not ok $n - $*"
		echo "$out" | tail -n 5 | sed 's/^/# /'
	fi
}
for p in 1 2 3 4 5 6 7 8 12 16 32; do
	for algo in spardl dense topka; do
		run -P $p --algo $algo --count 100000 --density 0.01
	done
	case $p in 1 | 2 | 4 | 8 | 16 | 32) run -P $p --algo gtopk --count 100000 --density 0.01 ;; esac
	run -P $p --algo spardl --srs sequential --count 5000 --density 0.05
	for t in 2 3 4; do
		[ $((p % t)) -eq 0 ] || continue
		run -P $p --algo spardl --teams $t --count 100000 --density 0.01
		case $t in 2 | 4) run -P $p --algo spardl --teams $t --sag recursive --count 100000 --density 0.01 ;; esac
	done
	run -P $p --algo spardl --count 100000 --density 0.01 --max-write 64
	run -P $p --algo dense --count 100000 --max-write 4096
done
# Invalid parameters: a clear message, exit status 1.
n=$((n + 1))
out=$("$tool" schedule -P 6 --algo gtopk --count 100 2>&1)
if [ $? -eq 1 ] && echo "$out" | grep -q "power-of-two"; then
	echo "ok $n - gtopk on 6 ranks refused: $out"
else
	failed=$((failed + 1))
	echo "not ok $n - gtopk on 6 ranks: $out"
fi
n=$((n + 1))
out=$("$tool" schedule -P 6 --teams 4 --count 100 2>&1)
if [ $? -eq 1 ] && echo "$out" | grep -q "does not divide"; then
	echo "ok $n - 4 teams of 6 ranks refused"
else
	failed=$((failed + 1))
	echo "not ok $n - 4 teams of 6 ranks: $out"
fi
echo "1..$n"
[ $failed -eq 0 ]
