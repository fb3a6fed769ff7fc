"""CUDA structure checks of device CSR matrices, for the public API's validation of device
CSR inputs (``fastrec._validation_device.check_device_csr``): one pass over indptr and the
stored entries, then one over the rows. Per-thread counts are summed over the block in shared
memory, then added with one atomic per counter per block; only the counters (8 int64) come
back to the host."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from ._device import _SIM, _THREADS, _WARP, _dev, _grid, _zeros

_CSR_FIRST, _CSR_LAST, _CSR_DECREASING, _CSR_OUTSIDE, _CSR_NONFINITE, _CSR_ZEROS = range(6)
_CSR_UNSORTED, _CSR_DUPLICATE = 6, 7


@cuda.jit(device=True)
def _block_sum_add(scratch, value, out, slot):
    """Add ``value`` summed over the block to out[slot]: a shared-memory tree (blockDim a power
    of two), then one atomic by thread 0. Every thread of the block must call it."""
    tid = cuda.threadIdx.x
    cuda.syncthreads()
    scratch[tid] = value
    half = cuda.blockDim.x // 2
    while half > 0:
        cuda.syncthreads()
        if tid < half:
            scratch[tid] += scratch[tid + half]
        half //= 2
    cuda.syncthreads()
    if tid == 0 and scratch[0] != 0:
        cuda.atomic.add(out, slot, scratch[0])


@cuda.jit
def _csr_entry_counts(indptr, indices, data, n_cols, with_values, out):
    """out[2:6] += (decreasing indptr steps, indices outside [0, n_cols), NaN/inf values, stored
    zeros); block 0 writes indptr's first and last entries to out[0:2]."""
    scratch = cuda.shared.array(_THREADS, numba.int64)
    start, stride = cuda.grid(1), cuda.gridsize(1)
    n_rows = indptr.shape[0] - 1
    if start == 0:
        out[_CSR_FIRST] = indptr[0]
        out[_CSR_LAST] = indptr[n_rows]
    decreasing = 0
    for i in range(start, n_rows, stride):
        if indptr[i + 1] < indptr[i]:
            decreasing += 1
    outside = 0
    nonfinite = 0
    zeros = 0
    for p in range(start, indices.shape[0], stride):
        c = indices[p]
        if c < 0 or c >= n_cols:
            outside += 1
        if with_values:
            v = data[p]
            if v != v or v == math.inf or v == -math.inf:
                nonfinite += 1
            elif v == 0:
                zeros += 1
    _block_sum_add(scratch, decreasing, out, _CSR_DECREASING)
    _block_sum_add(scratch, outside, out, _CSR_OUTSIDE)
    _block_sum_add(scratch, nonfinite, out, _CSR_NONFINITE)
    _block_sum_add(scratch, zeros, out, _CSR_ZEROS)


@cuda.jit
def _csr_row_order_counts(indptr, indices, out):
    """out[6:8] += (adjacent pairs of a row out of order, adjacent repeats), a warp per row.
    Needs a valid indptr (starts at 0, non-decreasing, ends at len(indices))."""
    scratch = cuda.shared.array(_THREADS, numba.int64)
    lane = cuda.threadIdx.x % _WARP
    warp = cuda.grid(1) // _WARP
    n_warps = cuda.gridsize(1) // _WARP
    unsorted = 0
    repeated = 0
    for row in range(warp, indptr.shape[0] - 1, n_warps):
        for p in range(indptr[row] + 1 + lane, indptr[row + 1], _WARP):
            before, here = indices[p - 1], indices[p]
            if here < before:
                unsorted += 1
            elif here == before:
                repeated += 1
    _block_sum_add(scratch, unsorted, out, _CSR_UNSORTED)
    _block_sum_add(scratch, repeated, out, _CSR_DUPLICATE)


class DeviceCSRCounts(tuple):
    """What :func:`device_csr_counts` found: indptr's first and last entries, and the number of
    decreasing indptr steps, indices out of range, NaN/inf values, stored zeros, out-of-order
    and repeated adjacent indices in a row (the last two are -1 when not counted)."""

    __slots__ = ()

    first = property(lambda s: s[0])
    last = property(lambda s: s[1])
    decreasing = property(lambda s: s[2])
    outside = property(lambda s: s[3])
    nonfinite = property(lambda s: s[4])
    zeros = property(lambda s: s[5])
    unsorted = property(lambda s: s[6])
    repeated = property(lambda s: s[7])


def device_csr_counts(indptr, indices, data, n_cols, with_values, with_order):
    """Structure counts of device CSR arrays, computed on the device (``DeviceCSRCounts``).

    ``with_values``: count NaN/inf and stored zeros of ``data``; ``with_order``: count rows'
    adjacent indices out of order or repeated (only when indptr is valid: otherwise -1).
    O(n_rows + nnz) reads, O(1) memory; two transfers of 64 bytes to the host.
    """
    d_indptr, d_indices = _dev(indptr), _dev(indices)
    d_data = _dev(data) if with_values else d_indices
    n_rows, nnz = int(d_indptr.shape[0]) - 1, int(d_indices.shape[0])
    out = _zeros(8, np.int64)
    _csr_entry_counts[_grid(max(n_rows, nnz, 1), _THREADS), _THREADS](
        d_indptr, d_indices, d_data, int(n_cols), bool(with_values), out
    )
    counts = out.copy_to_host()
    valid = counts[0] == 0 and counts[1] == nnz and counts[2] == 0
    if not (with_order and valid):
        counts[6:] = -1
    elif nnz and n_rows:
        _csr_row_order_counts[_grid(n_rows, _THREADS // _WARP), _THREADS](d_indptr, d_indices, out)
        counts = out.copy_to_host()
    return DeviceCSRCounts(int(c) for c in counts)


def device_free_memory():
    """Free bytes of GPU memory in the current context (None on the simulator)."""
    if _SIM:
        return None
    return int(cuda.current_context().get_memory_info()[0])
