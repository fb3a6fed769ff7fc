"""Numba CPU similarity kernels: cosine_topk, cosine_similarity (and their prepare/rows
forms, which ``fastrec.dask`` uses to compute blocks of rows)."""

from __future__ import annotations

import numba
import numpy as np

from .. import _rows
from ._common import heap_offer, heap_sort, thread_count, threads, unsigned

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


def _csr_from_slots(counts, kk, out_idx, out_val, slots, n_threads):
    indptr = np.zeros(slots.shape[0] + 1, np.int64)
    np.cumsum(counts[slots], out=indptr[1:])
    indices = np.empty(int(indptr[-1]), np.int64)
    values = np.empty(int(indptr[-1]), out_val.dtype)
    with threads(n_threads, dynamic=True):
        _compact(counts, kk, out_idx, out_val, slots, indptr, indices, values)
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
    ix = unsigned(indices)
    with threads(n_threads, dynamic=True):
        work = _row_work(indptr, ix, tp)
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
    with threads(n_threads, dynamic=True):
        _cosine_rows(indptr, ix, xw, tp, tx, tw, scale, scale, n, binary, need_count, order,
                     work, 0, kk, float(shrink), float(min_similarity), int(min_support),
                     bool(include_self), counts, counts, out_idx, out_val,
                     thread_count(n_threads))
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
    ix = unsigned(indices)
    with threads(n_threads, dynamic=True):
        work = _row_work(indptr, ix, tp)
    order = np.argsort(-work, kind="stable")
    counts = np.zeros(n, np.int64)
    no_idx = np.zeros(0, np.int64)
    no_val = np.zeros(0, dtype)
    args = (indptr, ix, xw, tp, tx, tw, scale_x, scale_y, p, binary, False, order, work)
    rule = (0, 0.0, float(min_similarity), 1, True)
    nt = thread_count(n_threads)
    with threads(n_threads, dynamic=True):
        _cosine_rows(*args, 1, *rule, counts, counts, no_idx, no_val, nt)
    out_indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=out_indptr[1:])
    out_idx = np.empty(int(out_indptr[-1]), np.int64)
    out_val = np.empty(int(out_indptr[-1]), dtype)
    with threads(n_threads, dynamic=True):
        _cosine_rows(*args, 2, *rule, counts, out_indptr, out_idx, out_val, nt)
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
