"""Public API of the ranking kernels: batched top-k of dense scores and fused sparse recommend."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._dispatch import get_kernel
from ._validation import (
    CSR,
    check_csr,
    check_dense,
    check_ids,
    check_k,
    check_n_threads,
    check_placement,
    is_device_sparse,
    threads_for,
)
from ._validation_device import (
    DEVICE_SCRATCH_BYTES,
    DeviceCSR,
    check_device_csr,
    check_device_dense,
    check_device_memory,
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
    M = check_csr(exclude, name, allow_nonfinite=True, values=False)
    if M.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {M.shape}")
    return M.indptr, M.indices


def topk(scores, k, *, exclude=None, backend="auto", n_threads=None) -> TopK:
    """Row-wise top-k of a dense 2-D float32/float64 score array.

    ``exclude`` is an optional sparse mask of the same shape: its stored positions are never
    returned (its values are ignored). NaN and -inf scores are never candidates; +inf is a
    score like any other. Rows are sorted descending, ties by smaller column, padded with
    -1/-inf. The score array is only read. Memory: O(n_rows * k) beyond the inputs.
    Copies ``scores`` when it is not a C-contiguous float32/float64 array, and ``exclude``'s
    index arrays when they are not canonical (sorted, no duplicates: the merge needs it); the
    mask's values are never converted.

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
    n_threads = threads_for(check_n_threads(n_threads), S.shape[0] * S.shape[1])
    kernel = get_kernel("topk", backend)
    if not on_device and S.dtype == np.float32 and k >= 32:
        _float32_form(kernel)
    return TopK(*kernel(S, k, ex_indptr, ex_indices, n_threads))


def _float32_form(kernel) -> None:
    """Switch the compiled backend of ``kernel`` to the float32 row form chosen for this CPU
    (measured once, see kernels.form_choice); nothing for the reference."""
    from .kernels import form_choice

    kernel = getattr(kernel, "__wrapped__", kernel)  # the fork-safe wrapper's kernel
    module = getattr(kernel, "__module__", "") or ""
    for backend, part in (("numba", ".numba_cpu"), ("cython", "._cython")):
        if part in module:
            form_choice.apply_topk_form(backend)


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
    Stored zeros in host ``user_items`` and ``item_neighbours`` are dropped: a stored 0
    interaction is not seen (the item may be recommended) and a stored 0 similarity is no
    candidate; in ``exclude`` only the pattern counts (a stored 0 excludes). A device CSR is
    never copied, so stored zeros there are refused (ValueError) instead.
    Copies a host matrix when it is not canonical CSR without stored zeros, or not
    float32/float64 (the walk over neighbours needs sorted, unique, non-zero entries);
    otherwise none.

    Device CSR: ``user_items`` and ``item_neighbours`` may both live on the GPU (CuPy or
    PyTorch sparse CSR, or any object with device ``indptr``/``indices``/``data`` and
    ``shape``; canonical, checked on the device: see
    :func:`fastrec._validation_device.check_device_csr`); ``exclude`` may then be a device CSR too
    (pattern only) or a host scipy mask (copied in). ``backend="auto"`` runs "cuda", a CPU
    backend is a TypeError, the matrices are read in place and the result is a TopK of device
    arrays (``user_ids`` stay a host list, copied in). A device :func:`cosine_topk` result
    lists rows by similarity: sort its rows by column first. Device memory:
    :func:`recommend_device_memory`, checked against the GPU's free memory first.
    """
    on_device, backend = check_placement(
        backend, user_items=user_items, item_neighbours=item_neighbours
    )
    if on_device:
        UI, NB = _device_operands(user_items, "user_items", item_neighbours, "item_neighbours")
    else:
        UI = check_csr(user_items, "user_items", drop_zeros=True)
        NB = check_csr(item_neighbours, "item_neighbours", drop_zeros=True)
    n_items = UI.shape[1]
    if NB.shape != (n_items, n_items):
        raise ValueError(
            f"item_neighbours must have shape ({n_items}, {n_items}) to match user_items "
            f"{UI.shape}, got {NB.shape}"
        )
    return fused_recommend(UI, UI, NB, n, user_ids, exclude_seen, exclude, backend, n_threads)


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
    ties (smaller item first), padding (-1/-inf), memory and stored zeros as in
    :func:`recommend`; device CSR inputs as in :func:`recommend`.
    """
    on_device, backend = check_placement(
        backend, user_items=user_items, user_neighbours=user_neighbours
    )
    if on_device:
        UI, NB = _device_operands(user_items, "user_items", user_neighbours, "user_neighbours")
    else:
        UI = check_csr(user_items, "user_items", drop_zeros=True)
        NB = check_csr(user_neighbours, "user_neighbours", drop_zeros=True)
    n_users = UI.shape[0]
    if NB.shape != (n_users, n_users):
        raise ValueError(
            f"user_neighbours must have shape ({n_users}, {n_users}) to match user_items "
            f"{UI.shape}, got {NB.shape}"
        )
    return fused_recommend(UI, NB, UI, n, user_ids, exclude_seen, exclude, backend, n_threads)


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


def _product_work(row_entries: int, B) -> int:
    """Products the recommend kernel forms for rows holding ``row_entries`` entries of A: each
    entry meets a row of B (B's mean row length). For threads_for."""
    return row_entries * max(1, B.nnz // max(1, B.shape[0]))


def product_topk(A: CSR, B: CSR, n, seen, exclude, backend, n_threads) -> TopK:
    """:func:`recommend_product` of operands already validated by ``check_csr`` (the models
    validate their fitted neighbourhood once, not per request); the rest is checked here."""
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"weights has {A.shape[1]} columns but item_rows has {B.shape[0]} rows")
    n = check_k(n, "n")
    shape = (A.shape[0], B.shape[1])
    seen_indptr, seen_indices = _mask(seen, "seen", shape)
    ex_indptr, ex_indices = _mask(exclude, "exclude", shape)
    n_threads = threads_for(check_n_threads(n_threads), _product_work(A.nnz, B))
    kernel = get_kernel("recommend", backend)
    rows = np.arange(A.shape[0], dtype=np.int64)
    return TopK(
        *kernel(
            A.indptr,
            A.indices,
            A.data,
            B.indptr,
            B.indices,
            B.data,
            B.shape[1],
            rows,
            n,
            seen_indptr,
            seen_indices,
            ex_indptr,
            ex_indices,
            n_threads,
        )
    )


def recommend_device_memory(n_rows: int, n_items: int, n_out: int, n: int, itemsize: int):
    """Bytes of device memory the CUDA recommend holds beyond its inputs: the (n_out, n)
    result (8 + itemsize per slot), per-row work, order and empty masks (40 per row of A) and
    the per-block accumulators (at most max(1 GiB, one block's 8 + itemsize per item)).
    O(len(user_ids) * n + n_users); never users x items."""
    scratch = max(DEVICE_SCRATCH_BYTES, n_items * (8 + itemsize))
    return int(n_out * n * (8 + itemsize) + 40 * (n_rows + 1) + 8 * n_out + scratch)


def _device_operands(M1, name1, M2, name2):
    """Both operands of a device recommend, validated on the device (both must be there)."""
    for name, M in ((name1, M1), (name2, M2)):
        if not is_device_sparse(M):
            other = name2 if name == name1 else name1
            raise TypeError(
                f"{name} must be a device CSR too when {other} is one, got "
                f"{type(M).__name__} (copy it to the device first)"
            )
    return check_device_csr(M1, name1), check_device_csr(M2, name2)


def _device_mask(exclude, name, shape, *, sorted_rows=False):
    """An exclusion mask for a device call: a device CSR (pattern checked on the device; each
    row's indices strictly increasing too with ``sorted_rows``, for kernels that binary-search
    it) or a host scipy mask (copied in by the kernel)."""
    if exclude is None or not is_device_sparse(exclude):
        return _mask(exclude, name, shape)
    M = check_device_csr(exclude, name, pattern_only=True, sorted_rows=sorted_rows)
    if M.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {M.shape}")
    return M.indptr, M.indices


def fused_recommend(UI, A, B, n, user_ids, exclude_seen, exclude, backend, n_threads) -> TopK:
    """Score the users of UI by the rows of A @ B (the recommend kernel) with UI's items as the
    seen mask: the shared tail of :func:`recommend` and :func:`recommend_user_based` (UI, A, B
    host CSR or DeviceCSR: the same attributes, already validated: the models validate their
    fitted matrices once per fitted state, not per request)."""
    n_users, n_items = UI.shape
    n = check_k(n, "n")
    rows = (
        np.arange(n_users, dtype=np.int64)
        if user_ids is None
        else check_ids(user_ids, "user_ids", n_users)
    )
    on_device = isinstance(UI, DeviceCSR)
    ex_indptr, ex_indices = (_device_mask if on_device else _mask)(exclude, "exclude", UI.shape)
    seen_indptr, seen_indices = (UI.indptr, UI.indices) if exclude_seen else (None, None)
    n_threads = check_n_threads(n_threads)
    if not on_device:
        row_entries = A.nnz if user_ids is None else int(np.diff(A.indptr)[rows].sum())
        n_threads = threads_for(n_threads, _product_work(row_entries, B))
    kernel = get_kernel("recommend", backend)
    if on_device:
        check_device_memory(
            recommend_device_memory(
                A.shape[0], n_items, len(rows), n, np.result_type(A.dtype, B.dtype).itemsize
            ),
            "recommend",
        )
    return TopK(
        *kernel(
            A.indptr,
            A.indices,
            A.data,
            B.indptr,
            B.indices,
            B.data,
            n_items,
            rows,
            n,
            seen_indptr,
            seen_indices,
            ex_indptr,
            ex_indices,
            n_threads,
        )
    )
