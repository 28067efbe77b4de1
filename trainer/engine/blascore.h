/* blascore.h: OpenBLAS's kernel set against what the CPU can run.
 *
 * Debian's OpenBLAS (0.3.21, DYNAMIC_ARCH) picks its kernels once, when it
 * loads, from the CPU model, or from $OPENBLAS_CORETYPE when that is set. On
 * a model newer than it knows it falls back to its SSE3 ("Prescott")
 * kernels: on an Intel Xeon of family 6, model 207 (AVX-512 with
 * AVX512_BF16) sgemm ran at 26-44 GFLOP/s on 2 threads there against
 * 127-262 with the SkylakeX or Cooperlake set. Only a restart with
 * $OPENBLAS_CORETYPE set changes the choice: blas_core_restart, which the
 * mains of bin/moco and of the MPI test program call. */
#ifndef MOCO_BLASCORE_H
#define MOCO_BLASCORE_H

/* The kernel set OpenBLAS runs in this process ("Prescott", "Haswell",
 * "SkylakeX", ...). */
const char *blas_core(void);

/* The kernel set to ask for when OpenBLAS chose one of a lower level than
 * the CPU runs (SSE only / AVX / AVX2+FMA / AVX-512): "Haswell" for AVX2
 * with FMA, "SkylakeX" for AVX-512 (F, CD, BW, DQ, VL), "Cooperlake" for
 * AVX-512 with AVX512_BF16, as OpenBLAS itself names the CPUs it knows.
 * NULL when OpenBLAS's own choice is as good, or $OPENBLAS_CORETYPE is set
 * (the user's word stands). */
const char *blas_core_wanted(void);

/* For main, first thing: when blas_core_wanted() names a set, set
 * $OPENBLAS_CORETYPE to it and execute this program again with argv (same
 * process, environment and arguments; by its own path, so that ps and
 * pgrep still see its name). Returns only when there is nothing to do, or
 * when exec failed (then the variable is unset again and the program goes
 * on with OpenBLAS's own choice). */
void blas_core_restart(char **argv);

#endif
