#!/bin/sh
# SPDX-License-Identifier: MIT
# spardl against Open MPI's dense MPI_Allreduce on one host: one mpirun,
# the same data, the streaming floor timed in the same run (docs/PERFORMANCE.md).
# usage: benchmarks/compare-mpi.sh [BUILD_DIR [P [ARGS...]]]
#   e.g. GLIBC_TUNABLES=glibc.malloc.hugetlb=1 benchmarks/compare-mpi.sh build 2 -n 2^24 -d 0.01
#   ARGS: spardl-mpi-compare's options (-n, -d, --iters, --warmup, --data, --algos, --gap-ms; --help)
build=${1:-build}
np=${2:-2}
[ $# -ge 2 ] && shift 2 || shift $#
exe="$build/benchmarks/spardl-mpi-compare"
command -v mpirun >/dev/null 2>&1 || { echo "compare-mpi: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"; exit 77; }
[ -x "$exe" ] || { echo "compare-mpi: $exe not built (libopenmpi-dev missing when meson was set up?)"; exit 77; }
# Every rank gets the allocator setting of this shell; mpirun is told to pass it on.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec mpirun -np "$np" --oversubscribe ${GLIBC_TUNABLES:+-x GLIBC_TUNABLES} ${SPARDL_DEBUG+-x SPARDL_DEBUG} "$exe" "$@"
