/* par.h: the trainer's compute threads. One small pool per process (like
 * OpenBLAS's own): par_for(n, fn, ctx) runs fn(ctx, task, thread) for
 * task = 0..n-1 spread over the pool's threads and the caller, and returns
 * when all are done. Tasks must be independent; `thread` (0..threads-1)
 * indexes per-thread scratch. With par_set_threads(T) > 1 the trainer keeps
 * OpenBLAS at one thread per call and parallelises over chunks of images
 * itself (large, cache-warm GEMMs side by side rather than many small
 * multi-threaded ones). Not reentrant: one par_for at a time. */
#ifndef TRAINER_PAR_H
#define TRAINER_PAR_H

/* Set the number of compute threads (1..PAR_MAX_THREADS; starts the pool
 * on first use, and sets OpenBLAS to 1 thread). Returns the count in use. */
#define PAR_MAX_THREADS 64
int par_set_threads(int n);
int par_threads(void);
void par_for(int n, void (*fn)(void *ctx, int task, int thread), void *ctx);
/* The same on at most maxthreads threads (thread < maxthreads). */
void par_for_max(int n, int maxthreads, void (*fn)(void *ctx, int task, int thread), void *ctx);
/* par_for_max with a fixed mapping: thread k runs tasks k, k + T, k + 2T,
 * ... in that order (T the threads used). For tasks that add into
 * per-thread sums (weight gradients): the sums, and so the results, are
 * then the same bit for bit in every run with the same thread count,
 * whereas par_for's tasks go to whichever thread is free. */
void par_for_fixed(int n, int maxthreads, void (*fn)(void *ctx, int task, int thread), void *ctx);

#endif
