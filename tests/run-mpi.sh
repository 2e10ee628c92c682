#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs a rank program under Open MPI's mpirun; skips (77) when mpirun is absent.
np=$1
shift
if ! command -v mpirun >/dev/null 2>&1; then
	echo "SKIP: mpirun not found (install openmpi-bin)"
	exit 77
fi
exec mpirun -np "$np" --oversubscribe "$@"
