# SPDX-License-Identifier: MIT
"""spardl.torch: the DDP hook against DDP's own allreduce, on P ranks (gloo).

  - Comm over the process group (no second rendezvous);
  - density 1.0: the same parameters as DDP's default allreduce after 20 steps;
  - density 0.05: every step, for every parameter,
        sum_r (grad_r + old residual_r) == P * result + sum_r new residual_r
    including the step where DDP rebuilds its buckets;
  - bucket rebuild: new plans take over the residuals, old plans are released;
  - warm-up steps are dense and create no plan;
  - a checkpoint restores every residual into a fresh model and state;
  - bad arguments and tensors on other devices raise SpardlError;
  - where torch has CUDA: CUDA plans match host plans bit for bit, and the
    hook on a CUDA model matches DDP's allreduce at density 1.0.
"""

import copy
import io
import os

import numpy as np
import torch
import torch.nn as nn

import spardl
import spardl.torch as sdt
from common import RANK, SIZE, check, finish, init_torch, raises

dist = init_torch()
E = spardl.SpardlError

# Comm over the default group.
comm = spardl.Comm.from_process_group()
check(comm.rank == RANK and comm.size == SIZE, "Comm.from_process_group(): rank %d of %d over %s"
      % (comm.rank, comm.size, comm.transport))
plan = spardl.Plan(comm, 10, density=1.0, algo="dense", average=False)
t = torch.full((10,), float(RANK + 1))
plan.allreduce(t)
check(torch.equal(t, torch.full((10,), float(SIZE * (SIZE + 1) // 2))), "a plan on it sums CPU tensors in place")
idx, val = plan.allreduce_sparse(torch.ones(10))
check(isinstance(idx, torch.Tensor) and idx.dtype == torch.int64 and torch.equal(val, torch.full((10,), float(SIZE))),
      "allreduce_sparse on a tensor returns tensors")
raises(lambda: plan.allreduce(torch.zeros(10, dtype=torch.float64)), E, "float32 only", "a float64 tensor")
raises(lambda: plan.allreduce(torch.zeros(10, device="meta")), E, "plan holds host memory", "a non-CPU (meta) tensor")
raises(lambda: plan.allreduce(torch.zeros(20)[::2]), E, "not contiguous", "a strided tensor")
plan.close()
comm.close()


class FakeBucket:
    def __init__(self, t):
        self.t = t

    def buffer(self):
        return self.t

    def is_last(self):
        return True


raises(lambda: sdt.sparse_allreduce_hook(sdt.SparDLState(), FakeBucket(torch.zeros(4, device="meta"))),
       E, "CPU or CUDA buckets", "the hook on a meta bucket")
raises(lambda: sdt.SparDLState(density=0), E, "density must be in (0, 1]", "SparDLState(density=0)")
raises(lambda: sdt.SparDLState(warmup_steps=-1), E, "warmup_steps", "SparDLState(warmup_steps=-1)")


def make_model(seed=0):
    torch.manual_seed(seed)
    # ~0.9M parameters: one bucket in DDP's first iteration, two after its rebuild.
    return nn.Sequential(nn.Linear(100, 3000), nn.ReLU(), nn.Linear(3000, 200), nn.ReLU(), nn.Linear(200, 10))


def batch(step):
    g = torch.Generator().manual_seed(1000 * step + RANK)
    return torch.randn(16, 100, generator=g), torch.randint(0, 10, (16,), generator=g)


def ddp_of(model):
    return nn.parallel.DistributedDataParallel(model, bucket_cap_mb=1)


def train_step(ddp, opt, step):
    x, y = batch(step)
    opt.zero_grad()
    nn.functional.cross_entropy(ddp(x), y).backward()
    opt.step()


# ---- density 1.0 against DDP's default allreduce ----
ref = ddp_of(make_model())
hooked = ddp_of(make_model())
state = sdt.SparDLState(density=1.0)
hooked.register_comm_hook(state, sdt.sparse_allreduce_hook)
opt_r = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
opt_h = torch.optim.SGD(hooked.parameters(), lr=0.05, momentum=0.9)
for step in range(20):
    train_step(ref, opt_r, step)
    train_step(hooked, opt_h, step)
diff = max((a - b).abs().max().item() for a, b in zip(ref.parameters(), hooked.parameters()))
scale = max(a.abs().max().item() for a in ref.parameters())
check(diff <= 1e-5 * scale, "density 1.0: parameters match DDP's allreduce after 20 steps (max diff %.3g, scale %.3g)"
      % (diff, scale))
state.close()


# ---- density 0.05: conservation per parameter, every step; the bucket rebuild ----
class Recorder:
    """Wraps the hook: per parameter, this step's gradient and delivered result."""

    def __init__(self):
        self.grad, self.out, self.keys = {}, {}, []

    def hook(self, st, bucket):
        names = [st._layout(bucket, bucket.buffer().numel())]
        g = bucket.buffer().clone()
        fut = sdt.sparse_allreduce_hook(st, bucket)
        out = fut.wait()
        for sid, off, numel, _ in names[0]:
            self.grad[sid] = g[off:off + numel].clone()
            self.out[sid] = out[off:off + numel].clone()
        self.keys.append((bucket.index(), bucket.buffer().numel()))
        return fut


def allsum(t):
    t = t.clone()
    dist.all_reduce(t)
    return t


def conserved(st, rec, before, after):
    """Worst relative error of sum(g + old) == P * out + sum(new) over parameters."""
    worst = 0.0
    for sid in rec.grad:
        zero = torch.zeros_like(rec.grad[sid])
        lhs = allsum(rec.grad[sid] + before.get(sid, zero).reshape(-1))
        rhs = SIZE * rec.out[sid] + allsum(after.get(sid, zero).reshape(-1))
        scale = allsum(rec.grad[sid].abs()).max().item() + 1e-30
        worst = max(worst, (lhs - rhs).abs().max().item() / scale)
    return worst


# Warm-up steps are DDP's dense allreduce; spardl starts after them.
model = ddp_of(make_model(3))
state = sdt.SparDLState(density=0.05, warmup_steps=2)
model.register_comm_hook(state, sdt.sparse_allreduce_hook)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for step in range(2):
    train_step(model, opt, step)
check(state.iteration == 2 and not state.plans() and state.bytes_sent() == 0,
      "warm-up: 2 dense steps, no plan created")
train_step(model, opt, 2)
check(len(state.plans()) > 0 and (state.bytes_sent() > 0) == (SIZE > 1), "after the warm-up the steps go through spardl")
state.close()

model = ddp_of(make_model(1))
state = sdt.SparDLState(density=0.05)
rec = Recorder()
model.register_comm_hook(state, rec.hook)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
keys = []
for step in range(6):
    before = state.residuals()
    rec.grad, rec.out, rec.keys = {}, {}, []
    train_step(model, opt, step)
    after = state.residuals()
    w = conserved(state, rec, before, after)
    keys.append(list(rec.keys))
    check(w < 1e-5, "step %d, buckets %s: sum of grad + residual == P * result + sum of residuals (rel err %.2g)"
          % (step, rec.keys, w))
    nz = sum(int((rec.out[s] != 0).sum()) for s in rec.out)
    total = sum(rec.out[s].numel() for s in rec.out)
    check(0 < nz <= 0.05 * total * SIZE + 64, "step %d: %d of %d entries delivered" % (step, nz, total))
check(keys[0] != keys[1], "DDP rebuilt its buckets after its first step: %s -> %s (the step above conserved every residual across it)" % (keys[0], keys[1]))
check(len(state.plans()) == len(keys[-1]), "one live plan per bucket after the rebuild (%d)" % len(state.plans()))
check((state.bytes_sent() > 0) == (SIZE > 1), "bytes_sent() counts the traffic: %d bytes" % state.bytes_sent())
res_total = sum(float(r.abs().sum()) for r in state.residuals().values())
check(res_total > 0, "residuals are held between steps (sum |r| = %.3g)" % res_total)

# ---- checkpoint and restore ----
buf = io.BytesIO()
torch.save({"model": model.module.state_dict(), "spardl": state.state_dict()}, buf)
saved = state.residuals()
buf.seek(0)
ck = torch.load(buf)
model2 = ddp_of(make_model(1))
model2.module.load_state_dict(ck["model"])
state2 = sdt.SparDLState(density=0.05, warmup_steps=2)
state2.load_state_dict(ck["spardl"])
r2 = state2.residuals()
check(state2.iteration == state.iteration and r2.keys() == saved.keys()
      and all(torch.equal(r2[s], saved[s]) for s in saved),
      "load_state_dict: %d residuals and the step count restored" % len(saved))
rec2 = Recorder()
model2.register_comm_hook(state2, rec2.hook)
opt2 = torch.optim.SGD(model2.parameters(), lr=0.05)
for step in range(6, 8):
    before = state2.residuals()
    rec2.grad, rec2.out, rec2.keys = {}, {}, []
    train_step(model2, opt2, step)
    w = conserved(state2, rec2, before, state2.residuals())
    check(w < 1e-5, "restored, step %d (buckets %s): the restored residuals are conserved (rel err %.2g)"
          % (step, rec2.keys, w))
check(not state2._pending, "every restored residual went into a plan")

# Restoring into live plans replaces their residuals at once.
sd = state.state_dict()
state2.load_state_dict(sd)
r3 = state2.residuals()
check(all(torch.equal(r3[s], sd["residuals"][s]) for s in sd["residuals"]),
      "load_state_dict into live plans replaces their residuals")
raises(lambda: state2.load_state_dict({"version": 99}), E, "not a spardl.torch state", "a foreign state dict")
raises(lambda: copy.deepcopy(state2), TypeError, "save state_dict() instead", "pickling the state")
state.close()
state2.close()

# Local momentum (momentum correction and factor masking): the hook sparsifies
# u = m * u + grad; u is cleared where the step delivered a value, kept elsewhere.
model4 = ddp_of(make_model(4))
state4 = sdt.SparDLState(density=0.05, momentum=0.9)
rec4 = Recorder()
model4.register_comm_hook(state4, rec4.hook)
opt4 = torch.optim.SGD(model4.parameters(), lr=0.05)
prev = {}
for step in range(3):
    rec4.grad, rec4.out, rec4.keys = {}, {}, []
    train_step(model4, opt4, step)
    ok = True
    for sid, u in state4._velocity.items():
        want = rec4.grad[sid] + 0.9 * prev.get(sid, torch.zeros_like(u))
        want = want.masked_fill(rec4.out[sid] != 0, 0.0)
        ok = ok and torch.allclose(u, want, rtol=1e-6, atol=1e-7)
    check(ok and len(state4._velocity) == 6, "momentum=0.9, step %d: velocity = 0.9 * velocity + grad, "
          "cleared where delivered" % step)
    prev = {sid: u.clone() for sid, u in state4._velocity.items()}
sd4 = state4.state_dict()
state5 = sdt.SparDLState(density=0.05, momentum=0.9)
state5.load_state_dict(sd4)
check(sd4["velocities"].keys() == state5._velocity.keys()
      and all(torch.equal(state5._velocity[s], sd4["velocities"][s]) for s in sd4["velocities"]),
      "state_dict carries the velocities")
raises(lambda: sdt.SparDLState(momentum=1.0), E, "momentum must be in [0, 1)", "SparDLState(momentum=1.0)")
state4.close()

# residual=False keeps nothing.
model3 = ddp_of(make_model(2))
state3 = sdt.SparDLState(density=0.05, residual=False)
model3.register_comm_hook(state3, sdt.sparse_allreduce_hook)
opt3 = torch.optim.SGD(model3.parameters(), lr=0.05)
for step in range(3):
    train_step(model3, opt3, step)
check(state3.residuals() == {} and all(np.all(p.residual() == 0) for p in state3.plans().values()),
      "residual=False: no residual is kept")
state3.close()

# ---- CUDA tensors, where torch has CUDA ----
if torch.cuda.is_available():
    dev = torch.device("cuda", RANK % torch.cuda.device_count())
    torch.cuda.set_device(dev)
    comm = spardl.Comm.from_process_group()
    n = 50000
    for algo in ("spardl", "topka", "dense"):
        ph = spardl.Plan(comm, n, density=1.0 if algo == "dense" else 0.01, algo=algo)
        pc = spardl.Plan(comm, n, density=1.0 if algo == "dense" else 0.01, algo=algo, device=dev)
        same = True
        for step in range(4):
            g = torch.randn(n, generator=torch.Generator().manual_seed(77 * step + RANK))
            h = g.clone()
            ph.allreduce(h)
            c = g.to(dev)
            if step % 2:
                side = torch.cuda.Stream(dev)
                side.wait_stream(torch.cuda.current_stream(dev))
                with torch.cuda.stream(side):
                    pc.allreduce(c)
                torch.cuda.current_stream(dev).wait_stream(side)
            else:
                pc.allreduce(c)
            pc.sync()
            same = same and torch.equal(c.cpu(), h) and np.array_equal(pc.residual(), ph.residual())
        ih, vh = ph.allreduce_sparse(g)
        ic, vc = pc.allreduce_sparse(g.to(dev))
        same = same and torch.equal(ic.cpu(), ih) and torch.equal(vc.cpu(), vh)
        check(same and pc.info().device_bytes >= 4 * n, "CUDA plan (%s) on %s: results, sparse results and "
              "residuals equal the host plan's bit for bit, on the current and a side stream" % (algo, dev))
        raises(lambda: pc.allreduce(torch.zeros(n)), E, "SPARDL_MEM_CUDA", "a CPU tensor on a CUDA plan")
        ph.close()
        pc.close()
    comm.close()
    ref = nn.parallel.DistributedDataParallel(make_model().to(dev), device_ids=[dev], bucket_cap_mb=1)
    hooked = nn.parallel.DistributedDataParallel(make_model().to(dev), device_ids=[dev], bucket_cap_mb=1)
    state = sdt.SparDLState(density=1.0)
    hooked.register_comm_hook(state, sdt.sparse_allreduce_hook)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    opt_h = torch.optim.SGD(hooked.parameters(), lr=0.05, momentum=0.9)
    for step in range(10):
        for d, o in ((ref, opt_r), (hooked, opt_h)):
            x, y = batch(step)
            o.zero_grad()
            nn.functional.cross_entropy(d(x.to(dev)), y.to(dev)).backward()
            o.step()
    torch.cuda.synchronize(dev)
    diff = max((a - b).abs().max().item() for a, b in zip(ref.parameters(), hooked.parameters()))
    scale = max(a.abs().max().item() for a in ref.parameters())
    check(diff <= 1e-5 * scale and len(state.plans()) > 0 and all(p.device == dev for p in state.plans().values()),
          "the hook on a CUDA model: CUDA plans, parameters match DDP's allreduce after 10 steps (max diff %.3g)"
          % diff)
    state.close()
else:
    if not os.path.exists("/dev/nvidiactl"):
        comm = spardl.Comm.from_process_group()
        raises(lambda: spardl.Plan(comm, 10, device="cuda"), E, "no usable CUDA device",
               "Plan(device='cuda') without a GPU")
        comm.close()
    if RANK == 0:
        print("# CUDA part not run: torch.cuda.is_available() is False here", flush=True)
dist.destroy_process_group()
# Every plan, state and communicator above was closed explicitly.
finish(skip_teardown=True)
