"""CUDA conjugate-gradient solves of implicit-feedback ALS (numba.cuda), the contract of
``reference.als_cg_update``.

Design: one warp per row (grid-stride over rows), the row's float64 work vectors x, r, p and
Ap in a per-warp slice of a global workspace (any number of factors, no shared-memory size to
fix). Lane l owns factors l, l + 32, ...: it alone updates them, so the only cross-lane steps
are the dot products (each lane's partial sum over its factors in order, then a shuffle tree)
and the Gram product G v, where a lane reads all of v (after a ``syncwarp``) and sums
G^T[s, t] v[s] over s in order (coalesced: lanes read consecutive t of a row of G^T). Rows are
independent and every sum has a fixed order: deterministic. Per-row arithmetic in float64, X
and Y read in their dtype, the new row rounded once to X's dtype.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import cuda

from ._device import _FULL_MASK, _SIM, _WARP, _any_device, _dev, _grid, _host, _warp_sum

_WARPS = 2 if _SIM else 8  # warps (rows at a time) per block
_TINY = 1e-20  # squared residual below which a row is left as it is


@cuda.jit(device=True)
def _warp_dot(a, b, n, lane):
    """sum_t a[t] * b[t] over t < n in float64 (every lane of the warp gets it)."""
    s = 0.0
    for t in range(lane, n, _WARP):
        s += numba.float64(a[t]) * b[t]
    return _warp_sum(s)


@cuda.jit(device=True)
def _gram_times(GT, v, out, n, lane):
    """out = G v (GT = G^T, C order) for this lane's factors, summed over s in order."""
    for t in range(lane, n, _WARP):
        acc = 0.0
        for s in range(n):
            acc += GT[s, t] * v[s]
        out[t] = acc


@cuda.jit
def _als_cg_kernel(indptr, indices, data, X, Y, GT, alpha, cg_steps, work, out):
    n_rows, n = X.shape
    thread = cuda.grid(1)
    lane = thread % _WARP
    warp = thread // _WARP
    n_warps = cuda.gridsize(1) // _WARP
    x = work[warp, 0]
    r = work[warp, 1]
    p = work[warp, 2]
    Ap = work[warp, 3]
    for u in range(warp, n_rows, n_warps):
        for t in range(lane, n, _WARP):
            x[t] = X[u, t]
        cuda.syncwarp(_FULL_MASK)
        _gram_times(GT, x, r, n, lane)
        for t in range(lane, n, _WARP):
            r[t] = -r[t]
        for q in range(indptr[u], indptr[u + 1]):
            y = Y[indices[q]]
            c1 = alpha * data[q]
            w = (1.0 + c1) - c1 * _warp_dot(y, x, n, lane)
            for t in range(lane, n, _WARP):
                r[t] += w * numba.float64(y[t])
        rsold = _warp_dot(r, r, n, lane)  # the same value on every lane: uniform branches
        if rsold < _TINY:
            for t in range(lane, n, _WARP):
                out[u, t] = X[u, t]
            cuda.syncwarp(_FULL_MASK)
            continue
        for t in range(lane, n, _WARP):
            p[t] = r[t]
        for _ in range(cg_steps):
            cuda.syncwarp(_FULL_MASK)  # p complete before every lane reads it in G p
            _gram_times(GT, p, Ap, n, lane)
            for q in range(indptr[u], indptr[u + 1]):
                y = Y[indices[q]]
                w = (alpha * data[q]) * _warp_dot(y, p, n, lane)
                for t in range(lane, n, _WARP):
                    Ap[t] += w * numba.float64(y[t])
            a = rsold / _warp_dot(p, Ap, n, lane)
            for t in range(lane, n, _WARP):
                x[t] += a * p[t]
                r[t] -= a * Ap[t]
            rsnew = _warp_dot(r, r, n, lane)
            if rsnew < _TINY:
                break
            b = rsnew / rsold
            for t in range(lane, n, _WARP):
                p[t] = r[t] + b * p[t]
            rsold = rsnew
        for t in range(lane, n, _WARP):
            out[u, t] = x[t]
        cuda.syncwarp(_FULL_MASK)  # every lane done reading x and p before the next row


def als_cg_update(indptr, indices, data, X, Y, YtY, alpha, cg_steps, n_threads):
    """See ``reference.als_cg_update``. Host arrays in, the new X as a host array out; when
    any array argument is a device array the result stays on the device. Time
    O(cg_steps * (nnz + n_rows * n_factors) * n_factors) over the warps; device memory: the
    inputs, the new X and 4 * n_factors float64 per resident warp."""
    on_device = _any_device(indptr, indices, data, X, Y, YtY)
    n_rows, n = int(X.shape[0]), int(X.shape[1])
    if n_rows == 0 or n == 0:
        empty = np.empty((n_rows, n), dtype=np.dtype(X.dtype))
        return cuda.to_device(empty) if on_device else empty
    d_X = _dev(X)
    d_out = cuda.device_array((n_rows, n), dtype=d_X.dtype)
    blocks = _grid(n_rows, _WARPS)
    if int(indices.shape[0]):
        d_indices, d_data = _dev(indices), _dev(data, np.float64)
    else:  # no stored entries: one-element stand-ins that no row reads
        d_indices = cuda.to_device(np.zeros(1, dtype=np.dtype(indices.dtype)))
        d_data = cuda.to_device(np.zeros(1))
    GT = np.ascontiguousarray(np.asarray(_host(YtY), dtype=np.float64).T)
    work = cuda.device_array((blocks * _WARPS, 4, n), dtype=np.float64)
    _als_cg_kernel[blocks, _WARPS * _WARP](
        _dev(indptr),
        d_indices,
        d_data,
        d_X,
        _dev(Y),
        cuda.to_device(GT),
        float(alpha),
        int(cg_steps),
        work,
        d_out,
    )
    return d_out if on_device else d_out.copy_to_host()
