"""Model files: plain uncompressed .npz (arrays + a JSON header), memory-mapped on load,
written crash-safely and read as untrusted input.

A model file is an ``np.savez`` archive: one ``.npy`` member per array plus ``__meta__.npy``, a
0-d unicode array holding JSON (class name, format version, parameters). Nothing is pickled, so
loading never runs code from the file (``allow_pickle=False`` throughout). Members are stored
uncompressed, so :func:`read_model` can memory-map each large array straight from the archive
(offset of its ``.npy`` payload inside the zip).

Writing (:func:`atomic_savez`): a temporary file in the target directory, flushed and fsynced,
renamed over the target, then the directory fsynced: a crash at any moment leaves the old file
or the new one, and a reader that has the old file memory-mapped keeps the old bytes (the
rename gives the path a new inode; the old one lives until its last map is gone).

Reading: every member's CRC is verified and its ``.npy`` header must agree with the member's
size (a lying shape would otherwise map bytes of other members), and the models then check
every array a kernel will trust (:func:`check_csr_arrays`, :func:`check_vector`). All of it is
O(size of the file) with the memory maps kept; any failure is a one-line ValueError naming the
file and the array (:func:`model_file_errors`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .._validation import _rows_strictly_increasing, check_compressed_structure

FORMAT_VERSION = 1
# Arrays at least this large are memory-mapped on load; smaller ones are read into memory.
MMAP_THRESHOLD_BYTES = 1 << 20
_CRC_CHUNK_BYTES = 1 << 24


def npz_path(path) -> Path:
    """``path`` with ".npz" appended when missing (what np.savez would write)."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def atomic_savez(path, arrays: dict) -> Path:
    """``np.savez(path, **arrays)``, crash-safe: temp file beside the target, fsync, rename,
    fsync of the directory. Returns the path written (".npz" appended when missing)."""
    for name, arr in arrays.items():
        if np.asarray(arr).dtype.hasobject:
            raise TypeError(f"model array {name!r} has dtype object, which would need pickle")
    path = npz_path(path)
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)
    return path


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def write_model(path, class_name: str, params: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` and a JSON header to ``path`` (".npz" appended when missing), crash-safe."""
    meta = json.dumps({"class": class_name, "format": FORMAT_VERSION, "params": params})
    return atomic_savez(
        path, {"__meta__": np.array(meta), **{k: np.asarray(v) for k, v in arrays.items()}}
    )


@contextlib.contextmanager
def model_file_errors(path):
    """Turn any complaint about a file's content into one ValueError naming the file."""
    try:
        yield
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    # OSError: zipfile seeks to offsets a corrupt directory gives (EINVAL); TokenError and
    # SyntaxError: NumPy parses a .npy header (a Python literal) with the tokenizer.
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        EOFError,
        OverflowError,
        OSError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        UnicodeError,
        NotImplementedError,
        tokenize.TokenError,
        SyntaxError,
    ) as exc:
        detail = f"missing array {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
        detail = " ".join(detail.split())  # one line
        prefix = f"invalid model file {path}"
        if detail.startswith(prefix):
            raise ValueError(detail) from None
        raise ValueError(f"{prefix}: {detail}") from None


def _member_offset(f, info: zipfile.ZipInfo) -> int:
    """Byte offset of a stored member's data: after its local header, name and extra field."""
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise ValueError("bad zip local header")
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


def _check_crc(raw, start: int, size: int, expected: int, key: str) -> None:
    raw.seek(start)
    crc, left = 0, size
    while left:
        chunk = raw.read(min(left, _CRC_CHUNK_BYTES))
        if not chunk:
            raise ValueError(f"array {key!r} is truncated")
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    if crc != expected:
        raise ValueError(f"array {key!r} fails its CRC check (corrupted)")


def _check_dtype(dtype: np.dtype, key: str) -> None:
    if dtype.hasobject or dtype.kind not in "biufU" or dtype.names is not None:
        raise ValueError(f"array {key!r} has dtype {dtype}, which a model file never holds")
    if not dtype.isnative and dtype.itemsize > 1 and dtype.kind != "U":
        raise ValueError(f"array {key!r} has non-native byte order {dtype}")


def _map_member(path, raw, info, key, file_size):
    """A read-only memory map of a stored member after checking CRC, header and size."""
    start = _member_offset(raw, info)
    if start + info.file_size > file_size or info.file_size != info.compress_size:
        raise ValueError(f"array {key!r} extends past the end of the file")
    _check_crc(raw, start, info.file_size, info.CRC, key)
    raw.seek(start)
    version = np.lib.format.read_magic(raw)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"array {key!r}: unsupported .npy version {version}")
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(raw)
    _check_dtype(dtype, key)
    payload = raw.tell()
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    if any(s < 0 for s in shape) or payload - start + nbytes != info.file_size:
        raise ValueError(
            f"array {key!r}: its header's shape {shape} and dtype {dtype} do not "
            f"match the {info.file_size} bytes stored"
        )
    return np.memmap(
        path, dtype=dtype, mode="r", offset=payload, shape=shape, order="F" if fortran else "C"
    )


def read_model(path, expected_class: str, *, mmap: bool = True):
    """(params, arrays) of a model file written by :func:`write_model` for ``expected_class``.

    With ``mmap``, arrays of at least ``MMAP_THRESHOLD_BYTES`` are read-only ``np.memmap``
    views of the file; the rest are loaded. Every member's CRC and header are checked (O(file
    size)); the model checks the arrays' content. Raises FileNotFoundError / ValueError with a
    one-line message for a missing file, a corrupt or non-model file, or a model of another
    class.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model file: {path}")
    with model_file_errors(path):
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise ValueError(f"{path} is not a fastrec model file (.npz)") from None
        arrays = {}
        file_size = path.stat().st_size
        with zf, open(path, "rb") as raw:
            names = {}
            for info in zf.infolist():
                if info.filename in names:
                    raise ValueError(f"member {info.filename!r} appears twice")
                names[info.filename] = info
            if "__meta__.npy" not in names:
                raise ValueError(f"{path} is not a fastrec model file (no __meta__)")
            with zf.open("__meta__.npy") as m:
                meta_arr = np.lib.format.read_array(m, allow_pickle=False)
            if meta_arr.dtype.kind != "U" or meta_arr.ndim != 0:
                raise ValueError("__meta__ is not a JSON string")
            meta = json.loads(str(meta_arr))
            if not isinstance(meta, dict) or not isinstance(meta.get("params"), dict):
                raise ValueError("__meta__ is not a JSON object with params")
            if meta.get("class") != expected_class:
                raise ValueError(f"{path} holds a {meta.get('class')} model, not {expected_class}")
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"{path}: unsupported model format {meta.get('format')}")
            for fname, info in names.items():
                if fname == "__meta__.npy":
                    continue
                if not fname.endswith(".npy"):
                    raise ValueError(f"unexpected member {fname!r}")
                key = fname[:-4]
                if (
                    mmap
                    and info.compress_type == zipfile.ZIP_STORED
                    and (info.file_size >= MMAP_THRESHOLD_BYTES)
                ):
                    arrays[key] = _map_member(path, raw, info, key, file_size)
                else:
                    if info.file_size > file_size:  # a stored size no member can have
                        raise ValueError(f"array {key!r} claims {info.file_size} bytes")
                    with zf.open(info) as member:
                        arr = np.lib.format.read_array(member, allow_pickle=False)
                        if member.read(1):
                            raise ValueError(f"array {key!r} has bytes after its data")
                    _check_dtype(arr.dtype, key)
                    arrays[key] = arr
    return meta["params"], arrays


# ---- what the kernels trust, checked once on load -----------------------------------------


def check_vector(
    arrays: dict,
    name: str,
    length: int | None = None,
    *,
    kinds: str = "f",
    finite: bool = True,
    min_value=None,
):
    """``arrays[name]`` as a 1-D array of one of ``kinds`` (NumPy kind letters), of ``length``,
    finite and >= ``min_value`` when asked. Returned as stored (memory maps stay maps)."""
    a = arrays[name]
    if a.ndim != 1 or a.dtype.kind not in kinds:
        raise ValueError(
            f"array {name!r} must be 1-D of kind {kinds!r}, got {a.dtype} with shape {a.shape}"
        )
    if length is not None and a.shape[0] != length:
        raise ValueError(f"array {name!r} has length {a.shape[0]}, expected {length}")
    if a.dtype.kind == "f" and a.dtype.itemsize not in (4, 8):
        raise ValueError(f"array {name!r} has dtype {a.dtype}; expected float32 or float64")
    if finite and a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        raise ValueError(f"array {name!r} contains NaN or infinity")
    if min_value is not None and a.size and a.min() < min_value:
        raise ValueError(f"array {name!r} holds {a.min()}, below {min_value}")
    return a


def check_csr_arrays(
    prefix: str, arrays: dict, shape: tuple[int, int] | None = None, *, order: str = "canonical"
) -> tuple:
    """Check the CSR saved by ``csr_arrays(prefix, ...)``: its shape (== ``shape`` when given),
    int32/int64 indptr and indices of one dtype, float32/float64 finite data, the structure
    (indptr from 0, non-decreasing, to nnz; indices in range) and the rows' order: "canonical"
    (indices strictly increasing: the kernels merge sorted rows) or "ranked" (values
    descending, ties by increasing index: a kNN reserve). Returns the shape. O(n_rows + nnz)."""
    stored = arrays[f"{prefix}_shape"]
    if stored.shape != (2,) or stored.dtype.kind not in "iu":
        raise ValueError(f"array '{prefix}_shape' must hold two integers")
    n_rows, n_cols = (int(x) for x in stored)
    if n_rows < 0 or n_cols < 0 or max(n_rows, n_cols) > np.iinfo(np.int64).max // 16:
        raise ValueError(f"array '{prefix}_shape' holds an impossible shape {(n_rows, n_cols)}")
    if shape is not None and (n_rows, n_cols) != tuple(shape):
        raise ValueError(f"array '{prefix}_shape' says {(n_rows, n_cols)}, expected {tuple(shape)}")
    indptr = arrays[f"{prefix}_indptr"]
    indices = arrays[f"{prefix}_indices"]
    data = check_vector(arrays, f"{prefix}_data")
    for name, a in ((f"{prefix}_indptr", indptr), (f"{prefix}_indices", indices)):
        if a.dtype not in (np.int32, np.int64):
            raise ValueError(f"array {name!r} must be int32 or int64, got {a.dtype}")
    if indptr.dtype != indices.dtype:
        raise ValueError(f"arrays '{prefix}_indptr' and '{prefix}_indices' must share a dtype")
    if indices.shape != data.shape:
        raise ValueError(f"arrays '{prefix}_indices' and '{prefix}_data' differ in length")
    if n_cols > np.iinfo(indices.dtype).max:
        raise ValueError(
            f"array '{prefix}_indices' is {indices.dtype}, too narrow for {n_cols} columns"
        )
    check_compressed_structure(indptr, indices, data, n_rows, n_cols, f"array '{prefix}'")
    if int(indptr[-1]) != indices.shape[0]:
        raise ValueError(
            f"array '{prefix}_indptr' ends at {int(indptr[-1])}, but "
            f"{indices.shape[0]} entries are stored"
        )
    if order == "ranked":
        if not _rows_ranked(indptr, indices, data):
            raise ValueError(
                f"arrays '{prefix}_data' / '{prefix}_indices' are not in rank "
                "order within rows (values descending, ties by smaller index)"
            )
    elif not _rows_strictly_increasing(indptr, indices):
        raise ValueError(f"array '{prefix}_indices' is not sorted and distinct within rows")
    return n_rows, n_cols


def _rows_ranked(indptr, indices, data) -> bool:
    """True when every row's entries are strictly ordered by (value descending, index
    ascending): distinct indices in rank order. O(nnz)."""
    nnz = int(indptr[-1])
    if nnz < 2:
        return True
    v, i = np.asarray(data[:nnz]), np.asarray(indices[:nnz])
    ok = (v[1:] < v[:-1]) | ((v[1:] == v[:-1]) & (i[1:] > i[:-1]))
    boundaries = np.asarray(indptr[1:-1], dtype=np.int64) - 1
    ok[boundaries[(boundaries >= 0) & (boundaries < nnz - 1)]] = True
    return bool(ok.all())
