"""One narrow path for tables in and out: pandas, polars, pyarrow, dicts of 1-D arrays.

A table is read column by column into NumPy arrays, duck-typed, so that none of pandas, polars
or pyarrow is imported unless the user's table is one (no hard dependency on any). Any other
table that speaks the Arrow PyCapsule protocol (``__arrow_c_stream__``) or the dataframe
interchange protocol (``__dataframe__``) is read through pyarrow when it is installed.
Tables out (:func:`make_table`) come back as the kind the user gave.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

TABLE_KINDS = ("pandas", "polars", "pyarrow", "dict")

__all__ = ["TABLE_KINDS", "Table", "as_table", "make_table"]


class Table:
    """Columns of a user's table by name: ``names``, ``column(name)``, ``null_count(name)``.

    ``kind``: "pandas", "polars", "pyarrow" or "dict" (what :func:`make_table` gives back).
    """

    def __init__(self, kind: str, names: list, get, nulls):
        self.kind = kind
        self.names = list(names)
        self._get = get
        self._nulls = nulls

    def __len__(self) -> int:
        return len(self.names)

    def require(self, names, what: str = "table") -> None:
        """ValueError naming the first missing column and listing the columns that exist."""
        missing = [c for c in names if c is not None and c not in self.names]
        if missing:
            raise ValueError(
                f"{what} has no column {missing[0]!r}"
                + (f" (nor {missing[1:]})" if len(missing) > 1 else "")
                + f"; its columns: {self.names}"
            )

    def column(self, name) -> np.ndarray:
        """The column as a NumPy array (strings: an object array; nulls: None or NaN)."""
        self.require([name])
        return self._get(name)

    def null_count(self, name) -> int:
        self.require([name])
        return int(self._nulls(name))


def _pyarrow_table(table) -> Table:
    def get(name):
        col = table.column(name)
        return np.asarray(col.to_numpy(zero_copy_only=False))

    return Table("pyarrow", table.column_names, get, lambda name: table.column(name).null_count)


def as_table(table, what: str = "table") -> Table | None:
    """A :class:`Table` view of ``table``, or None when it is not a table (e.g. a 2-D array).

    Costs nothing up front: columns are converted one at a time, when asked for.
    """
    if isinstance(table, Table):
        return table
    if isinstance(table, Mapping):
        cols = {name: np.asarray(col) for name, col in table.items()}

        def nulls(name):
            v = cols[name]
            if v.dtype == object:
                return sum(x is None for x in v)
            return int(np.isnan(v).sum()) if v.dtype.kind == "f" else 0

        return Table("dict", list(cols), cols.__getitem__, nulls)
    if hasattr(table, "column_names") and hasattr(table, "column"):  # pyarrow Table/RecordBatch
        return _pyarrow_table(table)
    if hasattr(table, "iloc") and hasattr(table, "columns"):  # pandas
        return Table(
            "pandas",
            list(table.columns),
            lambda name: table[name].to_numpy(),
            lambda name: table[name].isna().sum(),
        )
    if hasattr(table, "get_column") and hasattr(table, "columns"):  # polars
        return Table(
            "polars",
            list(table.columns),
            lambda name: table.get_column(name).to_numpy(),
            lambda name: table.get_column(name).null_count(),
        )
    if hasattr(table, "__arrow_c_stream__") or hasattr(table, "__dataframe__"):
        try:
            import pyarrow as pa
        except ImportError:
            raise TypeError(
                f"{what} is a {type(table).__name__}, read through Arrow: pip install pyarrow "
                "(or pass a pandas/polars DataFrame or a dict of 1-D arrays)"
            ) from None
        if hasattr(table, "__arrow_c_stream__"):
            return _pyarrow_table(pa.table(table))
        from pyarrow.interchange import from_dataframe

        return _pyarrow_table(from_dataframe(table))
    return None


def make_table(columns: dict, kind: str | None = None):
    """A table of ``kind`` (default: pandas when installed, else a dict) from name -> array."""
    if kind is None:
        try:
            import pandas  # noqa: F401

            kind = "pandas"
        except ImportError:
            kind = "dict"
    if kind not in TABLE_KINDS:
        raise ValueError(f"kind must be one of {TABLE_KINDS} or None, got {kind!r}")
    if kind == "dict":
        return dict(columns)
    if kind == "pandas":
        import pandas as pd

        return pd.DataFrame(columns)
    if kind == "polars":
        import polars as pl

        return pl.DataFrame(columns)
    import pyarrow as pa

    return pa.table(columns)
