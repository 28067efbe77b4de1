/* nn.c: the fast layer kernels of nn.h (convolution lowered onto
 * cblas_sgemm over chunks of images, fused BN/residual/ReLU passes) and
 * the small layers. The plain references live in nn_ref.c. */
#include "trainer/engine/nn.h"

#include "formats/errors.h"
#include "trainer/engine/conv3.h"
#include "trainer/engine/par.h"
#include "trainer/engine/wino.h"

#include <cblas.h>
#include <math.h>
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_THREAD__) /* its ifunc resolvers run before TSan starts */
#include <immintrin.h>
#define NN_AVX512 1 /* AVX-512 paths picked at run time */
#endif
#include <stdlib.h>
#include <string.h>

/* Hot element-wise loops: restrict pointers, GCC's dynamic vectoriser cost
 * model (-O2 only vectorises loops of known trip count), and an AVX2 clone
 * picked at load time (no FMA, so results do not depend on it). On other
 * CPUs (Arm: NEON is in every aarch64 CPU) the vectoriser alone. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_THREAD__) /* its ifunc resolvers run before TSan starts */
#define NN_HOT __attribute__((optimize("vect-cost-model=dynamic"), target_clones("avx2", "default")))
#elif defined(__GNUC__) && !defined(__clang__) && !defined(__x86_64__)
#define NN_HOT __attribute__((optimize("vect-cost-model=dynamic")))
#else
#define NN_HOT
#endif

NN_HOT static void vec_affine(float *restrict y, const float *restrict x, int n, float a, float b)
{
    for (int i = 0; i < n; i++) y[i] = x[i] * a + b;
}

NN_HOT static void vec_affine_relu(float *restrict y, const float *restrict x, int n, float a, float b)
{
    for (int i = 0; i < n; i++) {
        float v = x[i] * a + b;
        y[i] = v <= 0.0f ? 0.0f : v; /* NaN passes, as torch.relu */
    }
}

NN_HOT static void vec_affine_add(float *restrict y, const float *restrict x, const float *restrict r, int n, float a, float b)
{
    for (int i = 0; i < n; i++) y[i] = x[i] * a + b + r[i];
}

NN_HOT static void vec_affine_add_relu(float *restrict y, const float *restrict x, const float *restrict r, int n, float a, float b)
{
    for (int i = 0; i < n; i++) {
        float v = x[i] * a + b + r[i];
        y[i] = v <= 0.0f ? 0.0f : v;
    }
}

/* dx += A*dy + B*x + C */
NN_HOT static void vec_bn_dx(float *restrict dx, const float *restrict dy, const float *restrict x, size_t n, float A, float B, float C)
{
    for (size_t i = 0; i < n; i++) dx[i] += A * dy[i] + B * x[i] + C;
}

/* dx = A*dy + B*x + C */
NN_HOT static void vec_bn_dx_set(float *restrict dx, const float *restrict dy, const float *restrict x, size_t n, float A, float B,
                                 float C)
{
    for (size_t i = 0; i < n; i++) dx[i] = A * dy[i] + B * x[i] + C;
}

/* d = y > 0 ? d : 0 */
NN_HOT static void vec_relu_mask(float *restrict d, const float *restrict y, size_t n)
{
    for (size_t i = 0; i < n; i++) d[i] = y[i] > 0.0f ? d[i] : 0.0f;
}

NN_HOT static void vec_add(float *restrict y, const float *restrict x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void nn_nchw_to_cnhw(float *out, const float *inp, int N, int C, int HW)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            memcpy(out + ((size_t)c * N + n) * HW, inp + ((size_t)n * C + c) * HW, sizeof(float) * (size_t)HW);
}

void nn_cnhw_to_nchw(float *out, const float *inp, int N, int C, int HW)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            memcpy(out + ((size_t)n * C + c) * HW, inp + ((size_t)c * N + n) * HW, sizeof(float) * (size_t)HW);
}

/* ------------------------------------------------------- bf16 storage */

#ifdef NN_AVX512
/* 16 lanes at a time, the same integer rule as below (so the same bits on
 * every CPU): about 1.7x the AVX2 clone's rate on runs in cache. */
__attribute__((target("avx512f,avx512bw"))) static size_t to_bf16_512(uint16_t *restrict dst, const float *restrict src, size_t n, float m)
{
    const __m512 mv = _mm512_set1_ps(m);
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7FFF), mag = _mm512_set1_epi32(0x7FFFFFFF),
                  inf = _mm512_set1_epi32(0x7F800000), quiet = _mm512_set1_epi32(0x40);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i u = _mm512_castps_si512(_mm512_sub_ps(_mm512_loadu_ps(src + i), mv)), hi = _mm512_srli_epi32(u, 16);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, bias), _mm512_and_si512(hi, one)), 16);
        r = _mm512_mask_or_epi32(r, _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, mag), inf), hi, quiet);
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(r));
    }
    return i;
}

__attribute__((target("avx512f,avx512bw"))) static size_t from_bf16_512(float *restrict dst, const uint16_t *restrict src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_si512(dst + i, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i))), 16));
    return i;
}
#endif

/* src - m, rounded to nearest even, as vcvtneps2bf16 (NaN stays a quiet
 * NaN); m = 0 leaves every value as it is (-0 too). */
NN_HOT static void to_bf16_tail(uint16_t *restrict dst, const float *restrict src, size_t n, float m)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        const float v = src[i] - m;
        memcpy(&u, &v, 4);
        uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
        dst[i] = (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? (u >> 16) | 0x40u : r);
    }
}

NN_HOT static void from_bf16_tail(float *restrict dst, const uint16_t *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, 4);
    }
}

static void to_bf16_sub(uint16_t *restrict dst, const float *restrict src, size_t n, float m)
{
    size_t i = 0;
#ifdef NN_AVX512
    if (__builtin_cpu_supports("avx512bw")) i = to_bf16_512(dst, src, n, m);
#endif
    to_bf16_tail(dst + i, src + i, n - i, m);
}

void nn_to_bf16(uint16_t *restrict dst, const float *restrict src, size_t n) { to_bf16_sub(dst, src, n, 0.0f); }

void nn_from_bf16(float *restrict dst, const uint16_t *restrict src, size_t n)
{
    size_t i = 0;
#ifdef NN_AVX512
    if (__builtin_cpu_supports("avx512bw")) i = from_bf16_512(dst, src, n);
#endif
    from_bf16_tail(dst + i, src + i, n - i);
}

/* ------------------------------------------------------------------ conv */

static int conv_direct(const nn_conv *d) { return d->k == 1 && d->stride == 1 && d->pad == 0; }

/* Channel strides of the lanes layout: padded input, output, padded output. */
static void conv_lanes_lds(const nn_conv *d, size_t *ldx, size_t *ldy, size_t *ldyp)
{
    *ldx = conv3l_ld(d->chunk, d->H + 2, d->W + 2);
    *ldy = conv3l_ld(d->chunk, d->Ho, d->Wo);
    *ldyp = conv3l_ld(d->chunk, d->Ho + 2, d->Wo + 2);
}

/* The image-lanes kernels: stride 2, and stride 1 on small planes (AVX-512) */
static int lanes_ok(int Ci, int H, int W, int Co, int k, int stride, int pad)
{
    const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    return conv3_simd() == 2 && k == 3 && pad == 1 && (stride == 2 || (stride == 1 && H * W <= 64)) && Ho > 0 &&
           Wo % 4 == 0 && Ci % 4 == 0 && Co % 4 == 0;
}

/* The direct 3x3 kernels at SIMD level `level` where the padded grid
 * wastes at most half (not 4x4): that level, else 0. Ci < vec: the stem
 * (dinp in plain loops). */
static int direct_ok(int level, int Ci, int H, int W, int Co, int k, int stride, int pad)
{
    int simd = k == 3 && stride == 1 && pad == 1 && H > 0 && W > 0 && (H + 2) * (W + 2) <= 2 * H * W ? level : 0;
    const int vec = simd == 2 ? 8 : 4;
    return simd && (Ci % vec == 0 || Ci < vec) && Co % vec == 0 ? simd : 0;
}

int nn_conv_algo_ok(int algo, int Ci, int H, int W, int Co, int k, int stride, int pad)
{
    switch (algo) {
    case NN_ALGO_AUTO: case NN_ALGO_GEMM: return 1;
    case NN_ALGO_DIRECT: return direct_ok(conv3_simd(), Ci, H, W, Co, k, stride, pad) != 0;
    case NN_ALGO_DIRECT_AVX2: return conv3_simd() == 2 && direct_ok(1, Ci, H, W, Co, k, stride, pad) != 0;
    case NN_ALGO_LANES: return lanes_ok(Ci, H, W, Co, k, stride, pad);
    case NN_ALGO_BF16: return nn_bf16_available() == 0;
    case NN_ALGO_ONEDNN: return k > 1 && nn_onednn_available() == 0;
    case NN_ALGO_WINO:
        return k == 3 && stride == 1 && pad == 1 && Ci % 16 == 0 && Co % 16 == 0 && nn_onednn_wino_available() == 0;
    case NN_ALGO_OWN_WINO: return wino_ok(2, Ci, H, W, Co, k, stride, pad);
    case NN_ALGO_OWN_WINO4: return wino_ok(4, Ci, H, W, Co, k, stride, pad);
    }
    return 0;
}

int nn_conv_rule(int Ci, int H, int W, int Co, int k, int stride, int pad)
{
    return lanes_ok(Ci, H, W, Co, k, stride, pad)                       ? NN_ALGO_LANES
           : direct_ok(conv3_simd(), Ci, H, W, Co, k, stride, pad) ? NN_ALGO_DIRECT
                                                                    : NN_ALGO_GEMM;
}

const char *nn_algo_name(int algo)
{
    static const char *const names[NN_ALGO_COUNT] = {"auto", "gemm", "direct", "direct-avx2", "lanes", "bf16", "onednn", "onednn-wino", "wino", "wino4"};
    return algo >= 0 && algo < NN_ALGO_COUNT ? names[algo] : "?";
}

static size_t init_algo(nn_conv *d, int N, int Ci, int H, int W, int Co, int k, int stride, int pad, int algo, size_t work_floats)
{
    int T = par_threads();
    *d = (nn_conv){N, Ci, H, W, Co, k, stride, pad, (H + 2 * pad - k) / stride + 1, (W + 2 * pad - k) / stride + 1, 1, T, 0, 0, 0, 0, NULL, 0, 0, 0};
    size_t per = (size_t)Ci * k * k * (size_t)(d->Ho > 0 ? d->Ho : 0) * (size_t)(d->Wo > 0 ? d->Wo : 0);
    int most = (N + T - 1) / T; /* at least one chunk per thread */
    if (algo == NN_ALGO_AUTO) algo = nn_conv_rule(Ci, H, W, Co, k, stride, pad);
    if (algo == NN_ALGO_LANES) {
        size_t grp = 16 * ((size_t)2 * Ci * (H + 2) * (W + 2) + (size_t)Co * ((size_t)d->Ho * d->Wo + (size_t)(d->Ho + 2) * (d->Wo + 2)));
        size_t c = work_floats / 4 / grp, most16 = ((size_t)most + 15) / 16;
        c = c < 1 ? 1 : c > most16 ? most16 : c;
        d->chunk = (int)(16 * c);
        d->lanes = 1;
        size_t ldx, ldy, ldyp;
        conv_lanes_lds(d, &ldx, &ldy, &ldyp);
        d->work_per = 2 * (size_t)Ci * ldx + (size_t)Co * (ldy + ldyp) + (size_t)Co * Ci * 9;
        return d->work_per * (size_t)T + (size_t)Co * Ci * 9;
    }
    if (algo == NN_ALGO_OWN_WINO || algo == NN_ALGO_OWN_WINO4) {
        /* chunks of about 32 K (m 2) or 64 K (m 4) input floats (measured
         * fastest on the resnet18-cifar shapes), within the budget */
        const int m = algo == NN_ALGO_OWN_WINO ? 2 : 4;
        size_t c = (size_t)(m == 2 ? 32768 : 65536) / ((size_t)H * W * (Ci > Co ? Ci : Co)),
               fit = work_floats / wino_chunk_floats(m, 1, H, W, Ci, Co);
        c = c < fit ? c : fit;
        d->chunk = c < 1 ? 1 : c > (size_t)most ? most : (int)c;
        d->wino = m;
        d->work_per = wino_chunk_floats(m, d->chunk, H, W, Ci, Co) + wino_filter_floats(m, Ci, Co); /* and a private dU */
        return d->work_per * (size_t)T + wino_filter_floats(m, Ci, Co);
    }
    if (algo == NN_ALGO_DIRECT || algo == NN_ALGO_DIRECT_AVX2) {
        /* per image: padded input, output gradient and input gradient, in
         * a quarter of the im2col budget (1 MB by default: L2-sized) */
        size_t img = (size_t)(2 * Ci + Co) * (H + 2) * (W + 2), c = work_floats / 4 / img;
        d->chunk = c < 1 ? 1 : c > (size_t)most ? most : (int)c;
        d->direct = direct_ok(algo == NN_ALGO_DIRECT ? conv3_simd() : 1, Ci, H, W, Co, k, stride, pad);
        d->ld = conv3_ld(d->chunk, H, W);
        d->work_per = (size_t)(2 * Ci + Co) * d->ld + (size_t)Co * Ci * 9;
        return d->work_per * (size_t)T + (size_t)Co * Ci * 9;
    }
    if (conv_direct(d)) {
        int c = (N + 2 * T - 1) / (2 * T);
        d->chunk = c < 1 ? 1 : c;
        per = 0;
    } else {
        size_t c = per ? work_floats / per : 1;
        d->chunk = c < 1 ? 1 : c > (size_t)most ? most : (int)c;
    }
    /* per thread: the lowered chunk (1x1 stride 1: one image's input in
     * fp32, for an input kept in bf16: in_half), and (threads > 0) a
     * private dW */
    d->work_per = (per ? per * (size_t)d->chunk : (size_t)Ci * H * W) + (size_t)Co * Ci * k * k;
    return d->work_per * (size_t)T;
}

size_t nn_conv_init(nn_conv *d, int N, int Ci, int H, int W, int Co, int k, int stride, int pad, size_t work_floats)
{
    return init_algo(d, N, Ci, H, W, Co, k, stride, pad, NN_ALGO_AUTO, work_floats);
}

int nn_conv_plan(nn_conv *d, int N, int Ci, int H, int W, int Co, int k, int stride, int pad, int algo, size_t budget,
                 size_t *work_floats)
{
    if (!nn_conv_algo_ok(algo, Ci, H, W, Co, k, stride, pad))
        return moco_err(MOCO_EINVAL, "convolution %d->%d %dx%d k%d/%d: the %s kernels cannot run it", Ci, Co, H, W, k, stride,
                        nn_algo_name(algo));
    const int lowp = algo == NN_ALGO_BF16 || algo == NN_ALGO_ONEDNN || algo == NN_ALGO_WINO;
    *work_floats = init_algo(d, N, Ci, H, W, Co, k, stride, pad, lowp ? NN_ALGO_AUTO : algo, budget);
    return algo == NN_ALGO_BF16     ? nn_conv_bf16(d, work_floats)
           : algo == NN_ALGO_ONEDNN ? nn_conv_onednn(d, work_floats)
           : algo == NN_ALGO_WINO   ? nn_conv_onednn_wino(d, work_floats)
                                    : 0;
}

double nn_conv_macs(const nn_conv *d)
{
    return (double)d->N * d->Co * d->Ho * d->Wo * (double)d->Ci * d->k * d->k;
}

/* Stride-1 "same" lowering of one image plane: dst[oh][ow] = src[oh+dh][ow+dw]
 * (0 outside). One copy of the whole shifted plane; the columns that wrapped
 * into the neighbouring row, and the rows outside, are then zeroed. */
static void same_plane_copy(float *dst, const float *src, int H, int W, int dh, int dw)
{
    int oh0 = dh < 0 ? -dh : 0, oh1 = dh > 0 ? H - dh : H;
    if (oh1 <= oh0) {
        memset(dst, 0, sizeof(float) * (size_t)H * W);
        return;
    }
    memset(dst, 0, sizeof(float) * (size_t)oh0 * W);
    memset(dst + (size_t)oh1 * W, 0, sizeof(float) * (size_t)(H - oh1) * W);
    long S = (long)(oh0 + dh) * W + dw, D = (long)oh0 * W, L = (long)(oh1 - oh0) * W;
    if (S < 0) D -= S, L += S, S = 0;
    if (S + L > (long)H * W) L = (long)H * W - S;
    if (L > 0) memcpy(dst + D, src + S, sizeof(float) * (size_t)L);
    for (int oh = oh0; oh < oh1; oh++) {
        float *r = dst + (size_t)oh * W;
        if (dw > 0)
            for (int ow = W - dw; ow < W; ow++) r[ow] = 0.0f;
        else
            for (int ow = 0; ow < -dw; ow++) r[ow] = 0.0f;
    }
    if (S == 0 && D > (long)oh0 * W) /* columns before the copy's start */
        for (long i = (long)oh0 * W; i < D; i++) dst[i] = 0.0f;
}

/* The adjoint: dst[oh+dh][ow+dw] += src[oh][ow] over the valid positions.
 * src is scratch: its padding positions are zeroed so that one contiguous
 * add over the shifted plane adds exactly the valid terms. */
static void same_plane_add(float *dst, float *src, int H, int W, int dh, int dw)
{
    int oh0 = dh < 0 ? -dh : 0, oh1 = dh > 0 ? H - dh : H;
    if (oh1 <= oh0) return;
    for (int oh = oh0; oh < oh1; oh++) {
        float *r = src + (size_t)oh * W;
        if (dw > 0)
            for (int ow = W - dw; ow < W; ow++) r[ow] = 0.0f;
        else
            for (int ow = 0; ow < -dw; ow++) r[ow] = 0.0f;
    }
    long S = (long)(oh0 + dh) * W + dw, D = (long)oh0 * W, L = (long)(oh1 - oh0) * W;
    if (S < 0) D -= S, L += S, S = 0;
    if (S + L > (long)H * W) L = (long)H * W - S;
    if (L > 0) vec_add(dst + S, src + D, (size_t)L);
}

/* col (Ci*k*k, n*Ho*Wo) from images n0..n0+n of inp (Ci,N,H,W) */
static void im2col(float *col, const float *inp, const nn_conv *d, int n0, int n)
{
    const int k = d->k, s = d->stride, p = d->pad, Ho = d->Ho, Wo = d->Wo, H = d->H, W = d->W;
    const size_t HoWo = (size_t)Ho * Wo, ld = (size_t)n * HoWo;
    const int same = s == 1 && Ho == H && Wo == W; /* "same" stride-1 conv: whole shifted planes */
    for (int ci = 0; ci < d->Ci; ci++)
        for (int kh = 0; kh < k; kh++)
            for (int kw = 0; kw < k; kw++) {
                float *row = col + ((size_t)(ci * k + kh) * k + kw) * ld;
                for (int j = 0; j < n; j++) {
                    const float *im = inp + ((size_t)ci * d->N + n0 + j) * H * W;
                    float *o = row + (size_t)j * HoWo;
                    if (same) {
                        same_plane_copy(o, im, H, W, kh - p, kw - p);
                        continue;
                    }
                    for (int oh = 0; oh < Ho; oh++) {
                        int ih = oh * s - p + kh;
                        float *orow = o + (size_t)oh * Wo;
                        if (ih < 0 || ih >= H) {
                            memset(orow, 0, sizeof(float) * (size_t)Wo);
                            continue;
                        }
                        const float *irow = im + (size_t)ih * W;
                        if (s == 1) {
                            int lo = p - kw, hi = W + p - kw; /* ow range with iw in [0,W) */
                            if (lo < 0) lo = 0;
                            if (hi > Wo) hi = Wo;
                            for (int ow = 0; ow < lo && ow < Wo; ow++) orow[ow] = 0;
                            if (hi > lo) memcpy(orow + lo, irow + lo - p + kw, sizeof(float) * (size_t)(hi - lo));
                            for (int ow = hi > lo ? hi : lo; ow < Wo; ow++) orow[ow] = 0;
                        } else {
                            for (int ow = 0; ow < Wo; ow++) {
                                int iw = ow * s - p + kw;
                                orow[ow] = iw >= 0 && iw < W ? irow[iw] : 0.0f;
                            }
                        }
                    }
                }
            }
}

/* dinp (Ci,N,H,W) images n0.. += col2im(col) */
static void col2im(float *dinp, float *col, const nn_conv *d, int n0, int n)
{
    const int k = d->k, s = d->stride, p = d->pad, Ho = d->Ho, Wo = d->Wo, H = d->H, W = d->W;
    const size_t HoWo = (size_t)Ho * Wo, ld = (size_t)n * HoWo;
    const int same = s == 1 && Ho == H && Wo == W;
    for (int ci = 0; ci < d->Ci; ci++)
        for (int kh = 0; kh < k; kh++)
            for (int kw = 0; kw < k; kw++) {
                float *row = col + ((size_t)(ci * k + kh) * k + kw) * ld;
                for (int j = 0; j < n; j++) {
                    float *im = dinp + ((size_t)ci * d->N + n0 + j) * H * W;
                    float *o = row + (size_t)j * HoWo;
                    if (same) {
                        same_plane_add(im, o, H, W, kh - p, kw - p);
                        continue;
                    }
                    for (int oh = 0; oh < Ho; oh++) {
                        int ih = oh * s - p + kh;
                        if (ih < 0 || ih >= H) continue;
                        float *irow = im + (size_t)ih * W;
                        const float *orow = o + (size_t)oh * Wo;
                        if (s == 1) {
                            int lo = p - kw, hi = W + p - kw;
                            if (lo < 0) lo = 0;
                            if (hi > Wo) hi = Wo;
                            if (hi > lo) vec_add(irow + lo - p + kw, orow + lo, (size_t)(hi - lo));
                        } else {
                            for (int ow = 0; ow < Wo; ow++) {
                                int iw = ow * s - p + kw;
                                if (iw >= 0 && iw < W) irow[iw] += orow[ow];
                            }
                        }
                    }
                }
            }
}

typedef struct {
    const nn_conv *d;
    float *out, *dinp, *dw, *work;
    const float *inp, *w, *dout;
    int tasks;
    const float *wr; /* direct: the rearranged weights */
} conv_job;

static void conv_fwd_task(void *ctx, int t, int th)
{
    const conv_job *j = ctx;
    const nn_conv *d = j->d;
    if (d->lanes) {
        const int n0 = t * d->chunk, n = d->N - n0 < d->chunk ? d->N - n0 : d->chunk;
        size_t ldx, ldy, ldyp;
        conv_lanes_lds(d, &ldx, &ldy, &ldyp);
        float *x = j->work + (size_t)th * d->work_per, *y = x + (size_t)d->Ci * ldx;
        conv3l_pack(x, ldx, j->inp, d->Ci, d->N, n0, n, d->H, d->W, 1);
        conv3l_forward(y, ldy, x, ldx, j->wr, d->Ci, d->Co, (n + 15) / 16, d->Ho, d->Wo, d->H + 2, d->W + 2, d->stride);
        conv3l_unpack(j->out, y, ldy, d->Co, d->N, n0, n, d->Ho, d->Wo, 0, 0);
        return;
    }
    if (d->wino) {
        const int n0 = t * d->chunk, n = d->N - n0 < d->chunk ? d->N - n0 : d->chunk;
        wino_forward(d->wino, j->out, j->inp, j->wr, d->N, n0, n, d->H, d->W, d->Ci, d->Co, j->work + (size_t)th * d->work_per);
        return;
    }
    if (d->direct) {
        const int n0 = t * d->chunk, n = d->N - n0 < d->chunk ? d->N - n0 : d->chunk;
        float *x = j->work + (size_t)th * d->work_per, *y = x + (size_t)d->Ci * d->ld;
        conv3_pad(x, d->ld, j->inp, d->Ci, d->N, n0, n, d->H, d->W);
        conv3_forward(d->direct, y, x, j->wr, d->Ci, d->Co, d->ld, n, d->H, d->W);
        conv3_unpad(j->out, y, d->ld, d->Co, d->N, n0, n, d->H, d->W, 0);
        return;
    }
    const int K = d->Ci * d->k * d->k, n0 = t * d->chunk, n = d->N - n0 < d->chunk ? d->N - n0 : d->chunk;
    const size_t HoWo = (size_t)d->Ho * d->Wo, NHoWo = (size_t)d->N * HoWo;
    const float *b = j->inp + n0 * HoWo;
    int ldb = (int)NHoWo;
    if (!conv_direct(d)) {
        float *col = j->work + (size_t)th * d->work_per;
        im2col(col, j->inp, d, n0, n);
        b = col, ldb = (int)(n * HoWo);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->Co, (int)(n * HoWo), K, 1.0f, j->w, K, b, ldb, 0.0f,
                j->out + n0 * HoWo, (int)NHoWo);
}

void conv2d_forward(float *out, const float *inp, const float *w, const nn_conv *d, float *work)
{
    if (d->lp) {
        conv2d_forward_bf16(out, inp, w, d, work);
        return;
    }
    conv_job j = {d, out, NULL, NULL, work, inp, w, NULL, (d->N + d->chunk - 1) / d->chunk, NULL};
    if (d->direct || d->lanes) {
        float *wr = work + (size_t)d->nthreads * d->work_per;
        conv3_weights_fwd(wr, w, d->Co, d->Ci);
        j.wr = wr;
    }
    if (d->wino) {
        float *U = work + (size_t)d->nthreads * d->work_per;
        wino_filters(d->wino, U, w, d->Co, d->Ci, 0);
        j.wr = U;
    }
    par_for_max(j.tasks, d->nthreads, conv_fwd_task, &j);
}

static void conv_bwd_task(void *ctx, int t, int th)
{
    const conv_job *j = ctx;
    const nn_conv *d = j->d;
    const int K = d->Ci * d->k * d->k, n0 = t * d->chunk, n = d->N - n0 < d->chunk ? d->N - n0 : d->chunk;
    const size_t HoWo = (size_t)d->Ho * d->Wo, NHoWo = (size_t)d->N * HoWo;
    const int cols = (int)(n * HoWo);
    float *col = j->work + (size_t)th * d->work_per;
    float *dw = th ? col + (d->work_per - (size_t)d->Co * K) : j->dw; /* thread 0 adds straight into dw */
    const float *dout = j->dout + n0 * HoWo;
    if (d->lanes) {
        size_t ldx, ldy, ldyp;
        conv_lanes_lds(d, &ldx, &ldy, &ldyp);
        const int G = (n + 15) / 16, s = d->stride;
        float *x = col, *y = x + (size_t)d->Ci * ldx, *yp = y + (size_t)d->Co * ldy, *dx = yp + (size_t)d->Co * ldyp;
        /* the output gradient, with a border where the stride-1 data gradient convolves it */
        const int pd = j->dinp && s == 1;
        if (pd) conv3l_pack(yp, ldyp, j->dout, d->Co, d->N, n0, n, d->Ho, d->Wo, 1);
        else conv3l_pack(y, ldy, j->dout, d->Co, d->N, n0, n, d->Ho, d->Wo, 0);
        if (j->dw) {
            conv3l_pack(x, ldx, j->inp, d->Ci, d->N, n0, n, d->H, d->W, 1);
            conv3l_dweight(dw, pd ? yp : y, pd ? ldyp : ldy, x, ldx, d->Co, d->Ci, G, d->Ho, d->Wo, d->H + 2, d->W + 2, s, pd);
        }
        if (pd) { /* a convolution of the padded gradient with the flipped weights */
            size_t ldu = conv3l_ld(d->chunk, d->H, d->W);
            conv3l_forward(dx, ldu, yp, ldyp, j->wr, d->Co, d->Ci, G, d->H, d->W, d->Ho + 2, d->Wo + 2, 1);
            conv3l_unpack(j->dinp, dx, ldu, d->Ci, d->N, n0, n, d->H, d->W, 0, 1);
        } else if (j->dinp) { /* stride 2: each tap's product added at its input positions */
            memset(dx, 0, sizeof(float) * (size_t)d->Ci * ldx);
            conv3l_dinput(dx, ldx, y, ldy, j->wr, d->Co, d->Ci, G, d->Ho, d->Wo, d->H + 2, d->W + 2, s);
            conv3l_unpack(j->dinp, dx, ldx, d->Ci, d->N, n0, n, d->H, d->W, 1, 1);
        }
        return;
    }
    if (d->wino) {
        float *dU = col + d->work_per - wino_filter_floats(d->wino, d->Ci, d->Co);
        wino_backward(d->wino, j->dinp, j->dw ? dU : NULL, j->dout, j->inp, d->in_half, j->wr, d->N, n0, n, d->H, d->W, d->Ci, d->Co, col);
        return;
    }
    if (d->direct) {
        float *x = col, *dy = x + (size_t)d->Ci * d->ld, *dx = dy + (size_t)d->Co * d->ld;
        conv3_pad(dy, d->ld, j->dout, d->Co, d->N, n0, n, d->H, d->W);
        if (j->dw) {
            conv3_pad(x, d->ld, j->inp, d->Ci, d->N, n0, n, d->H, d->W);
            conv3_dweight(d->direct, dw, dy, x, d->Co, d->Ci, d->ld, n, d->H, d->W);
        }
        if (j->dinp) {
            conv3_forward(d->Ci % (d->direct == 2 ? 8 : 4) ? 0 : d->direct, dx, dy, j->wr, d->Co, d->Ci, d->ld, n, d->H, d->W);
            conv3_unpad(j->dinp, dx, d->ld, d->Ci, d->N, n0, n, d->H, d->W, 1);
        }
        return;
    }
    if (conv_direct(d)) {
        if (j->dw && d->in_half) /* the input kept in bf16 (nn.h): one image at a time through fp32 */
            for (int i = 0; i < n; i++) {
                for (int c = 0; c < d->Ci; c++)
                    nn_from_bf16(col + (size_t)c * HoWo, (const uint16_t *)j->inp + ((size_t)c * d->N + n0 + i) * HoWo, HoWo);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->Co, K, (int)HoWo, 1.0f, dout + i * HoWo, (int)NHoWo, col,
                            (int)HoWo, 1.0f, dw, K);
            }
        else if (j->dw)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->Co, K, cols, 1.0f, dout, (int)NHoWo, j->inp + n0 * HoWo,
                        (int)NHoWo, 1.0f, dw, K);
        if (j->dinp)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, cols, d->Co, 1.0f, j->w, K, dout, (int)NHoWo, 1.0f,
                        j->dinp + n0 * HoWo, (int)NHoWo);
        return;
    }
    if (j->dw) {
        im2col(col, j->inp, d, n0, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->Co, K, cols, 1.0f, dout, (int)NHoWo, col, cols, 1.0f, dw, K);
    }
    if (j->dinp) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, cols, d->Co, 1.0f, j->w, K, dout, (int)NHoWo, 0.0f, col, cols);
        col2im(j->dinp, col, d, n0, n);
    }
}

void conv2d_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, const nn_conv *d, float *work)
{
    if (d->lp) {
        conv2d_backward_bf16(dinp, dw, dout, inp, w, d, work);
        return;
    }
    conv_job j = {d, NULL, dinp, dw, work, inp, w, dout, (d->N + d->chunk - 1) / d->chunk, NULL};
    const size_t nw = (size_t)d->Co * d->Ci * d->k * d->k;
    if ((d->direct || d->lanes) && dinp) {
        float *wr = work + (size_t)d->nthreads * d->work_per;
        conv3_weights_bwd(wr, w, d->Co, d->Ci, d->direct || d->stride == 1);
        j.wr = wr;
    }
    if (d->wino && dinp) {
        float *Uf = work + (size_t)d->nthreads * d->work_per;
        wino_filters(d->wino, Uf, w, d->Co, d->Ci, 1);
        j.wr = Uf;
    }
    int T = d->nthreads < j.tasks ? d->nthreads : j.tasks;
    if (T > par_threads()) T = par_threads();
    if (d->wino) { /* every thread, the first too, sums its transformed dW (dU), transformed back in thread order */
        const size_t nu = wino_filter_floats(d->wino, d->Ci, d->Co);
        if (dw)
            for (int t = 0; t < T; t++) memset(work + (size_t)(t + 1) * d->work_per - nu, 0, sizeof(float) * nu);
        par_for_fixed(j.tasks, T, conv_bwd_task, &j);
        if (dw)
            for (int t = 0; t < T; t++) wino_dweight(d->wino, dw, work + (size_t)(t + 1) * d->work_per - nu, d->Co, d->Ci);
        return;
    }
    if (dw)
        for (int t = 1; t < T; t++) memset(work + (size_t)(t + 1) * d->work_per - nw, 0, sizeof(float) * nw);
    par_for_fixed(j.tasks, T, conv_bwd_task, &j); /* per-thread dW sums: the same in every run */
    if (dw)
        for (int t = 1; t < T; t++) {
            const float *p = work + (size_t)(t + 1) * d->work_per - nw;
            for (size_t i = 0; i < nw; i++) dw[i] += p[i];
        }
}

/* ------------------------------------------------------------ batch norm */

/* Sums over one run of n floats, in 8 float lanes (vectorisable without
 * reassociating one chain), returned in double. */
NN_HOT static double run_sum(const float *x, int n)
{
    float a[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) a[k] += x[i + k];
    double s = 0;
    for (int k = 0; k < 8; k++) s += a[k];
    for (; i < n; i++) s += x[i];
    return s;
}

NN_HOT static double run_sqdev(const float *x, int n, float m)
{
    float a[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            float t = x[i + k] - m;
            a[k] += t * t;
        }
    double s = 0;
    for (int k = 0; k < 8; k++) s += a[k];
    for (; i < n; i++) s += (double)(x[i] - m) * (x[i] - m);
    return s;
}

/* sum dy and sum dy * (x - m) over one run */
NN_HOT static void run_dsums(const float *dy, const float *x, int n, float m, double *sdy, double *sdyx)
{
    float a[8] = {0}, b[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) a[k] += dy[i + k], b[k] += dy[i + k] * (x[i + k] - m);
    double s = 0, t = 0;
    for (int k = 0; k < 8; k++) s += a[k], t += b[k];
    for (; i < n; i++) s += dy[i], t += (double)dy[i] * (x[i] - m);
    *sdy += s, *sdyx += t;
}

typedef struct {
    float *y, *mean, *invstd, *rmean, *rvar, *dx, *dres, *dgamma, *dbeta, *dout;
    const float *x, *res, *gamma, *beta, *cy;
    const float *cmean, *cinvstd;
    int relu, train;
    const nn_bn *d;
    const uint16_t *xh; /* bn_backward_h: x in bf16 ... */
    float *xtmp;        /* ... restored channel by channel into N*HW floats per thread */
    const uint16_t *yh; /* bn_backward_h: y in bf16 (its sign: the ReLU mask) */
    uint16_t *xh_out, *yh_out; /* bn_forward_keep: bf16 copies of x and y, written run by run */
} bn_job;

/* d[i] = 0 where the bf16 y[i] is not > 0 (sign bit set, or zero) */
NN_HOT static void vec_relu_mask_h(float *restrict d, const uint16_t *restrict y, size_t n)
{
    for (size_t i = 0; i < n; i++) d[i] = (int16_t)y[i] > 0 ? d[i] : 0.0f;
}

/* Runs of split s of channel c: images n = s, s+S, ...; a run is HW floats,
 * or the whole channel when S == 1. */
#define BN_RUNS(d, S, s, base, off, len)                                                                               \
    for (int n_ = (S) == 1 ? 0 : (s), len = (S) == 1 ? (d)->N * (d)->HW : (d)->HW; n_ < ((S) == 1 ? 1 : (d)->N); n_ += (S)) \
        for (size_t off = (base) + (size_t)n_ * ((S) == 1 ? 0 : (size_t)(d)->HW), once_ = 1; once_; once_ = 0)

static void bn_fwd_task(void *ctx, int c, int th)
{
    (void)th;
    const bn_job *j = ctx;
    const nn_bn *d = j->d;
    const size_t base = (size_t)c * d->N * d->HW;
    const int S = j->train ? d->S : 1;
    const double M = (double)(d->N / S) * d->HW;
    double msum = 0, vsum = 0;
    for (int s = 0; s < S; s++) {
        float mu, is;
        if (j->train) {
            double sum = 0, sq = 0;
            BN_RUNS(d, S, s, base, o, len) sum += run_sum(j->x + o, len);
            float m = (float)(sum / M);
            BN_RUNS(d, S, s, base, o, len)
            {
                sq += run_sqdev(j->x + o, len, m);
                /* the run just read (in cache), centred: x - mean in bf16 keeps x-hat's
                 * 8 bits where x itself would lose them to a mean of several sigma */
                if (j->xh_out) to_bf16_sub(j->xh_out + o, j->x + o, (size_t)len, m);
            }
            double var = sq / M;
            mu = m;
            is = (float)(1.0 / sqrt(var + d->eps));
            j->mean[s * d->C + c] = mu, j->invstd[s * d->C + c] = is;
            msum += m, vsum += M > 1 ? var * M / (M - 1) : var;
        } else {
            mu = j->rmean[c];
            is = (float)(1.0 / sqrt((double)j->rvar[c] + d->eps));
        }
        const float a = is * j->gamma[c], b = j->beta[c] - mu * a;
        BN_RUNS(d, S, s, base, o, len)
        {
            if (j->res) {
                if (j->relu) vec_affine_add_relu(j->y + o, j->x + o, j->res + o, len, a, b);
                else vec_affine_add(j->y + o, j->x + o, j->res + o, len, a, b);
            } else if (j->relu) {
                vec_affine_relu(j->y + o, j->x + o, len, a, b);
            } else {
                vec_affine(j->y + o, j->x + o, len, a, b);
            }
            if (j->yh_out) nn_to_bf16(j->yh_out + o, j->y + o, (size_t)len);
        }
    }
    if (j->train) {
        j->rmean[c] = (float)((1.0 - d->momentum) * j->rmean[c] + d->momentum * (msum / S));
        j->rvar[c] = (float)((1.0 - d->momentum) * j->rvar[c] + d->momentum * (vsum / S));
    }
}

void bn_forward(float *y, float *mean, float *invstd, float *rmean, float *rvar, const float *x, const float *res,
                const float *gamma, const float *beta, int relu, int train, const nn_bn *d)
{
    bn_forward_keep(y, NULL, mean, invstd, rmean, rvar, x, NULL, res, gamma, beta, relu, train, d);
}

void bn_forward_keep(float *y, uint16_t *yh, float *mean, float *invstd, float *rmean, float *rvar, const float *x, uint16_t *xh,
                     const float *res, const float *gamma, const float *beta, int relu, int train, const nn_bn *d)
{
    bn_job j = {y, mean, invstd, rmean, rvar, NULL, NULL, NULL, NULL, NULL, x, res, gamma, beta, NULL, NULL, NULL, relu, train, d,
                NULL, NULL, NULL, xh, yh};
    par_for(d->C, bn_fwd_task, &j);
}

static void bn_bwd_task(void *ctx, int c, int th)
{
    const bn_job *j = ctx;
    const nn_bn *d = j->d;
    const size_t NHW = (size_t)d->N * d->HW, base = (size_t)c * NHW;
    const int S = d->S;
    const double M = (double)(d->N / S) * d->HW;
    float *dout = j->dout;
    const float *x = j->x;
    float *xt = NULL;
    if (j->xh) { /* x restored from bf16 run by run below, into xtmp */
        xt = j->xtmp + (size_t)th * NHW - base;
        x = xt; /* indexed from base like j->x */
    }
    for (int s = 0; s < S; s++) {
        /* x kept in bf16 is centred already (bn_fwd_task): its mean is 0 */
        const float mu = xt ? 0.0f : j->cmean[s * d->C + c], is = j->cinvstd[s * d->C + c];
        double sdy = 0, sdxm = 0;
        BN_RUNS(d, S, s, base, o, len) /* the ReLU mask, the residual's gradient and the sums, run by run (in L1) */
        {
            if (j->relu && j->yh) vec_relu_mask_h(dout + o, j->yh + o, (size_t)len);
            else if (j->relu) vec_relu_mask(dout + o, j->cy + o, (size_t)len);
            if (j->dres && d->dres_set) memcpy(j->dres + o, dout + o, sizeof(float) * (size_t)len);
            else if (j->dres) vec_add(j->dres + o, dout + o, (size_t)len);
            if (xt) nn_from_bf16(xt + o, j->xh + o, (size_t)len);
            run_dsums(dout + o, x + o, len, mu, &sdy, &sdxm);
        }
        double sdyx = sdxm * is;
        if (j->dgamma) j->dgamma[c] += (float)sdyx;
        if (j->dbeta) j->dbeta[c] += (float)sdy;
        if (!j->dx) continue;
        /* dx = g*is*(dy - sdy/M - (x-mu)*is*sdyx/M) = A*dy + B*x + C */
        const float A = j->gamma[c] * is, B = (float)(-(double)A * is * sdyx / M),
                    C = (float)(-(double)A * sdy / M - (double)B * mu);
        BN_RUNS(d, S, s, base, o, len)
        {
            if (d->dx_set) vec_bn_dx_set(j->dx + o, dout + o, x + o, (size_t)len, A, B, C);
            else vec_bn_dx(j->dx + o, dout + o, x + o, (size_t)len, A, B, C);
        }
    }
}

void bn_backward(float *dx, float *dres, float *dgamma, float *dbeta, float *dout, const float *y, const float *x,
                 const float *mean, const float *invstd, const float *gamma, int relu, const nn_bn *d)
{
    bn_job j = {NULL, NULL, NULL, NULL, NULL, dx, dres, dgamma, dbeta, dout, x, NULL, gamma, NULL, y, mean, invstd, relu, 1, d, NULL, NULL, NULL, NULL, NULL};
    par_for(d->C, bn_bwd_task, &j);
}

void bn_backward_h(float *dx, float *dres, float *dgamma, float *dbeta, float *dout, const float *y, const uint16_t *yh,
                   const float *x, const uint16_t *xh, float *xtmp, const float *mean, const float *invstd, const float *gamma,
                   int relu, const nn_bn *d)
{
    bn_job j = {NULL, NULL, NULL, NULL, NULL, dx, dres, dgamma, dbeta, dout, x, NULL, gamma, NULL, y, mean, invstd, relu, 1, d, xh, xtmp, yh, NULL, NULL};
    par_for(d->C, bn_bwd_task, &j);
}

/* ----------------------------------------------------------- element-wise */

void relu_forward(float *out, const float *inp, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void relu_backward(float *dinp, const float *dout, const float *out, size_t n)
{
    for (size_t i = 0; i < n; i++) dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

void add_forward(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void add_backward(float *da, float *db, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++) da[i] += dout[i], db[i] += dout[i];
}

/* ---------------------------------------------------------------- pooling */

void nn_pool_init(nn_pool *d, int N, int C, int H, int W, int k, int stride, int pad)
{
    *d = (nn_pool){N, C, H, W, k, stride, pad, (H + 2 * pad - k) / stride + 1, (W + 2 * pad - k) / stride + 1};
}

/* Index (within the image) of the first maximum of output (oh,ow). */
static int pool_argmax(const float *im, const nn_pool *d, int oh, int ow)
{
    int h0 = oh * d->stride - d->pad, w0 = ow * d->stride - d->pad;
    int h1 = h0 + d->k < d->H ? h0 + d->k : d->H, w1 = w0 + d->k < d->W ? w0 + d->k : d->W;
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    int best = h0 * d->W + w0;
    float bv = -INFINITY;
    for (int h = h0; h < h1; h++)
        for (int w = w0; w < w1; w++) {
            float v = im[h * d->W + w];
            if (v > bv || v != v) {
                bv = v, best = h * d->W + w;
                if (v != v) return best;
            }
        }
    return best;
}

/* Planes (one channel of one image) are independent: chunks of them run
 * side by side on the compute pool, each exactly as a single thread would. */
typedef struct { float *out; const float *inp, *dout; float *dinp; const nn_pool *d; size_t per; } pool_job;

static void pool_fwd_task(void *ctx, int t, int th)
{
    (void)th;
    const pool_job *j = ctx;
    const nn_pool *d = j->d;
    const size_t n = (size_t)d->C * d->N, p1 = (size_t)(t + 1) * j->per < n ? (size_t)(t + 1) * j->per : n;
    for (size_t p = (size_t)t * j->per; p < p1; p++) {
        const float *im = j->inp + p * d->H * d->W;
        float *o = j->out + p * d->Ho * d->Wo;
        for (int oh = 0; oh < d->Ho; oh++)
            for (int ow = 0; ow < d->Wo; ow++) o[oh * d->Wo + ow] = im[pool_argmax(im, d, oh, ow)];
    }
}

static void pool_bwd_task(void *ctx, int t, int th)
{
    (void)th;
    const pool_job *j = ctx;
    const nn_pool *d = j->d;
    const size_t n = (size_t)d->C * d->N, p1 = (size_t)(t + 1) * j->per < n ? (size_t)(t + 1) * j->per : n;
    for (size_t p = (size_t)t * j->per; p < p1; p++) {
        const float *im = j->inp + p * d->H * d->W;
        const float *o = j->dout + p * d->Ho * d->Wo;
        float *di = j->dinp + p * d->H * d->W;
        for (int oh = 0; oh < d->Ho; oh++)
            for (int ow = 0; ow < d->Wo; ow++) di[pool_argmax(im, d, oh, ow)] += o[oh * d->Wo + ow];
    }
}

static void pool_run(pool_job *j, void (*fn)(void *, int, int))
{
    const size_t n = (size_t)j->d->C * j->d->N;
    j->per = n / (size_t)(8 * par_threads()) + 1;
    par_for((int)((n + j->per - 1) / j->per), fn, j);
}

void maxpool_forward(float *out, const float *inp, const nn_pool *d)
{
    pool_job j = {out, inp, NULL, NULL, d, 0};
    pool_run(&j, pool_fwd_task);
}

void maxpool_backward(float *dinp, const float *dout, const float *inp, const nn_pool *d)
{
    pool_job j = {NULL, inp, dout, dinp, d, 0};
    pool_run(&j, pool_bwd_task);
}

void avgpool_forward(float *out, const float *inp, int N, int C, int HW)
{
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++) {
            const float *p = inp + ((size_t)c * N + n) * HW;
            double s = 0;
            for (int i = 0; i < HW; i++) s += p[i];
            out[(size_t)n * C + c] = (float)(s / HW);
        }
}

void avgpool_backward(float *dinp, const float *dout, int N, int C, int HW)
{
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++) {
            float *p = dinp + ((size_t)c * N + n) * HW;
            float g = dout[(size_t)n * C + c] / (float)HW;
            for (int i = 0; i < HW; i++) p[i] += g;
        }
}

/* ----------------------------------------------------------------- linear */

void linear_forward(float *out, const float *inp, const float *w, const float *b, int N, int F, int O)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, O, F, 1.0f, inp, F, w, F, 0.0f, out, O);
    if (b)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++) out[(size_t)n * O + o] += b[o];
}

void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int N, int F, int O)
{
    if (dw) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, F, N, 1.0f, dout, O, inp, F, 1.0f, dw, F);
    if (dinp) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, F, O, 1.0f, dout, O, w, F, 1.0f, dinp, F);
    if (db)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++) db[o] += dout[(size_t)n * O + o];
}
