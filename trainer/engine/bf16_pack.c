/* bf16_pack.c: bf16.c's conversions and transposes (bf16_pack.h): fp32
 * to bf16 rounded to nearest even, by vcvtneps2bf16 or by the same rule in
 * integer operations (MOCO_BF16_EMULATE), and a chunk's (C,N,HW) rows to
 * NHWC or nChw16c and back in 16x16 register tiles. AVX-512 throughout:
 * called only once bf16.c has checked the CPU. */
#include "trainer/engine/bf16_pack.h"

#include <stdint.h>
#include <string.h>

#ifdef MOCO_HAVE_DNNL

#include <immintrin.h>

#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define F32_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) /* the fp32 path: no AVX512_BF16 needed */

/* 16 fp32 -> 16 bf16, round to nearest even (the hardware rule) */
BF16_TARGET static inline __m256i cvt16(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }

/* The same rule in integer operations (MOCO_BF16_EMULATE), as vcvtneps2bf16
 * defines it: a NaN stays a quiet NaN, a subnormal becomes a zero of its
 * sign, any other value is rounded to nearest even. */
F32_TARGET static inline __m256i cvt16_emu(__m512 v)
{
    const __m512i u = _mm512_castps_si512(v), hi = _mm512_srli_epi32(u, 16), exp = _mm512_set1_epi32(0x7F800000);
    const __m512i mag = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), _mm512_and_si512(hi, _mm512_set1_epi32(1)));
    r = _mm512_srli_epi32(r, 16);
    r = _mm512_mask_or_epi32(r, _mm512_cmpgt_epu32_mask(mag, exp), hi, _mm512_set1_epi32(0x40));
    r = _mm512_mask_and_epi32(r, _mm512_testn_epi32_mask(u, exp), hi, _mm512_set1_epi32(0x8000));
    return _mm512_cvtepi32_epi16(r);
}

#define TO_BF16(name, target, cvt)                                                                                    \
    target static void name(uint16_t *dst, const float *src, size_t n)                                               \
    {                                                                                                                  \
        size_t i = 0;                                                                                                  \
        for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(dst + i), cvt(_mm512_loadu_ps(src + i)));        \
        if (i < n) {                                                                                                   \
            __mmask16 m = (__mmask16)((1u << (n - i)) - 1);                                                            \
            _mm256_mask_storeu_epi16(dst + i, m, cvt(_mm512_maskz_loadu_ps(m, src + i)));                              \
        }                                                                                                              \
    }
TO_BF16(to_bf16_hw, BF16_TARGET, cvt16)
TO_BF16(to_bf16_emu, F32_TARGET, cvt16_emu)

void bf16_convert(uint16_t *dst, const float *src, size_t n, int emu)
{
    if (emu) to_bf16_emu(dst, src, n);
    else to_bf16_hw(dst, src, n);
}

#define BF16_ROUND(name, target, cvt)                                                                                 \
    target static void name(float *x, size_t n)                                                                        \
    {                                                                                                                  \
        for (size_t i = 0; i < n; i += 16) {                                                                           \
            size_t k = n - i < 16 ? n - i : 16;                                                                        \
            __mmask16 m = (__mmask16)((1u << k) - 1);                                                                  \
            __m512i b = _mm512_cvtepu16_epi32(cvt(_mm512_maskz_loadu_ps(m, x + i)));                                   \
            _mm512_mask_storeu_ps(x + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(b, 16)));                            \
        }                                                                                                              \
    }
BF16_ROUND(round_hw, BF16_TARGET, cvt16)
BF16_ROUND(round_emu, F32_TARGET, cvt16_emu)

void bf16_round(float *x, size_t n, int emu)
{
    if (emu) round_emu(x, n);
    else round_hw(x, n);
}

/* In-register transpose of the 16x16 block r[row][col] -> r[col][row]. */
F32_TARGET __attribute__((always_inline)) static inline void tr16(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* u[4g+c], lane L: column 4L+c of rows 4g..4g+3 */
    for (int g = 0; g < 4; g++) {
        __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
        __m512d c = _mm512_castps_pd(t[4 * g + 2]), e = _mm512_castps_pd(t[4 * g + 3]);
        u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
    }
    for (int c = 0; c < 4; c++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        __m512 w0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44), w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
        r[8 + c] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
    }
}

static inline __mmask16 mask16(int k) { return (__mmask16)(k >= 16 ? 0xFFFF : (1u << k) - 1); }

/* The chunk of images n0..n0+n of a (C,N,HW) tensor is, per channel, one
 * contiguous run of P = n*HW values (row stride ldc = N*HW); its NHWC form
 * is (P, C). Both conversions are transposes in 16x16 register tiles, 16
 * channel rows at a time, each read or written along its whole run (all C
 * rows at once would thrash the TLB and the prefetchers). */

#define PF 128 /* prefetch distance along a row, floats (8 cache lines) */

/* 16 values of row i (p0..p0+16, mask pm) of src as fp32: src fp32, or
 * bf16 when half (kept activations: nn_conv.in_half; exact) */
F32_TARGET __attribute__((always_inline)) static inline __m512 load_row(const void *src, int half, size_t at, __mmask16 pm)
{
    if (!half) return _mm512_maskz_loadu_ps(pm, (const float *)src + at);
    __m256i h = _mm256_maskz_loadu_epi16(pm, (const uint16_t *)src + at);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* dst (P, C) bf16 (pack_nhwc) or fp32 (pack_nhwc_f32) = src (C, ldc) fp32
 * (or bf16: half), P values per row; then zeros up to Ppad rows. bhw > 0:
 * dst is oneDNN's blocked nChw16c instead (bhw the positions of a plane;
 * C a multiple of 16): a row of 16 channels of position p sits at
 * ((p / bhw) * C + c0) * bhw + (p % bhw) * 16. */
static inline size_t row_at(size_t p, int c0, int C, size_t bhw)
{
    return bhw ? ((p / bhw) * (size_t)C + (size_t)c0) * bhw + (p % bhw) * 16 : p * (size_t)C + (size_t)c0;
}
#define PACK_NHWC(name, target, T, STORE)                                                                             \
    target static void name(T *dst, const void *src, int half, int C, size_t ldc, size_t P, size_t Ppad, size_t bhw)   \
    {                                                                                                                  \
        const size_t es = half ? 2 : 4, rs = bhw ? 16 : (size_t)C;                                                     \
        const int whole = !bhw || bhw % 16 == 0; /* 16 positions never straddle two planes */                         \
        for (int c0 = 0; c0 < C; c0 += 16) {                                                                           \
            const int cn = C - c0 < 16 ? C - c0 : 16;                                                                  \
            const __mmask16 cm = mask16(cn);                                                                           \
            const size_t s = (size_t)c0 * ldc;                                                                         \
            for (size_t p0 = 0; p0 < P; p0 += 16) {                                                                    \
                const int pn = P - p0 < 16 ? (int)(P - p0) : 16;                                                       \
                const __mmask16 pm = mask16(pn);                                                                       \
                __m512 r[16];                                                                                          \
                if (p0 + PF < P)                                                                                       \
                    for (int i = 0; i < cn; i++)                                                                       \
                        _mm_prefetch((const char *)src + (s + (size_t)i * ldc + p0 + PF) * es, _MM_HINT_T0);           \
                for (int i = 0; i < 16; i++)                                                                           \
                    r[i] = i < cn ? load_row(src, half, s + (size_t)i * ldc + p0, pm) : _mm512_setzero_ps();           \
                tr16(r);                                                                                               \
                T *o = dst + row_at(p0, c0, C, bhw);                                                                   \
                for (int i = 0; i < pn; i++)                                                                           \
                    STORE(whole ? o + (size_t)i * rs : dst + row_at(p0 + (size_t)i, c0, C, bhw), cm, r[i]);            \
            }                                                                                                          \
        }                                                                                                              \
        if (Ppad > P) memset(dst + P * C, 0, sizeof(T) * (Ppad - P) * C);                                              \
    }
#define ST_BF16(p, m, v) _mm256_mask_storeu_epi16(p, m, cvt16(v))
#define ST_BF16_EMU(p, m, v) _mm256_mask_storeu_epi16(p, m, cvt16_emu(v))
#define ST_F32(p, m, v) _mm512_mask_storeu_ps(p, m, v)
PACK_NHWC(pack_nhwc, BF16_TARGET, uint16_t, ST_BF16)
PACK_NHWC(pack_nhwc_emu, F32_TARGET, uint16_t, ST_BF16_EMU)
PACK_NHWC(pack_nhwc_f32, F32_TARGET, float, ST_F32)

void bf16_pack(void *dst, const void *src, int half, int C, size_t ldc, size_t P, size_t Ppad, size_t bhw, bf16_pack_to to)
{
    if (to == BF16_TO_F32) pack_nhwc_f32(dst, src, half, C, ldc, P, Ppad, bhw);
    else if (to == BF16_TO_BF16_EMU) pack_nhwc_emu(dst, src, half, C, ldc, P, Ppad, bhw);
    else pack_nhwc(dst, src, half, C, ldc, P, Ppad, bhw);
}

/* dst (C, ldc) fp32, P values per row, = (add: +=) src (P, C) fp32 (bhw > 0: nChw16c, as above) */
F32_TARGET void bf16_unpack(float *dst, const float *src, int C, size_t ldc, size_t P, int add, size_t bhw)
{
    for (int c0 = 0; c0 < C; c0 += 16) {
        const int cn = C - c0 < 16 ? C - c0 : 16;
        const __mmask16 cm = mask16(cn);
        float *o = dst + (size_t)c0 * ldc;
        const size_t rs = bhw ? 16 : (size_t)C;
        const int whole = !bhw || bhw % 16 == 0;
        for (size_t p0 = 0; p0 < P; p0 += 16) {
            const int pn = P - p0 < 16 ? (int)(P - p0) : 16;
            const __mmask16 pm = mask16(pn);
            __m512 r[16];
            const float *in = src + row_at(p0, c0, C, bhw);
            for (int i = 0; i < 16; i++)
                r[i] = i < pn ? _mm512_maskz_loadu_ps(cm, whole ? in + (size_t)i * rs : src + row_at(p0 + (size_t)i, c0, C, bhw))
                              : _mm512_setzero_ps();
            tr16(r);
            if (p0 + PF < P)
                for (int i = 0; i < cn; i++) _mm_prefetch((const char *)(o + (size_t)i * ldc + p0 + PF), _MM_HINT_ET0);
            for (int i = 0; i < cn; i++) {
                float *q = o + (size_t)i * ldc + p0;
                _mm512_mask_storeu_ps(q, pm, add ? _mm512_add_ps(_mm512_maskz_loadu_ps(pm, q), r[i]) : r[i]);
            }
        }
    }
}

#endif /* MOCO_HAVE_DNNL */
