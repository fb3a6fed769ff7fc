"""CUDA similarity kernels: cosine_topk, cosine_similarity."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from .. import _rows
from ._device import (
    _FULL_MASK,
    _ITEMS,
    _THREADS,
    _WARP,
    _accumulate_row,
    _any_device,
    _dev,
    _factory,
    _grid,
    _row_work,
    _scratch_grid,
    _sel_compact,
    _sel_offer,
    _sel_reset,
    _sel_write,
    _selection_buffers,
    _selection_plan,
    _warp_sum,
    _zeros,
)


@cuda.jit(device=True)
def _warp_max(v):
    """Maximum over the 32 lanes of a warp (every lane must call it)."""
    offset = 16
    while offset > 0:
        v = max(v, cuda.shfl_down_sync(_FULL_MASK, v, offset))
        offset //= 2
    return cuda.shfl_sync(_FULL_MASK, v, 0)


@cuda.jit
def _scale_rows(indptr, data, scaled, inv):
    """scaled = each row times the power of two 2^-e that brings its largest |value| into
    [0.5, 1) (exact), inv[r] = 1 / |scaled row r| in float64 (0 for an empty row).

    The products accumulate the scaled values and are multiplied by inv[i] * inv[j] at the end:
    binary data then sums exact counts (of 1/4), the one rounding to float32 comes last, and
    no square under- or overflows whatever the magnitude (cosine is scale-invariant); for rows
    of ordinary magnitude every step is the unscaled one times an exact power of two.
    """
    lane = cuda.threadIdx.x % _WARP
    warp = cuda.grid(1) // _WARP
    n_warps = cuda.gridsize(1) // _WARP
    n_rows = indptr.shape[0] - 1
    for row in range(warp, n_rows, n_warps):  # warp-uniform loop
        top = 0.0
        for p in range(indptr[row] + lane, indptr[row + 1], _WARP):
            top = max(top, abs(data[p] * 1.0))
        top = _warp_max(top)
        shift = -math.frexp(top)[1]  # frexp(0) gives exponent 0
        acc = 0.0
        for p in range(indptr[row] + lane, indptr[row + 1], _WARP):
            x = math.ldexp(data[p] * 1.0, shift)
            scaled[p] = x
            acc += x * x
        acc = _warp_sum(acc)
        if lane == 0:
            inv[row] = 1.0 / math.sqrt(acc) if acc > 0 else 0.0


def _scaled_with_norms(d_indptr, d_data, n_rows):
    """(scaled values in d_data's dtype, float64 inverse norms of the scaled rows) on the
    device; see _scale_rows. The input is not modified."""
    d_inv = _zeros(max(n_rows, 1), np.float64)
    d_scaled = cuda.device_array(max(d_data.shape[0], 1), dtype=d_data.dtype)
    if d_data.shape[0]:
        _scale_rows[_grid(n_rows, _THREADS // _WARP), _THREADS](d_indptr, d_data, d_scaled, d_inv)
    return d_scaled, d_inv


@cuda.jit
def _column_counts(indices, counts):
    for p in range(cuda.grid(1), indices.shape[0], cuda.gridsize(1)):
        cuda.atomic.add(counts, indices[p], 1)


@cuda.jit
def _scatter_transpose(indptr, indices, data, cursor, t_indices, t_data):
    """Place every entry in its column's segment (order inside a segment is arbitrary)."""
    lane = cuda.threadIdx.x % _WARP
    warp = cuda.grid(1) // _WARP
    n_warps = cuda.gridsize(1) // _WARP
    n_rows = indptr.shape[0] - 1
    for row in range(warp, n_rows, n_warps):
        for p in range(indptr[row] + lane, indptr[row + 1], _WARP):
            pos = cuda.atomic.add(cursor, indices[p], 1)
            t_indices[pos] = row
            t_data[pos] = data[p]


@cuda.jit(device=True)
def _cosine(dot, inv_i, inv_j):
    """dot / (|x_i| |x_j|) in float64, clamped to [-1, 1]: float32 dot products of parallel
    vectors can land a rounding past +-1, which would break min_similarity=-1 ("keep all")."""
    return min(1.0, max(-1.0, dot * (inv_i * inv_j)))


def _transpose_with_norms(d_indptr, d_indices, d_data, n_rows, n_cols):
    """Scaled values and their inverse row norms (_scaled_with_norms) and the CSR of the
    scaled matrix's transpose, all on the device.

    The order of rows inside a transposed column is not fixed; the products below never depend
    on it (each accumulator slot receives one term per outer step, in the outer order).
    """
    nnz = d_indices.shape[0]
    d_data, d_inv = _scaled_with_norms(d_indptr, d_data, n_rows)
    grid = _grid(n_rows, _THREADS // _WARP)
    counts = _zeros(n_cols, np.int64)
    if nnz:
        _column_counts[_grid(nnz, _THREADS), _THREADS](d_indices, counts)
    t_indptr = np.zeros(n_cols + 1, dtype=np.int64)
    np.cumsum(counts.copy_to_host(), out=t_indptr[1:])
    d_t_indptr = cuda.to_device(t_indptr)
    cursor = cuda.to_device(t_indptr[:-1].copy())
    t_indices = cuda.device_array(max(nnz, 1), dtype=np.int32)
    t_data = cuda.device_array(max(nnz, 1), dtype=d_data.dtype)
    if nnz:
        _scatter_transpose[grid, _THREADS](d_indptr, d_indices, d_data, cursor, t_indices, t_data)
    return d_data, d_inv, d_t_indptr, t_indices, t_data, counts


@_factory
def _cosine_topk_kernel(P, shared, vtype):
    @cuda.jit
    def kernel(
        indptr,
        indices,
        values,
        t_indptr,
        t_indices,
        t_data,
        inv,
        k,
        shrink,
        min_similarity,
        min_support,
        include_self,
        with_count,
        acc2,
        mark2,
        count2,
        touched2,
        gbuf_val,
        gbuf_idx,
        out_idx,
        out_val,
        out_count,
        order,
        ticket,
    ):
        meta = cuda.shared.array(3, numba.int64)
        next_row = cuda.shared.array(1, numba.int64)
        thr_v = cuda.shared.array(1, vtype)
        thr_i = cuda.shared.array(1, numba.int32)
        rounded = cuda.local.array(1, vtype)
        if shared:
            buf_val = cuda.shared.array(P, vtype)
            buf_idx = cuda.shared.array(P, numba.int32)
        else:
            buf_val = gbuf_val[cuda.blockIdx.x]
            buf_idx = gbuf_idx[cuda.blockIdx.x]
        acc = acc2[cuda.blockIdx.x]
        mark = mark2[cuda.blockIdx.x]
        count = count2[cuda.blockIdx.x]
        touched = touched2[cuda.blockIdx.x]
        tid = cuda.threadIdx.x
        nthreads = cuda.blockDim.x
        while True:
            # Dynamic schedule: each block takes the next row (heaviest rows first, see
            # ``order``), so a few very popular rows do not leave one block working alone.
            if tid == 0:
                next_row[0] = cuda.atomic.add(ticket, 0, 1)
                meta[2] = 0
            _sel_reset(meta, thr_v, thr_i)
            cuda.syncthreads()
            ticket_no = next_row[0]
            if ticket_no >= order.shape[0]:  # block-uniform
                break
            row = order[ticket_no]
            _accumulate_row(
                row,
                row + 1,
                indptr,
                indices,
                values,
                t_indptr,
                t_indices,
                t_data,
                acc,
                mark,
                count,
                touched,
                meta,
                with_count,
            )
            n_touched = meta[2]
            for c0 in range(0, n_touched, nthreads * _ITEMS):
                if cuda.syncthreads_or(int(meta[1] > P - nthreads * _ITEMS)):
                    _sel_compact(k, buf_val, buf_idx, meta, thr_v, thr_i)
                full = meta[0] >= k
                tv = thr_v[0]
                ti = thr_i[0]
                for t in range(c0 + tid, min(c0 + nthreads * _ITEMS, n_touched), nthreads):
                    j = touched[t]
                    sim = _cosine(acc[j], inv[row], inv[j])
                    ok = include_self or j != row
                    if with_count:
                        c = count[j]
                        ok = ok and c >= min_support
                        if shrink > 0:
                            sim = sim * (c / (c + shrink))
                    if ok and sim != 0 and sim >= min_similarity:
                        # Rank the value as returned (ties after rounding: smaller j).
                        rounded[0] = sim
                        _sel_offer(rounded[0], j, full, tv, ti, buf_val, buf_idx, meta)
            _sel_compact(k, buf_val, buf_idx, meta, thr_v, thr_i)
            _sel_write(row, k, buf_val, buf_idx, meta, out_idx, out_val)
            if tid == 0:
                out_count[row] = meta[0]
            cuda.syncthreads()

    return kernel


def _heaviest_first(d_indptr, d_indices, col_counts, n_rows, rows=None):
    """Row order for the dynamic schedule: most work first (ties by row), as int64; only the
    rows in ``rows`` when given."""
    work = _zeros(n_rows, np.int64)
    if d_indices.shape[0]:
        _row_work[_grid(n_rows, _THREADS // _WARP), _THREADS](d_indptr, d_indices, col_counts, work)
    return _rows.schedule(work.copy_to_host(), rows).astype(np.int64)


@cuda.jit
def _compact_rows(row_counts, indptr, src_idx, src_val, dst_idx, dst_val):
    """Gather each row's first row_counts[r] entries of (n, k) arrays into CSR arrays."""
    lane = cuda.threadIdx.x % _WARP
    warp = cuda.grid(1) // _WARP
    n_warps = cuda.gridsize(1) // _WARP
    for row in range(warp, row_counts.shape[0], n_warps):
        base = indptr[row]
        for t in range(lane, row_counts[row], _WARP):
            dst_idx[base + t] = src_idx[row, t]
            dst_val[base + t] = src_val[row, t]


def _csr_result(d_counts, d_idx, d_val, dtype, keep_on_device):
    """(indptr, indices, values) from per-row counts and (n, k) padded results."""
    counts = d_counts.copy_to_host()
    indptr = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    nnz = int(indptr[-1])
    if not keep_on_device:  # gather on the host: one copy, no extra launch
        idx, val = d_idx.copy_to_host()[: len(counts)], d_val.copy_to_host()[: len(counts)]
        real = np.arange(idx.shape[1])[None, :] < counts[:, None]
        return indptr, idx[real].astype(np.int64), val[real].astype(dtype)
    d_indptr = cuda.to_device(indptr)
    out_idx = cuda.device_array(max(nnz, 1), dtype=np.int64)
    out_val = cuda.device_array(max(nnz, 1), dtype=dtype)
    if nnz:
        _compact_rows[_grid(counts.shape[0], _THREADS // _WARP), _THREADS](
            d_counts, d_indptr, d_idx, d_val, out_idx, out_val
        )
    return d_indptr, out_idx[:nnz], out_val[:nnz]


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

    Same contract as the reference (sorted by similarity descending, ties by smaller column;
    rows without candidates empty). Accumulates the row-scaled values in X's dtype (binary data:
    exact counts) and scales by the float64 inverse norms once at the end, then rounds to X's dtype.
    Work O(sum over columns of (column count)^2); memory O(nnz + n*k + blocks*n) on the device
    (transpose, padded (n, k) results, one accumulator row per resident block); never n x n.
    ``rows``: None, or the row ids to compute (output row r is row rows[r]; host result).
    """
    keep = _any_device(indptr, indices, data) and rows is None
    dtype = np.dtype(data.dtype)
    n_rows = int(indptr.shape[0]) - 1
    d_indptr, d_indices, d_data = _dev(indptr), _dev(indices), _dev(data)
    d_data, d_inv, t_indptr, t_indices, t_data, col_counts = _transpose_with_norms(
        d_indptr, d_indices, d_data, n_rows, int(n_cols)
    )
    k_eff = max(1, min(k, n_rows))
    P, shared = _selection_plan(k_eff, dtype)
    with_count = bool(shrink > 0 or min_support > 1)
    per_block = n_rows * (dtype.itemsize + 4 + 4 + (4 if with_count else 0))
    per_block += 0 if shared else P * (dtype.itemsize + 4)
    G = _scratch_grid(n_rows, per_block)
    acc = cuda.device_array((G, max(n_rows, 1)), dtype=dtype)
    mark = _zeros((G, max(n_rows, 1)), np.int32)
    count = cuda.device_array((G, max(n_rows, 1) if with_count else 1), dtype=np.int32)
    touched = cuda.device_array((G, max(n_rows, 1)), dtype=np.int32)
    gbuf_val, gbuf_idx = _selection_buffers(P, shared, G, dtype)
    out_idx = cuda.device_array((max(n_rows, 1), k), dtype=np.int32)
    out_val = cuda.device_array((max(n_rows, 1), k), dtype=dtype)
    out_count = cuda.to_device(np.zeros(n_rows, dtype=np.int64))
    if n_rows:
        order = cuda.to_device(_heaviest_first(d_indptr, d_indices, col_counts, n_rows, rows))
        _cosine_topk_kernel(P, shared, dtype)[G, _THREADS](
            d_indptr,
            d_indices,
            d_data,
            t_indptr,
            t_indices,
            t_data,
            d_inv,
            k,
            float(shrink),
            float(min_similarity),
            int(min_support),
            bool(include_self),
            with_count,
            acc,
            mark,
            count,
            touched,
            gbuf_val,
            gbuf_idx,
            out_idx,
            out_val,
            out_count,
            order,
            _zeros(1, np.int64),
        )
    result = _csr_result(out_count, out_idx, out_val, dtype, keep)
    return result if rows is None else _rows.take_rows(*result, np.asarray(rows))


@cuda.jit
def _cosine_similarity_kernel(
    indptr,
    indices,
    values,
    t_indptr,
    t_indices,
    t_data,
    inv_x,
    inv_y,
    min_similarity,
    write,
    out_indptr,
    acc2,
    mark2,
    touched2,
    out_count,
    out_indices,
    out_values,
):
    """Pass 1 (write=False): count each row's entries; pass 2: write them, columns ascending.

    Pass 2 walks the row's stamp array in column order and places entries with a block-wide
    prefix sum, so the output needs no sort.
    """
    meta = cuda.shared.array(3, numba.int64)
    scan = cuda.shared.array(_THREADS, numba.int64)
    acc = acc2[cuda.blockIdx.x]
    mark = mark2[cuda.blockIdx.x]
    touched = touched2[cuda.blockIdx.x]
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    n_rows = indptr.shape[0] - 1
    n_other = acc.shape[0]
    for row in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
        stamp = row + 1
        if tid == 0:
            meta[0] = 0
            meta[2] = 0
        cuda.syncthreads()
        _accumulate_row(
            row,
            stamp,
            indptr,
            indices,
            values,
            t_indptr,
            t_indices,
            t_data,
            acc,
            mark,
            acc,
            touched,
            meta,
            False,
        )
        if not write:
            n_touched = meta[2]
            for t in range(tid, n_touched, nthreads):
                j = touched[t]
                sim = _cosine(acc[j], inv_x[row], inv_y[j])
                if sim != 0 and sim >= min_similarity:
                    cuda.atomic.add(meta, 0, 1)
            cuda.syncthreads()
            if tid == 0:
                out_count[row] = meta[0]
        else:
            base = out_indptr[row]
            for j0 in range(0, n_other, nthreads):
                j = j0 + tid
                flag = 0
                sim = 0.0
                if j < n_other and mark[j] == stamp:
                    sim = _cosine(acc[j], inv_x[row], inv_y[j])
                    if sim != 0 and sim >= min_similarity:
                        flag = 1
                scan[tid] = flag
                offset = 1
                while offset < nthreads:  # inclusive Hillis-Steele scan
                    cuda.syncthreads()
                    v = scan[tid - offset] if tid >= offset else 0
                    cuda.syncthreads()
                    scan[tid] += v
                    offset *= 2
                cuda.syncthreads()
                if flag:
                    pos = base + scan[tid] - 1
                    out_indices[pos] = j
                    out_values[pos] = sim
                base += scan[nthreads - 1]
                cuda.syncthreads()
        cuda.syncthreads()


def cosine_similarity(
    indptr, indices, data, y_indptr, y_indices, y_data, n_cols, min_similarity, n_threads
):
    """The sparse cosine similarity of the rows of X (n x n_cols) with those of Y (p x n_cols).

    Same contract as the reference (columns ascending; float32 only if both are float32).
    Two passes over the same exact product (count, then write into the exact-size result), so
    memory is O(nnz(X) + nnz(Y) + nnz(result) + blocks * p); work O(n * p) extra for the
    ordered write-out.
    """
    keep = _any_device(indptr, indices, data, y_indptr, y_indices, y_data)
    dtype = np.result_type(data.dtype, y_data.dtype)
    n_rows, n_other = int(indptr.shape[0]) - 1, int(y_indptr.shape[0]) - 1
    d_indptr, d_indices, d_data = _dev(indptr), _dev(indices), _dev(data, dtype)
    d_data, d_inv_x = _scaled_with_norms(d_indptr, d_data, n_rows)
    _, d_inv_y, t_indptr, t_indices, t_data, _ = _transpose_with_norms(
        _dev(y_indptr), _dev(y_indices), _dev(y_data, dtype), n_other, int(n_cols)
    )
    G = _scratch_grid(n_rows, n_other * (dtype.itemsize + 8))
    width = max(n_other, 1)
    acc = cuda.device_array((G, width), dtype=dtype)
    mark = _zeros((G, width), np.int32)
    touched = cuda.device_array((G, width), dtype=np.int32)
    counts = cuda.to_device(np.zeros(n_rows, dtype=np.int64))
    dummy_i, dummy_v = cuda.device_array(1, np.int64), cuda.device_array(1, dtype)
    launch = _cosine_similarity_kernel[G, _THREADS] if n_rows and n_other else None
    if launch is not None:
        launch(
            d_indptr,
            d_indices,
            d_data,
            t_indptr,
            t_indices,
            t_data,
            d_inv_x,
            d_inv_y,
            float(min_similarity),
            False,
            counts,
            acc,
            mark,
            touched,
            counts,
            dummy_i,
            dummy_v,
        )
    out_indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts.copy_to_host(), out=out_indptr[1:])
    nnz = int(out_indptr[-1])
    d_out_indptr = cuda.to_device(out_indptr)
    out_indices = cuda.device_array(max(nnz, 1), dtype=np.int64)
    out_values = cuda.device_array(max(nnz, 1), dtype=dtype)
    if launch is not None and nnz:
        mark = _zeros((G, width), np.int32)
        launch(
            d_indptr,
            d_indices,
            d_data,
            t_indptr,
            t_indices,
            t_data,
            d_inv_x,
            d_inv_y,
            float(min_similarity),
            True,
            d_out_indptr,
            acc,
            mark,
            touched,
            counts,
            out_indices,
            out_values,
        )
    if keep:
        return d_out_indptr, out_indices[:nnz], out_values[:nnz]
    return out_indptr, out_indices.copy_to_host()[:nnz], out_values.copy_to_host()[:nnz]
