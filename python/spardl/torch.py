# SPDX-License-Identifier: MIT
"""A DistributedDataParallel communication hook that runs spardl.

    state = spardl.torch.SparDLState(density=0.01)
    model.register_comm_hook(state, spardl.torch.sparse_allreduce_hook)

Shaped like torch's PowerSGD hook: the state holds one spardl plan, and so
one residual, per DDP bucket; the hook reduces the bucket's flat gradient in
place with spardl_allreduce (averaged, as DDP expects) and returns a
completed future. The first warmup_steps steps are dense (DDP's own
allreduce). state_dict()/load_state_dict() carry the residuals with a
training checkpoint. See docs/PYTHON.md.
"""

import numpy as np
import torch
import torch.distributed as dist

from . import Comm, Plan, SpardlError, _bad

__all__ = ["SparDLState", "sparse_allreduce_hook"]

STATE_VERSION = 1


class _Bucket:
    """One plan and the parameters its buffer holds: (sid, offset, numel, shape)."""

    def __init__(self, key, plan, layout):
        self.key = key
        self.plan = plan
        self.layout = layout


class SparDLState:
    """State of the spardl DDP hook.

    process_group: the group DDP reduces over (None: the default group);
    spardl's communicator is built on it, no second rendezvous.
    density, algo ("spardl", "topka", "gtopk", "dense"), teams, sag, srs,
    residual: as for spardl.Plan. warmup_steps: steps run as DDP's dense
    allreduce before the sparse ones start. momentum: 0 (default), or local
    momentum with momentum correction and factor masking as in Deep
    Gradient Compression: each rank sparsifies its velocity
    u = momentum * u + grad instead of the gradient, and clears u where the
    step delivered a value. Use it with an optimizer without momentum.
    """

    def __init__(self, process_group=None, density=0.01, algo="spardl", teams=1, warmup_steps=0,
                 sag="bruck", srs="batched", residual=True, momentum=0.0):
        if not (isinstance(density, (int, float)) and 0 < density <= 1):
            raise _bad("SparDLState: density must be in (0, 1], got %r" % (density,))
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise _bad("SparDLState: warmup_steps must be an integer >= 0, got %r" % (warmup_steps,))
        if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise _bad("SparDLState: momentum must be in [0, 1), got %r" % (momentum,))
        self.process_group = process_group
        self.momentum = float(momentum)
        self._velocity = {}      # sid -> local velocity (momentum > 0)
        self.density = float(density)
        self.algo = algo
        self.teams = teams
        self.sag = sag
        self.srs = srs
        self.residual = bool(residual)
        self.warmup_steps = warmup_steps
        self.iteration = 0       # steps completed (a step ends with DDP's last bucket)
        self.comm = None
        self._buckets = {}       # key -> _Bucket
        self._sid = {}           # id(param) -> (sid, param): a name stable across runs
        self._owner = {}         # sid -> _Bucket holding its residual
        self._pending = {}       # sid -> residual tensor from load_state_dict, not yet placed
        self._bytes_closed = 0   # bytes_sent of plans released after a bucket rebuild

    # -- parameters and plans ------------------------------------------------

    def _layout(self, bucket, n):
        """The bucket's parameters and where each sits in its flat buffer.

        A parameter is named by the bucket index and position where it was
        first seen: DDP's first-iteration buckets follow the model's
        parameter order, so the names are the same in every run of the same
        model and survive DDP's bucket rebuild."""
        params = list(bucket.parameters())
        offsets = self._offsets(bucket, params, n)
        layout = []
        for pos, (p, off) in enumerate(zip(params, offsets)):
            ent = self._sid.get(id(p))
            if ent is None or ent[1] is not p:
                ent = ("bucket%d.param%d" % (bucket.index(), pos), p)
                self._sid[id(p)] = ent
            layout.append((ent[0], off, p.numel(), tuple(p.shape)))
        return layout

    @staticmethod
    def _offsets(bucket, params, n):
        """Where each parameter's gradient starts in the bucket's buffer:
        from the gradient views DDP hands out, checked against the packed
        order; anything else is refused rather than guessed."""
        buf = bucket.buffer()
        packed, off = [], 0
        for p in params:
            packed.append(off)
            off += p.numel()
        ok = off == n
        try:
            grads = bucket.gradients()
            base, esz = buf.data_ptr(), buf.element_size()
            views = [(g.data_ptr() - base) // esz for g in grads]
            if len(grads) == len(params) and all(0 <= v < n for v in views):
                ok = ok and views == packed  # views into the buffer: they must be where packing puts them
        except (AttributeError, RuntimeError):
            pass  # no gradient views: the packed order alone
        if not ok:
            raise SpardlError(-22, "spardl.torch: bucket %d: its %d parameters (%d elements) are not packed in "
                              "order into its %d-element buffer (unsupported DDP bucket layout)"
                              % (bucket.index(), len(params), off, n), "Invalid argument")
        return packed

    def _comm(self):
        if self.comm is None:
            self.comm = Comm.from_process_group(self.process_group)
        return self.comm

    def _bucket_for(self, bucket, n, device=None):
        layout = self._layout(bucket, n)
        key = (bucket.index(), n, tuple(s for s, _, _, _ in layout))
        b = self._buckets.get(key)
        if b is not None:
            return b
        plan = Plan(self._comm(), n, density=self.density, algo=self.algo, teams=self.teams, sag=self.sag,
                    srs=self.srs, residual=self.residual, average=True,
                    device=device if device is not None and device.type == "cuda" else None)
        b = _Bucket(key, plan, layout)
        if self.residual:
            # A rebuilt bucket takes over its parameters' residuals from the
            # plans that held them, and restored ones from a checkpoint:
            # nothing kept for later is lost when DDP regroups parameters.
            init, moved, cache = np.zeros(n, dtype=np.float32), False, {}
            for sid, off, numel, _ in layout:
                old = self._owner.get(sid)
                if old is not None:
                    if id(old) not in cache:
                        cache[id(old)] = (old.plan.residual(), {s: o for s, o, _, _ in old.layout})
                    r, offs = cache[id(old)]
                    init[off:off + numel] = r[offs[sid]:offs[sid] + numel]
                    moved = True
                elif sid in self._pending:
                    init[off:off + numel] = self._pending.pop(sid).reshape(-1).numpy()
                    moved = True
            if moved:
                plan.set_residual(init)
        for sid, _, _, _ in layout:
            self._owner[sid] = b
        self._buckets[key] = b
        for k, old in list(self._buckets.items()):
            if old is not b and not any(self._owner.get(s) is old for s, _, _, _ in old.layout):
                self._bytes_closed += old.plan.stats().bytes_sent
                old.plan.close()
                del self._buckets[k]
        return b

    # -- what it did ---------------------------------------------------------

    def plans(self):
        """The live plans, by bucket key (index, size, parameter names)."""
        return {k: b.plan for k, b in self._buckets.items()}

    def bytes_sent(self):
        """Payload bytes this rank has written through spardl so far (warm-up steps excluded)."""
        return self._bytes_closed + sum(b.plan.stats().bytes_sent for b in self._buckets.values())

    def residuals(self):
        """Every parameter's residual, by its stable name (tensors shaped like the parameter)."""
        out = {}
        for b in self._buckets.values():
            if not self.residual:
                break
            r = b.plan.residual()
            for sid, off, numel, shape in b.layout:
                if self._owner.get(sid) is b:
                    out[sid] = torch.from_numpy(r[off:off + numel].copy()).view(shape)
        for sid, t in self._pending.items():
            out.setdefault(sid, t.clone())
        return out

    # -- checkpoints ---------------------------------------------------------

    def state_dict(self):
        """What to save with a checkpoint: the step count and every residual."""
        return {
            "version": STATE_VERSION,
            "iteration": self.iteration,
            "density": self.density,
            "algo": self.algo,
            "teams": self.teams,
            "residuals": self.residuals(),
            "velocities": {sid: u.clone() for sid, u in self._velocity.items()},
        }

    def load_state_dict(self, sd):
        """Restore from state_dict(): residuals of live plans are replaced
        now, the others when their bucket's plan is created."""
        if not isinstance(sd, dict) or sd.get("version") != STATE_VERSION:
            raise _bad("SparDLState.load_state_dict: not a spardl.torch state (version %r, expected %d)"
                       % (sd.get("version") if isinstance(sd, dict) else None, STATE_VERSION))
        self.iteration = int(sd["iteration"])
        pending = {sid: t.detach().to("cpu", torch.float32).contiguous() for sid, t in sd["residuals"].items()}
        for b in self._buckets.values():
            if not self.residual:
                break
            r, hit = b.plan.residual(), False
            for sid, off, numel, _ in b.layout:
                if sid in pending and self._owner.get(sid) is b:
                    t = pending.pop(sid).reshape(-1)
                    if t.numel() != numel:
                        raise _bad("SparDLState.load_state_dict: residual %s has %d elements, the parameter "
                                   "%d" % (sid, t.numel(), numel))
                    r[off:off + numel] = t.numpy()
                    hit = True
            if hit:
                b.plan.set_residual(r)
        self._pending = pending
        self._velocity = {sid: u.detach().to("cpu", torch.float32).reshape(-1).clone()
                          for sid, u in sd.get("velocities", {}).items()}

    def close(self):
        """Release the plans and the communicator."""
        for b in self._buckets.values():
            b.plan.close()
        self._buckets.clear()
        self._owner.clear()
        if self.comm is not None:
            self.comm.close()
            self.comm = None

    def __getstate__(self):
        raise TypeError("SparDLState holds communication resources; save state_dict() instead")


def _done(tensor):
    fut = torch.futures.Future()
    fut.set_result(tensor)
    return fut


def sparse_allreduce_hook(state, bucket):
    """DDP communication hook: the bucket's averaged gradient through spardl."""
    buf = bucket.buffer()
    if buf.device.type not in ("cpu", "cuda"):
        raise SpardlError(-95, "spardl.torch: the bucket is on %s; spardl takes CPU or CUDA buckets: train on "
                          "one of those or use DDP's default hook" % buf.device, "Operation not supported")
    last = bucket.is_last()
    if state.iteration < state.warmup_steps:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
        fut = allreduce_hook(state.process_group, bucket)
    else:
        b = state._bucket_for(bucket, buf.numel(), buf.device)
        vel = []
        if state.momentum:
            for sid, off, numel, _ in b.layout:
                u = state._velocity.get(sid)
                if u is None or u.numel() != numel:
                    u = state._velocity[sid] = torch.zeros(numel, device=buf.device)
                elif u.device != buf.device:
                    u = state._velocity[sid] = u.to(buf.device)
                g = buf[off:off + numel]
                u.mul_(state.momentum).add_(g)
                g.copy_(u)
                vel.append((u, g))
        b.plan.allreduce(buf)
        for u, g in vel:
            u.masked_fill_(g != 0, 0.0)  # momentum factor masking: delivered entries start over
        fut = _done(buf)
    if last:
        state.iteration += 1
    return fut
