"""The CUDA backend (numba-cuda): GPU kernels with the reference's names and signatures.

Runs on an NVIDIA GPU, or on Numba's CUDA simulator when NUMBA_ENABLE_CUDASIM=1 (how CI tests
it; the simulator lacks warp intrinsics, which ``_cudasim_warp`` supplies). Host (NumPy) arrays
are copied in and results copied out; when any array argument is already a device array
(anything with ``__cuda_array_interface__``: Numba device arrays, CuPy, PyTorch) the results stay
on the device as Numba device arrays. ``n_threads`` is accepted for a uniform signature and
ignored. Every kernel is deterministic (the CSR gradient too: its atomics add pre-rounded
parts whose sums are exact, see :func:`logistic_loss_grad_csr`).

Design, per kernel group (why these shapes: coalesced loads and no CPU loops run per thread):

* scoring (dense C order, CSR): a group of lanes per row (a whole warp for long rows; for
  short rows 32/lanes rows share a warp, so no lane idles), the group striding along its row so
  each load instruction reads whole 32-byte sectors; partial dots reduced with xor shuffles,
  in float64. F-order dense uses one thread per row (a warp reads 32 consecutive rows of a
  column: coalesced too). Loss/gradient: per-row terms, then X.T @ residual by row chunks
  summed in a fixed order (dense) or float64 atomics of pre-rounded, exactly summed parts
  (CSR).
* ``topk`` with many rows: a warp per row, loads of a step issued together, survivors of the
  warp's running threshold gathered by ballot into a shared-memory buffer that a warp bitonic
  sort compacts (see :func:`topk`).
* ranking and selection (``topk`` with few rows, and the last step of ``recommend`` /
  ``cosine_topk``): one block per row. Candidates stream through in tiles of ``_TILE``
  elements; each thread compares its candidates against the block's current k-th best (a
  threshold kept in shared memory) and appends survivors to a buffer of P >= k + tile entries
  (shared memory when it fits, otherwise a per-block slice of global memory). When the buffer
  could overflow, the block bitonic-sorts it, keeps the best k and raises the threshold; after
  the first few tiles almost nothing survives. Ties: the order is (score descending, index
  ascending) everywhere, so the result does not depend on the order candidates arrive.
* device arrays given to the public API are validated here too, by one-pass reductions
  (``device_summary``) that bring back only scalars.
* sparse products (``recommend``, ``cosine_topk``, ``cosine_similarity``): one block per output
  row with a dense accumulator of the row's width in global memory (one per resident block,
  reused: O(blocks * width)), a stamp array marking which slots this row touched, and the list
  of touched slots. The block walks the row's stored entries in order; for each, its threads
  scatter one row of the other operand (distinct slots, so no atomics and a fixed order of
  additions: deterministic). Cosine needs X's transpose, built on the device in O(nnz), and
  hands rows to blocks dynamically, heaviest first (popular items cost 100x the mean).
"""
from __future__ import annotations

import functools
import math

import numpy as np

import numba
from numba import config as _numba_config
from numba import cuda  # an ImportError here makes the dispatcher report "cuda" unavailable

from . import _rows

_SIM = bool(_numba_config.ENABLE_CUDASIM)
if _SIM:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as _FakeCUDAArray

    from ._cudasim_warp import install as _install_warp_primitives

    _install_warp_primitives()


def is_available():
    if _SIM:
        return True, ""
    try:
        if not cuda.is_available():
            return False, "no CUDA GPU or driver found"
    except Exception as exc:  # a broken driver or CUDA runtime
        return False, f"CUDA is not usable ({type(exc).__name__}: {exc})"
    return True, ""


def device_description() -> str:
    if _SIM:
        return "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1), no GPU in use"
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
    return f"GPU {name} (compute capability {dev.compute_capability})"


# ---- launch geometry ------------------------------------------------------------------------
# The simulator runs every CUDA thread as a Python thread: small blocks and few of them keep CI
# fast while still exercising several warps per block and several blocks per grid.

_WARP = 32
_FULL_MASK = 0xFFFFFFFF
_THREADS = 64 if _SIM else 256  # threads per block
_ITEMS = 1 if _SIM else 4  # elements each thread loads per selection tile
_TILE = _THREADS * _ITEMS
_SHARED_BYTES = 40 * 1024  # selection buffers above this go to global memory
# Warp-per-row topk: elements each lane loads per step before it looks at any of them (loads in
# flight per lane: what keeps HBM busy), and the row count from which a warp per row fills the
# GPU (below it, a block per row; None: 8 rows per SM, computed at the first call).
_WARP_ITEMS = 2 if _SIM else 8
_WARP_TOPK_MIN_ROWS = 2 if _SIM else None
_SCRATCH_BYTES = 1 << 30  # cap on per-block accumulators of the sparse products
_INT32_MAX = 2147483647


@functools.lru_cache(maxsize=None)
def _sm_count() -> int:
    if _SIM:
        return 1
    return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)


def _grid(units: int, per_block: int = 1, cap_per_sm: int = 32) -> int:
    """Blocks for ``units`` work items, ``per_block`` per block; kernels use grid-stride loops."""
    cap = 3 if _SIM else _sm_count() * cap_per_sm
    return max(1, min(-(-units // per_block), cap))


def _scratch_grid(units: int, bytes_per_block: int) -> int:
    """Blocks for the sparse-product kernels: enough to fill the GPU, bounded by memory."""
    by_memory = max(1, _SCRATCH_BYTES // max(1, bytes_per_block))
    return max(1, min(units, 2 if _SIM else _sm_count() * 8, by_memory))


def _next_pow2(n: int) -> int:
    return 1 << max(1, int(n - 1).bit_length())


# ---- host/device transfer -------------------------------------------------------------------


def _is_device(a) -> bool:
    if a is None or isinstance(a, np.ndarray):
        return False
    if _SIM and isinstance(a, _FakeCUDAArray):
        return True
    return hasattr(a, "__cuda_array_interface__")


def _any_device(*arrays) -> bool:
    return any(_is_device(a) for a in arrays)


def _dev(a, dtype=None):
    """A device view of ``a`` (no copy when it is already on the device), optionally cast."""
    if _is_device(a):
        d = a if (_SIM and isinstance(a, _FakeCUDAArray)) else cuda.as_cuda_array(a)
        if dtype is not None and np.dtype(d.dtype) != np.dtype(dtype):
            if d.ndim != 1:  # only 1-D vectors (weights, labels) are ever cast here
                return cuda.to_device(d.copy_to_host().astype(dtype))
            out = cuda.device_array(d.shape[0], dtype=dtype)
            if d.shape[0]:
                _cast_kernel[_grid(d.shape[0], _THREADS), _THREADS](d, out)
            return out
        return d
    arr = np.asarray(a)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        arr = np.ascontiguousarray(arr)
    return cuda.to_device(arr)


def _host(a) -> np.ndarray:
    return _dev(a).copy_to_host() if _is_device(a) else np.asarray(a)


@cuda.jit
def _fill_zero(flat):
    for i in range(cuda.grid(1), flat.shape[0], cuda.gridsize(1)):
        flat[i] = 0


def _zeros(shape, dtype):
    """A zero-filled device array, filled on the device (no host buffer, no transfer)."""
    out = cuda.device_array(shape, dtype=dtype)
    size = int(np.prod(shape))
    if size:
        _fill_zero[_grid(size, _THREADS), _THREADS](out.reshape(size))
    return out


def _empty_index(n_rows: int, dtype=np.int64):
    """An all-empty CSR mask (indptr of zeros) standing in for 'no mask', filled on the device
    (no host transfer, which would also synchronise)."""
    return _zeros(n_rows + 1, dtype), _zeros(1, dtype)


# ---- device arrays given to the public API: views, allocation, validation reductions -----------
# The public API (``fastrec._validation``) checks device inputs with these raw-array helpers, so
# nothing is copied to the host but a handful of scalars.


def is_device_array(a) -> bool:
    """Whether ``a`` lives on the GPU (``__cuda_array_interface__``, or a simulator array)."""
    return _is_device(a)


def device_view(a):
    """A Numba device array viewing device array ``a`` (zero copy; CuPy, PyTorch, Numba)."""
    return _dev(a)


def device_empty(shape, dtype):
    """An uninitialised Numba device array."""
    return cuda.device_array(shape, dtype=dtype)


def device_cast(v, dtype):
    """1-D device vector ``v`` as ``dtype``: itself when it already has it, else a cast on the
    device (no host round trip)."""
    return _dev(v, dtype)


class DeviceSummary(tuple):
    """(n_nonfinite, min, max, total, n_not_binary) of a device array; min/max/total over the
    finite values (+inf/-inf/0 when there are none), ``n_not_binary`` counts values not 0 or 1."""

    __slots__ = ()

    n_nonfinite = property(lambda s: int(s[0]))
    min = property(lambda s: float(s[1]))
    max = property(lambda s: float(s[2]))
    total = property(lambda s: float(s[3]))
    n_not_binary = property(lambda s: int(s[4]))


@cuda.jit(device=True)
def _summary_take(x, acc):
    v = x * 1.0  # float64 for any numeric dtype
    if v != v or v == math.inf or v == -math.inf:
        acc[0] += 1.0
    else:
        acc[1] = min(acc[1], v)
        acc[2] = max(acc[2], v)
        acc[3] += v
    if v != 0.0 and v != 1.0:
        acc[4] += 1.0


@cuda.jit(device=True)
def _summary_flush(acc, stats):
    """One set of atomics per thread (a few thousand in all): cheap next to the pass itself."""
    if acc[0] > 0:
        cuda.atomic.add(stats, 0, acc[0])
    cuda.atomic.min(stats, 1, acc[1])
    cuda.atomic.max(stats, 2, acc[2])
    cuda.atomic.add(stats, 3, acc[3])
    if acc[4] > 0:
        cuda.atomic.add(stats, 4, acc[4])


@cuda.jit(device=True)
def _summary_init(acc):
    acc[0] = 0.0
    acc[1] = math.inf
    acc[2] = -math.inf
    acc[3] = 0.0
    acc[4] = 0.0


@cuda.jit
def _summary_1d(v, stats):
    acc = cuda.local.array(5, numba.float64)
    _summary_init(acc)
    for i in range(cuda.grid(1), v.shape[0], cuda.gridsize(1)):
        _summary_take(v[i], acc)
    _summary_flush(acc, stats)


@cuda.jit
def _summary_2d(X, stats):
    """Flat index in the view's row-major order (callers pass X.T for F order: coalesced)."""
    acc = cuda.local.array(5, numba.float64)
    _summary_init(acc)
    n_cols = X.shape[1]
    for i in range(cuda.grid(1), X.shape[0] * n_cols, cuda.gridsize(1)):
        _summary_take(X[i // n_cols, i % n_cols], acc)
    _summary_flush(acc, stats)


def device_summary(a) -> DeviceSummary:
    """Count NaN/inf, min, max and sum (float64 atomics: the sum's last bits may vary, it is
    only compared with 0) and count non-0/1 values of a 1-D or 2-D device array, in one pass
    on the device. O(size) reads; 40 bytes come back to the host."""
    d = _dev(a)
    stats = cuda.to_device(np.array([0.0, np.inf, -np.inf, 0.0, 0.0]))
    size = int(np.prod(d.shape))
    if size:
        if d.ndim == 1:
            _summary_1d[_grid(size, _THREADS), _THREADS](d, stats)
        else:
            view = d.T if _is_f_order(d) else d
            _summary_2d[_grid(size, _THREADS), _THREADS](view, stats)
    return DeviceSummary(stats.copy_to_host().tolist())


# ---- shared helpers (device functions) ------------------------------------------------------


@cuda.jit
def _cast_kernel(src, dst):
    for i in range(cuda.grid(1), src.shape[0], cuda.gridsize(1)):
        dst[i] = src[i]


@cuda.jit(device=True)
def _warp_sum(v):
    """Sum over the 32 lanes of a warp (tree of shuffles; every lane must call it)."""
    offset = 16
    while offset > 0:
        v += cuda.shfl_down_sync(_FULL_MASK, v, offset)
        offset //= 2
    return cuda.shfl_sync(_FULL_MASK, v, 0)


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
def _before(av, ai, bv, bi):
    """The ranking order: larger score first, smaller index among equal scores."""
    return av > bv or (av == bv and ai < bi)


@cuda.jit(device=True)
def _in_sorted(indices, lo, hi, value):
    """Whether ``value`` is among the sorted ``indices[lo:hi]`` (binary search)."""
    end = hi
    while lo < hi:
        mid = (lo + hi) // 2
        if indices[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and indices[lo] == value


@cuda.jit(device=True)
def _sel_offer(v, idx, full, thr_v, thr_i, buf_val, buf_idx, meta):
    """Append candidate (v, idx) to the block's buffer if it beats the current k-th best.

    ``full`` (k entries known) and the threshold ``thr_v, thr_i`` are the block's state as
    read from shared memory after the last barrier; NaN and -inf are never candidates.
    """
    if v != v or v == -math.inf:
        return
    if full and not _before(v, idx, thr_v, thr_i):
        return
    pos = cuda.atomic.add(meta, 1, 1)
    buf_val[pos] = v
    buf_idx[pos] = idx


# Bitonic sort of a shared (value, index) buffer into the ranking order, shared by the
# block-wide and the warp-wide selections: the caller loops over (block, stride) and puts its
# own barrier (syncthreads or syncwarp) before each step; ``first``/``step`` spread the work
# over the block's threads or the warp's lanes.


@cuda.jit(device=True)
def _bitonic_pad(buf_val, buf_idx, count, first, step):
    """Pad buf[count:size] with sentinels that rank last; returns size, a power of two >= 2."""
    size = 2
    while size < count:
        size *= 2
    for t in range(count + first, size, step):
        buf_val[t] = -math.inf
        buf_idx[t] = _INT32_MAX
    return size


@cuda.jit(device=True)
def _bitonic_step(buf_val, buf_idx, size, block, stride, first, step):
    """One compare-exchange pass of the bitonic network over buf[0:size]."""
    for t in range(first, size // 2, step):
        i = 2 * t - (t & (stride - 1))
        j = i + stride
        av, ai, bv, bi = buf_val[i], buf_idx[i], buf_val[j], buf_idx[j]
        if (i & block) == 0:
            swap = _before(bv, bi, av, ai)
        else:
            swap = _before(av, ai, bv, bi)
        if swap:
            buf_val[i], buf_idx[i] = bv, bi
            buf_val[j], buf_idx[j] = av, ai


@cuda.jit(device=True)
def _sel_compact(k, buf_val, buf_idx, meta, thr_v, thr_i):
    """Block-wide: sort the buffer, keep the best k, update the threshold. All threads call it.

    ``meta[1]`` is the number of buffered entries, ``meta[0]`` the number known to be among the
    best k after the last compaction (the threshold is valid once it reaches k).
    """
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    cuda.syncthreads()
    count = meta[1]
    size = _bitonic_pad(buf_val, buf_idx, count, tid, nthreads)
    block = 2
    while block <= size:
        stride = block // 2
        while stride > 0:
            cuda.syncthreads()
            _bitonic_step(buf_val, buf_idx, size, block, stride, tid, nthreads)
            stride //= 2
        block *= 2
    cuda.syncthreads()
    if tid == 0:
        kept = min(count, k)
        meta[0] = kept
        meta[1] = kept
        if kept >= k:
            thr_v[0] = buf_val[k - 1]
            thr_i[0] = buf_idx[k - 1]
    cuda.syncthreads()


@cuda.jit(device=True)
def _sel_reset(meta, thr_v, thr_i):
    """Start a new row (thread 0 writes; the caller's next barrier publishes it)."""
    if cuda.threadIdx.x == 0:
        meta[0] = 0
        meta[1] = 0
        thr_v[0] = -math.inf
        thr_i[0] = _INT32_MAX


@cuda.jit(device=True)
def _sel_write(row, k, buf_val, buf_idx, meta, out_idx, out_val):
    """Write the sorted best k (after a final compaction), padded with -1 / -inf."""
    kept = meta[0]
    for t in range(cuda.threadIdx.x, k, cuda.blockDim.x):
        if t < kept:
            out_idx[row, t] = buf_idx[t]
            out_val[row, t] = buf_val[t]
        else:
            out_idx[row, t] = -1
            out_val[row, t] = -math.inf


def _selection_plan(k_eff: int, dtype) -> tuple[int, bool]:
    """(buffer entries P, whether the buffer fits shared memory) for a best-k selection."""
    size = _next_pow2(max(k_eff + _TILE, 2 * _TILE))
    return size, size * (np.dtype(dtype).itemsize + 4) <= _SHARED_BYTES


def _selection_buffers(P: int, shared: bool, blocks: int, dtype):
    """Global buffers when the selection does not fit shared memory (1 x 1 dummies if it does)."""
    rows, cols = (1, 1) if shared else (blocks, P)
    return cuda.device_array((rows, cols), dtype=dtype), cuda.device_array((rows, cols), np.int32)


_KERNELS: dict = {}


def _factory(builder):
    """Cache kernels built per (sizes..., dtype): shared-array sizes and types are constants."""

    def get(*sizes_then_dtype):
        *sizes, dtype = sizes_then_dtype
        key = (builder.__name__, *sizes, np.dtype(dtype).str)
        if key not in _KERNELS:
            _KERNELS[key] = builder(*sizes, numba.from_dtype(np.dtype(dtype)))
        return _KERNELS[key]

    return get


# ---- similarity: cosine_topk, cosine_similarity ---------------------------------------------


@cuda.jit
def _inverse_norms(indptr, data, inv):
    """inv[r] = 1 / |row r| in float64 (0 for an empty row).

    The products accumulate the raw values and are scaled by inv[i] * inv[j] at the end: binary
    data then sums exact integer counts, and the one rounding to float32 comes last.
    """
    lane = cuda.threadIdx.x % _WARP
    warp = cuda.grid(1) // _WARP
    n_warps = cuda.gridsize(1) // _WARP
    n_rows = indptr.shape[0] - 1
    for row in range(warp, n_rows, n_warps):  # warp-uniform loop
        acc = 0.0
        for p in range(indptr[row] + lane, indptr[row + 1], _WARP):
            x = data[p] * 1.0
            acc += x * x
        acc = _warp_sum(acc)
        if lane == 0:
            inv[row] = 1.0 / math.sqrt(acc) if acc > 0 else 0.0


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
    """Inverse row norms (float64) and the CSR of the matrix's transpose, all on the device.

    The order of rows inside a transposed column is not fixed; the products below never depend
    on it (each accumulator slot receives one term per outer step, in the outer order).
    """
    nnz = d_indices.shape[0]
    d_inv = _zeros(max(n_rows, 1), np.float64)
    grid = _grid(n_rows, _THREADS // _WARP)
    if nnz:
        _inverse_norms[grid, _THREADS](d_indptr, d_data, d_inv)
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
    return d_inv, d_t_indptr, t_indices, t_data, counts


@cuda.jit(device=True)
def _accumulate_row(row, stamp, indptr, indices, values, t_indptr, t_indices, t_data,
                    acc, mark, count, touched, meta, with_count):
    """acc[j] = sum over stored (row, c) of values[p] * T[c, j], for this block's row.

    ``mark[j] == stamp`` says slot j was touched by this row (no clearing between rows);
    ``touched[0:meta[2]]`` lists the touched slots; ``count[j]`` the number of terms when
    ``with_count``. One stored entry at a time; its threads take distinct j, so no atomics.
    """
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    for p in range(indptr[row], indptr[row + 1]):
        c = indices[p]
        x = values[p]
        for q in range(t_indptr[c] + tid, t_indptr[c + 1], nthreads):
            j = t_indices[q]
            prod = x * t_data[q]
            if mark[j] != stamp:
                mark[j] = stamp
                acc[j] = prod
                if with_count:
                    count[j] = 1
                touched[cuda.atomic.add(meta, 2, 1)] = j
            else:
                acc[j] += prod
                if with_count:
                    count[j] += 1
        cuda.syncthreads()


@_factory
def _cosine_topk_kernel(P, shared, vtype):
    @cuda.jit
    def kernel(indptr, indices, values, t_indptr, t_indices, t_data, inv, k, shrink,
               min_similarity, min_support, include_self, with_count, acc2, mark2, count2,
               touched2,
               gbuf_val, gbuf_idx, out_idx, out_val, out_count, order, ticket):
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
        n_rows = indptr.shape[0] - 1
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
            _accumulate_row(row, row + 1, indptr, indices, values, t_indptr, t_indices, t_data,
                            acc, mark, count, touched, meta, with_count)
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


@cuda.jit
def _row_work(indptr, indices, col_counts, work):
    """work[r] = sum over stored (r, c) of col_counts[c]: the scatter steps row r costs."""
    lane = cuda.threadIdx.x % _WARP
    warp = cuda.grid(1) // _WARP
    n_warps = cuda.gridsize(1) // _WARP
    for row in range(warp, indptr.shape[0] - 1, n_warps):
        acc = 0
        for p in range(indptr[row] + lane, indptr[row + 1], _WARP):
            acc += col_counts[indices[p]]
        acc = _warp_sum(acc)
        if lane == 0:
            work[row] = acc


def _heaviest_first(d_indptr, d_indices, col_counts, n_rows, rows=None):
    """Row order for the dynamic schedule: most work first (ties by row), as int64; only the
    rows in ``rows`` when given."""
    work = _zeros(n_rows, np.int64)
    if d_indices.shape[0]:
        _row_work[_grid(n_rows, _THREADS // _WARP), _THREADS](d_indptr, d_indices, col_counts,
                                                              work)
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
    rows without candidates empty). Accumulates the raw values in X's dtype (binary data: exact
    counts) and scales by the float64 inverse norms once at the end, then rounds to X's dtype.
    Work O(sum over columns of (column count)^2); memory O(nnz + n*k + blocks*n) on the device
    (transpose, padded (n, k) results, one accumulator row per resident block); never n x n.
    ``rows``: None, or the row ids to compute (output row r is row rows[r]; host result).
    """
    keep = _any_device(indptr, indices, data) and rows is None
    dtype = np.dtype(data.dtype)
    n_rows = int(indptr.shape[0]) - 1
    d_indptr, d_indices, d_data = _dev(indptr), _dev(indices), _dev(data)
    d_inv, t_indptr, t_indices, t_data, col_counts = _transpose_with_norms(
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
            d_indptr, d_indices, d_data, t_indptr, t_indices, t_data, d_inv, k, float(shrink),
            float(min_similarity), int(min_support), bool(include_self), with_count,
            acc, mark, count, touched, gbuf_val, gbuf_idx, out_idx, out_val, out_count,
            order, _zeros(1, np.int64),
        )
    result = _csr_result(out_count, out_idx, out_val, dtype, keep)
    return result if rows is None else _rows.take_rows(*result, np.asarray(rows))


@cuda.jit
def _cosine_similarity_kernel(indptr, indices, values, t_indptr, t_indices, t_data, inv_x,
                              inv_y, min_similarity, write, out_indptr, acc2, mark2, touched2,
                              out_count, out_indices, out_values):
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
        _accumulate_row(row, stamp, indptr, indices, values, t_indptr, t_indices, t_data,
                        acc, mark, acc, touched, meta, False)
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
    d_inv_x = _zeros(max(n_rows, 1), np.float64)
    if d_data.shape[0]:
        _inverse_norms[_grid(n_rows, _THREADS // _WARP), _THREADS](d_indptr, d_data, d_inv_x)
    d_inv_y, t_indptr, t_indices, t_data, _ = _transpose_with_norms(
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
        launch(d_indptr, d_indices, d_data, t_indptr, t_indices, t_data, d_inv_x, d_inv_y,
               float(min_similarity),
               False, counts, acc, mark, touched, counts, dummy_i, dummy_v)
    out_indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts.copy_to_host(), out=out_indptr[1:])
    nnz = int(out_indptr[-1])
    d_out_indptr = cuda.to_device(out_indptr)
    out_indices = cuda.device_array(max(nnz, 1), dtype=np.int64)
    out_values = cuda.device_array(max(nnz, 1), dtype=dtype)
    if launch is not None and nnz:
        mark = _zeros((G, width), np.int32)
        launch(d_indptr, d_indices, d_data, t_indptr, t_indices, t_data, d_inv_x, d_inv_y,
               float(min_similarity),
               True, d_out_indptr, acc, mark, touched, counts, out_indices, out_values)
    if keep:
        return d_out_indptr, out_indices[:nnz], out_values[:nnz]
    return out_indptr, out_indices.copy_to_host()[:nnz], out_values.copy_to_host()[:nnz]


# ---- ranking: topk, recommend ---------------------------------------------------------------


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
def _warp_topk_kernel(B, warps_per_block, vtype):
    """Warp per row; B = candidate-buffer entries per warp (shared memory), a power of two."""
    step = _WARP * _WARP_ITEMS

    @cuda.jit
    def kernel(scores, k, ex_indptr, ex_indices, out_idx, out_val):
        sbuf_val = cuda.shared.array((warps_per_block, B), vtype)
        sbuf_idx = cuda.shared.array((warps_per_block, B), numba.int32)
        vals = cuda.local.array(_WARP_ITEMS, vtype)
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
            full = False  # the buffer's first k entries are the best k so far: tv, ti is the k-th
            tv = -math.inf
            ti = _INT32_MAX
            for c0 in range(0, n_cols, step):
                if count > B - step:  # the next step might not fit: keep the best k
                    _warp_sort(buf_val, buf_idx, count, lane)
                    count = min(count, k)
                    full = count >= k
                    if full:
                        tv = buf_val[k - 1]
                        ti = buf_idx[k - 1]
                # All loads of the step first (independent: _WARP_ITEMS in flight per lane,
                # each instruction a warp-wide contiguous 32-element segment), then the filter.
                if c0 + step <= n_cols:
                    for i in range(_WARP_ITEMS):
                        vals[i] = scores[row, c0 + i * _WARP + lane]
                else:
                    for i in range(_WARP_ITEMS):
                        c = c0 + i * _WARP + lane
                        vals[i] = scores[row, c] if c < n_cols else -math.inf
                for i in range(_WARP_ITEMS):
                    c = c0 + i * _WARP + lane
                    v = vals[i]
                    ok = v == v and v > -math.inf and (not full or _before(v, c, tv, ti))
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
    if n_rows < min_rows or per_warp > _SHARED_BYTES:
        return None
    # At most 4 warps a block: the kernel needs ~94 registers a thread (ptxas, sm_90), so an SM
    # holds 2 blocks of 8 warps (16 warps) but 5 blocks of 4 (20 warps).
    return B, max(1, min(4, _THREADS // _WARP, _SHARED_BYTES // per_warp))


def _index_result(d_idx, d_val, keep):
    if keep:
        return d_idx, d_val
    return d_idx.copy_to_host().astype(np.int64), d_val.copy_to_host()


def topk(scores, k, exclude_indptr, exclude_indices, n_threads):
    """Row-wise top-k of a dense (n_rows, n_cols) float array (contract of the reference).

    Enough rows (8 per SM): a warp per row. Each step every lane issues ``_WARP_ITEMS``
    independent loads (a warp-wide contiguous segment each), then filters them against the
    warp's current k-th best; survivors are appended, by ballot and popcount, to the warp's
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
        _warp_topk_kernel(B, warps_per_block, dtype)[grid, warps_per_block * _WARP](
            d_scores, k, ex_indptr, ex_indices, out_idx, out_val)
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
    def kernel(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, rows, n,
               seen_indptr, seen_indices, ex_indptr, ex_indices, acc2, mark2, touched2,
               gbuf_val, gbuf_idx, out_idx, out_val, order, ticket):
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
            _accumulate_row(r, stamp, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data,
                            acc, mark, acc, touched, meta, False)
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
    keep = _any_device(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, rows,
                       seen_indptr, seen_indices, ex_indptr, ex_indices)
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
    G = _scratch_grid(n_out, n_items * (dtype.itemsize + 8)
                      + (0 if shared else P * (dtype.itemsize + 4)))
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
        b_lengths = cuda.to_device(np.diff(_host(b_indptr)).astype(np.int64))
        work = _zeros(n_rows, np.int64)
        if d_a_indices.shape[0]:
            _row_work[_grid(n_rows, _THREADS // _WARP), _THREADS](d_a_indptr, d_a_indices,
                                                                  b_lengths, work)
        order = np.argsort(-work.copy_to_host()[_host(rows)], kind="stable").astype(np.int64)
        _recommend_kernel(P, shared, dtype)[G, _THREADS](
            d_a_indptr, d_a_indices, _dev(a_data, dtype), d_b_indptr, b_dev,
            _dev(b_data, dtype), _dev(rows), n, *masks, acc, mark, touched,
            gbuf_val, gbuf_idx, out_idx, out_val, cuda.to_device(order), _zeros(1, np.int64),
        )
    return _index_result(out_idx, out_val, keep)


# ---- scoring: sigmoid_dense, sigmoid_csr, logistic_loss_grad_dense, logistic_loss_grad_csr --
# (and logistic_hessp_dense, logistic_hessp_csr: the loss/grad passes with hess=True)


@cuda.jit(device=True)
def _group_sum(v, lanes):
    """Sum over aligned groups of ``lanes`` lanes (a power of two <= 32), result in every lane
    of the group; every lane of the warp must call it."""
    offset = lanes // 2
    while offset > 0:
        v += cuda.shfl_xor_sync(_FULL_MASK, v, offset)
        offset //= 2
    return v


# Dense dot products: elements of X each lane loads before it uses any (loads in flight per
# lane), and threads per block: ptxas gives the dense kernels 66 registers (sm_90), so blocks
# of 128 threads let 28 warps share an SM (blocks of 256: 24), 2 KB of loads in flight each.
_DOT_ITEMS = 16
_DENSE_THREADS = _THREADS if _SIM else 128


@cuda.jit(device=True)
def _group_row_dot(X, row, w, sub, lanes):
    """X[row] @ w in float64 by a group of ``lanes`` lanes: each load instruction has the group
    read ``lanes`` consecutive elements (a warp serves 32/lanes rows), and each lane issues
    ``_DOT_ITEMS`` independent loads before the first multiply-add, so that enough bytes are
    in flight to keep HBM busy (the plain strided loop, which LLVM unrolled by 4 behind a
    guarded remainder, reached 0.92 TB/s on an H200, a fifth of its bandwidth). Terms are added
    in column order, as the plain loop did: same results."""
    acc = 0.0
    if row < X.shape[0]:
        n_cols = X.shape[1]
        x = cuda.local.array(_DOT_ITEMS, numba.float64)
        for j0 in range(sub, n_cols, lanes * _DOT_ITEMS):
            if j0 + lanes * (_DOT_ITEMS - 1) < n_cols:  # a whole chunk: unrolled, no guards
                for i in range(_DOT_ITEMS):
                    x[i] = X[row, j0 + i * lanes]
                for i in range(_DOT_ITEMS):
                    acc += x[i] * w[j0 + i * lanes]
            else:
                for j in range(j0, n_cols, lanes):
                    acc += X[row, j] * w[j]
    return _group_sum(acc, lanes)


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
def _sigmoid_dense_c(X, w, b, out, lanes):
    lane = cuda.threadIdx.x % _WARP
    sub = lane % lanes
    rows_per_warp = _WARP // lanes
    # The loop over row batches is warp-uniform (rows past the end compute 0): every lane
    # reaches every shuffle.
    for base in range((cuda.grid(1) // _WARP) * rows_per_warp, X.shape[0],
                      (cuda.gridsize(1) // _WARP) * rows_per_warp):
        row = base + lane // lanes
        z = _group_row_dot(X, row, w, sub, lanes) + b
        if sub == 0 and row < X.shape[0]:
            out[row] = _sigmoid(z)


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
    for base in range((cuda.grid(1) // _WARP) * rows_per_warp, n_rows,
                      (cuda.gridsize(1) // _WARP) * rows_per_warp):
        row = base + lane // lanes
        z = _group_csr_dot(indptr, indices, data, row, w, sub, lanes) + b
        if sub == 0 and row < n_rows:
            out[row] = _sigmoid(z)


def _is_f_order(X) -> bool:
    if isinstance(X, np.ndarray):
        return bool(X.flags.f_contiguous and not X.flags.c_contiguous)
    d = _dev(X)
    return bool(d.is_f_contiguous() and not d.is_c_contiguous())


def _finish_out(d_out, out):
    """Write the device result into the caller's ``out`` (host or device) and return it."""
    if _is_device(out):
        return out
    out[:] = d_out.copy_to_host()
    return out


def _dense_launch(n_rows, n_cols):
    """(blocks, lanes per row) of the C-order dense kernels (blocks of _DENSE_THREADS): the
    most lanes (a power of two, at most a warp) that still give each lane a whole chunk of
    _DOT_ITEMS elements, so the unrolled loads do the bulk of the row (64 columns: 4 lanes
    of 16, 8 rows per warp)."""
    lanes = 1
    while lanes < _WARP and 2 * lanes * _DOT_ITEMS <= n_cols:
        lanes *= 2
    return _grid(n_rows, _DENSE_THREADS // lanes), lanes


def _csr_launch(n_rows, nnz):
    """(blocks, lanes per row) of the CSR kernels, from the mean row length: 4 entries a lane."""
    lanes = _lanes_per_row(nnz / max(1, n_rows), 4)
    return _grid(n_rows, _THREADS // lanes), lanes


def sigmoid_dense(X, w, b, out, n_threads):
    """out[i] = sigmoid(X[i] @ w + b) for a dense (n, d) X in C or F order; returns out.

    C order: a group of lanes per row (16 loads in flight per lane; a warp serves 32/lanes
    rows), dot reduced with shuffles. Dots and sigmoid in float64, stored in out's dtype. One read of X.
    """
    d_X = _dev(X)
    d_w = _dev(w, np.float64)
    d_out = _dev(out) if _is_device(out) else cuda.device_array(out.shape[0], dtype=out.dtype)
    n_rows = int(X.shape[0])
    if n_rows:
        if _is_f_order(X):
            _sigmoid_dense_f[_grid(n_rows, _THREADS), _THREADS](d_X, d_w, float(b), d_out)
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
        _sigmoid_csr[grid, _THREADS](_dev(indptr), d_indices, d_data, d_w, float(b), d_out,
                                     lanes)
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


@cuda.jit
def _terms_dense_c(X, y, w, b, sample_weight, residual, loss, lanes, hess):
    lane = cuda.threadIdx.x % _WARP
    sub = lane % lanes
    rows_per_warp = _WARP // lanes
    for base in range((cuda.grid(1) // _WARP) * rows_per_warp, X.shape[0],
                      (cuda.gridsize(1) // _WARP) * rows_per_warp):
        row = base + lane // lanes
        z = _group_row_dot(X, row, w, sub, lanes) + b
        if sub == 0 and row < X.shape[0]:
            _row_terms(z, row, y, sample_weight, residual, loss, hess)


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
    for base in range((cuda.grid(1) // _WARP) * rows_per_warp, n_rows,
                      (cuda.gridsize(1) // _WARP) * rows_per_warp):
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
        for i in range(chunk * chunk_rows + lane, min(v.shape[0], (chunk + 1) * chunk_rows),
                       _WARP):
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
    loss_sum, residual_sum, total_weight = _fixed_order_sums(
        [d_loss, d_residual, d_sample_weight])
    n_features = d_grad.shape[0]
    w_squared = cuda.device_array(max(n_features, 1), dtype=np.float64)
    if n_features:
        _finish_grad[_grid(n_features, _THREADS), _THREADS](d_grad, d_w, total_weight,
                                                            float(l2), w_squared)
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
            d_X, d_y, d_w, float(b), d_sw, d_residual, d_loss, hess)
    else:
        grid, lanes = _dense_launch(n_rows, n_features)
        _terms_dense_c[grid, _DENSE_THREADS](d_X, d_y, d_w, float(b), d_sw, d_residual, d_loss,
                                             lanes, hess)
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
    d_residual, d_loss, d_grad = _csr_pass(indptr, indices, data, _dev(y, np.float64), d_w, b,
                                           d_sw, False)
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
    _terms_csr[grid, _THREADS](d_indptr, d_indices, d_data, d_y, d_w, float(b), d_sw,
                               d_residual, d_loss, lanes, hess)
    grid = _grid(n_rows, _THREADS // _WARP)
    width = max(n_features, 1)
    col_max, level1, level2 = (_zeros(width, np.float64) for _ in range(3))
    log2_rows = max(1, n_rows).bit_length()  # n_rows < 2^log2_rows
    _xt_csr_column_max[grid, _THREADS](d_indptr, d_indices, d_data, d_residual, col_max)
    _xt_csr_exact_sums[grid, _THREADS](d_indptr, d_indices, d_data, d_residual, col_max,
                                       log2_rows, level1, level2)
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


# ---- embedding retrieval (its own module; imported last: it uses the helpers above) ----------
from ._embedding_cuda import device_normalised_rows, dot_topk  # noqa: E402, F401
