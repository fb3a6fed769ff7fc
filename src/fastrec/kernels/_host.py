"""The host side of the compiled CPU backends, written once: what surrounds every compiled loop.

Output allocation, empty-input shortcuts, the index type of a call, mask normalisation, the CSR
built from per-row slots and the prepare-then-rows sequence of the cosine kernels live here.
A backend (Cython ``_cython/_<family>.pyx``, Numba ``numba_cpu/<family>.py``) contributes only
its compiled loops, as a :class:`CosineLoops` / :class:`RankingLoops` record, and exports the
functions :func:`bind` makes of the generic ones below (the reference's names and signatures).
Results are those of the loops: nothing here touches a value.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import IntEnum
from typing import Any, NamedTuple

import numpy as np

from ._rows import plan

# ---- shared pieces ------------------------------------------------------------------------------


def bind(generic: Callable, loops: Any, module: str) -> Callable:
    """``generic(loops, *args)`` as a kernel of ``module`` with the reference's signature
    (``generic``'s without its first parameter) and docstring."""

    def kernel(*args, **kwargs):
        return generic(loops, *args, **kwargs)

    functools.update_wrapper(kernel, generic)
    del kernel.__wrapped__  # the signature below is the one callers see
    sig = inspect.signature(generic)
    kernel.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
    kernel.__module__ = module
    return kernel


def check_has_columns(indptr, indices, n_cols: int) -> None:
    """Before a ``checks_columns`` kernel (one that clamps its gathers to the last column and
    returns the largest index it saw): stored entries in a matrix with no column at all."""
    if indptr[-1] and n_cols == 0:
        raise ValueError(f"X stores column index {indices[0]}, outside [0, 0)")


def check_column_top(top, indptr, indices, n_cols: int) -> None:
    """After a ``checks_columns`` kernel: ValueError naming the index when ``top``, the
    largest column index it saw (read unsigned, so a negative one is huge), is out of range."""
    top = int(top)
    if indptr[-1] and top >= n_cols:
        bits = 8 * indices.dtype.itemsize
        bad = top - (1 << bits) * (top >> (bits - 1))  # back to the signed value
        raise ValueError(f"X stores column index {bad}, outside [0, {n_cols})")


def empty_csr(n_rows: int, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An all-empty CSR result of ``n_rows`` rows: (indptr int64, indices int64, values)."""
    return np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype)


def index_type(*arrays) -> type:
    """int64 if any given index array is int64, else int32 (one specialisation per call)."""
    return np.int64 if any(a is not None and a.dtype == np.int64 for a in arrays) else np.int32


def padded(a: np.ndarray, pad: bool) -> np.ndarray:
    """``a``, or one dummy slot when it is empty and ``pad`` (Cython memoryviews need an
    address; the loops never read the slot)."""
    return a if not pad or a.shape[0] else np.zeros(1, a.dtype)


def mask_arrays(m_indptr, m_indices, itype, pad: bool):
    """(indptr, indices, present) of an optional CSR mask pattern, as ``itype``; no mask is
    (zeros(1), zeros(1), False)."""
    if m_indptr is None:
        return np.zeros(1, itype), np.zeros(1, itype), False
    indices = padded(np.ascontiguousarray(m_indices, dtype=itype), pad)
    return np.ascontiguousarray(m_indptr, dtype=itype), indices, True


# ---- similarity: cosine_topk, cosine_similarity -----------------------------------------------


class CosineMode(IntEnum):
    """What one pass of the cosine loop does with each row's candidates."""

    TOPK = 0  # best kk of row order[pos], sorted, into slot pos
    COUNT = 1  # count row i's stored entries into count[i]
    FILL = 2  # write them, columns ascending, at ptr[i]


class CosinePass(NamedTuple):
    """The operands of one pass: X's rows (values normalised unless binary), the transposed
    other operand, row scales a (X) and b (other), and the row order."""

    x_indptr: np.ndarray
    x_indices: np.ndarray
    x_weights: np.ndarray  # x_ip / |x_i| float64; empty when binary
    t_indptr: np.ndarray
    t_indices: np.ndarray
    t_data: np.ndarray  # normalised float64 values; empty when binary
    x_scale: np.ndarray
    y_scale: np.ndarray
    n_other: int
    binary: bool
    need_count: bool
    order: np.ndarray
    work: np.ndarray


class CosineRule(NamedTuple):
    """Which candidates a row keeps (the reference's rules) and how many."""

    kk: int
    shrink: float
    min_similarity: float
    min_support: int
    include_self: bool
    round32: bool  # rank values as float32 (Cython; Numba reads it off the output dtype)


class CosineOut(NamedTuple):
    count: np.ndarray
    ptr: np.ndarray
    idx: np.ndarray
    val: np.ndarray


class CosineLoops(NamedTuple):
    """A backend's compiled cosine loops and the array forms they take."""

    row_scales: Callable  # (indptr, data) -> (inv_norm, row_exp, scale, constant)
    # (indptr, indices, data, inv_norm, row_exp, n_cols, weighted, tp, tx, tw)
    transpose: Callable
    transpose_index_dtype: Callable  # n_rows -> dtype of the transpose's row ids
    row_work: Callable  # (indptr, indices, t_indptr, n_threads) -> int64 work per row
    cosine_rows: Callable  # (mode, CosinePass, CosineRule, CosineOut, n_threads)
    compact: Callable  # (counts, kk, out_idx, out_val, slots, indptr, indices, values, n_threads)
    as_indptr: Callable  # indptr as the loops take it
    as_indices: Callable  # indices as the loops take it
    slot_dtype: Callable  # result dtype -> dtype of the per-slot value buffers


class PreparedCosineTopk(NamedTuple):
    """X's side of cosine_topk, computed once for any number of row blocks (picklable)."""

    n_cols: int
    dtype: np.dtype
    binary: bool
    indptr: np.ndarray
    indices: np.ndarray
    x_weights: np.ndarray
    scale: np.ndarray
    t_indptr: np.ndarray
    t_indices: np.ndarray
    t_data: np.ndarray
    work: np.ndarray


class PreparedCosineSimilarity(NamedTuple):
    """Y's side of cosine_similarity and whether the product is binary (picklable)."""

    n_cols: int
    dtype: np.dtype
    binary: bool
    y_scale: np.ndarray
    t_indptr: np.ndarray
    t_indices: np.ndarray
    t_data: np.ndarray


def _prepare_side(loops: CosineLoops, indptr, indices, data, n_cols, weighted):
    """((inv_norm, row_exp), scale, constant, (t_indptr, t_indices, t_data)) of one operand;
    see the backends' _row_scales for the scale-invariant norms."""
    n = indptr.shape[0] - 1
    inv_norm, row_exp, scale, constant = loops.row_scales(indptr, data)
    weighted = weighted or not constant
    nnz = int(indptr[n]) if n else 0
    t_indptr = np.empty(n_cols + 1, np.int64)
    t_indices = np.empty(nnz, loops.transpose_index_dtype(n))
    t_data = np.empty(nnz if weighted else 0, np.float64)
    loops.transpose(
        indptr, indices, data, inv_norm, row_exp, n_cols, weighted, t_indptr, t_indices, t_data
    )
    return (inv_norm, row_exp), scale, constant, (t_indptr, t_indices, t_data)


def _row_weights(indptr, data, norms):
    """x_ip / |x_i| as float64, row by row (the left operand of a weighted product);
    ``norms`` = (inv_norm, row_exp) of the backend's row_scales."""
    inv_norm, row_exp = norms
    rows = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))
    return np.ldexp(data.astype(np.float64), -row_exp[rows]) * inv_norm[rows]


def _csr_from_slots(loops: CosineLoops, counts, kk, out_idx, out_val, slots, dtype, n_threads):
    """Output row r = the counts[s] entries of slot s = slots[r], as CSR arrays."""
    indptr = np.zeros(slots.shape[0] + 1, np.int64)
    np.cumsum(counts[slots], out=indptr[1:])
    nnz = int(indptr[-1])
    indices = np.empty(nnz, np.int64)
    values = np.empty(nnz, dtype)
    loops.compact(counts, kk, out_idx, out_val, slots, indptr, indices, values, n_threads)
    return indptr, indices, values


def cosine_topk_prepare(loops: CosineLoops, indptr, indices, data, n_cols, n_threads):
    """The part of cosine_topk that depends on X only, done once for any number of row blocks.

    Row scales (1/|x_i|, and whether every row holds one constant value), the transposed
    matrix (float64 normalised values unless binary), the normalised row values and each
    row's work. Returns a :class:`PreparedCosineTopk` (picklable: ``fastrec.dask`` ships it to
    its workers) for :func:`cosine_topk_rows`. Time O(nnz + n_cols); memory O(nnz + n + n_cols)
    (it keeps X's indices: 8 or 16 bytes per stored value in all when binary, 24 or 32
    otherwise). Backends' preparations differ: pass it back to the same backend.
    """
    n = indptr.shape[0] - 1
    indptr = loops.as_indptr(indptr)
    norms, scale, binary, (tp, tx, tw) = _prepare_side(loops, indptr, indices, data, n_cols, False)
    xw = np.zeros(0) if binary else _row_weights(indptr, data, norms)
    ix = loops.as_indices(indices)
    work = loops.row_work(indptr, ix, tp, n_threads) if n else np.zeros(0, np.int64)
    return PreparedCosineTopk(
        int(n_cols), data.dtype, bool(binary), indptr, ix, xw, scale, tp, tx, tw, work
    )


def cosine_topk_rows(
    loops: CosineLoops,
    prepared,
    k,
    shrink,
    min_similarity,
    min_support,
    include_self,
    n_threads,
    rows,
):
    """cosine_topk of a prepared X (:func:`cosine_topk_prepare`) for some or all of its rows.

    ``rows``: None for every row, or an int64 array of row ids (any order, repeats allowed):
    output row r is row rows[r]'s neighbours, bit for bit those of the all-rows call.
    Returns (indptr int64, indices int64, values of X's dtype), as cosine_topk.
    Time O(sum over the distinct rows of (w_i + min(n, w_i)) + b k log k) for b distinct rows;
    memory O(b*k + threads*n) beyond the preparation.
    """
    P = PreparedCosineTopk(*prepared)
    n = P.indptr.shape[0] - 1
    kk = min(int(k), n)
    if n == 0 or kk == 0:
        return empty_csr(n if rows is None else len(rows), P.dtype)
    order, slots = plan(P.work, rows)
    operands = CosinePass(
        P.indptr,
        P.indices,
        P.x_weights,
        P.t_indptr,
        P.t_indices,
        P.t_data,
        P.scale,
        P.scale,
        n,
        P.binary,
        shrink > 0 or min_support > 1,
        order,
        P.work,
    )
    rule = CosineRule(
        kk,
        float(shrink),
        float(min_similarity),
        int(min_support),
        bool(include_self),
        P.dtype == np.float32,
    )
    counts = np.zeros(order.shape[0], np.int64)
    out_idx = np.empty(order.shape[0] * kk, np.int64)
    out_val = np.empty(order.shape[0] * kk, loops.slot_dtype(P.dtype))
    out = CosineOut(counts, counts, out_idx, out_val)
    loops.cosine_rows(CosineMode.TOPK, operands, rule, out, n_threads)
    return _csr_from_slots(loops, counts, kk, out_idx, out_val, slots, P.dtype, n_threads)


def cosine_topk(
    loops: CosineLoops,
    indptr,
    indices,
    data,
    n_cols,
    k,
    shrink,
    min_similarity,
    min_support,
    include_self,
    n_threads,
    rows=None,
):
    """Each row's k most cosine-similar rows of X (n x n_cols CSR) as CSR arrays.

    Same rules as ``reference.cosine_topk``: candidates have co-count c >= min_support,
    sim >= min_similarity, sim != 0, j != i unless include_self; sim shrunk by c/(c+shrink);
    rows sorted by sim descending (ranked in data's dtype), ties by smaller j.
    Returns (indptr int64, indices int64, values of data's dtype).
    Time O(W + sum_i min(n, w_i) + n k log k) with w_i the multiply-adds of row i and
    W = sum over columns of (column nnz)^2. Memory O(nnz + n*k + threads*n); with ``rows``
    (None, or the row ids to compute: output row r is row rows[r]) O(nnz + len(rows)*k +
    threads*n). :func:`cosine_topk_prepare` + :func:`cosine_topk_rows`, in one call.
    """
    n = indptr.shape[0] - 1
    if n == 0 or min(int(k), n) == 0:
        return empty_csr(n if rows is None else len(rows), data.dtype)
    prepared = cosine_topk_prepare(loops, indptr, indices, data, n_cols, n_threads)
    return cosine_topk_rows(
        loops, prepared, k, shrink, min_similarity, min_support, include_self, n_threads, rows
    )


def cosine_similarity_prepare(
    loops: CosineLoops, indptr, indices, data, y_indptr, y_indices, y_data, n_cols, n_threads
):
    """The part of cosine_similarity that does not depend on which rows of X are computed.

    Whether the product is binary (every row of X and of Y holds one constant value: decided
    over all of X, so that any block of X's rows is computed exactly as in the whole call),
    and Y's side: row scales and the transposed Y (float64 normalised values unless binary).
    Returns a :class:`PreparedCosineSimilarity` for :func:`cosine_similarity_rows`.
    Time O(nnz(X) + nnz(Y)); memory O(nnz(Y) + p + n_cols).
    """
    dtype = np.result_type(data.dtype, y_data.dtype)
    indptr = loops.as_indptr(indptr)
    y_indptr = loops.as_indptr(y_indptr)
    const_x = loops.row_scales(indptr, data)[3]
    _, scale_y, const_y, (tp, tx, tw) = _prepare_side(
        loops, y_indptr, y_indices, y_data, n_cols, not const_x
    )
    binary = const_x and const_y
    if not binary and tw.shape[0] != y_data.shape[0]:  # Y constant, X not: weigh Y too
        _, scale_y, _, (tp, tx, tw) = _prepare_side(
            loops, y_indptr, y_indices, y_data, n_cols, True
        )
    return PreparedCosineSimilarity(int(n_cols), dtype, bool(binary), scale_y, tp, tx, tw)


def cosine_similarity_rows(
    loops: CosineLoops, prepared, indptr, indices, data, min_similarity, n_threads
):
    """cosine_similarity of some rows of X (given as a CSR: X itself, or a block of its rows)
    with the prepared Y (:func:`cosine_similarity_prepare` of X and Y).

    Each output row is bit for bit that row of the whole call. Returns (indptr int64, indices
    int64, values of the result dtype). Time O(2 (W_rows + sum_i min(p, w_i))); memory
    O(nnz(rows) + nnz(result) + threads*p) beyond the preparation.
    """
    P = PreparedCosineSimilarity(*prepared)
    n, p = indptr.shape[0] - 1, P.y_scale.shape[0]
    if n == 0 or p == 0:
        return empty_csr(n, P.dtype)
    indptr = loops.as_indptr(indptr)
    inv_x, exp_x, scale_x, _ = loops.row_scales(indptr, data)
    xw = np.zeros(0) if P.binary else _row_weights(indptr, data, (inv_x, exp_x))
    ix = loops.as_indices(indices)
    work = loops.row_work(indptr, ix, P.t_indptr, n_threads)
    order = np.argsort(-work, kind="stable")
    operands = CosinePass(
        indptr,
        ix,
        xw,
        P.t_indptr,
        P.t_indices,
        P.t_data,
        scale_x,
        P.y_scale,
        p,
        P.binary,
        False,
        order,
        work,
    )
    rule = CosineRule(0, 0.0, float(min_similarity), 1, True, False)
    slot_dtype = loops.slot_dtype(P.dtype)
    counts = np.zeros(n, np.int64)
    no_out = CosineOut(counts, counts, np.zeros(0, np.int64), np.zeros(0, slot_dtype))
    loops.cosine_rows(CosineMode.COUNT, operands, rule, no_out, n_threads)
    out_indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=out_indptr[1:])
    nnz = int(out_indptr[-1])
    out = CosineOut(counts, out_indptr, np.empty(nnz, np.int64), np.empty(nnz, slot_dtype))
    loops.cosine_rows(CosineMode.FILL, operands, rule, out, n_threads)
    return out_indptr, out.idx, out.val.astype(P.dtype, copy=False)


def cosine_similarity(
    loops: CosineLoops,
    indptr,
    indices,
    data,
    y_indptr,
    y_indices,
    y_data,
    n_cols,
    min_similarity,
    n_threads,
):
    """The sparse cosine similarity of the rows of X (n x n_cols) with those of Y (p x n_cols).

    Same rules as ``reference.cosine_similarity``: entry (i, j) stored when sim != 0 and
    sim >= min_similarity, columns ascending. Two passes over the product (count, then fill)
    so that the output is allocated once at its exact size.
    Returns (indptr int64, indices int64, values: float32 only if both inputs are float32).
    Time O(2 (W + sum_i min(p, w_i))). Memory O(nnz(X) + nnz(Y) + nnz(result) + threads*p).
    :func:`cosine_similarity_prepare` + :func:`cosine_similarity_rows`, in one call.
    """
    n, p = indptr.shape[0] - 1, y_indptr.shape[0] - 1
    if n == 0 or p == 0:
        return empty_csr(n, np.result_type(data.dtype, y_data.dtype))
    prepared = cosine_similarity_prepare(
        loops, indptr, indices, data, y_indptr, y_indices, y_data, n_cols, n_threads
    )
    return cosine_similarity_rows(loops, prepared, indptr, indices, data, min_similarity, n_threads)


# ---- ranking: topk, recommend -------------------------------------------------------------------


class TopkCall(NamedTuple):
    """One topk call's arrays as the loops take them."""

    scores: np.ndarray  # C-contiguous (n_rows, n_cols)
    k: int
    ex_indptr: np.ndarray
    ex_indices: np.ndarray
    has_mask: bool
    out_idx: np.ndarray  # (n_rows, k) int64
    out_val: np.ndarray  # (n_rows, k) of the scores' dtype


class RecommendCall(NamedTuple):
    """One recommend call's arrays as the loops take them (one index type throughout)."""

    a_indptr: np.ndarray
    a_indices: np.ndarray
    a_data: np.ndarray
    b_indptr: np.ndarray
    b_indices: np.ndarray
    b_data: np.ndarray
    n_items: int
    rows: np.ndarray
    n: int
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    has_seen: bool
    ex_indptr: np.ndarray
    ex_indices: np.ndarray
    has_ex: bool
    out_idx: np.ndarray
    out_val: np.ndarray


class RankingLoops(NamedTuple):
    """A backend's compiled ranking loops."""

    topk_index_type: Callable  # (scores, k, index type of the mask) -> index type to use
    topk: Callable  # (TopkCall, n_threads): fills out_idx/out_val
    recommend: Callable  # (RecommendCall, n_threads): fills out_idx/out_val
    pad_empty: bool  # give empty index/value arrays one dummy slot (Cython memoryviews)


def topk(loops: RankingLoops, scores, k, exclude_indptr, exclude_indices, n_threads):
    """Row-wise top-k of a dense (n_rows, n_cols) float32/float64 array.

    Column c of row r is a candidate unless (r, c) is stored in the exclude mask (CSR pattern
    with sorted indices per row; ``exclude_indptr`` None for none) or the score is NaN or -inf;
    +inf is a score. Returns (indices int64, scores of the input dtype), both (n_rows, k),
    sorted descending, ties by smaller column, -1/-inf padding. ``scores`` is only read (a
    non-C-contiguous array is copied once). Time O(n_rows * n_cols) reads plus expected O(1)
    per entry above the running threshold (about k (1 + ln(n_cols / k)) per random row; about
    k + k / 8 where a row of at least 2k 64-column blocks, k >= 16, starts from the k-th largest
    of its blocks' maxima and scans again only those k blocks, from cache); memory O(n_rows * k)
    output plus O(k + n_cols / 64) per thread.
    """
    scores = np.ascontiguousarray(scores)
    n_rows = scores.shape[0]
    out_idx = np.empty((n_rows, k), dtype=np.int64)
    out_val = np.empty((n_rows, k), dtype=scores.dtype)
    itype = loops.topk_index_type(scores, k, index_type(exclude_indptr, exclude_indices))
    ex_indptr, ex_indices, has_mask = mask_arrays(
        exclude_indptr, exclude_indices, itype, loops.pad_empty
    )
    call = TopkCall(scores, k, ex_indptr, ex_indices, has_mask, out_idx, out_val)
    loops.topk(call, n_threads)
    return out_idx, out_val


def recommend(
    loops: RankingLoops,
    a_indptr,
    a_indices,
    a_data,
    b_indptr,
    b_indices,
    b_data,
    n_items,
    rows,
    n,
    seen_indptr,
    seen_indices,
    ex_indptr,
    ex_indices,
    n_threads,
):
    """Top-n items for each row r in ``rows`` of the sparse product A @ B, never built whole.

    A is (n_rows, n_mid) CSR and B (n_mid, n_items) CSR (item-kNN: A = user_items,
    B = item_neighbours; user-kNN: A = user_neighbours, B = user_items). Item j is a candidate
    for row r when some stored A[r, i] meets a stored B[i, j], (r, j) is stored in neither mask
    (``seen_*``, ``ex_*``: CSR patterns indexed by r with sorted indices, None for none), and
    the score is not NaN or -inf. Scores are summed in float64 in A's then B's stored order and
    ranked as returned (rounded to the output dtype). Returns (indices int64, scores), both
    (len(rows), n), sorted descending, ties by smaller item, -1/-inf padding; scores float32
    only when A and B both are. Time O(sum over rows of the A-row x B-rows products
    + touched * log n); memory O(threads * n_items) of accumulators plus the O(len(rows) * n)
    output.
    """
    dtype = np.result_type(a_data.dtype, b_data.dtype)
    itype = index_type(
        a_indptr, a_indices, b_indptr, b_indices, seen_indptr, seen_indices, ex_indptr, ex_indices
    )
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    n_rows = rows.shape[0]
    out_idx = np.empty((n_rows, n), dtype=np.int64)
    out_val = np.empty((n_rows, n), dtype=dtype)
    if n_rows == 0:
        return out_idx, out_val
    pad = loops.pad_empty

    def ix(a):
        return np.ascontiguousarray(a, dtype=itype)

    def values(a):
        return padded(np.ascontiguousarray(a, dtype=dtype), pad)

    call = RecommendCall(
        ix(a_indptr), padded(ix(a_indices), pad), values(a_data),
        ix(b_indptr), padded(ix(b_indices), pad), values(b_data),
        int(n_items), rows, n,
        *mask_arrays(seen_indptr, seen_indices, itype, pad),
        *mask_arrays(ex_indptr, ex_indices, itype, pad),
        out_idx, out_val,
    )  # fmt: skip
    loops.recommend(call, n_threads)
    return out_idx, out_val
