"""Neighbourhood models: item-kNN and user-kNN on cosine top-k neighbours.

Both fit with :func:`fastrec.cosine_topk` and recommend with the fused sparse kernels
(:func:`fastrec.recommend` / :func:`fastrec.recommend_user_based`): no dense users x items
matrix is ever built. Scores are sums of similarities weighted by the interaction values.
"""
from __future__ import annotations

import scipy.sparse as sp

from .. import _progress
from .._validation import check_k, check_scalar
from ..similarity import _check_weighting, cosine_topk, prepare_cosine_topk
from ._persist import check_csr_arrays
from ..topk import TopK, recommend, recommend_user_based
from ._base import Recommender, as_user_items, csr_arrays, csr_from_arrays, topk_rows_of_csr


class _KNN(Recommender):
    def __init__(
        self,
        k: int = 100,
        shrink: float = 0.0,
        weighting=None,
        min_support: int = 1,
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
        backend: str = "auto",
        n_threads=None,
        verbose: bool = True,
    ):
        self.k = k
        self.shrink = shrink
        self.weighting = weighting
        self.min_support = min_support
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.backend = backend
        self.n_threads = n_threads
        self.verbose = verbose

    def _neighbours_of(self, vectors):
        n_rows = vectors.shape[0]
        if not self.verbose or n_rows < _progress.MIN_ROWS or self.backend == "cuda":
            nb = cosine_topk(
                vectors, self.k, shrink=self.shrink, min_support=self.min_support,
                weighting=self.weighting, bm25_k1=self.bm25_k1, bm25_b=self.bm25_b,
                backend=self.backend, n_threads=self.n_threads,
            )
        else:
            # Row blocks of one prepared matrix: bit for bit the one-call result, with a bar.
            prepared = prepare_cosine_topk(
                vectors, weighting=self.weighting, bm25_k1=self.bm25_k1, bm25_b=self.bm25_b,
                backend=self.backend, n_threads=self.n_threads,
            )
            nb = sp.vstack(_progress.blockwise(
                lambda rows: cosine_topk(prepared, self.k, rows=rows, shrink=self.shrink,
                                         min_support=self.min_support,
                                         n_threads=self.n_threads),
                n_rows, True, f"fitting {type(self).__name__}",
            ), format="csr")
        # Kept canonical (columns ascending): the recommend kernels then take it as it is,
        # with no per-call sort; neighbour queries order their few entries by score instead.
        nb = sp.csr_matrix(nb)
        nb.has_sorted_indices = False
        nb.sort_indices()
        return nb

    def _state(self) -> dict:
        return csr_arrays("neighbours", self.neighbours_)

    def _check_loaded_params(self) -> None:
        super()._check_loaded_params()
        check_k(self.k)
        check_scalar(self.shrink, "shrink", min_value=0)
        check_scalar(self.min_support, "min_support", min_value=1, integer=True)
        _check_weighting(self.weighting, self.bm25_k1, self.bm25_b)

    def _load_state(self, arrays) -> None:
        n = self.n_items_ if isinstance(self, ItemKNN) else self.n_users_
        check_csr_arrays("neighbours", arrays, (n, n))
        self.neighbours_ = csr_from_arrays("neighbours", arrays)


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
    """

    def fit(self, user_items):
        """Learn the item neighbourhood; returns self."""
        UI, source = as_user_items(user_items)
        self._set_data(UI, source)
        self.neighbours_ = self._neighbours_of(self.user_items_.T.tocsr())
        return self

    def _recommend(self, rows, n, exclude_seen) -> TopK:
        return recommend(
            self.user_items_, self.neighbours_, n, user_ids=rows, exclude_seen=exclude_seen,
            backend=self.backend, n_threads=self.n_threads,
        )

    def similar_items(self, item_ids, n: int = 10) -> TopK:
        """Each item's n most similar other items (at most ``k`` exist): best first, ties by
        smaller index."""
        items = self._check_items(item_ids)
        return topk_rows_of_csr(self.neighbours_, items, check_k(n, "n"), backend=self.backend,
                                n_threads=self.n_threads)


class UserKNN(_KNN):
    """User-based k-nearest-neighbours (cosine).

    ``fit(user_items)``: each user's ``k`` most similar users -> ``neighbours_`` (users x users
    canonical CSR). score(u, j) = sum over the neighbours v of u of sim(u, v) *
    value(v, j). Parameters as :class:`ItemKNN` (weighting applies to users' rows).
    Stored zeros in ``user_items`` are dropped at fit: not interactions, never "seen".
    """

    def fit(self, user_items):
        """Learn the user neighbourhood; returns self."""
        UI, source = as_user_items(user_items)
        self._set_data(UI, source)
        self.neighbours_ = self._neighbours_of(self.user_items_)
        return self

    def _recommend(self, rows, n, exclude_seen) -> TopK:
        return recommend_user_based(
            self.user_items_, self.neighbours_, n, user_ids=rows, exclude_seen=exclude_seen,
            backend=self.backend, n_threads=self.n_threads,
        )

    def similar_users(self, user_ids, n: int = 10) -> TopK:
        """Each user's n most similar other users (at most ``k`` exist), best first."""
        rows = self._check_users(user_ids)
        return topk_rows_of_csr(self.neighbours_, rows, check_k(n, "n"), backend=self.backend,
                                n_threads=self.n_threads)


__all__ = ["ItemKNN", "UserKNN"]
