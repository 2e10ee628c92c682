#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A virtual cluster for the verbs tests: NODES qemu VMs, each with its own
# virtio NIC and rxe0 on it, joined by a vde_switch, shaped with tc netem
# inside each VM (rate, delay, loss on the node's egress). COMMAND runs as
# RANKS_PER_NODE ranks on every node (ranks node*R .. node*R+R-1), over
# verbs, bootstrapping over TCP at node 0 (192.0.2.10).
#
# usage: cluster.sh [--nodes N] [--ranks-per-node R] [--rate RATE] [--delay D] [--loss PCT]
#                   [--timeout S] [--mem MIB] [--env NAME=VALUE]... -- COMMAND [ARG...]
# Exit status: the first failing rank's, 124 on timeout, 125 when the cluster
# could not be set up, 77 when this host cannot run it (skip, with the reason).
set -eu
set -o pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
prog=${0##*/}
nodes=4 rpn=2 rate=100mbit delay=0.2ms loss= timeout_s=900 mem=768
envs=()
usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case $1 in
	--nodes) nodes=$2; shift 2 ;;
	--ranks-per-node) rpn=$2; shift 2 ;;
	--rate) rate=$2; shift 2 ;;
	--delay) delay=$2; shift 2 ;;
	--loss) loss=$2; shift 2 ;;
	--timeout) timeout_s=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--env) envs+=(--env "$2"); shift 2 ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	*) echo "$prog: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
done
[ $# -gt 0 ] || { usage >&2; exit 2; }
case "$nodes$rpn$timeout_s$mem" in *[!0-9]*) echo "$prog: numbers expected" >&2; exit 2 ;; esac
[ "$nodes" -ge 2 ] && [ "$nodes" -le 16 ] || { echo "$prog: --nodes 2 to 16" >&2; exit 2; }
command -v vde_switch >/dev/null 2>&1 || { echo "$prog: SKIP: needs Debian's vde2 (vde_switch)" >&2; exit 77; }

say() { printf '%s: %s\n' "$prog" "$*" >&2; }
# Kernel and initrd once, before the VMs start side by side.
"$here/softroce-vm.sh" --prepare >&2 || exit $?

dir=$(mktemp -d)
pids=()
cleanup() {
	for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -s "$dir/sw.pid" ] && kill "$(cat "$dir/sw.pid")" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
vde_switch -s "$dir/sw" -d -p "$dir/sw.pid" >/dev/null 2>&1 || { say "vde_switch failed to start"; exit 125; }
for i in $(seq 1 50); do [ -S "$dir/sw/ctl" ] && break; sleep 0.1; done

size=$((nodes * rpn))
shape="rate $rate delay $delay${loss:+ loss $loss}"
key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
say "$nodes nodes x $rpn ranks (P = $size), each node's egress: netem $shape, MTU 1500"
start=$(date +%s)
for n in $(seq 0 $((nodes - 1))); do
	"$here/softroce-vm.sh" --smp 1 --mem "$mem" --timeout "$timeout_s" \
		--vde "$dir/sw" --ip "192.0.2.$((10 + n))/24" --mac "$(printf '52:54:00:00:00:%02x' $((16 + n)))" \
		--shape "$shape" --name "node$n" \
		--env SPARDL_TRANSPORT=verbs --env "SPARDL_BOOTSTRAP=192.0.2.10:18600" --env "SPARDL_JOB_KEY=$key" \
		${envs[@]+"${envs[@]}"} \
		-- sh "$here/cluster-node.sh" "$n" "$rpn" "$size" "$@" >"$dir/node$n.log" 2>&1 &
	pids+=($!)
done
status=0
for n in $(seq 0 $((nodes - 1))); do
	rc=0
	wait "${pids[$n]}" || rc=$?
	if [ $rc != 0 ] && [ $status = 0 ]; then status=$rc; fi
	sed "s/^/[node$n] /" "$dir/node$n.log"
	[ $rc = 0 ] || say "node $n exited with status $rc"
done
pids=()
say "cluster run: $(($(date +%s) - start)) s, status $status"
exit $status
