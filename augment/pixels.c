/* pixels.c: the per-view pixel kernels: antialiased bilinear resample (with
 * crop and flip folded in), torchvision's colour ops and Gaussian blur, all
 * on float HWC images with values on the 0..255 scale (c = 1 or 3).
 *
 * Promises: no allocation, no reads outside the given buffers, results that
 * depend only on the arguments (no global state). The formulas are
 * torchvision's (functional_tensor.py) applied to floats; the one rounding to
 * uint8 happens in the caller, at the end of the chain. Loops are written
 * plainly so that -O2 can vectorise the contiguous ones. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "augment/augment.h"

#define GRAY_R 0.299f
#define GRAY_G 0.587f
#define GRAY_B 0.114f

/* Hot kernels get an AVX2 clone, picked at load time by the CPU (ifunc);
 * the default clone is plain x86-64 (SSE2). */
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

/* Let -O2 vectorise loops whose trip count is not a multiple of the width;
 * never fuse a*b+c (FMA) so that every CPU gives bit-identical views (the
 * AVX2 clones do not use FMA either; reductions stay in order). */
#pragma GCC optimize("vect-cost-model=dynamic", "no-trapping-math", "fp-contract=off")

/* Filter taps of one output coordinate: weights w[0..n) for inputs lo.. */
typedef struct {
    int lo, n;
    int off; /* offset of the weights in the weight array */
} tap;

_Static_assert(sizeof(tap) == 3 * sizeof(float), "taps are carved out of the float scratch buffer");

static double tri(double x)
{
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Pillow's precompute_coeffs for the bilinear filter, over the box
 * [b0, b0+bl) of an axis of n_in pixels, into n_out outputs. Taps are
 * clamped to the box (torchvision crops first, then resizes the crop).
 * Returns the number of weights written to w (<= cap), or -1. */
static int coeffs(double b0, double bl, int n_in, int n_out, tap *t, float *w, int cap)
{
    double scale = bl / n_out, fs = scale > 1.0 ? scale : 1.0, support = fs, ss = 1.0 / fs;
    int lo_lim = (int)floor(b0), hi_lim = (int)ceil(b0 + bl - 1e-9);
    if (lo_lim < 0) lo_lim = 0;
    if (hi_lim > n_in) hi_lim = n_in;
    if (hi_lim <= lo_lim) return -1;
    int used = 0;
    for (int x = 0; x < n_out; x++) {
        double center = (b0 - lo_lim) + (x + 0.5) * scale; /* relative to the clamped box */
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (center - support + 0.5 < 0) xmin = 0;
        if (xmax > hi_lim - lo_lim) xmax = hi_lim - lo_lim;
        int n = xmax - xmin;
        if (n < 1) { /* degenerate (box thinner than a pixel): nearest pixel */
            xmin = (int)center;
            if (xmin >= hi_lim - lo_lim) xmin = hi_lim - lo_lim - 1;
            n = 1;
        }
        if (used + n > cap) return -1;
        double sum = 0;
        for (int k = 0; k < n; k++) sum += tri((k + xmin - center + 0.5) * ss);
        for (int k = 0; k < n; k++) {
            double v = tri((k + xmin - center + 0.5) * ss);
            w[used + k] = (float)(sum != 0.0 ? v / sum : (n == 1 ? 1.0 : 0.0));
        }
        t[x].lo = xmin + lo_lim;
        t[x].n = n;
        t[x].off = used;
        used += n;
    }
    return used;
}

/* Weights one axis may need: n_out * (2 * ceil(support) + 2). */
static size_t axis_weights(double bl, int n_out)
{
    double fs = bl / n_out > 1.0 ? bl / n_out : 1.0;
    return (size_t)n_out * (2 * (size_t)ceil(fs) + 2);
}

/* tmp holds, in floats: the dh rows of the vertical pass (each at most
 * ceil(bw) + 2 pixels, + 4 floats of slack), the taps of both axes (3 ints
 * each), their weights, the padded horizontal weights and their columns. */
size_t augment_resample_tmp(double bw, double bh, int dh, int dw, int c)
{
    return ((size_t)ceil(bw) + 2) * (size_t)dh * (size_t)c + 4 + 3 * ((size_t)dw + dh) + 2 * axis_weights(bw, dw) +
           axis_weights(bh, dh) + (size_t)dw + 8;
}

typedef float v8f __attribute__((vector_size(32)));
typedef uint8_t v8u8 __attribute__((vector_size(8)));

/* out[i] = sum_k w[k] * in[k * stride + i], i < n: the vertical passes of
 * the blur and (vrow8, over uint8 rows) of the resample. Blocks of 8
 * outputs stay in a register across the taps (one load per tap, one store
 * per block); the sum runs over k in order, as in the scalar tail. */
HOT static void vrow(float *restrict out, const float *restrict in, size_t n, const float *w, int taps, size_t stride)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f v, a;
        memcpy(&v, in + i, sizeof v);
        a = w[0] * v;
        for (int k = 1; k < taps; k++) {
            memcpy(&v, in + (size_t)k * stride + i, sizeof v);
            a += w[k] * v;
        }
        memcpy(out + i, &a, sizeof a);
    }
    for (; i < n; i++) {
        float a = w[0] * in[i];
        for (int k = 1; k < taps; k++) a += w[k] * in[(size_t)k * stride + i];
        out[i] = a;
    }
}

HOT static void vrow8(float *restrict out, const uint8_t *restrict in, size_t n, const float *w, int taps, size_t stride)
{
    for (size_t i = 0; i < n; i++) out[i] = w[0] * in[i];
    for (int k = 1; k < taps; k++) {
        const uint8_t *restrict ik = in + (size_t)k * stride;
        float wk = w[k];
        for (size_t i = 0; i < n; i++) out[i] += wk * ik[i];
    }
}

typedef float v4f __attribute__((vector_size(16)));

/* One interleaved float row (pixels from x0) into c planar rows (plane
 * stride ps), horizontal taps, flip folded in. Every output has the same
 * number of taps nt (zero-padded weights w + x*nt from column lo[x]), so the
 * tap loop has a fixed count and its branch is predicted. */
static inline __attribute__((always_inline)) void hrow(float *out, size_t ps, const float *in, int x0, const int *lo, const float *w, int nt, int dw, int c,
                        int flip)
{
    if (c == 3) {
        /* one pixel (3 floats + 1 that is ignored) per vector operation; the
         * row has at least one float of slack after it (see the caller) */
        int x = 0;
        for (; x + 2 <= dw; x += 2) { /* two outputs at once: independent sums */
            const float *p = in + (size_t)(lo[x] - x0) * 3, *p1 = in + (size_t)(lo[x + 1] - x0) * 3;
            const float *wx = w + (size_t)x * nt, *wx1 = wx + nt;
            v4f a = {0, 0, 0, 0}, b = {0, 0, 0, 0};
            for (int k = 0; k < nt; k++) {
                v4f v, v1;
                memcpy(&v, p + 3 * k, sizeof v);
                memcpy(&v1, p1 + 3 * k, sizeof v1);
                a += wx[k] * v;
                b += wx1[k] * v1;
            }
            int o = flip ? dw - 1 - x : x, o1 = flip ? dw - 2 - x : x + 1;
            out[o] = a[0], out[ps + o] = a[1], out[2 * ps + o] = a[2];
            out[o1] = b[0], out[ps + o1] = b[1], out[2 * ps + o1] = b[2];
        }
        for (; x < dw; x++) {
            const float *p = in + (size_t)(lo[x] - x0) * 3;
            const float *wx = w + (size_t)x * nt;
            v4f a = {0, 0, 0, 0};
            for (int k = 0; k < nt; k++) {
                v4f v;
                memcpy(&v, p + 3 * k, sizeof v);
                a += wx[k] * v;
            }
            int o = flip ? dw - 1 - x : x;
            out[o] = a[0], out[ps + o] = a[1], out[2 * ps + o] = a[2];
        }
    } else {
        for (int x = 0; x < dw; x++) {
            const float *p = in + (lo[x] - x0);
            const float *wx = w + (size_t)x * nt;
            float a0 = 0;
            for (int k = 0; k < nt; k++) a0 += wx[k] * p[k];
            out[flip ? dw - 1 - x : x] = a0;
        }
    }
}

/* Vertical pass first (contiguous, vectorised, on the full crop width),
 * then the horizontal pass on the dh output rows only. */
HOT int augment_resample(float *dst, int dh, int dw, const uint8_t *src, int sh, int sw, int c, double bx, double by,
                     double bw, double bh, int flip, float *tmp)
{
    if (dw < 1 || dh < 1 || !(bw > 0) || !(bh > 0)) return -1;
    size_t cx = axis_weights(bw, dw), cy = axis_weights(bh, dh);
    size_t rows = ((size_t)ceil(bw) + 2) * (size_t)dh * (size_t)c + 4;
    tap *tx = (tap *)(void *)(tmp + rows), *ty = tx + dw; /* tap is 3 ints, float-aligned */
    float *wx = tmp + rows + 3 * ((size_t)dw + dh), *wy = wx + cx;
    if (coeffs(bx, bw, sw, dw, tx, wx, (int)cx) < 0) return -1;
    if (coeffs(by, bh, sh, dh, ty, wy, (int)cy) < 0) return -1;
    int x0 = tx[0].lo, x1 = tx[0].lo + tx[0].n;
    for (int x = 1; x < dw; x++) {
        if (tx[x].lo < x0) x0 = tx[x].lo;
        if (tx[x].lo + tx[x].n > x1) x1 = tx[x].lo + tx[x].n;
    }
    size_t span = (size_t)(x1 - x0) * c, dps = (size_t)dh * dw;
    if (span * dh + 4 > rows) return -1; /* + slack for hrow's 4-float loads */
    /* pad the horizontal taps to one count nt: the window of x starts at
     * min(lo, x1 - nt) (inside [x0, x1)); zero weights cost exact zeros */
    int nt = 1;
    for (int x = 0; x < dw; x++)
        if (tx[x].n > nt) nt = tx[x].n;
    if ((size_t)nt * dw > cx) return -1;
    float *wp = wy + cy;
    int *lo = (int *)(void *)(wp + (size_t)nt * dw);
    for (int x = 0; x < dw; x++) {
        int l = tx[x].lo < x1 - nt ? tx[x].lo : x1 - nt;
        float *d = wp + (size_t)x * nt;
        for (int k = 0; k < nt; k++) d[k] = 0.f;
        for (int k = 0; k < tx[x].n; k++) d[tx[x].lo - l + k] = wx[tx[x].off + k];
        lo[x] = l;
    }
    for (int y = 0; y < dh; y++) {
        float *row = tmp + (size_t)y * span;
        vrow8(row, src + ((size_t)ty[y].lo * sw + x0) * c, span, wy + ty[y].off, ty[y].n, (size_t)sw * c);
        hrow(dst + (size_t)y * dw, dps, row, x0, lo, wp, nt, dw, c, flip);
    }
    return 0;
}

static inline float clamp255(float v) { return v < 0.f ? 0.f : v > 255.f ? 255.f : v; }

HOT void augment_brightness(float *restrict img, size_t n, int c, double f)
{
    float ff = (float)f;
    size_t m = n * (size_t)c;
    for (size_t i = 0; i < m; i++) img[i] = clamp255(img[i] * ff);
}

HOT void augment_contrast(float *restrict img, size_t n, int c, double f)
{
    double sum = 0;
    const float *R = img, *G = img + n, *B = img + 2 * n;
    for (size_t i0 = 0; i0 < n; i0 += 1024) { /* float partial sums per block, double across blocks */
        size_t i1 = i0 + 1024 < n ? i0 + 1024 : n;
        float part = 0;
        if (c == 3)
            for (size_t i = i0; i < i1; i++) part += GRAY_R * R[i] + GRAY_G * G[i] + GRAY_B * B[i];
        else
            for (size_t i = i0; i < i1; i++) part += R[i];
        sum += part;
    }
    float mean = n ? (float)(sum / (double)n) : 0.f, ff = (float)f, add = (float)((1.0 - f) * mean);
    size_t m = n * (size_t)c;
    for (size_t i = 0; i < m; i++) img[i] = clamp255(ff * img[i] + add);
}

HOT void augment_saturation(float *restrict img, size_t n, int c, double f)
{
    if (c != 3) return; /* torchvision: a no-op on one channel */
    float ff = (float)f, g1 = (float)(1.0 - f);
    float *restrict R = img, *restrict G = img + n, *restrict B = img + 2 * n;
    for (size_t i = 0; i < n; i++) {
        float g = g1 * (GRAY_R * R[i] + GRAY_G * G[i] + GRAY_B * B[i]);
        R[i] = clamp255(ff * R[i] + g);
        G[i] = clamp255(ff * G[i] + g);
        B[i] = clamp255(ff * B[i] + g);
    }
}

/* torchvision's _rgb2hsv, hue + f modulo 1, _hsv2rgb, written without
 * branches so that it vectorises. Grey pixels (max == min) have s = 0 and
 * come back unchanged, as in torchvision. */
HOT void augment_hue(float *restrict img, size_t n, int c, double f)
{
    if (c != 3) return;
    float hf = (float)f + 2.0f; /* + 2 keeps the value positive for the truncation below */
    float *restrict R = img, *restrict G = img + n, *restrict B = img + 2 * n;
    for (size_t i = 0; i < n; i++) {
        float r = R[i], g = G[i], b = B[i];
        float maxc = r > g ? r : g, minc = r < g ? r : g;
        maxc = maxc > b ? maxc : b, minc = minc < b ? minc : b;
        float cr = maxc - minc;
        float eqf = /* grey pixel: avoid 0/0 as torchvision does */ maxc == minc ? 1.0f : 0.0f;
        float s = cr / (maxc + eqf), crd = cr + eqf;
        float inv = 1.0f / crd, rc = (maxc - r) * inv, gc = (maxc - g) * inv, bc = (maxc - b) * inv;
        float hr = bc - gc, hg = 2.0f + rc - bc, hb = 4.0f + gc - rc;
        float h = maxc == g ? hg : hb;
        h = maxc == r ? hr : h;
        h = h * (1.0f / 6.0f) + 1.0f; /* a multiply, not a division: <= 1 ulp from torchvision */
        h -= (float)(int)h; /* fmod(h, 1), h > 0 */
        h += hf;
        h -= (float)(int)h; /* (h + f) % 1.0 */
        float h6 = h * 6.0f, fi = (float)(int)h6, fr = h6 - fi, v = maxc;
        /* torchvision clamps p, q, t to [0, 1]; here 0 <= s, fr <= 1 keep them in [0, v] already */
        float p = v * (1.0f - s), q = v * (1.0f - s * fr), t = v * (1.0f - s * (1.0f - fr));
        float ro = v, go = p, bo = q;               /* sector 5 */
        ro = fi < 5.f ? t : ro; go = fi < 5.f ? p : go; bo = fi < 5.f ? v : bo;
        ro = fi < 4.f ? p : ro; go = fi < 4.f ? q : go; bo = fi < 4.f ? v : bo;
        ro = fi < 3.f ? p : ro; go = fi < 3.f ? v : go; bo = fi < 3.f ? t : bo;
        ro = fi < 2.f ? q : ro; go = fi < 2.f ? v : go; bo = fi < 2.f ? p : bo;
        ro = fi < 1.f ? v : ro; go = fi < 1.f ? t : go; bo = fi < 1.f ? p : bo;
        R[i] = ro, G[i] = go, B[i] = bo;
    }
}

HOT void augment_grayscale(float *restrict img, size_t n, int c)
{
    if (c != 3) return;
    float *restrict R = img, *restrict G = img + n, *restrict B = img + 2 * n;
    for (size_t i = 0; i < n; i++) {
        float g = GRAY_R * R[i] + GRAY_G * G[i] + GRAY_B * B[i];
        R[i] = G[i] = B[i] = g;
    }
}

/* Reflect an index into [0, n) without repeating the edge (torch 'reflect'). */
static inline int reflect(int i, int n)
{
    if (n == 1) return 0;
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
}

int augment_blur_radius(int ksize, double sigma, float *k)
{
    int half = ksize / 2;
    double sum = 0, kd[AUGMENT_BLUR_KMAX];
    for (int i = 0; i < ksize; i++) { /* torchvision's _get_gaussian_kernel1d */
        double x = -half + i;
        kd[i] = exp(-0.5 * (x / sigma) * (x / sigma));
        sum += kd[i];
    }
    for (int i = 0; i < ksize; i++) k[i] = (float)(kd[i] / sum);
    /* Drop the outer taps while their total weight stays below 0.02 / 255
     * per side: no output moves by more than 0.04 of a grey level. */
    int r = half;
    double tail = 0;
    while (r > 0 && tail + kd[half + r] / sum < 0.02 / 255) tail += kd[half + r] / sum, r--;
    return r;
}

HOT void augment_blur(float *restrict img, int h, int w, int c, int ksize, double sigma, float *restrict tmp)
{
    float k[AUGMENT_BLUR_KMAX];
    if (ksize > AUGMENT_BLUR_KMAX) ksize = AUGMENT_BLUR_KMAX;
    int r = augment_blur_radius(ksize, sigma, k), half = ksize / 2;
    if (r == 0) return; /* the kernel is a delta at this sigma */
    const float *kc = k + half; /* kc[-r..r] */
    size_t ps = (size_t)h * w;
    float pad[2048 + 2 * (AUGMENT_BLUR_KMAX / 2) + 8];
    if (w > 2048) return; /* views are at most 2048 wide (augment_recipe_check) */
    for (int ch = 0; ch < c; ch++) {
        float *P = img + ch * ps;
        /* horizontal: P -> tmp, each row reflect-padded by r first, so that
         * the whole row is one contiguous, vectorised loop */
        for (int y = 0; y < h; y++) {
            const float *in = P + (size_t)y * w;
            memcpy(pad + r, in, (size_t)w * sizeof *pad);
            for (int i = 1; i <= r; i++) pad[r - i] = in[reflect(-i, w)], pad[r + w - 1 + i] = in[reflect(w - 1 + i, w)];
            vrow(tmp + (size_t)y * w, pad, (size_t)w, k + half - r, 2 * r + 1, 1);
        }
        /* vertical: tmp -> P, contiguous rows */
        for (int y = 0; y < h; y++) {
            float *out = P + (size_t)y * w;
            if (y >= r && y + r < h) {
                vrow(out, tmp + (size_t)(y - r) * w, (size_t)w, k + half - r, 2 * r + 1, (size_t)w);
            } else {
                memset(out, 0, (size_t)w * sizeof *out);
                for (int j = -r; j <= r; j++) {
                    const float *in = tmp + (size_t)reflect(y + j, h) * w;
                    float kj = kc[j];
                    for (int x = 0; x < w; x++) out[x] += kj * in[x];
                }
            }
        }
    }
}

/* Round a planar float image (c = 1 or 3 planes of n) to uint8 HWC with oc
 * channels: as is, grey replicated (c 1, oc 3), or grey by 0.299, 0.587,
 * 0.114 (c 3, oc 1). Values are clamped to [0, 255], then rounded half up. */
HOT void augment_quantize(uint8_t *restrict out, const float *restrict f, size_t n, int c, int oc)
{
    const float *R = f, *G = f + (c == 3 ? n : 0), *B = f + (c == 3 ? 2 * n : 0);
    if (oc == 3)
        for (size_t i = 0; i < n; i++) {
            out[3 * i] = (uint8_t)(int)(clamp255(R[i]) + 0.5f);
            out[3 * i + 1] = (uint8_t)(int)(clamp255(G[i]) + 0.5f);
            out[3 * i + 2] = (uint8_t)(int)(clamp255(B[i]) + 0.5f);
        }
    else if (c == 1)
        for (size_t i = 0; i < n; i++) out[i] = (uint8_t)(int)(clamp255(R[i]) + 0.5f);
    else
        for (size_t i = 0; i < n; i++) out[i] = (uint8_t)(int)(clamp255(GRAY_R * R[i] + GRAY_G * G[i] + GRAY_B * B[i]) + 0.5f);
}
