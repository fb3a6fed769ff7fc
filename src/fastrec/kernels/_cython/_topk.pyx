"""Cython (OpenMP) ranking kernels: dense top-k with a CSR exclusion mask, fused sparse recommend.

Dense top-k keeps a buffer of candidates above a running threshold, cut back by a selection
(``_topk_row``; packed keys for float32 in ``_topk_row_f32``); the fused recommend keeps a
bounded min-heap (``_heap.pxd``). Ties go to the smaller index. Rows are independent and each
writes only its own output slots, so results are bit-identical for any thread count.
Signatures copy ``kernels/reference.py`` exactly; inputs are trusted (canonical CSR masks:
sorted indices per row), the public API validates them.
"""
import numpy as np

cimport cython
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

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

cdef extern from *:
    """
    #include <stdint.h>
    /* A full 64-wide block: whether any p[t] > thr, and the hit mask (bit t set when
       p[t] > thr; never for NaN). gcc vectorises neither well at the base ISA, so on x86-64
       they are spelled with SSE2, which every x86-64 CPU has. */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline int fastrec_any_f32(const float* p, float thr) {
        __m128 t = _mm_set1_ps(thr), h = _mm_setzero_ps();
        for (int q = 0; q < 16; q++)
            h = _mm_or_ps(h, _mm_cmpgt_ps(_mm_loadu_ps(p + 4 * q), t));
        return _mm_movemask_ps(h);
    }
    static inline int fastrec_any_f64(const double* p, double thr) {
        __m128d t = _mm_set1_pd(thr), h = _mm_setzero_pd();
        for (int q = 0; q < 32; q++)
            h = _mm_or_pd(h, _mm_cmpgt_pd(_mm_loadu_pd(p + 2 * q), t));
        return _mm_movemask_pd(h);
    }
    static inline uint64_t fastrec_hits_f32(const float* p, float thr) {
        __m128 t = _mm_set1_ps(thr);
        uint64_t m = 0;
        for (int q = 0; q < 16; q++)
            m |= (uint64_t)_mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(p + 4 * q), t)) << (4 * q);
        return m;
    }
    static inline uint64_t fastrec_hits_f64(const double* p, double thr) {
        __m128d t = _mm_set1_pd(thr);
        uint64_t m = 0;
        for (int q = 0; q < 32; q++)
            m |= (uint64_t)_mm_movemask_pd(_mm_cmpgt_pd(_mm_loadu_pd(p + 2 * q), t)) << (2 * q);
        return m;
    }
    #else
    static inline int fastrec_any_f32(const float* p, float thr) {
        int h = 0;
        for (int t = 0; t < 64; t++) h |= p[t] > thr;
        return h;
    }
    static inline int fastrec_any_f64(const double* p, double thr) {
        int h = 0;
        for (int t = 0; t < 64; t++) h |= p[t] > thr;
        return h;
    }
    static inline uint64_t fastrec_hits_f32(const float* p, float thr) {
        uint64_t m = 0;
        for (int t = 0; t < 64; t++) m |= (uint64_t)(p[t] > thr) << t;
        return m;
    }
    static inline uint64_t fastrec_hits_f64(const double* p, double thr) {
        uint64_t m = 0;
        for (int t = 0; t < 64; t++) m |= (uint64_t)(p[t] > thr) << t;
        return m;
    }
    #endif
    """
    int fastrec_any_f32(const float* p, float thr) nogil
    int fastrec_any_f64(const double* p, double thr) nogil
    uint64_t fastrec_hits_f32(const float* p, float thr) nogil
    uint64_t fastrec_hits_f64(const double* p, double thr) nogil
    int __builtin_ctzll(unsigned long long) nogil


cdef extern from *:
    """
    /* The float32 top-k row in vector-compress ("stream") form, for x86-64 CPUs with AVX-512
       (checked at run time; the module is built for the base ISA) and k >= COMPRESS_MIN_K.
       Mirrors _topk_row_f32_compress of the Numba backend, whose comment gives the design
       and the measurements. */
    #include <string.h>
    /* float32 rows pack each candidate into one uint64 key: the score's bits mapped to an
       unsigned integer of the same order (-0.0 first made +0.0: they are equal scores), then
       the complemented column, so that one integer comparison ranks (score desc, column asc).
       Both forms of the row (the walk below in Cython, the stream form here) use these. */
    static inline uint64_t fastrec_f32_key(float v, int64_t j) {
        float c = v + 0.0f;
        uint32_t b;
        memcpy(&b, &c, 4);
        b ^= (b >> 31) ? 0xFFFFFFFFu : 0x80000000u;
        return ((uint64_t) b << 32) | (0xFFFFFFFFu - (uint64_t) j);
    }
    static inline float fastrec_key_f32(uint64_t key) {
        uint32_t b = (uint32_t) (key >> 32);
        float v;
        b ^= (b >> 31) ? 0x80000000u : 0xFFFFFFFFu;
        memcpy(&v, &b, 4);
        return v;
    }
    #if defined(__GNUC__) && defined(__x86_64__)
    #include <immintrin.h>
    #define FASTREC_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,popcnt")))
    static int fastrec_cpu_has_avx512(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    }
    /* Keys of a[:n] > pivot (above) or < pivot, stored in order at out (may be a: each store
       lands at or before the vector it read); returns how many. Masked loads: no read past n. */
    FASTREC_AVX512 static Py_ssize_t fastrec_compress_keys(
            const uint64_t* a, Py_ssize_t n, uint64_t pivot, int above, uint64_t* out) {
        const __m512i p = _mm512_set1_epi64((long long) pivot);
        Py_ssize_t o = 0;
        for (Py_ssize_t i = 0; i < n; i += 8) {
            __mmask8 lanes = n - i >= 8 ? 0xFF : (__mmask8) ((1u << (n - i)) - 1);
            __m512i v = _mm512_maskz_loadu_epi64(lanes, a + i);
            __mmask8 m = lanes & (above ? _mm512_cmpgt_epu64_mask(v, p)
                                        : _mm512_cmplt_epu64_mask(v, p));
            _mm512_mask_storeu_epi64(out + o, (__mmask8) ((1u << __builtin_popcount(m)) - 1),
                                     _mm512_maskz_compress_epi64(m, v));
            o += __builtin_popcount(m);
        }
        return o;
    }
    FASTREC_AVX512 static Py_ssize_t fastrec_count_above(const uint64_t* a, Py_ssize_t n,
                                                         uint64_t pivot) {
        const __m512i p = _mm512_set1_epi64((long long) pivot);
        Py_ssize_t c = 0;
        for (Py_ssize_t i = 0; i < n; i += 8) {
            __mmask8 lanes = n - i >= 8 ? 0xFF : (__mmask8) ((1u << (n - i)) - 1);
            c += __builtin_popcount(lanes & _mm512_cmpgt_epu64_mask(
                _mm512_maskz_loadu_epi64(lanes, a + i), p));
        }
        return c;
    }
    /* Keep the k largest of the distinct keys a[:n] (n >= k) in a[:k] (in no order); returns
       the least of them. s: scratch of n. */
    FASTREC_AVX512 static uint64_t fastrec_cut_keys(uint64_t* a, Py_ssize_t n, Py_ssize_t k,
                                                    uint64_t* s) {
        const uint64_t* src = a;
        Py_ssize_t m = n, need = k;
        uint64_t least;
        for (;;) {
            if (m <= 24) {  /* insertion-sort the few left, descending */
                for (Py_ssize_t t = 0; t < m; t++) {
                    uint64_t x = src[t];
                    Py_ssize_t u = t;
                    for (; u > 0 && s[u - 1] < x; u--) s[u] = s[u - 1];
                    s[u] = x;
                }
                least = s[need - 1];
                break;
            }
            uint64_t x = src[0], y = src[m >> 1], z = src[m - 1];
            uint64_t lo = x < y ? x : y, hi = x < y ? y : x;
            uint64_t pivot = hi < z ? hi : (lo > z ? lo : z);
            Py_ssize_t above = fastrec_count_above(src, m, pivot);
            if (above == need - 1) { least = pivot; break; }
            if (above >= need) {
                m = fastrec_compress_keys(src, m, pivot, 1, s);
            } else {
                m = fastrec_compress_keys(src, m, pivot, 0, s);
                need -= above + 1;
            }
            src = s;
        }
        fastrec_compress_keys(a, n, least - 1, 1, a);
        return least;
    }
    /* Scan the full blocks of row[:j_end] (j_end a multiple of 64) in the stream form: each
       block's columns above the threshold are appended to cols with compress stores, whether
       or not there are any (no data-dependent branch), then its excluded columns (ex, sorted)
       are dropped; every k columns become keys; 2k keys are cut back to k, raising the
       threshold. Returns the keys held (*nk_io < 3k) and the threshold. keys and s hold
       3k + 80, cols k + 80. */
    FASTREC_AVX512 static void fastrec_scan_f32(
            const float* row, Py_ssize_t j_end, Py_ssize_t k, const int64_t* ex, Py_ssize_t n_ex,
            uint64_t* keys, uint32_t* cols, uint64_t* s, Py_ssize_t* nk_io, float* thr_io) {
        Py_ssize_t nk = 0, nc = 0, p = 0, j0 = 0;
        float thr = -INFINITY;
        const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        __m512 t = _mm512_set1_ps(thr);
        for (; j0 < j_end; j0 += 64) {
            Py_ssize_t c0 = nc;
            for (int q = 0; q < 4; q++) {
                __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(row + j0 + 16 * q), t, _CMP_GT_OQ);
                __m512i c = _mm512_add_epi32(_mm512_set1_epi32((int) (j0 + 16 * q)), iota);
                _mm512_storeu_si512(cols + nc, _mm512_maskz_compress_epi32(m, c));
                nc += __builtin_popcount(m);
            }
            while (p < n_ex && ex[p] < j0) p++;
            if (p < n_ex && ex[p] < j0 + 64) {  /* drop this block's excluded columns */
                Py_ssize_t o = c0, q = p;
                for (Py_ssize_t u = c0; u < nc; u++) {
                    while (q < n_ex && ex[q] < (int64_t) cols[u]) q++;
                    if (!(q < n_ex && ex[q] == (int64_t) cols[u])) cols[o++] = cols[u];
                }
                nc = o;
            }
            if (nc >= k) {
                for (Py_ssize_t u = 0; u < nc; u++)
                    keys[nk + u] = fastrec_f32_key(row[cols[u]], cols[u]);
                nk += nc;
                nc = 0;
                if (nk >= 2 * k) {
                    thr = fastrec_key_f32(fastrec_cut_keys(keys, nk, k, s));
                    t = _mm512_set1_ps(thr);
                    nk = k;
                }
            }
        }
        for (Py_ssize_t u = 0; u < nc; u++)
            keys[nk + u] = fastrec_f32_key(row[cols[u]], cols[u]);
        *nk_io = nk + nc;
        *thr_io = thr;
    }
    #define FASTREC_COMPRESS_BUILT 1
    #else
    #define FASTREC_COMPRESS_BUILT 0
    static int fastrec_cpu_has_avx512(void) { return 0; }
    /* never called: fastrec_cpu_has_avx512() is 0 */
    static uint64_t fastrec_cut_keys(uint64_t* a, Py_ssize_t n, Py_ssize_t k, uint64_t* s) {
        return 0;
    }
    static void fastrec_scan_f32(const float* row, Py_ssize_t j_end, Py_ssize_t k,
                                 const int64_t* ex, Py_ssize_t n_ex, uint64_t* keys,
                                 uint32_t* cols, uint64_t* s, Py_ssize_t* nk_io,
                                 float* thr_io) {}
    #endif
    """
    int fastrec_cpu_has_avx512() nogil
    uint64_t _f32_key "fastrec_f32_key"(float v, int64_t j) nogil
    float _key_f32 "fastrec_key_f32"(uint64_t key) nogil
    uint64_t fastrec_cut_keys(uint64_t* a, Py_ssize_t n, Py_ssize_t k, uint64_t* s) nogil
    void fastrec_scan_f32(const float* row, Py_ssize_t j_end, Py_ssize_t k, const int64_t* ex,
                          Py_ssize_t n_ex, uint64_t* keys, uint32_t* cols, uint64_t* s,
                          Py_ssize_t* nk_io, float* thr_io) nogil


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


cdef inline bint _allowed(const index_t* ex, Py_ssize_t n_ex, Py_ssize_t* p, Py_ssize_t j) noexcept nogil:
    """Advance the sorted exclusion cursor p[0] to column j; whether j is not excluded."""
    while p[0] < n_ex and ex[p[0]] < j:
        p[0] += 1
    return not (p[0] < n_ex and ex[p[0]] == j)


# The threshold scan both topk rows share: entries strictly above ``thr`` (the k-th best so
# far, -inf before there are k, which also rejects NaN and -inf) are appended to a buffer of
# 2k candidates; a full buffer is cut back to its best k by a quickselect, whose k-th entry
# becomes the threshold. Columns are scanned in increasing order, so an entry equal to the
# threshold never beats it (the kept one has the smaller column). 64-wide blocks with nothing
# above ``thr`` are skipped after one vector comparison; in the others only the set bits of the
# hit mask are visited, and the row's sorted excluded columns are merged in then. Each
# candidate costs O(1) (a heap's O(log k) chain of dependent, unpredictable branches measured
# 3.5x more work per row at k=100, n=1e5).

cdef void _topk_row(
    const floating* row, Py_ssize_t n_cols, Py_ssize_t k,
    const index_t* ex, Py_ssize_t n_ex, floating* bv, int64_t* bi, floating* hv, int64_t* hi,
) noexcept nogil:
    """Best k of one row into hv/hi (sorted, padded), reading each score once from memory;
    bv/bi: the (score, column) candidate buffer of 2k. See the scan described above."""
    cdef Py_ssize_t cap = 2 * k, cnt = 0, p = 0, j0 = 0, j1, j, t
    cdef floating thr = -INFINITY
    cdef floating v
    cdef uint64_t m
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
        j0 = j1
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


cdef inline void _key_sift_down(uint64_t* a, Py_ssize_t size, Py_ssize_t pos, uint64_t key) noexcept nogil:
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


cdef void _topk_row_f32(
    const float* row, Py_ssize_t n_cols, Py_ssize_t k,
    const index_t* ex, Py_ssize_t n_ex, uint64_t* buf, float* hv, int64_t* hi,
) noexcept nogil:
    """_topk_row for float32 rows of fewer than 2**32 columns, with a key buffer of 2k."""
    cdef Py_ssize_t cap = 2 * k, cnt = 0, p = 0, j0, j1, j
    cdef float thr = -INFINITY
    cdef float v
    cdef uint64_t m
    j0 = 0
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
        j0 = j1
    if cnt > k:
        _select_keys(buf, cnt, k)
        cnt = k
    _emit_keys(row, buf, cnt, k, hv, hi)


cdef void _emit_keys(const float* row, uint64_t* buf, Py_ssize_t cnt, Py_ssize_t k, float* hv,
                     int64_t* hi) noexcept nogil:
    """The best keys buf[:cnt] (cnt <= k) as a sorted, padded output row."""
    cdef Py_ssize_t t, end, j
    cdef uint64_t last
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


cdef void _topk_row_f32_compress(
    const float* row, Py_ssize_t n_cols, Py_ssize_t k, const int64_t* ex, Py_ssize_t n_ex,
    uint64_t* keys, uint32_t* cols, uint64_t* s, float* hv, int64_t* hi,
) noexcept nogil:
    """_topk_row_f32 in the stream form (full blocks in fastrec_scan_f32); keys and s of
    3k + SLACK, cols of k + SLACK; ex: the row's excluded columns, sorted, as int64."""
    cdef Py_ssize_t nk = 0, p = 0, j
    cdef Py_ssize_t n_full = n_cols - n_cols % BLOCK
    cdef float thr = -INFINITY
    if n_full:
        fastrec_scan_f32(row, n_full, k, ex, n_ex, keys, cols, s, &nk, &thr)
    for j in range(n_full, n_cols):
        if row[j] > thr and _allowed(ex, n_ex, &p, j):
            keys[nk] = _f32_key(row[j], j)
            nk += 1
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
    floating[:, ::1] bv, int64_t[:, ::1] bi, bint keyed, bint compress, int n_threads,
):
    cdef Py_ssize_t n_rows = scores.shape[0], n_cols = scores.shape[1], r
    cdef Py_ssize_t lo, hi
    cdef const floating* row
    cdef const index_t* ex
    if n_rows == 0:
        return
    with nogil:
        for r in prange(n_rows, schedule="dynamic", num_threads=n_threads):
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
                                           &out_val[r, 0], &out_idx[r, 0])
                    continue
                if keyed:
                    _topk_row_f32(row, n_cols, k, ex, hi - lo, &keys[threadid(), 0],
                                  &out_val[r, 0], &out_idx[r, 0])
                    continue
            _topk_row(row, n_cols, k, ex, hi - lo, &bv[threadid(), 0], &bi[threadid(), 0],
                      &out_val[r, 0], &out_idx[r, 0])


def _index_type(*arrays):
    """int64 if any given index array is int64, else int32 (one specialisation per call)."""
    return np.int64 if any(a is not None and a.dtype == np.int64 for a in arrays) else np.int32


def topk(scores, k, exclude_indptr, exclude_indices, n_threads):
    """Row-wise top-k of a dense (n_rows, n_cols) float32/float64 array.

    Column c of row r is a candidate unless (r, c) is stored in the exclude mask (CSR pattern
    with sorted indices per row; ``exclude_indptr`` None for none) or the score is NaN or -inf;
    +inf is a score. Returns (indices int64, scores of the input dtype), both (n_rows, k),
    sorted descending, ties by smaller column, -1/-inf padding. ``scores`` is only read (a
    non-C-contiguous array is copied once). Time O(n_rows * n_cols) reads plus expected O(1)
    per entry above the running threshold (about 2k ln(n_cols / k) per random row); memory
    O(n_rows * k) output plus O(k) per thread.
    """
    scores = np.ascontiguousarray(scores)
    n_rows = scores.shape[0]
    out_idx = np.empty((n_rows, k), dtype=np.int64)
    out_val = np.empty((n_rows, k), dtype=scores.dtype)
    has_mask = exclude_indptr is not None
    keyed = scores.dtype == np.float32 and scores.shape[1] < 2**32
    compress = keyed and _compress and k >= _compress_min_k
    itype = np.int64 if compress else _index_type(exclude_indptr, exclude_indices)
    if has_mask:
        ex_indptr = np.ascontiguousarray(exclude_indptr, dtype=itype)
        ex_indices = np.ascontiguousarray(exclude_indices, dtype=itype)
    else:
        ex_indptr = ex_indices = np.zeros(1, dtype=itype)
    if ex_indices.shape[0] == 0:
        ex_indices = np.zeros(1, dtype=itype)  # a valid address for the memoryview
    n_buf = max(1, n_threads)
    # Keyed rows: the 2k key buffer; in stream form 3k keys, a scratch of 3k after them and k
    # columns, each with SLACK for a block's appends and whole-vector stores.
    n_keys = 2 * (3 * k + SLACK) if compress else 2 * k if keyed else 1
    keys = np.empty((n_buf, n_keys), dtype=np.uint64)
    cols = np.empty((n_buf, k + SLACK if compress else 1), dtype=np.uint32)
    bv = np.empty((n_buf, 1 if keyed else 2 * k), dtype=scores.dtype)
    bi = np.empty((n_buf, 1 if keyed else 2 * k), dtype=np.int64)
    _topk_impl(scores, k, ex_indptr, ex_indices, has_mask, out_idx, out_val, keys, cols, bv, bi,
               keyed, compress, n_threads)
    return out_idx, out_val


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


def recommend(
    a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_items, rows, n,
    seen_indptr, seen_indices, ex_indptr, ex_indices, n_threads,
):
    """Top-n items for each row r in ``rows`` of the sparse product A @ B, never built whole.

    A is (n_rows, n_mid) CSR and B (n_mid, n_items) CSR (item-kNN: A = user_items,
    B = item_neighbours; user-kNN: A = user_neighbours, B = user_items). Item j is a candidate
    for row r when some stored A[r, i] meets a stored B[i, j], (r, j) is stored in neither mask
    (``seen_*``, ``ex_*``: CSR patterns indexed by r with sorted indices, None for none), and
    the score is not NaN or -inf. Scores are summed in float64 in A's then B's stored order and
    ranked as returned (rounded to the output dtype). Returns (indices int64, scores), both
    (len(rows), n), sorted descending, ties by smaller item, -1/-inf padding; scores float32
    only when A and B both are. Time O(sum over rows of the A-row x B-rows products + touched * log n);
    memory O(threads * n_items) of accumulators plus the O(len(rows) * n) output.
    """
    dtype = np.result_type(a_data.dtype, b_data.dtype)
    itype = _index_type(a_indptr, a_indices, b_indptr, b_indices, seen_indptr, seen_indices,
                        ex_indptr, ex_indices)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    n_rows = rows.shape[0]
    out_idx = np.empty((n_rows, n), dtype=np.int64)
    out_val = np.empty((n_rows, n), dtype=dtype)
    if n_rows == 0:
        return out_idx, out_val

    def ix(a):
        return np.ascontiguousarray(a, dtype=itype)

    def mask(m_indptr, m_indices):
        if m_indptr is None:
            return np.zeros(1, itype), np.zeros(1, itype), False
        m_indices = ix(m_indices)
        return ix(m_indptr), (m_indices if m_indices.shape[0] else np.zeros(1, itype)), True

    def arr(a):  # empty arrays get one dummy slot so that memoryviews have an address
        return a if a.shape[0] else np.zeros(1, a.dtype)

    s_ptr, s_ind, has_seen = mask(seen_indptr, seen_indices)
    e_ptr, e_ind, has_ex = mask(ex_indptr, ex_indices)
    n_buf = max(1, min(int(n_threads), n_rows))
    n_items = int(n_items)
    acc = np.zeros((n_buf, max(1, n_items)), dtype=np.float64)
    mark = np.zeros((n_buf, max(1, n_items)), dtype=np.uint8)
    touched = np.empty((n_buf, n_items + 1), dtype=np.int64)  # +1: the branch-free spare write
    _recommend_impl(
        ix(a_indptr), arr(ix(a_indices)), arr(np.ascontiguousarray(a_data, dtype=dtype)),
        ix(b_indptr), arr(ix(b_indices)), arr(np.ascontiguousarray(b_data, dtype=dtype)),
        rows, n, s_ptr, s_ind, has_seen, e_ptr, e_ind, has_ex,
        acc, mark, touched, out_idx, out_val, n_buf,
    )
    return out_idx, out_val
