"""The Numba CPU backend: parallel kernels with the reference's names and signatures.

Shared pieces (heap, sigmoid) are written once here and used by every kernel. Kernels
parallelise with ``prange`` over rows or row blocks, each writing only its own output slots,
so results do not depend on the thread count.
"""
from __future__ import annotations

import numba
import numpy as np
from numba.core import types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

from . import _rows
from ._numba_simd import (
    above_mask64,
    append_columns16,
    compress8,
    count_above8,
    prefetch_line,
    target_has_compress,
)


def is_available():
    return True, ""


# ---- shared helpers -------------------------------------------------------------------------


# ---- similarity: cosine_topk, cosine_similarity ---------------------------------------------

# The exact row-wise Gustavson product S = Xn Xn^T (or Xn Yn^T): for row i, every stored
# (i, u) meets every stored (j, u) of column u through the transposed matrix, summed into a
# per-thread dense accumulator of length n_other (allocated once per thread). When every row's
# stored values are one constant (binary implicit feedback, the common case) only int32
# co-counts are accumulated and sim = c * a_i * b_j with a_i = v_i / |x_i|. A row whose work
# (sum of the lengths of the columns it meets) is small against n_other records the slots it
# touches; other rows scan the accumulator densely. Rows are processed longest first with
# dynamic scheduling; each row is computed by one thread into its own output slots, so the
# result is bit-identical for any thread count.

# A row scans the whole accumulator when its work is at least n_other / _DENSE_SCAN_RATIO.
_DENSE_SCAN_RATIO = 4
# Accumulator slots tested against the running top-k threshold in one vectorisable pass.
_SCAN_BLOCK = 64
# Of the blocks of a dense scan, every _SAMPLE_STRIDE-th is ranked first (see _cosine_rows).
_SAMPLE_STRIDE = 8


@numba.njit(cache=True)
def _row_scales(indptr, data):
    """(inv_norm, row_scale, constant): 1/|x_i| (0 for empty rows), v_i/|x_i| for rows
    whose stored values all equal v_i, and whether every row is such a row. O(nnz)."""
    n = indptr.shape[0] - 1
    inv_norm = np.zeros(n, np.float64)
    scale = np.zeros(n, np.float64)
    constant = True
    for i in range(n):
        lo, hi = indptr[i], indptr[i + 1]
        s = 0.0
        for p in range(lo, hi):
            s += np.float64(data[p]) * np.float64(data[p])
        if hi > lo:
            inv_norm[i] = 1.0 / np.sqrt(s)
            v0 = data[lo]
            for p in range(lo + 1, hi):
                if data[p] != v0:
                    constant = False
                    break
            scale[i] = np.float64(v0) * inv_norm[i]
    return inv_norm, scale, constant


@numba.njit(cache=True)
def _transpose(indptr, indices, data, inv_norm, n_cols, weighted, t_indptr, t_indices, t_data):
    """Counting-sort transpose of an (n x n_cols) CSR into t_* (row ids ascending per column);
    with ``weighted`` the values are normalised (x / |x_row|, float64). O(nnz + n_cols)."""
    n = indptr.shape[0] - 1
    t_indptr[:] = 0
    for p in range(indptr[n]):
        t_indptr[indices[p] + 1] += 1
    for c in range(n_cols):
        t_indptr[c + 1] += t_indptr[c]
    fill = t_indptr[:-1].copy()
    for i in range(n):
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            q = fill[c]
            t_indices[q] = i
            if weighted:
                t_data[q] = np.float64(data[p]) * inv_norm[i]
            fill[c] = q + 1


@numba.njit(parallel=True, cache=True)
def _row_work(indptr, indices, t_indptr):
    """Multiply-adds of each row: the summed lengths of the columns it meets. O(nnz)."""
    n = indptr.shape[0] - 1
    work = np.zeros(n, np.int64)
    for i in numba.prange(n):
        w = 0
        for p in range(indptr[i], indptr[i + 1]):
            u = indices[p]
            w += t_indptr[u + 1] - t_indptr[u]
        work[i] = w
    return work


@numba.njit(inline="always")
def _accumulate(i, ip, ix, xw, tp, tx, tw, binary, need_count, sparse, acc_c, acc_f, touched):
    """Scatter row i's products into the accumulators; returns the number of touched slots
    (recorded only when ``sparse``; acc_c then also marks touched slots)."""
    nt = 0
    for p in range(ip[i], ip[i + 1]):
        u = ix[p]
        lo = tp[u]
        hi = tp[u + 1]
        if binary:
            if sparse:
                for q in range(lo, hi):
                    j = tx[q]
                    touched[nt] = j
                    nt += 1 if acc_c[j] == 0 else 0
                    acc_c[j] += 1
            else:
                for q in range(lo, hi):
                    acc_c[tx[q]] += 1
        else:
            wv = xw[p]
            if sparse:
                for q in range(lo, hi):
                    j = tx[q]
                    touched[nt] = j
                    nt += 1 if acc_c[j] == 0 else 0
                    acc_c[j] += 1
                    acc_f[j] += wv * tw[q]
            elif need_count:
                for q in range(lo, hi):
                    j = tx[q]
                    acc_c[j] += 1
                    acc_f[j] += wv * tw[q]
            else:
                for q in range(lo, hi):
                    acc_f[tx[q]] += wv * tw[q]
    return nt


@numba.njit(inline="always")
def _similarity(j, a_i, b, acc_c, acc_f, binary, shrink):
    """The shrunk cosine of slot j (0.0 when rows i and j share nothing)."""
    c = acc_c[j]
    if binary:
        s = np.float64(c) * (a_i * b[j])  # a_i * b_j == b_j * a_i: (i, j) rounds like (j, i)
    else:
        s = acc_f[j]
    if shrink > 0.0:
        s = s * (np.float64(c) / (np.float64(c) + shrink))
    return s


@numba.njit(parallel=True, cache=True)
def _cosine_rows(ip, ix, xw, tp, tx, tw, a, b, n_other, binary, need_count, order, work,
                 mode, kk, shrink, min_similarity, min_support, include_self,
                 out_count, out_ptr, out_idx, out_val, n_threads):
    """One pass over the rows of X in ``order``.

    mode 0 (top-k): best kk candidates of row i = order[pos], sorted, into slot pos
    (out_idx/out_val[pos*kk:], count into out_count[pos]: a block of rows needs slots for that
    block only). mode 1: count row i's stored entries (sim != 0, >= min_similarity)
    into out_count[i]. mode 2: write them, columns ascending, at out_ptr[i].
    ``n_threads`` must be the Numba thread count in force (it sizes the per-thread buffers).
    """
    acc_c = np.zeros((n_threads, n_other), np.int32)
    acc_f = np.zeros((n_threads, 0 if binary else n_other), np.float64)
    touched = np.empty((n_threads, n_other), tx.dtype)
    heap_v = np.empty((n_threads, max(kk, 1)), out_val.dtype)
    heap_i = np.empty((n_threads, max(kk, 1)), np.int64)
    cast = np.empty((n_threads, 1), out_val.dtype)  # rounds a float64 to the output dtype
    counts_needed = need_count
    cast[0, 0] = 1.0 + 2.0 ** -30  # the output dtype is float32 when this rounds to 1.0
    slack = 2.0 ** -23 if cast[0, 0] == 1.0 else 0.0
    for pos in numba.prange(order.shape[0]):
        t = numba.get_thread_id()
        i = order[pos]
        sparse = work[i] * _DENSE_SCAN_RATIO < n_other
        c_row = acc_c[t]
        f_row = acc_f[t]
        tch = touched[t]
        nt = _accumulate(i, ip, ix, xw, tp, tx, tw, binary, need_count, sparse, c_row, f_row, tch)
        if sparse:
            n_scan = nt
            if mode == 2:
                tch[:nt].sort()
        else:
            n_scan = n_other
        a_i = a[i]
        size = 0
        dst = out_ptr[i] if mode == 2 else 0
        hv = heap_v[t]
        hi = heap_i[t]
        cst = cast[t]
        has_counts = binary or sparse or counts_needed
        # Top-k over a dense scan: every _SAMPLE_STRIDE-th block first, so that the running
        # threshold (the heap's root) is near its final value before the other blocks come; a
        # block with nothing at or above it is then skipped after one vectorisable pass.
        # Blocks come out of column order, so ties with the root are offered (the heap
        # breaks them); thr_lo is the root lowered by the float32 rounding slack.
        sample_first = mode == 0 and not sparse
        thr_lo = -np.inf
        n_blocks = (n_scan + _SCAN_BLOCK - 1) // _SCAN_BLOCK
        for step in range(2 if sample_first else 1):
            for blk in range(n_blocks):
                if sample_first and ((blk % _SAMPLE_STRIDE == 0) != (step == 0)):
                    continue
                r0 = blk * _SCAN_BLOCK
                r1 = min(r0 + _SCAN_BLOCK, n_scan)
                if sample_first and size == kk:
                    hit = False
                    for j in range(r0, r1):
                        hit |= _similarity(j, a_i, b, c_row, f_row, binary, shrink) >= thr_lo
                    if not hit:
                        continue
                for r in range(r0, r1):
                    j = np.int64(tch[r]) if sparse else r
                    s = _similarity(j, a_i, b, c_row, f_row, binary, shrink)
                    if sample_first and size == kk and s < thr_lo:
                        continue
                    cnt = c_row[j]
                    if sparse:
                        c_row[j] = 0
                        if not binary:
                            f_row[j] = 0.0
                    if has_counts and cnt < min_support:  # also skips untouched slots (cnt 0)
                        continue
                    if s == 0.0 or s < min_similarity:
                        continue
                    if mode == 0:
                        if j == i and not include_self:
                            continue
                        cst[0] = s  # rank the value as returned (output dtype), like the reference
                        size = heap_offer(hv, hi, size, kk, cst[0], j)
                        if size == kk:
                            root = np.float64(hv[0])
                            thr_lo = root - abs(root) * slack
                    elif mode == 1:
                        size += 1
                    else:
                        out_idx[dst] = j
                        out_val[dst] = s
                        dst += 1
        if not sparse:
            if has_counts:
                c_row[:] = 0
            if not binary:
                f_row[:] = 0.0
        if mode == 0:
            heap_sort(hv, hi, size)
            base = np.int64(pos) * kk
            for r in range(size):
                out_idx[base + r] = hi[r]
                out_val[base + r] = hv[r]
            out_count[pos] = size
        else:
            out_count[i] = size if mode == 1 else dst - out_ptr[i]


@numba.njit(parallel=True, cache=True)
def _compact(counts, kk, out_idx, out_val, slots, indptr, indices, values):
    """Output row r: copy the counts[s] entries of slot s = slots[r] (at s*kk) into CSR
    position indptr[r]."""
    for r in numba.prange(slots.shape[0]):
        s = slots[r]
        src = s * kk
        dst = indptr[r]
        for e in range(counts[s]):
            indices[dst + e] = out_idx[src + e]
            values[dst + e] = out_val[src + e]


def _unsigned(a):
    """An unsigned view of an index array: lets Numba index without negative-wrap checks.

    Indices and indptr alike (validated non-negative): a signed index costs a wrap-around
    select per gather, which also keeps LLVM from vectorising the gathers of _sparse_dot
    (int64 CSR, 2M rows x 40 nnz, one thread: 148 ms with signed indptr, 37 ms unsigned).
    """
    return a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint64)


def _prepare_side(indptr, indices, data, n_cols, weighted):
    """(row scales, weighted data, transposed CSR) of one operand; see _row_scales."""
    n = indptr.shape[0] - 1
    inv_norm, scale, constant = _row_scales(indptr, data)
    weighted = weighted or not constant
    nnz = int(indptr[n]) if n else 0
    t_indptr = np.empty(n_cols + 1, np.int64)
    t_indices = np.empty(nnz, np.uint32 if n < 2**32 else np.uint64)
    t_data = np.empty(nnz if weighted else 0, np.float64)
    _transpose(indptr, indices, data, inv_norm, n_cols, weighted, t_indptr, t_indices, t_data)
    return inv_norm, scale, constant, (t_indptr, t_indices, t_data)


def _row_weights(indptr, data, inv_norm):
    """x_ip / |x_i| as float64, row by row (the left operand of a weighted product)."""
    rows = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))
    return data.astype(np.float64) * inv_norm[rows]


def _threads(n_threads):
    """The thread count a kernel gets: n_threads capped at Numba's pool size."""
    return max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS))


def _run(n_threads, fn, *args):
    """Call a parallel kernel on ``n_threads`` Numba threads (capped at the pool size), its
    prange iterations handed out one at a time (dynamic scheduling: rows differ in cost)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(_threads(n_threads))
    chunk = numba.set_parallel_chunksize(1)
    try:
        return fn(*args)
    finally:
        numba.set_parallel_chunksize(chunk)
        numba.set_num_threads(previous)


def _csr_from_slots(counts, kk, out_idx, out_val, slots, n_threads):
    indptr = np.zeros(slots.shape[0] + 1, np.int64)
    np.cumsum(counts[slots], out=indptr[1:])
    indices = np.empty(int(indptr[-1]), np.int64)
    values = np.empty(int(indptr[-1]), out_val.dtype)
    _run(n_threads, _compact, counts, kk, out_idx, out_val, slots, indptr, indices, values)
    return indptr, indices, values


def cosine_topk_prepare(indptr, indices, data, n_cols, n_threads):
    """The part of cosine_topk that depends on X only, done once for any number of row blocks.

    Row scales (1/|x_i|, and whether every row holds one constant value), the transposed
    matrix (float64 normalised values unless binary), the normalised row values and each
    row's work. Returns an opaque tuple of arrays (picklable: ``fastrec.dask`` ships it to its
    workers) for :func:`cosine_topk_rows`. Time O(nnz + n_cols); memory O(nnz + n + n_cols).
    Backends' tuples differ: pass it back to this module's cosine_topk_rows.
    """
    inv_norm, scale, binary, (tp, tx, tw) = _prepare_side(indptr, indices, data, n_cols, False)
    xw = np.zeros(0) if binary else _row_weights(indptr, data, inv_norm)
    ix = _unsigned(indices)
    work = _run(n_threads, _row_work, indptr, ix, tp)
    return (int(n_cols), data.dtype, bool(binary), indptr, ix, xw, scale, tp, tx, tw, work)


def cosine_topk_rows(
    prepared, k, shrink, min_similarity, min_support, include_self, n_threads, rows
):
    """cosine_topk of a prepared X (:func:`cosine_topk_prepare`) for some or all of its rows.

    ``rows``: None for every row, or an int64 array of row ids (any order, repeats allowed):
    output row r is row rows[r]'s neighbours, bit for bit those of the all-rows call.
    Returns (indptr int64, indices int64, values of X's dtype), as cosine_topk.
    Memory O(b*k + threads*n) beyond the prepared tuple, b the number of distinct rows.
    """
    n_cols, dtype, binary, indptr, ix, xw, scale, tp, tx, tw, work = prepared
    n = indptr.shape[0] - 1
    kk = min(int(k), n)
    if n == 0 or kk == 0:
        n_out = n if rows is None else len(rows)
        return np.zeros(n_out + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype)
    need_count = shrink > 0 or min_support > 1
    order, slots = _rows.plan(work, rows)
    counts = np.zeros(order.shape[0], np.int64)
    out_idx = np.empty(order.shape[0] * kk, np.int64)
    out_val = np.empty(order.shape[0] * kk, dtype)
    _run(n_threads, _cosine_rows, indptr, ix, xw, tp, tx, tw, scale, scale, n, binary,
         need_count, order, work, 0, kk, float(shrink), float(min_similarity), int(min_support),
         bool(include_self), counts, counts, out_idx, out_val, _threads(n_threads))
    return _csr_from_slots(counts, kk, out_idx, out_val, slots, n_threads)


def cosine_topk(
    indptr,
    indices,
    data,
    n_cols,
    k,
    shrink,
    min_similarity,
    min_support,
    include_self,
    n_threads,
    rows=None,
):
    """Each row's k most cosine-similar rows of X (n x n_cols CSR) as CSR arrays.

    Same rules as ``reference.cosine_topk``: candidates have co-count c >= min_support,
    sim >= min_similarity, sim != 0, j != i unless include_self; sim shrunk by c/(c+shrink);
    rows sorted by sim descending (ranked in data's dtype), ties by smaller j.
    Returns (indptr int64, indices int64, values of data's dtype).
    Time O(W + sum_i min(n, w_i) + n k log k) with w_i the multiply-adds of row i and
    W = sum over columns of (column nnz)^2. Memory O(nnz + n*k + threads*n); with ``rows``
    (None, or the row ids to compute: output row r is row rows[r]) O(nnz + len(rows)*k +
    threads*n). :func:`cosine_topk_prepare` + :func:`cosine_topk_rows`, in one call.
    """
    n = indptr.shape[0] - 1
    if n == 0 or min(int(k), n) == 0:
        n_out = n if rows is None else len(rows)
        return np.zeros(n_out + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, data.dtype)
    prepared = cosine_topk_prepare(indptr, indices, data, n_cols, n_threads)
    return cosine_topk_rows(prepared, k, shrink, min_similarity, min_support, include_self,
                            n_threads, rows)


def cosine_similarity_prepare(
    indptr, indices, data, y_indptr, y_indices, y_data, n_cols, n_threads
):
    """The part of cosine_similarity that does not depend on which rows of X are computed.

    Whether the product is binary (every row of X and of Y holds one constant value: decided
    over all of X, so that any block of X's rows is computed exactly as in the whole call),
    and Y's side: row scales and the transposed Y (float64 normalised values unless binary).
    Returns an opaque tuple for :func:`cosine_similarity_rows`. Time O(nnz(X) + nnz(Y)).
    """
    dtype = np.result_type(data.dtype, y_data.dtype)
    _, _, const_x = _row_scales(indptr, data)
    _, scale_y, const_y, (tp, tx, tw) = _prepare_side(
        y_indptr, y_indices, y_data, n_cols, not const_x
    )
    binary = const_x and const_y
    if not binary and tw.shape[0] != y_data.shape[0]:  # Y constant, X not: weigh Y too
        _, scale_y, _, (tp, tx, tw) = _prepare_side(y_indptr, y_indices, y_data, n_cols, True)
    return (int(n_cols), dtype, bool(binary), scale_y, tp, tx, tw)


def cosine_similarity_rows(prepared, indptr, indices, data, min_similarity, n_threads):
    """cosine_similarity of some rows of X (given as a CSR: X itself, or a block of its rows)
    with the prepared Y (:func:`cosine_similarity_prepare` of X and Y); each output row is
    bit for bit that row of the whole call. Memory O(nnz(rows) + nnz(result) + threads*p)."""
    n_cols, dtype, binary, scale_y, tp, tx, tw = prepared
    n, p = indptr.shape[0] - 1, scale_y.shape[0]
    if n == 0 or p == 0:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype)
    inv_x, scale_x, _ = _row_scales(indptr, data)
    xw = np.zeros(0) if binary else _row_weights(indptr, data, inv_x)
    ix = _unsigned(indices)
    work = _run(n_threads, _row_work, indptr, ix, tp)
    order = np.argsort(-work, kind="stable")
    counts = np.zeros(n, np.int64)
    no_idx = np.zeros(0, np.int64)
    no_val = np.zeros(0, dtype)
    args = (indptr, ix, xw, tp, tx, tw, scale_x, scale_y, p, binary, False, order, work)
    rule = (0, 0.0, float(min_similarity), 1, True)
    nt = _threads(n_threads)
    _run(n_threads, _cosine_rows, *args, 1, *rule, counts, counts, no_idx, no_val, nt)
    out_indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=out_indptr[1:])
    out_idx = np.empty(int(out_indptr[-1]), np.int64)
    out_val = np.empty(int(out_indptr[-1]), dtype)
    _run(n_threads, _cosine_rows, *args, 2, *rule, counts, out_indptr, out_idx, out_val, nt)
    return out_indptr, out_idx, out_val


def cosine_similarity(
    indptr, indices, data, y_indptr, y_indices, y_data, n_cols, min_similarity, n_threads
):
    """The sparse cosine similarity of the rows of X (n x n_cols) with those of Y (p x n_cols).

    Same rules as ``reference.cosine_similarity``: entry (i, j) stored when sim != 0 and
    sim >= min_similarity, columns ascending. Two passes over the product (count, then fill)
    so that the output is allocated once at its exact size.
    Returns (indptr int64, indices int64, values: float32 only if both inputs are float32).
    Time O(2 (W + sum_i min(p, w_i))). Memory O(nnz(X) + nnz(Y) + nnz(result) + threads*p).
    :func:`cosine_similarity_prepare` + :func:`cosine_similarity_rows`, in one call.
    """
    n, p = indptr.shape[0] - 1, y_indptr.shape[0] - 1
    if n == 0 or p == 0:
        dtype = np.result_type(data.dtype, y_data.dtype)
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype)
    prepared = cosine_similarity_prepare(
        indptr, indices, data, y_indptr, y_indices, y_data, n_cols, n_threads
    )
    return cosine_similarity_rows(prepared, indptr, indices, data, min_similarity, n_threads)


# ---- ranking: topk, recommend ---------------------------------------------------------------

# The bounded heap: a min-heap of at most k (score, index) pairs whose root is the worst kept
# entry ("worse" = smaller score, or equal score and larger index). Written once, used by
# topk and recommend (and open to any kernel that keeps a best-k).


@numba.njit(inline="always")
def _worse(va, ia, vb, ib):
    return va < vb or (va == vb and ia > ib)


@numba.njit(inline="always")
def _sift_down(hv, hi, size, pos):
    v = hv[pos]
    i = hi[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _worse(hv[child + 1], hi[child + 1], hv[child], hi[child]):
            child += 1
        if not _worse(hv[child], hi[child], v, i):
            break
        hv[pos] = hv[child]
        hi[pos] = hi[child]
        pos = child
    hv[pos] = v
    hi[pos] = i


@numba.njit(inline="always")
def heap_offer(hv, hi, size, k, v, i):
    """Offer candidate (v, i) to a heap of ``size`` <= k entries; returns the new size. O(log k)."""
    if size < k:
        pos = size
        while pos > 0:
            parent = (pos - 1) >> 1
            if not _worse(v, i, hv[parent], hi[parent]):
                break
            hv[pos] = hv[parent]
            hi[pos] = hi[parent]
            pos = parent
        hv[pos] = v
        hi[pos] = i
        return size + 1
    if _worse(hv[0], hi[0], v, i):
        hv[0] = v
        hi[0] = i
        _sift_down(hv, hi, size, 0)
    return size


@numba.njit(inline="always")
def heap_sort(hv, hi, size):
    """In place: heap of ``size`` entries -> best first (score descending, ties smaller index)."""
    for end in range(size - 1, 0, -1):
        v = hv[0]
        i = hi[0]
        hv[0] = hv[end]
        hi[0] = hi[end]
        hv[end] = v
        hi[end] = i
        _sift_down(hv, hi, end, 0)


# Width of the blocks tested against the running threshold with one vectorisable comparison.
_BLOCK = 64


@numba.njit(inline="always")
def _block_hits(block, thr):
    """Bit t set when block[t] > thr (NaN never is), len(block) <= 64.

    A full block is first tested with one fixed-length loop OR-ing integers, the form LLVM
    vectorises best, so that the common case (nothing above) costs a few instructions.
    """
    n = block.shape[0]
    if n == _BLOCK:
        hit = np.uint32(0)
        for t in range(_BLOCK):
            hit |= np.uint32(block[t] > thr)
        if hit == 0:
            return np.uint64(0)
    m = np.uint64(0)
    for t in range(n):
        m |= np.uint64(block[t] > thr) << np.uint64(t)
    return m


@numba.njit(inline="always")
def _not_excluded(ex, p, j):
    """Advance the sorted exclusion cursor p to column j; returns (p, whether j is allowed)."""
    n_ex = ex.shape[0]
    while p < n_ex and ex[p] < j:
        p += 1
    return p, not (p < n_ex and ex[p] == j)


# The threshold scan both topk rows share: entries strictly above ``thr`` (the k-th best so
# far, -inf before there are k, which also rejects NaN and -inf) are appended to a buffer of
# 2k candidates; a full buffer is cut back to its best k by a quickselect, whose k-th entry
# becomes the threshold. Columns are scanned in increasing order, so an entry equal to the
# threshold never beats it (the kept one has the smaller column). 64-wide blocks with nothing
# above ``thr`` are skipped after one branch-free comparison; in the others only the set bits
# of the hit mask are visited, and the row's sorted excluded columns are merged in then. Each
# candidate costs O(1) (a heap's O(log k) chain of dependent, unpredictable branches measured
# 3.5x more work per row at k=100, n=1e5).


@numba.njit(inline="always")
def _better(va, ia, vb, ib):
    """(va, ia) ranks above (vb, ib): larger score, or equal and smaller column. Branch-free."""
    return (va > vb) | ((va == vb) & (ia < ib))


@numba.njit(inline="always")
def _select_pairs(bv, bi, n, k):
    """Reorder bv/bi[:n] (n > k) so that [:k] hold the best k, the k-th best at k-1.

    Quickselect with a median-of-three pivot and a branch-free Lomuto partition (swap always,
    advance when above the pivot): expected O(n).
    """
    lo = 0
    hi = n - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        # Order lo, mid, hi best first, then the median (mid) becomes the pivot at hi.
        if _better(bv[mid], bi[mid], bv[lo], bi[lo]):
            bv[mid], bv[lo] = bv[lo], bv[mid]
            bi[mid], bi[lo] = bi[lo], bi[mid]
        if _better(bv[hi], bi[hi], bv[mid], bi[mid]):
            bv[mid], bv[hi] = bv[hi], bv[mid]
            bi[mid], bi[hi] = bi[hi], bi[mid]
            if _better(bv[mid], bi[mid], bv[lo], bi[lo]):
                bv[mid], bv[lo] = bv[lo], bv[mid]
                bi[mid], bi[lo] = bi[lo], bi[mid]
        bv[mid], bv[hi] = bv[hi], bv[mid]
        bi[mid], bi[hi] = bi[hi], bi[mid]
        pv = bv[hi]
        pi = bi[hi]
        s = lo
        for t in range(lo, hi):
            v = bv[t]
            i = bi[t]
            bv[t] = bv[s]
            bi[t] = bi[s]
            bv[s] = v
            bi[s] = i
            s += np.int64(_better(v, i, pv, pi))
        bv[hi] = bv[s]
        bi[hi] = bi[s]
        bv[s] = pv
        bi[s] = pi
        if s == k - 1:
            return
        if s > k - 1:
            hi = s - 1
        else:
            lo = s + 1


@numba.njit(inline="always")
def _topk_row(row, k, ex, bv, bi, hv, hi):
    """Best k of one row into hv/hi (sorted, padded), reading each score once from memory;
    bv/bi: the (score, column) candidate buffer of 2k. See the scan described above."""
    n_cols = row.shape[0]
    cap = bv.shape[0]
    cnt = 0
    p = 0
    thr = row.dtype.type(-np.inf)
    for j0 in range(0, n_cols, _BLOCK):
        m = _block_hits(row[j0 : j0 + _BLOCK], thr)
        while m:
            j = j0 + trailing_zeros(m)
            m &= m - np.uint64(1)
            v = row[j]
            if v > thr:  # thr may have risen since the mask was taken
                p, ok = _not_excluded(ex, p, j)
                if ok:
                    bv[cnt] = v
                    bi[cnt] = j
                    cnt += 1
                    if cnt == cap:
                        _select_pairs(bv, bi, cnt, k)
                        cnt = k
                        thr = bv[k - 1]
    if cnt > k:
        _select_pairs(bv, bi, cnt, k)
        cnt = k
    for t in range(cnt):
        hv[t] = bv[t]
        hi[t] = bi[t]
    for t in range(cnt // 2 - 1, -1, -1):  # heapify, then sort best first
        _sift_down(hv, hi, cnt, t)
    heap_sort(hv, hi, cnt)
    for t in range(cnt, k):
        hv[t] = -np.inf
        hi[t] = -1


# float32 rows (of fewer than 2**32 columns) pack each candidate into one uint64 key: the
# score's bits mapped to an unsigned integer of the same order (-0.0 first made +0.0, they are
# equal scores), then the complemented column, so that one integer comparison ranks (score
# desc, column asc): the same scan with half the selection work of (score, column) pairs.
_KEY_LOW = np.uint64(0xFFFFFFFF)


@numba.njit(inline="always")
def _f32_key(v, j):
    b = np.uint32(np.float32(v + np.float32(0.0)).view(np.uint32))
    flip = np.uint32(0xFFFFFFFF) if b >> np.uint32(31) else np.uint32(0x80000000)
    return (np.uint64(b ^ flip) << np.uint64(32)) | (_KEY_LOW - np.uint64(j))


@numba.njit(inline="always")
def _key_f32(key):
    b = np.uint32(key >> np.uint64(32))
    flip = np.uint32(0x80000000) if b >> np.uint32(31) else np.uint32(0xFFFFFFFF)
    return np.uint32(b ^ flip).view(np.float32)


@numba.njit(inline="always")
def _key_column(key):
    return np.int64(_KEY_LOW - (key & _KEY_LOW))


@numba.njit(inline="always")
def _select_keys(a, n, k):
    """Reorder a[:n] (distinct keys, n > k) so that a[:k] are the k largest, a[k-1] the least of them.

    Quickselect with a median-of-three pivot and a branch-free Lomuto partition (swap always,
    advance when above the pivot): expected O(n).
    """
    lo = 0
    hi = n - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        med = max(min(x, y), min(max(x, y), z))
        if med == x:
            a[lo] = z
        elif med == y:
            a[mid] = z
        a[hi] = med
        s = lo
        for t in range(lo, hi):
            x = a[t]
            a[t] = a[s]
            a[s] = x
            s += np.int64(x > med)
        a[hi] = a[s]
        a[s] = med
        if s == k - 1:
            return
        if s > k - 1:
            hi = s - 1
        else:
            lo = s + 1


@numba.njit(inline="always")
def _key_sift_down(a, size, pos, key):
    """Place ``key`` at ``pos`` of the min-heap a[:size], moving it down as needed."""
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and a[c + 1] < a[c]:
            c += 1
        if a[c] >= key:
            break
        a[pos] = a[c]
        pos = c
    a[pos] = key


@numba.njit(inline="always")
def _topk_row_f32(row, k, ex, buf, hv, hi):
    """_topk_row for float32 rows of fewer than 2**32 columns, with the key buffer ``buf`` (2k)."""
    n_cols = row.shape[0]
    cap = buf.shape[0]
    cnt = 0
    p = 0
    thr = np.float32(-np.inf)
    for j0 in range(0, n_cols, _BLOCK):
        block = row[j0 : j0 + _BLOCK]
        m = _block_hits(block, thr)
        while m:
            t = trailing_zeros(m)
            m &= m - np.uint64(1)
            v = block[t]
            if v > thr:  # thr may have risen since the mask was taken
                p, ok = _not_excluded(ex, p, j0 + t)
                if ok:
                    buf[cnt] = _f32_key(v, j0 + t)
                    cnt += 1
                    if cnt == cap:
                        _select_keys(buf, cnt, k)
                        cnt = k
                        thr = _key_f32(buf[k - 1])
    if cnt > k:
        _select_keys(buf, cnt, k)
        cnt = k
    _emit_keys(row, buf, cnt, k, hv, hi)


@numba.njit(inline="always")
def _emit_keys(row, keys, cnt, k, hv, hi):
    """The best keys[:cnt] (cnt <= k) as a sorted, padded output row."""
    # Heap-sort the keys (a min-heap popped to the back leaves them descending).
    for t in range(cnt // 2 - 1, -1, -1):
        _key_sift_down(keys, cnt, t, keys[t])
    for end in range(cnt - 1, 0, -1):
        last = keys[end]
        keys[end] = keys[0]
        _key_sift_down(keys, end, 0, last)
    for t in range(cnt):
        j = _key_column(keys[t])
        hi[t] = j
        hv[t] = row[j]  # the stored score itself (a -0.0 stays -0.0)
    for t in range(cnt, k):
        hv[t] = -np.inf
        hi[t] = -1


# Vector-compress ("stream") form of the float32 row, used where the CPU has AVX-512 and
# k >= _COMPRESS_MIN_K (_COMPRESS): each 64-wide block is compared with the threshold at once
# (above_mask64) and the columns above it are appended with four 16-lane compress stores,
# whether or not there are any: no branch depends on the data, so nothing is mispredicted and
# the extra vector work hides under the memory stream. Every k appended columns become keys
# (_f32_key, reading the scores again from cache); 2k keys are cut back to k by a quickselect
# whose partitions are compress passes. Measured (RESULTS.md, 2026-11-28): 4096 x 100k, 2
# threads, k=100: 47-52 ms against 54-58 for the bit-mask walk; 16 x 100k cache-resident, one
# thread, k=100: 12.4-12.7 against 16.3-19.6 us per row. For k=10 the walk is as fast when
# streaming and faster from cache (6 vs 10 us per row), hence the k threshold. Without AVX-512
# LLVM expands the compress to scalar code, 1.5-1.8x slower than the walk.
_COMPRESS = target_has_compress()
_COMPRESS_MIN_K = 32
_SLACK = _BLOCK + 16  # a block's appends land past the count before a flush; vector stores


@numba.njit(inline="always")
def _cut_keys(a, n, k, s):
    """Keep the k largest of the distinct keys a[:n] (n >= k) in a[:k] (in no order); returns
    the least of them. s: scratch of n + 16. Quickselect with a median-of-three pivot, each
    level counting then compressing the side that holds the answer; small ends scalar."""
    src = a
    m = n
    need = k
    while True:
        if m <= 24:
            for t in range(m):
                s[t] = src[t]
            if m > need:
                _select_keys(s, m, need)
                least = s[need - 1]
            else:
                least = s[0]
                for t in range(1, m):
                    least = min(least, s[t])
            break
        x, y, z = src[0], src[m >> 1], src[m - 1]
        pivot = max(min(x, y), min(max(x, y), z))
        m8 = m - m % 8
        above = count_above8(src, m8, m - m8, pivot)
        for i in range(0, m8, 8):
            above += count_above8(src, i, 8, pivot)
        if above == need - 1:
            least = pivot
            break
        side = above >= need
        o = 0
        for i in range(0, m8, 8):
            o += compress8(src, i, 8, pivot, side, s, o)
        o += compress8(src, m8, m - m8, pivot, side, s, o)
        if not side:
            need -= above + 1
        src = s
        m = o
    o = 0
    for i in range(0, n, 8):  # in place: each store lands at or before the vector it read
        o += compress8(a, i, min(8, n - i), least - np.uint64(1), True, a, o)
    return least


@numba.njit(cache=True)
def _drop_excluded(cols, c0, nc, ex, p):
    """Remove from cols[c0:nc] (ascending) those in ex[p:] (sorted); returns the new count."""
    o = c0
    n_ex = ex.shape[0]
    for t in range(c0, nc):
        j = cols[t]
        while p < n_ex and ex[p] < j:
            p += 1
        if not (p < n_ex and ex[p] == j):
            cols[o] = j
            o += 1
    return o


@numba.njit(inline="always")
def _columns_to_keys(row, cols, nc, keys, nk):
    for t in range(nc):
        j = np.int64(cols[t])
        keys[nk + t] = _f32_key(row[j], j)
    return nk + nc


@numba.njit(inline="always")
def _topk_row_f32_compress(row, k, ex, keys, cols, s, hv, hi):
    """_topk_row_f32 in the stream form above; keys and s of 3k + _SLACK, cols of k + _SLACK.
    A block holding an excluded column drops it from the columns it appended."""
    n_cols = row.shape[0]
    n_ex = ex.shape[0]
    nk = 0
    nc = 0
    p = 0
    thr = np.float32(-np.inf)
    n_full = n_cols - n_cols % _BLOCK
    for j0 in range(0, n_full, _BLOCK):
        m = above_mask64(row, j0, thr)
        c0 = nc
        for q in range(0, _BLOCK, 16):
            nc = append_columns16(j0 + q, m >> np.uint64(q), cols, nc)
        while p < n_ex and ex[p] < j0:
            p += 1
        if p < n_ex and ex[p] < j0 + _BLOCK:
            nc = _drop_excluded(cols, c0, nc, ex, p)
        if nc >= k:
            nk = _columns_to_keys(row, cols, nc, keys, nk)
            nc = 0
            if nk >= 2 * k:
                thr = _key_f32(_cut_keys(keys, nk, k, s))
                nk = k
    nk = _columns_to_keys(row, cols, nc, keys, nk)
    for j in range(n_full, n_cols):
        v = row[j]
        if v > thr:
            p, ok = _not_excluded(ex, p, j)
            if ok:
                keys[nk] = _f32_key(v, j)
                nk += 1
    if nk > k:
        _cut_keys(keys, nk, k, s)
        nk = k
    _emit_keys(row, keys, nk, k, hv, hi)


_TOPK_GROUP = 8


@numba.njit(parallel=True, cache=True)
def _topk_impl(scores, k, ex_indptr, ex_indices, has_mask, out_idx, out_val):
    n = scores.shape[0]
    empty = ex_indices[:0]
    # Rows in groups of _TOPK_GROUP, one candidate buffer per group (not one per row).
    for g in numba.prange((n + _TOPK_GROUP - 1) // _TOPK_GROUP):
        bv = np.empty(2 * k, scores.dtype)
        bi = np.empty(2 * k, np.int64)
        for r in range(g * _TOPK_GROUP, min(n, (g + 1) * _TOPK_GROUP)):
            ex = ex_indices[ex_indptr[r] : ex_indptr[r + 1]] if has_mask else empty
            _topk_row(scores[r], k, ex, bv, bi, out_val[r], out_idx[r])


@numba.njit(parallel=True, cache=True)
def _topk_impl_f32(scores, k, ex_indptr, ex_indices, has_mask, out_idx, out_val):
    n = scores.shape[0]
    empty = ex_indices[:0]
    for g in numba.prange((n + _TOPK_GROUP - 1) // _TOPK_GROUP):
        buf = np.empty(2 * k, np.uint64)
        for r in range(g * _TOPK_GROUP, min(n, (g + 1) * _TOPK_GROUP)):
            ex = ex_indices[ex_indptr[r] : ex_indptr[r + 1]] if has_mask else empty
            _topk_row_f32(scores[r], k, ex, buf, out_val[r], out_idx[r])


@numba.njit(parallel=True, cache=True)
def _topk_impl_f32_compress(scores, k, ex_indptr, ex_indices, has_mask, out_idx, out_val):
    n = scores.shape[0]
    empty = ex_indices[:0]
    for g in numba.prange((n + _TOPK_GROUP - 1) // _TOPK_GROUP):
        keys = np.empty(3 * k + _SLACK, np.uint64)
        s = np.empty(3 * k + _SLACK, np.uint64)
        cols = np.empty(k + _SLACK, np.uint32)
        for r in range(g * _TOPK_GROUP, min(n, (g + 1) * _TOPK_GROUP)):
            ex = ex_indices[ex_indptr[r] : ex_indptr[r + 1]] if has_mask else empty
            _topk_row_f32_compress(scores[r], k, ex, keys, cols, s, out_val[r], out_idx[r])


def _with_threads(n_threads, fn, *args):
    """Run ``fn`` on at most ``n_threads`` Numba threads (restoring the previous count)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        return fn(*args)
    finally:
        numba.set_num_threads(previous)


def _index_type(*arrays):
    """int64 if any given index array is int64, else int32 (one specialisation per call)."""
    return np.int64 if any(a is not None and a.dtype == np.int64 for a in arrays) else np.int32


def topk(scores, k, exclude_indptr, exclude_indices, n_threads):
    """Row-wise top-k of a dense (n_rows, n_cols) float32/float64 array.

    Column c of row r is a candidate unless (r, c) is stored in the exclude mask (CSR pattern
    with sorted indices per row; ``exclude_indptr`` None for none) or the score is NaN or -inf;
    +inf is a score. Returns (indices int64, scores of the input dtype), both (n_rows, k),
    sorted descending, ties by smaller column, -1/-inf padding. ``scores`` is only read (a
    non-C-contiguous array is copied once). Time O(n_rows * n_cols) reads plus expected O(1)
    per entry above the running threshold (about 2k ln(n_cols / k) per random row); memory
    O(n_rows * k) output plus O(k) per thread.
    """
    scores = np.ascontiguousarray(scores)
    n_rows = scores.shape[0]
    out_idx = np.empty((n_rows, k), dtype=np.int64)
    out_val = np.empty((n_rows, k), dtype=scores.dtype)
    has_mask = exclude_indptr is not None
    itype = _index_type(exclude_indptr, exclude_indices)
    if has_mask:
        ex_indptr = np.ascontiguousarray(exclude_indptr, dtype=itype)
        ex_indices = np.ascontiguousarray(exclude_indices, dtype=itype)
    else:
        ex_indptr = ex_indices = np.zeros(1, dtype=itype)
    if scores.dtype == np.float32 and scores.shape[1] < 2**32:
        impl = _topk_impl_f32_compress if _COMPRESS and k >= _COMPRESS_MIN_K else _topk_impl_f32
    else:
        impl = _topk_impl
    _with_threads(n_threads, impl, scores, k, ex_indptr, ex_indices, has_mask, out_idx, out_val)
    return out_idx, out_val


@numba.njit(inline="always")
def _mark_excluded(m_indptr, m_indices, row, mark):
    """Flag the touched items of a mask row as excluded (untouched ones are not candidates)."""
    for q in range(m_indptr[row], m_indptr[row + 1]):
        if mark[m_indices[q]] == 1:
            mark[m_indices[q]] = 2


@numba.njit(parallel=True, cache=True)
def _recommend_impl(
    a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_items, rows, n,
    seen_indptr, seen_indices, has_seen, ex_indptr, ex_indices, has_ex, n_chunks,
    out_idx, out_val,
):
    n_rows = rows.shape[0]
    # One chunk of rows per task with its own buffers: at most one chunk per thread runs at a
    # time, so memory is O(threads * n_items); chunks keep the load balanced.
    for c in numba.prange(n_chunks):
        acc = np.zeros(n_items, dtype=np.float64)
        mark = np.zeros(n_items, dtype=np.uint8)
        touched = np.empty(n_items + 1, dtype=np.int64)  # +1: the branch-free spare write
        rounded = np.empty(1, dtype=out_val.dtype)
        for r in range(c * n_rows // n_chunks, (c + 1) * n_rows // n_chunks):
            row = rows[r]
            hv = out_val[r]  # the heap lives in the output row
            hi = out_idx[r]
            n_touched = 0
            # float64 sums in the reference's order (A's stored order, then B's).
            for p in range(a_indptr[row], a_indptr[row + 1]):
                a = np.float64(a_data[p])
                i = a_indices[p]
                for q in range(b_indptr[i], b_indptr[i + 1]):
                    j = b_indices[q]
                    # Branch-free first-touch bookkeeping: whether j is new is unpredictable,
                    # so always write the slot and advance only for a new item.
                    touched[n_touched] = j
                    n_touched += 1 - mark[j]
                    mark[j] = 1
                    acc[j] += a * np.float64(b_data[q])
            if has_seen:
                _mark_excluded(seen_indptr, seen_indices, row, mark)
            if has_ex:
                _mark_excluded(ex_indptr, ex_indices, row, mark)
            size = 0
            for t in range(n_touched):
                j = touched[t]
                # Ranked as returned (rounded to the output dtype, as the reference), so
                # sums that round to the same float32 are tied and go to the smaller item.
                rounded[0] = acc[j]
                v = rounded[0]
                if mark[j] == 1 and v > -np.inf:  # rejects NaN and -inf
                    size = heap_offer(hv, hi, size, n, v, np.int64(j))
                acc[j] = 0.0
                mark[j] = 0
            heap_sort(hv, hi, size)
            for t in range(size, n):
                hv[t] = -np.inf
                hi[t] = -1


def recommend(
    a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_items, rows, n,
    seen_indptr, seen_indices, ex_indptr, ex_indices, n_threads,
):
    """Top-n items for each row r in ``rows`` of the sparse product A @ B, never built whole.

    A is (n_rows, n_mid) CSR and B (n_mid, n_items) CSR (item-kNN: A = user_items,
    B = item_neighbours; user-kNN: A = user_neighbours, B = user_items). Item j is a candidate
    for row r when some stored A[r, i] meets a stored B[i, j], (r, j) is stored in neither mask
    (``seen_*``, ``ex_*``: CSR patterns indexed by r with sorted indices, None for none), and
    the score is not NaN or -inf. Scores are summed in float64 in A's then B's stored order and
    ranked as returned (rounded to the output dtype). Returns (indices int64, scores), both
    (len(rows), n), sorted descending, ties by smaller item, -1/-inf padding; scores float32
    only when A and B both are. Time O(sum over rows of the A-row x B-rows products + touched * log n);
    memory O(threads * n_items) of accumulators plus the O(len(rows) * n) output.
    """
    dtype = np.result_type(a_data.dtype, b_data.dtype)
    itype = _index_type(a_indptr, a_indices, b_indptr, b_indices, seen_indptr, seen_indices,
                        ex_indptr, ex_indices)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    n_rows = rows.shape[0]
    out_idx = np.empty((n_rows, n), dtype=np.int64)
    out_val = np.empty((n_rows, n), dtype=dtype)
    if n_rows == 0:
        return out_idx, out_val

    def ix(a):
        return np.ascontiguousarray(a, dtype=itype)

    def mask(m_indptr, m_indices):
        if m_indptr is None:
            return np.zeros(1, itype), np.zeros(1, itype), False
        return ix(m_indptr), ix(m_indices), True

    s_ptr, s_ind, has_seen = mask(seen_indptr, seen_indices)
    e_ptr, e_ind, has_ex = mask(ex_indptr, ex_indices)
    n_chunks = max(1, min(n_rows, 16 * int(n_threads)))
    # Chunks depend on n_threads but each row's result does not: rows are independent.
    _with_threads(
        n_threads, _recommend_impl, ix(a_indptr), ix(a_indices),
        np.ascontiguousarray(a_data, dtype=dtype), ix(b_indptr), ix(b_indices),
        np.ascontiguousarray(b_data, dtype=dtype), int(n_items), rows, n,
        s_ptr, s_ind, has_seen, e_ptr, e_ind, has_ex, n_chunks, out_idx, out_val,
    )
    return out_idx, out_val


# ---- scoring: sigmoid_dense, sigmoid_csr, logistic_loss_grad_dense, logistic_loss_grad_csr --
# (and logistic_hessp_dense, logistic_hessp_csr: the loss/grad passes with hess=True)
# Same blocks and chunk boundaries as the Cython kernels (_scoring_plan), float64 arithmetic,
# fixed-order reductions (dense and sparse dot products in LLVM's vectorised order, fixed at
# compile time for the CPU it targets), so results do not depend on the thread count.

from . import _scoring_plan as _plan  # noqa: E402

_DENSE_BLOCK = _plan.DENSE_BLOCK
_CSR_BLOCK = _plan.CSR_BLOCK
_COMBINE_BLOCK = _plan.COMBINE_BLOCK


class _scoring_threads:
    """Run Numba's parallel regions of this thread with n_threads (at most Numba's pool)."""

    def __init__(self, n_threads):
        self.n = max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS))

    def __enter__(self):
        self.saved = numba.get_num_threads()
        numba.set_num_threads(self.n)

    def __exit__(self, *exc):
        numba.set_num_threads(self.saved)


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


@numba.njit(cache=True)
def _exp_nonpos(x):
    """exp(x) for x <= 0 without a libm call or a branch, so loops over it vectorise.

    Cody-Waite reduction x = k ln2 + r, |r| <= ln2 / 2, a degree-13 Taylor polynomial
    (truncation < 5e-18) and 2^k built from exponent bits in two halves (subnormal results
    included); 0 below -745. Measured within 3 ulp of libm over [-800, 0].
    """
    xc = x if x > -745.0 else -745.0
    k = np.floor(xc * _INV_LN2 + 0.5)
    r = (xc - k * _LN2_HI) - k * _LN2_LO
    p = 1.0 + r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (
        1 / 720 + r * (1 / 5040 + r * (1 / 40320 + r * (1 / 362880 + r * (
            1 / 3628800 + r * (1 / 39916800 + r * (1 / 479001600 + r / 6227020800))))))))))))
    ki = np.int64(k)
    h = ki >> 1
    e = p * _f64_from_bits((h + 1023) << 52) * _f64_from_bits((ki - h + 1023) << 52)
    return e if x >= -745.0 else 0.0


@numba.njit(cache=True, inline="always")
def _sigmoid_block(z, b, out):
    """out[t] = sigmoid(z[t] + b) over a block, branch-free with :func:`_exp_nonpos` so the
    loop vectorises (float32 scores: measured 10.1 against 19.3 ns per 64-wide row). Inlined
    into its callers at Numba IR level: called as a function, the loop stayed scalar."""
    for t in range(z.shape[0]):
        zt = z[t] + b
        e = _exp_nonpos(-abs(zt))
        num = 1.0 if zt >= 0.0 else e
        out[t] = num / (1.0 + e)


@numba.njit(cache=True, fastmath={"reassoc"})
def _dot(x, w):
    """sum_j x[j] * w[j] in float64.

    Reassociation lets LLVM vectorise the sum with its own (compile-time, so thread-count
    independent) order: measured 2.2x faster per row than eight hand-interleaved accumulators
    at d=64 float32 (19.5 vs 42.2 ns), 1.3x at float64.
    """
    acc = 0.0
    for j in range(x.shape[0]):
        acc += np.float64(x[j]) * np.float64(w[j])
    return acc


@numba.njit(cache=True, fastmath={"reassoc"})
def _sparse_dot(indices, data, w, lo, hi):
    """sum_k data[k] * w[indices[k]] over [lo, hi) in float64.

    Reassociation (as in :func:`_dot`: LLVM's compile-time order, so thread-count independent)
    lets LLVM vectorise the gathers: measured 70 vs 88 ms per 2M rows of 40 nnz on one thread
    against four hand-interleaved accumulators (AVX-512 gathers on this machine).
    """
    acc = 0.0
    for k in range(lo, hi):
        acc += np.float64(data[k]) * np.float64(w[indices[k]])
    return acc


# The C-order kernel prefetches the row _PREFETCH_BYTES ahead: measured, 2M x 64, raw kernel,
# same process as the read baseline: 1 thread 0.70 -> 0.89 (float64) and 0.65 -> 0.87
# (float32) of the read; 2 threads float32 0.66 -> 0.86, float64 unchanged (0.93-0.95). The
# hardware prefetcher alone left a single thread's stream short of the read's.
_PREFETCH_BYTES = 12288


@numba.njit(parallel=True, cache=True)
def _sigmoid_dense_c(X, w, b, out, block_exp, ahead):
    n = X.shape[0]
    row_bytes = X.shape[1] * X.itemsize
    for blk in numba.prange((n + _DENSE_BLOCK - 1) // _DENSE_BLOCK):
        r0 = blk * _DENSE_BLOCK
        r1 = min(n, r0 + _DENSE_BLOCK)
        z = np.empty(r1 - r0, dtype=np.float64)
        for i in range(r0, r1):
            if i + ahead < n:
                for off in range(0, row_bytes, 64):
                    prefetch_line(X, i + ahead, off)
            z[i - r0] = _dot(X[i], w)
        if block_exp:
            _sigmoid_block(z, b, out[r0:r1])
        else:
            for t in range(r1 - r0):
                out[r0 + t] = _sigmoid(z[t] + b)


@numba.njit(parallel=True, cache=True)
def _sigmoid_dense_f(X, w, b, out, block_exp):
    # Column-major: a block's logits are built column by column (contiguous, vectorised).
    n, d = X.shape
    for blk in numba.prange((n + _DENSE_BLOCK - 1) // _DENSE_BLOCK):
        r0 = blk * _DENSE_BLOCK
        r1 = min(n, r0 + _DENSE_BLOCK)
        acc = np.zeros(r1 - r0, dtype=np.float64)
        for j in range(d):
            # A column slice indexed from 0: offset indexing into X defeats vectorisation.
            col = X[r0:r1, j]
            wj = np.float64(w[j])
            for t in range(r1 - r0):
                acc[t] += np.float64(col[t]) * wj
        if block_exp:
            _sigmoid_block(acc, b, out[r0:r1])
        else:
            for t in range(r1 - r0):
                out[r0 + t] = _sigmoid(acc[t] + b)


def sigmoid_dense(X, w, b, out, n_threads):
    """out[i] = sigmoid(X[i] @ w + b) for a dense (n, d) X in C or F order; returns out.

    w and out have X's dtype; dot product and sigmoid in float64, rounded once into out.
    One fused pass, O(n d) time, no temporary beyond one block's logits. The sigmoid of a block
    of logits is taken at once with a vectorised polynomial exp (within 3 float64 ulp of libm's:
    invisible after rounding to float32, within 1.5e-16 relative of the reference for float64).
    Measured on a quiet machine, 2M x 64: float32 10.7 vs 19.5 ns per row (one thread); float64
    23.2 vs 25.7 ms with libm's exp per row (2 threads; 33.7 vs 40.6 ms on one), where the read
    alone takes 21.8 ms. (An earlier run on a loaded machine had shown the float64 block form
    slower: 67-72 vs 52 ms; the quiet rerun does not reproduce it.)
    """
    with _scoring_threads(n_threads):
        if X.flags.c_contiguous:
            ahead = max(1, _PREFETCH_BYTES // max(1, X.shape[1] * X.itemsize))
            _sigmoid_dense_c(X, w, float(b), out, True, ahead)
        else:
            _sigmoid_dense_f(X, w, float(b), out, True)
    return out


@numba.njit(parallel=True, cache=True)
def _sigmoid_csr(indptr, indices, data, w, b, out, block_exp):
    n = indptr.shape[0] - 1
    for blk in numba.prange((n + _CSR_BLOCK - 1) // _CSR_BLOCK):
        r0 = blk * _CSR_BLOCK
        r1 = min(n, r0 + _CSR_BLOCK)
        if block_exp:
            z = np.empty(r1 - r0, dtype=np.float64)
            for i in range(r0, r1):
                z[i - r0] = _sparse_dot(indices, data, w, indptr[i], indptr[i + 1])
            _sigmoid_block(z, b, out[r0:r1])
        else:
            for i in range(r0, r1):
                out[i] = _sigmoid(_sparse_dot(indices, data, w, indptr[i], indptr[i + 1]) + b)


def sigmoid_csr(indptr, indices, data, w, b, out, n_threads):
    """out[i] = sigmoid(X[i] @ w + b) for a CSR X with len(w) columns; returns out.

    float64 dot product in a fixed order (see _sparse_dot); O(nnz) time, no memory beyond out
    (and one block's logits). float32 scores use the block-wise vectorised sigmoid as
    sigmoid_dense does (22.2 vs 15.9 Mrows/s per thread, 40 nnz per row).
    """
    with _scoring_threads(n_threads):
        _sigmoid_csr(_unsigned(indptr), _unsigned(indices), data, w, float(b), out,
                     out.dtype == np.float32)
    return out


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
    with _scoring_threads(n_threads):
        if X.flags.c_contiguous:
            _loss_grad_dense_c(X, y, w, float(b), sample_weight, G, S, False)
        else:
            _loss_grad_dense_f(X, y, w, float(b), sample_weight, G, S, False)
    with _scoring_threads(n_threads if G.size >= _plan.COMBINE_PARALLEL_MIN else 1):
        loss, grad_b = _combine(G, S, w, float(l2), grad)
    return float(loss), grad, float(grad_b)


@numba.njit(parallel=True, cache=True)
def _loss_grad_csr(indptr, indices, data, bounds, y, w, b, sw, G, S, hess):
    for c in numba.prange(bounds.shape[0] - 1):
        g = G[c]
        g[:] = 0.0
        loss = gb = wsum = 0.0
        for i in range(bounds[c], bounds[c + 1]):
            lo, hi = indptr[i], indptr[i + 1]
            z = _sparse_dot(indices, data, w, lo, hi) + b
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
    with _scoring_threads(n_threads):
        _loss_grad_csr(_unsigned(indptr), _unsigned(indices), data, bounds, y, w, float(b),
                       sample_weight, G, S, False)
    with _scoring_threads(n_threads if G.size >= _plan.COMBINE_PARALLEL_MIN else 1):
        loss, grad_b = _combine(G, S, w, float(l2), grad)
    return float(loss), grad, float(grad_b)


# The Hessian-vector product runs the loss/grad pass itself with hess=True (w, b, sw <- v, vb,
# c; see _row_residual): same blocks, chunks and fixed-order fold. Its c already carries the
# 1 / sum(s), so the fold's "total weight" is set to exactly 1 (a division that changes no bit).


def _hessp_fold(G, S, v, l2, n_threads):
    S[:, 2] = 0.0
    S[0, 2] = 1.0
    hv = np.empty(v.shape[0], dtype=np.float64)
    with _scoring_threads(n_threads if G.size >= _plan.COMBINE_PARALLEL_MIN else 1):
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
    with _scoring_threads(n_threads):
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
    with _scoring_threads(n_threads):
        _loss_grad_csr(_unsigned(indptr), _unsigned(indices), data, bounds, c, v, float(vb),
                       c, G, S, True)
    return _hessp_fold(G, S, v, l2, n_threads)


# ---- embedding retrieval (its own module; imported last: it uses the helpers above) ----------
from ._embedding_numba import dot_topk  # noqa: E402, F401
