"""LogisticCTR: L2-regularised logistic regression for click-through rates, trained by scipy's
L-BFGS-B (or trust-region Newton-CG) on the fused loss/gradient (and Hessian-vector) kernels,
with scikit-learn's objective and conventions."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeAlias, cast, overload

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from threadpoolctl import threadpool_limits

from .._dispatch import BACKENDS
from .._validation import check_csr, check_dense, check_n_threads, check_scalar, make_csr
from ..scoring import LogisticObjective, sigmoid_scores
from ._base import FilePath
from ._persist import atomic_savez, check_vector, model_file_errors

if TYPE_CHECKING:
    from typing_extensions import Self

# Features: a dense array (C or F order) or a scipy sparse matrix/array, float32 or float64.
Features: TypeAlias = "np.ndarray | sp.spmatrix | sp.sparray"

_FORMAT = "fastrec.LogisticCTR"
_FORMAT_VERSION = 1  # version 1 files written before ``solver`` existed load as "lbfgs"
_SOLVERS = ("lbfgs", "trust-ncg")


def _occurring_columns(X):
    """(X restricted to the columns holding a stored entry, their ids), or (X, None) when every
    column occurs. Validated once here (structure, finiteness); X itself is not modified."""
    A = check_csr(X, "X", canonical=False)
    n_features = A.shape[1]
    stored = A.indices[: A.nnz]
    seen = np.zeros(n_features, dtype=np.bool_)
    seen[stored] = True
    used = np.flatnonzero(seen)
    if used.shape[0] == n_features:
        return X, None
    new_id = np.zeros(n_features, dtype=A.indices.dtype)
    new_id[used] = np.arange(used.shape[0], dtype=A.indices.dtype)
    narrow = make_csr(
        A.indptr, new_id[stored], A.data[: A.nnz], (A.shape[0], used.shape[0]), A.sparse_array
    )
    return narrow, used


class ConvergenceWarning(UserWarning):
    """The optimiser stopped at max_iter (or a line-search or trust-region failure) before
    meeting tol."""


def _check_two_classes(y, sample_weight):
    """ValueError when the rows that carry weight hold one class only: the optimum is then at
    infinity (intercept -> -inf or +inf), so any returned model would be an artefact of tol."""
    counted = sample_weight > 0
    classes = np.unique(y[counted])
    if classes.size < 2:
        found = int(classes[0]) if classes.size else None
        raise ValueError(
            f"LogisticCTR needs both classes (0 and 1) in y among rows with positive sample "
            f"weight, but found only class {found} ({int(counted.sum())} rows): with one "
            "class there is no finite maximum-likelihood fit"
        )


class LogisticCTR:
    """Binary logistic regression p(click | x) = sigmoid(x @ coef_ + intercept_).

    Minimises, over w and b (b unpenalised, fixed at 0 without ``fit_intercept``)::

        sum_i s_i * (log(1 + exp(z_i)) - y_i z_i) / sum_i s_i + 0.5 * l2 * |w|^2,  z = X w + b

    with sample weights s (default 1) and labels y in {0, 1}. This is exactly scikit-learn's
    ``LogisticRegression(C=C)`` (L2 penalty) objective divided by C * sum_i s_i, so the two
    find the same coefficients: **l2 = 1 / (C * sum of sample weights)**. Give ``C`` (the
    default, as scikit-learn) or ``l2`` directly (then C is ignored). Training runs scipy's
    L-BFGS-B with scikit-learn's settings (``gtol=tol``, ``ftol=64 eps``, ``maxls=50``, start at
    zero); each step's loss and gradient come from one fused pass over X
    (:func:`fastrec.logistic_loss_grad`), so a step costs one read of X.

    ``solver="trust-ncg"`` runs scipy's trust-region Newton-CG instead: each outer iteration
    solves the Newton system approximately by conjugate gradients, each CG step one fused
    Hessian-vector pass over X (:meth:`fastrec.scoring.LogisticObjective.hessp`). Prefer it for
    sparse/hashed or otherwise ill-conditioned problems, wide X (where L-BFGS-B's own work on
    the n_features vectors outweighs a pass over X), and whenever the optimum is needed tightly:
    on the benchmark's hashed problem (20k x 2^14, l2 = 5e-5) it reaches coefficients within
    ~1e-7 (relative) of the optimum in ~10 iterations, where L-BFGS-B (like scikit-learn's
    lbfgs) stalls ~3e-5 away after hundreds. Its ``tol`` is on the gradient's 2-norm
    (scipy's ``gtol``), L-BFGS-B's on its largest absolute entry: for the same tol the
    trust-ncg test is stricter. tol ~1e-8 is as tight as it usefully goes: much below, the
    trust region's test of predicted against actual decrease meets float64 rounding of the
    loss and the fit ends with a ConvergenceWarning (at the optimum to that precision).
    Its ``max_iter`` counts Newton iterations.

    Parameters: ``C`` > 0, ``l2`` >= 0 or None, ``fit_intercept``, ``max_iter`` (L-BFGS or
    Newton iterations), ``tol`` (gradient tolerance, see above), ``solver`` ("lbfgs", the
    default, or "trust-ncg"), ``backend`` and ``n_threads`` (as the kernels: None = all cores;
    results do not depend on n_threads).

    X: dense (C or F order) or scipy sparse, float32 or float64 (float32 is read as float32 and
    computed in float64); NaN/inf rejected. y: 0/1 (or bool), both classes present among the
    rows with positive weight (one class, e.g. a batch without clicks, is a ValueError naming
    the class, as in scikit-learn). Attributes after ``fit``:
    ``coef_`` (n_features,) float64, ``intercept_`` float, ``n_iter_``, ``n_hessp_``
    (Hessian-vector products; 0 for lbfgs), ``n_features_in_``, ``classes_`` = [0, 1].
    Memory during fit: the kernel's partial gradients (see ``logistic_loss_grad``) plus
    L-BFGS's 10 pairs of vectors of n_features + 1 (for sparse X: of the columns that occur +
    1, see ``fit``; trust-ncg: a few such vectors and the
    Hessian's n_rows row weights).

    ``predict_proba(X)`` returns scikit-learn's (n, 2) array [1 - p, p]; ``predict_proba1(X)``
    returns p alone, (n,), in X's dtype, scored by the fused sigmoid kernel without building
    the (n, 2) array: what ranking needs.
    """

    def __init__(
        self,
        C: float = 1.0,
        l2: float | None = None,
        fit_intercept: bool = True,
        max_iter: int = 100,
        tol: float = 1e-4,
        backend: str = "auto",
        n_threads: int | None = None,
        solver: str = "lbfgs",
    ):
        self.C = C
        self.l2 = l2
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.backend = backend
        self.n_threads = n_threads
        self.solver = solver

    # ---- scikit-learn-style parameters ------------------------------------------------------

    _PARAMS = ("C", "l2", "fit_intercept", "max_iter", "tol", "backend", "n_threads", "solver")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters as a dict."""
        return {name: getattr(self, name) for name in self._PARAMS}

    def set_params(self, **params: Any) -> Self:
        """Set constructor parameters (unknown names raise ValueError); returns self."""
        for name, value in params.items():
            if name not in self._PARAMS:
                raise ValueError(
                    f"invalid parameter {name!r} for LogisticCTR; valid parameters: {self._PARAMS}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        changed = {k: v for k, v in self.get_params().items() if v != LogisticCTR().get_params()[k]}
        return "LogisticCTR(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"

    def _check_params(self):
        C = check_scalar(self.C, "C", min_value=0, min_inclusive=False)
        l2 = None if self.l2 is None else check_scalar(self.l2, "l2", min_value=0)
        max_iter = check_scalar(self.max_iter, "max_iter", min_value=1, integer=True)
        tol = check_scalar(self.tol, "tol", min_value=0)
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise TypeError(
                f"fit_intercept must be a bool, got {type(self.fit_intercept).__name__}"
            )
        check_n_threads(self.n_threads)
        if not isinstance(self.solver, str) or self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {self.solver!r}")
        return C, l2, max_iter, tol

    # ---- training ------------------------------------------------------------------------

    def fit(self, X: Features, y: ArrayLike, sample_weight: ArrayLike | None = None) -> Self:
        """Fit to features X (n x d) and 0/1 labels y; returns self.

        A sparse X is fitted over the columns that hold a stored entry only: the others have
        a zero gradient at every point (their coefficient is 0 at the start and, under any
        l2 >= 0, at the optimum), so both solvers' iterates leave them at 0 exactly, and each
        iteration costs O(nnz + n_rows + columns that occur), not O(n_features). Copies: X's
        column indices once (remapped, int32 or int64), when some column never occurs.
        """
        C, l2, max_iter, tol = self._check_params()
        X_fit, used = _occurring_columns(X) if sp.issparse(X) else (X, None)
        objective = LogisticObjective(
            X_fit,
            y,
            sample_weight=sample_weight,
            fit_intercept=self.fit_intercept,
            backend=self.backend,
            n_threads=self.n_threads,
        )
        _check_two_classes(objective.labels, objective.sample_weight)
        objective.l2 = 1.0 / (C * objective.total_weight) if l2 is None else l2
        d = objective.n_features
        theta0 = np.zeros(d + int(self.fit_intercept), dtype=np.float64)
        # L-BFGS-B's own vector work would otherwise start BLAS threads that busy-wait beside
        # the kernel's threads on the same cores (measured: 100k x 100, 2 threads, 0.23-0.28 s
        # with the limit against 0.33-0.35 s without).
        import scipy.optimize  # ~0.1 s to import: not at `import fastrec`

        with threadpool_limits(limits=1, user_api="blas"):
            if self.solver == "trust-ncg":
                result = scipy.optimize.minimize(
                    objective,
                    theta0,
                    method="trust-ncg",
                    jac=True,
                    hessp=objective.hessp,
                    options={"maxiter": max_iter, "gtol": tol},
                )
            else:
                result = scipy.optimize.minimize(
                    objective,
                    theta0,
                    method="L-BFGS-B",
                    jac=True,
                    options={
                        "maxiter": max_iter,
                        "maxls": 50,
                        "gtol": tol,
                        "ftol": 64 * np.finfo(float).eps,
                    },
                )
        if not result.success:
            if self.solver == "trust-ncg":
                name = "trust-ncg"
                hint = (
                    f"gradient 2-norm {np.linalg.norm(result.jac):.1e}; raise max_iter, or "
                    "raise tol where it is below what float64 losses resolve (~1e-8)"
                )
            else:
                name, hint = "L-BFGS-B", "raise max_iter or scale the features"
            warnings.warn(
                f"LogisticCTR: {name} stopped without converging ({result.message}) after "
                f"{result.nit} iterations; {hint}",
                ConvergenceWarning,
                stacklevel=2,
            )
        if used is None:
            self.coef_ = np.array(result.x[:d], dtype=np.float64)
        else:
            self.coef_ = np.zeros(X.shape[1], dtype=np.float64)
            self.coef_[used] = result.x[:d]
        self.intercept_ = float(result.x[d]) if self.fit_intercept else 0.0
        self.n_iter_ = int(result.nit)
        self.n_hessp_ = int(objective.n_hessp)
        self.n_features_in_ = self.coef_.shape[0]
        self.classes_ = np.array([0, 1])
        self.loss_ = float(result.fun)
        return self

    # ---- prediction ----------------------------------------------------------------------

    def _check_fitted(self):
        if not hasattr(self, "coef_"):
            raise ValueError("this LogisticCTR is not fitted yet; call fit(X, y) first")

    def _check_features(self, X):
        self._check_fitted()
        if sp.issparse(X):
            A = check_csr(X, "X").to_scipy()
        else:
            A = check_dense(X, "X", order=None)
        if A.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {A.shape[1]} features, but this LogisticCTR was fitted "
                f"with {self.n_features_in_}"
            )
        return A

    def decision_function(self, X: Features) -> np.ndarray:
        """The logits X @ coef_ + intercept_, float64, shape (n,)."""
        A = self._check_features(X)
        return np.asarray(A @ self.coef_, dtype=np.float64).ravel() + self.intercept_

    def predict_proba1(self, X: Features, out: np.ndarray | None = None) -> np.ndarray:
        """p(click) for each row, shape (n,), in X's dtype (float32 stays float32): the fused
        sigmoid kernel, no (n, 2) array and no logits array. ``out`` as sigmoid_scores."""
        self._check_fitted()
        shape = X.shape if sp.issparse(X) else np.shape(X)
        if len(shape) == 2 and shape[1] != self.n_features_in_:
            self._check_features(X)  # raises with the message naming both feature counts
        return sigmoid_scores(
            X, self.coef_, self.intercept_, out=out, backend=self.backend, n_threads=self.n_threads
        )

    def predict_proba(self, X: Features) -> np.ndarray:
        """scikit-learn's layout: shape (n, 2), columns [p(0), p(1)], in X's dtype."""
        p = self.predict_proba1(X)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: Features) -> np.ndarray:
        """0/1 labels: 1 where the logit is > 0 (scikit-learn's rule), int64."""
        return (self.decision_function(X) > 0).astype(np.int64)

    # ---- persistence ---------------------------------------------------------------------

    @overload
    def save(self, path: FilePath) -> Path: ...
    @overload
    def save(self, path: IO[bytes]) -> IO[bytes]: ...
    def save(self, path: FilePath | IO[bytes]) -> Path | IO[bytes]:
        """Write parameters and coefficients to a plain .npz (no pickled objects), crash-safe
        (temporary file, fsync, rename); returns the path written (".npz" appended when
        missing). ``path`` may also be a writable binary file object."""
        self._check_fitted()
        # Any: np.savez's stub would take a key of ``**arrays`` for its allow_pickle flag.
        arrays: dict[str, Any] = dict(
            format=np.array(_FORMAT),
            format_version=np.array(_FORMAT_VERSION),
            params=np.array(json.dumps(self.get_params())),
            coef=self.coef_,
            intercept=np.array(self.intercept_),
            n_iter=np.array(self.n_iter_),
            n_hessp=np.array(getattr(self, "n_hessp_", 0)),
            loss=np.array(self.loss_),
        )
        if hasattr(path, "write"):
            stream = cast("IO[bytes]", path)
            np.savez(stream, **arrays)
            return stream
        return atomic_savez(path, arrays)

    @classmethod
    def load(cls, path: FilePath | IO[bytes]) -> Self:
        """A fitted LogisticCTR from a file (or binary file object) written by :meth:`save`.

        The file is untrusted: parameters, dtypes, shapes and finiteness are checked; anything
        wrong is a one-line ValueError naming the file and the array."""
        name = path if not hasattr(path, "read") else "<stream>"
        with model_file_errors(name), np.load(path, allow_pickle=False) as f:
            if "format" not in f.files or _scalar(f, "format", "U") != _FORMAT:
                raise ValueError(f"{name} is not a saved LogisticCTR")
            if int(_scalar(f, "format_version", "iu")) > _FORMAT_VERSION:
                raise ValueError(
                    f"{name} was written by a newer fastrec (format version "
                    f"{int(f['format_version'])})"
                )
            params = json.loads(str(_scalar(f, "params", "U")))
            if not isinstance(params, dict):
                raise ValueError("array 'params' is not a JSON object")
            model = cls(**params)
            model._check_params()
            if not isinstance(model.backend, str) or model.backend not in ("auto", *BACKENDS):
                raise ValueError(f"parameter backend={model.backend!r} is not a backend name")
            model.coef_ = np.array(check_vector(dict(coef=f["coef"]), "coef"), dtype=np.float64)
            model.intercept_ = _finite(_scalar(f, "intercept", "f"), "intercept")
            model.n_iter_ = int(_scalar(f, "n_iter", "iu"))
            model.n_hessp_ = int(_scalar(f, "n_hessp", "iu")) if "n_hessp" in f.files else 0
            model.loss_ = float(_scalar(f, "loss", "f"))
        model.n_features_in_ = model.coef_.shape[0]
        model.classes_ = np.array([0, 1])
        return model


def _scalar(f, name, kinds):
    """A 0-d array of the npz ``f`` of one of ``kinds``, as a NumPy scalar."""
    a = f[name]
    if a.ndim != 0 or a.dtype.kind not in kinds:
        raise ValueError(
            f"array {name!r} must be a scalar of kind {kinds!r}, got {a.dtype} with shape {a.shape}"
        )
    return a[()]


def _finite(x, name):
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"array {name!r} is not finite")
    return x
