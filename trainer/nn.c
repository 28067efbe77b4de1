/* nn.c: the fast layer kernels of nn.h (convolution lowered onto
 * cblas_sgemm over chunks of images, fused BN/residual/ReLU passes) and
 * the small layers. The plain references live in nn_ref.c. */
#include "trainer/nn.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

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

/* ------------------------------------------------------------------ conv */

static int conv_direct(const nn_conv *d) { return d->k == 1 && d->stride == 1 && d->pad == 0; }

size_t nn_conv_init(nn_conv *d, int N, int Ci, int H, int W, int Co, int k, int stride, int pad, size_t work_floats)
{
    *d = (nn_conv){N, Ci, H, W, Co, k, stride, pad, (H + 2 * pad - k) / stride + 1, (W + 2 * pad - k) / stride + 1, 1};
    if (conv_direct(d)) {
        d->chunk = N;
        return 0;
    }
    size_t per = (size_t)Ci * k * k * d->Ho * d->Wo;
    size_t c = work_floats / per;
    d->chunk = c < 1 ? 1 : c > (size_t)N ? N : (int)c;
    return per * (size_t)d->chunk;
}

double nn_conv_macs(const nn_conv *d)
{
    return (double)d->N * d->Co * d->Ho * d->Wo * (double)d->Ci * d->k * d->k;
}

/* col (Ci*k*k, n*Ho*Wo) from images n0..n0+n of inp (Ci,N,H,W) */
static void im2col(float *col, const float *inp, const nn_conv *d, int n0, int n)
{
    const int k = d->k, s = d->stride, p = d->pad, Ho = d->Ho, Wo = d->Wo, H = d->H, W = d->W;
    const size_t HoWo = (size_t)Ho * Wo, ld = (size_t)n * HoWo;
    for (int ci = 0; ci < d->Ci; ci++)
        for (int kh = 0; kh < k; kh++)
            for (int kw = 0; kw < k; kw++) {
                float *row = col + ((size_t)(ci * k + kh) * k + kw) * ld;
                for (int j = 0; j < n; j++) {
                    const float *im = inp + ((size_t)ci * d->N + n0 + j) * H * W;
                    float *o = row + (size_t)j * HoWo;
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
static void col2im(float *dinp, const float *col, const nn_conv *d, int n0, int n)
{
    const int k = d->k, s = d->stride, p = d->pad, Ho = d->Ho, Wo = d->Wo, H = d->H, W = d->W;
    const size_t HoWo = (size_t)Ho * Wo, ld = (size_t)n * HoWo;
    for (int ci = 0; ci < d->Ci; ci++)
        for (int kh = 0; kh < k; kh++)
            for (int kw = 0; kw < k; kw++) {
                const float *row = col + ((size_t)(ci * k + kh) * k + kw) * ld;
                for (int j = 0; j < n; j++) {
                    float *im = dinp + ((size_t)ci * d->N + n0 + j) * H * W;
                    const float *o = row + (size_t)j * HoWo;
                    for (int oh = 0; oh < Ho; oh++) {
                        int ih = oh * s - p + kh;
                        if (ih < 0 || ih >= H) continue;
                        float *irow = im + (size_t)ih * W;
                        const float *orow = o + (size_t)oh * Wo;
                        if (s == 1) {
                            int lo = p - kw, hi = W + p - kw;
                            if (lo < 0) lo = 0;
                            if (hi > Wo) hi = Wo;
                            for (int ow = lo; ow < hi; ow++) irow[ow - p + kw] += orow[ow];
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

void conv2d_forward(float *out, const float *inp, const float *w, const nn_conv *d, float *work)
{
    const int K = d->Ci * d->k * d->k;
    const size_t HoWo = (size_t)d->Ho * d->Wo, NHoWo = (size_t)d->N * HoWo;
    if (conv_direct(d)) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->Co, (int)NHoWo, K, 1.0f, w, K, inp, (int)NHoWo, 0.0f, out,
                    (int)NHoWo);
        return;
    }
    for (int n0 = 0; n0 < d->N; n0 += d->chunk) {
        int n = d->N - n0 < d->chunk ? d->N - n0 : d->chunk;
        im2col(work, inp, d, n0, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->Co, (int)(n * HoWo), K, 1.0f, w, K, work, (int)(n * HoWo),
                    0.0f, out + n0 * HoWo, (int)NHoWo);
    }
}

void conv2d_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, const nn_conv *d, float *work)
{
    const int K = d->Ci * d->k * d->k;
    const size_t HoWo = (size_t)d->Ho * d->Wo, NHoWo = (size_t)d->N * HoWo;
    if (conv_direct(d)) {
        if (dw)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->Co, K, (int)NHoWo, 1.0f, dout, (int)NHoWo, inp, (int)NHoWo,
                        1.0f, dw, K);
        if (dinp)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, (int)NHoWo, d->Co, 1.0f, w, K, dout, (int)NHoWo, 1.0f, dinp,
                        (int)NHoWo);
        return;
    }
    for (int n0 = 0; n0 < d->N; n0 += d->chunk) {
        int n = d->N - n0 < d->chunk ? d->N - n0 : d->chunk;
        const int cols = (int)(n * HoWo);
        if (dw) {
            im2col(work, inp, d, n0, n);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->Co, K, cols, 1.0f, dout + n0 * HoWo, (int)NHoWo, work, cols,
                        1.0f, dw, K);
        }
        if (dinp) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, cols, d->Co, 1.0f, w, K, dout + n0 * HoWo, (int)NHoWo, 0.0f,
                        work, cols);
            col2im(dinp, work, d, n0, n);
        }
    }
}

/* ------------------------------------------------------------ batch norm */

/* Visit split s of channel c: runs of HW floats at images n = s, s+S, ... */
#define FOR_SPLIT(base, d, s, body)                                                                                    \
    for (int n_ = (s); n_ < (d)->N; n_ += (d)->S) {                                                                    \
        size_t o_ = (size_t)n_ * (d)->HW;                                                                              \
        for (int i_ = 0; i_ < (d)->HW; i_++) {                                                                         \
            size_t j = (base) + o_ + (size_t)i_;                                                                       \
            body;                                                                                                      \
        }                                                                                                              \
    }

void bn_forward(float *y, float *mean, float *invstd, float *rmean, float *rvar, const float *x, const float *res,
                const float *gamma, const float *beta, int relu, int train, const nn_bn *d)
{
    const size_t NHW = (size_t)d->N * d->HW;
    const int S = train ? d->S : 1;
    const double M = (double)(d->N / S) * d->HW;
    for (int c = 0; c < d->C; c++) {
        const size_t base = (size_t)c * NHW;
        double msum = 0, vsum = 0;
        for (int s = 0; s < S; s++) {
            float mu, is;
            if (train) {
                double sum = 0, sq = 0;
                if (S == 1)
                    for (size_t j = base; j < base + NHW; j++) sum += x[j];
                else
                    FOR_SPLIT(base, d, s, sum += x[j]);
                double m = sum / M;
                if (S == 1)
                    for (size_t j = base; j < base + NHW; j++) sq += (x[j] - m) * (x[j] - m);
                else
                    FOR_SPLIT(base, d, s, sq += (x[j] - m) * (x[j] - m));
                double var = sq / M;
                mu = (float)m;
                is = (float)(1.0 / sqrt(var + d->eps));
                mean[s * d->C + c] = mu, invstd[s * d->C + c] = is;
                msum += m, vsum += M > 1 ? var * M / (M - 1) : var;
            } else {
                mu = rmean[c];
                is = (float)(1.0 / sqrt((double)rvar[c] + d->eps));
            }
            const float a = is * gamma[c], b = beta[c] - mu * a;
#define BN_APPLY(j)                                                                                                    \
    do {                                                                                                               \
        float v = x[j] * a + b;                                                                                        \
        if (res) v += res[j];                                                                                          \
        if (relu && !(v > 0.0f)) v = v != v ? v : 0.0f;                                                                \
        y[j] = v;                                                                                                      \
    } while (0)
            if (S == 1)
                for (size_t j = base; j < base + NHW; j++) BN_APPLY(j);
            else
                FOR_SPLIT(base, d, s, BN_APPLY(j));
        }
        if (train) {
            rmean[c] = (float)((1.0 - d->momentum) * rmean[c] + d->momentum * (msum / S));
            rvar[c] = (float)((1.0 - d->momentum) * rvar[c] + d->momentum * (vsum / S));
        }
    }
}

void bn_backward(float *dx, float *dres, float *dgamma, float *dbeta, float *dout, const float *y, const float *x,
                 const float *mean, const float *invstd, const float *gamma, int relu, const nn_bn *d)
{
    const size_t NHW = (size_t)d->N * d->HW;
    const int S = d->S;
    const double M = (double)(d->N / S) * d->HW;
    for (int c = 0; c < d->C; c++) {
        const size_t base = (size_t)c * NHW;
        if (relu)
            for (size_t j = base; j < base + NHW; j++) dout[j] = y[j] > 0.0f ? dout[j] : 0.0f;
        if (dres)
            for (size_t j = base; j < base + NHW; j++) dres[j] += dout[j];
        for (int s = 0; s < S; s++) {
            const float mu = mean[s * d->C + c], is = invstd[s * d->C + c];
            double sdy = 0, sdyx = 0;
            if (S == 1)
                for (size_t j = base; j < base + NHW; j++) sdy += dout[j], sdyx += dout[j] * ((x[j] - mu) * is);
            else
                FOR_SPLIT(base, d, s, (sdy += dout[j], sdyx += dout[j] * ((x[j] - mu) * is)));
            if (dgamma) dgamma[c] += (float)sdyx;
            if (dbeta) dbeta[c] += (float)sdy;
            if (!dx) continue;
            const float g = gamma[c] * is, ma = (float)(sdy / M), mb = (float)(sdyx / M);
            if (S == 1)
                for (size_t j = base; j < base + NHW; j++) dx[j] += g * (dout[j] - ma - (x[j] - mu) * is * mb);
            else
                FOR_SPLIT(base, d, s, dx[j] += g * (dout[j] - ma - (x[j] - mu) * is * mb));
        }
    }
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

void maxpool_forward(float *out, const float *inp, const nn_pool *d)
{
    for (size_t p = 0; p < (size_t)d->C * d->N; p++) {
        const float *im = inp + p * d->H * d->W;
        float *o = out + p * d->Ho * d->Wo;
        for (int oh = 0; oh < d->Ho; oh++)
            for (int ow = 0; ow < d->Wo; ow++) o[oh * d->Wo + ow] = im[pool_argmax(im, d, oh, ow)];
    }
}

void maxpool_backward(float *dinp, const float *dout, const float *inp, const nn_pool *d)
{
    for (size_t p = 0; p < (size_t)d->C * d->N; p++) {
        const float *im = inp + p * d->H * d->W;
        const float *o = dout + p * d->Ho * d->Wo;
        float *di = dinp + p * d->H * d->W;
        for (int oh = 0; oh < d->Ho; oh++)
            for (int ow = 0; ow < d->Wo; ow++) di[pool_argmax(im, d, oh, ow)] += o[oh * d->Wo + ow];
    }
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

/* ----------------------------------------------------------- L2 normalise */

void l2norm_forward(float *out, const float *inp, int N, int F)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * F;
        double s = 0;
        for (int f = 0; f < F; f++) s += (double)x[f] * x[f];
        float nrm = (float)sqrt(s);
        if (nrm < 1e-12f) nrm = 1e-12f;
        for (int f = 0; f < F; f++) out[(size_t)n * F + f] = x[f] / nrm;
    }
}

void l2norm_backward(float *dinp, const float *dout, const float *inp, int N, int F)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * F, *g = dout + (size_t)n * F;
        double s = 0, dot = 0;
        for (int f = 0; f < F; f++) s += (double)x[f] * x[f], dot += (double)x[f] * g[f];
        double nrm = sqrt(s);
        float *dx = dinp + (size_t)n * F;
        if (nrm < 1e-12) { /* the clamp is active: out = x / 1e-12 */
            for (int f = 0; f < F; f++) dx[f] += g[f] / 1e-12f;
            continue;
        }
        for (int f = 0; f < F; f++) dx[f] += (float)((g[f] - x[f] * dot / s) / nrm);
    }
}

/* ---------------------------------------------------------------- InfoNCE */

float infonce_forward_backward(float *dq, float *logits, const float *q, const float *k, const float *queue, int N, int D,
                               int K, float T)
{
    const int L = K + 1;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, K, D, 1.0f / T, q, D, queue, K, 0.0f, logits + 1, L);
    double loss = 0;
    for (int n = 0; n < N; n++) {
        float *l = logits + (size_t)n * L;
        double pos = 0;
        for (int i = 0; i < D; i++) pos += (double)q[(size_t)n * D + i] * k[(size_t)n * D + i];
        l[0] = (float)(pos / T);
        float mx = l[0];
        for (int j = 1; j < L; j++) mx = l[j] > mx ? l[j] : mx;
        double se = 0;
        for (int j = 0; j < L; j++) se += exp((double)l[j] - mx);
        loss += log(se) + mx - l[0];
        if (!dq) continue;
        /* gradient of the mean loss w.r.t. the logits, in place */
        for (int j = 0; j < L; j++) l[j] = (float)(exp((double)l[j] - mx) / se / N);
        l[0] -= 1.0f / (float)N;
        for (int i = 0; i < D; i++) dq[(size_t)n * D + i] += l[0] / T * k[(size_t)n * D + i];
    }
    if (dq) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, D, K, 1.0f / T, logits + 1, L, queue, K, 1.0f, dq, D);
    return (float)(loss / N);
}
