"""Hypothesis strategies for kernel inputs, shared by every backend's equivalence tests.

CSR inputs come as *raw* scipy matrices that may break canonical form on purpose (duplicate
entries, unsorted indices, explicit zeros, int64 indices, any sparse format or family), so the
tests exercise the validation front door as well as the kernels.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import strategies as st

float_dtypes = st.sampled_from([np.float32, np.float64])
index_dtypes = st.sampled_from([np.int32, np.int64])


@st.composite
def values(draw, size, dtype, *, ties=None, signed=False):
    """``size`` finite values; with ties, drawn from a handful of levels so equal values occur.

    Signed values are never tied: sums of tied signed values cancel to exactly zero in one
    backend and to 1e-17 in another, which no tolerance can reconcile (sim != 0 is a rule).
    """
    ties = (not signed and draw(st.booleans())) if ties is None else ties
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if ties:
        out = rng.integers(1, 4, size).astype(dtype)
    else:
        out = rng.uniform(0.05, 2.0, size).astype(dtype)
    if signed:
        out *= rng.choice(np.array([-1, 1], dtype=dtype), size)
    return out


@st.composite
def raw_csr(
    draw,
    *,
    max_rows=12,
    max_cols=12,
    min_rows=0,
    min_cols=0,
    dtype=None,
    binary=None,
    signed=False,
    canonical=False,
):
    """A scipy sparse matrix/array with duplicates, unsorted indices, explicit zeros (unless
    ``canonical``), empty rows and columns, int32 or int64 indices, float32 or float64 values.

    Duplicates sum to the represented value, so the canonical form is what kernels must see.
    """
    n_rows = draw(st.integers(min_rows, max_rows))
    n_cols = draw(st.integers(min_cols, max_cols))
    dtype = draw(float_dtypes) if dtype is None else dtype
    itype = draw(index_dtypes)
    binary = draw(st.booleans()) if binary is None else binary
    density = draw(st.sampled_from([0.0, 0.1, 0.3, 0.7, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = rng.random((n_rows, n_cols)) < density
    rows, cols = np.nonzero(mask)
    if binary:
        vals = np.ones(rows.size, dtype=dtype)
    else:
        vals = draw(values(rows.size, dtype, signed=signed))
    if not canonical and rows.size:
        # Split some entries in two halves (duplicates), add explicit zeros, shuffle order.
        dup = rng.random(rows.size) < 0.3
        if binary:
            dup[:] = False
        half = vals[dup] / 2
        vals = np.concatenate([np.where(dup, vals / 2, vals).astype(dtype), half.astype(dtype)])
        rows = np.concatenate([rows, rows[dup]])
        cols = np.concatenate([cols, cols[dup]])
        if draw(st.booleans()):
            zr = rng.integers(0, n_rows, 2)
            zc = rng.integers(0, n_cols, 2)
            fresh = ~mask[zr, zc]
            rows = np.concatenate([rows, zr[fresh]])
            cols = np.concatenate([cols, zc[fresh]])
            vals = np.concatenate([vals, np.zeros(fresh.sum(), dtype=dtype)])
        order = rng.permutation(rows.size)
        rows, cols, vals = rows[order], cols[order], vals[order]
    # Build CSR arrays by hand so duplicates and unsorted indices survive.
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n_rows + 1, dtype=itype)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    family = draw(st.sampled_from(["matrix", "array"]))
    cls = sp.csr_matrix if family == "matrix" else sp.csr_array
    m = cls((vals[order], cols[order].astype(itype), indptr), shape=(n_rows, n_cols))
    m.indices = m.indices.astype(itype)  # scipy may pick int32; keep the drawn index type
    m.indptr = m.indptr.astype(itype)
    fmt = draw(st.sampled_from(["csr", "csr", "csr", "csc", "coo"]))
    return m if fmt == "csr" else m.asformat(fmt)


@st.composite
def dense(
    draw,
    *,
    max_rows=10,
    max_cols=40,
    min_rows=0,
    min_cols=0,
    dtype=None,
    ties=None,
    signed=True,
    layout=None,
):
    """A 2-D float array: C order, F order, or a non-contiguous view (every other column)."""
    n_rows = draw(st.integers(min_rows, max_rows))
    n_cols = draw(st.integers(min_cols, max_cols))
    dtype = draw(float_dtypes) if dtype is None else dtype
    layout = draw(st.sampled_from(["C", "F", "strided"])) if layout is None else layout
    width = 2 * n_cols if layout == "strided" else n_cols
    ties = draw(st.booleans()) if ties is None else ties  # dense scores are not summed: tie away
    base = draw(values(n_rows * width, dtype, ties=ties, signed=signed)).reshape(n_rows, width)
    if layout == "F":
        return np.asfortranarray(base)
    if layout == "strided":
        return base[:, ::2]
    return base


def canonical(m) -> sp.csr_matrix:
    """The canonical CSR (float64 copy) a raw matrix represents: what a reference sees."""
    c = sp.csr_matrix(m, dtype=np.float64, copy=True)
    c.sum_duplicates()
    c.eliminate_zeros()
    return c


@st.composite
def scores_and_mask(draw, max_rows=8, max_cols=30):
    """A dense score matrix (see ``dense``) with a few NaN/+inf/-inf planted, and None or a raw
    CSR exclusion mask of the same shape."""
    S = draw(dense(max_rows=max_rows, max_cols=max_cols))
    mask = None
    if draw(st.booleans()) and S.size:
        mask = draw(
            raw_csr(
                max_rows=S.shape[0], max_cols=S.shape[1], min_rows=S.shape[0], min_cols=S.shape[1]
            )
        )
    specials = draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=4))
    if S.size and specials:
        S = S.copy()
        rng = np.random.default_rng(len(specials))
        for v in specials:
            S[rng.integers(S.shape[0]), rng.integers(S.shape[1])] = v
    return S, mask
