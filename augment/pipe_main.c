/* pipe_main.c: `moco augment`, the pipeline worker's command line. */
#include <inttypes.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "augment/augment.h"
#include "augment/pipe.h"
#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/opts.h"
#include "formats/pipeline.h"

static int make_pair(void *ctx, const uint8_t *rec, size_t len, uint32_t epoch, uint64_t index, uint8_t *q, uint8_t *k,
                     augment_pipe_views *v)
{
    augment_info info;
    int rc = augment_pair(ctx, rec, len, epoch, index, q, k, &info);
    if (rc == 0) *v = (augment_pipe_views){info.label, info.height, info.width, info.channels};
    return rc;
}

typedef struct {
    FILE *f;
    const char *path;
    int warned;
    uint64_t last_pairs;
    double last_t;
} reporter;

/* once a second: one JSON line (O_APPEND: lines of several workers do not mix) */
static void report(void *ctx, const augment_pipe_stats *st, int queued, int pending)
{
    reporter *r = ctx;
    double t = moco_now_s();
    moco_jw w;
    moco_jw_begin(&w);
    moco_jw_i64(&w, "pid", (int64_t)getpid());
    moco_jw_u64(&w, "pairs", st->pairs);
    /* the final report may come right after the last one: no interval, null */
    moco_jw_num(&w, "pairs_per_s", t > r->last_t ? (double)(st->pairs - r->last_pairs) / (t - r->last_t) : NAN, 1);
    moco_jw_u64(&w, "failed", st->failed);
    moco_jw_u64(&w, "malformed", st->malformed);
    moco_jw_u64(&w, "overflow", st->overflow); /* records beyond its credit, dropped (the loader re-issues them) */
    moco_jw_i64(&w, "queued", queued);
    moco_jw_i64(&w, "pending", pending);
    moco_jw_log(&w, r->f, "moco augment", r->path, &r->warned); /* written and flushed */
    r->last_pairs = st->pairs;
    r->last_t = t;
}

static void on_signal(int s)
{
    (void)s;
    augment_pipe_stop = 1;
}

int augment_pipe_main(int argc, char **argv)
{
    augment_flags af;
    augment_pipe_cfg cfg = {.queue = 256, .sndhwm = 64, .loader_timeout = MOCO_WORKER_LOADER_TIMEOUT_S};
    struct sigaction sa = {.sa_handler = on_signal};
    long queue = 256, hwm = 64;
    int quiet = 0;
    moco_opt opts[AUGMENT_FLAGS_NOPTS + 10];
    int n = augment_flags_opts(&af, opts);
    opts[n++] = (moco_opt){"connect", MOCO_OPT_STR, &cfg.loader_ep, "the loader's worker endpoint (moco loader --bind)", 0, 0, NULL};
    opts[n++] = (moco_opt){"push", MOCO_OPT_STR, &cfg.push_ep, "the consumer's pair endpoint (moco train / moco sink --bind)", 0, 0, NULL};
    opts[n++] = (moco_opt){"keys", MOCO_OPT_STR, &cfg.keys, "key directory (moco keygen): CURVE on tcp endpoints", 0, 0, NULL};
    opts[n++] = (moco_opt){"insecure", MOCO_OPT_FLAG, &cfg.insecure, "allow tcp endpoints without --keys", 0, 0, NULL};
    opts[n++] = (moco_opt){"queue", MOCO_OPT_INT, &queue, "records this worker holds at most (its credit; the loader sends a quarter at a time)", 1, AUGMENT_PIPE_MAX_QUEUE, NULL};
    opts[n++] = (moco_opt){"sndhwm", MOCO_OPT_INT, &hwm, "pairs queued for the consumer at most", 1, 1000, NULL};
    opts[n++] = (moco_opt){"loader-timeout", MOCO_OPT_DOUBLE, &cfg.loader_timeout, "exit if the loader is silent this long (s)", 1, 1e6, NULL};
    const char *logp = NULL;
    opts[n++] = (moco_opt){"log", MOCO_OPT_STR, &logp, "append JSON lines of statistics here, once a second", 0, 0, NULL};
    opts[n++] = (moco_opt){"quiet", MOCO_OPT_FLAG, &quiet, "no summary on stderr", 0, 0, NULL};
    opts[n] = (moco_opt){NULL, 0, NULL, NULL, 0, 0, NULL};
    const moco_optspec spec = {"moco augment", "--connect LOADER --push CONSUMER [recipe options]",
                               "An augmentation worker: turns each record the loader hands it into a (query, key) pair\n"
                               "of uint8 views and pushes it to the consumer. Start as many as the consumer needs, here\n"
                               "or on other hosts (tcp://, with --keys). Every view is a pure function of (seed, epoch,\n"
                               "index, view). (moco augment --pull EP --push EP is the standalone worker that moco bench\n"
                               "augment starts; moco augment --pull --help lists its flags.)",
                               opts, 0, 0, "connect push"};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    cfg.queue = (int)queue;
    cfg.sndhwm = (int)hwm;
    augment_recipe r;
    if (augment_flags_recipe(&af, &spec, &r)) return 2;
    /* A PAIRS batch (up to 4 MB) is allocated per message and freed by
     * ZeroMQ's I/O thread once sent. glibc would map each one afresh (at or
     * above its mmap threshold) and fault its pages in again every time;
     * from the heap, kept untrimmed, the same pages serve every batch. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 128 << 20);
    if (augment_vips_init(argv[0])) {
        fprintf(stderr, "moco augment: %s\n", moco_errmsg());
        return 1;
    }
    augment_ctx *ctx;
    if ((rc = augment_ctx_new(&r, &ctx))) {
        fprintf(stderr, "moco augment: %s\n", moco_errmsg());
        return 1;
    }
    struct sigaction old; /* SIGINT left ignored when it came ignored (moco run stops its workers itself) */
    if (sigaction(SIGINT, NULL, &old) || old.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    reporter rep = {.last_t = moco_now_s(), .path = logp};
    if (logp) {
        if (!(rep.f = fopen(logp, "a"))) {
            fprintf(stderr, "moco augment: cannot open %s\n", logp);
            augment_ctx_destroy(&ctx);
            return 1;
        }
        cfg.report = report;
        cfg.report_ctx = &rep;
    }
    augment_pipe_stats st;
    cfg.view_bytes = augment_view_max_bytes(&r);
    rc = augment_pipe_run(&cfg, make_pair, ctx, &st);
    augment_ctx_destroy(&ctx);
    if (rep.f) fclose(rep.f);
    if (!quiet || rc)
        fprintf(stderr, "moco augment: %s%s%" PRIu64 " pairs, %" PRIu64 " failed records, %" PRIu64 " malformed messages\n",
                rc ? moco_errmsg() : "", rc ? "; " : "", st.pairs, st.failed, st.malformed);
    if (st.overflow) /* records beyond the credit it gave: the loader re-issues them, but it broke the protocol */
        fprintf(stderr, "moco augment: warning: %" PRIu64 " records came beyond the credit this worker gave, and were dropped "
                "(the loader re-issues them)\n", st.overflow);
    return rc ? 1 : 0;
}
