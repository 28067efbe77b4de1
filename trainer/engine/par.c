/* par.c: the pool of par.h: workers sleep on a condition variable until a
 * new generation of tasks is published, claim tasks from an atomic counter
 * (or, for par_for_fixed, take every T-th task from their own index) and
 * the last one out signals the caller. */
#include "trainer/engine/par.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t go = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int nthreads = 1, started = 1; /* threads in use, threads running (incl. the caller) */
static unsigned long gen;
static void (*job_fn)(void *, int, int);
static void *job_ctx;
static int job_n, job_max, job_fixed, busy;
static atomic_int next_task;

static void run_tasks(int thread)
{
    if (job_fixed) {
        for (int t = thread; t < job_n; t += job_max) job_fn(job_ctx, t, thread);
        return;
    }
    for (;;) {
        int t = atomic_fetch_add(&next_task, 1);
        if (t >= job_n) break;
        job_fn(job_ctx, t, thread);
    }
}

static void *worker(void *arg)
{
    int id = (int)(long)arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (gen == seen) pthread_cond_wait(&go, &mu);
        seen = gen;
        if (id >= nthreads || id >= job_max) continue;
        pthread_mutex_unlock(&mu);
        run_tasks(id);
        pthread_mutex_lock(&mu);
        if (--busy == 0) pthread_cond_signal(&done);
    }
    return NULL;
}

int par_set_threads(int n)
{
    if (n < 1) n = 1;
    if (n > PAR_MAX_THREADS) n = PAR_MAX_THREADS;
    pthread_mutex_lock(&mu);
    while (started < n) {
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &at, worker, (void *)(long)started)) {
            pthread_attr_destroy(&at);
            break;
        }
        pthread_attr_destroy(&at);
        started++;
    }
    nthreads = n < started ? n : started;
    pthread_mutex_unlock(&mu);
    openblas_set_num_threads(1);
    return nthreads;
}

int par_threads(void) { return nthreads; }

void par_for(int n, void (*fn)(void *ctx, int task, int thread), void *ctx) { par_for_max(n, nthreads, fn, ctx); }

static void par_run(int n, int maxthreads, int fixed, void (*fn)(void *ctx, int task, int thread), void *ctx)
{
    if (n <= 0) return;
    int use = maxthreads < nthreads ? maxthreads : nthreads;
    if (use > n) use = n;
    if (use <= 1) {
        for (int t = 0; t < n; t++) fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&mu);
    job_fn = fn, job_ctx = ctx, job_n = n, job_max = use, job_fixed = fixed;
    atomic_store(&next_task, 0);
    busy = use - 1;
    gen++;
    pthread_cond_broadcast(&go);
    pthread_mutex_unlock(&mu);
    run_tasks(0);
    pthread_mutex_lock(&mu);
    while (busy) pthread_cond_wait(&done, &mu);
    pthread_mutex_unlock(&mu);
}

void par_for_max(int n, int maxthreads, void (*fn)(void *ctx, int task, int thread), void *ctx)
{
    par_run(n, maxthreads, 0, fn, ctx);
}

void par_for_fixed(int n, int maxthreads, void (*fn)(void *ctx, int task, int thread), void *ctx)
{
    par_run(n, maxthreads, 1, fn, ctx);
}
