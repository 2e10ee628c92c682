#!/bin/sh
# SPDX-License-Identifier: MIT
# Benchmarks in the SoftRoCE VM (run through softroce-vm.sh): spardl-verbs bw/lat against
# ib_write_bw/ib_write_lat, rounds interleaved in one boot, medians; then SparDL vs dense over verbs.
#
#   tests/vm/softroce-vm.sh --timeout 1500 -- tests/vm/bench-verbs.sh BUILD_DIR [ROUNDS]
#   tests/vm/softroce-vm.sh --timeout 900 -- tests/vm/bench-verbs.sh BUILD_DIR ROUNDS lat
#
# With "lat", only latency: ROUNDS interleaved pairs of ib_write_lat and
# spardl-verbs lat, 2000 iterations each, nothing else running in between.
#
# perftest reports MB/s in units of 2^20 bytes, as spardl-verbs does (MiB/s).
set -eu
build=${1:?usage: bench-verbs.sh BUILD_DIR [ROUNDS] [lat]}
rounds=${2:-5}
only=${3:-all}
here=$(cd "$(dirname "$0")" && pwd)
sizes="65536 262144 1048576 4194304"
bytes=33554432
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
json_num() { tr ',{}' '\n\n\n' | awk -F': ' -v k="\"$1\"" '$1 ~ k { print $2; exit }'; }

if [ "$only" = lat ]; then
	r=1
	while [ "$r" -le "$rounds" ]; do
		port=$((19000 + r))
		ib_write_lat -R -d rxe0 -p "$port" -F -s 8 -n 2000 >/dev/null 2>&1 &
		sleep 0.5
		ib_write_lat -R -d rxe0 -p "$port" -F -s 8 -n 2000 192.0.2.1 2>&1 | awk '$1 == 8 { print $5 }' >>"$tmp/ib_lat"
		wait
		"$build/tools/spardl-run" -n 2 --no-prefix "$build/tools/spardl-verbs" lat -s 8 -n 2000 --json >"$tmp/sl" 2>&1 || true
		json_num t_typical_us <"$tmp/sl" >>"$tmp/sp_lat"
		r=$((r + 1))
	done
	echo "# latency, 8 B, typical: $rounds interleaved pairs of 2000 iterations in one boot"
	echo "ib_write_lat: $(tr '\n' ' ' <"$tmp/ib_lat")"
	echo "spardl-verbs: $(tr '\n' ' ' <"$tmp/sp_lat")"
	a=$(median <"$tmp/ib_lat")
	b=$(median <"$tmp/sp_lat")
	printf 'medians: ib_write_lat %s us, spardl-verbs lat %s us, ratio %.2f\n' "$a" "$b" \
		"$(echo "$b $a" | awk '{ print ($2 > 0) ? $1 / $2 : 0 }')"
	exit 0
fi

r=1
while [ "$r" -le "$rounds" ]; do
	for s in $sizes; do
		n=$((bytes / s))
		[ "$n" -ge 5 ] || n=5
		PERFTEST_BW_SIZES=$s PERFTEST_BW_BYTES=$bytes PERFTEST_LAT_ITERS=1000 "$here/perftest.sh" >"$tmp/pt" 2>&1 || true
		awk -v s="$s" '$1 == "ib_write_bw" && $2 == s { print $5 }' "$tmp/pt" >>"$tmp/ib_bw.$s"
		awk '$1 == "ib_write_lat" { print $5 }' "$tmp/pt" | tr -d ',' >>"$tmp/ib_lat"
		"$build/tools/spardl-run" -n 2 --no-prefix "$build/tools/spardl-verbs" bw -s "$s" -n "$n" --json >"$tmp/sp" 2>&1 || true
		json_num bw_avg_mibps <"$tmp/sp" >>"$tmp/sp_bw.$s"
		"$build/tools/spardl-run" -n 2 --no-prefix "$build/tools/spardl-verbs" lat -s 8 -n 1000 --json >"$tmp/sl" 2>&1 || true
		json_num t_typical_us <"$tmp/sl" >>"$tmp/sp_lat"
	done
	r=$((r + 1))
done

echo "# SoftRoCE (rxe0 on dummy0, qemu TCG, 2 vCPU), one boot, $rounds rounds interleaved, medians"
printf '%-10s %14s %14s %8s\n' bytes "ib_write_bw" "spardl-verbs" ratio
for s in $sizes; do
	a=$(median <"$tmp/ib_bw.$s")
	b=$(median <"$tmp/sp_bw.$s")
	printf '%-10s %9s MiB/s %9s MiB/s %7.2f\n' "$s" "$a" "$b" "$(echo "$b $a" | awk '{ print ($2 > 0) ? $1 / $2 : 0 }')"
done
a=$(median <"$tmp/ib_lat")
b=$(median <"$tmp/sp_lat")
printf '%-10s %12s us %12s us %7.2f  (latency, 8 B, typical; ratio = spardl / perftest)\n' 8 "$a" "$b" \
	"$(echo "$b $a" | awk '{ print ($2 > 0) ? $1 / $2 : 0 }')"

echo
echo "# SparDL against dense over verbs: P = 4, n = 2^22, density 0.01"
SPARDL_TRANSPORT=verbs "$build/tools/spardl-run" -n 4 "$build/tools/spardl-bench" -n 4194304 -d 0.01 \
	--algos spardl,dense,topka --iters 10 --warmup 2
