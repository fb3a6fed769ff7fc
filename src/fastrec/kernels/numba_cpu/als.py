"""Numba CPU conjugate-gradient solves of implicit-feedback ALS (contract of
``reference.als_cg_update``). Rows are independent, each solved by one thread into its own
output row, so the result is bit-identical for any thread count. Per-row arithmetic in
float64 (X and Y are read in their dtype, the result rounded once), as the reference."""

from __future__ import annotations

import numba
import numpy as np

from ._common import threads

_ROWS_PER_TASK = 64


@numba.njit(inline="always")
def _dot(a, b):
    s = 0.0  # float64: a float32 CG loses the residual's last digits within a few steps
    for t in range(a.shape[0]):
        s += np.float64(a[t]) * np.float64(b[t])
    return s


@numba.njit(inline="always")
def _gram_times(G, v, out):
    for s in range(G.shape[0]):
        out[s] = _dot(G[s], v)


@numba.njit(inline="always")
def _add_weighted_rows(lo, hi, indices, data, alpha, Y, v, acc, first):
    """acc += sum over q in [lo, hi) of w_q Y[indices[q]], in q order, where with
    c = alpha * data[q] and d = Y[indices[q]] . v: w_q = (1 + c) - c d (``first``: the
    residual's right-hand side) or c d (the product Y^T (C_u - I) Y v). Four rows at a time:
    four independent dots, then acc read and written once for the four (the same additions
    in the same order as one row at a time; this pass in half the time on the mid set)."""
    n_factors = acc.shape[0]
    q4 = lo
    while q4 + 4 <= hi:
        q = q4
        y0 = Y[indices[q]]
        y1 = Y[indices[q + 1]]
        y2 = Y[indices[q + 2]]
        y3 = Y[indices[q + 3]]
        w0 = _weight(alpha * data[q], _dot(y0, v), first)
        w1 = _weight(alpha * data[q + 1], _dot(y1, v), first)
        w2 = _weight(alpha * data[q + 2], _dot(y2, v), first)
        w3 = _weight(alpha * data[q + 3], _dot(y3, v), first)
        for s in range(n_factors):
            acc[s] = acc[s] + w0 * y0[s] + w1 * y1[s] + w2 * y2[s] + w3 * y3[s]
        q4 += 4
    for q in range(q4, hi):
        y = Y[indices[q]]
        w = _weight(alpha * data[q], _dot(y, v), first)
        for s in range(n_factors):
            acc[s] += w * y[s]


@numba.njit(inline="always")
def _weight(c, d, first):
    return (1.0 + c) - c * d if first else c * d


# Reassociation lets LLVM vectorise the length-f dot products; the compiled
# code is fixed, so every row still gets the same bits whichever thread solves it.
@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _cg_impl(indptr, indices, data, X, Y, YtY, alpha, cg_steps, out):
    n_rows, n_factors = X.shape
    tiny = 1e-20
    for task in numba.prange((n_rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK):
        r = np.empty(n_factors, np.float64)
        p = np.empty(n_factors, np.float64)
        Ap = np.empty(n_factors, np.float64)
        x = np.empty(n_factors, np.float64)
        for u in range(task * _ROWS_PER_TASK, min(n_rows, (task + 1) * _ROWS_PER_TASK)):
            for s in range(n_factors):
                x[s] = X[u, s]
            _gram_times(YtY, x, r)
            for s in range(n_factors):
                r[s] = -r[s]
            _add_weighted_rows(indptr[u], indptr[u + 1], indices, data, alpha, Y, x, r, True)
            rsold = _dot(r, r)
            if rsold < tiny:
                for s in range(n_factors):
                    out[u, s] = X[u, s]
                continue
            for s in range(n_factors):
                p[s] = r[s]
            for _ in range(cg_steps):
                _gram_times(YtY, p, Ap)
                _add_weighted_rows(indptr[u], indptr[u + 1], indices, data, alpha, Y, p, Ap, False)
                a = rsold / _dot(p, Ap)
                for s in range(n_factors):
                    x[s] += a * p[s]
                    r[s] -= a * Ap[s]
                rsnew = _dot(r, r)
                if rsnew < tiny:
                    break
                b = rsnew / rsold
                for s in range(n_factors):
                    p[s] = r[s] + b * p[s]
                rsold = rsnew
            for s in range(n_factors):
                out[u, s] = x[s]


def als_cg_update(indptr, indices, data, X, Y, YtY, alpha, cg_steps, n_threads):
    """See ``reference.als_cg_update``. Time O(cg_steps * (nnz + n_rows * n_factors) *
    n_factors); memory: the new X plus O(n_factors) per thread."""
    out = np.empty_like(X)
    with threads(n_threads, dynamic=True):
        _cg_impl(
            indptr,
            indices,
            np.ascontiguousarray(data, dtype=np.float64),
            X,
            Y,
            np.ascontiguousarray(YtY, dtype=np.float64),
            float(alpha),
            int(cg_steps),
            out,
        )
    return out
