#!/bin/sh
# SPDX-License-Identifier: MIT
# The flight recorder: mp_errors makes calls fail (a peer exits mid-call);
# with SPARDL_TRACE_DIR set, each failing rank leaves its last events in a
# private file, and the step its failure names is the step of its last
# recorded wait.
set -eu
run=$1 mp_errors=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
SPARDL_TRACE_DIR="$dir" "$run" -n 4 --timeout 120 "$mp_errors" >"$dir/log" 2>&1 || { cat "$dir/log"; exit 1; }
n=0 bad=0
for f in "$dir"/spardl-flight-*-r*.txt; do
	[ -e "$f" ] || break
	n=$((n + 1))
	mode=$(stat -c %a "$f")
	fail=$(sed -n 's/^failure: //p' "$f")
	# "... (srs round 1, step 4 of call 0) ..." -> "call 0 step 4"
	want=$(echo "$fail" | sed -n 's/.*step \([0-9]*\) of call \([0-9]*\).*/call \2 step \1/p')
	last=$(grep ': wait for rank' "$f" | tail -n 1 || true)
	if [ "$mode" != 600 ] || [ -z "$fail" ] || [ "$(grep -c ' s call ' "$f")" -lt 1 ]; then
		echo "not ok: $f (mode $mode): no failure line or no events"; bad=1
	elif [ -n "$want" ] && ! echo "$last" | grep -q "$want "; then
		echo "not ok: $f: the failure names '$want' but the last wait is '$last'"; bad=1
	else
		echo "ok: $(basename "$f"): $fail"
	fi
done
[ "$n" -ge 1 ] || { echo "no flight recorder file was written"; cat "$dir/log"; exit 1; }
echo "$n flight recorder files checked"
exit $bad
