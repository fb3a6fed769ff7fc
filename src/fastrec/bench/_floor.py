"""The read floor of a benchmark: a parallel read of the same arrays with the same thread count.

A one-thread NumPy sum is not a floor on a multi-core machine; this sums every element of each
array in row blocks on ``n_threads`` Numba threads (a pure streaming read of its bytes), so a
kernel's time over the floor's is the fraction of the machine's read bandwidth it reaches.
That bandwidth is the memory's, or, where the memory keeps up with every thread, the cores'
own streaming speed: :func:`read_scaling` and :func:`memory_state` tell which.
"""

from __future__ import annotations

import os
import time

import numba
import numpy as np


@numba.njit(parallel=True, fastmath=True, cache=True)
def _read_all(flat, n_blocks):
    """Sum of every element, blocks in parallel; fastmath lets the sum vectorise, so the loop
    runs at the memory's speed, not at the add's latency."""
    n = flat.shape[0]
    step = (n + n_blocks - 1) // n_blocks
    parts = np.zeros(n_blocks)
    for c in numba.prange(n_blocks):
        block = flat[c * step : min(n, (c + 1) * step)]  # indexed from 0: vectorises
        acc = block.dtype.type(0)
        for i in range(block.shape[0]):
            acc += block[i]
        parts[c] = acc
    return parts.sum()


def _flat(a: np.ndarray) -> np.ndarray:
    """A 1-D view of a contiguous array (no copy); integers are summed as integers (as
    floats their bit patterns would be subnormals, which some CPUs add slowly)."""
    flat = a.ravel(order="K")
    if flat.dtype.kind == "i":
        flat = flat.view(flat.dtype.str.replace("i", "u"))
    return flat


def parallel_read(arrays, n_threads: int):
    """A function that reads every element of ``arrays`` (contiguous NumPy arrays) once on
    ``n_threads`` threads; call it to time the floor. Integer arrays are read as floats of
    the same width (the bytes, not their meaning, matter)."""
    flats = [_flat(a) for a in arrays]
    threads = max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS))

    def read():
        saved = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            return sum(_read_all(f, 256) for f in flats)
        finally:
            numba.set_num_threads(saved)

    return read


def _last_level_cache_bytes() -> int:
    try:
        return max(0, int(os.sysconf("SC_LEVEL3_CACHE_SIZE")))
    except (ValueError, OSError, AttributeError):
        return 0


def read_scaling(n_threads: int, rounds: int = 3) -> float:
    """How many times faster an ``n_threads`` read of an array beyond the caches runs than a
    1-thread read (medians of ``rounds``; the array: 256 MB, or four times the last-level
    cache where that is larger, at most 1 GB)."""
    nbytes = min(1 << 30, max(1 << 28, 4 * _last_level_cache_bytes()))
    a = np.ones(nbytes // 4, dtype=np.float32)
    one, many = parallel_read([a], 1), parallel_read([a], n_threads)
    one()  # compiles, faults the pages in
    many()
    t_one, t_many = [], []
    for _ in range(rounds):
        for fn, ts in ((one, t_one), (many, t_many)):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return float(np.median(t_one) / np.median(t_many))


def memory_state(n_threads: int, scaling: float) -> str:
    """What the read floor is in a run whose ``n_threads`` read ran ``scaling`` times as fast
    as the 1-thread read: the memory's speed, or (near-linear scaling) the cores' own
    streaming speed, which a kernel doing work per element reaches only about as well as it
    does on one thread."""
    measured = f"the {n_threads}-thread read ran {scaling:.2f}x as fast as the 1-thread read: "
    if scaling >= 0.8 * n_threads:
        return measured + (
            "the cores, not the memory, set the read floor in this run (each streams at its own "
            "peak); a kernel that works on every element reaches about the fraction of it it "
            "reaches on one thread"
        )
    return measured + "the memory sets the read floor in this run"
