"""The feedback loop on every model: unseen users at request time, original ids, filtered
requests and neighbours, explanations that sum to the score, and new events folded in."""

import numpy as np
import pytest
import scipy.sparse as sp
from _ranker import make_ranker

from fastrec import available_backends, data
from fastrec.models import Hybrid, ItemKNN, Popularity, UserKNN, _incremental

CPU = [
    b
    for b in available_backends("cosine_topk")
    if b != "cuda" and b in available_backends("recommend")
]
MODELS = {
    "popularity": lambda: Popularity(),
    "itemknn": lambda: ItemKNN(k=15),
    "userknn": lambda: UserKNN(k=15),
}


@pytest.fixture(scope="module")
def train():
    return data.synthetic(200, 90, seed=5, impressions_per_user=30)


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, train):
    return request.param, MODELS[request.param]().fit(train)


def _events(d):
    m = d.matrix
    rows = np.repeat(np.arange(d.n_users), np.diff(m.indptr))
    return d.user_ids[rows], d.item_ids[m.indices], d.timestamps


# ---------------------------------------------------------------- requests


def test_user_items_rows_score_as_the_fitted_users_do(train):
    model = ItemKNN(k=15).fit(train)
    users = np.array([3, 0, 17, 3])
    a = model.recommend(users, n=9)
    b = model.recommend(user_items=train.matrix[users], n=9)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("backend", CPU)
def test_userknn_unseen_user_gets_the_neighbours_a_fit_would_give(train, backend):
    M = train.matrix
    new_row = M[7]  # a copy of a user, as a new person
    model = UserKNN(k=12, backend=backend).fit(M)
    got = model.recommend(user_items=new_row, n=10)
    refit = UserKNN(k=12, backend=backend).fit(sp.vstack([M, new_row], format="csr"))
    want = refit.recommend([M.shape[0]], n=10)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)


def test_user_items_as_lists_of_original_ids(fitted, train):
    _, model = fitted
    items = train.item_ids[train.matrix[4].indices]
    a = model.recommend(user_items=[list(items)], n=6)
    b = model.recommend(user_items=train.matrix[4], n=6)
    np.testing.assert_array_equal(a.indices, b.indices)
    with pytest.raises(ValueError, match="unknown item id"):
        model.recommend(user_items=[[items[0], 10**9]], n=6)
    with pytest.raises(ValueError, match="columns but the model knows"):
        model.recommend(user_items=sp.csr_matrix((1, train.n_items + 1)), n=6)


def test_original_ids_in_and_out(fitted, train):
    _, model = fitted
    rows = np.array([5, 1])
    a = model.recommend(users=train.user_ids[rows], n=5)
    b = model.recommend(rows, n=5)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(model.decode_users(rows), train.user_ids[rows])
    np.testing.assert_array_equal(
        model.decode_items(b.indices, fill=-1), train.decode_items(b.indices, fill=-1)
    )
    with pytest.raises(ValueError, match="unknown user id"):
        model.recommend(users=[10**9])
    with pytest.raises(ValueError, match="exactly one of"):
        model.recommend([1], users=[train.user_ids[1]])


def test_bare_matrix_model_has_no_original_ids(train):
    model = ItemKNN(k=5).fit(train.matrix)
    with pytest.raises(ValueError, match="no original user ids"):
        model.recommend(users=[train.user_ids[0]])
    with pytest.raises(ValueError, match="no original item ids"):
        model.decode_items([0])


def _filtered_reference(model, rows, n, allowed):
    """The full ranking cut to the allowed items: what a filter must return."""
    full = model.recommend(rows, n=model.n_items_)
    out_i = np.full((len(rows), n), -1)
    out_s = np.full((len(rows), n), -np.inf)
    for r in range(len(rows)):
        keep = (full.indices[r] >= 0) & allowed[r][np.maximum(full.indices[r], 0)]
        idx, sc = full.indices[r][keep][:n], full.scores[r][keep][:n]
        out_i[r, : idx.size], out_s[r, : idx.size] = idx, sc
    return out_i, out_s


def test_candidates_and_exclude_filter_the_ranking(fitted, train):
    _, model = fitted
    rng = np.random.default_rng(0)
    rows = np.arange(0, 40, 3)
    cand = np.sort(rng.choice(train.n_items, 30, replace=False))
    ex = cand[::4]
    allowed = np.zeros((len(rows), train.n_items), bool)
    allowed[:, cand] = True
    allowed[:, ex] = False
    got = model.recommend(rows, n=8, candidates=cand, exclude=ex)
    want_i, want_s = _filtered_reference(model, rows, 8, allowed)
    np.testing.assert_array_equal(got.indices, want_i)
    np.testing.assert_allclose(got.scores, want_s, rtol=1e-6)
    # per-request masks (sparse), and original ids in a list
    per_row = sp.csr_matrix(allowed.astype(np.float64))
    got2 = model.recommend(rows, n=8, candidates=per_row)
    np.testing.assert_array_equal(got2.indices, want_i)
    got3 = model.recommend(rows, n=8, candidates=train.item_ids[cand], exclude=train.item_ids[ex])
    np.testing.assert_array_equal(got3.indices, want_i)


def test_hybrid_takes_ids_and_filters(train):
    model = Hybrid(candidates=[ItemKNN(k=15), Popularity()], rerank=False, n_candidates=20).fit(
        train
    )
    rows = np.array([2, 9])
    full = model.recommend(rows, n=20)
    ex = full.indices[:, :3].ravel()
    got = model.recommend(users=train.user_ids[rows], n=5, exclude=ex)
    for r in range(2):
        want = [j for j in full.indices[r] if j not in set(ex.tolist()) and j >= 0][:5]
        np.testing.assert_array_equal(got.indices[r][: len(want)], want)


# ---------------------------------------------------------------- neighbours


def test_similar_items_by_id_with_filters(train):
    model = ItemKNN(k=20).fit(train)
    base = model.similar_items([4, 11], n=20)
    ex = base.indices[:, 0]
    got = model.similar_items(items=train.item_ids[[4, 11]], n=5, exclude=ex)
    for r in range(2):
        want = [j for j in base.indices[r] if j >= 0 and j not in set(ex.tolist())][:5]
        np.testing.assert_array_equal(got.indices[r][: len(want)], want)
    cand = base.indices[0, 5:9]
    only = model.similar_items([4], n=10, candidates=cand)
    assert set(only.indices[0][only.indices[0] >= 0].tolist()) == set(cand.tolist())


def test_basket_is_a_request_of_its_items(train):
    model = ItemKNN(k=20).fit(train)
    basket = [3, 8, 40]
    got = model.similar_to_basket(basket, n=7)
    row = sp.csr_matrix((np.ones(3), ([0, 0, 0], basket)), shape=(1, train.n_items))
    want = model.recommend(user_items=row, n=7)
    np.testing.assert_array_equal(got.indices, want.indices)
    assert not set(basket) & set(got.indices[0].tolist())


def test_similar_users_by_id_and_decoded(train):
    model = UserKNN(k=10).fit(train)
    a = model.similar_users(users=train.user_ids[[6]], n=4)
    b = model.similar_users([6], n=4)
    np.testing.assert_array_equal(a.indices, b.indices)
    ex = b.indices[0, :2]
    c = model.similar_users([6], n=2, exclude=ex)
    np.testing.assert_array_equal(c.indices[0], b.indices[0, 2:4])
    np.testing.assert_array_equal(model.decode_users(b.indices), train.user_ids[b.indices])


# ---------------------------------------------------------------- explanations


@pytest.mark.parametrize("name", ["itemknn", "userknn"])
def test_explain_shares_sum_to_the_recommended_score(train, name):
    model = MODELS[name]().fit(train)
    for u in (0, 13, 77):
        res = model.recommend([u], n=5)
        for j, score in zip(res.indices[0], res.scores[0]):
            e = model.explain(u, j)
            assert e.kind == ("items" if name == "itemknn" else "users")
            assert e.contributions.size and np.all(e.contributions > 0)
            np.testing.assert_allclose(e.contributions.sum() + e.base, score, rtol=1e-6)
            assert e.score == pytest.approx(float(score), rel=1e-6)
    # by original ids, and for an unseen user's row
    e1 = model.explain(user=train.user_ids[13], item=train.item_ids[res.indices[0, 0]])
    np.testing.assert_array_equal(
        e1.ids, (train.item_ids if name == "itemknn" else train.user_ids)[e1.sources]
    )
    req = train.matrix[13]
    e2 = model.explain(user_items=req, item_id=model.recommend(user_items=req, n=1).indices[0, 0])
    assert e2.score > 0


def test_explain_a_seen_item_is_an_error_unless_asked(train):
    model = ItemKNN(k=15).fit(train)
    seen = train.matrix[3].indices[0]
    with pytest.raises(ValueError, match="own items"):
        model.explain(3, seen)
    e = model.explain(3, seen, exclude_seen=False)
    full = model.recommend([3], n=train.n_items, exclude_seen=False)
    at = list(full.indices[0]).index(seen) if seen in full.indices[0] else None
    if at is not None:
        np.testing.assert_allclose(e.score, full.scores[0, at], rtol=1e-6)


def test_explain_popularity_and_hybrid(train):
    pop = Popularity().fit(train)
    e = pop.explain(0, pop.recommend([0], n=1).indices[0, 0])
    assert e.score == e.base == pop.recommend([0], n=1).scores[0, 0]
    blend = Hybrid(candidates=[ItemKNN(k=15), Popularity()], rerank=False, n_candidates=20).fit(
        train
    )
    top = blend.recommend([5], n=3)
    for j, s in zip(top.indices[0], top.scores[0]):
        e = blend.explain(5, j)
        np.testing.assert_allclose(e.contributions.sum(), s, rtol=1e-9)
    ranked = Hybrid(
        candidates=[ItemKNN(k=15), Popularity()],
        ranker=make_ranker("numpy"),
        n_candidates=20,
        max_train_users=100,
    ).fit(train)
    top = ranked.recommend([5], n=3)
    for j, s in zip(top.indices[0], top.scores[0]):
        e = ranked.explain(5, j)
        np.testing.assert_allclose(e.base + e.contributions.sum(), e.score, rtol=1e-12)
        np.testing.assert_allclose(1 / (1 + np.exp(-e.score)), s, rtol=1e-6)
    with pytest.raises(ValueError, match="not among the CF candidates"):
        outside = np.setdiff1d(
            np.arange(train.n_items), np.r_[top.indices[0], train.matrix[5].indices]
        )
        for j in outside:  # the first item no CF model proposes
            ranked.explain(5, j)


# ---------------------------------------------------------------- appending events


@pytest.mark.parametrize("rule", data.DUPLICATE_RULES)
@pytest.mark.parametrize("with_time", [False, True])
def test_append_equals_building_from_all_events(rule, with_time):
    rng = np.random.default_rng(1)
    n = 500
    users = rng.integers(0, 40, n) * 3
    items = np.array([f"i{x}" for x in rng.integers(0, 30, n)])
    values = rng.integers(1, 6, n).astype(float)
    ts = np.arange(n) if with_time else None
    ctx = {"daypart": rng.integers(0, 4, n)}
    cut = 380

    def part(sl):
        return (users[sl], items[sl], values[sl], None if ts is None else ts[sl])

    full = data.from_arrays(*part(slice(None)), contexts=ctx, duplicates=rule)
    base = data.from_arrays(
        *part(slice(0, cut)), contexts={"daypart": ctx["daypart"][:cut]}, duplicates=rule
    )
    grown = base.append(*part(slice(cut, None)), contexts={"daypart": ctx["daypart"][cut:]})
    assert grown.duplicates == rule
    np.testing.assert_array_equal(grown.user_ids[: base.n_users], base.user_ids)
    np.testing.assert_array_equal(grown.item_ids[: base.n_items], base.item_ids)
    r, c = grown.user_index(full.user_ids), grown.item_index(full.item_ids)
    perm = grown.matrix[r][:, c].tocsr()
    np.testing.assert_array_equal(perm.toarray(), full.matrix.toarray())
    # timestamps and contexts follow their entries
    for extra in ([] if ts is None else ["timestamps"]) + ["daypart"]:

        def dense(d, what):
            vals = d.timestamps if what == "timestamps" else d.contexts[what]
            return sp.csr_matrix(
                (vals.astype(float) + 1, d.matrix.indices, d.matrix.indptr), shape=d.shape
            )

        np.testing.assert_array_equal(
            dense(grown, extra)[r][:, c].toarray(), dense(full, extra).toarray()
        )


def test_append_keeps_rows_of_known_ids_and_looks_up_unsorted_maps():
    base = data.from_arrays(["b", "d"], ["x", "y"])
    grown = base.append(["a", "d", "c"], ["z", "x", "x"])
    np.testing.assert_array_equal(grown.user_ids, ["b", "d", "a", "c"])
    np.testing.assert_array_equal(grown.user_index(["a", "b", "c", "d"]), [2, 0, 3, 1])
    np.testing.assert_array_equal(grown.decode_users([3, -1], fill=""), ["c", ""])
    with pytest.raises(ValueError, match="unknown user id 'e'"):
        grown.user_index(["e"])
    with pytest.raises(TypeError, match="kind the data was built with"):
        base.append([1], ["x"])


def test_append_rejects_mismatched_times_and_unknown_order():
    timed = data.from_arrays([1, 1], [1, 2], timestamps=[10, 20], duplicates="first")
    with pytest.raises(ValueError, match="timestamps must be given"):
        timed.append([1], [1])
    with pytest.raises(ValueError, match="which came first"):
        timed.append([1], [2], timestamps=[5])
    assert timed.append([1], [2], timestamps=[25]).matrix.nnz == 2


# ---------------------------------------------------------------- partial_fit


def _split_by_time(d, share):
    u, i, ts = _events(d)
    order = np.argsort(ts, kind="stable")
    cut = round(len(order) * (1 - share))
    old, new = order[:cut], order[cut:]
    base = data.from_arrays(u[old], i[old], None, ts[old], duplicates="max")
    return base, base.append(u[new], i[new], None, ts[new]), (u[new], i[new])


def _same_csr(a, b):
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.dtype == b.dtype


@pytest.mark.parametrize("cls", [ItemKNN, UserKNN])
@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("share, reserve", [(0.02, 0), (0.15, 0), (0.05, 4)])
def test_partial_fit_is_bit_identical_to_a_full_fit(cls, backend, share, reserve, monkeypatch):
    monkeypatch.setattr(_incremental, "FULL_FIT_WORK_SHARE", 2.0)  # always the partial path
    d = data.synthetic(300, 120, seed=7, impressions_per_user=35)
    base, _, (u_new, i_new) = _split_by_time(d, share)
    h = len(u_new) // 2
    half = base.append(u_new[:h], i_new[:h], None, np.full(h, 10**7))
    # new users and new items arrive with the events
    grown = half.append(
        np.r_[u_new[h:], [10**6, 10**6, 10**6 + 1], u_new[:2]],
        np.r_[i_new[h:], i_new[:2], [10**6], [10**6 + 1, 10**6 + 1]],
        None,
        np.full(len(u_new) - h + 5, 2 * 10**7),
    )
    assert grown.n_users > base.n_users and grown.n_items > base.n_items
    full = cls(k=10, shrink=2.0, min_support=1, backend=backend).fit(grown)
    part = cls(k=10, shrink=2.0, min_support=1, reserve=reserve, backend=backend).fit(base)
    # in two steps: the second starts from the state the first left (its reserve included)
    part.partial_fit(half)
    assert part.partial_fit(grown) is part
    assert part.partial_fit_path_ == "partial"
    _same_csr(part.neighbours_, full.neighbours_)
    _same_csr(part.user_items_, full.user_items_)
    users = np.arange(grown.n_users)
    np.testing.assert_array_equal(
        part.recommend(users, n=5).indices, full.recommend(users, n=5).indices
    )


def test_partial_fit_from_a_dict_of_events_and_the_full_path(train, monkeypatch):
    base, grown, (u_new, i_new) = _split_by_time(train, 0.05)
    a = ItemKNN(k=10).fit(base).partial_fit({"users": u_new, "items": i_new})
    b = ItemKNN(k=10).fit(grown)
    _same_csr(a.neighbours_, b.neighbours_)
    monkeypatch.setattr(_incremental, "FULL_FIT_WORK_SHARE", 0.0)
    c = ItemKNN(k=10).fit(base).partial_fit(grown)
    assert c.partial_fit_path_.startswith("full (the changed rows hold")
    _same_csr(c.neighbours_, b.neighbours_)
    t = ItemKNN(k=10, weighting="tfidf").fit(base).partial_fit(grown)
    assert "global counts" in t.partial_fit_path_
    _same_csr(t.neighbours_, ItemKNN(k=10, weighting="tfidf").fit(grown).neighbours_)


def test_partial_fit_of_a_bare_matrix_model():
    M = data.synthetic(120, 60, seed=2, impressions_per_user=25).matrix
    grown = sp.vstack([M, M[:3]], format="csr")
    a = UserKNN(k=8).fit(M).partial_fit(grown)
    _same_csr(a.neighbours_, UserKNN(k=8).fit(grown).neighbours_)
    with pytest.raises(ValueError, match="no id maps"):
        UserKNN(k=8).fit(M).partial_fit({"users": [1], "items": [2]})


def test_popularity_partial_fit_equals_fit(train):
    base, grown, _ = _split_by_time(train, 0.1)
    a = Popularity(by="values").fit(base).partial_fit(grown)
    np.testing.assert_array_equal(a.item_scores_, Popularity(by="values").fit(grown).item_scores_)


@pytest.mark.parametrize("cls", [ItemKNN, UserKNN, Popularity])
def test_partial_fit_errors(cls, train):
    with pytest.raises(ValueError, match="not fitted"):
        cls().partial_fit({"users": [1], "items": [1]})
    model = cls().fit(train)
    with pytest.raises(ValueError, match="do not extend"):
        model.partial_fit(data.from_arrays([1], [1]))
    with pytest.raises(TypeError, match="new_events must be"):
        model.partial_fit([1, 2])


def test_ids_and_rule_survive_save_and_load(tmp_path, train):
    model = ItemKNN(k=5).fit(
        train.append([10**6], [train.item_ids[0]], timestamps=[1], contexts={"daypart": [0]})
    )
    loaded = ItemKNN.load(model.save(tmp_path / "m"))
    assert loaded.duplicates_ == "max"
    np.testing.assert_array_equal(loaded.user_ids_, model.user_ids_)
    np.testing.assert_array_equal(loaded.user_index([10**6]), [train.n_users])


def test_hybrid_unseen_users_and_neighbour_queries(train):
    model = Hybrid(candidates=[ItemKNN(k=15), Popularity()], rerank=False, n_candidates=20).fit(
        train
    )
    rows = np.array([4, 30])
    # a fitted user's own row as a request: the same CF proposals and activity, and the blend
    # uses no side features, so the same ranking
    a = model.recommend(rows, n=8)
    b = model.recommend(user_items=train.matrix[rows], n=8)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)
    e = model.explain(user_items=train.matrix[[4]], item_id=b.indices[0, 0])
    np.testing.assert_allclose(e.contributions.sum(), b.scores[0, 0], rtol=1e-9)
    np.testing.assert_array_equal(
        model.similar_items(items=train.item_ids[[3]], n=4).indices,
        ItemKNN(k=15).fit(train).similar_items([3], n=4).indices,
    )
    with pytest.raises(ValueError, match="no UserKNN"):
        model.similar_users([2], n=3)
    both = Hybrid(candidates=[UserKNN(k=15), Popularity()], rerank=False, n_candidates=20).fit(
        train
    )
    np.testing.assert_array_equal(
        both.similar_users(users=train.user_ids[[2]], n=3).indices,
        UserKNN(k=15).fit(train).similar_users([2], n=3).indices,
    )


def test_reserve_survives_save_and_load(tmp_path, train, monkeypatch):
    monkeypatch.setattr(_incremental, "FULL_FIT_WORK_SHARE", 2.0)
    base, grown, _ = _split_by_time(train, 0.05)
    model = ItemKNN(k=6, reserve=3).fit(base)
    assert model.reserve_.nnz > model.neighbours_.nnz
    loaded = ItemKNN.load(model.save(tmp_path / "m"))
    _same_csr(loaded.reserve_, model.reserve_)
    loaded.partial_fit(grown)
    _same_csr(loaded.neighbours_, ItemKNN(k=6).fit(grown).neighbours_)
    with pytest.raises(ValueError, match="reserve"):
        ItemKNN(k=6, reserve=-1).fit(base)


def test_als_cached_item_side_gives_the_public_paths_bits():
    # The model validates the item factors and computes Y^T Y once per fitted state; requests
    # must get exactly what the public functions give.
    from fastrec import dot_topk
    from fastrec.embedding import als_cg_update
    from fastrec.models import ALS

    rng = np.random.default_rng(5)
    UI = sp.random(40, 25, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    model = ALS(factors=6, iterations=2, n_threads=1).fit(UI)
    R = sp.random(3, 25, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    X0 = np.zeros((3, 6), np.float32)
    want_f = als_cg_update(
        R,
        X0,
        model.item_factors_,
        regularization=model.regularization,
        alpha=model.alpha,
        cg_steps=6,
        n_threads=1,
    )
    np.testing.assert_array_equal(model.fold_in(R), want_f)
    got = model.recommend(user_items=R, n=5)
    want = dot_topk(want_f, model.item_factors_, 5, exclude=R, n_threads=1)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.scores, want.scores)
    rows = np.array([3, 0, 7])
    got = model.recommend(rows, n=5)
    want = dot_topk(model.user_factors_[rows], model.item_factors_, 5, exclude=UI[rows])
    np.testing.assert_array_equal(got.indices, want.indices)
    model.item_factors_ = model.item_factors_ * 2  # a new fitted state: recomputed
    np.testing.assert_array_equal(
        model.fold_in(R),
        als_cg_update(
            R,
            X0,
            model.item_factors_,
            regularization=model.regularization,
            alpha=model.alpha,
            cg_steps=6,
            n_threads=1,
        ),
    )
