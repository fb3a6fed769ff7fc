"""Contract of topk and recommend (DESIGN.md), checked on the reference backend against
brute-force oracles written independently of it."""

import numpy as np
import pytest
import scipy.sparse as sp
from comparators import assert_topk_equal
from hypothesis import given
from hypothesis import strategies as st
from strategies import canonical, raw_csr, scores_and_mask

import fastrec


def oracle_topk_rows(scores, k, banned):
    """Per row: candidates sorted by (-score, index), cut at k, padded with -1/-inf."""
    n = scores.shape[0]
    idx = np.full((n, k), -1, dtype=np.int64)
    val = np.full((n, k), -np.inf, dtype=scores.dtype)
    for r in range(n):
        c = [
            (-float(s), j)
            for j, s in enumerate(scores[r])
            if not banned[r, j] and not np.isnan(s) and s > -np.inf
        ]
        for p, (s, j) in enumerate(sorted(c)[:k]):
            idx[r, p], val[r, p] = j, -s
    return idx, val


@given(scores_and_mask(max_rows=8), st.integers(1, 35))
def test_topk_matches_brute_force(case, k):
    S, mask = case
    before = S.copy()
    got = fastrec.topk(S, k, exclude=mask, backend="numpy")
    banned = np.zeros(S.shape, bool) if mask is None else canonical(mask).toarray() != 0
    if mask is not None:  # the mask is a pattern: explicit zeros still exclude
        m = sp.csr_matrix(mask)
        banned = np.zeros(S.shape, bool)
        banned[np.repeat(np.arange(m.shape[0]), np.diff(m.indptr)), m.indices] = True
    assert_topk_equal(got, oracle_topk_rows(S, k, banned), exact=True)
    np.testing.assert_array_equal(S, before)
    assert got.scores.dtype == S.dtype and got.indices.dtype == np.int64


def test_ties_broken_by_smaller_index():
    got = fastrec.topk(np.array([[1.0, 3.0, 3.0, 1.0, 3.0]]), 4, backend="numpy")
    np.testing.assert_array_equal(got.indices, [[1, 2, 4, 0]])


def test_rows_with_fewer_candidates_padded():
    S = np.array([[1.0, np.nan, -np.inf], [np.inf, 2.0, 0.0]])
    got = fastrec.topk(S, 4, backend="numpy")
    np.testing.assert_array_equal(got.indices, [[0, -1, -1, -1], [0, 1, 2, -1]])
    np.testing.assert_array_equal(got.scores[0], [1.0, -np.inf, -np.inf, -np.inf])


def test_excluded_items_never_returned_and_scores_untouched():
    S = np.arange(12.0).reshape(2, 6)
    mask = sp.csr_array((np.ones(3), ([0, 0, 1], [5, 4, 0])), shape=(2, 6))
    got = fastrec.topk(S, 2, exclude=mask, backend="numpy")
    np.testing.assert_array_equal(got.indices, [[3, 2], [5, 4]])
    np.testing.assert_array_equal(S, np.arange(12.0).reshape(2, 6))


def test_topk_bad_inputs_rejected():
    S = np.ones((2, 3))
    with pytest.raises(ValueError, match="exclude must have shape"):
        fastrec.topk(S, 1, exclude=sp.csr_matrix((3, 3)))
    with pytest.raises(ValueError, match="scores must be 2-D"):
        fastrec.topk(np.ones(3), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        fastrec.topk(S, 0)
    with pytest.raises(TypeError, match="scores must be a dense array"):
        fastrec.topk(sp.csr_matrix(S), 1)


def oracle_recommend(UI, NB, n, rows, exclude_seen, exclude):
    U = canonical(UI).toarray()
    N = canonical(NB).toarray()
    scores = U[rows] @ N
    touched = ((U[rows] != 0).astype(float) @ (N != 0).astype(float)) > 0
    banned = ~touched
    if exclude_seen:
        banned |= U[rows] != 0
    if exclude is not None:
        banned |= canonical(exclude).toarray()[rows] != 0
    return oracle_topk_rows(scores, n, banned)


@st.composite
def recommend_case(draw):
    UI = draw(raw_csr(max_rows=10, max_cols=9, min_cols=1))
    n_items = UI.shape[1]
    NB = draw(
        raw_csr(max_rows=n_items, max_cols=n_items, min_rows=n_items, min_cols=n_items, signed=True)
    )
    ex = None
    if draw(st.booleans()):
        ex = draw(
            raw_csr(
                max_rows=UI.shape[0],
                max_cols=n_items,
                min_rows=UI.shape[0],
                min_cols=n_items,
                binary=True,
                canonical=True,
            )
        )
    rows = (
        draw(st.lists(st.integers(0, max(0, UI.shape[0] - 1)), max_size=6)) if UI.shape[0] else []
    )
    return UI, NB, ex, rows


@given(recommend_case(), st.integers(1, 12), st.booleans(), st.booleans())
def test_recommend_matches_brute_force(case, n, exclude_seen, all_users):
    UI, NB, ex, rows = case
    user_ids = None if all_users else rows
    got = fastrec.recommend(
        UI, NB, n, user_ids=user_ids, exclude_seen=exclude_seen, exclude=ex, backend="numpy"
    )
    r = np.arange(UI.shape[0]) if all_users else np.asarray(rows, dtype=np.int64)
    assert_topk_equal(got, oracle_recommend(UI, NB, n, r, exclude_seen, ex))


def test_recommend_skips_seen_items():
    UI = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    NB = sp.csr_matrix(np.array([[0, 0.9, 0.5], [0.9, 0, 0.1], [0.5, 0.1, 0]]))
    got = fastrec.recommend(UI, NB, 3, backend="numpy")
    np.testing.assert_array_equal(got.indices, [[1, 2, -1], [0, 2, -1]])
    got = fastrec.recommend(UI, NB, 1, user_ids=[1, 0], exclude_seen=False, backend="numpy")
    np.testing.assert_array_equal(got.indices, [[0], [1]])


def test_recommend_bad_inputs_rejected():
    UI = sp.csr_matrix(np.eye(3))
    with pytest.raises(ValueError, match="item_neighbours must have shape"):
        fastrec.recommend(UI, sp.csr_matrix(np.eye(2)), 2)
    with pytest.raises(ValueError, match="user_ids contains 5"):
        fastrec.recommend(UI, UI, 2, user_ids=[5])
    with pytest.raises(ValueError, match="n must be >= 1"):
        fastrec.recommend(UI, UI, 0)
    with pytest.raises(ValueError, match="exclude must have shape"):
        fastrec.recommend(UI, UI, 1, exclude=sp.csr_matrix((2, 3)))


# ---- every backend: the documented rules, and user-kNN (recommend_user_based) ----------------

from backends import compiled_backends  # noqa: E402

BACKENDS = ["numpy"] + compiled_backends("topk")


def _stored(m):
    """Positions stored in a (summed-duplicates) CSR: the mask pattern, explicit zeros included."""
    m = sp.csr_matrix(m, copy=True)
    m.sum_duplicates()
    out = np.zeros(m.shape, dtype=bool)
    out[np.repeat(np.arange(m.shape[0]), np.diff(m.indptr)), m.indices] = True
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_minus_inf_never_candidates_plus_inf_is_a_score(backend):
    S = np.array([[np.nan, -np.inf, np.inf, 1.0, np.nan]], dtype=np.float32)
    got = fastrec.topk(S, 4, backend=backend)
    np.testing.assert_array_equal(got.indices, [[2, 3, -1, -1]])
    np.testing.assert_array_equal(got.scores, [[np.inf, 1.0, -np.inf, -np.inf]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_broken_by_smaller_index_across_blocks(backend):
    S = np.zeros((2, 300))
    S[0, [250, 3, 130, 64]] = 1.0
    got = fastrec.topk(S, 6, backend=backend)
    np.testing.assert_array_equal(got.indices[0], [3, 64, 130, 250, 0, 1])
    np.testing.assert_array_equal(got.indices[1], [0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_pattern_excludes_and_all_excluded_row_is_padding(backend):
    rng = np.random.default_rng(3)
    S = rng.random((7, 300))
    before = S.copy()
    mask = sp.random(7, 300, density=0.3, format="lil", random_state=4)
    mask[6] = 1.0  # a fully excluded row
    mask = mask.tocsr()
    mask.data[:5] = 0.0  # stored zeros still exclude: only the pattern counts
    got = fastrec.topk(S, 10, exclude=mask, backend=backend)
    np.testing.assert_array_equal(S, before)
    assert_topk_equal(got, oracle_topk_rows(S, 10, _stored(mask)), exact=True)
    assert np.all(got.indices[6] == -1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_recommend_users_without_candidates_padded_any_order(backend):
    UI = sp.csr_matrix(np.array([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1.0]]))
    NB = sp.csr_matrix(np.array([[0, 0.5, 0.5, 0], [0.9, 0, 0, 0], [0, 0, 0, 0], [1.0, 0, 0, 0]]))
    got = fastrec.recommend(UI, NB, 3, backend=backend)
    np.testing.assert_array_equal(got.indices, [[1, 2, -1], [-1, -1, -1], [0, -1, -1]])
    ex = sp.csr_matrix(np.array([[0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
    got = fastrec.recommend(UI, NB, 3, user_ids=[2, 0], exclude=ex, backend=backend)
    np.testing.assert_array_equal(got.indices, [[0, -1, -1], [2, -1, -1]])


@st.composite
def user_based_case(draw):
    UI = draw(raw_csr(max_rows=9, max_cols=9, min_rows=1))
    n_users = UI.shape[0]
    UN = draw(
        raw_csr(max_rows=n_users, max_cols=n_users, min_rows=n_users, min_cols=n_users, signed=True)
    )
    ex = None
    if draw(st.booleans()):
        ex = draw(
            raw_csr(
                max_rows=n_users,
                max_cols=UI.shape[1],
                min_rows=n_users,
                min_cols=UI.shape[1],
                binary=True,
                canonical=True,
            )
        )
    rows = draw(st.none() | st.lists(st.integers(0, n_users - 1), max_size=6))
    return UI, UN, ex, rows


@pytest.mark.parametrize("backend", BACKENDS)
@given(user_based_case(), st.integers(1, 12), st.booleans())
def test_recommend_user_based_matches_brute_force(backend, case, n, exclude_seen):
    """score(u, j) = sum over neighbours v of user_neighbours[u, v] * user_items[v, j]."""
    UI, UN, ex, rows = case
    got = fastrec.recommend_user_based(
        UI, UN, n, user_ids=rows, exclude_seen=exclude_seen, exclude=ex, backend=backend
    )
    r = np.arange(UI.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    U, N = canonical(UI).toarray(), canonical(UN).toarray()
    scores = (N[r] @ U).astype(got.scores.dtype)
    banned = ((N[r] != 0).astype(float) @ (U != 0).astype(float)) == 0
    if exclude_seen:
        banned |= U[r] != 0
    if ex is not None:
        banned |= canonical(ex).toarray()[r] != 0
    assert_topk_equal(got, oracle_topk_rows(scores, n, banned))


def test_recommend_user_based_bad_inputs_rejected():
    UI = sp.csr_matrix(np.eye(3))
    with pytest.raises(ValueError, match=r"user_neighbours must have shape \(3, 3\)"):
        fastrec.recommend_user_based(UI, sp.csr_matrix(np.eye(2)), 2)
    with pytest.raises(ValueError, match="user_neighbours contains NaN"):
        fastrec.recommend_user_based(UI, sp.csr_matrix(np.full((3, 3), np.nan)), 2)
    with pytest.raises(TypeError, match="user_items must be a scipy.sparse"):
        fastrec.recommend_user_based(np.eye(3), UI, 2)
