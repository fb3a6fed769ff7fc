"""NumPy reference kernels: the executable specification every backend is tested against.

Written for clarity and exactness, not speed: arithmetic in float64 (results cast to the
caller's dtype at the end), memory bounded by processing blocks of rows, ties broken by the
smaller index everywhere. Every backend module exposes these functions with the same names and
signatures, on raw arrays (CSR as ``indptr, indices, data``), trusting its inputs: the public API
in ``fastrec.similarity``, ``fastrec.topk`` and ``fastrec.scoring`` validates them first.
``n_threads`` is accepted for a uniform signature and ignored here.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# Elements per dense block of work (~64 MB of float64): bounds every reference's memory.
BLOCK_ELEMENTS = 1 << 23


def _rows_per_block(width: int) -> int:
    return max(1, BLOCK_ELEMENTS // max(1, width))


def _csr(indptr, indices, data, shape, dtype=np.float64):
    return sp.csr_matrix((data.astype(dtype, copy=False), indices, indptr), shape=shape)


def _pattern(m: sp.csr_matrix) -> sp.csr_matrix:
    """The same sparsity pattern with every stored value 1.0."""
    return sp.csr_matrix((np.ones(m.nnz), m.indices, m.indptr), shape=m.shape)


def _row_normalised(m: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), for any finite magnitude: each
    row is first scaled by the power of two 2^-e that brings its largest |value| into [0.5, 1)
    (exact), so no square under- or overflows (x / |x| = x 2^-e / |x 2^-e|)."""
    m = sp.csr_matrix(m, dtype=np.float64, copy=True)
    n = m.shape[0]
    rows = np.repeat(np.arange(n), np.diff(m.indptr))
    top = np.zeros(n)
    np.maximum.at(top, rows, np.abs(m.data))
    exp = np.frexp(top)[1]
    m.data = np.ldexp(m.data, -exp[rows])
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    m.data *= inv[rows]
    return m


def select_topk(values: np.ndarray, k: int):
    """Row-wise top-k of a dense block whose non-candidates are -inf.

    Returns (indices int64, values) of shape (rows, k): sorted by value descending, ties by
    smaller column index, -1/-inf padding where a row has fewer than k candidates.
    """
    rows, width = values.shape
    kk = min(k, width)
    out_idx = np.full((rows, k), -1, dtype=np.int64)
    out_val = np.full((rows, k), -np.inf, dtype=values.dtype)
    if rows == 0 or kk == 0:
        return out_idx, out_val
    if kk < width:
        kth = -np.partition(-values, kk - 1, axis=1)[:, kk - 1]
    else:
        kth = values.min(axis=1)
    better = values > kth[:, None]
    tie = values == kth[:, None]
    need = kk - better.sum(axis=1)
    keep = better | (tie & (np.cumsum(tie, axis=1) <= need[:, None]))
    cols = np.nonzero(keep)[1].reshape(rows, kk)  # ascending column order within each row
    vals = np.take_along_axis(values, cols, axis=1)
    order = np.lexsort((cols, -vals), axis=1)
    cols = np.take_along_axis(cols, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    real = vals > -np.inf
    out_idx[:, :kk] = np.where(real, cols, -1)
    out_val[:, :kk] = np.where(real, vals, -np.inf)
    return out_idx, out_val


def _similarity_blocks(prepared, shrink, rows):
    """Yield (batch, sim, count): dense blocks of the shrunk cosine similarity of the rows
    ``batch`` (consecutive entries of ``rows``) of a prepared X with every row of X.

    Each row's block values depend only on that row and X (sparse row times X^T), so any
    subset of rows gets exactly the values of the all-rows call.
    """
    n_cols, _, xn, xnt, p, pt = prepared
    n_rows = len(xn[0]) - 1
    Xn = _csr(*xn, (n_rows, n_cols))
    XnT = _csr(*xnt, (n_cols, n_rows))
    P = _pattern(_csr(*p, np.ones(len(p[1])), (n_rows, n_cols)))
    PT = _pattern(_csr(*pt, np.ones(len(pt[1])), (n_cols, n_rows)))
    step = _rows_per_block(n_rows)
    for b0 in range(0, len(rows), step):
        batch = rows[b0 : b0 + step]
        sim = (Xn[batch] @ XnT).toarray()
        count = (P[batch] @ PT).toarray()
        if shrink > 0:
            sim *= count / (count + shrink)
        yield batch, sim, count


def _csr_from_blocks(parts_idx, parts_val, counts, dtype):
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    if parts_idx:
        indices = np.concatenate(parts_idx).astype(np.int64)
        values = np.concatenate(parts_val).astype(dtype)
    else:
        indices, values = np.zeros(0, np.int64), np.zeros(0, dtype)
    return indptr, indices, values


def cosine_topk_prepare(indptr, indices, data, n_cols, n_threads):
    """The part of cosine_topk that depends on X only, done once for any number of row blocks.

    Returns an opaque tuple for :func:`cosine_topk_rows`: X's number of columns and dtype, the
    CSR arrays of the row-normalised float64 X and of its transpose, and X's pattern
    (indptr, indices) and that of its transpose. Memory O(nnz). Each backend's tuple is its
    own: pass it back to the same module's cosine_topk_rows.
    """
    n_rows = len(indptr) - 1
    X = _csr(indptr, indices, data, (n_rows, n_cols))
    Xn = _row_normalised(X)
    XnT = Xn.T.tocsr()
    PT = _pattern(X).T.tocsr()
    return (
        int(n_cols),
        np.dtype(data.dtype),
        (Xn.indptr, Xn.indices, Xn.data),
        (XnT.indptr, XnT.indices, XnT.data),
        (X.indptr, X.indices),
        (PT.indptr, PT.indices),
    )


def cosine_topk_rows(
    prepared, k, shrink, min_similarity, min_support, include_self, n_threads, rows
):
    """cosine_topk of a prepared X (:func:`cosine_topk_prepare`) for some or all of its rows.

    ``rows``: None for every row, or an int64 array of row ids (any order, repeats allowed):
    output row r is then row rows[r]'s neighbours, bit for bit those of the all-rows call.
    Returns (indptr int64, indices int64, values of X's dtype), as :func:`cosine_topk`.
    """
    dtype = prepared[1]
    n_rows = len(prepared[2][0]) - 1
    if rows is None:
        rows = np.arange(n_rows, dtype=np.int64)
    parts_idx, parts_val, counts = [], [], np.zeros(len(rows), dtype=np.int64)
    b0 = 0
    for batch, sim, count in _similarity_blocks(prepared, shrink, rows):
        ok = (count >= min_support) & (sim >= min_similarity) & (sim != 0)
        if not include_self:
            ok[np.arange(len(batch)), batch] = False
        sim[~ok] = -np.inf
        # Rank the values as returned, so ties after rounding to float32 go to the smaller j.
        idx, val = select_topk(sim.astype(dtype, copy=False), k)
        real = idx >= 0
        counts[b0 : b0 + len(batch)] = real.sum(axis=1)
        parts_idx.append(idx[real])
        parts_val.append(val[real])
        b0 += len(batch)
    return _csr_from_blocks(parts_idx, parts_val, counts, dtype)


def cosine_topk(
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

    sim(i, j) = <x_i, x_j> / (|x_i| |x_j|) * c / (c + shrink), c = number of columns where
    both rows store a value. Row j is a candidate for row i when c >= min_support,
    sim >= min_similarity and sim != 0, and j != i unless ``include_self``. Each output row
    holds its best k candidates sorted by sim descending, ties by smaller j.
    ``rows``: None for every row, or an int64 array of row ids (any order, repeats allowed):
    output row r is then row rows[r]'s neighbours, bit for bit those of the all-rows call
    (candidates are still all n rows). This is what splits the work over row blocks.
    Returns (indptr int64, indices int64, values of data's dtype).
    Memory: O(nnz + n * rows_per_block) here; compiled backends are O(nnz + n*k + threads*n).
    It is :func:`cosine_topk_prepare` then :func:`cosine_topk_rows`.
    """
    prepared = cosine_topk_prepare(indptr, indices, data, n_cols, n_threads)
    return cosine_topk_rows(
        prepared, k, shrink, min_similarity, min_support, include_self, n_threads, rows
    )


def cosine_similarity(
    indptr, indices, data, y_indptr, y_indices, y_data, n_cols, min_similarity, n_threads
):
    """The sparse cosine similarity of the rows of X (n x n_cols) with those of Y (p x n_cols).

    Entry (i, j) is stored when sim >= min_similarity and sim != 0, columns ascending.
    Returns (indptr int64, indices int64, values of the result dtype: float32 only if both
    inputs are float32). Memory: O(nnz(X) + nnz(Y) + nnz(result)).
    """
    prepared = cosine_similarity_prepare(
        indptr, indices, data, y_indptr, y_indices, y_data, n_cols, n_threads
    )
    return cosine_similarity_rows(prepared, indptr, indices, data, min_similarity, n_threads)


def cosine_similarity_prepare(
    indptr, indices, data, y_indptr, y_indices, y_data, n_cols, n_threads
):
    """The part of cosine_similarity that does not depend on which rows of X are computed:
    an opaque tuple (n_cols, result dtype, CSR arrays of the row-normalised Y transposed)."""
    n_other = len(y_indptr) - 1
    dtype = np.result_type(data.dtype, y_data.dtype)
    YnT = _row_normalised(_csr(y_indptr, y_indices, y_data, (n_other, n_cols))).T.tocsr()
    return (int(n_cols), dtype, n_other, (YnT.indptr, YnT.indices, YnT.data))


def cosine_similarity_rows(prepared, indptr, indices, data, min_similarity, n_threads):
    """cosine_similarity of some rows of X (given as a CSR: X itself, or a block of its rows)
    with the prepared Y; each output row is that row of the whole call."""
    n_cols, dtype, n_other, ynt = prepared
    n_rows = len(indptr) - 1
    Xn = _row_normalised(_csr(indptr, indices, data, (n_rows, n_cols)))
    YnT = _csr(*ynt, (n_cols, n_other))
    parts_idx, parts_val, counts = [], [], np.zeros(n_rows, dtype=np.int64)
    step = _rows_per_block(n_other)
    for r0 in range(0, n_rows, step):
        sim = (Xn[r0 : r0 + step] @ YnT).toarray()
        ok = (sim >= min_similarity) & (sim != 0)
        rows, cols = np.nonzero(ok)  # row-major: columns ascending within a row
        counts[r0 : r0 + sim.shape[0]] = ok.sum(axis=1)
        parts_idx.append(cols)
        parts_val.append(sim[rows, cols])
    return _csr_from_blocks(parts_idx, parts_val, counts, dtype)


def _mask_rows(values, mask_indptr, mask_indices, rows):
    """Set values[r, c] = -inf for each stored (rows[r], c) of a CSR mask."""
    for r, row in enumerate(rows):
        values[r, mask_indices[mask_indptr[row] : mask_indptr[row + 1]]] = -np.inf


def topk(scores, k, exclude_indptr, exclude_indices, n_threads):
    """Row-wise top-k of a dense (n_rows, n_cols) float array.

    Column c of row r is a candidate unless (r, c) is stored in the exclude mask (CSR pattern;
    ``exclude_indptr`` None for no mask), or the score is NaN or -inf. Returns (indices int64,
    scores of the input dtype), both (n_rows, k): sorted by score descending, ties by smaller
    column, -1/-inf padding. The caller's scores are never written.
    """
    n_rows, n_cols = scores.shape
    out_idx = np.empty((n_rows, k), dtype=np.int64)
    out_val = np.empty((n_rows, k), dtype=scores.dtype)
    step = _rows_per_block(n_cols)
    for r0 in range(0, n_rows, step):
        r1 = min(n_rows, r0 + step)
        block = np.array(scores[r0:r1], dtype=scores.dtype)  # a private copy
        block[np.isnan(block)] = -np.inf
        if exclude_indptr is not None:
            _mask_rows(block, exclude_indptr, exclude_indices, range(r0, r1))
        out_idx[r0:r1], out_val[r0:r1] = select_topk(block, k)
    return out_idx, out_val


def recommend(
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

    A is (n_rows, n_mid) CSR and B (n_mid, n_items) CSR. Item-kNN passes A = user x item
    interactions and B = item neighbours; user-kNN passes A = user neighbours and B = user x item
    interactions. score(r, j) = sum over stored A[r, i] of A[r, i] * B[i, j]. Item j is a
    candidate for row r when some stored A[r, i] meets a stored B[i, j], (r, j) is stored in
    neither mask (``seen_*`` and ``ex_*``, CSR patterns indexed by r; None for no mask), and
    the score is not NaN or -inf. Returns (indices int64, scores), both (len(rows), n), sorted
    descending, ties by smaller item, -1/-inf padding. Scores are float32 only when A and B are
    both float32.
    """
    n_rows, n_mid = len(a_indptr) - 1, len(b_indptr) - 1
    dtype = np.result_type(a_data.dtype, b_data.dtype)
    A = _csr(a_indptr, a_indices, a_data, (n_rows, n_mid))
    B = _csr(b_indptr, b_indices, b_data, (n_mid, n_items))
    BP = _pattern(B)
    out_idx = np.empty((len(rows), n), dtype=np.int64)
    out_val = np.empty((len(rows), n), dtype=dtype)
    step = _rows_per_block(n_items)
    for r0 in range(0, len(rows), step):
        batch = rows[r0 : r0 + step]
        Ab = A[batch]
        scores = (Ab @ B).toarray()
        scores[np.isnan(scores)] = -np.inf
        scores[(_pattern(Ab) @ BP).toarray() == 0] = -np.inf
        for m_indptr, m_indices in ((seen_indptr, seen_indices), (ex_indptr, ex_indices)):
            if m_indptr is not None:
                _mask_rows(scores, m_indptr, m_indices, batch)
        idx, val = select_topk(scores.astype(dtype, copy=False), n)
        out_idx[r0 : r0 + len(batch)], out_val[r0 : r0 + len(batch)] = idx, val
    return out_idx, out_val


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow: exp is only taken of non-positive numbers."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def log1pexp(z: np.ndarray) -> np.ndarray:
    """log(1 + exp(z)) without overflow or cancellation (scikit-learn's cut-offs)."""
    out = np.empty_like(z)
    a = z <= -37
    b = ~a & (z <= -2)
    c = (z > -2) & (z <= 18)
    d = (z > 18) & (z <= 33.3)
    e = z > 33.3
    out[a] = np.exp(z[a])
    out[b] = np.log1p(np.exp(z[b]))
    out[c] = np.log(1.0 + np.exp(z[c]))
    out[d] = z[d] + np.exp(-z[d])
    out[e] = z[e]
    return out


def _dense_logits(X, w, b, r0, r1):
    return X[r0:r1].astype(np.float64) @ w.astype(np.float64) + b


def _csr_logits(indptr, indices, data, w, b, r0, r1):
    lo, hi = indptr[r0], indptr[r1]
    block = sp.csr_matrix(
        (data[lo:hi].astype(np.float64), indices[lo:hi], indptr[r0 : r1 + 1] - lo),
        shape=(r1 - r0, w.shape[0]),
    )
    return block @ w.astype(np.float64) + b


def sigmoid_dense(X, w, b, out, n_threads):
    """out[i] = sigmoid(X[i] @ w + b) for a dense (n, d) X in C or F order; returns out."""
    step = _rows_per_block(X.shape[1])
    for r0 in range(0, X.shape[0], step):
        r1 = min(X.shape[0], r0 + step)
        out[r0:r1] = sigmoid(_dense_logits(X, w, b, r0, r1))
    return out


def sigmoid_csr(indptr, indices, data, w, b, out, n_threads):
    """out[i] = sigmoid(X[i] @ w + b) for a CSR X with len(w) columns; returns out."""
    n_rows = len(indptr) - 1
    step = _rows_per_block(64)
    for r0 in range(0, n_rows, step):
        r1 = min(n_rows, r0 + step)
        out[r0:r1] = sigmoid(_csr_logits(indptr, indices, data, w, b, r0, r1))
    return out


def _loss_grad(logits_of_block, XT_times, n_rows, y, w, b, l2, sample_weight):
    """Shared body of the two loss/grad kernels (XT_times(r0, r1, v) = X[r0:r1].T @ v)."""
    total_weight = float(np.sum(sample_weight, dtype=np.float64))
    loss = 0.0
    grad_w = np.zeros(w.shape[0], dtype=np.float64)
    grad_b = 0.0
    step = _rows_per_block(max(64, w.shape[0]))
    for r0 in range(0, n_rows, step):
        r1 = min(n_rows, r0 + step)
        z = logits_of_block(r0, r1)
        yb = y[r0:r1].astype(np.float64)
        sw = sample_weight[r0:r1].astype(np.float64)
        loss += float(np.sum(sw * (log1pexp(z) - yb * z)))
        residual = sw * (sigmoid(z) - yb)
        grad_w += XT_times(r0, r1, residual)
        grad_b += float(np.sum(residual))
    w64 = w.astype(np.float64)
    loss = loss / total_weight + 0.5 * l2 * float(w64 @ w64)
    grad_w = grad_w / total_weight + l2 * w64
    return loss, grad_w, grad_b / total_weight


def logistic_loss_grad_dense(X, y, w, b, l2, sample_weight, n_threads):
    """Weighted mean log-loss of sigmoid(X @ w + b) against 0/1 labels y, plus 0.5*l2*|w|^2.

    Returns (loss float, grad_w float64 array, grad_b float): all float64, what a quasi-Newton
    optimiser needs. The intercept is not penalised.
    """
    return _loss_grad(
        lambda r0, r1: _dense_logits(X, w, b, r0, r1),
        lambda r0, r1, v: X[r0:r1].astype(np.float64).T @ v,
        X.shape[0],
        y,
        w,
        b,
        l2,
        sample_weight,
    )


def _csr_xt_times(indptr, indices, data, n_cols):
    """(r0, r1, r) -> X[r0:r1].T @ r in float64 for a CSR X with n_cols columns."""

    def xt_times(r0, r1, r):
        lo, hi = indptr[r0], indptr[r1]
        rows = np.repeat(np.arange(r1 - r0), np.diff(indptr[r0 : r1 + 1]))
        return np.bincount(
            indices[lo:hi], weights=data[lo:hi].astype(np.float64) * r[rows], minlength=n_cols
        )

    return xt_times


def logistic_loss_grad_csr(indptr, indices, data, y, w, b, l2, sample_weight, n_threads):
    """:func:`logistic_loss_grad_dense` for a CSR X with len(w) columns."""
    n_rows = len(indptr) - 1
    return _loss_grad(
        lambda r0, r1: _csr_logits(indptr, indices, data, w, b, r0, r1),
        _csr_xt_times(indptr, indices, data, w.shape[0]),
        n_rows,
        y,
        w,
        b,
        l2,
        sample_weight,
    )


def _hessp(logits_of_block, XT_times, n_rows, c, v, l2):
    """Shared body of the two Hessian-vector kernels (logits_of_block(r0, r1) = X[r0:r1] @ v +
    vb; XT_times(r0, r1, r) = X[r0:r1].T @ r)."""
    hv_w = np.zeros(v.shape[0], dtype=np.float64)
    hv_b = 0.0
    step = _rows_per_block(max(64, v.shape[0]))
    for r0 in range(0, n_rows, step):
        r1 = min(n_rows, r0 + step)
        r = c[r0:r1].astype(np.float64) * logits_of_block(r0, r1)
        hv_w += XT_times(r0, r1, r)
        hv_b += float(np.sum(r))
    return hv_w + l2 * v.astype(np.float64), hv_b


def logistic_hessp_dense(X, c, v, vb, l2, n_threads):
    """The logistic objective's Hessian times a direction (v, vb), for a dense X.

    With t = X @ v + vb and r = c * t (c_i = s_i p_i (1 - p_i) / sum(s) at the point where
    the Hessian is taken, p = sigmoid(X @ w + b)): returns (hv_w = X.T @ r + l2 * v float64
    array, hv_b = sum(r) float). The intercept's part is unpenalised. X float32/float64 in C
    or F order (computed in float64); c and v float64. One pass over X: O(n d).
    """
    return _hessp(
        lambda r0, r1: _dense_logits(X, v, vb, r0, r1),
        lambda r0, r1, r: X[r0:r1].astype(np.float64).T @ r,
        X.shape[0],
        c,
        v,
        l2,
    )


def logistic_hessp_csr(indptr, indices, data, c, v, vb, l2, n_threads):
    """:func:`logistic_hessp_dense` for a CSR X with len(v) columns: O(nnz + n)."""
    n_rows = len(indptr) - 1
    return _hessp(
        lambda r0, r1: _csr_logits(indptr, indices, data, v, vb, r0, r1),
        _csr_xt_times(indptr, indices, data, v.shape[0]),
        n_rows,
        c,
        v,
        l2,
    )


def dot_topk(queries, items, k, item_bias, candidates, ex_indptr, ex_indices, n_threads):
    """For each query row the k best items by score(q, j) = queries[q] . items[j] + bias[j].

    ``queries`` (n_queries, n_factors) and ``items`` (n_items, n_factors) are C-contiguous of
    one float dtype; ``item_bias`` None or (n_items,) of that dtype; ``candidates`` None (all
    items) or sorted, distinct int64 item ids; the exclusion mask (CSR pattern, sorted indices,
    indexed by query row and item id; ``ex_indptr`` None for none) removes items per query.
    Returns (indices int64, scores of the dtype), both (n_queries, k): sorted descending, ties
    by smaller item, -1/-inf padding.

    How each score is accumulated (the definition backends are compared with): the dot product
    in float64, rounded once to the dtype, then the bias added in the dtype. The compiled CPU
    backends take the product from BLAS (sgemm/dgemm) in the dtype, so their scores differ from
    these by at most about n_factors * eps(dtype) * sum_f |q_f * x_f| and are compared by that
    tolerance; the selection on given scores is exact everywhere.
    """
    n_queries = queries.shape[0]
    dtype = queries.dtype
    cols = np.arange(items.shape[0], dtype=np.int64) if candidates is None else candidates
    X = items[cols].astype(np.float64)
    bias = None if item_bias is None else item_bias[cols]
    out_idx = np.empty((n_queries, k), dtype=np.int64)
    out_val = np.empty((n_queries, k), dtype=dtype)
    step = _rows_per_block(len(cols))
    for r0 in range(0, n_queries, step):
        r1 = min(n_queries, r0 + step)
        scores = (queries[r0:r1].astype(np.float64) @ X.T).astype(dtype)
        if bias is not None:
            scores += bias
        if ex_indptr is not None:
            for r in range(r0, r1):
                ex = ex_indices[ex_indptr[r] : ex_indptr[r + 1]]
                scores[r - r0, np.isin(cols, ex)] = -np.inf
        idx, val = select_topk(scores, k)
        out_idx[r0:r1] = np.where(idx >= 0, cols[np.maximum(idx, 0)], -1) if len(cols) else idx
        out_val[r0:r1] = val
    return out_idx, out_val


def als_cg_update(indptr, indices, data, X, Y, YtY, alpha, cg_steps, n_threads):
    """One half-step of implicit-feedback ALS: each row u of X improved by ``cg_steps``
    conjugate-gradient steps, warm-started from X[u], on the normal equations

        (YtY + Y^T (C_u - I) Y) x_u = Y^T C_u p_u,   c_ui = 1 + alpha * r_ui,  p_ui = 1

    over row u's stored (i, r_ui) of the CSR (n_rows x n_items); ``YtY`` = Y^T Y + lambda I.
    A row whose residual is below 1e-20 (squared norm) is left as is. Returns the new X (a
    copy, X's dtype). In float64 per row, the result rounded once to X's dtype; the compiled
    backends too (a float32 CG drifted up to 5% from this on ill-conditioned rows), so results
    agree to the rounding of the sums' order.
    """
    out = np.array(X, dtype=X.dtype, copy=True)
    G = YtY.astype(np.float64)
    for u in range(X.shape[0]):
        lo, hi = indptr[u], indptr[u + 1]
        Yu = Y[indices[lo:hi]].astype(np.float64)
        c1 = alpha * data[lo:hi].astype(np.float64)
        x = X[u].astype(np.float64)
        r = -G @ x + ((1.0 + c1) - c1 * (Yu @ x)) @ Yu
        p = r.copy()
        rsold = r @ r
        if rsold < 1e-20:
            continue
        for _ in range(cg_steps):
            Ap = G @ p + (c1 * (Yu @ p)) @ Yu
            a = rsold / (p @ Ap)
            x = x + a * p
            r = r - a * Ap
            rsnew = r @ r
            if rsnew < 1e-20:
                break
            p = r + (rsnew / rsold) * p
            rsold = rsnew
        out[u] = x
    return out
