"""No copy the kernel does not need: the scoring, loss/gradient and Hessian-vector paths hand the
caller's CSR arrays (canonical or not) to the kernel, and allocate far less than X holds."""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from backends import compiled_backends

import fastrec
import fastrec.scoring
from fastrec._validation import check_csr
from fastrec.scoring import LogisticObjective


def _non_canonical_csr(n_rows=100_000, nnz_per_row=20, n_cols=5_000, seed=0):
    """float32 CSR with every row's columns reversed (unsorted) and a duplicate in each row."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n_cols, size=(n_rows, nnz_per_row), dtype=np.int32)
    indices.sort(axis=1)
    indices = indices[:, ::-1].copy()
    indices[:, 1] = indices[:, 0]  # a duplicate column in every row
    data = rng.standard_normal(n_rows * nnz_per_row).astype(np.float32)
    indptr = np.arange(0, n_rows * nnz_per_row + 1, nnz_per_row, dtype=np.int32)
    X = sp.csr_matrix((data, indices.ravel(), indptr), shape=(n_rows, n_cols))
    assert not X.has_canonical_format
    return X


@pytest.fixture(scope="module")
def big_X():
    return _non_canonical_csr()


def _peak_bytes(fn):
    fn()  # compile and warm caches outside the measurement
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_check_csr_non_canonical_returns_the_callers_arrays(big_X):
    A = check_csr(big_X, canonical=False)
    assert A.indptr is big_X.indptr and A.indices is big_X.indices and A.data is big_X.data


def test_check_csr_canonical_copies_only_when_needed(big_X):
    Xc = big_X.copy()
    Xc.sum_duplicates()
    A = check_csr(Xc)
    assert A.indices is Xc.indices and A.data is Xc.data
    B = check_csr(big_X)  # canonical form asked for: a copy, the caller's object untouched
    assert not np.shares_memory(B.indices, big_X.indices)
    assert not big_X.has_canonical_format


@pytest.mark.parametrize("backend", ["auto", *compiled_backends("sigmoid_csr")])
def test_sigmoid_scores_passes_callers_arrays_to_kernel(big_X, backend, monkeypatch):
    seen = {}
    real = fastrec.scoring.get_kernel

    def spy(name, backend_):
        kernel = real(name, backend_)

        def wrapped(*args):
            seen["args"] = args
            return kernel(*args)

        return wrapped

    monkeypatch.setattr(fastrec.scoring, "get_kernel", spy)
    w = np.ones(big_X.shape[1], dtype=np.float32)
    fastrec.sigmoid_scores(big_X, w, backend=backend)
    indptr, indices, data = seen["args"][:3]
    assert np.shares_memory(indices, big_X.indices)
    assert np.shares_memory(data, big_X.data)
    assert np.shares_memory(indptr, big_X.indptr)


@pytest.mark.parametrize("backend", compiled_backends("sigmoid_csr"))
def test_sigmoid_scores_allocates_little(big_X, backend):
    w = np.full(big_X.shape[1], 0.01, dtype=np.float32)  # no saturated score: no X scan
    out = np.empty(big_X.shape[0], dtype=np.float32)
    peak = _peak_bytes(lambda: fastrec.sigmoid_scores(big_X, w, out=out, backend=backend))
    # A canonicalising copy would be indices + data (16 MB); the indptr check is 100 KB.
    assert peak < big_X.data.nbytes // 8, peak


@pytest.mark.parametrize("backend", compiled_backends("logistic_loss_grad_csr"))
def test_loss_grad_allocates_little(big_X, backend):
    rng = np.random.default_rng(1)
    y = (rng.random(big_X.shape[0]) < 0.3).astype(np.float64)
    w = np.zeros(big_X.shape[1])
    peak = _peak_bytes(lambda: fastrec.logistic_loss_grad(big_X, y, w, backend=backend))
    # Labels and default weights are n_rows float64 each (1.6 MB); X's data alone is 8 MB.
    assert peak < big_X.data.nbytes // 2, peak


@pytest.mark.parametrize("backend", compiled_backends("logistic_hessp_csr"))
def test_hessp_allocates_little(big_X, backend):
    rng = np.random.default_rng(2)
    y = (rng.random(big_X.shape[0]) < 0.3).astype(np.float64)
    obj = LogisticObjective(big_X, y, l2=1e-3, backend=backend)
    assert np.shares_memory(obj._args[1], big_X.indices)
    theta = np.full(big_X.shape[1] + 1, 0.01)
    v = rng.standard_normal(big_X.shape[1] + 1)
    obj.hessp(theta, v)  # curvature at theta computed and cached
    peak = _peak_bytes(lambda: obj.hessp(theta, v))
    # Row-sized float64 temporaries (0.8 MB each) are allowed; a copy of X (16 MB) is not.
    assert peak < big_X.data.nbytes // 4, peak


def test_non_canonical_sums_equal_canonical():
    X = _non_canonical_csr(n_rows=300, nnz_per_row=6, n_cols=50, seed=3)
    Xc = X.copy()
    Xc.sum_duplicates()
    rng = np.random.default_rng(4)
    w = rng.standard_normal(50)
    y = (rng.random(300) < 0.5).astype(float)
    # Equal up to rounding: canonicalising rounds each summed duplicate to float32 first.
    for backend in ["numpy", *compiled_backends("sigmoid_csr")]:
        np.testing.assert_allclose(
            fastrec.sigmoid_scores(X.astype(np.float64), w, backend=backend),
            fastrec.sigmoid_scores(Xc.astype(np.float64), w, backend=backend),
            rtol=1e-6,
        )
        got = fastrec.logistic_loss_grad(X, y, w, 0.1, l2=0.01, backend=backend)
        want = fastrec.logistic_loss_grad(Xc, y, w, 0.1, l2=0.01, backend=backend)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("canonical", [True, False])
def test_column_index_out_of_range_rejected(canonical):
    X = sp.csr_matrix((np.ones(3), np.array([0, 5, 1]), np.array([0, 2, 3])), shape=(2, 3))
    with pytest.raises(ValueError, match="column index 5, outside"):
        check_csr(X, canonical=canonical)
    X.indices[1] = -1
    with pytest.raises(ValueError, match="column index -1, outside"):
        fastrec.sigmoid_scores(X, np.ones(3))


def test_decreasing_indptr_rejected():
    X = sp.csr_matrix((np.ones(3), np.array([0, 2, 1]), np.array([0, 2, 3])), shape=(2, 3))
    X.indptr[1] = 4
    with pytest.raises(ValueError, match="indptr"):
        check_csr(X, canonical=False)


def _reads_of_indices(monkeypatch):
    """Count the host bounds passes over a CSR's indices (each one a full read of them)."""
    import fastrec._validation as validation

    calls = []
    real = validation._indices_within

    def counting(stored, n_minor, n_threads):
        calls.append(stored.shape[0])
        return real(stored, n_minor, n_threads)

    monkeypatch.setattr(validation, "_indices_within", counting)
    return calls


@pytest.mark.parametrize("backend", ["numba", "cython"])
def test_sigmoid_csr_checks_columns_in_its_own_read(backend, monkeypatch):
    if backend not in compiled_backends("sigmoid_csr"):
        pytest.skip(f"{backend} not available")
    X = _non_canonical_csr(n_rows=1000)
    w = np.ones(X.shape[1], dtype=np.float32)
    calls = _reads_of_indices(monkeypatch)
    got = fastrec.sigmoid_scores(X, w, backend=backend)
    assert calls == []  # the kernel checked the indices: no separate pass over them
    want = fastrec.sigmoid_scores(X, w, backend="numpy")
    assert calls == [X.nnz]  # a backend that trusts its input gets the host pass
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("bad", [-1, 3, 2**31 - 1, -(2**31)])
def test_out_of_range_column_named_by_every_backend(index_dtype, bad):
    rng = np.random.default_rng(1)
    X = sp.random(300, 3, density=0.5, format="csr", random_state=rng, dtype=np.float64)
    indices = X.indices.astype(index_dtype)
    indices[X.nnz // 2] = bad
    X = sp.csr_matrix((X.data, indices, X.indptr.astype(index_dtype)), shape=X.shape)
    before = X.indices.copy()
    for backend in ["numpy", *compiled_backends("sigmoid_csr")]:
        with pytest.raises(ValueError, match=f"column index {bad}, outside"):
            fastrec.sigmoid_scores(X, np.ones(3), backend=backend)
    np.testing.assert_array_equal(X.indices, before)  # untouched


def test_entries_with_no_columns_rejected():
    X = sp.csr_matrix((np.ones(1), np.array([0], dtype=np.int32), np.array([0, 1])), shape=(1, 1))
    X._shape = (1, 0)  # a stored entry in a matrix without columns (scipy does not check)
    for backend in ["numpy", *compiled_backends("sigmoid_csr")]:
        with pytest.raises(ValueError, match="column index 0, outside"):
            fastrec.sigmoid_scores(X, np.ones(0), backend=backend)
