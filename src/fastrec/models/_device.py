"""Requests whose rows live on the GPU: the models' ``recommend(user_items=<device CSR>)``.

A device CSR of request rows (CuPy or PyTorch sparse CSR, or any object with device
``indptr``/``indices``/``data`` and ``shape``) is checked on the device
(:func:`fastrec._validation_device.check_device_csr`) and read in place: a model moves its
fitted state to the device once per fitted state, runs the CUDA kernels there, and returns a
TopK of device arrays. Host filters (``exclude`` / ``candidates``) are copied in; an ``exclude``
mask may be a device CSR too. Nothing here copies a device input to the host.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_placement, is_device_array, is_device_sparse
from .._validation_device import DeviceCSR, check_device_csr, device_concat_rows, device_to_host
from ..embedding import _check_candidates
from ..topk import TopK, _device_mask, fused_recommend


def device_backend(model, user_items) -> str:
    """The backend a device request runs on: the model's ``backend``, "auto" read as "cuda";
    a CPU backend is a TypeError naming ``user_items`` (its data is on the GPU)."""
    return check_placement(model.backend, user_items=user_items)[1]


def request_rows(model, user_items, *, model_dtype: bool = True) -> DeviceCSR:
    """Device request rows over the fitted item columns, validated on the device.

    ``model_dtype``: the values must have the dtype of the fitted interactions (the host
    path casts request rows to it; device arrays are never converted, so a mismatch is a
    TypeError that says how to cast them).
    """
    model._check_fitted()
    R = check_device_csr(user_items, "user_items")
    if R.shape[1] != model.n_items_:
        raise ValueError(
            f"user_items has {R.shape[1]} columns but the model knows {model.n_items_} items "
            f"(columns 0..{model.n_items_ - 1}): map new items' events through partial_fit "
            "first, or drop them"
        )
    dtype = np.dtype(model.user_items_.dtype)
    if model_dtype and R.dtype != dtype:
        raise TypeError(
            f"user_items has dtype {R.dtype} but {type(model).__name__} was fit on {dtype} "
            "values (its scores' dtype); device arrays are not converted: cast the values on "
            f"the device first (CuPy: X.astype(numpy.{dtype}); PyTorch: X.to(torch.{dtype}))"
        )
    return R


def fitted(model, name: str, source, move):
    """``move(source)``: the device copy of a fitted array, made once per fitted state."""
    return model._per_fitted_state(f"{name}@device", source, move)


def _per_request(x) -> bool:
    return x is not None and (sp.issparse(x) or is_device_sparse(x))


def product_recommend(model, R, A, B, n, exclude_seen, exclude, candidates, backend) -> TopK:
    """Top-n of the device product A @ B for the request rows R (seen mask: R), through the
    fused recommend kernel, with the model's filters.

    A device ``exclude`` mask goes to the kernel as it is (without ``candidates``: the two
    cannot be merged on the host). Host filters become the model's masks (an allow-list's
    complement in blocks of rows, each a host mask copied in); the blocks' results are
    stacked on the device.
    """
    n_threads = getattr(model, "n_threads", None)
    if is_device_sparse(exclude):
        if candidates is not None:
            raise ValueError(
                "exclude is a device CSR mask: with device user_items it cannot be combined "
                "with candidates; give exclude as a host mask or a list of items instead"
            )
        return fused_recommend(R, A, B, n, None, exclude_seen, exclude, backend, n_threads)
    n_rows = R.shape[0]
    parts = []
    for r0, r1, mask in model._masks(exclude, candidates, n_rows, model.n_items_):
        rows = None if (r0, r1) == (0, n_rows) else np.arange(r0, r1, dtype=np.int64)
        if mask is not None and rows is not None:  # the kernel reads mask rows by R's rows
            mask = sp.vstack(
                [
                    sp.csr_matrix((r0, mask.shape[1])),
                    mask,
                    sp.csr_matrix((n_rows - r1, mask.shape[1])),
                ],
                format="csr",
            )
        parts.append(fused_recommend(R, A, B, n, rows, exclude_seen, mask, backend, n_threads))
    if len(parts) == 1:
        return parts[0]
    return TopK(
        device_concat_rows([p.indices for p in parts]),
        device_concat_rows([p.scores for p in parts]),
    )


def dot_filters(model, R: DeviceCSR, exclude, candidates, exclude_seen):
    """(candidate item ids or None, exclusion indptr, indices) for dot_topk of device requests.

    Lists (the same items for every request, columns or original ids) become dot_topk's
    candidates: an exclude list is taken out of them. The kernel excludes one per-request
    mask: R itself when ``exclude_seen``, else an ``exclude`` mask (host, or device CSR with
    sorted rows); a per-request mask beside the seen items, or a per-request candidates
    mask, would need a merge on the device, which is not done: ValueError saying what to pass.
    """
    n_rows, n_items = R.shape
    if _per_request(candidates):
        raise ValueError(
            f"{type(model).__name__} with device user_items takes candidates as a list of "
            "items (the same for every request), not a per-request mask"
        )
    cand = None if candidates is None else model._item_list(candidates, "candidates")
    mask = R if exclude_seen else None
    if _per_request(exclude):
        if exclude_seen:
            raise ValueError(
                f"{type(model).__name__} with device user_items excludes one per-request "
                "mask, here the seen items (exclude_seen=True): give exclude as a list of "
                "items, or merge the seen items into the mask and pass exclude_seen=False"
            )
        mask = exclude
    elif exclude is not None:
        dropped = model._item_list(exclude, "exclude")
        cand = np.setdiff1d(np.arange(n_items) if cand is None else cand, dropped)
    if mask is R:  # checked already
        ex_indptr, ex_indices = R.indptr, R.indices
    else:
        ex_indptr, ex_indices = _device_mask(mask, "exclude", (n_rows, n_items), sorted_rows=True)
    return _check_candidates(cand, n_items), ex_indptr, ex_indices


def host_indices(indices):
    """Indices on the host: a device array (a device result) is copied; others as given."""
    return device_to_host(indices) if is_device_array(indices) else indices
