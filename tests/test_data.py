"""fastrec.data: building Interactions, duplicate rules, filters, implicit conversion, splits."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from fastrec import data


def events():
    users = np.array(["b", "a", "a", "c", "a", "b"])
    items = np.array([20, 10, 30, 10, 10, 30])
    values = np.array([1.0, 2.0, 5.0, 4.0, 3.0, 1.0])
    times = np.array([5, 1, 2, 3, 4, 0])
    return users, items, values, times


def test_from_arrays_builds_csr_and_id_maps_both_ways():
    users, items, values, times = events()
    d = data.from_arrays(users, items, values, times)
    assert list(d.user_ids) == ["a", "b", "c"] and list(d.item_ids) == [10, 20, 30]
    dense = d.matrix.toarray()
    np.testing.assert_array_equal(dense, [[5, 0, 5], [0, 1, 1], [4, 0, 0]])  # a/10 summed
    assert d.matrix.has_canonical_format
    np.testing.assert_array_equal(d.user_index(["c", "a"]), [2, 0])
    np.testing.assert_array_equal(d.item_index([30]), [2])
    np.testing.assert_array_equal(d.decode_items(np.array([[2, -1]]), fill=-1), [[30, -1]])
    # timestamps are aligned with matrix.data; a combined entry keeps its latest time
    np.testing.assert_array_equal(d.timestamps, [4, 2, 5, 0, 3])


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("sum", 5.0),
        ("max", 3.0),
        ("first", 2.0),
        ("last", 3.0),
        ("count", 2.0),
    ],
)
def test_duplicate_rules(rule, expected):
    users, items, values, times = events()
    d = data.from_arrays(users, items, values, times, duplicates=rule)
    assert d.matrix[0, 0] == expected


def test_last_without_timestamps_means_input_order():
    d = data.from_arrays([1, 1, 1], [7, 7, 7], [3.0, 9.0, 4.0], duplicates="last")
    assert d.matrix[0, 0] == 4.0


def test_unknown_ids_rejected_clearly():
    d = data.from_arrays(*events()[:2])
    with pytest.raises(ValueError, match="unknown user id 'zz'"):
        d.user_index(["a", "zz"])
    with pytest.raises(ValueError, match="unknown item id 99"):
        d.item_index(99)


def test_bad_inputs_rejected():
    with pytest.raises(ValueError, match="duplicates"):
        data.from_arrays([1], [2], duplicates="mean")
    with pytest.raises(ValueError, match="items must have length"):
        data.from_arrays([1, 2], [2])
    with pytest.raises(ValueError, match="values contains NaN"):
        data.from_arrays([1], [2], [np.nan])


def test_from_dataframe_matches_from_arrays():
    pd = pytest.importorskip("pandas", reason="needs pandas (test extra)")
    users, items, values, times = events()
    df = pd.DataFrame({"u": users, "i": items, "r": values, "t": pd.to_datetime(times, unit="s")})
    d = data.from_dataframe(df, user="u", item="i", value="r", timestamp="t")
    ref = data.from_arrays(users, items, values, times.astype("int64") * 10**9)
    assert (d.matrix != ref.matrix).nnz == 0
    np.testing.assert_array_equal(d.timestamps, ref.timestamps)
    with pytest.raises(ValueError, match="no column 'x'"):
        data.from_dataframe(df, user="x", item="i")


def test_read_movielens_and_csv(tmp_path):
    ml = tmp_path / "u.data"
    ml.write_text("1\t10\t5\t100\n1\t20\t3\t101\n2\t10\t4\t99\n")
    d = data.read(ml)
    assert d.shape == (2, 2) and list(d.user_ids) == [1, 2]
    np.testing.assert_array_equal(d.timestamps, [100, 101, 99])
    dat = tmp_path / "ratings.dat"
    dat.write_text("1::10::5::100\n2::20::1::7\n")
    assert data.read(dat).nnz == 2
    csv = tmp_path / "events.csv"
    csv.write_text("user,item,rating\nann,x,1\nbob,y,2\n")
    d = data.read(csv)
    assert list(d.user_ids) == ["ann", "bob"] and d.timestamps is None
    ml_csv = tmp_path / "ratings.csv"
    ml_csv.write_text(
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n"
    )
    d = data.read(ml_csv)
    np.testing.assert_array_equal(d.item_ids, [31, 1029])
    np.testing.assert_array_equal(d.matrix.data, [2.5, 3.0])
    with pytest.raises(ValueError, match="no column 'who'"):
        data.read(ml_csv, user="who")


def test_read_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        data.read(tmp_path / "missing.csv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t2\t3\n4\t5\n")
    with pytest.raises(ValueError, match="line 2 .*: expected 3 fields"):
        data.read(bad)
    swapped = tmp_path / "swapped.dat"  # one line short, one long: same total field count
    swapped.write_text("1::2::3::4\n1::2::3\n1::2::3::4::5\n")
    with pytest.raises(ValueError, match="line 2 .*: expected 4 fields"):
        data.read(swapped)
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('user,item\n"a, b",x\n\nc,y\n')
    assert list(data.read(quoted).user_ids) == ["a, b", "c"]
    nonnum = tmp_path / "nonnum.csv"
    nonnum.write_text("user,item,rating\n1,2,high\n")
    with pytest.raises(ValueError, match="non-numeric value 'high'"):
        data.read(nonnum)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        data.read(empty)


def test_filter_min_counts_iterates_to_a_fixed_point():
    # user 2 has one item; dropping it leaves item 3 with one user, so it goes too.
    users = [0, 0, 0, 1, 1, 1, 2, 3, 3]
    items = [0, 1, 2, 0, 1, 2, 3, 3, 0]
    d = data.filter_min_counts(data.from_arrays(users, items), min_user=2, min_item=2)
    assert list(d.user_ids) == [0, 1, 3] or list(d.user_ids) == [0, 1]
    m = d.matrix
    assert np.diff(m.indptr).min() >= 2 and np.bincount(m.indices).min() >= 2


def test_to_implicit_threshold():
    d = data.from_arrays([0, 0, 1], [0, 1, 1], [5.0, 2.0, 4.0], [1, 2, 3])
    imp = data.to_implicit(d, threshold=3.5)
    np.testing.assert_array_equal(imp.matrix.toarray(), [[1, 0], [0, 1]])
    np.testing.assert_array_equal(imp.timestamps, [1, 3])
    assert imp.shape == d.shape


def _union_is_original(d, train, test):
    assert train.shape == test.shape == d.shape
    assert (train.matrix + test.matrix != d.matrix).nnz == 0
    assert train.matrix.multiply(test.matrix).nnz == 0


def test_splits_partition_and_are_seeded():
    d = data.synthetic(300, 120, seed=3)
    for split in (data.random_split, data.per_user_split):
        a_train, a_test = split(d, 0.25, seed=7)
        _, b_test = split(d, 0.25, seed=7)
        _union_is_original(d, a_train, a_test)
        assert (a_test.matrix != b_test.matrix).nnz == 0
        assert 0.15 < a_test.nnz / d.nnz < 0.35


def test_per_user_split_fraction_per_user():
    d = data.synthetic(200, 100, seed=1)
    _, test = data.per_user_split(d, 0.2, seed=0)
    deg = np.diff(d.matrix.indptr)
    np.testing.assert_array_equal(
        np.diff(test.matrix.indptr), np.minimum(np.round(0.2 * deg), deg - 1)
    )


def test_leave_last_out_takes_the_latest():
    d = data.from_arrays([0, 0, 0, 1, 1, 2], [0, 1, 2, 0, 2, 1], None, [5, 9, 1, 3, 2, 4])
    train, test = data.leave_last_out(d)
    _union_is_original(d, train, test)
    np.testing.assert_array_equal(test.matrix.toarray(), [[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="needs timestamps"):
        data.leave_last_out(data.from_arrays([0], [0]))


def test_synthetic_is_seeded_and_has_side_features():
    a, b = data.synthetic(400, 150, seed=5), data.synthetic(400, 150, seed=5)
    assert (a.matrix != b.matrix).nnz == 0
    assert a.user_features["segment"].shape == (a.n_users,)
    assert a.item_features["category"].shape == (a.n_items,)
    assert isinstance(a.matrix, sp.csr_matrix) and a.matrix.has_canonical_format
    counts = np.bincount(a.matrix.indices, minlength=a.n_items)
    assert counts.max() > 3 * np.median(counts)  # popularity skew


def test_object_ids_become_numpy_arrays_savable_without_pickle():
    d = data.from_arrays(np.array(["x", "y"], dtype=object), np.array([3, 4], dtype=object))
    assert d.user_ids.dtype.kind == "U" and d.item_ids.dtype == np.int64
    with pytest.raises(TypeError, match="mix of types"):
        data.from_arrays(np.array(["x", 1], dtype=object), [1, 2])


def test_contains_finds_stored_entries_only():
    m = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0]]))
    got = data.contains(m.indptr, m.indices, 3, [0, 0, 1, 1, 0], [1, 0, 0, 2, -1])
    np.testing.assert_array_equal(got, [True, False, True, False, False])


def test_contexts_follow_entries_through_duplicates_filters_and_splits():
    d = data.from_arrays(
        [0, 0, 0, 1, 1, 2],
        [0, 0, 1, 0, 1, 1],
        None,
        [1, 5, 2, 3, 4, 6],
        contexts={"daypart": [3, 1, 2, 0, 2, 1]},
    )
    # (0, 0) combines two events: the context of the latest (time 5) is kept
    np.testing.assert_array_equal(d.contexts["daypart"], [1, 2, 0, 2, 1])
    train, test = data.leave_last_out(d)
    np.testing.assert_array_equal(test.contexts["daypart"], [1, 2])  # (0,0)@5 and (1,1)@4
    kept = data.filter_min_counts(d, min_user=2)
    np.testing.assert_array_equal(kept.contexts["daypart"], [1, 2, 0, 2])
    assert train.contexts["daypart"].size == train.nnz
    with pytest.raises(ValueError, match="non-negative integer codes"):
        data.from_arrays([0], [0], contexts={"daypart": [-1]})


def test_from_dataframe_contexts():
    pd = pytest.importorskip("pandas", reason="needs pandas (test extra)")
    df = pd.DataFrame({"user": [1, 1, 2], "item": [5, 6, 5], "hour": [7, 20, 9]})
    d = data.from_dataframe(df, contexts=["hour"])
    np.testing.assert_array_equal(d.contexts["hour"], [7, 20, 9])


@st.composite
def event_lists(draw):
    n = draw(st.integers(0, 30))
    users = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    items = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n))
    values = draw(st.lists(st.integers(-3, 5), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    return users, items, values, times


@given(event_lists(), st.sampled_from(data.DUPLICATE_RULES))
def test_from_arrays_matches_a_naive_dictionary(events, rule):
    users, items, values, times = events
    groups = {}
    for pos, (u, i, v, t) in enumerate(zip(users, items, values, times)):
        groups.setdefault((u, i), []).append((t, pos, v))
    expected = {}
    for key, evs in groups.items():
        evs.sort()  # by time, then input order
        vals = [v for _, _, v in evs]
        expected[key] = (
            {
                "sum": sum(vals),
                "max": max(vals),
                "first": vals[0],
                "last": vals[-1],
                "count": len(vals),
            }[rule],
            max(t for t, _, _ in evs),
        )
    d = data.from_arrays(
        np.array(users, dtype=np.int64),
        np.array(items, dtype=str),
        np.array(values, dtype=float),
        np.array(times, dtype=np.int64),
        duplicates=rule,
        dtype=np.float64,
    )
    assert d.nnz == len(expected)
    m = d.matrix.tocoo()
    for r, c, v, t in zip(m.row, m.col, m.data, d.timestamps):
        assert expected[(d.user_ids[r], d.item_ids[c])] == (v, t)
