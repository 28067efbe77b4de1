/* pipeline_util.h: helpers shared by tests/test_pipeline.c and
 * tests/test_pipeline_serve.c (the streaming pipeline end to end, with real
 * processes): the test's scratch directory and its three ipc endpoints, the
 * packed dataset of N 8x8 images, the children a test starts (each killed by
 * teardown), `moco loader` from bin/moco, the loader's log, and the fake
 * worker: this program started again (main's --as-worker, which each of the
 * two programs hands to worker_main) to run augment_pipe_run() with a trivial
 * augmentation, so that the tests check the plumbing, not the image code.
 * Header-only like testutil.h (each test is one program): included by exactly
 * those two files, every function static inline; the state is each program's
 * own. */
#ifndef MOCO_TESTS_PIPELINE_UTIL_H
#define MOCO_TESTS_PIPELINE_UTIL_H

#include "tests/testutil.h"

#include <errno.h> /* program_invocation_short_name */
#include <fcntl.h>
#include <signal.h>
#include <time.h>

#include "augment/pipe.h"
#include "formats/errors.h"
#include "formats/record.h"

#define N 300 /* samples in the test dataset */

static char tmp[1024], work_ep[1200], ctl_ep[1200], pairs_ep[1200];

static inline void setup_dirs(const char *name)
{
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir(name));
    snprintf(work_ep, sizeof work_ep, "ipc://%s/work", tmp);
    snprintf(ctl_ep, sizeof ctl_ep, "ipc://%s/ctl", tmp);
    snprintf(pairs_ep, sizeof pairs_ep, "ipc://%s/pairs", tmp);
}

static inline void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* An IDX dataset of N 8x8 images (pixel 0..3 = index) packed by mkdb into
 * tmp/db: packed once (in <program>_db, so that the two programs may run at
 * once beside each other), then copied for each test. */
static inline void make_db(void)
{
    static char shared[1400]; /* the packed dataset; empty until packed */
    if (shared[0]) {
        assert_int_equal(tu_sh("cp -r %s %s/db", shared, tmp), 0);
        return;
    }
    char test_tmp[1024];
    snprintf(test_tmp, sizeof test_tmp, "%s", tmp);
    char db_dir[256];
    snprintf(db_dir, sizeof db_dir, "%s_db", program_invocation_short_name);
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir(db_dir));
    char p[1400];
    snprintf(p, sizeof p, "%s/src", tmp);
    tu_sh("mkdir -p %s", p);
    uint8_t im[16 + N * 64], lb[8 + N];
    be32(im, 0x803); be32(im + 4, N); be32(im + 8, 8); be32(im + 12, 8);
    be32(lb, 0x801); be32(lb + 4, N);
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 64; k++) im[16 + i * 64 + k] = (uint8_t)(k * 3 + i);
        moco_put_le32(im + 16 + i * 64, (uint32_t)i);
        lb[8 + i] = (uint8_t)(i % 10);
    }
    snprintf(p, sizeof p, "%s/src/train-images-idx3-ubyte", tmp);
    FILE *f = fopen(p, "wb");
    fwrite(im, 1, sizeof im, f);
    fclose(f);
    snprintf(p, sizeof p, "%s/src/train-labels-idx1-ubyte", tmp);
    f = fopen(p, "wb");
    fwrite(lb, 1, sizeof lb, f);
    fclose(f);
    assert_int_equal(tu_sh("%s mkdb %s/src %s/db --quiet >/dev/null", tu_moco(), tmp, tmp), 0);
    snprintf(shared, sizeof shared, "%s/db", tmp);
    snprintf(tmp, sizeof tmp, "%s", test_tmp);
    make_db();
}

/* ---- processes ---- */

/* every child a test starts, killed by the teardown if the test fails */
static pid_t children[256];
static int nchildren;

static inline pid_t track(pid_t pid)
{
    if (pid > 0 && nchildren < 256) children[nchildren++] = pid;
    return pid;
}

static inline int teardown(void **st)
{
    (void)st;
    for (int i = 0; i < nchildren; i++)
        if (kill(children[i], SIGKILL) == 0) waitpid(children[i], NULL, 0);
    nchildren = 0;
    return 0;
}

static inline pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (log) { /* open and dup2, not freopen: async-signal-safe (see start_worker) */
            int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) dup2(fd, STDERR_FILENO), close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return track(pid);
}

/* Wait for pid up to secs; kill it and fail on timeout. Returns its exit
 * status (128 + signal when killed by one). */
static inline int wait_for(pid_t pid, double secs)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec) > secs) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail_msg("process %d did not finish in %.0f s", (int)pid, secs);
        }
        usleep(10000);
    }
}

static int hang_at; /* a worker started while it is set hangs at its hang_at-th record */
static int slow_ms; /* ... and takes this long over each record */
static int view_side; /* ... and makes views of this side (0: 8), the 8x8 image repeated */

static inline int fake_pair(void *ctx, const uint8_t *rec, size_t len, uint32_t epoch, uint64_t index, uint8_t *q, uint8_t *k,
                            augment_pipe_views *info)
{
    (void)ctx;
    (void)epoch;
    moco_rec_header h;
    const uint8_t *pl;
    char what[64];
    snprintf(what, sizeof what, "record %llu", (unsigned long long)index);
    int rc = moco_rec_parse(rec, len, 1, what, &h, &pl);
    if (rc) return rc;
    static int made;
    if (slow_ms) usleep((useconds_t)slow_ms * 1000);
    if (hang_at && ++made == hang_at) /* stuck with the sample in hand, until stopped */
        while (!augment_pipe_stop) usleep(10000);
    if (moco_get_le32(pl) != index) return moco_err(MOCO_ECORRUPT, "%s holds image %u", what, moco_get_le32(pl));
    int side = view_side ? view_side : 8;
    for (int i = 0; i < side * side; i++) {
        q[i] = pl[i % 64];
        k[i] = pl[63 - i % 64];
    }
    memset(info, 0, sizeof *info);
    info->label = h.label;
    info->height = info->width = (uint16_t)side;
    info->channels = 1;
    return 0;
}

static inline void on_term(int s)
{
    (void)s;
    augment_pipe_stop = 1;
}

/* A worker process: the real pipeline loop with the fake augmentation, in
 * this program started afresh (main's --as-worker). Not a bare fork: this
 * process has ZeroMQ's threads by then, and a child forked while one of them
 * held the allocator's lock (AddressSanitizer's has no fork handler) waited
 * on it for ever, a worker that never said READY (a CI failure, 2026-12-04).
 * Between fork and exec the child calls only async-signal-safe functions. */
static inline pid_t start_worker(int queue)
{
    char q[16], side[16], hang[16], slow[16];
    snprintf(q, sizeof q, "%d", queue);
    snprintf(side, sizeof side, "%d", view_side);
    snprintf(hang, sizeof hang, "%d", hang_at);
    snprintf(slow, sizeof slow, "%d", slow_ms);
    char *argv[] = {program_invocation_short_name, "--as-worker", work_ep, pairs_ep, q, side, hang, slow, NULL};
    pid_t pid = fork();
    if (pid == 0) {
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    return track(pid);
}

/* main's --as-worker LOADER_EP PAIRS_EP QUEUE VIEW_SIDE HANG_AT SLOW_MS: the worker's life. */
static inline int worker_main(char **argv)
{
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    view_side = atoi(argv[3]), hang_at = atoi(argv[4]), slow_ms = atoi(argv[5]);
    augment_pipe_cfg cfg = {.loader_ep = argv[0], .push_ep = argv[1], .view_bytes = view_side ? (size_t)view_side * (size_t)view_side : 64,
                            .queue = atoi(argv[2]), .sndhwm = 2, .loader_timeout = 10};
    augment_pipe_stats st;
    int rc = augment_pipe_run(&cfg, fake_pair, NULL, &st);
    if (rc) fprintf(stderr, "worker %d: %s\n", (int)getpid(), moco_errmsg());
    return rc ? 1 : 0;
}

static inline pid_t start_loader(const char *extra)
{
    static char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec %s loader --db %s/db --bind %s --ctl %s --log %s/loader.jsonl %s", tu_moco(), tmp,
             work_ep, ctl_ep, tmp, extra);
    char log[1400];
    snprintf(log, sizeof log, "%s/loader.err", tmp);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    return spawn(argv, log);
}

/* The loader's log (loader.jsonl) as a string, and the last "key": of it. */
static inline char *loader_log(void)
{
    char p[1400];
    snprintf(p, sizeof p, "%s/loader.jsonl", tmp);
    size_t n;
    uint8_t *raw = tu_read_file(p, &n);
    assert_non_null(raw);
    char *txt = malloc(n + 1); /* tu_read_file's bytes are not a string */
    assert_non_null(txt);
    memcpy(txt, raw, n);
    txt[n] = 0;
    free(raw);
    return txt;
}

static inline char *last_key(char *txt, const char *key)
{
    char *last = NULL, *x = txt;
    while ((x = strstr(x, key))) last = x++;
    assert_non_null(last);
    return last;
}

#endif
