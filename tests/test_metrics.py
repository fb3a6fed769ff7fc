"""fastrec.metrics against naive per-user Python references, on random inputs and edge cases."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from fastrec import TopK, metrics


def naive_ranking(recs, held_out, k, user_ids):
    held = held_out.tocsr()
    out = {m: [] for m in metrics.RANKING_METRICS}
    for r, u in enumerate(user_ids):
        rel = set(held.indices[held.indptr[u] : held.indptr[u + 1]].tolist())
        if not rel:
            continue
        top = [int(i) for i in recs[r, :k]]
        hits = [1 if (i >= 0 and i in rel) else 0 for i in top]
        n_hits = sum(hits)
        out["precision"].append(n_hits / k)
        out["recall"].append(n_hits / len(rel))
        out["hit_rate"].append(1.0 if n_hits else 0.0)
        dcg = sum(h / math.log2(p + 2) for p, h in enumerate(hits))
        idcg = sum(1 / math.log2(p + 2) for p in range(min(len(rel), k)))
        out["ndcg"].append(dcg / idcg)
        ap, seen = 0.0, 0
        for p, h in enumerate(hits):
            if h:
                seen += 1
                ap += seen / (p + 1)
        out["map"].append(ap / min(len(rel), k))
    return {m: (float(np.mean(v)) if v else float("nan")) for m, v in out.items()}


@st.composite
def ranking_case(draw):
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(1, 15))
    width = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    held = sp.random(
        n_users, n_items, density=draw(st.floats(0, 0.6)), format="csr", random_state=rng
    )
    recs = np.full((n_users, width), -1, dtype=np.int64)
    for u in range(n_users):
        n_real = rng.integers(0, min(width, n_items) + 1)
        recs[u, :n_real] = rng.choice(n_items, size=n_real, replace=False)
    k = draw(st.integers(1, width))
    return recs, held, k


@given(ranking_case())
def test_ranking_metrics_match_naive_reference(case):
    recs, held, k = case
    users = np.arange(recs.shape[0])
    got = metrics.ranking_metrics(TopK(recs, np.zeros(recs.shape)), held, k)
    ref = naive_ranking(recs, held, k, users)
    for m in metrics.RANKING_METRICS:
        if math.isnan(ref[m]):
            assert math.isnan(got[m])
        else:
            assert got[m] == pytest.approx(ref[m], rel=1e-12, abs=1e-12), m


def test_user_ids_select_rows_of_held_out():
    held = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]]))
    recs = np.array([[1, 2], [0, 1]])
    got = metrics.ranking_metrics(recs, held, user_ids=[1, 0])
    assert got["n_users"] == 2
    assert got["precision"] == pytest.approx((1.0 + 0.5) / 2)
    assert got["recall"] == pytest.approx((1.0 + 1.0) / 2)
    assert metrics.hit_rate_at_k(recs, held, 1, user_ids=[1, 0]) == pytest.approx(1.0)
    assert metrics.hit_rate_at_k(recs[::-1].copy(), held, 1, user_ids=[1, 0]) == 0.0


def test_users_without_held_out_items_are_left_out():
    held = sp.csr_matrix((3, 4))
    assert metrics.ranking_metrics(np.zeros((3, 2), dtype=int), held)["n_users"] == 0


def test_bad_recommendations_rejected():
    held = sp.csr_matrix(np.eye(3))
    with pytest.raises(ValueError, match="outside"):
        metrics.precision_at_k(np.array([[5]]), held)
    with pytest.raises(ValueError, match="exceeds"):
        metrics.precision_at_k(np.array([[0]]), held, k=3)
    with pytest.raises(TypeError, match="integer"):
        metrics.precision_at_k(np.array([[0.5]]), held)
    with pytest.raises(ValueError, match="user_ids has 1 entries"):
        metrics.precision_at_k(np.array([[0], [1]]), held, user_ids=[0])


def test_coverage():
    recs = np.array([[0, 1, -1], [1, 3, -1]])
    assert metrics.coverage(recs, 8) == pytest.approx(3 / 8)


def naive_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    total = sum((1.0 if p > q else 0.5 if p == q else 0.0) for p in pos for q in neg)
    return total / (len(pos) * len(neg))


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 5)), min_size=2, max_size=40))
def test_auc_matches_pairwise_count_with_ties(pairs):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs], dtype=float)
    if y.min() == y.max():
        with pytest.raises(ValueError, match="both"):
            metrics.roc_auc(y, s)
        return
    assert metrics.roc_auc(y, s) == pytest.approx(naive_auc(y, s), abs=1e-12)


@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=1, max_size=40))
def test_log_loss_matches_naive(pairs):
    y = np.array([p[0] for p in pairs])
    p = np.array([q[1] for q in pairs])
    pc = np.clip(p, 1e-15, 1 - 1e-15)
    ref = -np.mean([math.log(a) if t else math.log(1 - a) for t, a in zip(y, pc)])
    assert metrics.log_loss(y, p) == pytest.approx(ref, rel=1e-9)


def test_log_loss_and_auc_reject_bad_input():
    with pytest.raises(ValueError, match="0 and 1"):
        metrics.log_loss([2, 0], [0.5, 0.5])
    with pytest.raises(ValueError, match="lie in"):
        metrics.log_loss([1, 0], [1.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        metrics.roc_auc([1, 0], [np.nan, 0.5])
