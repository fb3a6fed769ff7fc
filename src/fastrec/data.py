"""Interaction data: events -> user x item CSR with id maps both ways, filters, splits,
synthetic data.

An :class:`Interactions` holds the users x items CSR (canonical: sorted, no duplicates), the
original user and item ids of its rows and columns, and optionally one timestamp per stored
entry (aligned with ``matrix.data``) and categorical side features per user and per item.
Builders: :func:`from_arrays`, :func:`from_dataframe`, :func:`read` (CSV/TSV with a header, or
MovieLens-style ``user item rating timestamp`` files). Every split is seeded and keeps the id
maps and the shape, so train and test matrices line up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._validation import check_scalar

DUPLICATE_RULES = ("sum", "max", "first", "last", "count")

__all__ = [
    "DUPLICATE_RULES",
    "Interactions",
    "contains",
    "filter_min_counts",
    "from_arrays",
    "from_dataframe",
    "leave_last_out",
    "per_user_split",
    "random_split",
    "read",
    "read_columns",
    "synthetic",
    "to_implicit",
]


@dataclass(frozen=True)
class Interactions:
    """A users x items CSR with its id maps, optional timestamps and side features.

    ``matrix``: scipy CSR (float32 or float64), canonical. ``user_ids[r]`` / ``item_ids[c]``:
    the original id of row r / column c: sorted ascending when built, new ids appended at the
    end by :meth:`append` (known ids keep their rows); lookups are binary searches through a
    sorting permutation computed once per object.
    ``duplicates``: the rule that combined events of the same (user, item) pair when the data
    was built (see :func:`from_arrays`); :meth:`append` follows it.
    ``timestamps``: None or an int64/float array aligned with ``matrix.data``.
    ``user_features`` / ``item_features``: name -> int array (one category code per row/column).
    ``contexts``: name -> non-negative int array aligned with ``matrix.data`` (the context of
    each interaction, e.g. the time of day: what a CTR model conditions on at request time).
    ``table_kind``: the kind of table it was built from ("pandas", "polars", "pyarrow",
    "dict"; None: arrays or a file), the kind :meth:`to_frame` gives back.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray | None = None
    user_features: dict = field(default_factory=dict)
    item_features: dict = field(default_factory=dict)
    contexts: dict = field(default_factory=dict)
    table_kind: str | None = None
    duplicates: str = "sum"

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return self.matrix.nnz

    def __repr__(self) -> str:
        ts = ", timestamps" if self.timestamps is not None else ""
        return f"Interactions({self.n_users} users x {self.n_items} items, nnz={self.nnz}{ts})"

    @cached_property
    def _user_order(self):
        return id_order(self.user_ids)

    @cached_property
    def _item_order(self):
        return id_order(self.item_ids)

    def user_index(self, ids) -> np.ndarray:
        """Rows (int64) of the given original user ids; ValueError naming an unknown id."""
        return lookup_ids(self.user_ids, ids, "user id", self._user_order)

    def item_index(self, ids) -> np.ndarray:
        """Columns (int64) of the given original item ids; ValueError naming an unknown id."""
        return lookup_ids(self.item_ids, ids, "item id", self._item_order)

    def decode_users(self, indices, fill=None) -> np.ndarray:
        """Original user ids of an array of rows; -1 becomes ``fill`` (as :meth:`decode_items`)."""
        return decode_ids(self.user_ids, indices, fill)

    def decode_items(self, indices, fill=None) -> np.ndarray:
        """Original item ids of an array of columns (e.g. ``TopK.indices``); -1 becomes ``fill``.

        The result has the shape of ``indices``; its dtype is the item ids' dtype, or object
        when padding is present and ``fill`` is None (padding then reads None).
        """
        return decode_ids(self.item_ids, indices, fill)

    def to_frame(self, topk, user_rows, *, kind: str | None = None):
        """Recommendations as a long table: user, rank (1 = best), item (original ids), score.

        ``topk``: a TopK for the users at rows ``user_rows``; padding (-1) is left out.
        ``kind``: "pandas", "polars", "pyarrow" or "dict" (of NumPy arrays); None gives the
        kind of table this was built from (:func:`from_dataframe`), else pandas when installed,
        else a dict. Memory: O(len(user_rows) * k).
        """
        from ._tables import make_table

        rows = np.asarray(user_rows, dtype=np.int64).reshape(-1)
        idx, scores = np.asarray(topk.indices), np.asarray(topk.scores)
        r, rank = np.nonzero(idx >= 0)
        return make_table(
            {
                "user": self.user_ids[rows[r]],
                "rank": rank + 1,
                "item": self.item_ids[idx[r, rank]],
                "score": scores[r, rank],
            },
            kind if kind is not None else self.table_kind,
        )

    def append(self, users, items, values=None, timestamps=None, *, contexts=None):
        """These interactions with new events folded in: a new :class:`Interactions`.

        Arguments as :func:`from_arrays` (events in original ids). Known ids keep their rows
        and columns; new ids get new ones appended after them (in sorted order of the new
        ids), so stored row numbers stay valid as data grows. Events of a (user, item) pair
        are combined by the rule the data was built with (``duplicates``): "sum" and "count"
        add, "max" keeps the larger value, "last" keeps the latest event (by timestamp when the
        data has them, else the appended events come later), "first" keeps the earliest (an
        appended event older than a stored pair's latest is a ValueError: the stored pair no
        longer says when its first event happened, so rebuild with :func:`from_arrays`). The
        pair keeps its latest timestamp and that event's contexts. The result equals
        ``from_arrays`` on all events up to the order of new rows and columns (values are
        combined in float64 and stored in the matrix dtype, as there). Side features of new
        users/items are unknown: features are kept only when no user/item is added.
        Timestamps must be given exactly when the data has them, and the contexts it has.
        Cost O(nnz + E log E) for E new events; the original object is not modified.
        """
        return _append(self, users, items, values, timestamps, contexts)

    def with_matrix(self, matrix: sp.csr_matrix, timestamps=None, contexts=None) -> Interactions:
        """The same ids and side features over another matrix of the same shape."""
        return replace(self, matrix=matrix, timestamps=timestamps, contexts=contexts or {})


def id_order(ids: np.ndarray):
    """The permutation that sorts an id map, or None when it is sorted already (as built)."""
    ids = np.asarray(ids)
    if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return None
    return np.argsort(ids, kind="stable")


def decode_ids(ids: np.ndarray, indices, fill=None) -> np.ndarray:
    """ids[indices] with -1 (padding) read as ``fill``; object dtype when fill is None and
    padding is present (padding then reads None)."""
    idx = np.asarray(indices)
    pad = idx < 0
    if not pad.any():
        return ids[idx]
    out = (
        ids.astype(object)[np.where(pad, 0, idx)] if fill is None else (ids[np.where(pad, 0, idx)])
    )
    out[pad] = fill
    return out


def lookup_ids(id_map: np.ndarray, ids, what: str, order=None) -> np.ndarray:
    """Positions (int64) of original ``ids`` in ``id_map``; ValueError naming an unknown id.

    ``order``: :func:`id_order` of the map (None: the map is sorted). O(q log n) per call.
    """
    ids = np.asarray(ids)
    scalar = ids.ndim == 0
    ids = ids.reshape(-1)
    sorted_ids = id_map if order is None else id_map[order]
    if len(sorted_ids) == 0:
        if ids.size:
            raise ValueError(f"unknown {what} {ids[0].item()!r}")
        return np.zeros(0, dtype=np.int64)
    try:
        pos = np.searchsorted(sorted_ids, ids)
    except TypeError as exc:  # e.g. str ids looked up in an int map
        raise ValueError(f"unknown {what} {ids[0].item()!r} ({exc})") from None
    pos = np.minimum(pos, len(sorted_ids) - 1)
    bad = sorted_ids[pos] != ids
    if np.any(bad):
        raise ValueError(f"unknown {what} {ids[np.argmax(bad)].item()!r}")
    pos = pos.astype(np.int64) if order is None else order[pos].astype(np.int64)
    return pos[0:1] if scalar else pos


# --------------------------------------------------------------------------- building


def _column(values, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have length {n} (like users), got {arr.shape[0]}")
    return arr


def _codes(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0):
        raise ValueError(f"{name} must hold non-negative integer codes")
    return arr.astype(np.int64)


def _text_ids(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype != object:
        return arr
    if all(isinstance(v, str) for v in arr):
        return arr.astype(str)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr):
        return arr.astype(np.int64)
    raise TypeError(f"{name} must be all strings or all integers, got a mix of types")


def _numeric(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}") from None
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def from_arrays(
    users,
    items,
    values=None,
    timestamps=None,
    *,
    contexts=None,
    duplicates: str = "sum",
    dtype=np.float32,
) -> Interactions:
    """Build :class:`Interactions` from parallel 1-D arrays of events.

    ``contexts``: optional dict name -> non-negative integer codes, one per event; a combined
    entry keeps the context of its latest event.

    ``users`` / ``items``: any sortable ids (ints, strings). ``values``: event weights (default
    1). ``timestamps``: optional numbers. Events of the same (user, item) pair are combined by
    ``duplicates``: "sum" (default) adds values, "max" keeps the largest, "first"/"last" keep
    the earliest/latest event (by timestamp, then input order), "count" counts events. The
    combined entry keeps the latest timestamp of its events. Entries whose value is 0 are still
    stored (they are interactions). Cost: one O(E log E) sort of the E events.
    """
    if duplicates not in DUPLICATE_RULES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_RULES}, got {duplicates!r}")
    users = _column(users, "users")
    n = users.shape[0]
    items = _column(items, "items", n)
    vals = np.ones(n) if values is None else _numeric(_column(values, "values", n), "values")
    ts = (
        None if timestamps is None else _numeric(_column(timestamps, "timestamps", n), "timestamps")
    )
    ctx = {
        name: _codes(_column(c, f"contexts[{name!r}]", n), f"contexts[{name!r}]")
        for name, c in (contexts or {}).items()
    }
    for arr, name in ((users, "users"), (items, "items")):
        if arr.dtype.kind == "f" and arr.size and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinity")
        if arr.dtype == object and any(v is None for v in arr):
            raise ValueError(f"{name} contains missing ids")
    # Text ids held as Python objects (e.g. from pandas) become a NumPy unicode array: sortable,
    # compact, and savable without pickle.
    users, items = _text_ids(users, "users"), _text_ids(items, "items")
    try:
        user_ids, u = np.unique(users, return_inverse=True)
        item_ids, i = np.unique(items, return_inverse=True)
    except TypeError as exc:
        raise TypeError(f"user and item ids must be sortable: {exc}") from None
    u, i = u.reshape(-1).astype(np.int64), i.reshape(-1).astype(np.int64)
    ev = _combine(u, i, vals, ts, ctx, len(item_ids), duplicates)
    shape = (len(user_ids), len(item_ids))
    return Interactions(
        _csr_of(ev["rows"], ev["cols"], ev["values"], shape, dtype),
        user_ids,
        item_ids,
        ev["ts_last"],
        contexts=ev["contexts"],
        duplicates=duplicates,
    )


def _combine(u, i, vals, ts, ctx, n_items, duplicates) -> dict:
    """Events (row u, column i) combined per (u, i) pair by the ``duplicates`` rule, in (row,
    column) order: rows, cols, values (float64), ts_last / ts_first (None without times), the
    contexts of each pair's latest event. One O(E log E) sort."""
    n = u.shape[0]
    order_key = np.arange(n) if ts is None else ts
    # Sort by (user, item, time, input order): a stable lexsort keeps input order on equal times.
    order = np.lexsort((order_key, i, u))
    u, i, vals = u[order], i[order], np.asarray(vals)[order].astype(np.float64)
    ts_sorted = None if ts is None else ts[order]
    key = u * max(n_items, 1) + i
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if n else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], n] - 1 if n else starts
    if duplicates == "sum":
        combined = np.add.reduceat(vals, starts) if n else vals
    elif duplicates == "max":
        combined = np.maximum.reduceat(vals, starts) if n else vals
    elif duplicates == "first":
        combined = vals[starts]
    elif duplicates == "last":
        combined = vals[ends]
    else:
        combined = (ends - starts + 1).astype(np.float64)
    out = {
        "rows": u[starts],
        "cols": i[starts],
        "values": combined,
        "ts_last": None,
        "ts_first": None,
        "contexts": {name: c[order][ends] for name, c in ctx.items()},
    }
    if ts_sorted is not None:
        out["ts_last"] = np.maximum.reduceat(ts_sorted, starts) if n else ts_sorted
        out["ts_first"] = ts_sorted[starts]
    return out


def _csr_of(rows, cols, values, shape, dtype) -> sp.csr_matrix:
    """Canonical CSR of entries already in (row, column) order without repeats."""
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    itype = np.int32 if max(len(rows), shape[1]) < np.iinfo(np.int32).max else np.int64
    matrix = sp.csr_matrix(
        (np.asarray(values).astype(dtype), np.asarray(cols).astype(itype), indptr.astype(itype)),
        shape=shape,
    )
    matrix.has_sorted_indices = True
    matrix.has_canonical_format = True
    return matrix


def _grow_ids(id_map: np.ndarray, order, new, what: str):
    """(positions of ``new`` ids in the grown map, the grown map): known ids keep their
    positions, unknown ones are appended once each, in sorted order."""
    if new.dtype == object:
        new = _text_ids(new, what)
    if len(id_map) and new.size and (id_map.dtype.kind in "US") != (new.dtype.kind in "US"):
        raise TypeError(
            f"{what} ids must be of the kind the data was built with ({id_map.dtype}), got "
            f"{new.dtype}"
        )
    uniq, inverse = np.unique(new, return_inverse=True)
    pos = np.full(uniq.size, -1, dtype=np.int64)
    if len(id_map):
        sorted_ids = id_map if order is None else id_map[order]
        at = np.minimum(np.searchsorted(sorted_ids, uniq), len(id_map) - 1)
        known = sorted_ids[at] == uniq
        pos[known] = at[known] if order is None else order[at[known]]
    unknown = pos < 0
    pos[unknown] = len(id_map) + np.arange(int(unknown.sum()))
    grown = np.concatenate([id_map, uniq[unknown]]) if unknown.any() else id_map
    return pos[inverse.reshape(-1)], grown


def _append(data: Interactions, users, items, values, timestamps, contexts) -> Interactions:
    users = _column(users, "users")
    n = users.shape[0]
    items = _column(items, "items", n)
    vals = np.ones(n) if values is None else _numeric(_column(values, "values", n), "values")
    if (timestamps is None) != (data.timestamps is None):
        raise ValueError(
            "timestamps must be given exactly when the data has them (it has "
            f"{'some' if data.timestamps is not None else 'none'})"
        )
    ts = (
        None if timestamps is None else _numeric(_column(timestamps, "timestamps", n), "timestamps")
    )
    contexts = contexts or {}
    if set(contexts) != set(data.contexts):
        raise ValueError(
            f"contexts must have the names {sorted(data.contexts)}, got {sorted(contexts)}"
        )
    ctx = {
        name: _codes(_column(c, f"contexts[{name!r}]", n), f"contexts[{name!r}]")
        for name, c in contexts.items()
    }
    for arr, name in ((users, "users"), (items, "items")):
        if arr.dtype == object and any(v is None for v in arr):
            raise ValueError(f"{name} contains missing ids")
    u, user_ids = _grow_ids(data.user_ids, data._user_order, users, "user")
    i, item_ids = _grow_ids(data.item_ids, data._item_order, items, "item")
    n_items = len(item_ids)
    rule = data.duplicates
    ev = _combine(u, i, vals, ts, ctx, n_items, rule)
    m = data.matrix
    old_rows = _entry_rows(m)
    old_keys = old_rows * n_items + m.indices
    new_keys = ev["rows"] * n_items + ev["cols"]
    at = np.minimum(np.searchsorted(old_keys, new_keys), max(len(old_keys) - 1, 0))
    both = (old_keys[at] == new_keys) if len(old_keys) else np.zeros(len(new_keys), bool)
    o = at[both]
    values_out = m.data.astype(np.float64)
    nv = ev["values"][both]
    ov = values_out[o]
    # Whether the appended side of each shared pair holds its latest event.
    old_ts = data.timestamps  # given exactly when ts is (checked above)
    newer = np.ones(o.size, dtype=bool) if old_ts is None else ev["ts_last"][both] >= old_ts[o]
    if rule in ("sum", "count"):
        values_out[o] = ov + nv
    elif rule == "max":
        values_out[o] = np.maximum(ov, nv)
    elif rule == "last":
        values_out[o] = np.where(newer, nv, ov)
    elif old_ts is not None and np.any(ev["ts_first"][both] < old_ts[o]):
        raise ValueError(
            'duplicates="first": an appended event is older than the latest stored event of '
            "its (user, item) pair, so which came first is not known here; rebuild the data "
            "with from_arrays on all events"
        )
    ts_out = None
    if ts is not None:
        ts_out = np.asarray(data.timestamps).copy()
        ts_out[o] = np.maximum(ts_out[o], ev["ts_last"][both])
    ctx_out = {}
    for name, c in data.contexts.items():
        c = np.asarray(c).copy()
        c[o] = np.where(newer, ev["contexts"][name][both], c[o])
        ctx_out[name] = c
    fresh = ~both
    rows = np.concatenate([old_rows, ev["rows"][fresh]])
    cols = np.concatenate([np.asarray(m.indices, dtype=np.int64), ev["cols"][fresh]])
    order = np.lexsort((cols, rows))
    shape = (len(user_ids), n_items)
    matrix = _csr_of(
        rows[order],
        cols[order],
        np.concatenate([values_out, ev["values"][fresh]])[order],
        shape,
        m.dtype,
    )
    if ts_out is not None:
        ts_out = np.concatenate([ts_out, ev["ts_last"][fresh]])[order]
    ctx_out = {
        name: np.concatenate([c, ev["contexts"][name][fresh]])[order] for name, c in ctx_out.items()
    }
    user_features = data.user_features if len(user_ids) == data.n_users else {}
    item_features = data.item_features if n_items == data.n_items else {}
    return Interactions(
        matrix,
        user_ids,
        item_ids,
        ts_out,
        user_features,
        item_features,
        ctx_out,
        data.table_kind,
        rule,
    )


def from_dataframe(
    df,
    *,
    user: str = "user",
    item: str = "item",
    value: str | None = None,
    timestamp: str | None = None,
    contexts=(),
    duplicates: str = "sum",
    dtype=np.float32,
) -> Interactions:
    """Build :class:`Interactions` from a table of events (see :func:`from_arrays`).

    ``df``: a pandas, polars or pyarrow table, a dict of 1-D arrays, or anything speaking the
    Arrow PyCapsule or dataframe interchange protocol (read through pyarrow). ``value`` and
    ``timestamp`` name optional columns; datetime timestamps become int64 ns.
    ``contexts``: names of integer-coded context columns (e.g. hour of day). The kind of table
    is remembered: :meth:`Interactions.to_frame` gives back the same kind.
    Memory: one NumPy copy of each used column, plus :func:`from_arrays`'.
    """
    from ._tables import as_table

    table = as_table(df, "the events table")
    if table is None:
        raise TypeError(
            "events must be a pandas/polars/pyarrow table or a dict of 1-D arrays, "
            f"got {type(df).__name__}"
        )
    table.require((user, item, value, timestamp, *contexts), "the events table")
    for name in (user, item):
        if table.null_count(name):
            raise ValueError(f"column {name!r} has {table.null_count(name)} missing values")
    ts = None
    if timestamp is not None:
        ts = table.column(timestamp)
        if ts.dtype.kind == "M":
            ts = ts.astype("datetime64[ns]").astype(np.int64)
    out = from_arrays(
        table.column(user),
        table.column(item),
        None if value is None else table.column(value),
        ts,
        contexts={name: table.column(name) for name in contexts},
        duplicates=duplicates,
        dtype=dtype,
    )
    return replace(out, table_kind=table.kind)


_ML_NAMES = ("user", "item", "rating", "timestamp")


def read_columns(
    path,
    *,
    sep: str | None = None,
    header: bool | None = None,
    user: str | None = None,
    item: str | None = None,
    value: str | None = None,
    timestamp: str | None = None,
) -> dict:
    """The columns :func:`read` would use, from the file's first line only.

    Returns a dict: ``columns`` (all names, RecBole ``:type`` suffixes removed), ``user``,
    ``item``, ``value``, ``timestamp`` (the name picked, or None), ``unused`` (the other
    columns), ``header`` (bool) and ``sep``. Arguments and errors as :func:`read`.
    """
    return _layout(_first_line(Path(path)), Path(path), sep, header, user, item, value, timestamp)


def _first_line(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"not a file: {path}")
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            first = f.readline()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    if not first.strip():
        raise ValueError(f"{path}: the file is empty")
    return first


def _layout(first, path, sep, header, user, item, value, timestamp) -> dict:
    if sep is None:
        sep = next((s for s in ("::", "\t", ",", ";") if s in first), None)
    first_fields = _split_lines([first.strip()], sep)[0]
    if header is None:
        header = not all(_is_number(x) for x in first_fields)
    # RecBole atomic files name their columns "name:type" (user_id:token, rating:float).
    names = (
        [_RECBOLE_TYPE.sub("", f) for f in first_fields]
        if header
        else list(_ML_NAMES[: len(first_fields)])
    )
    out = {"columns": names, "header": header, "sep": sep}
    for role, wanted in (
        ("user", user),
        ("item", item),
        ("value", value),
        ("timestamp", timestamp),
    ):
        out[role] = _pick(names, wanted, _ALIASES[role], path)
    if out["user"] is None or out["item"] is None:
        raise ValueError(f"{path}: needs a user and an item column, found {names}")
    used = {out[r] for r in ("user", "item", "value", "timestamp")}
    out["unused"] = [c for c in names if c not in used]
    return out


def read(
    path,
    *,
    sep: str | None = None,
    header: bool | None = None,
    user: str | None = None,
    item: str | None = None,
    value: str | None = None,
    timestamp: str | None = None,
    duplicates: str = "sum",
) -> Interactions:
    """Read events from a text file: CSV/TSV with a header, or MovieLens-style without one.

    Columns: ``user`` / ``item`` / ``value`` / ``timestamp`` name them; None finds them by the
    usual names, case-insensitively (user, userId, user_id; item, movieId, item_id; rating,
    value, score, weight, count; timestamp, time, ts), so MovieLens ``ratings.csv`` and
    RecBole ``.inter`` files (``user_id:token`` headers) need no arguments;
    :func:`read_columns` tells which columns are used.

    ``sep``: None sniffs it from the first line (``::``, tab, comma, semicolon or whitespace,
    as in MovieLens ``ratings.dat``/``u.data``/``ratings.csv``). ``header``: None guesses (a
    first line whose fields are not all numbers is a header). Without a header the columns are
    ``user item [rating [timestamp]]``. ``value`` / ``timestamp`` columns are used when present.
    Raises FileNotFoundError or ValueError with a one-line message on bad paths or content.
    """
    path = Path(path)
    first = _first_line(path)
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    layout = _layout(first, path, sep, header, user, item, value, timestamp)
    sep, header, names = layout["sep"], layout["header"], layout["columns"]
    body = text[len(first) :] if header else text
    table = _parse_table(body, sep, len(names), path, first_line=2 if header else 1)
    if table.shape[0] == 0:
        raise ValueError(f"{path}: no events after the header")
    cols = {name: table[:, j] for j, name in enumerate(names)}
    user, item, value, timestamp = (layout[r] for r in ("user", "item", "value", "timestamp"))

    def numeric(name):
        try:
            return cols[name].astype(np.float64)
        except ValueError:
            bad = next(str(x) for x in cols[name] if not _is_number(x))
            raise ValueError(f"{path}: column {name!r} has a non-numeric value {bad!r}") from None

    def ids(name):
        try:
            return cols[name].astype(np.int64)  # NumPy parses the strings in C
        except (ValueError, OverflowError):
            return cols[name]

    vals = numeric(value) if value is not None else None
    ts = numeric(timestamp) if timestamp is not None else None
    if ts is not None and np.all(ts == np.round(ts)):
        ts = ts.astype(np.int64)
    return from_arrays(ids(user), ids(item), vals, ts, duplicates=duplicates)


_ALIASES = {
    "user": ("user", "userid", "user_id", "uid"),
    "item": ("item", "itemid", "item_id", "movieid", "movie_id", "iid"),
    "value": ("rating", "value", "score", "weight", "count"),
    "timestamp": ("timestamp", "time", "ts", "datetime"),
}


_RECBOLE_TYPE = re.compile(r":(token|token_seq|float|float_seq)$")


def _pick(names, wanted, aliases, path):
    """The column called ``wanted`` (error if absent), or the first alias present, or None."""
    if wanted is not None:
        if wanted not in names:
            raise ValueError(f"{path}: no column {wanted!r}; columns: {names}")
        return wanted
    lower = {n.lower(): n for n in names}
    return next((lower[a] for a in aliases if a in lower), None)


def _split_lines(lines, sep):
    if sep in (",", ";", "\t"):
        import csv

        rows = csv.reader(lines, delimiter=sep)
    else:
        rows = (line.split(sep) if sep is not None else line.split() for line in lines)
    return [[field.strip() for field in r] for r in rows]


def _parse_table(body: str, sep, width: int, path, first_line: int) -> np.ndarray:
    """The fields of ``body`` as a (lines, width) string array; blank lines are skipped.

    Fast path (no quotes, no blank lines): one split of the whole text, reshaped. Otherwise
    line by line (csv quoting honoured), with the first malformed line named in the error.
    """
    text = body.replace("\r\n", "\n").strip("\n")
    if not text.strip():
        return np.zeros((0, width), dtype=str)
    n_lines = text.count("\n") + 1
    if sep is not None and '"' not in text and "\n\n" not in text:
        one = sep if len(sep) == 1 else "\x1f"
        if len(sep) == 1 or one not in text:
            flat_text = text if one == sep else text.replace(sep, one)
            # Separators per line, counted on the bytes (sep and newline are ASCII).
            buf = np.frombuffer(flat_text.encode(), dtype=np.uint8)
            sep_at = np.flatnonzero(buf == ord(one))
            before_newline = np.searchsorted(sep_at, np.flatnonzero(buf == 10))
            per_line = np.diff(np.r_[0, before_newline, sep_at.size])
            if np.all(per_line == width - 1):
                flat = flat_text.replace("\n", one).split(one)
                return np.char.strip(np.array(flat).reshape(n_lines, width))
    lines = [line for line in text.split("\n") if line.strip()]
    rows = _split_lines(lines, sep)
    widths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    if np.any(widths != width):
        bad = int(np.argmax(widths != width))
        raise ValueError(
            f"{path}, line {bad + first_line} (not counting blank lines): expected {width} "
            f"fields separated by {sep or 'spaces'!r}, got {widths[bad]}"
        )
    return np.array(rows, dtype=str).reshape(len(rows), width)


def _is_number(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def contains(indptr, indices, n_cols: int, rows, cols) -> np.ndarray:
    """Whether each (rows[t], cols[t]) is stored in a canonical CSR (indptr, indices).

    Any shape of rows/cols (broadcast together); negative columns (padding) read False.
    One binary search of (row, column) keys: O(nnz + q log nnz) time, O(nnz + q) memory.
    """
    keys = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr)) * n_cols
    keys += np.asarray(indices, dtype=np.int64)
    rows, cols = np.broadcast_arrays(
        np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    )
    q = rows * n_cols + cols
    if keys.size == 0:
        return np.zeros(q.shape, dtype=bool)
    at = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    return (keys[at] == q) & (cols >= 0)


# --------------------------------------------------------------------------- preprocessing


def _entry_rows(m: sp.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))


def _select(data: Interactions, keep: np.ndarray):
    """The matrix restricted to stored entries where ``keep`` (aligned with data) is True."""
    m = data.matrix
    rows = _entry_rows(m)[keep]
    indptr = np.zeros(m.shape[0] + 1, dtype=m.indptr.dtype)
    np.cumsum(np.bincount(rows, minlength=m.shape[0]), out=indptr[1:])
    out = sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)
    out.has_sorted_indices = True
    ts = None if data.timestamps is None else data.timestamps[keep]
    return out, ts, {name: c[keep] for name, c in data.contexts.items()}


def filter_min_counts(data: Interactions, min_user: int = 1, min_item: int = 1) -> Interactions:
    """Drop users with fewer than ``min_user`` and items with fewer than ``min_item`` entries.

    Applied repeatedly until both hold (dropping items can push users below the bar). Dropped
    rows and columns are removed from the matrix and the id maps.
    """
    min_user = check_scalar(min_user, "min_user", min_value=1, integer=True)
    min_item = check_scalar(min_item, "min_item", min_value=1, integer=True)
    cur = data
    while True:
        m = cur.matrix
        ucount = np.diff(m.indptr)
        icount = np.bincount(m.indices, minlength=m.shape[1])
        keep_u, keep_i = ucount >= min_user, icount >= min_item
        if keep_u.all() and keep_i.all():
            return cur
        entry_keep = keep_u[_entry_rows(m)] & keep_i[m.indices]
        sub, ts, ctx = _select(cur, entry_keep)
        new_cols = np.cumsum(keep_i) - 1
        sub = sub[keep_u]
        sub = sp.csr_matrix(
            (sub.data, new_cols[sub.indices], sub.indptr),
            shape=(int(keep_u.sum()), int(keep_i.sum())),
        )
        cur = Interactions(
            sub,
            cur.user_ids[keep_u],
            cur.item_ids[keep_i],
            ts,
            {k: v[keep_u] for k, v in cur.user_features.items()},
            {k: v[keep_i] for k, v in cur.item_features.items()},
            ctx,
            cur.table_kind,
            cur.duplicates,
        )


def to_implicit(data: Interactions, threshold: float = 0.0, *, binary: bool = True) -> Interactions:
    """Keep entries with value > ``threshold`` (e.g. ratings >= 4 with threshold 3.5).

    ``binary``: kept values become 1 (else they keep their value). Ids and shape are kept.
    """
    threshold = check_scalar(threshold, "threshold")
    keep = data.matrix.data > threshold
    m, ts, ctx = _select(data, keep)
    if binary:
        m.data = np.ones_like(m.data)
    return data.with_matrix(m, ts, ctx)


# --------------------------------------------------------------------------- splits


def _rng(seed):
    return np.random.default_rng(seed)


def _split_by(data: Interactions, test_mask: np.ndarray) -> tuple[Interactions, Interactions]:
    return data.with_matrix(*_select(data, ~test_mask)), data.with_matrix(*_select(data, test_mask))


def _check_fraction(test_fraction):
    return check_scalar(test_fraction, "test_fraction", min_value=0, max_value=1)


def random_split(data: Interactions, test_fraction: float = 0.2, *, seed=0):
    """(train, test): each stored entry goes to test with probability ``test_fraction``."""
    test_fraction = _check_fraction(test_fraction)
    return _split_by(data, _rng(seed).random(data.nnz) < test_fraction)


def per_user_split(data: Interactions, test_fraction: float = 0.2, *, seed=0, min_train: int = 1):
    """(train, test): for each user, round(fraction * d_u) random entries go to test.

    At least ``min_train`` entries of each user stay in train (users with d_u <= min_train keep
    all their entries in train). Vectorised: one random key per entry, ranked within its row.
    """
    test_fraction = _check_fraction(test_fraction)
    min_train = check_scalar(min_train, "min_train", min_value=0, integer=True)
    m = data.matrix
    deg = np.diff(m.indptr)
    rows = _entry_rows(m)
    key = _rng(seed).random(data.nnz)
    rank = _rank_within_rows(rows, key, m.indptr)
    n_test = np.minimum(np.round(test_fraction * deg), np.maximum(deg - min_train, 0))
    return _split_by(data, rank < n_test[rows])


def _rank_within_rows(rows, key, indptr) -> np.ndarray:
    """0-based rank of each entry's key within its row (ascending, ties by position)."""
    order = np.lexsort((np.arange(len(key)), key, rows))
    rank = np.empty(len(key), dtype=np.int64)
    rank[order] = np.arange(len(key)) - indptr[rows[order]]
    return rank


def leave_last_out(data: Interactions, n_last: int = 1, *, min_train: int = 1):
    """(train, test): each user's ``n_last`` latest entries (by timestamp) go to test.

    Ties in time go by item column (the larger column counts as later). Users with no more than
    ``min_train`` entries keep them all in train. Needs timestamps.
    """
    if data.timestamps is None:
        raise ValueError("leave_last_out needs timestamps; this Interactions has none")
    n_last = check_scalar(n_last, "n_last", min_value=1, integer=True)
    min_train = check_scalar(min_train, "min_train", min_value=0, integer=True)
    m = data.matrix
    deg = np.diff(m.indptr)
    rows = _entry_rows(m)
    rank_from_end = deg[rows] - 1 - _rank_within_rows(rows, data.timestamps, m.indptr)
    n_test = np.minimum(n_last, np.maximum(deg - min_train, 0))
    return _split_by(data, rank_from_end < n_test[rows])


# --------------------------------------------------------------------------- synthetic data


def synthetic(
    n_users: int = 6000,
    n_items: int = 2500,
    *,
    n_segments: int = 8,
    n_categories: int = 16,
    n_factors: int = 16,
    impressions_per_user: float = 300.0,
    popularity_skew: float = 1.0,
    popularity_share: float = 0.3,
    taste_strength: float = 10.0,
    segment_noise: float = 0.1,
    n_contexts: int = 4,
    context_strength: float = 1.0,
    seed=0,
) -> Interactions:
    """A seeded implicit-feedback data set with latent structure: the built-in data of the demo.

    Users belong to hidden taste segments and items to categories; each has a latent vector
    (its segment's or category's centre plus noise). Item popularity is Zipf-like with exponent
    ``popularity_skew`` (shuffled over ids) and user activity log-normal. Each user is shown
    about ``impressions_per_user`` items, a ``popularity_share`` of them drawn by popularity and
    the rest uniformly, and clicks each with probability
    sigmoid(taste_strength * <u, v> + 0.3 log-popularity + user bias - offset): the
    clicks are the interactions (value 1, a timestamp per click). Observed side features:
    ``user_features["segment"]`` (the hidden segment, wrong for a ``segment_noise`` fraction of
    users) and ``item_features["category"]``, so CTR models on features and CF models on the
    matrix both have real signal. Each impression happens in one of ``n_contexts`` contexts
    (say, parts of the day) drawn uniformly, and each (category, context) pair adds an
    affinity ~ N(0, context_strength) to the click logit: ``contexts["daypart"]`` holds the
    context of each click, so a context-aware CTR model has signal that CF alone lacks.
    Memory: O(n_users * impressions_per_user).
    """
    n_users = check_scalar(n_users, "n_users", min_value=1, integer=True)
    n_items = check_scalar(n_items, "n_items", min_value=1, integer=True)
    rng = _rng(seed)
    seg_centres = rng.normal(size=(n_segments, n_factors)) / np.sqrt(n_factors)
    cat_centres = rng.normal(size=(n_categories, n_factors)) / np.sqrt(n_factors)
    segment = rng.integers(n_segments, size=n_users)
    category = rng.integers(n_categories, size=n_items)
    U = seg_centres[segment] + 0.5 * rng.normal(size=(n_users, n_factors)) / np.sqrt(n_factors)
    V = cat_centres[category] + 0.5 * rng.normal(size=(n_items, n_factors)) / np.sqrt(n_factors)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    popularity = rng.permutation(1.0 / (np.arange(n_items) + 5.0) ** popularity_skew)
    popularity /= popularity.sum()
    activity = rng.lognormal(0.0, 0.8, n_users)
    n_shown = np.minimum(
        np.maximum(5, np.round(activity / activity.mean() * impressions_per_user)), n_items
    ).astype(np.int64)
    rows = np.repeat(np.arange(n_users, dtype=np.int64), n_shown)
    # A share of impressions follows popularity, the rest is uniform so that the tail is seen.
    shown_p = popularity_share * popularity + (1.0 - popularity_share) / n_items
    cols = rng.choice(n_items, size=rows.size, p=shown_p / shown_p.sum())
    user_bias = rng.normal(0.0, 0.3, n_users)
    daypart = rng.integers(n_contexts, size=rows.size)
    affinity = rng.normal(0.0, context_strength, (n_categories, n_contexts))
    logit = (
        taste_strength * np.einsum("ij,ij->i", U[rows], V[cols])
        + affinity[category[cols], daypart]
        + 0.3 * np.log(popularity[cols] * n_items)
        + user_bias[rows]
        - 2.5
    )
    clicked = rng.random(rows.size) < 1.0 / (1.0 + np.exp(-logit))
    times = rng.random(rows.size) * 1e6
    data = from_arrays(
        rows[clicked],
        cols[clicked],
        None,
        times[clicked].astype(np.int64),
        contexts={"daypart": daypart[clicked]},
        duplicates="max",
    )
    # from_arrays maps ids through np.unique: users/items never clicked are dropped, so the
    # side features are gathered through the id maps (ids here are the generator's indices).
    observed = segment.copy()
    flip = rng.random(n_users) < segment_noise
    observed[flip] = rng.integers(n_segments, size=int(flip.sum()))
    return replace(
        data,
        user_features={"segment": observed[data.user_ids].astype(np.int64)},
        item_features={"category": category[data.item_ids].astype(np.int64)},
    )


def __dir__():
    # What dir() and tab completion show: the public names, not np / sp / helpers.
    return list(__all__)
