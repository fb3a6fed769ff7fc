"""CUDA embedding retrieval (numba.cuda): dot-product top-k fused with the warp selection.

Also the device helper ``device_normalised_rows`` that the public layer uses for
``metric="cosine"``.

Design: a block ranks QB queries at a time. The items stream through in tiles of IB, and the
block computes the QB x IB score tile as a small matrix product: each thread owns a 4 x 4
register tile (4 queries x 4 items), reading per factor 4 query and 4 item values from shared
memory (the tiles are staged there in chunks of DC factors, coalesced from the row-major
arrays), 16 multiply-adds for 8 shared loads. Items are read from memory n_queries / QB times,
and each score is summed over the factors in order, in the dtype, so the result does not
depend on the tiling. The score tile goes to shared memory, where each warp filters the rows of
its own queries (QB / warps of them) against each query's running k-th best: one ballot says
whether any lane holds a candidate, and only then are survivors appended by ballot to the
query's buffer, compacted by a warp bitonic sort (the selection of ``topk``'s warp kernel).
The product is never written to memory. Ties: the order (score descending, item ascending)
is total, so the result is deterministic.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from . import _device
from ._device import (
    _FULL_MASK,
    _INT32_MAX,
    _SIM,
    _WARP,
    _any_device,
    _before,
    _dev,
    _empty_index,
    _factory,
    _grid,
    _in_sorted,
    _jit,
    _next_pow2,
)
from .topk import _index_result, _warp_sort

# Threads of a block: _TQ groups of 4 queries x _TI groups of 4 items (a warp is 32 / _TI
# query groups). The simulator runs one warp a block.
_TQ = 2 if _SIM else 8
_TI = 16
_QB = 4 * _TQ  # queries per block
_IB = 4 * _TI  # items per tile
_BLOCK = _TQ * _TI
_u = numba.uint64
_s = numba.uint32


def _chunk(itemsize: int) -> int:
    """Factors per shared-memory chunk: 64 float32 or 32 float64 (the tiles then take 25 KB of
    the 48 KB a block may declare), 8 on the simulator."""
    return 8 if _SIM else 256 // itemsize


def _tile_bytes(itemsize: int) -> int:
    """Shared memory of the kernel's tiles and per-query state (without the buffers)."""
    dc = _chunk(itemsize)
    return (dc * (_QB + 1) + dc * (_IB + 1)) * itemsize + _QB * (itemsize + 8)


@_factory
def _dot_topk_kernel(B, shared, max_registers, vtype):
    """B: candidate-buffer entries per query (a power of two >= k + 32); ``shared``: the
    buffers live in shared memory (else in the per-block rows of gbuf_*); ``max_registers``:
    ptxas's cap (None: its choice)."""
    n_warps = _BLOCK // _WARP
    per_warp = _QB // n_warps  # queries whose selection a warp runs
    DC = _chunk(vtype.bitwidth // 8)
    QP = _QB + 1  # pitches: +1 so that lanes reading a column hit distinct banks
    IP = _IB + 1
    QSIZE = DC * QP  # constants for shared.array (an expression in the kernel is not)
    XSIZE = DC * IP  # the score tile reuses it (below)
    assert XSIZE >= _QB * IP, "the score tile must fit the items' tile"

    @_jit(max_registers)
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
        # Flat tiles, [factor][query] and [factor][item]: a thread's 4 values of one factor are
        # one base address plus constant offsets (32-bit index arithmetic in the inner loop).
        # The score tile [query][item] lives in x_sh: it is written after the tile's last
        # product and read before the next tile's first load, with barriers between.
        q_sh = cuda.shared.array(QSIZE, vtype)
        x_sh = cuda.shared.array(XSIZE, vtype)
        counts = cuda.shared.array(_QB, numba.int32)
        thr_v = cuda.shared.array(_QB, vtype)
        thr_i = cuda.shared.array(_QB, numba.int32)
        # Row ql: the candidate buffer of the block's query ql (shared, or this block's rows
        # of the global buffers).
        if shared:
            buf_vals = cuda.shared.array((_QB, B), vtype)
            buf_idxs = cuda.shared.array((_QB, B), numba.int32)
        else:
            buf_vals = gbuf_val[cuda.blockIdx.x * _QB : (cuda.blockIdx.x + 1) * _QB]
            buf_idxs = gbuf_idx[cuda.blockIdx.x * _QB : (cuda.blockIdx.x + 1) * _QB]
        acc = cuda.local.array((4, 4), vtype)
        qa = cuda.local.array(4, vtype)
        xb = cuda.local.array(4, vtype)
        tid = cuda.threadIdx.x
        tq = tid // _TI
        ti = tid % _TI
        warp = tid // _WARP
        lane = tid % _WARP
        below = (1 << lane) - 1
        q_first = _s(4 * tq)
        x_first = _s(ti)
        n_queries = queries.shape[0]
        n_factors = queries.shape[1]
        n_groups = (n_queries + _QB - 1) // _QB
        # Loop bounds are block-uniform (tiles, factor chunks: barriers) or warp-uniform (the
        # selection: ballots), so no barrier or ballot is skipped by part of its group.
        one_chunk = n_factors <= DC  # then the queries' tile is loaded once per group
        for g in range(cuda.blockIdx.x, n_groups, cuda.gridDim.x):
            q0 = g * _QB
            if tid < _QB:
                counts[tid] = 0
                thr_v[tid] = -math.inf  # with thr_i: a sentinel every candidate ranks before
                thr_i[tid] = _INT32_MAX
            for p0 in range(0, n_pos, _IB):
                for a in range(4):
                    for b in range(4):
                        acc[a, b] = 0
                for f0 in range(0, n_factors, DC):
                    cuda.syncthreads()  # the previous chunk's products are done with the tiles
                    for e in range(tid, _IB * DC, _BLOCK):
                        ii = e // DC
                        ff = e - ii * DC
                        p = p0 + ii
                        f = f0 + ff
                        x = vtype(0)
                        if p < n_pos and f < n_factors:
                            j = cand[_u(p)] if has_cand else p
                            x = items[_u(j), _u(f)]
                        x_sh[_u(ff * IP + ii)] = x
                    if p0 == 0 or not one_chunk:
                        for e in range(tid, _QB * DC, _BLOCK):
                            qq = e // DC
                            ff = e - qq * DC
                            x = vtype(0)
                            if q0 + qq < n_queries and f0 + ff < n_factors:
                                x = queries[_u(q0 + qq), _u(f0 + ff)]
                            q_sh[_u(ff * QP + qq)] = x
                    cuda.syncthreads()
                    for ff in range(_s(min(DC, n_factors - f0))):
                        qo = ff * _s(QP) + q_first
                        xo = ff * _s(IP) + x_first
                        for a in range(4):
                            qa[a] = q_sh[qo + _s(a)]
                        for b in range(4):
                            xb[b] = x_sh[xo + _s(_TI * b)]
                        for a in range(4):
                            for b in range(4):
                                acc[a, b] += qa[a] * xb[b]
                cuda.syncthreads()  # every warp is done selecting from the previous tile
                for a in range(4):
                    for b in range(4):
                        x_sh[_u((4 * tq + a) * IP + ti + _TI * b)] = acc[a, b]
                cuda.syncthreads()
                for r in range(per_warp):
                    ql = warp * per_warp + r
                    q = q0 + ql
                    if q >= n_queries:  # warp-uniform
                        break
                    buf_val = buf_vals[ql]
                    buf_idx = buf_idxs[ql]
                    lo = ex_indptr[q]
                    hi = ex_indptr[q + 1]
                    count = counts[ql]
                    tv = thr_v[ql]
                    ti_ = thr_i[ql]
                    for h in range(0, _IB, _WARP):
                        p = p0 + h + lane
                        v = x_sh[_u(ql * IP + h + lane)]
                        j = 0
                        if p < n_pos:
                            j = cand[_u(p)] if has_cand else p
                            if has_bias:
                                v += bias[_u(j)]
                        # NaN fails both tests; the exact order is checked for hits only.
                        hit = p < n_pos and v >= tv
                        if cuda.ballot_sync(_FULL_MASK, hit) == 0:
                            continue
                        if count > B - _WARP:  # the next 32 might not fit: keep the best k
                            _warp_sort(buf_val, buf_idx, count, lane)
                            count = min(count, k)
                            if count >= k:
                                tv = buf_val[k - 1]
                                ti_ = buf_idx[k - 1]
                        ok = hit and v > -math.inf and _before(v, j, tv, ti_)
                        if ok and hi > lo:  # the mask is searched for survivors only
                            ok = not _in_sorted(ex_indices, lo, hi, j)
                        ballot = cuda.ballot_sync(_FULL_MASK, ok)
                        if ok:
                            pos = count + cuda.popc(ballot & below)
                            buf_val[pos] = v
                            buf_idx[pos] = j
                        count += cuda.popc(ballot)
                    cuda.syncwarp(_FULL_MASK)
                    if lane == 0:
                        counts[ql] = count
                        thr_v[ql] = tv
                        thr_i[ql] = ti_
                    cuda.syncwarp(_FULL_MASK)
            for r in range(per_warp):
                ql = warp * per_warp + r
                q = q0 + ql
                if q >= n_queries:
                    break
                buf_val = buf_vals[ql]
                buf_idx = buf_idxs[ql]
                count = counts[ql]
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
            cuda.syncthreads()  # the group's state is read before the next group resets it

    return kernel


# A block declares at most 48 KB of shared memory (static arrays); ptxas's register cap for
# the kernel (None: its choice).
_STATIC_SHARED = 48 * 1024
_MAX_REGISTERS = None


def _plan(k_eff: int, dtype):
    """(B, whether the candidate buffers go to shared memory: they fit the selection budget
    ``_device._SHARED_BYTES`` and, with the tiles, a block's 48 KB)."""
    B = _next_pow2(k_eff + _WARP)
    size = np.dtype(dtype).itemsize
    buffers = _QB * B * (size + 4)
    return B, buffers <= _device._SHARED_BYTES and _tile_bytes(size) + buffers <= _STATIC_SHARED


def dot_topk(queries, items, k, item_bias, candidates, ex_indptr, ex_indices, n_threads):
    """For each query row the k best items by queries[q] . items[j] (+ item_bias[j]).

    Contract of ``reference.dot_topk``; ``queries``/``items`` may be device arrays of one dtype
    (any strides; read in place), the other arrays host or device. Scores: factors summed in
    order in the dtype (fused multiply-adds where the compiler makes them), so they differ from
    the reference's float64 product by rounding only. Results stay on the device when an input
    was there. Time O(n_queries * n_items * n_factors) multiply-adds from registers, items read
    n_queries / QB times; memory: the O(n_queries * k) output, shared memory per block, and
    per-block global buffers of O(QB * (k + 32)) only when k is too large for shared memory.
    n_items must be < 2**31.
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
        B, shared = _plan(max(1, min(k, n_pos)), dtype)
        G = _grid(-(-n_queries // _QB), 1, cap_per_sm=8)
        rows = 1 if shared else G * _QB
        gbuf_val = cuda.device_array((rows, 1 if shared else B), dtype=dtype)
        gbuf_idx = cuda.device_array((rows, 1 if shared else B), dtype=np.int32)
        _dot_topk_kernel(B, shared, _MAX_REGISTERS, dtype)[G, _BLOCK](
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
