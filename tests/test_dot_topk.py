"""fastrec.dot_topk: every compiled CPU backend against the NumPy reference, edge cases, checks.

Scores come from BLAS tiles in the compiled backends and from a float64 product in the
reference, so Gaussian factors are compared tie-tolerantly within float rounding; small-integer
factors make every product exact, so there the results must match bit for bit (ties included).
Tiles are shrunk (monkeypatched) so that small inputs cross query-block and item-tile edges.
"""

import contextlib
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from backends import compiled_backends
from comparators import assert_topk_equal
from hypothesis import given
from hypothesis import strategies as st
from strategies import float_dtypes, index_dtypes

import fastrec

BACKENDS = compiled_backends("dot_topk")
ALL = ["numpy", *BACKENDS]


def _tile_settings(backend):
    """(module, query-block attribute, item-tile attribute) of a compiled backend's tiles."""
    if backend == "cython":
        from fastrec.kernels._cython import _embedding

        return _embedding, "QUERY_BLOCK", "ITEM_TILE"
    from fastrec.kernels.numba_cpu import embedding

    return embedding, "_QUERY_BLOCK", "_ITEM_TILE"


@contextlib.contextmanager
def small_tiles(backend):
    """Tiles of 5 queries x 64 items in a compiled backend, for the duration."""
    with pytest.MonkeyPatch.context() as mp:
        mod, qb, it = _tile_settings(backend)
        mp.setattr(mod, qb, 5)
        mp.setattr(mod, it, 64)
        yield


@st.composite
def problems(draw, max_queries=17, max_items=300):
    """(queries, items, exclude, candidates, bias, exact): C, F or strided factor arrays."""
    n_queries = draw(st.integers(0, max_queries))
    n_items = draw(st.integers(0, max_items))
    n_factors = draw(st.integers(1, 9))
    dtype = draw(float_dtypes)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    exact = draw(st.booleans())
    if exact:  # small integers: every product and sum exact in float32, many ties
        Q = rng.integers(-2, 3, (n_queries, n_factors)).astype(dtype)
        X = rng.integers(-2, 3, (n_items, n_factors)).astype(dtype)
    else:
        Q = rng.standard_normal((n_queries, n_factors)).astype(dtype)
        X = rng.standard_normal((n_items, n_factors)).astype(dtype)
    layout = draw(st.sampled_from(["C", "F", "strided"]))
    if layout == "F":
        Q, X = np.asfortranarray(Q), np.asfortranarray(X)
    elif layout == "strided":
        Q = np.repeat(Q, 2, axis=1)[:, ::2]
        X = np.repeat(X, 2, axis=0)[::2]
    exclude = None
    if draw(st.booleans()):
        dense = rng.random((n_queries, n_items)) < draw(st.sampled_from([0.05, 0.5]))
        if n_queries and draw(st.booleans()):
            dense[rng.integers(0, n_queries)] = True  # a query with every item excluded
        exclude = sp.csr_matrix(dense.astype(np.float64))
        itype = draw(index_dtypes)
        exclude.indptr = exclude.indptr.astype(itype)
        exclude.indices = exclude.indices.astype(itype)
    candidates = None
    if n_items and draw(st.booleans()):
        candidates = rng.choice(n_items, rng.integers(0, n_items + 1), replace=True)
    bias = None
    if draw(st.booleans()):
        bias = rng.integers(-2, 3, n_items) if exact else rng.standard_normal(n_items)
        bias = bias.astype(dtype)
    return Q, X, exclude, candidates, bias, exact


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=problems(), k=st.integers(1, 40), metric=st.sampled_from(["dot", "cosine"]))
def test_dot_topk_equals_reference(backend, case, k, metric):
    Q, X, exclude, candidates, bias, exact = case
    kw = dict(exclude=exclude, candidates=candidates, item_bias=bias, metric=metric)
    before = (Q.copy(), X.copy())
    want = fastrec.dot_topk(Q, X, k, backend="numpy", **kw)
    with small_tiles(backend):
        got = fastrec.dot_topk(Q, X, k, backend=backend, **kw)
    np.testing.assert_array_equal(Q, before[0])  # inputs never written
    np.testing.assert_array_equal(X, before[1])
    assert got.indices.dtype == np.int64 and got.scores.dtype == Q.dtype
    assert got.indices.shape == (Q.shape[0], k)
    if exact and metric == "dot":
        assert_topk_equal(got, want, exact=True)
    else:
        tol = 1e-4 if Q.dtype == np.float32 else 1e-10
        assert_topk_equal(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=problems(max_queries=30, max_items=400), k=st.integers(1, 30))
def test_same_result_any_thread_count(backend, case, k):
    Q, X, exclude, candidates, bias, _ = case
    kw = dict(exclude=exclude, candidates=candidates, item_bias=bias, backend=backend)
    with small_tiles(backend):
        one = fastrec.dot_topk(Q, X, k, n_threads=1, **kw)
        for n_threads in (2, 3):
            got = fastrec.dot_topk(Q, X, k, n_threads=n_threads, **kw)
            assert_topk_equal(got, one, exact=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_tiles_match_reference(backend):
    """Past one 512-query block and one 512-item tile with the tiles the library ships."""
    rng = np.random.default_rng(3)
    Q = rng.integers(-3, 4, (700, 8)).astype(np.float32)
    X = rng.integers(-3, 4, (1300, 8)).astype(np.float32)
    seen = sp.random(700, 1300, density=0.05, format="csr", random_state=4)
    want = fastrec.dot_topk(Q, X, 10, exclude=seen, backend="numpy")
    assert_topk_equal(fastrec.dot_topk(Q, X, 10, exclude=seen, backend=backend), want, exact=True)


@pytest.mark.parametrize("backend", ALL)
def test_ties_broken_by_smaller_index(backend):
    Q = np.ones((2, 3), np.float32)
    X = np.ones((6, 3), np.float32)
    got = fastrec.dot_topk(Q, X, 4, backend=backend)
    np.testing.assert_array_equal(got.indices, [[0, 1, 2, 3]] * 2)
    np.testing.assert_array_equal(got.scores, np.full((2, 4), 3.0, np.float32))


@pytest.mark.parametrize("backend", ALL)
def test_zero_norm_vectors_under_cosine(backend):
    Q = np.array([[0.0, 0.0], [1.0, 0.0]])
    X = np.array([[0.0, 0.0], [2.0, 0.0], [-1.0, 0.0], [0.0, 3.0]])
    got = fastrec.dot_topk(Q, X, 4, metric="cosine", backend=backend)
    np.testing.assert_array_equal(got.indices, [[0, 1, 2, 3], [1, 0, 3, 2]])
    np.testing.assert_array_equal(got.scores, [[0, 0, 0, 0], [1, 0, 0, -1]])


@pytest.mark.parametrize("backend", ALL)
def test_k_larger_than_candidates_is_padded(backend):
    Q = np.array([[1.0, 2.0]])
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    got = fastrec.dot_topk(Q, X, 5, candidates=[2, 0], backend=backend)
    np.testing.assert_array_equal(got.indices, [[2, 0, -1, -1, -1]])
    np.testing.assert_array_equal(got.scores, [[3.0, 1.0, -np.inf, -np.inf, -np.inf]])


@pytest.mark.parametrize("backend", ALL)
def test_all_items_excluded(backend):
    Q = np.ones((2, 2), np.float32)
    X = np.ones((3, 2), np.float32)
    exclude = sp.csr_matrix(np.array([[1, 1, 1], [0, 1, 0]]))
    got = fastrec.dot_topk(Q, X, 2, exclude=exclude, backend=backend)
    np.testing.assert_array_equal(got.indices, [[-1, -1], [0, 2]])
    np.testing.assert_array_equal(got.scores, [[-np.inf, -np.inf], [2, 2]])


@pytest.mark.parametrize("backend", ALL)
def test_item_bias_added(backend):
    Q = np.array([[1.0, 0.0]])
    X = np.array([[1.0, 0.0], [0.5, 0.0], [0.0, 1.0]])
    got = fastrec.dot_topk(Q, X, 3, item_bias=[0.0, 1.0, 0.25], backend=backend)
    np.testing.assert_array_equal(got.indices, [[1, 0, 2]])
    np.testing.assert_array_equal(got.scores, [[1.5, 1.0, 0.25]])


@pytest.mark.parametrize("backend", ALL)
def test_empty_queries_and_items(backend):
    X = np.ones((4, 3))
    got = fastrec.dot_topk(np.empty((0, 3)), X, 2, backend=backend)
    assert got.indices.shape == got.scores.shape == (0, 2)
    got = fastrec.dot_topk(np.ones((2, 3)), np.empty((0, 3)), 2, backend=backend)
    np.testing.assert_array_equal(got.indices, np.full((2, 2), -1))


def test_mixed_dtypes_give_float64():
    got = fastrec.dot_topk(np.ones((1, 2), np.float32), np.ones((2, 2)), 1)
    assert got.scores.dtype == np.float64


@pytest.mark.parametrize("where", ["queries", "items", "item_bias"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_rejected(where, bad):
    args = dict(queries=np.ones((2, 3)), items=np.ones((4, 3)), item_bias=np.zeros(4))
    args[where] = args[where].copy()
    args[where].flat[1] = bad
    with pytest.raises(ValueError, match=where):
        fastrec.dot_topk(args["queries"], args["items"], 2, item_bias=args["item_bias"])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(items=np.ones((4, 2))), ValueError, "same number of factors"),
        (dict(queries=np.ones((2, 0)), items=np.ones((4, 0))), ValueError, "at least one"),
        (dict(k=0), ValueError, "k must be >= 1"),
        (dict(k=2.0), TypeError, "k must be an integer"),
        (dict(metric="l2"), ValueError, "metric"),
        (dict(candidates=[0, 4]), ValueError, "candidates contains 4"),
        (dict(candidates=[0.5]), TypeError, "candidates must hold integers"),
        (dict(item_bias=np.ones(3)), ValueError, "item_bias must have length 4"),
        (dict(exclude=sp.csr_matrix((2, 5))), ValueError, r"exclude must have shape \(2, 4\)"),
        (dict(exclude=np.zeros((2, 4))), TypeError, "exclude must be a scipy.sparse"),
        (dict(queries=np.ones(3)), ValueError, "queries must be 2-D"),
        (dict(queries=np.array([["a"]])), TypeError, "queries has dtype"),
        (dict(backend="gpu"), ValueError, "backend must be"),
    ],
)
def test_bad_input_rejected(kwargs, error, match):
    args = dict(queries=np.ones((2, 3)), items=np.ones((4, 3)), k=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        fastrec.dot_topk(args.pop("queries"), args.pop("items"), args.pop("k"), **args)


def test_duplicate_candidates_counted_once():
    X = np.array([[1.0], [2.0], [3.0]])
    got = fastrec.dot_topk(np.ones((1, 1)), X, 3, candidates=[1, 1, 0])
    np.testing.assert_array_equal(got.indices, [[1, 0, -1]])


@pytest.mark.skipif("cython" not in BACKENDS, reason="Cython backend not built")
def test_memory_is_tiles_not_the_product():
    """1,000 x 20,000 float32 scores would be 80 MB; the kernel holds tiles (about 1.1 MB a
    thread at k=10) and the 1,000 x 10 output."""
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((1000, 16)).astype(np.float32)
    X = rng.standard_normal((20_000, 16)).astype(np.float32)
    seen = sp.csr_matrix(
        (
            np.ones(40_000, np.float32),
            (rng.integers(0, 1000, 40_000), rng.integers(0, 20_000, 40_000)),
        ),
        shape=(1000, 20_000),
    )
    fastrec.dot_topk(Q[:10], X, 10, exclude=seen[:10], backend="cython", n_threads=2)
    tracemalloc.start()
    try:
        fastrec.dot_topk(Q, X, 10, exclude=seen, backend="cython", n_threads=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak
