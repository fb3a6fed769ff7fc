"""fastrec.dot_topk on the CUDA backend against the NumPy reference (Numba's simulator in CI:
tiny inputs, few examples; on a GPU the same tests run on it)."""

import numpy as np
import pytest
import scipy.sparse as sp
from comparators import assert_topk_equal
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrec
from fastrec._dispatch import backend_status

_ok, _why = backend_status("cuda")
pytestmark = pytest.mark.skipif(not _ok, reason=f"CUDA backend unavailable: {_why}")


@settings(max_examples=3)
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
    k=st.sampled_from([1, 3, 150]),
    exact=st.booleans(),
)
def test_dot_topk_cuda_equals_reference(seed, dtype, k, exact):
    """Exclusions, bias and candidates; more items than one tile, more queries than a block."""
    rng = np.random.default_rng(seed)
    n_queries, n_items, n_factors = 11, 140, 11
    if exact:  # small integers: exact products, many ties
        Q = rng.integers(-2, 3, (n_queries, n_factors)).astype(dtype)
        X = rng.integers(-2, 3, (n_items, n_factors)).astype(dtype)
        bias = rng.integers(-1, 2, n_items).astype(dtype)
    else:
        Q = rng.standard_normal((n_queries, n_factors)).astype(dtype)
        X = rng.standard_normal((n_items, n_factors)).astype(dtype)
        bias = rng.standard_normal(n_items).astype(dtype)
    seen = sp.csr_matrix(rng.random((n_queries, n_items)) < 0.3)
    seen[1, :] = True  # every item excluded for one query
    cand = rng.choice(n_items, 120, replace=False)
    kw = dict(exclude=seen, candidates=cand, item_bias=bias)
    want = fastrec.dot_topk(Q, X, k, backend="numpy", **kw)
    got = fastrec.dot_topk(Q, X, k, backend="cuda", **kw)
    assert got.indices.dtype == np.int64 and got.scores.dtype == dtype
    if exact:
        assert_topk_equal(got, want, exact=True)
    else:
        tol = 1e-4 if dtype == np.float32 else 1e-10
        assert_topk_equal(got, want, rtol=tol, atol=tol)


def test_dot_topk_cuda_global_buffers_many_groups(monkeypatch):
    """Candidate buffers in global memory (k too large for shared memory), more query groups
    than blocks (each block ranks several groups in turn), factors not a multiple of the
    shared chunk, rows whose best items come last (a compaction at every step), ties."""
    from fastrec.kernels.numba_cuda import _device

    monkeypatch.setattr(_device, "_SHARED_BYTES", 0)
    rng = np.random.default_rng(5)
    n_queries, n_items = 28, 100
    Q = rng.integers(-2, 3, (n_queries, 9)).astype(np.float64)
    Q[3] = 1.0
    X = rng.integers(-2, 3, (n_items, 9)).astype(np.float64)
    X[:, 0] = np.arange(n_items) // 3  # query 3: ascending scores, in triples of ties
    seen = sp.random(n_queries, n_items, density=0.2, format="csr", random_state=2)
    want = fastrec.dot_topk(Q, X, 7, exclude=seen, backend="numpy")
    got = fastrec.dot_topk(Q, X, 7, exclude=seen, backend="cuda")
    assert_topk_equal(got, want, exact=True)


def test_device_arrays_in_device_arrays_out_cosine():
    from numba import cuda

    rng = np.random.default_rng(1)
    Q = rng.standard_normal((3, 4)).astype(np.float32)
    X = rng.standard_normal((40, 4)).astype(np.float32)
    X[5] = 0  # a zero-norm item scores 0 under cosine
    got = fastrec.dot_topk(cuda.to_device(Q), cuda.to_device(X), 40, metric="cosine")
    assert not isinstance(got.indices, np.ndarray)  # Numba device arrays
    want = fastrec.dot_topk(Q, X, 40, metric="cosine", backend="numpy")
    assert_topk_equal(
        (got.indices.copy_to_host(), got.scores.copy_to_host()), want, rtol=1e-5, atol=1e-6
    )


def test_device_arrays_rejected_on_cpu_backends_and_mixed_dtypes():
    from numba import cuda

    Q = cuda.to_device(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="queries is a GPU device array"):
        fastrec.dot_topk(Q, np.ones((4, 3), np.float32), 2, backend="cython")
    with pytest.raises(TypeError, match="different dtypes"):
        fastrec.dot_topk(Q, cuda.to_device(np.ones((4, 3))), 2)
    bad = np.ones((4, 3), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="items contains NaN"):
        fastrec.dot_topk(Q, cuda.to_device(bad), 2)
