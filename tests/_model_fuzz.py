"""Model-file fuzzing helpers: real files of every model class, seeded mutations of them, and a
worker that loads and uses each mutated file (run in a subprocess by test_model_files.py).

Worker: ``python _model_fuzz.py DIR``: for each ``*.npz`` in DIR (sorted), prints the case name,
loads it with its class, uses it, and prints "rejected <exception>" or "ok". Anything but a
ValueError/TypeError/FileNotFoundError from load or use, or an accepted model whose results
break the contract, ends the worker with status 3; a crash ends it by a signal, and the
last printed name is the culprit.
"""

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fastrec import data
from fastrec.models import ALS, Hybrid, ItemKNN, LogisticCTR, Popularity, UserKNN, _persist

CLASSES = {c.__name__: c for c in (ItemKNN, UserKNN, Popularity, Hybrid, LogisticCTR, ALS)}


def real_models(directory: Path) -> dict:
    """{class name: path} of small fitted models of every class, saved in ``directory``."""
    d = data.synthetic(150, 60, seed=8, impressions_per_user=40)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 5))
    y = (X[:, 0] + rng.standard_normal(200) > 0).astype(float)
    models = {
        "ItemKNN": ItemKNN(k=10).fit(d),
        "UserKNN": UserKNN(k=10, reserve=5).fit(d.matrix),  # with reserve_ arrays
        "Popularity": Popularity().fit(d),
        "Hybrid": Hybrid(candidates=[ItemKNN(k=10), Popularity()], n_candidates=15).fit(d),
        "LogisticCTR": LogisticCTR().fit(X, y),
        "ALS": ALS(factors=4, iterations=2, progress=False).fit(d),
    }
    return {name: Path(m.save(directory / f"{name}.npz")) for name, m in models.items()}


def _members(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _write_raw(path: Path, members: dict) -> None:
    """An npz whose members are the given raw .npy bytes (valid zip CRCs, any content)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, blob in members.items():
            zf.writestr(name + ".npy", blob)


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=False)
    return buf.getvalue()


def _lying_header(a: np.ndarray, rng) -> bytes:
    """The .npy bytes of ``a`` under a header that claims another length."""
    buf = io.BytesIO()
    lie = int(rng.choice([0, 1, a.size - 1, a.size + 1, 2 * a.size, 10**9]))
    header = np.lib.format.header_data_from_array_1_0(a)
    header["shape"] = (max(lie, 0),)
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + np.ascontiguousarray(a).tobytes()


def mutate(source: Path, out: Path, kind: str, rng) -> None:
    """Write one mutation of model file ``source`` to ``out``."""
    raw = bytearray(source.read_bytes())
    if kind == "flip":
        for pos in rng.integers(0, len(raw), size=int(rng.integers(1, 9))):
            raw[pos] ^= 1 << int(rng.integers(0, 8))
        out.write_bytes(bytes(raw))
        return
    if kind == "truncate":
        out.write_bytes(bytes(raw[: int(rng.integers(0, len(raw)))]))
        return
    arrays = _members(source)
    names = sorted(arrays)
    if kind == "swap":  # two members' contents exchanged (valid CRCs, names kept)
        a, b = rng.choice(names, size=2, replace=False)
        arrays[a], arrays[b] = arrays[b], arrays[a]
    elif kind == "header":  # a member whose .npy header lies about its shape
        candidates = [n for n in names if arrays[n].ndim == 1 and arrays[n].size]
        victim = str(rng.choice(candidates))
        blobs = {n: _npy_bytes(arrays[n]) for n in names}
        blobs[victim] = _lying_header(arrays[victim], rng)
        _write_raw(out, blobs)
        return
    elif kind == "value":  # one entry of one array set to a hostile value
        candidates = [n for n in names if arrays[n].ndim == 1 and arrays[n].size]
        victim = str(rng.choice(candidates))
        a = arrays[victim].copy()
        pos = int(rng.integers(0, a.size))
        if a.dtype.kind in "iu":
            a[pos] = rng.choice([-1, 10**8, np.iinfo(a.dtype).max, a[pos] + 1, 0])
        elif a.dtype.kind == "f":
            a[pos] = rng.choice([np.nan, np.inf, -np.finfo(a.dtype).max, 0.0])
        arrays[victim] = a
    elif kind == "dtype":  # an array stored with another dtype or shape
        victim = str(rng.choice(names))
        a = arrays[victim]
        choice = int(rng.integers(0, 4))
        if choice == 0 and a.dtype.kind != "U":
            a = a.astype(rng.choice([np.int8, np.float32, np.int64, np.uint16, ">f8"]))
        elif choice == 1:
            a = a.reshape(1, -1) if a.ndim else a.reshape(1)
        elif choice == 2:
            a = a[: a.size // 2] if a.ndim else np.array([1, 2])
        else:
            a = np.concatenate([a, a]) if a.ndim else np.array("x")
        arrays[victim] = a
    elif kind == "params":  # hostile parameters in the JSON header
        key = "__meta__" if "__meta__" in arrays else "params"
        meta = json.loads(str(arrays[key]))
        params = meta["params"] if key == "__meta__" else meta
        name = str(rng.choice(sorted(params)))
        params[name] = [-1, 0, 10**30, "x", None, [1], {"a": 1}, 1.5][int(rng.integers(0, 8))]
        arrays[key] = np.array(json.dumps(meta))
    elif kind == "missing":
        del arrays[str(rng.choice(names))]
    np.savez(out, **arrays)


KINDS = ("flip", "truncate", "swap", "header", "value", "dtype", "params", "missing")


def _check_topk(res, n_items, n_rows, n):
    idx, scores = np.asarray(res.indices), np.asarray(res.scores)
    assert idx.shape == scores.shape == (n_rows, n)
    assert ((idx >= -1) & (idx < n_items)).all()
    assert not np.isnan(scores).any()
    assert (scores[:, 1:] <= scores[:, :-1]).all()  # sorted descending, -inf padding last
    assert (scores[idx < 0] == -np.inf).all()


def use(model) -> None:
    """Exercise a loaded model; AssertionError when a result breaks the contract."""
    if isinstance(model, LogisticCTR):
        X = np.random.default_rng(1).standard_normal((7, model.n_features_in_))
        p = model.predict_proba1(X)
        assert p.shape == (7,) and ((p >= 0) & (p <= 1)).all()
        model.predict(sp.csr_matrix(X))
        return
    users = np.arange(min(model.n_users_, 9))
    res = model.recommend(users, 5)
    _check_topk(res, model.n_items_, users.size, 5)
    if isinstance(model, ItemKNN) and model.n_items_:
        _check_topk(model.similar_items([0], 3), model.n_items_, 1, 3)
    if isinstance(model, UserKNN) and model.n_users_:
        _check_topk(model.similar_users([0], 3), model.n_users_, 1, 3)
    if isinstance(model, ALS) and model.n_items_:
        _check_topk(model.similar_items([0], 3), model.n_items_, 1, 3)


def worker(directory: Path) -> int:
    for path in sorted(directory.glob("*.npz")):
        cls = CLASSES[path.name.split("-")[0]]
        print(path.name, flush=True, end=" ")
        if path.name.split("-")[1] == "mmap":
            _persist.MMAP_THRESHOLD_BYTES = 64
        else:
            _persist.MMAP_THRESHOLD_BYTES = 1 << 20
        try:
            model = cls.load(path)
        except (ValueError, TypeError, FileNotFoundError) as exc:
            assert "\n" not in str(exc), "the error is not one line"
            print("rejected", type(exc).__name__, flush=True)
            continue
        try:
            use(model)
        except (ValueError, TypeError) as exc:
            print("rejected in use", type(exc).__name__, exc, flush=True)
            continue
        except AssertionError:
            print("BROKEN RESULT", flush=True)
            return 3
        print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(worker(Path(sys.argv[1])))
