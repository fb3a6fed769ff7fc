"""The logistic Hessian-vector kernels: every compiled backend against the NumPy reference,
determinism across thread counts, and LogisticObjective.hessp against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from backends import compiled_backends
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import dense, raw_csr

from fastrec._dispatch import backend_status, get_kernel
from fastrec.kernels import _scoring_plan
from fastrec.scoring import LogisticObjective, _features

HESSP_BACKENDS = compiled_backends("logistic_hessp_dense")


def _kernel_args(X):
    """(kernel name, the raw arrays before c) of X after the public API's canonicalisation."""
    sparse, A = _features(X)
    if sparse:
        return "logistic_hessp_csr", (A.indptr, A.indices, A.data), A.shape
    return "logistic_hessp_dense", (A,), A.shape


def _direction(rng, n, d):
    """c as the Hessian has it (s p (1 - p) / sum s: non-negative, at most 1 / (4 n)), and v."""
    p = rng.random(n)
    s = rng.uniform(0.1, 2.0, n)
    return s * p * (1 - p) / s.sum(), rng.standard_normal(d), float(rng.standard_normal())


def _assert_hessp_close(actual, expected):
    hv, hv_b = actual
    e_hv, e_hv_b = expected
    assert isinstance(hv_b, float)
    assert hv.dtype == np.float64 and hv.shape == e_hv.shape
    scale = max(1e-300, float(np.abs(e_hv).max(initial=0.0)), abs(e_hv_b))
    np.testing.assert_allclose(hv, e_hv, rtol=1e-11, atol=1e-14 * scale)
    np.testing.assert_allclose(hv_b, e_hv_b, rtol=1e-11, atol=1e-14 * scale)


def _check_against_reference(backend, X, seed, l2):
    name, args, (n, d) = _kernel_args(X)
    c, v, vb = _direction(np.random.default_rng(seed), n, d)
    before = [a.copy() for a in (*args, c, v)]
    got = get_kernel(name, backend)(*args, c, v, vb, l2, 2)
    want = get_kernel(name, "numpy")(*args, c, v, vb, l2, 1)
    _assert_hessp_close(got, want)
    for a, b in zip((*args, c, v), before):
        np.testing.assert_array_equal(a, b)  # inputs untouched


@pytest.mark.parametrize("backend", HESSP_BACKENDS)
@given(
    X=dense(min_rows=1, max_rows=30, max_cols=30),
    seed=st.integers(0, 2**31),
    l2=st.sampled_from([0.0, 1e-3, 0.5]),
)
def test_hessp_dense_equals_reference(backend, X, seed, l2):
    _check_against_reference(backend, X, seed, l2)


@pytest.mark.parametrize("backend", HESSP_BACKENDS)
@given(
    X=raw_csr(min_rows=1, max_rows=30, max_cols=30),
    seed=st.integers(0, 2**31),
    l2=st.sampled_from([0.0, 1e-3, 0.5]),
)
def test_hessp_csr_equals_reference(backend, X, seed, l2):
    _check_against_reference(backend, X, seed, l2)


def _several_blocks(make, rng):
    # More rows than DENSE_BLOCK and CSR_GRAD_CHUNKS so that threads really split the work.
    n = 5 * _scoring_plan.DENSE_BLOCK + 17
    if make.startswith("csr"):
        n_cols = 300_000 if make == "csr_wide" else 400
        rows = np.repeat(np.arange(n), rng.integers(0, 61, n))
        X = sp.csr_matrix(
            (rng.standard_normal(rows.size), (rows, rng.integers(0, n_cols, rows.size))),
            shape=(n, n_cols),
        )
        if make == "csr64":
            X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
        if make == "csr32":
            X.data = X.data.astype(np.float32)
        return X
    X = rng.standard_normal((n, 45)).astype(np.float32 if make.endswith("32") else np.float64)
    return np.asfortranarray(X) if make.startswith("F") else X


@pytest.mark.parametrize("backend", HESSP_BACKENDS)
@pytest.mark.parametrize("make", ["C", "F", "C32", "F32", "csr32", "csr64", "csr_wide"])
def test_hessp_same_bits_any_thread_count(backend, make):
    rng = np.random.default_rng(4)
    X = _several_blocks(make, rng)
    name, args, (n, d) = _kernel_args(X)
    c, v, vb = _direction(rng, n, d)
    runs = [get_kernel(name, backend)(*args, c, v, vb, 0.01, t) for t in (1, 2, 3)]
    for hv, hv_b in runs[1:]:
        assert hv_b == runs[0][1]
        np.testing.assert_array_equal(hv, runs[0][0])
    _assert_hessp_close(runs[0], get_kernel(name, "numpy")(*args, c, v, vb, 0.01, 1))


def _fd_problem(layout, rng):
    X = rng.standard_normal((400, 6))
    X[rng.random(X.shape) < 0.3] = 0.0
    if layout == "F":
        X = np.asfortranarray(X)
    elif layout == "csr":
        X = sp.csr_matrix(X)
    y = (rng.random(400) < 0.4).astype(float)
    return X, y, rng.uniform(0.2, 2.0, 400)


@pytest.mark.parametrize("backend", ["numpy"] + HESSP_BACKENDS)
@pytest.mark.parametrize("layout", ["C", "F", "csr"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_objective_hessp_is_the_gradients_derivative(backend, layout, fit_intercept):
    rng = np.random.default_rng(7)
    X, y, sw = _fd_problem(layout, rng)
    obj = LogisticObjective(
        X, y, l2=0.05, sample_weight=sw, fit_intercept=fit_intercept, backend=backend, n_threads=2
    )
    ref = LogisticObjective(
        X, y, l2=0.05, sample_weight=sw, fit_intercept=fit_intercept, backend="numpy"
    )  # the finite difference of the reference gradient
    k = 6 + int(fit_intercept)
    theta, eps = rng.standard_normal(k) * 0.5, 1e-6
    for v in [rng.standard_normal(k), np.eye(k)[k - 1]]:
        fd = (ref(theta + eps * v)[1] - ref(theta - eps * v)[1]) / (2 * eps)
        hv = obj.hessp(theta, v)
        assert hv.shape == (k,) and hv.dtype == np.float64
        np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-9)
    assert obj.n_hessp == 2
    # The curvature is cached per theta: a new theta gets new weights, the same theta the same.
    c = obj.curvature(theta)
    assert obj.curvature(theta.copy()) is c and obj.curvature(theta + 1.0) is not c


def test_objective_hessp_leaves_its_arguments_alone():
    rng = np.random.default_rng(8)
    X, y, sw = _fd_problem("csr", rng)
    obj = LogisticObjective(X, y, l2=0.1, sample_weight=sw)
    theta, v = rng.standard_normal(7), rng.standard_normal(7)
    saved = [a.copy() for a in (theta, v, X.data, X.indices, X.indptr, y, sw)]
    obj.hessp(theta, v)
    for a, b in zip((theta, v, X.data, X.indices, X.indptr, y, sw), saved):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="theta must have shape"):
        obj.hessp(theta, v[:-1])


# ---- CUDA (Numba's simulator in CI, tiny inputs) ------------------------------------------------

_cuda_ok, _cuda_why = backend_status("cuda")
cuda_only = pytest.mark.skipif(not _cuda_ok, reason=f"CUDA backend unavailable: {_cuda_why}")


@cuda_only
@settings(max_examples=4)
@given(
    st.one_of(
        raw_csr(min_rows=1, max_rows=10, min_cols=1, max_cols=12, signed=True),
        dense(min_rows=1, max_rows=10, min_cols=1, max_cols=12),
    ),
    st.integers(0, 2**31),
    st.sampled_from([0.0, 0.5]),
)
def test_cuda_hessp_equals_reference(X, seed, l2):
    _check_against_reference("cuda", X, seed, l2)


@cuda_only
@pytest.mark.parametrize("n_rows, n_cols", [(45, 3), (9, 300), (7, 133)])
def test_cuda_hessp_rows_shared_by_lanes_or_spanning_a_warp(n_rows, n_cols):
    rng = np.random.default_rng(n_cols)
    X = rng.normal(size=(n_rows, n_cols)).astype(np.float32)
    for A in (X, np.asfortranarray(X), sp.csr_matrix(np.where(rng.random(X.shape) < 0.5, X, 0))):
        _check_against_reference("cuda", A, n_rows, 0.1)


@cuda_only
def test_cuda_csr_hessp_does_not_depend_on_summation_order():
    # As the CUDA gradient: the scatter's atomics add pre-rounded parts whose sums are exact.
    rng = np.random.default_rng(9)
    X = sp.random(48, 5, density=0.6, format="csr", random_state=10)
    X.data = rng.choice([-1.0, 1.0], X.nnz) * 10.0 ** rng.uniform(-8, 8, X.nnz)
    c, v, vb = _direction(rng, 48, 5)
    kernel = get_kernel("logistic_hessp_csr", "cuda")
    runs = []
    for perm in (np.arange(48), rng.permutation(48), rng.permutation(48)):
        Xp = X[perm]
        runs.append(kernel(Xp.indptr, Xp.indices, Xp.data, c[perm], v, vb, 0.0, 1)[0])
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])
    want = get_kernel("logistic_hessp_csr", "numpy")(X.indptr, X.indices, X.data, c, v, vb, 0.0, 1)[
        0
    ]
    np.testing.assert_allclose(runs[0], want, rtol=1e-12)


@cuda_only
@pytest.mark.parametrize("sparse", [False, True])
def test_cuda_trust_ncg_fit_equals_reference(sparse):
    from fastrec.models import LogisticCTR

    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4))  # small: every call runs on the simulator's threads
    if sparse:
        X = sp.csr_matrix(np.where(rng.random(X.shape) < 0.5, X, 0.0))
    y = (rng.random(64) < 0.4).astype(np.int64)
    got = LogisticCTR(solver="trust-ncg", tol=1e-8, backend="cuda").fit(X, y)
    want = LogisticCTR(solver="trust-ncg", tol=1e-8, backend="numpy").fit(X, y)
    np.testing.assert_allclose(got.coef_, want.coef_, rtol=1e-9, atol=1e-12)
    assert got.n_hessp_ > 0
