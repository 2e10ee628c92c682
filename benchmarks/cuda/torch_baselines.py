# SPDX-License-Identifier: MIT
"""Baselines for spardl-cuda-bench on the same GPU, in one run (rank 0 prints).

Under a launcher (spardl-run -n 2 python3 torch_baselines.py), with
SPARDL_BENCH_COUNT floats (default 2^24) of N(0,1) data per rank:
  - a device-to-device copy of the gradient (torch.clone);
  - torch.topk of |grad| at 1% (the selection a sparse allreduce makes);
  - torch.distributed's dense allreduce of the gradient (NCCL where each rank
    has its own GPU, else gloo on CUDA tensors).
Times are medians of 10 (after 2 warm-up calls), the slowest rank's.
"""

import math
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist

RANK = int(os.environ.get("SPARDL_RANK", "0"))
SIZE = int(os.environ.get("SPARDL_SIZE", "1"))
N = int(os.environ.get("SPARDL_BENCH_COUNT", str(1 << 24)))
ITERS, WARMUP = 10, 2


def timed(fn, dev):
    out = []
    for i in range(WARMUP + ITERS):
        torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize(dev)
        if i >= WARMUP:
            out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e3


def main():
    ndev = torch.cuda.device_count()
    if not torch.cuda.is_available() or ndev < 1:
        print("SKIP: torch %s has no usable CUDA device" % torch.__version__)
        raise SystemExit(77)
    dev = torch.device("cuda", RANK % ndev)
    torch.cuda.set_device(dev)
    own_gpus = ndev >= SIZE
    backend = "nccl" if own_gpus else "gloo"
    store = os.path.join(tempfile.gettempdir(), "spardl-torch-baselines-%s" % os.environ.get("SPARDL_JOB_ID", os.getppid()))
    dist.init_process_group(backend, init_method="file://" + store, rank=RANK, world_size=SIZE)
    g = torch.Generator(device=dev).manual_seed(1234 + RANK)
    x = torch.randn(N, device=dev, generator=g)
    k = max(1, math.ceil(0.01 * N))
    copy_ms = timed(lambda: x.clone(), dev)
    topk_ms = timed(lambda: torch.topk(x.abs(), k, sorted=False), dev)
    buf = x.clone()
    ar_ms = timed(lambda: dist.all_reduce(buf), dev)
    t = torch.tensor([copy_ms, topk_ms, ar_ms], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if RANK == 0:
        print("# torch %s on %s, %d ranks, n=%d, k=%d, N(0,1) floats, medians of %d" %
              (torch.__version__, torch.cuda.get_device_name(dev), SIZE, N, k, ITERS))
        print("d2d_copy_ms %.3f  topk_1pct_ms %.3f  dense_allreduce_%s_ms %.3f" % (t[0], t[1], backend, t[2]))
    dist.destroy_process_group()
    if RANK == 0:
        try:
            os.unlink(store)
        except OSError:
            pass


if __name__ == "__main__":
    main()
