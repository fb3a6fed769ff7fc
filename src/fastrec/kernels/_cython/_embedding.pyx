"""Cython (OpenMP) embedding retrieval: fused dot-product top-k over BLAS tiles.

Each thread takes a block of QUERY_BLOCK queries and walks the items in tiles of ITEM_TILE: BLAS
(sgemm/dgemm from scipy, one thread each) writes the block x tile scores into a thread-private
buffer that stays in cache, and each query row of it is scanned at once against that query's
running threshold (the scan of ``_topk.pyx``: a 2k candidate buffer cut back by quickselect,
the sorted exclusion row merged by a cursor). Tiles are fixed by the shapes alone, never by
the thread count, so BLAS sees the same calls and the result is bit-identical for any count.
Signatures copy ``kernels/reference.py``; inputs are trusted.
"""
import numpy as np
from threadpoolctl import ThreadpoolController

cimport cython
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, int64_t
from scipy.linalg.cython_blas cimport dgemm, sgemm

from ._heap cimport _heap_sort, _select_pairs, _sift_down

ctypedef fused floating:
    float
    double

ctypedef fused index_t:
    int32_t
    int64_t

cdef enum:
    SCAN_BLOCK = 64  # scores tested against the threshold at once before any one is looked at

# The tile: QUERY_BLOCK queries x ITEM_TILE items of scores (1 MB of float32), written by BLAS
# and scanned while in the core's L2.
QUERY_BLOCK = 512
ITEM_TILE = 512


cdef inline void _tile_product(
    const floating* items, const floating* queries, int n_items, int n_queries, int n_factors,
    floating* out,
) noexcept nogil:
    """out[q * n_items + i] = queries[q] . items[i] (row-major inputs with n_factors columns):
    column-major out^T = items^T' @ queries^T, one BLAS call."""
    cdef char ta = b"T"
    cdef char tb = b"N"
    cdef floating one = 1.0
    cdef floating zero = 0.0
    if floating is float:
        sgemm(&ta, &tb, &n_items, &n_queries, &n_factors, &one, <float*> items, &n_factors,
              <float*> queries, &n_factors, &zero, out, &n_items)
    else:
        dgemm(&ta, &tb, &n_items, &n_queries, &n_factors, &one, <double*> items, &n_factors,
              <double*> queries, &n_factors, &zero, out, &n_items)


cdef inline bint _any_above(const floating* row, Py_ssize_t t0, Py_ssize_t t1,
                            floating th) noexcept nogil:
    """Whether some row[t0:t1] > th: a branch-free reduction the compiler vectorises."""
    cdef bint hit = 0
    cdef Py_ssize_t t
    for t in range(t0, t1):
        hit |= row[t] > th
    return hit


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
def _dot_topk_impl(
    const floating[:, ::1] queries, const floating[:, ::1] items, Py_ssize_t k,
    const floating[::1] bias, bint has_bias, const int64_t[::1] cand, bint has_cand,
    const index_t[::1] ex_indptr, const index_t[::1] ex_indices, bint has_mask,
    floating[:, ::1] tile, floating[:, ::1] gathered, floating[:, ::1] bv, int64_t[:, ::1] bi,
    floating[:, ::1] thr, int64_t[:, ::1] state, int64_t[:, ::1] out_idx,
    floating[:, ::1] out_val, Py_ssize_t QUERY_BLOCK, Py_ssize_t ITEM_TILE, int n_threads,
):
    cdef Py_ssize_t n_queries = queries.shape[0], n_factors = queries.shape[1]
    cdef Py_ssize_t n_pos = cand.shape[0] if has_cand else items.shape[0]
    cdef Py_ssize_t n_blocks = (n_queries + QUERY_BLOCK - 1) // QUERY_BLOCK
    cdef Py_ssize_t cap = 2 * k, b, q0, nq, p0, ni, r, t, t0, t1, f, cnt, cur, hi_ex, j
    cdef int tid
    cdef floating v, th
    cdef floating* row
    cdef floating* my_bv
    cdef int64_t* my_bi
    cdef const floating* src
    if n_queries == 0:
        return
    with nogil:
        for b in prange(n_blocks, schedule="dynamic", num_threads=n_threads):
            tid = threadid()
            q0 = b * QUERY_BLOCK
            nq = QUERY_BLOCK if q0 + QUERY_BLOCK <= n_queries else n_queries - q0
            for r in range(nq):  # state[tid, 2r]: buffered count, [2r + 1]: exclusion cursor
                thr[tid, r] = -INFINITY
                state[tid, 2 * r] = 0
                state[tid, 2 * r + 1] = ex_indptr[q0 + r] if has_mask else 0
            p0 = 0
            while p0 < n_pos:
                ni = ITEM_TILE if p0 + ITEM_TILE <= n_pos else n_pos - p0
                if has_cand:  # gather the tile's candidate rows, contiguous for BLAS
                    for t in range(ni):
                        for f in range(n_factors):
                            gathered[tid, t * n_factors + f] = items[cand[p0 + t], f]
                    src = &gathered[tid, 0]
                else:
                    src = &items[p0, 0]
                _tile_product(src, &queries[q0, 0], <int> ni, <int> nq, <int> n_factors,
                              &tile[tid, 0])
                for r in range(nq):
                    row = &tile[tid, r * ni]
                    if has_bias:
                        if has_cand:
                            for t in range(ni):
                                row[t] = row[t] + bias[cand[p0 + t]]
                        else:
                            for t in range(ni):
                                row[t] = row[t] + bias[p0 + t]
                    my_bv = &bv[tid, r * cap]
                    my_bi = &bi[tid, r * cap]
                    th = thr[tid, r]
                    cnt = state[tid, 2 * r]
                    cur = state[tid, 2 * r + 1]
                    hi_ex = ex_indptr[q0 + r + 1] if has_mask else 0
                    t0 = 0
                    while t0 < ni:
                        t1 = t0 + SCAN_BLOCK if t0 + SCAN_BLOCK < ni else ni
                        if not _any_above(row, t0, t1, th):
                            t0 = t1
                            continue
                        for t in range(t0, t1):
                            v = row[t]
                            if not v > th:  # also rejects NaN and -inf; th may have risen
                                continue
                            j = cand[p0 + t] if has_cand else p0 + t
                            while cur < hi_ex and ex_indices[cur] < j:
                                cur = cur + 1
                            if cur < hi_ex and ex_indices[cur] == j:
                                continue
                            my_bv[cnt] = v
                            my_bi[cnt] = j
                            cnt = cnt + 1
                            if cnt == cap:
                                _select_pairs(my_bv, my_bi, cnt, k)
                                cnt = k
                                th = my_bv[k - 1]
                        t0 = t1
                    thr[tid, r] = th
                    state[tid, 2 * r] = cnt
                    state[tid, 2 * r + 1] = cur
                p0 = p0 + ni
            for r in range(nq):
                my_bv = &bv[tid, r * cap]
                my_bi = &bi[tid, r * cap]
                cnt = state[tid, 2 * r]
                if cnt > k:
                    _select_pairs(my_bv, my_bi, cnt, k)
                    cnt = k
                for t in range(cnt // 2 - 1, -1, -1):  # heapify, then sort best first
                    _sift_down(my_bv, my_bi, cnt, t)
                _heap_sort(my_bv, my_bi, cnt)
                for t in range(k):
                    out_val[q0 + r, t] = my_bv[t] if t < cnt else -INFINITY
                    out_idx[q0 + r, t] = my_bi[t] if t < cnt else -1


_BLAS = ThreadpoolController()


def dot_topk(queries, items, k, item_bias, candidates, ex_indptr, ex_indices, n_threads):
    """For each query row the k best items by queries[q] . items[j] (+ item_bias[j]).

    Contract of ``reference.dot_topk`` (C-contiguous inputs of one dtype; ``candidates`` sorted
    distinct int64 or None; CSR exclusion pattern with sorted rows or None). Scores are BLAS
    products in the dtype (rounding differs from the reference's float64 product, see there),
    bias added in the dtype. Time O(n_queries * n_items * n_factors / BLAS speed) plus the scan;
    memory O(threads * QUERY_BLOCK * (ITEM_TILE + 2k)) (+ ITEM_TILE * n_factors per thread with
    candidates) beyond the (n_queries, k) output: about 1.1 MB per thread at k = 10, float32.
    """
    dtype = queries.dtype
    n_queries, n_factors = queries.shape
    out_idx = np.empty((n_queries, k), dtype=np.int64)
    out_val = np.empty((n_queries, k), dtype=dtype)
    n_buf = max(1, min(int(n_threads), -(-n_queries // QUERY_BLOCK)))
    has_mask = ex_indptr is not None
    itype = np.int64 if has_mask and ex_indptr.dtype == np.int64 else np.int32
    if has_mask:
        ex_ptr = np.ascontiguousarray(ex_indptr, dtype=itype)
        ex_ind = np.ascontiguousarray(ex_indices, dtype=itype)
        if ex_ind.shape[0] == 0:
            ex_ind = np.zeros(1, dtype=itype)
    else:
        ex_ptr = ex_ind = np.zeros(1, dtype=itype)
    has_cand = candidates is not None
    cand = candidates if has_cand else np.zeros(1, dtype=np.int64)
    has_bias = item_bias is not None
    bias = item_bias if has_bias else np.zeros(1, dtype=dtype)
    tile = np.empty((n_buf, QUERY_BLOCK * ITEM_TILE), dtype=dtype)
    gathered = np.empty((n_buf, ITEM_TILE * n_factors if has_cand else 1), dtype=dtype)
    bv = np.empty((n_buf, QUERY_BLOCK * 2 * k), dtype=dtype)
    bi = np.empty((n_buf, QUERY_BLOCK * 2 * k), dtype=np.int64)
    thr = np.empty((n_buf, QUERY_BLOCK), dtype=dtype)
    state = np.empty((n_buf, 2 * QUERY_BLOCK), dtype=np.int64)
    # BLAS runs inside our threads: its own pool would oversubscribe the cores.
    with _BLAS.limit(limits=1, user_api="blas"):
        _dot_topk_impl(queries, items, k, bias, has_bias, cand, has_cand, ex_ptr, ex_ind,
                       has_mask, tile, gathered, bv, bi, thr, state, out_idx, out_val,
                       QUERY_BLOCK, ITEM_TILE, n_buf)
    return out_idx, out_val
