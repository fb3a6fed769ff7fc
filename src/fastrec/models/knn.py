"""Neighbourhood models: item-kNN and user-kNN on cosine top-k neighbours.

Both fit with :func:`fastrec.cosine_topk` and recommend with the fused sparse kernels
(:func:`fastrec.recommend`, :func:`fastrec.recommend_user_based`, and
:func:`fastrec.recommend_product` for users unseen at fit time and masked requests): no dense
users x items matrix is ever built. Scores are sums of similarities weighted by the
interaction values. ``partial_fit`` folds new events in (see :mod:`._incremental`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from .. import _progress
from .._validation import check_csr, check_k, check_scalar
from .._validation_device import device_csr_copy
from ..similarity import _check_weighting, cosine_topk, prepare_cosine_topk
from ..topk import TopK, fused_recommend, product_topk
from . import _device, _incremental
from ._base import (
    Explanation,
    ItemFilter,
    NewEvents,
    Recommender,
    RequestItems,
    UserItems,
    as_user_items,
    csr_arrays,
    csr_from_arrays,
    topk_rows_of_csr,
)
from ._persist import check_csr_arrays, check_vector

if TYPE_CHECKING:
    from typing_extensions import Self


class _KNN(Recommender):
    def __init__(
        self,
        k: int = 100,
        shrink: float = 0.0,
        weighting: str | None = None,
        min_support: int = 1,
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
        reserve: int = 0,
        backend: str = "auto",
        n_threads: int | None = None,
        verbose: bool = True,
    ):
        self.k = k
        self.shrink = shrink
        self.weighting = weighting
        self.min_support = min_support
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.reserve = reserve
        self.backend = backend
        self.n_threads = n_threads
        self.verbose = verbose

    def _cosine_opts(self) -> dict:
        return dict(shrink=self.shrink, min_support=self.min_support, n_threads=self.n_threads)

    def _k_kept(self) -> int:
        """Neighbours kept per row: k, plus ``reserve`` more for partial_fit."""
        reserve = check_k(self.reserve + 1, "reserve + 1") - 1
        return check_k(self.k) + reserve

    def _neighbours_of(self, vectors):
        kept = self._k_kept()
        n_rows = vectors.shape[0]
        if not self.verbose or n_rows < _progress.MIN_ROWS or self.backend == "cuda":
            nb = cosine_topk(
                vectors,
                kept,
                weighting=self.weighting,
                bm25_k1=self.bm25_k1,
                bm25_b=self.bm25_b,
                backend=self.backend,
                **self._cosine_opts(),
            )
        else:
            # Row blocks of one prepared matrix: bit for bit the one-call result, with a bar.
            prepared = prepare_cosine_topk(
                vectors,
                weighting=self.weighting,
                bm25_k1=self.bm25_k1,
                bm25_b=self.bm25_b,
                backend=self.backend,
                n_threads=self.n_threads,
            )
            nb = sp.vstack(
                _progress.blockwise(
                    lambda rows: cosine_topk(prepared, kept, rows=rows, **self._cosine_opts()),
                    n_rows,
                    True,
                    f"fitting {type(self).__name__}",
                ),
                format="csr",
            )
        self._keep_neighbours(sp.csr_matrix(nb), None)
        return self.neighbours_

    def _keep_neighbours(self, ranked, complete):
        """neighbours_ (the first k of each row) and, with a reserve, reserve_ (every kept
        entry) and reserve_complete_ (whether a row lists every candidate), from a CSR whose
        rows hold their entries in rank order (value descending, then column)."""
        k, kept = int(self.k), self._k_kept()
        lengths = np.diff(ranked.indptr)
        rows = np.repeat(np.arange(ranked.shape[0]), lengths)
        first = (np.arange(ranked.nnz) - ranked.indptr[rows]) < k
        indptr = np.zeros(ranked.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.minimum(lengths, k), out=indptr[1:])
        prefix = sp.csr_matrix(
            (ranked.data[first], ranked.indices[first], indptr), shape=ranked.shape
        )
        if kept > k:
            # Kept in rank order (not canonical): partial_fit reads each row's last entry and
            # first k entries without sorting.
            self.reserve_ = _ranked(ranked)
            self.reserve_complete_ = (
                (lengths < kept) if complete is None else np.asarray(complete, dtype=bool)
            )
        else:
            self.__dict__.pop("reserve_", None)
            self.__dict__.pop("reserve_complete_", None)
        self.neighbours_ = _canonical(prefix)

    def _vectors(self, user_items):
        """The rows compared: items (users' columns) for ItemKNN, users for UserKNN."""
        raise NotImplementedError

    def _vectors_count(self) -> int:
        """How many rows are compared: n_items_ for ItemKNN, n_users_ for UserKNN."""
        raise NotImplementedError

    def fit(self, user_items: UserItems) -> Self:
        """Learn the neighbourhood; returns self. Fit memory: that of cosine_topk,
        O(nnz + n * (k + reserve) + threads * n) with compiled backends (n the rows
        compared). With ``reserve`` > 0 each row's next ``reserve`` neighbours are kept too
        (``reserve_``): partial_fit then recomputes far fewer rows (a neighbour that loses rank
        is replaced from the reserve); ``neighbours_`` is the same either way."""
        UI, source = as_user_items(user_items)
        self._set_data(UI, source)
        self._neighbours_of(self._vectors(self.user_items_))
        return self

    def partial_fit(self, new_events: NewEvents) -> Self:
        """Fold new events in; returns self. Results are bit-identical to ``fit`` on all events.

        ``new_events``: the grown data (an :class:`~fastrec.data.Interactions` made with
        ``Interactions.append``, whose id maps extend the model's; or, for a model fit on a bare
        matrix, the grown matrix whose top-left block is the fitted one), or a dict of new
        events in original ids ``{"users": ..., "items": ..., "values": ... (optional)}``
        appended with the rule the data was built with (no timestamps: "first"/"last" by
        arrival). Only the neighbourhood rows whose co-occurrences or norms changed are
        recomputed, from a :class:`~fastrec.PreparedCosine` of the grown matrix (O(nnz)); rows
        that merely meet a changed row are updated by merging the changed similarities into
        their stored top-k, and recomputed only where that cannot decide. When the estimated
        work of the changed rows passes ``_incremental.FULL_FIT_WORK_SHARE`` of a full fit's,
        or when the similarities cannot be updated row by row, this is a full fit:
        ``weighting`` "tfidf"/"bm25" (each weight depends on global counts: the number of rows
        compared and, for BM25, the mean row length, which new events change for every row),
        values that decreased, and negative values. ``partial_fit_path_`` says which ran.
        With ``reserve`` > 0 (extra neighbours kept per row) fewer rows need recomputing.
        """
        grown, changed = _incremental.grown_data(self, new_events)
        if grown is None:
            self.partial_fit_path_ = "unchanged"
            return self
        kept = self._k_kept()
        if getattr(self, "reserve_", None) is not None:
            old_nb, complete = self.reserve_, np.asarray(self.reserve_complete_, bool)
        else:  # no reserve: a row shorter than k listed every candidate
            old_nb = _incremental.rank_ordered(self.neighbours_)
            complete = np.diff(old_nb.indptr) < min(kept, int(self.k))
        n_old = self._vectors_count()
        self._set_data(*as_user_items(grown))
        touched = changed["items"] if isinstance(self, ItemKNN) else changed["users"]
        X = self._vectors(self.user_items_)
        why_full = _incremental.needs_full_fit(self, changed)
        if why_full is None:
            rows, why_full = _incremental.update_neighbours(
                self, X, old_nb, complete, n_old, touched, kept
            )
        if why_full is None:
            self._keep_neighbours(*rows)
        else:
            self._neighbours_of(X)
        self.partial_fit_path_ = "partial" if why_full is None else f"full ({why_full})"
        return self

    def _product(self, A, B, n, seen, mask) -> TopK:
        """Top-n of A @ B (one of them a fitted matrix, validated once per fitted state)."""
        return product_topk(
            self._checked(A), self._checked(B), n, seen, mask, self.backend, self.n_threads
        )

    def _checked(self, M):
        """``M`` as check_csr gives it; a fitted matrix is checked once per fitted state."""
        for name in ("neighbours_", "user_items_"):
            if M is getattr(self, name):
                return self._per_fitted_state(
                    name, M, lambda M, name=name: check_csr(M, name, drop_zeros=True)
                )
        return check_csr(M, "user_items", drop_zeros=True)

    def _state(self) -> dict:
        arrays = csr_arrays("neighbours", self.neighbours_)
        if getattr(self, "reserve_", None) is not None:
            arrays.update(csr_arrays("reserve", self.reserve_))
            arrays["reserve_complete_"] = self.reserve_complete_
        return arrays

    def _check_loaded_params(self) -> None:
        super()._check_loaded_params()
        check_k(self.k)
        check_scalar(self.reserve, "reserve", min_value=0, integer=True)
        check_scalar(self.shrink, "shrink", min_value=0)
        check_scalar(self.min_support, "min_support", min_value=1, integer=True)
        _check_weighting(self.weighting, self.bm25_k1, self.bm25_b)

    def _load_state(self, arrays) -> None:
        n = self.n_items_ if isinstance(self, ItemKNN) else self.n_users_
        check_csr_arrays("neighbours", arrays, (n, n))
        self.neighbours_ = csr_from_arrays("neighbours", arrays)
        if "reserve_indptr" in arrays:
            check_csr_arrays("reserve", arrays, (n, n), order="ranked")
            check_vector(arrays, "reserve_complete_", n, kinds="b")
            self.reserve_ = _ranked(csr_from_arrays("reserve", arrays))
            self.reserve_complete_ = np.asarray(arrays["reserve_complete_"], dtype=bool)

    def _filtered_neighbour_rows(self, rows, n, exclude, candidates, item_axis) -> TopK:
        """Top-n stored neighbours of the given rows of ``neighbours_``, with filters."""
        n = check_k(n, "n")
        size = self.neighbours_.shape[0]
        blocks = self._masks(exclude, candidates, len(rows), size, item_axis=item_axis)
        if blocks[0][2] is None:
            return topk_rows_of_csr(
                self.neighbours_, rows, n, backend=self.backend, n_threads=self.n_threads
            )
        parts = []
        for r0, r1, mask in blocks:
            Q = self.neighbours_[rows[r0:r1]]
            Q.sort_indices()
            entry_rows = np.repeat(np.arange(Q.shape[0]), np.diff(Q.indptr))
            drop = _contains(mask, entry_rows, Q.indices)
            Q.data[drop] = 0
            Q.eliminate_zeros()
            parts.append(
                topk_rows_of_csr(
                    Q, np.arange(Q.shape[0]), n, backend=self.backend, n_threads=self.n_threads
                )
            )
        return TopK(
            np.concatenate([p.indices for p in parts]), np.concatenate([p.scores for p in parts])
        )


def _contains(mask, rows, cols):
    from ..data import contains

    return contains(mask.indptr, mask.indices, mask.shape[1], rows, cols)


def _ranked(nb):
    """A CSR whose rows hold their entries in rank order: flagged unsorted, so that scipy
    never takes its columns for sorted."""
    nb = sp.csr_matrix(nb)
    nb.has_sorted_indices = False
    nb.has_canonical_format = False
    return nb


def _canonical(nb):
    # Kept canonical (columns ascending): the recommend kernels then take it as it is,
    # with no per-call sort; neighbour queries order their few entries by score instead.
    nb = sp.csr_matrix(nb)
    nb.has_sorted_indices = False
    nb.sort_indices()
    return nb


class ItemKNN(_KNN):
    """Item-based k-nearest-neighbours (cosine), as in implicit's CosineRecommender.

    ``fit(user_items)``: each item's ``k`` most similar items (cosine over the users' columns,
    optionally TF-IDF/BM25 weighted, damped by ``shrink``, at least ``min_support`` common
    users) -> ``neighbours_`` (items x items canonical CSR). score(u, j) = sum over the
    items i of u of value(u, i) * sim(i, j). Fit memory: that of cosine_topk,
    O(nnz + n_items * k + threads * n_items) with compiled backends (twice the n_items * k
    part with a progress bar). ``verbose``: a progress bar on stderr for fits and recommends
    still running after 2 s (computed in row blocks, same bits); False: silent.
    Stored zeros in ``user_items`` are dropped at fit: not interactions, never "seen".
    Unseen users (``recommend(user_items=...)``) are scored by the same fused kernel on the
    given rows: O(sum over the request's items of their k neighbours) per request.
    ``user_items`` may be a GPU device CSR (see :meth:`Recommender.recommend`): the
    neighbourhood is copied to the device once per fitted state (O(n_items * k) device
    memory, kept on the model), the request rows are read in place by the CUDA recommend
    kernel (the same bits as the "cuda" backend on host rows) and the result stays on the
    device. Filters: host ``exclude`` / ``candidates`` as for host requests (copied in), or
    ``exclude`` as a device CSR mask without ``candidates``.
    """

    _device_refusal = None

    def _vectors(self, user_items):
        return user_items.T.tocsr()

    def _vectors_count(self) -> int:
        return self.n_items_

    def _recommend(self, rows, n, exclude_seen) -> TopK:
        # fastrec.recommend on the fitted matrices, validated once per fitted state.
        UI = self._checked(self.user_items_)
        return fused_recommend(
            UI,
            UI,
            self._checked(self.neighbours_),
            n,
            rows,
            exclude_seen,
            None,
            self.backend,
            self.n_threads,
        )

    def _recommend_requests(self, req, n, exclude_seen, mask) -> TopK:
        R = req.seen(self.user_items_)
        return self._product(R, self.neighbours_, n, R if exclude_seen else None, mask)

    def _recommend_device(self, user_items, n, exclude_seen, exclude, candidates) -> TopK:
        backend = _device.device_backend(self, user_items)
        R = _device.request_rows(self, user_items)
        NB = _device.fitted(
            self, "neighbours_", self.neighbours_, lambda M: device_csr_copy(self._checked(M))
        )
        return _device.product_recommend(
            self, R, R, NB, n, exclude_seen, exclude, candidates, backend
        )

    def similar_items(
        self,
        item_ids: ArrayLike | None = None,
        n: int = 10,
        *,
        items: ArrayLike | None = None,
        exclude: ItemFilter | None = None,
        candidates: ItemFilter | None = None,
    ) -> TopK:
        """Each item's n most similar other items (at most ``k`` exist): best first, ties by
        smaller index. ``item_ids`` (columns) or ``items`` (original ids); ``exclude`` /
        ``candidates`` as in :meth:`recommend` (a sparse mask has one row per query item).
        """
        cols = self._query_items(item_ids, items)
        return self._filtered_neighbour_rows(cols, n, exclude, candidates, True)

    def similar_to_basket(
        self,
        item_ids: ArrayLike | None = None,
        n: int = 10,
        *,
        items: ArrayLike | None = None,
        values: ArrayLike | None = None,
        exclude: ItemFilter | None = None,
        candidates: ItemFilter | None = None,
    ) -> TopK:
        """Items similar to a basket of several items at once: one TopK row.

        score(j) = sum over the basket items i of value_i * sim(i, j) (values default 1):
        what :meth:`recommend` gives a user whose items are the basket, basket items excluded.
        """
        cols = self._query_items(item_ids, items)
        vals = np.ones(len(cols)) if values is None else np.asarray(values, np.float64)
        if vals.shape != cols.shape or not np.all(np.isfinite(vals)):
            raise ValueError(f"values must be {len(cols)} finite numbers, one per basket item")
        row = sp.csr_matrix((vals, (np.zeros(len(cols), np.int64), cols)), shape=(1, self.n_items_))
        return self.recommend(user_items=row, n=n, exclude=exclude, candidates=candidates)

    def _query_items(self, item_ids, items):
        self._check_fitted()
        if (item_ids is None) == (items is None):
            raise ValueError("give exactly one of item_ids (columns) or items (original ids)")
        if items is not None:
            return self.item_index(np.asarray(items).reshape(-1))
        return self._check_items(item_ids)

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
        """The user's items and each one's share value(u, i) * sim(i, item) of the score.

        ``user_id`` (row) / ``user`` (original id) / ``user_items`` (one request row), and
        ``item_id`` (column) / ``item`` (original id). The contributions (float64, the user's
        items that list ``item`` as a neighbour, by item column) sum to the score recommend
        gives (to float rounding of its dtype); an item no item of the user lists scores
        nothing (empty contributions, score 0; recommend never returns it). A seen item with
        ``exclude_seen`` is a ValueError (recommend never returns it).
        """
        self._check_fitted()
        req, col = self._explain_target(user_id, item_id, user, item, user_items, exclude_seen)
        R = req.seen(self.user_items_)
        hist, vals = R.indices, R.data.astype(np.float64)
        sims = np.asarray(self.neighbours_[hist, col].todense()).ravel().astype(np.float64)
        keep = sims != 0
        sources, contrib = hist[keep].astype(np.int64), vals[keep] * sims[keep]
        ids = None if self.item_ids_ is None else self.item_ids_[sources]
        return Explanation(float(contrib.sum()), 0.0, "items", sources, contrib, ids)


class UserKNN(_KNN):
    """User-based k-nearest-neighbours (cosine).

    ``fit(user_items)``: each user's ``k`` most similar users -> ``neighbours_`` (users x users
    canonical CSR). score(u, j) = sum over the neighbours v of u of sim(u, v) *
    value(v, j). Parameters as :class:`ItemKNN` (weighting applies to users' rows). An unseen
    user (``recommend(user_items=...)``) gets the k neighbours among the fitted users that a
    fit on the fitted users plus the request rows would give it (the other requests not
    counted): a :func:`~fastrec.prepare_cosine_topk` of the stacked matrix per call, O(nnz).
    Stored zeros in ``user_items`` are dropped at fit: not interactions, never "seen".
    A GPU device CSR as ``user_items`` is a TypeError (the request's neighbours are found on
    the host, see ``_device_refusal``): copy it to the host.
    """

    _device_refusal = (
        "an unseen user's neighbours come from a cosine top-k over the fitted users and the "
        "request rows (with shrink, min_support and weighting), which runs on the host"
    )

    def _vectors(self, user_items):
        return user_items

    def _vectors_count(self) -> int:
        return self.n_users_

    def _recommend(self, rows, n, exclude_seen) -> TopK:
        # fastrec.recommend_user_based on the fitted matrices, validated once per fitted state.
        UI = self._checked(self.user_items_)
        return fused_recommend(
            UI,
            self._checked(self.neighbours_),
            UI,
            n,
            rows,
            exclude_seen,
            None,
            self.backend,
            self.n_threads,
        )

    def _request_neighbours(self, R) -> sp.csr_matrix:
        """(n_requests x n_users) neighbours of request rows among the fitted users."""
        n_req, n_users = R.shape[0], self.n_users_
        stacked = sp.vstack([self.user_items_, R], format="csr")
        prepared = prepare_cosine_topk(
            stacked,
            weighting=self.weighting,
            bm25_k1=self.bm25_k1,
            bm25_b=self.bm25_b,
            backend=self.backend,
            n_threads=self.n_threads,
        )
        rows = np.arange(n_users, n_users + n_req, dtype=np.int64)
        # k + n_req per row: even if every other request ranks above the fitted users, k of
        # these remain; cosine_topk rows are sorted by score, so the first k kept are the best.
        nb = sp.csr_matrix(cosine_topk(prepared, self.k + n_req, rows=rows, **self._cosine_opts()))
        keep = nb.indices < n_users
        entry_rows = np.repeat(np.arange(n_req), np.diff(nb.indptr))
        kept_before = np.r_[0, np.cumsum(keep)]
        rank = kept_before[1:] - kept_before[nb.indptr[entry_rows]] - 1
        keep &= rank < self.k
        out = sp.csr_matrix(
            (nb.data[keep], (entry_rows[keep], nb.indices[keep])), shape=(n_req, n_users)
        )
        return _canonical(out)

    def _recommend_requests(self, req, n, exclude_seen, mask) -> TopK:
        R = req.seen(self.user_items_)
        A = self.neighbours_[req.rows] if req.R is None else self._request_neighbours(req.R)
        return self._product(A, self.user_items_, n, R if exclude_seen else None, mask)

    def similar_users(
        self,
        user_ids: ArrayLike | None = None,
        n: int = 10,
        *,
        users: ArrayLike | None = None,
        exclude: ArrayLike | sp.spmatrix | sp.sparray | None = None,
        candidates: ArrayLike | sp.spmatrix | sp.sparray | None = None,
    ) -> TopK:
        """Each user's n most similar other users (at most ``k`` exist), best first, ties by
        smaller row. ``user_ids`` (rows) or ``users`` (original ids); ``exclude`` /
        ``candidates``: user rows (1-D, for every query) or a sparse (queries x n_users) mask.
        Decode the result with :meth:`decode_users`."""
        self._check_fitted()
        if (user_ids is None) == (users is None):
            raise ValueError("give exactly one of user_ids (rows) or users (original ids)")
        rows = (
            self.user_index(np.asarray(users).reshape(-1))
            if users is not None
            else self._check_users(user_ids)
        )
        return self._filtered_neighbour_rows(rows, n, exclude, candidates, False)

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
        """The user's neighbours that have the item and each one's share sim(u, v) *
        value(v, item): they sum to the score recommend gives (to float rounding). Arguments
        and the seen-item rule as :meth:`ItemKNN.explain`; ``sources`` are user rows."""
        self._check_fitted()
        req, col = self._explain_target(user_id, item_id, user, item, user_items, exclude_seen)
        A = self.neighbours_[req.rows] if req.R is None else self._request_neighbours(req.R)
        nbrs, sims = A.indices.astype(np.int64), A.data.astype(np.float64)
        vals = np.asarray(self.user_items_[nbrs, col].todense()).ravel().astype(np.float64)
        keep = vals != 0
        sources, contrib = nbrs[keep], sims[keep] * vals[keep]
        ids = None if self.user_ids_ is None else self.user_ids_[sources]
        return Explanation(float(contrib.sum()), 0.0, "users", sources, contrib, ids)


__all__ = ["ItemKNN", "UserKNN"]
