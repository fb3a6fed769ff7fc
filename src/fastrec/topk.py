"""Public API of the ranking kernels: batched top-k of dense scores and fused sparse recommend."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._dispatch import get_kernel
from ._validation import (
    CSR,
    check_csr,
    check_dense,
    check_device_dense,
    check_ids,
    check_k,
    check_n_threads,
    check_placement,
)


class TopK(NamedTuple):
    """Row-wise top-k: ``indices`` (int64) and ``scores``, both (n_rows, k).

    Rows are sorted by score descending, ties by smaller index; a row with fewer than k
    candidates is padded with index -1 and score -inf. NumPy arrays, or Numba device arrays
    when the scores were given on the GPU (see :func:`topk`).
    """

    indices: np.ndarray
    scores: np.ndarray


def _mask(exclude, name, shape):
    """A CSR exclusion mask (pattern only: stored values are ignored) of the given shape."""
    if exclude is None:
        return None, None
    M = check_csr(exclude, name, allow_nonfinite=True)
    if M.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {M.shape}")
    return M.indptr, M.indices


def topk(scores, k, *, exclude=None, backend="auto", n_threads=None) -> TopK:
    """Row-wise top-k of a dense 2-D float32/float64 score array.

    ``exclude`` is an optional sparse mask of the same shape: its stored positions are never
    returned (its values are ignored). NaN and -inf scores are never candidates; +inf is a
    score like any other. Rows are sorted descending, ties by smaller column, padded with
    -1/-inf. The score array is only read. Memory: O(n_rows * k) beyond the inputs.

    Device arrays: ``scores`` may be a GPU array (anything with ``__cuda_array_interface__``:
    Numba device arrays, CuPy, PyTorch CUDA tensors; float32/float64, any strides). Then
    ``backend="auto"`` runs "cuda", a CPU backend is a TypeError, nothing is copied to the host
    (``exclude`` is a host scipy mask, copied in), and ``indices`` and ``scores`` are Numba
    device arrays (wrap them zero-copy with ``cupy.asarray`` or ``torch.as_tensor``).
    """
    on_device, backend = check_placement(backend, scores=scores)
    if on_device:
        S = check_device_dense(scores, "scores", allow_nonfinite=True)
    else:
        S = check_dense(scores, "scores", allow_nonfinite=True)
    k = check_k(k)
    ex_indptr, ex_indices = _mask(exclude, "exclude", S.shape)
    n_threads = check_n_threads(n_threads)
    kernel = get_kernel("topk", backend)
    return TopK(*kernel(S, k, ex_indptr, ex_indices, n_threads))


def recommend(
    user_items,
    item_neighbours,
    n,
    *,
    user_ids=None,
    exclude_seen=True,
    exclude=None,
    backend="auto",
    n_threads=None,
) -> TopK:
    """Top-n items per user from interactions and an item neighbourhood (item-kNN scoring).

    score(u, j) = sum over the items i of user u of user_items[u, i] * item_neighbours[i, j],
    computed sparsely: no dense users x items matrix is built. An item is a candidate for u
    when one of u's items lists it as a neighbour; items u has interacted with are skipped when
    ``exclude_seen``, and so are the positions stored in ``exclude`` (a mask shaped like
    user_items, indexed by user id). ``user_ids`` (default: all users) may be any subset in any
    order; row r of the result belongs to user_ids[r]. Sorted descending, ties by smaller item,
    -1/-inf padding. Memory: O(threads * n_items + len(user_ids) * n) in compiled backends.
    """
    UI = check_csr(user_items, "user_items", drop_zeros=True)
    NB = check_csr(item_neighbours, "item_neighbours", drop_zeros=True)
    n_items = UI.shape[1]
    if NB.shape != (n_items, n_items):
        raise ValueError(
            f"item_neighbours must have shape ({n_items}, {n_items}) to match user_items "
            f"{UI.shape}, got {NB.shape}"
        )
    return _fused_recommend(UI, UI, NB, n, user_ids, exclude_seen, exclude, backend, n_threads)


def recommend_user_based(
    user_items,
    user_neighbours,
    n,
    *,
    user_ids=None,
    exclude_seen=True,
    exclude=None,
    backend="auto",
    n_threads=None,
) -> TopK:
    """Top-n items per user from interactions and a user neighbourhood (user-kNN scoring).

    score(u, j) = sum over the neighbours v of user u of user_neighbours[u, v] *
    user_items[v, j]: the same fused kernel as :func:`recommend` with the roles swapped (A =
    user_neighbours, B = user_items, seen mask = user_items). An item is a candidate for u when
    a neighbour of u has it; items u has interacted with are skipped when ``exclude_seen``, and
    so are the positions stored in ``exclude`` (shaped like user_items). ``user_ids``, sorting,
    ties (smaller item first), padding (-1/-inf) and memory as in :func:`recommend`.
    """
    UI = check_csr(user_items, "user_items", drop_zeros=True)
    NB = check_csr(user_neighbours, "user_neighbours", drop_zeros=True)
    n_users = UI.shape[0]
    if NB.shape != (n_users, n_users):
        raise ValueError(
            f"user_neighbours must have shape ({n_users}, {n_users}) to match user_items "
            f"{UI.shape}, got {NB.shape}"
        )
    return _fused_recommend(UI, NB, UI, n, user_ids, exclude_seen, exclude, backend, n_threads)


def recommend_product(
    weights, item_rows, n, *, seen=None, exclude=None, backend="auto", n_threads=None
) -> TopK:
    """Top-n items of each row of the sparse product ``weights @ item_rows``, fused.

    The general form of :func:`recommend` for rows that are not part of a fitted matrix
    (users unseen at fit time): ``weights`` (n_rows x n_mid) and ``item_rows`` (n_mid x
    n_items) CSR; score(r, j) = sum over stored weights[r, i] of weights[r, i] *
    item_rows[i, j]. Item-kNN for request rows R passes (R, item_neighbours, seen=R);
    user-kNN passes (the requests' user neighbours, user_items, seen=R). ``seen`` and
    ``exclude``: optional masks shaped (n_rows, n_items) (patterns only) whose positions are
    never returned. Sorted descending, ties by smaller item, -1/-inf padding. Memory
    O(threads * n_items + n_rows * n) in compiled backends; no dense product.
    """
    A = check_csr(weights, "weights", drop_zeros=True)
    B = check_csr(item_rows, "item_rows", drop_zeros=True)
    return product_topk(A, B, n, seen, exclude, backend, n_threads)


def product_topk(A: CSR, B: CSR, n, seen, exclude, backend, n_threads) -> TopK:
    """:func:`recommend_product` of operands already validated by ``check_csr`` (the models
    validate their fitted neighbourhood once, not per request); the rest is checked here."""
    if A.shape[1] != B.shape[0]:
        raise ValueError(
            f"weights has {A.shape[1]} columns but item_rows has {B.shape[0]} rows"
        )
    n = check_k(n, "n")
    shape = (A.shape[0], B.shape[1])
    seen_indptr, seen_indices = _mask(seen, "seen", shape)
    ex_indptr, ex_indices = _mask(exclude, "exclude", shape)
    n_threads = check_n_threads(n_threads)
    kernel = get_kernel("recommend", backend)
    rows = np.arange(A.shape[0], dtype=np.int64)
    return TopK(
        *kernel(
            A.indptr, A.indices, A.data, B.indptr, B.indices, B.data, B.shape[1], rows, n,
            seen_indptr, seen_indices, ex_indptr, ex_indices, n_threads,
        )
    )


def _fused_recommend(UI, A, B, n, user_ids, exclude_seen, exclude, backend, n_threads) -> TopK:
    """Score the users of UI by the rows of A @ B (the recommend kernel) with UI's items as the
    seen mask: the shared tail of :func:`recommend` and :func:`recommend_user_based`."""
    n_users, n_items = UI.shape
    n = check_k(n, "n")
    rows = np.arange(n_users, dtype=np.int64) if user_ids is None else check_ids(
        user_ids, "user_ids", n_users
    )
    ex_indptr, ex_indices = _mask(exclude, "exclude", UI.shape)
    seen_indptr, seen_indices = (UI.indptr, UI.indices) if exclude_seen else (None, None)
    n_threads = check_n_threads(n_threads)
    kernel = get_kernel("recommend", backend)
    return TopK(
        *kernel(
            A.indptr, A.indices, A.data, B.indptr, B.indices, B.data, n_items, rows, n,
            seen_indptr, seen_indices, ex_indptr, ex_indices, n_threads,
        )
    )
