# SPDX-License-Identifier: MIT
"""Helpers for the Python suites: numbered checks, torch.distributed set-up."""

import os
import sys

RANK = int(os.environ.get("SPARDL_RANK", "0"))
SIZE = int(os.environ.get("SPARDL_SIZE", "1"))
_n = 0
_failed = 0


def check(cond, what):
    """One numbered check; a failure is printed and counted, never skipped."""
    global _n, _failed
    _n += 1
    if cond:
        if RANK == 0:
            print("ok %d - %s" % (_n, what), flush=True)
    else:
        _failed += 1
        print("not ok %d - %s (rank %d)" % (_n, what, RANK), flush=True)


def raises(fn, exc, text, what):
    """fn() must raise exc whose message contains text."""
    try:
        fn()
    except exc as e:
        check(text in str(e), "%s: %s" % (what, e))
        return e
    except Exception as e:  # noqa: BLE001 - a wrong exception type is a failure
        check(False, "%s: raised %s: %s" % (what, type(e).__name__, e))
        return None
    check(False, "%s: no exception" % what)
    return None


def finish(skip_teardown=False):
    """Prints the count and exits: 1 if any check failed. skip_teardown ends
    the process without the interpreter's teardown (os._exit), for a test
    that has closed every spardl object itself: torch 1.13's C++ side can
    abort in that teardown ("terminate called without an active exception")
    after its gloo group is destroyed, which is not a result of the checks."""
    print("rank %d: %d checks, %d failed" % (RANK, _n, _failed), flush=True)
    if skip_teardown:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1 if _failed else 0)
    sys.exit(1 if _failed else 0)


def init_torch():
    """The default process group (gloo) over a FileStore in the test's directory."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    path = os.path.join(os.environ["SPARDL_TEST_DIR"], "store")
    dist.init_process_group("gloo", init_method="file://" + path, rank=RANK, world_size=SIZE)
    return dist
