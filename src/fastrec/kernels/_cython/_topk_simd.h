/* SIMD helpers of the Cython top-k kernels (_topk.pyx): the 64-wide block tests of the
   running threshold (SSE2 on x86-64, portable C elsewhere) and the float32 vector-compress
   ("stream") row for AVX-512 CPUs. Included by the generated _topk.c after Python.h
   (Py_ssize_t). Mirrors kernels/_numba_simd.py (the Numba backend's LLVM forms). */
#ifndef FASTREC_TOPK_SIMD_H
#define FASTREC_TOPK_SIMD_H

#include <math.h>
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
/* The largest of p[0:16] that is not NaN (-inf when none is): maxps returns its second
   operand when either is NaN, and m never is. */
static inline float fastrec_max16_f32(const float* p) {
    __m128 m = _mm_set1_ps(-INFINITY);
    for (int q = 0; q < 4; q++) m = _mm_max_ps(_mm_loadu_ps(p + 4 * q), m);
    m = _mm_max_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm_max_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtss_f32(m);
}
static inline double fastrec_max16_f64(const double* p) {
    __m128d m = _mm_set1_pd(-INFINITY);
    for (int q = 0; q < 8; q++) m = _mm_max_pd(_mm_loadu_pd(p + 2 * q), m);
    m = _mm_max_pd(m, _mm_shuffle_pd(m, m, 1));
    return _mm_cvtsd_f64(m);
}
#else
static inline float fastrec_max16_f32(const float* p) {
    float m = -INFINITY;
    for (int t = 0; t < 16; t++) m = p[t] > m ? p[t] : m;
    return m;
}
static inline double fastrec_max16_f64(const double* p) {
    double m = -INFINITY;
    for (int t = 0; t < 16; t++) m = p[t] > m ? p[t] : m;
    return m;
}
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
/* The key of the largest float32 not above the float64 x, with column j; branch-free (the map
   of floats to keys is contiguous but for the code of -0.0, which no key uses). */
static inline uint64_t fastrec_f64_floor_key(double x, int64_t j) {
    float f = (float) x;
    uint64_t key = fastrec_f32_key(f, j), u = (key >> 32) - ((double) f > x);
    u -= u == 0x7FFFFFFFu;
    return (u << 32) | (key & 0xFFFFFFFFu);
}
static inline float fastrec_key_f32(uint64_t key) {
    uint32_t b = (uint32_t) (key >> 32);
    float v;
    b ^= (b >> 31) ? 0x80000000u : 0xFFFFFFFFu;
    memcpy(&v, &b, 4);
    return v;
}
/* Rank sort of the distinct keys a[:n] into out[:n], descending: a key's place is the number
   of keys above it. O(n^2) compares, but branch-free and vectorised, so faster than a heap
   sort (whose sift-downs mispredict about every other step) up to a few hundred keys; see
   RANK_SORT_MAX in _topk.pyx. Vector forms are picked at run time (fastrec_rank_init). */
static void fastrec_rank_keys_base(const uint64_t* a, Py_ssize_t n, uint64_t* out) {
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t x = a[i];
        Py_ssize_t r = 0;
        for (Py_ssize_t j = 0; j < n; j++) r += a[j] > x;
        out[r] = x;
    }
}
static void (*fastrec_rank_keys)(const uint64_t*, Py_ssize_t, uint64_t*) = fastrec_rank_keys_base;

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define FASTREC_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,popcnt")))
static int fastrec_cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
FASTREC_AVX512 static void fastrec_rank_keys_avx512(const uint64_t* a, Py_ssize_t n,
                                                   uint64_t* out) {
    for (Py_ssize_t i = 0; i < n; i++) {
        const __m512i x = _mm512_set1_epi64((long long) a[i]);
        Py_ssize_t r = 0, j = 0;
        for (; j + 8 <= n; j += 8)
            r += __builtin_popcount(_mm512_cmpgt_epu64_mask(_mm512_loadu_si512(a + j), x));
        if (j < n) {
            __mmask8 lanes = (__mmask8) ((1u << (n - j)) - 1);
            r += __builtin_popcount(
                _mm512_mask_cmpgt_epu64_mask(lanes, _mm512_maskz_loadu_epi64(lanes, a + j), x));
        }
        out[r] = a[i];
    }
}
/* AVX2 compares signed 64-bit lanes: flipping the top bit maps unsigned order onto signed. */
__attribute__((target("avx2"))) static void fastrec_rank_keys_avx2(const uint64_t* a,
                                                                  Py_ssize_t n, uint64_t* out) {
    const __m256i flip = _mm256_set1_epi64x((long long) 0x8000000000000000ull);
    for (Py_ssize_t i = 0; i < n; i++) {
        const __m256i x = _mm256_set1_epi64x((long long) (a[i] ^ 0x8000000000000000ull));
        __m256i acc = _mm256_setzero_si256();
        Py_ssize_t j = 0, r;
        for (; j + 4 <= n; j += 4)  /* a lane's compare is -1 when above: subtract it */
            acc = _mm256_sub_epi64(acc, _mm256_cmpgt_epi64(
                _mm256_xor_si256(_mm256_loadu_si256((const __m256i*) (a + j)), flip), x));
        int64_t lanes[4];
        _mm256_storeu_si256((__m256i*) lanes, acc);
        r = (Py_ssize_t) (lanes[0] + lanes[1] + lanes[2] + lanes[3]);
        for (; j < n; j++) r += a[j] > a[i];
        out[r] = a[i];
    }
}
/* Form 0 base, 1 AVX2, 2 AVX-512. */
static int fastrec_rank_form_available(int form) {
    __builtin_cpu_init();
    return form == 0 || (form == 1 && __builtin_cpu_supports("avx2"))
        || (form == 2 && fastrec_cpu_has_avx512());
}
static void fastrec_rank_keys_form(int form, const uint64_t* a, Py_ssize_t n, uint64_t* out) {
    if (form == 2) fastrec_rank_keys_avx512(a, n, out);
    else if (form == 1) fastrec_rank_keys_avx2(a, n, out);
    else fastrec_rank_keys_base(a, n, out);
}
static void fastrec_rank_init(void) {
    if (fastrec_rank_form_available(2)) fastrec_rank_keys = fastrec_rank_keys_avx512;
    else if (fastrec_rank_form_available(1)) fastrec_rank_keys = fastrec_rank_keys_avx2;
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
   the least of them. s: scratch of n. Quickselect, each level counting then compressing the
   side that holds the answer. When k is a small part of n (the bound's cut of a row's block
   maxima), a first level keeps the keys above a pivot sampled just above rank k (the
   (64 k / n + 4)-th largest of 64 evenly spaced keys): one compress pass, where halving
   levels took five pairs of passes. */
FASTREC_AVX512 static uint64_t fastrec_cut_keys(uint64_t* a, Py_ssize_t n, Py_ssize_t k,
                                                uint64_t* s) {
    const uint64_t* src = a;
    Py_ssize_t m = n, need = k;
    uint64_t least;
    if (n >= 512 && 8 * k <= n) {
        uint64_t sample[128];
        for (int t = 0; t < 64; t++) sample[t] = a[t * (n / 64)];
        uint64_t pivot = fastrec_cut_keys(sample, 64, k * 64 / n + 4, sample + 64);
        Py_ssize_t above = fastrec_compress_keys(a, n, pivot, 1, s);
        if (above >= k) {  /* else (rarely) the pivot was above the k-th: the whole of a */
            src = s;
            m = above;
        }
    }
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
/* One full block of the stream form's scan (below), its state in the caller's locals. */
FASTREC_AVX512 static inline __attribute__((always_inline)) void fastrec_scan_block(
        const float* row, Py_ssize_t j0, Py_ssize_t k, const int64_t* ex, Py_ssize_t n_ex,
        uint64_t* keys, uint32_t* cols, uint64_t* s, Py_ssize_t* nk, Py_ssize_t* nc,
        Py_ssize_t* p, float* thr, __m512* t) {
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    Py_ssize_t c0 = *nc;
    for (int q = 0; q < 4; q++) {
        __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(row + j0 + 16 * q), *t, _CMP_GT_OQ);
        __m512i c = _mm512_add_epi32(_mm512_set1_epi32((int) (j0 + 16 * q)), iota);
        _mm512_storeu_si512(cols + *nc, _mm512_maskz_compress_epi32(m, c));
        *nc += __builtin_popcount(m);
    }
    while (*p < n_ex && ex[*p] < j0) (*p)++;
    if (*p < n_ex && ex[*p] < j0 + 64) {  /* drop this block's excluded columns */
        Py_ssize_t o = c0, q = *p;
        for (Py_ssize_t u = c0; u < *nc; u++) {
            while (q < n_ex && ex[q] < (int64_t) cols[u]) q++;
            if (!(q < n_ex && ex[q] == (int64_t) cols[u])) cols[o++] = cols[u];
        }
        *nc = o;
    }
    if (*nc >= k) {
        for (Py_ssize_t u = 0; u < *nc; u++)
            keys[*nk + u] = fastrec_f32_key(row[cols[u]], cols[u]);
        *nk += *nc;
        *nc = 0;
        if (*nk >= 2 * k) {
            *thr = fastrec_key_f32(fastrec_cut_keys(keys, *nk, k, s));
            *t = _mm512_set1_ps(*thr);
            *nk = k;
        }
    }
}
/* Scan the full blocks of row[:j_end] (j_end a multiple of 64) in the stream form: each
   block's columns above the threshold are appended to cols with compress stores, whether
   or not there are any (no data-dependent branch), then its excluded columns (ex, sorted)
   are dropped; every k columns become keys; 2k keys are cut back to k, raising the
   threshold, which starts at *thr_io. Only the blocks whose bit is set in ``listed`` are
   scanned, every block when it is NULL. Returns the keys held (*nk_io < 3k) and the
   threshold. keys and s hold 3k + 80, cols k + 80. */
FASTREC_AVX512 static void fastrec_scan_f32(
        const float* row, Py_ssize_t j_end, Py_ssize_t k, const int64_t* ex, Py_ssize_t n_ex,
        uint64_t* keys, uint32_t* cols, uint64_t* s, Py_ssize_t* nk_io, float* thr_io,
        const uint64_t* listed) {
    Py_ssize_t nk = 0, nc = 0, p = 0;
    float thr = *thr_io;
    __m512 t = _mm512_set1_ps(thr);
    if (listed == NULL) {
        for (Py_ssize_t j0 = 0; j0 < j_end; j0 += 64)
            fastrec_scan_block(row, j0, k, ex, n_ex, keys, cols, s, &nk, &nc, &p, &thr, &t);
    } else {
        Py_ssize_t n_blocks = j_end / 64;
        for (Py_ssize_t w = 0; w < (n_blocks + 63) / 64; w++) {
            for (uint64_t bits = listed[w]; bits; bits &= bits - 1) {
                Py_ssize_t j0 = 64 * (64 * w + __builtin_ctzll(bits));
                fastrec_scan_block(row, j0, k, ex, n_ex, keys, cols, s, &nk, &nc, &p, &thr,
                                   &t);
            }
        }
    }
    for (Py_ssize_t u = 0; u < nc; u++)
        keys[nk + u] = fastrec_f32_key(row[cols[u]], cols[u]);
    *nk_io = nk + nc;
    *thr_io = thr;
}
/* The largest of row[64 b:64 b + 64] that is neither NaN nor in ex (sorted; e: a cursor at
   or before the block's first excluded column), -inf when none. */
static float fastrec_excluded_max(const float* row, Py_ssize_t b, const int64_t* ex,
                                  Py_ssize_t n_ex, Py_ssize_t e) {
    float v = -INFINITY;
    for (Py_ssize_t j = 64 * b; j < 64 * b + 64; j++) {
        while (e < n_ex && ex[e] < j) e++;
        if (row[j] > v && !(e < n_ex && ex[e] == j)) v = row[j];
    }
    return v;
}
/* The 16-lane maximum of one 64-column block: maxps returns its second operand when either
   is NaN, so the running maximum (from -inf) never is one. */
FASTREC_AVX512 static inline __m512 fastrec_block_lanes(const float* q) {
    __m512 m = _mm512_max_ps(_mm512_loadu_ps(q), _mm512_set1_ps(-INFINITY));
    m = _mm512_max_ps(_mm512_loadu_ps(q + 16), m);
    m = _mm512_max_ps(_mm512_loadu_ps(q + 32), m);
    return _mm512_max_ps(_mm512_loadu_ps(q + 48), m);
}
/* The keys of the maxima of the 16 blocks from b0 (lane t: block b0 + t), without reducing
   each block's lanes alone: the 16 lane vectors are folded pairwise (256-bit halves, then
   128-bit, 64-bit and 32-bit ones), which leaves block 4 s + q in lane 4 q + s. */
FASTREC_AVX512 static inline void fastrec_block_keys16(const float* row, Py_ssize_t b0,
                                                      uint64_t* keys) {
    __m512 v[16], w[8], x[4], y[2];
    for (int t = 0; t < 16; t++) v[t] = fastrec_block_lanes(row + 64 * (b0 + t));
    for (int i = 0; i < 8; i++)
        w[i] = _mm512_max_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; i++)
        x[i] = _mm512_max_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xDD));
    for (int i = 0; i < 2; i++) {
        __m512d a = _mm512_castps_pd(x[2 * i]), c = _mm512_castps_pd(x[2 * i + 1]);
        y[i] = _mm512_max_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, c)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, c)));
    }
    __m512 z = _mm512_max_ps(_mm512_shuffle_ps(y[0], y[1], 0x88),
                             _mm512_shuffle_ps(y[0], y[1], 0xDD));
    const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    z = _mm512_add_ps(_mm512_permutexvar_ps(order, z), _mm512_setzero_ps());  /* -0.0 -> +0.0 */
    /* fastrec_f32_key's map, 16 lanes at once: flip every bit of negatives, the sign of others */
    __m512i bits = _mm512_castps_si512(z);
    bits = _mm512_xor_si512(bits, _mm512_or_si512(_mm512_srai_epi32(bits, 31),
                                                  _mm512_set1_epi32((int) 0x80000000u)));
    const __m512i low = _mm512_sub_epi64(_mm512_set1_epi64(0xFFFFFFFFll - b0),
                                         _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    __m512i k0 = _mm512_slli_epi64(_mm512_cvtepu32_epi64(_mm512_castsi512_si256(bits)), 32);
    __m512i k1 = _mm512_slli_epi64(
        _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(bits, 1)), 32);
    _mm512_storeu_si512(keys + b0, _mm512_or_si512(k0, low));
    _mm512_storeu_si512(keys + b0 + 8,
                        _mm512_or_si512(k1, _mm512_sub_epi64(low, _mm512_set1_epi64(8))));
}
/* A lower bound of the k-th best score of row[:j_end] (j_end = 64 n_blocks, n_blocks >= k):
   the k-th largest of its 64-column blocks' maxima (excluded columns and NaN left out), k
   distinct entries being at least that. Sets in ``listed`` (n_blocks bits) the blocks of
   those k maxima: every entry of the row's best k lies in one of them (an entry of another
   block ties at most with the bound and comes after all k maxima). keys and s: n_blocks.
   The maxima are taken 16 blocks at a time (fastrec_block_keys16; reducing each block's
   lanes alone took three times the instructions), blocks holding an excluded column
   redone then. */
FASTREC_AVX512 static float fastrec_block_bound_f32(
        const float* row, Py_ssize_t j_end, Py_ssize_t k, const int64_t* ex, Py_ssize_t n_ex,
        uint64_t* keys, uint64_t* s, uint64_t* listed) {
    Py_ssize_t n_blocks = j_end / 64, n16 = n_blocks - n_blocks % 16, p = 0;
    for (Py_ssize_t b = 0; b < n16; b += 16) fastrec_block_keys16(row, b, keys);
    for (Py_ssize_t b = n16; b < n_blocks; b++)
        keys[b] = fastrec_f32_key(_mm512_reduce_max_ps(fastrec_block_lanes(row + 64 * b)), b);
    while (p < n_ex && ex[p] < j_end) {
        Py_ssize_t b = ex[p] / 64;
        keys[b] = fastrec_f32_key(fastrec_excluded_max(row, b, ex, n_ex, p), b);
        while (p < n_ex && ex[p] < 64 * (b + 1)) p++;
    }
    uint64_t least = fastrec_cut_keys(keys, n_blocks, k, s);
    memset(listed, 0, sizeof(uint64_t) * ((n_blocks + 63) / 64));
    for (Py_ssize_t u = 0; u < k; u++) {
        uint64_t b = 0xFFFFFFFFu - (keys[u] & 0xFFFFFFFFu);
        listed[b >> 6] |= 1ull << (b & 63);
    }
    return fastrec_key_f32(least);
}
#define FASTREC_COMPRESS_BUILT 1
#else
#define FASTREC_COMPRESS_BUILT 0
static int fastrec_cpu_has_avx512(void) { return 0; }
static void fastrec_rank_init(void) {}
static int fastrec_rank_form_available(int form) { return form == 0; }
static void fastrec_rank_keys_form(int form, const uint64_t* a, Py_ssize_t n, uint64_t* out) {
    fastrec_rank_keys_base(a, n, out);
}
/* never called: fastrec_cpu_has_avx512() is 0 */
static uint64_t fastrec_cut_keys(uint64_t* a, Py_ssize_t n, Py_ssize_t k, uint64_t* s) {
    return 0;
}
static void fastrec_scan_f32(const float* row, Py_ssize_t j_end, Py_ssize_t k,
                             const int64_t* ex, Py_ssize_t n_ex, uint64_t* keys,
                             uint32_t* cols, uint64_t* s, Py_ssize_t* nk_io,
                             float* thr_io, const uint64_t* listed) {}
static float fastrec_block_bound_f32(const float* row, Py_ssize_t j_end, Py_ssize_t k,
                                     const int64_t* ex, Py_ssize_t n_ex, uint64_t* keys,
                                     uint64_t* s, uint64_t* listed) {
    return 0;
}
#endif

#endif /* FASTREC_TOPK_SIMD_H */
