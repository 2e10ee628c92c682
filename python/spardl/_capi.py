# SPDX-License-Identifier: MIT
"""ctypes declarations of the C API in <spardl/spardl.h>; nothing else.

The structs below mirror the header field for field. The output structs
(info, stats) are passed with their size, so an older library fills the
fields it knows and zeroes the rest.
"""

import ctypes
import ctypes.util
import os

ERR_BASE = 256
ERR_MISMATCH = ERR_BASE + 1
ERR_PROTOCOL = ERR_BASE + 2
ERR_PLAN_FAILED = ERR_BASE + 3
ERR_ENV = ERR_BASE + 4

COMM_PARAM_RANK_SIZE = 1 << 0
COMM_PARAM_BOOTSTRAP = 1 << 1
COMM_PARAM_JOB_KEY = 1 << 2
COMM_PARAM_TRANSPORT = 1 << 3
COMM_PARAM_OOB = 1 << 4
COMM_PARAM_TIMEOUT = 1 << 5

ALGOS = {"spardl": 0, "dense": 1, "topka": 2, "gtopk": 3}
SAGS = {"bruck": 0, "recursive": 1}
SRSS = {"batched": 0, "sequential": 1}
MEM_HOST = 0
MEM_CUDA = 1

OOB_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class CommParams(ctypes.Structure):
    _fields_ = [
        ("field_mask", ctypes.c_uint64),
        ("rank", ctypes.c_int),
        ("size", ctypes.c_int),
        ("bootstrap", ctypes.c_char_p),
        ("job_key", ctypes.c_char_p),
        ("transport", ctypes.c_char_p),
        ("oob_allgather", OOB_FN),
        ("oob_ctx", ctypes.c_void_p),
        ("timeout_ms", ctypes.c_int),
    ]


class PlanParams(ctypes.Structure):
    _fields_ = [
        ("field_mask", ctypes.c_uint64),
        ("count", ctypes.c_size_t),
        ("density", ctypes.c_double),
        ("algo", ctypes.c_int),
        ("teams", ctypes.c_int),
        ("sag", ctypes.c_int),
        ("srs", ctypes.c_int),
        ("residual", ctypes.c_int),
        ("average", ctypes.c_int),
        ("dtype", ctypes.c_int),
        ("mem_type", ctypes.c_int),
    ]


class PlanInfo(ctypes.Structure):
    _fields_ = [
        ("count", ctypes.c_size_t),
        ("k", ctypes.c_size_t),
        ("block_size", ctypes.c_size_t),
        ("block_budget", ctypes.c_size_t),
        ("team_size", ctypes.c_int),
        ("teams", ctypes.c_int),
        ("host_bytes", ctypes.c_size_t),
        ("registered_bytes", ctypes.c_size_t),
        ("device_bytes", ctypes.c_size_t),
        ("max_write", ctypes.c_uint64),
        ("peers", ctypes.c_size_t),
    ]


class PlanStats(ctypes.Structure):
    _fields_ = [
        ("calls", ctypes.c_uint64),
        ("total", ctypes.c_double),
        ("accumulate", ctypes.c_double),
        ("select", ctypes.c_double),
        ("reduce", ctypes.c_double),
        ("wait", ctypes.c_double),
        ("post", ctypes.c_double),
        ("output", ctypes.c_double),
        ("scans", ctypes.c_uint64),
        ("failed_calls", ctypes.c_uint64),
        ("bytes_sent", ctypes.c_uint64),
        ("writes", ctypes.c_uint64),
    ]


def _candidates():
    env = os.environ.get("SPARDL_LIBRARY")
    if env:
        return [env], True
    names = []
    try:
        from . import _libpath  # written by meson: the library this package was built or installed with
        names.append(_libpath.LIBRARY)
    except ImportError:
        pass
    found = ctypes.util.find_library("spardl")
    if found:
        names.append(found)
    names.append("libspardl.so.0")
    return names, False


def load():
    names, forced = _candidates()
    errors = []
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            errors.append("%s: %s" % (name, e))
            if forced:
                break
            continue
        _declare(lib)
        return lib, name
    hint = ("SPARDL_LIBRARY is set but cannot be loaded; point it at libspardl.so"
            if forced else
            "install spardl (meson install) or set SPARDL_LIBRARY=/path/to/libspardl.so")
    raise ImportError("spardl: cannot load the C library (%s); %s" % ("; ".join(errors), hint))


def _fn(lib, name, restype, argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = argtypes
    return f


def _declare(lib):
    P = ctypes.c_void_p
    _fn(lib, "spardl_strerror", ctypes.c_char_p, [ctypes.c_int])
    _fn(lib, "spardl_last_error", ctypes.c_char_p, [])
    _fn(lib, "spardl_comm_params_init", None, [ctypes.POINTER(CommParams)])
    _fn(lib, "spardl_comm_create", ctypes.c_int, [ctypes.POINTER(CommParams), ctypes.POINTER(P)])
    _fn(lib, "spardl_comm_destroy", None, [P])
    _fn(lib, "spardl_comm_rank", ctypes.c_int, [P])
    _fn(lib, "spardl_comm_size", ctypes.c_int, [P])
    _fn(lib, "spardl_comm_transport", ctypes.c_char_p, [P])
    _fn(lib, "spardl_plan_params_init", None, [ctypes.POINTER(PlanParams)])
    _fn(lib, "spardl_plan_create", ctypes.c_int, [P, ctypes.POINTER(PlanParams), ctypes.POINTER(P)])
    _fn(lib, "spardl_plan_destroy", None, [P])
    _fn(lib, "spardl_allreduce", ctypes.c_int, [P, P])
    _fn(lib, "spardl_plan_max_nnz", ctypes.c_size_t, [P])
    _fn(lib, "spardl_allreduce_sparse", ctypes.c_int, [P, P, P, P, ctypes.POINTER(ctypes.c_size_t)])
    _fn(lib, "spardl_plan_residual", ctypes.c_int, [P, ctypes.POINTER(P)])
    _fn(lib, "spardl_plan_set_residual", ctypes.c_int, [P, P])
    _fn(lib, "spardl_plan_info_sized", ctypes.c_int, [P, ctypes.POINTER(PlanInfo), ctypes.c_size_t])
    _fn(lib, "spardl_plan_stats_sized", ctypes.c_int, [P, ctypes.POINTER(PlanStats), ctypes.c_size_t])
    _fn(lib, "spardl_plan_schedule_text", ctypes.c_int, [P, ctypes.POINTER(P)])
    _fn(lib, "spardl_env_help", ctypes.c_char_p, [])
    try:  # since 0.4
        _fn(lib, "spardl_allreduce_async", ctypes.c_int, [P, P, P])
        _fn(lib, "spardl_allreduce_sparse_async", ctypes.c_int, [P, P, P, P, ctypes.POINTER(ctypes.c_size_t), P])
        _fn(lib, "spardl_plan_sync", ctypes.c_int, [P])
    except AttributeError:
        pass
