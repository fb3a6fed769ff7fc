"""Every compiled backend of cosine_topk and cosine_similarity against the NumPy reference:
random inputs (hypothesis), edge cases, dtypes, thread-count determinism, the memory bound."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
from backends import compiled_backends
from comparators import assert_csr_close, assert_csr_topk_equal
from hypothesis import given
from hypothesis import strategies as st
from strategies import raw_csr

import fastrec
import fastrec.similarity as similarity

TOPK_BACKENDS = compiled_backends("cosine_topk")
SIM_BACKENDS = compiled_backends("cosine_similarity")


def _random_csr(
    n_rows, n_cols, density, *, seed=0, binary=False, dtype=np.float64, itype=np.int32, signed=False
):
    rng = np.random.default_rng(seed)
    m = sp.random(n_rows, n_cols, density=density, random_state=rng, dtype=np.float64, format="csr")
    if binary:
        m.data[:] = 1.0
    elif signed:
        m.data *= rng.choice([-1.0, 1.0], m.nnz)
    m = m.astype(dtype)
    m.indices = m.indices.astype(itype)
    m.indptr = m.indptr.astype(itype)
    return m


def _skewed(n_rows, n_cols, nnz, *, seed=0):
    """Zipf-popular columns on rows of log-normal length: some rows meet most other rows
    (dense accumulator scan), others only a few (touched-slot list)."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n_rows, nnz)
    p = 1.0 / (np.arange(n_cols) + 3.0)
    cols = rng.choice(n_cols, nnz, p=p / p.sum())
    m = sp.csr_matrix((np.ones(nnz), (rows, cols)), shape=(n_rows, n_cols))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _same_csr(a, b):
    """Bit for bit: the same indptr, indices and values."""
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.dtype == b.dtype


# ---- cosine_topk ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", TOPK_BACKENDS)
@given(
    m=raw_csr(signed=True),
    k=st.integers(1, 6),
    shrink=st.sampled_from([0.0, 2.0]),
    min_similarity=st.sampled_from([-1.0, 0.0, 0.3]),
    min_support=st.integers(1, 3),
    include_self=st.booleans(),
)
def test_cosine_topk_matches_reference(
    backend, m, k, shrink, min_similarity, min_support, include_self
):
    kw = dict(
        shrink=shrink,
        min_similarity=min_similarity,
        min_support=min_support,
        include_self=include_self,
    )
    got = fastrec.cosine_topk(m, k, backend=backend, **kw)
    want = fastrec.cosine_topk(m, k, backend="numpy", **kw)
    assert_csr_topk_equal(got, want, k)


@pytest.mark.parametrize("backend", TOPK_BACKENDS)
@given(
    m=raw_csr(binary=True, max_rows=30, max_cols=20),
    k=st.integers(1, 8),
    shrink=st.sampled_from([0.0, 5.0]),
    min_support=st.integers(1, 2),
)
def test_cosine_topk_binary_matches_reference(backend, m, k, shrink, min_support):
    got = fastrec.cosine_topk(m, k, shrink=shrink, min_support=min_support, backend=backend)
    want = fastrec.cosine_topk(m, k, shrink=shrink, min_support=min_support, backend="numpy")
    assert_csr_topk_equal(got, want, k)


@pytest.mark.parametrize("backend", TOPK_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("itype", [np.int32, np.int64])
@pytest.mark.parametrize("binary", [True, False])
def test_cosine_topk_dtypes_and_both_scan_modes(backend, dtype, itype, binary):
    # 600 rows over skewed columns: popular rows scan the accumulator, rare ones a slot list.
    m = (
        _skewed(600, 300, 3000, seed=1)
        if binary
        else _random_csr(600, 300, 0.01, seed=1, dtype=dtype, itype=itype)
    )
    m = m.astype(dtype)
    m.indices, m.indptr = m.indices.astype(itype), m.indptr.astype(itype)
    for kw in (
        dict(),
        dict(shrink=3.0, min_support=2, include_self=True),
        dict(min_similarity=0.2),
    ):
        got = fastrec.cosine_topk(m, 10, backend=backend, **kw)
        want = fastrec.cosine_topk(m, 10, backend="numpy", **kw)
        assert got.dtype == dtype
        assert_csr_topk_equal(got, want, 10)


@pytest.mark.parametrize("backend", TOPK_BACKENDS)
def test_cosine_topk_signed_values(backend):
    m = _random_csr(200, 60, 0.08, seed=3, signed=True)
    for kw in (dict(), dict(min_similarity=-1.0, shrink=1.0)):
        got = fastrec.cosine_topk(m, 7, backend=backend, **kw)
        want = fastrec.cosine_topk(m, 7, backend="numpy", **kw)
        assert_csr_topk_equal(got, want, 7)


@pytest.mark.parametrize("backend", TOPK_BACKENDS)
@pytest.mark.parametrize("weighting", ["tfidf", "bm25"])
def test_cosine_topk_weighting_matches_reference(backend, weighting):
    m = _random_csr(150, 80, 0.06, seed=4)
    m.data = np.ceil(m.data * 5)
    got = fastrec.cosine_topk(m, 5, weighting=weighting, backend=backend)
    want = fastrec.cosine_topk(m, 5, weighting=weighting, backend="numpy")
    assert_csr_topk_equal(got, want, 5)


@pytest.mark.parametrize("backend", TOPK_BACKENDS)
def test_ties_broken_by_smaller_index(backend):
    X = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]], float))
    S = fastrec.cosine_topk(X, 3, backend=backend)
    np.testing.assert_array_equal(S[0].indices, [4, 1, 2])
    np.testing.assert_array_equal(S[1].indices, [2, 3, 0])


@pytest.mark.parametrize("backend", TOPK_BACKENDS)
@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0), (1, 1), (4, 3)])
def test_cosine_topk_empty_and_tiny(backend, shape):
    X = sp.csr_matrix(shape)
    if shape == (1, 1):
        X = sp.csr_matrix(np.ones((1, 1)))
    for include_self in (False, True):
        got = fastrec.cosine_topk(X, 3, include_self=include_self, backend=backend)
        want = fastrec.cosine_topk(X, 3, include_self=include_self, backend="numpy")
        assert got.shape == (shape[0], shape[0])
        _same_csr(got, want)


@pytest.mark.parametrize("backend", TOPK_BACKENDS)
def test_k_larger_than_row_keeps_all_candidates(backend):
    X = sp.csr_matrix(np.ones((4, 2)))
    S = fastrec.cosine_topk(X, 10**6, backend=backend)
    assert np.all(np.diff(S.indptr) == 3)


@pytest.mark.parametrize("backend", TOPK_BACKENDS)
def test_input_not_modified(backend):
    X = _random_csr(50, 30, 0.2, seed=5)
    X.indices = X.indices[::-1].copy()  # unsorted on purpose (indptr still valid per row)
    X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=X.shape)
    before = (X.data.copy(), X.indices.copy(), X.indptr.copy())
    fastrec.cosine_topk(X, 4, shrink=1.0, backend=backend)
    fastrec.cosine_similarity(X, backend=backend)
    for a, b in zip(before, (X.data, X.indices, X.indptr)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", TOPK_BACKENDS)
@pytest.mark.parametrize("binary", [True, False])
def test_same_result_any_thread_count(backend, binary):
    m = _skewed(800, 400, 6000, seed=6)
    if not binary:
        m.data = np.random.default_rng(6).uniform(0.1, 2.0, m.nnz)
    runs = [fastrec.cosine_topk(m, 20, shrink=2.0, backend=backend, n_threads=t) for t in (1, 2, 3)]
    for other in runs[1:]:
        _same_csr(runs[0], other)
    sims = [fastrec.cosine_similarity(m, backend=backend, n_threads=t) for t in (1, 2, 3)]
    for other in sims[1:]:
        _same_csr(sims[0], other)


# ---- cosine_similarity -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", SIM_BACKENDS)
@given(
    m=raw_csr(signed=True), min_similarity=st.sampled_from([-1.0, 0.0, 0.4]), with_y=st.booleans()
)
def test_cosine_similarity_matches_reference(backend, m, min_similarity, with_y):
    Y = sp.csr_matrix(m)[::-1] if with_y else None
    got = fastrec.cosine_similarity(m, Y, min_similarity=min_similarity, backend=backend)
    want = fastrec.cosine_similarity(m, Y, min_similarity=min_similarity, backend="numpy")
    assert_csr_close(got, want)
    np.testing.assert_array_equal(got.indptr, want.indptr)  # the same entries are stored
    np.testing.assert_array_equal(got.indices, want.indices)  # columns ascending, like it


@pytest.mark.parametrize("backend", SIM_BACKENDS)
@pytest.mark.parametrize("x_binary, y_binary", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float32, np.float64)])
def test_cosine_similarity_mixed_operands(backend, x_binary, y_binary, dtypes):
    X = _skewed(300, 100, 1500, seed=7) if x_binary else _random_csr(300, 100, 0.05, seed=7)
    Y = _skewed(120, 100, 900, seed=8) if y_binary else _random_csr(120, 100, 0.08, seed=8)
    X, Y = X.astype(dtypes[0]), Y.astype(dtypes[1])
    got = fastrec.cosine_similarity(X, Y, min_similarity=0.05, backend=backend)
    want = fastrec.cosine_similarity(X, Y, min_similarity=0.05, backend="numpy")
    assert got.dtype == want.dtype == np.result_type(*dtypes)
    assert_csr_close(got, want)
    np.testing.assert_array_equal(got.indices, want.indices)


# ---- memory ------------------------------------------------------------------------------------


def test_memory_estimate_is_checked_before_allocating(monkeypatch):
    monkeypatch.setattr(fastrec._validation, "available_memory", lambda: 10_000)
    X = _random_csr(100, 50, 0.1)
    with pytest.raises(MemoryError, match=r"cosine_topk needs about .* GiB"):
        fastrec.cosine_topk(X, 5)
    with pytest.raises(MemoryError, match=r"cosine_similarity needs about"):
        fastrec.cosine_similarity(X)


def test_memory_estimate_grows_with_nnz_rows_k_threads_not_rows_squared():
    base = similarity.cosine_topk_memory(10_000, 1_000, 100_000, 10, 2)
    assert base < 10_000 * 10_000  # nowhere near the n x n product
    assert similarity.cosine_topk_memory(20_000, 1_000, 100_000, 10, 2) < 2.1 * base
    assert similarity.cosine_topk_memory(10_000, 1_000, 100_000, 10, 4) > base


_PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, scipy.sparse as sp
    import fastrec
    backend, n = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)
    # n rows over 2,000 columns, 5 values each: every row meets ~125 others.
    cols = rng.integers(0, 2000, (n, 5))
    X = sp.csr_matrix((np.ones(n * 5), cols.ravel(), np.arange(0, 5 * n + 1, 5)),
                      shape=(n, 2000))
    X.sum_duplicates()
    fastrec.cosine_topk(X[:50], 10, backend=backend, n_threads=2)  # compile / warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    S = fastrec.cosine_topk(X, 10, backend=backend, n_threads=2)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_growth": after - before, "nnz": int(S.nnz)}))
""")


@pytest.mark.parametrize("backend", TOPK_BACKENDS)
def test_peak_memory_is_linear_not_quadratic(backend):
    # n x n float32 would be 1.6 GB; the bound O(nnz + n*k + threads*n) is a few MB here.
    n = 20_000
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, backend, str(n)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["nnz"] > 0
    bound = similarity.cosine_topk_memory(n, 2000, 5 * n, 10, 2)
    assert res["peak_growth"] <= 2 * bound + 32 * 2**20, res
    assert res["peak_growth"] < n * n * 4 // 20, res
