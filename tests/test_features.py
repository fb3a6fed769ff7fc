"""CTR features: one-hot with a vocabulary and seeded feature hashing, to CSR."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec.features import HashingEncoder, OneHotEncoder, _splitmix64, fnv1a64
from fastrec.models import LogisticCTR


def _events(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "user": rng.integers(0, 50, n),
        "item": rng.integers(0, 30, n),
        "genre": rng.choice(np.array(["drama", "comedy", "news", "sport"]), n),
        "score": rng.standard_normal(n),
    }


def test_one_hot_layout_vocabulary_and_names():
    table = {"u": np.array([3, 1, 3, 7]), "g": np.array(["b", "a", "b", "c"])}
    enc = OneHotEncoder(["u", "g"])
    X = enc.fit_transform(table)
    assert sp.issparse(X) and X.shape == (4, 6) and X.dtype == np.float32
    assert enc.feature_names_ == ["u=1", "u=3", "u=7", "g=a", "g=b", "g=c"]
    expected = np.array(
        [[0, 1, 0, 0, 1, 0], [1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 0, 1]],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(X.toarray(), expected)
    assert X.has_canonical_format


def test_one_hot_unknown_values_ignored_or_rejected():
    enc = OneHotEncoder(["u"]).fit({"u": np.array([1, 2, 2])})
    X = enc.transform({"u": np.array([2, 5, 1])})
    np.testing.assert_array_equal(X.toarray(), [[0, 1], [0, 0], [1, 0]])
    strict = OneHotEncoder(["u"], handle_unknown="error").fit({"u": np.array([1, 2])})
    with pytest.raises(ValueError, match="value 5 not seen in fit"):
        strict.transform({"u": np.array([1, 5])})


def test_one_hot_min_count_and_numeric_columns():
    table = {"u": np.array([1, 1, 2, 3, 3, 3]), "x": np.array([0.5, 1, 2, 3, 4, 5.0])}
    enc = OneHotEncoder(["u"], numeric=["x"], min_count=2).fit(table)
    assert enc.feature_names_ == ["u=1", "u=3", "x"]
    X = enc.transform(table).toarray()
    np.testing.assert_array_equal(X[:, 2], table["x"].astype(np.float32))
    np.testing.assert_array_equal(X[2, :2], [0, 0])  # value 2 is below min_count


def test_hashing_is_seeded_stable_and_documented():
    table = {"user": np.array([10, 11, 10]), "genre": np.array(["a", "b", "a"])}
    enc = HashingEncoder(["user", "genre"], n_features=2**12, seed=7)
    X = enc.fit_transform(table)
    assert X.shape == (3, 4096) and X.dtype == np.float32
    np.testing.assert_array_equal(X[0].toarray(), X[2].toarray())
    assert np.all(np.diff(X.indptr) == 2) and X.sum() == 6

    # The documented formula, recomputed by hand for user=10 and genre="b".
    def column(name, key):
        salt = _splitmix64(np.array([fnv1a64(name.encode()) ^ 7], dtype=np.uint64))[0]
        return int(_splitmix64(np.array([key], dtype=np.uint64) ^ salt)[0] % np.uint64(4096))

    assert X[0, column("user", 10)] == 1
    assert X[1, column("genre", fnv1a64(b"b"))] == 1
    # Same seed, new encoder, rows in another order: same columns. Another seed: different.
    again = HashingEncoder(["user", "genre"], n_features=2**12, seed=7).transform(
        {"user": table["user"][::-1], "genre": table["genre"][::-1]}
    )
    np.testing.assert_array_equal(again.toarray(), X.toarray()[::-1])
    other = HashingEncoder(["user", "genre"], n_features=2**12, seed=8).transform(table)
    assert (other != X).nnz > 0


def test_hashing_counts_collisions():
    n_values = 3000
    table = {"id": np.arange(n_values)}
    enc = HashingEncoder(["id"], n_features=2**10, seed=1).fit(table)
    X = enc.transform(table)
    used = np.unique(X.indices).size
    assert enc.n_keys_ == n_values
    assert enc.n_columns_used_ == used
    assert enc.n_collisions_ == n_values - used > 0
    wide = HashingEncoder(["id"], n_features=2**40, seed=1).fit(table)
    assert wide.n_collisions_ == 0


def test_hashed_duplicates_in_a_row_add_up():
    # Two columns with the same name-independent key, tiny n_features: collisions in a row sum.
    table = {"a": np.arange(200), "b": np.arange(200)}
    X = HashingEncoder(n_features=4, seed=0).transform(table)
    assert X.has_canonical_format
    np.testing.assert_array_equal(np.asarray(X.sum(axis=1)).ravel(), 2.0)


@pytest.mark.parametrize("kind", ["dict", "array", "pandas"])
def test_table_kinds_give_the_same_matrix(kind):
    ev = _events(200)
    cols = ["user", "item", "genre"]
    ref = HashingEncoder(cols, n_features=2**16).transform(ev)
    if kind == "array":
        table = np.column_stack([ev[c].astype(str) for c in cols])
        got = HashingEncoder([0, 1, 2], n_features=2**16).transform(table)
        # Column names differ (0, 1, 2), so the hashes do too: compare the structure.
        assert got.shape == ref.shape and np.all(np.diff(got.indptr) <= 3)
        return
    if kind == "pandas":
        pd = pytest.importorskip("pandas", reason="needs pandas (test extra)")
        table = pd.DataFrame(ev)
    else:
        table = ev
    got = HashingEncoder(cols, n_features=2**16).transform(table)
    assert (got != ref).nnz == 0
    one_hot = OneHotEncoder(cols).fit(ev).transform(table)
    assert one_hot.shape[1] == sum(np.unique(ev[c]).size for c in cols) and np.all(
        np.diff(one_hot.indptr) == 3
    )


def test_events_to_trained_model_in_a_few_lines():
    rng = np.random.default_rng(3)
    ev = _events(4000, seed=3)
    logit = 0.05 * ev["user"] - 0.1 * ev["item"] + (ev["genre"] == "news") + ev["score"]
    clicked = (rng.random(4000) < 1 / (1 + np.exp(-(logit - 0.5)))).astype(int)
    enc = HashingEncoder(["user", "item", "genre"], numeric=["score"], n_features=2**14)
    model = LogisticCTR(C=1.0).fit(enc.fit_transform(ev), clicked)
    p = model.predict_proba1(enc.transform(ev))
    assert p.shape == (4000,) and np.all((p > 0) & (p < 1))
    # The model learned something: clicked rows score higher on average.
    assert p[clicked == 1].mean() > p[clicked == 0].mean() + 0.1


@pytest.mark.parametrize(
    "make, err, match",
    [
        (lambda: OneHotEncoder(["nope"]).fit(_events()), ValueError, "no column"),
        (
            lambda: HashingEncoder(["user"], n_features=0).transform(_events()),
            ValueError,
            "n_features",
        ),
        (lambda: HashingEncoder(["user"], seed=-1).transform(_events()), ValueError, "seed"),
        (
            lambda: OneHotEncoder(["user"], numeric=["genre"]).fit(_events()),
            TypeError,
            "numeric column 'genre'",
        ),
        (lambda: OneHotEncoder(["u"]).fit({"u": np.array([1.0, np.nan])}), ValueError, "NaN"),
        (
            lambda: OneHotEncoder(["u", "v"]).fit({"u": np.ones(3), "v": np.ones(4)}),
            ValueError,
            "different lengths",
        ),
        (lambda: OneHotEncoder().transform(_events()), ValueError, "not fitted"),
        (lambda: OneHotEncoder(handle_unknown="drop").fit(_events()), ValueError, "handle_unknown"),
        (lambda: HashingEncoder().transform(np.arange(3)), TypeError, "table must be"),
    ],
)
def test_bad_input_rejected(make, err, match):
    with pytest.raises(err, match=match):
        make()
