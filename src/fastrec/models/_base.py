"""The contract every recommender model shares: fit -> self, recommend -> TopK, save/load.

A model is fit on a users x items scipy sparse matrix or on a :class:`fastrec.data.Interactions`
(whose id maps it then keeps as ``user_ids_`` / ``item_ids_`` and saves with it). Requests name
users three ways: ``user_ids`` (rows of the fitted matrix), ``users`` (original ids) or
``user_items`` (one sparse row of item columns per request, for users unseen at fit time).
Every request can carry ``exclude`` (items never returned) and ``candidates`` (the only items
that may be returned). ``decode_items`` / ``decode_users`` turn rows and columns back into
original ids; ``explain`` splits a score into the contributions that sum to it.
Explicitly stored zeros in the fit matrix are dropped (not interactions: never "seen", no
source of scores); the caller's matrix is left as it is.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from .. import _progress
from .._dispatch import BACKENDS
from .._validation import CSR, check_csr, check_k, check_n_threads, is_device_sparse
from ..data import Interactions, decode_ids, id_order, lookup_ids
from ..topk import TopK, topk
from . import _device, _persist

if TYPE_CHECKING:
    from typing_extensions import Self

# The types the public methods take (scipy has no type stubs: to mypy its matrices are Any).
# A fit argument: a users x items scipy sparse matrix or array, or Interactions.
UserItems: TypeAlias = "sp.spmatrix | sp.sparray | Interactions"
# Users unseen at fit time: one sparse row per request, or per request a list of original item
# ids (value 1 each) or a dict original item id -> value; or a GPU device CSR (CuPy, PyTorch,
# DeviceCSR: untyped here) for the models that score on the device.
RequestItems: TypeAlias = "sp.spmatrix | sp.sparray | Sequence[Sequence[Any] | Mapping[Any, float]]"
# exclude / candidates: 1-D columns (or original ids) for every request, or a sparse mask.
ItemFilter: TypeAlias = "ArrayLike | sp.spmatrix | sp.sparray"
# partial_fit: the grown Interactions, a dict of events in original ids, or the grown matrix.
NewEvents: TypeAlias = "Interactions | dict[str, ArrayLike] | sp.spmatrix | sp.sparray"
# A model file's path.
FilePath: TypeAlias = "str | os.PathLike[str]"


def as_user_items(X: UserItems, name: str = "user_items") -> tuple[CSR, Interactions | None]:
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


# Mask entries per block of request rows: bounds the memory of an allow-list's complement.
_MASK_BLOCK_ENTRIES = 1 << 22

_ONE_REQUEST_KIND = (
    "give exactly one of user_ids (rows), users (original ids) or "
    "user_items (one sparse row per request)"
)
_TO_HOST = "copy it to the host first (CuPy: X.get(); PyTorch: X.cpu())"


class Explanation(NamedTuple):
    """Why a model scores (user, item) as it does: ``score == base + contributions.sum()``.

    ``kind`` says what the ``sources`` are: "items" (item columns: ItemKNN, the user's items),
    "users" (user rows: UserKNN, the user's neighbours), "features" (feature columns of a CTR
    ranker: Hybrid with ``rerank``), "models" (CF model positions: a Hybrid blend) or
    "popularity" (no sources: the score is the item's count, all in ``base``).
    ``contributions`` (float64) align with ``sources``; ``ids`` holds the sources' original
    ids when the model has id maps (else None); ``details`` holds model-specific extras
    (Hybrid: the probability and the CF blend score the ranking started from).
    """

    score: float
    base: float
    kind: str
    sources: np.ndarray
    contributions: np.ndarray
    ids: np.ndarray | None = None
    details: dict | None = None


class _Requests:
    """The users of one call: fitted ``rows`` (int64) or request rows ``R`` (CSR), not both."""

    __slots__ = ("R", "rows")

    def __init__(self, rows=None, R=None):
        self.rows, self.R = rows, R

    def __len__(self):
        return len(self.rows) if self.rows is not None else self.R.shape[0]

    def block(self, r0, r1):
        if self.rows is not None:
            return _Requests(rows=self.rows[r0:r1])
        return _Requests(R=self.R[r0:r1])

    def seen(self, user_items):
        """The requests' own interactions as CSR rows (n_requests x n_items)."""
        return user_items[self.rows] if self.rows is not None else self.R


class Recommender:
    """Base class: parameters in the constructor, learned state in attributes ending in ``_``."""

    # Why recommend(user_items=<device CSR>) is refused (None: the model scores on the device).
    _device_refusal: str | None = "it has no device path"

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (scikit-learn convention), for cloning and saving."""
        sig = inspect.signature(type(self).__init__)
        return {name: getattr(self, name) for name in sig.parameters if name != "self"}

    def clone(self) -> Self:
        """An unfitted model with the same parameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def fit(self, user_items: UserItems) -> Self:  # pragma: no cover - abstract
        """Learn from a users x items matrix or Interactions; returns self (subclasses)."""
        raise NotImplementedError

    # -- fitted state -------------------------------------------------------------------
    def _set_data(self, UI: CSR, source: Interactions | None) -> None:
        self.user_items_ = sp.csr_matrix((UI.data, UI.indices, UI.indptr), shape=UI.shape)
        self.user_items_.has_sorted_indices = True
        self.n_users_, self.n_items_ = UI.shape
        self.user_ids_ = None if source is None else source.user_ids
        self.item_ids_ = None if source is None else source.item_ids
        self.duplicates_ = None if source is None else source.duplicates
        self._id_orders = None

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
                f"user_ids must be integer row indices, got dtype {arr.dtype}; pass original "
                "ids as users=[...]"
            )
        arr = arr.astype(np.int64)
        bad = (arr < 0) | (arr >= self.n_users_)
        if bad.any():
            raise ValueError(
                f"unknown user {arr[bad][0]}: the model was fit on {self.n_users_} users "
                f"(rows 0..{self.n_users_ - 1})"
            )
        return arr

    def _check_items(self, item_ids, name="item_ids") -> np.ndarray:
        self._check_fitted()
        arr = np.asarray(item_ids)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise TypeError(
                f"{name} must be a 1-D array of integer column indices; pass original ids "
                "as items=[...]"
            )
        arr = arr.astype(np.int64)
        bad = (arr < 0) | (arr >= self.n_items_)
        if bad.any():
            raise ValueError(
                f"unknown item {arr[bad][0]}: the model was fit on {self.n_items_} items"
            )
        return arr

    # -- original ids -------------------------------------------------------------------
    def _id_map(self, what):
        self._check_fitted()
        ids = getattr(self, f"{what}_ids_")
        if ids is None:
            raise ValueError(
                f"the model was fit on a bare matrix: it has no original {what} ids (fit it "
                "on fastrec.data.Interactions to keep them)"
            )
        return ids

    def __getstate__(self):
        """Pickled (dask ships models to its workers) without the per-fitted-state cache: it
        is recomputed on demand, and after a device request it holds GPU arrays that a
        worker without a GPU could not unpickle."""
        state = self.__dict__.copy()
        state.pop("_fitted_cache", None)
        return state

    def _per_fitted_state(self, name: str, source, compute, *, also=None):
        """``compute(source)`` kept until the fitted ``source`` object (or ``also``) changes:
        what requests would otherwise redo per call (validating fitted arrays, Gram matrices)
        is done once per fitted state."""
        cache = self.__dict__.setdefault("_fitted_cache", {})
        hit = cache.get(name)
        if hit is None or hit[0] is not source or hit[1] != also:
            hit = (source, also, compute(source))
            cache[name] = hit
        return hit[2]

    def _order(self, what):
        orders = getattr(self, "_id_orders", None) or {}
        if what not in orders:  # computed once per fitted model: lookups are then O(log n)
            orders[what] = id_order(self._id_map(what))
            self._id_orders = orders
        return orders[what]

    def user_index(self, users: ArrayLike) -> np.ndarray:
        """Rows (int64) of original user ids; ValueError naming an unknown id."""
        return lookup_ids(self._id_map("user"), users, "user id", self._order("user"))

    def item_index(self, items: ArrayLike) -> np.ndarray:
        """Columns (int64) of original item ids; ValueError naming an unknown id."""
        return lookup_ids(self._id_map("item"), items, "item id", self._order("item"))

    def decode_items(self, indices: ArrayLike, fill: Any = None) -> np.ndarray:
        """Original item ids of ``TopK.indices`` (needs a fit on Interactions); -1 -> fill.
        Device indices (a result of device requests) are copied to the host: the ids are
        host objects."""
        return decode_ids(self._id_map("item"), _device.host_indices(indices), fill)

    def decode_users(self, indices: ArrayLike, fill: Any = None) -> np.ndarray:
        """Original user ids of user rows (e.g. ``similar_users(...).indices``); -1 -> fill."""
        return decode_ids(self._id_map("user"), _device.host_indices(indices), fill)

    # -- requests -----------------------------------------------------------------------
    def _requests(self, user_ids, users, user_items) -> _Requests:
        given = [x is not None for x in (user_ids, users, user_items)]
        if sum(given) != 1:
            raise ValueError(_ONE_REQUEST_KIND)
        if user_ids is not None:
            return _Requests(rows=self._check_users(user_ids))
        if users is not None:
            self._check_fitted()
            return _Requests(rows=self.user_index(np.asarray(users).reshape(-1)))
        return _Requests(R=self._request_rows(user_items))

    def _request_rows(self, user_items) -> sp.csr_matrix:
        """user_items of unseen users as canonical CSR rows over the fitted item columns.

        Accepts a scipy sparse (n_requests x n_items) or a list with one entry per request:
        a sequence of original item ids (value 1 each) or a dict original item id -> value.
        """
        if is_device_sparse(user_items):  # never copied behind the caller's back
            self._refuse_device()
            raise TypeError(
                f"user_items is a GPU device CSR: {type(self).__name__}.recommend takes it on "
                f"the device, this method works on the host: {_TO_HOST}"
            )
        self._check_fitted()
        if sp.issparse(user_items):
            R = check_csr(user_items, "user_items", dtype=self.user_items_.dtype, drop_zeros=True)
            if R.shape[1] != self.n_items_:
                raise ValueError(
                    f"user_items has {R.shape[1]} columns but the model knows {self.n_items_} "
                    f"items (columns 0..{self.n_items_ - 1}): map new items' events through "
                    "partial_fit first, or drop them"
                )
            R = sp.csr_matrix((R.data, R.indices, R.indptr), shape=R.shape, copy=False)
            R.has_sorted_indices = True
            return R
        elif isinstance(user_items, (list, tuple)):
            rows, cols, vals = [], [], []
            for r, req in enumerate(user_items):
                if isinstance(req, dict):
                    ids, v = list(req.keys()), np.asarray(list(req.values()), np.float64)
                else:
                    ids = list(req)
                    v = np.ones(len(ids))
                c = self.item_index(np.asarray(ids)) if len(ids) else np.zeros(0, np.int64)
                rows.append(np.full(len(c), r, np.int64))
                cols.append(c)
                vals.append(v)
            R = sp.csr_matrix(
                (
                    np.concatenate(vals) if vals else np.zeros(0),
                    (
                        np.concatenate(rows) if rows else np.zeros(0, np.int64),
                        np.concatenate(cols) if cols else np.zeros(0, np.int64),
                    ),
                ),
                shape=(len(user_items), self.n_items_),
            )
            R = check_csr(R, "user_items", drop_zeros=True)
            R = sp.csr_matrix((R.data, R.indices, R.indptr), shape=R.shape)
        else:
            raise TypeError(
                "user_items must be a scipy sparse matrix (one row per request, the model's "
                f"item columns) or a list of item-id lists, got {type(user_items).__name__}"
            )
        R = R.astype(self.user_items_.dtype, copy=False)
        R.has_sorted_indices = True
        return R

    def _item_list(self, items, name):
        """A 1-D list of items: integer columns, or original ids (mapped) of any other kind."""
        arr = np.asarray(items)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim == 1 and arr.size and arr.dtype.kind not in "iu":
            return self.item_index(arr)
        return self._check_items(arr, name)

    def _masks(self, exclude, candidates, n_rows, n_cols, item_axis=True):
        """Blocks (r0, r1, mask) of request rows with one CSR mask per block (None: no mask).

        ``exclude``: positions never returned; ``candidates``: the only positions that may be
        returned (an allow-list: its complement is masked). Each is None, a 1-D list of columns
        for every row (original item ids accepted) or a sparse (n_rows x n_cols) mask of which
        only the pattern counts. The complement of an allow-list costs O(rows * n_cols) entries,
        so rows are taken in blocks of at most ``_MASK_BLOCK_ENTRIES`` masked entries.
        """

        def as_mask(x, name):
            if x is None:
                return None
            if is_device_sparse(x):  # only a device request's exclude is read on the device
                raise TypeError(
                    f"{name} is a GPU device CSR: a device mask is taken as exclude with "
                    f"device user_items only (see the model's docstring); {_TO_HOST}"
                )
            if sp.issparse(x):
                M = check_csr(x, name, allow_nonfinite=True)
                if M.shape != (n_rows, n_cols):
                    raise ValueError(f"{name} must have shape {(n_rows, n_cols)}, got {M.shape}")
                return sp.csr_matrix((np.ones(len(M.indices)), M.indices, M.indptr), shape=M.shape)
            return np.unique(self._item_list(x, name) if item_axis else self._check_users(x))

        ex, cand = as_mask(exclude, "exclude"), as_mask(candidates, "candidates")
        if ex is None and cand is None:
            return [(0, n_rows, None)]
        if cand is not None and not sp.issparse(cand):
            # One allow-list for every row: mask its complement, merged with a list exclude.
            comp = np.setdiff1d(np.arange(n_cols), cand)
            if ex is None or not sp.issparse(ex):
                ex = comp if ex is None else np.union1d(ex, comp)
                cand = None
            else:
                cand, comp_list = None, comp
                ex = ex + self._tiled(comp_list, n_rows, n_cols)
        width = n_cols if cand is not None else max(1, len(ex) if not sp.issparse(ex) else 1)
        if sp.issparse(ex) and cand is None:
            return [(0, n_rows, ex)]
        step = max(1, _MASK_BLOCK_ENTRIES // max(1, width))
        blocks = []
        for r0 in range(0, n_rows, step):
            r1 = min(n_rows, r0 + step)
            if cand is None:
                blk = self._tiled(ex, r1 - r0, n_cols)
            else:
                allowed = cand[r0:r1].toarray() != 0
                blk = sp.csr_matrix(~allowed, dtype=np.float64)
                if ex is not None:
                    blk = blk + (ex[r0:r1] if sp.issparse(ex) else self._tiled(ex, r1 - r0, n_cols))
            blk = sp.csr_matrix(blk)
            blk.sum_duplicates()
            blocks.append((r0, r1, blk))
        return blocks or [(0, 0, sp.csr_matrix((0, n_cols)))]

    @staticmethod
    def _tiled(cols, n_rows, n_cols):
        """The same sorted columns masked in each of n_rows rows."""
        k = len(cols)
        return sp.csr_matrix(
            (np.ones(n_rows * k), np.tile(cols, n_rows), np.arange(n_rows + 1, dtype=np.int64) * k),
            shape=(n_rows, n_cols),
        )

    def recommend(
        self,
        user_ids: ArrayLike | None = None,
        n: int = 10,
        *,
        users: ArrayLike | None = None,
        user_items: RequestItems | None = None,
        exclude_seen: bool = True,
        exclude: ItemFilter | None = None,
        candidates: ItemFilter | None = None,
    ) -> TopK:
        """Top-n items per request: TopK (n_requests, n), item columns (see decode_items).

        Requests: ``user_ids`` (rows of the fitted matrix), ``users`` (original ids) or
        ``user_items`` (users unseen at fit time: a scipy sparse with one row per request over
        the fitted item columns, or a list of original-item-id lists; an unknown item is a
        ValueError). ``exclude_seen``: never return the request's own items ("seen": stored with
        a nonzero value at fit, or in the request's row). ``exclude`` /
        ``candidates``: items never returned / the only items that may be returned, as a 1-D
        list for every request (columns, or original ids) or a sparse mask (n_requests x
        n_items). Sorted by score descending, ties by smaller item, -1/-inf padding. Memory
        per model (see the class docstring), plus O(rows * n_items) per block of rows for an
        allow-list's complement (blocks of at most 4M masked entries).

        Device requests: ``user_items`` may be a GPU CSR (CuPy or PyTorch sparse CSR, or any
        object with device ``indptr``/``indices``/``data`` and ``shape``; canonical, checked
        on the device; ItemKNN and ALS: values of the fitted dtype, as nothing is cast) for
        the models that score on the device (ItemKNN, ALS, Popularity; the others raise a
        TypeError saying why). With the model's
        ``backend`` "auto" or "cuda" it is read in place, never copied to the host, and the
        result is a TopK of device arrays; a CPU backend is a TypeError. Filters as above
        (host, copied in), or ``exclude`` as a device CSR mask; each model's docstring says
        which combinations it takes.
        """
        if is_device_sparse(user_items):
            if user_ids is not None or users is not None:
                raise ValueError(_ONE_REQUEST_KIND)
            self._refuse_device()
            return self._recommend_device(
                user_items, check_k(n, "n"), bool(exclude_seen), exclude, candidates
            )
        req = self._requests(user_ids, users, user_items)
        n = check_k(n, "n")
        exclude_seen = bool(exclude_seen)
        blocks = self._masks(exclude, candidates, len(req), self.n_items_)
        if len(blocks) == 1 and blocks[0][2] is None and req.R is None:
            return _progress_topk(
                lambda block: self._recommend(block, n, exclude_seen),
                req.rows,
                getattr(self, "verbose", False),
                type(self).__name__,
            )
        if len(blocks) == 1:  # no slicing: one request is the latency-critical case
            return self._recommend_requests(req, n, exclude_seen, blocks[0][2])
        parts = [
            self._recommend_requests(req.block(r0, r1), n, exclude_seen, mask)
            for r0, r1, mask in blocks
        ]
        return TopK(
            np.concatenate([p.indices for p in parts]), np.concatenate([p.scores for p in parts])
        )

    def _recommend(self, rows, n, exclude_seen) -> TopK:  # pragma: no cover - abstract
        raise NotImplementedError

    def _recommend_requests(self, req: _Requests, n, exclude_seen, mask) -> TopK:
        """recommend for request rows or masked fitted rows (subclasses implement)."""
        raise ValueError(f"{type(self).__name__} does not take user_items, exclude or candidates")

    def _refuse_device(self) -> None:
        """TypeError for device request rows when the model has no device path."""
        if self._device_refusal is not None:
            raise TypeError(
                f"{type(self).__name__} cannot take user_items as a GPU device CSR: "
                f"{self._device_refusal}; {_TO_HOST}"
            )

    def _recommend_device(self, user_items, n, exclude_seen, exclude, candidates) -> TopK:
        """recommend for device request rows (the models with a device path implement)."""
        raise NotImplementedError  # pragma: no cover - _refuse_device raised first

    # -- explanations ---------------------------------------------------------------------
    def _explain_target(self, user_id, item_id, user, item, user_items, exclude_seen):
        """(request rows, item column) of an explain call, with the seen-item rule applied."""
        if (item_id is None) == (item is None):
            raise ValueError("give exactly one of item_id (a column) or item (an original id)")
        col = int(self._check_items(item_id)[0] if item is None else self.item_index(item)[0])
        req = self._requests(user_id, None if user is None else [user], user_items)
        if len(req) != 1:
            raise ValueError(f"explain takes one user, got {len(req)}")
        seen = req.seen(self.user_items_)
        if exclude_seen and col in set(seen.indices.tolist()):
            raise ValueError(
                f"item {col} is one of the user's own items: with exclude_seen=True recommend "
                "never returns it, so it has no score to explain; pass exclude_seen=False to "
                "explain the score it would have"
            )
        return req, col

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
        if getattr(self, "duplicates_", None) is not None:
            arrays["duplicates_"] = np.array(self.duplicates_)
        arrays.update(self._state())
        return arrays

    def save(self, path: FilePath) -> Path:
        """Save parameters and fitted arrays to a plain .npz (no pickle); returns the path."""
        self._check_fitted()
        return _persist.write_model(
            path, type(self).__name__, self._params_json(), self._all_arrays()
        )

    def _params_json(self) -> dict:
        return self.get_params()

    @classmethod
    def _from_params(cls, params: dict):
        return cls(**params)

    @classmethod
    def load(cls, path: FilePath, *, mmap: bool = True) -> Self:
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
        dup = arrays.get("duplicates_")
        self.duplicates_ = None if dup is None else str(dup)
        self._id_orders = None
        self._load_state(arrays)


def _progress_topk(run, rows: np.ndarray, verbose: bool, name: str) -> TopK:
    """``run(rows)`` (a TopK), in row blocks behind a progress bar when there are many rows."""
    parts = _progress.blockwise(
        lambda block: run(rows[block]), len(rows), verbose, f"recommending ({name})", unit="users"
    )
    if len(parts) == 1:
        return parts[0]
    return TopK(
        np.concatenate([p.indices for p in parts]), np.concatenate([p.scores for p in parts])
    )


def topk_rows_of_csr(
    M: sp.csr_matrix, rows: np.ndarray, n: int, *, backend="auto", n_threads=None
) -> TopK:
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
