/* bench.c: `moco bench augment`: how many pairs per second one worker makes.
 *
 * With --workers 1 (the default) everything runs in this process, no
 * sockets: the records are read into memory first, then the decode-only rate
 * (augment_decode at full resolution) and the full pair rate (augment_pair)
 * are each measured for --seconds. With --workers N it starts N real
 * `moco augment` processes between an in-process feeder (PUSH, SAMPLE
 * messages from memory) and sink (PULL, counts PAIRs), and measures the pair
 * rate end to end. The last line of output is one JSON object. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "augment/augment.h"
#include "augment/cmd.h"
#include "formats/db.h"
#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/opts.h"
#include "formats/wire.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Resident set size of a process in kB (0 if unknown). */
static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

typedef struct {
    uint8_t **val;
    size_t *len;
    uint64_t n, cap, bytes, max;
    int full;
} records;

static int collect(void *ctx, uint64_t index, const uint8_t *val, size_t len)
{
    (void)index;
    records *r = ctx;
    if (r->n == r->max) {
        r->full = 1;
        return MOCO_EINTR; /* stop the walk */
    }
    if (r->n == r->cap) {
        uint64_t nc = r->cap ? 2 * r->cap : 1024;
        uint8_t **v = realloc(r->val, nc * sizeof *v);
        if (!v) return -1;
        r->val = v;
        size_t *l = realloc(r->len, nc * sizeof *l);
        if (!l) return -1;
        r->len = l, r->cap = nc;
    }
    if (!(r->val[r->n] = malloc(len))) return -1;
    memcpy(r->val[r->n], val, len);
    r->len[r->n++] = len;
    r->bytes += len;
    return 0;
}

static void records_free(records *r)
{
    for (uint64_t i = 0; i < r->n; i++) free(r->val[i]);
    free(r->val);
    free(r->len);
}

/* N worker processes between a feeder and a sink; returns pairs/s. */
static int bench_workers(const records *rs, int nw, double seconds, char **rargv, int rargc, double *rate,
                         uint64_t *failed, long rss[2], uint64_t *pairs)
{
    char in_ep[128], out_ep[128], fail_ep[128];
    snprintf(in_ep, sizeof in_ep, "ipc:///tmp/moco-bench-%d-in", (int)getpid());
    snprintf(out_ep, sizeof out_ep, "ipc:///tmp/moco-bench-%d-out", (int)getpid());
    snprintf(fail_ep, sizeof fail_ep, "ipc:///tmp/moco-bench-%d-fail", (int)getpid());
    void *zc = zmq_ctx_new();
    void *push = zmq_socket(zc, ZMQ_PUSH), *pull = zmq_socket(zc, ZMQ_PULL), *fail = zmq_socket(zc, ZMQ_PULL);
    int hwm = 64, rc = 0;
    zmq_setsockopt(push, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_bind(push, in_ep) || zmq_bind(pull, out_ep) || zmq_bind(fail, fail_ep)) {
        rc = moco_err(MOCO_EZMQ, "bench: bind: %s", zmq_strerror(zmq_errno()));
        goto out;
    }
    pid_t pids[64];
    int np = 0;
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) {
        rc = moco_err(MOCO_EIO, "bench: cannot find my own executable");
        goto out;
    }
    self[sl] = 0;
    for (int i = 0; i < nw && i < 64; i++) {
        pid_t p = fork();
        if (p == 0) {
            char *av[64];
            int k = 0;
            av[k++] = self, av[k++] = "augment", av[k++] = "--pull", av[k++] = in_ep, av[k++] = "--push", av[k++] = out_ep;
            av[k++] = "--failed", av[k++] = fail_ep, av[k++] = "--quiet";
            for (int j = 0; j < rargc && k < 62; j++) av[k++] = rargv[j];
            av[k] = NULL;
            execv(self, av);
            _exit(127);
        }
        if (p > 0) pids[np++] = p;
    }
    /* Feed and drain until `seconds` have passed after the first pair. */
    uint64_t sent = 0, got = 0, nfail = 0, got0 = 0;
    double t0 = 0, t1 = 0, start = now();
    zmq_pollitem_t items[3] = {{push, 0, ZMQ_POLLOUT, 0}, {pull, 0, ZMQ_POLLIN, 0}, {fail, 0, ZMQ_POLLIN, 0}};
    for (;;) {
        if (zmq_poll(items, 3, 100) < 0) break;
        /* bursts: send while the workers take, drain all that arrived */
        for (int burst = 0; burst < 256 && (items[0].revents & ZMQ_POLLOUT); burst++) {
            uint64_t i = sent % rs->n;
            uint8_t h[MOCO_WIRE_SAMPLE_SIZE];
            moco_wire_sample s = {(uint32_t)(sent / rs->n), i};
            moco_wire_sample_pack(h, &s);
            if (zmq_send(push, h, sizeof h, ZMQ_SNDMORE | ZMQ_DONTWAIT) != (int)sizeof h) break;
            zmq_send(push, rs->val[i], rs->len[i], 0);
            sent++;
        }
        for (int burst = 0; burst < 1024 && (items[1].revents & ZMQ_POLLIN); burst++) {
            int more;
            size_t ml = sizeof more;
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, pull, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                break;
            }
            zmq_msg_close(&m);
            do { /* the rest of the multipart message is there already */
                zmq_getsockopt(pull, ZMQ_RCVMORE, &more, &ml);
                if (!more) break;
                zmq_msg_init(&m);
                zmq_msg_recv(&m, pull, 0);
                zmq_msg_close(&m);
            } while (more);
            got++;
            if (got == (uint64_t)4 * nw) t0 = now(), got0 = got; /* warm-up over */
            if (got == 10000)
                for (int i = 0; i < np; i++) rss[0] += rss_kb(pids[i]);
        }
        if (items[2].revents & ZMQ_POLLIN) {
            char b[2048];
            zmq_recv(fail, b, sizeof b, 0);
            nfail++;
        }
        double t = now();
        if (t0 > 0 && t - t0 >= seconds) {
            t1 = t;
            break;
        }
        if (t - start > seconds + 30) break;
    }
    *rate = t1 > t0 ? (double)(got - got0) / (t1 - t0) : 0;
    *pairs = got;
    *failed = nfail;
    for (int i = 0; i < np; i++) rss[1] += rss_kb(pids[i]);
    for (int i = 0; i < np; i++) kill(pids[i], SIGTERM);
    for (int i = 0; i < np; i++) waitpid(pids[i], NULL, 0);
    if (t1 == 0) rc = moco_err(MOCO_ETIMEOUT, "bench: the workers produced %" PRIu64 " pairs", got);
out:
    zmq_close(push), zmq_close(pull), zmq_close(fail);
    zmq_ctx_term(zc);
    return rc;
}

int augment_bench_main(int argc, char **argv)
{
    const char *dbp = NULL;
    double seconds = 3;
    long workers = 1;
    uint64_t limit = 20000;
    augment_flags f;
    moco_opt opts[AUGMENT_FLAGS_NOPTS + 8];
    int n = augment_flags_opts(&f, opts);
    moco_opt extra[] = {
        {"db", MOCO_OPT_STR, &dbp, "dataset LMDB", 0, 0, NULL},
        {"seconds", MOCO_OPT_DOUBLE, &seconds, "seconds per measurement", 0.1, 3600, NULL},
        {"workers|-j", MOCO_OPT_INT, &workers, "1: in-process, no sockets; N > 1: N worker processes", 1, 64, NULL},
        {"limit", MOCO_OPT_U64, &limit, "records read into memory at most", 1, 1e9, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    memcpy(opts + n, extra, sizeof extra);
    const moco_optspec spec = {"moco bench augment", "--db DB [options]",
                               "Measure the augmentation worker: pairs per second and, in-process, the decode-only rate.\n"
                               "The records are read into memory first. The last line is one JSON object.",
                               opts, 0, 0, "db"};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    augment_recipe r;
    if (augment_flags_recipe(&f, &spec, &r)) {
        fprintf(stderr, "moco bench augment: %s\n", moco_errmsg());
        return 2;
    }
    moco_db *db;
    if (moco_db_open(dbp, &db)) {
        fprintf(stderr, "moco bench augment: %s\n", moco_errmsg());
        return 1;
    }
    records rs = {0};
    rs.max = limit;
    rc = moco_db_foreach(db, collect, &rs);
    moco_db_destroy(&db);
    if (rc == MOCO_EINTR && rs.full) rc = 0;
    if (rc || rs.n == 0) {
        fprintf(stderr, "moco bench augment: could not read records from %s\n", dbp);
        records_free(&rs);
        return 1;
    }
    printf("bench augment: %s, %" PRIu64 " records (%.1f MB) in memory, recipe %s, size %d, seed %" PRIu64 "\n", dbp, rs.n,
           rs.bytes / 1e6, r.name, r.size, r.seed);
    augment_ctx *ctx;
    if (augment_ctx_new(&r, &ctx)) {
        fprintf(stderr, "moco bench augment: %s\n", moco_errmsg());
        records_free(&rs);
        return 1;
    }
    /* decode only */
    uint64_t nd = 0, bad = 0;
    double t0 = now(), t;
    do {
        const uint8_t *px;
        int w, h, c;
        int32_t label;
        if (augment_decode(ctx, rs.val[nd % rs.n], rs.len[nd % rs.n], nd % rs.n, &px, &w, &h, &c, &label)) bad++;
        nd++;
    } while ((t = now()) - t0 < seconds);
    double decode_rate = nd / (t - t0);
    printf("decode only (full resolution, libvips for non-JPEG): %.0f images/s (%" PRIu64 " in %.2f s)\n", decode_rate, nd, t - t0);
    double pair_rate = 0;
    uint64_t np_ = 0, failed = 0;
    long rss[2] = {0, 0}; /* after 10,000 pairs, at the end */
    if (workers == 1) {
        size_t vb = augment_view_max_bytes(&r);
        uint8_t *q = malloc(vb), *k = malloc(vb);
        uint64_t scaled = 0;
        t0 = now();
        do {
            augment_info info;
            uint64_t i = np_ % rs.n;
            if (augment_pair(ctx, rs.val[i], rs.len[i], (uint32_t)(np_ / rs.n), i, q, k, &info)) failed++;
            else if (info.decoded_w != info.src_w) scaled++;
            if (++np_ == 10000) rss[0] = rss_kb(getpid());
        } while ((t = now()) - t0 < seconds);
        pair_rate = np_ / (t - t0);
        rss[1] = rss_kb(getpid());
        printf("pairs, in-process, 1 worker: %.0f pairs/s (%" PRIu64 " in %.2f s, %" PRIu64 " failed, %.0f%% decoded at a DCT scale)\n",
               pair_rate, np_, t - t0, failed, 100.0 * scaled / (np_ ? np_ : 1));
        free(q), free(k);
    } else {
        /* the recipe flags as given, for the worker processes */
        char *rargv[64];
        int rargc = 0;
        for (int i = 1; i < argc && rargc < 60; i++) {
            const char *a = argv[i];
            int skip = !strncmp(a, "--db", 4) || !strncmp(a, "--seconds", 9) || !strncmp(a, "--workers", 9) ||
                       !strncmp(a, "--limit", 7);
            int has_eq = strchr(a, '=') != NULL;
            if (skip) {
                if (!has_eq) i++;
                continue;
            }
            rargv[rargc++] = argv[i];
        }
        if ((rc = bench_workers(&rs, (int)workers, seconds, rargv, rargc, &pair_rate, &failed, rss, &np_))) {
            fprintf(stderr, "moco bench augment: %s\n", moco_errmsg());
            augment_ctx_destroy(&ctx);
            records_free(&rs);
            return 1;
        }
        printf("pairs, %ld worker processes over ZeroMQ (ipc): %.0f pairs/s, %.0f per worker\n", workers, pair_rate,
               pair_rate / workers);
    }
    if (rss[0])
        printf("resident memory (%s): %ld kB after 10,000 pairs, %ld kB at the end (%+.1f%%)\n",
               workers == 1 ? "this process" : "all workers", rss[0], rss[1], 100.0 * (rss[1] - rss[0]) / rss[0]);
    moco_jw j; /* the last line */
    moco_jw_begin(&j);
    moco_jw_str(&j, "recipe", r.name);
    moco_jw_i64(&j, "size", r.size);
    moco_jw_u64(&j, "records", rs.n);
    moco_jw_i64(&j, "workers", workers);
    moco_jw_num(&j, "pairs_per_s", pair_rate, 1);
    moco_jw_num(&j, "pairs_per_s_per_worker", pair_rate / workers, 1);
    moco_jw_num(&j, "decode_per_s", decode_rate, 1);
    moco_jw_u64(&j, "failed", failed + bad);
    moco_jw_u64(&j, "pairs", np_);
    moco_jw_i64(&j, "rss_kb_at_10k", rss[0]);
    moco_jw_i64(&j, "rss_kb_end", rss[1]);
    rc = moco_jw_line(&j, stdout);
    if (rc) fprintf(stderr, "moco bench augment: %s\n", moco_errmsg());
    augment_ctx_destroy(&ctx);
    records_free(&rs);
    return rc ? 1 : 0;
}
