"""fastrec: compiled kernels for recommender systems.

Layers (data flows down, imports point down)::

    cli.py                                   what people run
    similarity.py  topk.py  scoring.py  embedding.py    public kernel API: validate, dispatch, wrap
    _validation.py  _dispatch.py             one front door for inputs; backend choice
    kernels/  reference.py  numba_cpu/  numba_cuda/  cython.py (_cython/_*.pyx)
              one module per kernel family in each backend
              raw arrays in, raw arrays out; no scipy objects, no validation, no dispatch
"""

import importlib

from ._config import show_config
from ._dispatch import BackendUnavailableError, available_backends
from ._validation_device import DeviceCSR
from ._version import __version__
from .embedding import dot_topk
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
    "dot_topk",
    "features",
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

# The recommender layer (data, metrics, models, features) is imported on first use, so that
# `import fastrec` stays fast (scipy.stats and scipy.optimize alone take ~0.5 s to import).
_SUBMODULES = ("data", "features", "metrics", "models")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(__all__) | set(_SUBMODULES))
