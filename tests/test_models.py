"""Model-specific checks: scores against naive formulas, similar items/users, implicit parity,
and the hybrid beating its parts on the built-in synthetic data."""

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec import data, metrics
from fastrec.models import Hybrid, ItemKNN, Popularity, UserKNN


def dense_cosine_topk(X, k):
    X = X.toarray().astype(np.float64)
    norms = np.linalg.norm(X, axis=1)
    norms[norms == 0] = 1
    S = (X / norms[:, None]) @ (X / norms[:, None]).T
    np.fill_diagonal(S, 0)
    out = np.zeros_like(S)
    for i in range(S.shape[0]):
        order = np.lexsort((np.arange(S.shape[1]), -S[i]))[:k]
        keep = order[S[i, order] > 0]
        out[i, keep] = S[i, keep]
    return out


def naive_topn(scores, seen, n):
    out = []
    for u in range(scores.shape[0]):
        cand = [
            (-scores[u, j], j)
            for j in range(scores.shape[1])
            if scores[u, j] != 0 and not seen[u, j]
        ]
        out.append([j for _, j in sorted(cand)[:n]])
    return out


@pytest.fixture(scope="module")
def small():
    return data.synthetic(120, 60, seed=2, impressions_per_user=25).matrix


def test_itemknn_scores_are_user_row_times_item_neighbours(small):
    model = ItemKNN(k=7).fit(small)
    NB = dense_cosine_topk(small.T.tocsr(), 7)
    scores = small.toarray() @ NB
    res = model.recommend(np.arange(small.shape[0]), n=5)
    ref = naive_topn(scores, small.toarray() != 0, 5)
    for u, items in enumerate(ref):
        got = res.indices[u][res.indices[u] >= 0]
        np.testing.assert_allclose(res.scores[u][: len(got)], scores[u, got], rtol=1e-5)
        np.testing.assert_allclose(np.sort(scores[u, got]), np.sort(scores[u, items]), rtol=1e-5)


def test_userknn_scores_are_neighbours_times_user_rows(small):
    model = UserKNN(k=9).fit(small)
    NB = dense_cosine_topk(small, 9)
    scores = NB @ small.toarray()
    res = model.recommend(np.arange(small.shape[0]), n=5)
    ref = naive_topn(scores, small.toarray() != 0, 5)
    for u, items in enumerate(ref):
        got = res.indices[u][res.indices[u] >= 0]
        assert len(got) == len(items)
        np.testing.assert_allclose(np.sort(scores[u, got]), np.sort(scores[u, items]), rtol=1e-5)


def test_popularity_ranks_by_user_count_ties_by_smaller_item():
    X = sp.csr_matrix(np.array([[1, 0, 1, 0], [1, 0, 0, 1], [0, 0, 3, 0], [0, 0, 0, 0]]))
    model = Popularity().fit(X)
    res = model.recommend([3, 0], n=4)
    np.testing.assert_array_equal(res.indices[0], [0, 2, 3, 1])  # 0 and 2 tie: 0 first
    np.testing.assert_array_equal(res.indices[1], [3, 1, -1, -1])
    by_value = Popularity(by="values").fit(X).recommend([3], n=1)
    assert by_value.indices[0, 0] == 2


def test_similar_items_and_users_are_neighbour_rows(small):
    item_model = ItemKNN(k=6).fit(small)
    NB = dense_cosine_topk(small.T.tocsr(), 6)
    res = item_model.similar_items([0, 3], n=10)
    for r, i in enumerate([0, 3]):
        got = res.indices[r][res.indices[r] >= 0]
        assert i not in got and len(got) == np.count_nonzero(NB[i])
        np.testing.assert_allclose(res.scores[r][: len(got)], NB[i, got], rtol=1e-5)
    user_model = UserKNN(k=4).fit(small)
    res = user_model.similar_users([1], n=2)
    assert res.indices.shape == (1, 2)
    with pytest.raises(ValueError, match="unknown item"):
        item_model.similar_items([small.shape[1]])


def test_fit_on_interactions_keeps_original_ids():
    d = data.from_arrays(["u1", "u1", "u2", "u3", "u3"], ["x", "y", "x", "y", "z"])
    model = ItemKNN(k=5).fit(d)
    res = model.recommend(d.user_index(["u2"]), n=3)
    assert list(model.decode_items(res.indices)[0]) == ["y", None, None]
    pytest.importorskip("pandas", reason="needs pandas (test extra)")
    frame = d.to_frame(res, d.user_index(["u2"]))
    assert list(frame["item"]) == ["y"] and list(frame["user"]) == ["u2"]


@pytest.mark.filterwarnings("ignore:Method expects CSR input")
def test_itemknn_recall_matches_implicit_cosine_recommender():
    implicit_nn = pytest.importorskip(
        "implicit.nearest_neighbours", reason="compares with implicit (test extra)"
    )
    d = data.synthetic(800, 300, seed=4, impressions_per_user=60)
    train, test = data.per_user_split(d, 0.2, seed=0)
    users = np.flatnonzero(np.diff(test.matrix.indptr) > 0)
    k = 50
    ours = ItemKNN(k=k).fit(train).recommend(users, n=10)
    theirs = implicit_nn.CosineRecommender(K=k + 1, num_threads=1)  # implicit counts the item
    theirs.fit(train.matrix.astype(np.float64), show_progress=False)
    ids, _ = theirs.recommend(
        users, train.matrix[users].astype(np.float64), N=10, filter_already_liked_items=True
    )
    r_ours = metrics.recall_at_k(ours, test.matrix, 10, user_ids=users)
    r_theirs = metrics.recall_at_k(np.asarray(ids, dtype=np.int64), test.matrix, 10, user_ids=users)
    assert r_ours == pytest.approx(r_theirs, abs=0.005)
    same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ours.indices, ids)])
    assert same > 0.95  # the same lists up to ties


def test_hybrid_weights_validated():
    X = data.synthetic(50, 30, seed=0, impressions_per_user=20)
    with pytest.raises(ValueError, match="weights must be 2"):
        Hybrid(candidates=[ItemKNN(k=5), Popularity()], weights=[1.0], rerank=False).fit(X)
    with pytest.raises(TypeError, match="candidates must be"):
        Hybrid(candidates=[object()], rerank=False).fit(X)


@pytest.mark.slow
def test_hybrid_beats_popularity_and_each_single_model_on_ndcg():
    from _ranker import make_ranker

    ranker = make_ranker()
    d = data.synthetic(2000, 800, seed=0)
    train, test = data.per_user_split(d, 0.2, seed=1)
    users = np.flatnonzero(np.diff(test.matrix.indptr) > 0)
    singles = [Popularity(), ItemKNN(k=100), UserKNN(k=50)]
    ndcg = {}
    for m in singles + [
        Hybrid(candidates=[m.clone() for m in singles], ranker=ranker, max_train_users=1000)
    ]:
        res = m.fit(train).recommend(users, n=10)
        ndcg[type(m).__name__] = metrics.ndcg_at_k(res, test.matrix, 10, user_ids=users)
    best_single = max(v for k, v in ndcg.items() if k != "Hybrid")
    assert ndcg["Hybrid"] > best_single, ndcg


def test_hybrid_results_do_not_depend_on_the_user_block_size(monkeypatch):
    from _ranker import make_ranker

    from fastrec.models import hybrid

    d = data.synthetic(300, 100, seed=3, impressions_per_user=40)
    model = Hybrid(
        candidates=[ItemKNN(k=20), Popularity()], ranker=make_ranker(), n_candidates=20
    ).fit(d)
    users = np.arange(d.n_users)
    whole = model.recommend(users, n=5)
    monkeypatch.setattr(hybrid, "_BLOCK_USERS", 7)
    blocked = model.recommend(users, n=5)
    np.testing.assert_array_equal(whole.indices, blocked.indices)
    np.testing.assert_array_equal(whole.scores, blocked.scores)


def test_similar_items_sorted_and_survive_save_load(small, tmp_path):
    model = ItemKNN(k=8).fit(small)
    items = np.arange(small.shape[1])
    res = model.similar_items(items, n=8)
    for r in range(len(items)):
        real = res.indices[r] >= 0
        s, i = res.scores[r][real], res.indices[r][real]
        order = np.lexsort((i, -s))  # score descending, ties by smaller index
        np.testing.assert_array_equal(order, np.arange(real.sum()))
    loaded = ItemKNN.load(model.save(tmp_path / "m"))
    again = loaded.similar_items(items, n=8)
    np.testing.assert_array_equal(res.indices, again.indices)
    np.testing.assert_array_equal(res.scores, again.scores)


def test_hybrid_on_a_bare_matrix_has_no_side_features():
    from _ranker import make_ranker

    X = data.synthetic(200, 80, seed=5, impressions_per_user=40).matrix
    model = Hybrid(
        candidates=[ItemKNN(k=10), Popularity()], ranker=make_ranker(), n_candidates=15
    ).fit(X)
    assert model.user_features_ == {} and model.item_features_ == {}
    res = model.recommend([0, 1], n=5)
    assert res.indices.shape == (2, 5) and (res.indices >= 0).all()


def test_hybrid_reranker_needs_held_out_data():
    X = sp.csr_matrix(np.eye(4))  # one item per user: nothing to hold out
    with pytest.raises(ValueError, match="too little data"):
        Hybrid(candidates=[Popularity()]).fit(X)


@pytest.fixture(scope="module")
def context_hybrid():
    from _ranker import make_ranker

    d = data.synthetic(400, 150, seed=8, impressions_per_user=60)
    model = Hybrid(
        candidates=[ItemKNN(k=20), Popularity()], ranker=make_ranker(), n_candidates=30
    ).fit(d)
    return d, model


def test_hybrid_ranks_for_the_requested_context(context_hybrid):
    _, model = context_hybrid
    assert model.context_names_ == ["daypart"]
    users = np.arange(30)
    by_context = [model.recommend(users, n=10, context={"daypart": c}) for c in range(4)]
    assert any(not np.array_equal(by_context[0].indices, r.indices) for r in by_context[1:])
    # one code per user is the same as a scalar for everyone, row by row
    mixed = model.recommend(users, n=10, context={"daypart": np.arange(30) % 4})
    for u in users:
        np.testing.assert_array_equal(mixed.indices[u], by_context[u % 4].indices[u])


def test_hybrid_context_validated(context_hybrid):
    _, model = context_hybrid
    with pytest.raises(ValueError, match="keys"):
        model.recommend([0], context={"hour": 1})
    with pytest.raises(ValueError, match=r"lie in \[0, 4\)"):
        model.recommend([0], context={"daypart": 4})
    with pytest.raises(ValueError, match="one per user"):
        model.recommend([0, 1], context={"daypart": [1, 2, 3]})
    plain = Hybrid(candidates=[Popularity()], rerank=False).fit(sp.csr_matrix(np.eye(3)))
    with pytest.raises(ValueError, match="fit without contexts"):
        plain.recommend([0], context={"daypart": 1})


def test_hybrid_with_context_survives_save_load(context_hybrid, tmp_path):
    pytest.importorskip("fastrec.models.logistic", reason="LogisticCTR is not importable here")
    from fastrec.models.logistic import LogisticCTR

    d, _ = context_hybrid
    model = Hybrid(
        candidates=[ItemKNN(k=20), Popularity()], ranker=LogisticCTR(), n_candidates=30
    ).fit(d)
    loaded = Hybrid.load(model.save(tmp_path / "h"))
    users = np.arange(d.n_users)
    ctx = {"daypart": users % 4}
    a, b = model.recommend(users, 10, context=ctx), loaded.recommend(users, 10, context=ctx)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)
