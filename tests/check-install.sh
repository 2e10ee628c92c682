#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs into a staging root, then builds and runs a program through pkg-config alone.
set -eu
build=$1
example=$2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
meson install -C "$build" --destdir "$stage" --quiet >/dev/null
pc=$(find "$stage" -name spardl.pc | head -n 1)
[ -n "$pc" ] || { echo "spardl.pc was not installed"; exit 1; }
prefix=$(sed -n 's/^prefix=//p' "$pc")
pcdir=$(dirname "$pc")
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$stage$prefix" --cflags --libs spardl)
cc -std=c11 -Wall -Werror -o "$stage/example" "$example" $flags
libdir=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$stage$prefix" --variable=libdir spardl)
SPARDL_RANK=0 SPARDL_SIZE=1 LD_LIBRARY_PATH="$libdir" "$stage/example"

# The Python package: installed into the interpreter's site directory, it
# names the library installed with it; SPARDL_LIBRARY points at the staged copy.
[ $# -ge 4 ] || exit 0
py=$3 sitedir=$4
[ -f "$stage$sitedir/spardl/__init__.py" ] || { echo "the Python package was not installed in $sitedir"; exit 1; }
"$py" -c 'import numpy' 2>/dev/null || { echo "numpy missing: Python package not checked"; exit 0; }
SPARDL_RANK=0 SPARDL_SIZE=1 SPARDL_LIBRARY="$libdir/libspardl.so.0" PYTHONPATH="$stage$sitedir" "$py" - "$stage" <<'PY'
import os, sys
import numpy as np
import spardl
from spardl import _libpath
stage = sys.argv[1]
assert spardl.__file__.startswith(stage), spardl.__file__
assert os.path.exists(stage + _libpath.LIBRARY), "installed package names %s, not installed" % _libpath.LIBRARY
with spardl.Comm() as c, spardl.Plan(c, 100, density=0.1, average=False) as p:
    g = np.arange(100, dtype=np.float32)
    p.allreduce(g)
    assert np.count_nonzero(g) == 10 and g[99] == 99, g
print("python package: %s with %s" % (os.path.dirname(spardl.__file__), _libpath.LIBRARY))
PY
