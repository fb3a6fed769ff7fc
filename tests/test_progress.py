"""Progress bars on long fits and recommends: same bits in blocks, silent when verbose=False."""

import numpy as np
import pytest
import scipy.sparse as sp

from fastrec import _progress
from fastrec.models import ItemKNN, UserKNN


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks and a bar on a small problem: what a long fit does, in a test's time."""
    monkeypatch.setattr(_progress, "MIN_ROWS", 8)
    monkeypatch.setattr(_progress, "FIRST_BLOCK_FRACTION", 1 / 9)
    monkeypatch.setattr(_progress, "TARGET_BLOCK_S", 0.0)  # every block as small as the first
    monkeypatch.setattr(_progress, "DELAY_S", 0.0)


def user_items(seed=0):
    X = sp.random(90, 60, density=0.08, format="csr", random_state=seed, dtype=np.float64)
    X.data[:] = np.random.default_rng(seed).integers(1, 5, X.nnz)
    return X


@pytest.mark.parametrize("model_cls", [ItemKNN, UserKNN])
@pytest.mark.parametrize("backend", ["numpy", "cython", "numba"])
def test_blocked_fit_and_recommend_are_bit_identical(small_blocks, model_cls, backend, capsys):
    X = user_items()
    kw = dict(k=7, shrink=2.0, weighting="bm25", backend=backend, n_threads=2)
    loud = model_cls(verbose=True, **kw).fit(X)
    quiet = model_cls(verbose=False, **kw).fit(X)
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(
            getattr(loud.neighbours_, name), getattr(quiet.neighbours_, name)
        )
    users = np.arange(89, -1, -1)
    a, b = loud.recommend(users, n=5), quiet.recommend(users, n=5)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)
    err = capsys.readouterr().err
    assert f"fitting {model_cls.__name__}" in err and "recommending" in err


def test_quiet_models_print_nothing(small_blocks, capsys):
    model = ItemKNN(k=5, backend="numpy", verbose=False).fit(user_items())
    model.recommend(np.arange(90), n=3)
    assert capsys.readouterr().err == ""


def test_blocks_cover_the_rows_once(small_blocks):
    seen = []
    parts = _progress.blockwise(lambda rows: seen.append(rows) or len(rows), 100, True, "t")
    assert len(parts) > 5 and sum(parts) == 100
    np.testing.assert_array_equal(np.concatenate(seen), np.arange(100))


def test_short_work_is_one_or_two_calls():
    calls = []
    assert _progress.blockwise(calls.append, 10**5, False, "t") == [None] and len(calls) == 1
    assert len(_progress.blockwise(calls.append, _progress.MIN_ROWS - 1, True, "t")) == 1
    # Quick work: the first (timed) block, then the rest in one call, no bar.
    assert len(_progress.blockwise(lambda rows: None, 10**5, True, "t")) == 2
