#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds spardl and runs the demo: 4 ranks on the default transport, SparDL against dense allreduce.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
exec build/tools/spardl-run -n "${RANKS:-4}" build/tools/spardl-bench --algos spardl,dense,topka \
	-n "${COUNT:-4194304}" -d "${DENSITY:-0.01}" "$@"
