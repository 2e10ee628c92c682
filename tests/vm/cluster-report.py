#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# The report of tests/vm/bench-cluster.sh: rank 0's lat, bw and spardl-bench
# JSON from the cluster's log, and the simulator fed the same parameters.
# usage: cluster-report.py LOG SPARDL_BENCH NODES RPN COUNT DENSITY [FIT_OUTPUT]
# FIT_OUTPUT: what `spardl-verbs trace --fit` said of the run's traces.
import json, re, subprocess, sys
log, bench, nodes, rpn, n, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
tfit = None
if len(sys.argv) > 7:
    m = re.search(r"fit: .* = (-?[0-9.]+) us \+ bytes / ([0-9.]+) MB/s, over \d+ writes between hosts", open(sys.argv[7]).read())
    if m:
        tfit = (float(m.group(1)) * 1e-6, float(m.group(2)) * 1e6)
lat = bw = sweep = None
text = ""
for line in open(log):
    m = re.match(r"\[node0\] \[0\] (.*)", line.rstrip("\n"))
    if m:
        text += m.group(1) + "\n"
dec = json.JSONDecoder()
pos = 0
while True:
    pos = text.find("{", pos)
    if pos < 0:
        break
    try:
        j, end = dec.raw_decode(text, pos)
    except ValueError:
        pos += 1
        continue
    pos = end
    if j.get("test") == "lat":
        lat = j["results"][0]["t_typical_us"] * 1e-6
    elif j.get("test") == "bw":
        bw = j["results"][0]["bw_avg_mibps"] * 1048576
    elif "points" in j:
        sweep = {p["algo"]: p for p in j["points"]}
if lat is None or bw is None or sweep is None:
    sys.exit("bench-cluster: no lat, bw or benchmark output from rank 0")
gamma = sweep["spardl"]["rank0_split_ms"]["accumulate"] * 1e-3 / n
P = nodes * rpn
def sim(beta, alpha=None):
    r = subprocess.run([bench, "--simulate", "--json", "--ranks", str(P), "--ranks-per-node", str(rpn),
                        "--alpha", repr(lat if alpha is None else alpha), "--beta", repr(beta), "--gamma", repr(gamma), "-n", str(n),
                        "-d", repr(d), "--algos", "spardl,topka"], check=True, capture_output=True, text=True)
    return {p["algo"]: p["time_ms"] for p in json.loads(r.stdout)["points"]}
idle = sim(bw)
# beta that makes the simulated dense ring as slow as the measured one
lo, hi = bw / 100, bw
for _ in range(60):
    mid = (lo * hi) ** 0.5
    if sim(mid)["dense"] > sweep["dense"]["median_ms"]:
        lo = mid
    else:
        hi = mid
fit = sim(hi)
# A negative intercept (queueing) is taken as no latency.
tr = sim(tfit[1], max(tfit[0], 0.0)) if tfit else None
meas = {a: sweep[a]["median_ms"] for a in ("dense", "spardl", "topka")}
print()
print("# P = %d (%d nodes x %d ranks), n = %d, density %g; link: alpha %.1f us (lat, 8 B typical), "
      "beta %.2f MB/s (bw, 1 MiB); gamma %.1f ns/element (SparDL's accumulate)" % (P, nodes, rpn, n, d, lat * 1e6, bw / 1e6, gamma * 1e9))
print("# fitted beta (simulated dense = measured dense): %.2f MB/s" % (hi / 1e6))
if tr:
    print("# from the run's traces (spardl-verbs trace --fit): alpha %.1f us, beta %.2f MB/s" % (tfit[0] * 1e6, tfit[1] / 1e6))
print("%-8s %12s %14s %14s %14s" % ("algo", "measured_ms", "sim_idle_ms", "sim_fitted_ms", "sim_trace_ms"))
for a in ("dense", "spardl", "topka"):
    print("%-8s %12.1f %14.1f %14.1f %14s" % (a, meas[a], idle[a], fit[a], "%.1f" % tr[a] if tr else "-"))
print("%-22s %9s %9s %7s %9s %7s %9s %7s" % ("ratio", "measured", "sim_idle", "error", "sim_fit", "error", "sim_trace", "error"))
for name, a, b in (("dense / spardl", "dense", "spardl"), ("topka / spardl", "topka", "spardl")):
    m, i, f = meas[a] / meas[b], idle[a] / idle[b], fit[a] / fit[b]
    line = "%-22s %9.2f %9.2f %6.0f%% %9.2f %6.0f%%" % (name, m, i, (i / m - 1) * 100, f, (f / m - 1) * 100)
    if tr:
        t = tr[a] / tr[b]
        line += " %9.2f %6.0f%%" % (t, (t / m - 1) * 100)
    print(line)
