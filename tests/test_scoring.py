"""Contract of sigmoid_scores and logistic_loss_grad, on the reference backend."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from strategies import canonical, dense, raw_csr

import fastrec


def _float64_sigmoid(z):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


@st.composite
def features(draw):
    if draw(st.booleans()):
        X = draw(raw_csr(max_rows=15, max_cols=10, min_cols=1, signed=True))
        Xd = canonical(X).toarray()
    else:
        X = draw(dense(max_rows=15, max_cols=10, min_cols=1))
        Xd = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(X.shape[0] * 31 + X.shape[1])
    w = rng.normal(size=X.shape[1])
    return X, Xd, w


@given(features(), st.floats(-3, 3))
def test_sigmoid_scores_match_float64_formula(case, b):
    X, Xd, w = case
    got = fastrec.sigmoid_scores(X, w, b, backend="numpy")
    assert got.dtype == X.dtype
    want = _float64_sigmoid(Xd @ w + b)
    tol = 1e-6 if X.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_extreme_logits_without_warnings():
    X = np.array([[800.0], [-800.0], [0.0], [40.0], [-40.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = fastrec.sigmoid_scores(X, np.ones(1), backend="numpy")
        loss, gw, gb = fastrec.logistic_loss_grad(
            X, np.array([0, 1, 1, 0, 1]), np.ones(1), backend="numpy"
        )
    assert p[0] == 1.0 and p[1] == 0.0 and p[2] == 0.5
    assert 0 < p[4] < 1e-17
    assert np.isfinite(loss) and np.isfinite(gw).all() and np.isfinite(gb)
    assert loss == pytest.approx((800 + 800 + np.log(2) + 40 + 40) / 5, rel=1e-12)


def test_float32_stays_float32_and_out_is_written():
    X = np.ones((4, 3), dtype=np.float32)
    out = np.empty(4, dtype=np.float32)
    got = fastrec.sigmoid_scores(X, np.ones(3), out=out, backend="numpy")
    assert got is out and out.dtype == np.float32
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-3.0)), rtol=1e-6)


def test_sigmoid_csr_empty_rows_score_the_intercept():
    X = sp.csr_matrix((3, 4))
    np.testing.assert_allclose(
        fastrec.sigmoid_scores(X, np.ones(4), 1.0, backend="numpy"), _float64_sigmoid(np.ones(3))
    )


@given(features(), st.floats(-2, 2), st.sampled_from([0.0, 0.3]), st.booleans())
def test_loss_grad_match_naive_formula_and_finite_differences(case, b, l2, weighted):
    X, Xd, w = case
    n = Xd.shape[0]
    if n == 0:
        return
    rng = np.random.default_rng(n)
    y = (rng.random(n) < 0.5).astype(float)
    sw = rng.uniform(0.1, 2.0, n) if weighted else np.ones(n)
    loss, gw, gb = fastrec.logistic_loss_grad(
        X, y, w, b, l2=l2, sample_weight=sw if weighted else None, backend="numpy"
    )
    z = Xd @ w + b
    naive = np.sum(sw * (np.logaddexp(0, z) - y * z)) / sw.sum() + 0.5 * l2 * w @ w
    assert loss == pytest.approx(naive, rel=1e-10, abs=1e-12)
    r = sw * (_float64_sigmoid(z) - y) / sw.sum()
    np.testing.assert_allclose(gw, Xd.T @ r + l2 * w, rtol=1e-6, atol=1e-9)
    assert gb == pytest.approx(r.sum(), rel=1e-6, abs=1e-9)
    assert gw.dtype == np.float64


def test_sample_weight_equals_repetition():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 3))
    y = np.array([0, 1, 1, 0, 1, 0])
    w = rng.normal(size=3)
    sw = np.array([1, 2, 1, 3, 1, 1])
    got = fastrec.logistic_loss_grad(X, y, w, 0.2, sample_weight=sw, backend="numpy")
    rep = fastrec.logistic_loss_grad(np.repeat(X, sw, 0), np.repeat(y, sw), w, 0.2, backend="numpy")
    assert got[0] == pytest.approx(rep[0])
    np.testing.assert_allclose(got[1], rep[1])


@pytest.mark.parametrize(
    "call, err, msg",
    [
        (
            lambda X, y, w: fastrec.logistic_loss_grad(X, y * 2, w),
            ValueError,
            "y must contain only",
        ),
        (lambda X, y, w: fastrec.logistic_loss_grad(X, y[:-1], w), ValueError, "y must be 1-D"),
        (
            lambda X, y, w: fastrec.logistic_loss_grad(X, y, w[:-1]),
            ValueError,
            "w must have length",
        ),
        (lambda X, y, w: fastrec.logistic_loss_grad(X, y, w, l2=-1.0), ValueError, "l2 must be >="),
        (
            lambda X, y, w: fastrec.logistic_loss_grad(X, y, w, sample_weight=-y),
            ValueError,
            "sample_weight must be non-negative",
        ),
        (
            lambda X, y, w: fastrec.logistic_loss_grad(X, y, w, sample_weight=0 * y),
            ValueError,
            "positive sum",
        ),
        (
            lambda X, y, w: fastrec.sigmoid_scores(X, np.full(3, np.nan)),
            ValueError,
            "w contains NaN",
        ),
        (lambda X, y, w: fastrec.sigmoid_scores(X, w, b=np.inf), ValueError, "b must be finite"),
        (lambda X, y, w: fastrec.sigmoid_scores(X, w, out=np.empty(3)), ValueError, "out must"),
        (lambda X, y, w: fastrec.sigmoid_scores(X, w, out=[0.0] * 4), TypeError, "out must"),
        (
            lambda X, y, w: fastrec.sigmoid_scores(X.tolist() + [[np.nan] * 3], w),
            ValueError,
            "X contains NaN",
        ),
    ],
)
def test_scoring_bad_inputs_rejected(call, err, msg):
    X = np.arange(12.0).reshape(4, 3)
    y = np.array([0.0, 1.0, 1.0, 0.0])
    w = np.ones(3)
    before = X.copy(), y.copy(), w.copy()
    with pytest.raises(err, match=msg):
        call(X, y, w)
    for a, b in zip((X, y, w), before):
        np.testing.assert_array_equal(a, b)
