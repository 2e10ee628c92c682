#!/bin/bash
# SPDX-License-Identifier: MIT
# The GPU checks in one run, for a machine with an NVIDIA GPU, nvcc, meson,
# ninja and torch with CUDA, but none of spardl's -dev packages:
#   1. build with -Dcuda=enabled against headers and libraries unpacked from
#      .deb files (no root, nothing written outside the build);
#   2. the GPU selection kernels against the CPU path, bit for bit
#      (cuda-select), and their benchmark against torch.topk on the same
#      data (benchmarks/cuda/select_vs_torch.py, n = 2^26 and 2^24, one
#      block; spardl-cuda-select-bench with two blocks, SparDL's at P = 2);
#   3. the cuda suite (CUDA plans against host plans, bit for bit, P = 1..4
#      on one GPU; spardl-cuda-bench small) and the cudasim suite;
#   4. the torch test, whose CUDA part runs CUDA plans and the DDP hook on a
#      CUDA model against DDP's allreduce;
#   5. spardl-cuda-bench at P = 2, n = 2^24 and 2^26, and the torch baselines
#      on the same sizes (benchmarks/cuda/torch_baselines.py).
# Every step has a time limit and writes its log to OUTDIR as it goes.
# GPU_CHECK_ONLY=select stops after step 2.
#
# On a Debian machine with apt, fetch the packages first:
#   tools/gpu-check.sh --fetch DEBDIR
# Then on the GPU machine, in the source tree:
#   tools/gpu-check.sh DEBDIR OUTDIR
# Logs go to OUTDIR; the exit status is 0 only if every step passed.
set -u

if [ "${1:-}" = "--fetch" ]; then
	dir=${2:?usage: tools/gpu-check.sh --fetch DEBDIR}
	mkdir -p "$dir" && cd "$dir" || exit 1
	exec apt-get download check libsubunit-dev libsubunit0 libssl-dev libssl3
fi

debs=${1:?usage: tools/gpu-check.sh DEBDIR OUTDIR}
out=${2:?usage: tools/gpu-check.sh DEBDIR OUTDIR}
src=$(cd "$(dirname "$0")/.." && pwd)
debs=$(cd "$debs" && pwd)
mkdir -p "$out" && out=$(cd "$out" && pwd)
prefix=$(mktemp -d /tmp/spardl-deps.XXXXXX)
build=$src/build-gpu
py=${PYTHON:-python3}
status=0
: >"$out/summary.txt"
: >"$out/cuda-bench.txt"
: >"$out/torch-baselines.txt"
: >"$out/select-vs-torch.txt"

step() {
	echo "==== $1"
	echo "==== $1" >>"$out/summary.txt"
}

result() {
	echo "  -> $1" | tee -a "$out/summary.txt"
	case $1 in
	ok | "ok ("*) ;;
	*) status=1 ;;
	esac
}

# nvcc where the toolkit puts it, when PATH lacks it (meson needs it for
# the kernels).
command -v nvcc >/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && export PATH=$PATH:/usr/local/cuda/bin; }

step "environment"
{
	nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
	nvcc --version 2>&1 | tail -1
	meson --version 2>&1
	"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' 2>&1
} | tee "$out/environment.txt"

step "unpack $(ls "$debs"/*.deb | wc -l) packages into $prefix"
for f in "$debs"/*.deb; do
	dpkg -x "$f" "$prefix" || { result "dpkg -x $f failed"; exit 1; }
done
multi=$prefix/usr/lib/x86_64-linux-gnu
# The .pc files say prefix=/usr: the sysroot moves them under $prefix. Only
# these are searched (a sysroot would misplace the machine's own .pc files);
# optional dependencies found nowhere else (MPI) are left out of the build.
export PKG_CONFIG_LIBDIR=$multi/pkgconfig:$prefix/usr/share/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$prefix
export LIBRARY_PATH=$multi${LIBRARY_PATH:+:$LIBRARY_PATH}
export LD_LIBRARY_PATH=$multi${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
result ok

step "build (meson -Dcuda=enabled -Dverbs=disabled -Dhwloc=disabled)"
rm -rf "$build"
if meson setup "$build" "$src" -Dcuda=enabled -Dverbs=disabled -Dhwloc=disabled -Dpython="$(command -v "$py")" \
	>"$out/setup.log" 2>&1 && ninja -C "$build" >"$out/build.log" 2>&1; then
	result ok
else
	tail -30 "$out/setup.log" "$out/build.log" 2>/dev/null
	result "build failed (setup.log, build.log)"
	exit 1
fi

grep -E 'CUDA' "$out/setup.log"

step "cuda-select: the GPU selection against the CPU path, bit for bit"
if timeout 300 "$build/tests/cuda_select" >"$out/cuda-select.log" 2>&1; then
	result ok
else
	result "failed (cuda-select.log)"
fi
grep -v '^ok ' "$out/cuda-select.log" | head -40

step "GPU selection against torch.topk (same data, one run)"
for n in 67108864 16777216; do
	if timeout 240 "$py" "$src/benchmarks/cuda/select_vs_torch.py" "$build/tools/spardl-cuda-select-bench" $n \
		>>"$out/select-vs-torch.txt" 2>&1; then
		result "ok (n = $n)"
	else
		result "failed (n = $n, select-vs-torch.txt)"
	fi
done
if timeout 120 "$build/tools/spardl-cuda-select-bench" -n 67108864 -b 2 >>"$out/select-vs-torch.txt" 2>&1; then
	result "ok (two blocks)"
else
	result "failed (two blocks, select-vs-torch.txt)"
fi
cat "$out/select-vs-torch.txt"
# GPU_CHECK_ONLY=select: stop here (the kernels' checks and numbers only).
[ "${GPU_CHECK_ONLY:-}" = select ] && exit $status

step "suites cuda and cudasim"
if timeout 420 meson test -C "$build" --suite cuda --suite cudasim --print-errorlogs >"$out/cuda-tests.log" 2>&1; then
	result ok
else
	result "failed (cuda-tests.log)"
fi
grep -E '^ *[0-9]+/[0-9]+ ' "$out/cuda-tests.log"
grep -E 'Ok:|Fail:|Skipped:' "$out/cuda-tests.log"
cp "$build/meson-logs/testlog.txt" "$out/cuda-testlog.txt" 2>/dev/null

step "python suite (torch with CUDA tensors and the DDP hook)"
if timeout 300 meson test -C "$build" --suite python --print-errorlogs >"$out/python-tests.log" 2>&1; then
	result ok
else
	result "failed (python-tests.log)"
fi
grep -E '^ *[0-9]+/[0-9]+ |CUDA' "$out/python-tests.log" | head -20
cp "$build/meson-logs/testlog.txt" "$out/python-testlog.txt" 2>/dev/null
grep -iE 'cuda|skip' "$out/python-testlog.txt" | head -20

step "spardl-cuda-bench, P = 2"
for n in 16777216 67108864; do
	if "$build/tools/spardl-run" -n 2 --timeout 150 "$build/tools/spardl-cuda-bench" -n $n -d 0.01 -i 10 -w 2 \
		-a spardl,topka,dense >>"$out/cuda-bench.txt" 2>&1; then
		result "ok (n = $n)"
	else
		result "failed (n = $n, cuda-bench.txt)"
	fi
done
cat "$out/cuda-bench.txt"

step "torch baselines, P = 2"
for n in 16777216 67108864; do
	if SPARDL_BENCH_COUNT=$n "$build/tools/spardl-run" -n 2 --timeout 150 "$py" \
		"$src/benchmarks/cuda/torch_baselines.py" >>"$out/torch-baselines.txt" 2>&1; then
		result "ok (n = $n)"
	else
		result "failed (n = $n, torch-baselines.txt)"
	fi
done
cat "$out/torch-baselines.txt"
exit $status
