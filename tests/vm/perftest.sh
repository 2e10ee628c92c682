#!/bin/sh
# SPDX-License-Identifier: MIT
# Baseline RDMA WRITE bandwidth and latency on rxe0 (run inside the SoftRoCE VM via softroce-vm.sh).
#
#   tests/vm/softroce-vm.sh -- tests/vm/perftest.sh
#
# Runs perftest's ib_write_bw (64 KiB..4 MiB) and ib_write_lat (8 B) as
# server/client pairs over rdma_cm (-R) on dummy0 and prints one
# table. These numbers are the ceiling for any transport in the same boot;
# compare the library's tools against them there, never across runs.
# perftest 4.5's rdma_cm client resolves IPv4 only, hence the address
# 192.0.2.1 that the harness puts on dummy0 beside 2001:db8::1.
# Environment: PERFTEST_DEV (rxe0), PERFTEST_ADDR (192.0.2.1),
# PERFTEST_BW_SIZES ("65536 262144 1048576 4194304"), PERFTEST_BW_BYTES
# (bytes moved per size, 33554432), PERFTEST_LAT_ITERS (1000).
# Under TCG results are bimodal (e.g. ~95 or ~47 MB/s, lat ~9 us or a 4 ms
# tick) depending on how busy-polling and rxe's softirq work share the two
# vCPUs and on host load: repeat and compare medians.
set -eu

dev=${PERFTEST_DEV:-rxe0}
addr=${PERFTEST_ADDR:-192.0.2.1}
bw_sizes=${PERFTEST_BW_SIZES:-65536 262144 1048576 4194304}
bw_bytes=${PERFTEST_BW_BYTES:-33554432}
lat_iters=${PERFTEST_LAT_ITERS:-1000}
port=18515

for t in ib_write_bw ib_write_lat ibv_devices; do
	command -v "$t" >/dev/null 2>&1 || { echo "SKIP: $t not found (install perftest ibverbs-utils)"; exit 77; }
done
ibv_devices 2>/dev/null | grep -qw "$dev" ||
	{ echo "SKIP: no RDMA device $dev here; run me through tests/vm/softroce-vm.sh"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Runs one server/client pair; the client's report lands in $tmp/client.
# The server needs a moment to listen under TCG, so the client retries.
pair() {
	tool=$1
	shift
	port=$((port + 1))
	"$tool" -R -d "$dev" -p "$port" -F "$@" >"$tmp/server" 2>&1 &
	srv=$!
	sleep 0.3
	i=0
	until "$tool" -R -d "$dev" -p "$port" -F "$@" "$addr" >"$tmp/client" 2>&1; do
		i=$((i + 1))
		if [ $i -ge 10 ] || ! kill -0 "$srv" 2>/dev/null; then
			echo "perftest: $tool $* failed; client then server output:" >&2
			cat "$tmp/client" "$tmp/server" >&2
			kill "$srv" 2>/dev/null || true
			wait "$srv" 2>/dev/null || true
			return 1
		fi
		sleep 0.5
	done
	if ! wait "$srv"; then
		echo "perftest: $tool server failed:" >&2
		cat "$tmp/server" >&2
		return 1
	fi
}

# The result row is the one whose first field is the message size.
row() { awk -v s="$1" '$1 == s { print; exit }' "$tmp/client"; }

status=0
printf '%-12s %8s %6s  %s\n' test bytes iters result
for s in $bw_sizes; do
	n=$((bw_bytes / s))
	[ "$n" -ge 5 ] || n=5 # perftest's minimum
	if pair ib_write_bw -s "$s" -n "$n" && r=$(row "$s") && [ -n "$r" ]; then
		# #bytes #iterations BW-peak[MB/sec] BW-average[MB/sec] MsgRate[Mpps]
		set -- $r
		printf '%-12s %8s %6s  avg %s MB/s, peak %s MB/s, %s Mpps\n' ib_write_bw "$s" "$2" "$4" "$3" "$5"
	else
		printf '%-12s %8s %6s  FAILED\n' ib_write_bw "$s" "$n"
		status=1
	fi
done
if pair ib_write_lat -s 8 -n "$lat_iters" && r=$(row 8) && [ -n "$r" ]; then
	# #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9% [usec]
	set -- $r
	printf '%-12s %8s %6s  typical %s us, avg %s us, min %s us, p99 %s us\n' ib_write_lat 8 "$2" "$5" "$6" "$3" "$8"
else
	printf '%-12s %8s %6s  FAILED\n' ib_write_lat 8 "$lat_iters"
	status=1
fi
exit $status
