"""Numba CPU embedding retrieval: fused dot-product top-k over BLAS tiles.

The design of the
Cython kernel (``_cython/_embedding.pyx``): each thread takes a block of _QUERY_BLOCK queries,
``np.dot`` (BLAS gemm, one thread) writes the block x _ITEM_TILE scores into a thread-private
buffer that stays in cache, and each query row is scanned at once against its running
threshold (a 2k candidate buffer cut back by quickselect, the sorted exclusion row merged by a
cursor). Tiles depend on the shapes only, never on the thread count: bit-identical for any.
"""

from __future__ import annotations

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

from ._common import heap_sort, sift_down, threads
from .topk import _select_pairs

_QUERY_BLOCK = 512
_ITEM_TILE = 512
_SCAN_BLOCK = 64


@numba.njit(inline="always")
def _any_above(row, t0, t1, th):
    hit = False
    for t in range(t0, t1):
        hit |= row[t] > th
    return hit


@numba.njit(parallel=True, cache=True)
def _dot_topk_impl(
    queries,
    items,
    k,
    bias,
    has_bias,
    cand,
    has_cand,
    ex_indptr,
    ex_indices,
    has_mask,
    query_block,
    item_tile,
    out_idx,
    out_val,
):
    n_queries, n_factors = queries.shape
    n_pos = cand.shape[0] if has_cand else items.shape[0]
    cap = 2 * k
    for b in numba.prange((n_queries + query_block - 1) // query_block):
        q0 = b * query_block
        nq = min(query_block, n_queries - q0)
        tile = np.empty(nq * item_tile, queries.dtype)
        gathered = np.empty((item_tile if has_cand else 1, n_factors), queries.dtype)
        bv = np.empty((nq, cap), queries.dtype)
        bi = np.empty((nq, cap), np.int64)
        thr = np.full(nq, -np.inf, queries.dtype)
        cnt = np.zeros(nq, np.int64)
        cur = np.zeros(nq, np.int64)
        if has_mask:
            for r in range(nq):
                cur[r] = ex_indptr[q0 + r]
        for p0 in range(0, n_pos, item_tile):
            ni = min(item_tile, n_pos - p0)
            S = tile[: nq * ni].reshape((nq, ni))
            if has_cand:  # the tile's candidate rows, contiguous for BLAS
                for t in range(ni):
                    gathered[t] = items[cand[p0 + t]]
                np.dot(queries[q0 : q0 + nq], gathered[:ni].T, S)
            else:
                np.dot(queries[q0 : q0 + nq], items[p0 : p0 + ni].T, S)
            for r in range(nq):
                row = S[r]
                if has_bias:
                    for t in range(ni):
                        row[t] += bias[cand[p0 + t] if has_cand else p0 + t]
                th = thr[r]
                c = cnt[r]
                e = cur[r]
                e_end = ex_indptr[q0 + r + 1] if has_mask else 0
                for t0 in range(0, ni, _SCAN_BLOCK):
                    t1 = min(ni, t0 + _SCAN_BLOCK)
                    if not _any_above(row, t0, t1, th):
                        continue
                    for t in range(t0, t1):
                        v = row[t]
                        if not v > th:  # also rejects NaN and -inf; th may have risen
                            continue
                        j = cand[p0 + t] if has_cand else p0 + t
                        while e < e_end and ex_indices[e] < j:
                            e += 1
                        if e < e_end and ex_indices[e] == j:
                            continue
                        bv[r, c] = v
                        bi[r, c] = j
                        c += 1
                        if c == cap:
                            _select_pairs(bv[r], bi[r], c, k)
                            c = k
                            th = bv[r, k - 1]
                thr[r] = th
                cnt[r] = c
                cur[r] = e
        for r in range(nq):
            hv = bv[r]
            hi = bi[r]
            c = cnt[r]
            if c > k:
                _select_pairs(hv, hi, c, k)
                c = k
            for t in range(c // 2 - 1, -1, -1):  # heapify, then sort best first
                sift_down(hv, hi, c, t)
            heap_sort(hv, hi, c)
            for t in range(k):
                out_val[q0 + r, t] = hv[t] if t < c else -np.inf
                out_idx[q0 + r, t] = hi[t] if t < c else -1


_BLAS = ThreadpoolController()


def dot_topk(queries, items, k, item_bias, candidates, ex_indptr, ex_indices, n_threads):
    """For each query row the k best items by queries[q] . items[j] (+ item_bias[j]).

    Contract of ``reference.dot_topk``; scores are BLAS products in the dtype, the bias added
    in the dtype (as the Cython backend). Memory O(threads * _QUERY_BLOCK * (_ITEM_TILE + 2k))
    (+ _ITEM_TILE * n_factors per thread with candidates) beyond the (n_queries, k) output.
    """
    dtype = queries.dtype
    n_queries = queries.shape[0]
    out_idx = np.empty((n_queries, k), dtype=np.int64)
    out_val = np.empty((n_queries, k), dtype=dtype)
    has_mask = ex_indptr is not None
    if has_mask:
        itype = np.int64 if ex_indptr.dtype == np.int64 else np.int32
        ex_ptr = np.ascontiguousarray(ex_indptr, dtype=itype)
        ex_ind = np.ascontiguousarray(ex_indices, dtype=itype)
    else:
        ex_ptr = ex_ind = np.zeros(1, dtype=np.int32)
    has_cand = candidates is not None
    cand = candidates if has_cand else np.zeros(1, dtype=np.int64)
    has_bias = item_bias is not None
    bias = item_bias if has_bias else np.zeros(1, dtype=dtype)
    if n_queries:
        # BLAS runs inside our threads; query blocks handed out one at a time (dynamic).
        with _BLAS.limit(limits=1, user_api="blas"), threads(n_threads, dynamic=True):
            _dot_topk_impl(
                queries,
                items,
                k,
                bias,
                has_bias,
                cand,
                has_cand,
                ex_ptr,
                ex_ind,
                has_mask,
                _QUERY_BLOCK,
                _ITEM_TILE,
                out_idx,
                out_val,
            )
    return out_idx, out_val
