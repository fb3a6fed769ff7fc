/* Vector-gather CSR dot products of the Cython sigmoid (_scoring.pyx), for x86-64 CPUs with
   AVX-512 or AVX2 (checked at run time: the module is built for the base ISA, so the wheel
   runs anywhere; without either, _scoring.pyx's scalar loop runs). Included by the generated
   _scoring.c after Python.h (Py_ssize_t).

   fastrec_logits_<isa>_<index>_<value>(indptr, indices, data, w, r0, r1, last, z) writes the
   float64 dot product of rows [r0, r1) into z[0 .. r1 - r0) and returns the largest column
   index seen, compared as unsigned (a negative index is huge), zero-extended to 64 bits. Each
   gather's index is first clamped to `last` (unsigned), so no load leaves w whatever the
   indices hold; the caller compares the returned maximum with len(w).

   Summation order (fixed by this code alone, so the same bits on any thread count): entry k of
   a row goes to lane k mod L of one float64 accumulator (L = 8 for AVX-512, 4 for AVX2; fused
   multiply-add, the row's last partial vector masked), and the lanes are summed in the fixed
   tree of _mm512_reduce_add_pd / fastrec_hsum4. The two ISAs (and the scalar loop) therefore
   round differently in the last bits of the float64 logit. */
#ifndef FASTREC_SCORING_SIMD_H
#define FASTREC_SCORING_SIMD_H

#include <stdint.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

/* 2: AVX-512 (F, VL, DQ), 1: AVX2 with FMA, 0: neither. */
static int fastrec_scoring_cpu_isa(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512dq"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 1;
    return 0;
}

#define FASTREC_T512 __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma")))
#define FASTREC_T256 __attribute__((target("avx2,fma")))

/* ---- AVX-512: eight entries per step, a __mmask8 of the valid ones ------------------------ */

/* One step: acc += data[k..k+8) * w[min(indices[k..k+8), last)], top = max(top, indices).
   Full steps load and gather unmasked (measured 5 ms of 47 faster per 2M rows of 40 entries,
   w in L1, Zen 4, than masked ones throughout); the row's last partial step takes the lanes
   of m (masked-off lanes load index 0 and gather nothing). */
#define FASTREC_IX512_I32_FULL __m256i j = _mm256_loadu_si256((const __m256i*) (ix + k));
#define FASTREC_IX512_I32_TAIL __m256i j = _mm256_maskz_loadu_epi32(m, ix + k);
#define FASTREC_IX512_I64_FULL __m512i j = _mm512_loadu_si512(ix + k);
#define FASTREC_IX512_I64_TAIL __m512i j = _mm512_maskz_loadu_epi64(m, ix + k);
#define FASTREC_CLAMP512_I32 top = _mm256_max_epu32(top, j); j = _mm256_min_epu32(j, lastv);
#define FASTREC_CLAMP512_I64 top = _mm512_max_epu64(top, j); j = _mm512_min_epu64(j, lastv);

#define FASTREC_W512_I32_F32_FULL                                                             \
    __m512d wv = _mm512_cvtps_pd(_mm256_i32gather_ps(w, j, 4));                               \
    __m512d dv = _mm512_cvtps_pd(_mm256_loadu_ps(dat + k));
#define FASTREC_W512_I32_F32_TAIL                                                             \
    __m512d wv = _mm512_cvtps_pd(_mm256_mmask_i32gather_ps(_mm256_setzero_ps(), m, j, w, 4)); \
    __m512d dv = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, dat + k));
#define FASTREC_W512_I64_F32_FULL                                                             \
    __m512d wv = _mm512_cvtps_pd(_mm512_i64gather_ps(j, w, 4));                               \
    __m512d dv = _mm512_cvtps_pd(_mm256_loadu_ps(dat + k));
#define FASTREC_W512_I64_F32_TAIL                                                             \
    __m512d wv = _mm512_cvtps_pd(_mm512_mask_i64gather_ps(_mm256_setzero_ps(), m, j, w, 4));  \
    __m512d dv = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, dat + k));
#define FASTREC_W512_I32_F64_FULL                                                             \
    __m512d wv = _mm512_i32gather_pd(j, w, 8);                                                \
    __m512d dv = _mm512_loadu_pd(dat + k);
#define FASTREC_W512_I32_F64_TAIL                                                             \
    __m512d wv = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), m, j, w, 8);                   \
    __m512d dv = _mm512_maskz_loadu_pd(m, dat + k);
#define FASTREC_W512_I64_F64_FULL                                                             \
    __m512d wv = _mm512_i64gather_pd(j, w, 8);                                                \
    __m512d dv = _mm512_loadu_pd(dat + k);
#define FASTREC_W512_I64_F64_TAIL                                                             \
    __m512d wv = _mm512_mask_i64gather_pd(_mm512_setzero_pd(), m, j, w, 8);                   \
    __m512d dv = _mm512_maskz_loadu_pd(m, dat + k);

/* TOPV: the running maximum's vector type; LASTV: `last` broadcast (clamped to INT32_MAX for
   32-bit indices, whose gathers sign-extend); TOPMAX: its horizontal maximum. IX: I32 or I64,
   IV: I32_F32, ... (the step macros above). */
#define FASTREC_ROWS512(NAME, I, V, TOPV, LASTV, TOPINIT, IX, IV, TOPMAX)                      \
    FASTREC_T512 static uint64_t NAME(const I* indptr, const I* ix, const V* dat, const V* w,  \
                                      Py_ssize_t r0, Py_ssize_t r1, uint64_t last, double* z) { \
        const TOPV lastv = LASTV;                                                              \
        TOPV top = TOPINIT;                                                                    \
        for (Py_ssize_t i = r0; i < r1; i++) {                                                 \
            Py_ssize_t k = (Py_ssize_t) indptr[i], hi = (Py_ssize_t) indptr[i + 1];            \
            __m512d acc = _mm512_setzero_pd();                                                 \
            for (; k + 8 <= hi; k += 8) {                                                      \
                FASTREC_IX512_##IX##_FULL                                                      \
                FASTREC_CLAMP512_##IX                                                          \
                FASTREC_W512_##IV##_FULL                                                       \
                acc = _mm512_fmadd_pd(dv, wv, acc);                                            \
            }                                                                                  \
            if (k < hi) {                                                                      \
                __mmask8 m = (__mmask8) ((1u << (hi - k)) - 1);                                \
                FASTREC_IX512_##IX##_TAIL                                                      \
                FASTREC_CLAMP512_##IX                                                          \
                FASTREC_W512_##IV##_TAIL                                                       \
                acc = _mm512_fmadd_pd(dv, wv, acc);                                            \
            }                                                                                  \
            z[i - r0] = _mm512_reduce_add_pd(acc);                                             \
        }                                                                                      \
        return TOPMAX;                                                                         \
    }

FASTREC_T512 static inline uint64_t fastrec_max_epu32_256(__m256i v) {
    uint32_t a[8], t = 0;
    _mm256_storeu_si256((__m256i*) a, v);
    for (int q = 0; q < 8; q++) t = a[q] > t ? a[q] : t;
    return t;
}

#define FASTREC_LAST32 _mm256_set1_epi32((int) (last < INT32_MAX ? last : INT32_MAX))
#define FASTREC_LAST64 _mm512_set1_epi64((long long) (last < INT64_MAX ? last : INT64_MAX))
FASTREC_ROWS512(fastrec_logits_avx512_i32_f32, int32_t, float, __m256i, FASTREC_LAST32,
                _mm256_setzero_si256(), I32, I32_F32,
                fastrec_max_epu32_256(top))
FASTREC_ROWS512(fastrec_logits_avx512_i32_f64, int32_t, double, __m256i, FASTREC_LAST32,
                _mm256_setzero_si256(), I32, I32_F64,
                fastrec_max_epu32_256(top))
FASTREC_ROWS512(fastrec_logits_avx512_i64_f32, int64_t, float, __m512i, FASTREC_LAST64,
                _mm512_setzero_si512(), I64, I64_F32,
                _mm512_reduce_max_epu64(top))
FASTREC_ROWS512(fastrec_logits_avx512_i64_f64, int64_t, double, __m512i, FASTREC_LAST64,
                _mm512_setzero_si512(), I64, I64_F64,
                _mm512_reduce_max_epu64(top))

/* ---- AVX2: four entries per step; the row's last partial step takes lane masks ------------ */

/* Lane masks for n = 1..4 valid lanes: loaded from fastrec_lanes32 + 4 - n (n all-ones first). */
static const int32_t fastrec_lanes32[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
static const int64_t fastrec_lanes64[8] = {-1, -1, -1, -1, 0, 0, 0, 0};

FASTREC_T256 static inline double fastrec_hsum4(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* Unsigned 64-bit comparisons, which AVX2 lacks: flip the sign bits, compare signed. */
FASTREC_T256 static inline __m256i fastrec_gt_epu64(__m256i a, __m256i b) {
    const __m256i s = _mm256_set1_epi64x((long long) 0x8000000000000000ULL);
    return _mm256_cmpgt_epi64(_mm256_xor_si256(a, s), _mm256_xor_si256(b, s));
}

#define FASTREC_STEP256_I32(LOADW)                                                            \
    __m128i m32 = _mm_loadu_si128((const __m128i*) (fastrec_lanes32 + 4 - n));                \
    __m128i j = _mm_maskload_epi32((const int*) (ix + k), m32);                               \
    top = _mm_max_epu32(top, j);                                                              \
    j = _mm_min_epu32(j, lastv);                                                              \
    LOADW
#define FASTREC_STEP256_I64(LOADW)                                                            \
    __m256i m64 = _mm256_loadu_si256((const __m256i*) (fastrec_lanes64 + 4 - n));             \
    __m256i j = _mm256_maskload_epi64((const long long*) (ix + k), m64);                      \
    top = _mm256_blendv_epi8(top, j, fastrec_gt_epu64(j, top));                               \
    j = _mm256_blendv_epi8(j, lastv, fastrec_gt_epu64(j, lastv));                             \
    LOADW

#define FASTREC_W256_I32_F32                                                                  \
    __m128 mf = _mm_castsi128_ps(m32);                                                        \
    __m256d wv = _mm256_cvtps_pd(_mm_mask_i32gather_ps(_mm_setzero_ps(), w, j, mf, 4));       \
    __m256d dv = _mm256_cvtps_pd(_mm_maskload_ps(dat + k, m32));
#define FASTREC_W256_I64_F32                                                                  \
    __m128i m32 = _mm_loadu_si128((const __m128i*) (fastrec_lanes32 + 4 - n));                \
    __m256d wv = _mm256_cvtps_pd(                                                             \
        _mm256_mask_i64gather_ps(_mm_setzero_ps(), w, j, _mm_castsi128_ps(m32), 4));          \
    __m256d dv = _mm256_cvtps_pd(_mm_maskload_ps(dat + k, m32));
#define FASTREC_W256_I32_F64                                                                  \
    __m256i m64 = _mm256_cvtepi32_epi64(m32);                                                 \
    __m256d wv = _mm256_mask_i32gather_pd(_mm256_setzero_pd(), w, j,                          \
                                          _mm256_castsi256_pd(m64), 8);                       \
    __m256d dv = _mm256_maskload_pd(dat + k, m64);
#define FASTREC_W256_I64_F64                                                                  \
    __m256d wv = _mm256_mask_i64gather_pd(_mm256_setzero_pd(), w, j,                          \
                                          _mm256_castsi256_pd(m64), 8);                       \
    __m256d dv = _mm256_maskload_pd(dat + k, m64);

#define FASTREC_ROWS256(NAME, I, V, TOPV, LASTV, TOPINIT, STEP, TOPMAX)                        \
    FASTREC_T256 static uint64_t NAME(const I* indptr, const I* ix, const V* dat, const V* w,  \
                                      Py_ssize_t r0, Py_ssize_t r1, uint64_t last, double* z) { \
        const TOPV lastv = LASTV;                                                              \
        TOPV top = TOPINIT;                                                                    \
        for (Py_ssize_t i = r0; i < r1; i++) {                                                 \
            Py_ssize_t k = (Py_ssize_t) indptr[i], hi = (Py_ssize_t) indptr[i + 1];            \
            __m256d acc = _mm256_setzero_pd();                                                 \
            for (; k < hi; k += 4) {                                                           \
                int n = hi - k >= 4 ? 4 : (int) (hi - k);                                      \
                STEP                                                                           \
                acc = _mm256_fmadd_pd(dv, wv, acc);                                            \
            }                                                                                  \
            z[i - r0] = fastrec_hsum4(acc);                                                    \
        }                                                                                      \
        return TOPMAX;                                                                         \
    }

FASTREC_T256 static inline uint64_t fastrec_max_epu32_128(__m128i v) {
    uint32_t a[4], t = 0;
    _mm_storeu_si128((__m128i*) a, v);
    for (int q = 0; q < 4; q++) t = a[q] > t ? a[q] : t;
    return t;
}
FASTREC_T256 static inline uint64_t fastrec_max_epu64_256(__m256i v) {
    uint64_t a[4], t = 0;
    _mm256_storeu_si256((__m256i*) a, v);
    for (int q = 0; q < 4; q++) t = a[q] > t ? a[q] : t;
    return t;
}

#define FASTREC_LAST32_128 _mm_set1_epi32((int) (last < INT32_MAX ? last : INT32_MAX))
#define FASTREC_LAST64_256 _mm256_set1_epi64x((long long) (last < INT64_MAX ? last : INT64_MAX))
FASTREC_ROWS256(fastrec_logits_avx2_i32_f32, int32_t, float, __m128i, FASTREC_LAST32_128,
                _mm_setzero_si128(), FASTREC_STEP256_I32(FASTREC_W256_I32_F32),
                fastrec_max_epu32_128(top))
FASTREC_ROWS256(fastrec_logits_avx2_i32_f64, int32_t, double, __m128i, FASTREC_LAST32_128,
                _mm_setzero_si128(), FASTREC_STEP256_I32(FASTREC_W256_I32_F64),
                fastrec_max_epu32_128(top))
FASTREC_ROWS256(fastrec_logits_avx2_i64_f32, int64_t, float, __m256i, FASTREC_LAST64_256,
                _mm256_setzero_si256(), FASTREC_STEP256_I64(FASTREC_W256_I64_F32),
                fastrec_max_epu64_256(top))
FASTREC_ROWS256(fastrec_logits_avx2_i64_f64, int64_t, double, __m256i, FASTREC_LAST64_256,
                _mm256_setzero_si256(), FASTREC_STEP256_I64(FASTREC_W256_I64_F64),
                fastrec_max_epu64_256(top))

#else /* not x86-64 with gcc/clang: only the scalar loop runs (these are never called) */

static int fastrec_scoring_cpu_isa(void) { return 0; }
#define FASTREC_NO_SIMD(NAME, I, V)                                                            \
    static uint64_t NAME(const I* indptr, const I* ix, const V* dat, const V* w,               \
                         Py_ssize_t r0, Py_ssize_t r1, uint64_t last, double* z) {              \
        (void) indptr; (void) ix; (void) dat; (void) w; (void) r0; (void) r1; (void) last;     \
        (void) z;                                                                              \
        return 0;                                                                              \
    }
FASTREC_NO_SIMD(fastrec_logits_avx512_i32_f32, int32_t, float)
FASTREC_NO_SIMD(fastrec_logits_avx512_i32_f64, int32_t, double)
FASTREC_NO_SIMD(fastrec_logits_avx512_i64_f32, int64_t, float)
FASTREC_NO_SIMD(fastrec_logits_avx512_i64_f64, int64_t, double)
FASTREC_NO_SIMD(fastrec_logits_avx2_i32_f32, int32_t, float)
FASTREC_NO_SIMD(fastrec_logits_avx2_i32_f64, int32_t, double)
FASTREC_NO_SIMD(fastrec_logits_avx2_i64_f32, int64_t, float)
FASTREC_NO_SIMD(fastrec_logits_avx2_i64_f64, int64_t, double)

#endif

/* ---- the sigmoid of a block of logits -------------------------------------------------------

   out[t] = sigmoid(z[t] + b), rounded to float32 or float64, with a branch-free polynomial exp
   (Cody-Waite reduction, a Taylor polynomial, 2^k from exponent bits in two halves): the
   arithmetic of the Numba backend's _sigmoid_block / _exp_nonpos, operation for operation (no
   fused multiply-adds: contraction is off here), so the scalar, AVX2 and AVX-512 forms give the
   same bits, and those of Numba's. float64 scores take degree 13 (within 3 ulp of libm's exp);
   float32 scores degree 9 (truncation < 1e-11, so the float32 score is libm's rounded but for
   about 5 in a million, 1 ulp off; Zen 4, AVX-512, 32k logits: 1.35 ns a score against 1.77
   for degree 13). Both multiply by constant coefficients (a division by 13! cost 5%). The
   CSR float64 scores keep libm's exp. A NaN logit gives 0, as there (a score of 0 makes the
   caller scan X). */
#include <math.h>
#include <string.h>
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

#define FASTREC_LN2_HI 6.93147180369123816490e-01
#define FASTREC_LN2_LO 1.90821492927058770002e-10
#define FASTREC_INV_LN2 1.44269504088896338700e00

static inline double fastrec_pow2_bits(int64_t e) {
    double v;
    uint64_t bits = (uint64_t) (e + 1023) << 52;
    memcpy(&v, &bits, 8);
    return v;
}

/* exp(r) for |r| <= ln2 / 2 by its Taylor polynomial, Horner, innermost coefficient first:
   degree 13 (float64 scores) from 1 / 13!, or 9 (float32 scores) from 1 / 9!, entering the
   table at 1 / 8!. One table for the scalar form and the vector ones (FASTREC_POLY). */
static const double fastrec_exp_coef[13] = {
    1.0 / 479001600, 1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880, 1.0 / 40320, 1.0 / 5040,
    1.0 / 720, 1.0 / 120, 1.0 / 24, 1.0 / 6, 1.0 / 2, 1.0, 1.0};
#define FASTREC_EXP_LAST(F32) ((F32) ? 1.0 / 362880 : 1.0 / 6227020800)
#define FASTREC_EXP_FIRST(F32) ((F32) ? 4 : 0)

static inline double fastrec_exp_reduced(double r, int f32) {
    double p = FASTREC_EXP_LAST(f32);
    for (int q = FASTREC_EXP_FIRST(f32); q < 13; q++) p = fastrec_exp_coef[q] + r * p;
    return p;
}

static inline double fastrec_sigmoid_poly(double zt, int f32) {
    double x = -fabs(zt);
    double xc = x > -745.0 ? x : -745.0;
    double k = floor(xc * FASTREC_INV_LN2 + 0.5);
    double r = (xc - k * FASTREC_LN2_HI) - k * FASTREC_LN2_LO;
    double p = fastrec_exp_reduced(r, f32);
    int64_t ki = (int64_t) k, h = ki >> 1;
    double e = p * fastrec_pow2_bits(h) * fastrec_pow2_bits(ki - h);
    e = x >= -745.0 ? e : 0.0;
    return (zt >= 0.0 ? 1.0 : e) / (1.0 + e);
}

static void fastrec_sigmoid_block_scalar(const double* z, Py_ssize_t m, double b, float* out) {
    for (Py_ssize_t t = 0; t < m; t++) out[t] = (float) fastrec_sigmoid_poly(z[t] + b, 1);
}
static void fastrec_sigmoid_block_scalar_f64(const double* z, Py_ssize_t m, double b,
                                             double* out) {
    for (Py_ssize_t t = 0; t < m; t++) out[t] = fastrec_sigmoid_poly(z[t] + b, 0);
}

#if defined(__GNUC__) && defined(__x86_64__)
/* fastrec_exp_reduced on vectors. */
#define FASTREC_POLY(S, V, r, p, F32)                                                         \
    V p = S##_set1_pd(FASTREC_EXP_LAST(F32));                                                 \
    for (int q = FASTREC_EXP_FIRST(F32); q < 13; q++)                                         \
        p = S##_add_pd(S##_set1_pd(fastrec_exp_coef[q]), S##_mul_pd(r, p));

#define FASTREC_SIGMOID512(NAME, OUT_T, STORE, TAIL, F32)                                      \
    FASTREC_T512 static void NAME(const double* z, Py_ssize_t m, double b, OUT_T* out) {       \
    const __m512d bv = _mm512_set1_pd(b), lo = _mm512_set1_pd(-745.0);                         \
    const __m512d one = _mm512_set1_pd(1.0), zero = _mm512_setzero_pd();                       \
    const __m512i bias = _mm512_set1_epi64(1023);                                              \
    Py_ssize_t t = 0;                                                                          \
    for (; t + 8 <= m; t += 8) {                                                               \
        __m512d zt = _mm512_add_pd(_mm512_loadu_pd(z + t), bv);                                \
        __m512d x = _mm512_or_pd(zt, _mm512_set1_pd(-0.0));  /* -|zt| */                       \
        __m512d xc = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, lo, _CMP_GT_OQ), lo, x);       \
        __m512d k = _mm512_roundscale_pd(                                                      \
            _mm512_add_pd(_mm512_mul_pd(xc, _mm512_set1_pd(FASTREC_INV_LN2)),                  \
                          _mm512_set1_pd(0.5)),                                                \
            _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);                                        \
        __m512d r = _mm512_sub_pd(                                                             \
            _mm512_sub_pd(xc, _mm512_mul_pd(k, _mm512_set1_pd(FASTREC_LN2_HI))),               \
            _mm512_mul_pd(k, _mm512_set1_pd(FASTREC_LN2_LO)));                                 \
        FASTREC_POLY(_mm512, __m512d, r, p, F32)                                               \
        __m512i ki = _mm512_cvtpd_epi64(k), h = _mm512_srai_epi64(ki, 1);                      \
        __m512d s1 = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(h, bias), 52));    \
        __m512d s2 = _mm512_castsi512_pd(                                                      \
            _mm512_slli_epi64(_mm512_add_epi64(_mm512_sub_epi64(ki, h), bias), 52));           \
        __m512d e = _mm512_mul_pd(_mm512_mul_pd(p, s1), s2);                                   \
        e = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, lo, _CMP_GE_OQ), zero, e);              \
        __m512d num = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(zt, zero, _CMP_GE_OQ), e, one);  \
        STORE(out + t, _mm512_div_pd(num, _mm512_add_pd(one, e)));                             \
    }                                                                                          \
    TAIL(z + t, m - t, b, out + t);                                                            \
}
#define FASTREC_STORE512_F32(P, V) _mm256_storeu_ps((P), _mm512_cvtpd_ps(V))
FASTREC_SIGMOID512(fastrec_sigmoid_block_avx512, float, FASTREC_STORE512_F32,
                   fastrec_sigmoid_block_scalar, 1)
FASTREC_SIGMOID512(fastrec_sigmoid_block_avx512_f64, double, _mm512_storeu_pd,
                   fastrec_sigmoid_block_scalar_f64, 0)

/* AVX2 has no 64-bit arithmetic shift nor double -> int64 conversion: k and h = floor(k / 2)
   are integral doubles (|k| < 2^11), converted exactly through the 2^52 + 2^51 shift. */
FASTREC_T256 static inline __m256i fastrec_int_of_integral(__m256d v) {
    const __m256d shift = _mm256_set1_pd(6755399441055744.0);
    return _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(v, shift)),
                            _mm256_castpd_si256(shift));
}

#define FASTREC_SIGMOID256(NAME, OUT_T, STORE, TAIL, F32)                                      \
    FASTREC_T256 static void NAME(const double* z, Py_ssize_t m, double b, OUT_T* out) {       \
    const __m256d bv = _mm256_set1_pd(b), lo = _mm256_set1_pd(-745.0);                         \
    const __m256d one = _mm256_set1_pd(1.0), zero = _mm256_setzero_pd();                       \
    const __m256i bias = _mm256_set1_epi64x(1023);                                             \
    Py_ssize_t t = 0;                                                                          \
    for (; t + 4 <= m; t += 4) {                                                               \
        __m256d zt = _mm256_add_pd(_mm256_loadu_pd(z + t), bv);                                \
        __m256d x = _mm256_or_pd(zt, _mm256_set1_pd(-0.0));                                    \
        __m256d xc = _mm256_blendv_pd(lo, x, _mm256_cmp_pd(x, lo, _CMP_GT_OQ));                \
        __m256d k = _mm256_floor_pd(                                                           \
            _mm256_add_pd(_mm256_mul_pd(xc, _mm256_set1_pd(FASTREC_INV_LN2)),                  \
                          _mm256_set1_pd(0.5)));                                               \
        __m256d r = _mm256_sub_pd(                                                             \
            _mm256_sub_pd(xc, _mm256_mul_pd(k, _mm256_set1_pd(FASTREC_LN2_HI))),               \
            _mm256_mul_pd(k, _mm256_set1_pd(FASTREC_LN2_LO)));                                 \
        FASTREC_POLY(_mm256, __m256d, r, p, F32)                                               \
        __m256d hd = _mm256_floor_pd(_mm256_mul_pd(k, _mm256_set1_pd(0.5)));                   \
        __m256i ki = fastrec_int_of_integral(k), h = fastrec_int_of_integral(hd);              \
        __m256d s1 = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(h, bias), 52));    \
        __m256d s2 = _mm256_castsi256_pd(                                                      \
            _mm256_slli_epi64(_mm256_add_epi64(_mm256_sub_epi64(ki, h), bias), 52));           \
        __m256d e = _mm256_mul_pd(_mm256_mul_pd(p, s1), s2);                                   \
        e = _mm256_blendv_pd(zero, e, _mm256_cmp_pd(x, lo, _CMP_GE_OQ));                       \
        __m256d num = _mm256_blendv_pd(e, one, _mm256_cmp_pd(zt, zero, _CMP_GE_OQ));           \
        STORE(out + t, _mm256_div_pd(num, _mm256_add_pd(one, e)));                             \
    }                                                                                          \
    TAIL(z + t, m - t, b, out + t);                                                            \
}
#define FASTREC_STORE256_F32(P, V) _mm_storeu_ps((P), _mm256_cvtpd_ps(V))
FASTREC_SIGMOID256(fastrec_sigmoid_block_avx2, float, FASTREC_STORE256_F32,
                   fastrec_sigmoid_block_scalar, 1)
FASTREC_SIGMOID256(fastrec_sigmoid_block_avx2_f64, double, _mm256_storeu_pd,
                   fastrec_sigmoid_block_scalar_f64, 0)
#endif

/* fastrec_sigmoid_block_f32 / _f64(z, m, b, out, isa): the form for isa (2 AVX-512, 1 AVX2,
   0 scalar; at most what the CPU runs). */
#if defined(__GNUC__) && defined(__x86_64__)
#define FASTREC_SIGMOID_DISPATCH(NAME, OUT_T, F512, F256, SCALAR)                             \
    static void NAME(const double* z, Py_ssize_t m, double b, OUT_T* out, int isa) {          \
        if (isa == 2) F512(z, m, b, out);                                                    \
        else if (isa == 1) F256(z, m, b, out);                                               \
        else SCALAR(z, m, b, out);                                                           \
    }
#else
#define FASTREC_SIGMOID_DISPATCH(NAME, OUT_T, F512, F256, SCALAR)                             \
    static void NAME(const double* z, Py_ssize_t m, double b, OUT_T* out, int isa) {          \
        (void) isa;                                                                          \
        SCALAR(z, m, b, out);                                                                \
    }
#endif
FASTREC_SIGMOID_DISPATCH(fastrec_sigmoid_block_f32, float, fastrec_sigmoid_block_avx512,
                         fastrec_sigmoid_block_avx2, fastrec_sigmoid_block_scalar)
FASTREC_SIGMOID_DISPATCH(fastrec_sigmoid_block_f64, double, fastrec_sigmoid_block_avx512_f64,
                         fastrec_sigmoid_block_avx2_f64, fastrec_sigmoid_block_scalar_f64)
/* ---- dense rows: logits of rows r0..r1 of a C-order X (d columns), AVX2 + FMA ---------------
   z[i - r0] = sum_j X[i, j] * w[j] in float64: two accumulators of 4 lanes over steps of 8
   columns (lane l of the first sums the columns j = l mod 8 in order, of the second j = 4 + l
   mod 8; the last partial step masked, absent lanes add +0), then their sum and fastrec_hsum4:
   one order per d, whatever the thread count, and the same on CPUs with AVX-512 (which run
   this form too). Measured on Zen 4 (2M x 64 float32, one thread, rows in L3: 5.5 ns a row
   for this, 5.7 for one 8-lane AVX-512 accumulator, 10-12 for the former AVX-512 loop, whose
   16-float masked loads were split in halves; from memory all of them run at the read). */
#if defined(__GNUC__) && defined(__x86_64__)
/* Rows r0..r1 of a C-order X (d columns) times w, in float64: z[i - r0]. float32: w64 is w
   converted once per call, and the multiply-adds are fused (the float64 product of two
   float32 is exact, so the bits are those of a separate multiply and add); float64: a
   multiply, then an add. No software prefetch: with the sigmoid taken every few rows
   (_scoring.pyx, _dense_chunk) the hardware prefetcher keeps up, and prefetching 12 KB
   ahead cost 5-10% at one thread (Zen 4, 2M x 64 float32). */
#define FASTREC_DENSE_ROWS(NAME, T, W, LOADX, LOADX_TAIL, STEP)                                \
    FASTREC_T256 static void NAME(const T* X, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t d,       \
                                  const double* W, double* z) {                                \
        const Py_ssize_t full = d & ~(Py_ssize_t) 7, rest = d - full;                          \
        const Py_ssize_t n0 = rest < 4 ? rest : 4, n1 = rest - n0;                             \
        const __m128i m0 = _mm_loadu_si128((const __m128i*) (fastrec_lanes32 + 4 - n0));      \
        const __m128i m1 = _mm_loadu_si128((const __m128i*) (fastrec_lanes32 + 4 - n1));      \
        const __m256i k0 = _mm256_loadu_si256((const __m256i*) (fastrec_lanes64 + 4 - n0));  \
        const __m256i k1 = _mm256_loadu_si256((const __m256i*) (fastrec_lanes64 + 4 - n1));  \
        for (Py_ssize_t i = r0; i < r1; i++) {                                                 \
            const T* x = X + i * d;                                                            \
            __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();                        \
            Py_ssize_t j = 0;                                                                  \
            for (; j < full; j += 8) {                                                         \
                STEP(a0, LOADX(x + j), _mm256_loadu_pd(W + j));                                \
                STEP(a1, LOADX(x + j + 4), _mm256_loadu_pd(W + j + 4));                        \
            }                                                                                  \
            if (rest) {                                                                        \
                STEP(a0, LOADX_TAIL(x + j, m0, k0), _mm256_maskload_pd(W + j, k0));            \
                STEP(a1, LOADX_TAIL(x + j + 4, m1, k1), _mm256_maskload_pd(W + j + 4, k1));    \
            }                                                                                  \
            z[i - r0] = fastrec_hsum4(_mm256_add_pd(a0, a1));                                  \
        }                                                                                      \
    }
#define FASTREC_LOADX_F32(P) _mm256_cvtps_pd(_mm_loadu_ps(P))
#define FASTREC_LOADX_F32_TAIL(P, M32, M64) _mm256_cvtps_pd(_mm_maskload_ps((P), (M32)))
#define FASTREC_LOADX_F64(P) _mm256_loadu_pd(P)
#define FASTREC_LOADX_F64_TAIL(P, M32, M64) ((void) (M32), _mm256_maskload_pd((P), (M64)))
#define FASTREC_STEP_FMA(A, X, W) A = _mm256_fmadd_pd((X), (W), A)
#define FASTREC_STEP_MULADD(A, X, W) A = _mm256_add_pd(A, _mm256_mul_pd((X), (W)))
FASTREC_DENSE_ROWS(fastrec_dense_logits_f32, float, w64, FASTREC_LOADX_F32,
                   FASTREC_LOADX_F32_TAIL, FASTREC_STEP_FMA)
FASTREC_DENSE_ROWS(fastrec_dense_logits_f64, double, w, FASTREC_LOADX_F64,
                   FASTREC_LOADX_F64_TAIL, FASTREC_STEP_MULADD)
#else
static void fastrec_dense_logits_f32(const float* X, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t d,
                                     const double* w64, double* z) {}
static void fastrec_dense_logits_f64(const double* X, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t d,
                                     const double* w, double* z) {}
#endif

#pragma GCC pop_options

#endif
