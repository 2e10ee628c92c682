# SPDX-License-Identifier: MIT
"""Ok-Topk's own sparse allreduce (its Python code) against spardl, one MPI job.

Run by compare-oktopk.sh under mpirun (python -m mpi4py compare_oktopk.py ...);
not meant to be started by hand. Every rank:

  * imports Ok-Topk's allreducer.py/compression.py from --oktopk-dir (a copy
    that compare-oktopk.sh extracted from the Ok-Topk repository; nothing of
    Ok-Topk lives in this tree) and builds its AllReducer with the 'oktopk'
    compressor, as Ok-Topk's own training scripts do;
  * builds a spardl Plan (algo "spardl", residual on, average on, the same
    density) through the spardl Python binding, over spardl's own transport;
  * per round draws fresh N(0,1) float32 values (its own seed per rank),
    copies them into each method's buffer (not timed) and times one call of
    each: MPI barrier, call, wall time, the slowest rank's time (MPI MAX).
    The two methods alternate which goes first from round to round.
    With --floor the streaming floor (what one pass over the data costs)
    is timed last in every round, the same way, on the same data.

Both methods keep error-feedback state across calls (Ok-Topk: the residuals
of its compressor; spardl: the plan's residual) and average the result.

Ok-Topk needs CUDA in two places of its CPU-capable code path; they are
patched here, at run time, not in its files (see monkeypatch_cuda()).
"""

import argparse
import os
import queue
import re
import sys
import threading
import time

import numpy as np


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--oktopk-dir", required=True,
                    help="extracted Ok-Topk tree (holds BERT/bert and/or VGG)")
    ap.add_argument("--oktopk-desc", default="", help="where the tree came from (printed)")
    ap.add_argument("--variant", choices=("bert", "vgg"), default="bert",
                    help="bert: BERT/bert/allreducer.py, AllReducer.run(flat tensor), as BertAdam.step calls it "
                         "(default); vgg: VGG/allreducer.py, its allreducer thread fed through the message queues "
                         "as VGG/distributed_optimizer.py does")
    ap.add_argument("-n", type=str, default="2^24", help="floats per rank (2^k accepted)")
    ap.add_argument("-d", "--density", type=float, default=0.01)
    ap.add_argument("--iters", type=int, default=0,
                    help="timed rounds (default: one full Ok-Topk re-estimation period: "
                         "bert 128, vgg 64)")
    ap.add_argument("--warmup", type=int, default=-1,
                    help="untimed rounds first (default: one full period as for --iters, so that the timed "
                         "calls see Ok-Topk's thresholds in their steady state, past the start-up transient)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads per rank (spardl is single-threaded)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-call", action="store_true", help="also print every timed round")
    ap.add_argument("--floor", action="store_true",
                    help="also time the streaming floor each round, last (fc += data over n floats with numpy, "
                         "then a memset of n floats, as spardl-mpi-compare does) and print each method's ratio "
                         "to it")
    ap.add_argument("--split", action="store_true",
                    help="also print, per rank, the medians of spardl's own phase times (plan.stats()) over the "
                         "timed calls, apart for calls right after Ok-Topk's call and right after drawing the data")
    a = ap.parse_args()
    s = a.n.replace(" ", "")
    a.n = 2 ** int(s[2:]) if s.startswith("2^") else int(s)
    return a


def monkeypatch_cuda(torch):
    """Run-time stand-ins for the two CUDA-only calls on Ok-Topk's path.

    1. allreducer.py moves the received chunks "to the tensor's device" with
       tensor.cuda(new_tensor.device); for a CPU tensor that device is 'cpu',
       which a CPU-only torch rejects ("Invalid device, must be cuda device").
       Here .cuda(<a cpu device>) returns the tensor itself (what a move to the
       device it is already on does); any other .cuda() call is unchanged.
    2. VGG's allreducer thread calls torch.cuda.synchronize() once per
       iteration; without CUDA it raises. Here it is a no-op when CUDA is not
       available (nothing to wait for).
    Ok-Topk's files are not modified.
    """
    patched = []
    orig_cuda = torch.Tensor.cuda

    def cuda(self, device=None, non_blocking=False, **kw):
        if device is not None and torch.device(device).type == "cpu":
            return self
        return orig_cuda(self, device, non_blocking, **kw)

    torch.Tensor.cuda = cuda
    patched.append("Tensor.cuda(cpu device) -> identity")
    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *a, **k: None
        patched.append("torch.cuda.synchronize -> no-op (no CUDA)")
    return patched


def oktopk_intervals(path):
    """The re-estimation intervals of the 'oktopk' branch, read from the source."""
    src = open(path).read()
    at = src.index("self._compression.name == 'oktopk'")
    body = src[at:at + 4000]
    get = lambda name: int(re.search(r"^\s*%s\s*=\s*(\d+)" % name, body, re.M).group(1))
    dense = re.search(r"_allreduce_counter\[new_name\]\s*<\s*(-?\d+)", src[:at])
    return {"local": get("local_threshold_recompute_interval"),
            "global": get("global_threshold_recompute_interval"),
            "repartition": get("region_repartition_interval"),
            "dense_below": int(dense.group(1)) if dense else None}


class OkTopkBert:
    """BERT/bert/allreducer.py: AllReducer(compression, sparse, density).run(t)."""

    def __init__(self, ar_mod, comp_mod, n, density, torch):
        self.name = "myallreduce"
        self.ar = ar_mod.AllReducer(compression=comp_mod.compressors["oktopk"], sparse=True, density=density)
        self.t = torch.zeros(n, dtype=torch.float32)

    def counter(self):
        return self.ar._allreduce_counter[self.name]

    def call(self):
        return self.ar.run(self.t)


class OkTopkVgg:
    """VGG/allreducer.py: the allreducer thread with its two queues, as
    VGG/distributed_optimizer.py drives it (add_tensor, put name, wait DONE,
    get_result). One parameter of n floats (one merge group)."""

    def __init__(self, ar_mod, comp_mod, n, density, torch, start_counter):
        self.pname = "grad"
        p = torch.nn.Parameter(torch.zeros(n, dtype=torch.float32))
        self.q1, self.q2 = queue.Queue(), queue.Queue()
        self.ar = ar_mod.AllReducer([(self.pname, p)], threading.Lock(), threading.Lock(),
                                    comp_mod.compressors["oktopk"], sparse=True, density=density,
                                    msg_queue=self.q1, msg_queue2=self.q2)
        # Skip the dense phase (plain MPI_Allreduce for the first calls).
        self.ar._allreduce_counter[self.pname] = start_counter
        self.th = threading.Thread(name="allreducer", target=self.ar.run, daemon=True)
        self.th.start()
        self.t = torch.zeros(n, dtype=torch.float32)

    def counter(self):
        return self.ar._allreduce_counter[self.pname]

    def call(self):
        self.ar.add_tensor(self.pname, self.t)
        self.q1.put(self.pname)
        self.q2.get()
        return self.ar.get_result(self.pname)

    def stop(self):
        self.ar.stop()
        self.q1.put("STOP")
        self.th.join()


def main():
    a = parse_args()
    from mpi4py import MPI
    import torch

    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    torch.set_num_threads(a.torch_threads)
    patched = monkeypatch_cuda(torch)

    sub = {"bert": os.path.join("BERT", "bert"), "vgg": "VGG"}[a.variant]
    okdir = os.path.join(a.oktopk_dir, sub)
    sys.path.insert(0, okdir)
    import settings as ok_settings  # Ok-Topk's settings.py (logger)
    import logging
    ok_settings.logger.setLevel(logging.WARNING)  # its INFO lines from every rank
    import compression as ok_comp
    import allreducer as ok_ar
    if not os.path.realpath(ok_ar.__file__).startswith(os.path.realpath(okdir)):
        raise SystemExit("imported allreducer from %s, not from %s" % (ok_ar.__file__, okdir))
    iv = oktopk_intervals(ok_ar.__file__)

    import spardl

    n, d = a.n, a.density
    if a.iters <= 0:
        a.iters = max(iv["local"], iv["global"], iv["repartition"])
    if a.warmup < 0:
        a.warmup = max(iv["local"], iv["global"], iv["repartition"])
    # VGG: its first dense_below calls are dense MPI_Allreduce (warm-up of
    # training); the counter starts at dense_below so all calls are sparse.
    start = iv["dense_below"] if (a.variant == "vgg" and iv["dense_below"] and iv["dense_below"] > 0) else 0
    quiet = open(os.devnull, "w")
    so = sys.stdout
    sys.stdout = quiet  # VGG's constructor prints "total parameters"
    try:
        okt = (OkTopkBert(ok_ar, ok_comp, n, d, torch) if a.variant == "bert"
               else OkTopkVgg(ok_ar, ok_comp, n, d, torch, start))
    finally:
        sys.stdout = so

    sc = spardl.Comm()
    plan = spardl.Plan(sc, n, density=d, algo="spardl", residual=True, average=True)
    sbuf = np.zeros(n, dtype=np.float32)

    if a.floor:
        import ctypes
        # Allocated and touched here, never in a round.
        fdata, fc, fm = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32)

        def floor_pass():
            np.add(fc, fdata, out=fc)
            ctypes.memset(fm.ctypes.data, 0, fm.nbytes)
    t_fl = []
    rng = np.random.default_rng([a.seed, rank])
    data = np.empty(n, dtype=np.float32)
    rounds = a.warmup + a.iters
    t_ok, t_sp, ctr, nnz_ok, nnz_sp = [], [], [], [], []
    phases = ("total", "accumulate", "select", "reduce", "post", "wait", "output")
    split = []  # per timed spardl call: after Ok-Topk (1) or the data (0), its time, its phases

    def timed(fn):
        comm.Barrier()
        t0 = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t0
        return r, comm.allreduce(dt, op=MPI.MAX) * 1e3

    for it in range(rounds):
        rng.standard_normal(n, dtype=np.float32, out=data)
        for m in ((0, 1) if it % 2 == 0 else (1, 0)):
            if m == 0:
                c = okt.counter()
                okt.t.copy_(torch.from_numpy(data))
                r, ms = timed(okt.call)
                nz = int(torch.count_nonzero(r))
                if it >= a.warmup:
                    t_ok.append(ms)
                    ctr.append(c)
                    nnz_ok.append(nz)
            else:
                np.copyto(sbuf, data)
                s0 = plan.stats() if a.split else None
                _, ms = timed(lambda: plan.allreduce(sbuf))
                s1 = plan.stats() if a.split else None
                nz = int(np.count_nonzero(sbuf))
                if it >= a.warmup:
                    t_sp.append(ms)
                    nnz_sp.append(nz)
                    if a.split:
                        # Even rounds run Ok-Topk first, odd ones spardl first.
                        split.append((1 if it % 2 == 0 else 0, ms) +
                                     tuple((getattr(s1, f) - getattr(s0, f)) * 1e3 for f in phases))
        if a.floor:
            np.copyto(fdata, data)
            _, ms = timed(floor_pass)
            if it >= a.warmup:
                t_fl.append(ms)
    if a.variant == "vgg":
        okt.stop()
    info = plan.info()
    plan.close()
    sc.close()

    splits = comm.gather(split, root=0) if a.split else None
    if rank != 0:
        return
    t_ok, t_sp, ctr = np.array(t_ok), np.array(t_sp), np.array(ctr)
    reest = (ctr % iv["local"] == 0) | (ctr % iv["global"] == 0)
    repart = ctr % iv["repartition"] == 0
    special = reest | repart
    k = int(n * d)

    print("# Ok-Topk sparse allreduce vs spardl: P=%d ranks on one host, n=%d float32 (2^%g) per rank, "
          "density %g (k=%d), fresh N(0,1) floats per round (numpy default_rng, seed [%d, rank])"
          % (size, n, np.log2(n), d, k, a.seed))
    print("# GLIBC_TUNABLES=%s  torch %s, %d intra-op thread(s) per rank; mpi4py %s over %s"
          % (os.environ.get("GLIBC_TUNABLES", "(unset)"), torch.__version__, torch.get_num_threads(),
             __import__("mpi4py").__version__, MPI.Get_library_version().replace("\0", "").splitlines()[0].strip()))
    print("# Ok-Topk code: %s (%s, imported from %s)" % (a.oktopk_desc or a.oktopk_dir, sub, okdir))
    print("# Ok-Topk: variant %s, compressor 'oktopk', density %g; intervals read from its source: local "
          "threshold every %d calls, global threshold every %d, region repartition every %d%s"
          % (a.variant, d, iv["local"], iv["global"], iv["repartition"],
             "; its dense phase (calls < %d) skipped: counter set to %d" % (start, start) if start else
             "; no dense phase (dense only for counter < %s)" % iv["dense_below"]))
    print("# run-time patches of torch (not of Ok-Topk's files): %s" % "; ".join(patched))
    print("# spardl: %s, Plan(algo=spardl, residual=True, average=True), transport %s, k=%d"
          % (spardl.library_path, sc.transport, info.k))
    print("# %d warm-up rounds (Ok-Topk counter %d..%d, untimed), then %d timed rounds (counter %d..%d); "
          "time per call = slowest rank's wall time" % (a.warmup, start, start + a.warmup - 1, a.iters,
                                                         ctr[0], ctr[-1]))
    if a.per_call:
        print("# round counter okt_ms spardl_ms okt_nnz spardl_nnz what")
        for i in range(len(ctr)):
            what = []
            if ctr[i] % iv["local"] == 0:
                what.append("local-thr")
            if ctr[i] % iv["global"] == 0:
                what.append("global-thr")
            if repart[i]:
                what.append("repartition")
            print("  %3d %5d %9.2f %9.2f %8d %8d %s" % (i, ctr[i], t_ok[i], t_sp[i], nnz_ok[i], nnz_sp[i],
                                                   ",".join(what)))

    def row(name, t, nz):
        print("%-32s %5d %10.2f %10.2f %10.2f %10d" % (name, len(t), np.median(t), t.min(), t.max(),
                                                     int(np.median(nz))))

    print("%-32s %5s %10s %10s %10s %10s" % ("method", "calls", "median_ms", "min_ms", "max_ms", "nnz_med"))
    nnz_ok, nnz_sp = np.array(nnz_ok), np.array(nnz_sp)
    row("oktopk (all timed calls)", t_ok, nnz_ok)
    if (~special).any() and special.any():
        row("oktopk (steady calls only)", t_ok[~special], nnz_ok[~special])
    row("spardl", t_sp, nnz_sp)
    if a.floor:
        t_fl = np.array(t_fl)
        print("%-32s %5d %10.2f %10.2f %10.2f %10s" % ("floor (c += a, memset)", len(t_fl), np.median(t_fl),
                                                     t_fl.min(), t_fl.max(), "-"))
    for i in np.nonzero(special)[0]:
        what = []
        if ctr[i] % iv["local"] == 0:
            what.append("local+global threshold re-estimation" if ctr[i] % iv["global"] == 0
                        else "local threshold re-estimation")
        elif ctr[i] % iv["global"] == 0:
            what.append("global threshold re-estimation")
        if repart[i]:
            what.append("region repartition")
        print("# Ok-Topk call %d (counter %d): %s, %.2f ms" % (i, ctr[i], " + ".join(what), t_ok[i]))
    if a.split:
        print("# spardl's own split per rank (plan.stats(), ms per call, medians over the timed calls); "
              "call = the slowest rank's time, as above")
        print("%-5s %-16s %5s %8s | %8s %8s %8s %8s %8s %8s %8s" % (("rank", "after", "calls", "call") + phases))
        for r, rows in enumerate(splits):
            rows = np.array(rows)
            for after, what in ((1, "Ok-Topk's call"), (0, "drawing data")):
                q = rows[rows[:, 0] == after]
                if len(q):
                    print("%-5d %-16s %5d %8.2f | " % (r, what, len(q), np.median(q[:, 1])) +
                          " ".join("%8.3f" % np.median(q[:, 2 + i]) for i in range(len(phases))))
    if a.floor:
        print("ratio to the floor, median of the per-round ratios: Ok-Topk %.2f (steady calls %.2f); spardl %.2f"
              % (np.median(t_ok / t_fl), np.median((t_ok / t_fl)[~special]) if (~special).any() else np.nan,
                 np.median(t_sp / t_fl)))
    ms_sp = np.median(t_sp)
    rr = t_ok / t_sp  # per round: both methods on the same data, back to back
    print("ratio Ok-Topk / spardl, median of the per-round ratios (robust to slow spells of a shared "
          "machine): all calls %.2f" % np.median(rr)
          + ("; steady calls only %.2f" % np.median(rr[~special]) if (~special).any() else ""))
    print("ratio Ok-Topk / spardl (medians): all calls %.2f" % (np.median(t_ok) / ms_sp)
          + ("; steady calls only %.2f" % (np.median(t_ok[~special]) / ms_sp) if (~special).any() else "")
          + "; mean over all calls %.2f (Ok-Topk mean %.2f ms, spardl mean %.2f ms)"
          % (t_ok.mean() / t_sp.mean(), t_ok.mean(), t_sp.mean()))


if __name__ == "__main__":
    main()
