"""Row subsets of the similarity kernels: what ``fastrec.dask`` builds its row blocks on.

``cosine_topk(X, k, rows=r)`` must be bit for bit rows ``r`` of the all-rows result, and
``cosine_similarity(X[r], Y)`` bit for bit rows ``r`` of ``cosine_similarity(X, Y)``, on every
backend (a row's result may depend only on that row and the whole matrix, never on which other
rows are computed alongside it).
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from strategies import canonical, raw_csr

import fastrec
import fastrec.similarity as similarity
from fastrec import available_backends
from fastrec._validation import check_csr


def _row_backends():
    # CUDA runs on the simulator in CI: its rows= check is one small case in test_cuda_equivalence.
    return [b for b in available_backends("cosine_topk") if b != "cuda"]


def assert_csr_identical(a, b):
    """Same shape, family, dtype, structure and values, bit for bit."""
    assert type(a) is type(b)
    assert a.shape == b.shape
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def _take_rows(M, rows):
    """Rows of a top-k CSR in the given order, keeping each row's (ranked) entry order."""
    M = sp.csr_matrix(M) if not isinstance(M, sp.csr_matrix) else M
    rows = np.asarray(rows, dtype=np.int64)
    starts, stops = M.indptr[rows], M.indptr[rows + 1]
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(stops - starts, out=indptr[1:])
    pick = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)] + [np.zeros(0, int)])
    return M.indices[pick], M.data[pick], indptr


@pytest.mark.parametrize("backend", _row_backends())
@given(
    raw_csr(max_rows=14, signed=False),
    st.integers(1, 5),
    st.sampled_from([0.0, 2.0]),
    st.integers(1, 2),
    st.booleans(),
    st.sampled_from([None, "tfidf", "bm25"]),
    st.data(),
)
def test_cosine_topk_rows_equal_all_rows_bit_for_bit(
    backend, m, k, shrink, min_support, include_self, weighting, data
):
    n = m.shape[0]
    rows = data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=2 * n if n else 0))
    opts = dict(
        shrink=shrink,
        min_support=min_support,
        include_self=include_self,
        weighting=weighting,
        backend=backend,
    )
    full = fastrec.cosine_topk(m, k, **opts)
    part = fastrec.cosine_topk(m, k, rows=np.array(rows, dtype=np.int64), **opts)
    assert part.shape == (len(rows), n)
    assert type(part) is type(full) and part.dtype == full.dtype
    indices, values, indptr = _take_rows(full, rows)
    np.testing.assert_array_equal(part.indptr, indptr)
    np.testing.assert_array_equal(part.indices, indices)
    np.testing.assert_array_equal(part.data, values)


@pytest.mark.parametrize("backend", _row_backends())
def test_cosine_topk_contiguous_blocks_reassemble_the_full_result(backend):
    rng = np.random.default_rng(3)
    X = sp.random(60, 25, density=0.2, random_state=rng, format="csr", dtype=np.float32)
    full = fastrec.cosine_topk(X, 7, shrink=1.0, backend=backend)
    blocks = [
        fastrec.cosine_topk(X, 7, shrink=1.0, rows=np.arange(r0, min(r0 + 16, 60)), backend=backend)
        for r0 in range(0, 60, 16)
    ]
    assert_csr_identical(sp.vstack(blocks, format="csr"), full)


def _similarity_backends():
    return [b for b in available_backends("cosine_similarity_prepare") if b != "cuda"]


def _prepared_block(X, Y, r0, r1, min_sim, backend):
    """Rows [r0, r1) of cosine_similarity(X, Y) the way fastrec.dask computes a block."""
    A = check_csr(X, "X", drop_zeros=True)
    B = None if Y is None else check_csr(Y, "Y", drop_zeros=True)
    P = similarity._prepare_similarity(A, B, backend, 2)
    return similarity._cosine_similarity_block(P, r0, r1, min_sim, 1)


@pytest.mark.parametrize("backend", _similarity_backends())
@given(raw_csr(max_rows=14, min_cols=1), st.booleans(), st.sampled_from([0.0, 0.4]), st.data())
def test_cosine_similarity_row_block_equals_rows_of_full(backend, m, with_y, min_sim, data):
    X = canonical(m).astype(m.dtype)
    width = X.shape[1]
    Y = data.draw(raw_csr(max_rows=8, min_cols=width, max_cols=width)) if with_y else None
    full = fastrec.cosine_similarity(X, Y, min_similarity=min_sim, backend=backend)
    n = X.shape[0]
    r0 = data.draw(st.integers(0, n))
    r1 = data.draw(st.integers(r0, n))
    block = _prepared_block(X, Y, r0, r1, min_sim, backend)
    assert_csr_identical(block, full[r0:r1])


@pytest.mark.parametrize("backend", _similarity_backends())
def test_cosine_similarity_block_of_constant_rows_computed_as_in_the_whole_call(backend):
    # Rows 0-5 each hold one constant value, the others do not: alone, the block would take
    # the binary product (c * a_i * b_j), whose rounding differs from the weighted sum the
    # whole call computes. The preparation decides over all of X, so the block matches.
    rng = np.random.default_rng(1)
    X = sp.random(12, 30, density=0.5, random_state=rng, format="csr")
    X.data[:] = rng.integers(1, 5, X.nnz)
    for i in range(6):
        X.data[X.indptr[i] : X.indptr[i + 1]] = [0.3, 1.7, 2.9, 7.1, 0.3, 1.7][i]
    Y = sp.random(9, 30, density=0.6, random_state=rng, format="csr")
    Y.data[:] = 1.0
    full = fastrec.cosine_similarity(X, Y, backend=backend)
    assert_csr_identical(_prepared_block(X, Y, 0, 6, 0.0, backend), full[0:6])


@pytest.mark.parametrize(
    "rows, err, msg",
    [
        ([0, 5], ValueError, r"rows contains 5, outside \[0, 5\)"),
        ([-1], ValueError, "rows contains -1"),
        ([0.5], TypeError, "rows must hold integers"),
        ([[0, 1]], ValueError, "rows must be 1-D"),
    ],
)
def test_bad_rows_rejected(rows, err, msg):
    with pytest.raises(err, match=msg):
        fastrec.cosine_topk(sp.csr_matrix(np.eye(5)), 2, rows=rows)


def test_bm25_with_trailing_empty_rows():
    # Regression: the BM25 row lengths once used np.add.reduceat, which fails on them.
    X = sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    S = fastrec.cosine_topk(X, 1, weighting="bm25", backend="numpy")
    assert S.shape == (3, 3) and S[2].nnz == 0


def test_empty_rows_gives_empty_result():
    S = fastrec.cosine_topk(sp.csr_matrix(np.ones((4, 3))), 2, rows=[])
    assert S.shape == (0, 4) and S.nnz == 0
