"""How the scoring kernels cut their work: block sizes and CSR chunk boundaries, shared by the
compiled backends so that every backend's reductions have a fixed, thread-independent order.

Dense loss/grad: blocks of DENSE_BLOCK rows, each with its own partial gradient (n / 256 * d
float64s in all, 1/32 of a float64 X), combined in block order. CSR loss/grad: at most
CSR_GRAD_CHUNKS chunks of rows, each scattering into its own dense float64 gradient buffer
(at most CSR_GRAD_BYTES in all, fewer chunks for very wide X), combined in chunk order.
Partial gradients are folded in parallel over COMBINE_BLOCK-column blocks.
"""

from __future__ import annotations

import numpy as np

DENSE_BLOCK = 256
# Numba's dense C-order sigmoid takes the sigmoid of every SIGMOID_CHUNK rows' logits as soon
# as they are computed, so that the memory stream never waits long for it (a speed choice
# only: the scores are the same for any chunk). 2M x 64 float32, one thread, Zen 4: a whole
# block (256 rows) at a time left the kernel at 0.68-0.74 of the read; 32 rows, 0.79-0.85.
# Cython's takes 16-row chunks, each one's sigmoid after the next one's logits
# (_scoring.pyx, _dense_chunk).
SIGMOID_CHUNK = 32
# Rows per block of the F-order sigmoid (its logits are built column by column, in place in a
# block's float64 accumulator: 128 KB, in L2). Long column runs keep the hardware prefetcher
# streaming: 2M x 64 float32, Zen 4, 2 threads, eight columns per pass: 256-row blocks 0.24 of
# the read, 16384-row blocks 0.82-0.89 (NumPy's expit(X @ w) 0.47-0.51). Speed only: each
# row's sum runs over the columns in order whatever the block.
SIGMOID_F_BLOCK = 16384
CSR_BLOCK = 1024
COMBINE_BLOCK = 4096
COMBINE_PARALLEL_MIN = 1 << 20  # smaller folds of partial gradients run on one thread
CSR_GRAD_CHUNKS = 8
CSR_GRAD_BYTES = 1 << 27


def n_dense_blocks(n_rows: int) -> int:
    return (n_rows + DENSE_BLOCK - 1) // DENSE_BLOCK


def csr_chunk_bounds(indptr: np.ndarray, n_features: int) -> np.ndarray:
    """Row boundaries (int64, length chunks + 1) of the CSR gradient's chunks.

    A function of the matrix alone (never of the thread count): as many chunks as
    CSR_GRAD_CHUNKS and CSR_GRAD_BYTES allow, cut so that each holds about the same
    rows + non-zeros (the work of a chunk).
    """
    n = len(indptr) - 1
    n_chunks = max(1, min(CSR_GRAD_CHUNKS, CSR_GRAD_BYTES // (8 * max(1, n_features)), n))
    work = indptr.astype(np.int64) + np.arange(n + 1, dtype=np.int64)
    targets = (np.arange(n_chunks + 1, dtype=np.int64) * int(work[-1])) // n_chunks
    bounds = np.searchsorted(work, targets, side="left").astype(np.int64)
    bounds[0], bounds[n_chunks] = 0, n
    return bounds
