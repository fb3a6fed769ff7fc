"""The contract every recommender model shares: fit -> self, recommend -> TopK, save/load.

A model is fit on a users x items scipy sparse matrix or on a :class:`fastrec.data.Interactions`
(whose id maps it then keeps as ``user_ids_`` / ``item_ids_``, so ``TopK.indices`` can be turned
back into original ids with :meth:`Recommender.decode_items`). ``recommend`` takes row indices of
that matrix; an id outside it is a ValueError that says how many users the model knows.
Explicitly stored zeros in the fit matrix are dropped (not interactions: never "seen", no
source of scores); the caller's matrix is left as it is.
"""
from __future__ import annotations

import inspect

import numpy as np
import scipy.sparse as sp

from .._dispatch import BACKENDS
from .._validation import CSR, check_csr, check_k, check_n_threads
from ..data import Interactions
from ..topk import TopK, topk
from .. import _progress
from . import _persist


def as_user_items(X, name: str = "user_items") -> tuple[CSR, Interactions | None]:
    """(canonical CSR, the Interactions it came from or None) of a fit argument."""
    if isinstance(X, Interactions):
        return check_csr(X.matrix, name, drop_zeros=True), X
    return check_csr(X, name, drop_zeros=True), None


def csr_arrays(prefix: str, m) -> dict:
    """The raw arrays of a CSR under ``prefix_`` names, for a model file."""
    return {
        f"{prefix}_indptr": m.indptr,
        f"{prefix}_indices": m.indices,
        f"{prefix}_data": m.data,
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_from_arrays(prefix: str, arrays: dict) -> sp.csr_matrix:
    """Rebuild a CSR saved by :func:`csr_arrays` without copying (memory maps stay maps)."""
    shape = tuple(int(x) for x in arrays[f"{prefix}_shape"])
    m = sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=shape,
        copy=False,
    )
    m.has_sorted_indices = True  # saved from canonical matrices
    m.has_canonical_format = True
    return m


class Recommender:
    """Base class: parameters in the constructor, learned state in attributes ending in ``_``."""

    def get_params(self) -> dict:
        """The constructor parameters (scikit-learn convention), for cloning and saving."""
        sig = inspect.signature(type(self).__init__)
        return {name: getattr(self, name) for name in sig.parameters if name != "self"}

    def clone(self):
        """An unfitted model with the same parameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fitted state -------------------------------------------------------------------
    def _set_data(self, UI: CSR, source: Interactions | None) -> None:
        self.user_items_ = sp.csr_matrix((UI.data, UI.indices, UI.indptr), shape=UI.shape)
        self.n_users_, self.n_items_ = UI.shape
        self.user_ids_ = None if source is None else source.user_ids
        self.item_ids_ = None if source is None else source.item_ids

    def _check_fitted(self) -> None:
        if not hasattr(self, "user_items_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit() first")

    def _check_users(self, user_ids) -> np.ndarray:
        """User rows as int64, with a clear error for ids the model does not know."""
        self._check_fitted()
        arr = np.asarray(user_ids)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise ValueError(f"user_ids must be 1-D, got shape {arr.shape}")
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(
                f"user_ids must be integer row indices, got dtype {arr.dtype}; map original ids "
                "with Interactions.user_index first"
            )
        arr = arr.astype(np.int64)
        bad = (arr < 0) | (arr >= self.n_users_)
        if bad.any():
            raise ValueError(
                f"unknown user {arr[bad][0]}: the model was fit on {self.n_users_} users "
                f"(rows 0..{self.n_users_ - 1})"
            )
        return arr

    def _check_items(self, item_ids) -> np.ndarray:
        self._check_fitted()
        arr = np.asarray(item_ids)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise TypeError("item_ids must be a 1-D array of integer column indices")
        arr = arr.astype(np.int64)
        bad = (arr < 0) | (arr >= self.n_items_)
        if bad.any():
            raise ValueError(
                f"unknown item {arr[bad][0]}: the model was fit on {self.n_items_} items"
            )
        return arr

    def decode_items(self, indices, fill=None) -> np.ndarray:
        """Original item ids of ``TopK.indices`` (needs a fit on Interactions); -1 -> fill."""
        self._check_fitted()
        if self.item_ids_ is None:
            raise ValueError("the model was fit on a bare matrix: it has no original item ids")
        return Interactions(self.user_items_, self.user_ids_, self.item_ids_).decode_items(
            indices, fill
        )

    def recommend(self, user_ids, n: int = 10, exclude_seen: bool = True) -> TopK:
        """Top-n items for each user row in ``user_ids``: TopK (len(user_ids), n). "Seen" means
        stored with a nonzero value at fit (stored zeros were dropped)."""
        rows = self._check_users(user_ids)
        n = check_k(n, "n")
        return _progress_topk(lambda block: self._recommend(block, n, bool(exclude_seen)), rows,
                              getattr(self, "verbose", False), type(self).__name__)

    def _recommend(self, rows, n, exclude_seen) -> TopK:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- persistence ----------------------------------------------------------------------
    def _state(self) -> dict:
        """Learned arrays besides the interactions and id maps (subclasses extend)."""
        return {}

    def _load_state(self, arrays: dict) -> None:
        """Restore what :meth:`_state` saved (subclasses extend)."""

    def _all_arrays(self) -> dict:
        arrays = csr_arrays("user_items", self.user_items_)
        for name in ("user_ids_", "item_ids_"):
            ids = getattr(self, name)
            if ids is not None:
                arrays[name] = ids
        arrays.update(self._state())
        return arrays

    def save(self, path):
        """Save parameters and fitted arrays to a plain .npz (no pickle); returns the path."""
        self._check_fitted()
        return _persist.write_model(path, type(self).__name__, self._params_json(),
                                    self._all_arrays())

    def _params_json(self) -> dict:
        return self.get_params()

    @classmethod
    def _from_params(cls, params: dict):
        return cls(**params)

    @classmethod
    def load(cls, path, *, mmap: bool = True):
        """Load a model saved by :meth:`save`; large arrays are memory-mapped (read-only).

        The file is untrusted input: its members' CRCs and headers, the parameters and every
        array the kernels will read (dtypes, shapes against the stored shape, CSR structure,
        indices in range and sorted, id maps' lengths, finite values) are checked first, in
        O(file size) with the memory maps kept. Anything wrong is a one-line ValueError
        naming the file and the array.
        """
        params, arrays = _persist.read_model(path, cls.__name__, mmap=mmap)
        with _persist.model_file_errors(path):
            model = cls._from_params(params)
            model._check_loaded_params()
            model._restore(arrays)
        return model

    def _check_loaded_params(self) -> None:
        """The parameters recommend uses, as a fit would accept them (subclasses extend)."""
        params = self.get_params()
        if "backend" in params:
            backend = params["backend"]
            if not isinstance(backend, str) or backend not in ("auto", *BACKENDS):
                raise ValueError(f"parameter backend={backend!r} is not a backend name")
        if "n_threads" in params:
            check_n_threads(params["n_threads"])

    def _restore(self, arrays: dict) -> None:
        self.n_users_, self.n_items_ = _persist.check_csr_arrays("user_items", arrays)
        self.user_items_ = csr_from_arrays("user_items", arrays)
        for name, n in (("user_ids_", self.n_users_), ("item_ids_", self.n_items_)):
            ids = arrays.get(name)
            if ids is not None:
                _persist.check_vector(arrays, name, n, kinds="iufU")
        self.user_ids_ = arrays.get("user_ids_")
        self.item_ids_ = arrays.get("item_ids_")
        self._load_state(arrays)


def _progress_topk(run, rows: np.ndarray, verbose: bool, name: str) -> TopK:
    """``run(rows)`` (a TopK), in row blocks behind a progress bar when there are many rows."""
    parts = _progress.blockwise(lambda block: run(rows[block]), len(rows), verbose,
                                f"recommending ({name})", unit="users")
    if len(parts) == 1:
        return parts[0]
    return TopK(np.concatenate([p.indices for p in parts]),
                np.concatenate([p.scores for p in parts]))


def topk_rows_of_csr(M: sp.csr_matrix, rows: np.ndarray, n: int, *, backend="auto",
                     n_threads=None) -> TopK:
    """The n largest stored entries of each row of M, for neighbour queries, as TopK.

    The rows' entries are laid out in a dense (len(rows), max row length) block padded with
    -inf and ranked by :func:`fastrec.topk`: descending, ties by smaller column (M canonical),
    -1/-inf padding. Memory O(len(rows) * max row length), i.e. O(len(rows) * k) for kNN.
    """
    starts = np.asarray(M.indptr)[rows].astype(np.int64)
    lengths = np.diff(np.asarray(M.indptr))[rows].astype(np.int64)
    width = max(int(lengths.max()) if lengths.size else 0, 1)
    cols = np.arange(width)
    valid = cols[None, :] < lengths[:, None]
    pos = np.where(valid, starts[:, None] + cols[None, :], 0)
    data = np.asarray(M.data)
    indices = np.asarray(M.indices)
    scores = np.where(valid, data[pos] if M.nnz else 0.0, -np.inf).astype(M.dtype)
    best = topk(scores, n, backend=backend, n_threads=n_threads)
    found = best.indices >= 0
    picked = np.take_along_axis(pos, np.maximum(best.indices, 0), axis=1)
    idx = np.where(found, indices[picked] if M.nnz else -1, -1).astype(np.int64)
    return TopK(idx, best.scores)
