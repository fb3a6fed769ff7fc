"""Numba CPU similarity kernels: cosine_topk, cosine_similarity (and their prepare/rows
forms, which ``fastrec.dask`` uses to compute blocks of rows)."""

from __future__ import annotations

import math

import numba
import numpy as np

from .. import _host
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
    """(inv_norm, row_exp, row_scale, constant) of each row x_i, scale-invariant: with e_i the
    binary exponent of max |x_i|, inv_norm_i = 1 / |x_i 2^-e_i|, so x / |x_i| =
    ldexp(x, -e_i) * inv_norm_i for any finite row (no square under- or overflows), the bits
    of x * (1 / |x_i|) for rows of ordinary magnitude. row_scale: v_i/|x_i| for rows whose
    stored values all equal v_i; constant: whether every row is such a row. Empty or all-zero
    rows get 0. O(nnz)."""
    n = indptr.shape[0] - 1
    inv_norm = np.zeros(n, np.float64)
    row_exp = np.zeros(n, np.int32)
    scale = np.zeros(n, np.float64)
    constant = True
    for i in range(n):
        lo, hi = indptr[i], indptr[i + 1]
        top = 0.0
        for p in range(lo, hi):
            top = max(top, abs(np.float64(data[p])))
        if top == 0.0:
            continue
        e = math.frexp(top)[1]
        row_exp[i] = e
        s = 0.0
        for p in range(lo, hi):
            x = math.ldexp(np.float64(data[p]), -e)
            s += x * x
        inv_norm[i] = 1.0 / np.sqrt(s)
        v0 = data[lo]
        for p in range(lo + 1, hi):
            if data[p] != v0:
                constant = False
                break
        scale[i] = math.ldexp(np.float64(v0), -e) * inv_norm[i]
    return inv_norm, row_exp, scale, constant


@numba.njit(cache=True)
def _transpose(
    indptr, indices, data, inv_norm, row_exp, n_cols, weighted, t_indptr, t_indices, t_data
):
    """Counting-sort transpose of an (n x n_cols) CSR into t_* (row ids ascending per column);
    with ``weighted`` the values are normalised (x / |x_row|, float64, see _row_scales).
    O(nnz + n_cols)."""
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
                t_data[q] = math.ldexp(np.float64(data[p]), -row_exp[i]) * inv_norm[i]
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
def _cosine_rows(
    ip,
    ix,
    xw,
    tp,
    tx,
    tw,
    a,
    b,
    n_other,
    binary,
    need_count,
    order,
    work,
    mode,
    kk,
    shrink,
    min_similarity,
    min_support,
    include_self,
    out_count,
    out_ptr,
    out_idx,
    out_val,
    n_threads,
):
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
    cast[0, 0] = 1.0 + 2.0**-30  # the output dtype is float32 when this rounds to 1.0
    slack = 2.0**-23 if cast[0, 0] == 1.0 else 0.0
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


# ---- what this backend gives the shared host layer (kernels/_host.py) -------------------------


def _run_row_work(indptr, indices, t_indptr, n_threads):
    with threads(n_threads, dynamic=True):
        return _row_work(indptr, indices, t_indptr)


def _run_cosine_rows(mode, operands, rule, out, n_threads):
    # rule.round32 is not passed: the loop reads the rounding off out.val's dtype.
    with threads(n_threads, dynamic=True):
        _cosine_rows(*operands, int(mode), *rule[:5], *out, thread_count(n_threads))


def _run_compact(counts, kk, out_idx, out_val, slots, indptr, indices, values, n_threads):
    with threads(n_threads, dynamic=True):
        _compact(counts, kk, out_idx, out_val, slots, indptr, indices, values)


LOOPS = _host.CosineLoops(
    row_scales=_row_scales,
    transpose=_transpose,
    transpose_index_dtype=lambda n_rows: np.uint32 if n_rows < 2**32 else np.uint64,
    row_work=_run_row_work,
    cosine_rows=_run_cosine_rows,
    compact=_run_compact,
    as_indptr=lambda indptr: indptr,
    as_indices=unsigned,
    slot_dtype=lambda dtype: dtype,  # per-slot values already in the result dtype
)

cosine_topk_prepare = _host.bind(_host.cosine_topk_prepare, LOOPS, __name__)
cosine_topk_rows = _host.bind(_host.cosine_topk_rows, LOOPS, __name__)
cosine_topk = _host.bind(_host.cosine_topk, LOOPS, __name__)
cosine_similarity_prepare = _host.bind(_host.cosine_similarity_prepare, LOOPS, __name__)
cosine_similarity_rows = _host.bind(_host.cosine_similarity_rows, LOOPS, __name__)
cosine_similarity = _host.bind(_host.cosine_similarity, LOOPS, __name__)
