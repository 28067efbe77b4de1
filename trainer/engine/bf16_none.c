/* bf16_none.c: the entry points of bf16.c in a build without oneDNN
 * (MOCO_HAVE_DNNL unset, `make DNNL=0`): every constructor refuses with
 * MOCO_EINVAL and says why, nn_conv_sets_dinp is 0, the rest do nothing
 * (nothing can have been made for them to run). */
#include "trainer/engine/nn.h"

#include <stdint.h>

#include "formats/errors.h"

#ifndef MOCO_HAVE_DNNL

int nn_conv_sets_dinp(const nn_conv *d)
{
    (void)d;
    return 0;
}

int nn_bf16_available(void)
{
#if defined(__x86_64__)
    return moco_err(MOCO_EINVAL, "--precision bf16 needs oneDNN, and this moco was built without it: install libdnnl-dev "
                                 "(tools/install-deps.sh does), rebuild, or use --precision fp32");
#else /* the Makefile builds with oneDNN on x86-64 only: bf16.c and bf16_pack.c hold AVX-512 code */
    return moco_err(MOCO_EINVAL, "--precision bf16 runs on x86-64 CPUs only (oneDNN with our AVX-512 code): this moco was built "
                                 "for another CPU; use --precision fp32");
#endif
}

int nn_bf16_emulated(void) { return 0; }

void nn_bf16_round(float *x, size_t n)
{
    (void)x, (void)n;
}

void nn_lowp_free(nn_lowp **lp)
{
    if (lp) *lp = NULL;
}

void nn_conv_free(nn_conv *d) { d->lp = NULL; }

int nn_conv_bf16(nn_conv *d, size_t *work_floats)
{
    (void)d, (void)work_floats;
    return nn_bf16_available();
}

int nn_onednn_available(void)
{
    return moco_err(MOCO_EINVAL, "this moco was built without oneDNN (libdnnl-dev): no oneDNN fp32 convolutions");
}

int nn_onednn_wino_available(void) { return nn_onednn_available(); }

int nn_conv_onednn(nn_conv *d, size_t *work_floats)
{
    (void)d, (void)work_floats;
    return nn_onednn_available();
}

int nn_conv_onednn_wino(nn_conv *d, size_t *work_floats)
{
    (void)d, (void)work_floats;
    return nn_onednn_available();
}

int nn_linear_bf16(nn_lowp **out, int N, int F, int O, size_t *work_floats)
{
    (void)N, (void)F, (void)O, (void)work_floats;
    *out = NULL;
    return nn_bf16_available();
}

void conv2d_forward_bf16(float *out, const float *inp, const float *w, const nn_conv *d, float *work)
{
    (void)out, (void)inp, (void)w, (void)d, (void)work;
}

void conv2d_backward_bf16(float *dinp, float *dw, const float *dout, const float *inp, const float *w, const nn_conv *d, float *work)
{
    (void)dinp, (void)dw, (void)dout, (void)inp, (void)w, (void)d, (void)work;
}

void linear_forward_bf16(float *out, const float *inp, const float *w, const float *b, const nn_lowp *lp, float *work)
{
    (void)out, (void)inp, (void)w, (void)b, (void)lp, (void)work;
}

void linear_backward_bf16(float *dinp, float *dw, float *db, const float *dout, const float *inp, const nn_lowp *lp, float *work)
{
    (void)dinp, (void)dw, (void)db, (void)dout, (void)inp, (void)lp, (void)work;
}

#endif
