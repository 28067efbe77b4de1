/* peak.c: the measured peak of peak.h. Each thread runs 12 independent
 * accumulator chains (enough to cover a multiply-add's latency on two
 * ports), a = a * 0.5 + 0.5 (fp32, converging to 1: no overflow, no
 * subnormals) or a += x . y (bf16 pairs of small values); the best of
 * 7 rounds counts, one thread and all threads in turns. The instruction set is the one the direct kernels
 * use (conv3_simd(), so MOCO_CONV3=1 measures AVX2 as it runs them). */
#include "trainer/engine/peak.h"

#include "formats/clock.h"
#include "trainer/engine/conv3.h"
#include "trainer/engine/par.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PEAK_X86 1
#else
#define PEAK_X86 0
#endif

#if PEAK_X86
enum { CHAINS = 12, ROUNDS = 7 };
static const long ITERS = 1L << 22; /* per round and thread: 12 x 16 x 2 x 2^22 = 1.6 GFLOP in AVX-512 fp32, a few ms */

#define STEP12(op) \
    op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11)

__attribute__((target("avx512f"))) static float run512(long n)
{
    __m512 a[CHAINS], m = _mm512_set1_ps(0.5f);
    for (int i = 0; i < CHAINS; i++) a[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < n; k++) {
#define F(i) a[i] = _mm512_fmadd_ps(a[i], m, m);
        STEP12(F)
#undef F
    }
    __m512 s = a[0];
    for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float run256(long n)
{
    __m256 a[CHAINS], m = _mm256_set1_ps(0.5f);
    for (int i = 0; i < CHAINS; i++) a[i] = _mm256_set1_ps((float)i);
    for (long k = 0; k < n; k++) {
#define F(i) a[i] = _mm256_fmadd_ps(a[i], m, m);
        STEP12(F)
#undef F
    }
    __m256 s = a[0];
    for (int i = 1; i < CHAINS; i++) s = _mm256_add_ps(s, a[i]);
    float v[8], t = 0;
    _mm256_storeu_ps(v, s);
    for (int i = 0; i < 8; i++) t += v[i];
    return t;
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) static float runbf16(long n)
{
    __m512 a[CHAINS];
    __m512bh x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-4f), _mm512_set1_ps(1e-4f));
    for (int i = 0; i < CHAINS; i++) a[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < n; k++) {
#define F(i) a[i] = _mm512_dpbf16_ps(a[i], x, x);
        STEP12(F)
#undef F
    }
    __m512 s = a[0];
    for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}

typedef struct {
    float (*fn)(long);
    volatile float sink[PAR_MAX_THREADS];
} job;

static void task(void *ctx, int t, int thread)
{
    (void)thread;
    job *j = ctx;
    j->sink[t] = j->fn(ITERS);
}

/* GFLOP/s of fn (flop per iteration given) on one thread (*one) and on `threads` threads at once
 * (*all), the best of ROUNDS each, the two taken in turns: a passing disturbance (another process
 * a moment on a core) then weighs on both alike, not on one of them (a scale of 2.55 on 2 threads
 * was read when the one-thread rounds all came first) */
static void measure(float (*fn)(long), double flop_per_iter, int threads, double *one, double *all)
{
    job j = {.fn = fn};
    double best1 = 1e30, bestn = 1e30;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = moco_now_s();
        j.sink[0] = fn(ITERS);
        double d1 = moco_now_s() - t0, dn = d1;
        if (threads > 1) { /* twice, the first untimed: the other cores wake up and power their vector units */
            par_for_fixed(threads, threads, task, &j);
            double t1 = moco_now_s();
            par_for_fixed(threads, threads, task, &j);
            dn = moco_now_s() - t1;
        }
        best1 = d1 < best1 ? d1 : best1;
        bestn = dn < bestn ? dn : bestn;
    }
    *one = flop_per_iter * (double)ITERS / best1 / 1e9;
    *all = threads > 1 ? flop_per_iter * (double)ITERS * threads / bestn / 1e9 : *one;
}
#endif /* PEAK_X86: elsewhere no peak is measured (isa "none") */

void nn_peak_measure(nn_peak *p)
{
    *p = (nn_peak){.isa = "none", .threads = par_threads()};
#if PEAK_X86
    int level = conv3_simd();
    float (*fn)(long) = level == 2 ? run512 : level == 1 ? run256 : NULL;
    if (fn) {
        double flop = CHAINS * (level == 2 ? 16 : 8) * 2.0;
        p->isa = level == 2 ? "avx512" : "avx2";
        measure(fn, flop, p->threads, &p->fp32_one, &p->fp32_all);
    }
    if (level == 2 && __builtin_cpu_supports("avx512bf16")) {
        measure(runbf16, CHAINS * 16 * 4.0, p->threads, &p->bf16_one, &p->bf16_all);
    }
#endif
}
