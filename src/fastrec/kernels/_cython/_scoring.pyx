"""Fused sigmoid scoring and logistic loss/gradient: the Cython (OpenMP) kernels.

Same names, signatures and results as ``fastrec.kernels.reference`` (re-exported by
``fastrec.kernels.cython``). Arithmetic is float64 throughout (float32 inputs are widened as
they are read, outputs cast back once), so a float32 score is the float64 score rounded.

Determinism: every sum has a fixed order that depends on the data's shape only, never on the
thread count. Dot products use eight (dense) or four (CSR) interleaved accumulators combined
in a fixed tree, or, in the CSR sigmoid on CPUs where they measure faster, the vector lanes of
_scoring_simd.h (a fixed lane order and tree too); the loss/gradient reductions use blocks of
rows whose boundaries are fixed by the shape, each block summing into its own partial buffer,
and the partials are combined in block order. Threads only decide *who* computes a block,
never what it sums.
"""
from cython.parallel cimport parallel, prange
from libc.math cimport exp, log1p
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc

import numpy as np

from .. import _host
from .. import _scoring_plan as _plan

ctypedef fused floating:
    float
    double

# The weights' type, independent of X's: X's own type for scoring, float64 for loss/grad.
ctypedef fused weight_t:
    float
    double

ctypedef fused index_t:
    int32_t
    int64_t

cdef enum:
    # Rows per block of the dense kernels. For loss/grad the partial gradients cost
    # n_rows / DENSE_BLOCK * n_features float64s (1/32 of X's bytes for float64 X), and an
    # F-order block of DENSE_BLOCK rows x ~100 features stays in L2 between its two passes.
    DENSE_BLOCK = 256
    # Rows per scheduling block of the CSR sigmoid (no reduction across rows there).
    CSR_BLOCK = 1024
    # Columns per block when the partial gradients are combined (in parallel over columns).
    COMBINE_BLOCK = 4096
    # Rows per block of the F-order sigmoid (_scoring_plan.SIGMOID_F_BLOCK).
    SIGMOID_F_BLOCK = 16384
    # Folds of fewer partial-gradient entries than this run on one thread.
    COMBINE_PARALLEL_MIN = 1 << 20

# Block sizes are fixed with the other backends in _scoring_plan (checked at import).
if (DENSE_BLOCK, SIGMOID_F_BLOCK, CSR_BLOCK, COMBINE_BLOCK) != (
    _plan.DENSE_BLOCK, _plan.SIGMOID_F_BLOCK, _plan.CSR_BLOCK, _plan.COMBINE_BLOCK,
):  # pragma: no cover
    raise ImportError("fastrec: _scoring.pyx block sizes differ from kernels/_scoring_plan.py")


# ---- the stable sigmoid and log1pexp, written once for every kernel here --------------------

cdef inline double _sigmoid(double z) noexcept nogil:
    """1 / (1 + exp(-z)); exp is only taken of a non-positive number, so it never overflows."""
    cdef double e
    if z >= 0:
        return 1.0 / (1.0 + exp(-z))
    e = exp(z)
    return e / (1.0 + e)


cdef inline double _log1pexp_sigmoid(double z, double* p) noexcept nogil:
    """log(1 + exp(z)) with scikit-learn's cut-offs, and sigmoid(z) into *p, from one exp.

    e = exp(-|z|) <= 1 serves both: for z > 0, log(1 + exp(z)) = z + log1p(e).
    """
    cdef double e = exp(-z) if z >= 0 else exp(z)
    p[0] = 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)
    if z <= -37:
        return e
    if z <= 0:
        return log1p(e)
    if z <= 18:
        return z + log1p(e)
    if z <= 33.3:
        return z + e
    return z


# ---- dot products with a fixed summation order -------------------------------------------

cdef inline double _dot(const floating* x, const weight_t* w, Py_ssize_t d) noexcept nogil:
    """sum_j x[j] * w[j] in float64; w of x's type (sigmoid) or float64 (loss/grad)."""
    # Eight interleaved accumulators: a fixed order (same bits on any thread count) that the
    # compiler can vectorise without -ffast-math, and no single add chain bounding the speed.
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef Py_ssize_t j = 0
    while j + 8 <= d:
        a0 += <double>x[j] * <double>w[j]
        a1 += <double>x[j + 1] * <double>w[j + 1]
        a2 += <double>x[j + 2] * <double>w[j + 2]
        a3 += <double>x[j + 3] * <double>w[j + 3]
        a4 += <double>x[j + 4] * <double>w[j + 4]
        a5 += <double>x[j + 5] * <double>w[j + 5]
        a6 += <double>x[j + 6] * <double>w[j + 6]
        a7 += <double>x[j + 7] * <double>w[j + 7]
        j += 8
    a0 = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    while j < d:
        a0 += <double>x[j] * <double>w[j]
        j += 1
    return a0


cdef inline double _sparse_dot(
    const index_t* indices, const floating* data, const weight_t* w, Py_ssize_t lo, Py_ssize_t hi
) noexcept nogil:
    """sum_k data[k] * w[indices[k]] over k in [lo, hi), float64, fixed order; w of data's type
    (sigmoid) or float64 (loss/grad)."""
    # Four accumulators keep several gathers in flight instead of one add chain.
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0
    cdef Py_ssize_t k = lo
    while k + 4 <= hi:
        a0 += <double>data[k] * <double>w[indices[k]]
        a1 += <double>data[k + 1] * <double>w[indices[k + 1]]
        a2 += <double>data[k + 2] * <double>w[indices[k + 2]]
        a3 += <double>data[k + 3] * <double>w[indices[k + 3]]
        k += 4
    a0 = (a0 + a1) + (a2 + a3)
    while k < hi:
        a0 += <double>data[k] * <double>w[indices[k]]
        k += 1
    return a0


# ---- sigmoid scoring -------------------------------------------------------------------------

cdef inline Py_ssize_t _count_unproven(const floating* s, Py_ssize_t m) noexcept nogil:
    """How many of s[:m] lie outside (0, 1), NaN included (see ``counts_unproven``)."""
    cdef Py_ssize_t t, c = 0
    for t in range(m):
        c += not (s[t] > 0 and s[t] < 1)
    return c


# Rows per chunk of the C-order dense sigmoid's pipeline (_sigmoid_rows_c): a speed choice
# only (the scores are the same for any chunk), settable for A/B runs (_set_dense_chunk).
# 2M x 64 float32, Zen 4, 684 runs with the chunk sizes interleaved in each: 16 rows ahead of
# 32 in 95% of them at one thread (medians 0.724 and 0.686 of the read) and 82% at two (0.960
# and 0.940; 0.753 and 0.720 where the cores set the read's speed); 8 and 64 rows behind 32.
cdef Py_ssize_t _dense_chunk = 16


def _set_dense_chunk(Py_ssize_t rows):
    """Rows per chunk of the C-order dense sigmoid (1..256); returns the previous value."""
    global _dense_chunk
    if not 1 <= rows <= 256:
        raise ValueError("rows must be in 1..256")
    previous = _dense_chunk
    _dense_chunk = rows
    return previous


cdef inline void _sigmoid_chunk(const double* z, Py_ssize_t r, Py_ssize_t m, double b,
                                floating* out) noexcept nogil:
    """out[r:r + m] = sigmoid(z[:m] + b), the block form (_scoring_simd.h)."""
    if floating is float:
        fastrec_sigmoid_block_f32(z, m, b, out + r, _csr_isa_here)
    else:
        fastrec_sigmoid_block_f64(z, m, b, out + r, _csr_isa_here)


cdef Py_ssize_t _sigmoid_rows_c(
    const floating* X, Py_ssize_t n, Py_ssize_t d, const floating* w, double b, floating* out,
    int n_threads, bint simd,
) noexcept nogil:
    """Returns the number of scores outside (0, 1) (counted per block, from cache)."""
    cdef Py_ssize_t nb = (n + DENSE_BLOCK - 1) // DENSE_BLOCK, blk, i, r0, r1, t, c0, c1
    cdef Py_ssize_t bad = 0, prev, half, chunk = _dense_chunk
    cdef double* z
    if not simd:
        for blk in prange(nb, schedule="dynamic", num_threads=n_threads):
            r0 = blk * DENSE_BLOCK
            r1 = min(n, r0 + DENSE_BLOCK)
            for i in range(r0, r1):
                out[i] = <floating>_sigmoid(_dot(X + i * d, w, d) + b)
            bad += _count_unproven(out + r0, r1 - r0)
        return bad
    # Logits by the AVX2 dot (_scoring_simd.h) _dense_chunk rows at a time, then their
    # sigmoid in the block form (Numba's arithmetic; when it came in, 2M x 64 float64, Zen 4:
    # 0.92 and 0.77 of the read at 1 and 2 threads, against 0.50-0.69 with libm's exp per
    # row; current figures in benchmarks/README). float32 w is
    # converted to float64 once. "guided" hands each thread long runs of consecutive blocks
    # first (one stream each, as the read floor's static halves: 2M x 64 float32, 2 threads,
    # Zen 4: 0.97-0.99 of the read, 0.87 with "dynamic"'s interleaved blocks) and short ones at
    # the end, so that a thread held up by other load is waited for little.
    cdef double* w64 = NULL
    if floating is float:
        w64 = <double*>malloc(max(d, 1) * sizeof(double))
        for t in range(d):
            w64[t] = w[t]
    with parallel(num_threads=n_threads):
        z = <double*>malloc(2 * chunk * sizeof(double))
        for blk in prange(nb, schedule="guided"):
            r0 = blk * DENSE_BLOCK
            r1 = min(n, r0 + DENSE_BLOCK)
            # A chunk's sigmoid is taken after the next chunk's logits, when its inputs are
            # long computed, so that it overlaps that chunk's loads instead of waiting on them
            # (32-row chunks, 2M x 64 float32, Zen 4, ~1300 runs of each build in alternated
            # stretches: one thread 0.76 -> 0.80 of the read; 2 threads 0.79 -> 0.82 where the
            # cores set the read's speed, 0.96 where the memory does, as before).
            c0 = r0
            prev = -1
            half = 0
            while c0 < r1:
                c1 = min(r1, c0 + chunk)
                if floating is float:
                    fastrec_dense_logits_f32(X, c0, c1, d, w64, z + half)
                else:
                    fastrec_dense_logits_f64(X, c0, c1, d, w, z + half)
                half = chunk - half
                if prev >= 0:
                    _sigmoid_chunk(z + half, prev, c0 - prev, b, out)
                prev = c0
                c0 = c1
            _sigmoid_chunk(z + chunk - half, prev, r1 - prev, b, out)
            bad += _count_unproven(out + r0, r1 - r0)
        free(z)
    free(w64)
    return bad


cdef inline void _add_columns8(
    double* acc, const floating* X, Py_ssize_t n, Py_ssize_t r0, Py_ssize_t m, Py_ssize_t j,
    const floating* w,
) noexcept nogil:
    """acc[t] += X[r0 + t, j + c] * w[j + c] for c = 0..7 in order (F order), in float64: one
    pass over acc for eight columns, the sums of eight single-column passes."""
    cdef const floating* c0 = X + j * n + r0
    cdef const floating* c1 = c0 + n
    cdef const floating* c2 = c1 + n
    cdef const floating* c3 = c2 + n
    cdef const floating* c4 = c3 + n
    cdef const floating* c5 = c4 + n
    cdef const floating* c6 = c5 + n
    cdef const floating* c7 = c6 + n
    cdef double w0 = w[j], w1 = w[j + 1], w2 = w[j + 2], w3 = w[j + 3]
    cdef double w4 = w[j + 4], w5 = w[j + 5], w6 = w[j + 6], w7 = w[j + 7]
    cdef double a
    cdef Py_ssize_t t
    for t in range(m):
        a = acc[t] + <double>c0[t] * w0
        a = a + <double>c1[t] * w1
        a = a + <double>c2[t] * w2
        a = a + <double>c3[t] * w3
        a = a + <double>c4[t] * w4
        a = a + <double>c5[t] * w5
        a = a + <double>c6[t] * w6
        acc[t] = a + <double>c7[t] * w7


cdef Py_ssize_t _sigmoid_rows_f(
    const floating* X, Py_ssize_t n, Py_ssize_t d, const floating* w, double b, floating* out,
    int n_threads, bint simd,
) noexcept nogil:
    """Returns the number of scores outside (0, 1)."""
    # Column-major: a block's logits are built column by column, eight columns per pass
    # (vectorised), in a thread-private buffer of SIGMOID_F_BLOCK float64s. The block sigmoid
    # where the CPU has AVX2 (as _sigmoid_rows_c). Blocks are handed out one at a time, so that
    # the threads read neighbouring stretches of the same eight columns: 2M x 64 float32,
    # 2 threads, Zen 4, six alternated runs: 0.50-0.97 of the read (median 0.72; NumPy's
    # expit(X @ w) 0.57-0.80) against 0.48-0.92 (median 0.59) for "guided"'s long runs of
    # blocks per thread (sixteen column streams).
    cdef Py_ssize_t nb = (n + SIGMOID_F_BLOCK - 1) // SIGMOID_F_BLOCK, blk, j, t, r0, m
    cdef Py_ssize_t bad = 0
    cdef double* acc
    cdef const floating* col
    cdef double wj
    with parallel(num_threads=n_threads):
        acc = <double*>malloc(min(SIGMOID_F_BLOCK, n) * sizeof(double))
        for blk in prange(nb, schedule="dynamic"):
            r0 = blk * SIGMOID_F_BLOCK
            m = min(SIGMOID_F_BLOCK, n - r0)
            for t in range(m):
                acc[t] = 0
            j = 0
            while j + 8 <= d:
                _add_columns8(acc, X, n, r0, m, j, w)
                j = j + 8
            while j < d:
                col = X + j * n + r0
                wj = w[j]
                for t in range(m):
                    acc[t] = acc[t] + <double>col[t] * wj
                j = j + 1
            if simd:
                _sigmoid_chunk(acc, r0, m, b, out)
            else:
                for t in range(m):
                    out[r0 + t] = <floating>_sigmoid(acc[t] + b)
            bad += _count_unproven(out + r0, m)
        free(acc)
    return bad


def _sigmoid_dense_c(const floating[:, ::1] X, const floating[::1] w, double b,
                     floating[::1] out, int n_threads):
    cdef Py_ssize_t bad = 0
    if X.shape[0]:
        with nogil:
            bad = _sigmoid_rows_c(&X[0, 0], X.shape[0], X.shape[1],
                                  &w[0] if X.shape[1] else NULL, b, &out[0], n_threads,
                                  _dense_simd)
    return bad


def _sigmoid_dense_f(const floating[::1, :] X, const floating[::1] w, double b,
                     floating[::1] out, int n_threads):
    cdef Py_ssize_t bad = 0
    if X.shape[0]:
        with nogil:
            bad = _sigmoid_rows_f(&X[0, 0], X.shape[0], X.shape[1],
                                  &w[0] if X.shape[1] else NULL, b, &out[0], n_threads,
                                  _dense_simd)
    return bad


def sigmoid_dense(X, w, b, out, n_threads):
    """out[i] = sigmoid(X[i] @ w + b) for a dense (n, d) X in C or F order.

    w and out have X's dtype; the dot product and the sigmoid are float64, rounded once into
    out. One fused pass over X, no temporary beyond a 2 KB buffer per thread (F order).
    O(n d) time. Results do not depend on n_threads. Returns the number of scores outside
    (0, 1), NaN included (``counts_unproven``), counted per block while it is in cache.
    """
    if X.flags.c_contiguous:
        return _sigmoid_dense_c(X, w, b, out, n_threads)
    return _sigmoid_dense_f(X, w, b, out, n_threads)


sigmoid_dense.counts_unproven = True


# The CSR sigmoid's dot products: vector gathers (_scoring_simd.h, AVX-512 or AVX2, chosen at
# run time) or the scalar loop below; which one runs is measured per CPU on first use
# (kernels.form_choice, "csr_dot_cython"). All check the column indices in the same read
# (``checks_columns``): each load's index is clamped to the last column (unsigned, so negative
# ones too), and the largest index seen is returned for the caller to compare with len(w).
cdef extern from "_scoring_simd.h":
    int fastrec_scoring_cpu_isa() nogil
    uint64_t fastrec_logits_avx512_i32_f32(const int32_t*, const int32_t*, const float*,
                                           const float*, Py_ssize_t, Py_ssize_t, uint64_t,
                                           double*) nogil
    uint64_t fastrec_logits_avx512_i32_f64(const int32_t*, const int32_t*, const double*,
                                           const double*, Py_ssize_t, Py_ssize_t, uint64_t,
                                           double*) nogil
    uint64_t fastrec_logits_avx512_i64_f32(const int64_t*, const int64_t*, const float*,
                                           const float*, Py_ssize_t, Py_ssize_t, uint64_t,
                                           double*) nogil
    uint64_t fastrec_logits_avx512_i64_f64(const int64_t*, const int64_t*, const double*,
                                           const double*, Py_ssize_t, Py_ssize_t, uint64_t,
                                           double*) nogil
    uint64_t fastrec_logits_avx2_i32_f32(const int32_t*, const int32_t*, const float*,
                                         const float*, Py_ssize_t, Py_ssize_t, uint64_t,
                                         double*) nogil
    uint64_t fastrec_logits_avx2_i32_f64(const int32_t*, const int32_t*, const double*,
                                         const double*, Py_ssize_t, Py_ssize_t, uint64_t,
                                         double*) nogil
    uint64_t fastrec_logits_avx2_i64_f32(const int64_t*, const int64_t*, const float*,
                                         const float*, Py_ssize_t, Py_ssize_t, uint64_t,
                                         double*) nogil
    uint64_t fastrec_logits_avx2_i64_f64(const int64_t*, const int64_t*, const double*,
                                         const double*, Py_ssize_t, Py_ssize_t, uint64_t,
                                         double*) nogil
    void fastrec_sigmoid_block_f32(const double* z, Py_ssize_t m, double b, float* out,
                                   int isa) nogil
    void fastrec_sigmoid_block_f64(const double* z, Py_ssize_t m, double b, double* out,
                                   int isa) nogil
    void fastrec_dense_logits_f32(const float* X, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t d,
                                  const double* w64, double* z) nogil
    void fastrec_dense_logits_f64(const double* X, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t d,
                                  const double* w, double* z) nogil

cdef enum:
    ISA_SCALAR = 0
    ISA_AVX2 = 1
    ISA_AVX512 = 2

# The widest gather form this CPU runs, and the form sigmoid_csr takes (set by form_choice).
cdef int _csr_isa_here = fastrec_scoring_cpu_isa()
cdef int _csr_isa = _csr_isa_here
_csr_form_applied = False


def _csr_isa_available():
    """0 (scalar only), 1 (AVX2) or 2 (AVX-512): the widest CSR gather form this CPU runs."""
    return _csr_isa_here


# The dense C-order rows take the AVX2 dot product (_scoring_simd.h) where the CPU has AVX2
# and FMA (AVX-512 CPUs included): 2M x 64 float32, Zen 4, 1 thread: 33.9 ms for the former
# AVX-512 form against 74.1 ms for the base-ISA loop with libm's exp per row (NumPy's float32
# expit(X @ w) 42.7 ms); this form computes a row in about half the former's time.
cdef bint _dense_simd = _csr_isa_here >= ISA_AVX2


def _dense_simd_available():
    """Whether this CPU runs the vector dense dot (AVX2 with FMA)."""
    return _csr_isa_here >= ISA_AVX2


def _set_dense_simd(bint flag):
    """Take (True, where the CPU has AVX2 and FMA) or not the vector dense dot; returns the
    previous. Module-wide: not thread-safe (for tests)."""
    global _dense_simd
    if flag and _csr_isa_here < ISA_AVX2:
        raise ValueError("this CPU has no AVX2 with FMA")
    previous = _dense_simd
    _dense_simd = flag
    return previous


def _set_csr_isa(int isa):
    """Take the CSR dot product form isa (0 scalar, 1 AVX2, 2 AVX-512; at most what the CPU
    runs, else ValueError); returns the previous one. Module-wide: not thread-safe."""
    global _csr_isa
    if isa < 0 or isa > _csr_isa_here:
        raise ValueError(f"CSR dot form {isa} is not available on this CPU (at most "
                         f"{_csr_isa_here})")
    previous = _csr_isa
    _csr_isa = isa
    return previous


def _sigmoid_block(const double[::1] z, double b, floating[::1] out, int isa):
    """out = sigmoid(z + b) (rounded to out's dtype) by the block sigmoid in form isa
    (0 scalar, 1 AVX2, 2 AVX-512; at most what the CPU runs): for tests, which compare the
    forms' bits."""
    if isa < 0 or isa > _csr_isa_here or out.shape[0] != z.shape[0]:
        raise ValueError("isa not available here, or out and z of different lengths")
    if z.shape[0]:
        if floating is float:
            fastrec_sigmoid_block_f32(&z[0], z.shape[0], b, &out[0], isa)
        else:
            fastrec_sigmoid_block_f64(&z[0], z.shape[0], b, &out[0], isa)


cdef inline uint64_t _unsigned_index(index_t j) noexcept nogil:
    """The index as its unsigned type's value (a negative one is huge), widened to 64 bits."""
    if index_t is int32_t:
        return <uint32_t>j
    else:
        return <uint64_t>j


cdef uint64_t _logits_scalar(
    const index_t* indptr, const index_t* indices, const floating* data, const floating* w,
    Py_ssize_t r0, Py_ssize_t r1, uint64_t last, double* z,
) noexcept nogil:
    """Rows [r0, r1)' dot products into z by four accumulators (entry k into k mod 4, summed
    (a0 + a1) + (a2 + a3)), loads clamped to last; returns the largest index (unsigned)."""
    cdef double a0, a1, a2, a3
    cdef uint64_t top = 0, u0, u1, u2, u3
    cdef Py_ssize_t i, k, hi
    for i in range(r0, r1):
        a0 = a1 = a2 = a3 = 0
        k = indptr[i]
        hi = indptr[i + 1]
        while k + 4 <= hi:
            u0 = _unsigned_index(indices[k])
            u1 = _unsigned_index(indices[k + 1])
            u2 = _unsigned_index(indices[k + 2])
            u3 = _unsigned_index(indices[k + 3])
            top = max(top, max(max(u0, u1), max(u2, u3)))
            a0 += <double>data[k] * <double>w[min(u0, last)]
            a1 += <double>data[k + 1] * <double>w[min(u1, last)]
            a2 += <double>data[k + 2] * <double>w[min(u2, last)]
            a3 += <double>data[k + 3] * <double>w[min(u3, last)]
            k += 4
        a0 = (a0 + a1) + (a2 + a3)
        while k < hi:
            u0 = _unsigned_index(indices[k])
            top = max(top, u0)
            a0 += <double>data[k] * <double>w[min(u0, last)]
            k += 1
        z[i - r0] = a0
    return top


cdef uint64_t _logits(
    const index_t* indptr, const index_t* indices, const floating* data, const floating* w,
    Py_ssize_t r0, Py_ssize_t r1, uint64_t last, double* z, int isa,
) noexcept nogil:
    if isa == ISA_AVX512:
        if index_t is int32_t and floating is float:
            return fastrec_logits_avx512_i32_f32(indptr, indices, data, w, r0, r1, last, z)
        elif index_t is int32_t and floating is double:
            return fastrec_logits_avx512_i32_f64(indptr, indices, data, w, r0, r1, last, z)
        elif index_t is int64_t and floating is float:
            return fastrec_logits_avx512_i64_f32(indptr, indices, data, w, r0, r1, last, z)
        else:
            return fastrec_logits_avx512_i64_f64(indptr, indices, data, w, r0, r1, last, z)
    if isa == ISA_AVX2:
        if index_t is int32_t and floating is float:
            return fastrec_logits_avx2_i32_f32(indptr, indices, data, w, r0, r1, last, z)
        elif index_t is int32_t and floating is double:
            return fastrec_logits_avx2_i32_f64(indptr, indices, data, w, r0, r1, last, z)
        elif index_t is int64_t and floating is float:
            return fastrec_logits_avx2_i64_f32(indptr, indices, data, w, r0, r1, last, z)
        else:
            return fastrec_logits_avx2_i64_f64(indptr, indices, data, w, r0, r1, last, z)
    return _logits_scalar(indptr, indices, data, w, r0, r1, last, z)


cdef uint64_t _sigmoid_csr_rows(
    const index_t* indptr, const index_t* indices, const floating* data, Py_ssize_t n,
    const floating* w, uint64_t last, double b, floating* out, int n_threads, int isa,
) noexcept nogil:
    """Returns the largest column index stored (unsigned)."""
    cdef Py_ssize_t nb = (n + CSR_BLOCK - 1) // CSR_BLOCK, blk, r0, m, t
    cdef uint64_t top = 0
    cdef uint64_t* tops = <uint64_t*>malloc(nb * sizeof(uint64_t))
    cdef double* z
    with parallel(num_threads=n_threads):
        z = <double*>malloc(CSR_BLOCK * sizeof(double))
        for blk in prange(nb, schedule="dynamic"):
            r0 = blk * CSR_BLOCK
            m = min(CSR_BLOCK, n - r0)
            tops[blk] = _logits(indptr, indices, data, w, r0, r0 + m, last, z, isa)
            if floating is float:
                # The block's sigmoids at once, vectorised (as the Numba backend's): measured
                # 11 ms of 118 per 2M rows on one Zen 4 core against libm's exp per row.
                fastrec_sigmoid_block_f32(z, m, b, out + r0, _csr_isa_here)
            else:
                for t in range(m):
                    out[r0 + t] = _sigmoid(z[t] + b)
        free(z)
    for blk in range(nb):
        top = max(top, tops[blk])
    free(tops)
    return top


def _sigmoid_csr(const index_t[::1] indptr, const index_t[::1] indices,
                 const floating[::1] data, const floating[::1] w, double b,
                 floating[::1] out, int n_threads, int isa):
    cdef Py_ssize_t n = indptr.shape[0] - 1
    cdef uint64_t top = 0
    # w is never empty when X has entries (the caller checks); with no entries nothing is read.
    cdef uint64_t last = max(w.shape[0], 1) - 1
    if n == 0:
        return 0
    with nogil:
        top = _sigmoid_csr_rows(&indptr[0], &indices[0] if indices.shape[0] else NULL,
                                &data[0] if data.shape[0] else NULL, n,
                                &w[0] if w.shape[0] else NULL, last, b, &out[0], n_threads,
                                isa)
    return top


def _apply_csr_form():
    global _csr_form_applied
    from ..form_choice import apply_csr_dot_form_cython

    apply_csr_dot_form_cython()
    _csr_form_applied = True


def sigmoid_csr(indptr, indices, data, w, b, out, n_threads):
    """out[i] = sigmoid(X[i] @ w + b) for a CSR X with len(w) columns; returns out.

    indptr/indices int32 or int64 (the same type); data, w and out of one float dtype. The
    row's dot product is float64 with a fixed order: vector gathers (AVX-512 or AVX2) or four
    scalar accumulators, whichever measured faster on this CPU (kernels.form_choice); the
    forms round differently in the last bits, each the same for any n_threads. O(nnz) time,
    memory out plus one block's logits (8 KB) per thread.

    Checks its column indices itself (``checks_columns``; indptr must be valid): ValueError
    after the pass, with ``out`` written, when one lies outside [0, len(w)).
    """
    if not _csr_form_applied:
        _apply_csr_form()
    _host.check_has_columns(indptr, indices, w.shape[0])
    top = _sigmoid_csr(indptr, indices, data, w, b, out, n_threads, _csr_isa)
    _host.check_column_top(top, indptr, indices, w.shape[0])
    return out


sigmoid_csr.checks_columns = True


# ---- logistic loss and gradient (and the Hessian-vector product: HessPass) --------------------

# Which pass a block makes: the loss/gradient, or the Hessian-vector product (the same pass with
# w, b, sw <- v, vb, c and residual c_i * (x.v + vb)). A fused type, so that each block is
# compiled once per pass with the choice made at compile time: as a run-time flag it slowed
# the CSR loss/gradient measurably.
ctypedef struct LossPass:
    char unused

ctypedef struct HessPass:
    char unused

ctypedef fused pass_t:
    LossPass
    HessPass

cdef LossPass _LOSS
cdef HessPass _HESS
_LOSS.unused = 0
_HESS.unused = 0


cdef inline double _row_residual(
    pass_t kind, double z, double y, double s, double* loss,
) noexcept nogil:
    """The residual of one row with logit z, label y and weight s; its loss term is added to
    *loss. In a HessPass (z = x.v + vb, s = c_i) it is s * z and there is no loss."""
    cdef double p
    if pass_t is HessPass:
        return s * z
    loss[0] += s * (_log1pexp_sigmoid(z, &p) - y * z)
    return s * (p - y)


cdef void _block_c(
    const floating* X, Py_ssize_t d, Py_ssize_t r0, Py_ssize_t r1, const double* y,
    const double* w, double b, const double* sw, double* g, double* sums, pass_t kind,
) noexcept nogil:
    """Rows [r0, r1) of a C-order X: partial gradient into g, (loss, grad_b, weight) into sums.
    In a HessPass: w, b, sw are v, vb, c and g gets X.T (c * (X v + vb)) (see hessp)."""
    cdef double loss = 0, gb = 0, wsum = 0, z, r, s
    cdef Py_ssize_t i, j
    cdef const floating* x
    for j in range(d):
        g[j] = 0
    for i in range(r0, r1):
        x = X + i * d
        z = _dot(x, w, d) + b
        s = sw[i]
        r = _row_residual(kind, z, y[i], s, &loss)
        gb += r
        wsum += s
        for j in range(d):  # the row is still in L1: the gradient costs no second read of X
            g[j] += r * x[j]
    sums[0] = loss
    sums[1] = gb
    sums[2] = wsum


cdef void _block_f(
    const floating* X, Py_ssize_t n, Py_ssize_t d, Py_ssize_t r0, Py_ssize_t r1,
    const double* y, const double* w, double b, const double* sw, double* g, double* sums,
    double* buf, pass_t kind,
) noexcept nogil:
    """:func:`_block_c` for an F-order X: logits column by column into buf, then residuals,
    then one dot product per column (the block's columns are re-read from cache)."""
    cdef double loss = 0, gb = 0, wsum = 0, z, r, s, wj
    cdef Py_ssize_t t, j, m = r1 - r0
    cdef const floating* col
    for t in range(m):
        buf[t] = 0
    for j in range(d):
        col = X + j * n + r0
        wj = w[j]
        for t in range(m):
            buf[t] += <double>col[t] * wj
    for t in range(m):
        z = buf[t] + b
        s = sw[r0 + t]
        r = _row_residual(kind, z, y[r0 + t], s, &loss)
        buf[t] = r
        gb += r
        wsum += s
    for j in range(d):
        g[j] = _dot(X + j * n + r0, buf, m)
    sums[0] = loss
    sums[1] = gb
    sums[2] = wsum


cdef void _block_csr(
    const index_t* indptr, const index_t* indices, const floating* data, Py_ssize_t d,
    Py_ssize_t r0, Py_ssize_t r1, const double* y, const double* w, double b, const double* sw,
    double* g, double* sums, pass_t kind,
) noexcept nogil:
    """Rows [r0, r1) of a CSR X: the gradient is scattered into this chunk's own g."""
    cdef double loss = 0, gb = 0, wsum = 0, z, r, s
    cdef Py_ssize_t i, j, k
    for j in range(d):
        g[j] = 0
    for i in range(r0, r1):
        z = _sparse_dot(indices, data, w, indptr[i], indptr[i + 1]) + b
        s = sw[i]
        r = _row_residual(kind, z, y[i], s, &loss)
        gb += r
        wsum += s
        for k in range(indptr[i], indptr[i + 1]):
            g[indices[k]] += r * <double>data[k]
    sums[0] = loss
    sums[1] = gb
    sums[2] = wsum


cdef void _combine_columns(
    const double* G, Py_ssize_t n_parts, Py_ssize_t d, Py_ssize_t c0, Py_ssize_t c1,
    const double* w, double l2, double total_weight, double* grad, double* wsq,
) noexcept nogil:
    """grad[c0:c1] = sum over parts p (in order) of G[p, c0:c1] / total_weight + l2 * w."""
    cdef Py_ssize_t p, j
    cdef const double* row
    cdef double acc = 0
    for j in range(c0, c1):
        grad[j] = 0
    for p in range(n_parts):
        row = G + p * d
        for j in range(c0, c1):
            grad[j] += row[j]
    for j in range(c0, c1):
        grad[j] = grad[j] / total_weight + l2 * w[j]
        acc += w[j] * w[j]
    wsq[0] = acc


cdef void _combine(
    const double* G, const double* S, Py_ssize_t n_parts, Py_ssize_t d, const double* w,
    double l2, double* grad, double* result, int n_threads,
) noexcept nogil:
    """Fold the parts' partial gradients G (n_parts x d) and sums S (n_parts x 3), in part
    order, into grad and result = (loss, grad_b). Parallel over fixed column blocks."""
    cdef Py_ssize_t ncb = (d + COMBINE_BLOCK - 1) // COMBINE_BLOCK, cb, p
    cdef double loss = 0, gb = 0, tw = 0, wsq = 0
    cdef double* wsq_parts = <double*>malloc((ncb + 1) * sizeof(double))
    for p in range(n_parts):
        loss += S[3 * p]
        gb += S[3 * p + 1]
        tw += S[3 * p + 2]
    # Small folds run on one thread: waking the team costs more than the adds (and, on a
    # loaded machine, a scheduler quantum per parallel region per optimiser step).
    if n_parts * d < COMBINE_PARALLEL_MIN:
        n_threads = 1
    for cb in prange(ncb, schedule="static", num_threads=n_threads):
        _combine_columns(G, n_parts, d, cb * COMBINE_BLOCK, min(d, (cb + 1) * COMBINE_BLOCK),
                         w, l2, tw, grad, &wsq_parts[cb])
    for cb in range(ncb):
        wsq += wsq_parts[cb]
    free(wsq_parts)
    result[0] = loss / tw + 0.5 * l2 * wsq
    result[1] = gb / tw


cdef void _loss_grad_dense_run(
    const floating* X, Py_ssize_t n, Py_ssize_t d, bint fortran, const double* y,
    const double* w, double b, const double* sw, double* G, double* S, int n_threads,
    pass_t kind,
) noexcept nogil:
    cdef Py_ssize_t nb = (n + DENSE_BLOCK - 1) // DENSE_BLOCK, blk, r0, r1
    cdef double* buf
    with parallel(num_threads=n_threads):
        buf = <double*>malloc(DENSE_BLOCK * sizeof(double))
        for blk in prange(nb, schedule="dynamic"):
            r0 = blk * DENSE_BLOCK
            r1 = min(n, r0 + DENSE_BLOCK)
            if fortran:
                _block_f(X, n, d, r0, r1, y, w, b, sw, G + blk * d, S + 3 * blk, buf, kind)
            else:
                _block_c(X, d, r0, r1, y, w, b, sw, G + blk * d, S + 3 * blk, kind)
        free(buf)


def _loss_grad_dense_c(const floating[:, ::1] X, const double[::1] y, const double[::1] w,
                       double b, double l2, const double[::1] sw, double[:, ::1] G,
                       double[:, ::1] S, double[::1] grad, double[::1] result, int n_threads):
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    with nogil:
        _loss_grad_dense_run(&X[0, 0], n, d, False, &y[0], &w[0] if d else NULL, b, &sw[0],
                             &G[0, 0], &S[0, 0], n_threads, _LOSS)
        _combine(&G[0, 0], &S[0, 0], G.shape[0], d, &w[0] if d else NULL, l2,
                 &grad[0] if d else NULL, &result[0], n_threads)


def _loss_grad_dense_f(const floating[::1, :] X, const double[::1] y, const double[::1] w,
                       double b, double l2, const double[::1] sw, double[:, ::1] G,
                       double[:, ::1] S, double[::1] grad, double[::1] result, int n_threads):
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    with nogil:
        _loss_grad_dense_run(&X[0, 0], n, d, True, &y[0], &w[0] if d else NULL, b, &sw[0],
                             &G[0, 0], &S[0, 0], n_threads, _LOSS)
        _combine(&G[0, 0], &S[0, 0], G.shape[0], d, &w[0] if d else NULL, l2,
                 &grad[0] if d else NULL, &result[0], n_threads)


def logistic_loss_grad_dense(X, y, w, b, l2, sample_weight, n_threads):
    """Weighted mean log-loss of sigmoid(X @ w + b) against 0/1 labels y, plus 0.5*l2*|w|^2.

    X dense (n >= 1 rows) in C or F order, float32 or float64; y, w, sample_weight float64.
    Returns (loss float, grad_w float64 array, grad_b float); the intercept is not penalised.
    One fused pass over X: each block of DENSE_BLOCK rows computes its logits, losses and
    residuals and its partial gradient while its rows are in cache. Time O(n d); memory
    ceil(n / DENSE_BLOCK) * (d + 3) float64s of partials. The partials are combined in block
    order, so the result has the same bits for any n_threads.
    """
    n, d = X.shape
    nb = (n + DENSE_BLOCK - 1) // DENSE_BLOCK
    G = np.empty((nb, max(d, 1)), dtype=np.float64)
    S = np.empty((nb, 3), dtype=np.float64)
    grad = np.zeros(d, dtype=np.float64)
    result = np.empty(2, dtype=np.float64)
    if X.flags.c_contiguous:
        _loss_grad_dense_c(X, y, w, b, l2, sample_weight, G, S, grad, result, n_threads)
    else:
        _loss_grad_dense_f(X, y, w, b, l2, sample_weight, G, S, grad, result, n_threads)
    return float(result[0]), grad, float(result[1])


cdef void _loss_grad_csr_run(
    const index_t* indptr, const index_t* indices, const floating* data, Py_ssize_t d,
    const int64_t* bounds, Py_ssize_t n_chunks, const double* y, const double* w, double b,
    const double* sw, double* G, double* S, int n_threads, pass_t kind,
) noexcept nogil:
    cdef Py_ssize_t c
    for c in prange(n_chunks, schedule="dynamic", chunksize=1, num_threads=n_threads):
        _block_csr(indptr, indices, data, d, bounds[c], bounds[c + 1], y, w, b, sw,
                   G + c * d, S + 3 * c, kind)


def _loss_grad_csr(const index_t[::1] indptr, const index_t[::1] indices,
                   const floating[::1] data, const int64_t[::1] bounds, const double[::1] y,
                   const double[::1] w, double b, double l2, const double[::1] sw,
                   double[:, ::1] G, double[:, ::1] S, double[::1] grad, double[::1] result,
                   int n_threads):
    cdef Py_ssize_t d = w.shape[0]
    with nogil:
        _loss_grad_csr_run(&indptr[0], &indices[0] if indices.shape[0] else NULL,
                           &data[0] if data.shape[0] else NULL, d, &bounds[0],
                           bounds.shape[0] - 1, &y[0], &w[0] if d else NULL, b, &sw[0],
                           &G[0, 0], &S[0, 0], n_threads, _LOSS)
        _combine(&G[0, 0], &S[0, 0], G.shape[0], d, &w[0] if d else NULL, l2,
                 &grad[0] if d else NULL, &result[0], n_threads)


def logistic_loss_grad_csr(indptr, indices, data, y, w, b, l2, sample_weight, n_threads):
    """:func:`logistic_loss_grad_dense` for a CSR X (n >= 1 rows) with len(w) columns.

    The rows are cut into at most ``_scoring_plan.CSR_GRAD_CHUNKS`` chunks of about equal
    rows + non-zeros, fixed by the matrix alone; each chunk scatters its gradient into its own
    dense float64 buffer and the buffers are summed in chunk order (the same bits for any
    n_threads).
    Time O(nnz + n + chunks * d); memory chunks * d float64s (at most ``CSR_GRAD_BYTES`` unless
    one buffer alone is larger). Parallelism is at most the number of chunks.
    """
    d = w.shape[0]
    bounds = _plan.csr_chunk_bounds(indptr, d)
    n_chunks = len(bounds) - 1
    G = np.empty((n_chunks, max(d, 1)), dtype=np.float64)
    S = np.empty((n_chunks, 3), dtype=np.float64)
    grad = np.zeros(d, dtype=np.float64)
    result = np.empty(2, dtype=np.float64)
    _loss_grad_csr(indptr, indices, data, bounds, y, w, b, l2, sample_weight, G, S, grad,
                   result, n_threads)
    return float(result[0]), grad, float(result[1])


# ---- the Hessian-vector product: the loss/grad passes as a HessPass ---------------------------
# Same blocks, chunks and fixed-order fold as the loss/gradient (w, b, sw <- v, vb, c). c
# already carries 1 / sum(s), so the fold's total weight is set to exactly 1 (its division then
# changes no bit).

def _hessp_dense_c(const floating[:, ::1] X, const double[::1] c, const double[::1] v,
                   double vb, double l2, double[:, ::1] G, double[:, ::1] S,
                   double[::1] hv, double[::1] result, int n_threads):
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], p
    with nogil:
        _loss_grad_dense_run(&X[0, 0], n, d, False, &c[0], &v[0] if d else NULL, vb, &c[0],
                             &G[0, 0], &S[0, 0], n_threads, _HESS)
        for p in range(S.shape[0]):
            S[p, 2] = 1.0 if p == 0 else 0.0
        _combine(&G[0, 0], &S[0, 0], G.shape[0], d, &v[0] if d else NULL, l2,
                 &hv[0] if d else NULL, &result[0], n_threads)


def _hessp_dense_f(const floating[::1, :] X, const double[::1] c, const double[::1] v,
                   double vb, double l2, double[:, ::1] G, double[:, ::1] S,
                   double[::1] hv, double[::1] result, int n_threads):
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], p
    with nogil:
        _loss_grad_dense_run(&X[0, 0], n, d, True, &c[0], &v[0] if d else NULL, vb, &c[0],
                             &G[0, 0], &S[0, 0], n_threads, _HESS)
        for p in range(S.shape[0]):
            S[p, 2] = 1.0 if p == 0 else 0.0
        _combine(&G[0, 0], &S[0, 0], G.shape[0], d, &v[0] if d else NULL, l2,
                 &hv[0] if d else NULL, &result[0], n_threads)


def logistic_hessp_dense(X, c, v, vb, l2, n_threads):
    """The logistic objective's Hessian times (v, vb) for a dense X (n >= 1 rows, C or F order).

    t = X @ v + vb, r = c * t (c_i = s_i p_i (1 - p_i) / sum(s)); returns (X.T @ r + l2 * v
    float64 array, sum(r) float). One pass over X in the loss/grad kernel's blocks, folded in
    block order: the same bits for any n_threads. O(n d) time; ceil(n / DENSE_BLOCK) * (d + 3)
    float64s of partials.
    """
    n, d = X.shape
    nb = (n + DENSE_BLOCK - 1) // DENSE_BLOCK
    G = np.empty((nb, max(d, 1)), dtype=np.float64)
    S = np.empty((nb, 3), dtype=np.float64)
    hv = np.zeros(d, dtype=np.float64)
    result = np.empty(2, dtype=np.float64)
    if X.flags.c_contiguous:
        _hessp_dense_c(X, c, v, vb, l2, G, S, hv, result, n_threads)
    else:
        _hessp_dense_f(X, c, v, vb, l2, G, S, hv, result, n_threads)
    return hv, float(result[1])


def _hessp_csr(const index_t[::1] indptr, const index_t[::1] indices,
               const floating[::1] data, const int64_t[::1] bounds, const double[::1] c,
               const double[::1] v, double vb, double l2, double[:, ::1] G, double[:, ::1] S,
               double[::1] hv, double[::1] result, int n_threads):
    cdef Py_ssize_t d = v.shape[0], p
    with nogil:
        _loss_grad_csr_run(&indptr[0], &indices[0] if indices.shape[0] else NULL,
                           &data[0] if data.shape[0] else NULL, d, &bounds[0],
                           bounds.shape[0] - 1, &c[0], &v[0] if d else NULL, vb, &c[0],
                           &G[0, 0], &S[0, 0], n_threads, _HESS)
        for p in range(S.shape[0]):
            S[p, 2] = 1.0 if p == 0 else 0.0
        _combine(&G[0, 0], &S[0, 0], G.shape[0], d, &v[0] if d else NULL, l2,
                 &hv[0] if d else NULL, &result[0], n_threads)


def logistic_hessp_csr(indptr, indices, data, c, v, vb, l2, n_threads):
    """:func:`logistic_hessp_dense` for a CSR X (n >= 1 rows) with len(v) columns: the
    loss/grad kernel's chunks and fold. O(nnz + n + chunks * d) time, chunks * d float64s."""
    d = v.shape[0]
    bounds = _plan.csr_chunk_bounds(indptr, d)
    n_chunks = len(bounds) - 1
    G = np.empty((n_chunks, max(d, 1)), dtype=np.float64)
    S = np.empty((n_chunks, 3), dtype=np.float64)
    hv = np.zeros(d, dtype=np.float64)
    result = np.empty(2, dtype=np.float64)
    _hessp_csr(indptr, indices, data, bounds, c, v, vb, l2, G, S, hv, result, n_threads)
    return hv, float(result[1])
