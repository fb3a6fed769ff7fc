"""Numba CPU scoring kernels: sigmoid_dense, sigmoid_csr, logistic_loss_grad_dense,
logistic_loss_grad_csr, logistic_hessp_dense, logistic_hessp_csr.

Same blocks and chunk boundaries as the Cython kernels (_scoring_plan), float64 arithmetic,
fixed-order reductions (dense and sparse dot products in LLVM's vectorised order, fixed at
compile time for the CPU it targets), so results do not depend on the thread count.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from .. import _scoring_plan as _plan
from .._host import check_column_top, check_has_columns
from .._numba_simd import prefetch_line
from ._common import index31, is_float32, threads, unsigned

_DENSE_BLOCK = _plan.DENSE_BLOCK
_SIGMOID_CHUNK = _plan.SIGMOID_CHUNK
_SIGMOID_F_BLOCK = _plan.SIGMOID_F_BLOCK
_CSR_BLOCK = _plan.CSR_BLOCK
_COMBINE_BLOCK = _plan.COMBINE_BLOCK


@numba.njit(cache=True)
def _sigmoid(z):
    """1 / (1 + exp(-z)); exp is only taken of a non-positive number, so it never overflows."""
    if z >= 0.0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@numba.njit(cache=True)
def _log1pexp_sigmoid(z):
    """(log(1 + exp(z)) with scikit-learn's cut-offs, sigmoid(z)) from one exp of -|z|."""
    e = np.exp(-z) if z >= 0.0 else np.exp(z)
    p = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
    if z <= -37.0:
        return e, p
    if z <= 0.0:
        return np.log1p(e), p
    if z <= 18.0:
        return z + np.log1p(e), p
    if z <= 33.3:
        return z + e, p
    return z, p


@intrinsic
def _f64_from_bits(typingctx, bits):
    """The float64 whose IEEE bits are the int64 ``bits`` (a register bitcast)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return sig, codegen


_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of ln 2: k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00


@numba.njit(cache=True, inline="always")
def _exp_reduced(r, f32):
    """exp(r) for |r| <= ln2 / 2 by its Taylor polynomial, Horner: degree 13 (truncation
    < 5e-18) or, for float32 scores (``f32``), degree 9 (< 1e-11: the float32 score is libm's
    rounded but for about 5 in a million, 1 ulp off; a quarter less time a score).
    Constant coefficients: no division."""
    if f32:
        p = 1 / 120 + r * (1 / 720 + r * (1 / 5040 + r * (1 / 40320 + r * (1 / 362880))))
    else:
        p = 1 / 120 + r * (
            1 / 720
            + r
            * (
                1 / 5040
                + r
                * (
                    1 / 40320
                    + r
                    * (
                        1 / 362880
                        + r
                        * (
                            1 / 3628800
                            + r * (1 / 39916800 + r * (1 / 479001600 + r * (1 / 6227020800)))
                        )
                    )
                )
            )
        )
    return 1.0 + r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * p))))


@numba.njit(cache=True, inline="always")
def _exp_nonpos(x, f32):
    """exp(x) for x <= 0 without a libm call or a branch, so loops over it vectorise.

    Cody-Waite reduction x = k ln2 + r, |r| <= ln2 / 2, :func:`_exp_reduced` and 2^k built
    from exponent bits in two halves (subnormal results included); 0 below -745. Degree 13
    measured within 3 ulp of libm over [-800, 0].
    """
    xc = x if x > -745.0 else -745.0
    k = np.floor(xc * _INV_LN2 + 0.5)
    r = (xc - k * _LN2_HI) - k * _LN2_LO
    p = _exp_reduced(r, f32)
    ki = np.int64(k)
    h = ki >> 1
    e = p * _f64_from_bits((h + 1023) << 52) * _f64_from_bits((ki - h + 1023) << 52)
    return e if x >= -745.0 else 0.0


@numba.njit(cache=True, inline="always")
def _sigmoid_block(z, b, out):
    """out[t] = sigmoid(z[t] + b) over a block, branch-free with :func:`_exp_nonpos` so the
    loop vectorises (about twice as fast per row as libm's exp for float32). Inlined
    into its callers at Numba IR level: called as a function, the loop stayed scalar."""
    f32 = is_float32(out)
    for t in range(z.shape[0]):
        zt = z[t] + b
        e = _exp_nonpos(-abs(zt), f32)
        num = 1.0 if zt >= 0.0 else e
        out[t] = num / (1.0 + e)


@numba.njit(cache=True, fastmath={"reassoc"})
def _dot(x, w):
    """sum_j x[j] * w[j] in float64.

    Reassociation lets LLVM vectorise the sum with its own (compile-time, so thread-count
    independent) order: faster than hand-interleaved accumulators, most for float32.
    """
    acc = 0.0
    for j in range(x.shape[0]):
        acc += np.float64(x[j]) * np.float64(w[j])
    return acc


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _dot_fma(x, w):
    """:func:`_dot` with multiply-adds fused: the same bits when x and w are float32 (the
    float64 product of two float32 is exact, so rounding it before the add changes nothing)
    and fewer instructions: for float32 rows only."""
    acc = 0.0
    for j in range(x.shape[0]):
        acc += np.float64(x[j]) * np.float64(w[j])
    return acc


@numba.njit(cache=True, fastmath={"reassoc"})
def _sparse_dot(indices, data, w, lo, hi):
    """sum_k data[k] * w[indices[k]] over [lo, hi) in float64.

    Reassociation (as in :func:`_dot`: LLVM's compile-time order, so thread-count independent)
    lets LLVM vectorise the gathers: measured 70 vs 88 ms per 2M rows of 40 nnz on one thread
    against four hand-interleaved accumulators (:func:`_sparse_dot_scalar`) on Zen 5. Which of
    the two runs is measured per CPU (kernels.form_choice). int32 indices gather with 32-bit
    lanes (``index31``). Where the time goes on Zen 4 (1 thread, 2^20 float32 columns, 40 per
    row): ~0.3 ns per entry streaming indices + data, ~0.3 more for the arithmetic with w in
    L1, and ~0.7 more gathering w's lines from L3 (benchmarks/bench_csr_sigmoid.py).
    """
    acc = 0.0
    for k in range(lo, hi):
        acc += np.float64(data[k]) * np.float64(w[index31(indices[k])])
    return acc


@numba.njit(cache=True)
def _sparse_dot_scalar(indices, data, w, lo, hi):
    """:func:`_sparse_dot` by four interleaved scalar accumulators (entry k into k mod 4 of the
    row, summed (a0 + a1) + (a2 + a3)): no vector gathers, which are slow on some CPUs (Zen 4:
    measured 2.7x slower than this on one thread, 1M rows of 40 nnz, 2^20 columns). Rounds
    differently from the gather form (another summation order); fixed, so thread-independent.
    """
    a0 = a1 = a2 = a3 = 0.0
    k, end = np.int64(lo), np.int64(hi)  # unsigned bounds + literals would type as float64
    while k + 4 <= end:
        a0 += np.float64(data[k]) * np.float64(w[indices[k]])
        a1 += np.float64(data[k + 1]) * np.float64(w[indices[k + 1]])
        a2 += np.float64(data[k + 2]) * np.float64(w[indices[k + 2]])
        a3 += np.float64(data[k + 3]) * np.float64(w[indices[k + 3]])
        k += 4
    while k < end:
        a0 += np.float64(data[k]) * np.float64(w[indices[k]])
        k += 1
    return (a0 + a1) + (a2 + a3)


@numba.njit(cache=True, inline="always")
def _row_dot(indices, data, w, lo, hi, gather):
    if gather:
        return _sparse_dot(indices, data, w, lo, hi)
    return _sparse_dot_scalar(indices, data, w, lo, hi)


# The sigmoid's CSR dot products check the column indices in the same read (the kernel's
# ``checks_columns``): each gather's index is clamped to the last column, so no load leaves
# w, and the largest index seen (unsigned: a negative one is huge) is returned for the caller
# to compare with len(w). Same loads and order for valid indices, so identical results. It
# spares the separate bounds pass over the indices: measured 7 ms of a 67 ms call (2 threads)
# and 15 of 114 (1 thread), 2M rows x 40 entries, Zen 4; the clamp and maximum cost 2-5 ms.


@numba.njit(cache=True, fastmath={"reassoc"})
def _sparse_dot_bounded(indices, data, w, lo, hi, last):
    """:func:`_sparse_dot` with clamped gathers; returns (dot, largest index)."""
    acc = 0.0
    top = indices.dtype.type(0)
    for k in range(lo, hi):
        j = indices[k]
        top = max(top, j)
        acc += np.float64(data[k]) * np.float64(w[index31(min(j, last))])
    return acc, top


@numba.njit(cache=True)
def _sparse_dot_scalar_bounded(indices, data, w, lo, hi, last):
    """:func:`_sparse_dot_scalar` with clamped loads; returns (dot, largest index)."""
    a0 = a1 = a2 = a3 = 0.0
    top = indices.dtype.type(0)
    k, end = np.int64(lo), np.int64(hi)
    while k + 4 <= end:
        j0, j1, j2, j3 = indices[k], indices[k + 1], indices[k + 2], indices[k + 3]
        top = max(top, max(max(j0, j1), max(j2, j3)))
        a0 += np.float64(data[k]) * np.float64(w[min(j0, last)])
        a1 += np.float64(data[k + 1]) * np.float64(w[min(j1, last)])
        a2 += np.float64(data[k + 2]) * np.float64(w[min(j2, last)])
        a3 += np.float64(data[k + 3]) * np.float64(w[min(j3, last)])
        k += 4
    while k < end:
        top = max(top, indices[k])
        a0 += np.float64(data[k]) * np.float64(w[min(indices[k], last)])
        k += 1
    return (a0 + a1) + (a2 + a3), top


@numba.njit(cache=True, inline="always")
def _row_dot_bounded(indices, data, w, lo, hi, last, gather):
    if gather:
        return _sparse_dot_bounded(indices, data, w, lo, hi, last)
    return _sparse_dot_scalar_bounded(indices, data, w, lo, hi, last)


# The CSR dot product's form, "gather" or "scalar": chosen on first use by
# kernels.form_choice (a short measurement on this CPU, cached per CPU model).
CSR_DOT_FORMS = ("gather", "scalar")


def _csr_gather():
    from ..form_choice import csr_dot_form

    return csr_dot_form() == "gather"


@numba.njit(cache=True)
def _count_unproven(s):
    """How many of s lie outside (0, 1), NaN included."""
    c = 0
    for t in range(s.shape[0]):
        c += not (s[t] > 0.0 and s[t] < 1.0)
    return c


# float64 rows are prefetched _PREFETCH_BYTES ahead: 2M x 64 float64, Zen 4, raw kernel against
# the same run's read: 1 thread 0.52-0.53 -> 0.75-0.76, 2 threads 0.76-0.81 -> 0.86-0.90 (three
# of four runs; the fourth even). float32 rows are not: with the sigmoid every _SIGMOID_CHUNK
# rows, 12 KB ahead cost 0.76-0.84 -> 0.70-0.77 at one thread and nothing at two.
_PREFETCH_BYTES = 12288


@numba.njit(parallel=True, cache=True)
def _sigmoid_dense_c(X, w, b, out, block_exp, ahead, fma):
    """Returns the number of scores outside (0, 1). ``ahead``: rows prefetched ahead (n: none);
    ``fma``: float32 X and w (:func:`_dot_fma`). The sigmoid is taken every _SIGMOID_CHUNK rows
    (see _scoring_plan)."""
    n = X.shape[0]
    row_bytes = X.shape[1] * X.itemsize
    n_blocks = (n + _DENSE_BLOCK - 1) // _DENSE_BLOCK
    bad = np.zeros(max(n_blocks, 1), dtype=np.int64)
    for blk in numba.prange(n_blocks):
        r0 = blk * _DENSE_BLOCK
        r1 = min(n, r0 + _DENSE_BLOCK)
        z = np.empty(_SIGMOID_CHUNK, dtype=np.float64)
        for c0 in range(r0, r1, _SIGMOID_CHUNK):
            c1 = min(r1, c0 + _SIGMOID_CHUNK)
            for i in range(c0, c1):
                if i + ahead < n:
                    for off in range(0, row_bytes, 64):
                        prefetch_line(X, i + ahead, off)
                z[i - c0] = _dot_fma(X[i], w) if fma else _dot(X[i], w)
            if block_exp:
                _sigmoid_block(z[: c1 - c0], b, out[c0:c1])
            else:
                for t in range(c1 - c0):
                    out[c0 + t] = _sigmoid(z[t] + b)
        bad[blk] = _count_unproven(out[r0:r1])
    return bad.sum()


@numba.njit(cache=True, inline="always")
def _add_columns8(acc, X, r0, r1, j, w):
    """acc[t] += X[r0 + t, j + c] * w[j + c] for c = 0..7 in order, in float64: one pass over
    acc for eight columns (the same sums, in the same order, as eight single-column passes)."""
    c0, c1, c2, c3 = X[r0:r1, j], X[r0:r1, j + 1], X[r0:r1, j + 2], X[r0:r1, j + 3]
    c4, c5, c6, c7 = X[r0:r1, j + 4], X[r0:r1, j + 5], X[r0:r1, j + 6], X[r0:r1, j + 7]
    w0, w1, w2, w3 = (
        np.float64(w[j]),
        np.float64(w[j + 1]),
        np.float64(w[j + 2]),
        np.float64(w[j + 3]),
    )
    w4, w5, w6, w7 = (
        np.float64(w[j + 4]),
        np.float64(w[j + 5]),
        np.float64(w[j + 6]),
        np.float64(w[j + 7]),
    )
    for t in range(r1 - r0):
        a = acc[t] + np.float64(c0[t]) * w0
        a = a + np.float64(c1[t]) * w1
        a = a + np.float64(c2[t]) * w2
        a = a + np.float64(c3[t]) * w3
        a = a + np.float64(c4[t]) * w4
        a = a + np.float64(c5[t]) * w5
        a = a + np.float64(c6[t]) * w6
        acc[t] = a + np.float64(c7[t]) * w7


@numba.njit(parallel=True, cache=True)
def _sigmoid_dense_f(X, w, b, out, block_exp):
    """Returns the number of scores outside (0, 1)."""
    # Column-major: a block's logits are built column by column, eight columns per pass over
    # the block's accumulator (contiguous, vectorised), blocks of _SIGMOID_F_BLOCK rows.
    n, d = X.shape
    n_blocks = (n + _SIGMOID_F_BLOCK - 1) // _SIGMOID_F_BLOCK
    bad = np.zeros(max(n_blocks, 1), dtype=np.int64)
    for blk in numba.prange(n_blocks):
        r0 = blk * _SIGMOID_F_BLOCK
        r1 = min(n, r0 + _SIGMOID_F_BLOCK)
        acc = np.zeros(r1 - r0, dtype=np.float64)
        j = 0
        while j + 8 <= d:
            _add_columns8(acc, X, r0, r1, j, w)
            j += 8
        while j < d:
            # A column slice indexed from 0: offset indexing into X defeats vectorisation.
            col = X[r0:r1, j]
            wj = np.float64(w[j])
            for t in range(r1 - r0):
                acc[t] += np.float64(col[t]) * wj
            j += 1
        if block_exp:
            _sigmoid_block(acc, b, out[r0:r1])
        else:
            for t in range(r1 - r0):
                out[r0 + t] = _sigmoid(acc[t] + b)
        bad[blk] = _count_unproven(out[r0:r1])
    return bad.sum()


def sigmoid_dense(X, w, b, out, n_threads):
    """out[i] = sigmoid(X[i] @ w + b) for a dense (n, d) X in C or F order.

    w and out have X's dtype; dot product and sigmoid in float64, rounded once into out.
    One fused pass, O(n d) time, no temporary beyond one block's logits. The sigmoid of a block
    of logits is taken at once with a vectorised polynomial exp: for float64 scores within 3
    ulp of libm's (1.5e-16 relative of the reference); for float32 a shorter one, within 1e-11,
    so a score is libm's rounded but for about 5 in a million, 1 ulp off.
    The block form is faster than libm's exp per row for both dtypes (benchmarks/README.md,
    "Scoring"). Returns the number of scores outside (0, 1), NaN included
    (``counts_unproven``), counted per block while it is in cache.
    """
    with threads(n_threads):
        if X.flags.c_contiguous:
            fma = X.dtype == np.float32
            ahead = X.shape[0] if fma else max(1, _PREFETCH_BYTES // max(1, X.shape[1] * 8))
            return int(_sigmoid_dense_c(X, w, float(b), out, True, ahead, fma))
        return int(_sigmoid_dense_f(X, w, float(b), out, True))


# The public layer proves X finite from the scores (all strictly inside (0, 1), see
# fastrec.scoring); a kernel that counts the others while each block is in cache spares it a
# pass over ``out`` (two NumPy reductions: ~1 ms of a ~12 ms call, 2M rows, 2 threads, Zen 4).
sigmoid_dense.counts_unproven = True  # type: ignore[attr-defined]


@numba.njit(parallel=True, cache=True)
def _sigmoid_csr(indptr, indices, data, w, b, out, block_exp, gather):
    """Returns the largest column index stored (unsigned), for the caller's bounds check."""
    n = indptr.shape[0] - 1
    n_blocks = (n + _CSR_BLOCK - 1) // _CSR_BLOCK
    tops = np.zeros(max(n_blocks, 1), dtype=indices.dtype)
    last = indices.dtype.type(max(w.shape[0], 1) - 1)  # w is never empty when X has entries
    for blk in numba.prange(n_blocks):
        r0 = blk * _CSR_BLOCK
        r1 = min(n, r0 + _CSR_BLOCK)
        top = indices.dtype.type(0)
        if block_exp:
            z = np.empty(r1 - r0, dtype=np.float64)
            for i in range(r0, r1):
                z[i - r0], t = _row_dot_bounded(
                    indices, data, w, indptr[i], indptr[i + 1], last, gather
                )
                top = max(top, t)
            _sigmoid_block(z, b, out[r0:r1])
        else:
            for i in range(r0, r1):
                zi, t = _row_dot_bounded(indices, data, w, indptr[i], indptr[i + 1], last, gather)
                top = max(top, t)
                out[i] = _sigmoid(zi + b)
        tops[blk] = top
    return tops.max()


def sigmoid_csr(indptr, indices, data, w, b, out, n_threads):
    """out[i] = sigmoid(X[i] @ w + b) for a CSR X with len(w) columns; returns out.

    float64 dot product in a fixed order (the form chosen for this CPU: _sparse_dot or
    _sparse_dot_scalar, see kernels.form_choice); O(nnz) time, no memory beyond out
    (and one block's logits). float32 scores use the block-wise vectorised sigmoid as
    sigmoid_dense does (faster per thread than the per-row sigmoid).

    Checks its column indices itself (``checks_columns``; indptr must be valid): ValueError
    after the pass, with ``out`` written, when one lies outside [0, len(w)).
    """
    check_has_columns(indptr, indices, w.shape[0])
    with threads(n_threads):
        top = _sigmoid_csr(
            unsigned(indptr),
            unsigned(indices),
            data,
            w,
            float(b),
            out,
            out.dtype == np.float32,
            _csr_gather(),
        )
    check_column_top(top, indptr, indices, w.shape[0])
    return out


sigmoid_csr.checks_columns = True  # type: ignore[attr-defined]


@numba.njit(cache=True, inline="always")
def _row_residual(hess, z, y, s):
    """(loss term, residual) of one row with logit z, label y and weight s; with ``hess``
    (the Hessian-vector product: z = x.v + vb, s = c_i) the residual is s * z, no loss."""
    if hess:
        return 0.0, s * z
    lz, p = _log1pexp_sigmoid(z)
    return s * (lz - y * z), s * (p - y)


@numba.njit(cache=True)
def _loss_block_c(X, r0, r1, y, w, b, sw, g, sums, hess):
    """Rows [r0, r1) of a C-order X: partial gradient into g, (loss, grad_b, weight) to sums.
    With ``hess``: w, b, sw are v, vb, c and g gets X.T (c * (X v + vb)) (see hessp)."""
    d = X.shape[1]
    g[:] = 0.0
    loss = gb = wsum = 0.0
    for i in range(r0, r1):
        x = X[i]
        z = _dot(x, w) + b
        s = sw[i]
        lr, r = _row_residual(hess, z, y[i], s)
        loss += lr
        gb += r
        wsum += s
        for j in range(d):  # the row is still in L1: no second read of X
            g[j] += r * np.float64(x[j])
    sums[0] = loss
    sums[1] = gb
    sums[2] = wsum


@numba.njit(cache=True)
def _loss_block_f(X, r0, r1, y, w, b, sw, g, sums, hess):
    """:func:`_loss_block_c` for F-order X: logits column by column, then residuals, then
    one dot product per column over the block (re-read from cache)."""
    d = X.shape[1]
    m = r1 - r0
    buf = np.zeros(m, dtype=np.float64)
    for j in range(d):
        col = X[r0:r1, j]  # a slice indexed from 0 vectorises; offset indexing does not
        wj = w[j]
        for t in range(m):
            buf[t] += np.float64(col[t]) * wj
    loss = gb = wsum = 0.0
    for t in range(m):
        z = buf[t] + b
        s = sw[r0 + t]
        lr, r = _row_residual(hess, z, y[r0 + t], s)
        loss += lr
        buf[t] = r
        gb += r
        wsum += s
    for j in range(d):
        g[j] = _dot(X[r0:r1, j], buf)
    sums[0] = loss
    sums[1] = gb
    sums[2] = wsum


@numba.njit(parallel=True, cache=True)
def _loss_grad_dense_c(X, y, w, b, sw, G, S, hess):
    n = X.shape[0]
    for blk in numba.prange(G.shape[0]):
        r0 = blk * _DENSE_BLOCK
        _loss_block_c(X, r0, min(n, r0 + _DENSE_BLOCK), y, w, b, sw, G[blk], S[blk], hess)


@numba.njit(parallel=True, cache=True)
def _loss_grad_dense_f(X, y, w, b, sw, G, S, hess):
    n = X.shape[0]
    for blk in numba.prange(G.shape[0]):
        r0 = blk * _DENSE_BLOCK
        _loss_block_f(X, r0, min(n, r0 + _DENSE_BLOCK), y, w, b, sw, G[blk], S[blk], hess)


@numba.njit(parallel=True, cache=True)
def _combine(G, S, w, l2, grad):
    """Fold partial gradients G (parts x d) and sums S (parts x 3), in part order, into grad;
    returns (loss, grad_b). Parallel over fixed column blocks."""
    n_parts, d = G.shape[0], w.shape[0]
    loss = gb = tw = 0.0
    for p in range(n_parts):
        loss += S[p, 0]
        gb += S[p, 1]
        tw += S[p, 2]
    ncb = (d + _COMBINE_BLOCK - 1) // _COMBINE_BLOCK
    wsq_parts = np.zeros(ncb, dtype=np.float64)
    for cb in numba.prange(ncb):
        c0 = cb * _COMBINE_BLOCK
        c1 = min(d, c0 + _COMBINE_BLOCK)
        for j in range(c0, c1):
            grad[j] = 0.0
        for p in range(n_parts):
            for j in range(c0, c1):
                grad[j] += G[p, j]
        acc = 0.0
        for j in range(c0, c1):
            grad[j] = grad[j] / tw + l2 * w[j]
            acc += w[j] * w[j]
        wsq_parts[cb] = acc
    wsq = 0.0
    for cb in range(ncb):
        wsq += wsq_parts[cb]
    return loss / tw + 0.5 * l2 * wsq, gb / tw


def logistic_loss_grad_dense(X, y, w, b, l2, sample_weight, n_threads):
    """Weighted mean log-loss of sigmoid(X @ w + b) against 0/1 labels y, plus 0.5*l2*|w|^2.

    X dense (n >= 1 rows, C or F order, float32/float64); y, w, sample_weight float64.
    Returns (loss, grad_w float64, grad_b). One fused pass over X in blocks of
    ``_scoring_plan.DENSE_BLOCK`` rows, each with its own partial gradient, combined in block
    order: the same bits for any n_threads. O(n d) time; n / 256 * (d + 3) float64s of memory.
    """
    n, d = X.shape
    G = np.empty((_plan.n_dense_blocks(n), d), dtype=np.float64)
    S = np.empty((G.shape[0], 3), dtype=np.float64)
    grad = np.empty(d, dtype=np.float64)
    with threads(n_threads):
        if X.flags.c_contiguous:
            _loss_grad_dense_c(X, y, w, float(b), sample_weight, G, S, False)
        else:
            _loss_grad_dense_f(X, y, w, float(b), sample_weight, G, S, False)
    with threads(n_threads if G.size >= _plan.COMBINE_PARALLEL_MIN else 1):
        loss, grad_b = _combine(G, S, w, float(l2), grad)
    return float(loss), grad, float(grad_b)


@numba.njit(parallel=True, cache=True)
def _loss_grad_csr(indptr, indices, data, bounds, y, w, b, sw, G, S, hess, gather):
    for c in numba.prange(bounds.shape[0] - 1):
        g = G[c]
        g[:] = 0.0
        loss = gb = wsum = 0.0
        for i in range(bounds[c], bounds[c + 1]):
            lo, hi = indptr[i], indptr[i + 1]
            z = _row_dot(indices, data, w, lo, hi, gather) + b
            s = sw[i]
            lr, r = _row_residual(hess, z, y[i], s)
            loss += lr
            gb += r
            wsum += s
            for k in range(lo, hi):
                g[indices[k]] += r * np.float64(data[k])
        S[c, 0] = loss
        S[c, 1] = gb
        S[c, 2] = wsum


def logistic_loss_grad_csr(indptr, indices, data, y, w, b, l2, sample_weight, n_threads):
    """:func:`logistic_loss_grad_dense` for a CSR X (n >= 1 rows) with len(w) columns.

    Rows cut into at most ``_scoring_plan.CSR_GRAD_CHUNKS`` chunks fixed by the matrix alone,
    each scattering into its own dense float64 gradient buffer, summed in chunk order (same
    bits for any n_threads). O(nnz + n + chunks * d) time; chunks * d float64s of memory.
    """
    d = w.shape[0]
    bounds = _plan.csr_chunk_bounds(indptr, d)
    G = np.empty((len(bounds) - 1, d), dtype=np.float64)
    S = np.empty((G.shape[0], 3), dtype=np.float64)
    grad = np.empty(d, dtype=np.float64)
    with threads(n_threads):
        _loss_grad_csr(
            unsigned(indptr),
            unsigned(indices),
            data,
            bounds,
            y,
            w,
            float(b),
            sample_weight,
            G,
            S,
            False,
            _csr_gather(),
        )
    with threads(n_threads if G.size >= _plan.COMBINE_PARALLEL_MIN else 1):
        loss, grad_b = _combine(G, S, w, float(l2), grad)
    return float(loss), grad, float(grad_b)


# The Hessian-vector product runs the loss/grad pass itself with hess=True (w, b, sw <- v, vb,
# c; see _row_residual): same blocks, chunks and fixed-order fold. Its c already carries the
# 1 / sum(s), so the fold's "total weight" is set to exactly 1 (a division that changes no bit).


def _hessp_fold(G, S, v, l2, n_threads):
    S[:, 2] = 0.0
    S[0, 2] = 1.0
    hv = np.empty(v.shape[0], dtype=np.float64)
    with threads(n_threads if G.size >= _plan.COMBINE_PARALLEL_MIN else 1):
        _, hv_b = _combine(G, S, v, float(l2), hv)
    return hv, float(hv_b)


def logistic_hessp_dense(X, c, v, vb, l2, n_threads):
    """The logistic objective's Hessian times (v, vb) for a dense X (n >= 1 rows, C or F order).

    t = X @ v + vb, r = c * t; returns (X.T @ r + l2 * v float64, sum(r)). One pass over X in
    the loss/grad kernel's blocks and fold (same bits for any n_threads); O(n d) time,
    n / 256 * (d + 3) float64s of memory.
    """
    n, d = X.shape
    G = np.empty((_plan.n_dense_blocks(n), d), dtype=np.float64)
    S = np.empty((G.shape[0], 3), dtype=np.float64)
    with threads(n_threads):
        if X.flags.c_contiguous:
            _loss_grad_dense_c(X, c, v, float(vb), c, G, S, True)
        else:
            _loss_grad_dense_f(X, c, v, float(vb), c, G, S, True)
    return _hessp_fold(G, S, v, l2, n_threads)


def logistic_hessp_csr(indptr, indices, data, c, v, vb, l2, n_threads):
    """:func:`logistic_hessp_dense` for a CSR X (n >= 1 rows) with len(v) columns: the loss/grad
    kernel's chunks and fold; O(nnz + n + chunks * d) time, chunks * d float64s of memory."""
    d = v.shape[0]
    bounds = _plan.csr_chunk_bounds(indptr, d)
    G = np.empty((len(bounds) - 1, d), dtype=np.float64)
    S = np.empty((G.shape[0], 3), dtype=np.float64)
    with threads(n_threads):
        _loss_grad_csr(
            unsigned(indptr),
            unsigned(indices),
            data,
            bounds,
            c,
            v,
            float(vb),
            c,
            G,
            S,
            True,
            _csr_gather(),
        )
    return _hessp_fold(G, S, v, l2, n_threads)
