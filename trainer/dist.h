/* dist.h: data-parallel training over MPI (as PyTorch DDP): the processes
 * of one `mpirun` each train the MoCo step of moco.h on their own pairs and
 * stay bit-identical. dist.c is the only file that includes mpi.h; without
 * mpirun everything here works as one rank and never touches MPI.
 *
 * What it promises:
 *   - dist_comm() implements moco_comm: the gradient average of every
 *     bucket is bit-identical on every rank whatever algorithms MPI picks,
 *     because each element is reduced exactly once, by the rank that owns
 *     it, in a fixed order, and the others receive the owner's bytes:
 *       1. the bucket [off, off+n) is cut into R chunks of ceil(n/R) floats
 *          (the last ones shorter or empty); rank r owns chunk r;
 *       2. MPI_Ialltoallv sends chunk r of every rank's gradients to rank r
 *          (a reduce-scatter whose additions we do ourselves: MPI's
 *          MPI_Reduce_scatter leaves the order of additions to the library);
 *       3. the owner adds in rank order, in float32, then divides once:
 *          mean = (((g_0 + g_1) + g_2) + ... + g_{R-1}) / R;
 *       4. MPI_Iallgatherv copies each owner's chunk to every rank.
 *     Buckets are started as backward finishes them (grad_ready) and
 *     progressed at every later call; grad_wait finishes them all.
 *   - Every function is collective (all ranks call it, in the same order)
 *     and returns 0 or a MOCO_E* code; MPI errors come back (not abort:
 *     MPI_ERRORS_RETURN) as MOCO_EIO with a message naming the MPI call,
 *     this rank and the MPI error string.
 *   - MPI is initialised with MPI_THREAD_FUNNELED: only the thread that
 *     called dist_init may call into dist (the compute threads never do).
 *
 * Caveats: a rank that dies or stops calling hangs the others (as DDP);
 * bucket buffers are allocated on the first step and kept. */
#ifndef TRAINER_DIST_H
#define TRAINER_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/engine/moco.h"

typedef struct dist dist;

/* When launched by mpirun (OMPI_COMM_WORLD_SIZE set): MPI_Init_thread
 * (FUNNELED) unless MPI is already initialised, with MPI_ERRORS_RETURN;
 * otherwise one rank without MPI. argc, argv: main's (MPI may use them).
 * Weight checks after every step (moco_comm.step_done) in debug builds
 * (-DMOCO_DEBUG, -O0, sanitizers) or every N steps with MOCO_DIST_CHECK=N.
 * Returns 0 with *out, MOCO_EIO (MPI failed, message) or MOCO_ENOMEM. */
int dist_init(int *argc, char ***argv, dist **out);

int dist_rank(const dist *d);
int dist_size(const dist *d);

/* The moco_comm of this process group (valid until dist_finalize), for
 * moco_set_comm(). */
const moco_comm *dist_comm(dist *d);

/* Do all ranks hold the same n bytes at buf? 0 if so; else MOCO_EINVAL
 * "ranks differ in <what>: rank r ..." (a 64-bit hash of the bytes,
 * all-reduced MIN/MAX, then gathered to name the first rank that differs
 * from rank 0), on every rank. */
int dist_same(dist *d, const void *buf, size_t n, const char *what);
/* Steps between the weight checks ($MOCO_DIST_CHECK at start-up; 0: none). */
long dist_check_every(const dist *d);

/* v[0..n) becomes the sum over ranks, added in rank order (the same bits
 * on every rank). */
int dist_sum_d(dist *d, double *v, int n);
/* The same, for a wait that may be long (ranks waiting for rank 0's kNN):
 * once it has lasted half a second, idle(arg) runs about every millisecond
 * until the other ranks arrive (the trainer keeps its stream alive). */
int dist_sum_d_idle(dist *d, double *v, int n, void (*idle)(void *), void *arg);
/* *v becomes the minimum over ranks. */
int dist_min_i(dist *d, int *v);
/* bits[0..n) becomes the bitwise OR over ranks. */
int dist_bor(dist *d, uint8_t *bits, size_t n);
/* buf[0..n) of rank root onto every rank. */
int dist_bcast(dist *d, void *buf, size_t n, int root);

/* Is the whole training state of mc the same on every rank (query and key
 * parameters, SGD momentum, BN buffers and counters, queue, pointer and
 * step)? 0 if so; else MOCO_ENUMERIC naming the first part that differs
 * and a rank where it differs from rank 0, on every rank. */
int dist_check_weights(dist *d, const moco *mc);

/* For benchmarks only: buf[0..n) becomes the sum over ranks by
 * MPI_Allreduce (in place), the library's algorithm and order (not
 * promised bit-identical across ranks; training never uses it). */
int dist_allreduce_lib(dist *d, float *buf, size_t n);

/* Seconds this rank spent blocked in grad_wait: the share of the gradient
 * averaging that backward did not hide. */
double dist_wait_seconds(const dist *d);

/* End the whole job now: MPI_Abort(code), which stops every rank (for a
 * main whose rank cannot go on while the others would wait for it in the
 * next collective). Without MPI it returns and the caller exits as usual. */
void dist_abort(dist *d, int code);

/* moco_new, rank 0 first: it times the convolution kernels its wisdom
 * file lacks (trainer/engine/tune.h, as configured) and saves them; the
 * other ranks make theirs after it and so find rank 0's choices (on one
 * host) instead of timing kernels while rank 0 runs. d may be NULL (one
 * process). A wisdom file that cannot be written, or that holds lines that
 * do not parse, is a warning on stderr naming it; the run goes on. */
int dist_moco_new(dist *d, const moco_cfg *cfg, moco **out);

/* Free everything; MPI_Finalize if dist_init initialised MPI. *d = NULL. */
void dist_finalize(dist **d);

#endif
