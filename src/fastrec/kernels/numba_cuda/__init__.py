"""The CUDA backend (numba-cuda): GPU kernels with the reference's names and signatures.

One module per kernel family (``similarity``, ``topk``, ``scoring``, ``embedding``, as in the
other backends); ``_device`` holds what they share (launch geometry, transfers, the device-array
helpers the public API uses, shared device functions, the sparse-product row accumulation and
the block-wide best-k selection).

Runs on an NVIDIA GPU, or on Numba's CUDA simulator when NUMBA_ENABLE_CUDASIM=1 (how CI tests
it; the simulator lacks warp intrinsics, which ``_cudasim_warp`` supplies). Host (NumPy) arrays
are copied in and results copied out; when any array argument is already a device array
(anything with ``__cuda_array_interface__``: Numba device arrays, CuPy, PyTorch) the results stay
on the device as Numba device arrays. ``n_threads`` is accepted for a uniform signature and
ignored. Every kernel is deterministic (the CSR gradient too: its atomics add pre-rounded
parts whose sums are exact, see :func:`logistic_loss_grad_csr`).

Design, per kernel group (why these shapes: coalesced loads and no CPU loops run per thread):

* scoring (dense C order, CSR): a group of lanes per row (a whole warp for long rows; for
  short rows 32/lanes rows share a warp, so no lane idles), the group striding along its row so
  each load instruction reads whole 32-byte sectors; partial dots reduced with xor shuffles,
  in float64. F-order dense uses one thread per row (a warp reads 32 consecutive rows of a
  column: coalesced too). Loss/gradient: per-row terms, then X.T @ residual by row chunks
  summed in a fixed order (dense) or float64 atomics of pre-rounded, exactly summed parts
  (CSR).
* ``topk`` with many rows: a warp per row, loads of a step issued together, survivors of the
  warp's running threshold gathered by ballot into a shared-memory buffer that a warp bitonic
  sort compacts (see :func:`topk`).
* ranking and selection (``topk`` with few rows, and the last step of ``recommend`` /
  ``cosine_topk``): one block per row. Candidates stream through in tiles of ``_TILE``
  elements; each thread compares its candidates against the block's current k-th best (a
  threshold kept in shared memory) and appends survivors to a buffer of P >= k + tile entries
  (shared memory when it fits, otherwise a per-block slice of global memory). When the buffer
  could overflow, the block bitonic-sorts it, keeps the best k and raises the threshold; after
  the first few tiles almost nothing survives. Ties: the order is (score descending, index
  ascending) everywhere, so the result does not depend on the order candidates arrive.
* device arrays given to the public API are validated here too, by one-pass reductions
  (``device_summary``; ``device_csr_counts`` for device CSR matrices) that bring back only
  scalars.
* sparse products (``recommend``, ``cosine_topk``, ``cosine_similarity``): one block per output
  row with a dense accumulator of the row's width in global memory (one per resident block,
  reused: O(blocks * width)), a stamp array marking which slots this row touched, and the list
  of touched slots. The block walks the row's stored entries in order; for each, its threads
  scatter one row of the other operand (distinct slots, so no atomics and a fixed order of
  additions: deterministic). Cosine needs X's transpose, built on the device in O(nnz), and
  hands rows to blocks dynamically, heaviest first (popular items cost 100x the mean).
"""

from __future__ import annotations

from ._csr_checks import DeviceCSRCounts, device_csr_counts, device_free_memory
from ._device import (
    _SIM,
    DeviceSummary,
    device_cast,
    device_concat_rows,
    device_description,
    device_empty,
    device_from_host,
    device_summary,
    device_view,
    device_zeros,
    is_available,
    is_device_array,
)
from .als import als_cg_update
from .embedding import device_normalised_rows, dot_topk
from .scoring import (
    logistic_hessp_csr,
    logistic_hessp_dense,
    logistic_loss_grad_csr,
    logistic_loss_grad_dense,
    sigmoid_csr,
    sigmoid_dense,
)
from .similarity import cosine_similarity, cosine_topk
from .topk import recommend, topk

__all__ = [
    "_SIM",
    "DeviceCSRCounts",
    "DeviceSummary",
    "als_cg_update",
    "cosine_similarity",
    "cosine_topk",
    "device_cast",
    "device_concat_rows",
    "device_csr_counts",
    "device_description",
    "device_empty",
    "device_free_memory",
    "device_from_host",
    "device_normalised_rows",
    "device_summary",
    "device_view",
    "device_zeros",
    "dot_topk",
    "is_available",
    "is_device_array",
    "logistic_hessp_csr",
    "logistic_hessp_dense",
    "logistic_loss_grad_csr",
    "logistic_loss_grad_dense",
    "recommend",
    "sigmoid_csr",
    "sigmoid_dense",
    "topk",
]
