"""Folding new events into a fitted kNN model without a full refit (``partial_fit``).

Why the update is exact. A neighbourhood row i is the top-k of sim(i, j) over the other rows
j, ranked by the stored value (descending) then the column. New events change the vectors of
the touched rows T only, so sim(i, j) changes only when i or j is in T. Rows in T are
recomputed from a :class:`~fastrec.PreparedCosine` of the grown matrix (``rows=T``), with
k = all rows, which also gives, by symmetry of the cosine (the same products summed over the
common columns in the same order), the new sim(i, j in T) of every other row i. For i not in
T, the entries it did not keep rank below its stored k-th entry t_i. With non-negative values
that did not decrease, a j in T that meets no new column of i only lost similarity to i (its
norm grew; IEEE rounding is monotone), so it still ranks below t_i unless it was stored. Hence
the new row i is the top-k of its stored entries outside T and the new sim(i, T) ranking at
or above t_i, whenever those are at least k; a row that falls short (a stored entry of T lost
rank) is recomputed. Rows holding fewer than k entries already listed every candidate.
With a reserve (``reserve`` > 0: each row keeps k + reserve entries) the same holds with the
last kept entry as t_i, so a stored entry of T that loses rank is replaced from the reserve
instead of forcing a recomputation; a row whose reserve runs below k is recomputed.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..data import Interactions
from ..similarity import cosine_topk, prepare_cosine_topk

# Above this share of a full fit's estimated work (the changed rows' multiply-adds), partial_fit
# takes the full path. Measured with benchmarks/bench_feedback.py (mid set, k=100, reserve=25,
# 2 threads, shared machine): changed rows holding 16% of the work already made partial_fit
# 0.8x a full fit (the changed rows are computed with k = all rows), 48% made it 0.35x; so
# the partial path is kept for small changes only.
FULL_FIT_WORK_SHARE = 0.1
# Entries per block of changed rows computed with k = all rows: bounds that block's memory.
_BLOCK_ENTRIES = 1 << 21


def _padded(M: sp.csr_matrix, shape) -> sp.csr_matrix:
    """M as the top-left block of a zero matrix of ``shape`` (row order of entries kept)."""
    indptr = np.concatenate(
        [M.indptr, np.full(shape[0] - M.shape[0], M.indptr[-1], dtype=M.indptr.dtype)]
    )
    out = sp.csr_matrix((M.data, M.indices, indptr), shape=shape)
    out.has_sorted_indices = bool(M.has_sorted_indices)
    return out


def grown_data(model, new_events):
    """(grown data or None when nothing changed, what changed) for ``model.partial_fit``."""
    if not hasattr(model, "user_items_"):
        raise ValueError(f"{type(model).__name__} is not fitted: partial_fit needs a fit first")
    has_ids = model.user_ids_ is not None and model.item_ids_ is not None
    if isinstance(new_events, dict):
        if not has_ids:
            raise ValueError(
                "events in original ids need a model fit on fastrec.data.Interactions: this "
                "one was fit on a bare matrix and has no id maps (pass the grown matrix)"
            )
        unknown = set(new_events) - {"users", "items", "values"}
        if unknown or not {"users", "items"} <= set(new_events):
            raise ValueError(
                'new_events must be a dict with "users", "items" and optionally '
                f'"values", got keys {sorted(new_events)}'
            )
        base = Interactions(
            model.user_items_,
            model.user_ids_,
            model.item_ids_,
            duplicates=model.duplicates_ or "sum",
        )
        grown = base.append(new_events["users"], new_events["items"], new_events.get("values"))
        M = grown.matrix
    elif isinstance(new_events, Interactions):
        if not has_ids:
            raise ValueError(
                "the model was fit on a bare matrix (no id maps): pass the grown "
                "matrix, not Interactions"
            )
        for what, old in (("user", model.user_ids_), ("item", model.item_ids_)):
            new = getattr(new_events, f"{what}_ids")
            if len(new) < len(old) or not np.array_equal(new[: len(old)], old):
                raise ValueError(
                    f"the new data's {what} ids do not extend the model's: grow the data with "
                    "Interactions.append (known ids keep their rows), or fit again"
                )
        grown, M = new_events, new_events.matrix
    elif sp.issparse(new_events):
        if has_ids:
            raise ValueError(
                "the model has id maps: pass the grown Interactions (or a dict of "
                "events in original ids), not a bare matrix"
            )
        grown = M = new_events
    else:
        raise TypeError(
            "new_events must be the grown Interactions, a dict of events, or the "
            f"grown sparse matrix, got {type(new_events).__name__}"
        )
    from ._base import as_user_items

    N = as_user_items(M, "new_events")[0]
    old = model.user_items_
    if N.shape[0] < old.shape[0] or N.shape[1] < old.shape[1]:
        raise ValueError(f"the grown matrix {N.shape} is smaller than the fitted {old.shape}")
    N = sp.csr_matrix((N.data, N.indices, N.indptr), shape=N.shape)
    D = N.astype(np.float64) - _padded(old, N.shape).astype(np.float64)
    D.eliminate_zeros()
    if D.nnz == 0 and N.shape == old.shape:
        return None, None
    Dc = D.tocoo()
    changed = {
        "users": np.union1d(Dc.row, np.arange(old.shape[0], N.shape[0])).astype(np.int64),
        "items": np.union1d(Dc.col, np.arange(old.shape[1], N.shape[1])).astype(np.int64),
        "decreased": bool(np.any(Dc.data < 0)),
        "negative": bool(N.nnz and N.data.min() < 0),
    }
    return grown, changed


def needs_full_fit(model, changed):
    """Why partial_fit must refit everything, or None."""
    if getattr(model, "weighting", None) is not None:
        return (
            f"weighting={model.weighting!r} depends on global counts that the new events "
            "change for every row"
        )
    if changed["negative"]:
        return "negative values"
    if changed["decreased"]:
        return "values decreased"
    return None


def rank_ordered(nb: sp.csr_matrix) -> sp.csr_matrix:
    """A canonical neighbourhood with each row's entries put in rank order (value
    descending, then column)."""
    rows = np.repeat(np.arange(nb.shape[0]), np.diff(nb.indptr))
    order = np.lexsort((nb.indices, -nb.data, rows))
    out = sp.csr_matrix((nb.data[order], nb.indices[order], nb.indptr), shape=nb.shape)
    out.has_sorted_indices = False
    return out


def _ranked_last(nb: sp.csr_matrix):
    """(value, column) of each row's last-ranked entry (rows in rank order); rows with no
    entries get (-inf, n)."""
    n = nb.shape[0]
    t_val = np.full(n, -np.inf, dtype=nb.dtype)
    t_col = np.full(n, n, dtype=np.int64)
    full = np.flatnonzero(np.diff(nb.indptr) > 0)
    last = np.asarray(nb.indptr)[full + 1] - 1
    t_val[full] = nb.data[last]
    t_col[full] = nb.indices[last]
    return t_val, t_col


def _top_per_row(rows, cols, vals, k, n):
    """Entries sorted by (row, value desc, column) and cut to k per row, and each of the n
    rows' number of entries before the cut."""
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    start = np.r_[0, np.flatnonzero(np.diff(rows)) + 1] if rows.size else np.zeros(0, np.int64)
    rank = np.arange(rows.size) - np.repeat(start, np.diff(np.r_[start, rows.size]))
    keep = rank < k
    return rows[keep], cols[keep], vals[keep], np.bincount(rows, minlength=n)


def update_neighbours(model, X, old_nb, complete, n_old, touched, kept):
    """((rows in rank order as CSR, complete flags), None), or (None, why) when a full fit is
    the cheaper path. ``old_nb``: the stored rows (``kept`` = k + reserve entries at most, or
    fewer when ``complete``: the row lists every candidate)."""
    n = X.shape[0]
    k = int(model.k)
    touched = np.union1d(touched, np.arange(n_old, n)).astype(np.int64)
    # Work of row i: the multiply-adds of its similarity row, sum over its columns of their
    # counts; the changed rows' share of the total decides the path.
    col_count = np.bincount(X.indices, minlength=X.shape[1]).astype(np.float64)
    work = np.add.reduceat(col_count[X.indices], X.indptr[:-1]) if X.nnz else np.zeros(n)
    work[np.diff(X.indptr) == 0] = 0.0
    total = float(work.sum())
    share = float(work[touched].sum()) / total if total > 0 else 0.0
    if share > FULL_FIT_WORK_SHARE:
        return None, f"the changed rows hold {share:.0%} of a full fit's work"
    opts = model._cosine_opts()
    prepared = prepare_cosine_topk(X, backend=model.backend, n_threads=model.n_threads)
    old = _padded(old_nb, (n, n))
    lengths = np.diff(old.indptr)
    complete = np.concatenate([np.asarray(complete, bool), np.ones(n - n_old, bool)])
    t_val, t_col = _ranked_last(old)
    in_t = np.zeros(n, dtype=bool)
    in_t[touched] = True
    new_parts, cand_parts = [], []
    new_complete = complete.copy()
    step = max(1, _BLOCK_ENTRIES // max(1, n))
    for b0 in range(0, touched.size, step):
        blk = touched[b0 : b0 + step]
        res = sp.csr_matrix(cosine_topk(prepared, n, rows=blk, **opts))
        per_row = np.diff(res.indptr)
        new_complete[blk] = per_row <= kept
        src = np.repeat(blk, per_row)
        rank = np.arange(res.nnz) - np.repeat(res.indptr[:-1], per_row)
        top = rank < kept  # rows are sorted by rank: their first entries are the new row
        new_parts.append((src[top], res.indices[top].astype(np.int64), res.data[top]))
        # The same similarities seen from the other side: sim(i, j in T) for rows i not in T.
        i, s = res.indices.astype(np.int64), res.data
        ok = ~in_t[i]
        i, j, s = i[ok], src[ok], s[ok]
        above = complete[i] | (s > t_val[i]) | ((s == t_val[i]) & (j <= t_col[i]))
        cand_parts.append((i[above], j[above], s[above]))
    o_rows = np.repeat(np.arange(n), lengths)
    o_cols = old.indices.astype(np.int64)
    # Rows outside T that meet T: a stored entry in T, or a new candidate from T.
    c_i = np.concatenate([p[0] for p in cand_parts]) if cand_parts else np.zeros(0, np.int64)
    c_j = np.concatenate([p[1] for p in cand_parts]) if cand_parts else np.zeros(0, np.int64)
    c_s = np.concatenate([p[2] for p in cand_parts]) if cand_parts else np.zeros(0, old.dtype)
    meets = np.zeros(n, dtype=bool)
    meets[o_rows[in_t[o_cols]]] = True
    meets[c_i] = True
    meets &= ~in_t
    kept_old = meets[o_rows] & ~in_t[o_cols]
    # Every candidate ranking at or above the old last entry is known (all of them when the
    # row was complete): their top entries are exact, and at least k of them make the row.
    m_rows, m_cols, m_vals, got = _top_per_row(
        np.concatenate([o_rows[kept_old], c_i]),
        np.concatenate([o_cols[kept_old], c_j]),
        np.concatenate([old.data[kept_old], c_s.astype(old.dtype)]),
        kept,
        n,
    )
    redo = np.flatnonzero(meets & ~complete & (got < k))
    new_complete[meets] = complete[meets] & (got[meets] <= kept)
    drop = np.zeros(n, dtype=bool)
    drop[redo] = True
    keep_m = ~drop[m_rows]
    unchanged = ~(in_t | meets)[o_rows]
    parts = [
        (o_rows[unchanged], o_cols[unchanged], old.data[unchanged]),
        (m_rows[keep_m], m_cols[keep_m], m_vals[keep_m]),
    ] + new_parts
    if redo.size:
        res = sp.csr_matrix(cosine_topk(prepared, kept, rows=redo, **opts))
        new_complete[redo] = np.diff(res.indptr) < kept
        parts.append((np.repeat(redo, np.diff(res.indptr)), res.indices.astype(np.int64), res.data))
    rows = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([np.asarray(p[2], dtype=old.dtype) for p in parts])
    # Each row comes whole from one part, in rank order already: a stable sort by row.
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    ranked = sp.csr_matrix((vals[order], cols[order], indptr), shape=(n, n))
    model.partial_fit_stats_ = {
        "changed_rows": int(touched.size),
        "merged_rows": int(meets.sum()),
        "recomputed_rows": int(redo.size),
        "work_share": share,
    }
    return (ranked, new_complete), None
