"""Fork safety of the compiled CPU kernels (Cython/OpenMP and Numba's OpenMP layer).

GNU OpenMP keeps one thread pool per *master* thread, in that thread's thread-local state.
``fork()`` copies only the calling thread: in the child, that thread's pool points at worker
threads that no longer exist, and its next parallel region waits for them forever. Every
other thread of the child starts with empty thread-local state and builds a fresh pool on its
first parallel region. So after a fork, the kernels called from the thread that forked (the
"stale" thread) are run on one helper thread of the child instead, with the full thread count
and the same results (results never depend on the thread count anyway); calls from any other
thread run where they are. This costs one thread hand-off per call in the forking thread of a
forked child, and nothing anywhere else.

Numba's OpenMP threading layer refuses any parallel region in a child of the process that
started it (it prints "Terminating: fork() called ..." and raises SIGTERM, whatever thread
calls). Before fastrec's first Numba kernel in a forked child, that guard is re-armed for the
child (Numba's own ``launch_threads``, which records the current pid): from then on the child's
*own* ``parallel=True`` functions called from the forking thread would hang rather than
terminate, so call those from another thread (or use the forkserver/spawn start methods).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

_state_lock = threading.Lock()
_stale_thread: int | None = None  # ident of the thread that called fork(), in the child
_helper: ThreadPoolExecutor | None = None
_numba_rearmed = True  # nothing to re-arm until a fork happens


def _after_fork_in_child() -> None:
    global _stale_thread, _helper, _numba_rearmed, _state_lock
    _stale_thread = threading.get_ident()
    _helper = None  # the parent's helper thread, if any, did not survive the fork
    _numba_rearmed = False
    _state_lock = threading.Lock()  # the parent's may have been held at fork time


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def in_forked_child() -> bool:
    """True in a process forked from one that had imported fastrec."""
    return _stale_thread is not None


def _rearm_numba_openmp() -> None:
    """Let Numba's OpenMP layer run in this forked child (see the module docstring)."""
    global _numba_rearmed
    _numba_rearmed = True
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is None or getattr(parallel, "_threading_layer", None) != "omp":
        return  # no layer started in the parent (a fresh one starts here), or a fork-safe one
    from numba.np.ufunc import omppool

    launch = ctypes.CFUNCTYPE(None, ctypes.c_int)(omppool.launch_threads)
    launch(int(parallel.NUM_THREADS))


def _helper_executor() -> ThreadPoolExecutor:
    global _helper
    with _state_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastrec-after-fork")
        return _helper


def fork_safe(kernel, backend: str):
    """``kernel`` wrapped so that, in a forked child, calls from the forking thread run on a
    helper thread whose OpenMP pool is its own. Only compiled CPU backends need it."""
    if backend not in ("cython", "numba"):
        return kernel

    def call(*args, **kwargs):
        if _stale_thread is None:
            return kernel(*args, **kwargs)
        if backend == "numba" and not _numba_rearmed:
            with _state_lock:
                if not _numba_rearmed:
                    _rearm_numba_openmp()
        if threading.get_ident() != _stale_thread:
            return kernel(*args, **kwargs)
        return _helper_executor().submit(kernel, *args, **kwargs).result()

    call.__wrapped__ = kernel
    call.__dict__.update(getattr(kernel, "__dict__", {}))  # what the kernel declares
    call.__name__ = getattr(kernel, "__name__", "kernel")
    call.__doc__ = getattr(kernel, "__doc__", None)
    return call


def describe() -> str:
    """What happens after fork(), for ``fastrec info``."""
    where = "this process is a forked child" if in_forked_child() else "not a forked child"
    return (
        "compiled kernels keep working in forked children: calls from the thread that forked "
        "run on a helper thread with a fresh OpenMP pool (same results, all threads); Numba's "
        f"OpenMP fork guard is re-armed in the child ({where})"
    )
