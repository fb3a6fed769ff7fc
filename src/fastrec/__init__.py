"""fastrec: compiled kernels for recommender systems.

Layers (data flows down, imports point down)::

    cli.py                                   what people run
    similarity.py  topk.py  scoring.py       public kernel API: validate, dispatch, wrap
    _validation.py  _dispatch.py             one front door for inputs; backend choice
    kernels/  reference.py  numba_cpu/  numba_cuda/  cython.py (_cython/_*.pyx)
              one module per kernel family in each backend
              raw arrays in, raw arrays out; no scipy objects, no validation, no dispatch
"""
# The recommender layer (data, metrics, models), built on the kernel API below.
from . import data, metrics, models
from ._config import show_config
from ._dispatch import BackendUnavailableError, available_backends
from ._validation import DeviceCSR
from ._version import __version__
from .scoring import logistic_loss_grad, sigmoid_scores
from .similarity import PreparedCosine, cosine_similarity, cosine_topk, prepare_cosine_topk
from .topk import TopK, recommend, recommend_product, recommend_user_based, topk

__all__ = [
    "BackendUnavailableError",
    "DeviceCSR",
    "PreparedCosine",
    "TopK",
    "__version__",
    "available_backends",
    "cosine_similarity",
    "cosine_topk",
    "data",
    "logistic_loss_grad",
    "metrics",
    "models",
    "prepare_cosine_topk",
    "recommend",
    "recommend_product",
    "recommend_user_based",
    "show_config",
    "sigmoid_scores",
    "topk",
]
