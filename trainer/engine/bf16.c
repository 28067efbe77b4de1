/* bf16.c: bf16 mixed precision for the convolutions and linear layers of
 * nn.h (nn_conv_bf16, linear_*_bf16), on oneDNN (Debian's libdnnl-dev);
 * and the same convolutions with fp32 operands (nn_conv_onednn: one more
 * fp32 candidate, timed beside ours; on an Intel Xeon of family 6, model
 * 207 its backward beat our direct kernels at width 16), and on oneDNN's
 * fp32 Winograd F(4x4, 3x3) (nn_conv_onednn_wino: its chunks packed to the
 * blocked nChw16c layout instead of NHWC; there it won the 32- to
 * 128-channel stride-1 layers).
 *
 * Promise: every product takes operands rounded to bf16 (round to nearest
 * even, as vcvtneps2bf16 and PyTorch do) and accumulates in fp32; results
 * and gradients come back in fp32, in the same (C,N,H,W) / (N,F) buffers
 * and with the same semantics as the fp32 kernels (forward overwrites,
 * backward adds). oneDNN primitives are made once per layer (nn_conv_bf16,
 * nn_linear_bf16); weights are converted to bf16 once per pass (forward,
 * backward), never per chunk. Without oneDNN (MOCO_HAVE_DNNL unset: the
 * entry points are bf16_none.c's) or on a CPU without AVX512_BF16,
 * nn_bf16_available() refuses with MOCO_EINVAL and says why, and so does
 * every constructor.
 *
 * Convolutions run like the fp32 ones: chunks of images side by side on
 * the compute pool (par.h), oneDNN single-threaded inside each chunk. A
 * chunk is packed from (C,N,H,W) fp32 into NHWC bf16 (a 16x16 transpose in
 * registers, converted on the way: bf16_pack.c), convolved by oneDNN (brgconv / jit
 * avx512_core_bf16: vdpbf16ps, AMX where present) into NHWC fp32, and
 * transposed back. The last chunk is padded with zero images, so every
 * chunk uses the same primitives. 1x1 stride-1 convolutions are matmuls
 * straight on the (C,N,HW) rows instead (no transposes). Linear layers (the
 * heads: at most a few GFLOP per step) are one single-threaded oneDNN
 * matmul each: oneDNN never opens an OpenMP team, whose spinning threads
 * measured 3% of a width-16 step when the heads ran on two. */
#include "trainer/engine/nn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/errors.h"
#include "trainer/engine/bf16_pack.h"
#include "trainer/engine/conv3.h"
#include "trainer/engine/nhwc.h"
#include "trainer/engine/par.h"

#ifdef MOCO_HAVE_DNNL

#include <dnnl.h>
#include <omp.h>
#include <pthread.h>

/* --------------------------------------------------------- engine, streams */

static dnnl_engine_t engine;
static dnnl_stream_t streams[PAR_MAX_THREADS]; /* one per pool thread index, made on demand */
static pthread_mutex_t streams_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static dnnl_status_t engine_status = dnnl_success;

static void engine_init(void) { engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0); }

/* MOCO_BF16_EMULATE=1 (a test and measurement knob, not a training option):
 * on an AVX-512 CPU without AVX512_BF16, bf16 runs anyway, on oneDNN's
 * emulation of its bf16 kernels and on the integer form of
 * vcvtneps2bf16's rounding below (cvt16_emu), so that the bf16 path is
 * exercised and tested there (tests/test_bf16.c, tests/cli_bf16.sh). The
 * emulated kernels are slower than fp32's (an Ice Lake at width 16: 209
 * against about 500 pairs/s; docs/measurements.md, "The Ice Lake again"),
 * and with measured kernels the step is fp32's: users get the refusal. */
static int emulated;

static int emulate_asked(void)
{
    const char *e = getenv("MOCO_BF16_EMULATE");
    return e && !strcmp(e, "1");
}

int nn_bf16_emulated(void) { return emulated; }

int nn_bf16_available(void)
{
    /* MOCO_CONV3=0|1 makes the engine act as on a CPU without AVX-512: bf16 too */
    const char *capped = conv3_simd() < 2 && __builtin_cpu_supports("avx512f") ? getenv("MOCO_CONV3") : NULL;
    const int x512 = conv3_simd() == 2 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                     __builtin_cpu_supports("avx512dq");
    emulated = x512 && !__builtin_cpu_supports("avx512bf16") && emulate_asked();
    if (!(__builtin_cpu_supports("avx512bf16") && x512) && !emulated)
        return moco_err(MOCO_EINVAL, "--precision bf16 needs a CPU with AVX512_BF16 (Intel Cooper Lake, Sapphire Rapids or "
                                     "later; AMD Zen 4 or later); this one has none%s%s%s, and oneDNN's emulation is slower "
                                     "than our fp32 kernels: use --precision fp32", capped ? " (MOCO_CONV3=" : "",
                        capped ? capped : "", capped ? ": treated as a CPU without AVX-512)" : "");
    pthread_once(&engine_once, engine_init);
    if (engine_status != dnnl_success)
        return moco_err(MOCO_EINVAL, "oneDNN could not create its CPU engine (status %d)", (int)engine_status);
    return 0;
}

/* Streams 0..n-1 exist afterwards. */
static int need_streams(int n)
{
    int rc = 0;
    pthread_mutex_lock(&streams_mu);
    for (int i = 0; i < n && !rc; i++)
        if (!streams[i] && dnnl_stream_create(&streams[i], engine, dnnl_stream_default_flags) != dnnl_success)
            rc = moco_err(MOCO_ENOMEM, "oneDNN: cannot create a stream");
    pthread_mutex_unlock(&streams_mu);
    return rc;
}

static void to_bf16(uint16_t *dst, const float *src, size_t n) { bf16_convert(dst, src, n, emulated); }

void nn_bf16_round(float *x, size_t n) { bf16_round(x, n, emulated); }

/* ------------------------------------------------------------ the state */

/* per-thread memory objects of a conv */
enum { M_X, M_Y, M_DY, M_DX, M_DWP, M_DWA, M_SCR, M_PER };
/* ... of a 1x1 conv on matmuls (per thread and set) */
enum { MM_X, MM_XT, MM_Y, MM_DY, MM_DX, MM_DW, MM_SCR, MM_PER };

struct nn_lowp {
    int n, T;         /* conv: images per primitive call; threads */
    int f32;          /* conv: fp32 operands (nn_conv_onednn), else bf16 */
    int wino;         /* conv: fp32 on oneDNN's Winograd F(4x4,3x3) (nn_conv_onednn_wino), operands in nChw16c */
    int x512;         /* conv: the transposes in AVX-512 (bf16.c), else in AVX2 (nhwc.c; fp32 only, no nChw16c) */
    dnnl_primitive_t fwd, bwdd, bwdw, r_wf, r_wb, r_dw;
    size_t x_b, y_b, dy_b, dx_b, dwp_b, dwa_b, scr_b, wf_b, wb_b;
    size_t o_a, o_dy, o_dx, o_dwp, o_dwa, o_scr, per_b; /* per-thread layout (bytes) */
    dnnl_memory_t *m;  /* T * M_PER */
    dnnl_memory_t w32, wf, wb, wscr; /* shared: fp32 weights (caller's), bf16 copies, scratchpad of the weight reorders */
    /* 1x1 stride-1 convolutions as matmuls straight on the (C,N,HW) rows
     * (no transposes): set 0 for full chunks, set 1 for the last one */
    int mm, tail;
    dnnl_primitive_t mf[2], md[2], mw[2];
    dnnl_memory_t *mmem; /* T * 2 * MM_PER */
    dnnl_memory_t mwm[2], mwt[2]; /* shared: bf16 W (Co,Ci), and its transpose view */
    size_t mx_b, mdy_b, mdw_b; /* per thread: bf16 x chunk, bf16 dout chunk, private dW */
    /* linear */
    int N, F, O;
    uint16_t *wbf;     /* bf16 W (O,F), written by forward, read by backward */
    dnnl_memory_t lsrc, lwei, ldst, ldd_src, ldd_wei, ldd_dst, ldw_src, ldw_wei, ldw_dst, lscr;
    size_t lin_b, ldo_b;
};

#define DN(call, what)                                                                                                 \
    do {                                                                                                               \
        dnnl_status_t s_ = (call);                                                                                     \
        if (s_ != dnnl_success) {                                                                                      \
            rc = moco_err(MOCO_EINVAL, "oneDNN: %s failed (status %d)", what, (int)s_);                                \
            goto fail;                                                                                                 \
        }                                                                                                              \
    } while (0)

static size_t al64(size_t b) { return (b + 63) & ~(size_t)63; }

static size_t scratch_of(const_dnnl_primitive_desc_t pd)
{
    const dnnl_memory_desc_t *m = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    return m ? dnnl_memory_desc_get_size(m) : 0;
}

static dnnl_status_t user_scratch_attr(dnnl_primitive_attr_t *a, int sum)
{
    dnnl_status_t s = dnnl_primitive_attr_create(a);
    if (s == dnnl_success) s = dnnl_primitive_attr_set_scratchpad_mode(*a, dnnl_scratchpad_mode_user);
    if (s == dnnl_success && sum) {
        dnnl_post_ops_t po;
        s = dnnl_post_ops_create(&po);
        if (s == dnnl_success) {
            s = dnnl_post_ops_append_sum(po, 1.0f);
            if (s == dnnl_success) s = dnnl_primitive_attr_set_post_ops(*a, po);
            dnnl_post_ops_destroy(po);
        }
    }
    return s;
}

/* primitive of a primitive descriptor; the descriptor is destroyed */
static dnnl_status_t make(dnnl_primitive_t *p, dnnl_primitive_desc_t pd, size_t *scr)
{
    size_t s = scratch_of(pd);
    if (scr && s > *scr) *scr = s;
    dnnl_status_t st = dnnl_primitive_create(p, pd);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

static dnnl_status_t reorder(dnnl_primitive_t *p, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, int sum, size_t *scr)
{
    dnnl_primitive_attr_t a;
    dnnl_status_t s = user_scratch_attr(&a, sum);
    dnnl_primitive_desc_t pd = NULL;
    if (s == dnnl_success) s = dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, a);
    dnnl_primitive_attr_destroy(a);
    return s == dnnl_success ? make(p, pd, scr) : s;
}

static dnnl_memory_desc_t scratch_md(size_t bytes)
{
    dnnl_memory_desc_t m;
    dnnl_dims_t d = {(dnnl_dim_t)(bytes ? bytes : 1)};
    dnnl_memory_desc_init_by_tag(&m, 1, d, dnnl_u8, dnnl_a);
    return m;
}

void nn_lowp_free(nn_lowp **plp)
{
    nn_lowp *lp = plp ? *plp : NULL;
    if (!lp) return;
    dnnl_primitive_t ps[] = {lp->fwd, lp->bwdd, lp->bwdw, lp->r_wf, lp->r_wb, lp->r_dw, lp->mf[0], lp->mf[1], lp->md[0],
                             lp->md[1], lp->mw[0], lp->mw[1]};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++)
        if (ps[i]) dnnl_primitive_destroy(ps[i]);
    if (lp->m)
        for (int i = 0; i < lp->T * M_PER; i++)
            if (lp->m[i]) dnnl_memory_destroy(lp->m[i]);
    if (lp->mmem)
        for (int i = 0; i < lp->T * 2 * MM_PER; i++)
            if (lp->mmem[i]) dnnl_memory_destroy(lp->mmem[i]);
    free(lp->mmem);
    dnnl_memory_t ms[] = {lp->mwm[0], lp->mwm[1], lp->mwt[0], lp->mwt[1], lp->w32, lp->wf, lp->wb, lp->wscr, lp->lsrc, lp->lwei, lp->ldst, lp->ldd_src, lp->ldd_wei,
                          lp->ldd_dst, lp->ldw_src, lp->ldw_wei, lp->ldw_dst, lp->lscr};
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
        if (ms[i]) dnnl_memory_destroy(ms[i]);
    free(lp->m);
    free(lp->wbf);
    free(lp);
    *plp = NULL;
}

void nn_conv_free(nn_conv *d) { nn_lowp_free(&d->lp); }

/* Per-thread bytes of a chunk of images: packed input, and the larger of
 * the forward output or the backward buffers. */
static size_t chunk_bytes(const nn_conv *d, int n, size_t es)
{
    size_t x = (size_t)n * d->Ci * d->H * d->W, y = (size_t)n * d->Co * d->Ho * d->Wo;
    size_t f = es * x + 4 * y, b = es * x + es * y + 4 * x;
    return f > b ? f : b;
}

/* Images per chunk: the most whose buffers fit the budget (2 MB per
 * thread, L2-sized: the packed chunk is still in cache for the convolution,
 * and its output for the transpose back; MOCO_BF16_CHUNK_KB changes it), at
 * most N / threads, then evened out so that the chunks are equal and a
 * multiple of the threads in number. (Larger chunks for layers with large
 * weights, to write fewer partial weight gradients, measured no better on
 * resnet18-cifar width 64.) */
static int choose_chunk(const nn_conv *d, int T, size_t es)
{
    const char *e = getenv("MOCO_BF16_CHUNK_KB");
    long kb = e ? atol(e) : 0;
    size_t budget = (size_t)(kb > 0 ? kb : 2048) << 10;
    int most = (d->N + T - 1) / T, n = 1;
    while (n < most && chunk_bytes(d, n + 1, es) <= budget) n++;
    int chunks = (d->N + n - 1) / n;
    chunks = (chunks + T - 1) / T * T;
    n = (d->N + chunks - 1) / chunks;
    return n < 1 ? 1 : n;
}

/* matmul descriptor dims {r, c} with row stride ld (ld == c: dense) or,
 * tr, the transpose view of a dense (c, r) matrix */
static dnnl_status_t mat(dnnl_memory_desc_t *m, dnnl_dim_t r, dnnl_dim_t c, dnnl_data_type_t dt, dnnl_dim_t ld, int tr)
{
    dnnl_dims_t d = {r, c}, st = {tr ? 1 : ld, tr ? r : 1};
    return dnnl_memory_desc_init_by_strides(m, 2, d, dt, st);
}

/* The 1x1 stride-1 state: for a chunk of P = n*HW columns,
 *   forward   out[Co, P]  = W[Co, Ci] . x[Ci, P]     (out rows strided N*HW)
 *   data      dinp[Ci, P] += W^T . dout[Co, P]       (sum post-op)
 *   weights   dW[Co, Ci] += dout[Co, P] . x^T        (sum post-op)
 * x and dout converted to bf16 rows per chunk, W once per pass. */
static int conv1x1_mm(nn_conv *d, nn_lowp *lp, size_t *work_floats)
{
    int rc = 0;
    const int T = lp->T, Ci = d->Ci, Co = d->Co;
    const dnnl_dim_t HW = (dnnl_dim_t)d->H * d->W, ld = (dnnl_dim_t)d->N * HW;
    const int n = lp->n, chunks = (d->N + n - 1) / n, last = d->N - (chunks - 1) * n;
    lp->mm = 1, lp->tail = last != n;
    dnnl_primitive_attr_t attr = NULL, sattr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    DN(user_scratch_attr(&attr, 0), "attributes");
    DN(user_scratch_attr(&sattr, 1), "attributes");
    size_t scr = 0;
    dnnl_memory_desc_t w, wt, x[2], xt[2], y[2], dy[2], dx[2], dw;
    DN(mat(&w, Co, Ci, dnnl_bf16, Ci, 0), "descriptor");
    DN(mat(&wt, Ci, Co, dnnl_bf16, 0, 1), "descriptor");
    DN(mat(&dw, Co, Ci, dnnl_f32, Ci, 0), "descriptor");
    for (int k = 0; k < 1 + lp->tail; k++) {
        const dnnl_dim_t P = (dnnl_dim_t)(k ? last : n) * HW;
        DN(mat(&x[k], Ci, P, dnnl_bf16, P, 0), "descriptor");
        DN(mat(&xt[k], P, Ci, dnnl_bf16, 0, 1), "descriptor");
        DN(mat(&y[k], Co, P, dnnl_f32, ld, 0), "descriptor");
        DN(mat(&dy[k], Co, P, dnnl_bf16, P, 0), "descriptor");
        DN(mat(&dx[k], Ci, P, dnnl_f32, ld, 0), "descriptor");
        dnnl_matmul_desc_t md;
        dnnl_status_t s1;
        DN(dnnl_matmul_desc_init(&md, &w, &x[k], NULL, &y[k]), "matmul descriptor");
        DN(dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL), "1x1 matmul (forward)");
        s1 = make(&lp->mf[k], pd, &scr), pd = NULL;
        DN(s1, "matmul primitive");
        DN(dnnl_matmul_desc_init(&md, &wt, &dy[k], NULL, &dx[k]), "matmul descriptor");
        DN(dnnl_primitive_desc_create(&pd, &md, sattr, engine, NULL), "1x1 matmul (input gradient)");
        s1 = make(&lp->md[k], pd, &scr), pd = NULL;
        DN(s1, "matmul primitive");
        DN(dnnl_matmul_desc_init(&md, &dy[k], &xt[k], NULL, &dw), "matmul descriptor");
        DN(dnnl_primitive_desc_create(&pd, &md, sattr, engine, NULL), "1x1 matmul (weight gradient)");
        s1 = make(&lp->mw[k], pd, &scr), pd = NULL;
        DN(s1, "matmul primitive");
    }
    lp->mx_b = al64(sizeof(uint16_t) * (size_t)Ci * n * HW), lp->mdy_b = al64(sizeof(uint16_t) * (size_t)Co * n * HW);
    lp->mdw_b = al64(sizeof(float) * (size_t)Co * Ci), lp->scr_b = al64(scr);
    lp->per_b = lp->mx_b + lp->mdy_b + lp->mdw_b + lp->scr_b;
    lp->wf_b = al64(sizeof(uint16_t) * (size_t)Co * Ci);
    lp->mmem = calloc((size_t)T * 2 * MM_PER, sizeof *lp->mmem);
    if (!lp->mmem) {
        rc = moco_err(MOCO_ENOMEM, "out of memory");
        goto fail;
    }
    dnnl_memory_desc_t sm = scratch_md(scr);
    for (int k = 0; k < 1 + lp->tail; k++) {
        DN(dnnl_memory_create(&lp->mwm[k], &w, engine, DNNL_MEMORY_NONE), "memory");
        DN(dnnl_memory_create(&lp->mwt[k], &wt, engine, DNNL_MEMORY_NONE), "memory");
        for (int t = 0; t < T; t++) {
            dnnl_memory_t *m = lp->mmem + ((size_t)t * 2 + k) * MM_PER;
            DN(dnnl_memory_create(&m[MM_X], &x[k], engine, DNNL_MEMORY_NONE), "memory");
            DN(dnnl_memory_create(&m[MM_XT], &xt[k], engine, DNNL_MEMORY_NONE), "memory");
            DN(dnnl_memory_create(&m[MM_Y], &y[k], engine, DNNL_MEMORY_NONE), "memory");
            DN(dnnl_memory_create(&m[MM_DY], &dy[k], engine, DNNL_MEMORY_NONE), "memory");
            DN(dnnl_memory_create(&m[MM_DX], &dx[k], engine, DNNL_MEMORY_NONE), "memory");
            DN(dnnl_memory_create(&m[MM_DW], &dw, engine, DNNL_MEMORY_NONE), "memory");
            DN(dnnl_memory_create(&m[MM_SCR], &sm, engine, DNNL_MEMORY_NONE), "memory");
        }
    }
    *work_floats = ((size_t)T * lp->per_b + lp->wf_b + 64) / sizeof(float);
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (sattr) dnnl_primitive_attr_destroy(sattr);
    return rc;
}

/* Whether the fp32 path's transposes run in AVX-512 here (else in AVX2) */
static int onednn_x512(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && conv3_simd() == 2;
}

int nn_onednn_available(void)
{
    if (!onednn_x512() && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && conv3_simd() >= 1))
        return moco_err(MOCO_EINVAL, "oneDNN's fp32 convolutions run here only on a CPU with AVX2 and FMA, "
                                     "and not under MOCO_CONV3=0");
    pthread_once(&engine_once, engine_init);
    if (engine_status != dnnl_success)
        return moco_err(MOCO_EINVAL, "oneDNN could not create its CPU engine (status %d)", (int)engine_status);
    return 0;
}

int nn_onednn_wino_available(void)
{
    int rc = nn_onednn_available();
    if (rc) return rc;
    if (!onednn_x512()) /* nChw16c: the AVX-512 transposes only */
        return moco_err(MOCO_EINVAL, "oneDNN's Winograd convolutions run here only on a CPU with AVX-512 (F, BW, VL, DQ), "
                                     "and not under MOCO_CONV3=1");
    return 0;
}

/* The oneDNN state of a convolution: bf16 operands (f32 = 0) or fp32. */
static int conv_lowp(nn_conv *d, size_t *work_floats, int f32, int wino)
{
    int rc = wino ? nn_onednn_wino_available() : f32 ? nn_onednn_available() : nn_bf16_available();
    if (rc) return rc;
    const dnnl_data_type_t dt = f32 ? dnnl_f32 : dnnl_bf16;
    const size_t es = f32 ? 4 : 2;
    const char *what = wino ? "fp32 Winograd (oneDNN)" : f32 ? "fp32 (oneDNN)" : "bf16";
    nn_conv_free(d);
    const int T = d->nthreads < 1 ? 1 : d->nthreads;
    if ((rc = need_streams(T))) return rc;
    const char *e1 = getenv("MOCO_BF16_1X1"); /* "conv": 1x1 on the convolution primitives too (measurements) */
    if (!f32 && d->k == 1 && d->stride == 1 && d->pad == 0 && !(e1 && !strcmp(e1, "conv"))) {
        nn_lowp *lp = calloc(1, sizeof *lp);
        if (!lp) return moco_err(MOCO_ENOMEM, "out of memory");
        lp->T = T;
        omp_set_num_threads(1);
        lp->n = choose_chunk(d, T, es);
        if ((rc = conv1x1_mm(d, lp, work_floats))) {
            nn_lowp_free(&lp);
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", moco_errmsg());
            return moco_err(rc, "bf16 1x1 convolution %d->%d, %dx%d: %s", d->Ci, d->Co, d->H, d->W, msg);
        }
        d->lp = lp;
        d->chunk = lp->n, d->direct = 0, d->lanes = 0;
        d->work_per = lp->per_b / sizeof(float);
        return 0;
    }
    nn_lowp *lp = calloc(1, sizeof *lp);
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL, wpd = NULL;
    if (!lp) return moco_err(MOCO_ENOMEM, "out of memory");
    lp->T = T, lp->f32 = f32, lp->wino = wino, lp->x512 = !f32 || onednn_x512();
    const int n = choose_chunk(d, T, es);
    lp->n = n;
    omp_set_num_threads(1); /* the primitives run single-threaded inside the pool's chunks */
    dnnl_memory_desc_t x, y, wa, dy, dx, dwa, w32;
    dnnl_dims_t xd = {n, d->Ci, d->H, d->W}, yd = {n, d->Co, d->Ho, d->Wo}, wd = {d->Co, d->Ci, d->k, d->k};
    dnnl_dims_t st = {d->stride, d->stride}, pl = {d->pad, d->pad};
    /* right padding as PyTorch's output size implies */
    dnnl_dims_t pr = {(dnnl_dim_t)(d->Ho - 1) * d->stride + d->k - d->H - d->pad, (dnnl_dim_t)(d->Wo - 1) * d->stride + d->k - d->W - d->pad};
    const dnnl_format_tag_t tag = wino ? dnnl_nChw16c : dnnl_nhwc;
    const dnnl_alg_kind_t alg = wino ? dnnl_convolution_winograd : dnnl_convolution_direct;
    DN(dnnl_memory_desc_init_by_tag(&x, 4, xd, dt, tag), "source descriptor");
    DN(dnnl_memory_desc_init_by_tag(&y, 4, yd, dnnl_f32, tag), "destination descriptor");
    DN(dnnl_memory_desc_init_by_tag(&dy, 4, yd, dt, tag), "gradient descriptor");
    DN(dnnl_memory_desc_init_by_tag(&dx, 4, xd, dnnl_f32, tag), "input gradient descriptor");
    DN(dnnl_memory_desc_init_by_tag(&wa, 4, wd, dt, dnnl_format_tag_any), "weights descriptor");
    DN(dnnl_memory_desc_init_by_tag(&dwa, 4, wd, dnnl_f32, dnnl_format_tag_any), "weight gradient descriptor");
    DN(dnnl_memory_desc_init_by_tag(&w32, 4, wd, dnnl_f32, dnnl_oihw), "fp32 weights descriptor");
    DN(user_scratch_attr(&attr, 0), "attributes");
    dnnl_convolution_desc_t cd;
    DN(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, alg, &x, &wa, NULL, &y, st, pl, pr),
       "convolution forward descriptor");
    DN(dnnl_primitive_desc_create(&fpd, &cd, attr, engine, NULL), "convolution forward");
    DN(dnnl_convolution_backward_data_desc_init(&cd, alg, &dx, &wa, &dy, st, pl, pr),
       "convolution backward-data descriptor");
    DN(dnnl_primitive_desc_create(&bpd, &cd, attr, engine, fpd), "convolution backward-data");
    DN(dnnl_convolution_backward_weights_desc_init(&cd, alg, &x, &dwa, NULL, &dy, st, pl, pr),
       "convolution backward-weights descriptor");
    DN(dnnl_primitive_desc_create(&wpd, &cd, attr, engine, fpd), "convolution backward-weights");
    const dnnl_memory_desc_t wf = *dnnl_primitive_desc_query_md(fpd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t wb = *dnnl_primitive_desc_query_md(bpd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t dwp = *dnnl_primitive_desc_query_md(wpd, dnnl_query_diff_weights_md, 0);
    size_t scr = 0, wscr = 0;
    dnnl_status_t s1 = make(&lp->fwd, fpd, &scr);
    fpd = NULL;
    DN(s1, "convolution forward primitive");
    s1 = make(&lp->bwdd, bpd, &scr);
    bpd = NULL;
    DN(s1, "convolution backward-data primitive");
    s1 = make(&lp->bwdw, wpd, &scr);
    wpd = NULL;
    DN(s1, "convolution backward-weights primitive");
    DN(reorder(&lp->r_wf, &w32, &wf, 0, &wscr), "weights reorder");
    DN(reorder(&lp->r_wb, &w32, &wb, 0, &wscr), "weights reorder (backward)");
    DN(reorder(&lp->r_dw, &dwp, &w32, 1, &scr), "weight gradient reorder");
    lp->x_b = dnnl_memory_desc_get_size(&x), lp->y_b = dnnl_memory_desc_get_size(&y);
    lp->dy_b = dnnl_memory_desc_get_size(&dy), lp->dx_b = dnnl_memory_desc_get_size(&dx);
    lp->dwp_b = dnnl_memory_desc_get_size(&dwp), lp->dwa_b = dnnl_memory_desc_get_size(&w32);
    lp->wf_b = dnnl_memory_desc_get_size(&wf), lp->wb_b = dnnl_memory_desc_get_size(&wb);
    lp->scr_b = scr;
    /* per thread: x | (y) or (dy dx dwp) | dwa | scratchpad; then, shared, the bf16 weights and their reorder's scratchpad */
    size_t a = al64(lp->y_b), b = al64(lp->dy_b) + al64(lp->dx_b) + al64(lp->dwp_b);
    lp->o_a = al64(lp->x_b);
    lp->o_dy = lp->o_a, lp->o_dx = lp->o_dy + al64(lp->dy_b), lp->o_dwp = lp->o_dx + al64(lp->dx_b);
    lp->o_dwa = lp->o_a + (a > b ? a : b);
    lp->o_scr = lp->o_dwa + al64(lp->dwa_b);
    lp->per_b = lp->o_scr + al64(scr);
    size_t wmax = al64(lp->wf_b > lp->wb_b ? lp->wf_b : lp->wb_b);
    size_t total = (size_t)T * lp->per_b + wmax + al64(wscr) + 64;
    /* memory objects (handles set at each call) */
    lp->m = calloc((size_t)T * M_PER, sizeof *lp->m);
    if (!lp->m) {
        rc = moco_err(MOCO_ENOMEM, "out of memory");
        goto fail;
    }
    dnnl_memory_desc_t sm = scratch_md(scr), wsm = scratch_md(wscr);
    for (int t = 0; t < T; t++) {
        dnnl_memory_t *m = lp->m + (size_t)t * M_PER;
        DN(dnnl_memory_create(&m[M_X], &x, engine, DNNL_MEMORY_NONE), "memory");
        DN(dnnl_memory_create(&m[M_Y], &y, engine, DNNL_MEMORY_NONE), "memory");
        DN(dnnl_memory_create(&m[M_DY], &dy, engine, DNNL_MEMORY_NONE), "memory");
        DN(dnnl_memory_create(&m[M_DX], &dx, engine, DNNL_MEMORY_NONE), "memory");
        DN(dnnl_memory_create(&m[M_DWP], &dwp, engine, DNNL_MEMORY_NONE), "memory");
        DN(dnnl_memory_create(&m[M_DWA], &w32, engine, DNNL_MEMORY_NONE), "memory");
        DN(dnnl_memory_create(&m[M_SCR], &sm, engine, DNNL_MEMORY_NONE), "memory");
    }
    DN(dnnl_memory_create(&lp->w32, &w32, engine, DNNL_MEMORY_NONE), "memory");
    DN(dnnl_memory_create(&lp->wf, &wf, engine, DNNL_MEMORY_NONE), "memory");
    DN(dnnl_memory_create(&lp->wb, &wb, engine, DNNL_MEMORY_NONE), "memory");
    DN(dnnl_memory_create(&lp->wscr, &wsm, engine, DNNL_MEMORY_NONE), "memory");
    dnnl_primitive_attr_destroy(attr);
    d->lp = lp;
    d->chunk = n, d->direct = 0, d->lanes = 0;
    d->work_per = lp->per_b / sizeof(float);
    *work_floats = (total + sizeof(float) - 1) / sizeof(float);
    return 0;
fail:
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    if (wpd) dnnl_primitive_desc_destroy(wpd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    nn_lowp_free(&lp);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", moco_errmsg());
    return moco_err(rc, "%s convolution %d->%d, %dx%d, k %d, stride %d, pad %d: %s", what, d->Ci, d->Co, d->H, d->W, d->k,
                    d->stride, d->pad, msg);
}

int nn_conv_bf16(nn_conv *d, size_t *work_floats) { return conv_lowp(d, work_floats, 0, 0); }
int nn_conv_onednn(nn_conv *d, size_t *work_floats) { return conv_lowp(d, work_floats, 1, 0); }
int nn_conv_onednn_wino(nn_conv *d, size_t *work_floats) { return conv_lowp(d, work_floats, 1, 1); }

/* Failures while running are programming errors (the shapes were accepted
 * when the primitives were made): report and stop. */
static void run(dnnl_primitive_t p, int th, int nargs, const dnnl_exec_arg_t *args)
{
    dnnl_status_t s = dnnl_primitive_execute(p, streams[th], nargs, args);
    if (s != dnnl_success) {
        fprintf(stderr, "moco: oneDNN primitive failed while running (status %d)\n", (int)s);
        abort();
    }
}

static void seth(dnnl_memory_t m, void *p) { dnnl_memory_set_data_handle(m, p); }

static void reorder_run(dnnl_primitive_t r, dnnl_memory_t from, dnnl_memory_t to, dnnl_memory_t scr, int th)
{
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}, {DNNL_ARG_SCRATCHPAD, scr}};
    run(r, th, 3, a);
}

/* The scratch as the primitives use it: from its first 64-byte boundary
 * (the sizes above leave 64 bytes for it; Winograd's non-temporal stores
 * need the alignment, and a caller's buffer need not have it). */
static char *a64(float *work) { return (char *)(((uintptr_t)work + 63) & ~(uintptr_t)63); }

typedef struct {
    const nn_conv *d;
    float *out, *dinp, *dw;
    const float *inp, *dout;
    char *work;
} bf_job;

/* Task t of a job on thread th: images [n0, n0 + n) of the batch (n < lp->n
 * only in the last chunk, padded with zero images) and the thread's
 * workspace; oneDNN single-threaded inside (our pool runs the chunks). */
typedef struct {
    int n0, n;
    char *w;
} bf_chunk;

static bf_chunk chunk_of(const bf_job *j, int t, int th)
{
    const nn_lowp *lp = j->d->lp;
    omp_set_num_threads(1);
    bf_chunk c = {t * lp->n, 0, j->work + (size_t)th * lp->per_b};
    c.n = j->d->N - c.n0 < lp->n ? j->d->N - c.n0 : lp->n;
    return c;
}

/* Images [n0, n0 + P / HW) of C planes of src (row stride ld) into bf16, plane by plane. */
static void planes_to_bf16(uint16_t *dst, const float *src, int C, size_t ld, size_t off, size_t P)
{
    for (int c = 0; c < C; c++) to_bf16(dst + (size_t)c * P, src + (size_t)c * ld + off, P);
}

/* a chunk into the primitives' NHWC input: bf16, or fp32 (lp->f32) */
static void pack_any(const nn_lowp *lp, void *dst, const void *src, int half, int C, size_t ldc, size_t P, size_t Ppad, size_t bhw)
{
    if (!lp->x512) nhwc_pack_f32_avx2(dst, src, half, C, ldc, P, Ppad);
    else bf16_pack(dst, src, half, C, ldc, P, Ppad, bhw, lp->f32 ? BF16_TO_F32 : emulated ? BF16_TO_BF16_EMU : BF16_TO_BF16);
}

/* the primitives' NHWC output of a chunk back into (C, N, HW) rows */
static void unpack_any(const nn_lowp *lp, float *dst, const float *src, int C, size_t ldc, size_t P, int add, size_t bhw)
{
    if (lp->x512) bf16_unpack(dst, src, C, ldc, P, add, bhw);
    else nhwc_unpack_avx2(dst, src, C, ldc, P, add);
}

static void fwd_task(void *ctx, int t, int th)
{
    const bf_job *j = ctx;
    const nn_conv *d = j->d;
    const nn_lowp *lp = d->lp;
    const bf_chunk ch = chunk_of(j, t, th);
    const int n0 = ch.n0, n = ch.n;
    const size_t HWi = (size_t)d->H * d->W, HWo = (size_t)d->Ho * d->Wo;
    char *w = ch.w;
    dnnl_memory_t *m = lp->m + (size_t)th * M_PER;
    pack_any(lp, w, j->inp + (size_t)n0 * HWi, 0, d->Ci, (size_t)d->N * HWi, (size_t)n * HWi, (size_t)lp->n * HWi, lp->wino ? HWi : 0);
    seth(m[M_X], w), seth(m[M_Y], w + lp->o_a), seth(m[M_SCR], w + lp->o_scr);
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, m[M_X]}, {DNNL_ARG_WEIGHTS, lp->wf}, {DNNL_ARG_DST, m[M_Y]}, {DNNL_ARG_SCRATCHPAD, m[M_SCR]}};
    run(lp->fwd, th, 4, a);
    unpack_any(lp, j->out + (size_t)n0 * HWo, (const float *)(w + lp->o_a), d->Co, (size_t)d->N * HWo, (size_t)n * HWo, 0,
               lp->wino ? HWo : 0);
}

static void mm_fwd_task(void *ctx, int t, int th)
{
    const bf_job *j = ctx;
    const nn_conv *d = j->d;
    const nn_lowp *lp = d->lp;
    const bf_chunk ch = chunk_of(j, t, th);
    const int n0 = ch.n0, n = ch.n, k = n != lp->n;
    const size_t HW = (size_t)d->H * d->W, ld = (size_t)d->N * HW, P = (size_t)n * HW;
    char *w = ch.w;
    dnnl_memory_t *m = lp->mmem + ((size_t)th * 2 + k) * MM_PER;
    uint16_t *xb = (uint16_t *)w;
    planes_to_bf16(xb, j->inp, d->Ci, ld, (size_t)n0 * HW, P);
    seth(m[MM_X], xb), seth(m[MM_Y], j->out + (size_t)n0 * HW), seth(m[MM_SCR], w + lp->mx_b + lp->mdy_b + lp->mdw_b);
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, lp->mwm[k]}, {DNNL_ARG_WEIGHTS, m[MM_X]}, {DNNL_ARG_DST, m[MM_Y]}, {DNNL_ARG_SCRATCHPAD, m[MM_SCR]}};
    run(lp->mf[k], th, 4, a);
}

static void mm_bwd_task(void *ctx, int t, int th)
{
    const bf_job *j = ctx;
    const nn_conv *d = j->d;
    const nn_lowp *lp = d->lp;
    const bf_chunk ch = chunk_of(j, t, th);
    const int n0 = ch.n0, n = ch.n, k = n != lp->n;
    const size_t HW = (size_t)d->H * d->W, ld = (size_t)d->N * HW, P = (size_t)n * HW;
    char *w = ch.w;
    dnnl_memory_t *m = lp->mmem + ((size_t)th * 2 + k) * MM_PER;
    uint16_t *xb = (uint16_t *)w, *dyb = (uint16_t *)(w + lp->mx_b);
    planes_to_bf16(dyb, j->dout, d->Co, ld, (size_t)n0 * HW, P);
    seth(m[MM_DY], dyb), seth(m[MM_SCR], w + lp->mx_b + lp->mdy_b + lp->mdw_b);
    if (j->dw) {
        if (d->in_half) /* kept in bf16 already */
            for (int c = 0; c < d->Ci; c++) memcpy(xb + (size_t)c * P, (const uint16_t *)j->inp + (size_t)c * ld + (size_t)n0 * HW, 2 * P);
        else planes_to_bf16(xb, j->inp, d->Ci, ld, (size_t)n0 * HW, P);
        seth(m[MM_XT], xb), seth(m[MM_DW], th ? (void *)(w + lp->mx_b + lp->mdy_b) : (void *)j->dw);
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, m[MM_DY]}, {DNNL_ARG_WEIGHTS, m[MM_XT]}, {DNNL_ARG_DST, m[MM_DW]}, {DNNL_ARG_SCRATCHPAD, m[MM_SCR]}};
        run(lp->mw[k], th, 4, a);
    }
    if (j->dinp) {
        seth(m[MM_DX], j->dinp + (size_t)n0 * HW);
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, lp->mwt[k]}, {DNNL_ARG_WEIGHTS, m[MM_DY]}, {DNNL_ARG_DST, m[MM_DX]}, {DNNL_ARG_SCRATCHPAD, m[MM_SCR]}};
        run(lp->md[k], th, 4, a);
    }
}

/* the bf16 weights of a 1x1 conv into the shared area, and the views on them */
static void mm_weights(const nn_lowp *lp, const float *w, char *shared, size_t nw)
{
    to_bf16((uint16_t *)shared, w, nw);
    for (int k = 0; k < 1 + lp->tail; k++) seth(lp->mwm[k], shared), seth(lp->mwt[k], shared);
}

void conv2d_forward_bf16(float *out, const float *inp, const float *w, const nn_conv *d, float *work)
{
    const nn_lowp *lp = d->lp;
    if (lp->mm) {
        mm_weights(lp, w, a64(work) + (size_t)lp->T * lp->per_b, (size_t)d->Co * d->Ci);
        bf_job j = {d, out, NULL, NULL, inp, NULL, a64(work)};
        par_for_max((d->N + lp->n - 1) / lp->n, lp->T, mm_fwd_task, &j);
        return;
    }
    char *shared = a64(work) + (size_t)lp->T * lp->per_b;
    omp_set_num_threads(1);
    seth(lp->w32, (void *)w), seth(lp->wf, shared), seth(lp->wscr, shared + al64(lp->wf_b > lp->wb_b ? lp->wf_b : lp->wb_b));
    reorder_run(lp->r_wf, lp->w32, lp->wf, lp->wscr, 0);
    bf_job j = {d, out, NULL, NULL, inp, NULL, a64(work)};
    par_for_max((d->N + lp->n - 1) / lp->n, lp->T, fwd_task, &j);
}

static void bwd_task(void *ctx, int t, int th)
{
    const bf_job *j = ctx;
    const nn_conv *d = j->d;
    const nn_lowp *lp = d->lp;
    const bf_chunk ch = chunk_of(j, t, th);
    const int n0 = ch.n0, n = ch.n;
    const size_t HWi = (size_t)d->H * d->W, HWo = (size_t)d->Ho * d->Wo;
    char *w = ch.w;
    dnnl_memory_t *m = lp->m + (size_t)th * M_PER;
    pack_any(lp, w + lp->o_dy, j->dout + (size_t)n0 * HWo, 0, d->Co, (size_t)d->N * HWo, (size_t)n * HWo, (size_t)lp->n * HWo,
             lp->wino ? HWo : 0);
    seth(m[M_DY], w + lp->o_dy), seth(m[M_SCR], w + lp->o_scr);
    if (j->dw) {
        const void *x = d->in_half ? (const void *)((const uint16_t *)j->inp + (size_t)n0 * HWi) : (const void *)(j->inp + (size_t)n0 * HWi);
        pack_any(lp, w, x, d->in_half, d->Ci, (size_t)d->N * HWi, (size_t)n * HWi, (size_t)lp->n * HWi, lp->wino ? HWi : 0);
        seth(m[M_X], w), seth(m[M_DWP], w + lp->o_dwp);
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, m[M_X]}, {DNNL_ARG_DIFF_DST, m[M_DY]}, {DNNL_ARG_DIFF_WEIGHTS, m[M_DWP]},
                                {DNNL_ARG_SCRATCHPAD, m[M_SCR]}};
        run(lp->bwdw, th, 4, a);
        seth(m[M_DWA], th ? (void *)(w + lp->o_dwa) : (void *)j->dw); /* thread 0 adds straight into dw */
        reorder_run(lp->r_dw, m[M_DWP], m[M_DWA], m[M_SCR], th);
    }
    if (j->dinp) {
        seth(m[M_DX], w + lp->o_dx);
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_DIFF_DST, m[M_DY]}, {DNNL_ARG_WEIGHTS, lp->wb}, {DNNL_ARG_DIFF_SRC, m[M_DX]},
                                {DNNL_ARG_SCRATCHPAD, m[M_SCR]}};
        run(lp->bwdd, th, 4, a);
        unpack_any(lp, j->dinp + (size_t)n0 * HWi, (const float *)(w + lp->o_dx), d->Ci, (size_t)d->N * HWi, (size_t)n * HWi,
                   !d->dinp_set, lp->wino ? HWi : 0);
    }
}

void conv2d_backward_bf16(float *dinp, float *dw, const float *dout, const float *inp, const float *w, const nn_conv *d, float *work)
{
    const nn_lowp *lp = d->lp;
    char *wk = a64(work), *shared = wk + (size_t)lp->T * lp->per_b;
    omp_set_num_threads(1);
    if (lp->mm) {
        if (dinp) mm_weights(lp, w, shared, (size_t)d->Co * d->Ci);
        const int tasks = (d->N + lp->n - 1) / lp->n;
        int T = lp->T < tasks ? lp->T : tasks;
        if (T > par_threads()) T = par_threads();
        const size_t nw = (size_t)d->Co * d->Ci;
        if (dw)
            for (int t = 1; t < T; t++) memset(wk + (size_t)t * lp->per_b + lp->mx_b + lp->mdy_b, 0, sizeof(float) * nw);
        bf_job j = {d, NULL, dinp, dw, inp, dout, wk};
        par_for_fixed(tasks, T, mm_bwd_task, &j);
        if (dw)
            for (int t = 1; t < T; t++) {
                const float *p = (const float *)(wk + (size_t)t * lp->per_b + lp->mx_b + lp->mdy_b);
                for (size_t i = 0; i < nw; i++) dw[i] += p[i];
            }
        return;
    }
    if (dinp) {
        seth(lp->w32, (void *)w), seth(lp->wb, shared), seth(lp->wscr, shared + al64(lp->wf_b > lp->wb_b ? lp->wf_b : lp->wb_b));
        reorder_run(lp->r_wb, lp->w32, lp->wb, lp->wscr, 0);
    }
    const int tasks = (d->N + lp->n - 1) / lp->n;
    int T = lp->T < tasks ? lp->T : tasks;
    if (T > par_threads()) T = par_threads();
    const size_t nw = (size_t)d->Co * d->Ci * d->k * d->k;
    if (dw)
        for (int t = 1; t < T; t++) memset(wk + (size_t)t * lp->per_b + lp->o_dwa, 0, sizeof(float) * nw);
    bf_job j = {d, NULL, dinp, dw, inp, dout, wk};
    par_for_fixed(tasks, T, bwd_task, &j); /* per-thread dW sums: the same in every run */
    if (dw)
        for (int t = 1; t < T; t++) {
            const float *p = (const float *)(wk + (size_t)t * lp->per_b + lp->o_dwa);
            for (size_t i = 0; i < nw; i++) dw[i] += p[i];
        }
}

/* ------------------------------------------------------------------ linear */

int nn_linear_bf16(nn_lowp **out, int N, int F, int O, size_t *work_floats)
{
    *out = NULL;
    int rc = nn_bf16_available();
    if (rc) return rc;
    if ((rc = need_streams(1))) return rc;
    nn_lowp *lp = calloc(1, sizeof *lp);
    dnnl_primitive_attr_t attr = NULL, sattr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    if (!lp) return moco_err(MOCO_ENOMEM, "out of memory");
    lp->N = N, lp->F = F, lp->O = O, lp->T = 1;
    lp->wbf = malloc(sizeof(uint16_t) * (size_t)O * F);
    if (!lp->wbf) {
        rc = moco_err(MOCO_ENOMEM, "out of memory");
        goto fail;
    }
    omp_set_num_threads(1);
    dnnl_memory_desc_t x, wt, y, dy, w, dx, dyt, dw;
    dnnl_dims_t xd = {N, F}, wtd = {F, O}, yd = {N, O}, wd = {O, F}, dytd = {O, N};
    dnnl_dims_t wts = {1, F}, dyts = {1, O};
    DN(dnnl_memory_desc_init_by_tag(&x, 2, xd, dnnl_bf16, dnnl_ab), "descriptor");
    DN(dnnl_memory_desc_init_by_strides(&wt, 2, wtd, dnnl_bf16, wts), "descriptor"); /* W^T, a view of W (O,F) */
    DN(dnnl_memory_desc_init_by_tag(&y, 2, yd, dnnl_f32, dnnl_ab), "descriptor");
    DN(dnnl_memory_desc_init_by_tag(&dy, 2, yd, dnnl_bf16, dnnl_ab), "descriptor");
    DN(dnnl_memory_desc_init_by_tag(&w, 2, wd, dnnl_bf16, dnnl_ab), "descriptor");
    DN(dnnl_memory_desc_init_by_tag(&dx, 2, xd, dnnl_f32, dnnl_ab), "descriptor");
    DN(dnnl_memory_desc_init_by_strides(&dyt, 2, dytd, dnnl_bf16, dyts), "descriptor"); /* dout^T */
    DN(dnnl_memory_desc_init_by_tag(&dw, 2, wd, dnnl_f32, dnnl_ab), "descriptor");
    DN(user_scratch_attr(&attr, 0), "attributes");
    DN(user_scratch_attr(&sattr, 1), "attributes");
    size_t scr = 0;
    dnnl_matmul_desc_t md;
    dnnl_status_t s1;
    DN(dnnl_matmul_desc_init(&md, &x, &wt, NULL, &y), "matmul descriptor");
    DN(dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL), "matmul (forward)");
    s1 = make(&lp->fwd, pd, &scr), pd = NULL;
    DN(s1, "matmul primitive");
    DN(dnnl_matmul_desc_init(&md, &dy, &w, NULL, &dx), "matmul descriptor");
    DN(dnnl_primitive_desc_create(&pd, &md, sattr, engine, NULL), "matmul (input gradient)");
    s1 = make(&lp->bwdd, pd, &scr), pd = NULL;
    DN(s1, "matmul primitive");
    DN(dnnl_matmul_desc_init(&md, &dyt, &x, NULL, &dw), "matmul descriptor");
    DN(dnnl_primitive_desc_create(&pd, &md, sattr, engine, NULL), "matmul (weight gradient)");
    s1 = make(&lp->bwdw, pd, &scr), pd = NULL;
    DN(s1, "matmul primitive");
    dnnl_memory_desc_t sm = scratch_md(scr);
    DN(dnnl_memory_create(&lp->lsrc, &x, engine, DNNL_MEMORY_NONE), "memory");
    DN(dnnl_memory_create(&lp->lwei, &wt, engine, lp->wbf), "memory");
    DN(dnnl_memory_create(&lp->ldst, &y, engine, DNNL_MEMORY_NONE), "memory");
    DN(dnnl_memory_create(&lp->ldd_src, &dy, engine, DNNL_MEMORY_NONE), "memory");
    DN(dnnl_memory_create(&lp->ldd_wei, &w, engine, lp->wbf), "memory");
    DN(dnnl_memory_create(&lp->ldd_dst, &dx, engine, DNNL_MEMORY_NONE), "memory");
    DN(dnnl_memory_create(&lp->ldw_src, &dyt, engine, DNNL_MEMORY_NONE), "memory");
    DN(dnnl_memory_create(&lp->ldw_wei, &x, engine, DNNL_MEMORY_NONE), "memory");
    DN(dnnl_memory_create(&lp->ldw_dst, &dw, engine, DNNL_MEMORY_NONE), "memory");
    DN(dnnl_memory_create(&lp->lscr, &sm, engine, DNNL_MEMORY_NONE), "memory");
    omp_set_num_threads(1);
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_attr_destroy(sattr);
    lp->lin_b = al64(sizeof(uint16_t) * (size_t)N * F), lp->ldo_b = al64(sizeof(uint16_t) * (size_t)N * O);
    lp->scr_b = scr;
    *work_floats = (lp->lin_b + lp->ldo_b + al64(scr) + 64) / sizeof(float);
    *out = lp;
    return 0;
fail:
    omp_set_num_threads(1);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (sattr) dnnl_primitive_attr_destroy(sattr);
    nn_lowp_free(&lp);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", moco_errmsg());
    return moco_err(rc, "bf16 linear layer %d x %d -> %d: %s", N, F, O, msg);
}

void linear_forward_bf16(float *out, const float *inp, const float *w, const float *b, const nn_lowp *lp, float *work)
{
    const int N = lp->N, F = lp->F, O = lp->O;
    char *wk = a64(work);
    to_bf16((uint16_t *)wk, inp, (size_t)N * F);
    to_bf16(lp->wbf, w, (size_t)O * F);
    seth(lp->lsrc, wk), seth(lp->ldst, out), seth(lp->lscr, wk + lp->lin_b + lp->ldo_b);
    omp_set_num_threads(1);
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, lp->lsrc}, {DNNL_ARG_WEIGHTS, lp->lwei}, {DNNL_ARG_DST, lp->ldst}, {DNNL_ARG_SCRATCHPAD, lp->lscr}};
    run(lp->fwd, 0, 4, a);
    if (b)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++) out[(size_t)n * O + o] += b[o];
}

void linear_backward_bf16(float *dinp, float *dw, float *db, const float *dout, const float *inp, const nn_lowp *lp, float *work)
{
    const int N = lp->N, F = lp->F, O = lp->O;
    char *wk = a64(work);
    uint16_t *xb = (uint16_t *)wk, *dyb = (uint16_t *)(wk + lp->lin_b);
    to_bf16(dyb, dout, (size_t)N * O);
    seth(lp->lscr, wk + lp->lin_b + lp->ldo_b);
    omp_set_num_threads(1);
    if (dw) {
        to_bf16(xb, inp, (size_t)N * F);
        seth(lp->ldw_src, dyb), seth(lp->ldw_wei, xb), seth(lp->ldw_dst, dw);
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, lp->ldw_src}, {DNNL_ARG_WEIGHTS, lp->ldw_wei}, {DNNL_ARG_DST, lp->ldw_dst},
                                {DNNL_ARG_SCRATCHPAD, lp->lscr}};
        run(lp->bwdw, 0, 4, a);
    }
    if (dinp) {
        seth(lp->ldd_src, dyb), seth(lp->ldd_dst, dinp);
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, lp->ldd_src}, {DNNL_ARG_WEIGHTS, lp->ldd_wei}, {DNNL_ARG_DST, lp->ldd_dst},
                                {DNNL_ARG_SCRATCHPAD, lp->lscr}};
        run(lp->bwdd, 0, 4, a);
    }
    if (db)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++) db[o] += dout[(size_t)n * O + o];
}

int nn_conv_sets_dinp(const nn_conv *d) { return d->lp && !d->lp->mm; }

#endif /* MOCO_HAVE_DNNL; without it, bf16_none.c */
