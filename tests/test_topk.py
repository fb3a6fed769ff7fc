"""Contract of topk, recommend and recommend_user_based (DESIGN.md), checked on every backend
against brute-force dense oracles written independently of the reference."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

import fastrec
from backends import compiled_backends
from comparators import assert_topk_equal
from strategies import canonical, dense, raw_csr

BACKENDS = ["numpy"] + compiled_backends("topk")


def oracle_select(values, candidate, k):
    """Per row: sort candidates by (-value, index), keep k, pad with -1/-inf."""
    rows = values.shape[0]
    idx = np.full((rows, k), -1, dtype=np.int64)
    val = np.full((rows, k), -np.inf, dtype=values.dtype)
    for r in range(rows):
        best = sorted((-float(values[r, j]), j) for j in np.flatnonzero(candidate[r]))[:k]
        idx[r, : len(best)] = [j for _, j in best]
        val[r, : len(best)] = [values[r, j] for _, j in best]
    return idx, val


def oracle_topk(S, k):
    return oracle_select(S, ~np.isnan(S) & (S > -np.inf), k)


def pattern(m):
    m = sp.csr_matrix(m, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.data[:] = 1
    return m.toarray()


def oracle_recommend(A, B, n, rows, seen=None, exclude=None):
    """Dense A @ B; candidates where the (non-zero) patterns meet, minus the items seen (a
    non-zero interaction) and the positions stored in ``exclude`` (even stored zeros)."""
    Ad, Bd = canonical(A).toarray(), canonical(B).toarray()
    scores = (Ad @ Bd)[rows]
    cand = (pattern(A) @ pattern(B) > 0)[rows]
    if seen is not None:
        cand &= (pattern(seen) == 0)[rows]
    if exclude is not None:
        M = sp.csr_matrix(exclude, copy=True)
        M.sum_duplicates()
        cand &= ~_stored(M)[rows]
    dtype = np.result_type(A.dtype, B.dtype)
    idx, val = oracle_select(scores, cand, n)
    return idx, val.astype(dtype)


def _stored(M):
    out = np.zeros(M.shape, dtype=bool)
    for r in range(M.shape[0]):
        out[r, M.indices[M.indptr[r]:M.indptr[r + 1]]] = True
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@given(S=dense(ties=True), k=st.integers(1, 50))
def test_topk_matches_brute_force(backend, S, k):
    got = fastrec.topk(S, k, backend=backend)
    assert got.indices.dtype == np.int64 and got.scores.dtype == S.dtype
    assert_topk_equal(got, oracle_topk(np.asarray(S), k), exact=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_broken_by_smaller_index(backend):
    S = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    got = fastrec.topk(S, 4, backend=backend)
    np.testing.assert_array_equal(got.indices, [[1, 2, 4, 3], [0, 1, 2, 3]])
    np.testing.assert_array_equal(got.scores[0], [3.0, 3.0, 3.0, 2.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_and_minus_inf_never_candidates_plus_inf_is_a_score(backend):
    S = np.array([[np.nan, -np.inf, np.inf, 1.0, np.nan]], dtype=np.float32)
    got = fastrec.topk(S, 4, backend=backend)
    np.testing.assert_array_equal(got.indices, [[2, 3, -1, -1]])
    np.testing.assert_array_equal(got.scores, [[np.inf, 1.0, -np.inf, -np.inf]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_larger_than_row_padded(backend):
    got = fastrec.topk(np.array([[2.0, 1.0]]), 5, backend=backend)
    np.testing.assert_array_equal(got.indices, [[0, 1, -1, -1, -1]])
    np.testing.assert_array_equal(got.scores, [[2.0, 1.0, -np.inf, -np.inf, -np.inf]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_exclusion_mask_pattern_applied_and_scores_untouched(backend):
    rng = np.random.default_rng(3)
    S = rng.random((7, 300))
    before = S.copy()
    mask = sp.random(7, 300, density=0.3, format="csr", random_state=4)
    mask.data[:5] = 0.0  # stored zeros still exclude: only the pattern counts
    mask = mask.tolil()
    mask[6] = 1.0  # a fully excluded row
    mask = mask.tocsr()
    got = fastrec.topk(S, 10, exclude=mask, backend=backend)
    np.testing.assert_array_equal(S, before)
    stored = _stored(mask)
    assert_topk_equal(got, oracle_select(S, ~stored, 10), exact=True)
    assert np.all(got.indices[6] == -1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_bad_input(backend):
    with pytest.raises(ValueError, match="scores must be 2-D"):
        fastrec.topk(np.ones(3), 1, backend=backend)
    with pytest.raises(ValueError, match="k must be >= 1"):
        fastrec.topk(np.ones((2, 3)), 0, backend=backend)
    with pytest.raises(TypeError, match="k must be an integer"):
        fastrec.topk(np.ones((2, 3)), 1.5, backend=backend)
    with pytest.raises(ValueError, match=r"exclude must have shape \(2, 3\)"):
        fastrec.topk(np.ones((2, 3)), 1, exclude=sp.csr_matrix((2, 4)), backend=backend)
    with pytest.raises(TypeError, match="exclude must be a scipy.sparse"):
        fastrec.topk(np.ones((2, 3)), 1, exclude=np.ones((2, 3)), backend=backend)
    with pytest.raises(TypeError, match="scores has dtype"):
        fastrec.topk(np.array([["a"]]), 1, backend=backend)


@st.composite
def recommend_inputs(draw, user_based=False):
    n_users = draw(st.integers(1, 10))
    n_items = draw(st.integers(1, 12))
    UI = draw(raw_csr(min_rows=n_users, max_rows=n_users, min_cols=n_items, max_cols=n_items))
    side = n_users if user_based else n_items
    NB = draw(raw_csr(min_rows=side, max_rows=side, min_cols=side, max_cols=side, signed=True))
    EX = draw(st.none() | raw_csr(min_rows=n_users, max_rows=n_users, min_cols=n_items,
                                  max_cols=n_items))
    ids = draw(st.none() | st.lists(st.integers(0, n_users - 1), max_size=12))
    return UI, NB, EX, ids


@pytest.mark.parametrize("backend", BACKENDS)
@given(inp=recommend_inputs(), n=st.integers(1, 8), exclude_seen=st.booleans())
def test_recommend_matches_brute_force(backend, inp, n, exclude_seen):
    UI, NB, EX, ids = inp
    got = fastrec.recommend(UI, NB, n, user_ids=ids, exclude_seen=exclude_seen, exclude=EX,
                            backend=backend)
    rows = np.arange(UI.shape[0]) if ids is None else np.asarray(ids, dtype=np.int64)
    want = oracle_recommend(UI, NB, n, rows, UI if exclude_seen else None, EX)
    assert got.scores.dtype == want[1].dtype
    assert_topk_equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@given(inp=recommend_inputs(user_based=True), n=st.integers(1, 8), exclude_seen=st.booleans())
def test_recommend_user_based_matches_brute_force(backend, inp, n, exclude_seen):
    UI, NB, EX, ids = inp
    got = fastrec.recommend_user_based(UI, NB, n, user_ids=ids, exclude_seen=exclude_seen,
                                       exclude=EX, backend=backend)
    rows = np.arange(UI.shape[0]) if ids is None else np.asarray(ids, dtype=np.int64)
    want = oracle_recommend(NB, UI, n, rows, UI if exclude_seen else None, EX)
    assert_topk_equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_recommend_seen_items_skipped_and_users_without_candidates_padded(backend):
    UI = sp.csr_matrix(np.array([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1.0]]))
    NB = sp.csr_matrix(np.array([[0, 0.5, 0.5, 0], [0.9, 0, 0, 0], [0, 0, 0, 0], [1.0, 0, 0, 0]]))
    got = fastrec.recommend(UI, NB, 3, backend=backend)
    np.testing.assert_array_equal(got.indices, [[1, 2, -1], [-1, -1, -1], [0, -1, -1]])
    got = fastrec.recommend(UI, NB, 3, user_ids=[2, 0], exclude=sp.csr_matrix(
        np.array([[0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])), backend=backend)
    np.testing.assert_array_equal(got.indices, [[0, -1, -1], [2, -1, -1]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_recommend_bad_input(backend):
    UI = sp.csr_matrix(np.eye(3))
    with pytest.raises(ValueError, match=r"item_neighbours must have shape \(3, 3\)"):
        fastrec.recommend(UI, sp.csr_matrix(np.eye(4)), 2, backend=backend)
    with pytest.raises(ValueError, match=r"user_neighbours must have shape \(3, 3\)"):
        fastrec.recommend_user_based(UI, sp.csr_matrix(np.eye(2)), 2, backend=backend)
    with pytest.raises(ValueError, match="user_ids contains 3"):
        fastrec.recommend(UI, UI, 2, user_ids=[0, 3], backend=backend)
    with pytest.raises(ValueError, match="n must be >= 1"):
        fastrec.recommend(UI, UI, 0, backend=backend)
    with pytest.raises(ValueError, match="item_neighbours contains NaN"):
        fastrec.recommend(UI, sp.csr_matrix(np.full((3, 3), np.nan)), 2, backend=backend)
