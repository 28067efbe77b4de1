/* bench_par.c: what one par_for round trip of the compute pool costs
 * (trainer/engine/par.c): 2 threads, 2 tasks of about a microsecond each,
 * ROUNDS x 20,000 calls, with the pool's spin-wait off (MOCO_PAR_SPIN_US=0:
 * workers sleep at once) and at its default; beside the same work done
 * serially. The last line is one JSON object. Not part of bin/moco:
 *
 *   make build/release/tools/bench_par && build/release/tools/bench_par
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "trainer/engine/par.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static volatile float sink[2 * 16];

static void task(void *ctx, int t, int th)
{
    (void)ctx;
    float s = 0;
    for (int i = 0; i < 2000; i++) s += (float)i * 0.5f;
    sink[th * 16] += s + (float)t;
}

/* the median over rounds of the microseconds per call */
static double per_call_us(int serial)
{
    enum { ROUNDS = 5, CALLS = 20000 };
    double r[ROUNDS];
    for (int k = 0; k < ROUNDS; k++) {
        double t0 = now();
        for (int i = 0; i < CALLS; i++)
            if (serial) task(NULL, 0, 0), task(NULL, 1, 0);
            else par_for(2, task, NULL);
        r[k] = (now() - t0) / CALLS * 1e6;
    }
    for (int i = 1; i < ROUNDS; i++) /* insertion sort */
        for (int j = i; j > 0 && r[j] < r[j - 1]; j--) { double x = r[j]; r[j] = r[j - 1]; r[j - 1] = x; }
    return r[ROUNDS / 2];
}

int main(void)
{
    /* the spin is read when the pool starts: one process per setting */
    const char *e = getenv("MOCO_PAR_SPIN_US");
    if (par_set_threads(2) != 2) {
        fprintf(stderr, "bench_par: could not start 2 threads\n");
        return 1;
    }
    const double serial = per_call_us(1), pooled = per_call_us(0);
    printf("par_for of 2 tasks on 2 threads (MOCO_PAR_SPIN_US=%s): %.2f us per call; the same work serially: %.2f us\n",
           e ? e : "default", pooled, serial);
    printf("{\"bench\":\"par\",\"spin_us\":\"%s\",\"par_for_us\":%.2f,\"serial_us\":%.2f}\n", e ? e : "default", pooled, serial);
    return 0;
}
