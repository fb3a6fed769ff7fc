"""prepare_cosine_topk: X made ready once, then cosine_topk over row blocks without the set-up.

``cosine_topk(prepare_cosine_topk(X, weighting=w, backend=b), k, rows=r)`` must be bit for bit
``cosine_topk(X, k, rows=r, weighting=w, backend=b)`` on every backend that prepares, also
after a pickle round trip (``fastrec.dask`` ships the prepared matrix to its workers), and a
block of rows must hold O(len(rows) * k) result slots, not O(n * k).
"""

import pickle
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from strategies import raw_csr

import fastrec
from fastrec import BackendUnavailableError, PreparedCosine, prepare_cosine_topk
from fastrec.kernels import _rows


def _prepare_backends():
    return list(fastrec.available_backends("cosine_topk_prepare"))


def assert_csr_identical(a, b):
    assert type(a) is type(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def test_every_cpu_backend_prepares():
    assert {"numpy", "cython", "numba"} <= set(_prepare_backends())


@pytest.mark.parametrize("backend", _prepare_backends())
@given(
    raw_csr(max_rows=14, signed=False),
    st.integers(1, 5),
    st.sampled_from([0.0, 2.0]),
    st.integers(1, 2),
    st.booleans(),
    st.sampled_from([None, "tfidf", "bm25"]),
    st.data(),
)
def test_prepared_rows_identical_to_unprepared_call(
    backend, m, k, shrink, min_support, include_self, weighting, data
):
    n = m.shape[0]
    rows = data.draw(
        st.none() | st.lists(st.integers(0, max(n - 1, 0)), max_size=2 * n if n else 0)
    )
    rows = None if rows is None else np.array(rows, dtype=np.int64)
    opts = dict(shrink=shrink, min_support=min_support, include_self=include_self)
    want = fastrec.cosine_topk(m, k, rows=rows, weighting=weighting, backend=backend, **opts)
    prepared = prepare_cosine_topk(m, weighting=weighting, backend=backend, n_threads=2)
    assert prepared.backend == backend and prepared.shape == m.shape
    got = fastrec.cosine_topk(prepared, k, rows=rows, n_threads=1, **opts)
    assert_csr_identical(got, want)
    shipped = pickle.loads(pickle.dumps(prepared))
    assert_csr_identical(fastrec.cosine_topk(shipped, k, rows=rows, **opts), want)


@pytest.mark.parametrize("backend", _prepare_backends())
def test_blocks_of_prepared_reassemble_the_full_result(backend):
    rng = np.random.default_rng(3)
    X = sp.random(90, 25, density=0.2, random_state=rng, format="csr", dtype=np.float32)
    full = fastrec.cosine_topk(X, 7, shrink=1.0, backend=backend)
    P = prepare_cosine_topk(X, backend=backend)
    blocks = [
        fastrec.cosine_topk(P, 7, shrink=1.0, rows=np.arange(r0, min(r0 + 16, 90)))
        for r0 in range(0, 90, 16)
    ]
    assert_csr_identical(sp.vstack(blocks, format="csr"), full)


@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_block_result_memory_is_per_block_not_per_matrix(backend):
    # n*k result slots of 16 bytes would be 4000 * 50 * 16 = 3.2 MB; a 10-row block needs
    # 10 * 50 * 16 = 8 KB (the per-thread accumulators are O(n) and C-allocated).
    rng = np.random.default_rng(0)
    n, k = 4000, 50
    X = sp.random(n, 300, density=0.05, random_state=rng, format="csr")
    P = prepare_cosine_topk(X, backend=backend, n_threads=1)
    block = np.arange(100, 110)
    fastrec.cosine_topk(P, k, rows=block, n_threads=1)  # compile / warm up outside the trace
    tracemalloc.start()
    try:
        S = fastrec.cosine_topk(P, k, rows=block, n_threads=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert S.shape == (10, n)
    assert peak < n * k * 16 / 20, peak


def test_plan_slots_follow_the_requested_rows():
    work = np.array([5, 1, 9, 9, 0])
    order, slots = _rows.plan(work, np.array([3, 1, 3, 0]))
    np.testing.assert_array_equal(order, [3, 0, 1])  # distinct rows, heaviest first, ties by id
    np.testing.assert_array_equal(order[slots], [3, 1, 3, 0])
    order, slots = _rows.plan(work, None)
    np.testing.assert_array_equal(order, [2, 3, 0, 1, 4])
    np.testing.assert_array_equal(order[slots], np.arange(5))


def test_prepared_reports_its_size_and_family():
    X = sp.csr_array(sp.random(50, 20, density=0.2, random_state=0, format="csr"))
    P = prepare_cosine_topk(X, backend="cython")
    assert isinstance(P, PreparedCosine) and P.sparse_array and P.dtype == np.float64
    assert P.nbytes >= 8 * X.nnz and "cython" in repr(P)
    assert isinstance(fastrec.cosine_topk(P, 3), sp.csr_array)


def test_weighting_on_a_prepared_matrix_rejected():
    P = prepare_cosine_topk(sp.random(20, 10, density=0.3, random_state=0, format="csr"))
    with pytest.raises(ValueError, match="weighting= must be None here"):
        fastrec.cosine_topk(P, 3, weighting="tfidf")


def test_other_backend_than_prepared_rejected():
    P = prepare_cosine_topk(
        sp.random(20, 10, density=0.3, random_state=0, format="csr"), backend="numba"
    )
    with pytest.raises(ValueError, match="prepared for backend 'numba', got backend='cython'"):
        fastrec.cosine_topk(P, 3, backend="cython")


def test_backend_without_preparation_rejected_clearly():
    X = sp.random(20, 10, density=0.3, random_state=0, format="csr")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        prepare_cosine_topk(X, backend="cuda")
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        prepare_cosine_topk(X, backend="gpu")


@pytest.mark.parametrize(
    "call, err, msg",
    [
        (lambda P: fastrec.cosine_topk(P, 0), ValueError, "k must be >= 1"),
        (lambda P: fastrec.cosine_topk(P, 3, rows=[20]), ValueError, r"rows contains 20"),
        (lambda P: fastrec.cosine_topk(P, 3, shrink=-1), ValueError, "shrink must be >= 0"),
        (lambda P: fastrec.cosine_topk(P, 3, n_threads=0), ValueError, "n_threads must not be 0"),
    ],
)
def test_bad_arguments_with_a_prepared_matrix_rejected(call, err, msg):
    P = prepare_cosine_topk(sp.random(20, 10, density=0.3, random_state=0, format="csr"))
    with pytest.raises(err, match=msg):
        call(P)


def test_prepare_rejects_bad_input_like_cosine_topk():
    with pytest.raises(TypeError, match="X must be a scipy.sparse"):
        prepare_cosine_topk(np.ones((3, 3)))
    with pytest.raises(ValueError, match="X contains NaN"):
        prepare_cosine_topk(sp.csr_matrix(np.array([[1.0, np.nan]])))
    with pytest.raises(ValueError, match="weighting"):
        prepare_cosine_topk(sp.csr_matrix(np.eye(3)), weighting="idf")


def test_prepare_leaves_the_input_untouched():
    X = sp.random(30, 12, density=0.3, random_state=1, format="csr")
    before = (X.indptr.copy(), X.indices.copy(), X.data.copy())
    P = prepare_cosine_topk(X, weighting="bm25", backend="cython")
    fastrec.cosine_topk(P, 4, rows=[0, 5])
    for a, b in zip((X.indptr, X.indices, X.data), before):
        np.testing.assert_array_equal(a, b)
