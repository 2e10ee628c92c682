#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Convergence study: dense DDP against spardl's methods on Fashion-MNIST.

    /usr/bin/python3 studies/convergence.py --epochs 5

Runs examples/fashion_mnist.py under torchrun on --nproc CPU ranks, once per
method, with the same seed, data order and steps, then writes into --out
(default docs/convergence):
  curves.csv        test accuracy and loss against step and bytes sent
  convergence.png   accuracy against step and against bytes sent per rank
  table.md          final accuracy, time per step, bytes per step per rank
Progress (step, loss, ETA) streams from rank 0 of each run.
"""

import argparse
import csv
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "examples", "fashion_mnist.py")

# (label, arguments of examples/fashion_mnist.py)
RUNS = [
    ("dense", ["--method", "dense"]),
    ("spardl-1%", ["--method", "spardl", "--density", "0.01"]),
    ("spardl-1%-d2", ["--method", "spardl", "--density", "0.01", "--teams", "2"]),
    ("spardl-1%-nores", ["--method", "spardl", "--density", "0.01", "--no-residual"]),
    ("topka-1%", ["--method", "topka", "--density", "0.01"]),
    ("gtopk-1%", ["--method", "gtopk", "--density", "0.01"]),
    ("spardl-0.1%", ["--method", "spardl", "--density", "0.001"]),
    ("spardl-10%", ["--method", "spardl", "--density", "0.1"]),
    # The 1% run after half an epoch of dense warm-up steps, and with the
    # momentum moved from the optimizer into the hook (DGC's momentum
    # correction and factor masking).
    ("spardl-1%-warmup", ["--method", "spardl", "--density", "0.01", "--warmup-steps", "234"]),
    ("spardl-1%-mc", ["--method", "spardl", "--density", "0.01", "--local-momentum"]),
]
DEFAULT = [label for label, _ in RUNS]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(label, extra, args, csv_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc),
           "--redirects", "2", "--tee", "2", "--rdzv_backend", "c10d",
           "--rdzv_endpoint", "127.0.0.1:%d" % free_port(), SCRIPT,
           "--epochs", str(args.epochs), "--seed", str(args.seed), "--csv", csv_path, "--label", label] + extra
    if args.subset:
        cmd += ["--subset", str(args.subset)]
    print("== %s: %s" % (label, " ".join(cmd[1:])), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        # Rank 0's progress, and every rank's stderr (torchrun --tee prefixes it with the rank).
        print("   " + line.rstrip(), flush=True)
    if p.wait():
        raise SystemExit("%s failed with status %d" % (label, p.returncode))


def table(rows, out_md):
    by = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)
    dense = by.get("dense", [None])[-1]
    lines = ["| method | final test accuracy | vs dense (points) | time per step | bytes per step per rank | bytes vs dense |",
             "|---|---|---|---|---|---|"]
    for label, _ in RUNS:
        if label not in by:
            continue
        last = by[label][-1]
        steps = int(last["step"])
        acc = float(last["test_acc"])
        bps = float(last["bytes_per_rank"]) / steps
        d = "" if dense is None or label == "dense" else "%+.2f" % (100 * (acc - float(dense["test_acc"])))
        ratio = "" if dense is None else "%.4f" % (bps / (float(dense["bytes_per_rank"]) / int(dense["step"])))
        src = {"measured": "", "ring-model": " (ring model)"}.get(last["bytes_source"], " (warm-up: ring model)")
        lines.append("| %s | %.2f%% | %s | %.1f ms | %s%s | %s |" % (
            label, 100 * acc, d, 1e3 * float(last["step_time_s"]), "{:,.0f}".format(bps), src, ratio))
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    return "\n".join(lines)


def plot(rows, out_png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(13, 5))
    for label, _ in RUNS:
        rs = [r for r in rows if r["method"] == label and int(r["step"]) > 0]
        if not rs:
            continue
        style = "-" if label.startswith(("dense", "spardl-1%")) else "--"
        ax[0].plot([int(r["step"]) for r in rs], [100 * float(r["test_acc"]) for r in rs], style, label=label)
        ax[1].plot([float(r["bytes_per_rank"]) for r in rs], [100 * float(r["test_acc"]) for r in rs], style,
                   label=label)
    ax[0].set_xlabel("step")
    ax[1].set_xlabel("bytes sent per rank (log)")
    ax[1].set_xscale("log")
    for a in ax:
        a.set_ylabel("test accuracy (%)")
        a.grid(True, alpha=0.3)
        a.set_ylim(70, 92)
        a.legend(fontsize=8)
    fig.suptitle("Fashion-MNIST, MLP 784-512-256-10, DDP on 4 CPU ranks")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=float, default=5)
    ap.add_argument("--nproc", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--subset", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "docs", "convergence"))
    ap.add_argument("--only", default="", help="comma-separated labels to run (default: all)")
    ap.add_argument("--plot-only", action="store_true", help="redraw from an existing curves.csv")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "curves.csv")
    if not args.plot_only:
        only = set(args.only.split(",")) if args.only else None
        if os.path.exists(csv_path) and only is None:
            os.remove(csv_path)
        if only is None:
            only = set(DEFAULT)
        t0 = time.time()
        for label, extra in RUNS:
            if label in only:
                run(label, extra, args, csv_path)
        print("study: %.0f s" % (time.time() - t0))
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    print(table(rows, os.path.join(args.out, "table.md")))
    plot(rows, os.path.join(args.out, "convergence.png"))
    print("wrote %s, %s, %s" % (csv_path, os.path.join(args.out, "table.md"),
                                os.path.join(args.out, "convergence.png")))


if __name__ == "__main__":
    main()
