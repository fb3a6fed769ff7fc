"""Hybrid recommender: CF candidate generation, then a CTR re-ranker or a weighted score blend.

Candidates: each CF model (default ItemKNN, UserKNN and Popularity) proposes its top
``n_candidates`` unseen items per user; the union is scored. Per candidate the features are, for
each CF model m, the score normalised by that user's best score from m (0 when m did not
propose the item), the reciprocal rank and a "proposed" flag; the weighted blend of the
normalised scores; the item's log-popularity and the user's log-activity (both scaled to
[0, 1]); one-hot crosses of the user's and the item's categorical side features, and of the
request's context with the item's features (when fit on :class:`fastrec.data.Interactions`
that has them: e.g. segment x category, daypart x category).

Context: when the training Interactions carries ``contexts`` (one code per interaction), the
ranker is trained on requests = distinct (user, context) pairs of the hold-out, a candidate
being positive when the user interacted with it in that context; ``recommend(...,
context={"daypart": codes})`` then ranks for the given context of each request (no context:
the context features are left at zero, i.e. unknown).

``rerank=True`` (default): a :class:`LogisticCTR` (``ranker``) learns P(click) from those
features on a seeded per-user hold-out of the training data (CF models refit on the rest), and
ranks by it. ``rerank=False``: the blend ranks. Either way no dense users x items matrix is
built: the work per user is O(models * n_candidates), memory O(2048 users * candidates).
"""

from __future__ import annotations

import copy
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from .._validation import check_k, check_scalar
from ..data import Interactions, contains, per_user_split
from ..topk import TopK, topk
from ._base import (
    Explanation,
    ItemFilter,
    Recommender,
    RequestItems,
    UserItems,
    as_user_items,
)
from ._persist import check_vector
from .knn import ItemKNN, UserKNN
from .popularity import Popularity

if TYPE_CHECKING:
    from typing_extensions import Self

    from .logistic import LogisticCTR

# Users scored per block in recommend: bounds the candidate feature matrix.
_BLOCK_USERS = 2048
_CF_CLASSES = {cls.__name__: cls for cls in (ItemKNN, UserKNN, Popularity)}


def _default_ranker():
    from .logistic import LogisticCTR

    return LogisticCTR(C=1.0)


class Hybrid(Recommender):
    """CF candidates re-ranked by a logistic CTR model, or blended by normalised scores.

    Parameters: ``candidates`` (list of CF models; default ItemKNN(k=100), UserKNN(k=50),
    Popularity()), ``weights`` (blend weights, default equal), ``rerank``, ``ranker`` (an
    unfitted LogisticCTR; default ``LogisticCTR(C=1.0)``), ``n_candidates`` per model and user,
    ``validation_fraction`` of each user's items held out to train the ranker,
    ``max_train_users`` (users sampled for ranker training), ``seed``.
    A GPU device CSR as ``user_items`` is a TypeError (the features and the ranking are
    built on the host): copy it to the host.
    """

    _device_refusal = (
        "its candidates' features and the CTR re-ranking are built on the host from each CF "
        "model's scores"
    )

    # Set by _from_params from a model file, read by _check_loaded_params and _load_state.
    _ranker_spec: dict[str, Any] | None
    _feature_names: tuple[list[str], list[str]]

    def recommend(
        self,
        user_ids: ArrayLike | None = None,
        n: int = 10,
        *,
        users: ArrayLike | None = None,
        user_items: RequestItems | None = None,
        exclude_seen: bool = True,
        exclude: ItemFilter | None = None,
        candidates: ItemFilter | None = None,
        context: dict[str, ArrayLike] | None = None,
    ) -> TopK:
        """Top-n items per user row: TopK (n_requests, n).

        ``user_ids`` (rows), ``users`` (original ids) or ``user_items`` (users unseen at fit
        time: every CF model proposes from the given rows; the user's activity is scaled as
        the fitted users' and its side features are unknown, so their crosses are zero);
        ``exclude`` / ``candidates`` as in :meth:`Recommender.recommend`: they filter the CF
        candidates after scoring (a candidate's features do not depend on the others, so the
        kept scores are unchanged). Request rows are scored in one block (memory
        O(requests * candidates)). ``context``: None, or a dict giving every context the
        model was fit with (name -> one code, or one code per request), e.g.
        ``{"daypart": 2}``.
        """
        req = self._requests(user_ids, users, user_items)
        n = check_k(n, "n")
        ctx = self._check_context(context, np.arange(len(req)))
        blocks = self._masks(exclude, candidates, len(req), self.n_items_)
        if req.R is None and blocks[0][2] is None:
            return self._recommend(req.rows, n, bool(exclude_seen), ctx)
        parts = []
        for r0, r1, mask in blocks:
            b = req.block(r0, r1)
            c = None if ctx is None else ctx[r0:r1]
            if b.R is None:
                parts.append(self._recommend(b.rows, n, bool(exclude_seen), c, mask))
            else:
                parts.append(
                    self._recommend_block(
                        np.arange(r1 - r0, dtype=np.int64), n, bool(exclude_seen), c, mask, b.R
                    )
                )
        return TopK(
            np.concatenate([p.indices for p in parts]), np.concatenate([p.scores for p in parts])
        )

    def _check_context(self, context, rows):
        if context is None:
            return None
        names = getattr(self, "context_names_", [])
        if not names:
            raise ValueError("this Hybrid was fit without contexts; pass context=None")
        if not isinstance(context, dict) or set(context) != set(names):
            raise ValueError(f"context must be a dict with the keys {names}, got {context!r}")
        cols = []
        for name, size in zip(names, self.context_sizes_):
            codes = np.asarray(context[name])
            if codes.ndim == 0:
                codes = np.full(len(rows), codes)
            if codes.shape != (len(rows),) or (codes.size and codes.dtype.kind not in "iu"):
                raise ValueError(
                    f"context[{name!r}] must be one integer code or one per user "
                    f"({len(rows)}), got shape {codes.shape} dtype {codes.dtype}"
                )
            if codes.size and (codes.min() < 0 or codes.max() >= size):
                raise ValueError(f"context[{name!r}] codes must lie in [0, {size}) as in fit")
            cols.append(codes.astype(np.int64))
        return np.stack(cols, axis=1)

    def __init__(
        self,
        candidates: Sequence[Recommender] | None = None,
        weights: Sequence[float] | np.ndarray | None = None,
        rerank: bool = True,
        ranker: LogisticCTR | None = None,
        n_candidates: int = 50,
        validation_fraction: float = 0.2,
        max_train_users: int = 2000,
        seed: int = 0,
    ):
        self.candidates = candidates
        self.weights = weights
        self.rerank = rerank
        self.ranker = ranker
        self.n_candidates = n_candidates
        self.validation_fraction = validation_fraction
        self.max_train_users = max_train_users
        self.seed = seed

    # -- configuration -------------------------------------------------------------------
    def _candidate_models(self) -> list[Recommender]:
        if self.candidates is None:
            return [ItemKNN(k=100), UserKNN(k=50), Popularity()]
        models = list(self.candidates)
        if not models:
            raise ValueError("candidates must name at least one CF model")
        for m in models:
            if type(m).__name__ not in _CF_CLASSES:
                raise TypeError(
                    f"candidates must be ItemKNN, UserKNN or Popularity models, got {m!r}"
                )
        return models

    def _weights(self, n_models):
        if self.weights is None:
            return np.full(n_models, 1.0 / n_models)
        w = np.asarray(self.weights, dtype=np.float64)
        if w.shape != (n_models,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(
                f"weights must be {n_models} non-negative numbers with a positive sum, "
                f"got {self.weights!r}"
            )
        return w / w.sum()

    # -- fitting -------------------------------------------------------------------------
    def fit(self, user_items: UserItems) -> Self:
        """Fit the CF models (and, with ``rerank``, the CTR ranker); returns self."""
        UI, source = as_user_items(user_items)
        n_cand = check_scalar(self.n_candidates, "n_candidates", min_value=1, integer=True)
        models = self._candidate_models()
        self.weights_ = self._weights(len(models))
        self._set_data(UI, source)
        self.user_features_ = dict(source.user_features) if source is not None else {}
        self.item_features_ = dict(source.item_features) if source is not None else {}
        contexts = dict(source.contexts) if source is not None else {}
        self.context_names_ = sorted(contexts)
        self.context_sizes_ = np.array(
            [int(contexts[c].max()) + 1 if contexts[c].size else 1 for c in self.context_names_],
            dtype=np.int64,
        )
        self._check_side_features()
        self.ranker_ = None
        if self.rerank:
            self.ranker_ = self._fit_ranker(models, n_cand, contexts)
        self.candidates_ = [m.clone().fit(self.user_items_) for m in models]
        for m in self.candidates_:  # the id maps, so that their neighbour queries take ids
            m.user_ids_, m.item_ids_ = self.user_ids_, self.item_ids_
        self.item_pop_ = self._scaled_log(
            np.bincount(self.user_items_.indices, minlength=self.n_items_)
        )
        return self

    def _check_side_features(self):
        for feats, n, what in (
            (self.user_features_, self.n_users_, "user"),
            (self.item_features_, self.n_items_, "item"),
        ):
            for name, codes in feats.items():
                codes = np.asarray(codes)
                if (
                    codes.shape != (n,)
                    or codes.dtype.kind not in "iu"
                    or (codes.size and codes.min() < 0)
                ):
                    raise ValueError(
                        f"{what} feature {name!r} must hold one non-negative integer code per "
                        f"{what} ({n}), got shape {codes.shape} dtype {codes.dtype}"
                    )

    @staticmethod
    def _scaled_log(counts):
        v = np.log1p(np.asarray(counts, dtype=np.float64))
        top = v.max() if v.size else 0.0
        return v / top if top > 0 else v

    def _fit_ranker(self, models, n_cand, contexts):
        frac = check_scalar(
            self.validation_fraction,
            "validation_fraction",
            min_value=0,
            max_value=1,
            min_inclusive=False,
        )
        max_users = check_scalar(self.max_train_users, "max_train_users", min_value=1, integer=True)
        whole = Interactions(
            self.user_items_, np.arange(self.n_users_), np.arange(self.n_items_), contexts=contexts
        )
        part, held = per_user_split(whole, frac, seed=self.seed)
        rng = np.random.default_rng(self.seed)
        users = np.flatnonzero(np.diff(held.matrix.indptr) > 0)
        if users.size == 0:
            raise ValueError("too little data to train the ranker: no user has a held-out item")
        if users.size > max_users:
            users = np.sort(rng.choice(users, size=max_users, replace=False))
        fitted = [m.clone().fit(part.matrix) for m in models]
        item_pop = self._scaled_log(np.bincount(part.matrix.indices, minlength=self.n_items_))
        cand_rows, cand_items, X = self._candidates_and_features(
            fitted, part.matrix, item_pop, users, n_cand, exclude_seen=True
        )
        H = held.matrix
        if not self.context_names_:
            y = contains(H.indptr, H.indices, self.n_items_, users[cand_rows], cand_items)
            X = self._with_context(X, None, cand_items)
        else:
            # Requests: distinct (user, context) pairs of the sampled users' held-out entries.
            # Each request gets its user's candidates; positives are the items the user took
            # in that very context.
            n_codes = int(np.prod(self.context_sizes_))
            h_rows = np.repeat(np.arange(self.n_users_, dtype=np.int64), np.diff(H.indptr))
            h_code = self._encode(np.stack([held.contexts[c] for c in self.context_names_], 1))
            sampled = np.isin(h_rows, users)
            req = np.unique(h_rows[sampled] * n_codes + h_code[sampled])
            req_user, req_code = req // n_codes, req % n_codes
            rep_req, idx = _expand(cand_rows, users.size, np.searchsorted(users, req_user))
            items = cand_items[idx]
            X = self._with_context(X[idx], self._decode(req_code)[rep_req], items)
            held_keys = np.sort((h_rows * self.n_items_ + H.indices) * n_codes + h_code)
            want = (req_user[rep_req] * self.n_items_ + items) * n_codes + req_code[rep_req]
            at = np.minimum(np.searchsorted(held_keys, want), held_keys.size - 1)
            y = held_keys[at] == want
        if y.all() or not y.any():
            raise ValueError("too little data to train the ranker: candidate labels are constant")
        ranker = copy.deepcopy(self.ranker) if self.ranker is not None else _default_ranker()
        ranker.fit(X, y.astype(np.float64))
        self.ranker_train_size_ = (int(X.shape[0]), int(y.sum()))
        return ranker

    def _encode(self, ctx):
        """Mixed-radix code of each row of context codes (n, n_contexts)."""
        code = np.zeros(ctx.shape[0], dtype=np.int64)
        for c, size in enumerate(self.context_sizes_):
            code = code * int(size) + ctx[:, c]
        return code

    def _decode(self, code):
        out = np.empty((code.size, len(self.context_sizes_)), dtype=np.int64)
        for c in range(len(self.context_sizes_) - 1, -1, -1):
            size = int(self.context_sizes_[c])
            code, out[:, c] = code // size, code % size
        return out

    # -- candidates and features ---------------------------------------------------------
    def _candidates_and_features(self, models, UI, item_pop, rows, n_cand, exclude_seen, R=None):
        """(row position, item, feature CSR) for the union of the models' candidates.

        Candidates are ordered by (row position, item) ascending. ``R``: request rows of users
        unseen at fit time (then ``rows`` are positions in R): their activity is scaled as the
        fitted users' and their side features are unknown (zero crosses).
        """
        n_models = len(models)
        parts = []
        for m_i, model in enumerate(models):
            if R is None:
                res = model.recommend(rows, n=n_cand, exclude_seen=exclude_seen)
            else:
                res = model.recommend(user_items=R, n=n_cand, exclude_seen=exclude_seen)
            idx, scores = res.indices, np.asarray(res.scores, dtype=np.float64)
            valid = idx >= 0
            best = np.where(valid[:, :1], scores[:, :1], 1.0)
            norm = np.divide(scores, best, out=np.zeros_like(scores), where=valid & (best > 0))
            r, c = np.nonzero(valid)
            parts.append((r, idx[r, c], np.full(r.size, m_i), norm[r, c], 1.0 / (c + 1.0)))
        r = np.concatenate([p[0] for p in parts])
        items = np.concatenate([p[1] for p in parts])
        model_of = np.concatenate([p[2] for p in parts])
        norm = np.concatenate([p[3] for p in parts])
        rr = np.concatenate([p[4] for p in parts])
        keys, inverse = np.unique(r * self.n_items_ + items, return_inverse=True)
        cand_rows, cand_items = keys // self.n_items_, keys % self.n_items_
        n = keys.size
        dense = np.zeros((n, 3 * n_models + 3))
        dense[inverse, model_of] = norm
        dense[inverse, n_models + model_of] = rr
        dense[inverse, 2 * n_models + model_of] = 1.0
        dense[:, 3 * n_models] = dense[:, :n_models] @ self.weights_
        dense[:, 3 * n_models + 1] = item_pop[cand_items]
        if R is None:
            activity = self._scaled_log(np.diff(UI.indptr))
            dense[:, 3 * n_models + 2] = activity[rows[cand_rows]]
            crosses = self._cross_features(rows[cand_rows], cand_items)
        else:
            top = np.log1p(np.diff(UI.indptr).max(initial=0))
            act = np.log1p(np.diff(R.indptr).astype(np.float64))
            dense[:, 3 * n_models + 2] = (act / top if top > 0 else act)[cand_rows]
            crosses = [
                sp.csr_matrix((n, b.shape[1]))
                for b in self._cross_features(np.zeros(0, np.int64), np.zeros(0, np.int64))
            ]
        blocks = [sp.csr_matrix(dense)] + crosses
        X = sp.hstack(blocks, format="csr")
        return cand_rows, cand_items, X

    def _cross_features(self, users, items):
        """One-hot (user feature code x item feature code) blocks, one per pair of features.

        The width of each block is fixed at fit time (codes seen then), so that training and
        serving features line up.
        """
        n = users.size
        blocks = []
        for u_name in sorted(self.user_features_):
            u_codes = np.asarray(self.user_features_[u_name])
            n_u = int(u_codes.max()) + 1 if u_codes.size else 1
            for i_name in sorted(self.item_features_):
                i_codes = np.asarray(self.item_features_[i_name])
                n_i = int(i_codes.max()) + 1 if i_codes.size else 1
                cross = u_codes[users] * n_i + i_codes[items]
                blocks.append(
                    sp.csr_matrix((np.ones(n), (np.arange(n), cross)), shape=(n, n_u * n_i))
                )
        return blocks

    def _with_context(self, X, ctx_rows, items):
        """X with the one-hot (context code x item feature code) blocks appended.

        ``ctx_rows``: (n, n_contexts) codes per row of X, or None (unknown: all zeros).
        """
        n = items.size
        blocks = [X]
        for c, size in enumerate(getattr(self, "context_sizes_", [])):
            for i_name in sorted(self.item_features_):
                i_codes = np.asarray(self.item_features_[i_name])
                n_i = int(i_codes.max()) + 1 if i_codes.size else 1
                width = int(size) * n_i
                if ctx_rows is None:
                    blocks.append(sp.csr_matrix((n, width)))
                    continue
                cross = ctx_rows[:, c] * n_i + i_codes[items]
                blocks.append(sp.csr_matrix((np.ones(n), (np.arange(n), cross)), shape=(n, width)))
        return sp.hstack(blocks, format="csr") if len(blocks) > 1 else X

    # -- recommending --------------------------------------------------------------------
    def _recommend(self, rows, n, exclude_seen, ctx=None, mask=None) -> TopK:
        # Blocks of users bound the candidate features' memory to O(_BLOCK_USERS * candidates).
        parts = [
            self._recommend_block(
                rows[r0 : r0 + _BLOCK_USERS],
                n,
                exclude_seen,
                None if ctx is None else ctx[r0 : r0 + _BLOCK_USERS],
                None if mask is None else mask[r0 : r0 + _BLOCK_USERS],
            )
            for r0 in range(0, len(rows), _BLOCK_USERS)
        ]
        if not parts:
            return TopK(np.zeros((0, n), dtype=np.int64), np.zeros((0, n)))
        return TopK(
            np.concatenate([p.indices for p in parts]), np.concatenate([p.scores for p in parts])
        )

    def _scored_candidates(self, rows, n_cand, exclude_seen, ctx, R=None):
        """(position in rows, item, score) of each candidate, by (position, item).

        A user repeated in ``rows`` (one row per context, say) has its CF candidates and
        base features computed once, then copied per row. With request rows ``R``, ``rows``
        are their positions.
        """
        uniq, pos = np.unique(rows, return_inverse=True)
        cand_u, cand_items, X = self._candidates_and_features(
            self.candidates_, self.user_items_, self.item_pop_, uniq, n_cand, exclude_seen, R
        )
        if uniq.size == rows.size and np.array_equal(uniq, rows):
            cand_rows = cand_u
        else:
            cand_rows, idx = _expand(cand_u, uniq.size, pos.reshape(-1))
            cand_items, X = cand_items[idx], X[idx]
        X = self._with_context(X, None if ctx is None else ctx[cand_rows], cand_items)
        return cand_rows, cand_items, self._score(X)

    def _recommend_block(self, rows, n, exclude_seen, ctx, mask=None, R=None) -> TopK:
        n_cand = max(int(self.n_candidates), n)
        cand_rows, cand_items, score = self._scored_candidates(rows, n_cand, exclude_seen, ctx, R)
        if mask is not None:
            keep = ~contains(mask.indptr, mask.indices, self.n_items_, cand_rows, cand_items)
            cand_rows, cand_items, score = cand_rows[keep], cand_items[keep], score[keep]
        # Lay each row's candidates (ascending items) out densely, padded with -inf.
        counts = np.bincount(cand_rows, minlength=len(rows))
        width = max(int(counts.max()) if counts.size else 0, 1)
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        col = np.arange(cand_rows.size) - starts[cand_rows]
        S = np.full((len(rows), width), -np.inf)
        S[cand_rows, col] = score
        I = np.full((len(rows), width), -1, dtype=np.int64)
        I[cand_rows, col] = cand_items
        best = topk(S, n)
        found = best.indices >= 0
        items = np.where(found, np.take_along_axis(I, np.maximum(best.indices, 0), 1), -1)
        return TopK(items, best.scores)

    def explain(
        self,
        user_id: ArrayLike | None = None,
        item_id: ArrayLike | None = None,
        *,
        user: Any = None,
        item: Any = None,
        user_items: RequestItems | None = None,
        exclude_seen: bool = True,
        context: dict[str, ArrayLike] | None = None,
    ) -> Explanation:
        """The re-ranker's view of one (user, item) candidate.

        With ``rerank``: kind "features", ``contributions`` = coef_j * x_j over the
        candidate's non-zero features (``sources`` = feature columns), ``base`` = the
        intercept; they sum to ``score``, the logit, whose sigmoid is the probability that
        recommend ranks by (``details["probability"]``). Without: kind "models", the blend
        weight times each CF model's normalised score (``sources`` = positions in
        ``candidates_``), summing to the blend score recommend ranks by. ``details["cf_score"]``
        is the CF blend the candidate started from. An item that no CF model proposed for the
        user is not scored by Hybrid: a ValueError, as is a seen item with ``exclude_seen``.
        """
        self._check_fitted()
        req, col = self._explain_target(user_id, item_id, user, item, user_items, exclude_seen)
        rows = req.rows if req.R is None else np.zeros(1, np.int64)
        ctx = self._check_context(context, rows)
        cand_u, cand_items, X = self._candidates_and_features(
            self.candidates_,
            self.user_items_,
            self.item_pop_,
            rows,
            int(self.n_candidates),
            bool(exclude_seen),
            req.R,
        )
        at = np.flatnonzero(cand_items == col)
        if at.size == 0:
            raise ValueError(
                f"item {col} is not among the CF candidates of the user: Hybrid gives it no score"
            )
        X = self._with_context(X[at], None if ctx is None else ctx[cand_u[at]], cand_items[at])
        x = sp.csr_matrix(X[0])
        n_models = len(self.candidates_)
        cf_score = float(x[0, 3 * n_models])
        if self.ranker_ is not None:
            feats = x.indices.astype(np.int64)
            contrib = np.asarray(self.ranker_.coef_, np.float64)[feats] * x.data
            base = float(np.asarray(self.ranker_.intercept_, np.float64).reshape(-1)[0])
            logit = base + float(contrib.sum())
            prob = float(self._score(x)[0])
            return Explanation(
                logit,
                base,
                "features",
                feats,
                contrib,
                None,
                {"probability": prob, "cf_score": cf_score},
            )
        norm = np.asarray(x[:, :n_models].todense()).ravel()
        contrib = self.weights_ * norm
        return Explanation(
            float(contrib.sum()),
            0.0,
            "models",
            np.arange(n_models, dtype=np.int64),
            contrib,
            None,
            {"cf_score": cf_score},
        )

    def _first(self, cls, what):
        self._check_fitted()
        for m in self.candidates_:
            if isinstance(m, cls):
                return m
        raise ValueError(f"this Hybrid has no {cls.__name__} among its candidates: no {what}")

    def similar_items(self, item_ids: ArrayLike | None = None, n: int = 10, **kwargs: Any) -> TopK:
        """:meth:`ItemKNN.similar_items` of the first ItemKNN among the CF models."""
        return self._first(ItemKNN, "item neighbours").similar_items(item_ids, n, **kwargs)

    def similar_to_basket(
        self, item_ids: ArrayLike | None = None, n: int = 10, **kwargs: Any
    ) -> TopK:
        """:meth:`ItemKNN.similar_to_basket` of the first ItemKNN among the CF models."""
        return self._first(ItemKNN, "item neighbours").similar_to_basket(item_ids, n, **kwargs)

    def similar_users(self, user_ids: ArrayLike | None = None, n: int = 10, **kwargs: Any) -> TopK:
        """:meth:`UserKNN.similar_users` of the first UserKNN among the CF models."""
        return self._first(UserKNN, "user neighbours").similar_users(user_ids, n, **kwargs)

    def candidate_scores(
        self,
        user_ids: ArrayLike,
        exclude_seen: bool = True,
        context: dict[str, ArrayLike] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions in user_ids, items, scores) of every candidate of the given users.

        Unranked; ordered by (position, item). The scores are the ranker's P(click) with
        ``rerank`` (what a CTR evaluation needs: label them with held-out interactions) and the
        blend otherwise. ``context`` as in :meth:`recommend`.
        """
        rows = self._check_users(user_ids)
        ctx = self._check_context(context, rows)
        return self._scored_candidates(rows, int(self.n_candidates), bool(exclude_seen), ctx)

    def _score(self, X) -> np.ndarray:
        if self.ranker_ is not None:
            # LogisticCTR.predict_proba1: P(click) alone from the fused sigmoid kernel.
            proba1 = getattr(self.ranker_, "predict_proba1", None)
            if proba1 is not None:
                return np.asarray(proba1(X), dtype=np.float64)
            p = np.asarray(self.ranker_.predict_proba(X), dtype=np.float64)
            return p[:, 1] if p.ndim == 2 else p
        return np.asarray(X[:, 3 * len(self.candidates_)].toarray()).ravel()

    # -- persistence ---------------------------------------------------------------------
    def _params_json(self) -> dict:
        if self.ranker_ is not None and type(self.ranker_).__module__ != "fastrec.models.logistic":
            raise TypeError(
                f"only a LogisticCTR ranker can be saved in a model file, not "
                f"{type(self.ranker_).__name__}"
            )
        models = self.candidates_
        params = {k: v for k, v in self.get_params().items() if k not in ("candidates", "ranker")}
        params["weights"] = None if self.weights is None else [float(w) for w in self.weights]
        params["candidates"] = [
            {"class": type(m).__name__, "params": m.get_params()} for m in models
        ]
        params["ranker"] = None
        if self.ranker_ is not None:
            params["ranker"] = {"class": type(self.ranker_).__name__}
        params["user_feature_names"] = sorted(self.user_features_)
        params["item_feature_names"] = sorted(self.item_features_)
        params["context_names"] = list(self.context_names_)
        return params

    @classmethod
    def _from_params(cls, params):
        params = dict(params)
        specs = params.pop("candidates")
        ranker_spec = params.pop("ranker")
        user_names = params.pop("user_feature_names")
        item_names = params.pop("item_feature_names")
        context_names = params.pop("context_names")
        models = [_CF_CLASSES[s["class"]](**s["params"]) for s in specs]
        model = cls(candidates=models, **params)
        model._ranker_spec = ranker_spec
        model._feature_names = (user_names, item_names)
        model.context_names_ = context_names
        return model

    def _state(self) -> dict:
        arrays = {
            "weights_": self.weights_,
            "item_pop_": self.item_pop_,
            "context_sizes_": self.context_sizes_,
        }
        for name, codes in self.user_features_.items():
            arrays[f"ufeat__{name}"] = np.asarray(codes)
        for name, codes in self.item_features_.items():
            arrays[f"ifeat__{name}"] = np.asarray(codes)
        for i, m in enumerate(self.candidates_):
            for key, arr in m._state().items():
                arrays[f"cand{i}__{key}"] = arr
        if self.ranker_ is not None:
            # The ranker's own .npz (LogisticCTR.save), embedded as bytes: one file, and its
            # format stays LogisticCTR's business.
            with tempfile.TemporaryDirectory() as tmp:
                path = self.ranker_.save(Path(tmp) / "ranker.npz")
                arrays["ranker__npz"] = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
        return arrays

    def _check_loaded_params(self) -> None:
        check_scalar(self.n_candidates, "n_candidates", min_value=1, integer=True)
        if not isinstance(self.rerank, bool):
            raise ValueError(f"parameter rerank={self.rerank!r} must be a bool")
        for m in self._candidate_models():
            m._check_loaded_params()
        names = [*self._feature_names[0], *self._feature_names[1], *self.context_names_]
        if not all(isinstance(x, str) for x in names):
            raise ValueError("feature and context names must be strings")
        spec = self._ranker_spec
        if spec is not None and (not isinstance(spec, dict) or spec.get("class") != "LogisticCTR"):
            raise ValueError(f"parameter ranker={spec!r} must name a LogisticCTR")

    def _load_state(self, arrays) -> None:
        models = self._candidate_models()  # those of the file (_from_params), checked
        self.weights_ = check_vector(arrays, "weights_", len(models), min_value=0)
        self.item_pop_ = check_vector(arrays, "item_pop_", self.n_items_)
        self.context_sizes_ = np.asarray(
            check_vector(
                arrays, "context_sizes_", len(self.context_names_), kinds="iu", min_value=1
            )
        )
        user_names, item_names = self._feature_names
        self.user_features_ = {
            n: check_vector(arrays, f"ufeat__{n}", self.n_users_, kinds="iu", min_value=0)
            for n in user_names
        }
        self.item_features_ = {
            n: check_vector(arrays, f"ifeat__{n}", self.n_items_, kinds="iu", min_value=0)
            for n in item_names
        }
        self.candidates_ = []
        for i, m in enumerate(models):
            prefix = f"cand{i}__"
            m.user_items_ = self.user_items_
            m.n_users_, m.n_items_ = self.n_users_, self.n_items_
            m.user_ids_, m.item_ids_ = self.user_ids_, self.item_ids_
            m._load_state({k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)})
            self.candidates_.append(m)
        self.ranker_ = None
        spec = self._ranker_spec
        if spec is not None:
            self.ranker_ = _restore_ranker(spec, arrays)
        width = self._n_ranker_features()
        if self.ranker_ is not None and self.ranker_.n_features_in_ != width:
            raise ValueError(
                f"array 'ranker__npz' holds a ranker of {self.ranker_.n_features_in_}"
                f" features, but the saved features make {width}"
            )

    def _n_ranker_features(self) -> int:
        """Columns of the candidate features (see _candidates_and_features, _with_context)."""

        def width(codes):
            return int(codes.max()) + 1 if codes.size else 1

        n = 3 * len(self.candidates_) + 3
        item_widths = [width(self.item_features_[k]) for k in sorted(self.item_features_)]
        for u in self.user_features_.values():
            n += sum(width(u) * w for w in item_widths)
        n += sum(int(size) * w for size in self.context_sizes_ for w in item_widths)
        if n > 2**40:
            raise ValueError(f"the saved feature codes make {n} ranker features")
        return n


def _expand(cand_group, n_groups, group_of_row):
    """Copy each group's run of candidates to every row of that group.

    ``cand_group``: sorted group of each candidate; ``group_of_row``: the group of each output
    row. Returns (row of each output candidate, index into the candidates), rows ascending
    and, within a row, the group's order kept.
    """
    counts = np.bincount(cand_group, minlength=n_groups)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    lengths = counts[group_of_row]
    row = np.repeat(np.arange(group_of_row.size), lengths)
    offset = np.arange(lengths.sum()) - np.repeat(np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    return row, starts[group_of_row][row] + offset


def _restore_ranker(spec, arrays):
    from . import logistic

    cls = getattr(logistic, spec["class"], None)
    if cls is None:
        raise ValueError(f"unknown ranker class {spec['class']!r} in the model file")
    blob = check_vector(arrays, "ranker__npz", kinds="u")
    if blob.dtype != np.uint8:
        raise ValueError("array 'ranker__npz' must hold bytes (uint8)")
    return cls.load(io.BytesIO(np.asarray(blob).tobytes()))


__all__ = ["Hybrid"]
