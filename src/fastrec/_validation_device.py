"""Checks of GPU inputs: device arrays and device CSR matrices, validated on the device.

The front door for device inputs (``_validation`` is the host one, and decides where a call
runs: ``check_placement``). The checks run one-pass reductions of the CUDA backend
(``device_summary``) and bring back only scalars, never the data. At the end, the few
host-to-device moves the models make of their fitted state (through the backend, which the
models never import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._validation import FLOAT_DTYPES, _torch_sparse_layout, is_device_array

if TYPE_CHECKING:  # scipy loads on first use, not at import
    import scipy.sparse as sp


def _cuda():
    from ._dispatch import backend_module

    return backend_module("cuda")


# ---- device CSR matrices (CuPy, PyTorch, or any indptr/indices/data/shape object) -----------

# The CUDA sparse products keep per-block accumulators of the output's width, enough blocks to
# fill the GPU but at most this many bytes in all (at least one block): the memory bounds of the
# device paths (similarity.py, topk.py) count it; kernels.numba_cuda._device._SCRATCH_BYTES.
DEVICE_SCRATCH_BYTES = 1 << 30


@dataclass(frozen=True)
class DeviceCSR:
    """A CSR matrix whose arrays live on the GPU: ``indptr``, ``indices`` (int32 or int64) and
    ``data`` (float32/float64) as Numba device arrays, and ``shape``.

    What the public functions return for device CSR inputs (``cosine_topk``,
    ``cosine_similarity``), and how they hold such inputs (zero-copy views of the caller's
    arrays). Each array has ``__cuda_array_interface__``, so ``cupy.asarray(m.data)`` or
    ``torch.as_tensor(m.data, device="cuda")`` wrap it without a copy; :meth:`to_cupy` and
    :meth:`to_torch` build the library's sparse matrix from them, :meth:`to_scipy` copies the
    matrix to the host (the only method that does).
    """

    indptr: object
    indices: object
    data: object
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    def to_cupy(self):
        """A ``cupyx.scipy.sparse.csr_matrix`` on the same device memory (CuPy stores int32
        indices, so int64 index arrays are cast on the device: a device copy of the indices;
        the values are shared)."""
        import cupy
        import cupyx.scipy.sparse

        return cupyx.scipy.sparse.csr_matrix(
            (cupy.asarray(self.data), cupy.asarray(self.indices), cupy.asarray(self.indptr)),
            shape=self.shape,
        )

    def to_torch(self):
        """A PyTorch sparse CSR tensor sharing the device arrays (no copy)."""
        import torch

        def wrap(a):
            return torch.as_tensor(a, device="cuda")

        return torch.sparse_csr_tensor(
            wrap(self.indptr), wrap(self.indices), wrap(self.data), size=self.shape
        )

    def to_scipy(self) -> sp.csr_matrix:
        """A scipy CSR copy on the host."""
        import scipy.sparse as sp

        return sp.csr_matrix(
            (self.data.copy_to_host(), self.indices.copy_to_host(), self.indptr.copy_to_host()),
            shape=self.shape,
        )


def _device_csr_parts(X, name):
    """(indptr, indices, data, shape) of a device sparse matrix, or a TypeError saying how to
    make it a CSR."""
    layout = _torch_sparse_layout(X)
    if layout is not None:
        if layout != "sparse_csr":
            raise TypeError(
                f"{name} is a PyTorch tensor with layout torch.{layout}; expected "
                "torch.sparse_csr (convert with .to_sparse_csr())"
            )
        return X.crow_indices(), X.col_indices(), X.values(), tuple(X.shape)
    fmt = getattr(X, "format", "csr")
    if fmt != "csr":
        raise TypeError(
            f"{name} is a device sparse matrix in format {fmt!r}; expected CSR "
            "(convert with .tocsr())"
        )
    parts = []
    for part in ("indptr", "indices", "data"):
        a = getattr(X, part, None)
        if not is_device_array(a):
            where = "missing" if a is None else f"a {type(a).__name__}, not a device array"
            raise TypeError(
                f"{name}.{part} is {where}: a device CSR needs indptr, indices and "
                "data all on the GPU"
            )
        parts.append(a)
    return (*parts, tuple(getattr(X, "shape", ())))


def check_device_csr(
    X, name: str = "X", *, pattern_only: bool = False, sorted_rows: bool | None = None
) -> DeviceCSR:
    """A device CSR matrix -> :class:`DeviceCSR` of zero-copy views, validated on the device.

    Accepts a ``cupyx.scipy.sparse.csr_matrix``, a PyTorch sparse CSR tensor on the GPU, a
    :class:`DeviceCSR`, or any object with device ``indptr``/``indices``/``data`` and a 2-D
    ``shape``. Device data is never converted or copied: index arrays must be int32/int64 and
    values float32/float64 (TypeError otherwise). Checked by two reductions on the device
    (O(n_rows + nnz) reads, 64 bytes back): indptr starts at 0, never decreases and ends at
    nnz; indices lie in [0, n_cols); and, unless ``pattern_only`` (masks, whose values are
    ignored), the values are finite and non-zero and each row's indices strictly increase
    (sorted, no duplicates: the canonical form the host path makes by copying, and what the
    CUDA kernels need to give the host's results). ``sorted_rows`` asks for that row order
    regardless (True: a mask that a kernel binary-searches, as dot_topk's) or waives it
    (False); None follows ``pattern_only``. A ValueError says which rule failed.
    """
    indptr, indices, data, shape = _device_csr_parts(X, name)
    if len(shape) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 0 for s in shape):
        raise ValueError(f"{name} must have a 2-D shape of non-negative integers, got {shape}")
    n_rows, n_cols = int(shape[0]), int(shape[1])
    cu = _cuda()
    indptr, indices, data = (cu.device_view(a) for a in (indptr, indices, data))
    for part, a in (("indptr", indptr), ("indices", indices), ("data", data)):
        if a.ndim != 1:
            raise ValueError(f"{name}.{part} must be 1-D, got shape {tuple(a.shape)}")
    for part, a in (("indptr", indptr), ("indices", indices)):
        if np.dtype(a.dtype) not in (np.int32, np.int64):
            raise TypeError(
                f"{name}.{part} has dtype {np.dtype(a.dtype)}; expected int32 or "
                "int64 (device arrays are not converted)"
            )
    if not pattern_only and np.dtype(data.dtype) not in FLOAT_DTYPES:
        raise TypeError(
            f"{name}.data has dtype {np.dtype(data.dtype)}; expected float32 or "
            "float64 (device arrays are not converted)"
        )
    if indptr.shape[0] != n_rows + 1:
        raise ValueError(
            f"{name}.indptr must have n_rows + 1 = {n_rows + 1} entries, got {indptr.shape[0]}"
        )
    nnz = int(indices.shape[0])
    if data.shape[0] != nnz:
        raise ValueError(
            f"{name}.indices and {name}.data must have the same length, got {nnz} "
            f"and {data.shape[0]}"
        )
    if sorted_rows is None:
        sorted_rows = not pattern_only
    c = cu.device_csr_counts(indptr, indices, data, n_cols, not pattern_only, bool(sorted_rows))
    if c.first != 0:
        raise ValueError(f"{name}.indptr must start at 0, got {c.first}")
    if c.decreasing:
        raise ValueError(
            f"{name}.indptr must be non-decreasing; it decreases {c.decreasing} time(s)"
        )
    if c.last != nnz:
        raise ValueError(
            f"{name}.indptr must end at nnz = {nnz} (the length of indices), got {c.last}"
        )
    if c.outside:
        raise ValueError(f"{name} has {c.outside} column index(es) outside [0, {n_cols})")
    if not pattern_only:
        if c.nonfinite:
            raise ValueError(f"{name} contains NaN or infinity")
        if c.zeros:
            raise ValueError(
                f"{name} stores {c.zeros} explicit zero(s); remove them first "
                "(CuPy: X.eliminate_zeros())"
            )
    if sorted_rows:
        if c.unsorted or c.repeated:
            what = "unsorted column indices" if c.unsorted else "duplicate entries"
            raise ValueError(
                f"{name} has {what} in a row; the device path needs canonical CSR (each row's "
                "indices strictly increasing): CuPy X.sum_duplicates(), PyTorch "
                "X.to_sparse_coo().coalesce().to_sparse_csr()"
            )
    return DeviceCSR(indptr, indices, data, (n_rows, n_cols))


def check_device_dense(X, name: str = "X", *, ndim: int = 2, allow_nonfinite: bool = False):
    """A device array -> a Numba device view (zero copy) of float32/float64 with ``ndim`` dims.

    Any strides are accepted (the CUDA kernels index with them); other dtypes are a TypeError
    (device data is never converted behind the caller's back). NaN/infinity are counted on the
    device unless ``allow_nonfinite``.
    """
    cu = _cuda()
    d = cu.device_view(X)
    if d.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {d.ndim}-D with shape {tuple(d.shape)}")
    if np.dtype(d.dtype) not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} is a device array of dtype {np.dtype(d.dtype)}; expected "
            "float32 or float64 (device arrays are not converted)"
        )
    if not allow_nonfinite:
        check_device_finite(d, name)
    return d


def check_device_memory(estimate: int, what: str) -> None:
    """MemoryError, with the estimate, before a CUDA kernel allocates more than the GPU has
    free (no check on the simulator)."""
    free = _cuda().device_free_memory()
    if free is not None and estimate > free:
        raise MemoryError(
            f"{what} needs about {estimate / 2**30:.2f} GiB of GPU memory but only "
            f"{free / 2**30:.2f} GiB is free; lower k or process the rows in blocks"
        )


def check_device_finite(d, name: str) -> None:
    """ValueError when device array ``d`` holds NaN or infinity (one pass on the device)."""
    if d.size and _cuda().device_summary(d).n_nonfinite:
        raise ValueError(f"{name} contains NaN or infinity")


def check_device_vector(v, name: str, length: int, dtype):
    """A 1-D device vector of ``length`` finite numbers, as a device array of ``dtype`` (cast
    on the device when needed)."""
    cu = _cuda()
    d = cu.device_view(v)
    if d.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(d.shape)}")
    if d.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {d.shape[0]}")
    if np.dtype(d.dtype).kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {np.dtype(d.dtype)}")
    check_device_finite(d, name)
    return cu.device_cast(d, dtype)


def check_device_labels(y, n_rows: int):
    """Device labels: 1-D, length n_rows, only 0 and 1 (one reduction); as float64."""
    d = _cuda().device_view(y)
    if d.ndim != 1 or d.shape[0] != n_rows:
        raise ValueError(
            f"y must be 1-D with length {n_rows} (the rows of X), got shape {tuple(d.shape)}"
        )
    if np.dtype(d.dtype).kind not in "biuf":
        raise TypeError(f"y must be numeric 0/1 labels, got dtype {np.dtype(d.dtype)}")
    if d.size and _cuda().device_summary(d).n_not_binary:  # NaN counts as not binary
        raise ValueError("y must contain only 0 and 1")
    return _cuda().device_cast(d, np.float64)


def check_device_sample_weight(sample_weight, n_rows: int):
    """Device sample weights: finite, non-negative, positive sum (one reduction); as float64."""
    cu = _cuda()
    d = cu.device_view(sample_weight)
    if d.ndim != 1 or d.shape[0] != n_rows:
        raise ValueError(f"sample_weight must have length {n_rows}, got shape {tuple(d.shape)}")
    if np.dtype(d.dtype).kind not in "biuf":
        raise TypeError(f"sample_weight must hold numbers, got dtype {np.dtype(d.dtype)}")
    stats = cu.device_summary(d)
    if stats.n_nonfinite:
        raise ValueError("sample_weight contains NaN or infinity")
    if stats.min < 0:
        raise ValueError("sample_weight must be non-negative")
    if not stats.total > 0:
        raise ValueError("sample_weight must have a positive sum")
    return cu.device_cast(d, np.float64)


def check_device_out(out, n_rows: int, dtype):
    """An output buffer for a device computation: a C-contiguous 1-D device array of ``dtype``
    and length n_rows, or None (then a new device array). Returns the device array to write."""
    cu = _cuda()
    if out is None:
        return cu.device_empty(n_rows, dtype)
    if not is_device_array(out):
        raise TypeError(f"out must be a device array when the inputs are, got {type(out).__name__}")
    d = cu.device_view(out)
    if tuple(d.shape) != (n_rows,) or np.dtype(d.dtype) != np.dtype(dtype):
        raise ValueError(
            f"out must have shape ({n_rows},) and dtype {np.dtype(dtype)}, got "
            f"{tuple(d.shape)} {np.dtype(d.dtype)}"
        )
    if not d.is_c_contiguous():
        raise ValueError("out must be C-contiguous")
    return out


def device_summary(d):
    """(n_nonfinite, min, max, total, n_not_binary) of a device array, computed on the device."""
    return _cuda().device_summary(d)


# ---- device memory the models hold or build: fitted state moved once, results stacked -----------


def device_copy(a):
    """A device copy of host array ``a`` (C order): how a model moves a fitted array, once."""
    return _cuda().device_from_host(a)


def device_csr_copy(M) -> DeviceCSR:
    """A device copy of a host CSR that ``check_csr`` has validated (its arrays moved as they
    are, so the device matrix is canonical too)."""
    cu = _cuda()
    parts = (cu.device_from_host(a) for a in (M.indptr, M.indices, M.data))
    return DeviceCSR(*parts, (int(M.shape[0]), int(M.shape[1])))


def device_to_host(a) -> np.ndarray:
    """A host copy of device array ``a`` (for what must live on the host: decoded ids)."""
    return _cuda().device_view(a).copy_to_host()


def device_zeros(shape, dtype):
    """A zero-filled device array (filled on the device: nothing crosses from the host)."""
    return _cuda().device_zeros(shape, dtype)


def device_concat_rows(parts):
    """Device arrays stacked along the first axis, device to device."""
    return _cuda().device_concat_rows(parts)
