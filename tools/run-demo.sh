#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds spardl and runs the demo: 4 ranks on the default transport, SparDL against dense allreduce.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Python package in build/python goes with Debian's interpreter, which has torch.
pyopt=()
[ -x /usr/bin/python3 ] && pyopt=(-Dpython=/usr/bin/python3)
[ -d build ] || meson setup build "${pyopt[@]}" >/dev/null
ninja -C build >/dev/null
exec build/tools/spardl-run -n "${RANKS:-4}" build/tools/spardl-bench --algos spardl,dense,topka \
	-n "${COUNT:-4194304}" -d "${DENSITY:-0.01}" "$@"
