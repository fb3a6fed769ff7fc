"""Model files: plain uncompressed .npz (arrays + a JSON header), memory-mapped on load.

A model file is an ``np.savez`` archive: one ``.npy`` member per array plus ``__meta__.npy``, a
0-d unicode array holding JSON (class name, format version, parameters). Nothing is pickled, so
loading never runs code from the file (``allow_pickle=False`` throughout). Members are stored
uncompressed, so :func:`read_model` can memory-map each large array straight from the archive
(offset of its ``.npy`` payload inside the zip): loading is O(header) and pages are read on use.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
# Arrays at least this large are memory-mapped on load; smaller ones are read into memory.
MMAP_THRESHOLD_BYTES = 1 << 20


def write_model(path, class_name: str, params: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` and a JSON header to ``path`` (".npz" appended when missing)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta = json.dumps({"class": class_name, "format": FORMAT_VERSION, "params": params})
    for name, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"model array {name!r} has dtype object, which would need pickle")
    np.savez(path, __meta__=np.array(meta), **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def _member_offset(f, info: zipfile.ZipInfo) -> int:
    """Byte offset of a stored member's data: after its local header, name and extra field."""
    f.seek(info.header_offset)
    local = f.read(30)
    if local[:4] != b"PK\x03\x04":
        raise ValueError("corrupt model file: bad zip local header")
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


def read_model(path, expected_class: str, *, mmap: bool = True):
    """(params, arrays) of a model file written by :func:`write_model` for ``expected_class``.

    With ``mmap``, arrays of at least ``MMAP_THRESHOLD_BYTES`` are read-only ``np.memmap``
    views of the file; the rest are loaded. Raises FileNotFoundError / ValueError with a
    one-line message for a missing file, a non-model file, or a model of another class.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a fastrec model file (.npz)") from None
    arrays = {}
    with zf, open(path, "rb") as raw:
        names = {i.filename: i for i in zf.infolist()}
        if "__meta__.npy" not in names:
            raise ValueError(f"{path} is not a fastrec model file (no __meta__)")
        with zf.open("__meta__.npy") as m:
            meta = json.loads(str(np.lib.format.read_array(m, allow_pickle=False)))
        if meta.get("class") != expected_class:
            raise ValueError(f"{path} holds a {meta.get('class')} model, not {expected_class}")
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported model format {meta.get('format')}")
        for fname, info in names.items():
            if fname == "__meta__.npy" or not fname.endswith(".npy"):
                continue
            key = fname[:-4]
            if mmap and info.compress_type == zipfile.ZIP_STORED and (
                info.file_size >= MMAP_THRESHOLD_BYTES
            ):
                start = _member_offset(raw, info)
                raw.seek(start)
                version = np.lib.format.read_magic(raw)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(raw)
                if dtype.hasobject:
                    raise ValueError(f"{path}: array {key!r} needs pickle; refusing to load")
                arrays[key] = np.memmap(
                    path, dtype=dtype, mode="r", offset=raw.tell(), shape=shape,
                    order="F" if fortran else "C",
                )
            else:
                with zf.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    return meta["params"], arrays
