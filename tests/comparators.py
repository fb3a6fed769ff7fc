"""Tie-tolerant comparison of top-k results, shared by every backend's equivalence tests.

Two backends may round differently, so near-equal scores can swap places or, at the k-th
position, swap which of several tied candidates gets in. The comparator accepts exactly that:
scores must agree position by position within tolerance; the index *sets* of each group of
near-equal scores must agree, except for the last group of a full row (it may be cut at k).
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp


def _tie_groups(scores, rtol, atol):
    """Start positions of runs of near-equal consecutive scores (scores sorted descending)."""
    starts = [0]
    for i in range(1, len(scores)):
        a, b = scores[i - 1], scores[i]
        same = (a == b) or (
            np.isfinite(a) and np.isfinite(b) and abs(a - b) <= atol + rtol * abs(b)
        )
        if not same:
            starts.append(i)
    return starts


def assert_topk_equal(actual, expected, *, rtol=1e-5, atol=1e-6, exact=False):
    """Assert two (indices, scores) pairs of shape (rows, k) are the same top-k up to ties.

    ``exact``: indices and scores must match bit for bit (for determinism checks).
    """
    a_idx, a_val = (np.asarray(x) for x in actual)
    e_idx, e_val = (np.asarray(x) for x in expected)
    assert a_idx.shape == e_idx.shape == a_val.shape == e_val.shape, (
        a_idx.shape,
        e_idx.shape,
        a_val.shape,
        e_val.shape,
    )
    if exact:
        np.testing.assert_array_equal(a_idx, e_idx)
        np.testing.assert_array_equal(a_val, e_val)
        return
    for r in range(a_idx.shape[0]):
        ai, av, ei, ev = a_idx[r], a_val[r], e_idx[r], e_val[r]
        # Padding: the same number of real entries, padding as -1 / -inf.
        np.testing.assert_array_equal(ai >= 0, ei >= 0, err_msg=f"row {r}: padding differs")
        real = ei >= 0
        assert np.all(av[~real] == -np.inf), f"row {r}: padding score is not -inf"
        assert np.all(np.diff(av[real].astype(np.float64)) <= 0), f"row {r}: not sorted: {av}"
        assert len(set(ai[real])) == real.sum(), f"row {r}: repeated index {ai}"
        np.testing.assert_allclose(
            av[real].astype(np.float64),
            ev[real].astype(np.float64),
            rtol=rtol,
            atol=atol,
            err_msg=f"row {r}: scores differ",
        )
        ev_real = ev[real].astype(np.float64)
        starts = _tie_groups(ev_real, rtol, atol) + [real.sum()]
        full = real.all()
        for g, (s, t) in enumerate(itertools.pairwise(starts)):
            last = g == len(starts) - 2
            if last and full:
                continue  # the group at the cut: which tied candidates got in may differ
            assert set(ai[s:t]) == set(ei[s:t]), (
                f"row {r}: indices {ai[s:t]} vs {ei[s:t]} at positions {s}:{t}"
            )
        # Inside a group of exactly equal scores, smaller index first (the tie rule).
        for s in range(1, real.sum()):
            if av[s] == av[s - 1]:
                assert ai[s] > ai[s - 1], f"row {r}: tie not broken by smaller index: {ai}"


def csr_rows_as_topk(m, k):
    """A top-k CSR (rows in score order) as padded (indices, scores) arrays of shape (n, k)."""
    m = sp.csr_matrix(m)
    n = m.shape[0]
    idx = np.full((n, k), -1, dtype=np.int64)
    val = np.full((n, k), -np.inf, dtype=np.float64)
    for r in range(n):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        assert hi - lo <= k, f"row {r} has {hi - lo} > k entries"
        idx[r, : hi - lo] = m.indices[lo:hi]
        val[r, : hi - lo] = m.data[lo:hi]
    return idx, val


def assert_csr_topk_equal(actual, expected, k, **kw):
    """:func:`assert_topk_equal` for two top-k CSR matrices (e.g. cosine_topk outputs)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert_topk_equal(csr_rows_as_topk(actual, k), csr_rows_as_topk(expected, k), **kw)


def assert_csr_close(actual, expected, *, rtol=1e-5, atol=1e-6):
    """Same shape, dtype, sparsity pattern (up to entries within atol of zero) and values."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    a = sp.csr_matrix(actual, dtype=np.float64).toarray()
    e = sp.csr_matrix(expected, dtype=np.float64).toarray()
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)
