"""Public API of learned representations: embedding retrieval (the k best items per query vector
by dot product or cosine) and the conjugate-gradient solves of implicit-feedback ALS.

The product queries x items^T is never materialised: compiled backends compute cache-sized
tiles of it and feed each straight into the running top-k selection of its query rows.
"""

from __future__ import annotations

import numpy as np

from ._dispatch import get_kernel
from ._validation import (
    check_choice,
    check_csr,
    check_dense,
    check_ids,
    check_k,
    check_n_threads,
    check_placement,
    check_scalar,
    threads_for,
)
from ._validation_device import check_device_dense
from .topk import TopK, _device_mask, _mask


def _normalised_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (norms in float64, result in X's dtype); zero rows stay 0."""
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return (X * inv[:, None]).astype(X.dtype, copy=False)


def _check_candidates(candidates, n_items: int):
    """Sorted, distinct int64 item ids in [0, n_items) (duplicates are dropped)."""
    if candidates is None:
        return None
    ids = check_ids(candidates, "candidates", n_items)
    return np.unique(ids)


def dot_topk(
    queries,
    items,
    k,
    *,
    exclude=None,
    candidates=None,
    item_bias=None,
    metric="dot",
    backend="auto",
    n_threads=None,
) -> TopK:
    """For each query row, the k items with the largest score, without building the product.

    score(q, j) = queries[q] . items[j] (+ item_bias[j]); with ``metric="cosine"`` both sides
    are first scaled to unit L2 norm (a zero vector scores 0 against everything). ``queries``
    (n_queries, n_factors) and ``items`` (n_items, n_factors): float32 or float64 (the result
    takes the wider of the two), any layout (non-C-contiguous arrays are copied once); NaN or
    infinity anywhere is a ValueError. ``exclude``: a CSR pattern (n_queries, n_items) whose
    stored positions are never returned (seen items); ``candidates``: item ids to rank among
    (default all). Returns :class:`TopK` (n_queries, k), sorted descending, ties by smaller
    item, padded with -1/-inf when fewer than k items remain.

    Time O(n_queries * n_items * n_factors) for the product (BLAS tiles on the CPU) plus the
    selection's expected O(n_queries * (n_items + k log n_items)). Memory beyond the inputs and
    the O(n_queries * k) output: O(threads * tile) in the compiled CPU backends (a tile is
    512 x 512 scores plus, with ``candidates``, 512 gathered item rows), a copy of the items
    under cosine or when they are not C-contiguous or of the result dtype. The NumPy reference
    works in float64 blocks of about 64 MB. Results are identical for any ``n_threads``.

    Device arrays: ``queries`` and ``items`` may be GPU arrays (CUDA array interface: Numba,
    CuPy, PyTorch; C-contiguous rows are read without copying). Then ``backend="auto"`` runs
    "cuda", both must have the same dtype, ``exclude`` is a host scipy mask (copied in) or a
    device CSR (pattern only, checked on the device, read in place: see
    :func:`fastrec._validation_device.check_device_csr`), ``candidates`` and ``item_bias`` are
    host arrays copied in, and the result holds Numba device arrays.
    """
    on_device, backend = check_placement(backend, queries=queries, items=items)
    k = check_k(k)
    Q, X, bias, cand, ex_indptr, ex_indices = _prepare(
        queries, items, exclude, candidates, item_bias, metric, on_device
    )
    n_threads = check_n_threads(n_threads)
    if not on_device:  # products formed (an upper bound with candidates)
        n_threads = threads_for(n_threads, Q.shape[0] * X.shape[0] * X.shape[1])
    kernel = get_kernel("dot_topk", backend)
    return TopK(*kernel(Q, X, k, bias, cand, ex_indptr, ex_indices, n_threads))


# Query rows per block of the compiled CPU kernels' tiles: fastrec.dask splits the queries at
# multiples of it, so that every query meets BLAS in the same tile as in one local call.
QUERY_TILE_ROWS = 512


def _prepare(queries, items, exclude, candidates, item_bias, metric, on_device=False):
    """Validate dot_topk's inputs once; the kernel's arguments (Q, X, bias, candidates, mask)
    with both sides in the result dtype and normalised under cosine."""
    metric = check_choice(metric, "metric", ("dot", "cosine"))
    if on_device:
        Q = check_device_dense(queries, "queries")
        X = check_device_dense(items, "items")
    else:
        Q = check_dense(queries, "queries")
        X = check_dense(items, "items")
    if Q.shape[1] != X.shape[1]:
        raise ValueError(
            f"queries and items must have the same number of factors (columns), got "
            f"{Q.shape[1]} and {X.shape[1]}"
        )
    if Q.shape[1] == 0:
        raise ValueError("queries and items must have at least one factor (column)")
    n_queries, n_items = Q.shape[0], X.shape[0]
    dtype = np.result_type(Q.dtype, X.dtype)
    bias = None
    if item_bias is not None:
        bias = check_dense(item_bias, "item_bias", ndim=1, dtype=dtype)
        if bias.shape[0] != n_items:
            raise ValueError(
                f"item_bias must have length {n_items} (the rows of items), got {bias.shape[0]}"
            )
    cand = _check_candidates(candidates, n_items)
    if on_device:  # the kernel binary-searches each row of the mask
        ex_indptr, ex_indices = _device_mask(
            exclude, "exclude", (n_queries, n_items), sorted_rows=True
        )
    else:
        ex_indptr, ex_indices = _mask(exclude, "exclude", (n_queries, n_items))
    if on_device:
        from ._dispatch import backend_module

        if Q.dtype != X.dtype:  # device data is never converted behind the caller's back
            raise TypeError(
                f"queries ({np.dtype(Q.dtype)}) and items ({np.dtype(X.dtype)}) are "
                "device arrays of different dtypes; cast one of them"
            )
        cu = backend_module("cuda")
        if metric == "cosine":
            Q, X = cu.device_normalised_rows(Q), cu.device_normalised_rows(X)
    else:
        Q = np.ascontiguousarray(Q, dtype=dtype)
        X = np.ascontiguousarray(X, dtype=dtype)
        if metric == "cosine":
            Q, X = _normalised_rows(Q), _normalised_rows(X)
    return Q, X, bias, cand, ex_indptr, ex_indices


def _dot_topk_block(Q, X, bias, cand, ex_indptr, ex_indices, k, backend, n_threads) -> TopK:
    """dot_topk of prepared arguments (:func:`_prepare`) for host query rows Q (a dask task)."""
    kernel = get_kernel("dot_topk", backend)
    return TopK(*kernel(Q, X, k, bias, cand, ex_indptr, ex_indices, check_n_threads(n_threads)))


def als_cg_update(
    user_items, X, Y, *, regularization=0.01, alpha=1.0, cg_steps=3, backend="auto", n_threads=None
) -> np.ndarray:
    """One half-step of implicit-feedback ALS: new row factors X given the column factors Y.

    For each row u of the (n_rows, n_cols) CSR ``user_items`` (non-negative values r), x_u
    takes ``cg_steps`` conjugate-gradient steps, warm-started from X[u], towards the solution
    of (Y^T C_u Y + regularization I) x_u = Y^T C_u p_u with c_ui = 1 + alpha * r_ui and
    p_ui = 1 on the stored entries (c = 1, p = 0 elsewhere): implicit's CG solver. ``X``
    (n_rows, f) and ``Y`` (n_cols, f) of one float dtype; returns the new X (a new array).
    Time O(cg_steps * (nnz + n_rows * f) * f) plus Y^T Y (O(n_cols * f^2), float64 BLAS);
    memory: the new X. Rows are independent: the same bits for any ``n_threads``.
    """
    UI = check_csr(user_items, "user_items")
    X = check_dense(X, "X")
    Y = check_dense(Y, "Y", dtype=X.dtype)
    if UI.nnz and UI.data.min() < 0:
        raise ValueError("user_items must be non-negative (implicit feedback confidences)")
    if X.shape[0] != UI.shape[0] or Y.shape[0] != UI.shape[1] or X.shape[1] != Y.shape[1]:
        raise ValueError(
            f"X {X.shape} and Y {Y.shape} do not fit user_items {UI.shape}: "
            "need (n_rows, f) and (n_cols, f)"
        )
    regularization = check_scalar(regularization, "regularization", min_value=0)
    alpha = check_scalar(alpha, "alpha", min_value=0)
    cg_steps = check_scalar(cg_steps, "cg_steps", min_value=1, integer=True)
    n_threads = check_n_threads(n_threads)
    Y64 = Y.astype(np.float64)
    YtY = Y64.T @ Y64 + regularization * np.eye(Y.shape[1])
    kernel = get_kernel("als_cg_update", backend)
    return kernel(UI.indptr, UI.indices, UI.data, X, Y, YtY, alpha, cg_steps, n_threads)
