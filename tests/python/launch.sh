#!/bin/sh
# SPDX-License-Identifier: MIT
# Run a Python test on P ranks through spardl-run, with the build tree's
# copy of the package first on PYTHONPATH and a private directory for
# torch.distributed's FileStore (no ports).
#   launch.sh PYTHON SPARDL_RUN BUILD_PYTHON_DIR P [--torch] SCRIPT [ARGS...]
set -eu
py=$1 run=$2 pydir=$3 np=$4
shift 4
if [ "$1" = --torch ]; then
	shift
	if ! "$py" -c 'import torch.distributed' 2>/dev/null; then
		echo "SKIP: $py cannot import torch.distributed (install python3-torch, or configure with -Dpython=/usr/bin/python3)"
		exit 77
	fi
fi
if ! "$py" -c 'import numpy' 2>/dev/null; then
	echo "SKIP: $py cannot import numpy (install python3-numpy)"
	exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export SPARDL_TEST_DIR="$dir"
export PYTHONPATH="$pydir${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=1
"$run" -n "$np" --timeout 500 -- "$py" "$@"
