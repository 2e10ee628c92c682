# SPDX-License-Identifier: MIT
# The PNGs of tools/sim-charts.sh: gnuplot -e "dir='PER_ALGO_CSVS'; out='docs/simulation'" tools/sim-charts.gp
set datafile separator ','
set terminal pngcairo size 900,560 font ',11' noenhanced
set key top left box opaque
set logscale xy
set grid
set ylabel 'time per call (ms), simulated'
# columns: 1 ranks, 3 density, 7 time_ms, 18 Ok-Topk's published cost (ms)

set output out.'/time-vs-ranks.png'
set title 'n = 25M, density 1%, 100 Gb/s per node, alpha = 2 us, communication only'
set xlabel 'ranks P'
plot dir.'/vs-ranks-dense.csv' using 1:7 with linespoints lw 2 title 'dense ring', \
     dir.'/vs-ranks-spardl.csv' using 1:7 with linespoints lw 2 title 'SparDL, 1 team', \
     dir.'/vs-ranks-spardl_teams_auto.csv' using 1:7 with linespoints lw 2 dt 2 title 'SparDL, teams chosen by the model', \
     dir.'/vs-ranks-topka.csv' using 1:7 with linespoints lw 2 title 'TopkA', \
     dir.'/vs-ranks-gtopk.csv' using 1:7 with linespoints lw 2 title 'gTopk', \
     dir.'/vs-ranks-dense.csv' using 1:18 with lines lw 2 dt 3 lc rgb 'black' title 'Ok-Topk, published cost'

set output out.'/time-vs-density.png'
set title 'P = 256, n = 25M, 100 Gb/s per node, alpha = 2 us, communication only'
set xlabel 'density k/n'
plot dir.'/vs-density-dense.csv' using 3:7 with linespoints lw 2 title 'dense ring', \
     dir.'/vs-density-spardl.csv' using 3:7 with linespoints lw 2 title 'SparDL, 1 team', \
     dir.'/vs-density-spardl_teams_auto.csv' using 3:7 with linespoints lw 2 dt 2 title 'SparDL, teams chosen by the model', \
     dir.'/vs-density-topka.csv' using 3:7 with linespoints lw 2 title 'TopkA', \
     dir.'/vs-density-gtopk.csv' using 3:7 with linespoints lw 2 title 'gTopk', \
     dir.'/vs-density-spardl.csv' using 3:18 with lines lw 2 dt 3 lc rgb 'black' title 'Ok-Topk, published cost'
