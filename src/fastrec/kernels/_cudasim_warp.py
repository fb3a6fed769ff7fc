"""Warp primitives (shuffles, ballot, syncwarp) for Numba's CUDA simulator, which lacks them.

The simulator runs each CUDA thread of a block as a Python thread but implements no warp-level
intrinsics, so kernels written for the GPU (shuffle reductions) could not be tested in CI. This
module adds ``shfl_sync``, ``shfl_down_sync``, ``shfl_up_sync``, ``shfl_xor_sync``,
``ballot_sync`` and ``syncwarp`` to the simulator's fake ``cuda`` module, each built on one
exchange: every lane of the warp publishes its value, waits at a per-warp barrier and reads the
values it needs. Exchanges alternate between two slot lists, so one barrier per exchange is
enough: a lane can write a list again (two exchanges later) only after every lane has reached
the barrier in between, which each lane does after it has read the list.

Semantics follow the hardware for the way fastrec uses them: the whole warp (every lane of the
block's warp, 32 or fewer in a last partial warp) takes part, so the ``mask`` argument must name
all of them. A lane that skips a call deadlocks the warp, as it would be undefined behaviour on a
GPU; the barrier times out with an error instead of hanging. Installed only when the simulator
is on and only where the simulator has no implementation of its own.
"""

from __future__ import annotations

import threading

_TIMEOUT_S = 120.0
_registry_lock = threading.Lock()


def _warp_state():
    """(lane, warp state) of the calling simulated thread; the state (two slot lists, each lane's
    count of exchanges, the warp's barrier) is created on the warp's first use."""
    thread = threading.current_thread()
    state = getattr(thread, "_fastrec_warp", None)
    if state is None:
        manager = thread._manager
        warp = thread.thread_id // 32
        with _registry_lock:
            warps = manager.__dict__.setdefault("_fastrec_warps", {})
            state = warps.get(warp)
            if state is None:
                n_threads = 1
                for extent in manager._block_dim:
                    n_threads *= extent
                size = min(32, n_threads - 32 * warp)
                slots = ([None] * size, [None] * size)
                state = (slots, [0] * size, threading.Barrier(size, timeout=_TIMEOUT_S))
                warps[warp] = state
        thread._fastrec_warp = state  # a simulated thread belongs to one block for its life
    return thread.thread_id % 32, state


def _exchange(value):
    """Every lane's value, as a list indexed by lane."""
    lane, (slots, counts, barrier) = _warp_state()
    mine = slots[counts[lane] & 1]
    counts[lane] += 1
    mine[lane] = value
    barrier.wait()
    return lane, list(mine)


def shfl_sync(self, mask, value, src_lane):
    lane, values = _exchange(value)
    return values[src_lane % len(values)]


def shfl_down_sync(self, mask, value, delta):
    lane, values = _exchange(value)
    src = lane + delta
    return values[src] if src < len(values) else value


def shfl_up_sync(self, mask, value, delta):
    lane, values = _exchange(value)
    src = lane - delta
    return values[src] if src >= 0 else value


def shfl_xor_sync(self, mask, value, lane_mask):
    lane, values = _exchange(value)
    src = lane ^ lane_mask
    return values[src] if src < len(values) else value


def ballot_sync(self, mask, predicate):
    lane, values = _exchange(bool(predicate))
    bits = 0
    for i, v in enumerate(values):
        if v:
            bits |= 1 << i
    return bits


def syncwarp(self, mask=0xFFFFFFFF):
    _exchange(None)


def install() -> None:
    """Add the primitives above to the simulator's fake cuda module where it has none."""
    from numba.cuda.simulator.kernelapi import FakeCUDAModule

    for name, fn in (
        ("shfl_sync", shfl_sync),
        ("shfl_down_sync", shfl_down_sync),
        ("shfl_up_sync", shfl_up_sync),
        ("shfl_xor_sync", shfl_xor_sync),
        ("ballot_sync", ballot_sync),
        ("syncwarp", syncwarp),
    ):
        if not hasattr(FakeCUDAModule, name):
            setattr(FakeCUDAModule, name, fn)
