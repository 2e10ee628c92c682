#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Train an MLP on Fashion-MNIST with DistributedDataParallel and spardl's hook.

    torchrun --nproc_per_node 4 --redirects 2 --tee 2 examples/fashion_mnist.py --method spardl

(--redirects 2 --tee 2 work around a crash of Debian's torchrun 1.13 on
Python 3.11.) Methods: dense (DDP's own allreduce), spardl, topka, gtopk;
--density, --teams, --no-residual, --warmup-steps, --local-momentum choose
the rest. The data
are the files of Debian's dataset-fashion-mnist package; nothing is
downloaded. Rank 0 prints progress (step, loss, ETA) and, with --csv,
writes test accuracy and loss against step and bytes sent.
Also runs under spardl-run or mpirun: without torchrun's MASTER_ADDR the
process group meets in a FileStore (--store).
"""

import argparse
import gzip
import math
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="spardl", choices=["dense", "spardl", "topka", "gtopk"])
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--teams", type=int, default=1)
    ap.add_argument("--no-residual", action="store_true", help="drop what is not delivered (no GRC)")
    ap.add_argument("--warmup-steps", type=int, default=0, help="dense steps before the sparse ones")
    ap.add_argument("--local-momentum", action="store_true",
                    help="momentum inside the hook (momentum correction, as DGC) instead of in the optimizer")
    ap.add_argument("--epochs", type=float, default=5)
    ap.add_argument("--batch-size", type=int, default=32, help="per rank")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--schedule", default="cosine", choices=["cosine", "constant"],
                    help="learning rate over the run: cosine decay to 0, or constant")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--subset", type=int, default=0, help="use only the first N training images")
    ap.add_argument("--eval-every", type=int, default=0, help="steps between test evaluations (0: 8 per epoch)")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--csv", default="", help="write the curve here (rank 0)")
    ap.add_argument("--label", default="", help="name of the run in the CSV")
    ap.add_argument("--store", default="", help="FileStore path when not under torchrun")
    ap.add_argument("--min-accuracy", type=float, default=0.0,
                    help="exit 1 unless the final test accuracy reaches this (a check)")
    return ap.parse_args()


def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise SystemExit("%s: not an IDX file of bytes (magic %#x)" % (path, magic))
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise SystemExit("%s: %d bytes of data, the header says %s" % (path, arr.size, dims))
    return arr.reshape(dims)


def load(data_dir):
    def one(name):
        p = os.path.join(data_dir, name)
        if not os.path.exists(p):
            raise SystemExit("%s is missing: install Debian's dataset-fashion-mnist (apt-get install "
                             "dataset-fashion-mnist) or pass --data DIR" % p)
        return load_idx(p)

    xtr = one("train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255.0
    ytr = one("train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = one("t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255.0
    yte = one("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    mean, std = xtr.mean(), xtr.std()
    return ((torch.from_numpy((xtr - mean) / std), torch.from_numpy(ytr)),
            (torch.from_numpy((xte - mean) / std), torch.from_numpy(yte)))


def model_fn():
    # 784-512-256-10: 535,818 parameters, so 1% is 5,359 of them.
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


def import_spardl_torch():
    """spardl.torch from the installed package, else from this checkout's build/ (tools/run-demo.sh)."""
    try:
        import spardl.torch
        return spardl.torch
    except ImportError as e:
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "python")
        if not os.path.isdir(os.path.join(here, "spardl")):
            raise SystemExit("cannot import spardl (%s): install it (meson install -C build) or put "
                             "<build>/python on PYTHONPATH" % e)
        sys.path.insert(0, os.path.normpath(here))
        import spardl.torch
        return spardl.torch


def init_group(args):
    if "MASTER_ADDR" in os.environ:  # torchrun
        dist.init_process_group("gloo")
    else:
        rank = int(os.environ.get("SPARDL_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
        size = int(os.environ.get("SPARDL_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1")))
        if size > 1 and not args.store:
            raise SystemExit("run under torchrun, or pass --store PATH (a file every rank can reach)")
        dist.init_process_group("gloo", init_method="file://" + (args.store or os.path.abspath(".fmnist-store")),
                                rank=rank, world_size=size)


def evaluate(model, test, rank, size):
    x, y = test
    xs, ys = x[rank::size], y[rank::size]
    model.eval()
    with torch.no_grad():
        out = model(xs)
        t = torch.tensor([nn.functional.cross_entropy(out, ys, reduction="sum").item(),
                          (out.argmax(1) == ys).sum().item(), float(len(ys))], dtype=torch.float64)
    model.train()
    dist.all_reduce(t)
    return t[0].item() / t[2].item(), t[1].item() / t[2].item()


def fmt_time(s):
    s = int(round(s))
    return "%dm%02ds" % (s // 60, s % 60) if s >= 60 else "%ds" % s


def main():
    args = parse()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    init_group(args)
    rank, size = dist.get_rank(), dist.get_world_size()
    train, test = load(args.data)
    if args.subset:
        train = (train[0][:args.subset], train[1][:args.subset])
    ntrain = len(train[1])
    gbatch = args.batch_size * size
    steps_per_epoch = ntrain // gbatch
    steps = int(math.ceil(args.epochs * steps_per_epoch))
    eval_every = args.eval_every or max(1, steps_per_epoch // 8)
    label = args.label or (args.method if args.method == "dense" else "%s-%g%%%s%s" % (
        args.method, 100 * args.density, "-d%d" % args.teams if args.teams > 1 else "",
        "-nores" if args.no_residual else "") + ("-mc" if args.local_momentum else ""))

    torch.manual_seed(args.seed)
    model = nn.parallel.DistributedDataParallel(model_fn())
    nparams = sum(p.numel() for p in model.parameters())
    state = None
    if args.method != "dense":
        sdt = import_spardl_torch()
        state = sdt.SparDLState(density=args.density, algo=args.method, teams=args.teams,
                                         warmup_steps=args.warmup_steps, residual=not args.no_residual,
                                         momentum=args.momentum if args.local_momentum else 0.0)
        model.register_comm_hook(state, sdt.sparse_allreduce_hook)
    if args.local_momentum and state is None:
        raise SystemExit("--local-momentum needs a sparse method (the hook keeps the momentum)")
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.0 if args.local_momentum else args.momentum)

    rows = []
    # Bytes each rank sends per dense step, by the ring allreduce model
    # (DDP's gloo allreduce is not instrumented): 2 (P-1)/P * 4 n.
    dense_bytes = 2.0 * (size - 1) / size * 4 * nparams
    sent = 0.0
    if rank == 0:
        print("%s: %d ranks, %d parameters, %d steps of %d images (%d per epoch), eval every %d"
              % (label, size, nparams, steps, gbatch, steps_per_epoch, eval_every), flush=True)

    def record(step, loss):
        test_loss, acc = evaluate(model.module, test, rank, size)
        rows.append((label, step, step / steps_per_epoch, loss, test_loss, acc, sent, train_time))
        return acc

    train_time = 0.0
    loss_avg = float("nan")
    record(0, float("nan"))
    t_start = time.time()
    perm = None
    for step in range(1, steps + 1):
        e, i = divmod(step - 1, steps_per_epoch)
        if i == 0:
            perm = torch.randperm(ntrain, generator=torch.Generator().manual_seed(args.seed * 1000 + e))
        idx = perm[i * gbatch + rank * args.batch_size:i * gbatch + (rank + 1) * args.batch_size]
        t0 = time.time()
        if args.schedule == "cosine":
            for g in opt.param_groups:
                g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(train[0][idx]), train[1][idx])
        loss.backward()
        opt.step()
        train_time += time.time() - t0
        if state is not None:
            b = torch.tensor([float(state.bytes_sent())], dtype=torch.float64)
            dist.all_reduce(b)
            # Warm-up steps ran DDP's own allreduce: counted by the ring model.
            sent = b.item() / size + dense_bytes * min(state.iteration, args.warmup_steps)
        else:
            sent = dense_bytes * step
        lv = loss.item()
        loss_avg = lv if math.isnan(loss_avg) else 0.9 * loss_avg + 0.1 * lv
        if not math.isfinite(lv):
            raise SystemExit("%s: the loss is %r at step %d" % (label, lv, step))
        if step % eval_every == 0 or step == steps:
            acc = record(step, loss_avg)
            if rank == 0:
                el = time.time() - t_start
                print("%s: step %d/%d epoch %.2f loss %.4f test acc %.4f  %s elapsed, ETA %s"
                      % (label, step, steps, step / steps_per_epoch, loss_avg, acc, fmt_time(el),
                         fmt_time(el / step * (steps - step))), flush=True)

    # Time per step: the slowest rank's mean over the training steps (evaluation excluded).
    t = torch.tensor([train_time / steps], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    final = rows[-1]
    if rank == 0:
        print("%s: final test accuracy %.4f, loss %.4f, %.2f ms per step, %.0f bytes per step per rank"
              % (label, final[5], final[4], 1e3 * t.item(), sent / steps), flush=True)
        if args.csv:
            new = not os.path.exists(args.csv)
            with open(args.csv, "a") as f:
                if new:
                    f.write("method,step,epoch,train_loss,test_loss,test_acc,bytes_per_rank,"
                            "step_time_s,bytes_source\n")
                for r in rows:
                    f.write("%s,%d,%.4f,%.6f,%.6f,%.6f,%.0f,%.6f,%s\n"
                            % (r[0], r[1], r[2], r[3], r[4], r[5], r[6], t.item(),
                               "ring-model" if state is None else
                               "measured+ring-model-warmup" if args.warmup_steps else "measured"))
    status = 0
    if final[5] < args.min_accuracy:
        if rank == 0:
            print("%s: test accuracy %.4f is below --min-accuracy %.4f" % (label, final[5], args.min_accuracy))
        status = 1
    dist.barrier()
    if state is not None:
        state.close()
    # torch 1.13 can deadlock tearing down DDP's gloo group at interpreter
    # exit (the Reducer's destructor waits for a gloo worker that needs the
    # GIL); everything is written, so leave without that teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
