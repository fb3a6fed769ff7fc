"""CUDA ranking kernels: topk (dense rows; a warp or a block per row) and recommend (rows of a
sparse product)."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from . import _device
from ._device import (
    _FULL_MASK,
    _ITEMS,
    _SCRATCH_BYTES,
    _SIM,
    _THREADS,
    _WARP,
    _accumulate_row,
    _any_device,
    _before,
    _bitonic_pad,
    _bitonic_step,
    _dev,
    _empty_index,
    _factory,
    _grid,
    _host,
    _in_sorted,
    _jit,
    _next_pow2,
    _row_work,
    _scratch_grid,
    _sel_compact,
    _sel_offer,
    _sel_reset,
    _sel_write,
    _selection_buffers,
    _selection_plan,
    _sm_count,
    _zeros,
)

# Warp-per-row topk: elements each lane loads per step before it looks at any of them (loads in
# flight per lane: what keeps HBM busy), whether the next step's loads are issued before the
# current step is filtered (software pipelining: twice the loads in flight), and the row count
# from which a warp per row fills the GPU (below it, a block per row; None: 8 rows per SM,
# computed at the first call).
_WARP_ITEMS = 2 if _SIM else 8
_WARP_PIPELINE = True
_WARP_MAX_REGISTERS = None  # ptxas's choice
_WARP_TOPK_MIN_ROWS = 2 if _SIM else None
_u = numba.uint64


@_factory
def _topk_kernel(P, shared, vtype):
    @cuda.jit
    def kernel(scores, k, ex_indptr, ex_indices, gbuf_val, gbuf_idx, out_idx, out_val):
        vals = cuda.local.array(_ITEMS, vtype)
        meta = cuda.shared.array(3, numba.int64)
        thr_v = cuda.shared.array(1, vtype)
        thr_i = cuda.shared.array(1, numba.int32)
        if shared:
            buf_val = cuda.shared.array(P, vtype)
            buf_idx = cuda.shared.array(P, numba.int32)
        else:
            buf_val = gbuf_val[cuda.blockIdx.x]
            buf_idx = gbuf_idx[cuda.blockIdx.x]
        tid = cuda.threadIdx.x
        nthreads = cuda.blockDim.x
        tile = nthreads * _ITEMS
        n_rows, n_cols = scores.shape
        for row in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
            _sel_reset(meta, thr_v, thr_i)
            cuda.syncthreads()
            lo = ex_indptr[row]
            hi = ex_indptr[row + 1]
            for c0 in range(0, n_cols, tile):
                # Barrier + uniform decision: compact when another tile might not fit.
                if cuda.syncthreads_or(int(meta[1] > P - tile)):
                    _sel_compact(k, buf_val, buf_idx, meta, thr_v, thr_i)
                full = meta[0] >= k
                tv = thr_v[0]
                ti = thr_i[0]
                # The tile's loads first (_ITEMS in flight per thread, each coalesced), then the
                # filter (a load-then-branch loop may keep one load in flight: 0.32 TB/s on H200).
                for i in range(_ITEMS):
                    c = c0 + i * nthreads + tid
                    vals[i] = scores[row, c] if c < n_cols else -math.inf
                for i in range(_ITEMS):
                    c = c0 + i * nthreads + tid
                    v = vals[i]
                    if v == v and v > -math.inf:  # also skips the padding past the row's end
                        if not full or _before(v, c, tv, ti):
                            if not _in_sorted(ex_indices, lo, hi, c):  # only for survivors
                                _sel_offer(v, c, full, tv, ti, buf_val, buf_idx, meta)
            _sel_compact(k, buf_val, buf_idx, meta, thr_v, thr_i)
            _sel_write(row, k, buf_val, buf_idx, meta, out_idx, out_val)
            cuda.syncthreads()

    return kernel


@cuda.jit(device=True)
def _warp_sort(buf_val, buf_idx, count, lane):
    """Sort buf[0:count] into the ranking order by one warp (bitonic, padded to a power of
    two with sentinels that rank last); returns the padded size. Every lane must call it."""
    size = _bitonic_pad(buf_val, buf_idx, count, lane, _WARP)
    block = 2
    while block <= size:
        stride = block // 2
        while stride > 0:
            cuda.syncwarp(_FULL_MASK)
            _bitonic_step(buf_val, buf_idx, size, block, stride, lane, _WARP)
            stride //= 2
        block *= 2
    cuda.syncwarp(_FULL_MASK)
    return size


@_factory
def _warp_topk_kernel(B, warps_per_block, items, pipeline, max_registers, vtype):
    """Warp per row; B = candidate-buffer entries per warp (shared memory), a power of two;
    ``items`` loads per lane per step; ``pipeline``: the next step's loads are issued before the
    current step is filtered; ``max_registers``: ptxas's cap (None: its choice)."""
    step = _WARP * items

    @cuda.jit(device=True)
    def load(scores, row, c0, n_cols, lane, vals):
        """vals[i] = scores[row, c0 + 32 i + lane] (-inf past the row's end). Unsigned indices:
        Numba wraps negative signed indices around, a compare and select per load."""
        if c0 + step <= n_cols:
            for i in range(items):
                vals[i] = scores[_u(row), _u(c0 + i * _WARP + lane)]
        else:
            for i in range(items):
                c = c0 + i * _WARP + lane
                vals[i] = scores[_u(row), _u(c)] if c < n_cols else -math.inf

    @_jit(max_registers)
    def kernel(scores, k, ex_indptr, ex_indices, out_idx, out_val):
        sbuf_val = cuda.shared.array((warps_per_block, B), vtype)
        sbuf_idx = cuda.shared.array((warps_per_block, B), numba.int32)
        vals = cuda.local.array(items, vtype)
        nxt = cuda.local.array(items, vtype)
        lane = cuda.threadIdx.x % _WARP
        buf_val = sbuf_val[cuda.threadIdx.x // _WARP]
        buf_idx = sbuf_idx[cuda.threadIdx.x // _WARP]
        below = (1 << lane) - 1  # the lanes before this one, as a ballot mask
        n_rows, n_cols = scores.shape
        # Every loop below is warp-uniform (bounds from the row and from ballots), so every lane
        # reaches every ballot and syncwarp.
        for row in range(cuda.grid(1) // _WARP, n_rows, cuda.gridsize(1) // _WARP):
            lo = ex_indptr[row]
            hi = ex_indptr[row + 1]
            count = 0  # entries in the buffer; after a compaction the best ones, sorted, first
            # The k-th best so far (-inf until k are known). Columns arrive in increasing order,
            # so every buffered column is smaller than every later one: a later element ranks
            # before the k-th best exactly when its score is larger, and "v > tv" is the whole
            # filter (NaN, and -inf before k are known, fail it too).
            tv = vtype(-math.inf)
            if pipeline:
                load(scores, row, 0, n_cols, lane, nxt)
            for c0 in range(0, n_cols, step):
                if pipeline:
                    for i in range(items):
                        vals[i] = nxt[i]
                    if c0 + step < n_cols:  # in flight while this step is filtered
                        load(scores, row, c0 + step, n_cols, lane, nxt)
                else:
                    load(scores, row, c0, n_cols, lane, vals)
                hit = False
                for i in range(items):
                    hit |= vals[i] > tv
                if cuda.ballot_sync(_FULL_MASK, hit) == 0:  # the common case once k are known
                    continue
                if count > B - step:  # the step might not fit: keep the best k
                    _warp_sort(buf_val, buf_idx, count, lane)
                    count = min(count, k)
                    if count >= k:
                        tv = buf_val[k - 1]
                for i in range(items):
                    c = c0 + i * _WARP + lane
                    v = vals[i]
                    ok = v > tv
                    if ok and hi > lo:  # the mask is searched for survivors only
                        ok = not _in_sorted(ex_indices, lo, hi, c)
                    ballot = cuda.ballot_sync(_FULL_MASK, ok)
                    if ok:
                        pos = count + cuda.popc(ballot & below)
                        buf_val[pos] = v
                        buf_idx[pos] = c
                    count += cuda.popc(ballot)
            _warp_sort(buf_val, buf_idx, count, lane)
            kept = min(count, k)
            for t in range(lane, k, _WARP):
                if t < kept:
                    out_idx[row, t] = buf_idx[t]
                    out_val[row, t] = buf_val[t]
                else:
                    out_idx[row, t] = -1
                    out_val[row, t] = -math.inf
            cuda.syncwarp(_FULL_MASK)

    return kernel


def _warp_topk_plan(n_rows: int, k_eff: int, dtype):
    """(B, warps per block) for the warp-per-row topk, or None when a block per row is better:
    too few rows to give every SM several warps, or a buffer too large for shared memory."""
    min_rows = _WARP_TOPK_MIN_ROWS if _WARP_TOPK_MIN_ROWS is not None else 8 * _sm_count()
    B = _next_pow2(k_eff + _WARP * _WARP_ITEMS)
    per_warp = B * (np.dtype(dtype).itemsize + 4)
    if n_rows < min_rows or per_warp > _device._SHARED_BYTES:
        return None
    # At most 4 warps a block: the kernel needs ~95 registers a thread (ptxas, sm_90:
    # benchmarks/cuda_registers.py), so an SM holds 2 blocks of 8 warps (16 warps) but 5
    # blocks of 4 (20 warps).
    return B, max(1, min(4, _THREADS // _WARP, _device._SHARED_BYTES // per_warp))


def _index_result(d_idx, d_val, keep):
    if keep:
        return d_idx, d_val
    return d_idx.copy_to_host().astype(np.int64), d_val.copy_to_host()


def topk(scores, k, exclude_indptr, exclude_indices, n_threads):
    """Row-wise top-k of a dense (n_rows, n_cols) float array (contract of the reference).

    Enough rows (8 per SM): a warp per row. Each step every lane issues ``_WARP_ITEMS``
    independent loads (a warp-wide contiguous segment each; with ``_WARP_PIPELINE`` the next
    step's loads are in flight while this one is filtered), then compares them with the warp's
    current k-th best: one ballot says whether any lane holds a candidate, which after the
    first steps is rare, so most steps cost a compare per element. Survivors are appended, by
    ballot and popcount, to the warp's
    candidate buffer in shared memory (B = next power of two >= k + one step), which a warp
    bitonic sort compacts to the best k, raising the threshold, whenever the next step might
    not fit. After the first few steps almost nothing survives, so the row is read once at
    memory speed. Fewer rows, or a k too large for a warp's shared buffer: a block per row
    (the same scheme with block-wide tiles, shared or global buffer). The exclusion mask is
    only consulted (binary search) for elements that beat the threshold. Ties: the order
    (score descending, index ascending) is total, so the result does not depend on arrival
    order. Memory: O(n_rows * k) output plus O(k + step) shared per resident warp or block.
    """
    keep = _any_device(scores, exclude_indptr, exclude_indices)
    dtype = np.dtype(scores.dtype)
    n_rows, n_cols = int(scores.shape[0]), int(scores.shape[1])
    d_scores = _dev(scores)
    if exclude_indptr is None:
        ex_indptr, ex_indices = _empty_index(n_rows)
    else:
        ex_indptr, ex_indices = _dev(exclude_indptr), _dev(exclude_indices)
        if ex_indices.shape[0] == 0:
            ex_indices = cuda.to_device(np.zeros(1, dtype=ex_indices.dtype))
    out_idx = cuda.device_array((n_rows, k), dtype=np.int64)
    out_val = cuda.device_array((n_rows, k), dtype=dtype)
    plan = _warp_topk_plan(n_rows, max(1, min(k, n_cols)), dtype)
    if plan is not None:
        B, warps_per_block = plan
        grid = _grid(n_rows, warps_per_block, cap_per_sm=64 // warps_per_block)
        kernel = _warp_topk_kernel(
            B, warps_per_block, _WARP_ITEMS, _WARP_PIPELINE, _WARP_MAX_REGISTERS, dtype
        )
        kernel[grid, warps_per_block * _WARP](d_scores, k, ex_indptr, ex_indices, out_idx, out_val)
        return _index_result(out_idx, out_val, keep)
    P, shared = _selection_plan(max(1, min(k, n_cols)), dtype)
    G = _grid(n_rows, 1, cap_per_sm=16)
    if not shared:  # per-block global buffers: bound their total size
        G = max(1, min(G, _SCRATCH_BYTES // (P * (dtype.itemsize + 4))))
    gbuf_val, gbuf_idx = _selection_buffers(P, shared, G, dtype)
    if n_rows:
        _topk_kernel(P, shared, dtype)[G, _THREADS](
            d_scores, k, ex_indptr, ex_indices, gbuf_val, gbuf_idx, out_idx, out_val
        )
    return _index_result(out_idx, out_val, keep)


@_factory
def _recommend_kernel(P, shared, vtype):
    @cuda.jit
    def kernel(
        a_indptr,
        a_indices,
        a_data,
        b_indptr,
        b_indices,
        b_data,
        rows,
        n,
        seen_indptr,
        seen_indices,
        ex_indptr,
        ex_indices,
        acc2,
        mark2,
        touched2,
        gbuf_val,
        gbuf_idx,
        out_idx,
        out_val,
        order,
        ticket,
    ):
        meta = cuda.shared.array(3, numba.int64)
        next_row = cuda.shared.array(1, numba.int64)
        thr_v = cuda.shared.array(1, vtype)
        thr_i = cuda.shared.array(1, numba.int32)
        if shared:
            buf_val = cuda.shared.array(P, vtype)
            buf_idx = cuda.shared.array(P, numba.int32)
        else:
            buf_val = gbuf_val[cuda.blockIdx.x]
            buf_idx = gbuf_idx[cuda.blockIdx.x]
        acc = acc2[cuda.blockIdx.x]
        mark = mark2[cuda.blockIdx.x]
        touched = touched2[cuda.blockIdx.x]
        tid = cuda.threadIdx.x
        nthreads = cuda.blockDim.x
        tile = nthreads * _ITEMS
        while True:  # dynamic schedule, heaviest rows first (as in cosine_topk)
            if tid == 0:
                next_row[0] = cuda.atomic.add(ticket, 0, 1)
                meta[2] = 0
            _sel_reset(meta, thr_v, thr_i)
            cuda.syncthreads()
            ticket_no = next_row[0]
            if ticket_no >= rows.shape[0]:  # block-uniform
                break
            q = order[ticket_no]
            r = rows[q]
            stamp = q + 1
            _accumulate_row(
                r,
                stamp,
                a_indptr,
                a_indices,
                a_data,
                b_indptr,
                b_indices,
                b_data,
                acc,
                mark,
                acc,
                touched,
                meta,
                False,
            )
            # Masks: a masked slot that this row touched can never be a candidate.
            for p in range(seen_indptr[r] + tid, seen_indptr[r + 1], nthreads):
                if mark[seen_indices[p]] == stamp:
                    acc[seen_indices[p]] = -math.inf
            for p in range(ex_indptr[r] + tid, ex_indptr[r + 1], nthreads):
                if mark[ex_indices[p]] == stamp:
                    acc[ex_indices[p]] = -math.inf
            cuda.syncthreads()
            n_touched = meta[2]
            for c0 in range(0, n_touched, tile):
                if cuda.syncthreads_or(int(meta[1] > P - tile)):
                    _sel_compact(n, buf_val, buf_idx, meta, thr_v, thr_i)
                full = meta[0] >= n
                tv = thr_v[0]
                ti = thr_i[0]
                for t in range(c0 + tid, min(c0 + tile, n_touched), nthreads):
                    j = touched[t]
                    _sel_offer(acc[j], j, full, tv, ti, buf_val, buf_idx, meta)
            _sel_compact(n, buf_val, buf_idx, meta, thr_v, thr_i)
            _sel_write(q, n, buf_val, buf_idx, meta, out_idx, out_val)
            cuda.syncthreads()

    return kernel


@cuda.jit
def _row_lengths(indptr, lengths):
    for r in range(cuda.grid(1), lengths.shape[0], cuda.gridsize(1)):
        lengths[r] = indptr[r + 1] - indptr[r]


def recommend(
    a_indptr,
    a_indices,
    a_data,
    b_indptr,
    b_indices,
    b_data,
    n_items,
    rows,
    n,
    seen_indptr,
    seen_indices,
    ex_indptr,
    ex_indices,
    n_threads,
):
    """Top-n items for each row r in ``rows`` of the sparse product A @ B (reference contract).

    One block per requested row: scatter-accumulate (no atomics, deterministic), mask, select.
    Memory: O(len(rows) * n) output plus O(blocks * n_items) accumulators; never rows x items.
    """
    keep = _any_device(
        a_indptr,
        a_indices,
        a_data,
        b_indptr,
        b_indices,
        b_data,
        rows,
        seen_indptr,
        seen_indices,
        ex_indptr,
        ex_indices,
    )
    dtype = np.result_type(a_data.dtype, b_data.dtype)
    n_rows = int(a_indptr.shape[0]) - 1
    n_items = int(n_items)
    n_out = int(rows.shape[0])
    masks = []
    for m_indptr, m_indices in ((seen_indptr, seen_indices), (ex_indptr, ex_indices)):
        if m_indptr is None:
            masks.extend(_empty_index(n_rows))
        else:
            d_ind = _dev(m_indices)
            if d_ind.shape[0] == 0:
                d_ind = cuda.to_device(np.zeros(1, dtype=d_ind.dtype))
            masks.extend((_dev(m_indptr), d_ind))
    P, shared = _selection_plan(max(1, min(n, n_items)), dtype)
    G = _scratch_grid(
        n_out, n_items * (dtype.itemsize + 8) + (0 if shared else P * (dtype.itemsize + 4))
    )
    width = max(n_items, 1)
    acc = cuda.device_array((G, width), dtype=dtype)
    mark = _zeros((G, width), np.int32)
    touched = cuda.device_array((G, width), dtype=np.int32)
    gbuf_val, gbuf_idx = _selection_buffers(P, shared, G, dtype)
    out_idx = cuda.device_array((n_out, n), dtype=np.int64)
    out_val = cuda.device_array((n_out, n), dtype=dtype)
    if n_out:
        b_dev = _dev(b_indices)
        if b_dev.shape[0] == 0:
            b_dev = cuda.to_device(np.zeros(1, dtype=b_dev.dtype))
        d_a_indptr, d_a_indices, d_b_indptr = _dev(a_indptr), _dev(a_indices), _dev(b_indptr)
        # Work of a row: the B entries it scatters (sum of B's row lengths over its entries).
        b_lengths = cuda.device_array(int(b_indptr.shape[0]) - 1, dtype=np.int64)
        if b_lengths.shape[0]:  # on the device: a device B is never copied to the host
            _row_lengths[_grid(b_lengths.shape[0], _THREADS), _THREADS](d_b_indptr, b_lengths)
        work = _zeros(n_rows, np.int64)
        if d_a_indices.shape[0]:
            _row_work[_grid(n_rows, _THREADS // _WARP), _THREADS](
                d_a_indptr, d_a_indices, b_lengths, work
            )
        order = np.argsort(-work.copy_to_host()[_host(rows)], kind="stable").astype(np.int64)
        _recommend_kernel(P, shared, dtype)[G, _THREADS](
            d_a_indptr,
            d_a_indices,
            _dev(a_data, dtype),
            d_b_indptr,
            b_dev,
            _dev(b_data, dtype),
            _dev(rows),
            n,
            *masks,
            acc,
            mark,
            touched,
            gbuf_val,
            gbuf_idx,
            out_idx,
            out_val,
            cuda.to_device(order),
            _zeros(1, np.int64),
        )
    return _index_result(out_idx, out_val, keep)
