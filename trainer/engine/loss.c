/* loss.c: the loss end of nn.h: L2 normalisation of rows, the softmax rows
 * (nn_row_max / nn_row_expsum, on glibc's libmvec where the CPU has AVX-512
 * or AVX2, at conv3_simd()'s level) and InfoNCE, its rows side by side on
 * the compute pool and its sums in row order (the same on any threads). */
#include "trainer/engine/nn.h"

#include "trainer/engine/conv3.h"
#include "trainer/engine/par.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#define LOSS_X86 1 /* the libmvec paths, picked at run time */
#endif

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

/* ---------------------------------------------------------- softmax rows */

/* t + the sum of exp(l[i] - mx), added in order (e: the terms), on the scalar exp */
static double row_expsum_plain(float *e, const float *l, int n, float mx, double t)
{
    for (int i = 0; i < n; i++) {
        double v = exp((double)l[i] - mx);
        t += v;
        if (e) e[i] = (float)v;
    }
    return t;
}

#ifdef LOSS_X86
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl")
__m512d _ZGVeN8v_exp(__m512d); /* glibc's libmvec */
static float row_max_512(const float *l, int n)
{
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16) { /* max(a, b) is b where a is NaN */
        const __mmask16 k = (__mmask16)(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
        m = _mm512_mask_max_ps(m, k, _mm512_maskz_loadu_ps(k, l + i), m);
    }
    return _mm512_reduce_max_ps(m);
}
static double row_expsum_512(float *e, const float *l, int n, float mx)
{
    __m512d s = _mm512_setzero_pd();
    const __m512d m = _mm512_set1_pd(mx);
    for (int i = 0; i < n; i += 8) {
        const __mmask8 k = (__mmask8)(n - i >= 8 ? 0xFF : (1u << (n - i)) - 1);
        __m512d v = _ZGVeN8v_exp(_mm512_sub_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, l + i)), m));
        s = _mm512_mask_add_pd(s, k, s, v);
        if (e) _mm256_mask_storeu_ps(e + i, k, _mm512_cvtpd_ps(v));
    }
    return _mm512_reduce_add_pd(s);
}
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2")
__m256d _ZGVdN4v_exp(__m256d); /* glibc's libmvec */
static double row_expsum_avx2(float *e, const float *l, int n, float mx)
{
    __m256d s = _mm256_setzero_pd();
    const __m256d m = _mm256_set1_pd(mx);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d v = _ZGVdN4v_exp(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(l + i)), m));
        s = _mm256_add_pd(s, v);
        if (e) _mm_storeu_ps(e + i, _mm256_cvtpd_ps(v));
    }
    double a[4];
    _mm256_storeu_pd(a, s);
    return row_expsum_plain(e ? e + i : NULL, l + i, n - i, mx, (a[0] + a[2]) + (a[1] + a[3]));
}
#pragma GCC pop_options
#endif

static float row_max_plain(const float *l, int n)
{
    float m = -INFINITY;
    for (int i = 0; i < n; i++) m = l[i] > m ? l[i] : m;
    return m;
}

#ifdef LOSS_X86
/* the SIMD level of the softmax rows: conv3_simd()'s (so MOCO_CONV3 and
 * conv3_set_simd lower it too, for the tests), AVX-512 needing VL as well */
static int rows_simd(void)
{
    const int l = conv3_simd();
    return l == 2 && !__builtin_cpu_supports("avx512vl") ? 1 : l;
}
#endif

float nn_row_max(const float *l, int n)
{
#ifdef LOSS_X86
    if (rows_simd() == 2) return row_max_512(l, n);
#endif
    return row_max_plain(l, n);
}

double nn_row_expsum(float *e, const float *l, int n, float mx)
{
#ifdef LOSS_X86
    const int simd = rows_simd();
    if (simd == 2) return row_expsum_512(e, l, n, mx);
    if (simd == 1) return row_expsum_avx2(e, l, n, mx);
#endif
    return row_expsum_plain(e, l, n, mx, 0);
}

/* ---------------------------------------------------------------- InfoNCE */

typedef struct { float *dq, *logits; const float *q, *k; double *rowloss; int *rowright; int N, D, L, base; float T; } infonce_job;

#define INFONCE_ROWS 8 /* rows per task */

/* rows of infonce_forward_backward: the positive logit, the row's loss
 * (into rowloss[n - base]) and whether the positive is on top (rowright),
 * and with dq the logits' gradient and dq's positive term */
static void infonce_rows(void *ctx, int t, int th)
{
    (void)th;
    const infonce_job *j = ctx;
    const int D = j->D, L = j->L, N = j->N;
    const float T = j->T;
    for (int n = t * INFONCE_ROWS; n < N && n < (t + 1) * INFONCE_ROWS; n++) {
        float *l = j->logits + (size_t)n * L;
        double pos = 0;
        for (int i = 0; i < D; i++) pos += (double)j->q[(size_t)n * D + i] * j->k[(size_t)n * D + i];
        const float l0 = l[0] = (float)(pos / T);
        const float neg = nn_row_max(l + 1, L - 1), mx = l0 > neg ? l0 : neg;
        j->rowright[n - j->base] = l0 >= neg;
        const double se = nn_row_expsum(j->dq ? l : NULL, l, L, mx); /* with dq: l = the terms */
        j->rowloss[n - j->base] = log(se) + mx - l0;
        if (j->dq) nn_infonce_grad_row(l, se, j->dq + (size_t)n * D, j->k + (size_t)n * D, N, D, L, T);
    }
}

void nn_infonce_grad_row(float *e, double se, float *dq, const float *k, int N, int D, int L, float T)
{
    const double s = 1.0 / (se * N);
    for (int i = 0; i < L; i++) e[i] = (float)(e[i] * s);
    e[0] -= 1.0f / (float)N;
    for (int i = 0; i < D; i++) dq[i] += e[0] / T * k[i];
}

float infonce_forward_backward(float *dq, float *logits, int *right, const float *q, const float *k, const float *queue, int N,
                               int D, int K, float T)
{
    const int L = K + 1;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, K, D, 1.0f / T, q, D, queue, K, 0.0f, logits + 1, L);
    /* the row losses, added in row order (the same on any threads); one
     * task, or no memory for them all: a task at a time, on this thread */
    double one[INFONCE_ROWS], *rowloss = N <= INFONCE_ROWS ? NULL : malloc((sizeof(double) + sizeof(int)) * (size_t)N);
    int oner[INFONCE_ROWS];
    infonce_job j = {dq, logits, q, k, rowloss ? rowloss : one, rowloss ? (int *)(rowloss + N) : oner, N, D, L, 0, T};
    const int tasks = (N + INFONCE_ROWS - 1) / INFONCE_ROWS;
    if (rowloss) par_for(tasks, infonce_rows, &j);
    double loss = 0;
    int r = 0;
    for (int t = 0; t < tasks; t++) {
        if (!rowloss) j.base = t * INFONCE_ROWS, infonce_rows(&j, t, 0);
        for (int n = t * INFONCE_ROWS; n < N && n < (t + 1) * INFONCE_ROWS; n++) loss += j.rowloss[n - j.base], r += j.rowright[n - j.base];
    }
    free(rowloss);
    if (right) *right = r;
    if (dq) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, D, K, 1.0f / T, logits + 1, L, queue, K, 1.0f, dq, D);
    return (float)(loss / N);
}
