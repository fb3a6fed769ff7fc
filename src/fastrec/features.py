"""CTR features: categorical columns (user id, item id, attributes) to a CSR design matrix, by
one-hot encoding with a vocabulary or by seeded feature hashing, ready for LogisticCTR.

A table is a pandas, polars or pyarrow table (none of them is required), a dict of column name
-> 1-D array, or a 2-D NumPy array (columns named 0, 1, ...). Each categorical column
contributes one non-zero per row (value 1); each ``numeric`` column contributes its value in a
column of its own. Everything is vectorised over rows: Python-level work is per distinct value
at most::

    enc = HashingEncoder(["user", "item", "hour"], numeric=["cf_score"], n_features=2**20)
    X = enc.fit_transform(events)               # CSR, n_events x 2**20
    model = LogisticCTR(C=1.0).fit(X, events["clicked"])
    p = model.predict_proba1(enc.transform(candidates))
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._tables import as_table
from ._validation import check_dtype, check_scalar

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)

__all__ = ["HashingEncoder", "OneHotEncoder", "fnv1a64"]


# ---- tables -----------------------------------------------------------------------------------


def _table(table):
    """A Table of a pandas/polars/pyarrow table, a dict of arrays or a 2-D array (names 0,
    1, ...)."""
    t = as_table(table)
    if t is not None:
        return t
    arr = np.asarray(table)
    if arr.ndim != 2:
        raise TypeError(
            "table must be a pandas/polars/pyarrow table, a dict of 1-D arrays or a "
            f"2-D array, got {type(table).__name__} with shape {arr.shape}"
        )
    return as_table({j: arr[:, j] for j in range(arr.shape[1])})


def _select(table, columns, numeric):
    """(n_rows, [categorical arrays], [numeric float64 arrays]) with every check done."""
    t = _table(table)
    names = list(columns) if columns is not None else [c for c in t.names if c not in numeric]
    t.require(list(names) + list(numeric))
    if not names and not numeric:
        raise ValueError("no columns to encode")
    cols = {c: t.column(c) for c in list(names) + list(numeric)}
    lengths = {len(cols[c]) for c in list(names) + list(numeric)}
    if len(lengths) != 1:
        raise ValueError(f"columns have different lengths: {sorted(lengths)}")
    for c in list(names) + list(numeric):
        if np.asarray(cols[c]).ndim != 1:
            raise ValueError(f"column {c!r} must be 1-D")
    cat = [_categorical(cols[c], c) for c in names]
    num = []
    for c in numeric:
        v = np.asarray(cols[c])
        if v.dtype.kind not in "biuf":
            raise TypeError(f"numeric column {c!r} has dtype {v.dtype}; expected numbers")
        v = v.astype(np.float64)
        if not np.isfinite(v).all():
            raise ValueError(f"numeric column {c!r} contains NaN or infinity")
        num.append(v)
    return lengths.pop(), names, cat, num


def _categorical(col, name):
    """A categorical column as integers (kept) or strings (anything else, compared as str)."""
    v = np.asarray(col)
    if v.dtype.kind in "bi" or (v.dtype.kind == "u" and (v.size == 0 or v.max() < 2**63)):
        return v.astype(np.int64)
    if v.dtype.kind == "f":
        if not np.isfinite(v).all():
            raise ValueError(
                f"column {name!r} contains NaN or infinity; fill missing values "
                "with a category of their own first"
            )
        if np.all(v == np.round(v)) and np.all(np.abs(v) < 2**53):
            return v.astype(np.int64)  # whole numbers read back from CSV as floats
        return v.astype(str)
    return v.astype(str)


def _design(n_rows, col_indices, num_indices, num_values, n_features, dtype):
    """CSR from per-row categorical column indices (-1 = absent) and numeric columns."""
    k = len(col_indices)
    idx = np.empty((n_rows, k + len(num_indices)), dtype=np.int64)
    val = np.ones(idx.shape, dtype=dtype)
    for j, ci in enumerate(col_indices):
        idx[:, j] = ci
    for j, (ci, v) in enumerate(zip(num_indices, num_values)):
        idx[:, k + j] = ci
        val[:, k + j] = v
    keep = idx >= 0
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    itype = np.int32 if max(n_features, int(indptr[-1])) < 2**31 else np.int64
    X = sp.csr_matrix(
        (val[keep], idx[keep].astype(itype), indptr.astype(itype)), shape=(n_rows, n_features)
    )
    X.sum_duplicates()  # sorts each row; hashed duplicates within a row add up
    return X


# ---- one-hot with a vocabulary --------------------------------------------------------------


class OneHotEncoder:
    """One column per (categorical column, value seen in ``fit`` at least ``min_count`` times).

    Feature layout: the columns' vocabularies one after another in ``columns`` order (values
    sorted within a column), then one column per ``numeric`` column. ``feature_names_`` holds
    "column=value" (and the numeric column names). Unknown values at ``transform`` are
    skipped (``handle_unknown="ignore"``: the row has no entry for that column) or raise
    (``"error"``). Output: CSR of ``dtype`` (float32 default), exactly one entry per known
    categorical value. Time O(n log V) per column (V = vocabulary size); memory O(n * columns).
    """

    def __init__(
        self, columns=None, *, numeric=(), min_count=1, handle_unknown="ignore", dtype=np.float32
    ):
        self.columns = columns
        self.numeric = tuple(numeric)
        self.min_count = min_count
        self.handle_unknown = handle_unknown
        self.dtype = dtype

    def fit(self, table):
        check_scalar(self.min_count, "min_count", min_value=1, integer=True)
        if self.handle_unknown not in ("ignore", "error"):
            raise ValueError(
                f"handle_unknown must be 'ignore' or 'error', got {self.handle_unknown!r}"
            )
        _, names, cat, _ = _select(table, self.columns, self.numeric)
        self.columns_ = names
        self.vocabularies_ = []
        offsets = [0]
        for v in cat:
            values, counts = np.unique(v, return_counts=True)
            vocab = values[counts >= self.min_count]
            self.vocabularies_.append(vocab)
            offsets.append(offsets[-1] + len(vocab))
        self.offsets_ = np.array(offsets, dtype=np.int64)
        self.n_features_ = int(offsets[-1]) + len(self.numeric)
        self.feature_names_ = [
            f"{c}={v}" for c, vocab in zip(names, self.vocabularies_) for v in vocab
        ] + [str(c) for c in self.numeric]
        return self

    def transform(self, table):
        """CSR (n_rows, n_features_) of the table's rows."""
        if not hasattr(self, "vocabularies_"):
            raise ValueError("this OneHotEncoder is not fitted yet; call fit(table) first")
        dtype = check_dtype(self.dtype)
        n, _, cat, num = _select(table, self.columns_, self.numeric)
        col_indices = []
        for name, v, vocab, off in zip(self.columns_, cat, self.vocabularies_, self.offsets_):
            if vocab.dtype.kind == "U" and v.dtype.kind != "U":
                v = v.astype(str)  # fitted on strings: integers compare as their str
            if len(vocab) == 0 or (vocab.dtype.kind == "i") != (v.dtype.kind == "i"):
                pos_c, known = np.zeros(n, np.int64), np.zeros(n, bool)
            else:
                pos = np.searchsorted(vocab, v)
                pos_c = np.minimum(pos, len(vocab) - 1)
                known = (pos < len(vocab)) & (vocab[pos_c] == v)
            if self.handle_unknown == "error" and not known.all():
                bad = v[~known][0].item()
                raise ValueError(f"column {name!r} has value {bad!r} not seen in fit")
            col_indices.append(np.where(known, pos_c + off, -1))
        base = int(self.offsets_[-1])
        num_idx = [base + j for j in range(len(num))]
        return _design(n, col_indices, num_idx, num, self.n_features_, dtype)

    def fit_transform(self, table):
        return self.fit(table).transform(table)


# ---- feature hashing ------------------------------------------------------------------------


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea, Flood 2014): a bijection of uint64 that mixes
    every input bit into every output bit."""
    with np.errstate(over="ignore"):
        z = (x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def fnv1a64(data: bytes) -> int:
    """The 64-bit FNV-1a hash of a byte string (used for strings and column names)."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _value_keys(v: np.ndarray) -> np.ndarray:
    """uint64 key of each value: integers as themselves (two's complement), strings by FNV-1a
    of their UTF-8 bytes (computed once per distinct string)."""
    if v.dtype.kind in "iu":
        return v.astype(np.int64).view(np.uint64) if v.dtype.kind == "i" else v.astype(np.uint64)
    uniques, inverse = np.unique(v, return_inverse=True)
    keys = np.array([fnv1a64(str(u).encode("utf-8")) for u in uniques], dtype=np.uint64)
    return keys[inverse.ravel()]


class HashingEncoder:
    """Seeded feature hashing: value v of column c goes to column
    ``splitmix64(key(v) XOR salt(c)) mod n_features``, with
    ``salt(c) = splitmix64(fnv1a64(utf8(str(c))) XOR seed)``;
    key(v) is an integer value itself (two's complement as uint64) or, for any other value,
    FNV-1a-64 of the UTF-8 bytes of str(v). The same (seed, column name, value) always gives
    the same column, in any process and any row order; no vocabulary is stored, so new values
    need no refit. A ``numeric`` column c goes to ``splitmix64(salt(c)) mod n_features`` with
    its value. Two values of one row that land in one column add up.

    Collisions: ``fit`` counts the distinct (column, value) keys of the training table
    (``n_keys_``) and the distinct output columns they occupy (``n_columns_used_``);
    ``n_collisions_ = n_keys_ - n_columns_used_`` keys share a column with another
    (about n_keys^2 / (2 n_features) expected). ``transform`` needs no fit.
    Output: CSR (n_rows, n_features) of ``dtype``. Time O(n) per column plus O(U) Python work for
    U distinct strings; memory O(n * columns).
    """

    def __init__(self, columns=None, *, numeric=(), n_features=2**20, seed=0, dtype=np.float32):
        self.columns = columns
        self.numeric = tuple(numeric)
        self.n_features = n_features
        self.seed = seed
        self.dtype = dtype

    def _check(self):
        n_features = check_scalar(self.n_features, "n_features", min_value=1, integer=True)
        seed = check_scalar(self.seed, "seed", min_value=0, max_value=2**64 - 1, integer=True)
        return n_features, seed

    def _salt(self, name, seed) -> np.uint64:
        h = np.array([fnv1a64(str(name).encode("utf-8")) ^ seed], dtype=np.uint64)
        return _splitmix64(h)[0]

    def _hashed(self, table):
        n_features, seed = self._check()
        n, names, cat, num = _select(table, self.columns, self.numeric)
        m = np.uint64(n_features)
        hashed = [_splitmix64(_value_keys(v) ^ self._salt(c, seed)) for c, v in zip(names, cat)]
        cols = [(h % m).astype(np.int64) for h in hashed]
        num_idx = [int(_splitmix64(np.array([self._salt(c, seed)]))[0] % m) for c in self.numeric]
        return n, n_features, hashed, cols, num_idx, num

    def fit(self, table):
        """Count the training table's distinct keys and collisions; returns self."""
        _, n_features, hashed, cols, num_idx, _ = self._hashed(table)
        full = np.unique(np.concatenate(hashed + [np.zeros(0, np.uint64)]))
        self.n_keys_ = int(full.size) + len(num_idx)
        used = np.unique(
            np.concatenate([full % np.uint64(n_features), np.array(num_idx, dtype=np.uint64)])
        )
        self.n_columns_used_ = int(used.size)
        self.n_collisions_ = self.n_keys_ - self.n_columns_used_
        return self

    def transform(self, table):
        """CSR (n_rows, n_features) of the table's rows."""
        dtype = check_dtype(self.dtype)
        n, n_features, _, cols, num_idx, num = self._hashed(table)
        return _design(n, cols, num_idx, num, n_features, dtype)

    def fit_transform(self, table):
        return self.fit(table).transform(table)


def __dir__():
    # What dir() and tab completion show: the public names, not np / sp / helpers.
    return list(__all__)
