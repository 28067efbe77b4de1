/* wino.c: the Winograd F(2x2, 3x3) and F(4x4, 3x3) convolutions of
 * wino.h. The transforms run on 8 channels at a time in AVX2 registers
 * over NHWC chunks with a border of zeros; the products over the channels
 * are OpenBLAS GEMMs, one per transformed position (16 or 36). Sums are in
 * float, in an order fixed by the shape and chunk (not by the thread
 * count). The matrices are Lavin and Gray's (arXiv:1509.09308). On CPUs
 * other than x86-64 the same code runs on GCC's generic vectors (8 floats,
 * so two NEON registers on Arm), products and sums rounded one by one. */
#include "trainer/engine/wino.h"

#include <cblas.h>
#include <stdint.h>
#include <string.h>

#include "trainer/engine/conv3.h"
#include "trainer/engine/nhwc.h"
#include "trainer/engine/par.h"

#define INLINE __attribute__((always_inline)) static inline

/* 8 floats in a register: AVX2 + FMA on x86-64, generic vectors elsewhere */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define WINO_X86 1
#define AVX2 __attribute__((target("avx2,fma")))
typedef __m256 v8;
AVX2 INLINE v8 vload(const float *p) { return _mm256_loadu_ps(p); }
AVX2 INLINE void vstore(float *p, v8 x) { _mm256_storeu_ps(p, x); }
AVX2 INLINE v8 vset1(float f) { return _mm256_set1_ps(f); }
AVX2 INLINE v8 vzero(void) { return _mm256_setzero_ps(); }
AVX2 INLINE v8 vadd(v8 a, v8 b) { return _mm256_add_ps(a, b); }
AVX2 INLINE v8 vsub(v8 a, v8 b) { return _mm256_sub_ps(a, b); }
AVX2 INLINE v8 vfma(v8 a, v8 b, v8 c) { return _mm256_fmadd_ps(a, b, c); }   /* a b + c */
AVX2 INLINE v8 vfnma(v8 a, v8 b, v8 c) { return _mm256_fnmadd_ps(a, b, c); } /* c - a b */
#else
#define WINO_X86 0
#define AVX2
typedef float v8 __attribute__((vector_size(32)));
INLINE v8 vload(const float *p)
{
    v8 x;
    memcpy(&x, p, sizeof x);
    return x;
}
INLINE void vstore(float *p, v8 x) { memcpy(p, &x, sizeof x); }
INLINE v8 vset1(float f) { return (v8){f, f, f, f, f, f, f, f}; }
INLINE v8 vzero(void) { return vset1(0.0f); }
INLINE v8 vadd(v8 a, v8 b) { return a + b; }
INLINE v8 vsub(v8 a, v8 b) { return a - b; }
INLINE v8 vfma(v8 a, v8 b, v8 c) { return a * b + c; }
INLINE v8 vfnma(v8 a, v8 b, v8 c) { return c - a * b; }
#endif

int wino_cpu(void) { return !WINO_X86 || conv3_simd() >= 1; }

int wino_ok(int m, int Ci, int H, int W, int Co, int k, int stride, int pad)
{
    return (m == 2 || m == 4) && k == 3 && stride == 1 && pad == 1 && H > 0 && W > 0 && H % m == 0 && W % m == 0 &&
           Ci % 8 == 0 && Co % 8 == 0 && wino_cpu();
}

size_t wino_filter_floats(int m, int Ci, int Co) { return (size_t)(m + 2) * (m + 2) * Ci * Co; }

/* Floats between the transformed planes of a chunk (T tiles of C
 * channels): one cache line more than a plane, so that the streams of a
 * transform do not all fall on the same L1 sets. */
static size_t plane(size_t T, int C) { return T * C + 16; }

size_t wino_chunk_floats(int m, int n, int H, int W, int Ci, int Co)
{
    const size_t P = (size_t)n * H * W, Pp = (size_t)n * (H + 2) * (W + 2), T = P / ((size_t)m * m), np = (size_t)(m + 2) * (m + 2);
    return Pp * ((size_t)Ci + Co) + P * (size_t)Ci + np * (plane(T, Ci) + plane(T, Co));
}

/* G, (m+2) x 3, for m = 2 and 4 */
static const float G2[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
static const float G4[6][3] = {{0.25f, 0, 0},
                               {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                               {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                               {1.0f / 24, 1.0f / 12, 1.0f / 6},
                               {1.0f / 24, -1.0f / 12, 1.0f / 6},
                               {0, 0, 1}};

static float gm(int m, int i, int k) { return m == 2 ? G2[i][k] : G4[i][k]; }

typedef struct {
    float *U;
    const float *w;
    int m, Co, Ci, flip;
} filters_job;

/* the filters of output channels 8t..8t+7: U = G g G' */
static void filters_task(void *ctx, int t, int th)
{
    (void)th;
    const filters_job *j = ctx;
    const int m = j->m, a = m + 2, Co = j->Co, Ci = j->Ci, flip = j->flip, in = flip ? Co : Ci, out = flip ? Ci : Co;
    for (int co = 8 * t; co < Co && co < 8 * t + 8; co++)
        for (int ci = 0; ci < Ci; ci++) {
            const float *g = j->w + ((size_t)co * Ci + ci) * 9;
            float f[3][3], tt[6][3];
            for (int r = 0; r < 3; r++)
                for (int s = 0; s < 3; s++) f[r][s] = flip ? g[(2 - r) * 3 + 2 - s] : g[r * 3 + s];
            for (int i = 0; i < a; i++)
                for (int s = 0; s < 3; s++) tt[i][s] = gm(m, i, 0) * f[0][s] + gm(m, i, 1) * f[1][s] + gm(m, i, 2) * f[2][s];
            const size_t at = flip ? (size_t)co * out + ci : (size_t)ci * out + co;
            for (int i = 0; i < a; i++)
                for (int k = 0; k < a; k++)
                    j->U[(size_t)(a * i + k) * in * out + at] = tt[i][0] * gm(m, k, 0) + tt[i][1] * gm(m, k, 1) + tt[i][2] * gm(m, k, 2);
        }
}

void wino_filters(int m, float *U, const float *w, int Co, int Ci, int flip)
{
    filters_job j = {U, w, m, Co, Ci, flip};
    par_for((Co + 7) / 8, filters_task, &j);
}

void wino_dweight(int m, float *dw, const float *dU, int Co, int Ci)
{
    const int a = m + 2;
    const size_t cc = (size_t)Ci * Co;
    for (int ci = 0; ci < Ci; ci++)
        for (int co = 0; co < Co; co++) {
            const size_t at = (size_t)ci * Co + co;
            float t[3][6];
            for (int k = 0; k < 3; k++)
                for (int jj = 0; jj < a; jj++) {
                    float s = 0;
                    for (int i = 0; i < a; i++) s += gm(m, i, k) * dU[(size_t)(a * i + jj) * cc + at];
                    t[k][jj] = s;
                }
            float *g = dw + ((size_t)co * Ci + ci) * 9;
            for (int k = 0; k < 3; k++)
                for (int l = 0; l < 3; l++) {
                    float s = 0;
                    for (int jj = 0; jj < a; jj++) s += t[k][jj] * gm(m, jj, l);
                    g[k * 3 + l] += s;
                }
        }
}

/* x (n, H+2, W+2, C): images n0..n0+n of src (C, ldc) in NHWC with a
 * border of zeros (bf16 when half), through tmp (n*H*W*C floats) */
static void pack_padded(float *x, float *tmp, const void *src, int half, int C, size_t ldc, int n0, int n, int H, int W)
{
    const size_t HW = (size_t)H * W, row = (size_t)(W + 2) * C, at = (size_t)n0 * HW;
    nhwc_pack_f32_avx2(tmp, half ? (const void *)((const uint16_t *)src + at) : (const void *)((const float *)src + at), half, C, ldc,
                       (size_t)n * HW, (size_t)n * HW);
    for (int img = 0; img < n; img++) {
        float *xi = x + (size_t)img * (H + 2) * row;
        memset(xi, 0, sizeof(float) * (row + C));
        for (int h = 0; h < H; h++) {
            float *r = xi + (size_t)(h + 1) * row + C;
            memcpy(r, tmp + ((size_t)img * HW + (size_t)h * W) * C, sizeof(float) * W * C);
            memset(r + (size_t)W * C, 0, sizeof(float) * 2 * C); /* this row's right, the next row's left */
        }
        memset(xi + (size_t)(H + 1) * row + C, 0, sizeof(float) * (row - C));
    }
}

/* ---- the 1-D transforms, on vectors of 8 channels ---- */

/* B'd: 4 -> 4 (m 2), 6 -> 6 (m 4) */
AVX2 INLINE void in1d(int m, const v8 *d, v8 *t)
{
    if (m == 2) {
        t[0] = vsub(d[0], d[2]), t[1] = vadd(d[1], d[2]);
        t[2] = vsub(d[2], d[1]), t[3] = vsub(d[1], d[3]);
        return;
    }
    const v8 four = vset1(4), five = vset1(5), two = vset1(2);
    const v8 p = vsub(d[4], d[2]), q = vsub(d[3], d[1]); /* d4 - d2, d3 - d1 */
    t[0] = vfma(four, d[0], vfnma(five, d[2], d[4]));
    t[1] = vfnma(four, vadd(d[1], d[2]), vadd(d[3], d[4]));
    t[2] = vfma(four, vsub(d[1], d[2]), vsub(d[4], d[3]));
    t[3] = vfma(two, q, p);
    t[4] = vfnma(two, q, p);
    t[5] = vfma(four, d[1], vfnma(five, d[3], d[5]));
}

/* A'M: 4 -> 2, 6 -> 4 */
AVX2 INLINE void out1d(int m, const v8 *x, v8 *y)
{
    if (m == 2) {
        y[0] = vadd(vadd(x[0], x[1]), x[2]);
        y[1] = vsub(vsub(x[1], x[2]), x[3]);
        return;
    }
    const v8 a = vadd(x[1], x[2]), b = vsub(x[1], x[2]), c = vadd(x[3], x[4]),
                 d = vsub(x[3], x[4]);
    y[0] = vadd(vadd(x[0], a), c);
    y[1] = vfma(vset1(2), d, b);
    y[2] = vfma(vset1(4), c, a);
    y[3] = vadd(vfma(vset1(8), d, b), x[5]);
}

/* A y, the adjoint of out1d: 2 -> 4, 4 -> 6 */
AVX2 INLINE void adj1d(int m, const v8 *y, v8 *z)
{
    const v8 zero = vzero();
    if (m == 2) {
        z[0] = y[0], z[1] = vadd(y[0], y[1]), z[2] = vsub(y[0], y[1]), z[3] = vsub(zero, y[1]);
        return;
    }
    const v8 e = vadd(y[0], y[2]), o = vadd(y[1], y[3]), e4 = vfma(vset1(4), y[2], y[0]),
                 o8 = vfma(vset1(8), y[3], vadd(y[1], y[1]));
    z[0] = y[0], z[1] = vadd(e, o), z[2] = vsub(e, o);
    z[3] = vadd(e4, o8), z[4] = vsub(e4, o8), z[5] = y[3];
}

/* ---- the 2-D transforms of a chunk ---- */

/* The a*a planes of T x C (a = m + 2) of every tile of x (n, H+2, W+2,
 * C): B'dB of its (m+2)^2 inputs, or (adj) A dY A' of its m x m output
 * gradient (the border not read: the adjoint of output_tf). */
AVX2 INLINE void to_planes(int m, int adj, float *V, const float *x, int n, int H, int W, int C)
{
    const int a = m + 2, sd = adj ? m : a, off = adj;
    const size_t T = (size_t)n * H * W / (m * m), sx = plane(T, C), rs = (size_t)(W + 2) * C;
    size_t t = 0;
    for (int img = 0; img < n; img++)
        for (int th = 0; th < H / m; th++)
            for (int tw = 0; tw < W / m; tw++, t++) {
                const float *p = x + (((size_t)img * (H + 2) + m * th + off) * (W + 2) + m * tw + off) * C;
                float *v = V + t * C;
                for (int c = 0; c < C; c += 8) {
                    v8 b[6][6], d[6], o[6];
                    for (int s = 0; s < sd; s++) { /* down the columns */
                        for (int r = 0; r < sd; r++) d[r] = vload(p + (size_t)r * rs + (size_t)s * C + c);
                        adj ? adj1d(m, d, o) : in1d(m, d, o);
                        for (int q = 0; q < a; q++) b[q][s] = o[q];
                    }
                    for (int q = 0; q < a; q++) { /* along the rows */
                        adj ? adj1d(m, b[q], o) : in1d(m, b[q], o);
                        for (int k = 0; k < a; k++) vstore(v + (size_t)(a * q + k) * sx + c, o[k]);
                    }
                }
            }
}

/* y (n, H, W, C) = A'MA of every tile's M (a*a planes of T x C) */
AVX2 INLINE void output_tf(int m, float *y, const float *M, int n, int H, int W, int C)
{
    const int a = m + 2;
    const size_t T = (size_t)n * H * W / (m * m), sm = plane(T, C);
    size_t t = 0;
    for (int img = 0; img < n; img++)
        for (int th = 0; th < H / m; th++)
            for (int tw = 0; tw < W / m; tw++, t++) {
                float *yo = y + (((size_t)img * H + m * th) * W + m * tw) * C;
                const float *mp = M + t * C;
                for (int c = 0; c < C; c += 8) {
                    v8 r[4][6], x[6], o[4];
                    for (int j = 0; j < a; j++) { /* A'M, column by column */
                        for (int i = 0; i < a; i++) x[i] = vload(mp + (size_t)(a * i + j) * sm + c);
                        out1d(m, x, o);
                        for (int q = 0; q < m; q++) r[q][j] = o[q];
                    }
                    for (int q = 0; q < m; q++) { /* (A'M)A, row by row */
                        out1d(m, r[q], o);
                        for (int s = 0; s < m; s++) vstore(yo + ((size_t)q * W + s) * C + c, o[s]);
                    }
                }
            }
}

/* the transforms for m = 2 and 4, each compiled with its m constant */
AVX2 static void input_tf2(float *V, const float *x, int n, int H, int W, int C) { to_planes(2, 0, V, x, n, H, W, C); }
AVX2 static void input_tf4(float *V, const float *x, int n, int H, int W, int C) { to_planes(4, 0, V, x, n, H, W, C); }
AVX2 static void output_tf2(float *y, const float *M, int n, int H, int W, int C) { output_tf(2, y, M, n, H, W, C); }
AVX2 static void output_tf4(float *y, const float *M, int n, int H, int W, int C) { output_tf(4, y, M, n, H, W, C); }
AVX2 static void output_adj2(float *dM, const float *dy, int n, int H, int W, int C) { to_planes(2, 1, dM, dy, n, H, W, C); }
AVX2 static void output_adj4(float *dM, const float *dy, int n, int H, int W, int C) { to_planes(4, 1, dM, dy, n, H, W, C); }

/* y (n,H,W,out) = the convolution of x (n,H+2,W+2,in) with U */
static void conv_chunk(int m, float *y, const float *x, const float *U, int n, int H, int W, int in, int out, float *V, float *M)
{
    const int np = (m + 2) * (m + 2);
    const size_t T = (size_t)n * H * W / (m * m);
    (m == 2 ? input_tf2 : input_tf4)(V, x, n, H, W, in);
    for (int k = 0; k < np; k++) /* M = V U, position by position */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, out, in, 1.0f, V + (size_t)k * plane(T, in), in,
                    U + (size_t)k * in * out, out, 0.0f, M + (size_t)k * plane(T, out), out);
    (m == 2 ? output_tf2 : output_tf4)(y, M, n, H, W, out);
}

void wino_forward(int m, float *out, const float *inp, const float *U, int N, int n0, int n, int H, int W, int Ci, int Co, float *work)
{
    const int np = (m + 2) * (m + 2);
    const size_t HW = (size_t)H * W, P = (size_t)n * HW, T = P / (m * m), Pp = (size_t)n * (H + 2) * (W + 2);
    float *x = work, *V = x + Pp * Ci, *M = V + np * plane(T, Ci), *y = M + np * plane(T, Co);
    pack_padded(x, V, inp, 0, Ci, (size_t)N * HW, n0, n, H, W);
    conv_chunk(m, y, x, U, n, H, W, Ci, Co, V, M);
    nhwc_unpack_avx2(out + (size_t)n0 * HW, y, Co, (size_t)N * HW, P, 0);
}

void wino_backward(int m, float *dinp, float *dU, const float *dout, const void *inp, int half, const float *Uf, int N,
                   int n0, int n, int H, int W, int Ci, int Co, float *work)
{
    const int np = (m + 2) * (m + 2);
    const size_t HW = (size_t)H * W, P = (size_t)n * HW, T = P / (m * m), ldc = (size_t)N * HW, Pp = (size_t)n * (H + 2) * (W + 2);
    float *x = work, *V = x + Pp * Ci, *dy = V + np * plane(T, Ci), *Vd = dy + Pp * Co, *dx = Vd + np * plane(T, Co);
    pack_padded(dy, Vd, dout, 0, Co, ldc, n0, n, H, W);
    if (dU) {
        pack_padded(x, V, inp, half, Ci, ldc, n0, n, H, W);
        (m == 2 ? input_tf2 : input_tf4)(V, x, n, H, W, Ci);
        (m == 2 ? output_adj2 : output_adj4)(Vd, dy, n, H, W, Co);
        for (int k = 0; k < np; k++) /* dU += V' dM, position by position */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Ci, Co, (int)T, 1.0f, V + (size_t)k * plane(T, Ci), Ci,
                        Vd + (size_t)k * plane(T, Co), Co, 1.0f, dU + (size_t)k * Ci * Co, Co);
    }
    if (dinp) {
        conv_chunk(m, dx, dy, Uf, n, H, W, Co, Ci, Vd, V);
        nhwc_unpack_avx2(dinp + (size_t)n0 * HW, dx, Ci, ldc, P, 1);
    }
}
