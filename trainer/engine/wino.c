/* wino.c: the Winograd F(2x2, 3x3) convolutions of wino.h. The transforms
 * run on 8 channels at a time in AVX2 registers over NHWC chunks; the
 * products over the channels are OpenBLAS GEMMs, one per each of the 16
 * transformed positions. Sums are in float, in an order fixed by the shape
 * and chunk (no dependence on the thread count). */
#include "trainer/engine/wino.h"

#include <cblas.h>
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "trainer/engine/conv3.h"
#include "trainer/engine/nhwc.h"
#include "trainer/engine/par.h"

#define AVX2 __attribute__((target("avx2,fma")))

int wino_ok(int Ci, int H, int W, int Co, int k, int stride, int pad)
{
    return k == 3 && stride == 1 && pad == 1 && H > 0 && W > 0 && H % 2 == 0 && W % 2 == 0 && Ci % 8 == 0 && Co % 8 == 0 &&
           conv3_simd() >= 1;
}

size_t wino_filter_floats(int Ci, int Co) { return (size_t)16 * Ci * Co; }

/* Floats between the 16 planes of a transformed chunk (T tiles of C
 * channels): one cache line more than a plane, so that the 16 streams of
 * a transform do not fall on the same L1 sets. */
static size_t plane(size_t T, int C) { return T * C + 16; }

size_t wino_chunk_floats(int n, int H, int W, int Ci, int Co)
{
    const size_t P = (size_t)n * H * W, Pp = (size_t)n * (H + 2) * (W + 2);
    return Pp * ((size_t)Ci + Co) + P * (size_t)Ci + 16 * (plane(P / 4, Ci) + plane(P / 4, Co));
}

/* G (4x3) = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1] */
static const float Gm[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};

typedef struct {
    float *U;
    const float *w;
    int Co, Ci, flip;
} filters_job;

/* the filters of output channels 8t..8t+7 */
static void filters_task(void *ctx, int t, int th)
{
    (void)th;
    const filters_job *j = ctx;
    const int Co = j->Co, Ci = j->Ci, flip = j->flip, in = flip ? Co : Ci, out = flip ? Ci : Co;
    float *U = j->U;
    for (int co = 8 * t; co < Co && co < 8 * t + 8; co++)
        for (int ci = 0; ci < Ci; ci++) {
            const float *g = j->w + ((size_t)co * Ci + ci) * 9;
            float f[3][3], tt[4][3];
            for (int r = 0; r < 3; r++)
                for (int s = 0; s < 3; s++) f[r][s] = flip ? g[(2 - r) * 3 + 2 - s] : g[r * 3 + s];
            for (int i = 0; i < 4; i++)
                for (int s = 0; s < 3; s++) tt[i][s] = Gm[i][0] * f[0][s] + Gm[i][1] * f[1][s] + Gm[i][2] * f[2][s];
            const size_t a = flip ? (size_t)co * out + ci : (size_t)ci * out + co;
            for (int i = 0; i < 4; i++)
                for (int k = 0; k < 4; k++)
                    U[(size_t)(4 * i + k) * in * out + a] = tt[i][0] * Gm[k][0] + tt[i][1] * Gm[k][1] + tt[i][2] * Gm[k][2];
        }
}

void wino_filters(float *U, const float *w, int Co, int Ci, int flip)
{
    filters_job j = {U, w, Co, Ci, flip};
    par_for((Co + 7) / 8, filters_task, &j);
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

/* V (16, T, C) = B'dB of every 4x4 tile of x (n, H+2, W+2, C) */
AVX2 static void input_tf(float *V, const float *x, int n, int H, int W, int C)
{
    const size_t T = (size_t)n * H * W / 4, sx = plane(T, C), rs = (size_t)(W + 2) * C;
    size_t t = 0;
    for (int img = 0; img < n; img++)
        for (int th = 0; th < H / 2; th++)
            for (int tw = 0; tw < W / 2; tw++, t++) {
                const float *p = x + (((size_t)img * (H + 2) + 2 * th) * (W + 2) + 2 * tw) * C;
                float *v = V + t * C;
                for (int c = 0; c < C; c += 8) {
                    __m256 b[4][4];
                    for (int s = 0; s < 4; s++) {
                        const float *q = p + (size_t)s * C + c;
                        const __m256 d0 = _mm256_loadu_ps(q), d1 = _mm256_loadu_ps(q + rs), d2 = _mm256_loadu_ps(q + 2 * rs),
                                     d3 = _mm256_loadu_ps(q + 3 * rs);
                        b[0][s] = _mm256_sub_ps(d0, d2), b[1][s] = _mm256_add_ps(d1, d2);
                        b[2][s] = _mm256_sub_ps(d2, d1), b[3][s] = _mm256_sub_ps(d1, d3);
                    }
                    for (int i = 0; i < 4; i++) {
                        float *o = v + (size_t)(4 * i) * sx + c;
                        _mm256_storeu_ps(o, _mm256_sub_ps(b[i][0], b[i][2]));
                        _mm256_storeu_ps(o + sx, _mm256_add_ps(b[i][1], b[i][2]));
                        _mm256_storeu_ps(o + 2 * sx, _mm256_sub_ps(b[i][2], b[i][1]));
                        _mm256_storeu_ps(o + 3 * sx, _mm256_sub_ps(b[i][1], b[i][3]));
                    }
                }
            }
}

/* y (n, H, W, C) = A'MA of every tile's M (16, T, C) */
AVX2 static void output_tf(float *y, const float *M, int n, int H, int W, int C)
{
    const size_t T = (size_t)n * H * W / 4, sm = plane(T, C);
    size_t t = 0;
    for (int img = 0; img < n; img++)
        for (int th = 0; th < H / 2; th++)
            for (int tw = 0; tw < W / 2; tw++, t++) {
                float *y0 = y + (((size_t)img * H + 2 * th) * W + 2 * tw) * C, *y1 = y0 + (size_t)W * C;
                const float *m = M + t * C;
                for (int c = 0; c < C; c += 8) {
                    __m256 r0[4], r1[4];
                    for (int j = 0; j < 4; j++) {
                        const __m256 m0 = _mm256_loadu_ps(m + (size_t)j * sm + c), m1 = _mm256_loadu_ps(m + (size_t)(4 + j) * sm + c),
                                     m2 = _mm256_loadu_ps(m + (size_t)(8 + j) * sm + c), m3 = _mm256_loadu_ps(m + (size_t)(12 + j) * sm + c);
                        r0[j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
                        r1[j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
                    }
                    _mm256_storeu_ps(y0 + c, _mm256_add_ps(_mm256_add_ps(r0[0], r0[1]), r0[2]));
                    _mm256_storeu_ps(y0 + C + c, _mm256_sub_ps(_mm256_sub_ps(r0[1], r0[2]), r0[3]));
                    _mm256_storeu_ps(y1 + c, _mm256_add_ps(_mm256_add_ps(r1[0], r1[1]), r1[2]));
                    _mm256_storeu_ps(y1 + C + c, _mm256_sub_ps(_mm256_sub_ps(r1[1], r1[2]), r1[3]));
                }
            }
}

/* dM (16, T, C) = A dY A' of every 2x2 tile of dy (n, H+2, W+2, C; the
 * border is not read): the adjoint of output_tf */
AVX2 static void output_adj(float *dM, const float *dy, int n, int H, int W, int C)
{
    const size_t T = (size_t)n * H * W / 4, sm = plane(T, C);
    size_t t = 0;
    for (int img = 0; img < n; img++)
        for (int th = 0; th < H / 2; th++)
            for (int tw = 0; tw < W / 2; tw++, t++) {
                const float *y0 = dy + (((size_t)img * (H + 2) + 2 * th + 1) * (W + 2) + 2 * tw + 1) * C, *y1 = y0 + (size_t)(W + 2) * C;
                float *m = dM + t * C;
                for (int c = 0; c < C; c += 8) {
                    const __m256 a = _mm256_loadu_ps(y0 + c), b = _mm256_loadu_ps(y0 + C + c), e = _mm256_loadu_ps(y1 + c),
                                 f = _mm256_loadu_ps(y1 + C + c), zero = _mm256_setzero_ps();
                    /* rows of A dY: (a b), (a+e b+f), (a-e b-f), (-e -f) */
                    const __m256 z[4][2] = {{a, b},
                                            {_mm256_add_ps(a, e), _mm256_add_ps(b, f)},
                                            {_mm256_sub_ps(a, e), _mm256_sub_ps(b, f)},
                                            {_mm256_sub_ps(zero, e), _mm256_sub_ps(zero, f)}};
                    for (int i = 0; i < 4; i++) {
                        float *o = m + (size_t)(4 * i) * sm + c;
                        _mm256_storeu_ps(o, z[i][0]);
                        _mm256_storeu_ps(o + sm, _mm256_add_ps(z[i][0], z[i][1]));
                        _mm256_storeu_ps(o + 2 * sm, _mm256_sub_ps(z[i][0], z[i][1]));
                        _mm256_storeu_ps(o + 3 * sm, _mm256_sub_ps(zero, z[i][1]));
                    }
                }
            }
}

/* M (16, T, out) = V (16, T, in) x U (16, in, out), position by position */
static void products(float *M, const float *V, const float *U, size_t T, int in, int out)
{
    for (int k = 0; k < 16; k++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, out, in, 1.0f, V + (size_t)k * plane(T, in), in,
                    U + (size_t)k * in * out, out, 0.0f, M + (size_t)k * plane(T, out), out);
}

/* the common part: transform x (n,H+2,W+2,in) with U to y (n,H,W,out) */
static void conv_chunk(float *y, const float *x, const float *U, int n, int H, int W, int in, int out, float *V, float *M)
{
    const size_t T = (size_t)n * H * W / 4;
    input_tf(V, x, n, H, W, in);
    products(M, V, U, T, in, out);
    output_tf(y, M, n, H, W, out);
}

void wino_forward(float *out, const void *inp, int half, const float *U, int N, int n0, int n, int H, int W, int Ci, int Co,
                  int add, float *work)
{
    const size_t HW = (size_t)H * W, P = (size_t)n * HW, T = P / 4, Pp = (size_t)n * (H + 2) * (W + 2);
    float *x = work, *V = x + Pp * Ci, *M = V + 16 * plane(T, Ci), *y = M + 16 * plane(T, Co);
    pack_padded(x, V, inp, half, Ci, (size_t)N * HW, n0, n, H, W);
    conv_chunk(y, x, U, n, H, W, Ci, Co, V, M);
    nhwc_unpack_avx2(out + (size_t)n0 * HW, y, Co, (size_t)N * HW, P, add);
}

void wino_backward(float *dinp, int set, float *dU, const float *dout, const void *inp, int half, const float *Uf, int N, int n0,
                   int n, int H, int W, int Ci, int Co, float *work)
{
    const size_t HW = (size_t)H * W, P = (size_t)n * HW, T = P / 4, ldc = (size_t)N * HW, Pp = (size_t)n * (H + 2) * (W + 2);
    float *x = work, *V = x + Pp * Ci, *dy = V + 16 * plane(T, Ci), *Vd = dy + Pp * Co, *dx = Vd + 16 * plane(T, Co);
    pack_padded(dy, Vd, dout, 0, Co, ldc, n0, n, H, W);
    if (dU) {
        pack_padded(x, V, inp, half, Ci, ldc, n0, n, H, W);
        input_tf(V, x, n, H, W, Ci);
        output_adj(Vd, dy, n, H, W, Co);
        /* dU (16, Ci, Co) += V' dM, position by position */
        for (int k = 0; k < 16; k++)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Ci, Co, (int)T, 1.0f, V + (size_t)k * plane(T, Ci), Ci,
                        Vd + (size_t)k * plane(T, Co), Co, 1.0f, dU + (size_t)k * Ci * Co, Co);
    }
    if (dinp) {
        conv_chunk(dx, dy, Uf, n, H, W, Co, Ci, Vd, V);
        nhwc_unpack_avx2(dinp + (size_t)n0 * HW, dx, Ci, ldc, P, !set);
    }
}

void wino_dweight(float *dw, const float *dU, int Co, int Ci)
{
    const size_t cc = (size_t)Ci * Co;
    for (int ci = 0; ci < Ci; ci++)
        for (int co = 0; co < Co; co++) {
            const size_t a = (size_t)ci * Co + co;
            float t[3][4];
            for (int k = 0; k < 3; k++)
                for (int j = 0; j < 4; j++)
                    t[k][j] = Gm[0][k] * dU[(size_t)j * cc + a] + Gm[1][k] * dU[(size_t)(4 + j) * cc + a] +
                              Gm[2][k] * dU[(size_t)(8 + j) * cc + a] + Gm[3][k] * dU[(size_t)(12 + j) * cc + a];
            float *g = dw + ((size_t)co * Ci + ci) * 9;
            for (int k = 0; k < 3; k++)
                for (int l = 0; l < 3; l++) g[k * 3 + l] += t[k][0] * Gm[0][l] + t[k][1] * Gm[1][l] + t[k][2] * Gm[2][l] + t[k][3] * Gm[3][l];
        }
}
