"""Implicit-feedback matrix factorisation (ALS with conjugate-gradient solves, as implicit's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from .._dispatch import get_kernel
from .._validation import (
    check_choice,
    check_csr,
    check_dense,
    check_k,
    check_n_threads,
    check_scalar,
    is_device_sparse,
)
from .._validation_device import device_copy, device_summary, device_zeros
from ..embedding import _dot_topk_block, als_cg_update, dot_topk
from ..topk import TopK, _mask
from . import _device
from ._base import Recommender, UserItems, as_user_items

if TYPE_CHECKING:
    from typing_extensions import Self

# Observed entries per chunk of the loss (bounds its memory to _LOSS_CHUNK * factors floats).
_LOSS_CHUNK = 1 << 18


class ALS(Recommender):
    """Users and items as ``factors``-dimensional vectors fit to implicit feedback.

    Objective (Hu, Koren and Volinsky 2008): sum over all (u, i) of c_ui (p_ui - x_u . y_i)^2
    + regularization (|X|^2 + |Y|^2), with p_ui = 1 and c_ui = 1 + alpha * r_ui on the stored
    interactions r_ui (non-negative), p = 0 and c = 1 elsewhere. Each of ``iterations`` sweeps
    updates every user then every item by ``cg_steps`` conjugate-gradient steps warm-started
    from the previous sweep (:func:`fastrec.embedding.als_cg_update`). Factors start at
    uniform [0, 0.01) from ``random_state``; the fit is the same bits for a seed and any
    ``n_threads``. ``progress=True`` shows a tqdm bar over the iterations with the loss.

    Fitted: ``user_factors_`` (n_users, factors), ``item_factors_`` (n_items, factors).
    ``recommend`` ranks x_u . y_i with :func:`fastrec.dot_topk` (seen items excluded),
    ``similar_items`` by cosine of item factors. Memory: the factors, the interactions and
    their transpose; a fit iteration costs O(cg_steps * (nnz + (n_users + n_items) * f) * f).

    ``recommend(user_items=<GPU device CSR>)`` (values of the model's interaction dtype) and
    ``fold_in(<GPU device CSR>)`` run on the device: the item factors are copied there once
    per fitted state (n_items * f), the request rows are read in place by the CUDA fold-in
    and then ranked by :func:`fastrec.dot_topk` with the rows as its exclusion mask; factors
    and TopK stay on the device (the same bits as the "cuda" backend on host rows). Filters:
    ``exclude`` / ``candidates`` as item lists (the same for every request), or ``exclude``
    as a per-request mask (host or device) with ``exclude_seen=False``; other combinations
    are a ValueError saying what to pass.
    """

    _device_refusal = None

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        cg_steps: int = 3,
        random_state: int = 0,
        dtype: str = "float32",
        progress: bool = False,
        backend: str = "auto",
        n_threads: int | None = None,
    ):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.cg_steps = cg_steps
        self.random_state = random_state
        self.dtype = dtype
        self.progress = progress
        self.backend = backend
        self.n_threads = n_threads

    def _check_params(self):
        check_scalar(self.factors, "factors", min_value=1, integer=True)
        check_scalar(self.regularization, "regularization", min_value=0)
        check_scalar(self.alpha, "alpha", min_value=0)
        check_scalar(self.iterations, "iterations", min_value=0, integer=True)
        check_scalar(self.cg_steps, "cg_steps", min_value=1, integer=True)
        check_scalar(self.random_state, "random_state", min_value=0, integer=True)
        check_choice(self.dtype, "dtype", ("float32", "float64"))

    def fit(self, user_items: UserItems) -> Self:
        """Fit the factors to a users x items matrix or Interactions; returns self."""
        self._check_params()
        UI, source = as_user_items(user_items)
        if UI.nnz and UI.data.min() < 0:
            raise ValueError("user_items must be non-negative (implicit feedback)")
        self._set_data(UI, source)
        dtype = np.dtype(self.dtype)
        rng = np.random.default_rng(self.random_state)
        X = (rng.random((UI.shape[0], self.factors)) * 0.01).astype(dtype)
        Y = (rng.random((UI.shape[1], self.factors)) * 0.01).astype(dtype)
        IU = sp.csr_matrix(self.user_items_.T)
        self.loss_history_ = []
        sweeps = range(self.iterations)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            sweeps = bar = tqdm(sweeps, desc="ALS", unit="it")
        opts = dict(
            regularization=self.regularization,
            alpha=self.alpha,
            cg_steps=self.cg_steps,
            backend=self.backend,
            n_threads=self.n_threads,
        )
        for _ in sweeps:
            X = als_cg_update(self.user_items_, X, Y, **opts)
            Y = als_cg_update(IU, Y, X, **opts)
            if bar is not None:
                self.loss_history_.append(
                    als_loss(self.user_items_, X, Y, self.regularization, self.alpha)
                )
                bar.set_postfix(loss=f"{self.loss_history_[-1]:.6g}")
        self.user_factors_, self.item_factors_ = X, Y
        return self

    def _items(self):
        """(item factors as the kernels take them, Y^T Y + regularization I), validated and
        computed once per fitted state (not per request: O(n_items * f^2))."""

        def prepare(Y):
            Yc = np.ascontiguousarray(check_dense(Y, "item_factors_"))
            Y64 = Yc.astype(np.float64)  # as als_cg_update computes it: the same bits
            return Yc, Y64.T @ Y64 + float(self.regularization) * np.eye(Yc.shape[1])

        return self._per_fitted_state(
            "item_factors_", self.item_factors_, prepare, also=self.regularization
        )

    def _rank(self, factors, seen, n) -> TopK:
        """dot_topk of user factors against the validated item factors, ``seen`` excluded."""
        Y = self._items()[0]
        ex_indptr, ex_indices = _mask(seen, "exclude", (factors.shape[0], Y.shape[0]))
        return _dot_topk_block(
            np.ascontiguousarray(factors, dtype=Y.dtype),
            Y,
            None,
            None,
            ex_indptr,
            ex_indices,
            n,
            self.backend,
            self.n_threads,
        )

    def _recommend(self, rows, n, exclude_seen) -> TopK:
        seen = self.user_items_[rows] if exclude_seen else None
        return self._rank(self.user_factors_[rows], seen, n)

    def _recommend_requests(self, req, n, exclude_seen, mask) -> TopK:
        """Fitted rows with exclude/candidates masks, or users unseen at fit time (fold-in)."""
        factors = self.user_factors_[req.rows] if req.rows is not None else self.fold_in(req.R)
        seen = req.seen(self.user_items_) if exclude_seen else None
        if seen is not None and mask is not None:
            seen = sp.csr_matrix(seen + mask)
        elif mask is not None:
            seen = mask
        return self._rank(factors, seen, n)

    def _recommend_device(self, user_items, n, exclude_seen, exclude, candidates) -> TopK:
        backend = _device.device_backend(self, user_items)
        R = _device.request_rows(self, user_items)
        cand, ex_indptr, ex_indices = _device.dot_filters(
            self, R, exclude, candidates, exclude_seen
        )
        factors = self._fold_in_device(R, backend)
        return _dot_topk_block(
            factors,
            self._items_device(),
            None,
            cand,
            ex_indptr,
            ex_indices,
            n,
            backend,
            self.n_threads,
        )

    def _items_device(self):
        """The validated item factors on the device, copied once per fitted state."""
        return _device.fitted(
            self, "item_factors_", self.item_factors_, lambda Y: device_copy(self._items()[0])
        )

    def _fold_in_device(self, R, backend):
        """fold_in of validated device rows: factors on the device."""
        if R.nnz and device_summary(R.data).min < 0:
            raise ValueError("user_items must be non-negative (implicit feedback confidences)")
        Y, gram = self._items_device(), self._items()[1]
        X0 = device_zeros((R.shape[0], int(self.factors)), Y.dtype)
        kernel = get_kernel("als_cg_update", backend)
        args = (float(self.alpha), int(self.factors), check_n_threads(self.n_threads))
        return kernel(R.indptr, R.indices, R.data, X0, Y, gram, *args)

    def fold_in(self, user_items: sp.spmatrix | sp.sparray) -> np.ndarray:
        """Factors of users unseen at fit time from their interactions (n_requests x n_items
        CSR over the fitted items): the user solve with the item factors fixed, by ``factors``
        CG steps from zero (the exact solution of the f x f system, up to rounding); the same
        bits as :func:`fastrec.embedding.als_cg_update` with those arguments. Time
        O(factors * (nnz + n_requests * f) * f); Y^T Y is computed once per fitted state.
        A GPU device CSR (float32/float64 values, canonical, checked on the device) runs the
        CUDA solve on it in place (the model's backend "auto" or "cuda") and returns device
        factors."""
        self._check_fitted()
        if is_device_sparse(user_items):
            backend = _device.device_backend(self, user_items)
            R = _device.request_rows(self, user_items, model_dtype=False)
            return self._fold_in_device(R, backend)
        UI = check_csr(user_items, "user_items")
        if UI.shape[1] != self.n_items_:
            raise ValueError(
                f"user_items has {UI.shape[1]} columns but the model knows {self.n_items_} items"
            )
        if UI.nnz and UI.data.min() < 0:
            raise ValueError("user_items must be non-negative (implicit feedback confidences)")
        Y, gram = self._items()
        X0 = np.zeros((UI.shape[0], int(self.factors)), dtype=Y.dtype)
        kernel = get_kernel("als_cg_update", self.backend)
        return kernel(
            UI.indptr,
            UI.indices,
            UI.data,
            X0,
            Y,
            gram,
            float(self.alpha),
            int(self.factors),
            check_n_threads(self.n_threads),
        )

    def similar_items(self, item_ids: ArrayLike, n: int = 10) -> TopK:
        """The n items closest to each given item by cosine of their factors (the item itself
        excluded): TopK (len(item_ids), n), ties by smaller item."""
        items = self._check_items(item_ids)
        n = check_k(n, "n")
        itself = sp.csr_matrix(
            (np.ones(len(items)), (np.arange(len(items)), items)), shape=(len(items), self.n_items_)
        )
        return dot_topk(
            self.item_factors_[items],
            self.item_factors_,
            n,
            exclude=itself,
            metric="cosine",
            backend=self.backend,
            n_threads=self.n_threads,
        )

    def _state(self) -> dict:
        return {"user_factors_": self.user_factors_, "item_factors_": self.item_factors_}

    def _load_state(self, arrays) -> None:
        for name, rows in (("user_factors_", self.n_users_), ("item_factors_", self.n_items_)):
            a = arrays.get(name)
            if a is None:
                raise ValueError(f"model file has no {name}")
            if (
                a.ndim != 2
                or a.shape != (rows, int(self.factors))
                or a.dtype != np.dtype(self.dtype)
            ):
                raise ValueError(
                    f"model file's {name} must be ({rows}, {self.factors}) "
                    f"{self.dtype}, got {a.shape} {a.dtype}"
                )
            if not np.isfinite(a).all():
                raise ValueError(f"model file's {name} contains NaN or infinity")
            setattr(self, name, a)

    def _check_loaded_params(self) -> None:
        super()._check_loaded_params()
        self._check_params()


def als_loss(user_items, X, Y, regularization, alpha) -> float:
    """The ALS objective per unit of confidence, as implicit's ``calculate_loss``: [sum over
    all (u, i) of c_ui (p_ui - x_u . y_i)^2 + regularization (|X|^2 + |Y|^2)] / (n_users *
    n_items + sum (c_ui - 1)), with c = 1 + alpha * r on stored entries. In float64; memory
    O(f^2 + chunk * f)."""
    M = sp.csr_matrix(user_items)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    total = float(np.sum((X64.T @ X64) * (Y64.T @ Y64)))  # sum over all (u, i) of (x.y)^2
    rows = np.repeat(np.arange(M.shape[0]), np.diff(M.indptr))
    c1_sum = 0.0
    for s in range(0, M.nnz, _LOSS_CHUNK):
        u, i = rows[s : s + _LOSS_CHUNK], M.indices[s : s + _LOSS_CHUNK]
        c1 = alpha * M.data[s : s + _LOSS_CHUNK].astype(np.float64)
        pred = np.einsum("ij,ij->i", X64[u], Y64[i])
        total += float(np.sum((1.0 + c1) * (1.0 - pred) ** 2 - pred**2))
        c1_sum += float(c1.sum())
    total += regularization * (float(np.sum(X64**2)) + float(np.sum(Y64**2)))
    return total / (M.shape[0] * M.shape[1] + c1_sum)


__all__ = ["ALS", "als_loss"]
