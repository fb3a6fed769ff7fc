"""The service's model files: load any saved recommender, save a new version crash-safely with
the number of the last event it holds, fold logged events into a model, map ids.

A version saved by the service is the model's own ``save`` output plus one extra member,
``fastrec_serve.npy`` = int64 [last event held, version], appended to the .npz archive (models
ignore members they do not know). It is written to a temporary file in the same directory,
fsynced, renamed over the model file, and the directory fsynced: a crash leaves either the old
file or the new one, never a torn one. A model file without the member (trained elsewhere)
holds no event of the log.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from . import data as _data
from ._eventlog import fsync_dir

if TYPE_CHECKING:
    from .models._base import Recommender

# (inode, size, mtime ns) of a model file: tells versions apart.
Signature: TypeAlias = "tuple[int, int, int]"

MARKER = "fastrec_serve"


class ModelFileError(ValueError):
    """A model file the service cannot serve (missing, not a model, not a recommender)."""


class ModelFileReplaced(RuntimeError):
    """The model file changed while a new version was being written: the save was dropped."""


def file_signature(path) -> Signature | None:
    """(inode, size, mtime ns) of a file, None when it is missing: tells files apart."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def model_class_name(path) -> str:
    """The class name in a model file's JSON header (ModelFileError when it has none)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf, zf.open("__meta__.npy") as m:
            meta = json.loads(str(np.lib.format.read_array(m, allow_pickle=False)))
        return str(meta["class"])
    except FileNotFoundError:
        raise ModelFileError(f"no such model file: {path}") from None
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError) as exc:
        raise ModelFileError(f"{path} is not a fastrec recommender model file ({exc})") from None


def load_model(path, *, mmap: bool = True) -> tuple[Recommender, int, int]:
    """(model, last event held, version) of a saved recommender model file.

    The class comes from the file's header and must be one of :mod:`fastrec.models`'
    recommenders (fitted with ``recommend``); arrays are memory-mapped as ``load`` does.
    """
    from . import models
    from .models._base import Recommender

    name = model_class_name(path)
    cls = getattr(models, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Recommender)):
        raise ModelFileError(f"{path} holds a {name}, which is not a recommender model")
    try:
        model = cls.load(path, mmap=mmap)
        with zipfile.ZipFile(path) as zf:
            marker = None
            if f"{MARKER}.npy" in zf.namelist():
                with zf.open(f"{MARKER}.npy") as m:
                    marker = np.lib.format.read_array(m, allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"cannot load {path}: {exc}") from None
    if marker is None:
        return model, 0, 0
    if marker.shape != (2,) or marker.dtype.kind not in "iu" or marker.min() < 0:
        raise ModelFileError(f"{path}: damaged {MARKER} member {marker!r}")
    return model, int(marker[0]), int(marker[1])


def save_model(
    model: Recommender, path, events_held: int, version: int, *, expect: Signature | None = None
) -> Signature | None:
    """Write ``model`` over ``path`` crash-safely, marked with (events held, version).

    Temporary file in the same directory (``model.save``, then the marker member), fsync,
    rename, directory fsync. ``expect``: the :func:`file_signature` the file must still have
    just before the rename (the version the new one was made from); otherwise the temporary
    file is dropped and :class:`ModelFileReplaced` raised, so a replacement written meanwhile
    is never overwritten (the check and the rename are microseconds apart, not atomic).
    Returns the new file's signature. Memory: what ``model.save`` needs; disk: one more copy.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        written = Path(model.save(tmp))
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.array([events_held, version], dtype=np.int64))
        with zipfile.ZipFile(written, "a", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(f"{MARKER}.npy", buf.getvalue())
        with open(written, "rb+") as f:
            os.fsync(f.fileno())
        if expect is not None and file_signature(path) != expect:
            raise ModelFileReplaced(f"{path} was replaced while a new version was written")
        os.replace(written, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".npz")):
            if leftover.exists():
                leftover.unlink()
    fsync_dir(path)
    return file_signature(path)


# -- ids --------------------------------------------------------------------------------------


def _position(model, what: str, value) -> int:
    """Row/column of one original id, -1 when unknown (never raises on odd JSON values)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return -1
    if getattr(model, f"{what}_ids_") is None:  # fit on a bare matrix: the ids are the indices
        n = model.n_users_ if what == "user" else model.n_items_
        return value if isinstance(value, int) and 0 <= value < n else -1
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return -1
    index = model.user_index if what == "user" else model.item_index
    try:
        return int(index([value])[0])
    except (ValueError, TypeError, OverflowError):
        return -1


def user_row(model, user) -> int:
    """The model's row of an original user id, -1 when unknown."""
    return _position(model, "user", user)


def item_column(model, item) -> int:
    """The model's column of an original item id, -1 when unknown."""
    return _position(model, "item", item)


def item_ids_of(model, columns) -> list:
    """Original ids (JSON-ready Python values) of item columns; -1 padding dropped."""
    cols = np.asarray(columns)
    cols = cols[cols >= 0]
    return (cols if model.item_ids_ is None else model.item_ids_[cols]).tolist()


def user_ids_of(model, rows) -> list:
    """Original ids (JSON-ready Python values) of user rows; -1 padding dropped."""
    rows = np.asarray(rows)
    rows = rows[rows >= 0]
    return (rows if model.user_ids_ is None else model.user_ids_[rows]).tolist()


# -- folding events in -------------------------------------------------------------------------


def fold_events(model, events: list):
    """A new model holding ``model``'s interactions plus ``events`` ([user, item, value, ts]).

    The library's ``partial_fit`` with the events in original ids, run on a private copy (the
    served model is never modified); pairs seen before are combined by the rule the model's
    data was built with. A model class without ``partial_fit`` is fit again (a clone) on its
    interactions grown by :meth:`fastrec.data.Interactions.append`. Cost: that of
    partial_fit (or fit), plus one copy of the model's arrays.
    """
    if model.user_ids_ is None or model.item_ids_ is None:
        raise ModelFileError(
            "the model was fit on a bare matrix without id maps: events in "
            "original ids cannot be folded in (fit it on Interactions)"
        )
    users = np.array([e[0] for e in events], dtype=_id_dtype(model.user_ids_))
    items = np.array([e[1] for e in events], dtype=_id_dtype(model.item_ids_))
    values = np.array([1.0 if e[2] is None else float(e[2]) for e in events])
    if hasattr(model, "partial_fit"):
        copy = model.clone()
        copy._restore({k: np.array(v) for k, v in model._all_arrays().items()})
        return copy.partial_fit({"users": users, "items": items, "values": values})
    base = _data.Interactions(
        model.user_items_, model.user_ids_, model.item_ids_, duplicates=model.duplicates_ or "sum"
    )
    return model.clone().fit(base.append(users, items, values))


def _id_dtype(ids: np.ndarray):
    return np.int64 if ids.dtype.kind in "iu" else str


__all__ = [
    "ModelFileError",
    "ModelFileReplaced",
    "file_signature",
    "fold_events",
    "item_column",
    "item_ids_of",
    "load_model",
    "model_class_name",
    "save_model",
    "user_ids_of",
    "user_row",
]
