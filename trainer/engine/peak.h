/* peak.h: this CPU's arithmetic peak, measured rather than looked up: chains
 * of independent multiply-adds in registers (no memory), on one thread and
 * on all the pool's threads at once. The ratio of the two says whether the
 * threads have cores of their own (about their count) or share one (about
 * 1: two hyperthreads, which a virtual machine may present as two cores).
 * Against the peak, a step's model FLOP/s is the share of the machine it
 * uses (as llm.c's MFU). fp32: AVX-512 or AVX2+FMA multiply-adds (2 FLOP a
 * lane); bf16: AVX512_BF16 dot products (vdpbf16ps, 2 products a lane, 4
 * FLOP). A kind the CPU lacks reads 0. */
#ifndef TRAINER_ENGINE_PEAK_H
#define TRAINER_ENGINE_PEAK_H

typedef struct {
    const char *isa;    /* "avx512", "avx2" or "none" (fp32 not measured) */
    int threads;        /* the pool's threads, all busy in `all` */
    double fp32_one;    /* GFLOP/s, one thread alone */
    double fp32_all;    /* GFLOP/s, all threads together */
    double bf16_one;    /* vdpbf16ps, GFLOP/s; 0 without AVX512_BF16 */
    double bf16_all;
} nn_peak;

/* Measures (about 0.1-0.3 s) on the pool's threads (par_threads()). */
void nn_peak_measure(nn_peak *p);

#endif
