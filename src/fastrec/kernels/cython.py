"""The Cython (OpenMP) backend: re-exports the compiled kernels under their reference names."""

from ._cython._als import cpu_isa as _als_cpu_isa
from ._cython._embedding import dot_topk  # noqa: F401
from ._cython._openmp import openmp_enabled, openmp_max_threads  # noqa: F401  (import = built)
from ._cython._scoring import (  # noqa: F401
    logistic_hessp_csr,
    logistic_hessp_dense,
    logistic_loss_grad_csr,
    logistic_loss_grad_dense,
    sigmoid_csr,
    sigmoid_dense,
)
from ._cython._similarity import (  # noqa: F401
    cosine_similarity,
    cosine_similarity_prepare,
    cosine_similarity_rows,
    cosine_topk,
    cosine_topk_prepare,
    cosine_topk_rows,
)
from ._cython._topk import recommend, topk  # noqa: F401


def _als_module():
    """The widest build of the ALS kernel that this CPU runs (see ``_cython/_als.pxi``)."""
    isa = _als_cpu_isa()
    if isa == "avx512":
        from ._cython import _als_avx512 as module
    elif isa == "avx2":
        from ._cython import _als_avx2 as module
    else:
        from ._cython import _als as module
    return module


als_cg_update = _als_module().als_cg_update


def is_available():
    return True, ""


def auto_pass(kernel: str) -> str:
    """Why backend "auto" passes over this backend for ``kernel`` on this CPU ("" if not)."""
    from ._cython._scoring import _dense_simd_available

    if kernel == "sigmoid_dense" and not _dense_simd_available():
        return "no AVX2 with FMA here for its dense rows (its base loop is slower than Numba's)"
    return ""
