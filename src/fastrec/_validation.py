"""The single front door for inputs: every public function checks and normalises here.

Kernels below this layer trust their arguments (valid CSR, canonical where the kernel merges
or searches rows, float32/float64, contiguous arrays, k >= 1), so every check lives here
once. Nothing here modifies the caller's objects, and nothing is copied that the kernel can
read as it is: each check_* function says when it copies.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # scipy loads on first use, not at import
    pass

FLOAT_DTYPES = (np.float32, np.float64)


@dataclass(frozen=True)
class CSR:
    """A validated CSR matrix as raw arrays: float32/64 data (any dtype for a mask), and
    sorted indices without duplicates unless it came from ``check_csr(canonical=False)``.

    ``sparse_array`` remembers whether the caller passed a scipy sparse *array* (not a matrix),
    so that results come back in the caller's family.
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]
    sparse_array: bool

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def to_scipy(self):
        """This matrix as a scipy CSR of the caller's family (shares the arrays)."""
        return make_csr(self.indptr, self.indices, self.data, self.shape, self.sparse_array)


def issparse(X) -> bool:
    """Whether X is a scipy.sparse array or matrix. Never imports scipy.sparse (kept out of
    ``import fastrec`` for speed): if it is not imported, X cannot be one."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(X)


def make_csr(indptr, indices, data, shape, sparse_array: bool):
    """Build a scipy CSR (array or matrix family) from raw arrays without copying or checks."""
    import scipy.sparse as sp

    cls = sp.csr_array if sparse_array else sp.csr_matrix
    # The tuple constructor would re-check and may downcast indices; set the arrays directly.
    out = cls((data, indices, indptr), shape=shape, copy=False)
    return out


def _float_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """float32/float64 kept; bool, integers and float16 widened; anything else rejected."""
    dtype = np.dtype(dtype)
    if dtype in FLOAT_DTYPES:
        return dtype
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(
        f"{name} has dtype {dtype}; expected float32 or float64 (bool and integer data are "
        "converted to float64)"
    )


_FINITE_CHUNK = 1 << 20  # elements per step of the finiteness scan: a bounded temporary


def _check_finite(values: np.ndarray, name: str) -> None:
    """ValueError on NaN or infinity; one read of ``values`` (a contiguous array or any 1-D
    array) in chunks, so the temporary is 1 MB, never a boolean copy of the whole array."""
    flat = values.ravel(order="K") if values.ndim != 1 else values
    for start in range(0, flat.shape[0], _FINITE_CHUNK):
        if not np.isfinite(flat[start : start + _FINITE_CHUNK]).all():
            raise ValueError(f"{name} contains NaN or infinity")


def check_dtype(dtype, name: str = "dtype") -> np.dtype:
    """An explicit output/compute dtype: float32 or float64 only."""
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dtype}")
    return dtype


def check_csr(
    X,
    name: str = "X",
    *,
    dtype=None,
    allow_nonfinite: bool = False,
    drop_zeros: bool = False,
    canonical: bool = True,
    values: bool = True,
    n_threads: int = 1,
    column_bounds: bool = True,
) -> CSR:
    """Any scipy.sparse array or matrix -> :class:`CSR` raw arrays (caller's object untouched).

    The structure is always checked (indptr of length n_rows + 1, starting at 0,
    non-decreasing, within the stored arrays; every column index in [0, n_cols)): one read
    of the indices, no copy. With ``canonical`` (the default) duplicates are summed and
    indices sorted, as kernels that merge or search a row need; ``canonical=False`` is for
    kernels linear in the stored entries (scoring, loss/gradient, Hessian products), where
    duplicates and unsorted columns give the same sums: the caller's arrays are passed on
    as they are. With ``drop_zeros`` explicitly stored zeros are removed too (implies
    canonical). ``dtype`` forces the value type; otherwise float32/float64 are kept and bool
    or integer data become float64; ``values=False`` (a mask: only the pattern is read)
    leaves the values alone. Index arrays stay int32 or int64. NaN and infinity are rejected
    unless ``allow_nonfinite`` (one chunked read of the values, 1 MB temporary). Large index
    arrays are bounds-checked on ``n_threads`` threads (the caller's count).
    ``column_bounds=False`` (with ``canonical=False`` only) leaves a CSR input's column
    indices unchecked, for a kernel that checks them in its own read (``checks_columns``:
    clamped loads, ValueError after the pass); other formats are still checked in full, as
    scipy reads them to convert.

    Copies: a non-CSR input is converted (scipy's tocsr); the values when their dtype must
    change; the indices when indptr and indices differ in dtype or are not int32/int64; all
    three arrays when canonical form is asked for and X is not canonical (or holds zeros to
    drop). Otherwise none: the returned arrays are the caller's.
    """
    if not issparse(X):
        raise TypeError(f"{name} must be a scipy.sparse array or matrix, got {type(X).__name__}")
    import scipy.sparse as sp

    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {X.shape}")
    sparse_array = isinstance(X, sp.sparray)
    if not values:
        target = None
    else:
        target = check_dtype(dtype, "dtype") if dtype is not None else _float_dtype(X.dtype, name)
    if not (column_bounds or (not canonical and not drop_zeros)):
        raise ValueError("column_bounds=False needs canonical=False: sorting reads the indices")
    # Before scipy's own C code reads the arrays.
    check_sparse_structure(X, name, n_threads, column_bounds=column_bounds)

    csr = X.tocsr(copy=False)
    owned = csr is not X  # a conversion already produced a fresh object we may modify
    if target is not None and csr.dtype != target:
        csr = csr.astype(target)
        owned = True
    canonical = canonical or drop_zeros
    # Recomputed, not scipy's cached flag: arrays edited after the flag was set would lie.
    needs_sum = canonical and not _rows_strictly_increasing(csr.indptr, csr.indices)
    needs_drop = drop_zeros and csr.nnz and not np.all(csr.data != 0)
    if needs_sum or needs_drop:
        if not owned:
            csr = csr.copy()
        if needs_sum:
            csr.sum_duplicates()  # also sorts indices
        if needs_drop:
            csr.eliminate_zeros()

    nnz = int(csr.indptr[-1])
    indptr, indices, data = csr.indptr, csr.indices, csr.data
    if indices.shape[0] != nnz or data.shape[0] != nnz:  # spare capacity scipy allows
        indices, data = indices[:nnz], data[:nnz]
    if indptr.dtype not in (np.int32, np.int64) or indices.dtype != indptr.dtype:
        itype = np.int64 if max(csr.nnz, csr.shape[1]) > np.iinfo(np.int32).max else np.int32
        indptr, indices = indptr.astype(itype), indices.astype(itype)
    if not allow_nonfinite and values:
        _check_finite(data[: csr.nnz], name)
    return CSR(indptr, indices, data, (int(csr.shape[0]), int(csr.shape[1])), sparse_array)


def _index_array(a, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be a 1-D integer array, got {a.dtype} with shape {a.shape}")
    return a


# Index arrays at least this long are bounds-checked by a compiled loop on the caller's
# threads (one thread: 12 ms against NumPy's 15 ms for 80M int32 on Zen 4).
_PARALLEL_INDEX_CHECK_MIN = 1 << 22


def _indices_within(stored: np.ndarray, n_minor: int, n_threads: int) -> bool:
    """Whether every entry of the int32/int64 array ``stored`` lies in [0, n_minor), in one
    read: viewed as unsigned, a negative index is >= 2^31 (2^63), so max < n_minor says both."""
    u = stored.view(np.uint32 if stored.itemsize == 4 else np.uint64)
    if u.shape[0] >= _PARALLEL_INDEX_CHECK_MIN:
        try:
            from .kernels._index_max import max_unsigned

            return max_unsigned(u, n_threads) < n_minor
        except ImportError:  # no Numba: NumPy's one-thread pass below
            pass
    return int(u.max()) < n_minor


def check_compressed_structure(
    indptr,
    indices,
    data,
    n_major: int,
    n_minor: int,
    name: str,
    axes=("row", "column"),
    n_threads: int = 1,
    minor_bounds: bool = True,
) -> None:
    """ValueError unless (indptr, indices, data) is a well-formed compressed sparse structure
    of n_major x n_minor: indptr of length n_major + 1, starting at 0, non-decreasing, ending
    within indices and data; every stored index in [0, n_minor). O(n_major + nnz), no copy;
    int32/int64 indices are read once (on ``n_threads`` threads when there are many).
    ``minor_bounds=False`` leaves the indices unread (O(n_major)): for a kernel that checks
    them in its own read (``checks_columns``)."""
    indptr = _index_array(indptr, f"{name}.indptr")
    indices = _index_array(indices, f"{name}.indices")
    data = np.asarray(data)
    if data.ndim != 1:
        raise ValueError(f"{name}.data must be 1-D, got shape {data.shape}")
    if indptr.shape[0] != n_major + 1:
        raise ValueError(
            f"{name}.indptr has length {indptr.shape[0]}, but a matrix of "
            f"{n_major} {axes[0]}s needs {n_major + 1}"
        )
    if indptr[0] != 0:
        raise ValueError(f"{name}.indptr must start at 0, got {indptr[0]}")
    if n_major and np.any(indptr[1:] < indptr[:-1]):
        raise ValueError(f"{name}.indptr must be non-decreasing")
    nnz = int(indptr[-1])
    if nnz > indices.shape[0] or nnz > data.shape[0]:
        raise ValueError(
            f"{name}.indptr ends at {nnz}, but indices has {indices.shape[0]} and "
            f"data {data.shape[0]} entries"
        )
    if nnz and minor_bounds:
        stored = indices[:nnz]
        if stored.dtype in (np.int32, np.int64) and stored.flags.c_contiguous:
            if _indices_within(stored, n_minor, n_threads):
                return
        lo, hi = stored.min(), stored.max()
        if lo < 0 or hi >= n_minor:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{name} stores {axes[1]} index {bad}, outside [0, {n_minor}) "
                f"(shape {axes[0]}s x {axes[1]}s = {n_major} x {n_minor})"
            )


def check_sparse_structure(
    X, name: str = "X", n_threads: int = 1, column_bounds: bool = True
) -> None:
    """ValueError when a scipy sparse object's arrays contradict its shape (lengths, indptr
    order, indices outside the shape): such objects can be built, or edited in place, without
    scipy noticing, and scipy's and our compiled code would read outside the arrays. Large
    CSR/CSC index arrays are read on ``n_threads`` threads. ``column_bounds=False`` skips a
    CSR's column-index bounds (see :func:`check_csr`); every other format is read in full."""
    fmt = X.format
    n_rows, n_cols = X.shape
    if fmt in ("csr", "csc"):
        major, minor = (n_rows, n_cols) if fmt == "csr" else (n_cols, n_rows)
        axes = ("row", "column") if fmt == "csr" else ("column", "row")
        check_compressed_structure(
            X.indptr,
            X.indices,
            X.data,
            major,
            minor,
            name,
            axes,
            n_threads=n_threads,
            minor_bounds=column_bounds or fmt != "csr",
        )
    elif fmt == "bsr":
        R, C = X.blocksize
        if R < 1 or C < 1 or n_rows % R or n_cols % C:
            raise ValueError(
                f"{name} has blocksize {X.blocksize} that does not divide its shape {X.shape}"
            )
        check_compressed_structure(
            X.indptr,
            X.indices,
            X.data,
            n_rows // R,
            n_cols // C,
            name,
            ("block row", "block column"),
        )
        if X.data.ndim != 3 or X.data.shape[1:] != (R, C):
            raise ValueError(f"{name}.data must have shape (n_blocks, {R}, {C})")
    elif fmt == "coo":
        coords = getattr(X, "coords", None) or (X.row, X.col)
        data = np.asarray(X.data)
        for axis, (idx, n) in enumerate(zip(coords, (n_rows, n_cols))):
            idx = _index_array(idx, f"{name} coordinates")
            if idx.shape[0] != data.shape[0]:
                raise ValueError(
                    f"{name} has {data.shape[0]} values but {idx.shape[0]} "
                    f"{('row', 'column')[axis]} coordinates"
                )
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(
                    f"{name} stores a {('row', 'column')[axis]} coordinate "
                    f"outside [0, {n}) (shape {X.shape})"
                )


def _rows_strictly_increasing(indptr: np.ndarray, indices: np.ndarray) -> bool:
    """True when every row's indices are sorted and distinct (canonical CSR). O(nnz)."""
    nnz = int(indptr[-1])
    if nnz < 2:
        return True
    step_up = indices[1:nnz] > indices[: nnz - 1]
    if step_up.all():
        return True
    # A step down or a repeat is allowed only across a row boundary.
    boundaries = np.asarray(indptr[1:-1], dtype=np.int64) - 1
    boundaries = boundaries[(boundaries >= 0) & (boundaries < nnz - 1)]
    step_up[boundaries] = True
    return bool(step_up.all())


# ---- where a call runs: device arrays (anything with __cuda_array_interface__) -------------
# Device inputs are validated on the device, by ``_validation_device``.

CPU_BACKENDS = ("numpy", "cython", "numba")


def is_device_array(x) -> bool:
    """True for arrays that live on a GPU: ``__cuda_array_interface__`` (Numba device arrays,
    CuPy, PyTorch CUDA tensors), or arrays of Numba's CUDA simulator. Imports nothing."""
    if x is None or isinstance(x, (np.ndarray, np.generic, int, float, list, tuple)):
        return False
    try:  # False for a CPU torch tensor; a sparse CUDA tensor may raise another error
        if hasattr(x, "__cuda_array_interface__"):
            return True
    except Exception:
        return False
    sim = sys.modules.get("numba.cuda.simulator.cudadrv.devicearray")
    return sim is not None and isinstance(x, sim.FakeCUDAArray)


def check_placement(backend, **arrays):
    """The backend to run when any of ``arrays`` (name=value) may be a device array.

    Returns (on_device, backend): with a device array or device sparse matrix (see
    :func:`is_device_sparse`) among them, "auto" becomes "cuda" and a CPU backend is a
    TypeError naming the argument; other names are left to the dispatcher.
    """
    device_names = [name for name, a in arrays.items() if is_device_sparse(a) or is_device_array(a)]
    if not device_names:
        return False, backend
    if backend == "auto":
        return True, "cuda"
    if isinstance(backend, str) and backend in CPU_BACKENDS:
        name = device_names[0]
        kind = "sparse matrix" if is_device_sparse(arrays[name]) else "array"
        raise TypeError(
            f"{name} is a GPU device {kind} but backend={backend!r} runs on the CPU; "
            "use backend='cuda' (or 'auto'), or copy it to the host first"
        )
    return True, backend


def _torch_sparse_layout(x) -> str | None:
    """ "sparse_csr", "sparse_coo", ... for a PyTorch CUDA sparse tensor, else None (duck typed:
    torch is never imported here)."""
    layout = str(getattr(x, "layout", ""))
    if layout.startswith("torch.sparse") and getattr(x, "is_cuda", False) is True:
        return layout[len("torch.") :]
    return None


def is_device_sparse(x) -> bool:
    """True for sparse matrices that live on a GPU: a PyTorch CUDA sparse tensor, an object with
    a ``format`` and device ``data`` (CuPy's ``cupyx.scipy.sparse`` matrices), or any object with
    ``indptr``/``indices``/``data`` attributes of which one is a device array (a device CSR).
    Imports nothing."""
    if x is None or issparse(x) or isinstance(x, np.ndarray):
        return False
    if _torch_sparse_layout(x) is not None:
        return True
    parts = [getattr(x, name, None) for name in ("indptr", "indices", "data")]
    if any(is_device_array(a) for a in parts):
        return True
    return isinstance(getattr(x, "format", None), str) and is_device_array(parts[2])


def check_dense(
    X,
    name: str = "X",
    *,
    ndim: int = 2,
    dtype=None,
    allow_nonfinite: bool = False,
    order: str | None = "C",
) -> np.ndarray:
    """Array-like -> NumPy array of float32/float64 with ``ndim`` dimensions.

    ``order`` "C" makes the result C-contiguous (a copy only if needed); None keeps any layout
    whose last axis or first axis is contiguous (C or F order), copying other strided views.
    Copies X when: it is not a NumPy array (array-likes are converted), its dtype must change
    (integers, bool, float16), or its layout is not the one asked for; otherwise the result is
    X itself. The finiteness check reads X once in 1 MB chunks.
    """
    if issparse(X):
        raise TypeError(f"{name} must be a dense array, got a scipy.sparse {type(X).__name__}")
    if is_device_array(X):  # never a silent copy to the host
        raise TypeError(
            f"{name} is a GPU device array; this call runs on the host (use "
            "backend='cuda' where the function supports device arrays)"
        )
    arr = np.asarray(X)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {arr.ndim}-D with shape {arr.shape}")
    target = check_dtype(dtype, "dtype") if dtype is not None else _float_dtype(arr.dtype, name)
    if order == "C" or not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        arr = np.ascontiguousarray(arr, dtype=target)
    else:
        arr = arr.astype(target, copy=False)
    if not allow_nonfinite:
        _check_finite(arr, name)
    return arr


def check_k(k, name: str = "k") -> int:
    """A positive integer count (Python or NumPy int, not bool or float)."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"{name} must be >= 1, got {k}")
    return int(k)


def check_scalar(
    x, name: str, *, min_value=None, max_value=None, min_inclusive=True, integer=False
):
    """A finite real number (or integer) within optional bounds."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number, got bool")
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if not isinstance(x, kinds):
        kind = "an integer" if integer else "a real number"
        raise TypeError(f"{name} must be {kind}, got {type(x).__name__}")
    if not integer and not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if min_value is not None and (x < min_value if min_inclusive else x <= min_value):
        op = ">=" if min_inclusive else ">"
        raise ValueError(f"{name} must be {op} {min_value}, got {x}")
    if max_value is not None and x > max_value:
        raise ValueError(f"{name} must be <= {max_value}, got {x}")
    return int(x) if integer else float(x)


def check_choice(x, name: str, choices):
    if x not in choices:
        raise ValueError(f"{name} must be one of {sorted(map(repr, choices))}, got {x!r}")
    return x


def check_ids(ids, name: str, n: int) -> np.ndarray:
    """Row ids as a 1-D int64 array, each in [0, n)."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= n)][0]
        raise ValueError(f"{name} contains {bad}, outside [0, {n})")
    return arr


def usable_cpu_count() -> int:
    """CPUs this process may use: affinity mask and cgroup CPU quota both respected."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, quota)
    return max(1, count)


def _cgroup_cpu_quota() -> int | None:
    """CPU limit from cgroup v2 (cpu.max) or v1 (cfs quota/period), rounded up; None if unset."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        if quota > 0 and period > 0:
            return max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        pass
    return None


def check_n_threads(n_threads) -> int:
    """scikit-learn's semantics: None = all usable cores, -1 = all, -2 = all but one, 0 is an
    error."""
    # The CPU count reads cgroup files: only asked for when needed (not per request with
    # an explicit count).
    if n_threads is None:
        return usable_cpu_count()
    if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, (int, np.integer)):
        raise TypeError(f"n_threads must be an integer or None, got {type(n_threads).__name__}")
    if n_threads == 0:
        raise ValueError("n_threads must not be 0 (use None or -1 for all cores)")
    if n_threads < 0:
        return max(1, usable_cpu_count() + int(n_threads) + 1)
    if n_threads > MAX_THREADS:  # kernels allocate per-thread buffers
        raise ValueError(f"n_threads must be at most {MAX_THREADS}, got {n_threads}")
    return int(n_threads)


MAX_THREADS = 1 << 12


def _work_per_thread() -> int:
    raw = os.environ.get("FASTREC_WORK_PER_THREAD", "")
    try:
        return max(1, int(raw)) if raw else 1 << 16
    except ValueError:
        raise ValueError(f"FASTREC_WORK_PER_THREAD must be an integer, got {raw!r}") from None


# The least work (entries read, products formed) worth a thread of its own. Results never
# depend on the thread count, so small calls run on fewer threads: a parallel region costs
# ~10-50 us to start on idle cores, and a scheduler time slice when the other cores are busy
# (a serving process's normal state): 2-thread calls on 1000 rows took 8-24 ms against
# 0.02-0.3 ms on one thread with the second core loaded (Zen 4, both CPU backends). The tests
# set FASTREC_WORK_PER_THREAD=1 so that small inputs still run on several threads.
WORK_PER_THREAD = _work_per_thread()


def threads_for(n_threads: int, work: int) -> int:
    """The threads worth starting for ``work`` elementary steps: at most ``n_threads`` (as
    :func:`check_n_threads` returned it), one per WORK_PER_THREAD steps, at least one."""
    return max(1, min(n_threads, int(work) // WORK_PER_THREAD))


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup v2 limit.
    None when neither can be read (then no memory check is made)."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                room = int(limit) - int(f.read())
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def check_memory(estimate: int, what: str) -> None:
    """Raise MemoryError, with the estimate, before a kernel allocates more than is available."""
    avail = available_memory()
    if avail is not None and estimate > avail:
        raise MemoryError(
            f"{what} needs about {estimate / 2**30:.2f} GiB but only {avail / 2**30:.2f} GiB "
            "is available; lower k, use fewer threads, or process the rows in blocks"
        )
