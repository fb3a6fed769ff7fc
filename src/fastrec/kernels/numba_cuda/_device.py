"""What every CUDA kernel family shares: the simulator switch, launch geometry, host/device
transfers, the device-array helpers the public API validates with, the shared device functions
(warp sum, ranking order, sorted-mask lookup) and the block-wide best-k selection."""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import config as _numba_config
from numba import cuda  # an ImportError here makes the dispatcher report "cuda" unavailable

_SIM = bool(_numba_config.ENABLE_CUDASIM)
if _SIM:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as _FakeCUDAArray

    from .._cudasim_warp import install as _install_warp_primitives

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
# Selection buffers above this go to global memory. Read as ``_device._SHARED_BYTES`` by every
# family (one place for tests to lower it).
_SHARED_BYTES = 40 * 1024
_SCRATCH_BYTES = 1 << 30  # cap on per-block accumulators of the sparse products
_INT32_MAX = 2147483647


@functools.cache
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


def device_from_host(a):
    """A device copy of host array ``a`` (a model's fitted state, moved once)."""
    return cuda.to_device(np.ascontiguousarray(a))


def device_zeros(shape, dtype):
    """A zero-filled device array, filled on the device."""
    return _zeros(shape, dtype)


def device_concat_rows(parts):
    """Device arrays of equal trailing shape stacked along the first axis, copied device to
    device (never through the host)."""
    first = parts[0]
    total = sum(int(p.shape[0]) for p in parts)
    out = cuda.device_array((total, *first.shape[1:]), dtype=first.dtype)
    r0 = 0
    for p in parts:
        r1 = r0 + int(p.shape[0])
        if r1 > r0:
            out[r0:r1].copy_to_device(p)
        r0 = r1
    return out


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
    """Reduce the accumulators over the block (warp shuffles, then the first warp over one
    entry per warp), and let one thread per block do the atomics. Atomics from every thread
    on the same five addresses serialise (float64 min/max are compare-and-swap loops): 5 ms
    for a 2M-score summary on an H200, against one read of 8 MB."""
    part = cuda.shared.array((_SUMMARY_WARPS, 5), numba.float64)
    lane = cuda.threadIdx.x % _WARP
    warp = cuda.threadIdx.x // _WARP
    _summary_warp_reduce(acc)
    if lane == 0:
        for f in range(5):
            part[warp, f] = acc[f]
    cuda.syncthreads()
    if warp == 0:
        if lane < cuda.blockDim.x // _WARP:
            for f in range(5):
                acc[f] = part[lane, f]
        else:
            _summary_init(acc)
        _summary_warp_reduce(acc)
        if lane == 0:
            if acc[0] > 0:
                cuda.atomic.add(stats, 0, acc[0])
            cuda.atomic.min(stats, 1, acc[1])
            cuda.atomic.max(stats, 2, acc[2])
            cuda.atomic.add(stats, 3, acc[3])
            if acc[4] > 0:
                cuda.atomic.add(stats, 4, acc[4])


@cuda.jit(device=True)
def _summary_warp_reduce(acc):
    """acc over the warp's 32 lanes into lane 0 (counts and sum added, min and max kept)."""
    offset = 16
    while offset > 0:
        acc[0] += cuda.shfl_down_sync(_FULL_MASK, acc[0], offset)
        acc[1] = min(acc[1], cuda.shfl_down_sync(_FULL_MASK, acc[1], offset))
        acc[2] = max(acc[2], cuda.shfl_down_sync(_FULL_MASK, acc[2], offset))
        acc[3] += cuda.shfl_down_sync(_FULL_MASK, acc[3], offset)
        acc[4] += cuda.shfl_down_sync(_FULL_MASK, acc[4], offset)
        offset //= 2


@cuda.jit(device=True)
def _summary_init(acc):
    acc[0] = 0.0
    acc[1] = math.inf
    acc[2] = -math.inf
    acc[3] = 0.0
    acc[4] = 0.0


# Blocks of the summary kernels: a multiple of the warp; the per-warp partials fit one warp.
_SUMMARY_WARPS = _THREADS // _WARP


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
    # 32-bit unsigned index arithmetic (buffers are < 2**31 entries): fewer registers than
    # Numba's int64 and no wrap-around of negative indices.
    u = numba.uint32
    for t in range(u(first), u(size // 2), u(step)):
        i = u(2) * t - (t & u(stride - 1))
        j = i + u(stride)
        av, ai, bv, bi = buf_val[i], buf_idx[i], buf_val[j], buf_idx[j]
        if (i & u(block)) == 0:
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


def _jit(max_registers=None):
    """``cuda.jit`` for a kernel, with ptxas's register cap when one is given (more resident
    warps, at the price of spills; the simulator has no registers and takes no cap)."""
    if max_registers is None or _SIM:
        return cuda.jit
    return cuda.jit(max_registers=max_registers)


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


# ---- sparse products (cosine_topk, recommend): row accumulation and row work ------------------


@cuda.jit(device=True)
def _accumulate_row(
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
    count,
    touched,
    meta,
    with_count,
):
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


def _is_f_order(X) -> bool:
    if isinstance(X, np.ndarray):
        return bool(X.flags.f_contiguous and not X.flags.c_contiguous)
    d = _dev(X)
    return bool(d.is_f_contiguous() and not d.is_c_contiguous())
