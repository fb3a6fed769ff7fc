"""The largest entry of a big unsigned index array, read on several threads: the bounds check
of a large CSR's column indices (``_validation.check_compressed_structure``) in one parallel
pass. For the CSR sigmoid of 2M rows x 40 entries it was two single-thread NumPy passes (min,
max) of the 320 MB of indices, 35-50 ms against a kernel of 60-120 ms (Zen 4, 2 threads)."""

from __future__ import annotations

import numba
import numpy as np

_BLOCKS = 64  # fixed blocks, any thread count: the maximum does not depend on the order


@numba.njit(parallel=True, cache=True)
def _max_blocks(a):
    n = a.shape[0]
    step = (n + _BLOCKS - 1) // _BLOCKS
    parts = np.zeros(_BLOCKS, dtype=a.dtype)
    for c in numba.prange(_BLOCKS):
        block = a[c * step : min(n, (c + 1) * step)]  # indexed from 0: vectorises
        m = a.dtype.type(0)
        for i in range(block.shape[0]):
            m = max(m, block[i])
        parts[c] = m
    return parts.max()


def max_unsigned(a: np.ndarray, n_threads: int) -> int:
    """max(a) for a non-empty 1-D contiguous uint32/uint64 array, on ``n_threads`` threads."""
    from .numba_cpu._common import threads

    with threads(n_threads):
        return int(_max_blocks(a))
