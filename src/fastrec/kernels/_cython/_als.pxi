# The ALS CG kernel's source, compiled three times: _als.pyx (the base instruction set),
# _als_avx2.pyx and _als_avx512.pyx (the same code for newer x86-64 CPUs, chosen at import by
# fastrec.kernels.cython). See _als.pyx for what it computes.
import numpy as np

from cython.parallel cimport prange, threadid
from libc.stdint cimport int32_t, int64_t

ctypedef fused floating:
    float
    double

# A row of Y (float32 or float64) or a float64 work vector, in the dot products.
ctypedef fused vec_t:
    float
    double

ctypedef fused index_t:
    int32_t
    int64_t

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define FASTREC_PREFETCH(p) __builtin_prefetch((const void*) (p), 0, 3)
    #else
    #define FASTREC_PREFETCH(p) ((void) (p))
    #endif
    """
    void FASTREC_PREFETCH(const void* p) nogil

cdef enum:
    ROWS_PER_TASK = 64  # rows per scheduling unit (as the Numba kernel)

cdef double TINY = 1e-20  # squared residual below which a row is left as it is


cdef inline double _dot(const vec_t* a, const double* b, Py_ssize_t f) noexcept nogil:
    """sum_t a[t] * b[t] in float64 with a fixed order (sixteen interleaved partial sums)."""
    cdef double acc[16]
    cdef Py_ssize_t t = 0, j
    cdef double s
    for j in range(16):
        acc[j] = 0
    while t + 16 <= f:
        for j in range(16):
            acc[j] += <double>a[t + j] * b[t + j]
        t += 16
    for j in range(8):
        acc[j] += acc[j + 8]
    s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    while t < f:
        s += <double>a[t] * b[t]
        t += 1
    return s


cdef inline void _gram_times(const double* G, const double* v, double* out,
                             Py_ssize_t f) noexcept nogil:
    """out = G v (G in C order), one dot per row of G."""
    cdef Py_ssize_t s
    for s in range(f):
        out[s] = _dot(G + s * f, v, f)


cdef inline void _prefetch_row(const floating* y, Py_ssize_t f) noexcept nogil:
    cdef Py_ssize_t b
    for b in range(0, f * sizeof(floating), 64):
        FASTREC_PREFETCH((<const char*> y) + b)


cdef inline double _weight(double c, double d, bint first) noexcept nogil:
    return (1.0 + c) - c * d if first else c * d


cdef inline void _add_weighted_rows(
    const index_t* indices, const double* data, Py_ssize_t lo, Py_ssize_t hi, double alpha,
    const floating* Y, const double* v, double* acc, Py_ssize_t f, bint first,
) noexcept nogil:
    """acc += sum over q in [lo, hi) of w_q Y[indices[q]], in q order, where with
    c = alpha * data[q] and d = Y[indices[q]] . v: w_q = (1 + c) - c d (``first``: the
    residual's right-hand side) or c d (the product Y^T (C_u - I) Y v). Four rows at a time:
    four independent dots, then acc read and written once for the four (the same additions
    in the same order as one row at a time)."""
    cdef Py_ssize_t q = lo, s
    cdef double w0, w1, w2, w3
    cdef const floating* y0
    cdef const floating* y1
    cdef const floating* y2
    cdef const floating* y3
    while q + 4 <= hi:
        if q + 8 <= hi:  # the next four rows on their way from L3 while these four are used
            _prefetch_row(Y + <Py_ssize_t>indices[q + 4] * f, f)
            _prefetch_row(Y + <Py_ssize_t>indices[q + 5] * f, f)
            _prefetch_row(Y + <Py_ssize_t>indices[q + 6] * f, f)
            _prefetch_row(Y + <Py_ssize_t>indices[q + 7] * f, f)
        y0 = Y + <Py_ssize_t>indices[q] * f
        y1 = Y + <Py_ssize_t>indices[q + 1] * f
        y2 = Y + <Py_ssize_t>indices[q + 2] * f
        y3 = Y + <Py_ssize_t>indices[q + 3] * f
        w0 = _weight(alpha * data[q], _dot(y0, v, f), first)
        w1 = _weight(alpha * data[q + 1], _dot(y1, v, f), first)
        w2 = _weight(alpha * data[q + 2], _dot(y2, v, f), first)
        w3 = _weight(alpha * data[q + 3], _dot(y3, v, f), first)
        for s in range(f):
            acc[s] = acc[s] + w0 * y0[s] + w1 * y1[s] + w2 * y2[s] + w3 * y3[s]
        q += 4
    while q < hi:
        y0 = Y + <Py_ssize_t>indices[q] * f
        w0 = _weight(alpha * data[q], _dot(y0, v, f), first)
        for s in range(f):
            acc[s] += w0 * y0[s]
        q += 1


cdef void _solve_row(
    const index_t* indices, const double* data, Py_ssize_t lo, Py_ssize_t hi,
    const floating* X_u, const floating* Y, const double* G, double alpha, Py_ssize_t cg_steps,
    Py_ssize_t f, double* x, double* r, double* p, double* Ap, floating* out_u,
) noexcept nogil:
    """x_u after cg_steps CG steps from X_u, rounded into out_u."""
    cdef Py_ssize_t s, _step
    cdef double rsold, rsnew, a, b
    for s in range(f):
        x[s] = X_u[s]
    _gram_times(G, x, r, f)
    for s in range(f):
        r[s] = -r[s]
    # r = Y^T C_u p_u - (YtY + Y^T (C_u - I) Y) x
    _add_weighted_rows(indices, data, lo, hi, alpha, Y, x, r, f, True)
    rsold = _dot(r, r, f)
    if rsold < TINY:
        for s in range(f):
            out_u[s] = X_u[s]
        return
    for s in range(f):
        p[s] = r[s]
    for _step in range(cg_steps):
        _gram_times(G, p, Ap, f)
        _add_weighted_rows(indices, data, lo, hi, alpha, Y, p, Ap, f, False)
        a = rsold / _dot(p, Ap, f)
        for s in range(f):
            x[s] += a * p[s]
            r[s] -= a * Ap[s]
        rsnew = _dot(r, r, f)
        if rsnew < TINY:
            break
        b = rsnew / rsold
        for s in range(f):
            p[s] = r[s] + b * p[s]
        rsold = rsnew
    for s in range(f):
        out_u[s] = <floating>x[s]


def _als_cg_impl(
    const index_t[::1] indptr, const index_t[::1] indices, const double[::1] data,
    const floating[:, ::1] X, const floating[:, ::1] Y, const double[:, ::1] G, double alpha,
    Py_ssize_t cg_steps, double[:, ::1] work, floating[:, ::1] out, int n_threads,
):
    """work: (n_threads, 4 * f) float64, x, r, p and Ap of each thread."""
    cdef Py_ssize_t n_rows = X.shape[0], f = X.shape[1]
    cdef Py_ssize_t n_tasks = (n_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK, task, u, u1
    cdef double* w
    cdef const index_t* ind = &indices[0] if indices.shape[0] else NULL
    cdef const double* val = &data[0] if data.shape[0] else NULL
    cdef const floating* Yp = &Y[0, 0] if Y.shape[0] else NULL
    with nogil:
        for task in prange(n_tasks, schedule="dynamic", num_threads=n_threads):
            w = &work[threadid(), 0]
            u1 = min(n_rows, (task + 1) * ROWS_PER_TASK)
            for u in range(task * ROWS_PER_TASK, u1):
                _solve_row(ind, val, indptr[u], indptr[u + 1], &X[u, 0], Yp, &G[0, 0], alpha,
                           cg_steps, f, w, w + f, w + 2 * f, w + 3 * f, &out[u, 0])


def als_cg_update(indptr, indices, data, X, Y, YtY, alpha, cg_steps, n_threads):
    """See ``reference.als_cg_update``. Time O(cg_steps * (nnz + n_rows * n_factors) *
    n_factors); memory: the new X plus 4 * n_factors float64 per thread."""
    if X.shape[0] == 0 or X.shape[1] == 0:
        return np.array(X, order="C", copy=True)
    out = np.empty_like(X, order="C")
    _als_cg_impl(
        indptr,
        indices,
        np.ascontiguousarray(data, dtype=np.float64),
        np.ascontiguousarray(X),
        np.ascontiguousarray(Y, dtype=X.dtype),
        np.ascontiguousarray(YtY, dtype=np.float64),
        float(alpha),
        int(cg_steps),
        np.empty((int(n_threads), 4 * X.shape[1])),
        out,
        int(n_threads),
    )
    return out
