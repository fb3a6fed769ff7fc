"""CUDA scoring kernels: sigmoid_dense, sigmoid_csr, logistic_loss_grad_dense,
logistic_loss_grad_csr, logistic_hessp_dense, logistic_hessp_csr."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from ._device import (
    _FULL_MASK,
    _SIM,
    _THREADS,
    _WARP,
    _any_device,
    _dev,
    _factory,
    _grid,
    _is_device,
    _is_f_order,
    _sm_count,
    _warp_sum,
    _zeros,
)


@cuda.jit(device=True)
def _sigmoid(z):
    """1 / (1 + exp(-z)), exp only of non-positive numbers (no overflow)."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@cuda.jit(device=True)
def _log1pexp(z):
    """log(1 + exp(z)) with scikit-learn's cut-offs (same as the reference)."""
    if z <= -37.0:
        return math.exp(z)
    if z <= -2.0:
        return math.log1p(math.exp(z))
    if z <= 18.0:
        return math.log(1.0 + math.exp(z))
    if z <= 33.3:
        return z + math.exp(-z)
    return z


@cuda.jit(device=True)
def _group_sum(v, lanes):
    """Sum over aligned groups of ``lanes`` lanes (a power of two <= 32), result in every lane
    of the group; every lane of the warp must call it."""
    offset = lanes // 2
    while offset > 0:
        v += cuda.shfl_xor_sync(_FULL_MASK, v, offset)
        offset //= 2
    return v


# Dense C-order rows: a group of ``lanes`` lanes (the whole warp from 32 columns on) carries
# _DENSE_ROWS consecutive rows at once. Each load instruction has the group read ``lanes``
# consecutive elements of one row (a whole warp: one 128-byte line), and each lane issues one
# load per row of the batch before the first multiply-add, so _DENSE_ROWS loads are in flight
# per lane. (Groups of 4 lanes each reading 16 consecutive columns of 8 different rows per
# instruction reached 0.81 TB/s on an H200: every instruction touched 8 lines.)
_DENSE_ROWS = 4  # of 4, 8 and 16 rows, 4 was fastest on an H200 (benchmarks/README.md)
_DENSE_THREADS = _THREADS if _SIM else 128


# Many C-order rows: a block stages a tile of _TILE_ROWS rows x _TILE_COLS columns in shared
# memory with coalesced loads (a warp reads 32 consecutive elements of one row), then each
# thread adds up one row of the tile. No shuffles: the row-batch kernels below spend most of
# their issue slots on the per-row tree of shuffles when rows are short (Nsight Compute on
# an H200, 64 columns: SM 66% busy, DRAM 13%).
_TILE_ROWS = _DENSE_THREADS
_TILE_COLS = 32
_TILE_PITCH = _TILE_COLS + 1  # +1: threads reading a column hit distinct banks
_ROW_STEP = _TILE_ROWS // _TILE_COLS  # tile rows between one thread's loads
_u = numba.uint64


@_factory
def _dense_tile_kernels(vtype):
    """(sigmoid kernel, row-terms kernel) for C-order X of dtype ``vtype``, launched with
    blocks of _TILE_ROWS threads."""
    per_thread = _TILE_COLS * _TILE_ROWS // _TILE_ROWS  # tile elements each thread loads

    @cuda.jit(device=True)
    def tile_dot(X, first, w, tile, vals):
        """X[first + t] @ w (float64, columns in order) for thread t of the block; rows past
        the end give 0. Every thread of the block must call it."""
        t = cuda.threadIdx.x
        n_rows, n_cols = X.shape
        acc = 0.0
        # Indices are cast to unsigned where they index: Numba wraps negative signed indices
        # around, a compare and select per access that made this loop compute-bound.
        rs = t // _TILE_COLS  # this thread's first tile row and its column in the tile
        cs = t % _TILE_COLS
        whole_rows = first + _TILE_ROWS <= n_rows
        for c0 in range(0, n_cols, _TILE_COLS):
            # Loads first (independent, per_thread in flight), then the shared stores.
            if whole_rows and c0 + _TILE_COLS <= n_cols:
                for i in range(per_thread):
                    vals[i] = X[_u(first + i * _ROW_STEP + rs), _u(c0 + cs)]
            else:
                for i in range(per_thread):
                    r = first + i * _ROW_STEP + rs
                    ok = r < n_rows and c0 + cs < n_cols
                    vals[i] = X[_u(r), _u(c0 + cs)] if ok else 0
            cuda.syncthreads()  # the previous chunk's sums are done with the tile
            for i in range(per_thread):
                tile[_u(i * _ROW_STEP + rs), _u(cs)] = vals[i]
            cuda.syncthreads()
            if c0 + _TILE_COLS <= n_cols:  # a whole chunk: a constant trip count, unrolled
                for c in range(_TILE_COLS):
                    acc += tile[_u(t), _u(c)] * w[_u(c0 + c)]
            else:
                for c in range(n_cols - c0):
                    acc += tile[_u(t), _u(c)] * w[_u(c0 + c)]
        return acc

    @cuda.jit
    def sigmoid_c(X, w, b, out):
        tile = cuda.shared.array((_TILE_ROWS, _TILE_PITCH), vtype)
        vals = cuda.local.array(per_thread, vtype)
        for first in range(cuda.blockIdx.x * _TILE_ROWS, X.shape[0], cuda.gridDim.x * _TILE_ROWS):
            z = tile_dot(X, first, w, tile, vals) + b
            row = first + cuda.threadIdx.x
            if row < X.shape[0]:
                out[row] = _sigmoid(z)

    @cuda.jit
    def terms_c(X, y, w, b, sample_weight, residual, loss, hess):
        tile = cuda.shared.array((_TILE_ROWS, _TILE_PITCH), vtype)
        vals = cuda.local.array(per_thread, vtype)
        for first in range(cuda.blockIdx.x * _TILE_ROWS, X.shape[0], cuda.gridDim.x * _TILE_ROWS):
            z = tile_dot(X, first, w, tile, vals) + b
            row = first + cuda.threadIdx.x
            if row < X.shape[0]:
                _row_terms(z, row, y, sample_weight, residual, loss, hess)

    return sigmoid_c, terms_c


def _use_tile(n_rows: int) -> bool:
    """The tile kernels once every SM gets a few tiles; fewer rows: the row-batch kernels,
    which spread a row over lanes."""
    return n_rows >= 4 * _TILE_ROWS * _sm_count()


def _dense_row_kernels(R):
    """(sigmoid kernel, row-terms kernel) for C-order X with R rows per group of lanes."""

    @cuda.jit(device=True)
    def rows_dot(X, base, w, sub, lanes, acc):
        """acc[r] = X[base + r] @ w (float64) for r < R, in every lane of the group; rows past
        the end give 0. Each lane adds its columns (sub, sub + lanes, ...) in order, then the
        group adds its lanes (a tree of shuffles). Every lane of the warp must call it."""
        n_rows, n_cols = X.shape
        x = cuda.local.array(R, numba.float64)
        for r in range(R):
            acc[r] = 0.0
        for j in range(sub, n_cols, lanes):
            wj = w[j]
            for r in range(R):
                x[r] = X[base + r, j] if base + r < n_rows else 0.0
            for r in range(R):
                acc[r] += x[r] * wj
        for r in range(R):
            acc[r] = _group_sum(acc[r], lanes)

    @cuda.jit
    def sigmoid_c(X, w, b, out, lanes):
        lane = cuda.threadIdx.x % _WARP
        sub = lane % lanes
        per_warp = (_WARP // lanes) * R
        acc = cuda.local.array(R, numba.float64)
        n_rows = X.shape[0]
        # Warp-uniform loop (rows past the end compute 0): every lane reaches every shuffle.
        for first in range(
            (cuda.grid(1) // _WARP) * per_warp, n_rows, (cuda.gridsize(1) // _WARP) * per_warp
        ):
            base = first + (lane // lanes) * R
            rows_dot(X, base, w, sub, lanes, acc)
            for r in range(R):  # lane r % lanes writes row r: consecutive lanes, coalesced
                if r % lanes == sub and base + r < n_rows:
                    out[base + r] = _sigmoid(acc[r] + b)

    @cuda.jit
    def terms_c(X, y, w, b, sample_weight, residual, loss, lanes, hess):
        lane = cuda.threadIdx.x % _WARP
        sub = lane % lanes
        per_warp = (_WARP // lanes) * R
        acc = cuda.local.array(R, numba.float64)
        n_rows = X.shape[0]
        for first in range(
            (cuda.grid(1) // _WARP) * per_warp, n_rows, (cuda.gridsize(1) // _WARP) * per_warp
        ):
            base = first + (lane // lanes) * R
            rows_dot(X, base, w, sub, lanes, acc)
            for r in range(R):
                if r % lanes == sub and base + r < n_rows:
                    _row_terms(acc[r] + b, base + r, y, sample_weight, residual, loss, hess)

    return sigmoid_c, terms_c


@cuda.jit(device=True)
def _group_csr_dot(indptr, indices, data, row, w, sub, lanes):
    acc = 0.0
    if row < indptr.shape[0] - 1:
        for p in range(indptr[row] + sub, indptr[row + 1], lanes):
            acc += data[p] * w[indices[p]]
    return _group_sum(acc, lanes)


def _lanes_per_row(per_row: float, per_lane: int) -> int:
    """Lanes given to one row: enough that each loads about ``per_lane`` elements, at most a
    warp. Short rows share a warp (no idle lanes), long rows get a whole warp."""
    need = max(1, math.ceil(per_row / per_lane))
    return min(_WARP, 1 << (need - 1).bit_length())


@cuda.jit
def _sigmoid_dense_f(X, w, b, out):
    """F order: thread per row, so a warp reads 32 consecutive rows of one column per step."""
    for row in range(cuda.grid(1), X.shape[0], cuda.gridsize(1)):
        acc = 0.0
        for j in range(X.shape[1]):
            acc += X[row, j] * w[j]
        out[row] = _sigmoid(acc + b)


@cuda.jit
def _sigmoid_csr(indptr, indices, data, w, b, out, lanes):
    lane = cuda.threadIdx.x % _WARP
    sub = lane % lanes
    rows_per_warp = _WARP // lanes
    n_rows = indptr.shape[0] - 1
    for base in range(
        (cuda.grid(1) // _WARP) * rows_per_warp, n_rows, (cuda.gridsize(1) // _WARP) * rows_per_warp
    ):
        row = base + lane // lanes
        z = _group_csr_dot(indptr, indices, data, row, w, sub, lanes) + b
        if sub == 0 and row < n_rows:
            out[row] = _sigmoid(z)


def _finish_out(d_out, out):
    """Write the device result into the caller's ``out`` (host or device) and return it."""
    if _is_device(out):
        return out
    out[:] = d_out.copy_to_host()
    return out


def _dense_launch(n_rows, n_cols, rows=_DENSE_ROWS):
    """(blocks, lanes per row) of the C-order dense kernels (blocks of _DENSE_THREADS): the
    fewest lanes, a power of two, that cover the columns, at most a warp (64 columns: the
    whole warp, 2 columns a lane, ``rows`` rows at once)."""
    lanes = 1
    while lanes < _WARP and lanes < n_cols:
        lanes *= 2
    return _grid(n_rows, (_DENSE_THREADS // lanes) * rows), lanes


def _csr_launch(n_rows, nnz):
    """(blocks, lanes per row) of the CSR kernels, from the mean row length: 4 entries a lane."""
    lanes = _lanes_per_row(nnz / max(1, n_rows), 4)
    return _grid(n_rows, _THREADS // lanes), lanes


def sigmoid_dense(X, w, b, out, n_threads):
    """out[i] = sigmoid(X[i] @ w + b) for a dense (n, d) X in C or F order; returns out.

    C order, many rows: blocks stage tiles of rows in shared memory (coalesced loads) and a
    thread adds up each row; few rows: a group of lanes (the whole warp from 32 columns on)
    carries _DENSE_ROWS rows at once, dots reduced with shuffles. Dots and sigmoid in float64,
    stored in out's dtype. One read of X.
    """
    d_X = _dev(X)
    d_w = _dev(w, np.float64)
    d_out = _dev(out) if _is_device(out) else cuda.device_array(out.shape[0], dtype=out.dtype)
    n_rows = int(X.shape[0])
    if n_rows:
        if _is_f_order(X):
            _sigmoid_dense_f[_grid(n_rows, _THREADS), _THREADS](d_X, d_w, float(b), d_out)
        elif _use_tile(n_rows):
            kern = _dense_tile_kernels(d_X.dtype)[0]
            kern[_grid(n_rows, _TILE_ROWS), _TILE_ROWS](d_X, d_w, float(b), d_out)
        else:
            grid, lanes = _dense_launch(n_rows, int(X.shape[1]))
            _sigmoid_dense_c[grid, _DENSE_THREADS](d_X, d_w, float(b), d_out, lanes)
    return _finish_out(d_out, out)


def sigmoid_csr(indptr, indices, data, w, b, out, n_threads):
    """out[i] = sigmoid(X[i] @ w + b) for a CSR X with len(w) columns; returns out.

    A group of lanes per row sized by the mean row length; float64 dots. One read of X.
    """
    d_w = _dev(w, np.float64)
    d_out = _dev(out) if _is_device(out) else cuda.device_array(out.shape[0], dtype=out.dtype)
    n_rows = int(indptr.shape[0]) - 1
    if n_rows:
        d_indices = _dev(indices)
        nnz = int(d_indices.shape[0])
        if nnz == 0:
            d_indices = cuda.to_device(np.zeros(1, dtype=d_indices.dtype))
            d_data = cuda.to_device(np.zeros(1, dtype=data.dtype))
        else:
            d_data = _dev(data)
        grid, lanes = _csr_launch(n_rows, nnz)
        _sigmoid_csr[grid, _THREADS](_dev(indptr), d_indices, d_data, d_w, float(b), d_out, lanes)
    return _finish_out(d_out, out)


@cuda.jit(device=True)
def _row_terms(z, row, y, sample_weight, residual, loss, hess):
    """A row's loss term and residual; with ``hess`` (the Hessian-vector pass: z = x.v + vb,
    sample_weight = c) only the residual c_i * z, and ``loss`` is not touched."""
    s = sample_weight[row]
    if hess:
        residual[row] = s * z
    else:
        loss[row] = s * (_log1pexp(z) - y[row] * z)
        residual[row] = s * (_sigmoid(z) - y[row])


_sigmoid_dense_c, _terms_dense_c = _dense_row_kernels(_DENSE_ROWS)


@cuda.jit
def _terms_dense_f(X, y, w, b, sample_weight, residual, loss, hess):
    for row in range(cuda.grid(1), X.shape[0], cuda.gridsize(1)):
        acc = 0.0
        for j in range(X.shape[1]):
            acc += X[row, j] * w[j]
        _row_terms(acc + b, row, y, sample_weight, residual, loss, hess)


@cuda.jit
def _terms_csr(indptr, indices, data, y, w, b, sample_weight, residual, loss, lanes, hess):
    lane = cuda.threadIdx.x % _WARP
    sub = lane % lanes
    rows_per_warp = _WARP // lanes
    n_rows = indptr.shape[0] - 1
    for base in range(
        (cuda.grid(1) // _WARP) * rows_per_warp, n_rows, (cuda.gridsize(1) // _WARP) * rows_per_warp
    ):
        row = base + lane // lanes
        z = _group_csr_dot(indptr, indices, data, row, w, sub, lanes) + b
        if sub == 0 and row < n_rows:
            _row_terms(z, row, y, sample_weight, residual, loss, hess)


@cuda.jit
def _xt_partials_c(X, residual, chunk_rows, partial):
    """partial[chunk, j] = sum over the chunk's rows of X[i, j] * residual[i] (C order).

    A warp owns (chunk, 32 columns): each step reads 32 consecutive elements of one row.
    """
    lane = cuda.threadIdx.x % _WARP
    warp = cuda.grid(1) // _WARP
    n_warps = cuda.gridsize(1) // _WARP
    n_rows, n_cols = X.shape
    col_tiles = (n_cols + _WARP - 1) // _WARP
    for task in range(warp, partial.shape[0] * col_tiles, n_warps):
        chunk = task // col_tiles
        j = (task % col_tiles) * _WARP + lane
        if j < n_cols:
            acc = 0.0
            for i in range(chunk * chunk_rows, min(n_rows, (chunk + 1) * chunk_rows)):
                acc += X[i, j] * residual[i]
            partial[chunk, j] = acc


@cuda.jit
def _xt_partials_f(X, residual, chunk_rows, partial):
    """F order: a warp owns (chunk, column), lanes read consecutive rows, shuffle-reduced."""
    lane = cuda.threadIdx.x % _WARP
    warp = cuda.grid(1) // _WARP
    n_warps = cuda.gridsize(1) // _WARP
    n_rows, n_cols = X.shape
    for task in range(warp, partial.shape[0] * n_cols, n_warps):
        chunk = task // n_cols
        j = task % n_cols
        acc = 0.0
        for i in range(chunk * chunk_rows + lane, min(n_rows, (chunk + 1) * chunk_rows), _WARP):
            acc += X[i, j] * residual[i]
        acc = _warp_sum(acc)
        if lane == 0:
            partial[chunk, j] = acc


# X.T @ residual for CSR X, deterministic with atomics: each product is split into two parts
# that are multiples of per-column powers of two (quanta) small enough that every partial sum
# of a column is exact in float64, whatever the order the atomics land in ("pre-rounding", as
# in Demmel & Nguyen's reproducible summation). Column j's quantum comes from the largest
# product magnitude M_j of that column and the row count n: 2^e_j >= 2 n M_j, u1 = 2^(e_j-52),
# u2 = 2^(e_j-103+L) with n <= 2^L. Level 1 keeps prod rounded to a multiple of u1, level 2 the
# remainder (|r| <= u1/2) rounded to u2; the error left, at most n * u2 / 2 per column, is below
# 2^-52 M_j for n up to about 2^17 and below what a float64 loop over the column would commit.


@cuda.jit
def _xt_csr_column_max(indptr, indices, data, residual, col_max):
    """col_max[j] = max |X[i, j] * residual[i]| (atomic max: the result does not depend on order;
    most products are below the current maximum and skip the atomic)."""
    lane = cuda.threadIdx.x % _WARP
    warp = cuda.grid(1) // _WARP
    n_warps = cuda.gridsize(1) // _WARP
    for row in range(warp, indptr.shape[0] - 1, n_warps):
        r = residual[row]
        if r != 0:
            for p in range(indptr[row] + lane, indptr[row + 1], _WARP):
                m = abs(data[p] * r)
                j = indices[p]
                if m > col_max[j]:
                    cuda.atomic.max(col_max, j, m)


@cuda.jit(device=True)
def _quantise(x, exponent):
    """x rounded to a multiple of 2^exponent, exactly (any fixed rounding rule will do)."""
    return math.ldexp(math.floor(math.ldexp(x, -exponent) + 0.5), exponent)


@cuda.jit
def _xt_csr_exact_sums(indptr, indices, data, residual, col_max, log2_rows, level1, level2):
    lane = cuda.threadIdx.x % _WARP
    warp = cuda.grid(1) // _WARP
    n_warps = cuda.gridsize(1) // _WARP
    for row in range(warp, indptr.shape[0] - 1, n_warps):
        r = residual[row]
        if r != 0:
            for p in range(indptr[row] + lane, indptr[row + 1], _WARP):
                j = indices[p]
                prod = data[p] * r
                if prod != 0:
                    _, e = math.frexp(col_max[j])  # 2^e > M_j
                    e += log2_rows + 1  # 2^e >= 2 n M_j
                    q1 = _quantise(prod, e - 52)
                    q2 = _quantise(prod - q1, e - 103 + log2_rows)  # prod - q1 is exact
                    cuda.atomic.add(level1, j, q1)
                    cuda.atomic.add(level2, j, q2)


@cuda.jit
def _add_levels(level1, level2, out):
    for j in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[j] = level1[j] + level2[j]


@cuda.jit
def _chunk_sums(v, chunk_rows, partial):
    """partial[chunk] = sum of v over the chunk (a warp per chunk, fixed reduction tree)."""
    lane = cuda.threadIdx.x % _WARP
    warp = cuda.grid(1) // _WARP
    n_warps = cuda.gridsize(1) // _WARP
    for chunk in range(warp, partial.shape[0], n_warps):
        acc = 0.0
        for i in range(chunk * chunk_rows + lane, min(v.shape[0], (chunk + 1) * chunk_rows), _WARP):
            acc += v[i]
        acc = _warp_sum(acc)
        if lane == 0:
            partial[chunk] = acc


@cuda.jit
def _sum_chunks(partial, out):
    """out[j] = sum over chunks of partial[chunk, j], chunks in order (deterministic)."""
    for j in range(cuda.grid(1), partial.shape[1], cuda.gridsize(1)):
        acc = 0.0
        for chunk in range(partial.shape[0]):
            acc += partial[chunk, j]
        out[j] = acc


def _chunking(n_rows: int) -> tuple[int, int]:
    """(rows per chunk, chunks): depends on n_rows only, so sums are the same on every GPU."""
    chunk_rows = max(256, -(-n_rows // 1024))
    return chunk_rows, -(-n_rows // chunk_rows)


@cuda.jit
def _finish_grad(grad, w, total_weight, l2, w_squared):
    """grad = grad / total_weight + l2 * w in place, and w_squared = w * w (for |w|^2)."""
    for j in range(cuda.grid(1), grad.shape[0], cuda.gridsize(1)):
        grad[j] = grad[j] / total_weight + l2 * w[j]
        w_squared[j] = w[j] * w[j]


def _fixed_order_sums(vectors) -> list[float]:
    """The sum of each 1-D float64 device vector (all the same length), in an order fixed by
    the length alone: chunk sums on the device, then the chunks in order on the host."""
    n = vectors[0].shape[0]
    chunk_rows, n_chunks = _chunking(n)
    sums = cuda.device_array((len(vectors), max(n_chunks, 1)), dtype=np.float64)
    grid = _grid(n_chunks, _THREADS // _WARP)
    for i, v in enumerate(vectors):
        if n:
            _chunk_sums[grid, _THREADS](v, chunk_rows, sums[i])
    if not n:
        return [0.0] * len(vectors)
    return [float(x) for x in sums.copy_to_host()[:, :n_chunks].sum(axis=1)]


def _finish_loss_grad(d_residual, d_loss, d_grad, d_w, l2, d_sample_weight, keep):
    """Means, the L2 term and the gradient's scaling, on the device: only scalars come back."""
    loss_sum, residual_sum, total_weight = _fixed_order_sums([d_loss, d_residual, d_sample_weight])
    n_features = d_grad.shape[0]
    w_squared = cuda.device_array(max(n_features, 1), dtype=np.float64)
    if n_features:
        _finish_grad[_grid(n_features, _THREADS), _THREADS](
            d_grad, d_w, total_weight, float(l2), w_squared
        )
    (w_norm2,) = _fixed_order_sums([w_squared[:n_features]])
    loss = loss_sum / total_weight + 0.5 * l2 * w_norm2
    grad_b = residual_sum / total_weight
    return loss, (d_grad if keep else d_grad.copy_to_host()), grad_b


def logistic_loss_grad_dense(X, y, w, b, l2, sample_weight, n_threads):
    """Weighted mean log-loss of sigmoid(X @ w + b) plus 0.5*l2*|w|^2, and its gradient.

    Two passes over X (per-row terms, then X.T @ residual by row chunks summed in a fixed
    order): deterministic, float64 throughout. Memory O(n + chunks * d).
    """
    keep = _any_device(X, y, w, sample_weight)
    d_w, d_sw = _dev(w, np.float64), _dev(sample_weight, np.float64)
    d_residual, d_loss, d_grad = _dense_pass(X, _dev(y, np.float64), d_w, b, d_sw, False)
    return _finish_loss_grad(d_residual, d_loss, d_grad, d_w, l2, d_sw, keep)


def _dense_pass(X, d_y, d_w, b, d_sw, hess):
    """(residual, loss, X.T @ residual) on the device: the row terms, then the chunked X.T
    product. With ``hess``: d_w, b, d_sw are v, vb, c and there is no loss (None)."""
    n_rows, n_features = int(X.shape[0]), int(X.shape[1])
    d_X = _dev(X)
    d_residual = cuda.device_array(n_rows, dtype=np.float64)
    d_loss = cuda.device_array(1 if hess else n_rows, dtype=np.float64)
    f_order = _is_f_order(X)
    if f_order:
        _terms_dense_f[_grid(n_rows, _THREADS), _THREADS](
            d_X, d_y, d_w, float(b), d_sw, d_residual, d_loss, hess
        )
    elif _use_tile(n_rows):
        kern = _dense_tile_kernels(d_X.dtype)[1]
        kern[_grid(n_rows, _TILE_ROWS), _TILE_ROWS](
            d_X, d_y, d_w, float(b), d_sw, d_residual, d_loss, hess
        )
    else:
        grid, lanes = _dense_launch(n_rows, n_features)
        _terms_dense_c[grid, _DENSE_THREADS](
            d_X, d_y, d_w, float(b), d_sw, d_residual, d_loss, lanes, hess
        )
    chunk_rows, n_chunks = _chunking(n_rows)
    partial = cuda.device_array((n_chunks, max(n_features, 1)), dtype=np.float64)
    d_grad = cuda.device_array(max(n_features, 1), dtype=np.float64)
    if n_features:
        kern = _xt_partials_f if f_order else _xt_partials_c
        tasks = n_chunks * (n_features if f_order else -(-n_features // _WARP))
        kern[_grid(tasks, _THREADS // _WARP), _THREADS](d_X, d_residual, chunk_rows, partial)
        _sum_chunks[_grid(n_features, _THREADS), _THREADS](partial, d_grad)
    return d_residual, (None if hess else d_loss), d_grad[:n_features]


def logistic_loss_grad_csr(indptr, indices, data, y, w, b, l2, sample_weight, n_threads):
    """:func:`logistic_loss_grad_dense` for a CSR X with len(w) columns.

    The gradient X.T @ residual is scattered with float64 atomic adds of pre-rounded parts
    (see ``_xt_csr_exact_sums``): every partial sum is exact, so the result is the same bits on
    every run although the atomics land in any order. Three passes over X (terms, column
    maxima, sums); memory O(n + 3 * len(w)).
    """
    keep = _any_device(indptr, indices, data, y, w, sample_weight)
    d_w, d_sw = _dev(w, np.float64), _dev(sample_weight, np.float64)
    d_residual, d_loss, d_grad = _csr_pass(
        indptr, indices, data, _dev(y, np.float64), d_w, b, d_sw, False
    )
    return _finish_loss_grad(d_residual, d_loss, d_grad, d_w, l2, d_sw, keep)


def _csr_pass(indptr, indices, data, d_y, d_w, b, d_sw, hess):
    """:func:`_dense_pass` for a CSR X: the row terms, then the exact-sum scatter of X.T."""
    n_rows, n_features = int(indptr.shape[0]) - 1, int(d_w.shape[0])
    d_indptr, d_indices, d_data = _dev(indptr), _dev(indices), _dev(data)
    if d_indices.shape[0] == 0:
        d_indices = cuda.to_device(np.zeros(1, dtype=d_indices.dtype))
        d_data = cuda.to_device(np.zeros(1, dtype=data.dtype))
    d_residual = cuda.device_array(n_rows, dtype=np.float64)
    d_loss = cuda.device_array(1 if hess else n_rows, dtype=np.float64)
    grid, lanes = _csr_launch(n_rows, int(indices.shape[0]))
    _terms_csr[grid, _THREADS](
        d_indptr, d_indices, d_data, d_y, d_w, float(b), d_sw, d_residual, d_loss, lanes, hess
    )
    grid = _grid(n_rows, _THREADS // _WARP)
    width = max(n_features, 1)
    col_max, level1, level2 = (_zeros(width, np.float64) for _ in range(3))
    log2_rows = max(1, n_rows).bit_length()  # n_rows < 2^log2_rows
    _xt_csr_column_max[grid, _THREADS](d_indptr, d_indices, d_data, d_residual, col_max)
    _xt_csr_exact_sums[grid, _THREADS](
        d_indptr, d_indices, d_data, d_residual, col_max, log2_rows, level1, level2
    )
    d_grad = cuda.device_array(width, dtype=np.float64)
    _add_levels[_grid(width, _THREADS), _THREADS](level1, level2, d_grad)
    return d_residual, (None if hess else d_loss), d_grad[:n_features]


def _finish_hessp(d_residual, d_hv, d_v, l2, keep):
    """hv = X.T r + l2 v in place (c carries 1 / sum(s): a total weight of exactly 1), and
    sum(r) in the fixed order of the loss/grad sums."""
    n_features = d_hv.shape[0]
    if n_features:
        scratch = cuda.device_array(n_features, dtype=np.float64)
        _finish_grad[_grid(n_features, _THREADS), _THREADS](d_hv, d_v, 1.0, float(l2), scratch)
    (hv_b,) = _fixed_order_sums([d_residual])
    return (d_hv if keep else d_hv.copy_to_host()), hv_b


def logistic_hessp_dense(X, c, v, vb, l2, n_threads):
    """The logistic objective's Hessian times (v, vb) for a dense X: (X.T (c * (X v + vb)) +
    l2 v, sum(c * (X v + vb))). The loss/grad kernel's passes (row terms with residual
    c_i * (x.v + vb), the chunked X.T product in a fixed order): deterministic, float64.
    Memory O(n + chunks * d)."""
    keep = _any_device(X, c, v)
    d_c, d_v = _dev(c, np.float64), _dev(v, np.float64)
    d_residual, _, d_hv = _dense_pass(X, d_c, d_v, vb, d_c, True)
    return _finish_hessp(d_residual, d_hv, d_v, l2, keep)


def logistic_hessp_csr(indptr, indices, data, c, v, vb, l2, n_threads):
    """:func:`logistic_hessp_dense` for a CSR X with len(v) columns (the loss/grad kernel's
    exact-sum scatter: same bits whatever order the atomics land in)."""
    keep = _any_device(indptr, indices, data, c, v)
    d_c, d_v = _dev(c, np.float64), _dev(v, np.float64)
    d_residual, _, d_hv = _csr_pass(indptr, indices, data, d_c, d_v, vb, d_c, True)
    return _finish_hessp(d_residual, d_hv, d_v, l2, keep)
