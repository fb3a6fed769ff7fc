"""CUDA embedding retrieval (numba.cuda): dot-product top-k fused with the warp selection.

Also the device helper ``device_normalised_rows`` that the public layer uses for
``metric="cosine"``.

Design: a block of W warps ranks W queries at a time, one query per warp. The items stream
through in tiles of T = 32 * _ITEMS_PER_LANE, each loaded once per block into shared memory in
chunks of _FACTOR_CHUNK factors (coalesced: a chunk of an item row is contiguous) and used by
all W queries, so items are read from memory n_queries / W times instead of n_queries. Every lane
holds the scores of _ITEMS_PER_LANE items of the tile in registers (factors summed in order,
in the dtype), then the warp filters them against its running threshold and appends survivors
by ballot to its buffer, compacted by a warp bitonic sort: the selection of ``topk``'s warp
kernel. The product is never written to memory. Ties: the order (score descending, item
ascending) is total, so the result is deterministic.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from ._device import (
    _FULL_MASK,
    _INT32_MAX,
    _SHARED_BYTES,
    _SIM,
    _WARP,
    _any_device,
    _before,
    _dev,
    _empty_index,
    _factory,
    _grid,
    _in_sorted,
    _next_pow2,
)
from .topk import _index_result, _warp_sort

_ITEMS_PER_LANE = 2 if _SIM else 4
_TILE_ITEMS = _WARP * _ITEMS_PER_LANE
_FACTOR_CHUNK = 8 if _SIM else 32
_MAX_WARPS = 2 if _SIM else 8


@_factory
def _dot_topk_kernel(B, W, shared, vtype):
    """B: candidate-buffer entries per warp (a power of two >= k + tile); W: warps per block."""
    T = _TILE_ITEMS
    DC = _FACTOR_CHUNK
    IPL = _ITEMS_PER_LANE
    DCP = DC + 1  # a constant for shared.array (an expression in the kernel is not)

    @cuda.jit
    def kernel(
        queries,
        items,
        k,
        bias,
        has_bias,
        cand,
        has_cand,
        n_pos,
        ex_indptr,
        ex_indices,
        gbuf_val,
        gbuf_idx,
        out_idx,
        out_val,
    ):
        tile = cuda.shared.array((T, DCP), vtype)  # +1: lanes read distinct banks
        q_sh = cuda.shared.array((W, DC), vtype)
        if shared:
            sbuf_val = cuda.shared.array((W, B), vtype)
            sbuf_idx = cuda.shared.array((W, B), numba.int32)
        acc = cuda.local.array(IPL, vtype)
        tid = cuda.threadIdx.x
        warp = tid // _WARP
        lane = tid % _WARP
        if shared:
            buf_val = sbuf_val[warp]
            buf_idx = sbuf_idx[warp]
        else:
            buf_val = gbuf_val[cuda.blockIdx.x * W + warp]
            buf_idx = gbuf_idx[cuda.blockIdx.x * W + warp]
        below = (1 << lane) - 1
        n_queries = queries.shape[0]
        n_factors = queries.shape[1]
        n_groups = (n_queries + W - 1) // W
        # Every loop bound below is block-uniform (tile and factor loops, with their barriers)
        # or warp-uniform (the selection, with its ballots), so no barrier is skipped.
        for g in range(cuda.blockIdx.x, n_groups, cuda.gridDim.x):
            q = g * W + warp
            valid = q < n_queries
            lo = ex_indptr[q] if valid else 0
            hi = ex_indptr[q + 1] if valid else 0
            count = 0
            full = False
            tv = -math.inf
            ti = _INT32_MAX
            for p0 in range(0, n_pos, T):
                for i in range(IPL):
                    acc[i] = 0
                for f0 in range(0, n_factors, DC):
                    cuda.syncthreads()
                    for e in range(tid, T * DC, W * _WARP):
                        ii = e // DC
                        ff = e - ii * DC
                        p = p0 + ii
                        f = f0 + ff
                        x = 0
                        if p < n_pos and f < n_factors:
                            x = items[cand[p] if has_cand else p, f]
                        tile[ii, ff] = x
                    for e in range(tid, W * DC, W * _WARP):
                        w = e // DC
                        ff = e - w * DC
                        qq = g * W + w
                        x = 0
                        if qq < n_queries and f0 + ff < n_factors:
                            x = queries[qq, f0 + ff]
                        q_sh[w, ff] = x
                    cuda.syncthreads()
                    for ff in range(DC):
                        qv = q_sh[warp, ff]
                        for i in range(IPL):
                            acc[i] += qv * tile[i * _WARP + lane, ff]
                if valid:
                    if count > B - T:  # the tile might not fit: keep the best k
                        _warp_sort(buf_val, buf_idx, count, lane)
                        count = min(count, k)
                        full = count >= k
                        if full:
                            tv = buf_val[k - 1]
                            ti = buf_idx[k - 1]
                    for i in range(IPL):
                        p = p0 + i * _WARP + lane
                        ok = p < n_pos
                        j = 0
                        v = acc[i]
                        if ok:
                            j = cand[p] if has_cand else p
                            if has_bias:
                                v += bias[j]
                            ok = v == v and v > -math.inf and (not full or _before(v, j, tv, ti))
                        if ok and hi > lo:
                            ok = not _in_sorted(ex_indices, lo, hi, j)
                        ballot = cuda.ballot_sync(_FULL_MASK, ok)
                        if ok:
                            pos = count + cuda.popc(ballot & below)
                            buf_val[pos] = v
                            buf_idx[pos] = j
                        count += cuda.popc(ballot)
            if valid:
                _warp_sort(buf_val, buf_idx, count, lane)
                kept = min(count, k)
                for t in range(lane, k, _WARP):
                    if t < kept:
                        out_idx[q, t] = buf_idx[t]
                        out_val[q, t] = buf_val[t]
                    else:
                        out_idx[q, t] = -1
                        out_val[q, t] = -math.inf
                cuda.syncwarp(_FULL_MASK)

    return kernel


def _plan(k_eff: int, dtype):
    """(B, warps per block, whether the buffers fit shared memory)."""
    B = _next_pow2(k_eff + _TILE_ITEMS)
    size = np.dtype(dtype).itemsize
    fixed = _TILE_ITEMS * (_FACTOR_CHUNK + 1) * size
    for W in (8, 4, 2, 1):
        if W <= _MAX_WARPS and fixed + W * (_FACTOR_CHUNK * size + B * (size + 4)) <= _SHARED_BYTES:
            return B, W, True
    return B, min(4, _MAX_WARPS), False


def dot_topk(queries, items, k, item_bias, candidates, ex_indptr, ex_indices, n_threads):
    """For each query row the k best items by queries[q] . items[j] (+ item_bias[j]).

    Contract of ``reference.dot_topk``; ``queries``/``items`` may be device arrays of one dtype
    (any strides; read in place), the other arrays host or device. Scores: factors summed in
    order in the dtype (fused multiply-adds where the compiler makes them), so they differ from
    the reference's float64 product by rounding only. Results stay on the device when an input
    was there. Time O(n_queries * n_items * n_factors / W) shared-memory reads; memory: the
    O(n_queries * k) output, shared memory per block, and per-warp global buffers of
    O(k + 128) only when k is too large for shared memory. n_items must be < 2**31.
    """
    keep = _any_device(queries, items, item_bias, candidates, ex_indptr, ex_indices)
    dtype = np.dtype(queries.dtype)
    d_q, d_x = _dev(queries), _dev(items)
    n_queries = int(d_q.shape[0])
    n_pos = int(d_x.shape[0]) if candidates is None else int(candidates.shape[0])
    has_bias = item_bias is not None
    d_bias = _dev(item_bias, dtype) if has_bias else cuda.device_array(1, dtype=dtype)
    has_cand = candidates is not None
    d_cand = _dev(candidates, np.int64) if has_cand and n_pos else cuda.device_array(1, np.int64)
    if ex_indptr is None:
        d_ptr, d_ind = _empty_index(n_queries)
    else:
        d_ptr, d_ind = _dev(ex_indptr), _dev(ex_indices)
        if d_ind.shape[0] == 0:
            d_ind = cuda.to_device(np.zeros(1, dtype=d_ind.dtype))
    out_idx = cuda.device_array((n_queries, k), dtype=np.int64)
    out_val = cuda.device_array((n_queries, k), dtype=dtype)
    if n_queries:
        B, W, shared = _plan(max(1, min(k, n_pos)), dtype)
        G = _grid(-(-n_queries // W), 1, cap_per_sm=8)
        if shared:
            gbuf_val = cuda.device_array((1, 1), dtype=dtype)
            gbuf_idx = cuda.device_array((1, 1), dtype=np.int32)
        else:
            gbuf_val = cuda.device_array((G * W, B), dtype=dtype)
            gbuf_idx = cuda.device_array((G * W, B), dtype=np.int32)
        _dot_topk_kernel(B, W, shared, dtype)[G, W * _WARP](
            d_q,
            d_x,
            k,
            d_bias,
            has_bias,
            d_cand,
            has_cand,
            n_pos,
            d_ptr,
            d_ind,
            gbuf_val,
            gbuf_idx,
            out_idx,
            out_val,
        )
    return _index_result(out_idx, out_val, keep)


@cuda.jit
def _normalise_rows_kernel(X, out):
    """out[r] = X[r] / |X[r]| (norm summed in float64 in order), zero rows stay zero."""
    for r in range(cuda.grid(1), X.shape[0], cuda.gridsize(1)):
        s = 0.0
        for f in range(X.shape[1]):
            s += float(X[r, f]) * float(X[r, f])
        inv = 1.0 / math.sqrt(s) if s > 0 else 0.0
        for f in range(X.shape[1]):
            out[r, f] = X[r, f] * inv


def device_normalised_rows(X):
    """A new C-contiguous device array: the rows of device array ``X`` at unit L2 norm (norms in
    float64, rounding as the host's ``embedding._normalised_rows``), zero rows left zero."""
    d = _dev(X)
    out = cuda.device_array(d.shape, dtype=d.dtype)
    if d.shape[0]:
        _normalise_rows_kernel[_grid(d.shape[0], 128), 128](d, out)
    return out
