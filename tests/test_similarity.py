"""Contract of cosine_topk and cosine_similarity (DESIGN.md), checked on the reference backend
against a brute-force dense oracle written independently of it."""

import numpy as np
import pytest
import scipy.sparse as sp
from comparators import assert_csr_close, assert_csr_topk_equal
from hypothesis import given
from hypothesis import strategies as st
from strategies import canonical, raw_csr

import fastrec


def oracle_topk(m, k, shrink=0.0, min_similarity=0.0, min_support=1, include_self=False):
    """Dense n x n brute force: every rule of the contract spelled out per row."""
    X = canonical(m).toarray()
    norms = np.linalg.norm(X, axis=1)
    P = (X != 0).astype(float)
    n = X.shape[0]
    rows = []
    for i in range(n):
        cands = []
        for j in range(n):
            if j == i and not include_self:
                continue
            c = P[i] @ P[j]
            if norms[i] == 0 or norms[j] == 0 or c < min_support:
                continue
            s = (X[i] @ X[j]) / (norms[i] * norms[j])
            if shrink:
                s *= c / (c + shrink)
            if s >= min_similarity and s != 0:
                cands.append((-s, j))
        rows.append(sorted(cands)[:k])
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = [j for r in rows for _, j in r]
    data = [-s for r in rows for s, _ in r]
    return sp.csr_matrix(
        (np.array(data, dtype=m.dtype), np.array(indices, dtype=np.int64), indptr), shape=(n, n)
    )


@given(
    raw_csr(signed=True),
    st.integers(1, 6),
    st.sampled_from([0.0, 2.0]),
    st.sampled_from([-1.0, 0.0, 0.3]),
    st.integers(1, 3),
    st.booleans(),
)
def test_cosine_topk_matches_brute_force(m, k, shrink, min_similarity, min_support, include_self):
    got = fastrec.cosine_topk(
        m,
        k,
        shrink=shrink,
        min_similarity=min_similarity,
        min_support=min_support,
        include_self=include_self,
        backend="numpy",
    )
    want = oracle_topk(m, k, shrink, min_similarity, min_support, include_self)
    assert_csr_topk_equal(got, want, k)


def test_rows_sorted_descending_ties_by_smaller_index():
    # Rows 1, 2, 3 are identical: row 0 is equally similar to all three.
    X = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]], float))
    S = fastrec.cosine_topk(X, 3, backend="numpy")
    np.testing.assert_array_equal(S[0].indices, [4, 1, 2])
    np.testing.assert_array_equal(S[1].indices, [2, 3, 0])
    assert np.all(np.diff(S[0].data) <= 0)


def test_self_excluded_unless_asked():
    X = sp.csr_matrix(np.array([[1.0, 1.0], [1.0, 0.0]]))
    assert 0 not in fastrec.cosine_topk(X, 2, backend="numpy")[0].indices
    S = fastrec.cosine_topk(X, 2, include_self=True, backend="numpy")
    assert S[0].indices[0] == 0 and S[0].data[0] == pytest.approx(1.0)


def test_k_larger_than_row_keeps_all_candidates():
    X = sp.csr_matrix(np.ones((4, 2)))
    S = fastrec.cosine_topk(X, 10, backend="numpy")
    assert np.all(np.diff(S.indptr) == 3)


def test_rows_with_no_co_occurring_neighbour_are_empty():
    X = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0], [0, 0, 0]]))
    S = fastrec.cosine_topk(X, 5, backend="numpy")
    np.testing.assert_array_equal(np.diff(S.indptr), [0, 1, 1, 0])


def test_shrink_damps_by_co_count():
    X = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
    plain = fastrec.cosine_topk(X, 1, backend="numpy")[0].data[0]
    damped = fastrec.cosine_topk(X, 1, shrink=2.0, backend="numpy")[0].data[0]
    assert damped == pytest.approx(plain * 2 / (2 + 2.0))


def test_min_support_and_min_similarity_filter():
    X = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    S = fastrec.cosine_topk(X, 5, min_support=2, backend="numpy")
    assert set(S[0].indices) == {1}
    S = fastrec.cosine_topk(X, 5, min_similarity=0.75, backend="numpy")
    assert set(S[0].indices) == {1}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", [sp.csr_matrix, sp.csr_array])
def test_result_keeps_dtype_and_family(dtype, family):
    X = family(sp.random(6, 5, density=0.5, dtype=dtype, random_state=1))
    for out in (
        fastrec.cosine_topk(X, 2, backend="numpy"),
        fastrec.cosine_similarity(X, backend="numpy"),
    ):
        assert out.dtype == dtype
        assert isinstance(out, sp.sparray) == (family is sp.csr_array)


def test_weighting_tfidf_and_bm25_follow_the_literature():
    X = sp.csr_matrix(np.array([[2.0, 1.0, 0.0], [1.0, 0.0, 3.0], [0.0, 4.0, 1.0]]))
    D = X.toarray()
    n = D.shape[0]
    idf = np.log(n) - np.log1p((D != 0).sum(axis=0))
    tfidf = np.sqrt(D) * idf
    rowsum = D.sum(axis=1)
    norm = (1 - 0.8) + 0.8 * rowsum / rowsum.mean()
    bm25 = np.where(D != 0, D * 101.0 / (100.0 * norm[:, None] + D) * idf, 0.0)
    for weighting, W in (("tfidf", tfidf), ("bm25", bm25)):
        got = fastrec.cosine_similarity(sp.csr_matrix(W), backend="numpy")
        want = fastrec.cosine_topk(
            X, 3, include_self=True, weighting=weighting, min_similarity=-1.0, backend="numpy"
        )
        np.testing.assert_allclose(
            np.sort(want.toarray(), 1), np.sort(got.toarray(), 1), atol=1e-12
        )


@given(raw_csr(signed=True), st.sampled_from([-1.0, 0.0, 0.4]), st.booleans())
def test_cosine_similarity_matches_dense(m, min_similarity, with_y):
    Y = sp.csr_matrix(m)[::-1] if with_y else None
    got = fastrec.cosine_similarity(m, Y, min_similarity=min_similarity, backend="numpy")
    X = canonical(m).toarray()
    Yd = X[::-1] if Y is not None else X
    nx = np.linalg.norm(X, axis=1)
    ny = np.linalg.norm(Yd, axis=1)
    full = (X @ Yd.T) / np.where(np.outer(nx, ny) > 0, np.outer(nx, ny), 1)
    full[(full < min_similarity)] = 0
    assert_csr_close(got, sp.csr_matrix(full.astype(got.dtype)))
    for r in range(got.shape[0]):  # columns ascending within each row
        assert np.all(np.diff(got.indices[got.indptr[r] : got.indptr[r + 1]]) > 0)


def test_cosine_similarity_column_mismatch_rejected():
    with pytest.raises(ValueError, match="same number of columns"):
        fastrec.cosine_similarity(sp.csr_matrix(np.eye(2)), sp.csr_matrix(np.eye(3)))


@pytest.mark.parametrize(
    "kwargs, err, msg",
    [
        (dict(k=0), ValueError, "k must be >= 1"),
        (dict(shrink=-1.0), ValueError, "shrink must be >= 0"),
        (dict(min_support=0), ValueError, "min_support must be >= 1"),
        (dict(min_similarity=np.nan), ValueError, "min_similarity must be finite"),
        (dict(weighting="idf"), ValueError, "weighting must be one of"),
        (dict(bm25_b=2.0), ValueError, "bm25_b must be <= 1"),
        (dict(n_threads=0), ValueError, "n_threads must not be 0"),
    ],
)
def test_cosine_topk_bad_arguments_rejected(kwargs, err, msg):
    args = dict(k=3)
    args.update(kwargs)
    with pytest.raises(err, match=msg):
        fastrec.cosine_topk(sp.csr_matrix(np.eye(3)), **args)


def test_cosine_topk_bad_inputs_rejected_and_untouched():
    with pytest.raises(TypeError, match="X must be a scipy.sparse"):
        fastrec.cosine_topk(np.eye(3), 2)
    X = sp.csr_matrix(np.array([[1.0, np.nan], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="X contains NaN"):
        fastrec.cosine_topk(X, 2)
    neg = sp.csr_matrix(np.array([[1.0, -1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="non-negative"):
        fastrec.cosine_topk(neg, 2, weighting="bm25")
    raw = sp.csr_matrix(
        (np.array([1.0, 2.0, 3.0]), np.array([1, 0, 1]), np.array([0, 3, 3])), shape=(2, 2)
    )
    before = (raw.data.copy(), raw.indices.copy())
    fastrec.cosine_topk(raw, 1)
    np.testing.assert_array_equal(raw.data, before[0])
    np.testing.assert_array_equal(raw.indices, before[1])
