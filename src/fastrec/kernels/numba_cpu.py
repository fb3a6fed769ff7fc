"""The Numba CPU backend: parallel kernels with the reference's names and signatures.

Shared pieces (heap, sigmoid) are written once here and used by every kernel. Kernels
parallelise with ``prange`` over rows or row blocks, each writing only its own output slots,
so results do not depend on the thread count.
"""
from __future__ import annotations

import numba
import numpy as np  # noqa: F401  (used by the kernels below)


def is_available():
    return True, ""


# ---- shared helpers -------------------------------------------------------------------------


# ---- similarity: cosine_topk, cosine_similarity ---------------------------------------------


# ---- ranking: topk, recommend ---------------------------------------------------------------


# ---- scoring: sigmoid_dense, sigmoid_csr, logistic_loss_grad_dense, logistic_loss_grad_csr --
