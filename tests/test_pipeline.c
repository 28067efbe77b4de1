/* test_pipeline.c: the streaming pipeline end to end, with real processes:
 * `moco loader` and `moco sink` from bin/moco, and workers that are this
 * program started again (--as-worker) to run augment_pipe_run() with a
 * trivial augmentation (so that these tests check the plumbing, not the
 * image code). Every test is bounded
 * in time and checks the sink's per-epoch index sets: exactly the dataset,
 * once per epoch, whatever is done to the workers. Serve mode with several
 * consumers: tests/test_pipeline_serve.c; the helpers both use:
 * tests/pipeline_util.h. */
#include "tests/pipeline_util.h"

#include <zmq.h>

#include "formats/pipeline.h"
#include "formats/rng.h"
#include "loader/stream.h"

/* Wait until the loader has said "worker K joined" n times (loader.err). */
static void wait_joined(int n)
{
    for (int i = 0; i < 1000; i++) {
        if (tu_sh("test $(grep -c 'joined' %s/loader.err) -ge %d", tmp, n) == 0) return;
        usleep(10000);
    }
    fail_msg("%d workers did not join in 10 s", n);
}

static pid_t start_sink(const char *extra, const char *name)
{
    static char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec %s sink --bind %s --connect %s --quiet --count %d --index-log %s/%s.idx --json %s/%s.json %s >/dev/null",
             tu_moco(), pairs_ep, ctl_ep, N, tmp, name, tmp, name, extra);
    char log[1400];
    snprintf(log, sizeof log, "%s/%s.err", tmp, name);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    return spawn(argv, log);
}

/* Per-epoch counts of each index in the sink's log; asserts each epoch in
 * [e0, e1) holds every index exactly once (minus `skip` for epoch e0). */
static void check_index_log(const char *name, int e0, int e1, const uint8_t *skip)
{
    char p[1400];
    snprintf(p, sizeof p, "%s/%s.idx", tmp, name);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    static int seen[16][N];
    memset(seen, 0, sizeof seen);
    unsigned e;
    unsigned long long i;
    while (fscanf(f, "%u %llu", &e, &i) == 2) {
        assert_true(e < 16 && i < N);
        seen[e][i]++;
    }
    fclose(f);
    for (int ep = e0; ep < e1; ep++)
        for (int k = 0; k < N; k++) {
            int want = (ep == e0 && skip && skip[k]) ? 0 : 1;
            if (seen[ep][k] != want) fail_msg("%s: epoch %d index %d seen %d times, expected %d", name, ep, k, seen[ep][k], want);
        }
}

static int json_has(const char *name, const char *needle)
{
    char p[1400];
    snprintf(p, sizeof p, "%s/%s.json", tmp, name);
    return tu_sh("grep -q '%s' %s", needle, p) == 0;
}

static void run_clean_q(int workers, int epochs, int queue)
{
    char extra[64];
    snprintf(extra, sizeof extra, "--epochs %d --seed 5", epochs);
    pid_t L = start_loader(extra);
    pid_t W[8];
    for (int i = 0; i < workers; i++) W[i] = start_worker(queue);
    /* the consumer last, once every worker has joined: an epoch of N takes
     * a fraction of a second, and a worker that joins after the end never
     * hears STOP (it leaves after its --loader-timeout) */
    wait_joined(workers);
    pid_t S = start_sink("", "sink");
    assert_int_equal(wait_for(S, 60), 0);
    assert_int_equal(wait_for(L, 10), 0);
    for (int i = 0; i < workers; i++) {
        int rc = wait_for(W[i], 10);
        if (rc) fail_msg("worker %d exit status %d", i, rc);
    } /* STOP from the loader */
    check_index_log("sink", 0, epochs, NULL);
    assert_true(json_has("sink", "\"ok\":true"));
}

/* queue 4: SAMPLES of one record each (the worker asks for a quarter) */
static void run_clean(int workers, int epochs) { run_clean_q(workers, epochs, 4); }

/* The loader's last counts: records sent and SAMPLE/SAMPLES messages. */
static void loader_counts(long *sent, long *msgs)
{
    char *txt = loader_log(), *last = last_key(txt, "\"sample_msgs\":");
    *msgs = atol(last + 14);
    while (last > txt && strncmp(last, "\"sent\":", 7)) last--;
    *sent = atol(last + 7);
    free(txt);
}

/* Batches of 16 records (queue 64) to one and to three workers: exactly
 * the index set of every epoch, in far fewer messages than records. */
static void test_batched_exact(void **st)
{
    (void)st;
    setup_dirs("pipe_batch1");
    make_db();
    run_clean_q(1, 2, 64);
    long sent, msgs;
    loader_counts(&sent, &msgs);
    print_message("  1 worker: %ld records in %ld messages\n", sent, msgs);
    assert_true(sent >= 2 * N && msgs > 0 && msgs * 4 < sent);
    teardown(NULL);
    setup_dirs("pipe_batch3");
    make_db();
    run_clean_q(3, 2, 64);
    loader_counts(&sent, &msgs);
    print_message("  3 workers: %ld records in %ld messages\n", sent, msgs);
    assert_true(sent >= 2 * N && msgs > 0 && msgs * 2 < sent);
}

static void test_one_epoch_one_worker(void **st)
{
    (void)st;
    setup_dirs("pipe_one");
    make_db();
    run_clean(1, 1);
}

/* sink --json is written whole or not at all: a FIFO in its place is
 * refused (exit 1 naming it; it hung in fopen before) and stays a FIFO */
static void test_sink_json_fifo(void **st)
{
    (void)st;
    setup_dirs("pipe_sinkjson");
    make_db();
    assert_int_equal(tu_sh("mkfifo %s/fifo.json", tmp), 0);
    pid_t L = start_loader("--epochs 1 --seed 5"), W = start_worker(4);
    wait_joined(1);
    pid_t S = start_sink("", "fifo");
    assert_int_equal(wait_for(S, 30), 1);
    assert_int_equal(wait_for(L, 10), 0);
    assert_int_equal(wait_for(W, 10), 0);
    check_index_log("fifo", 0, 1, NULL); /* the stream itself was fine */
    assert_int_equal(tu_sh("grep -q 'moco sink: %s/fifo.json is a FIFO, not a regular file; not replacing it' %s/fifo.err", tmp, tmp), 0);
    assert_int_equal(tu_sh("test -p %s/fifo.json", tmp), 0);
}

static void test_two_epochs_three_workers(void **st)
{
    (void)st;
    setup_dirs("pipe_three");
    make_db();
    run_clean(3, 2);
    assert_true(json_has("sink", "\"epochs\":2"));
}

/* SIGKILL a worker every 0.3 s and start a replacement: nothing lost, nothing
 * duplicated (the sink drops the duplicates; its log shows what it kept). */
static void test_workers_killed_repeatedly(void **st)
{
    (void)st;
    setup_dirs("pipe_kill");
    make_db();
    pid_t L = start_loader("--epochs 3 --worker-timeout 0.5"), S = start_sink("--delay-ms 2", "sink");
    pid_t W[3];
    for (int i = 0; i < 3; i++) W[i] = start_worker(i ? 64 : 4); /* batches of 16, and of 1 */
    int kills = 0;
    for (int round = 0; round < 400; round++) {
        usleep(300000);
        if (waitpid(S, NULL, WNOHANG) != 0) {
            /* the sink has exited: reap it through wait_for below */
            break;
        }
        int v = round % 3;
        kill(W[v], SIGKILL);
        waitpid(W[v], NULL, 0);
        kills++;
        W[v] = start_worker(v ? 64 : 4);
    }
    print_message("  killed %d workers\n", kills);
    assert_true(kills >= 2);
    for (int i = 0; i < 3; i++) { kill(W[i], SIGKILL); waitpid(W[i], NULL, 0); }
    kill(L, SIGTERM);
    wait_for(L, 10);
    check_index_log("sink", 0, 3, NULL);
    assert_true(json_has("sink", "\"ok\":true"));
}

/* The consumer stops mid-epoch; a fresh pipeline resumes from its state and
 * delivers exactly the rest of that epoch, then the next one. */
static void test_resume_mid_epoch(void **st)
{
    (void)st;
    setup_dirs("pipe_resume");
    make_db();
    pid_t L = start_loader("--epochs 2 --seed 9 --consumer-timeout 1"), S = start_sink("--stop-after 120", "first");
    pid_t W = start_worker(4);
    assert_int_equal(wait_for(S, 60), 3); /* stopped on purpose */
    kill(L, SIGTERM);
    kill(W, SIGTERM);
    wait_for(L, 10);
    wait_for(W, 15);
    /* the delivered set of epoch 0, as a checkpoint would hold it */
    static uint8_t got[N];
    char p[1400], q[1400];
    snprintf(p, sizeof p, "%s/first.idx", tmp);
    FILE *f = fopen(p, "r");
    snprintf(q, sizeof q, "%s/resume.txt", tmp);
    FILE *o = fopen(q, "w");
    unsigned e;
    unsigned long long i;
    int n = 0;
    while (fscanf(f, "%u %llu", &e, &i) == 2) {
        assert_int_equal(e, 0);
        assert_false(got[i]);
        got[i] = 1;
        fprintf(o, "%llu\n", i);
        n++;
    }
    fclose(f);
    fclose(o);
    assert_int_equal(n, 120);
    tu_sh("rm -f %s/work %s/ctl %s/pairs", tmp, tmp, tmp);
    char extra[1600];
    snprintf(extra, sizeof extra, "--resume-epoch 0 --resume-indices %s", q);
    L = start_loader("--epochs 2 --seed 9");
    S = start_sink(extra, "second");
    W = start_worker(4);
    assert_int_equal(wait_for(S, 60), 0);
    assert_int_equal(wait_for(L, 10), 0);
    assert_int_equal(wait_for(W, 10), 0);
    check_index_log("second", 0, 2, got);
    assert_true(json_has("second", "\"ok\":true"));
}

static long rss_kb(pid_t pid)
{
    char p[64], line[256];
    snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
    FILE *f = fopen(p, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

/* A slow consumer: the window bounds what is in flight, memory stays flat. */
static void test_slow_consumer_bounded(void **st)
{
    (void)st;
    setup_dirs("pipe_slow");
    make_db();
    /* 300 pairs at 15 ms: the run lasts over 4.5 s from the workers' joining; the
     * first sample 1 s after it (before, 1 s after the start: under a slower
     * build the workers had not joined yet, and the loader's connection buffers
     * came between the samples: 14 -> 30 MB under UBSan) */
    pid_t L = start_loader("--epochs 1 --window 16"), S = start_sink("--delay-ms 15", "sink");
    pid_t W[2] = {start_worker(4), start_worker(4)};
    wait_joined(2);
    sleep(1);
    long l1 = rss_kb(L), w1 = rss_kb(W[0]);
    sleep(2);
    long l2 = rss_kb(L), w2 = rss_kb(W[0]);
    print_message("  RSS loader %ld -> %ld kB, worker %ld -> %ld kB\n", l1, l2, w1, w2);
    /* rss_kb() is -1 for a process that is gone (or a zombie): both alive at both samples */
    if (l1 <= 0 || l2 <= 0 || w1 <= 0 || w2 <= 0) fail_msg("a process was gone when sampled: RSS %ld %ld %ld %ld", l1, l2, w1, w2);
    assert_true(l2 - l1 < 2048 && w2 - w1 < 2048);
    assert_int_equal(wait_for(S, 60), 0);
    assert_int_equal(wait_for(L, 10), 0);
    for (int i = 0; i < 2; i++) {
        int rc = wait_for(W[i], 10);
        if (rc) fail_msg("worker %d exit status %d", i, rc);
    } /* STOP from the loader */
    check_index_log("sink", 0, 1, NULL);
    /* the loader's in-flight count never exceeded the window, in each of its
     * once-a-second reports: at least 2 of them (the run lasts over 4.5 s), so
     * that a missing log or a renamed key fails */
    assert_int_equal(tu_sh("grep -o '\"in_flight\":[0-9]*' %s/loader.jsonl | cut -d: -f2 | awk '{n++} $1 > 16 {bad=1} END {exit bad || n < 2}'", tmp), 0);
}

/* The loader's last "reissued" count (loader.jsonl). */
static long loader_reissued(void)
{
    char *txt = loader_log();
    long r = atol(last_key(txt, "\"reissued\":") + 11);
    free(txt);
    return r;
}

/* A consumer that stops reading for 4 s (as `moco train` does to evaluate)
 * with pairs in flight, against --reissue-after 1: saying BUSY, its pairs
 * do not age and none goes out twice; silent (the control), they do. */
static void run_paused(const char *name, const char *how, int busy)
{
    setup_dirs(name);
    make_db();
    pid_t L = start_loader("--epochs 1 --window 64 --reissue-after 1");
    pid_t W[2] = {start_worker(8), start_worker(8)};
    wait_joined(2);
    char extra[128];
    snprintf(extra, sizeof extra, "--pause-at 40 --pause-s 4 %s", how);
    pid_t S = start_sink(extra, "sink");
    assert_int_equal(wait_for(S, 60), 0);
    assert_int_equal(wait_for(L, 10), 0);
    for (int i = 0; i < 2; i++) wait_for(W[i], 10);
    check_index_log("sink", 0, 1, NULL);
    long re = loader_reissued();
    print_message("  %s pause: %ld samples re-issued\n", busy ? "BUSY" : "silent", re);
    if (busy) assert_int_equal(re, 0);
    else assert_true(re > 0);
}

/* A worker stuck with samples in hand, neither dead (--worker-timeout 60)
 * nor caught as stalled (--stall-timeout 0), while the consumer reads: its
 * samples go out again after --reissue-after, to the other worker. */
static void test_lost_sample_reissued(void **st)
{
    (void)st;
    setup_dirs("pipe_lost");
    make_db();
    pid_t L = start_loader("--epochs 1 --reissue-after 1 --worker-timeout 60 --stall-timeout 0");
    hang_at = 5;
    start_worker(8);
    hang_at = 0;
    pid_t W = start_worker(8);
    wait_joined(2);
    pid_t S = start_sink("", "sink");
    assert_int_equal(wait_for(S, 60), 0);
    assert_int_equal(wait_for(L, 10), 0);
    assert_int_equal(wait_for(W, 10), 0);
    check_index_log("sink", 0, 1, NULL);
    long re = loader_reissued();
    print_message("  %ld samples re-issued\n", re);
    assert_true(re >= 1);
}

/* A slow consumer behind a deep pipeline (every sample in flight at once,
 * 10 ms a pair: the last waits 3 s) against --reissue-after 1: samples are
 * late only past twice the pipeline's depth, so none goes out twice. */
static void test_slow_consumer_deep(void **st)
{
    (void)st;
    setup_dirs("pipe_deep");
    make_db();
    pid_t L = start_loader("--epochs 1 --reissue-after 1");
    pid_t W[2] = {start_worker(256), start_worker(256)};
    wait_joined(2);
    pid_t S = start_sink("--delay-ms 10", "sink");
    assert_int_equal(wait_for(S, 60), 0);
    assert_int_equal(wait_for(L, 10), 0);
    for (int i = 0; i < 2; i++) wait_for(W[i], 10);
    check_index_log("sink", 0, 1, NULL);
    long re = loader_reissued();
    print_message("  %ld samples re-issued\n", re);
    assert_int_equal(re, 0);
}

static void test_paused_consumer(void **st)
{
    (void)st;
    run_paused("pipe_pause_busy", "", 1);
    teardown(NULL);
    run_paused("pipe_pause_silent", "--pause-silent", 0);
}

/* Garbage sent to every endpoint is dropped and counted; the run is exact. */
static void test_malformed_messages_dropped(void **st)
{
    (void)st;
    setup_dirs("pipe_garbage");
    make_db();
    pid_t L = start_loader("--epochs 2"), S = start_sink("--delay-ms 1", "sink");
    pid_t W = start_worker(4);
    void *ctx = zmq_ctx_new();
    void *d1 = zmq_socket(ctx, ZMQ_DEALER), *d2 = zmq_socket(ctx, ZMQ_DEALER), *p = zmq_socket(ctx, ZMQ_PUSH);
    zmq_connect(d1, work_ep);
    zmq_connect(d2, ctl_ep);
    zmq_connect(p, pairs_ep);
    moco_rng r;
    moco_rng_init(&r, 3, 0, 0, 0);
    for (int i = 0; i < 200; i++) {
        uint8_t junk[64];
        size_t n = moco_rng_below(&r, sizeof junk);
        for (size_t k = 0; k < n; k++) junk[k] = (uint8_t)moco_rng_u64(&r);
        if (i % 4 == 0 && n >= 8) memcpy(junk, "MOCW\x01\x00", 6); /* right magic, junk after */
        zmq_send(d1, junk, n, ZMQ_DONTWAIT);
        zmq_send(d2, junk, n, ZMQ_DONTWAIT);
        zmq_send(p, junk, n, (i % 2 ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
        zmq_send(p, junk, n, ZMQ_DONTWAIT);
        usleep(2000);
    }
    assert_int_equal(wait_for(S, 60), 0);
    assert_int_equal(wait_for(L, 10), 0);
    wait_for(W, 10);
    zmq_close(d1);
    zmq_close(d2);
    zmq_close(p);
    zmq_ctx_term(ctx);
    check_index_log("sink", 0, 2, NULL);
    assert_true(json_has("sink", "\"ok\":true"));
    assert_true(json_has("sink", "\"stream\":{"));
    assert_false(json_has("sink", "\"malformed\":0,"));
    /* the loader counted what it dropped: read the figure from its last
     * statistics line (a missing log or line fails here, not passes) */
    char lp[1400];
    snprintf(lp, sizeof lp, "%s/loader.jsonl", tmp);
    size_t ln;
    uint8_t *raw = tu_read_file(lp, &ln);
    assert_non_null(raw);
    char *txt = malloc(ln + 1);
    assert_non_null(txt);
    memcpy(txt, raw, ln);
    txt[ln] = 0;
    free(raw);
    char *last = NULL;
    for (char *x = txt; (x = strstr(x, "\"dropped_msgs\":")); x++) last = x;
    assert_non_null(last);
    long dropped = atol(last + strlen("\"dropped_msgs\":"));
    print_message("  the loader dropped %ld malformed messages\n", dropped);
    assert_true(dropped > 0);
    free(txt);
}

/* A record of the test dataset's shape for index i (what fake_pair checks). */
static uint8_t *test_record(uint64_t i, size_t *len)
{
    uint8_t px[64];
    for (int k = 0; k < 64; k++) px[k] = (uint8_t)k;
    moco_put_le32(px, (uint32_t)i);
    moco_rec_header h = {.version = MOCO_REC_VERSION, .encoding = MOCO_ENC_RAW, .channels = 1, .label = 1, .width = 8, .height = 8};
    return moco_rec_build(&h, px, 64, len);
}

/* The worker against a scripted loader: it asks for batches (READY of
 * version 2), takes a version-1 SAMPLE and SAMPLES batches alike, drops
 * SAMPLES whose lengths do not add up or that claim version 1, and makes
 * exactly one pair per good record. */
/* The end of a test that played the loader: STOP to the worker (id), its clean exit, the sockets closed. */
static void stop_scripted(void *ctx, void *router, void *pull, const uint8_t *id, int idl, pid_t W)
{
    uint8_t b[16];
    size_t sl = moco_pipe_simple(b, MOCO_MSG_STOP);
    zmq_send(router, id, (size_t)idl, ZMQ_SNDMORE);
    zmq_send(router, b, sl, 0);
    assert_int_equal(wait_for(W, 10), 0);
    zmq_close(router);
    zmq_close(pull);
    zmq_ctx_term(ctx);
}

static void test_worker_speaks_both(void **st)
{
    (void)st;
    setup_dirs("pipe_worker");
    void *ctx = zmq_ctx_new(), *router = zmq_socket(ctx, ZMQ_ROUTER), *pull = zmq_socket(ctx, ZMQ_PULL);
    int tmo = 60000; /* only a failing run waits it out; an AddressSanitizer worker on a loaded machine took over 10 s to say READY */
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(pull, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    assert_int_equal(zmq_bind(router, work_ep), 0);
    assert_int_equal(zmq_bind(pull, pairs_ep), 0);
    pid_t W = start_worker(64);
    uint8_t id[256], b[64];
    int idl = zmq_recv(router, id, sizeof id, 0);
    assert_true(idl > 0);
    int bl = zmq_recv(router, b, sizeof b, 0);
    moco_pipe_msg m;
    assert_int_equal(moco_pipe_parse(b, (size_t)bl, &m), 0);
    assert_int_equal(m.type, MOCO_MSG_READY);
    assert_int_equal(bl, 24);
    assert_int_equal(m.batch, 16);
    assert_int_equal(m.credits, 64);
    /* a version-1 SAMPLE: index 0 */
    size_t rl;
    uint8_t *r = test_record(0, &rl), h[16 + MOCO_SAMPLES_ENTRY * 16];
    moco_wire_sample_pack(h, &(moco_wire_sample){.epoch = 2, .index = 0});
    zmq_send(router, id, (size_t)idl, ZMQ_SNDMORE);
    zmq_send(router, h, MOCO_WIRE_SAMPLE_SIZE, ZMQ_SNDMORE);
    zmq_send(router, r, rl, 0);
    free(r);
    /* SAMPLES of 10 (indices 1..10), then two bad ones (indices 50..52) */
    for (int variant = 0; variant < 3; variant++) {
        moco_pipe_sample e[10];
        uint8_t data[10 * 200];
        size_t used = 0;
        uint32_t n = variant ? 3 : 10;
        for (uint32_t i = 0; i < n; i++) {
            r = test_record(variant ? 50 + i : 1 + i, &rl);
            assert_true(used + rl <= sizeof data);
            memcpy(data + used, r, rl);
            used += rl;
            free(r);
            e[i] = (moco_pipe_sample){.epoch = 2, .len = (uint32_t)rl, .index = variant ? 50 + i : 1 + i};
        }
        size_t hl = moco_pipe_samples_pack(h, e, n);
        if (variant == 1) used--;    /* the lengths claim one byte more than the frame */
        if (variant == 2) h[4] = 1;  /* SAMPLES is not a version-1 message */
        zmq_send(router, id, (size_t)idl, ZMQ_SNDMORE);
        zmq_send(router, h, hl, ZMQ_SNDMORE);
        zmq_send(router, data, used, 0);
    }
    int seen[11] = {0}, got = 0;
    while (got < 11) {
        zmq_msg_t f[2];
        zmq_msg_init(&f[0]);
        zmq_msg_init(&f[1]);
        assert_true(zmq_msg_recv(&f[0], pull, 0) >= 0);
        assert_true(zmq_msg_more(&f[0]));
        assert_true(zmq_msg_recv(&f[1], pull, 0) >= 0);
        uint32_t n;
        assert_int_equal(moco_pipe_pairs_parse(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), zmq_msg_size(&f[1]), &n), 0);
        for (uint32_t i = 0; i < n; i++) {
            moco_wire_pair p;
            moco_pipe_pairs_at(zmq_msg_data(&f[0]), i, &p);
            assert_int_equal(p.epoch, 2);
            assert_true(p.index <= 10);
            seen[p.index]++;
            got++;
        }
        zmq_msg_close(&f[0]);
        zmq_msg_close(&f[1]);
    }
    for (int i = 0; i <= 10; i++) assert_int_equal(seen[i], 1);
    /* it has counted what it received, and asks for more */
    for (;;) {
        assert_int_equal(zmq_recv(router, id, sizeof id, 0), idl);
        bl = zmq_recv(router, b, sizeof b, 0);
        assert_int_equal(moco_pipe_parse(b, (size_t)bl, &m), 0);
        if (m.type == MOCO_MSG_READY && m.received == 11) break;
        assert_true(m.type == MOCO_MSG_READY && m.received < 11);
    }
    stop_scripted(ctx, router, pull, id, idl, W);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* A worker busy with one batch of R records of ms each still says READY
 * about once a second (the loader declares a worker silent for
 * --worker-timeout dead). */
static void run_busy(const char *name, uint32_t R, int ms)
{
    setup_dirs(name);
    void *ctx = zmq_ctx_new(), *router = zmq_socket(ctx, ZMQ_ROUTER), *pull = zmq_socket(ctx, ZMQ_PULL);
    assert_int_equal(zmq_bind(router, work_ep), 0);
    assert_int_equal(zmq_bind(pull, pairs_ep), 0);
    slow_ms = ms;
    pid_t W = start_worker(64);
    slow_ms = 0;
    uint8_t id[256], b[64];
    int tmo = 60000, idl;
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    assert_true((idl = zmq_recv(router, id, sizeof id, 0)) > 0);
    assert_true(zmq_recv(router, b, sizeof b, 0) > 0); /* its first READY */
    moco_pipe_sample e[64];
    static uint8_t data[64 * 200];
    uint8_t h[16 + MOCO_SAMPLES_ENTRY * 64];
    assert_true(R <= 64);
    size_t used = 0, rl;
    for (uint32_t i = 0; i < R; i++) {
        uint8_t *r = test_record(i, &rl);
        assert_true(used + rl <= sizeof data);
        memcpy(data + used, r, rl);
        used += rl;
        free(r);
        e[i] = (moco_pipe_sample){.epoch = 0, .len = (uint32_t)rl, .index = i};
    }
    size_t hl = moco_pipe_samples_pack(h, e, R);
    zmq_send(router, id, (size_t)idl, ZMQ_SNDMORE);
    zmq_send(router, h, hl, ZMQ_SNDMORE);
    zmq_send(router, data, used, 0);
    double t0 = now_s(), first = -1, last = -1, gap = 0;
    uint32_t pairs = 0;
    while (pairs < R && now_s() - t0 < 60) {
        zmq_pollitem_t it[2] = {{router, 0, ZMQ_POLLIN, 0}, {pull, 0, ZMQ_POLLIN, 0}};
        assert_true(zmq_poll(it, 2, 1000) >= 0);
        if (it[0].revents & ZMQ_POLLIN) {
            assert_true(zmq_recv(router, id, sizeof id, 0) > 0);
            int bl = zmq_recv(router, b, sizeof b, 0);
            moco_pipe_msg m;
            if (bl > 0 && !moco_pipe_parse(b, (size_t)bl, &m) && m.type == MOCO_MSG_READY && m.received == R) {
                double t = now_s();
                if (last >= 0 && t - last > gap) gap = t - last;
                if (first < 0) first = t;
                last = t;
            }
        }
        if (it[1].revents & ZMQ_POLLIN) {
            zmq_msg_t f[2];
            zmq_msg_init(&f[0]);
            zmq_msg_init(&f[1]);
            assert_true(zmq_msg_recv(&f[0], pull, 0) >= 0 && zmq_msg_recv(&f[1], pull, 0) >= 0);
            uint32_t n;
            assert_int_equal(moco_pipe_pairs_parse(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), zmq_msg_size(&f[1]), &n), 0);
            pairs += n;
            zmq_msg_close(&f[0]);
            zmq_msg_close(&f[1]);
        }
    }
    double busy = now_s() - t0;
    print_message("  %d pairs in %.2f s; READYs while busy: the first at %.2f s, the longest gap %.2f s\n", pairs, busy,
                  first < 0 ? -1 : first - t0, gap);
    assert_int_equal(pairs, R);
    assert_true(busy > 2.0);                  /* the batch was slow, as meant */
    assert_true(first >= 0 && first - t0 < 1.9); /* a READY before the batch ended ... */
    assert_true(gap < 1.9);                     /* ... and about once a second after it */
    stop_scripted(ctx, router, pull, id, idl, W);
}

/* 40 records of 60 ms each, 2.4 s of work in one batch. Before, no READY came
 * between the batch's start and its end. */
static void test_worker_ready_while_busy(void **st)
{
    (void)st;
    run_busy("pipe_busy", 40, 60);
}

/* One record of 2.6 s (a huge image): the READYs go on during it, from the
 * worker's heartbeat thread. Before, they went out between records only: the
 * gap was the record's 2.6 s, and a record over --worker-timeout (5 s) got
 * its healthy worker declared dead. */
static void test_worker_ready_inside_record(void **st)
{
    (void)st;
    run_busy("pipe_busy1", 1, 2600);
}

static void test_epoch_order(void **st)
{
    (void)st;
    static uint64_t a[1000], b[1000], c[1000], d[1000];
    loader_epoch_order(1, 0, a, 1000);
    loader_epoch_order(1, 0, b, 1000);
    loader_epoch_order(1, 1, c, 1000);
    loader_epoch_order(2, 0, d, 1000);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    assert_memory_not_equal(a, d, sizeof a);
    static char seen[1000];
    for (int i = 0; i < 1000; i++) {
        assert_true(c[i] < 1000);
        assert_false(seen[c[i]]);
        seen[c[i]] = 1;
    }
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 8 && !strcmp(argv[1], "--as-worker")) return worker_main(argv + 2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_epoch_order),
        cmocka_unit_test_teardown(test_worker_speaks_both, teardown),
        cmocka_unit_test_teardown(test_worker_ready_while_busy, teardown),
        cmocka_unit_test_teardown(test_worker_ready_inside_record, teardown),
        cmocka_unit_test_teardown(test_one_epoch_one_worker, teardown),
        cmocka_unit_test_teardown(test_batched_exact, teardown),
        cmocka_unit_test_teardown(test_sink_json_fifo, teardown),
        cmocka_unit_test_teardown(test_two_epochs_three_workers, teardown),
        cmocka_unit_test_teardown(test_workers_killed_repeatedly, teardown),
        cmocka_unit_test_teardown(test_resume_mid_epoch, teardown),
        cmocka_unit_test_teardown(test_slow_consumer_bounded, teardown),
        cmocka_unit_test_teardown(test_malformed_messages_dropped, teardown),
        cmocka_unit_test_teardown(test_lost_sample_reissued, teardown),
        cmocka_unit_test_teardown(test_paused_consumer, teardown),
        cmocka_unit_test_teardown(test_slow_consumer_deep, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
