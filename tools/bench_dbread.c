/* bench_dbread.c: how fast one thread reads a dataset LMDB's records with
 * moco_db_get (formats/db.h), the loader's read, in two ways, alternately
 * for --rounds rounds of --reads reads each (the indices cycle through the
 * dataset in order):
 *   - guard: every read sets up the fault guard itself (two sigaction
 *     calls and a pthread_sigmask), as outside the loader;
 *   - bracket: reads in batches of --batch inside moco_db_reads_begin/end,
 *     as the loader's send_batch reads a batch for one worker.
 * Prints each round, then the median microseconds per read and reads/s of
 * each way, and as its last line one JSON object (formats/jsonw.h).
 *   build/release/tools/bench_dbread DB [--reads 100000] [--rounds 5] [--batch 64] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "formats/clock.h"
#include "formats/db.h"
#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/opts.h"

static int cmp_d(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* n reads from index *next on (wrapping at count), in batches of `batch`
 * inside a bracket (batch > 0) or each on its own guard (batch 0); the
 * seconds they took in *s. Returns 0 or moco_db_get's error. */
static int reads(moco_db *db, uint64_t count, uint64_t *next, long n, long batch, double *s)
{
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;
    int rc = 0;
    double t0 = moco_now_s();
    for (long i = 0; i < n && !rc;) {
        if (batch) moco_db_reads_begin();
        for (long j = 0; j < (batch ? batch : 1) && i < n && !rc; j++, i++) {
            rc = moco_db_get(db, *next, &buf, &cap, &len);
            *next = (*next + 1) % count;
        }
        if (batch) moco_db_reads_end();
    }
    *s = moco_now_s() - t0;
    free(buf);
    return rc;
}

int main(int argc, char **argv)
{
    long n = 100000, rounds = 5, batch = 64;
    const moco_opt opts[] = {
        {"reads", MOCO_OPT_INT, &n, "reads per round and way", 1, 1e9, NULL},
        {"rounds", MOCO_OPT_INT, &rounds, "rounds, each way once per round (the median is kept)", 1, 101, NULL},
        {"batch", MOCO_OPT_INT, &batch, "reads per bracket (the loader's batch: up to 64 per worker message)", 1, 1e6, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"bench_dbread", "DB [options]", "Time moco_db_get, the loader's read, with and without a bracket of reads.",
                               opts, 1, 1, NULL};
    char *pos[1];
    int np, status;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &status)) return status;
    moco_db *db = NULL;
    if (moco_db_open(pos[0], &db)) {
        fprintf(stderr, "bench_dbread: %s\n", moco_errmsg());
        return 1;
    }
    const uint64_t count = moco_db_get_meta(db)->count;
    double *t[2] = {calloc((size_t)rounds, sizeof(double)), calloc((size_t)rounds, sizeof(double))};
    uint64_t next = 0;
    int rc = !t[0] || !t[1] ? moco_err(MOCO_ENOMEM, "out of memory") : count ? 0 : moco_err(MOCO_EINVAL, "%s holds no records", pos[0]);
    double warm;
    if (!rc) rc = reads(db, count, &next, n, 0, &warm); /* the pages into the page cache */
    for (long r = 0; r < rounds && !rc; r++)
        for (int way = 0; way < 2 && !rc; way++) {
            if ((rc = reads(db, count, &next, n, way ? batch : 0, &t[way][r]))) break;
            printf("round %ld, %-7s: %.3f us per read\n", r + 1, way ? "bracket" : "guard", t[way][r] / (double)n * 1e6);
        }
    if (rc) {
        fprintf(stderr, "bench_dbread: %s\n", moco_errmsg());
        moco_db_destroy(&db);
        free(t[0]), free(t[1]);
        return 1;
    }
    double us[2];
    for (int way = 0; way < 2; way++) {
        qsort(t[way], (size_t)rounds, sizeof(double), cmp_d);
        us[way] = t[way][rounds / 2] / (double)n * 1e6;
    }
    printf("median: guard %.3f us per read (%.0f reads/s), bracket of %ld %.3f us (%.0f reads/s)\n", us[0], 1e6 / us[0], batch, us[1],
           1e6 / us[1]);
    moco_jw w;
    moco_jw_begin(&w);
    moco_jw_str(&w, "bench", "dbread");
    moco_jw_str(&w, "db", pos[0]);
    moco_jw_i64(&w, "records", (int64_t)count);
    moco_jw_i64(&w, "reads", n);
    moco_jw_i64(&w, "rounds", rounds);
    moco_jw_i64(&w, "batch", batch);
    moco_jw_num(&w, "guard_us_per_read", us[0], 3);
    moco_jw_num(&w, "bracket_us_per_read", us[1], 3);
    moco_jw_num(&w, "speedup", us[0] / us[1], 2);
    rc = moco_jw_line(&w, stdout);
    moco_db_destroy(&db);
    free(t[0]), free(t[1]);
    return rc ? 1 : 0;
}
