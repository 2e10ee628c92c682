#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs a command inside a throwaway qemu VM with SoftRoCE (rdma_rxe), so real verbs work on hosts without RDMA.
#
# Usage: softroce-vm.sh [options] -- COMMAND [ARG...]
#        softroce-vm.sh [options] --check
#        softroce-vm.sh [options] --prepare
#
# The guest boots Debian's stock kernel, mounts the host's / over 9p, chroots
# into it and runs COMMAND in the host's current directory with device rxe0
# on dummy0 (2001:db8::1). Exit status: COMMAND's, 124 on timeout, 125 when
# the VM could not be set up, 77 when this host cannot run it at all (skip).
# See tests/vm/README.md.
set -eu
set -o pipefail

prog=${0##*/}
workdir=${SPARDL_VM_DIR:-${HOME:-/tmp}/.cache/spardl-vm}
timeout_s=${SPARDL_VM_TIMEOUT:-600}
mem=${SPARDL_VM_MEM:-3072}
smp=${SPARDL_VM_SMP:-2}
mode=run
envs=()
vde=
ip_addr=
mac=52:54:00:00:00:01
shape=
vm_name=localhost

# Modules whose dependency closure the guest needs. crc32_generic is no
# declared dependency of rdma_rxe, but `rdma link add` fails with ENOENT
# without it (rxe asks the crypto API for crc32 when it creates a device).
# rdma_ucm is what librdmacm needs; dummy gives dummy0.
# virtio_net and sch_netem serve the cluster mode (--vde): a NIC on a virtual
# switch, shaped with tc netem.
modules_wanted="virtio_pci 9pnet_virtio 9p crc32_generic rdma_ucm rdma_rxe dummy virtio_net sch_netem"

usage() {
	cat <<EOF
usage: $prog [options] -- COMMAND [ARG...]
       $prog [options] --check      boot and run an rping self test
       $prog [options] --prepare    only download and cache kernel and initrd
options:
  --timeout SECONDS   bound for the whole VM run (default $timeout_s; env SPARDL_VM_TIMEOUT)
  --workdir DIR       cache and scratch directory (default $workdir; env SPARDL_VM_DIR)
  --env NAME=VALUE    set NAME in COMMAND's environment (repeatable)
  --mem MIB           guest memory (default $mem; env SPARDL_VM_MEM)
  --smp N             guest CPUs (default $smp; env SPARDL_VM_SMP)
cluster mode (tests/vm/cluster.sh starts several such VMs):
  --vde DIR           a virtio NIC on the vde_switch listening at DIR; rxe0 goes on it
  --ip ADDR/PREFIX    its address (documentation ranges: 192.0.2.0/24, 2001:db8::/32)
  --mac MAC           its MAC address (default $mac)
  --shape "ARGS"      tc netem ARGS on its egress, e.g. "rate 100mbit delay 0.2ms"
  --name NAME         the guest's host name (default $vm_name)
Also: SPARDL_VM_ACCEL (tcg|kvm; default probes KVM), SPARDL_VM_APPEND (kernel args).
Exit status: COMMAND's; 124 timeout; 125 VM/setup failure; 77 cannot run here (skip).
EOF
}

say() { printf '%s: %s\n' "$prog" "$*" >&2; }
skip() { say "SKIP: $*"; exit 77; }
die() { say "error: $*"; exit 125; }

is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }

while [ $# -gt 0 ]; do
	case $1 in
	--timeout) [ $# -ge 2 ] || { usage >&2; exit 2; }; timeout_s=$2; shift 2 ;;
	--timeout=*) timeout_s=${1#*=}; shift ;;
	--workdir) [ $# -ge 2 ] || { usage >&2; exit 2; }; workdir=$2; shift 2 ;;
	--workdir=*) workdir=${1#*=}; shift ;;
	--env) [ $# -ge 2 ] || { usage >&2; exit 2; }; envs+=("$2"); shift 2 ;;
	--env=*) envs+=("${1#*=}"); shift ;;
	--mem) [ $# -ge 2 ] || { usage >&2; exit 2; }; mem=$2; shift 2 ;;
	--smp) [ $# -ge 2 ] || { usage >&2; exit 2; }; smp=$2; shift 2 ;;
	--vde) [ $# -ge 2 ] || { usage >&2; exit 2; }; vde=$2; shift 2 ;;
	--ip) [ $# -ge 2 ] || { usage >&2; exit 2; }; ip_addr=$2; shift 2 ;;
	--mac) [ $# -ge 2 ] || { usage >&2; exit 2; }; mac=$2; shift 2 ;;
	--shape) [ $# -ge 2 ] || { usage >&2; exit 2; }; shape=$2; shift 2 ;;
	--name) [ $# -ge 2 ] || { usage >&2; exit 2; }; vm_name=$2; shift 2 ;;
	--check) mode=check; shift ;;
	--prepare) mode=prepare; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	-*) say "unknown option: $1"; usage >&2; exit 2 ;;
	*) break ;;
	esac
done

if [ -n "$vde" ] && [ -z "$ip_addr" ]; then say "--vde needs --ip ADDR/PREFIX"; exit 2; fi
case $vm_name in '' | *[!A-Za-z0-9.-]*) say "--name: letters, digits, dots and dashes only"; exit 2 ;; esac
for v in "$timeout_s" "$mem" "$smp"; do
	is_uint "$v" && [ "$v" -gt 0 ] || { say "not a positive integer: $v"; exit 2; }
done
for e in ${envs[@]+"${envs[@]}"}; do
	case ${e%%=*} in
	'' | [0-9]* | *[!A-Za-z0-9_]*) say "--env wants NAME=VALUE, got: $e"; exit 2 ;;
	esac
	case $e in *=*) ;; *) say "--env wants NAME=VALUE, got: $e"; exit 2 ;; esac
done

if [ "$mode" = check ]; then
	[ $# -eq 0 ] || { say "--check takes no command"; exit 2; }
	# The server must be listening before the client connects; under TCG one
	# second is usually enough, the retry covers slow boots.
	set -- sh -c 'set -e
ibv_devices
ibv_devinfo
rping -s -a 2001:db8::1 -C 3 & srv=$!
sleep 1
ok=1
for i in 1 2 3 4 5; do
	if rping -c -a 2001:db8::1 -C 3 -v; then ok=0; break; fi
	sleep 1
done
wait "$srv" || ok=1
[ "$ok" -eq 0 ] && echo "softroce-vm check: OK"
exit "$ok"'
elif [ "$mode" = run ] && [ $# -eq 0 ]; then
	usage >&2
	exit 2
fi

# --- what this host must have ------------------------------------------------

[ "$(uname -m)" = x86_64 ] || skip "host is $(uname -m); this harness boots an amd64 kernel"
command -v dpkg >/dev/null 2>&1 && [ "$(dpkg --print-architecture)" = amd64 ] ||
	skip "needs a Debian/Ubuntu amd64 host (dpkg, apt) to fetch the kernel package"
missing=
for c in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static depmod:kmod modprobe:kmod \
	cpio:cpio apt-get:apt apt-cache:apt dpkg-deb:dpkg timeout:coreutils flock:util-linux \
	ip:iproute2 rdma:iproute2 ibv_devinfo:ibverbs-utils rping:rdmacm-utils; do
	command -v "${c%%:*}" >/dev/null 2>&1 || missing="$missing ${c#*:}"
done
[ -z "$missing" ] || skip "missing host packages:$missing"
busybox=$(command -v busybox)
# The non-static busybox package installs the same path; a dynamic one
# cannot run in the initrd.
case $(LC_ALL=C ldd "$busybox" 2>&1 || true) in
*'not a dynamic executable'* | *'statically linked'*) ;;
*) skip "$busybox is dynamically linked; install busybox-static" ;;
esac

if [ "$(id -u)" -eq 0 ]; then
	# Guest root creates files with its own uid; only a root qemu can chown.
	secmodel=passthrough
else
	# passthrough would fail every file creation (qemu cannot chown to the
	# guest's uid 0); "none" ignores that and files belong to this user.
	secmodel=none
fi

mkdir -p "$workdir" 2>/dev/null || skip "cannot create work dir $workdir"
workdir=$(cd "$workdir" && pwd -P)
[ -w "$workdir" ] || skip "work dir $workdir is not writable"

# --- kernel and initrd, cached ----------------------------------------------

tmp_paths=()
qemu_pid=
cleanup() {
	if [ -n "$qemu_pid" ]; then
		kill "$qemu_pid" 2>/dev/null || true
		wait "$qemu_pid" 2>/dev/null || true
		qemu_pid=
	fi
	for p in ${tmp_paths[@]+"${tmp_paths[@]}"}; do rm -rf -- "$p"; done
}
trap cleanup EXIT
trap 'say "interrupted"; cleanup; trap - EXIT; exit 130' INT
trap 'say "terminated"; cleanup; trap - EXIT; exit 143' TERM
trap 'say "hangup"; cleanup; trap - EXIT; exit 129' HUP

# Newest kernel already prepared in the cache, if any.
newest_cached() {
	local d best=
	for d in "$workdir"/kernels/*/ready; do
		[ -e "$d" ] || continue
		d=${d%/ready}
		best="$best${best:+
}${d##*/}"
	done
	[ -n "$best" ] && printf '%s\n' "$best" | sort -V | tail -n 1
}

# Downloads the kernel package and extracts vmlinuz plus the module closure
# into $workdir/kernels/VERSION (called with the lock held). Called as a
# condition, so set -e is off in here: every step checks for itself.
prepare_kernel() {
	local pkg=$1 ver=$2 t root m verb path name kdir
	kdir=$workdir/kernels/$ver
	t=$(mktemp -d "$workdir/prep.XXXXXX")
	tmp_paths+=("$t")
	say "preparing kernel $pkg (once; cached in $kdir)"
	# As root apt would hand the download to user _apt, which cannot write
	# to a mktemp dir; keep it as the caller.
	(cd "$t" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$pkg") >&2 ||
		return 1
	root=$t/root
	dpkg-deb -x "$t"/*.deb "$root" || return 1
	[ -f "$root/boot/vmlinuz-$ver" ] && [ -d "$root/lib/modules/$ver" ] || {
		say "$pkg has no vmlinuz-$ver or modules"
		return 1
	}
	# The .deb ships no modules.dep.
	depmod -b "$root" "$ver" || return 1
	mkdir -p "$t/out/modules" && : >"$t/out/modules/order" || return 1
	for m in $modules_wanted; do
		# -C /dev/null: the host's modprobe.d must not leak in (systemd's
		# "options dummy numdummies=0" would leave no dummy0).
		modprobe -d "$root" -S "$ver" -C /dev/null --show-depends "$m" >"$t/deps" || {
			say "module $m not found in $pkg"
			return 1
		}
		while read -r verb path _; do
			[ "$verb" = insmod ] || continue # "builtin NAME": nothing to load
			name=${path##*/}
			case $name in
			*.ko) cp "$path" "$t/out/modules/$name" ;;
			*.ko.xz) name=${name%.xz}; xz -dc "$path" >"$t/out/modules/$name" ;;
			*.ko.zst) name=${name%.zst}; zstd -qdc "$path" >"$t/out/modules/$name" ;;
			*.ko.gz) name=${name%.gz}; gzip -dc "$path" >"$t/out/modules/$name" ;;
			*) say "unexpected module file $path"; false ;;
			esac || return 1
			grep -qxF "$name" "$t/out/modules/order" || echo "$name" >>"$t/out/modules/order" ||
				return 1
		done <"$t/deps"
	done
	cp "$root/boot/vmlinuz-$ver" "$t/out/vmlinuz" &&
		echo "$pkg" >"$t/out/package" &&
		echo "$modules_wanted" >"$t/out/wanted" &&
		touch "$t/out/ready" &&
		rm -rf "$kdir" &&
		mv "$t/out" "$kdir" || return 1
	rm -rf "$t"
}

guest_init() {
	cat <<'EOF'
#!/bin/busybox sh
# /init of the spardl SoftRoCE VM; generated by tests/vm/softroce-vm.sh.
PATH=/bin
export PATH
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/console 2>&1
# Plain \n line ends on the host, as if the command had run there.
stty -F /dev/console -onlcr 2>/dev/null
# Keep kernel chatter off the console the command's output goes to.
dmesg -n 1
run_ok=0
fail() {
	echo "spardl-vm: guest setup failed: $*"
	if [ "$run_ok" = 1 ]; then echo "$*" >/run9/setup-failed; echo 125 >/run9/status; fi
	sync
	poweroff -f
}
while read -r m; do
	insmod "/modules/$m" || fail "insmod $m"
done </modules/order

o=trans=virtio,version=9p2000.L,msize=512000
# virtio probing may lag the insmod a little.
i=0
until mount -t 9p -o "$o" spardlrun /run9 2>/dev/null; do
	i=$((i + 1))
	[ $i -lt 50 ] || fail "mount 9p spardlrun"
	sleep 0.1
done
run_ok=1
mount -t 9p -o "$o" hostroot /newroot || fail "mount 9p hostroot"

# 9p cannot host unix sockets or fifos reliably and the host's /tmp is not
# ours: give the guest a tmpfs, but keep the /tmp entries the command needs
# (its working directory) visible from the host.
mount --bind /newroot/tmp /hosttmp || fail "bind /tmp"
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp || fail "tmpfs /tmp"
while read -r e; do
	[ -n "$e" ] && [ -e "/hosttmp/$e" ] || continue
	if [ -d "/hosttmp/$e" ]; then mkdir -p "/newroot/tmp/$e"; else : >"/newroot/tmp/$e"; fi
	mount --bind "/hosttmp/$e" "/newroot/tmp/$e" || fail "bind /tmp/$e"
done </run9/tmpbinds
mkdir /newroot/tmp/.spardl-vm
mount --bind /run9 /newroot/tmp/.spardl-vm || fail "bind run dir"

mount -t proc proc /newroot/proc || fail "proc"
mount -t sysfs sysfs /newroot/sys || fail "sysfs"
mount -t devtmpfs devtmpfs /newroot/dev || fail "devtmpfs"
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts || fail "devpts"
# shm_open and POSIX semaphores live here.
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm || fail "tmpfs /dev/shm"
ln -sf /proc/self/fd /newroot/dev/fd
ln -sf /proc/self/fd/0 /newroot/dev/stdin
ln -sf /proc/self/fd/1 /newroot/dev/stdout
ln -sf /proc/self/fd/2 /newroot/dev/stderr
# The host's /run (sockets, pid files) is not the guest's.
mount -t tmpfs -o mode=755 tmpfs /newroot/run || fail "tmpfs /run"
mkdir -p /newroot/run/lock
hostname "$(cat /run9/hostname 2>/dev/null || echo localhost)"

# Run the host's tools. Through env: busybox's chroot prefers its own applets
# for bare names, and busybox ip knows no "nodad" (nor does it have rdma).
c() { chroot /newroot /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
# Each exec of a host binary costs ~0.3 s under TCG: one ip batch. Bringing
# lo up adds 127.0.0.1 by itself; nodad makes the address usable at once.
# Documentation prefixes only (RFC 3849, RFC 5737); the VM has no NIC. The
# IPv4 one is for tools whose rdma_cm client is IPv4-only (perftest 4.5).
if [ -s /run9/net ]; then
	# Cluster mode: the virtio NIC on the virtual switch, MTU 1500 (larger
	# frames hung large RDMA writes over VDE), shaped with netem.
	addr=$(cat /run9/net)
	printf '%s\n' "link set lo up" "link set eth0 mtu 1500 up" "addr add $addr dev eth0" |
		c ip -batch - || fail "network setup of eth0 ($addr)"
	if [ -s /run9/shape ]; then
		c tc qdisc add dev eth0 root netem limit 100000 $(cat /run9/shape) || fail "tc netem $(cat /run9/shape)"
	fi
	c rdma link add rxe0 type rxe netdev eth0 || fail "rdma link add rxe0 (eth0)"
else
	[ -e /sys/class/net/dummy0 ] || ip link add dummy0 type dummy || fail "add dummy0"
	printf '%s\n' "link set lo up" "link set dummy0 mtu 4200 up" \
		"addr add 2001:db8::1/128 dev dummy0 nodad" "addr add 192.0.2.1/32 dev dummy0" |
		c ip -batch - || fail "network setup"
	c rdma link add rxe0 type rxe netdev dummy0 || fail "rdma link add rxe0"
fi
i=0
until grep -q ACTIVE /sys/class/infiniband/rxe0/ports/1/state 2>/dev/null; do
	i=$((i + 1))
	[ $i -lt 100 ] || fail "rxe0 port not ACTIVE"
	sleep 0.1
done

chroot /newroot /usr/bin/env -i /bin/sh /tmp/.spardl-vm/cmd.sh
rc=$?
if [ $rc -ne 0 ]; then
	echo "spardl-vm: command exited with status $rc; RDMA state follows"
	# One shell for all of it (execs are slow here). Every port query logs
	# "dummy0 speed is unknown"; drop that noise.
	c timeout 60 sh -c 'for d in "rdma link" "ibv_devinfo -v | head -80" \
		"rdma res show" "dmesg | grep -v \"speed is unknown\" | tail -50"; do
		echo "--- $d"; eval "$d"; done'
fi
echo $rc >/run9/status.tmp && mv /run9/status.tmp /run9/status
sync
# Not even the kernel's "reboot: Power down" on the console: the command's
# output may be TAP, where it is an unknown line.
echo 0 >/proc/sys/kernel/printk
poweroff -f
EOF
}

# Builds (or reuses) the initrd for kernel dir $1 and sets $initrd. Called
# as a condition too: every step checks for itself.
prepare_initrd() {
	local kdir=$1 t key
	key=$({
		guest_init
		cat "$kdir/modules/order"
		sha256sum <"$busybox"
	} | sha256sum | cut -c1-16)
	initrd=$kdir/initrd-$key.gz
	if [ ! -s "$initrd" ]; then
		t=$(mktemp -d "$workdir/prep.XXXXXX") || return 1
		tmp_paths+=("$t")
		(cd "$t" && mkdir -p root/bin root/modules &&
			cd root && mkdir -p proc sys dev tmp newroot run9 hosttmp) &&
			cp "$busybox" "$t/root/bin/busybox" &&
			cp "$kdir/modules/"* "$t/root/modules/" &&
			guest_init >"$t/root/init" &&
			chmod 755 "$t/root/init" "$t/root/bin/busybox" || return 1
		# /dev/console comes from the kernel's built-in initramfs, so no
		# device node (and no root) is needed here.
		(cd "$t/root" && find . -print | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
			gzip -6 >"$t/initrd.gz" || return 1
		mv "$t/initrd.gz" "$initrd" || return 1
		rm -rf "$t"
	fi
	# Initrds of other script versions, once no run can still be using them.
	find "$kdir" -maxdepth 1 -name 'initrd-*.gz' ! -name "${initrd##*/}" -mmin +1440 \
		-exec rm -f {} + 2>/dev/null || true
}

mkdir -p "$workdir/kernels" "$workdir/runs"
exec 9>"$workdir/lock"
flock 9
ver=
pkg=$(LC_ALL=C apt-cache depends linux-image-amd64 2>/dev/null |
	sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1) || pkg=
if [ -n "$pkg" ]; then
	ver=${pkg#linux-image-}
	if { [ ! -e "$workdir/kernels/$ver/ready" ] ||
		[ "$(cat "$workdir/kernels/$ver/wanted" 2>/dev/null)" != "$modules_wanted" ]; } &&
		! prepare_kernel "$pkg" "$ver"; then
		ver=$(newest_cached) || ver=
		[ -n "$ver" ] || skip "could not download/unpack $pkg (run apt-get update?)"
		say "using cached kernel $ver instead of $pkg"
	fi
else
	ver=$(newest_cached) || ver=
	[ -n "$ver" ] || skip "apt-cache cannot resolve linux-image-amd64 (run apt-get update; needs Debian amd64 archives)"
fi
kdir=$workdir/kernels/$ver
prepare_initrd "$kdir" || die "could not build the initrd"
flock -u 9
exec 9>&-

if [ "$mode" = prepare ]; then
	say "ready: $kdir/vmlinuz $initrd"
	exit 0
fi

# --- one run ------------------------------------------------------------------

# Run dirs of runs killed with SIGKILL (whose VMs the watchdog ended).
find "$workdir/runs" -mindepth 1 -maxdepth 1 -name 'run.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
run=$(mktemp -d "$workdir/runs/run.XXXXXX")
tmp_paths+=("$run")
chmod 755 "$run"

q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
esc() { printf '%s' "${1//,/,,}"; } # qemu option values double their commas

cwd=$(pwd -P)
# Keep the guest command's own timeout inside the host's so that diagnostics
# and the status still come out; boot takes ~5-10 s under TCG.
if [ "$timeout_s" -gt 60 ]; then gt=$((timeout_s - 30)); else gt=$((timeout_s / 2 + 1)); fi
{
	echo "# generated by $prog"
	echo "cd $(q "$cwd") || exit 125"
	echo "export PATH=$(q "${PATH:-/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin}")"
	echo "export HOME=$(q "${HOME:-/root}")"
	echo "export TERM=dumb"
	for e in ${envs[@]+"${envs[@]}"}; do echo "export ${e%%=*}=$(q "${e#*=}")"; done
	echo 'ulimit -l unlimited || echo "spardl-vm: cannot raise the memlock limit" >&2'
	printf 'exec timeout -k 5 %s' "$gt"
	for a in "$@"; do printf ' %s' "$(q "$a")"; done
	echo ' </dev/null'
} >"$run/cmd.sh"
case $cwd in
/tmp/?*) e=${cwd#/tmp/}; echo "${e%%/*}" >"$run/tmpbinds" ;;
*) : >"$run/tmpbinds" ;;
esac
echo "$vm_name" >"$run/hostname"
nic=(-nic none)
if [ -n "$vde" ]; then
	command -v vde_switch >/dev/null 2>&1 || skip "cluster mode needs Debian's vde2 (vde_switch)"
	[ -S "$vde/ctl" ] || die "no vde_switch listening at $vde (start: vde_switch -s $vde -d)"
	echo "$ip_addr" >"$run/net"
	printf '%s\n' "$shape" >"$run/shape"
	nic=(-netdev "vde,id=net0,sock=$(esc "$vde")" -device "virtio-net-pci,netdev=net0,mac=$mac")
fi

accel=
# /dev/kvm can exist and still fail (nested virtualisation without vmx: qemu
# aborts on "failed to set MSR"). Probe: a kernel with no root panics and the
# VM exits, in about a second when KVM works.
kvm_works() {
	[ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
	timeout 20 qemu-system-x86_64 -machine q35,accel=kvm -cpu max -m 256 \
		-display none -nodefaults -no-reboot -kernel "$kdir/vmlinuz" \
		-append "panic=-1 quiet" </dev/null >/dev/null 2>&1
}
if [ -n "${SPARDL_VM_ACCEL:-}" ]; then
	accel=",accel=$SPARDL_VM_ACCEL"
elif kvm_works 2>/dev/null; then
	accel=",accel=kvm"
fi


start=$(date +%s)
# Not -nographic: with it SeaBIOS writes terminal resets (ESC c, clear
# screen) to the serial console, which wipe a terminal and litter CI logs.
# timeout is our watchdog: it outlives this script if that is killed hard.
timeout -k 10 "$timeout_s" qemu-system-x86_64 \
	-machine "q35$accel" -cpu max -smp "$smp" -m "$mem" \
	-nodefaults -display none -serial stdio -monitor none -no-reboot \
	-kernel "$kdir/vmlinuz" -initrd "$(esc "$initrd")" \
	-append "console=ttyS0 quiet panic=-1 ${SPARDL_VM_APPEND:-}" \
	"${nic[@]}" \
	-virtfs "local,path=/,mount_tag=hostroot,security_model=$secmodel,id=hostroot,multidevs=remap" \
	-virtfs "local,path=$(esc "$run"),mount_tag=spardlrun,security_model=$secmodel,id=spardlrun" \
	</dev/null &
qemu_pid=$!
qrc=0
wait "$qemu_pid" || qrc=$?
qemu_pid=
elapsed=$(($(date +%s) - start))

if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
	say "timed out after ${timeout_s}s; VM killed"
	exit 124
fi
if [ ! -s "$run/status" ]; then
	die "the VM reported no exit status (qemu status $qrc after ${elapsed}s); see the console output above"
fi
[ ! -e "$run/setup-failed" ] || die "VM setup failed: $(cat "$run/setup-failed")"
rc=$(cat "$run/status")
is_uint "$rc" || die "bad status from VM: $rc"
if [ "$rc" -eq 124 ]; then
	say "command timed out in the VM after ${gt}s (VM run ${elapsed}s)"
elif [ "$rc" -ne 0 ]; then
	say "command exited with status $rc (VM run ${elapsed}s)"
fi
exit "$rc"
