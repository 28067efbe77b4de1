/* test_pipeline_serve.c: the streaming pipeline in serve mode with two
 * consumers, end to end with real processes: `moco loader` from bin/moco,
 * workers that are this program started again (--as-worker, the fake worker
 * of tests/pipeline_util.h), and the consumers played in-process through
 * trainer/stream.h. A consumer that does not read holds at most the loader's
 * byte cap, and nothing is lost; a rank that leaves for good, with no
 * successor, stops the run instead of leaving the others waiting for its
 * shard; the last acknowledgements coming with every rank's BYE still end
 * the run. Every test is bounded in time. */
#include "tests/pipeline_util.h"

#include "formats/clock.h"
#include "trainer/stream.h"

/* The last "key":N of the loader's log, as a number. */
static unsigned long long loader_last(const char *key)
{
    char *txt = loader_log(), *last = last_key(txt, key);
    unsigned long long v = strtoull(last + strlen(key), NULL, 10);
    free(txt);
    return v;
}

#define HELD_CAP (512 << 10) /* $MOCO_LOADER_HELD_BYTES here */

/* Serve mode, 2 consumers (played here through trainer/stream.h), pairs of
 * 2 x 128x128 views (32 KiB): rank 0 reads nothing for 3 s, only says it is
 * alive, while rank 1 reads. The pairs of rank 0's shard wait for it at the
 * loader up to the cap on one consumer's queue ($MOCO_LOADER_HELD_BYTES,
 * 512 KiB here; LOADER_HELD_BYTES_MAX, 256 MiB, by default): past it the
 * loader counts it (held_full in loader.jsonl) and stops reading the
 * workers' pairs, so its queue holds at most the cap and one message
 * (held_bytes_peak; without the cap, its whole shard: 4.8 MiB); nothing is
 * lost: once rank 0 reads, the epoch ends with every sample delivered
 * exactly once over the two ranks. The variable cannot raise the cap. */
static void test_serve_held_bytes_cap(void **st)
{
    (void)st;
    setup_dirs("pipe_held");
    make_db();
    char cap[32];
    snprintf(cap, sizeof cap, "%d", HELD_CAP);
    setenv("MOCO_LOADER_HELD_BYTES", cap, 1);
    char extra[1400];
    snprintf(extra, sizeof extra, "--epochs 1 --seed 5 --pairs %s --consumers 2 --window 400 --reissue-after 100 "
             "--consumer-timeout 30 --linger 0", pairs_ep);
    pid_t L = start_loader(extra);
    unsetenv("MOCO_LOADER_HELD_BYTES");
    view_side = 128;
    pid_t W[2] = {start_worker(4), start_worker(4)};
    view_side = 0;
    trainer_stream *s[2];
    for (int r = 0; r < 2; r++) {
        stream_cfg cfg = {.ctl_ep = ctl_ep, .resume_epoch = STREAM_NO_EPOCH, .loader_timeout = 30, .rank = r, .ranks = 2};
        assert_int_equal(stream_open(&cfg, &s[r]), 0);
    }
    static int seen[N];
    memset(seen, 0, sizeof seen);
    int ended[2] = {0, 0}, got[2] = {0, 0};
    double t0 = moco_now_s(), paused_until = -1;
    while (!(ended[0] && ended[1])) {
        if (moco_now_s() - t0 > 60) fail_msg("the epoch did not end in 60 s: ranks got %d and %d pairs", got[0], got[1]);
        for (int r = 0; r < 2; r++) {
            if (ended[r]) continue;
            if (r == 0 && (paused_until < 0 || moco_now_s() < paused_until)) { /* rank 0: alive, not reading */
                if (paused_until < 0 && got[1] > 0) paused_until = moco_now_s() + 3;
                stream_keepalive(s[0]);
                continue;
            }
            stream_event ev;
            if (stream_next(s[r], 5, &ev)) fail_msg("rank %d: %s", r, moco_errmsg());
            if (ev.kind == STREAM_PAIR) {
                assert_true(ev.pair.index < N && ev.pair.epoch == 0 && ev.pair.height == 128);
                seen[ev.pair.index]++;
                got[r]++;
            } else if (ev.kind == STREAM_EPOCH_END || ev.kind == STREAM_END) {
                ended[r] = 1;
            }
        }
        usleep(1000);
    }
    for (int r = 0; r < 2; r++) stream_destroy(&s[r]);
    assert_int_equal(wait_for(L, 20), 0);
    for (int i = 0; i < 2; i++) wait_for(W[i], 10);
    for (int i = 0; i < N; i++)
        if (seen[i] != 1) fail_msg("index %d delivered %d times", i, seen[i]);
    unsigned long long peak = loader_last("\"held_bytes_peak\":"), full = loader_last("\"held_full\":");
    print_message("  ranks got %d + %d pairs; rank 0's queue at the loader: peak %llu bytes (cap %d), over the cap %llu times\n",
                  got[0], got[1], peak, HELD_CAP, full);
    assert_int_equal(got[0] + got[1], N);
    assert_true(full >= 1);          /* the cap was reached, and said so */
    assert_true(peak > HELD_CAP);    /* ... by the message that went over it */
    assert_true(peak <= HELD_CAP + 4 * 33000); /* and by no more than one message (a worker's PAIRS of up to 4 pairs) */
    /* the variable only lowers the cap: 0, or more than LOADER_HELD_BYTES_MAX, is refused (exit 2, saying so) */
    for (int i = 0; i < 2; i++)
        assert_int_equal(tu_sh("MOCO_LOADER_HELD_BYTES=%s timeout 10 %s loader --db %s/db --bind %s --pairs %s 2>%s/bad.err; "
                               "test $? = 2 && grep -q 'MOCO_LOADER_HELD_BYTES=%s: give bytes from 1 to 268435456' %s/bad.err",
                               i ? "268435457" : "0", tu_moco(), tmp, work_ep, pairs_ep, tmp, i ? "268435457" : "0", tmp), 0);
}

/* Serve mode, 2 consumers: rank 1 reads a little and leaves (BYE) and no
 * successor comes, while rank 0 reads on. Rank 0 would wait for rank 1's
 * shard of the epoch for ever (before: it did, the loader heartbeating it).
 * Once rank 1 has been away --consumer-wait (3 s), the loader stops the run:
 * rank 0 gets REFUSED naming rank 1 and the flag, and the loader exits 1
 * with the same reason (a rank_away event in its log). */
static void test_serve_rank_away(void **st)
{
    (void)st;
    setup_dirs("pipe_away");
    make_db();
    char extra[1400];
    snprintf(extra, sizeof extra, "--epochs 1 --seed 5 --pairs %s --consumers 2 --window 64 --consumer-timeout 30 "
             "--consumer-wait 3 --linger 0", pairs_ep);
    pid_t L = start_loader(extra);
    pid_t W = start_worker(4);
    trainer_stream *s[2];
    for (int r = 0; r < 2; r++) {
        stream_cfg cfg = {.ctl_ep = ctl_ep, .resume_epoch = STREAM_NO_EPOCH, .loader_timeout = 60, .rank = r, .ranks = 2};
        assert_int_equal(stream_open(&cfg, &s[r]), 0);
    }
    int got[2] = {0, 0}, rc = 0;
    double t0 = moco_now_s(), left = 0;
    while (!rc) {
        if (moco_now_s() - t0 > 40) fail_msg("rank 0 still waits 40 s after its start (%d pairs; rank 1 left with %d)", got[0], got[1]);
        if (s[1] && got[1] >= 5) { /* rank 1 leaves: BYE, and no successor */
            stream_destroy(&s[1]);
            s[1] = NULL;
            left = moco_now_s();
        }
        for (int r = 0; r < 2 && !rc; r++) {
            if (!s[r]) continue;
            stream_event ev;
            if ((rc = stream_next(s[r], 50, &ev))) {
                if (r != 0) fail_msg("rank %d: %s", r, moco_errmsg());
                break;
            }
            if (ev.kind == STREAM_PAIR) got[r]++;
            else if (ev.kind == STREAM_EPOCH_END || ev.kind == STREAM_END) fail_msg("rank %d: the epoch ended without rank 1's shard", r);
        }
    }
    double waited = moco_now_s() - left;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", moco_errmsg());
    print_message("  rank 0 stopped %.1f s after rank 1 left (%d + %d pairs): %s\n", waited, got[0], got[1], msg);
    stream_destroy(&s[0]);
    assert_true(left > 0);
    assert_non_null(strstr(msg, "refused this consumer: the consumer of rank 1 of 2 has been away for"));
    assert_non_null(strstr(msg, "(--consumer-wait 3)"));
    assert_true(waited >= 2.5 && waited < 15);
    assert_int_equal(got[0] + got[1] < N, 1);
    assert_int_equal(wait_for(L, 20), 1);
    wait_for(W, 10);
    assert_int_equal(tu_sh("grep -q 'moco loader: the consumer of rank 1 of 2 has been away for .* the run stops' %s/loader.err", tmp), 0);
    assert_int_equal(tu_sh("grep -q '\"rank_away\".*\"rank\":1' %s/loader.jsonl", tmp), 0);
}

/* Serve mode, 2 consumers, the last epoch read to its EPOCH_END by both;
 * then the loader is stopped (SIGSTOP) while both ranks close, so that it
 * finds their last ACKs and both BYEs in one turn. Every sample is
 * acknowledged: the epoch, and the run, must end (END, exit 0). Before, the
 * loader checked for a complete epoch only while a consumer was connected,
 * and waited (here for ever; by default --consumer-wait, then failed). */
static void test_serve_last_acks_with_bye(void **st)
{
    (void)st;
    setup_dirs("pipe_bye");
    make_db();
    char extra[1400];
    snprintf(extra, sizeof extra, "--epochs 1 --seed 5 --pairs %s --consumers 2 --window 64 --consumer-timeout 60 "
             "--consumer-wait 600 --linger 0", pairs_ep);
    pid_t L = start_loader(extra);
    pid_t W = start_worker(4);
    trainer_stream *s[2];
    for (int r = 0; r < 2; r++) {
        stream_cfg cfg = {.ctl_ep = ctl_ep, .resume_epoch = STREAM_NO_EPOCH, .loader_timeout = 60, .rank = r, .ranks = 2};
        assert_int_equal(stream_open(&cfg, &s[r]), 0);
    }
    int ended[2] = {0, 0}, got[2] = {0, 0};
    double t0 = moco_now_s();
    while (!(ended[0] && ended[1])) {
        if (moco_now_s() - t0 > 60) fail_msg("the epoch did not end in 60 s: ranks got %d and %d pairs", got[0], got[1]);
        for (int r = 0; r < 2; r++) {
            stream_event ev;
            if (ended[r]) continue;
            if (stream_next(s[r], 5, &ev)) fail_msg("rank %d: %s", r, moco_errmsg());
            if (ev.kind == STREAM_PAIR) got[r]++;
            else if (ev.kind == STREAM_EPOCH_END) ended[r] = 1;
            else if (ev.kind == STREAM_END) fail_msg("rank %d: END before the epoch's last acknowledgements", r);
        }
    }
    assert_int_equal(got[0] + got[1], N);
    assert_int_equal(kill(L, SIGSTOP), 0);
    for (int r = 0; r < 2; r++) stream_destroy(&s[r]); /* the last ACKs, then BYE */
    usleep(300000);
    assert_int_equal(kill(L, SIGCONT), 0);
    assert_int_equal(wait_for(L, 20), 0);
    wait_for(W, 10);
    assert_int_equal(tu_sh("grep -q '\"event\":\"end\"' %s/loader.jsonl", tmp), 0);
    assert_int_equal(tu_sh("grep -q 'moco loader: epoch 0 complete: %d delivered, 0 failed' %s/loader.err", N, tmp), 0);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 8 && !strcmp(argv[1], "--as-worker")) return worker_main(argv + 2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_serve_held_bytes_cap, teardown),
        cmocka_unit_test_teardown(test_serve_rank_away, teardown),
        cmocka_unit_test_teardown(test_serve_last_acks_with_bye, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
