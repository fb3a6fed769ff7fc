"""Public API of the similarity kernels: cosine neighbourhood top-k and sparse cosine similarity.

Validates inputs (``_validation``), applies the optional TF-IDF/BM25 weighting, dispatches to a
backend (``_dispatch``) and wraps the raw CSR arrays back into scipy objects.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._dispatch import get_kernel
from ._validation import (
    CSR,
    check_choice,
    check_csr,
    check_ids,
    check_k,
    check_memory,
    check_n_threads,
    check_scalar,
    make_csr,
)

WEIGHTINGS = (None, "tfidf", "bm25")


def weight_rows(X: CSR, weighting, *, bm25_k1: float = 100.0, bm25_b: float = 0.8) -> CSR:
    """TF-IDF or BM25 weighting of the rows of X, as in ``implicit.nearest_neighbours``.

    Rows are the documents (the vectors compared) and columns the terms: with N rows and
    df_c the number of rows storing column c, idf_c = log(N) - log(1 + df_c).
    TF-IDF: x' = sqrt(x) * idf_c. BM25: x' = x (K1 + 1) / (K1 * L_r + x) * idf_c with the
    length norm L_r = (1 - B) + B * rowsum_r / mean(rowsum). Values must be non-negative.
    Entries weighted to exactly zero are dropped.
    """
    if weighting is None:
        return X
    if X.nnz and X.data.min() < 0:
        raise ValueError(f"weighting={weighting!r} needs non-negative values in X")
    n_rows = X.shape[0]
    data = X.data.astype(np.float64)
    df = np.bincount(X.indices, minlength=X.shape[1])
    idf = np.log(max(n_rows, 1)) - np.log1p(df)
    if weighting == "tfidf":
        data = np.sqrt(data) * idf[X.indices]
    else:
        rows = np.repeat(np.arange(n_rows), np.diff(X.indptr))
        # bincount, not reduceat: reduceat fails on trailing empty rows (offset == nnz).
        row_sums = np.bincount(rows, weights=data, minlength=n_rows)
        mean_len = row_sums.mean() if n_rows else 1.0
        length_norm = (1.0 - bm25_b) + bm25_b * row_sums / (mean_len if mean_len > 0 else 1.0)
        data = data * (bm25_k1 + 1.0) / (bm25_k1 * length_norm[rows] + data) * idf[X.indices]
    weighted = sp.csr_matrix((data.astype(X.dtype), X.indices, X.indptr), shape=X.shape)
    return check_csr(weighted, "X", drop_zeros=True)


def cosine_topk_memory(n_rows: int, n_cols: int, nnz: int, k: int, n_threads: int) -> int:
    """Bytes the compiled cosine_topk kernels may hold at their peak, beyond the input.

    O(nnz + n*k + threads*n): the transposed input with float64 normalised values on both
    sides (8 + 8 + 8 bytes per stored value, the weighted case), per-row scales, work and order
    (5 x 8 bytes per row), per-thread accumulators, touched list and heap ((4 + 8 + 8) bytes
    per row plus 16 per kept entry), the n*k best-k slots (16 bytes each) and the CSR result
    (16 bytes per entry). Never the n x n product.
    """
    kk = min(k, n_rows)
    return int(
        24 * nnz + 8 * (n_cols + 1) + 40 * n_rows
        + n_threads * (20 * n_rows + 16 * kk)
        + 32 * n_rows * kk
    )


def cosine_similarity_memory(n_rows: int, n_other: int, n_cols: int, nnz: int, n_threads: int):
    """Bytes the compiled cosine_similarity kernels hold before they size the result: the
    transposed Y and float64 normalised values (24 per stored value of X and Y), per-row
    arrays and per-thread accumulators over Y's rows. The result (16 bytes per stored entry,
    known only after the counting pass) comes on top and is allocated by NumPy, which raises
    MemoryError with its size when it cannot."""
    return int(24 * nnz + 8 * (n_cols + 1) + 40 * (n_rows + n_other) + n_threads * 20 * n_other)


def _check_weighting(weighting, bm25_k1, bm25_b):
    check_choice(weighting, "weighting", WEIGHTINGS)
    check_scalar(bm25_k1, "bm25_k1", min_value=0)
    check_scalar(bm25_b, "bm25_b", min_value=0, max_value=1)


def cosine_topk(
    X,
    k,
    *,
    rows=None,
    shrink=0.0,
    min_similarity=0.0,
    min_support=1,
    include_self=False,
    weighting=None,
    bm25_k1=100.0,
    bm25_b=0.8,
    backend="auto",
    n_threads=None,
):
    """Each row's k most cosine-similar rows of sparse X (n x m), as an n x n CSR.

    sim(i, j) = <x_i, x_j> / (|x_i| |x_j|) * c / (c + shrink) with c the co-count (columns
    stored in both rows). Row j is kept for row i when c >= ``min_support``,
    sim >= ``min_similarity`` and sim != 0, and j != i unless ``include_self``. Each output row
    holds at most k entries **in order of similarity, descending, ties by smaller column**
    (so its indices are not column-sorted); rows with no co-occurring neighbour are empty.
    ``weighting`` ("tfidf", "bm25") reweights X first (see :func:`weight_rows`).
    ``rows`` (row ids, any order): compute only these rows' neighbours, a len(rows) x n CSR
    whose row r is bit for bit row rows[r] of the all-rows result (every row is still a
    candidate); this is how ``fastrec.dask`` splits the work into row blocks.
    The dense n x n product is never formed; compiled backends use
    O(nnz(X) + n*k + threads*n) memory. Result: CSR of X's family and dtype.
    """
    A = check_csr(X, "X", drop_zeros=True)
    k = check_k(k)
    shrink = check_scalar(shrink, "shrink", min_value=0)
    min_similarity = check_scalar(min_similarity, "min_similarity")
    min_support = check_scalar(min_support, "min_support", min_value=1, integer=True)
    include_self = bool(include_self)
    _check_weighting(weighting, bm25_k1, bm25_b)
    n_threads = check_n_threads(n_threads)
    kernel = get_kernel("cosine_topk", backend)
    check_memory(cosine_topk_memory(A.shape[0], A.shape[1], A.nnz, k, n_threads), "cosine_topk")
    row_ids = None if rows is None else check_ids(rows, "rows", A.shape[0])
    n_out = A.shape[0] if rows is None else len(row_ids)
    # Weighting uses every row (document frequencies), also when only some rows are computed.
    A = weight_rows(A, weighting, bm25_k1=bm25_k1, bm25_b=bm25_b)
    indptr, indices, data = kernel(
        A.indptr, A.indices, A.data, A.shape[1], k, shrink, min_similarity, min_support,
        include_self, n_threads, row_ids,
    )
    return make_csr(indptr, indices, data, (n_out, A.shape[0]), A.sparse_array)


def cosine_similarity(X, Y=None, *, min_similarity=0.0, backend="auto", n_threads=None):
    """Sparse cosine similarity of the rows of X (n x m) with the rows of Y (p x m; X if None).

    Entry (i, j) is stored when sim >= ``min_similarity`` and sim != 0; columns ascending.
    Memory is O(nnz(X) + nnz(Y) + nnz(result)): the result itself can be up to n x p, so use
    ``min_similarity`` or :func:`cosine_topk` on large inputs. Result: CSR, float32 only when
    both inputs are float32; a sparse array only when the inputs are sparse arrays.
    """
    A = check_csr(X, "X", drop_zeros=True)
    B = A if Y is None else check_csr(Y, "Y", drop_zeros=True)
    if B.shape[1] != A.shape[1]:
        raise ValueError(
            f"X and Y must have the same number of columns, got {A.shape[1]} and {B.shape[1]}"
        )
    min_similarity = check_scalar(min_similarity, "min_similarity")
    n_threads = check_n_threads(n_threads)
    kernel = get_kernel("cosine_similarity", backend)
    check_memory(
        cosine_similarity_memory(A.shape[0], B.shape[0], A.shape[1], A.nnz + B.nnz, n_threads),
        "cosine_similarity",
    )
    indptr, indices, data = kernel(
        A.indptr, A.indices, A.data, B.indptr, B.indices, B.data, A.shape[1], min_similarity,
        n_threads,
    )
    family = A.sparse_array and B.sparse_array
    return make_csr(indptr, indices, data, (A.shape[0], B.shape[0]), family)
