"""LogisticCTR: scikit-learn's objective and coefficients, the sklearn-style API, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec import available_backends
from fastrec.models import ConvergenceWarning, LogisticCTR

BACKENDS = [b for b in available_backends("logistic_loss_grad_dense") if b != "cuda"]


def _problem(n=3000, d=12, seed=0, sparse=False, dtype=np.float64):
    rng = np.random.default_rng(seed)
    if sparse:
        rows = np.repeat(np.arange(n), 5)
        cols = rng.integers(0, 4 * d, rows.size)
        X = sp.csr_matrix((np.ones(rows.size, dtype=dtype), (rows, cols)), shape=(n, 4 * d))
        X.sum_duplicates()
        w_true = rng.standard_normal(4 * d)
    else:
        X = rng.standard_normal((n, d)).astype(dtype)
        w_true = rng.standard_normal(d) * 0.7
    z = np.asarray(X @ w_true).ravel() - 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return X, y


def _rel(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


CASES = [
    "dense",
    "fortran",
    "float32",
    "sparse",
    "weights",
    "no_intercept",
    "strong_l2",
    "wide_hashed",
]


def _wide_hashed(n=3000, seed=7):
    """Hashed user/item/hour events in 2^12 columns, of which about 470 ever occur."""
    from fastrec.features import HashingEncoder

    rng = np.random.default_rng(seed)
    table = {
        "user": rng.integers(0, 200, n),
        "item": rng.integers(0, 300, n),
        "hour": rng.integers(0, 24, n),
    }
    X = HashingEncoder(list(table), n_features=2**12, seed=0, dtype=np.float64).fit_transform(table)
    w_true = rng.standard_normal(2**12)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w_true) + 0.5))).astype(np.int64)
    return X, y


def _case(case):
    """(X, y, sample_weight, C, fit_intercept) of one of CASES."""
    if case == "wide_hashed":
        X, y = _wide_hashed()
        return X, y, None, 1.0, True
    X, y = _problem(sparse=case == "sparse", dtype=np.float32 if case == "float32" else np.float64)
    if case == "fortran":
        X = np.asfortranarray(X)
    sw = np.random.default_rng(1).uniform(0.2, 3.0, len(y)) if case == "weights" else None
    C = 0.01 if case == "strong_l2" else 1.0
    return X, y, sw, C, case != "no_intercept"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_coefficients_equal_sklearn(backend, case):
    sklearn = pytest.importorskip(
        "sklearn.linear_model", reason="compares with scikit-learn (test extra)"
    )
    X, y, sw, C, fit_intercept = _case(case)
    ours = LogisticCTR(
        C=C, fit_intercept=fit_intercept, tol=1e-10, max_iter=500, backend=backend
    ).fit(X, y, sample_weight=sw)
    # scikit-learn fits float32 X in float32 arithmetic; ours is float64-exact on the same
    # values, so the reference is scikit-learn on those values in float64.
    X_ref = X.astype(np.float64) if case == "float32" else X
    ref = sklearn.LogisticRegression(C=C, fit_intercept=fit_intercept, tol=1e-10, max_iter=500).fit(
        X_ref, y, sample_weight=sw
    )
    assert _rel(ours.coef_, ref.coef_[0]) < 1e-6
    assert abs(ours.intercept_ - float(np.ravel(ref.intercept_)[0])) < 1e-6 * max(
        1.0, np.abs(ref.coef_).max()
    )
    Xp = X[:50]
    np.testing.assert_allclose(
        ours.predict_proba(Xp),
        ref.predict_proba(Xp),
        rtol=1e-5,
        atol=1e-6 if case != "float32" else 1e-5,
    )
    np.testing.assert_array_equal(ours.predict(Xp), ref.predict(Xp))


def test_l2_is_one_over_C_times_weight_sum():
    X, y = _problem(n=800)
    sw = np.random.default_rng(2).uniform(0.5, 2.0, len(y))
    a = LogisticCTR(C=0.3, tol=1e-10).fit(X, y, sample_weight=sw)
    b = LogisticCTR(l2=1.0 / (0.3 * sw.sum()), C=123.0, tol=1e-10).fit(X, y, sample_weight=sw)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert a.intercept_ == b.intercept_


def test_same_model_any_thread_count():
    X, y = _problem(n=2000)
    fits = [LogisticCTR(n_threads=t).fit(X, y) for t in (1, 2, 3)]
    for m in fits[1:]:
        np.testing.assert_array_equal(m.coef_, fits[0].coef_)
        assert m.intercept_ == fits[0].intercept_ and m.n_iter_ == fits[0].n_iter_


def test_backends_agree_with_reference():
    X, y = _problem(n=1500)
    ref = LogisticCTR(backend="numpy", tol=1e-10).fit(X, y)
    for backend in BACKENDS:
        m = LogisticCTR(backend=backend, tol=1e-10).fit(X, y)
        assert _rel(m.coef_, ref.coef_) < 1e-8


def test_prediction_api_shapes_and_dtypes():
    X, y = _problem(n=500)
    m = LogisticCTR().fit(X, y)
    assert m.coef_.shape == (X.shape[1],) and m.coef_.dtype == np.float64
    assert isinstance(m.intercept_, float) and m.n_iter_ >= 1
    P = m.predict_proba(X)
    assert P.shape == (500, 2)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    p1 = m.predict_proba1(X)
    np.testing.assert_array_equal(p1, P[:, 1])
    z = m.decision_function(X)
    np.testing.assert_allclose(p1, 1 / (1 + np.exp(-z)), rtol=1e-12)
    np.testing.assert_array_equal(m.predict(X), (z > 0).astype(np.int64))
    p32 = m.predict_proba1(X.astype(np.float32))
    assert p32.dtype == np.float32
    np.testing.assert_allclose(p32, p1, rtol=1e-5)
    out = np.empty(500)
    assert m.predict_proba1(X, out=out) is out
    np.testing.assert_allclose(m.predict_proba1(sp.csr_matrix(X)), p1, rtol=1e-14)


def test_save_and_load_round_trip_without_pickle(tmp_path):
    X, y = _problem(n=400, sparse=True)
    m = LogisticCTR(C=0.5, max_iter=50).fit(X, y)
    path = m.save(tmp_path / "ctr")
    assert path.suffix == ".npz"
    with np.load(path, allow_pickle=False) as f:  # plain arrays only
        assert all(f[k].dtype != object for k in f.files)
    loaded = LogisticCTR.load(path)
    assert loaded.get_params() == m.get_params()
    np.testing.assert_array_equal(loaded.coef_, m.coef_)
    assert loaded.intercept_ == m.intercept_ and loaded.n_iter_ == m.n_iter_
    np.testing.assert_array_equal(loaded.predict_proba(X), m.predict_proba(X))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved LogisticCTR"):
        LogisticCTR.load(tmp_path / "other.npz")


def test_get_and_set_params():
    m = LogisticCTR(C=2.0, n_threads=1)
    params = m.get_params()
    assert params == {
        "C": 2.0,
        "l2": None,
        "fit_intercept": True,
        "max_iter": 100,
        "tol": 1e-4,
        "backend": "auto",
        "n_threads": 1,
        "solver": "lbfgs",
    }
    assert m.set_params(C=3.0, tol=1e-6) is m and m.C == 3.0 and m.tol == 1e-6
    with pytest.raises(ValueError, match="invalid parameter 'alpha'"):
        m.set_params(alpha=1.0)
    assert "C=3.0" in repr(m)


def test_convergence_warning_at_max_iter():
    X, y = _problem(n=500)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        m = LogisticCTR(max_iter=1, tol=1e-12).fit(X, y)
    assert m.n_iter_ == 1


@pytest.mark.parametrize(
    "kwargs, fit_args, err, match",
    [
        ({}, "labels_2", ValueError, "only 0 and 1"),
        ({}, "short_y", ValueError, "y must be 1-D with length"),
        ({}, "nan_X", ValueError, "X contains NaN"),
        ({}, "bad_weight", ValueError, "sample_weight"),
        ({"C": 0.0}, None, ValueError, "C must be > 0"),
        ({"C": -1.0}, None, ValueError, "C must be > 0"),
        ({"l2": -1.0}, None, ValueError, "l2 must be >= 0"),
        ({"max_iter": 0}, None, ValueError, "max_iter"),
        ({"tol": float("nan")}, None, ValueError, "tol"),
        ({"fit_intercept": "yes"}, None, TypeError, "fit_intercept"),
        ({"backend": "gpu"}, None, ValueError, "backend"),
        ({"n_threads": 0}, None, ValueError, "n_threads"),
        ({"solver": "newton"}, None, ValueError, "solver must be one of"),
        ({"solver": None}, None, ValueError, "solver must be one of"),
    ],
)
def test_bad_input_rejected(kwargs, fit_args, err, match):
    X, y = _problem(n=50)
    X = X.copy()
    sw = None
    if fit_args == "labels_2":
        y = y * 2
    elif fit_args == "short_y":
        y = y[:-1]
    elif fit_args == "nan_X":
        X[3, 2] = np.nan
    elif fit_args == "bad_weight":
        sw = -np.ones(len(y))
    before = X.copy()
    with pytest.raises(err, match=match):
        LogisticCTR(**kwargs).fit(X, y, sample_weight=sw)
    np.testing.assert_array_equal(X, before)  # input untouched


def test_prediction_input_checks():
    X, y = _problem(n=50)
    with pytest.raises(ValueError, match="not fitted"):
        LogisticCTR().predict_proba(X)
    m = LogisticCTR().fit(X, y)
    for method in (m.predict_proba, m.predict_proba1, m.decision_function, m.predict):
        with pytest.raises(ValueError, match="features"):
            method(X[:, :-1])


# ---- solver="trust-ncg" ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_trust_ncg_equals_sklearn_and_lbfgs(backend, case):
    sklearn = pytest.importorskip(
        "sklearn.linear_model", reason="compares with scikit-learn (test extra)"
    )
    X, y, sw, C, fit_intercept = _case(case)
    X_before = X.copy()
    # tol is on the gradient's 2-norm; much below 1e-8 trust-ncg's test of the predicted
    # improvement meets float64 rounding of the loss (see the LogisticCTR docstring).
    newton = LogisticCTR(
        C=C,
        fit_intercept=fit_intercept,
        tol=1e-8,
        max_iter=100,
        solver="trust-ncg",
        backend=backend,
    ).fit(X, y, sample_weight=sw)
    lbfgs = LogisticCTR(
        C=C, fit_intercept=fit_intercept, tol=1e-10, max_iter=500, backend=backend
    ).fit(X, y, sample_weight=sw)
    X_ref = X.astype(np.float64) if case == "float32" else X
    ref = sklearn.LogisticRegression(C=C, fit_intercept=fit_intercept, tol=1e-10, max_iter=500).fit(
        X_ref, y, sample_weight=sw
    )
    assert _rel(newton.coef_, ref.coef_[0]) < 1e-6
    assert _rel(newton.coef_, lbfgs.coef_) < 1e-6
    assert abs(newton.intercept_ - float(np.ravel(ref.intercept_)[0])) < 1e-6 * max(
        1.0, np.abs(ref.coef_).max()
    )
    assert (newton.intercept_ == 0.0) == (not fit_intercept)
    assert newton.n_hessp_ > 0 and lbfgs.n_hessp_ == 0
    np.testing.assert_array_equal(
        X if not sp.issparse(X) else X.toarray(),
        X_before if not sp.issparse(X) else X_before.toarray(),
    )


def test_trust_ncg_reaches_the_optimum_where_lbfgs_stalls():
    # Wide, sparse and weakly regularised (the hashed-feature case): at the optimum the
    # gradient is zero, so the tightly converged Newton fit has a far smaller gradient.
    from fastrec.scoring import LogisticObjective

    X, y = _problem(n=2000, d=300, sparse=True, seed=5)
    newton = LogisticCTR(C=10.0, tol=1e-8, solver="trust-ncg", max_iter=200).fit(X, y)
    obj = LogisticObjective(X, y, l2=1.0 / (10.0 * X.shape[0]))
    _, g = obj(np.r_[newton.coef_, newton.intercept_])
    assert np.linalg.norm(g) < 1e-8


def test_trust_ncg_without_penalty_and_intercept():
    # l2 = 0 on separable-free data (overlapping classes): the optimum exists and is found.
    sklearn = pytest.importorskip(
        "sklearn.linear_model", reason="compares with scikit-learn (test extra)"
    )
    X, y = _problem(n=2000, d=5, seed=2)
    m = LogisticCTR(l2=0.0, fit_intercept=False, tol=1e-8, solver="trust-ncg").fit(X, y)
    ref = sklearn.LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-12, max_iter=1000).fit(
        X, y
    )
    assert _rel(m.coef_, ref.coef_[0]) < 1e-6 and m.intercept_ == 0.0


def test_trust_ncg_same_model_any_thread_count():
    X, y = _problem(n=3000, sparse=True, seed=3)
    fits = [LogisticCTR(solver="trust-ncg", tol=1e-9, n_threads=t).fit(X, y) for t in (1, 2)]
    np.testing.assert_array_equal(fits[0].coef_, fits[1].coef_)
    assert fits[0].intercept_ == fits[1].intercept_ and fits[0].n_hessp_ == fits[1].n_hessp_


def test_trust_ncg_convergence_warning():
    X, y = _problem(n=500)
    with pytest.warns(ConvergenceWarning, match="trust-ncg stopped"):
        m = LogisticCTR(solver="trust-ncg", max_iter=1, tol=1e-14).fit(X, y)
    assert m.n_iter_ == 1


def test_solver_saved_and_old_files_load_as_lbfgs(tmp_path):
    X, y = _problem(n=400, sparse=True)
    m = LogisticCTR(solver="trust-ncg", tol=1e-8).fit(X, y)
    loaded = LogisticCTR.load(m.save(tmp_path / "newton"))
    assert loaded.solver == "trust-ncg" and loaded.n_hessp_ == m.n_hessp_
    assert loaded.get_params() == m.get_params()
    np.testing.assert_array_equal(loaded.coef_, m.coef_)
    # A file written before the solver parameter existed (no "solver", no "n_hessp").
    import json

    params = {k: v for k, v in m.get_params().items() if k != "solver"}
    np.savez(
        tmp_path / "old.npz",
        format=np.array("fastrec.LogisticCTR"),
        format_version=np.array(1),
        params=np.array(json.dumps(params)),
        coef=m.coef_,
        intercept=np.array(m.intercept_),
        n_iter=np.array(3),
        loss=np.array(0.5),
    )
    old = LogisticCTR.load(tmp_path / "old.npz")
    assert old.solver == "lbfgs" and old.n_hessp_ == 0
    np.testing.assert_array_equal(old.coef_, m.coef_)
    assert LogisticCTR().set_params(solver="trust-ncg").solver == "trust-ncg"


@pytest.mark.parametrize("solver", ["lbfgs", "trust-ncg"])
def test_wide_sparse_fit_runs_over_the_columns_that_occur(solver, monkeypatch):
    import fastrec.models.logistic as logistic

    X, y = _wide_hashed()
    used = np.flatnonzero(np.bincount(X.indices, minlength=X.shape[1]))
    assert used.size < X.shape[1] // 4
    widths = []
    real = logistic.LogisticObjective

    def spy(X_fit, *args, **kwargs):
        widths.append(X_fit.shape[1])
        return real(X_fit, *args, **kwargs)

    monkeypatch.setattr(logistic, "LogisticObjective", spy)
    tol = 1e-8 if solver == "trust-ncg" else 1e-10
    wide = LogisticCTR(C=1.0, tol=tol, max_iter=500, solver=solver).fit(X, y)
    assert widths == [used.size]  # every iteration paid for the used columns only
    # The absent columns' coefficients are exactly 0; the rest is the fit on those columns.
    absent = np.setdiff1d(np.arange(X.shape[1]), used)
    assert np.all(wide.coef_[absent] == 0.0) and wide.coef_.shape == (X.shape[1],)
    narrow = LogisticCTR(C=1.0, tol=tol, max_iter=500, solver=solver).fit(X[:, used], y)
    np.testing.assert_array_equal(wide.coef_[used], narrow.coef_)
    assert wide.intercept_ == narrow.intercept_
