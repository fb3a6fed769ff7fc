"""Every compiled backend of sigmoid_scores and logistic_loss_grad against the NumPy reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from backends import compiled_backends
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import dense, raw_csr

import fastrec
from fastrec.kernels import _scoring_plan, reference

SIGMOID_BACKENDS = compiled_backends("sigmoid_dense")
LOSS_BACKENDS = compiled_backends("logistic_loss_grad_dense")


def _tol(dtype):
    # float32 scores: the float64 score rounded once (reference) vs the same after a float64
    # dot product in another order: a float32 ulp or two. float64: a few ulps.
    return dict(rtol=3e-7, atol=1e-30) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-300)


def _weights(rng, n, dtype, scale=1.0):
    return (rng.standard_normal(n) * scale).astype(dtype)


def _random_csr(rng, n_rows, n_cols, per_row):
    """About ``per_row`` entries per row (scipy's sp.random is slow for wide matrices)."""
    rows = np.repeat(np.arange(n_rows), rng.integers(0, 2 * per_row + 1, n_rows))
    cols = rng.integers(0, n_cols, rows.size)
    return sp.csr_matrix((rng.standard_normal(rows.size), (rows, cols)), shape=(n_rows, n_cols))


def _problem(rng, n):
    y = (rng.random(n) < 0.4).astype(np.float64)
    sw = rng.uniform(0.1, 2.0, n) if rng.random() < 0.5 else None
    return y, sw


def _assert_loss_close(actual, expected):
    loss, grad, grad_b = actual
    e_loss, e_grad, e_grad_b = expected
    assert isinstance(loss, float) and isinstance(grad_b, float)
    assert grad.dtype == np.float64 and grad.shape == e_grad.shape
    np.testing.assert_allclose(loss, e_loss, rtol=1e-12, atol=1e-14)
    scale = max(1.0, float(np.abs(e_grad).max(initial=0.0)), abs(e_grad_b))
    np.testing.assert_allclose(grad, e_grad, rtol=1e-11, atol=1e-14 * scale)
    np.testing.assert_allclose(grad_b, e_grad_b, rtol=1e-11, atol=1e-14 * scale)


# ---- sigmoid_scores ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", SIGMOID_BACKENDS)
@given(X=dense(max_rows=30, max_cols=40), seed=st.integers(0, 2**31), b=st.floats(-3, 3))
def test_sigmoid_dense_equals_reference(backend, X, seed, b):
    rng = np.random.default_rng(seed)
    w = _weights(rng, X.shape[1], X.dtype)
    before = X.copy()
    got = fastrec.sigmoid_scores(X, w, b, backend=backend)
    want = fastrec.sigmoid_scores(X, w, b, backend="numpy")
    assert got.dtype == X.dtype and got.shape == (X.shape[0],)
    np.testing.assert_allclose(got, want, **_tol(X.dtype))
    np.testing.assert_array_equal(X, before)


@pytest.mark.parametrize("backend", SIGMOID_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_sigmoid_dense_across_blocks_and_chunks(backend, dtype, order):
    """Row counts around the sigmoid chunks (_scoring_plan.SIGMOID_CHUNK) and the blocks
    (DENSE_BLOCK, SIGMOID_F_BLOCK), widths around the vector steps and the F-order kernels'
    eight-column passes: every row against the reference, and the same bits on 1 and 3
    threads."""
    chunk, block = _scoring_plan.SIGMOID_CHUNK, _scoring_plan.DENSE_BLOCK
    f_block = _scoring_plan.SIGMOID_F_BLOCK
    rng = np.random.default_rng(11)
    for n in (chunk - 1, chunk + 1, block - 1, block + chunk + 3, 3 * block + 5, f_block + 37):
        for d in (3, 8, 13, 64) if n < f_block else (19,):
            X = rng.standard_normal((n, d)).astype(dtype)
            X = np.asfortranarray(X) if order == "F" else X
            w = _weights(rng, d, dtype, scale=d**-0.5)
            want = fastrec.sigmoid_scores(X, w, -0.5, backend="numpy")
            got = fastrec.sigmoid_scores(X, w, -0.5, backend=backend, n_threads=1)
            np.testing.assert_allclose(got, want, **_tol(dtype))
            again = fastrec.sigmoid_scores(X, w, -0.5, backend=backend, n_threads=3)
            np.testing.assert_array_equal(again, got)


@pytest.mark.parametrize("backend", SIGMOID_BACKENDS)
@given(X=raw_csr(max_rows=30, max_cols=30), seed=st.integers(0, 2**31), b=st.floats(-3, 3))
def test_sigmoid_csr_equals_reference(backend, X, seed, b):
    rng = np.random.default_rng(seed)
    w = _weights(rng, X.shape[1], X.dtype)
    got = fastrec.sigmoid_scores(X, w, b, backend=backend)
    want = fastrec.sigmoid_scores(X, w, b, backend="numpy")
    assert got.dtype == X.dtype
    np.testing.assert_allclose(got, want, **_tol(X.dtype))


@pytest.mark.parametrize("backend", SIGMOID_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F", "strided", "csr"])
def test_sigmoid_extreme_logits_no_warnings(backend, dtype, layout):
    # Logits of +-800 and +-40 (exp(800) overflows float64; exp(40) float32 does not matter:
    # arithmetic is float64). Warnings are errors here: none may be raised anywhere.
    z = np.array([-800.0, -40.0, -1.0, 0.0, 1.0, 40.0, 800.0])
    X = np.zeros((z.size, 6), dtype=dtype)
    X[:, 2] = z
    w = np.zeros(6, dtype=dtype)
    w[2] = 1.0
    if layout == "F":
        X = np.asfortranarray(X)
    elif layout == "strided":
        X = np.repeat(X, 2, axis=1)[:, ::2]
    elif layout == "csr":
        X = sp.csr_matrix(X)
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        got = fastrec.sigmoid_scores(X, w, backend=backend)
        exact = reference.sigmoid(z).astype(dtype)
    np.testing.assert_allclose(got, exact, rtol=2e-7 if dtype == np.float32 else 1e-15, atol=0)
    assert got[0] == 0.0 and got[-1] == 1.0  # exact 0/1 only where float rounding demands it
    assert 0.0 < got[1] < 1e-17 and got[5] == 1.0


@pytest.mark.parametrize("backend", SIGMOID_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_stays_float32_and_out_is_written(backend, dtype):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((700, 9)).astype(dtype)
    w = rng.standard_normal(9)  # float64 w is cast to X's dtype
    out = np.full(700, -1.0, dtype=dtype)
    got = fastrec.sigmoid_scores(X, w, 0.5, out=out, backend=backend)
    assert got is out and got.dtype == dtype
    np.testing.assert_allclose(
        out, fastrec.sigmoid_scores(X, w, 0.5, backend="numpy"), **_tol(dtype)
    )
    out_csr = np.empty(700, dtype=dtype)
    assert fastrec.sigmoid_scores(sp.csr_matrix(X), w, 0.5, out=out_csr, backend=backend) is out_csr
    np.testing.assert_allclose(out_csr, out, **_tol(dtype))


@pytest.mark.parametrize("backend", SIGMOID_BACKENDS)
def test_csr_empty_rows_score_sigmoid_of_intercept(backend):
    X = sp.csr_matrix((np.array([3.0]), np.array([1]), np.array([0, 0, 0, 1, 1, 1])), shape=(5, 4))
    got = fastrec.sigmoid_scores(X, np.array([0.0, 1.0, 0.0, 0.0]), -2.0, backend=backend)
    expected = np.full(5, 1.0 / (1.0 + np.exp(2.0)))
    expected[2] = 1.0 / (1.0 + np.exp(-1.0))
    np.testing.assert_allclose(got, expected, rtol=1e-15)


@pytest.mark.parametrize("backend", SIGMOID_BACKENDS)
@pytest.mark.parametrize("make", ["C", "F", "strided", "csr32", "csr64", "zero_cols"])
def test_sigmoid_same_result_any_thread_count(backend, make):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((3000, 37))
    if make == "F":
        X = np.asfortranarray(X)
    elif make == "strided":
        X = X[:, ::2]
    elif make.startswith("csr"):
        X = _random_csr(rng, 3000, 500, 25)
        if make == "csr64":
            X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    elif make == "zero_cols":
        X = np.empty((3000, 0))
    w = rng.standard_normal(X.shape[1])
    runs = [fastrec.sigmoid_scores(X, w, 0.1, backend=backend, n_threads=t) for t in (1, 2, 3)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])
    np.testing.assert_allclose(
        runs[0], fastrec.sigmoid_scores(X, w, 0.1, backend="numpy"), rtol=1e-12
    )


# ---- logistic_loss_grad --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", LOSS_BACKENDS)
@given(
    X=dense(min_rows=1, max_rows=30, max_cols=30),
    seed=st.integers(0, 2**31),
    b=st.floats(-2, 2),
    l2=st.sampled_from([0.0, 1e-3, 0.5]),
)
def test_loss_grad_dense_equals_reference(backend, X, seed, b, l2):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(X.shape[1])
    y, sw = _problem(rng, X.shape[0])
    got = fastrec.logistic_loss_grad(X, y, w, b, l2=l2, sample_weight=sw, backend=backend)
    want = fastrec.logistic_loss_grad(X, y, w, b, l2=l2, sample_weight=sw, backend="numpy")
    _assert_loss_close(got, want)


@pytest.mark.parametrize("backend", LOSS_BACKENDS)
@given(
    X=raw_csr(min_rows=1, max_rows=30, max_cols=30),
    seed=st.integers(0, 2**31),
    b=st.floats(-2, 2),
    l2=st.sampled_from([0.0, 1e-3, 0.5]),
)
def test_loss_grad_csr_equals_reference(backend, X, seed, b, l2):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(X.shape[1])
    y, sw = _problem(rng, X.shape[0])
    got = fastrec.logistic_loss_grad(X, y, w, b, l2=l2, sample_weight=sw, backend=backend)
    want = fastrec.logistic_loss_grad(X, y, w, b, l2=l2, sample_weight=sw, backend="numpy")
    _assert_loss_close(got, want)


@pytest.mark.parametrize("backend", LOSS_BACKENDS)
@pytest.mark.parametrize("layout", ["C", "F", "csr"])
def test_loss_grad_extreme_logits_no_warnings(backend, layout):
    # Every branch of log1pexp (cut-offs -37, -2, 18, 33.3) and logits of +-800, both labels.
    z = np.array(
        [-800.0, -40.0, -37.0, -10.0, -2.0, -0.5, 0.0, 0.5, 2.0, 18.0, 25.0, 33.3, 40.0, 800.0]
    )
    z = np.concatenate([z, z])
    y = np.repeat([0.0, 1.0], z.size // 2)
    X = np.zeros((z.size, 3))
    X[:, 1] = z
    w = np.array([0.0, 1.0, 0.0])
    if layout == "F":
        X = np.asfortranarray(X)
    elif layout == "csr":
        X = sp.csr_matrix(X)
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        got = fastrec.logistic_loss_grad(X, y, w, 0.0, backend=backend)
        want = fastrec.logistic_loss_grad(X, y, w, 0.0, backend="numpy")
    assert np.isfinite(got[0]) and np.all(np.isfinite(got[1]))
    _assert_loss_close(got, want)
    # A confidently wrong logit of 800 costs 800, not inf.
    expected = np.mean(np.logaddexp(0.0, z) - y * z)
    assert got[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("backend", LOSS_BACKENDS)
@pytest.mark.parametrize("make", ["C", "F", "C32", "F32", "csr32", "csr64", "csr_wide"])
def test_loss_grad_same_result_any_thread_count(backend, make):
    # Several blocks/chunks (n > DENSE_BLOCK, > CSR_GRAD_CHUNKS rows) so threads really split.
    rng = np.random.default_rng(4)
    n = 5 * _scoring_plan.DENSE_BLOCK + 17
    if make.startswith("csr"):
        n_cols = 300_000 if make == "csr_wide" else 400
        X = _random_csr(rng, n, n_cols, 30)
        if make == "csr64":
            X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    else:
        X = rng.standard_normal((n, 45)).astype(np.float32 if make.endswith("32") else np.float64)
        if make.startswith("F"):
            X = np.asfortranarray(X)
    w = rng.standard_normal(X.shape[1]) * 0.3
    y, sw = _problem(rng, n)
    runs = [
        fastrec.logistic_loss_grad(
            X, y, w, 0.2, l2=0.01, sample_weight=sw, backend=backend, n_threads=t
        )
        for t in (1, 2, 3)
    ]
    for loss, grad, grad_b in runs[1:]:
        assert loss == runs[0][0] and grad_b == runs[0][2]
        np.testing.assert_array_equal(grad, runs[0][1])
    want = fastrec.logistic_loss_grad(X, y, w, 0.2, l2=0.01, sample_weight=sw, backend="numpy")
    _assert_loss_close(runs[0], want)


def test_csr_chunks_are_fixed_by_the_matrix_and_bounded():
    indptr = np.array([0, 0, 5, 5, 100, 101, 101, 140], dtype=np.int32)
    bounds = _scoring_plan.csr_chunk_bounds(indptr, 10)
    assert bounds[0] == 0 and bounds[-1] == 7 and np.all(np.diff(bounds) >= 0)
    assert len(bounds) - 1 == min(_scoring_plan.CSR_GRAD_CHUNKS, 7)
    # Very wide: the chunk buffers stay within CSR_GRAD_BYTES (one chunk if one is that big).
    wide = _scoring_plan.csr_chunk_bounds(indptr, _scoring_plan.CSR_GRAD_BYTES // 8)
    assert len(wide) == 2


@pytest.mark.parametrize("backend", ["numpy"] + LOSS_BACKENDS)
def test_loss_grad_matches_finite_differences(backend):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((300, 5))
    y = (rng.random(300) < 0.5).astype(float)
    w, b, l2, eps = rng.standard_normal(5), 0.3, 0.1, 1e-6

    def loss(w, b):
        return fastrec.logistic_loss_grad(X, y, w, b, l2=l2, backend=backend)[0]

    _, grad, grad_b = fastrec.logistic_loss_grad(X, y, w, b, l2=l2, backend=backend)
    fd = [(loss(w + eps * e, b) - loss(w - eps * e, b)) / (2 * eps) for e in np.eye(5)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    assert grad_b == pytest.approx((loss(w, b + eps) - loss(w, b - eps)) / (2 * eps), rel=1e-6)


# ---- bad input (public API, any backend) ----------------------------------------------------


@pytest.mark.parametrize(
    "y, err",
    [
        (np.array([0, 1, 2.0]), ValueError),
        (np.array([0, 1, np.nan]), ValueError),
        (np.array([0, 1]), ValueError),
        (np.array(["a", "b", "c"]), TypeError),
    ],
)
def test_bad_labels_rejected(y, err):
    with pytest.raises(err, match="y"):
        fastrec.logistic_loss_grad(np.ones((3, 2)), y, np.zeros(2))


def test_bad_inputs_rejected_with_the_argument_named():
    X = np.ones((3, 2))
    with pytest.raises(ValueError, match="w must have length 2"):
        fastrec.sigmoid_scores(X, np.zeros(3))
    with pytest.raises(ValueError, match="X contains NaN"):
        fastrec.sigmoid_scores(np.array([[np.nan, 1.0]]), np.zeros(2))
    with pytest.raises(ValueError, match="out"):
        fastrec.sigmoid_scores(X, np.zeros(2), out=np.empty(3, dtype=np.float32))
    with pytest.raises(ValueError, match="b must be finite"):
        fastrec.sigmoid_scores(X, np.zeros(2), b=np.inf)
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        fastrec.logistic_loss_grad(
            X, np.array([0, 1, 1]), np.zeros(2), sample_weight=np.array([1.0, -1.0, 1.0])
        )
    with pytest.raises(ValueError, match="l2"):
        fastrec.logistic_loss_grad(X, np.array([0, 1, 1]), np.zeros(2), l2=-1.0)
    with pytest.raises(ValueError, match="at least one row"):
        fastrec.logistic_loss_grad(np.ones((0, 2)), np.zeros(0), np.zeros(2))


@pytest.mark.parametrize("backend", ["numpy"] + SIGMOID_BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("w_at_bad", [0.0, 1.0, -1.0])
@pytest.mark.parametrize("kind", ["C", "F", "csr", "float32"])
def test_nonfinite_X_rejected_however_the_logit_comes_out(backend, bad, w_at_bad, kind):
    # The check runs on the scores first (see sigmoid_scores): every way a bad entry can
    # surface (NaN, +-inf logit, 0 * inf) must still end in the ValueError.
    X = np.full((40, 3), 0.5)
    X[17, 1] = bad
    if kind == "F":
        X = np.asfortranarray(X)
    elif kind == "float32":
        X = X.astype(np.float32)
    elif kind == "csr":
        X = sp.csr_matrix(X)
    w = np.array([0.1, w_at_bad, -0.2])
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        fastrec.sigmoid_scores(X, w, backend=backend)


@pytest.mark.parametrize("backend", SIGMOID_BACKENDS)
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_kernels_count_scores_outside_open_interval(backend, order, dtype):
    """``counts_unproven`` kernels return how many scores are not strictly inside (0, 1)
    (NaN included), over several blocks; the public call then skips its pass over out."""
    from fastrec._dispatch import get_kernel

    kernel = get_kernel("sigmoid_dense", backend)
    if not getattr(kernel, "counts_unproven", False):
        pytest.skip(f"{backend}'s dense sigmoid does not count")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5000, 4)).astype(dtype)
    X[[7, 1999, 4321], 0] = 1e4  # scores exactly 1
    X[[12, 3000], 0] = -1e4  # exactly 0
    X[2500, 2] = np.nan
    X = np.asfortranarray(X) if order == "F" else np.ascontiguousarray(X)
    w = np.array([1.0, 0.5, -0.25, 0.1], dtype=dtype)
    for n_threads in (1, 2):
        out = np.empty(X.shape[0], dtype=dtype)
        bad = kernel(X, w, 0.0, out, n_threads)
        assert bad == np.sum(~((out > 0) & (out < 1))) == 6


def test_counting_dense_kernel_spares_the_pass_over_scores(monkeypatch):
    import fastrec.scoring as scoring

    backends = [
        b
        for b in SIGMOID_BACKENDS
        if getattr(scoring.get_kernel("sigmoid_dense", b), "counts_unproven", False)
    ]
    if not backends:
        pytest.skip("no counting dense kernel available")

    def fail(out):
        raise AssertionError("the scores were scanned again")

    X = np.random.default_rng(0).standard_normal((300, 5))
    want = fastrec.sigmoid_scores(X, np.ones(5) / 5, backend="numpy")
    monkeypatch.setattr(scoring, "_scores_prove_finite", fail)
    for backend in backends:
        got = fastrec.sigmoid_scores(X, np.ones(5) / 5, backend=backend)
        np.testing.assert_allclose(got, want, rtol=1e-12)
        bad = X.copy()
        bad[4, 1] = np.inf  # a counted 1.0 leads to the full check of X, which raises
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            fastrec.sigmoid_scores(bad, np.ones(5) / 5, backend=backend)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 300), d=st.integers(0, 70), seed=st.integers(0, 2**32 - 1))
def test_numba_fused_dot_same_bits_for_float32(n, d, seed):
    """The float32 C-order kernel fuses multiply-adds (the float64 product of two float32 is
    exact, so fusing cannot change the sum): its scores are the unfused kernel's, bit for bit."""
    nb = pytest.importorskip("fastrec.kernels.numba_cpu.scoring", reason="Numba unavailable")
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-6, 6, (n, d))).astype(np.float32)
    w = (rng.standard_normal(d) * 10.0 ** rng.uniform(-6, 6, d)).astype(np.float32)
    fused, plain = np.empty(n, np.float32), np.empty(n, np.float32)
    nb._sigmoid_dense_c(X, w, 0.25, fused, True, 4, True)
    nb._sigmoid_dense_c(X, w, 0.25, plain, True, 4, False)
    np.testing.assert_array_equal(fused.view(np.uint32), plain.view(np.uint32))


def test_numba_block_exp_within_3_ulp_and_zero_below_underflow():
    nb = pytest.importorskip(
        "fastrec.kernels.numba_cpu.scoring", reason="Numba backend not importable"
    )
    x = np.concatenate(
        [
            np.linspace(-800.0, 0.0, 400_001),
            -np.abs(np.random.default_rng(7).standard_normal(10_000)),
        ]
    )
    want = np.exp(np.append(x[::97], 0.0))
    normal = want > 2.3e-308
    # degree 13 (float64 scores): 3 ulp; degree 9 (float32 scores): truncation < 1e-11
    for f32, rtol in ((False, 3.4e-16), (True, 1e-11)):
        got = np.array([nb._exp_nonpos(v, f32) for v in x[::97]] + [nb._exp_nonpos(0.0, f32)])
        np.testing.assert_allclose(got[normal], want[normal], rtol=rtol, atol=0)
        # subnormal results: their absolute spacing, or the relative bound at the smallest normal
        atol = max(1e-323, rtol * 2.3e-308)
        np.testing.assert_allclose(got[~normal], want[~normal], rtol=0, atol=atol)
        assert got[-1] == 1.0
        assert nb._exp_nonpos(-746.0, f32) == 0.0 and nb._exp_nonpos(-800.0, f32) == 0.0


def test_numba_log1pexp_sigmoid_pieces_equal_reference():
    # The mean loss hides pieces below its tolerance (exp(-25) next to 25), so check each one.
    nb = pytest.importorskip(
        "fastrec.kernels.numba_cpu.scoring", reason="Numba backend not importable"
    )
    z = np.array(
        [
            -800.0,
            -40.0,
            -37.0,
            -36.9,
            -10.0,
            -2.0,
            -1.9,
            -0.5,
            0.0,
            0.5,
            2.0,
            17.9,
            18.0,
            18.1,
            25.0,
            33.3,
            33.4,
            40.0,
            800.0,
        ]
    )
    got = np.array([nb._log1pexp_sigmoid(v) for v in z])
    with np.errstate(under="ignore"):
        np.testing.assert_allclose(got[:, 0], reference.log1pexp(z), rtol=2e-16, atol=0)
        np.testing.assert_allclose(got[:, 1], reference.sigmoid(z), rtol=2e-16, atol=0)
