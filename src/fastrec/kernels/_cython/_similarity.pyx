"""Cython (OpenMP) similarity kernels: sparse cosine neighbourhood top-k and cosine similarity.

The exact row-wise Gustavson product S = Xn Xn^T (or Xn Yn^T): for row i, every stored (i, u)
meets every stored (j, u) of column u through the transposed matrix, summed into a per-thread
dense accumulator of length n_other, allocated once per thread. When every row's stored values
are one constant (binary implicit feedback, the common case) only int32 co-counts are
accumulated and sim = c * a_i * b_j with a_i = v_i / |x_i|; otherwise float64 products of the
normalised values (plus co-counts when ``shrink`` or ``min_support`` need them). A row whose
work (the summed lengths of the columns it meets) is small against n_other records the slots it
touches; other rows scan the accumulator densely, skipping 64-slot blocks with nothing above the
running top-k threshold after one vectorisable pass. Rows are processed longest first with
dynamic scheduling; each row is computed by one thread into its own output slots, so the
result is bit-identical for any thread count. Signatures copy ``kernels/reference.py``.
"""
import numpy as np

from fastrec.kernels import _host

cimport cython
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, fabs, frexp, ldexp, sqrt
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

from ._heap cimport _heap_offer, _heap_sort

ctypedef fused index_t:
    int32_t
    int64_t

ctypedef fused row_t:
    int32_t
    int64_t

ctypedef fused value_t:
    float
    double

cdef enum:
    # Accumulator slots tested against the running threshold in one vectorisable pass.
    SCAN_BLOCK = 64
    # Of the blocks of a dense scan, every SAMPLE_STRIDE-th is ranked first (see _process_row).
    SAMPLE_STRIDE = 8
    # A row scans the whole accumulator when its work is at least n_other / DENSE_SCAN_RATIO.
    DENSE_SCAN_RATIO = 4


# ---- preparation: row scales, transpose, row work -------------------------------------------

def _row_scales(const int64_t[::1] indptr, const value_t[::1] data):
    """(inv_norm, row_exp, row_scale, constant) of each row x_i, scale-invariant: with e_i the
    binary exponent of max |x_i| (x_i * 2^-e_i has its largest value in [0.5, 1), exactly),
    inv_norm_i = 1 / |x_i 2^-e_i|, so x / |x_i| = ldexp(x, -e_i) * inv_norm_i for any finite
    row (no square under- or overflows); for rows of ordinary magnitude these are the bits of
    x * (1 / |x_i|), powers of two being exact. row_scale: v_i/|x_i| for rows whose stored
    values all equal v_i; constant: whether every row is such a row. Empty or all-zero rows get
    0. O(nnz)."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, i
    cdef int64_t p, lo, hi
    cdef double s, v0, top, x
    cdef int e
    cdef bint constant = True
    inv_norm = np.zeros(n, np.float64)
    row_exp = np.zeros(n, np.int32)
    scale = np.zeros(n, np.float64)
    cdef double[::1] inv = inv_norm, sc = scale
    cdef int32_t[::1] ex = row_exp
    with nogil:
        for i in range(n):
            lo = indptr[i]
            hi = indptr[i + 1]
            if hi == lo:
                continue
            top = 0.0
            for p in range(lo, hi):
                top = max(top, fabs(<double>data[p]))
            if top == 0.0:
                continue
            frexp(top, &e)
            ex[i] = e
            s = 0.0
            for p in range(lo, hi):
                x = ldexp(<double>data[p], -e)
                s += x * x
            inv[i] = 1.0 / sqrt(s)
            v0 = data[lo]
            for p in range(lo + 1, hi):
                if data[p] != v0:
                    constant = False
                    break
            sc[i] = ldexp(v0, -e) * inv[i]
    return inv_norm, row_exp, scale, bool(constant)


def _transpose(const int64_t[::1] indptr, const index_t[::1] indices, const value_t[::1] data,
               const double[::1] inv_norm, const int32_t[::1] row_exp, Py_ssize_t n_cols,
               bint weighted, int64_t[::1] t_indptr, row_t[::1] t_indices, double[::1] t_data):
    """Counting-sort transpose into t_* (row ids ascending per column); with ``weighted`` the
    values are normalised (x / |x_row|, float64, see _row_scales). O(nnz + n_cols)."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, i, c
    cdef int64_t p, q
    cdef int64_t[::1] fill
    with nogil:
        memset(&t_indptr[0], 0, (n_cols + 1) * sizeof(int64_t))
        for p in range(indptr[n]):
            t_indptr[indices[p] + 1] += 1
        for c in range(n_cols):
            t_indptr[c + 1] += t_indptr[c]
    fill = np.array(t_indptr[:n_cols], dtype=np.int64)
    with nogil:
        for i in range(n):
            for p in range(indptr[i], indptr[i + 1]):
                c = indices[p]
                q = fill[c]
                t_indices[q] = <row_t>i
                if weighted:
                    t_data[q] = ldexp(<double>data[p], -row_exp[i]) * inv_norm[i]
                fill[c] = q + 1


def _row_work(const int64_t[::1] indptr, const index_t[::1] indices, const int64_t[::1] t_indptr,
              int n_threads):
    """Multiply-adds of each row: the summed lengths of the columns it meets. O(nnz)."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, i
    cdef int64_t p, w, u
    work = np.zeros(n, np.int64)
    cdef int64_t[::1] out = work
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads):
        w = 0
        for p in range(indptr[i], indptr[i + 1]):
            u = indices[p]
            w = w + t_indptr[u + 1] - t_indptr[u]
        out[i] = w
    return work


# ---- the row kernel -------------------------------------------------------------------------

cdef inline double _similarity(
    Py_ssize_t j, double a_i, const double* b, const int32_t* acc_c, const double* acc_f,
    bint binary, double shrink
) noexcept nogil:
    """The shrunk cosine of slot j (0.0 when rows i and j share nothing)."""
    cdef double c = acc_c[j]
    cdef double s
    if binary:
        s = c * (a_i * b[j])  # a_i * b_j == b_j * a_i: the pair (i, j) rounds like (j, i)
    else:
        s = acc_f[j]
    if shrink > 0.0:
        s = s * (c / (c + shrink))
    return s


cdef Py_ssize_t _accumulate(
    Py_ssize_t i, const int64_t* ip, const index_t* ix, const double* xw, const int64_t* tp,
    const row_t* tx, const double* tw, bint binary, bint need_count, bint sparse,
    int32_t* acc_c, double* acc_f, row_t* touched
) noexcept nogil:
    """Scatter row i's products into the accumulators; returns the number of touched slots
    (recorded only when ``sparse``; acc_c then also marks touched slots)."""
    cdef Py_ssize_t nt = 0
    cdef int64_t p, q, lo, hi
    cdef row_t j
    cdef double wv
    for p in range(ip[i], ip[i + 1]):
        lo = tp[ix[p]]
        hi = tp[ix[p] + 1]
        if binary:
            if sparse:
                for q in range(lo, hi):
                    j = tx[q]
                    touched[nt] = j
                    nt += acc_c[j] == 0
                    acc_c[j] += 1
            else:
                for q in range(lo, hi):
                    acc_c[tx[q]] += 1
        else:
            wv = xw[p]
            if sparse:
                for q in range(lo, hi):
                    j = tx[q]
                    touched[nt] = j
                    nt += acc_c[j] == 0
                    acc_c[j] += 1
                    acc_f[j] += wv * tw[q]
            elif need_count:
                for q in range(lo, hi):
                    j = tx[q]
                    acc_c[j] += 1
                    acc_f[j] += wv * tw[q]
            else:
                for q in range(lo, hi):
                    acc_f[tx[q]] += wv * tw[q]
    return nt


cdef void _sort_rows(row_t* a, Py_ssize_t n) noexcept nogil:
    """Ascending in-place sort of touched slots (insertion sort below 32, else heapsort)."""
    cdef Py_ssize_t i, j, start, end, root, child
    cdef row_t v, t
    if n < 32:
        for i in range(1, n):
            v = a[i]
            j = i - 1
            while j >= 0 and a[j] > v:
                a[j + 1] = a[j]
                j -= 1
            a[j + 1] = v
        return
    start = n // 2 - 1
    end = n
    while end > 1:
        if start >= 0:
            root = start
            start -= 1
        else:
            end -= 1
            t = a[0]
            a[0] = a[end]
            a[end] = t
            root = 0
        while True:
            child = 2 * root + 1
            if child >= end:
                break
            if child + 1 < end and a[child + 1] > a[child]:
                child += 1
            if a[root] < a[child]:
                t = a[root]
                a[root] = a[child]
                a[child] = t
                root = child
            else:
                break


cdef Py_ssize_t _process_row(
    Py_ssize_t i, const int64_t* ip, const index_t* ix, const double* xw, const int64_t* tp,
    const row_t* tx, const double* tw, const double* a, const double* b, Py_ssize_t n_other,
    bint binary, bint need_count, bint sparse, int mode, Py_ssize_t kk, double shrink,
    double min_similarity, int64_t min_support, bint include_self, bint round32,
    int32_t* acc_c, double* acc_f, row_t* touched, double* hv, int64_t* hi,
    int64_t* out_idx, double* out_val
) noexcept nogil:
    """Row i: mode 0 writes its best kk (sorted) at out_*[0:], mode 1 counts its stored
    entries, mode 2 writes them columns ascending at out_*[0:]; returns the count."""
    cdef Py_ssize_t nt, n_scan, r0, r1, r, j, blk, n_blocks, step, size = 0
    cdef bint has_counts = binary or sparse or need_count, hit, sample_first
    cdef double a_i = a[i], s, thr_lo = -INFINITY
    cdef double slack = 2.0 ** -23 if round32 else 0.0
    cdef int32_t cnt
    nt = _accumulate(i, ip, ix, xw, tp, tx, tw, binary, need_count, sparse, acc_c, acc_f, touched)
    if sparse:
        n_scan = nt
        if mode == 2:
            _sort_rows(touched, nt)
    else:
        n_scan = n_other
    # Top-k over a dense scan: every SAMPLE_STRIDE-th block first, so that the running
    # threshold (the heap's root) is near its final value before the other blocks come; a
    # block with nothing at or above it is then skipped after one vectorisable pass. Blocks
    # come out of column order, so ties with the root are offered (the heap breaks them).
    sample_first = mode == 0 and not sparse
    n_blocks = (n_scan + SCAN_BLOCK - 1) // SCAN_BLOCK
    for step in range(2 if sample_first else 1):
        for blk in range(n_blocks):
            if sample_first and ((blk % SAMPLE_STRIDE == 0) != (step == 0)):
                continue
            r0 = blk * SCAN_BLOCK
            r1 = r0 + SCAN_BLOCK
            if r1 > n_scan:
                r1 = n_scan
            if sample_first and size == kk:
                hit = False
                for j in range(r0, r1):
                    hit |= _similarity(j, a_i, b, acc_c, acc_f, binary, shrink) >= thr_lo
                if not hit:
                    continue
            for r in range(r0, r1):
                j = touched[r] if sparse else r
                s = _similarity(j, a_i, b, acc_c, acc_f, binary, shrink)
                if sample_first and size == kk and s < thr_lo:
                    continue
                cnt = acc_c[j]
                if sparse:
                    acc_c[j] = 0
                    if not binary:
                        acc_f[j] = 0.0
                if has_counts and cnt < min_support:  # also skips untouched slots (cnt 0)
                    continue
                if s == 0.0 or s < min_similarity:
                    continue
                if mode == 0:
                    if j == i and not include_self:
                        continue
                    if round32:  # rank the value as returned (float32), like the reference
                        s = <double>(<float>s)
                    size = _heap_offer(hv, hi, size, kk, s, j)
                    if size == kk:
                        # float64 values below thr_lo cannot round up to the float32 root.
                        thr_lo = hv[0] - fabs(hv[0]) * slack
                else:
                    if mode == 2:
                        out_idx[size] = j
                        out_val[size] = s
                    size += 1
    if not sparse:
        if has_counts:
            memset(acc_c, 0, n_other * sizeof(int32_t))
        if not binary:
            memset(acc_f, 0, n_other * sizeof(double))
    if mode == 0:
        _heap_sort(hv, hi, size)
        for r in range(size):
            out_idx[r] = hi[r]
            out_val[r] = hv[r]
    return size


@cython.boundscheck(False)
@cython.wraparound(False)
def _cosine_rows(const int64_t[::1] ip, const index_t[::1] ix, const double[::1] xw,
                 const int64_t[::1] tp, const row_t[::1] tx, const double[::1] tw,
                 const double[::1] a, const double[::1] b, Py_ssize_t n_other, bint binary,
                 bint need_count, const int64_t[::1] order, const int64_t[::1] work, int mode,
                 Py_ssize_t kk, double shrink, double min_similarity, int64_t min_support,
                 bint include_self, bint round32, int64_t[::1] out_count,
                 const int64_t[::1] out_ptr, int64_t[::1] out_idx, double[::1] out_val,
                 int n_threads):
    """One pass over the rows of X in ``order`` (see _process_row for ``mode``). Mode 0
    writes row order[pos] into slot pos (out_*[pos*kk:], its count at out_count[pos]), so a
    block of rows needs slots for that block only; modes 1 and 2 count row i at out_count[i]
    and mode 2 writes it at out_ptr[i]."""
    cdef Py_ssize_t n = order.shape[0], pos, i, cnt
    cdef int64_t dst
    cdef int32_t* acc_c
    cdef double* acc_f
    cdef row_t* touched
    cdef double* hv
    cdef int64_t* hi
    # A thread that cannot allocate flags it through this pointer (a plain variable assigned
    # inside the parallel block would be thread-private) and its rows are reported below.
    cdef int32_t[::1] failed_view = np.zeros(1, np.int32)
    cdef int32_t* failed = &failed_view[0]
    cdef const double* xw_p = &xw[0] if xw.shape[0] else NULL
    cdef const double* tw_p = &tw[0] if tw.shape[0] else NULL
    cdef const index_t* ix_p = &ix[0] if ix.shape[0] else NULL
    cdef const row_t* tx_p = &tx[0] if tx.shape[0] else NULL
    cdef int64_t* idx_p = &out_idx[0] if out_idx.shape[0] else NULL
    cdef double* val_p = &out_val[0] if out_val.shape[0] else NULL
    cdef Py_ssize_t heap_len = kk if kk > 0 else 1
    if n == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        acc_c = <int32_t*> calloc(n_other + 1, sizeof(int32_t))
        acc_f = <double*> calloc(1 if binary else n_other + 1, sizeof(double))
        touched = <row_t*> malloc((n_other + 1) * sizeof(row_t))
        hv = <double*> malloc(heap_len * sizeof(double))
        hi = <int64_t*> malloc(heap_len * sizeof(int64_t))
        if acc_c == NULL or acc_f == NULL or touched == NULL or hv == NULL or hi == NULL:
            failed[0] = 1
        for pos in prange(n, schedule="dynamic", chunksize=1):
            if failed[0]:
                continue
            i = order[pos]
            if mode == 0:
                dst = pos * kk
            elif mode == 2:
                dst = out_ptr[i]
            else:
                dst = 0
            cnt = _process_row(
                i, &ip[0], ix_p, xw_p, &tp[0], tx_p, tw_p, &a[0], &b[0], n_other, binary,
                need_count, work[i] * DENSE_SCAN_RATIO < n_other, mode, kk, shrink,
                min_similarity, min_support, include_self, round32, acc_c, acc_f, touched,
                hv, hi, idx_p + dst if idx_p != NULL else NULL,
                val_p + dst if val_p != NULL else NULL,
            )
            if mode == 0:
                out_count[pos] = cnt
            else:
                out_count[i] = cnt
        free(acc_c)
        free(acc_f)
        free(touched)
        free(hv)
        free(hi)
    if failed_view[0]:
        raise MemoryError(
            f"cosine kernel could not allocate its per-thread buffers ({n_other} slots)"
        )


def _compact(const int64_t[::1] counts, Py_ssize_t kk, const int64_t[::1] out_idx,
             const double[::1] out_val, const int64_t[::1] slots, const int64_t[::1] indptr,
             int64_t[::1] indices, value_t[::1] values, int n_threads):
    """Output row r: copy the counts[s] entries of slot s = slots[r] (at s*kk) into CSR
    position indptr[r]."""
    cdef Py_ssize_t n = slots.shape[0], r
    cdef int64_t e, s, src, dst
    for r in prange(n, nogil=True, schedule="static", num_threads=n_threads):
        s = slots[r]
        src = s * kk
        dst = indptr[r]
        for e in range(counts[s]):
            indices[dst + e] = out_idx[src + e]
            values[dst + e] = <value_t>out_val[src + e]


# ---- public kernels (reference signatures) --------------------------------------------------

# ---- what this backend gives the shared host layer (kernels/_host.py) -------------------------

def _threads(n_threads):
    return max(1, int(n_threads))


def _run_row_work(indptr, indices, t_indptr, n_threads):
    return _row_work(indptr, indices, t_indptr, _threads(n_threads))


def _run_cosine_rows(mode, operands, rule, out, n_threads):
    _cosine_rows(*operands, int(mode), *rule, *out, _threads(n_threads))


def _run_compact(counts, kk, out_idx, out_val, slots, indptr, indices, values, n_threads):
    _compact(counts, kk, out_idx, out_val, slots, indptr, indices, values, _threads(n_threads))


def _transpose_index_dtype(n_rows):
    return np.int32 if n_rows < 2**31 else np.int64


def _as_indptr(indptr):
    return np.asarray(indptr, dtype=np.int64)


def _same(a):
    return a


def _float64(dtype):
    return np.float64  # per-slot values in float64, rounded once into the result


LOOPS = _host.CosineLoops(
    row_scales=_row_scales,
    transpose=_transpose,
    transpose_index_dtype=_transpose_index_dtype,
    row_work=_run_row_work,
    cosine_rows=_run_cosine_rows,
    compact=_run_compact,
    as_indptr=_as_indptr,
    as_indices=_same,
    slot_dtype=_float64,
)

cosine_topk_prepare = _host.bind(_host.cosine_topk_prepare, LOOPS, __name__)
cosine_topk_rows = _host.bind(_host.cosine_topk_rows, LOOPS, __name__)
cosine_topk = _host.bind(_host.cosine_topk, LOOPS, __name__)
cosine_similarity_prepare = _host.bind(_host.cosine_similarity_prepare, LOOPS, __name__)
cosine_similarity_rows = _host.bind(_host.cosine_similarity_rows, LOOPS, __name__)
cosine_similarity = _host.bind(_host.cosine_similarity, LOOPS, __name__)
