/* conv3.c: the direct 3x3 kernels of conv3.h. The forward kernel keeps a
 * block of 8 output channels x 48 grid positions (AVX-512; 4 x 24 with
 * AVX2) in registers and runs over the input channels and the 9 taps:
 * per tap 3 unaligned loads, 8 broadcasts, 24 FMAs. The weight-gradient
 * kernel keeps 4 x 4 (AVX2: 4 x 2) channel pairs of one tap in registers
 * and runs over the grid. Sums are in float, in a fixed order (no
 * dependence on the thread count). Built for the CPU at hand with GCC's
 * target attributes; on other compilers or CPUs conv3_simd() is 0 and nn.c
 * lowers onto GEMM as before. */
#include "trainer/engine/conv3.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CONV3_X86 1
#else
#define CONV3_X86 0
#endif

static int simd_level = -1;

static int detect(void)
{
    int l = 0;
#if CONV3_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) l = 1;
    if (__builtin_cpu_supports("avx512f")) l = 2;
#endif
    const char *e = getenv("MOCO_CONV3");
    static int warned;
    if (e && *e && (e[1] || *e < '0' || *e > '2') && !warned++) /* a measurement knob: said, not an error */
        fprintf(stderr, "moco: warning: MOCO_CONV3=%s is not 0, 1 or 2: ignored\n", e);
    if (e && *e >= '0' && *e <= '2' && !e[1] && *e - '0' < l) l = *e - '0';
    return l;
}

int conv3_simd_capped(void)
{
    int have = conv3_simd(), l = 0; /* the CPU's own level, without MOCO_CONV3 */
#if CONV3_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) l = 1;
    if (__builtin_cpu_supports("avx512f")) l = 2;
#endif
    return have < l;
}

int conv3_simd(void)
{
    if (simd_level < 0) simd_level = detect();
    return simd_level;
}

void conv3_set_simd(int level)
{
    int have = detect();
    simd_level = level < 0 ? have : level < have ? level : have;
}

size_t conv3_ld(int n, int H, int W)
{
    size_t q = (size_t)n * (H + 2) * (W + 2);
    return (q + 48 + 2 * (size_t)(W + 2) + 2 + 16 + 15) & ~(size_t)15;
}

/* Plane copies, vectorised as nn.c's element-wise loops (AVX2 clone, no
 * per-row library calls: rows are 4-32 floats). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_THREAD__) /* its ifunc resolvers run before TSan starts */
#define CONV3_HOT                                                                                                     \
    __attribute__((optimize("vect-cost-model=dynamic", "no-tree-loop-distribute-patterns"), target_clones("avx2", "default")))
#else
#define CONV3_HOT
#endif

/* p: the zero-bordered (H+2) x (W+2) plane of s (H x W) */
CONV3_HOT static void plane_pad(float *restrict p, const float *restrict s, int H, int W)
{
    const int W2 = W + 2;
    for (int i = 0; i < W2 + 1; i++) p[i] = 0.0f;
    for (int h = 0; h < H; h++) {
        float *restrict r = p + (size_t)(h + 1) * W2 + 1;
        const float *restrict sr = s + (size_t)h * W;
        for (int w = 0; w < W; w++) r[w] = sr[w];
        r[W] = 0.0f, r[W + 1] = 0.0f; /* right border, next row's left border */
    }
    for (int i = 0; i < W2 - 1; i++) p[(size_t)(H + 1) * W2 + 1 + i] = 0.0f;
}

/* d (H x W) = (add: +=) rows of s with stride W + 2 */
CONV3_HOT static void plane_unpad(float *restrict d, const float *restrict s, int H, int W, int add)
{
    for (int h = 0; h < H; h++) {
        const float *restrict sr = s + (size_t)h * (W + 2);
        float *restrict dr = d + (size_t)h * W;
        if (add)
            for (int w = 0; w < W; w++) dr[w] += sr[w];
        else
            for (int w = 0; w < W; w++) dr[w] = sr[w];
    }
}

void conv3_pad(float *dst, size_t ld, const float *src, int C, int N, int n0, int n, int H, int W)
{
    const size_t W2 = (size_t)W + 2, P = (size_t)(H + 2) * W2;
    for (int c = 0; c < C; c++) {
        float *d = dst + (size_t)c * ld;
        for (int j = 0; j < n; j++) plane_pad(d + (size_t)j * P, src + ((size_t)c * N + n0 + j) * H * W, H, W);
        memset(d + (size_t)n * P, 0, sizeof(float) * (ld - (size_t)n * P));
    }
}

void conv3_unpad(float *dst, const float *src, size_t ld, int C, int N, int n0, int n, int H, int W, int add)
{
    const size_t W2 = (size_t)W + 2, P = (size_t)(H + 2) * W2;
    for (int c = 0; c < C; c++)
        for (int j = 0; j < n; j++) plane_unpad(dst + ((size_t)c * N + n0 + j) * H * W, src + (size_t)c * ld + (size_t)j * P, H, W, add);
}

void conv3_weights_fwd(float *wr, const float *w, int Co, int Ci)
{
    for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++)
            for (int t = 0; t < 9; t++) wr[((size_t)ci * 9 + t) * Co + co] = w[((size_t)co * Ci + ci) * 9 + t];
}

void conv3_weights_bwd(float *wr, const float *w, int Co, int Ci, int flip)
{
    for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++)
            for (int t = 0; t < 9; t++) wr[((size_t)co * 9 + t) * Ci + ci] = w[((size_t)co * Ci + ci) * 9 + (flip ? 8 - t : t)];
}

size_t conv3l_ld(int n, int Hs, int Ws) { return (size_t)((n + 15) / 16) * Hs * Ws * 16; }

#if CONV3_X86
/* r[16] (16 rows of 16) transposed in place: unpacks within 128-bit
 * blocks, then a 4x4 transpose of the blocks. */
__attribute__((target("avx512f"))) static inline void tr16(__m512 *r)
{
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]), t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    for (int i = 0; i < 4; i++) {
        u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD),
               v2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88), v3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
        r[j] = _mm512_shuffle_f32x4(v0, v2, 0x88), r[8 + j] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[4 + j] = _mm512_shuffle_f32x4(v1, v3, 0x88), r[12 + j] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

/* 16 consecutive positions i0.. of m image planes s[l] -> 16 vectors at d + off[k] */
__attribute__((target("avx512f"))) static void pack16(float *d, const long *off, const float *const *s, int m, size_t i0)
{
    __m512 r[16];
    for (int l = 0; l < 16; l++) r[l] = l < m ? _mm512_loadu_ps(s[l] + i0) : _mm512_setzero_ps();
    tr16(r);
    for (int k = 0; k < 16; k++) _mm512_storeu_ps(d + off[k], r[k]);
}

__attribute__((target("avx512f"))) static void unpack16(float *const *d, int m, size_t i0, const float *s, const long *off, int add)
{
    __m512 r[16];
    for (int k = 0; k < 16; k++) r[k] = _mm512_loadu_ps(s + off[k]);
    tr16(r);
    for (int l = 0; l < m; l++)
        _mm512_storeu_ps(d[l] + i0, add ? _mm512_add_ps(_mm512_loadu_ps(d[l] + i0), r[l]) : r[l]);
}

/* Offsets (floats) of the lanes vectors of plane positions i0..i0+15. */
static void lane_offsets(long *off, size_t i0, int W, int Ws, int p)
{
    for (int k = 0; k < 16; k++) {
        size_t i = i0 + k;
        off[k] = ((long)(i / W + p) * Ws + (long)(i % W) + p) * 16;
    }
}
#endif

void conv3l_pack(float *dst, size_t ld, const float *src, int C, int N, int n0, int n, int H, int W, int p)
{
    const int Hs = H + 2 * p, Ws = W + 2 * p, G = (n + 15) / 16;
    const size_t HW = (size_t)H * W, gs = (size_t)Hs * Ws * 16;
    const int fast = CONV3_X86 && conv3_simd() == 2 && HW % 16 == 0;
    (void)fast;
    for (int c = 0; c < C; c++)
        for (int g = 0; g < G; g++) {
            float *d = dst + (size_t)c * ld + (size_t)g * gs;
            const int m = n - g * 16 < 16 ? n - g * 16 : 16;
            const float *s[16];
            for (int l = 0; l < m; l++) s[l] = src + ((size_t)c * N + n0 + g * 16 + l) * HW;
            if (p) { /* the border: first and last rows, and the sides */
                memset(d, 0, sizeof(float) * 16 * (size_t)Ws);
                memset(d + (size_t)(Hs - 1) * Ws * 16, 0, sizeof(float) * 16 * (size_t)Ws);
                for (int h = 1; h < Hs - 1; h++) {
                    memset(d + (size_t)h * Ws * 16, 0, sizeof(float) * 16);
                    memset(d + ((size_t)h * Ws + Ws - 1) * 16, 0, sizeof(float) * 16);
                }
            }
#if CONV3_X86
            if (fast) {
                long off[16];
                for (size_t i0 = 0; i0 < HW; i0 += 16) {
                    lane_offsets(off, i0, W, Ws, p);
                    pack16(d, off, s, m, i0);
                }
                continue;
            }
#endif
            if (m < 16)
                for (int h = 0; h < H; h++) memset(d + ((size_t)(h + p) * Ws + p) * 16, 0, sizeof(float) * 16 * (size_t)W);
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++) {
                    float *o = d + ((size_t)(h + p) * Ws + w + p) * 16;
                    const size_t i = (size_t)h * W + w;
                    for (int l = 0; l < m; l++) o[l] = s[l][i];
                }
        }
}

void conv3l_unpack(float *dst, const float *src, size_t ld, int C, int N, int n0, int n, int H, int W, int p, int add)
{
    const int Hs = H + 2 * p, Ws = W + 2 * p, G = (n + 15) / 16;
    const size_t HW = (size_t)H * W, gs = (size_t)Hs * Ws * 16;
    const int fast = CONV3_X86 && conv3_simd() == 2 && HW % 16 == 0;
    (void)fast;
    for (int c = 0; c < C; c++)
        for (int g = 0; g < G; g++) {
            const float *sg = src + (size_t)c * ld + (size_t)g * gs;
            const int m = n - g * 16 < 16 ? n - g * 16 : 16;
            float *d[16];
            for (int l = 0; l < m; l++) d[l] = dst + ((size_t)c * N + n0 + g * 16 + l) * HW;
#if CONV3_X86
            if (fast) {
                long off[16];
                for (size_t i0 = 0; i0 < HW; i0 += 16) {
                    lane_offsets(off, i0, W, Ws, p);
                    unpack16(d, m, i0, sg, off, add);
                }
                continue;
            }
#endif
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++) {
                    const float *v = sg + ((size_t)(h + p) * Ws + w + p) * 16;
                    const size_t i = (size_t)h * W + w;
                    if (add)
                        for (int l = 0; l < m; l++) d[l][i] += v[l];
                    else
                        for (int l = 0; l < m; l++) d[l][i] = v[l];
                }
        }
}

#if CONV3_X86

/* ---- AVX-512: 8 channels x 3 vectors of 16 positions ---- */

#define FMA8(V, k)                                                                                                    \
    b = _mm512_set1_ps(wt[k]);                                                                                        \
    a##k##0 = _mm512_fmadd_ps(b, V##0, a##k##0), a##k##1 = _mm512_fmadd_ps(b, V##1, a##k##1),                          \
    a##k##2 = _mm512_fmadd_ps(b, V##2, a##k##2)

#define ST512(k)                                                                                                      \
    _mm512_storeu_ps(o + (size_t)(k) * ld, a##k##0), _mm512_storeu_ps(o + (size_t)(k) * ld + 16, a##k##1),            \
        _mm512_storeu_ps(o + (size_t)(k) * ld + 32, a##k##2)

__attribute__((target("avx512f"))) static void fwd512(float *out, const float *in, const float *wr, int Cin, int Cout,
                                                      size_t ld, size_t Q, const long *off)
{
    for (int co = 0; co < Cout; co += 8)
        for (size_t q = 0; q < Q; q += 48) {
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00, a20 = a00, a21 = a00,
                   a22 = a00, a30 = a00, a31 = a00, a32 = a00, a40 = a00, a41 = a00, a42 = a00, a50 = a00, a51 = a00,
                   a52 = a00, a60 = a00, a61 = a00, a62 = a00, a70 = a00, a71 = a00, a72 = a00, b;
            for (int ci = 0; ci < Cin; ci++) {
                const float *x = in + (size_t)ci * ld + q, *w = wr + (size_t)ci * 9 * Cout + co;
                for (int t = 0; t < 9; t++) {
                    const float *xp = x + off[t], *wt = w + (size_t)t * Cout;
                    __m512 v0 = _mm512_loadu_ps(xp), v1 = _mm512_loadu_ps(xp + 16), v2 = _mm512_loadu_ps(xp + 32);
                    FMA8(v, 0);
                    FMA8(v, 1);
                    FMA8(v, 2);
                    FMA8(v, 3);
                    FMA8(v, 4);
                    FMA8(v, 5);
                    FMA8(v, 6);
                    FMA8(v, 7);
                }
            }
            float *o = out + (size_t)co * ld + q;
            ST512(0), ST512(1), ST512(2), ST512(3), ST512(4), ST512(5), ST512(6), ST512(7);
        }
}

#define DW4(i)                                                                                                        \
    c##i##0 = _mm512_fmadd_ps(y##i, x0, c##i##0), c##i##1 = _mm512_fmadd_ps(y##i, x1, c##i##1),                       \
    c##i##2 = _mm512_fmadd_ps(y##i, x2, c##i##2), c##i##3 = _mm512_fmadd_ps(y##i, x3, c##i##3)

/* 4 output x 2 input channels x the 3 taps of one kernel row (kh) in 24
 * registers: per 16 grid positions 4 + 6 loads and 24 FMAs */
#define DWK(j, k)                                                                                                     \
    xv = _mm512_loadu_ps(x##j + q + k);                                                                               \
    c0##j##k = _mm512_fmadd_ps(y0, xv, c0##j##k), c1##j##k = _mm512_fmadd_ps(y1, xv, c1##j##k),                       \
    c2##j##k = _mm512_fmadd_ps(y2, xv, c2##j##k), c3##j##k = _mm512_fmadd_ps(y3, xv, c3##j##k)
#define RDK(i, j, k) dw[((size_t)(co + i) * Ci + ci + j) * 9 + kh * 3 + k] += _mm512_reduce_add_ps(c##i##j##k)
#define RDK3(i, j) RDK(i, j, 0), RDK(i, j, 1), RDK(i, j, 2)

__attribute__((target("avx512f"))) static void dw512(float *dw, const float *dy, const float *x, int Co, int Ci, int cn,
                                                     size_t ld, size_t Q, const long *off)
{
    for (int kh = 0; kh < 3; kh++)
        for (int co = 0; co < Co; co += 4)
            for (int ci = 0; ci < cn; ci += 2) {
                __m512 c000 = _mm512_setzero_ps(), c001 = c000, c002 = c000, c010 = c000, c011 = c000, c012 = c000,
                       c100 = c000, c101 = c000, c102 = c000, c110 = c000, c111 = c000, c112 = c000, c200 = c000, c201 = c000,
                       c202 = c000, c210 = c000, c211 = c000, c212 = c000, c300 = c000, c301 = c000, c302 = c000, c310 = c000,
                       c311 = c000, c312 = c000, xv;
                const float *y = dy + (size_t)co * ld, *x0 = x + (size_t)ci * ld + off[kh * 3], *x1 = x0 + ld;
                for (size_t q = 0; q < Q; q += 16) {
                    __m512 y0 = _mm512_loadu_ps(y + q), y1 = _mm512_loadu_ps(y + ld + q), y2 = _mm512_loadu_ps(y + 2 * ld + q),
                           y3 = _mm512_loadu_ps(y + 3 * ld + q);
                    DWK(0, 0);
                    DWK(0, 1);
                    DWK(0, 2);
                    DWK(1, 0);
                    DWK(1, 1);
                    DWK(1, 2);
                }
                RDK3(0, 0), RDK3(0, 1), RDK3(1, 0), RDK3(1, 1), RDK3(2, 0), RDK3(2, 1), RDK3(3, 0), RDK3(3, 1);
            }
}

/* input channels ci0..Ci one at a time, 4 output channels in registers
 * (the 3-channel stem); one body for both SIMD levels: V vector type, L
 * lanes, LD load, FMA, Z zero, RED horizontal sum */
#define DW_TAIL(name, tgt, V, L, LD, FMA, Z, RED)                                                                     \
    __attribute__((target(tgt))) static void name(float *dw, const float *dy, const float *x, int Co, int Ci, int ci0, \
                                                  size_t ld, size_t Q, const long *off)                               \
    {                                                                                                                 \
        for (int t = 0; t < 9; t++)                                                                                   \
            for (int co = 0; co < Co; co += 4)                                                                        \
                for (int ci = ci0; ci < Ci; ci++) {                                                                   \
                    V c0 = Z(), c1 = c0, c2 = c0, c3 = c0;                                                            \
                    const float *y = dy + (size_t)co * ld, *xx = x + (size_t)ci * ld + off[t];                        \
                    for (size_t q = 0; q < Q; q += L) {                                                               \
                        V xv = LD(xx + q);                                                                            \
                        c0 = FMA(LD(y + q), xv, c0);                                                                  \
                        c1 = FMA(LD(y + ld + q), xv, c1);                                                             \
                        c2 = FMA(LD(y + 2 * ld + q), xv, c2);                                                         \
                        c3 = FMA(LD(y + 3 * ld + q), xv, c3);                                                         \
                    }                                                                                                 \
                    dw[((size_t)co * Ci + ci) * 9 + t] += RED(c0);                                                    \
                    dw[((size_t)(co + 1) * Ci + ci) * 9 + t] += RED(c1);                                              \
                    dw[((size_t)(co + 2) * Ci + ci) * 9 + t] += RED(c2);                                              \
                    dw[((size_t)(co + 3) * Ci + ci) * 9 + t] += RED(c3);                                              \
                }                                                                                                     \
    }

DW_TAIL(dw512_tail, "avx512f", __m512, 16, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_setzero_ps, _mm512_reduce_add_ps)

/* ---- AVX2 + FMA: 4 channels x 3 vectors of 8 positions ---- */

#define FMA4(k)                                                                                                       \
    b = _mm256_set1_ps(wt[k]);                                                                                        \
    a##k##0 = _mm256_fmadd_ps(b, v0, a##k##0), a##k##1 = _mm256_fmadd_ps(b, v1, a##k##1),                              \
    a##k##2 = _mm256_fmadd_ps(b, v2, a##k##2)
#define ST256(k)                                                                                                      \
    _mm256_storeu_ps(o + (size_t)(k) * ld, a##k##0), _mm256_storeu_ps(o + (size_t)(k) * ld + 8, a##k##1),             \
        _mm256_storeu_ps(o + (size_t)(k) * ld + 16, a##k##2)

__attribute__((target("avx2,fma"))) static void fwd256(float *out, const float *in, const float *wr, int Cin, int Cout,
                                                       size_t ld, size_t Q, const long *off)
{
    for (int co = 0; co < Cout; co += 4)
        for (size_t q = 0; q < Q; q += 24) {
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00, a20 = a00, a21 = a00,
                   a22 = a00, a30 = a00, a31 = a00, a32 = a00, b;
            for (int ci = 0; ci < Cin; ci++) {
                const float *x = in + (size_t)ci * ld + q, *w = wr + (size_t)ci * 9 * Cout + co;
                for (int t = 0; t < 9; t++) {
                    const float *xp = x + off[t], *wt = w + (size_t)t * Cout;
                    __m256 v0 = _mm256_loadu_ps(xp), v1 = _mm256_loadu_ps(xp + 8), v2 = _mm256_loadu_ps(xp + 16);
                    FMA4(0);
                    FMA4(1);
                    FMA4(2);
                    FMA4(3);
                }
            }
            float *o = out + (size_t)co * ld + q;
            ST256(0), ST256(1), ST256(2), ST256(3);
        }
}

__attribute__((target("avx2,fma"))) static float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define DW2(i) c##i##0 = _mm256_fmadd_ps(y##i, x0, c##i##0), c##i##1 = _mm256_fmadd_ps(y##i, x1, c##i##1)
#define RED256(i, j) dw[((size_t)(co + i) * Ci + ci + j) * 9 + t] += hsum256(c##i##j)

__attribute__((target("avx2,fma"))) static void dw256(float *dw, const float *dy, const float *x, int Co, int Ci, int cn, size_t ld,
                                                      size_t Q, const long *off)
{
    for (int t = 0; t < 9; t++)
        for (int co = 0; co < Co; co += 4)
            for (int ci = 0; ci < cn; ci += 2) {
                __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
                const float *y = dy + (size_t)co * ld, *xx = x + (size_t)ci * ld + off[t];
                for (size_t q = 0; q < Q; q += 8) {
                    __m256 y0 = _mm256_loadu_ps(y + q), y1 = _mm256_loadu_ps(y + ld + q), y2 = _mm256_loadu_ps(y + 2 * ld + q),
                           y3 = _mm256_loadu_ps(y + 3 * ld + q);
                    __m256 x0 = _mm256_loadu_ps(xx + q), x1 = _mm256_loadu_ps(xx + ld + q);
                    DW2(0);
                    DW2(1);
                    DW2(2);
                    DW2(3);
                }
                RED256(0, 0), RED256(0, 1), RED256(1, 0), RED256(1, 1), RED256(2, 0), RED256(2, 1), RED256(3, 0), RED256(3, 1);
            }
}

DW_TAIL(dw256_tail, "avx2,fma", __m256, 8, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_setzero_ps, hsum256)

/* ---- image lanes, AVX-512: 4 channels x 4 positions of 16 images ---- */

#define LF(i)                                                                                                         \
    b = _mm512_set1_ps(wt[i]);                                                                                        \
    a##i##0 = _mm512_fmadd_ps(b, x0, a##i##0), a##i##1 = _mm512_fmadd_ps(b, x1, a##i##1),                             \
    a##i##2 = _mm512_fmadd_ps(b, x2, a##i##2), a##i##3 = _mm512_fmadd_ps(b, x3, a##i##3)
#define LST(i)                                                                                                        \
    _mm512_storeu_ps(o + (size_t)(i) * ldo, a##i##0), _mm512_storeu_ps(o + (size_t)(i) * ldo + 16, a##i##1),          \
        _mm512_storeu_ps(o + (size_t)(i) * ldo + 32, a##i##2), _mm512_storeu_ps(o + (size_t)(i) * ldo + 48, a##i##3)

__attribute__((target("avx512f"))) static void lfwd512(float *out, size_t ldo, const float *in, size_t ldi, const float *wr,
                                                       int Cin, int Cout, int G, int Ho, int Wo, int Hp, int Wp, int s)
{
    long off[9];
    for (int t = 0; t < 9; t++) off[t] = ((long)(t / 3) * Wp + t % 3) * 16;
    const long st = 16L * s;
    for (int g = 0; g < G; g++)
        for (int h = 0; h < Ho; h++)
            for (int co = 0; co < Cout; co += 4)
                for (int w = 0; w < Wo; w += 4) {
                    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00,
                           a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00, b;
                    const float *xb = in + (((size_t)g * Hp + (size_t)s * h) * Wp + (size_t)s * w) * 16;
                    for (int ci = 0; ci < Cin; ci++) {
                        const float *x = xb + (size_t)ci * ldi, *wc = wr + (size_t)ci * 9 * Cout + co;
                        for (int t = 0; t < 9; t++) {
                            const float *xp = x + off[t], *wt = wc + (size_t)t * Cout;
                            __m512 x0 = _mm512_loadu_ps(xp), x1 = _mm512_loadu_ps(xp + st), x2 = _mm512_loadu_ps(xp + 2 * st),
                                   x3 = _mm512_loadu_ps(xp + 3 * st);
                            LF(0);
                            LF(1);
                            LF(2);
                            LF(3);
                        }
                    }
                    float *o = out + (size_t)co * ldo + (((size_t)g * Ho + h) * Wo + w) * 16;
                    LST(0), LST(1), LST(2), LST(3);
                }
}

/* The 16 sums of a00..a33 (lane 4i+j: the sum of the lanes of aij), by a
 * tree of unpacks and shuffles, added to dw[co+i][ci+j][t]. */
__attribute__((target("avx512f"))) static void red16(float *dw, int Ci, int co, int ci, int t, __m512 a00, __m512 a01,
                                                     __m512 a02, __m512 a03, __m512 a10, __m512 a11, __m512 a12, __m512 a13,
                                                     __m512 a20, __m512 a21, __m512 a22, __m512 a23, __m512 a30, __m512 a31,
                                                     __m512 a32, __m512 a33)
{
#define P1(x, y) _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y))
#define P2(x, y) _mm512_add_ps(_mm512_shuffle_ps(x, y, 0x44), _mm512_shuffle_ps(x, y, 0xEE))
#define P3(x, y) _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD))
    __m512 u0 = P2(P1(a00, a01), P1(a02, a03)), u1 = P2(P1(a10, a11), P1(a12, a13)), u2 = P2(P1(a20, a21), P1(a22, a23)),
           u3 = P2(P1(a30, a31), P1(a32, a33));
    float v[16];
    _mm512_storeu_ps(v, P3(P3(u0, u1), P3(u2, u3)));
#undef P1
#undef P2
#undef P3
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) dw[((size_t)(co + i) * Ci + ci + j) * 9 + t] += v[4 * i + j];
}

__attribute__((target("avx512f"))) static void ldw512(float *dw, const float *dy, size_t ldy, const float *x, size_t ldx,
                                                      int Co, int Ci, int G, int Ho, int Wo, int Hp, int Wp, int s, int pd)
{
    const size_t Hd = (size_t)Ho + 2 * pd, Wd = (size_t)Wo + 2 * pd;
    /* blocks of RB output rows (across groups) whose data fits in L2; in a
     * block, 4 input and 4 output channels stay in L1 over the 9 taps */
    const int rows = G * Ho;
    const size_t row_bytes = 64 * ((size_t)Ci * s * Wp + (size_t)Co * Wo);
    int RB = (int)((512 << 10) / row_bytes);
    RB = RB < 1 ? 1 : RB > rows ? rows : RB;
    for (int r0 = 0; r0 < rows; r0 += RB) {
        const int r1 = r0 + RB < rows ? r0 + RB : rows;
        for (int ci = 0; ci < Ci; ci += 4)
            for (int co = 0; co < Co; co += 4)
                for (int t = 0; t < 9; t++) {
                    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00,
                           c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
                    for (int r = r0; r < r1; r++) {
                        const int g = r / Ho, h = r % Ho;
                        const float *y = dy + (size_t)co * ldy + (((size_t)g * Hd + h + pd) * Wd + pd) * 16;
                        const float *xx = x + (size_t)ci * ldx + (((size_t)g * Hp + (size_t)s * h + t / 3) * Wp + t % 3) * 16;
                        for (int w = 0; w < Wo; w++) {
                            const float *yw = y + (size_t)w * 16, *xw = xx + (size_t)s * w * 16;
                            __m512 y0 = _mm512_loadu_ps(yw), y1 = _mm512_loadu_ps(yw + ldy), y2 = _mm512_loadu_ps(yw + 2 * ldy),
                                   y3 = _mm512_loadu_ps(yw + 3 * ldy);
                            __m512 x0 = _mm512_loadu_ps(xw), x1 = _mm512_loadu_ps(xw + ldx), x2 = _mm512_loadu_ps(xw + 2 * ldx),
                                   x3 = _mm512_loadu_ps(xw + 3 * ldx);
                            DW4(0);
                            DW4(1);
                            DW4(2);
                            DW4(3);
                        }
                    }
                    red16(dw, Ci, co, ci, t, c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33);
                }
    }
}

#define LSC(i)                                                                                                        \
    _mm512_storeu_ps(o + (size_t)(i) * ldx, _mm512_add_ps(_mm512_loadu_ps(o + (size_t)(i) * ldx), a##i##0)),          \
        _mm512_storeu_ps(o + (size_t)(i) * ldx + st, _mm512_add_ps(_mm512_loadu_ps(o + (size_t)(i) * ldx + st), a##i##1)), \
        _mm512_storeu_ps(o + (size_t)(i) * ldx + 2 * st,                                                              \
                         _mm512_add_ps(_mm512_loadu_ps(o + (size_t)(i) * ldx + 2 * st), a##i##2)),                    \
        _mm512_storeu_ps(o + (size_t)(i) * ldx + 3 * st, _mm512_add_ps(_mm512_loadu_ps(o + (size_t)(i) * ldx + 3 * st), a##i##3))

__attribute__((target("avx512f"))) static void ldx512(float *dx, size_t ldx, const float *dy, size_t ldy, const float *wb,
                                                      int Co, int Ci, int G, int Ho, int Wo, int Hp, int Wp, int s)
{
    const long st = 16L * s;
    for (int g = 0; g < G; g++)
        for (int h = 0; h < Ho; h++)
            for (int w = 0; w < Wo; w += 4)
                for (int ci = 0; ci < Ci; ci += 4)
                    for (int t = 0; t < 9; t++) {
                        __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00,
                               a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00, b;
                        const float *yb = dy + (((size_t)g * Ho + h) * Wo + w) * 16;
                        for (int co = 0; co < Co; co++) {
                            const float *yp = yb + (size_t)co * ldy, *wt = wb + ((size_t)co * 9 + t) * Ci + ci;
                            __m512 x0 = _mm512_loadu_ps(yp), x1 = _mm512_loadu_ps(yp + 16), x2 = _mm512_loadu_ps(yp + 32),
                                   x3 = _mm512_loadu_ps(yp + 48);
                            LF(0);
                            LF(1);
                            LF(2);
                            LF(3);
                        }
                        float *o = dx + (size_t)ci * ldx + (((size_t)g * Hp + (size_t)s * h + t / 3) * Wp + (size_t)s * w + t % 3) * 16;
                        LSC(0), LSC(1), LSC(2), LSC(3);
                    }
}

#endif /* CONV3_X86 */

static void offsets(long *off, int W)
{
    for (int t = 0; t < 9; t++) off[t] = (long)(t / 3) * (W + 2) + t % 3;
}

void conv3_forward(int simd, float *out, const float *in, const float *wr, int Cin, int Cout, size_t ld, int n, int H, int W)
{
    long off[9];
    offsets(off, W);
    const size_t Q = (size_t)n * (H + 2) * (W + 2);
#if CONV3_X86
    if (simd == 2) return fwd512(out, in, wr, Cin, Cout, ld, Q, off);
    if (simd == 1) return fwd256(out, in, wr, Cin, Cout, ld, Q, off);
#else
    (void)simd;
#endif
    for (int co = 0; co < Cout; co++) /* plain C, for completeness */
        for (size_t q = 0; q < Q; q++) {
            float s = 0;
            for (int ci = 0; ci < Cin; ci++)
                for (int t = 0; t < 9; t++) s += wr[((size_t)ci * 9 + t) * Cout + co] * in[(size_t)ci * ld + q + off[t]];
            out[(size_t)co * ld + q] = s;
        }
}

void conv3_dweight(int simd, float *dw, const float *dy, const float *x, int Co, int Ci, size_t ld, int n, int H, int W)
{
    long off[9];
    offsets(off, W);
    const size_t Q = (size_t)n * (H + 2) * (W + 2);
    dy += W + 3; /* grid position q of the output is padded position q + (W+2) + 1 */
#if CONV3_X86
    /* whole blocks of input channels, then the rest one by one */
    const int cb = Ci / 2 * 2;
    if (simd == 2) {
        if (cb) dw512(dw, dy, x, Co, Ci, cb, ld, Q, off);
        if (cb < Ci) dw512_tail(dw, dy, x, Co, Ci, cb, ld, Q, off);
        return;
    }
    if (simd == 1) {
        if (cb) dw256(dw, dy, x, Co, Ci, cb, ld, Q, off);
        if (cb < Ci) dw256_tail(dw, dy, x, Co, Ci, cb, ld, Q, off);
        return;
    }
#else
    (void)simd;
#endif
    for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++)
            for (int t = 0; t < 9; t++) {
                float s = 0;
                for (size_t q = 0; q < Q; q++) s += dy[(size_t)co * ld + q] * x[(size_t)ci * ld + q + off[t]];
                dw[((size_t)co * Ci + ci) * 9 + t] += s;
            }
}

/* The lanes kernels exist for AVX-512 only: nn.c uses them when
 * conv3_simd() == 2; the plain loops below keep other builds linking. */
void conv3l_forward(float *out, size_t ldo, const float *in, size_t ldi, const float *wr, int Cin, int Cout, int G, int Ho,
                    int Wo, int Hp, int Wp, int s)
{
#if CONV3_X86
    if (conv3_simd() == 2) return lfwd512(out, ldo, in, ldi, wr, Cin, Cout, G, Ho, Wo, Hp, Wp, s);
#endif
    for (int co = 0; co < Cout; co++)
        for (size_t p = 0; p < (size_t)G * Ho * Wo; p++)
            for (int l = 0; l < 16; l++) {
                const size_t g = p / ((size_t)Ho * Wo), h = p / Wo % Ho, w = p % Wo;
                float a = 0;
                for (int ci = 0; ci < Cin; ci++)
                    for (int t = 0; t < 9; t++)
                        a += wr[((size_t)ci * 9 + t) * Cout + co] *
                             in[(size_t)ci * ldi + ((g * Hp + s * h + t / 3) * Wp + s * w + t % 3) * 16 + l];
                out[(size_t)co * ldo + p * 16 + l] = a;
            }
}

void conv3l_dweight(float *dw, const float *dy, size_t ldy, const float *x, size_t ldx, int Co, int Ci, int G, int Ho, int Wo,
                    int Hp, int Wp, int s, int pd)
{
#if CONV3_X86
    if (conv3_simd() == 2) return ldw512(dw, dy, ldy, x, ldx, Co, Ci, G, Ho, Wo, Hp, Wp, s, pd);
#endif
    const size_t Hd = (size_t)Ho + 2 * pd, Wd = (size_t)Wo + 2 * pd;
    for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++)
            for (int t = 0; t < 9; t++) {
                float a = 0;
                for (size_t p = 0; p < (size_t)G * Ho * Wo; p++) {
                    const size_t g = p / ((size_t)Ho * Wo), h = p / Wo % Ho, w = p % Wo;
                    for (int l = 0; l < 16; l++)
                        a += dy[(size_t)co * ldy + ((g * Hd + h + pd) * Wd + w + pd) * 16 + l] *
                             x[(size_t)ci * ldx + ((g * Hp + s * h + t / 3) * Wp + s * w + t % 3) * 16 + l];
                }
                dw[((size_t)co * Ci + ci) * 9 + t] += a;
            }
}

void conv3l_dinput(float *dx, size_t ldx, const float *dy, size_t ldy, const float *wb, int Co, int Ci, int G, int Ho, int Wo,
                   int Hp, int Wp, int s)
{
#if CONV3_X86
    if (conv3_simd() == 2) return ldx512(dx, ldx, dy, ldy, wb, Co, Ci, G, Ho, Wo, Hp, Wp, s);
#endif
    for (int ci = 0; ci < Ci; ci++)
        for (size_t p = 0; p < (size_t)G * Ho * Wo; p++)
            for (int t = 0; t < 9; t++)
                for (int l = 0; l < 16; l++) {
                    const size_t g = p / ((size_t)Ho * Wo), h = p / Wo % Ho, w = p % Wo;
                    float a = 0;
                    for (int co = 0; co < Co; co++) a += wb[((size_t)co * 9 + t) * Ci + ci] * dy[(size_t)co * ldy + p * 16 + l];
                    dx[(size_t)ci * ldx + ((g * Hp + s * h + t / 3) * Wp + s * w + t % 3) * 16 + l] += a;
                }
}
