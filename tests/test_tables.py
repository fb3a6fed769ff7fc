"""Tables in, tables out: pandas, polars, pyarrow and dicts of arrays through one path."""

import numpy as np
import pytest

from fastrec import data
from fastrec._tables import as_table
from fastrec.features import HashingEncoder, OneHotEncoder
from fastrec.topk import TopK

KINDS = ["dict", "pandas", "polars", "pyarrow"]


def events(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "user": np.array([f"u{x}" for x in rng.integers(0, 9, n)]),
        "item": rng.integers(100, 130, n),
        "rating": rng.integers(1, 6, n).astype(np.float64),
        "ts": rng.integers(0, 10**6, n),
        "hour": rng.integers(0, 24, n),
    }


def as_kind(cols, kind):
    if kind == "dict":
        return dict(cols)
    if kind == "pandas":
        return pytest.importorskip("pandas", reason="the pandas case needs pandas").DataFrame(cols)
    if kind == "polars":
        return pytest.importorskip("polars", reason="the polars case needs polars").DataFrame(cols)
    pa = pytest.importorskip("pyarrow", reason="the pyarrow case needs pyarrow")
    return pa.table(cols)


class ArrowStreamOnly:
    """A table known only by the Arrow PyCapsule protocol (as duckdb or nanoarrow give)."""

    def __init__(self, table):
        self._table = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self._table.__arrow_c_stream__(requested_schema)


def same_interactions(a, b):
    assert (a.matrix != b.matrix).nnz == 0
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    for name in b.contexts:
        np.testing.assert_array_equal(a.contexts[name], b.contexts[name])


@pytest.mark.parametrize("kind", KINDS)
def test_from_dataframe_same_interactions_from_every_kind(kind):
    ev = events()
    ref = data.from_arrays(
        ev["user"],
        ev["item"],
        ev["rating"],
        ev["ts"],
        contexts={"hour": ev["hour"]},
        duplicates="last",
    )
    got = data.from_dataframe(
        as_kind(ev, kind), value="rating", timestamp="ts", contexts=["hour"], duplicates="last"
    )
    same_interactions(got, ref)
    assert got.table_kind == kind


def test_arrow_pycapsule_table_is_read():
    pa = pytest.importorskip("pyarrow", reason="Arrow streams are read through pyarrow")
    ev = events()
    got = data.from_dataframe(ArrowStreamOnly(pa.table(ev)), value="rating")
    same_interactions(got, data.from_arrays(ev["user"], ev["item"], ev["rating"]))


@pytest.mark.parametrize("kind", KINDS)
def test_missing_column_named_with_the_columns_that_exist(kind):
    table = as_kind(events(), kind)
    with pytest.raises(ValueError) as info:
        data.from_dataframe(table, user="customer")
    msg = str(info.value)
    assert "no column 'customer'" in msg and "'item'" in msg and "'rating'" in msg
    assert len(msg) < 200  # the column data is never dumped
    with pytest.raises(ValueError, match="no column 'nope'.*'genre'"):
        HashingEncoder(["user", "nope"]).fit(as_kind({"user": [1, 2], "genre": [3, 4]}, kind))


@pytest.mark.parametrize("kind", ["pandas", "polars", "pyarrow"])
def test_missing_ids_rejected(kind):
    table = as_kind({"user": ["a", None, "c"], "item": [1, 2, 3]}, kind)
    with pytest.raises(ValueError, match="column 'user' has 1 missing value"):
        data.from_dataframe(table)


def test_not_a_table_rejected():
    with pytest.raises(TypeError, match="events must be"):
        data.from_dataframe(np.zeros((3, 2)))


@pytest.mark.parametrize("kind", KINDS)
def test_to_frame_gives_back_the_kind_given(kind):
    ev = events()
    inter = data.from_dataframe(as_kind(ev, kind), value="rating")
    rows = inter.user_index(["u1", "u3"])
    top = TopK(
        np.array([[0, 2, -1], [1, -1, -1]]),
        np.array([[3.0, 2.0, -np.inf], [1.0, -np.inf, -np.inf]]),
    )
    out = inter.to_frame(top, rows)
    ref = inter.to_frame(top, rows, kind="dict")
    assert type(out) is type(as_kind({"a": [1]}, kind))
    cols = as_table(out)
    assert cols.names == ["user", "rank", "item", "score"]
    for name in cols.names:
        np.testing.assert_array_equal(np.asarray(cols.column(name)), ref[name])
    np.testing.assert_array_equal(ref["user"], ["u1", "u1", "u3"])
    np.testing.assert_array_equal(ref["rank"], [1, 2, 1])
    np.testing.assert_array_equal(ref["item"], inter.item_ids[[0, 2, 1]])


def test_to_frame_kind_checked():
    inter = data.from_arrays([1], [2])
    with pytest.raises(ValueError, match="kind must be one of"):
        inter.to_frame(TopK(np.zeros((1, 1), int), np.ones((1, 1))), [0], kind="excel")


@pytest.mark.parametrize("kind", ["pandas", "polars", "pyarrow"])
def test_encoders_same_matrix_from_every_kind(kind):
    ev = events(200, seed=1)
    table = as_kind(ev, kind)
    cols = ["user", "item", "hour"]
    ref = HashingEncoder(cols, numeric=["rating"], n_features=2**12).fit_transform(ev)
    got = HashingEncoder(cols, numeric=["rating"], n_features=2**12).fit_transform(table)
    assert (got != ref).nnz == 0
    ref = OneHotEncoder(cols).fit_transform(ev)
    got = OneHotEncoder(cols).fit_transform(table)
    assert (got != ref).nnz == 0
