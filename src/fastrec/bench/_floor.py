"""The read floor of a benchmark: a parallel read of the same arrays with the same thread count.

A one-thread NumPy sum is not a floor on a multi-core machine; this sums every element of each
array in row blocks on ``n_threads`` Numba threads (a pure streaming read of its bytes), so a
kernel's time over the floor's is the fraction of the machine's read bandwidth it reaches.
"""

from __future__ import annotations

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
