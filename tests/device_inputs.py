"""Device CSR stand-ins for the CUDA tests: Numba device arrays (the simulator's, without a
GPU) inside small classes that expose the attributes CuPy and PyTorch sparse matrices have.
CuPy and PyTorch are not needed. Every input array refuses ``copy_to_host``, so a host round
trip of an input fails the test that made it; on a GPU the public layer reads inputs through
new views, which :func:`no_host_copy_of` watches too."""

import contextlib

import numpy as np
import scipy.sparse as sp


def device(a):
    """A device copy of host array ``a`` that refuses to be copied back to the host."""
    from numba import cuda

    d = cuda.to_device(np.ascontiguousarray(a))

    def refuse(*args, **kwargs):
        raise AssertionError("a device input was copied to the host")

    d.copy_to_host = refuse
    return d


class DuckCSR:
    """Any object with device indptr/indices/data and a shape."""

    def __init__(self, indptr, indices, data, shape):
        self.indptr, self.indices, self.data = device(indptr), device(indices), device(data)
        self.shape = shape


class CupyLikeCSR(DuckCSR):
    """The attributes of ``cupyx.scipy.sparse.csr_matrix`` (and of its CSC sibling)."""

    def __init__(self, m, fmt="csr"):
        super().__init__(m.indptr, m.indices, m.data, m.shape)
        self.format = fmt


class _Layout:
    def __init__(self, name):
        self.name = name

    def __str__(self):
        return f"torch.{self.name}"


class TorchLikeCSR:
    """The attributes of a PyTorch CUDA sparse tensor: layout, is_cuda and the CSR accessors."""

    def __init__(self, m, layout="sparse_csr"):
        self.layout, self.is_cuda, self.shape = _Layout(layout), True, m.shape
        self._parts = (device(m.indptr), device(m.indices), device(m.data))

    def crow_indices(self):
        return self._parts[0]

    def col_indices(self):
        return self._parts[1]

    def values(self):
        return self._parts[2]


def canonical(m, dtype=np.float32, itype=np.int32):
    """A canonical scipy CSR (no stored zeros, sorted, no duplicates) of the given types."""
    m = sp.csr_matrix(m, dtype=dtype)
    m.eliminate_zeros()
    m.sum_duplicates()
    m.indptr, m.indices = m.indptr.astype(itype), m.indices.astype(itype)
    return m


def _parts(m):
    if hasattr(m, "crow_indices"):
        return m.crow_indices(), m.col_indices(), m.values()
    return m.indptr, m.indices, m.data


def _span(a):
    """[start, end) of the bytes of device array ``a`` (a simulator array wraps a NumPy one)."""
    iface = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    start = iface["data"][0]
    return start, start + a.size * a.dtype.itemsize


@contextlib.contextmanager
def no_host_copy_of(*matrices):
    """Fail when any array of the given stand-ins, or a view of its memory, is copied to the
    host inside the block (a spy on the device array class's ``copy_to_host``)."""
    from numba import cuda

    watched = [_span(a) for m in matrices for a in _parts(m) if a.size]
    cls = next(c for c in type(cuda.to_device(np.zeros(1))).__mro__ if "copy_to_host" in vars(c))
    original = cls.copy_to_host

    def spy(self, *args, **kwargs):
        if self.size:
            lo, hi = _span(self)
            if any(lo < end and start < hi for start, end in watched):
                raise AssertionError("a device input was copied to the host")
        return original(self, *args, **kwargs)

    cls.copy_to_host = spy
    try:
        yield
    finally:
        cls.copy_to_host = original
