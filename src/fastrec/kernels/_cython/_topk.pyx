"""Cython (OpenMP) ranking kernels: dense top-k with a CSR exclusion mask, fused sparse recommend.

Dense top-k keeps a buffer of candidates above a running threshold, cut back by a selection
(``_topk_row``; packed keys for float32 in ``_topk_row_f32``); the fused recommend keeps a
bounded min-heap (``_heap.pxd``). Ties go to the smaller index. Rows are independent and each
writes only its own output slots, so results are bit-identical for any thread count.
Signatures copy ``kernels/reference.py`` exactly; inputs are trusted (canonical CSR masks:
sorted indices per row), the public API validates them.
"""
import numpy as np

from fastrec.kernels import _host

cimport cython
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, nextafter, nextafterf
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memset

from ._heap cimport _heap_offer, _heap_sort, _select_pairs, _sift_down

ctypedef fused floating:
    float
    double

ctypedef fused index_t:
    int32_t
    int64_t

# Width of the blocks that are tested against the running threshold with one vectorisable
# comparison before any element is looked at individually (a cache line is 16 floats).
cdef enum:
    BLOCK = 64
    SLACK = 80

# The C (SSE2 block tests, the AVX-512 compress row) lives in _topk_simd.h.
cdef extern from "_topk_simd.h":
    int fastrec_any_f32(const float* p, float thr) nogil
    int fastrec_any_f64(const double* p, double thr) nogil
    uint64_t fastrec_hits_f32(const float* p, float thr) nogil
    uint64_t fastrec_hits_f64(const double* p, double thr) nogil
    float fastrec_max16_f32(const float* p) nogil
    double fastrec_max16_f64(const double* p) nogil
    int __builtin_ctzll(unsigned long long) nogil
    int fastrec_cpu_has_avx512() nogil
    void fastrec_rank_init() nogil
    void fastrec_rank_keys(const uint64_t* a, Py_ssize_t n, uint64_t* out) nogil
    void fastrec_rank_keys_form(int form, const uint64_t* a, Py_ssize_t n, uint64_t* out) nogil
    int fastrec_rank_form_available(int form) nogil
    uint64_t _f32_key "fastrec_f32_key"(float v, int64_t j) nogil
    float _key_f32 "fastrec_key_f32"(uint64_t key) nogil
    uint64_t fastrec_f64_floor_key(double x, int64_t j) nogil
    uint64_t fastrec_cut_keys(uint64_t* a, Py_ssize_t n, Py_ssize_t k, uint64_t* s) nogil
    void fastrec_scan_f32(const float* row, Py_ssize_t j_end, Py_ssize_t k, const int64_t* ex,
                          Py_ssize_t n_ex, uint64_t* keys, uint32_t* cols, uint64_t* s,
                          Py_ssize_t* nk_io, float* thr_io, const uint64_t* listed) nogil
    float fastrec_block_bound_f32(const float* row, Py_ssize_t j_end, Py_ssize_t k,
                                  const int64_t* ex, Py_ssize_t n_ex, uint64_t* keys,
                                  uint64_t* s, uint64_t* listed) nogil


# Up to this many keys the output row is ordered by rank sort (fastrec_rank_keys), beyond by
# heap sort: measured per row (Zen 4, the Numba twin) rank / heap 0.14 / 0.23 us at 32 keys,
# 1.1 / 3.2 at 100, 4.8 / 10.6 at 256, 18 / 24 at 512.
cdef enum:
    RANK_SORT_MAX = 256

fastrec_rank_init()


def _rank_sort_keys(const uint64_t[::1] keys, form="auto"):
    """The keys ranked descending, for tests: by the form this CPU runs ("auto") or by the
    named one ("base", "avx2", "avx512"; ValueError where the CPU lacks it)."""
    forms = {"auto": -1, "base": 0, "avx2": 1, "avx512": 2}
    cdef int f = forms[form]
    if f >= 0 and not fastrec_rank_form_available(f):
        raise ValueError(f"this CPU cannot run the {form} rank sort")
    out = np.empty(keys.shape[0], dtype=np.uint64)
    cdef uint64_t[::1] o = out
    if keys.shape[0]:
        if f < 0:
            fastrec_rank_keys(&keys[0], keys.shape[0], &o[0])
        else:
            fastrec_rank_keys_form(f, &keys[0], keys.shape[0], &o[0])
    return out


# Whether _topk_row_f32 takes the vector-compress form (AVX-512 CPUs, k >= _compress_min_k,
# as the Numba backend); see fastrec.kernels.topk_forms.
cdef bint _compress = fastrec_cpu_has_avx512()
_compress_min_k = 32


def _compress_available():
    return bool(fastrec_cpu_has_avx512())


def _compress_enabled():
    return bool(_compress)


def _set_compress(bint flag, min_k=32):
    """Use (True, where the CPU has it, for k >= min_k) or not the compress form; returns the
    previous (flag, min_k)."""
    global _compress, _compress_min_k
    previous = (_compress, _compress_min_k)
    _compress = flag and fastrec_cpu_has_avx512()
    _compress_min_k = min_k
    return previous


cdef inline uint64_t _block_hits(const floating* p, Py_ssize_t n, floating thr) noexcept nogil:
    """Bit t set when p[t] > thr (NaN never is), n <= BLOCK.

    A full block is first tested as a whole, so that the common case (nothing above) costs
    a few vector instructions.
    """
    cdef uint64_t m = 0
    cdef Py_ssize_t t
    if n == BLOCK:
        if floating is float:
            return fastrec_hits_f32(p, thr) if fastrec_any_f32(p, thr) else 0
        else:
            return fastrec_hits_f64(p, thr) if fastrec_any_f64(p, thr) else 0
    for t in range(n):
        m |= (<uint64_t> (p[t] > thr)) << t
    return m


cdef inline bint _allowed(const index_t* ex, Py_ssize_t n_ex, Py_ssize_t* p,
                          Py_ssize_t j) noexcept nogil:
    """Advance the sorted exclusion cursor p[0] to column j; whether j is not excluded."""
    while p[0] < n_ex and ex[p[0]] < j:
        p[0] += 1
    return not (p[0] < n_ex and ex[p[0]] == j)


# The threshold scan both topk rows share: entries strictly above ``thr`` (the k-th best so
# far; at the start -inf or just below the row's bound, below: NaN and -inf never pass) are
# appended to a buffer of 2k candidates; a full buffer is cut back to its best k by a
# quickselect, whose k-th entry becomes the threshold. Columns are scanned in increasing order,
# so an entry equal to the threshold never beats it (the kept one has the smaller column).
# 64-wide blocks with nothing above ``thr`` are skipped after one vector comparison; in the
# others only the set bits of the hit mask are visited, and the row's sorted excluded columns
# are merged in then. Each candidate costs O(1) (a heap's O(log k) chain of dependent,
# unpredictable branches measured 3.5x more work per row at k=100, n=1e5).
#
# The start. From -inf a random row passes about k (1 + ln(n / k)) entries (650 at k = 100,
# n = 25k), most of them in a burst at its start whose cuts the row's loads cannot hide. A row
# of at least 2k full 64-column blocks (k >= BOUND_MIN_K) starts from an exact bound instead,
# in two passes:
# 1. the maxima of its blocks (excluded columns and NaN left out), read at the memory's pace,
#    and the k-th largest of them, ranked as entries are (ties by the smaller block): k
#    distinct entries are at least that bound, so the row's k-th best is too;
# 2. the scan from just below the bound, over only the k blocks of those maxima (float64:
#    every block at the bound, _bound_keys). Every entry of the best k lies in one of them:
#    an entry of another block is at most the bound, and equal only in a block after the
#    bound's, so behind all k maxima.
# Pass 2 reads k blocks again, from cache (a row of 25k float32 is 100 KB) or, for rows beyond
# it, k scattered lines; on random rows it passes about k + k / 8 entries. The result never
# depends on the start. Figures: benchmarks/README ("topk: an exact bound from block maxima").
cdef enum:
    BOUND_MIN_K = 16

cdef bint _bounding = True


def _set_bound(bint flag):
    """Start long rows from their block-maxima bound (True) or from -inf; returns the previous
    setting. For A/B runs and for tests (the results are the same)."""
    global _bounding
    previous = _bounding
    _bounding = flag
    return previous


cdef inline bint _takes_bound(Py_ssize_t n_cols, Py_ssize_t k) noexcept nogil:
    return _bounding and k >= BOUND_MIN_K and n_cols // BLOCK >= 2 * k


cdef inline floating _block_max(const floating* row, Py_ssize_t j0, const index_t* ex,
                                Py_ssize_t n_ex, Py_ssize_t* p) noexcept nogil:
    """The largest of row[j0:j0 + BLOCK] neither NaN nor excluded, -inf when none; p[0]: the
    exclusion cursor, advanced to j0."""
    cdef Py_ssize_t j, q
    cdef floating m
    while p[0] < n_ex and ex[p[0]] < j0:
        p[0] += 1
    if p[0] < n_ex and ex[p[0]] < j0 + BLOCK:
        m = -INFINITY
        q = p[0]
        for j in range(j0, j0 + BLOCK):
            if row[j] > m and _allowed(ex, n_ex, &q, j):
                m = row[j]
        return m
    if floating is float:
        return max(max(fastrec_max16_f32(row + j0), fastrec_max16_f32(row + j0 + 16)),
                   max(fastrec_max16_f32(row + j0 + 32), fastrec_max16_f32(row + j0 + 48)))
    else:
        return max(max(fastrec_max16_f64(row + j0), fastrec_max16_f64(row + j0 + 16)),
                   max(fastrec_max16_f64(row + j0 + 32), fastrec_max16_f64(row + j0 + 48)))


cdef inline void _list_block(uint64_t* listed, Py_ssize_t b) noexcept nogil:
    listed[b >> 6] |= (<uint64_t> 1) << (b & 63)


cdef float _bound_keys(const floating* row, Py_ssize_t n_cols, Py_ssize_t k, const index_t* ex,
                       Py_ssize_t n_ex, uint64_t* keys, uint64_t* listed) noexcept nogil:
    """The row's bound and its blocks in ``listed`` (see above); keys: n_cols / BLOCK. The
    blocks are ranked by keys of their maxima, which float64 maxima enter rounded down to
    float32: the bound is then a float32 at most the k-th best, and a block is listed when
    its rounded maximum is at least the bound (not only the k ranked first, whose rounded
    maxima may tie with others' of larger true maxima)."""
    cdef Py_ssize_t n_blocks = n_cols // BLOCK, b, p = 0
    cdef uint64_t least
    for b in range(n_blocks):
        if floating is float:
            keys[b] = _f32_key(_block_max(row, BLOCK * b, ex, n_ex, &p), b)
        else:
            keys[b] = fastrec_f64_floor_key(_block_max(row, BLOCK * b, ex, n_ex, &p), b)
    _select_keys(keys, n_blocks, k)
    least = keys[k - 1]
    memset(listed, 0, sizeof(uint64_t) * ((n_blocks + 63) // 64))
    if floating is float:
        for b in range(k):
            _list_block(listed, <Py_ssize_t> (0xFFFFFFFFu - (keys[b] & 0xFFFFFFFFu)))
    else:
        for b in range(n_blocks):
            if keys[b] >> 32 >= least >> 32:
                _list_block(listed, <Py_ssize_t> (0xFFFFFFFFu - (keys[b] & 0xFFFFFFFFu)))
    return _key_f32(least)


cdef inline Py_ssize_t _next_block(const uint64_t* listed, uint64_t* bits, Py_ssize_t* w,
                                   Py_ssize_t n_full, Py_ssize_t j1) noexcept nogil:
    """Where the scan goes after the block ending at j1 (0 at the start): the next block; or,
    with ``listed``, the next listed full block, then the tail (from n_full), then the end.
    bits and w: the walk's state over the words of ``listed`` (0 and -1 at the start)."""
    if listed == NULL or j1 > n_full:
        return j1
    while bits[0] == 0:
        w[0] += 1
        if w[0] * 64 * BLOCK >= n_full:
            return n_full
        bits[0] = listed[w[0]]
    j1 = BLOCK * (64 * w[0] + __builtin_ctzll(bits[0]))
    bits[0] &= bits[0] - 1
    return j1


cdef Py_ssize_t _scan_pairs(
    const floating* row, Py_ssize_t n_cols, Py_ssize_t k,
    const index_t* ex, Py_ssize_t n_ex, floating* bv, int64_t* bi, floating thr,
    const uint64_t* listed,
) noexcept nogil:
    """The scan from ``thr`` (of the listed full blocks and the tail only, when ``listed`` is
    not NULL) into the candidate buffer bv/bi (2k); returns how many it holds (the best k of
    them first when more than k)."""
    cdef Py_ssize_t cap = 2 * k, cnt = 0, p = 0, j0, j1, j, w = -1
    cdef Py_ssize_t n_full = n_cols - n_cols % BLOCK
    cdef uint64_t m, bits = 0
    cdef floating v
    j0 = _next_block(listed, &bits, &w, n_full, 0)
    while j0 < n_cols:
        j1 = j0 + BLOCK if j0 + BLOCK < n_cols else n_cols
        m = _block_hits(row + j0, j1 - j0, thr)
        while m:
            j = j0 + __builtin_ctzll(m)
            m &= m - 1
            v = row[j]
            if v > thr and _allowed(ex, n_ex, &p, j):  # thr may have risen since the mask
                bv[cnt] = v
                bi[cnt] = j
                cnt += 1
                if cnt == cap:
                    _select_pairs(bv, bi, cnt, k)
                    cnt = k
                    thr = bv[k - 1]
        j0 = _next_block(listed, &bits, &w, n_full, j1)
    return cnt


cdef void _topk_row(
    const floating* row, Py_ssize_t n_cols, Py_ssize_t k, const index_t* ex, Py_ssize_t n_ex,
    floating* bv, int64_t* bi, uint64_t* keys, uint64_t* listed, floating* hv, int64_t* hi,
) noexcept nogil:
    """Best k of one row into hv/hi (sorted, padded); bv/bi: the (score, column) candidate
    buffer of 2k; where the row takes the bound, keys of n_cols / BLOCK and a bit per block
    in listed. See the scan described above."""
    cdef Py_ssize_t t, cnt
    cdef floating thr = -INFINITY
    if _takes_bound(n_cols, k):
        # the scan passes entries above its threshold: those at least the bound
        if floating is float:
            thr = nextafterf(_bound_keys(row, n_cols, k, ex, n_ex, keys, listed), -INFINITY)
        else:
            thr = nextafter(_bound_keys(row, n_cols, k, ex, n_ex, keys, listed), -INFINITY)
    else:
        listed = NULL
    cnt = _scan_pairs(row, n_cols, k, ex, n_ex, bv, bi, thr, listed)
    if cnt > k:
        _select_pairs(bv, bi, cnt, k)
        cnt = k
    for t in range(cnt):
        hv[t] = bv[t]
        hi[t] = bi[t]
    for t in range(cnt // 2 - 1, -1, -1):  # heapify, then sort best first
        _sift_down(hv, hi, cnt, t)
    _heap_sort(hv, hi, cnt)
    for t in range(cnt, k):
        hv[t] = -INFINITY
        hi[t] = -1


cdef inline void _select_keys(uint64_t* a, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Reorder a[:n] (distinct keys, n > k) so that a[:k] are the k largest, a[k-1] the least
    of them. Quickselect with a median-of-three pivot and a branch-free Lomuto partition
    (swap always, advance when above the pivot): expected O(n)."""
    cdef Py_ssize_t lo = 0, hi = n - 1, mid, s, t
    cdef uint64_t x, y, z, med
    while lo < hi:
        mid = (lo + hi) >> 1
        x = a[lo]
        y = a[mid]
        z = a[hi]
        med = max(min(x, y), min(max(x, y), z))
        if med == x:
            a[lo] = z
        elif med == y:
            a[mid] = z
        a[hi] = med
        s = lo
        for t in range(lo, hi):
            x = a[t]
            a[t] = a[s]
            a[s] = x
            s += x > med
        a[hi] = a[s]
        a[s] = med
        if s == k - 1:
            return
        if s > k - 1:
            hi = s - 1
        else:
            lo = s + 1


cdef inline void _key_sift_down(uint64_t* a, Py_ssize_t size, Py_ssize_t pos,
                                uint64_t key) noexcept nogil:
    """Place ``key`` at ``pos`` of the min-heap a[:size], moving it down as needed."""
    cdef Py_ssize_t c
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and a[c + 1] < a[c]:
            c += 1
        if a[c] >= key:
            break
        a[pos] = a[c]
        pos = c
    a[pos] = key


cdef Py_ssize_t _scan_keys(
    const float* row, Py_ssize_t n_cols, Py_ssize_t k,
    const index_t* ex, Py_ssize_t n_ex, uint64_t* buf, float thr, const uint64_t* listed,
) noexcept nogil:
    """_scan_pairs with keys: the scan from ``thr`` into buf (2k); returns how many it holds."""
    cdef Py_ssize_t cap = 2 * k, cnt = 0, p = 0, j0, j1, j, w = -1
    cdef Py_ssize_t n_full = n_cols - n_cols % BLOCK
    cdef uint64_t m, bits = 0
    cdef float v
    j0 = _next_block(listed, &bits, &w, n_full, 0)
    while j0 < n_cols:
        j1 = j0 + BLOCK if j0 + BLOCK < n_cols else n_cols
        m = _block_hits(row + j0, j1 - j0, thr)
        while m:
            j = j0 + __builtin_ctzll(m)
            m &= m - 1
            v = row[j]
            if v > thr and _allowed(ex, n_ex, &p, j):  # thr may have risen since the mask
                buf[cnt] = _f32_key(v, j)
                cnt += 1
                if cnt == cap:
                    _select_keys(buf, cnt, k)
                    cnt = k
                    thr = _key_f32(buf[k - 1])
        j0 = _next_block(listed, &bits, &w, n_full, j1)
    return cnt


cdef void _topk_row_f32(
    const float* row, Py_ssize_t n_cols, Py_ssize_t k, const index_t* ex, Py_ssize_t n_ex,
    uint64_t* buf, uint64_t* listed, float* hv, int64_t* hi,
) noexcept nogil:
    """_topk_row for float32 rows of fewer than 2**32 columns, with a key buffer of 2k (and
    of n_cols / BLOCK where the row takes the bound)."""
    cdef float thr = -INFINITY
    cdef Py_ssize_t cnt
    if _takes_bound(n_cols, k):
        thr = nextafterf(_bound_keys(row, n_cols, k, ex, n_ex, buf, listed), -INFINITY)
    else:
        listed = NULL
    cnt = _scan_keys(row, n_cols, k, ex, n_ex, buf, thr, listed)
    if cnt > k:
        _select_keys(buf, cnt, k)
        cnt = k
    _emit_keys(row, buf, cnt, k, hv, hi)


cdef void _emit_keys(const float* row, uint64_t* buf, Py_ssize_t cnt, Py_ssize_t k, float* hv,
                     int64_t* hi) noexcept nogil:
    """The best keys buf[:cnt] (cnt <= k) as a sorted, padded output row; buf holds 2 cnt (the
    upper half is scratch)."""
    cdef Py_ssize_t t, end, j
    cdef uint64_t last
    if cnt <= RANK_SORT_MAX:
        fastrec_rank_keys(buf, cnt, buf + cnt)
        buf = buf + cnt
    else:
        # Heap-sort the keys (a min-heap popped to the back leaves them descending).
        for t in range(cnt // 2 - 1, -1, -1):
            _key_sift_down(buf, cnt, t, buf[t])
        for end in range(cnt - 1, 0, -1):
            last = buf[end]
            buf[end] = buf[0]
            _key_sift_down(buf, end, 0, last)
    for t in range(cnt):
        j = <Py_ssize_t> (0xFFFFFFFFu - (buf[t] & 0xFFFFFFFFu))
        hi[t] = j
        hv[t] = row[j]  # the stored score itself (a -0.0 stays -0.0)
    for t in range(cnt, k):
        hv[t] = -INFINITY
        hi[t] = -1


cdef Py_ssize_t _scan_stream(
    const float* row, Py_ssize_t n_cols, Py_ssize_t k, const int64_t* ex, Py_ssize_t n_ex,
    uint64_t* keys, uint32_t* cols, uint64_t* s, float thr, const uint64_t* listed,
) noexcept nogil:
    """The stream form's scan from ``thr`` (of the listed full blocks only, when not NULL,
    and the tail); returns how many keys it holds (< 3k)."""
    cdef Py_ssize_t nk = 0, p = 0, j
    cdef Py_ssize_t n_full = n_cols - n_cols % BLOCK
    if n_full:
        fastrec_scan_f32(row, n_full, k, ex, n_ex, keys, cols, s, &nk, &thr, listed)
    for j in range(n_full, n_cols):
        if row[j] > thr and _allowed(ex, n_ex, &p, j):
            keys[nk] = _f32_key(row[j], j)
            nk += 1
    return nk


cdef void _topk_row_f32_compress(
    const float* row, Py_ssize_t n_cols, Py_ssize_t k, const int64_t* ex, Py_ssize_t n_ex,
    uint64_t* keys, uint32_t* cols, uint64_t* s, uint64_t* listed, float* hv, int64_t* hi,
) noexcept nogil:
    """_topk_row_f32 in the stream form (full blocks in fastrec_scan_f32); keys and s of
    3k + SLACK (and of n_cols / BLOCK where the row takes the bound), cols of k + SLACK,
    listed of n_cols / BLOCK bits; ex: the row's excluded columns, sorted, as int64."""
    cdef float thr = -INFINITY
    cdef Py_ssize_t nk
    if _takes_bound(n_cols, k):
        thr = nextafterf(fastrec_block_bound_f32(row, n_cols - n_cols % BLOCK, k, ex, n_ex,
                                                 keys, s, listed), -INFINITY)
    else:
        listed = NULL
    nk = _scan_stream(row, n_cols, k, ex, n_ex, keys, cols, s, thr, listed)
    if nk > k:
        fastrec_cut_keys(keys, nk, k, s)
        nk = k
    _emit_keys(row, keys, nk, k, hv, hi)


@cython.boundscheck(False)
@cython.wraparound(False)
def _topk_impl(
    const floating[:, ::1] scores, Py_ssize_t k, const index_t[::1] ex_indptr,
    const index_t[::1] ex_indices, bint has_mask, int64_t[:, ::1] out_idx,
    floating[:, ::1] out_val, uint64_t[:, ::1] keys, uint32_t[:, ::1] cols,
    floating[:, ::1] bv, int64_t[:, ::1] bi, uint64_t[:, ::1] listed, bint keyed,
    bint compress, int n_threads,
):
    cdef Py_ssize_t n_rows = scores.shape[0], n_cols = scores.shape[1], r
    cdef Py_ssize_t lo, hi
    cdef const floating* row
    cdef const index_t* ex
    if n_rows == 0:
        return
    with nogil:
        # "guided": each thread first takes a long run of consecutive rows, one stream that
        # the prefetcher follows across row ends, then shorter runs to even out the end.
        # "dynamic" handed out rows in turn, so each thread jumped a row at every row end
        # (4096 x 100k float32, k=100, 2 threads, Zen 4, where each core streams at its own
        # peak: 0.63 -> 0.72 of the read; "static" halves 0.69; memory-bound runs 0.90 all).
        for r in prange(n_rows, schedule="guided", num_threads=n_threads):
            if has_mask:
                lo = ex_indptr[r]
                hi = ex_indptr[r + 1]
            else:
                lo = 0
                hi = 0
            row = &scores[r, 0] if n_cols > 0 else <const floating*> NULL
            ex = &ex_indices[lo] if hi > lo else <const index_t*> NULL
            if floating is float:
                # The stream form takes int64 exclusions (topk() passes them so when it runs).
                if index_t is int64_t and keyed and compress:
                    _topk_row_f32_compress(row, n_cols, k, ex, hi - lo, &keys[threadid(), 0],
                                           &cols[threadid(), 0],
                                           &keys[threadid(), keys.shape[1] // 2],
                                           &listed[threadid(), 0], &out_val[r, 0],
                                           &out_idx[r, 0])
                    continue
                if keyed:
                    _topk_row_f32(row, n_cols, k, ex, hi - lo, &keys[threadid(), 0],
                                  &listed[threadid(), 0], &out_val[r, 0], &out_idx[r, 0])
                    continue
            _topk_row(row, n_cols, k, ex, hi - lo, &bv[threadid(), 0], &bi[threadid(), 0],
                      &keys[threadid(), 0], &listed[threadid(), 0], &out_val[r, 0],
                      &out_idx[r, 0])


# ---- what this backend gives the shared host layer (kernels/_host.py) -------------------------

def _topk_index_type(scores, k, mask_itype):
    # The stream form takes int64 exclusions.
    return np.int64 if _takes_compress(scores, k) else mask_itype


def _takes_keys(scores):
    return scores.dtype == np.float32 and scores.shape[1] < 2**32


def _takes_compress(scores, k):
    return _takes_keys(scores) and _compress and k >= _compress_min_k


def _run_topk(call, n_threads):
    scores, k = call.scores, call.k
    keyed = _takes_keys(scores)
    compress = _takes_compress(scores, k)
    n_buf = max(1, n_threads)
    # Keyed rows: the 2k key buffer; in stream form 3k keys, a scratch of 3k after them and k
    # columns, each with SLACK for a block's appends and whole-vector stores; other rows 2k
    # pairs. Rows that take the bound: keys (and, in stream form, a scratch) of their block
    # count and a bit per block. Memory O(threads * (k + n_cols / 64)).
    n_blocks = scores.shape[1] // BLOCK if _takes_bound(scores.shape[1], k) else 0
    n_keys = (2 * max(3 * k + SLACK, n_blocks) if compress else
              max(2 * k, n_blocks) if keyed else max(1, n_blocks))
    keys = np.empty((n_buf, n_keys), dtype=np.uint64)
    listed = np.empty((n_buf, n_blocks // 64 + 1), dtype=np.uint64)
    cols = np.empty((n_buf, k + SLACK if compress else 1), dtype=np.uint32)
    bv = np.empty((n_buf, 1 if keyed else 2 * k), dtype=scores.dtype)
    bi = np.empty((n_buf, 1 if keyed else 2 * k), dtype=np.int64)
    _topk_impl(*call, keys, cols, bv, bi, listed, keyed, compress, n_threads)


# ---- fused sparse recommend ------------------------------------------------------------------

cdef inline void _mark_excluded(
    const index_t* m_indptr, const index_t* m_indices, int64_t row, uint8_t* mark
) noexcept nogil:
    """Flag the touched items of a mask row as excluded (untouched ones are not candidates)."""
    cdef index_t q
    for q in range(m_indptr[row], m_indptr[row + 1]):
        if mark[m_indices[q]] == 1:
            mark[m_indices[q]] = 2


@cython.boundscheck(False)
@cython.wraparound(False)
def _recommend_impl(
    const index_t[::1] a_indptr, const index_t[::1] a_indices, const floating[::1] a_data,
    const index_t[::1] b_indptr, const index_t[::1] b_indices, const floating[::1] b_data,
    const int64_t[::1] rows, Py_ssize_t n,
    const index_t[::1] seen_indptr, const index_t[::1] seen_indices, bint has_seen,
    const index_t[::1] ex_indptr, const index_t[::1] ex_indices, bint has_ex,
    double[:, ::1] acc, uint8_t[:, ::1] mark, int64_t[:, ::1] touched,
    int64_t[:, ::1] out_idx, floating[:, ::1] out_val, int n_threads,
):
    cdef Py_ssize_t n_rows = rows.shape[0], r, t, n_touched, size
    cdef int tid
    cdef int64_t row, i, j
    cdef index_t p, q
    cdef double a
    cdef floating v
    cdef double* my_acc
    cdef uint8_t* my_mark
    cdef int64_t* my_touched
    cdef floating* hv
    cdef int64_t* hi
    if n_rows == 0:
        return
    with nogil:
        for r in prange(n_rows, schedule="dynamic", num_threads=n_threads):
            # Thread-private buffers, allocated once per call by the caller: memory
            # O(threads * n_items), never O(users * items).
            tid = threadid()
            my_acc = &acc[tid, 0]
            my_mark = &mark[tid, 0]
            my_touched = &touched[tid, 0]
            hv = &out_val[r, 0]  # the heap lives in the output row
            hi = &out_idx[r, 0]
            row = rows[r]
            n_touched = 0
            # score(row, j) accumulated in float64 in the reference's order (A's stored
            # order, then B's), so the sums are those of scipy's product.
            for p in range(a_indptr[row], a_indptr[row + 1]):
                a = a_data[p]
                i = a_indices[p]
                for q in range(b_indptr[i], b_indptr[i + 1]):
                    j = b_indices[q]
                    # Branch-free first-touch bookkeeping: whether j is new is unpredictable,
                    # so always write the slot and advance only for a new item.
                    my_touched[n_touched] = j
                    n_touched = n_touched + (my_mark[j] ^ 1)
                    my_mark[j] = 1
                    my_acc[j] = my_acc[j] + a * b_data[q]
            if has_seen:
                _mark_excluded(&seen_indptr[0], &seen_indices[0], row, my_mark)
            if has_ex:
                _mark_excluded(&ex_indptr[0], &ex_indices[0], row, my_mark)
            size = 0
            for t in range(n_touched):
                j = my_touched[t]
                # Ranked as returned (rounded to the output dtype, as the reference), so
                # sums that round to the same float32 are tied and go to the smaller item.
                v = <floating> my_acc[j]
                # v > -inf rejects NaN and -inf: they are never candidates.
                if my_mark[j] == 1 and v > -INFINITY:
                    size = _heap_offer(hv, hi, size, n, v, j)
                my_acc[j] = 0.0
                my_mark[j] = 0
            _heap_sort(hv, hi, size)
            for t in range(size, n):
                hv[t] = -INFINITY
                hi[t] = -1


def _run_recommend(call, n_threads):
    n_buf = max(1, min(int(n_threads), call.rows.shape[0]))
    n_items = call.n_items
    acc = np.zeros((n_buf, max(1, n_items)), dtype=np.float64)
    mark = np.zeros((n_buf, max(1, n_items)), dtype=np.uint8)
    touched = np.empty((n_buf, n_items + 1), dtype=np.int64)  # +1: the branch-free spare write
    _recommend_impl(
        call.a_indptr, call.a_indices, call.a_data, call.b_indptr, call.b_indices, call.b_data,
        call.rows, call.n, call.seen_indptr, call.seen_indices, call.has_seen, call.ex_indptr,
        call.ex_indices, call.has_ex, acc, mark, touched, call.out_idx, call.out_val, n_buf,
    )


LOOPS = _host.RankingLoops(
    topk_index_type=_topk_index_type,
    topk=_run_topk,
    recommend=_run_recommend,
    pad_empty=True,
)

topk = _host.bind(_host.topk, LOOPS, __name__)
recommend = _host.bind(_host.recommend, LOOPS, __name__)
