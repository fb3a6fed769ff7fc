"""The popularity baseline: every user gets the most interacted-with items they have not seen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from .._validation_device import device_copy
from ..embedding import _dot_topk_block
from ..topk import TopK, topk
from . import _device, _incremental
from ._base import Explanation, NewEvents, Recommender, RequestItems, UserItems, as_user_items
from ._persist import check_vector

if TYPE_CHECKING:
    from typing_extensions import Self

# Users ranked per call of fastrec.topk: bounds the dense block to ROWS x n_items scores.
_BLOCK_ROWS = 1024


class Popularity(Recommender):
    """Item score = number of users who interacted with it (``by="users"``) or the sum of the
    interaction values (``by="values"``); the same for every user. Recommending ranks the
    scores with :func:`fastrec.topk`, seen items masked, ``_BLOCK_ROWS`` users at a time
    (memory O(_BLOCK_ROWS * n_items)). Ties go to the smaller item index.
    Stored zeros in ``user_items`` are dropped at fit: not interactions, never "seen".

    ``recommend(user_items=<GPU device CSR>)`` ranks on the device: the scores as an
    (n_items, 1) device column (copied once per fitted state) against a column of ones by
    :func:`fastrec.dot_topk` (exact: 1 * score), the request rows as its exclusion mask,
    read in place; the same TopK as on the host, as device arrays. Memory O(n_requests * n)
    beyond the inputs (no dense block). Filters: ``exclude`` / ``candidates`` as item lists
    (the same for every request), or ``exclude`` as a per-request mask (host or device) with
    ``exclude_seen=False``; other combinations are a ValueError saying what to pass.
    """

    _device_refusal = None

    def __init__(self, by: str = "users", backend: str = "auto", n_threads: int | None = None):
        self.by = by
        self.backend = backend
        self.n_threads = n_threads

    def fit(self, user_items: UserItems) -> Self:
        """Count the items' interactions; returns self."""
        if self.by not in ("users", "values"):
            raise ValueError(f"by must be 'users' or 'values', got {self.by!r}")
        UI, source = as_user_items(user_items)
        self._set_data(UI, source)
        self._count(UI)
        return self

    def partial_fit(self, new_events: NewEvents) -> Self:
        """Fold new events in (``new_events`` as in :meth:`ItemKNN.partial_fit`); returns self.

        The counts are recounted over the grown matrix: O(nnz), the cost of a fit, and
        bit-identical to one (a per-item delta would be cheaper but would round sums of
        float values differently from a fit).
        """
        grown, _ = _incremental.grown_data(self, new_events)
        if grown is not None:
            UI, source = as_user_items(grown)
            self._set_data(UI, source)
            self._count(UI)
        return self

    def _count(self, UI):
        if self.by == "users":
            counts = np.bincount(UI.indices, minlength=UI.shape[1])
        else:
            counts = np.bincount(UI.indices, weights=UI.data, minlength=UI.shape[1])
        self.item_scores_ = counts.astype(np.float64)

    def _recommend(self, rows, n, exclude_seen) -> TopK:
        idx = np.empty((len(rows), n), dtype=np.int64)
        scores = np.empty((len(rows), n), dtype=np.float64)
        for r0 in range(0, len(rows), _BLOCK_ROWS):
            batch = rows[r0 : r0 + _BLOCK_ROWS]
            block = np.broadcast_to(self.item_scores_, (len(batch), self.n_items_))
            mask = self.user_items_[batch] if exclude_seen else None
            res = topk(block, n, exclude=mask, backend=self.backend, n_threads=self.n_threads)
            idx[r0 : r0 + len(batch)], scores[r0 : r0 + len(batch)] = res
        return TopK(idx, scores)

    def _recommend_requests(self, req, n, exclude_seen, mask) -> TopK:
        seen = req.seen(self.user_items_) if exclude_seen else None
        if mask is not None and seen is not None:
            seen = sp.csr_matrix(seen + mask)
        elif mask is not None:
            seen = mask
        idx = np.empty((len(req), n), dtype=np.int64)
        scores = np.empty((len(req), n), dtype=np.float64)
        for r0 in range(0, len(req), _BLOCK_ROWS):
            r1 = min(len(req), r0 + _BLOCK_ROWS)
            block = np.broadcast_to(self.item_scores_, (r1 - r0, self.n_items_))
            res = topk(
                block,
                n,
                exclude=None if seen is None else seen[r0:r1],
                backend=self.backend,
                n_threads=self.n_threads,
            )
            idx[r0:r1], scores[r0:r1] = res
        return TopK(idx, scores)

    def _recommend_device(self, user_items, n, exclude_seen, exclude, candidates) -> TopK:
        backend = _device.device_backend(self, user_items)
        R = _device.request_rows(self, user_items, model_dtype=False)  # scores are float64
        cand, ex_indptr, ex_indices = _device.dot_filters(
            self, R, exclude, candidates, exclude_seen
        )
        scores = _device.fitted(
            self, "item_scores_", self.item_scores_, lambda s: device_copy(s.reshape(-1, 1))
        )
        ones = device_copy(np.ones((R.shape[0], 1)))  # the queries: n_requests floats
        return _dot_topk_block(
            ones, scores, None, cand, ex_indptr, ex_indices, n, backend, self.n_threads
        )

    def explain(
        self,
        user_id: ArrayLike | None = None,
        item_id: ArrayLike | None = None,
        *,
        user: Any = None,
        item: Any = None,
        user_items: RequestItems | None = None,
        exclude_seen: bool = True,
    ) -> Explanation:
        """The item's score is its count, the same for every user: all of it in ``base``, no
        contributions. The seen-item rule is that of :meth:`ItemKNN.explain`."""
        self._check_fitted()
        _, col = self._explain_target(user_id, item_id, user, item, user_items, exclude_seen)
        score = float(self.item_scores_[col])
        return Explanation(score, score, "popularity", np.zeros(0, np.int64), np.zeros(0))

    def _state(self) -> dict:
        return {"item_scores_": self.item_scores_}

    def _check_loaded_params(self) -> None:
        super()._check_loaded_params()
        if self.by not in ("users", "values"):
            raise ValueError(f"parameter by={self.by!r} must be 'users' or 'values'")

    def _load_state(self, arrays) -> None:
        self.item_scores_ = check_vector(arrays, "item_scores_", self.n_items_)


__all__ = ["Popularity"]
