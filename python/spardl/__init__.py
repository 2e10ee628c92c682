# SPDX-License-Identifier: MIT
"""spardl: sparse gradient allreduce (SparDL) over RDMA verbs and shared memory.

A thin binding over the C library (see docs/PYTHON.md). Every call goes to
libspardl; nothing is computed here.

    import spardl
    comm = spardl.Comm()                       # rank, size, rendezvous from the launcher
    plan = spardl.Plan(comm, grad.size, density=0.01)
    plan.allreduce(grad)                       # in place: the averaged sparse result
"""

import contextlib
import ctypes
import dataclasses
import weakref

import numpy as np

from . import _capi

__all__ = ["SpardlError", "Comm", "Plan", "PlanInfo", "PlanStats", "library_path", "env_help"]

_lib, library_path = _capi.load()
_libc = ctypes.CDLL(None)
_libc.free.argtypes = [ctypes.c_void_p]
_libc.free.restype = None


class SpardlError(RuntimeError):
    """A call into libspardl failed.

    code is the C return value (a negative errno or a negated
    SPARDL_ERR_*), name its spardl_strerror() text, message the library's
    detailed spardl_last_error() text.
    """

    def __init__(self, code, message, name=None):
        self.code = code
        self.name = name
        self.message = message
        super().__init__("%s (%s, %d)" % (message, name, code) if name else message)


def _check(ret, what):
    if ret == 0:
        return
    msg = _lib.spardl_last_error()
    msg = msg.decode("utf-8", "replace") if msg else ""
    name = _lib.spardl_strerror(ret)
    name = name.decode("utf-8", "replace") if name else str(ret)
    raise SpardlError(ret, msg or "%s failed" % what, name)


def _bad(msg):
    """Argument errors found before the C call; the same exception type."""
    return SpardlError(-22, msg, "Invalid argument")


def env_help():
    """Every environment variable the library reads, with default and help."""
    return _lib.spardl_env_help().decode()


def _is_torch(buf):
    return type(buf).__module__.startswith("torch") and hasattr(buf, "data_ptr")


def _float_buffer(buf, count, what, writable, device=None):
    """Address of count float32 values in buf, checked; never a copy.

    buf: a torch CPU tensor or any object with the buffer protocol (numpy
    arrays, array.array('f')), C-contiguous float32 of exactly count
    elements; for a CUDA plan (device set) a CUDA tensor on that device.
    Returns (address, keepalive).
    """
    if device is not None:
        if not _is_torch(buf) or buf.device != device:
            raise _bad("%s: the plan holds %s memory (SPARDL_MEM_CUDA): pass a float32 tensor on %s, not %s"
                       % (what, device, device, buf.device if _is_torch(buf) else type(buf).__name__))
    if _is_torch(buf):
        if buf.device.type != "cpu" and device is None:
            raise _bad("%s: a %s tensor, but the plan holds host memory: pass a CPU tensor, or create "
                       "the plan with device=%r" % (what, buf.device, str(buf.device)))
        if str(buf.dtype) != "torch.float32":
            raise _bad("%s: tensor dtype is %s; spardl reduces float32 only" % (what, buf.dtype))
        if not buf.is_contiguous():
            raise _bad("%s: tensor is not contiguous; pass tensor.contiguous() and copy the result back"
                       % what)
        if buf.numel() != count:
            raise _bad("%s: tensor has %d elements, the plan's count is %d" % (what, buf.numel(), count))
        if writable and buf.requires_grad and buf.is_leaf:
            raise _bad("%s: tensor requires grad; pass tensor.detach() or its .grad" % what)
        return buf.data_ptr(), buf
    try:
        mv = memoryview(buf)
    except TypeError:
        raise _bad("%s: %s is not a buffer; pass a numpy array or a CPU torch tensor of float32"
                   % (what, type(buf).__name__)) from None
    arr = np.asarray(mv)
    if arr.dtype != np.float32:
        raise _bad("%s: dtype is %s; spardl reduces float32 only (use .astype(numpy.float32) "
                   "and copy the result back)" % (what, arr.dtype))
    if not arr.flags.c_contiguous:
        raise _bad("%s: buffer is not C-contiguous; pass numpy.ascontiguousarray(...)" % what)
    if arr.size != count:
        raise _bad("%s: buffer has %d elements, the plan's count is %d" % (what, arr.size, count))
    if writable and not arr.flags.writeable:
        raise _bad("%s: buffer is read-only; the call writes its result in place" % what)
    return arr.ctypes.data, (mv, arr)


class _DeviceArray:
    """count float32 values at a device address, for torch.as_tensor."""

    def __init__(self, addr, count):
        self.__cuda_array_interface__ = {"shape": (count,), "typestr": "<f4", "data": (addr, False),
                                         "strides": None, "version": 2}


class _Handle:
    """An object that owns one C handle, released by close(), at garbage
    collection or at the end of a with block."""

    _ptr = None

    def _release(self, ptr):
        raise NotImplementedError

    def close(self):
        """Release the handle (local)."""
        if self._ptr:
            ptr, self._ptr = self._ptr, None
            self._release(ptr)

    def __del__(self):
        if self._ptr and _lib is not None:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Comm(_Handle):
    """A communicator over all ranks of the job.

    Comm() takes rank, size and the rendezvous from the environment (the
    launcher: spardl-run, mpirun, srun, torchrun; docs/ENVIRONMENT.md).
    Keyword arguments override single fields: rank and size (together),
    bootstrap ("host:port"), job_key, transport ("shm", "verbs", "auto"),
    timeout (seconds).

    Comm(process_group=pg) (or Comm.from_process_group(pg)) runs the
    rendezvous through the torch.distributed group's all-gather
    (SPARDL_COMM_PARAM_OOB): no second rendezvous, no extra port. pg None
    means the default group. Collective over the group's ranks.
    """

    def __init__(self, *, rank=None, size=None, bootstrap=None, job_key=None, transport=None,
                 timeout=None, process_group=None):
        self._oob = None
        self._oob_error = None
        self._plans = weakref.WeakSet()
        # The C handles of plans not yet destroyed, by id(plan): when plan
        # and communicator die in one garbage cycle, the WeakSet is already
        # empty and the communicator destroys them from here, first.
        self._plan_ptrs = {}
        p = _capi.CommParams()
        _lib.spardl_comm_params_init(ctypes.byref(p))
        keep = []
        if (rank is None) != (size is None):
            raise _bad("Comm: give rank and size together (or neither)")
        if rank is not None:
            p.field_mask |= _capi.COMM_PARAM_RANK_SIZE
            p.rank, p.size = int(rank), int(size)
        if bootstrap is not None:
            p.field_mask |= _capi.COMM_PARAM_BOOTSTRAP
            keep.append(bootstrap.encode())
            p.bootstrap = keep[-1]
        if job_key is not None:
            p.field_mask |= _capi.COMM_PARAM_JOB_KEY
            keep.append(job_key.encode() if isinstance(job_key, str) else bytes(job_key))
            p.job_key = keep[-1]
        if transport is not None:
            p.field_mask |= _capi.COMM_PARAM_TRANSPORT
            keep.append(transport.encode())
            p.transport = keep[-1]
        if timeout is not None:
            if not timeout > 0:
                raise _bad("Comm: timeout must be > 0 seconds, got %r" % (timeout,))
            p.field_mask |= _capi.COMM_PARAM_TIMEOUT
            p.timeout_ms = max(1, int(round(timeout * 1000)))
        if process_group is not None:
            self._attach_group(p, None if process_group is True else process_group)
        ptr = ctypes.c_void_p()
        ret = _lib.spardl_comm_create(ctypes.byref(p), ctypes.byref(ptr))
        if self._oob_error is not None:
            err, self._oob_error = self._oob_error, None
            if ret:
                raise SpardlError(ret, "Comm: the process group's all-gather failed: %s" % err) from err
        _check(ret, "spardl_comm_create")
        self._ptr = ptr.value
        self.rank = _lib.spardl_comm_rank(self._ptr)
        self.size = _lib.spardl_comm_size(self._ptr)
        self.transport = _lib.spardl_comm_transport(self._ptr).decode()

    @classmethod
    def from_process_group(cls, process_group=None, **kw):
        """The communicator over a torch.distributed group (None: the default group)."""
        return cls(process_group=True if process_group is None else process_group, **kw)

    def _attach_group(self, p, pg):
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            raise _bad("Comm: torch.distributed is not initialized; call "
                       "torch.distributed.init_process_group() first")
        if pg is None:
            pg = dist.group.WORLD
        rank, size = dist.get_rank(pg), dist.get_world_size(pg)
        if rank < 0:
            raise _bad("Comm: this process is not a member of the process group")
        backend = dist.get_backend(pg)
        # The all-gather moves bytes through CPU tensors, which gloo and MPI
        # handle; NCCL needs device tensors.
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

        def allgather(ctx, send, recv, length):
            try:
                src = torch.empty(length, dtype=torch.uint8)
                ctypes.memmove(src.data_ptr(), send, length)
                src = src.to(device)
                out = [torch.empty(length, dtype=torch.uint8, device=device) for _ in range(size)]
                dist.all_gather(out, src, group=pg)
                for i, t in enumerate(out):
                    t = t.cpu()
                    ctypes.memmove(recv + i * length, t.data_ptr(), length)
                return 0
            except BaseException as e:  # never let an exception cross the C frame
                self._oob_error = e
                return -1

        self._oob = _capi.OOB_FN(allgather)
        self._group = pg
        p.field_mask |= _capi.COMM_PARAM_OOB | _capi.COMM_PARAM_RANK_SIZE
        p.oob_allgather = self._oob
        p.rank, p.size = rank, size

    def _release(self, ptr):
        # Its plans go first: a plan must not outlive its communicator.
        for plan in list(self._plans):
            plan.close()
        for p in self._plan_ptrs.values():
            _lib.spardl_plan_destroy(p)
        self._plan_ptrs.clear()
        _lib.spardl_comm_destroy(ptr)

    def __repr__(self):
        return "spardl.Comm(rank=%d, size=%d, transport=%r)" % (self.rank, self.size, self.transport)


@dataclasses.dataclass
class PlanInfo:
    """What a plan derived and holds (struct spardl_plan_info)."""
    count: int
    k: int
    block_size: int
    block_budget: int
    team_size: int
    teams: int
    host_bytes: int
    registered_bytes: int
    device_bytes: int
    max_write: int
    peers: int


@dataclasses.dataclass
class PlanStats:
    """Where this rank's time went over the calls so far (struct spardl_plan_stats), seconds."""
    calls: int
    total: float
    accumulate: float
    select: float
    reduce: float
    wait: float
    post: float
    output: float
    scans: int
    failed_calls: int
    bytes_sent: int
    writes: int


def _choice(name, value, table):
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()]
    raise _bad("Plan: %s=%r is not one of %s" % (name, value, ", ".join(sorted(table))))


class Plan(_Handle):
    """A compiled sparse allreduce of count float32 values (collective).

    Plan(comm, count, density=0.01, algo="spardl", teams=1, sag="bruck",
    srs="batched", residual=True, average=True). algo is "spardl",
    "dense", "topka" or "gtopk"; sag "bruck" or "recursive"; srs
    "batched" or "sequential". Every rank must pass the same arguments;
    a difference raises SpardlError (SPARDL_ERR_MISMATCH) on every rank.

    device: None or "cpu" (host memory), or a CUDA device ("cuda",
    "cuda:1", a torch.device): a SPARDL_MEM_CUDA plan, whose calls take
    tensors on that device and are ordered on torch's current stream
    (docs/API.md, "CUDA plans").
    """

    def __init__(self, comm, count, density=0.01, algo="spardl", teams=1, sag="bruck", srs="batched",
                 residual=True, average=True, device=None):
        if not isinstance(comm, Comm) or not comm._ptr:
            raise _bad("Plan: comm must be an open spardl.Comm")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise _bad("Plan: count must be a positive integer, got %r" % (count,))
        p = _capi.PlanParams()
        _lib.spardl_plan_params_init(ctypes.byref(p))
        p.count = int(count)
        try:
            p.density = float(density)
        except (TypeError, ValueError):
            raise _bad("Plan: density must be a number in (0, 1], got %r" % (density,)) from None
        p.algo = _choice("algo", algo, _capi.ALGOS)
        if isinstance(teams, bool) or not isinstance(teams, (int, np.integer)):
            raise _bad("Plan: teams must be an integer, got %r" % (teams,))
        p.teams = int(teams)
        p.sag = _choice("sag", sag, _capi.SAGS)
        p.srs = _choice("srs", srs, _capi.SRSS)
        p.residual = 1 if residual else 0
        p.average = 1 if average else 0
        p.mem_type = _capi.MEM_HOST
        self.device = None
        ptr = ctypes.c_void_p()
        if device is not None and str(device) != "cpu":
            import torch
            dev = torch.device(device)
            if dev.type != "cuda":
                raise _bad("Plan: device must be None, 'cpu' or a CUDA device, got %r" % (device,))
            have_cuda = torch.cuda.is_available()
            if dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device() if have_cuda else 0)
            if not hasattr(_lib, "spardl_plan_sync"):
                raise _bad("Plan: device=%s needs libspardl 0.4 or later" % dev)
            p.mem_type = _capi.MEM_CUDA
            self.device = dev
            # Without CUDA in torch the library says why it has no device.
            with torch.cuda.device(dev) if have_cuda else contextlib.nullcontext():
                ret = _lib.spardl_plan_create(comm._ptr, ctypes.byref(p), ctypes.byref(ptr))
        else:
            ret = _lib.spardl_plan_create(comm._ptr, ctypes.byref(p), ctypes.byref(ptr))
        err, comm._oob_error = comm._oob_error, None
        if ret and err is not None:
            raise SpardlError(ret, "Plan: the process group's all-gather failed: %s" % err) from err
        _check(ret, "spardl_plan_create")
        self._ptr = ptr.value
        self.comm = comm  # keeps the communicator alive as long as the plan
        comm._plans.add(self)
        comm._plan_ptrs[id(self)] = self._ptr
        self.count = int(count)
        self.density = p.density
        self.algo = algo.lower()
        self.max_nnz = _lib.spardl_plan_max_nnz(self._ptr)

    def _live(self, what):
        if not self._ptr:
            raise _bad("%s: the plan is closed" % what)
        return self._ptr

    def _stream(self):
        import torch
        return ctypes.c_void_p(torch.cuda.current_stream(self.device).cuda_stream)

    def allreduce(self, buf):
        """Collective, in place: buf becomes the global sparse result in
        dense layout (averaged if the plan averages). Returns buf.

        On failure buf is unchanged and the residual holds old residual +
        buf (docs/API.md, "When a call fails").

        On a CUDA plan the call is enqueued on torch's current stream and
        returns at once, like torch.distributed's NCCL calls: work later on
        that stream sees the result. A failure raises from sync() and from
        the plan's next call."""
        ptr = self._live("allreduce")
        addr, keep = _float_buffer(buf, self.count, "allreduce", True, self.device)
        if self.device is not None:
            _check(_lib.spardl_allreduce_async(ptr, addr, self._stream()), "spardl_allreduce_async")
        else:
            _check(_lib.spardl_allreduce(ptr, addr), "spardl_allreduce")
        del keep
        return buf

    def sync(self):
        """Wait until every call made on the plan is complete; raise the
        first failure, if any."""
        _check(_lib.spardl_plan_sync(self._live("sync")), "spardl_plan_sync")

    def allreduce_sparse(self, buf):
        """Collective: the result as (indices, values), sorted by index,
        int64 and float32; buf is left unchanged. numpy arrays, or torch
        tensors when buf is a tensor (on the plan's device for a CUDA plan,
        whose call this waits for)."""
        ptr = self._live("allreduce_sparse")
        addr, keep = _float_buffer(buf, self.count, "allreduce_sparse", False, self.device)
        m = max(self.max_nnz, 1)
        nnz = ctypes.c_size_t(0)
        if self.device is not None:
            import torch
            idx = torch.empty(m, dtype=torch.int64, device=self.device)
            val = torch.empty(m, dtype=torch.float32, device=self.device)
            _check(_lib.spardl_allreduce_sparse_async(ptr, addr, idx.data_ptr(), val.data_ptr(), ctypes.byref(nnz),
                                                      self._stream()), "spardl_allreduce_sparse_async")
            self.sync()
            torch.cuda.current_stream(self.device).synchronize()
            del keep
            return idx[:nnz.value].clone(), val[:nnz.value].clone()
        idx = np.empty(m, dtype=np.int64)
        val = np.empty(m, dtype=np.float32)
        _check(_lib.spardl_allreduce_sparse(ptr, addr, idx.ctypes.data, val.ctypes.data, ctypes.byref(nnz)),
               "spardl_allreduce_sparse")
        del keep
        idx, val = idx[:nnz.value].copy(), val[:nnz.value].copy()
        if _is_torch(buf):
            import torch
            return torch.from_numpy(idx), torch.from_numpy(val)
        return idx, val

    def residual(self, out=None):
        """A copy of the residual (count float32, in sum units: never
        divided by the size), as a numpy array on every plan. out: a
        float32 buffer to copy into (for a CUDA plan also a tensor on its
        device)."""
        ptr = self._live("residual")
        res = ctypes.c_void_p()
        _check(_lib.spardl_plan_residual(ptr, ctypes.byref(res)), "spardl_plan_residual")
        if self.device is not None:
            import torch
            view = torch.as_tensor(_DeviceArray(res.value, self.count), device=self.device)
            if out is None:
                return view.cpu().numpy()
            if _is_torch(out):
                out.copy_(view.reshape(out.shape))
            else:
                addr, keep = _float_buffer(out, self.count, "residual", True)
                ctypes.memmove(addr, view.cpu().numpy().ctypes.data, 4 * self.count)
                del keep
            return out
        if out is None:
            out = np.empty(self.count, dtype=np.float32)
        addr, keep = _float_buffer(out, self.count, "residual", True)
        ctypes.memmove(addr, res.value, 4 * self.count)
        del keep
        return out

    def set_residual(self, buf):
        """Restore a residual (count float32), e.g. from a checkpoint. Local.
        A CUDA plan takes host data too (copied to its device first)."""
        ptr = self._live("set_residual")
        if self.device is not None:
            import torch
            t = buf if _is_torch(buf) else torch.from_numpy(np.ascontiguousarray(buf, dtype=np.float32))
            buf = t.detach().to(self.device, torch.float32).contiguous()
            torch.cuda.current_stream(self.device).synchronize()
        addr, keep = _float_buffer(buf, self.count, "set_residual", False, self.device)
        _check(_lib.spardl_plan_set_residual(ptr, addr), "spardl_plan_set_residual")
        del keep

    def info(self):
        """PlanInfo: k, block sizes, teams, memory held."""
        i = _capi.PlanInfo()
        _check(_lib.spardl_plan_info_sized(self._live("info"), ctypes.byref(i), ctypes.sizeof(i)),
               "spardl_plan_info")
        return PlanInfo(**{f: getattr(i, f) for f, _ in _capi.PlanInfo._fields_})

    def stats(self):
        """PlanStats: calls, time per phase, bytes sent, over the calls so far."""
        s = _capi.PlanStats()
        _check(_lib.spardl_plan_stats_sized(self._live("stats"), ctypes.byref(s), ctypes.sizeof(s)),
               "spardl_plan_stats")
        return PlanStats(**{f: getattr(s, f) for f, _ in _capi.PlanStats._fields_})

    def schedule_text(self):
        """This rank's compiled schedule as text."""
        t = ctypes.c_void_p()
        _check(_lib.spardl_plan_schedule_text(self._live("schedule_text"), ctypes.byref(t)),
               "spardl_plan_schedule_text")
        try:
            return ctypes.string_at(t.value).decode()
        finally:
            _libc.free(t.value)

    def _release(self, ptr):
        # Unless its communicator, released first, destroyed it already.
        if self.comm._plan_ptrs.pop(id(self), None) is not None:
            _lib.spardl_plan_destroy(ptr)

    def __repr__(self):
        return "spardl.Plan(count=%d, density=%g, algo=%r%s)" % (
            self.count, self.density, self.algo, "" if self.device is None else ", device=%r" % str(self.device))
