"""Benchmarks of fused sigmoid scoring and LogisticCTR training against NumPy, SciPy and
scikit-learn, at 1 and 2 threads, with the machine's read bandwidth measured in the same run.

Run: ``python -m pytest benchmarks/test_bench_scoring.py --benchmark-only
--benchmark-columns=median,rounds --benchmark-sort=name`` (several minutes; needs ~3 GB).
``FASTREC_BENCH_ROWS`` scales the scoring data down (default 2,000,000 rows). Each result's
``extra_info`` holds GB/s (dense), Mrows/s (CSR) or iterations and max |coef difference|
(fit; plus Hessian-vector products and the distance to the optimum, see _optimum);
``python benchmarks/report_scoring.py RESULT.json`` turns the JSON into the table of
benchmarks/README.md.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.special
from threadpoolctl import threadpool_limits

import fastrec
from fastrec.features import HashingEncoder
from fastrec.models import LogisticCTR

N_ROWS = int(os.environ.get("FASTREC_BENCH_ROWS", 2_000_000))
THREADS = [1, 2]
COMPILED = [b for b in ("cython", "numba") if b in fastrec.available_backends("sigmoid_dense")]

try:
    from sklearn.linear_model import LogisticRegression
except ImportError:  # pragma: no cover
    LogisticRegression = None


def _median(benchmark):
    return benchmark.stats.stats.median


def _run(benchmark, fn, rounds=7):
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


# ---- the read-bandwidth probe -------------------------------------------------------------


@numba.njit(parallel=True, fastmath=True, cache=True)
def _read_all(flat, n_blocks):
    """Sum of every element, blocks in parallel: a pure streaming read of the array's bytes."""
    n = flat.shape[0]
    step = (n + n_blocks - 1) // n_blocks
    parts = np.zeros(n_blocks)
    for c in numba.prange(n_blocks):
        block = flat[c * step : min(n, (c + 1) * step)]  # indexed from 0: vectorises
        acc = block.dtype.type(0)
        for i in range(block.shape[0]):
            acc += block[i]
        parts[c] = acc
    return parts.sum()


def _read_bandwidth_fn(X, threads):
    flat = X.reshape(-1, order="A")

    def run():
        saved = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            return _read_all(flat, 256)
        finally:
            numba.set_num_threads(saved)

    return run


# ---- data ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[np.float32, np.float64], ids=["float32", "float64"])
def dense_problem(request):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_ROWS, 64), dtype=np.float32).astype(request.param, copy=False)
    w = (rng.standard_normal(64) * 0.2).astype(request.param)
    yield X, w, -0.5
    del X


@pytest.fixture(scope="module")
def csr_problem():
    """N_ROWS x 2^20, 40 distinct sorted columns per row, float32 ones (one-hot/hashed)."""
    rng = np.random.default_rng(1)
    n_cols, per_row = 2**20, 40
    cols = np.sort(rng.integers(0, n_cols - per_row, (N_ROWS, per_row), dtype=np.int32), axis=1)
    cols += np.arange(per_row, dtype=np.int32)  # strictly increasing: canonical CSR
    indptr = np.arange(0, N_ROWS * per_row + 1, per_row, dtype=np.int32)
    X = sp.csr_matrix(
        (np.ones(N_ROWS * per_row, np.float32), cols.ravel(), indptr), shape=(N_ROWS, n_cols)
    )
    w = (rng.standard_normal(n_cols) * 0.2).astype(np.float32)
    yield X, w, -1.0
    del X


def _sklearn_model(w, b):
    model = LogisticRegression()
    model.coef_ = np.asarray(w, dtype=np.float64)[None, :]
    model.intercept_ = np.array([b])
    model.classes_ = np.array([0, 1])
    model.n_features_in_ = len(w)
    return model


# ---- dense scoring ---------------------------------------------------------------------------

DENSE_IMPLS = ["read-bandwidth", "numpy", "scipy-expit", "sklearn"] + [
    f"fastrec-{b}" for b in COMPILED
]


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("impl", DENSE_IMPLS)
def test_sigmoid_dense(benchmark, dense_problem, impl, threads):
    X, w, b = dense_problem
    benchmark.group = f"sigmoid dense {N_ROWS}x64 {X.dtype}"
    benchmark.extra_info.update(threads=threads, impl=impl, bytes=X.nbytes)
    out = np.empty(X.shape[0], dtype=X.dtype)
    if impl == "read-bandwidth":
        fn = _read_bandwidth_fn(X, threads)
    elif impl == "numpy":

        def fn():
            return 1.0 / (1.0 + np.exp(-(X @ w + b)))
    elif impl == "scipy-expit":

        def fn():
            return scipy.special.expit(X @ w + b)
    elif impl == "sklearn":
        if LogisticRegression is None:
            pytest.skip("scikit-learn not installed")
        model = _sklearn_model(w, b)

        def fn():
            return model.predict_proba(X)
    else:
        backend = impl.split("-", 1)[1]

        def fn():
            return fastrec.sigmoid_scores(X, w, b, out=out, backend=backend, n_threads=threads)

    with threadpool_limits(limits=threads):
        fn()
        _run(benchmark, fn)
    benchmark.extra_info["GB/s"] = X.nbytes / _median(benchmark) / 1e9


# ---- CSR scoring -------------------------------------------------------------------------------

CSR_IMPLS = ["scipy", "sklearn"] + [f"fastrec-{b}" for b in COMPILED]


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("impl", CSR_IMPLS)
def test_sigmoid_csr(benchmark, csr_problem, impl, threads):
    X, w, b = csr_problem
    benchmark.group = f"sigmoid CSR {N_ROWS}x2^20, 40 nnz/row, float32"
    benchmark.extra_info.update(threads=threads, impl=impl)
    out = np.empty(X.shape[0], dtype=X.dtype)
    if impl == "scipy":

        def fn():
            return scipy.special.expit(X @ w + b)
    elif impl == "sklearn":
        if LogisticRegression is None:
            pytest.skip("scikit-learn not installed")
        model = _sklearn_model(w, b)

        def fn():
            return model.predict_proba(X)
    else:
        backend = impl.split("-", 1)[1]

        def fn():
            return fastrec.sigmoid_scores(X, w, b, out=out, backend=backend, n_threads=threads)

    with threadpool_limits(limits=threads):
        fn()
        _run(benchmark, fn, rounds=5)
    benchmark.extra_info["Mrows/s"] = X.shape[0] / _median(benchmark) / 1e6


# ---- fit ---------------------------------------------------------------------------------------


def _dense_fit_problem():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((100_000, 100))
    w = rng.standard_normal(100) * 0.3
    y = (rng.random(100_000) < scipy.special.expit(X @ w - 0.5)).astype(np.int64)
    return X, y


def _hashed_fit_problem():
    """20k events, 8 categorical columns (ids with Zipf-like skew), hashed to 2^14 float64
    columns."""
    rng = np.random.default_rng(3)
    n = 20_000
    cards = {
        "user": 20_000,
        "item": 5_000,
        "genre": 20,
        "hour": 24,
        "device": 4,
        "country": 50,
        "slot": 10,
        "campaign": 300,
    }
    table = {c: np.minimum(rng.zipf(1.3, n) - 1, k - 1) for c, k in cards.items()}
    X = HashingEncoder(list(cards), n_features=2**14, seed=0, dtype=np.float64).fit_transform(table)
    w = rng.standard_normal(2**14) * 0.5
    y = (rng.random(n) < scipy.special.expit(X @ w - 1.0)).astype(np.int64)
    return X, y


FIT_PROBLEMS = {"dense 100000x100": _dense_fit_problem, "hashed 20000x2^14": _hashed_fit_problem}
FIT_CACHE: dict = {}
TOL, C = 1e-6, 1.0
# trust-ncg's tol is on the gradient's 2-norm (L-BFGS-B's on its max-abs entry): 1e-8 is what
# brings its coefficients within 1e-6 (relative) of the optimum on the hashed problem.
TOL_NEWTON = 1e-8


def _optimum(X, y):
    """The objective's minimiser to float64 precision (for the coefficient-error column): a
    trust-ncg fit polished by Newton steps whose systems CG solves to 1e-14 (reference-grade
    accuracy; scikit-learn's lbfgs at tol=1e-6 stops ~1e-3 away from it on the hashed problem).
    """
    from scipy.sparse.linalg import LinearOperator, cg

    from fastrec.scoring import LogisticObjective

    obj = LogisticObjective(X, y, l2=1.0 / (C * X.shape[0]), backend="numpy")
    theta = LogisticCTR(C=C, tol=1e-9, solver="trust-ncg", max_iter=1000).fit(X, y)
    theta = np.r_[theta.coef_, theta.intercept_]
    for _ in range(3):
        _, g = obj(theta)
        H = LinearOperator((theta.size, theta.size), matvec=lambda v, t=theta: obj.hessp(t, v))
        step, _ = cg(H, -g, rtol=1e-14, maxiter=20 * theta.size)
        theta = theta + step
    return theta


def _fit_problem(name):
    if name not in FIT_CACHE:
        X, y = FIT_PROBLEMS[name]()
        ref = (
            LogisticRegression(C=C, tol=TOL, max_iter=1000).fit(X, y)
            if LogisticRegression
            else None
        )
        FIT_CACHE[name] = (X, y, ref, _optimum(X, y))
    return FIT_CACHE[name]


FIT_IMPLS = (
    ["sklearn-lbfgs", "sklearn-newton-cg"]
    + [f"fastrec-{b}" for b in COMPILED]
    + [f"fastrec-{b}-trust-ncg" for b in COMPILED]
)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("impl", FIT_IMPLS)
@pytest.mark.parametrize("problem", list(FIT_PROBLEMS))
def test_fit(benchmark, problem, impl, threads):
    if LogisticRegression is None:
        pytest.skip("scikit-learn not installed")
    X, y, ref, optimum = _fit_problem(problem)
    benchmark.group = f"fit {problem} (C={C}, tol={TOL}; trust-ncg tol={TOL_NEWTON})"
    if impl.startswith("sklearn"):
        solver = impl.split("-", 1)[1]

        def fn():
            return LogisticRegression(C=C, tol=TOL, max_iter=1000, solver=solver).fit(X, y)
    else:
        backend = impl.split("-")[1]
        solver = "trust-ncg" if impl.endswith("trust-ncg") else "lbfgs"
        tol = TOL_NEWTON if solver == "trust-ncg" else TOL

        def fn():
            return LogisticCTR(
                C=C, tol=tol, max_iter=1000, backend=backend, solver=solver, n_threads=threads
            ).fit(X, y)

    benchmark.extra_info.update(threads=threads, impl=impl)
    with threadpool_limits(limits=threads):
        model = fn()
        benchmark.pedantic(fn, rounds=5, iterations=1)
    coef = np.ravel(model.coef_)
    benchmark.extra_info["iterations"] = int(np.ravel(model.n_iter_)[0])
    benchmark.extra_info["hessp"] = getattr(model, "n_hessp_", None)  # scikit-learn: unknown
    benchmark.extra_info["max |coef diff| / max |coef|"] = float(
        np.abs(coef - ref.coef_[0]).max() / np.abs(ref.coef_).max()
    )
    w_opt = optimum[: X.shape[1]]
    benchmark.extra_info["vs optimum"] = float(np.abs(coef - w_opt).max() / np.abs(w_opt).max())
    # The objective both minimise, at each one's solution (reference kernel, float64).
    l2 = 1.0 / (C * X.shape[0])
    ours = fastrec.logistic_loss_grad(
        X, y, coef, float(np.ravel(model.intercept_)[0]), l2=l2, backend="numpy"
    )[0]
    theirs = fastrec.logistic_loss_grad(
        X, y, ref.coef_[0], float(ref.intercept_[0]), l2=l2, backend="numpy"
    )[0]
    benchmark.extra_info["objective - sklearn's"] = float(ours - theirs)
