/* test_stream.c: the consumer end of the stream (trainer/stream.h) against
 * a loader played by the test on inproc-free ipc: "nothing yet" is an
 * event (STREAM_NONE, return 0), a silent loader an error (MOCO_ETIMEOUT
 * naming it), a REFUSED HELLO an error with the loader's reason; a pair of
 * an epoch two ahead and an index past the count are rejected and counted;
 * stream_keepalive sends a heartbeat when one is due, and only then; to a
 * loader that knows BUSY, BUSY at once and then when due, and the next
 * stream_next a HEARTBEAT at once. */
#include "tests/testutil.h"

#include <zmq.h>

#include "formats/errors.h"
#include "formats/pipeline.h"
#include "trainer/stream.h"

static char ep[256];

/* A ROUTER playing the loader: receive the HELLO, answer with `answer`. */
static void *fake_loader(void *ctx, uint8_t *id, size_t *idlen)
{
    void *r = zmq_socket(ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(r, ZMQ_LINGER, &linger, sizeof linger);
    snprintf(ep, sizeof ep, "ipc://%s/test_stream-%d", getenv("MOCO_TEST_TMP") ? getenv("MOCO_TEST_TMP") : "/tmp", (int)getpid());
    assert_int_equal(zmq_bind(r, ep), 0);
    (void)id, (void)idlen;
    return r;
}

static void recv_hello(void *r, uint8_t *id, size_t *idlen)
{
    int n = zmq_recv(r, id, 255, 0);
    assert_true(n > 0);
    *idlen = (size_t)n;
    uint8_t b[64];
    assert_int_equal(zmq_recv(r, b, sizeof b, 0), 20); /* HELLO */
    uint16_t t;
    assert_int_equal(moco_wire_peek(b, 20, &t), 0);
    assert_int_equal(t, MOCO_MSG_HELLO);
}

static void send_to(void *r, const uint8_t *id, size_t idlen, const void *b, size_t n, const void *b2, size_t n2)
{
    zmq_send(r, id, idlen, ZMQ_SNDMORE);
    zmq_send(r, b, n, b2 ? ZMQ_SNDMORE : 0);
    if (b2) zmq_send(r, b2, n2, 0);
}

/* A consumer connected to a fake loader that has answered its HELLO with
 * WELCOME (serve mode, epoch 0 of 1, 10 samples). */
typedef struct {
    void *ctx, *r;
    uint8_t id[256];
    size_t idlen;
    trainer_stream *s;
} welcomed;

static void open_welcomed_flags(welcomed *c, double loader_timeout, uint32_t flags)
{
    c->ctx = zmq_ctx_new();
    c->r = fake_loader(c->ctx, c->id, &c->idlen);
    stream_cfg cfg = {.ctl_ep = ep, .resume_epoch = STREAM_NO_EPOCH, .loader_timeout = loader_timeout};
    assert_int_equal(stream_open(&cfg, &c->s), 0);
    recv_hello(c->r, c->id, &c->idlen);
    uint8_t w[32];
    send_to(c->r, c->id, c->idlen, w, moco_pipe_welcome(w, 0, 1, 10, flags, 1000), NULL, 0);
}

static void open_welcomed(welcomed *c, double loader_timeout) { open_welcomed_flags(c, loader_timeout, MOCO_WELCOME_SERVE); }

static void close_welcomed(welcomed *c)
{
    stream_destroy(&c->s);
    zmq_close(c->r);
    zmq_ctx_term(c->ctx);
}

static void test_none_then_silent(void **st)
{
    (void)st;
    welcomed c;
    open_welcomed(&c, 0.6);
    trainer_stream *s = c.s;
    void *r = c.r;
    const uint8_t *id = c.id;
    size_t idlen = c.idlen;
    stream_event ev;
    ev.kind = -1;
    assert_int_equal(stream_next(s, 50, &ev), 0);
    assert_int_equal(ev.kind, STREAM_NONE); /* nothing yet: not an error */
    /* pairs: epoch 0 index 3 (good), epoch 2 (two ahead: rejected), index 10 (past the count) */
    moco_wire_pair p[3] = {{.epoch = 0, .index = 3, .height = 1, .width = 1, .channels = 1},
                           {.epoch = 2, .index = 4, .height = 1, .width = 1, .channels = 1},
                           {.epoch = 0, .index = 10, .height = 1, .width = 1, .channels = 1}};
    uint8_t hdr[16 + 3 * MOCO_WIRE_PAIR_SIZE], views[6] = {1, 2, 3, 4, 5, 6};
    size_t hl = moco_pipe_pairs_pack(hdr, p, 3);
    send_to(r, id, idlen, hdr, hl, views, sizeof views);
    int got = 0;
    for (int i = 0; i < 20 && !got; i++) {
        assert_int_equal(stream_next(s, 100, &ev), 0);
        if (ev.kind == STREAM_PAIR) {
            got = 1;
            assert_int_equal(ev.pair.index, 3);
        }
    }
    assert_true(got);
    assert_int_equal(stream_next(s, 100, &ev), 0);
    assert_int_equal(ev.kind, STREAM_NONE);
    stream_stats ss;
    stream_get_stats(s, &ss);
    print_message("  pairs %llu, rejected_epoch %llu, rejected_index %llu\n", (unsigned long long)ss.pairs,
                  (unsigned long long)ss.rejected_epoch, (unsigned long long)ss.rejected_index);
    assert_int_equal(ss.pairs, 1);
    assert_int_equal(ss.rejected_epoch, 1);
    assert_int_equal(ss.rejected_index, 1);
    /* now the loader says nothing: after 0.6 s that is an error, named */
    int rc = 0;
    for (int i = 0; i < 30 && !rc; i++) rc = stream_next(s, 100, &ev);
    assert_int_equal(rc, MOCO_ETIMEOUT);
    print_message("  %s\n", moco_errmsg());
    assert_non_null(strstr(moco_errmsg(), "silent"));
    close_welcomed(&c);
}

static void test_refused(void **st)
{
    (void)st;
    void *ctx = zmq_ctx_new();
    uint8_t id[256];
    size_t idlen;
    void *r = fake_loader(ctx, id, &idlen);
    stream_cfg cfg = {.ctl_ep = ep, .resume_epoch = STREAM_NO_EPOCH, .loader_timeout = 5};
    trainer_stream *s;
    assert_int_equal(stream_open(&cfg, &s), 0);
    recv_hello(r, id, &idlen);
    uint8_t b[12 + MOCO_WIRE_REASON_MAX];
    send_to(r, id, idlen, b, moco_pipe_refused(b, MOCO_EINVAL, "another consumer is connected"), NULL, 0);
    stream_event ev;
    int rc = 0;
    for (int i = 0; i < 20 && !rc; i++) rc = stream_next(s, 100, &ev);
    assert_int_equal(rc, MOCO_EINVAL);
    print_message("  %s\n", moco_errmsg());
    assert_non_null(strstr(moco_errmsg(), "another consumer is connected"));
    stream_destroy(&s);
    zmq_close(r);
    zmq_ctx_term(ctx);
}

/* A consumer that resumes in epoch 1, welcomed into epoch 3 (a loader of
 * several consumers already further on): an error naming both epochs, not
 * the epochs between skipped or its position taken for another epoch's.
 * Welcomed into epoch 1, it goes on. */
static void test_resume_epoch_mismatch(void **st)
{
    (void)st;
    for (uint32_t at = 1; at <= 3; at += 2) {
        void *ctx = zmq_ctx_new();
        uint8_t id[256];
        size_t idlen;
        void *r = fake_loader(ctx, id, &idlen);
        stream_cfg cfg = {.ctl_ep = ep, .resume_epoch = 1, .loader_timeout = 5};
        trainer_stream *s;
        assert_int_equal(stream_open(&cfg, &s), 0);
        recv_hello(r, id, &idlen);
        uint8_t w[32];
        send_to(r, id, idlen, w, moco_pipe_welcome(w, at, 5, 10, MOCO_WELCOME_SERVE, 1000), NULL, 0);
        stream_event ev;
        int rc = 0;
        for (int i = 0; i < 10 && !rc; i++) rc = stream_next(s, 100, &ev);
        if (at == 1) {
            assert_int_equal(rc, 0); /* nothing yet: welcomed, waiting for pairs */
        } else {
            assert_int_equal(rc, MOCO_EINVAL);
            print_message("  %s\n", moco_errmsg());
            assert_non_null(strstr(moco_errmsg(), "streams epoch 3, but this consumer resumes in epoch 1"));
        }
        stream_destroy(&s);
        zmq_close(r);
        zmq_ctx_term(ctx);
    }
}

/* The next message the loader gets within ms, as its type; 0 if none. */
static uint16_t next_type(void *r, int ms)
{
    zmq_pollitem_t it = {r, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) <= 0) return 0;
    uint8_t id[256], b[256];
    assert_true(zmq_recv(r, id, sizeof id, 0) > 0);
    int n = zmq_recv(r, b, sizeof b, 0);
    uint16_t t = 0;
    assert_int_equal(moco_wire_peek(b, (size_t)n, &t), 0);
    return t;
}

static void test_keepalive(void **st)
{
    (void)st;
    welcomed c;
    open_welcomed(&c, 5);
    trainer_stream *s = c.s;
    void *r = c.r;
    stream_event ev;
    assert_int_equal(stream_next(s, 50, &ev), 0);
    while (next_type(r, 100)) /* the heartbeat stream_next sent */
        ;
    stream_keepalive(s); /* not due yet: nothing */
    assert_int_equal(next_type(r, 200), 0);
    usleep(1100 * 1000); /* MOCO_HEARTBEAT_S later, with no stream_next */
    stream_keepalive(s);
    assert_int_equal(next_type(r, 500), MOCO_MSG_HEARTBEAT);
    stream_keepalive(s); /* just sent: nothing */
    assert_int_equal(next_type(r, 200), 0);
    close_welcomed(&c);
}

static void test_keepalive_busy(void **st)
{
    (void)st;
    welcomed c;
    open_welcomed_flags(&c, 5, MOCO_WELCOME_SERVE | MOCO_WELCOME_BUSY);
    trainer_stream *s = c.s;
    void *r = c.r;
    stream_event ev;
    assert_int_equal(stream_next(s, 50, &ev), 0); /* reads WELCOME */
    while (next_type(r, 100))
        ;
    stream_keepalive(s); /* it stops reading: BUSY at once */
    assert_int_equal(next_type(r, 500), MOCO_MSG_BUSY);
    stream_keepalive(s); /* just sent: nothing */
    assert_int_equal(next_type(r, 200), 0);
    usleep(1100 * 1000);
    stream_keepalive(s); /* due: BUSY again */
    assert_int_equal(next_type(r, 500), MOCO_MSG_BUSY);
    assert_int_equal(stream_next(s, 10, &ev), 0); /* reading again: HEARTBEAT at once */
    assert_int_equal(next_type(r, 500), MOCO_MSG_HEARTBEAT);
    close_welcomed(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_none_then_silent), cmocka_unit_test(test_refused),
        cmocka_unit_test(test_resume_epoch_mismatch),
                                       cmocka_unit_test(test_keepalive), cmocka_unit_test(test_keepalive_busy)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
