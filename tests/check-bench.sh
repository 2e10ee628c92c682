#!/bin/sh
# SPDX-License-Identifier: MIT
# The benchmark sweep on shm: every algorithm spardl-bench knows at P = 4,
# several counts and densities, every result checked (conservation, the same
# result on every rank, the exact sum at density 1); the CSV has one row per
# point and every row passed its check; the JSON parses. TAP output.
set -u
run=$1 bench=$2
py=$(command -v python3 || true)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
n=0 bad=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); bad=1; echo "not ok $n - $1"; sed 's/^/# /' "$dir/out" | tail -n 30; }

if "$run" -n 4 --timeout 300 "$bench" --algos all -n 3000,2^16 -d 0.01,0.1,1 --iters 2 --warmup 1 --check \
	--csv "$dir/sweep.csv" --progress >"$dir/out" 2>"$dir/err"; then
	ok "sweep of every algorithm at P=4, 2 counts x 3 densities, checked"
else
	cat "$dir/err" >>"$dir/out"
	notok "sweep of every algorithm at P=4"
fi
# dense once per count, each other algorithm (7 at P=4) per count and density
rows=$(($(wc -l <"$dir/sweep.csv") - 1))
badrows=$(tail -n +2 "$dir/sweep.csv" | awk -F, '$21 != "ok" && $21 != "exact"' | wc -l)
exact=$(tail -n +2 "$dir/sweep.csv" | awk -F, '$21 == "exact"' | wc -l)
if [ "$rows" = $((2 * (1 + 7 * 3))) ] && [ "$badrows" = 0 ] && [ "$exact" -ge 12 ]; then
	ok "CSV: $rows points, every check passed, $exact exact at density 1"
else
	cp "$dir/sweep.csv" "$dir/out"
	notok "CSV: $rows points (want 44), $badrows failed checks, $exact exact"
fi
if grep -q '\[44/44\]' "$dir/err"; then
	ok "progress line reached 44/44"
else
	cp "$dir/err" "$dir/out"
	notok "progress line"
fi
if "$run" -n 3 --no-prefix --timeout 120 "$bench" --algos spardl,topka -n 5000 -d 0.05 --iters 2 --warmup 0 --json >"$dir/json" 2>"$dir/out" &&
	{ [ -z "$py" ] || "$py" -c 'import json, sys; d = json.load(open(sys.argv[1])); assert len(d["points"]) == 3 and all(p["check"] == "ok" for p in d["points"])' "$dir/json" 2>>"$dir/out"; }; then
	ok "P=3 JSON output${py:+ parses, 3 points, checks ok}"
else
	cat "$dir/json" >>"$dir/out"
	notok "P=3 JSON output"
fi
for data in int normal; do
	if "$run" -n 2 --timeout 120 "$bench" --algos spardl,topka -n 2^16 --iters 3 --warmup 1 --floor --data $data \
		--csv "$dir/floor.csv" >"$dir/out" 2>&1 && grep -q '# floor, n=65536' "$dir/out" &&
		[ "$(tail -n +2 "$dir/floor.csv" | awk -F, -v d=$data '$23 == d && $24 > 0 && $25 > 0 && ($21 == "ok")' | wc -l)" = 3 ]; then
		ok "--floor --data $data: the streaming floor timed, every point's ratio to it, checks ok"
	else
		cat "$dir/floor.csv" >>"$dir/out" 2>/dev/null
		notok "--floor --data $data"
	fi
done
if "$run" -n 3 --timeout 60 "$bench" --algos gtopk -n 5000 --iters 1 >"$dir/out" 2>&1; then
	notok "gTopk at P=3 should fail"
elif grep -q 'power-of-two' "$dir/out"; then
	ok "gTopk at P=3 fails naming the power-of-two rule"
else
	notok "gTopk at P=3: no clear message"
fi
if "$bench" --algos nosuch -n 10 >"$dir/out" 2>&1; then
	notok "an unknown algorithm should fail"
elif grep -q "unknown algorithm 'nosuch'" "$dir/out"; then
	ok "an unknown algorithm is named"
else
	notok "an unknown algorithm: no clear message"
fi
echo "1..$n"
exit $bad
