/* bench_allreduce.c: how fast the ranks of one `mpirun` average a model's
 * gradients. For each size (floats; by default resnet18's 11,689,512 and
 * resnet50's 25,557,032 parameters) it times, best of --reps:
 *   - engine: the path moco_step uses (trainer/dist.h's moco_comm): buckets
 *     of 1M floats handed to grad_ready one after another, from the end,
 *     then grad_wait; here nothing overlaps them (no backward running);
 *   - mpi: MPI_Allreduce of the whole buffer in one call (for comparison).
 * Prints per size and method the seconds, the algorithm bandwidth (bytes
 * of the buffer / s) and the bus bandwidth (algorithm bandwidth x 2(R-1)/R:
 * what each rank sends and receives, the figure to set against a link's
 * speed), and as its last line one JSON object (formats/jsonw.h).
 *   mpirun -np 2 build/release/tools/bench_allreduce [--reps 5] [--floats 11689512,25557032] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/opts.h"
#include "trainer/dist.h"
#include "trainer/engine/resnet.h"

static int fail(dist **d, const char *what)
{
    fprintf(stderr, "bench_allreduce (rank %d): %s: %s\n", *d ? dist_rank(*d) : 0, what, moco_errmsg());
    dist_finalize(d);
    return 1;
}

int main(int argc, char **argv)
{
    dist *d = NULL;
    if (dist_init(&argc, &argv, &d)) return fail(&d, "start");
    long reps = 5;
    const char *sizes = "11689512,25557032";
    const moco_opt opts[] = {
        {"reps", MOCO_OPT_INT, &reps, "timed repetitions per size and method (the best is kept)", 1, 1000, NULL},
        {"floats", MOCO_OPT_STR, &sizes, "buffer sizes in floats, comma-separated", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"bench_allreduce", "[options]", "Time the gradient average across the ranks of mpirun.", opts, 0, 0, NULL};
    char *pos[1];
    int np, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) {
        dist_finalize(&d);
        return opt_exit;
    }
    const int R = dist_size(d), rank = dist_rank(d);
    const moco_comm *c = dist_comm(d);
    char results[4096] = "[";
    for (const char *p = sizes; *p;) {
        char *end;
        size_t n = strtoull(p, &end, 10);
        if (end == p || n == 0) {
            fprintf(stderr, "bench_allreduce: bad --floats '%s'\n", sizes);
            dist_finalize(&d);
            return 2;
        }
        p = *end == ',' ? end + 1 : end;
        float *buf = malloc(sizeof(float) * n);
        if (!buf) return fail(&d, "out of memory");
        double best[2] = {1e30, 1e30};
        for (long r = 0; r < reps; r++)
            for (int m = 0; m < 2; m++) {
                for (size_t i = 0; i < n; i++) buf[i] = (float)(i % 1000) * 1e-3f + (float)rank;
                int sync = 0;
                if (dist_min_i(d, &sync)) return fail(&d, "barrier");
                double t0 = moco_now_s();
                if (m == 0) {
                    for (size_t hi = n; hi > 0;) { /* from the end, as backward */
                        size_t lo = hi > RN_BUCKET_FLOATS ? hi - RN_BUCKET_FLOATS : 0;
                        if (c->grad_ready(c->ctx, buf, lo, hi - lo)) return fail(&d, "grad_ready");
                        hi = lo;
                    }
                    if (c->grad_wait(c->ctx)) return fail(&d, "grad_wait");
                } else if (dist_allreduce_lib(d, buf, n)) {
                    return fail(&d, "MPI_Allreduce");
                }
                double t = moco_now_s() - t0;
                if (dist_sum_d(d, &t, 1)) return fail(&d, "sum");
                t /= R; /* mean over ranks */
                best[m] = t < best[m] ? t : best[m];
            }
        free(buf);
        for (int m = 0; m < 2 && !rank; m++) {
            double alg = (double)n * 4 / best[m], bus = alg * 2.0 * (R - 1) / R;
            printf("%-6s %d ranks, %zu floats (%.1f MB): %.2f ms, algorithm bandwidth %.2f GB/s, bus bandwidth %.2f GB/s\n",
                   m ? "mpi" : "engine", R, n, (double)n * 4 / 1e6, best[m] * 1e3, alg / 1e9, bus / 1e9);
            moco_jw w;
            moco_jw_begin(&w);
            moco_jw_str(&w, "method", m ? "MPI_Allreduce" : "engine");
            moco_jw_u64(&w, "floats", n);
            moco_jw_num(&w, "ms", best[m] * 1e3, 3);
            moco_jw_num(&w, "algbw_gb_per_s", alg / 1e9, 3);
            moco_jw_num(&w, "busbw_gb_per_s", bus / 1e9, 3);
            const char *j = moco_jw_end(&w);
            if (j && strlen(results) + strlen(j) + 3 < sizeof results) {
                if (results[1]) strcat(results, ",");
                strcat(results, j);
            }
            moco_jw_free(&w);
        }
    }
    if (!rank) {
        strcat(results, "]");
        moco_jw w;
        moco_jw_begin(&w);
        moco_jw_str(&w, "bench", "allreduce");
        moco_jw_i64(&w, "ranks", R);
        moco_jw_i64(&w, "reps", reps);
        moco_jw_raw(&w, "results", results);
        moco_jw_line(&w, stdout);
    }
    dist_finalize(&d);
    return 0;
}
