"""The Numba CPU backend: parallel kernels with the reference's names and signatures.

One module per kernel family (``similarity``, ``topk``, ``scoring``, ``embedding``), as the
Cython backend's ``_cython/_<family>.pyx``; ``_common`` holds what several families share (the
unsigned index view, the thread count, the bounded heap). The host side around the compiled
loops (allocation, shortcuts, index types, masks) is ``kernels/_host.py``, shared with the
Cython backend. Kernels parallelise with ``prange`` over rows or row blocks, each writing only
its own output slots, so results do not depend on the thread count.
"""

from __future__ import annotations

from .als import als_cg_update
from .embedding import dot_topk
from .scoring import (
    logistic_hessp_csr,
    logistic_hessp_dense,
    logistic_loss_grad_csr,
    logistic_loss_grad_dense,
    sigmoid_csr,
    sigmoid_dense,
)
from .similarity import (
    cosine_similarity,
    cosine_similarity_prepare,
    cosine_similarity_rows,
    cosine_topk,
    cosine_topk_prepare,
    cosine_topk_rows,
)
from .topk import recommend, topk


def is_available():
    return True, ""


__all__ = [
    "als_cg_update",
    "cosine_similarity",
    "cosine_similarity_prepare",
    "cosine_similarity_rows",
    "cosine_topk",
    "cosine_topk_prepare",
    "cosine_topk_rows",
    "dot_topk",
    "is_available",
    "logistic_hessp_csr",
    "logistic_hessp_dense",
    "logistic_loss_grad_csr",
    "logistic_loss_grad_dense",
    "recommend",
    "sigmoid_csr",
    "sigmoid_dense",
    "topk",
]
