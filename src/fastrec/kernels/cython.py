"""The Cython (OpenMP) backend: re-exports the compiled kernels under their reference names."""
from ._cython._openmp import openmp_enabled, openmp_max_threads  # noqa: F401  (import = built)
from ._cython._similarity import cosine_similarity, cosine_topk  # noqa: F401


def is_available():
    return True, ""
from ._cython._topk import recommend, topk  # noqa: F401
