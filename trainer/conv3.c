/* conv3.c: the direct 3x3 kernels of conv3.h. The forward kernel keeps a
 * block of 8 output channels x 48 grid positions (AVX-512; 4 x 24 with
 * AVX2) in registers and runs over the input channels and the 9 taps:
 * per tap 3 unaligned loads, 8 broadcasts, 24 FMAs. The weight-gradient
 * kernel keeps 4 x 4 (AVX2: 4 x 2) channel pairs of one tap in registers
 * and runs over the grid. Sums are in float, in a fixed order (no
 * dependence on the thread count). Built for the CPU at hand with GCC's
 * target attributes; on other compilers or CPUs conv3_simd() is 0 and nn.c
 * lowers onto GEMM as before. */
#include "trainer/conv3.h"

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
    if (e && *e >= '0' && *e <= '2' && *e - '0' < l) l = *e - '0';
    return l;
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

void conv3_pad(float *dst, size_t ld, const float *src, int C, int N, int n0, int n, int H, int W)
{
    const size_t W2 = (size_t)W + 2, P = (size_t)(H + 2) * W2;
    for (int c = 0; c < C; c++) {
        float *d = dst + (size_t)c * ld;
        for (int j = 0; j < n; j++) {
            const float *s = src + ((size_t)c * N + n0 + j) * H * W;
            float *p = d + (size_t)j * P;
            memset(p, 0, sizeof(float) * (W2 + 1));
            for (int h = 0; h < H; h++) {
                float *r = p + (h + 1) * W2 + 1;
                memcpy(r, s + (size_t)h * W, sizeof(float) * (size_t)W);
                r[W] = 0.0f, r[W + 1] = 0.0f; /* right border, next row's left border */
            }
            memset(p + (H + 1) * W2 + 1, 0, sizeof(float) * (W2 - 1));
        }
        memset(d + (size_t)n * P, 0, sizeof(float) * (ld - (size_t)n * P));
    }
}

void conv3_unpad(float *dst, const float *src, size_t ld, int C, int N, int n0, int n, int H, int W, int add)
{
    const size_t W2 = (size_t)W + 2, P = (size_t)(H + 2) * W2;
    for (int c = 0; c < C; c++)
        for (int j = 0; j < n; j++) {
            const float *s = src + (size_t)c * ld + (size_t)j * P;
            float *d = dst + ((size_t)c * N + n0 + j) * H * W;
            for (int h = 0; h < H; h++) {
                const float *restrict sr = s + (size_t)h * W2;
                float *restrict dr = d + (size_t)h * W;
                if (add)
                    for (int w = 0; w < W; w++) dr[w] += sr[w];
                else
                    memcpy(dr, sr, sizeof(float) * (size_t)W);
            }
        }
}

void conv3_weights_fwd(float *wr, const float *w, int Co, int Ci)
{
    for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++)
            for (int t = 0; t < 9; t++) wr[((size_t)ci * 9 + t) * Co + co] = w[((size_t)co * Ci + ci) * 9 + t];
}

void conv3_weights_bwd(float *wr, const float *w, int Co, int Ci)
{
    for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++)
            for (int t = 0; t < 9; t++) wr[((size_t)co * 9 + t) * Ci + ci] = w[((size_t)co * Ci + ci) * 9 + (8 - t)];
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
#define RED512(i, j) dw[((size_t)(co + i) * Ci + ci + j) * 9 + t] += _mm512_reduce_add_ps(c##i##j)

__attribute__((target("avx512f"))) static void dw512(float *dw, const float *dy, const float *x, int Co, int Ci, size_t ld,
                                                     size_t Q, const long *off)
{
    for (int t = 0; t < 9; t++)
        for (int co = 0; co < Co; co += 4)
            for (int ci = 0; ci < Ci; ci += 4) {
                __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00,
                       c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
                const float *y = dy + (size_t)co * ld, *xx = x + (size_t)ci * ld + off[t];
                for (size_t q = 0; q < Q; q += 16) {
                    __m512 y0 = _mm512_loadu_ps(y + q), y1 = _mm512_loadu_ps(y + ld + q), y2 = _mm512_loadu_ps(y + 2 * ld + q),
                           y3 = _mm512_loadu_ps(y + 3 * ld + q);
                    __m512 x0 = _mm512_loadu_ps(xx + q), x1 = _mm512_loadu_ps(xx + ld + q), x2 = _mm512_loadu_ps(xx + 2 * ld + q),
                           x3 = _mm512_loadu_ps(xx + 3 * ld + q);
                    DW4(0);
                    DW4(1);
                    DW4(2);
                    DW4(3);
                }
                RED512(0, 0), RED512(0, 1), RED512(0, 2), RED512(0, 3), RED512(1, 0), RED512(1, 1), RED512(1, 2), RED512(1, 3);
                RED512(2, 0), RED512(2, 1), RED512(2, 2), RED512(2, 3), RED512(3, 0), RED512(3, 1), RED512(3, 2), RED512(3, 3);
            }
}

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

__attribute__((target("avx2,fma"))) static void dw256(float *dw, const float *dy, const float *x, int Co, int Ci, size_t ld,
                                                      size_t Q, const long *off)
{
    for (int t = 0; t < 9; t++)
        for (int co = 0; co < Co; co += 4)
            for (int ci = 0; ci < Ci; ci += 2) {
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
    if (simd == 2) return dw512(dw, dy, x, Co, Ci, ld, Q, off);
    if (simd == 1) return dw256(dw, dy, x, Co, Ci, ld, Q, off);
#endif
    for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++)
            for (int t = 0; t < 9; t++) {
                float s = 0;
                for (size_t q = 0; q < Q; q++) s += dy[(size_t)co * ld + q] * x[(size_t)ci * ld + q + off[t]];
                dw[((size_t)co * Ci + ci) * 9 + t] += s;
            }
}
