"""Public API of the logistic-regression kernels: fused sigmoid scoring and loss/gradient."""

from __future__ import annotations

import math

import numpy as np

from ._dispatch import get_kernel
from ._validation import (
    check_csr,
    check_dense,
    check_n_threads,
    check_placement,
    check_scalar,
    is_device_array,
    issparse,
    threads_for,
)
from ._validation_device import (
    check_device_dense,
    check_device_labels,
    check_device_out,
    check_device_sample_weight,
    check_device_vector,
    device_summary,
)


def _features(X, allow_nonfinite=False, n_threads=1, column_bounds=True):
    """(is_sparse, CSR or dense array): dense keeps C or F order, other strides are copied.
    A large CSR's indices are bounds-checked on ``n_threads`` threads, unless
    ``column_bounds=False`` (the kernel checks them: see check_csr).

    Every kernel here is linear in X's stored entries, so a CSR X is validated but not made
    canonical (duplicates and unsorted columns give the same sums): X's own arrays reach the
    kernel. Copies happen only as check_csr / check_dense say (a dtype or layout change).
    """
    if issparse(X):
        return True, check_csr(
            X,
            "X",
            allow_nonfinite=allow_nonfinite,
            canonical=False,
            n_threads=n_threads,
            column_bounds=column_bounds,
        )
    return False, check_dense(X, "X", order=None, allow_nonfinite=allow_nonfinite)


def _work(A, sparse) -> int:
    """Elementary steps of one pass over X (stored entries or elements): see threads_for."""
    return A.nnz if sparse else A.size


def _scores_prove_finite(out) -> bool:
    """True when every score lies strictly inside (0, 1), which proves X finite (see below)."""
    return out.size == 0 or bool(out.min() > 0 and out.max() < 1)


def _weights(w, n_features, dtype):
    w = check_dense(w, "w", ndim=1, dtype=dtype)
    if w.shape[0] != n_features:
        raise ValueError(f"w must have length {n_features} (the columns of X), got {w.shape[0]}")
    return w


def sigmoid_scores(X, w, b=0.0, *, out=None, backend="auto", n_threads=None):
    """p = 1 / (1 + exp(-(X @ w + b))) for dense (C or F order) or sparse X, in one fused pass.

    Computed in X's dtype (float32 stays float32; w is cast to it). Stable for any finite
    logit: no overflow warnings, exactly 0 or 1 only where rounding demands it. ``out``: an
    optional C-contiguous 1-D array of X's dtype and length n_rows, written and returned.
    Memory: the output only (no temporary logits array in compiled backends). Copies X
    never when it is float32/float64 with int32/int64 indices: a CSR X's own arrays, canonical
    or not (duplicates and unsorted columns give the same sums), and a C- or F-order dense X
    reach the kernel; w is cast to X's dtype (a copy of w when they differ).

    NaN or infinity in X raises ValueError, checked without a second pass over X where
    possible: w is checked first, so a non-finite entry of X makes its row's logit NaN or
    +-inf, hence its score NaN, 0 or 1. X is therefore scanned only when some score is
    exactly 0 or 1 (|logit| beyond ~37 in float64, ~17 in float32) or NaN. The compiled dense
    kernels count such scores as they write them (``counts_unproven``), sparing a pass over
    ``out``; otherwise its minimum and maximum are taken. On that error
    ``out`` has been written. So it has when a sparse X's column index lies outside
    [0, n_features) and the kernel checks the indices in its own read (Numba and Cython: one
    pass over X instead of two); the error is the same ValueError either way.

    Device arrays: X (dense), w and ``out`` may be GPU arrays (``__cuda_array_interface__``;
    X float32/float64, any strides). Then ``backend="auto"`` runs "cuda", a CPU backend is a
    TypeError, and the result is ``out`` when it is a device array, else a new Numba device
    array. The same finiteness rule holds, evaluated by reductions on the device (one pass
    over the scores, and over X only in the case above): no data is copied to the host. A
    sparse (host) X with a device w runs on the device too.
    """
    on_device, backend = check_placement(backend, X=X, w=w, out=out)
    if on_device:
        return _sigmoid_scores_device(X, w, b, out, backend, n_threads)
    n_threads = check_n_threads(n_threads)
    sparse = issparse(X)
    kernel = get_kernel("sigmoid_csr" if sparse else "sigmoid_dense", backend)
    # A kernel that checks X's column indices in its own read spares the bounds pass.
    own_check = sparse and getattr(kernel, "checks_columns", False)
    sparse, A = _features(X, allow_nonfinite=True, n_threads=n_threads, column_bounds=not own_check)
    n_threads = threads_for(n_threads, _work(A, sparse))
    n_rows, n_features = A.shape
    dtype = A.dtype
    w = _weights(w, n_features, dtype)
    b = check_scalar(b, "b")
    if out is None:
        out = np.empty(n_rows, dtype=dtype)
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
        if out.shape != (n_rows,) or out.dtype != dtype:
            raise ValueError(
                f"out must have shape ({n_rows},) and dtype {dtype}, got {out.shape} {out.dtype}"
            )
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ValueError("out must be C-contiguous and writeable")
    # X is unchecked here: the reference's NumPy arithmetic must not warn about what the check
    # below turns into a ValueError.
    with np.errstate(invalid="ignore", over="ignore"):
        if sparse:
            kernel(A.indptr, A.indices, A.data, w, b, out, n_threads)
            proven = _scores_prove_finite(out)
        elif getattr(kernel, "counts_unproven", False):  # it counted them in its own pass
            proven = kernel(A, w, b, out, n_threads) == 0
        else:
            kernel(A, w, b, out, n_threads)
            proven = _scores_prove_finite(out)
    if not proven:
        _features(A.to_scipy() if sparse else A)  # the full check: raises on NaN or infinity
    return out


def _sigmoid_scores_device(X, w, b, out, backend, n_threads):
    """:func:`sigmoid_scores` with a device array among X, w, out: validated on the device."""
    sparse, X_on_device = issparse(X), is_device_array(X)
    if X_on_device:
        A = check_device_dense(X, "X", allow_nonfinite=True)
    else:  # host X (copied in by the kernel) with a device w or out
        sparse, A = _features(X, allow_nonfinite=True)
    n_rows, n_features = A.shape
    dtype = np.dtype(A.dtype)
    w = (
        check_device_vector(w, "w", n_features, dtype)
        if is_device_array(w)
        else _weights(w, n_features, dtype)
    )
    b = check_scalar(b, "b")
    out = check_device_out(out, n_rows, dtype)
    n_threads = check_n_threads(n_threads)
    if sparse:
        get_kernel("sigmoid_csr", backend)(A.indptr, A.indices, A.data, w, b, out, n_threads)
    else:
        get_kernel("sigmoid_dense", backend)(A, w, b, out, n_threads)
    scores = device_summary(out)
    if scores.n_nonfinite or not (scores.min > 0 and scores.max < 1):
        if X_on_device:
            check_device_dense(A, "X")  # raises on NaN or infinity
        else:
            _features(A.to_scipy() if sparse else A)
    return out


def _labels(y, n_rows):
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n_rows:
        raise ValueError(f"y must be 1-D with length {n_rows} (the rows of X), got shape {y.shape}")
    if y.dtype.kind not in "biuf":
        raise TypeError(f"y must be numeric 0/1 labels, got dtype {y.dtype}")
    y = y.astype(np.float64)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y must contain only 0 and 1")
    return y


def _sample_weight(sample_weight, n_rows):
    if sample_weight is None:
        return np.ones(n_rows, dtype=np.float64)
    sw = check_dense(sample_weight, "sample_weight", ndim=1, dtype=np.float64)
    if sw.shape[0] != n_rows:
        raise ValueError(f"sample_weight must have length {n_rows}, got {sw.shape[0]}")
    if np.any(sw < 0):
        raise ValueError("sample_weight must be non-negative")
    if not sw.sum() > 0:
        raise ValueError("sample_weight must have a positive sum")
    return sw


def logistic_loss_grad(
    X, y, w, b=0.0, *, l2=0.0, sample_weight=None, backend="auto", n_threads=None
):
    """The objective of L2-regularised logistic regression and its gradient, in one fused pass.

    loss = sum_i s_i * (log(1 + exp(z_i)) - y_i z_i) / sum_i s_i + 0.5 * l2 * |w|^2, with
    z = X @ w + b, s the sample weights (default 1) and y in {0, 1}; the intercept b is not
    penalised. Returns (loss, grad_w, grad_b): float, float64 array, float (float64
    throughout, as optimisers need). Deterministic: the same bits for any ``n_threads``.
    scikit-learn's LogisticRegression(C) minimises this with l2 = 1 / (C * sum_i s_i).
    Copies X as :func:`sigmoid_scores` does (never, for float32/float64 data); y and
    sample_weight become float64 arrays of n_rows (default weights: an array of ones).
    Memory: the kernel's partial gradients, O(chunks * n_features) float64 (see the kernels).

    Device arrays: X (dense), y, w and sample_weight may be GPU arrays
    (``__cuda_array_interface__``). Then ``backend="auto"`` runs "cuda", a CPU backend is a
    TypeError, and grad_w is a float64 Numba device array (loss and grad_b are floats). y,
    w and sample_weight are checked by one reduction each on the device; a device X is not
    scanned up front: a NaN or infinity in X makes its row's logit, hence the loss, NaN or
    infinite (for every label and weight), so X is scanned, on the device, only when the
    loss is not finite, and the ValueError is raised then.
    """
    on_device, backend = check_placement(backend, X=X, y=y, w=w, sample_weight=sample_weight)
    if on_device:
        return _logistic_loss_grad_device(X, y, w, b, l2, sample_weight, backend, n_threads)
    n_threads = check_n_threads(n_threads)
    sparse, A = _features(X, n_threads=n_threads)
    n_threads = threads_for(n_threads, _work(A, sparse))
    n_rows, n_features = A.shape
    if n_rows == 0:
        raise ValueError("X must have at least one row")
    y = _labels(y, n_rows)
    w = _weights(w, n_features, np.float64)
    b = check_scalar(b, "b")
    l2 = check_scalar(l2, "l2", min_value=0)
    sw = _sample_weight(sample_weight, n_rows)
    if sparse:
        kernel = get_kernel("logistic_loss_grad_csr", backend)
        return kernel(A.indptr, A.indices, A.data, y, w, b, l2, sw, n_threads)
    kernel = get_kernel("logistic_loss_grad_dense", backend)
    return kernel(A, y, w, b, l2, sw, n_threads)


def _logistic_loss_grad_device(X, y, w, b, l2, sample_weight, backend, n_threads):
    """:func:`logistic_loss_grad` with a device array among its inputs: checks on the device."""
    X_on_device = is_device_array(X)
    if X_on_device:
        sparse, A = False, check_device_dense(X, "X", allow_nonfinite=True)
    else:
        sparse, A = _features(X)
    n_rows, n_features = A.shape
    if n_rows == 0:
        raise ValueError("X must have at least one row")
    y = check_device_labels(y, n_rows) if is_device_array(y) else _labels(y, n_rows)
    w = (
        check_device_vector(w, "w", n_features, np.float64)
        if is_device_array(w)
        else _weights(w, n_features, np.float64)
    )
    b = check_scalar(b, "b")
    l2 = check_scalar(l2, "l2", min_value=0)
    sw = (
        check_device_sample_weight(sample_weight, n_rows)
        if is_device_array(sample_weight)
        else _sample_weight(sample_weight, n_rows)
    )
    n_threads = check_n_threads(n_threads)
    if sparse:
        kernel = get_kernel("logistic_loss_grad_csr", backend)
        result = kernel(A.indptr, A.indices, A.data, y, w, b, l2, sw, n_threads)
    else:
        result = get_kernel("logistic_loss_grad_dense", backend)(A, y, w, b, l2, sw, n_threads)
    if X_on_device and not math.isfinite(result[0]):
        check_device_dense(A, "X")  # raises on NaN or infinity
    return result


class LogisticObjective:
    """The L2-regularised logistic objective of fixed data, as scipy.optimize wants it.

    Validates X, y and sample_weight once (X's arrays are kept, not copied: see
    :func:`sigmoid_scores`) and picks the kernel once, so an
    optimiser's many evaluations pay for neither. ``objective(theta)`` returns (loss, grad)
    with theta = [w, b] when ``fit_intercept`` (b unpenalised) or theta = w (b fixed at 0);
    loss and grad as in :func:`logistic_loss_grad` with the current ``l2``.
    ``objective.hessp(theta, v)`` returns the Hessian at theta times v (for Newton-type
    optimisers such as scipy's trust-ncg), one pass over X per product (see :meth:`hessp`).
    Attributes: ``n_rows``, ``n_features``, ``total_weight`` (sum of sample weights), ``l2``,
    ``n_evaluations``, ``n_hessp`` (Hessian-vector products computed).
    """

    def __init__(
        self,
        X,
        y,
        *,
        l2=0.0,
        sample_weight=None,
        fit_intercept=True,
        backend="auto",
        n_threads=None,
    ):
        sparse, A = _features(X)
        self.n_rows, self.n_features = A.shape
        if self.n_rows == 0:
            raise ValueError("X must have at least one row")
        self._y = _labels(y, self.n_rows)
        self._sw = _sample_weight(sample_weight, self.n_rows)
        self.total_weight = float(np.sum(self._sw))
        self.l2 = check_scalar(l2, "l2", min_value=0)
        self.fit_intercept = bool(fit_intercept)
        self._n_threads = threads_for(check_n_threads(n_threads), _work(A, sparse))
        self.n_evaluations = 0
        self.n_hessp = 0
        self._backend = backend
        self._sparse = sparse
        self._dtype = A.dtype
        if sparse:
            kernel = get_kernel("logistic_loss_grad_csr", backend)
            self._args = (A.indptr, A.indices, A.data)
        else:
            kernel = get_kernel("logistic_loss_grad_dense", backend)
            self._args = (A,)
        self._kernel = kernel
        self._hessp_kernels = None  # (sigmoid, hessp): looked up on first use
        self._curvature_key = None  # theta's bytes for the cached c below
        self._curvature = None

    @property
    def labels(self) -> np.ndarray:
        """y as validated: float64 0/1 (read-only view)."""
        view = self._y.view()
        view.flags.writeable = False
        return view

    @property
    def sample_weight(self) -> np.ndarray:
        """The sample weights as validated: float64 (read-only view)."""
        view = self._sw.view()
        view.flags.writeable = False
        return view

    def __call__(self, theta):
        theta = np.asarray(theta, dtype=np.float64)
        d = self.n_features
        w = np.ascontiguousarray(theta[:d])
        b = float(theta[d]) if self.fit_intercept else 0.0
        loss, grad_w, grad_b = self._kernel(
            *self._args, self._y, w, b, self.l2, self._sw, self._n_threads
        )
        self.n_evaluations += 1
        if self.fit_intercept:
            grad = np.empty(d + 1, dtype=np.float64)
            grad[:d] = grad_w
            grad[d] = grad_b
            return loss, grad
        return loss, grad_w

    def _split(self, theta):
        theta = np.asarray(theta, dtype=np.float64)
        d = self.n_features
        if theta.shape != (d + int(self.fit_intercept),):
            raise ValueError(
                f"theta must have shape ({d + int(self.fit_intercept)},), got {theta.shape}"
            )
        w = np.ascontiguousarray(theta[:d])
        return w, (float(theta[d]) if self.fit_intercept else 0.0)

    def curvature(self, theta):
        """c_i = s_i p_i (1 - p_i) / sum(s) with p = sigmoid(X @ w + b) at theta (float64, (n,)):
        the Hessian's row weights. One fused sigmoid pass over X, cached for the last theta
        (keyed on its bytes), so the Hessian-vector products of one Newton step share it.
        For float32 X, p is the float32 score (w rounded to float32): c to ~1e-7 relative, an
        approximation that changes the optimiser's steps, never its optimum (the gradient is
        float64)."""
        theta = np.ascontiguousarray(theta, dtype=np.float64)
        key = theta.tobytes()
        if key != self._curvature_key:
            w, b = self._split(theta)
            sigmoid, _ = self._kernels_for_hessp()
            p = np.empty(self.n_rows, dtype=self._dtype)
            sigmoid(*self._args, w.astype(self._dtype, copy=False), b, p, self._n_threads)
            p = p.astype(np.float64, copy=False)
            self._curvature = self._sw * p * (1.0 - p) / self.total_weight
            self._curvature_key = key
        return self._curvature

    def _kernels_for_hessp(self):
        if self._hessp_kernels is None:
            kind = "csr" if self._sparse else "dense"
            self._hessp_kernels = (
                get_kernel(f"sigmoid_{kind}", self._backend),
                get_kernel(f"logistic_hessp_{kind}", self._backend),
            )
        return self._hessp_kernels

    def hessp(self, theta, v):
        """The objective's Hessian at theta times the vector v (same layout as theta), float64.

        H v = [X.T (c * (X v_w + v_b)) + l2 v_w, sum(c * (X v_w + v_b))] with c from
        :meth:`curvature` (the last part, and v_b, only with ``fit_intercept``; the intercept
        is unpenalised). One pass over X per product (the hessp kernel) plus, when theta is
        new, one sigmoid pass for c. Deterministic: same bits for any n_threads.
        """
        c = self.curvature(theta)
        v_w, v_b = self._split(v)
        _, kernel = self._kernels_for_hessp()
        hv_w, hv_b = kernel(*self._args, c, v_w, v_b, self.l2, self._n_threads)
        self.n_hessp += 1
        if self.fit_intercept:
            out = np.empty(self.n_features + 1, dtype=np.float64)
            out[:-1] = hv_w
            out[-1] = hv_b
            return out
        return np.asarray(hv_w, dtype=np.float64)
