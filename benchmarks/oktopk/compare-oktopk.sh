#!/bin/sh
# SPDX-License-Identifier: MIT
# Ok-Topk's own sparse allreduce (its public Python code, mpi4py + torch)
# against spardl (its Python binding) in one mpirun on one host: the same
# fresh N(0,1) data each round, time per call = the slowest rank's, median.
#
# usage: benchmarks/oktopk/compare-oktopk.sh [--oktopk-repo PATH] [--build DIR] [--np P] [ARGS...]
#   PATH  the Ok-Topk repository (git clone https://github.com/Shigangli/Ok-Topk):
#         a git directory (bare or not; its HEAD is extracted with git archive)
#         or a plain checkout; default $OKTOPK_REPO.
#         Nothing of Ok-Topk is kept in this tree: it is extracted into a
#         temporary directory for the run and removed afterwards.
#   DIR   spardl build directory with python/spardl (default build)
#   P     ranks (default 2)
#   ARGS  passed to compare_oktopk.py: -n 2^24 -d 0.01 --variant bert|vgg
#         --iters I --warmup W --torch-threads T --per-call --split --floor
#   e.g. GLIBC_TUNABLES=glibc.malloc.hugetlb=1 benchmarks/oktopk/compare-oktopk.sh --oktopk-repo ../Ok-Topk -n 2^24
# PYTHON selects the interpreter (default /usr/bin/python3 when present: it
# has Debian's torch). Exit status 77: a prerequisite is missing.
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
repo=${OKTOPK_REPO:-}
build=
np=2
while [ $# -gt 0 ]; do
	case $1 in
	--oktopk-repo) repo=$2; shift 2 ;;
	--oktopk-repo=*) repo=${1#*=}; shift ;;
	--build) build=$2; shift 2 ;;
	--build=*) build=${1#*=}; shift ;;
	--np) np=$2; shift 2 ;;
	--np=*) np=${1#*=}; shift ;;
	-h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) break ;;
	esac
done
skip() { echo "compare-oktopk: $*; skipping"; exit 77; }

if [ -z "$PYTHON" ]; then
	if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
command -v mpirun >/dev/null 2>&1 || skip "mpirun not found (apt-get install openmpi-bin)"
command -v "$PYTHON" >/dev/null 2>&1 || skip "$PYTHON not found"
for m in numpy scipy torch mpi4py; do
	"$PYTHON" -c "import $m" >/dev/null 2>&1 || skip "$PYTHON cannot import $m (Ok-Topk needs numpy, scipy, torch, mpi4py: apt-get install python3-torch python3-scipy python3-mpi4py)"
done

if [ -z "$build" ]; then
	for b in build; do
		[ -f "$top/$b/python/spardl/__init__.py" ] && { build=$b; break; }
	done
	[ -n "$build" ] || skip "no spardl build with python/spardl under $top/build; pass --build DIR"
fi
case $build in /*) ;; *) build=$top/$build ;; esac
[ -f "$build/python/spardl/__init__.py" ] || skip "$build/python/spardl not found (a build with the Python package)"

[ -n "$repo" ] || skip "no Ok-Topk repository given: git clone https://github.com/Shigangli/Ok-Topk and pass --oktopk-repo PATH (or set OKTOPK_REPO)"
[ -e "$repo" ] || skip "Ok-Topk checkout $repo not found (pass --oktopk-repo PATH)"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/oktopk.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 && git -C "$repo" rev-parse -q --verify HEAD >/dev/null 2>&1; then
	commit=$(git -C "$repo" rev-parse HEAD)
	git -C "$repo" archive HEAD BERT/bert VGG 2>/dev/null | tar -x -C "$tmp" ||
		skip "git archive of BERT/bert and VGG from $repo failed"
	desc="git -C $repo archive HEAD ($commit) BERT/bert VGG, extracted into $tmp"
elif [ -f "$repo/BERT/bert/allreducer.py" ] || [ -f "$repo/VGG/allreducer.py" ]; then
	mkdir -p "$tmp/BERT" && for d in BERT/bert VGG; do
		[ -d "$repo/$d" ] && cp -R "$repo/$d" "$tmp/$d"
	done
	desc="copy of the checkout $repo (BERT/bert VGG) in $tmp"
else
	skip "$repo is neither a git repository with a HEAD nor an Ok-Topk checkout"
fi
for f in BERT/bert/allreducer.py BERT/bert/compression.py BERT/bert/settings.py BERT/bert/utils_com.py \
	VGG/allreducer.py VGG/compression.py VGG/settings.py VGG/utils.py; do
	[ -f "$tmp/$f" ] || skip "$f missing from the Ok-Topk tree at $repo"
done
echo "# Ok-Topk code fetched from $repo${commit:+ (HEAD $commit)} into $tmp (removed at exit)"

# Every rank gets this shell's allocator setting; mpirun is told to pass it on.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# A job key for spardl's rendezvous (else it warns that it is not authenticated).
if [ -z "$SPARDL_JOB_KEY" ] && [ -z "$SPARDL_JOB_KEY_FILE" ]; then
	(umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$tmp/job-key") &&
		export SPARDL_JOB_KEY_FILE="$tmp/job-key"
fi
# python -m mpi4py: an exception on one rank aborts the job instead of hanging it.
mpirun -np "$np" --oversubscribe ${GLIBC_TUNABLES:+-x GLIBC_TUNABLES} -x PYTHONPATH -x PYTHONDONTWRITEBYTECODE \
	-x OMP_NUM_THREADS ${SPARDL_DEBUG+-x SPARDL_DEBUG} ${SPARDL_JOB_KEY+-x SPARDL_JOB_KEY} \
	${SPARDL_JOB_KEY_FILE+-x SPARDL_JOB_KEY_FILE} \
	"$PYTHON" -m mpi4py "$here/compare_oktopk.py" --oktopk-dir "$tmp" --oktopk-desc "$desc" "$@"
