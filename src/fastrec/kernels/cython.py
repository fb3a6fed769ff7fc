"""The Cython (OpenMP) backend: re-exports the compiled kernels under their reference names."""
from ._cython._openmp import openmp_enabled, openmp_max_threads  # noqa: F401  (import = built)


def is_available():
    return True, ""
from ._cython._topk import recommend, topk  # noqa: F401
