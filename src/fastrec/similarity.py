"""Public API of the similarity kernels: cosine neighbourhood top-k and sparse cosine similarity.

Validates inputs (``_validation``), applies the optional TF-IDF/BM25 weighting, dispatches to a
backend (``_dispatch``) and wraps the raw CSR arrays back into scipy objects.
"""

from __future__ import annotations

import numpy as np

from ._dispatch import AUTO_ORDER, BackendUnavailableError, get_kernel
from ._validation import (
    CSR,
    check_choice,
    check_csr,
    check_ids,
    check_k,
    check_memory,
    check_n_threads,
    check_placement,
    check_scalar,
    is_device_sparse,
    make_csr,
)
from ._validation_device import (
    DEVICE_SCRATCH_BYTES,
    DeviceCSR,
    check_device_csr,
    check_device_memory,
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
    import scipy.sparse as sp

    weighted = sp.csr_matrix((data.astype(X.dtype), X.indices, X.indptr), shape=X.shape)
    return check_csr(weighted, "X", drop_zeros=True)


def cosine_topk_memory(
    n_rows: int, n_cols: int, nnz: int, k: int, n_threads: int, n_out: int | None = None
) -> int:
    """Bytes the compiled cosine_topk kernels may hold at their peak, beyond the input.

    O(nnz + n_out*k + threads*n), n_out the rows computed (None: all n): the preparation
    (:func:`cosine_topk_prepare_memory`), per-thread accumulators, touched list and heap
    ((4 + 8 + 8) bytes per row plus 16 per kept entry), the n_out*k best-k slots (16 bytes
    each) and the CSR result (16 bytes per entry). Never the n x n product.
    """
    return cosine_topk_prepare_memory(n_rows, n_cols, nnz) + _cosine_rows_memory(
        n_rows, k, n_threads, n_rows if n_out is None else n_out
    )


def cosine_topk_prepare_memory(n_rows: int, n_cols: int, nnz: int) -> int:
    """Bytes of a :class:`PreparedCosine` beyond the input: the transposed input with float64
    normalised values on both sides (8 + 8 + 8 bytes per stored value, the weighted case) and
    per-row scales, work and order (5 x 8 bytes per row)."""
    return int(24 * nnz + 8 * (n_cols + 1) + 40 * n_rows)


def _cosine_rows_memory(n_rows: int, k: int, n_threads: int, n_out: int) -> int:
    kk = min(k, n_rows)
    return int(n_threads * (20 * n_rows + 16 * kk) + 32 * n_out * kk)


def cosine_similarity_memory(n_rows: int, n_other: int, n_cols: int, nnz: int, n_threads: int):
    """Bytes the compiled cosine_similarity kernels hold before they size the result: the
    transposed Y and float64 normalised values (24 per stored value of X and Y), per-row
    arrays and per-thread accumulators over Y's rows. The result (16 bytes per stored entry,
    known only after the counting pass) comes on top and is allocated by NumPy, which raises
    MemoryError with its size when it cannot."""
    return int(24 * nnz + 8 * (n_cols + 1) + 40 * (n_rows + n_other) + n_threads * 20 * n_other)


def cosine_topk_device_memory(n_rows: int, n_cols: int, nnz: int, k: int, itemsize: int):
    """Bytes of device memory the CUDA cosine_topk holds at its peak, beyond the input: the
    transpose (4 + itemsize per stored value, 24 per column), per-row inverse norms, work,
    order and counts (32 per row), the padded (n, k) best-k slots (4 + itemsize each), the CSR
    result (8 + itemsize per entry, at most n*k) and the per-block accumulators (at most
    max(1 GiB, one block's 12 + itemsize bytes per row)). O(nnz + n*k); never n x n."""
    kk = min(k, n_rows)
    scratch = max(DEVICE_SCRATCH_BYTES, n_rows * (12 + itemsize))
    return int(
        nnz * (4 + itemsize)
        + 24 * (n_cols + 1)
        + 32 * n_rows
        + n_rows * k * (4 + itemsize)
        + n_rows * kk * (8 + itemsize)
        + scratch
    )


def cosine_similarity_device_memory(
    n_rows: int, n_other: int, n_cols: int, nnz_y: int, itemsize: int
):
    """Bytes of device memory the CUDA cosine_similarity holds before it sizes the result:
    Y's transpose (4 + itemsize per stored value, 24 per column), inverse norms and counts
    (8 per row of X and Y, 16 per row of X) and the per-block accumulators (at most
    max(1 GiB, one block's 8 + itemsize bytes per row of Y)). The result (8 + itemsize bytes
    per stored entry, counted on the device first) comes on top."""
    scratch = max(DEVICE_SCRATCH_BYTES, n_other * (8 + itemsize))
    return int(nnz_y * (4 + itemsize) + 24 * (n_cols + 1) + 24 * n_rows + 8 * n_other + scratch)


def _check_weighting(weighting, bm25_k1, bm25_b):
    check_choice(weighting, "weighting", WEIGHTINGS)
    check_scalar(bm25_k1, "bm25_k1", min_value=0)
    check_scalar(bm25_b, "bm25_b", min_value=0, max_value=1)


class PreparedCosine:
    """A matrix made ready once for many :func:`cosine_topk` calls over blocks of its rows.

    Made by :func:`prepare_cosine_topk`: X validated, weighted, its rows normalised and the
    matrix transposed, for one backend (``backend``). ``cosine_topk(prepared, k, rows=block)``
    then costs only the block's own work: this is what ``fastrec.dask`` sends to its workers
    instead of X. Picklable (plain arrays); ``nbytes`` is what it holds. ``shape``, ``dtype``
    and ``sparse_array`` are X's.
    """

    __slots__ = ("backend", "dtype", "shape", "sparse_array", "state")

    def __init__(self, backend, shape, dtype, sparse_array, state):
        self.backend = backend
        self.shape = shape
        self.dtype = dtype
        self.sparse_array = sparse_array
        self.state = state

    @property
    def nbytes(self) -> int:
        def size(obj):
            if isinstance(obj, np.ndarray):
                return obj.nbytes
            return sum(size(o) for o in obj) if isinstance(obj, tuple) else 0

        return size(self.state)

    def __getstate__(self):
        return (self.backend, self.shape, self.dtype, self.sparse_array, self.state)

    def __setstate__(self, state):
        self.backend, self.shape, self.dtype, self.sparse_array, self.state = state

    def __repr__(self):
        return (
            f"PreparedCosine(shape={self.shape}, dtype={self.dtype}, "
            f"backend={self.backend!r}, nbytes={self.nbytes})"
        )


def _prepare_backend(backend) -> str:
    """The backend name a preparation is made for ("auto": the first in cosine_topk's
    preference that is available and prepares)."""
    if backend != "auto":
        get_kernel("cosine_topk_prepare", backend)  # raises, saying why, if it cannot
        return backend
    for name in AUTO_ORDER["cosine_topk"]:
        try:
            get_kernel("cosine_topk_prepare", name)
        except BackendUnavailableError:
            continue
        return name
    # numpy always prepares: not reached.
    raise BackendUnavailableError("no backend available for cosine_topk_prepare")


def _prepare(A: CSR, weighting, bm25_k1, bm25_b, backend, n_threads) -> PreparedCosine:
    """prepare_cosine_topk of a validated CSR (arguments already checked)."""
    name = _prepare_backend(backend)
    check_memory(cosine_topk_prepare_memory(A.shape[0], A.shape[1], A.nnz), "prepare_cosine_topk")
    A = weight_rows(A, weighting, bm25_k1=bm25_k1, bm25_b=bm25_b)
    state = get_kernel("cosine_topk_prepare", name)(
        A.indptr, A.indices, A.data, A.shape[1], n_threads
    )
    return PreparedCosine(name, A.shape, A.dtype, A.sparse_array, state)


def prepare_cosine_topk(
    X, *, weighting=None, bm25_k1=100.0, bm25_b=0.8, backend="auto", n_threads=None
) -> PreparedCosine:
    """X made ready once for many :func:`cosine_topk` calls over blocks of its rows.

    Validates X, applies ``weighting`` (see :func:`weight_rows`), normalises the rows and
    transposes the matrix for ``backend`` ("auto": the cosine_topk preference; "cuda" does
    not prepare): the O(nnz) set-up that ``cosine_topk(X, k, rows=...)`` would otherwise redo
    in every call. ``cosine_topk(prepared, k, rows=block, ...)`` is then bit for bit
    ``cosine_topk(X, k, rows=block, weighting=..., backend=...)``. Time O(nnz + n_cols);
    memory (``nbytes``) 8 to 16 bytes per stored value for binary X, 24 to 32 otherwise,
    plus O(n + n_cols). Copies X (beyond the prepared arrays, which are new by nature) when it
    is not canonical CSR without stored zeros or not float32/float64.
    """
    A = check_csr(X, "X", drop_zeros=True)
    _check_weighting(weighting, bm25_k1, bm25_b)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    n_threads = check_n_threads(n_threads)
    return _prepare(A, weighting, bm25_k1, bm25_b, backend, n_threads)


def _check_prepared(P: PreparedCosine, weighting, backend):
    if weighting is not None:
        raise ValueError(
            "X is a PreparedCosine: its weighting was applied by prepare_cosine_topk, so "
            f"weighting= must be None here, got {weighting!r}"
        )
    if backend not in ("auto", P.backend):
        raise ValueError(
            f"X was prepared for backend {P.backend!r}, got backend={backend!r}: prepare it "
            "again for that backend"
        )


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
    candidate); this is how ``fastrec.dask`` splits the work into row blocks. ``X`` may be a
    :class:`PreparedCosine` (:func:`prepare_cosine_topk`): the set-up is then not repeated
    (``weighting`` and ``backend`` were fixed when preparing).
    The dense n x n product is never formed; compiled backends use
    O(nnz(X) + len(rows)*k + threads*n) memory. Result: CSR of X's family and dtype.

    Device CSR: ``X`` may live on the GPU (a ``cupyx.scipy.sparse.csr_matrix``, a PyTorch sparse
    CSR tensor, or any object with device ``indptr``/``indices``/``data`` and ``shape``; see
    :func:`fastrec._validation_device.check_device_csr` for what is checked, on the device).
    Then ``backend="auto"`` runs "cuda", a CPU backend is a TypeError, X is read in place (no
    copy to the host) and the result is a :class:`DeviceCSR` of device arrays (indices int64,
    rows in the order above). ``rows`` and ``weighting`` are host-only (ValueError). Device
    memory: :func:`cosine_topk_device_memory`, checked against the GPU's free memory first.
    """
    if isinstance(X, PreparedCosine):
        _check_prepared(X, weighting, backend)
        return _cosine_topk_prepared(
            X, k, rows, shrink, min_similarity, min_support, include_self, n_threads
        )
    on_device, backend = check_placement(backend, X=X)
    if on_device:
        return _cosine_topk_device(
            X,
            k,
            rows,
            shrink,
            min_similarity,
            min_support,
            include_self,
            weighting,
            backend,
            n_threads,
        )
    A = check_csr(X, "X", drop_zeros=True)
    k = check_k(k)
    shrink = check_scalar(shrink, "shrink", min_value=0)
    min_similarity = check_scalar(min_similarity, "min_similarity")
    min_support = check_scalar(min_support, "min_support", min_value=1, integer=True)
    include_self = bool(include_self)
    _check_weighting(weighting, bm25_k1, bm25_b)
    n_threads = check_n_threads(n_threads)
    kernel = get_kernel("cosine_topk", backend)
    row_ids = None if rows is None else check_ids(rows, "rows", A.shape[0])
    n_out = A.shape[0] if rows is None else len(row_ids)
    check_memory(
        cosine_topk_memory(A.shape[0], A.shape[1], A.nnz, k, n_threads, n_out), "cosine_topk"
    )
    # Weighting uses every row (document frequencies), also when only some rows are computed.
    A = weight_rows(A, weighting, bm25_k1=bm25_k1, bm25_b=bm25_b)
    indptr, indices, data = kernel(
        A.indptr,
        A.indices,
        A.data,
        A.shape[1],
        k,
        shrink,
        min_similarity,
        min_support,
        include_self,
        n_threads,
        row_ids,
    )
    return make_csr(indptr, indices, data, (n_out, A.shape[0]), A.sparse_array)


def _cosine_topk_device(
    X, k, rows, shrink, min_similarity, min_support, include_self, weighting, backend, n_threads
) -> DeviceCSR:
    """cosine_topk of a device CSR: the same checks, the CUDA kernel, a DeviceCSR result."""
    if rows is not None:
        raise ValueError(
            "rows= needs a host X (it is how fastrec.dask splits host work); "
            "with a device X every row is computed"
        )
    if weighting is not None:
        raise ValueError(
            f"weighting={weighting!r} is computed on the host; with a device X "
            "pass weighting=None (weight the values on the device first)"
        )
    k = check_k(k)
    shrink = check_scalar(shrink, "shrink", min_value=0)
    min_similarity = check_scalar(min_similarity, "min_similarity")
    min_support = check_scalar(min_support, "min_support", min_value=1, integer=True)
    n_threads = check_n_threads(n_threads)
    kernel = get_kernel("cosine_topk", backend)
    A = check_device_csr(X, "X")
    n = A.shape[0]
    check_device_memory(
        cosine_topk_device_memory(n, A.shape[1], A.nnz, k, A.dtype.itemsize), "cosine_topk"
    )
    indptr, indices, data = kernel(
        A.indptr,
        A.indices,
        A.data,
        A.shape[1],
        k,
        shrink,
        min_similarity,
        min_support,
        bool(include_self),
        n_threads,
    )
    return DeviceCSR(indptr, indices, data, (n, n))


def _cosine_topk_prepared(
    P: PreparedCosine, k, rows, shrink, min_similarity, min_support, include_self, n_threads
):
    """cosine_topk of a PreparedCosine: the same checks, then only the rows' own work."""
    k = check_k(k)
    shrink = check_scalar(shrink, "shrink", min_value=0)
    min_similarity = check_scalar(min_similarity, "min_similarity")
    min_support = check_scalar(min_support, "min_support", min_value=1, integer=True)
    include_self = bool(include_self)
    n_threads = check_n_threads(n_threads)
    kernel = get_kernel("cosine_topk_rows", P.backend)
    n = P.shape[0]
    row_ids = None if rows is None else check_ids(rows, "rows", n)
    n_out = n if row_ids is None else len(row_ids)
    check_memory(_cosine_rows_memory(n, k, n_threads, n_out), "cosine_topk")
    indptr, indices, data = kernel(
        P.state,
        k,
        shrink,
        min_similarity,
        min_support,
        include_self,
        n_threads,
        row_ids,
    )
    return make_csr(indptr, indices, data, (n_out, n), P.sparse_array)


def cosine_similarity(X, Y=None, *, min_similarity=0.0, backend="auto", n_threads=None):
    """Sparse cosine similarity of the rows of X (n x m) with the rows of Y (p x m; X if None).

    Entry (i, j) is stored when sim >= ``min_similarity`` and sim != 0; columns ascending.
    Memory is O(nnz(X) + nnz(Y) + nnz(result)): the result itself can be up to n x p, so use
    ``min_similarity`` or :func:`cosine_topk` on large inputs. Result: CSR, float32 only when
    both inputs are float32; a sparse array only when the inputs are sparse arrays. Copies X
    or Y when it is not canonical CSR without stored zeros (the row merges need sorted,
    unique, non-zero entries) or not float32/float64; otherwise the caller's arrays are read.

    Device CSR: X (and Y) may live on the GPU, as in :func:`cosine_topk` (Y then must too);
    ``backend="auto"`` runs "cuda", nothing is copied to the host and the result is a
    :class:`DeviceCSR` (indices int64, columns ascending). Device memory:
    :func:`cosine_similarity_device_memory` plus the result.
    """
    on_device, backend = check_placement(backend, X=X, Y=Y)
    if on_device:
        return _cosine_similarity_device(X, Y, min_similarity, backend, n_threads)
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
        A.indptr,
        A.indices,
        A.data,
        B.indptr,
        B.indices,
        B.data,
        A.shape[1],
        min_similarity,
        n_threads,
    )
    family = A.sparse_array and B.sparse_array
    return make_csr(indptr, indices, data, (A.shape[0], B.shape[0]), family)


def _cosine_similarity_device(X, Y, min_similarity, backend, n_threads) -> DeviceCSR:
    """cosine_similarity of device CSR inputs: the same checks, a DeviceCSR result."""
    min_similarity = check_scalar(min_similarity, "min_similarity")
    n_threads = check_n_threads(n_threads)
    kernel = get_kernel("cosine_similarity", backend)
    for name, M in (("X", X), ("Y", Y)):
        if M is not None and not is_device_sparse(M):
            raise TypeError(
                f"{name} must be a device CSR too when the other input is one, got "
                f"{type(M).__name__} (copy it to the device first)"
            )
    A = check_device_csr(X, "X")
    B = A if Y is None else check_device_csr(Y, "Y")
    if B.shape[1] != A.shape[1]:
        raise ValueError(
            f"X and Y must have the same number of columns, got {A.shape[1]} and {B.shape[1]}"
        )
    itemsize = np.result_type(A.dtype, B.dtype).itemsize
    check_device_memory(
        cosine_similarity_device_memory(A.shape[0], B.shape[0], A.shape[1], B.nnz, itemsize),
        "cosine_similarity",
    )
    indptr, indices, data = kernel(
        A.indptr,
        A.indices,
        A.data,
        B.indptr,
        B.indices,
        B.data,
        A.shape[1],
        min_similarity,
        n_threads,
    )
    return DeviceCSR(indptr, indices, data, (A.shape[0], B.shape[0]))


class _PreparedSimilarity:
    """X and Y validated, Y prepared once (for ``backend``): cosine_similarity over blocks
    of X's rows, each bit for bit those rows of the whole call (``fastrec.dask`` ships one
    to its workers). Picklable."""

    __slots__ = ("X", "backend", "family", "n_other", "state")

    def __init__(self, backend, X, n_other, family, state):
        self.backend, self.X, self.n_other, self.family, self.state = (
            backend,
            X,
            n_other,
            family,
            state,
        )

    def __getstate__(self):
        return (self.backend, self.X, self.n_other, self.family, self.state)

    def __setstate__(self, state):
        self.backend, self.X, self.n_other, self.family, self.state = state


def _prepare_similarity(A: CSR, B: CSR | None, backend, n_threads) -> _PreparedSimilarity:
    """Validated X (and Y: None for X) -> the preparation of :func:`cosine_similarity`; the
    decision of a binary product is taken over the whole of X, as in the whole call."""
    B = A if B is None else B
    if B.shape[1] != A.shape[1]:
        raise ValueError(
            f"X and Y must have the same number of columns, got {A.shape[1]} and {B.shape[1]}"
        )
    name = backend
    if backend == "auto":
        for name in AUTO_ORDER["cosine_similarity"]:
            try:
                get_kernel("cosine_similarity_prepare", name)
            except BackendUnavailableError:
                continue
            break
    prepare = get_kernel("cosine_similarity_prepare", name)
    check_memory(
        cosine_similarity_memory(0, B.shape[0], A.shape[1], B.nnz, n_threads), "cosine_similarity"
    )
    state = prepare(A.indptr, A.indices, A.data, B.indptr, B.indices, B.data, A.shape[1], n_threads)
    return _PreparedSimilarity(name, A, B.shape[0], A.sparse_array and B.sparse_array, state)


def _cosine_similarity_block(P: _PreparedSimilarity, r0, r1, min_similarity, n_threads):
    """Rows [r0, r1) of cosine_similarity(X, Y) from the preparation (arguments checked)."""
    X = P.X
    lo, hi = int(X.indptr[r0]), int(X.indptr[r1])
    indptr = np.asarray(X.indptr[r0 : r1 + 1], dtype=np.int64) - lo
    check_memory(
        cosine_similarity_memory(r1 - r0, P.n_other, X.shape[1], hi - lo, n_threads),
        "cosine_similarity",
    )
    out_indptr, out_indices, out_data = get_kernel("cosine_similarity_rows", P.backend)(
        P.state, indptr, X.indices[lo:hi], X.data[lo:hi], min_similarity, n_threads
    )
    return make_csr(out_indptr, out_indices, out_data, (r1 - r0, P.n_other), P.family)
