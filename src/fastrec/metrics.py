"""Evaluation metrics: ranking quality of a TopK against held-out interactions, and CTR quality.

Ranking metrics take the recommendations (``TopK`` or its ``indices``, shape (n_users, k), -1
padding) for the users ``user_ids`` (default: rows 0..n-1) and a held-out users x items CSR
whose stored entries are the relevant items. They are vectorised over all users at once: the
hits matrix is found by one binary search of (user, item) keys in the held-out CSR's sorted key
array, O(n_users * k * log nnz) time and O(n_users * k) memory, with no Python loop per user.
Users without held-out items are left out of the means (their metrics are undefined).
Definitions, with rel = the user's held-out items and hits at 1-based ranks r <= k:

- precision@k = hits / k;  recall@k = hits / |rel|;  hit_rate@k = 1 if hits > 0
- NDCG@k = sum over hits of 1 / log2(r + 1), divided by the same sum for min(|rel|, k) hits
- MAP@k = sum over hits at rank r of precision@r, divided by min(|rel|, k)
- coverage = distinct recommended items / n_items
"""

from __future__ import annotations

import numpy as np

from ._validation import check_csr, check_dense, check_ids, check_k
from .data import contains

RANKING_METRICS = ("precision", "recall", "ndcg", "map", "hit_rate")


def _recs(recommendations) -> np.ndarray:
    idx = getattr(recommendations, "indices", recommendations)
    idx = np.asarray(idx)
    if idx.ndim != 2:
        raise ValueError(f"recommendations must be 2-D (users x k), got shape {idx.shape}")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"recommendations must hold integer item indices, got {idx.dtype}")
    return idx.astype(np.int64, copy=False)


def _hits(recommendations, held_out, user_ids, k):
    """(hits bool (n, k), n_relevant (n,)) for the first k columns of the recommendations."""
    idx = _recs(recommendations)
    T = check_csr(held_out, "held_out", allow_nonfinite=True)
    n_users, n_items = T.shape
    rows = (
        np.arange(idx.shape[0], dtype=np.int64)
        if user_ids is None
        else check_ids(user_ids, "user_ids", n_users)
    )
    if rows.shape[0] != idx.shape[0]:
        raise ValueError(
            f"user_ids has {rows.shape[0]} entries but recommendations has {idx.shape[0]} rows"
        )
    if user_ids is None and idx.shape[0] > n_users:
        raise ValueError(f"recommendations has {idx.shape[0]} rows, held_out only {n_users}")
    if idx.size and idx.max() >= n_items:
        raise ValueError(f"recommendations contain item {idx.max()}, outside [0, {n_items})")
    k = idx.shape[1] if k is None else check_k(k)
    if k > idx.shape[1]:
        raise ValueError(f"k={k} exceeds the {idx.shape[1]} recommendations per user")
    idx = idx[:, :k]
    hits = contains(T.indptr, T.indices, n_items, rows[:, None], idx)
    n_rel = np.diff(T.indptr)[rows]
    return hits, n_rel, k


def ranking_metrics(recommendations, held_out, k=None, *, user_ids=None) -> dict:
    """Mean precision, recall, NDCG, MAP and hit rate @k over users with held-out items.

    ``k`` defaults to the number of recommendations per user. Returns a dict with the keys of
    ``RANKING_METRICS`` plus ``n_users`` (users evaluated). See the module docstring.
    """
    hits, n_rel, k = _hits(recommendations, held_out, user_ids, k)
    valid = n_rel > 0
    hits, n_rel = hits[valid], n_rel[valid].astype(np.float64)
    n = int(valid.sum())
    if n == 0:
        return {**{m: float("nan") for m in RANKING_METRICS}, "n_users": 0}
    n_hits = hits.sum(axis=1)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discount
    ideal = np.cumsum(discount)[np.minimum(n_rel, k).astype(np.int64) - 1]
    cum_hits = np.cumsum(hits, axis=1)
    prec_at_r = cum_hits / np.arange(1, k + 1)
    ap = (prec_at_r * hits).sum(axis=1) / np.minimum(n_rel, k)
    return {
        "precision": float(np.mean(n_hits / k)),
        "recall": float(np.mean(n_hits / n_rel)),
        "ndcg": float(np.mean(dcg / ideal)),
        "map": float(np.mean(ap)),
        "hit_rate": float(np.mean(n_hits > 0)),
        "n_users": n,
    }


def precision_at_k(recommendations, held_out, k=None, *, user_ids=None) -> float:
    """Mean over users with held-out items of hits@k / k."""
    return ranking_metrics(recommendations, held_out, k, user_ids=user_ids)["precision"]


def recall_at_k(recommendations, held_out, k=None, *, user_ids=None) -> float:
    """Mean over users with held-out items of hits@k / |held-out items|."""
    return ranking_metrics(recommendations, held_out, k, user_ids=user_ids)["recall"]


def ndcg_at_k(recommendations, held_out, k=None, *, user_ids=None) -> float:
    """Mean binary-gain NDCG@k over users with held-out items."""
    return ranking_metrics(recommendations, held_out, k, user_ids=user_ids)["ndcg"]


def map_at_k(recommendations, held_out, k=None, *, user_ids=None) -> float:
    """Mean average precision@k (normalised by min(|held-out|, k))."""
    return ranking_metrics(recommendations, held_out, k, user_ids=user_ids)["map"]


def hit_rate_at_k(recommendations, held_out, k=None, *, user_ids=None) -> float:
    """Fraction of users with held-out items that get at least one hit in the top k."""
    return ranking_metrics(recommendations, held_out, k, user_ids=user_ids)["hit_rate"]


def coverage(recommendations, n_items: int) -> float:
    """Distinct items recommended (padding ignored) divided by ``n_items``."""
    idx = _recs(recommendations)
    n_items = check_k(n_items, "n_items")
    if idx.size and idx.max() >= n_items:
        raise ValueError(f"recommendations contain item {idx.max()}, outside [0, {n_items})")
    return float(np.unique(idx[idx >= 0]).size / n_items)


def _labels_scores(y_true, y_score):
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y.shape}")
    if y.dtype.kind not in "biuf" or not np.all((y == 0) | (y == 1)):
        raise ValueError("y_true must contain only 0 and 1")
    s = check_dense(y_score, "y_score", ndim=1, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"y_score must have shape {y.shape} like y_true, got {s.shape}")
    return y.astype(bool), s


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties 1/2.

    Mann-Whitney U from average ranks: O(n log n). ValueError when only one class is present.
    """
    y, s = _labels_scores(y_true, y_score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs both positive and negative labels")
    from scipy.stats import rankdata  # ~0.5 s to import: only when AUC is asked for

    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y_true, y_prob, *, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy; probabilities are clipped to [eps, 1 - eps]."""
    y, p = _labels_scores(y_true, y_prob)
    if p.size == 0:
        raise ValueError("log_loss needs at least one sample")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("y_prob must lie in [0, 1]")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


__all__ = [
    "coverage",
    "hit_rate_at_k",
    "log_loss",
    "map_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
    "roc_auc",
]


def __dir__():
    # What dir() and tab completion show: the public names, not np / sp / helpers.
    return list(__all__)
