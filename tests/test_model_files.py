"""Model files are untrusted input, and saves are crash-safe.

The fuzz test mutates real files of every model class (byte flips, truncation, swapped members,
lying headers, hostile values, dtypes and parameters, missing members) and loads and uses each
in a separate process: only a clear exception or a model with valid results may come out.
"""

import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from _model_fuzz import KINDS, mutate, real_models

import fastrec
from fastrec.models import ItemKNN, LogisticCTR, Popularity, UserKNN

HERE = Path(__file__).parent
FASTREC_ROOT = str(Path(fastrec.__file__).resolve().parents[1])
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        # the fastrec under test (installed, or the source tree with its build)
        [
            str(Path(fastrec.__file__).resolve().parents[1]),
            str(HERE),
            os.environ.get("PYTHONPATH", ""),
        ]
    ),
}
CASES_PER_KIND_AND_CLASS = 8  # 8 kinds x 6 classes x 2 load modes x 8: 768 files, ~15 s


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return real_models(tmp_path_factory.mktemp("models"))


def test_tampered_index_is_a_clear_error_not_a_segfault(models, tmp_path):
    # The reproducer: rewrite one neighbour index to 10**8 with np.savez.
    with np.load(models["ItemKNN"]) as f:
        arrays = dict(f)
    arrays["neighbours_indices"][3] = 10**8
    path = tmp_path / "tampered.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"tampered\.npz.*'neighbours'.*100000000"):
        ItemKNN.load(path)


def test_fuzzed_model_files_give_an_error_or_a_valid_model(models, tmp_path):
    rng = np.random.default_rng(20261204)
    for name, source in models.items():
        for kind in KINDS:
            for mode in ("mmap", "read"):
                for i in range(CASES_PER_KIND_AND_CLASS):
                    mutate(source, tmp_path / f"{name}-{mode}-{kind}-{i}.npz", kind, rng)
    proc = subprocess.run(
        [sys.executable, str(HERE / "_model_fuzz.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    last = proc.stdout.strip().splitlines()[-1:] or ["(none)"]
    assert proc.returncode == 0, f"status {proc.returncode} at {last}\n{proc.stderr[-3000:]}"
    lines = proc.stdout.splitlines()
    assert len(lines) == len(models) * len(KINDS) * 2 * CASES_PER_KIND_AND_CLASS
    assert sum("rejected" in line for line in lines) > len(lines) // 2  # the checks do bite
    assert not [line for line in lines if "in use" in line]  # load itself refuses them


def test_unmodified_files_load_with_memory_maps_kept(models, monkeypatch):
    from fastrec.models import _persist

    monkeypatch.setattr(_persist, "MMAP_THRESHOLD_BYTES", 64)
    model = ItemKNN.load(models["ItemKNN"])
    for arr in (model.neighbours_.indices, model.neighbours_.data, model.user_items_.data):
        while not isinstance(arr, (np.memmap, mmap.mmap)):
            assert arr is not None, "the checks copied a memory-mapped array"
            arr = arr.base


def test_killed_saver_leaves_the_old_or_the_new_model(tmp_path):
    # A forked child saves models of growing width in a loop and is SIGKILLed at a random
    # moment, 20 times; whatever the path holds must load as a whole model each time.
    path = tmp_path / "model.npz"
    Popularity().fit(sp.random(30, 40, density=0.1, format="csr", random_state=0)).save(path)
    rng = np.random.default_rng(0)
    seen = {40}
    for attempt in range(20):
        UI = sp.random(2000, 41 + attempt, density=0.05, format="csr", random_state=attempt)
        pid = os.fork()
        if pid == 0:  # the saver: never returns into pytest
            try:
                signal.alarm(30)
                model = Popularity().fit(UI)
                while True:
                    model.save(path)
            finally:
                os._exit(1)
        time.sleep(float(rng.uniform(0.0, 0.05)))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        loaded = Popularity.load(path)
        assert loaded.n_items_ in seen | {41 + attempt}
        seen.add(loaded.n_items_)
    assert len(seen) > 2  # the kills did land both before and after completed saves
    assert all(p.name.endswith(".tmp") for p in tmp_path.iterdir() if p.name != "model.npz")


def test_reader_with_old_file_mapped_keeps_old_bytes(tmp_path, monkeypatch):
    from fastrec.models import _persist

    monkeypatch.setattr(_persist, "MMAP_THRESHOLD_BYTES", 64)
    UI = sp.random(200, 100, density=0.1, format="csr", random_state=0)
    path = ItemKNN(k=5).fit(UI).save(tmp_path / "m.npz")
    old = ItemKNN.load(path)
    before = old.recommend(np.arange(20), 5)
    ItemKNN(k=9).fit(sp.random(200, 100, density=0.1, format="csr", random_state=1)).save(path)
    after = old.recommend(np.arange(20), 5)
    np.testing.assert_array_equal(before.indices, after.indices)
    assert ItemKNN.load(path).k == 9


def test_save_writes_no_stray_files_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    model = LogisticCTR().fit(np.eye(4), np.array([0, 1, 0, 1]))
    path = model.save(tmp_path / "ctr")
    assert path.name == "ctr.npz" and [p.name for p in tmp_path.iterdir()] == ["ctr.npz"]
    before = path.read_bytes()

    def failing_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["ctr.npz"]
    assert path.read_bytes() == before


def test_object_arrays_are_never_saved(tmp_path):
    model = LogisticCTR().fit(np.eye(4), np.array([0, 1, 0, 1]))
    model.coef_ = np.array([1.0, 2.0, 3.0, 4.0], dtype=object)
    with pytest.raises(TypeError, match="pickle"):
        model.save(tmp_path / "ctr")
    assert list(tmp_path.iterdir()) == []


def test_reserve_out_of_rank_order_is_refused(models, tmp_path):
    # partial_fit reads the reserve's rows as ranked: a file that breaks the order is refused.
    with np.load(models["UserKNN"]) as f:
        arrays = dict(f)
    indptr, data = arrays["reserve_indptr"], arrays["reserve_data"]
    row = int(np.argmax(np.diff(indptr) >= 2))
    lo = int(indptr[row])
    data[lo], data[lo + 1] = data[lo + 1], data[lo] * 2 + 1  # second entry now larger
    path = tmp_path / "reserve.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"reserve\.npz.*'reserve_data'.*rank"):
        UserKNN.load(path)
