#!/bin/sh
# SPDX-License-Identifier: MIT
# The simulator's charts: time per call against the number of ranks and
# against the density, for every algorithm, beside Ok-Topk's published cost.
# Writes the CSVs and PNGs (Debian's gnuplot) into OUT (docs/simulation).
# usage: tools/sim-charts.sh [BUILD_DIR [OUT]]
set -eu
build=${1:-build}
out=${2:-docs/simulation}
here=$(dirname "$0")
bench="$build/tools/spardl-bench"
mkdir -p "$out"
model="--alpha 2e-6 --link-gbps 100"
algos=spardl,spardl:teams=auto,topka,gtopk
"$bench" --simulate $model --ranks 4,8,16,32,64,128,256,512,1024,2048,4096 -n 25000000 -d 0.01 \
	--algos "$algos" --csv "$out/vs-ranks.csv" >/dev/null
"$bench" --simulate $model --ranks 256 -n 25000000 -d 0.0001,0.0003,0.001,0.003,0.01,0.03,0.1 \
	--algos "$algos" --csv "$out/vs-density.csv" >/dev/null
command -v gnuplot >/dev/null || { echo "sim-charts: gnuplot is not installed (apt-get install gnuplot-nox); CSVs are in $out"; exit 0; }
# One file per algorithm, so that gnuplot draws each as one line.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in vs-ranks vs-density; do
	for a in dense spardl spardl:teams=auto topka gtopk; do
		awk -F, -v a="$a" 'NR > 1 && $5 == a' "$out/$f.csv" >"$tmp/$f-$(echo "$a" | tr ':=' '__').csv"
	done
done
gnuplot -e "dir='$tmp'; out='$out'" "$here/sim-charts.gp"
echo "sim-charts: $out/time-vs-ranks.png, $out/time-vs-density.png"
