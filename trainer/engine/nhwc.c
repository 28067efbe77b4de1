/* nhwc.c: the (C,N,HW) <-> NHWC transposes of oneDNN's fp32 convolutions on
 * a CPU without AVX-512 (AVX2 and FMA, or the engine capped there by
 * MOCO_CONV3=1), in 8x8 register tiles. They promise exactly what the
 * AVX-512 ones in bf16.c give: a copy, value for value (bf16 inputs widened
 * exactly), so any kernel on either side sums the same numbers. On other
 * CPUs (no x86-64) the same functions are the plain loops alone. */
#include "trainer/engine/nhwc.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NHWC_X86 1
#define AVX2_TARGET __attribute__((target("avx2,fma")))
#else
#define NHWC_X86 0
#define AVX2_TARGET
#endif
#define PF 64 /* prefetch distance along a row, floats */

static inline float widen(const void *src, int half, size_t at)
{
    if (!half) return ((const float *)src)[at];
    const uint32_t b = (uint32_t)((const uint16_t *)src)[at] << 16;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

#if NHWC_X86

/* In-register transpose of the 8x8 block r[row][col] -> r[col][row]. */
AVX2_TARGET __attribute__((always_inline)) static inline void tr8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int g = 0; g < 8; g += 4) {
        u[g + 0] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
        u[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xEE);
        u[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
        u[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
        r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
}

AVX2_TARGET __attribute__((always_inline)) static inline __m256 load8(const void *src, int half, size_t at)
{
    if (!half) return _mm256_loadu_ps((const float *)src + at);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)src + at));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
#endif

AVX2_TARGET void nhwc_pack_f32_avx2(float *dst, const void *src, int half, int C, size_t ldc, size_t P, size_t Ppad)
{
    const size_t P8 = NHWC_X86 ? P & ~(size_t)7 : 0;
    for (int c0 = 0; c0 < C; c0 += 8) {
        const int cn = C - c0 < 8 ? C - c0 : 8;
        const size_t s = (size_t)c0 * ldc;
#if NHWC_X86
        const size_t es = half ? 2 : 4;
        if (cn == 8)
            for (size_t p0 = 0; p0 < P8; p0 += 8) {
                __m256 r[8];
                if (p0 + PF < P)
                    for (int i = 0; i < 8; i++) _mm_prefetch((const char *)src + (s + (size_t)i * ldc + p0 + PF) * es, _MM_HINT_T0);
                for (int i = 0; i < 8; i++) r[i] = load8(src, half, s + (size_t)i * ldc + p0);
                tr8(r);
                for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + (p0 + (size_t)i) * (size_t)C + c0, r[i]);
            }
#endif
        for (size_t p = cn == 8 ? P8 : 0; p < P; p++) /* the channels short of 8 (the stem's 3), the positions short of 8 */
            for (int i = 0; i < cn; i++) dst[p * (size_t)C + (size_t)(c0 + i)] = widen(src, half, s + (size_t)i * ldc + p);
    }
    if (Ppad > P) memset(dst + P * (size_t)C, 0, sizeof(float) * (Ppad - P) * (size_t)C);
}

AVX2_TARGET void nhwc_unpack_avx2(float *dst, const float *src, int C, size_t ldc, size_t P, int add)
{
    const size_t P8 = NHWC_X86 ? P & ~(size_t)7 : 0;
    for (int c0 = 0; c0 < C; c0 += 8) {
        const int cn = C - c0 < 8 ? C - c0 : 8;
        float *o = dst + (size_t)c0 * ldc;
#if NHWC_X86
        if (cn == 8)
            for (size_t p0 = 0; p0 < P8; p0 += 8) {
                __m256 r[8];
                for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + (p0 + (size_t)i) * (size_t)C + c0);
                tr8(r);
                for (int i = 0; i < 8; i++) {
                    float *q = o + (size_t)i * ldc + p0;
                    _mm256_storeu_ps(q, add ? _mm256_add_ps(_mm256_loadu_ps(q), r[i]) : r[i]);
                }
            }
#endif
        for (int i = 0; i < cn; i++)
            for (size_t p = cn == 8 ? P8 : 0; p < P; p++) {
                const float v = src[p * (size_t)C + (size_t)(c0 + i)];
                o[(size_t)i * ldc + p] = add ? o[(size_t)i * ldc + p] + v : v;
            }
    }
}
