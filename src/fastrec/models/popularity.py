"""The popularity baseline: every user gets the most interacted-with items they have not seen."""
from __future__ import annotations

import numpy as np

from ..topk import TopK, topk
from ._base import Recommender, as_user_items
from ._persist import check_vector

# Users ranked per call of fastrec.topk: bounds the dense block to ROWS x n_items scores.
_BLOCK_ROWS = 1024


class Popularity(Recommender):
    """Item score = number of users who interacted with it (``by="users"``) or the sum of the
    interaction values (``by="values"``); the same for every user. Recommending ranks the
    scores with :func:`fastrec.topk`, seen items masked, ``_BLOCK_ROWS`` users at a time
    (memory O(_BLOCK_ROWS * n_items)). Ties go to the smaller item index.
    Stored zeros in ``user_items`` are dropped at fit: not interactions, never "seen".
    """

    def __init__(self, by: str = "users", backend: str = "auto", n_threads=None):
        self.by = by
        self.backend = backend
        self.n_threads = n_threads

    def fit(self, user_items):
        """Count the items' interactions; returns self."""
        if self.by not in ("users", "values"):
            raise ValueError(f"by must be 'users' or 'values', got {self.by!r}")
        UI, source = as_user_items(user_items)
        self._set_data(UI, source)
        if self.by == "users":
            counts = np.bincount(UI.indices, minlength=UI.shape[1])
        else:
            counts = np.bincount(UI.indices, weights=UI.data, minlength=UI.shape[1])
        self.item_scores_ = counts.astype(np.float64)
        return self

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

    def _state(self) -> dict:
        return {"item_scores_": self.item_scores_}

    def _check_loaded_params(self) -> None:
        super()._check_loaded_params()
        if self.by not in ("users", "values"):
            raise ValueError(f"parameter by={self.by!r} must be 'users' or 'values'")

    def _load_state(self, arrays) -> None:
        self.item_scores_ = check_vector(arrays, "item_scores_", self.n_items_)


__all__ = ["Popularity"]
