/* nn_ref.c: slow, obvious reference versions of the layers in nn.h (direct
 * loops, double accumulators), kept for the tests to compare the fast
 * kernels with. Same layout and contract as the fast ones. */
#include "trainer/engine/nn.h"

#include <math.h>

static float in_at(const float *inp, const nn_conv *d, int ci, int n, int ih, int iw)
{
    if (ih < 0 || ih >= d->H || iw < 0 || iw >= d->W) return 0.0f;
    return inp[(((size_t)ci * d->N + n) * d->H + ih) * d->W + iw];
}

void conv2d_forward_ref(float *out, const float *inp, const float *w, const nn_conv *d)
{
    for (int co = 0; co < d->Co; co++)
        for (int n = 0; n < d->N; n++)
            for (int oh = 0; oh < d->Ho; oh++)
                for (int ow = 0; ow < d->Wo; ow++) {
                    double s = 0;
                    for (int ci = 0; ci < d->Ci; ci++)
                        for (int kh = 0; kh < d->k; kh++)
                            for (int kw = 0; kw < d->k; kw++)
                                s += (double)w[((co * d->Ci + ci) * d->k + kh) * d->k + kw] *
                                     in_at(inp, d, ci, n, oh * d->stride - d->pad + kh, ow * d->stride - d->pad + kw);
                    out[(((size_t)co * d->N + n) * d->Ho + oh) * d->Wo + ow] = (float)s;
                }
}

void conv2d_backward_ref(float *dinp, float *dw, const float *dout, const float *inp, const float *w, const nn_conv *d)
{
    for (int co = 0; co < d->Co; co++)
        for (int ci = 0; ci < d->Ci; ci++)
            for (int kh = 0; kh < d->k; kh++)
                for (int kw = 0; kw < d->k; kw++) {
                    double s = 0;
                    const size_t wi = (size_t)((co * d->Ci + ci) * d->k + kh) * d->k + kw;
                    for (int n = 0; n < d->N; n++)
                        for (int oh = 0; oh < d->Ho; oh++)
                            for (int ow = 0; ow < d->Wo; ow++) {
                                int ih = oh * d->stride - d->pad + kh, iw = ow * d->stride - d->pad + kw;
                                float g = dout[(((size_t)co * d->N + n) * d->Ho + oh) * d->Wo + ow];
                                s += (double)g * in_at(inp, d, ci, n, ih, iw);
                                if (dinp && ih >= 0 && ih < d->H && iw >= 0 && iw < d->W)
                                    dinp[(((size_t)ci * d->N + n) * d->H + ih) * d->W + iw] += g * w[wi];
                            }
                    if (dw) dw[wi] += (float)s;
                }
}

void bn_forward_ref(float *y, float *mean, float *invstd, float *rmean, float *rvar, const float *x, const float *gamma,
                    const float *beta, int train, const nn_bn *d)
{
    const int S = train ? d->S : 1, per = d->N / S;
    for (int c = 0; c < d->C; c++) {
        double rm = 0, rv = 0;
        for (int s = 0; s < S; s++) {
            double m = 0, v = 0, cnt = (double)per * d->HW;
            for (int n = s; n < d->N; n += S)
                for (int i = 0; i < d->HW; i++) m += x[((size_t)c * d->N + n) * d->HW + i];
            m /= cnt;
            for (int n = s; n < d->N; n += S)
                for (int i = 0; i < d->HW; i++) {
                    double t = x[((size_t)c * d->N + n) * d->HW + i] - m;
                    v += t * t;
                }
            v /= cnt;
            if (!train) m = rmean[c], v = rvar[c];
            else mean[s * d->C + c] = (float)m, invstd[s * d->C + c] = (float)(1.0 / sqrt(v + d->eps));
            rm += m, rv += v * cnt / (cnt - 1);
            for (int n = s; n < d->N; n += S)
                for (int i = 0; i < d->HW; i++) {
                    size_t j = ((size_t)c * d->N + n) * d->HW + i;
                    y[j] = (float)((x[j] - m) / sqrt(v + d->eps) * gamma[c] + beta[c]);
                }
        }
        if (train) {
            rmean[c] = (float)((1 - d->momentum) * rmean[c] + d->momentum * rm / S);
            rvar[c] = (float)((1 - d->momentum) * rvar[c] + d->momentum * rv / S);
        }
    }
}

void bn_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dout, const float *x, const float *mean,
                     const float *invstd, const float *gamma, const nn_bn *d)
{
    const int S = d->S, per = d->N / S;
    for (int c = 0; c < d->C; c++)
        for (int s = 0; s < S; s++) {
            double m = mean[s * d->C + c], is = invstd[s * d->C + c], cnt = (double)per * d->HW, sdy = 0, sdyx = 0;
            for (int n = s; n < d->N; n += S)
                for (int i = 0; i < d->HW; i++) {
                    size_t j = ((size_t)c * d->N + n) * d->HW + i;
                    sdy += dout[j], sdyx += dout[j] * (x[j] - m) * is;
                }
            dgamma[c] += (float)sdyx, dbeta[c] += (float)sdy;
            for (int n = s; n < d->N; n += S)
                for (int i = 0; i < d->HW; i++) {
                    size_t j = ((size_t)c * d->N + n) * d->HW + i;
                    double xh = (x[j] - m) * is;
                    dx[j] += (float)(gamma[c] * is * (dout[j] - sdy / cnt - xh * sdyx / cnt));
                }
        }
}

void linear_forward_ref(float *out, const float *inp, const float *w, const float *b, int N, int F, int O)
{
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            double s = b ? b[o] : 0;
            for (int f = 0; f < F; f++) s += (double)inp[(size_t)n * F + f] * w[(size_t)o * F + f];
            out[(size_t)n * O + o] = (float)s;
        }
}

void linear_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int N, int F, int O)
{
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            float g = dout[(size_t)n * O + o];
            if (db) db[o] += g;
            for (int f = 0; f < F; f++) {
                if (dw) dw[(size_t)o * F + f] += g * inp[(size_t)n * F + f];
                if (dinp) dinp[(size_t)n * F + f] += g * w[(size_t)o * F + f];
            }
        }
}
