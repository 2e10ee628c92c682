# SPDX-License-Identifier: MIT
"""The Python binding against the C library, on any number of ranks.

Integer-valued data keeps every sum exact, so the checks are equalities:
  - every rank gets the same result;
  - conservation: sum_r (grad_r + old residual_r) == result + sum_r new residual_r
    (average=False), and the averaged plan gives that result / P;
  - allreduce_sparse gives the same pairs as allreduce, and leaves grad alone;
  - residual()/set_residual(), info(), stats();
  - bad arguments raise SpardlError naming the problem.
Sums over ranks go through a dense plan (average=False), exact on integers.
"""

import array
import math
import os
import subprocess
import sys

import numpy as np

import spardl
from common import RANK, SIZE, check, finish, raises

comm = spardl.Comm()
check(comm.rank == RANK and comm.size == SIZE, "Comm() from the environment: rank %d of %d over %s"
      % (comm.rank, comm.size, comm.transport))

n = 4099
dense = spardl.Plan(comm, n, algo="dense", density=1.0, average=False)


def allsum(x):
    y = np.ascontiguousarray(x, dtype=np.float32).copy()
    dense.allreduce(y)
    return y


def same_everywhere(x):
    """x is identical on every rank (exact: integers, sum == P * x)."""
    return np.array_equal(allsum(x), np.float32(SIZE) * x)


rng = np.random.default_rng(1234 + RANK)


def gradient():
    g = rng.integers(-40, 41, size=n).astype(np.float32)  # ties and zeros on purpose
    g[rng.random(n) < 0.3] = 0
    return g


configs = [dict(algo="spardl"), dict(algo="spardl", srs="sequential"), dict(algo="topka"),
           dict(algo="dense", density=1.0)]
if SIZE & (SIZE - 1) == 0:
    configs.append(dict(algo="gtopk"))
if SIZE % 2 == 0 and SIZE > 1:
    configs.append(dict(algo="spardl", teams=2))
    configs.append(dict(algo="spardl", teams=2, sag="recursive"))

for cfg in configs:
    kw = dict(density=0.03)
    kw.update(cfg)
    name = ",".join("%s=%s" % kv for kv in sorted(cfg.items()))
    plan = spardl.Plan(comm, n, average=False, **kw)
    twin = spardl.Plan(comm, n, average=False, **kw)
    avg = spardl.Plan(comm, n, average=True, **kw)
    info = plan.info()
    check(info.count == n and info.k == max(1, math.ceil(kw["density"] * n)),
          "%s: info() count %d k %d" % (name, info.count, info.k))
    for call in range(3):
        g = gradient()
        old = plan.residual()
        twin.set_residual(old)
        avg.set_residual(old)
        out = g.copy()
        plan.allreduce(out)
        new = plan.residual()
        check(same_everywhere(out), "%s call %d: every rank has the same result" % (name, call))
        lhs = allsum(g + old)
        rhs = out + allsum(new)
        check(np.array_equal(lhs, rhs), "%s call %d: sum of grad + residual == result + sum of residuals"
              % (name, call))
        keep = g.copy()
        idx, val = twin.allreduce_sparse(g)
        check(np.array_equal(g, keep), "%s call %d: allreduce_sparse leaves grad unchanged" % (name, call))
        sp = np.zeros(n, dtype=np.float32)
        sp[idx] = val
        check(idx.dtype == np.int64 and val.dtype == np.float32 and np.all(np.diff(idx) > 0)
              and np.array_equal(sp, out) and np.array_equal(twin.residual(), new),
              "%s call %d: allreduce_sparse: %d sorted pairs, the same result and residual"
              % (name, call, len(idx)))
        a = g.copy()
        avg.allreduce(a)
        check(np.array_equal(a, out / np.float32(SIZE)), "%s call %d: average=True gives result / P"
              % (name, call))
    st = plan.stats()
    check(st.calls == 3 and st.failed_calls == 0 and (st.bytes_sent > 0) == (SIZE > 1)
          and (st.writes > 0) == (SIZE > 1),
          "%s: stats() calls %d, %d bytes in %d writes" % (name, st.calls, st.bytes_sent, st.writes))
    plan.close()
    twin.close()
    avg.close()

# Buffers: numpy, array.array and views share memory; nothing is copied.
plan = spardl.Plan(comm, 64, density=1.0, algo="dense")
buf = np.zeros(128, dtype=np.float32)
view = buf[64:]
view[:] = RANK + 1
plan.allreduce(view)
check(np.all(buf[64:] == np.float32(SIZE + 1) / 2) and np.all(buf[:64] == 0),
      "allreduce works in place on a view of a larger array")
arr = array.array("f", [1.0] * 64)
plan.allreduce(arr)
check(list(arr) == [1.0] * 64, "allreduce on array.array('f') in place")
r = np.arange(64, dtype=np.float32)
plan.set_residual(r)  # the dense plan keeps no residual: the call still accepts it
check(plan.residual().shape == (64,), "residual() returns count float32")

# Bad arguments: SpardlError with the library's message (or the binding's own check).
E = spardl.SpardlError
e = raises(lambda: spardl.Plan(comm, 100, density=2.0), E, "density 2 is outside (0, 1]",
           "Plan(density=2.0) raises the C library's message")
check(e is not None and e.code == -22 and e.name, "the error carries code %r and name %r"
      % (e and e.code, e and e.name))
raises(lambda: spardl.Plan(comm, 100, algo="ring"), E, "algo='ring' is not one of", "unknown algo")
raises(lambda: spardl.Plan(comm, 0), E, "count must be a positive integer", "count 0")
raises(lambda: plan.allreduce(np.zeros(64)), E, "float32 only", "float64 buffer")
raises(lambda: plan.allreduce(np.zeros(63, dtype=np.float32)), E, "63 elements, the plan's count is 64",
       "wrong length")
raises(lambda: plan.allreduce(np.zeros(128, dtype=np.float32)[::2]), E, "not C-contiguous", "strided view")
ro = np.zeros(64, dtype=np.float32)
ro.flags.writeable = False
raises(lambda: plan.allreduce(ro), E, "read-only", "read-only buffer")
raises(lambda: plan.allreduce([0.0] * 64), E, "is not a buffer", "a list")
raises(lambda: spardl.Comm(rank=0), E, "rank and size together", "Comm(rank=...) without size")
raises(lambda: spardl.Plan(comm, 64, teams=SIZE + 1), E, "teams", "teams that do not divide the size")
if SIZE & (SIZE - 1):
    raises(lambda: spardl.Plan(comm, 64, algo="gtopk"), E, "power-of-two", "gTopk on %d ranks" % SIZE)
# A collective mismatch is reported on every rank, and the communicator stays usable.
if SIZE > 1:
    e = raises(lambda: spardl.Plan(comm, 100 + (RANK == SIZE - 1)), E, "", "ranks disagree on count")
    check(e is not None and e.code == -spardl._capi.ERR_MISMATCH and "count" in str(e),
          "the mismatch names the field on every rank: %s" % e)
plan.close()
raises(lambda: plan.allreduce(np.zeros(64, dtype=np.float32)), E, "plan is closed", "a closed plan")
again = spardl.Plan(comm, 64, density=1.0, algo="dense", average=False)
one = np.ones(64, dtype=np.float32)
again.allreduce(one)
check(np.all(one == SIZE), "the communicator still works after the errors")

# Closing a communicator closes its plans first: no plan outlives it.
with spardl.Comm() as c2:
    p2 = spardl.Plan(c2, 8, density=1.0, algo="dense")
check(not p2._ptr, "closing a Comm closes its plans")
raises(lambda: p2.allreduce(np.zeros(8, dtype=np.float32)), E, "plan is closed", "a plan of a closed Comm")

if RANK == 0:
    env = dict(os.environ, SPARDL_LIBRARY="/nonexistent/libspardl.so")
    p = subprocess.run([sys.executable, "-c", "import spardl"], env=env, capture_output=True, text=True)
    check(p.returncode != 0 and "SPARDL_LIBRARY is set but cannot be loaded" in p.stderr,
          "SPARDL_LIBRARY pointing nowhere: a clear ImportError")
    env = dict(os.environ, SPARDL_LIBRARY=spardl.library_path)
    p = subprocess.run([sys.executable, "-c", "import spardl; print(spardl.library_path)"], env=env,
                       capture_output=True, text=True)
    check(p.returncode == 0 and p.stdout.strip() == spardl.library_path, "SPARDL_LIBRARY selects the library")
finish()
