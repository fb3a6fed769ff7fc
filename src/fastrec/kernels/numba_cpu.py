"""The Numba CPU backend: parallel kernels with the reference's names and signatures.

Shared pieces (heap, sigmoid) are written once here and used by every kernel. Kernels
parallelise with ``prange`` over rows or row blocks, each writing only its own output slots,
so results do not depend on the thread count.
"""
from __future__ import annotations

import numba
import numpy as np  # noqa: F401  (used by the kernels below)


def is_available():
    return True, ""


# ---- shared helpers -------------------------------------------------------------------------


# ---- similarity: cosine_topk, cosine_similarity ---------------------------------------------


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
def _topk_row(row, k, ex, hv, hi):
    """Best k of one row into hv/hi (sorted, padded), reading each score once from memory.

    Columns are scanned in increasing order, so an entry equal to the root never beats it: a
    candidate must be strictly above ``thr`` (the root's score once full, -inf before, which
    also rejects NaN and -inf). Blocks with nothing above ``thr`` are skipped after one
    branch-free comparison; the row's sorted excluded columns are merged in only for entries
    that pass the threshold.
    """
    n_cols = row.shape[0]
    n_ex = ex.shape[0]
    size = 0
    p = 0
    thr = -np.inf
    j0 = 0
    while j0 < n_cols:
        j1 = j0 + _BLOCK
        if j1 > n_cols:
            j1 = n_cols
        else:
            # A fixed-length loop over a slice, OR-ing integers: the form LLVM vectorises
            # (a bool accumulator over row[j0:j1] indexing stayed scalar, ~8x slower).
            block = row[j0:j1]
            hit = np.uint32(0)
            for t in range(_BLOCK):
                hit |= np.uint32(block[t] > thr)
            if hit == 0:
                j0 = j1
                continue
        for j in range(j0, j1):
            v = row[j]
            if v > thr:
                while p < n_ex and ex[p] < j:
                    p += 1
                if p < n_ex and ex[p] == j:
                    continue
                size = heap_offer(hv, hi, size, k, v, j)
                if size == k:
                    thr = hv[0]
        j0 = j1
    heap_sort(hv, hi, size)
    for j in range(size, k):
        hv[j] = -np.inf
        hi[j] = -1


@numba.njit(parallel=True, cache=True)
def _topk_impl(scores, k, ex_indptr, ex_indices, has_mask, out_idx, out_val):
    empty = ex_indices[:0]
    for r in numba.prange(scores.shape[0]):
        ex = ex_indices[ex_indptr[r] : ex_indptr[r + 1]] if has_mask else empty
        _topk_row(scores[r], k, ex, out_val[r], out_idx[r])


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
    non-C-contiguous array is copied once). Time O(n_rows * n_cols) reads plus O(log k) per
    heap insertion; memory O(n_rows * k) (the heaps are the output rows).
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
    _with_threads(n_threads, _topk_impl, scores, k, ex_indptr, ex_indices, has_mask,
                  out_idx, out_val)
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
