/* test_stream.c: the consumer end of the stream (trainer/stream.h) against
 * a loader played by the test on inproc-free ipc: "nothing yet" is an
 * event (STREAM_NONE, return 0), a silent loader an error (MOCO_ETIMEOUT
 * naming it), a REFUSED HELLO an error with the loader's reason; a pair of
 * an epoch two ahead and an index past the count are rejected and counted;
 * stream_keepalive sends a heartbeat when one is due, and only then; to a
 * loader that knows BUSY, BUSY at once and then when due, and the next
 * stream_next a HEARTBEAT at once; pairs of the wrong view size or label
 * are dropped, counted and not acknowledged; pairs of the next epoch are
 * held up to a byte limit; in direct mode a consumer that reads nothing
 * holds 2 messages per worker connection (a worker's connection takes 3:
 * 1 more at the sender), not 3; the loader's WELCOME heartbeat interval,
 * bounded to [100 ms, 1 s], sets when it is silent and how often the
 * consumer beats. */
#include "tests/testutil.h"

#include <zmq.h>

#include "formats/clock.h"
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

static void open_welcomed_hb(welcomed *c, double loader_timeout, uint32_t flags, int size, int classes, uint32_t heartbeat_ms)
{
    c->ctx = zmq_ctx_new();
    c->r = fake_loader(c->ctx, c->id, &c->idlen);
    stream_cfg cfg = {.ctl_ep = ep, .resume_epoch = STREAM_NO_EPOCH, .loader_timeout = loader_timeout, .size = size,
                      .classes = classes};
    assert_int_equal(stream_open(&cfg, &c->s), 0);
    recv_hello(c->r, c->id, &c->idlen);
    uint8_t w[32];
    send_to(c->r, c->id, c->idlen, w, moco_pipe_welcome(w, 0, 1, 10, flags, heartbeat_ms), NULL, 0);
}

static void open_welcomed_cfg(welcomed *c, double loader_timeout, uint32_t flags, int size, int classes)
{
    open_welcomed_hb(c, loader_timeout, flags, size, classes, 1000);
}

static void open_welcomed_flags(welcomed *c, double loader_timeout, uint32_t flags)
{
    open_welcomed_cfg(c, loader_timeout, flags, 0, 0);
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

/* The indices the loader is acknowledged within ms (other messages skipped),
 * as a bitmap of 64. */
static uint64_t acked_within(void *r, int ms)
{
    uint64_t set = 0;
    zmq_pollitem_t it = {r, 0, ZMQ_POLLIN, 0};
    while (zmq_poll(&it, 1, ms) > 0) {
        uint8_t id[256], b[1024];
        assert_true(zmq_recv(r, id, sizeof id, 0) > 0);
        int n = zmq_recv(r, b, sizeof b, 0);
        moco_pipe_msg pm;
        if (n > 0 && !moco_pipe_parse(b, (size_t)n, &pm) && pm.type == MOCO_MSG_ACK)
            for (uint32_t i = 0; i < pm.n; i++) {
                uint64_t x;
                memcpy(&x, pm.idx + 8 * i, 8);
                set |= 1ull << (x & 63);
            }
    }
    return set;
}

/* Pairs until STREAM_NONE; returns their indices as a bitmap (each once). */
static uint64_t pairs_until_none(trainer_stream *s, stream_event *last)
{
    uint64_t got = 0;
    for (int i = 0; i < 50; i++) {
        assert_int_equal(stream_next(s, 100, last), 0);
        if (last->kind != STREAM_PAIR) {
            if (last->kind != STREAM_NONE || got) return got;
            continue;
        }
        assert_false(got >> last->pair.index & 1);
        got |= 1ull << last->pair.index;
    }
    return got;
}

/* A consumer that takes 2x2 views and labels [0, 5) (cfg.size, .classes):
 * a pair of 1x1 views and one of label 7 are dropped and counted
 * (rejected_shape 1, rejected_label 1), never acknowledged, so the loader
 * sends them again; then they come right and the epoch ends exact. Before,
 * the stream returned them (train.c, lincls.c: the run failed). */
static void test_wrong_size_dropped(void **st)
{
    (void)st;
    welcomed c;
    open_welcomed_cfg(&c, 5, MOCO_WELCOME_SERVE, 2, 5);
    trainer_stream *s = c.s;
    moco_wire_pair p[3] = {{.epoch = 0, .index = 3, .height = 2, .width = 2, .channels = 1, .label = 1},
                           {.epoch = 0, .index = 4, .height = 1, .width = 1, .channels = 1, .label = 1},
                           {.epoch = 0, .index = 5, .height = 2, .width = 2, .channels = 1, .label = 7}};
    uint8_t hdr[16 + 3 * MOCO_WIRE_PAIR_SIZE], views[18] = {0};
    send_to(c.r, c.id, c.idlen, hdr, moco_pipe_pairs_pack(hdr, p, 3), views, sizeof views);
    stream_event ev;
    assert_int_equal(pairs_until_none(s, &ev), 1ull << 3);
    assert_int_equal(ev.kind, STREAM_NONE);
    stream_stats ss;
    stream_get_stats(s, &ss);
    assert_int_equal(ss.pairs, 1);
    assert_int_equal(ss.rejected_shape, 1);
    assert_int_equal(ss.rejected_label, 1);
    assert_int_equal(ss.malformed, 0);
    assert_int_equal(acked_within(c.r, 300), 1ull << 3); /* 4 and 5 are not acknowledged */
    /* the loader issues them again: right this time */
    p[1].height = p[1].width = 2;
    p[2].label = 4;
    send_to(c.r, c.id, c.idlen, hdr, moco_pipe_pairs_pack(hdr, p + 1, 2), views, 16);
    assert_int_equal(pairs_until_none(s, &ev), 1ull << 4 | 1ull << 5);
    uint8_t e[64];
    send_to(c.r, c.id, c.idlen, e, moco_pipe_epoch_end(e, 0, 3, NULL, 0), NULL, 0);
    for (int i = 0; i < 20 && ev.kind != STREAM_EPOCH_END; i++) assert_int_equal(stream_next(s, 100, &ev), 0);
    assert_int_equal(ev.kind, STREAM_EPOCH_END);
    assert_int_equal(ev.delivered, 3);
    stream_get_stats(s, &ss);
    assert_int_equal(ss.pairs, 3);
    assert_int_equal(ss.duplicates, 0);
    assert_int_equal(ss.rejected_shape, 1);
    assert_int_equal(ss.rejected_label, 1);
    moco_jw w;
    moco_jw_begin(&w);
    stream_stats_json(&w, &ss);
    const char *j = moco_jw_end(&w);
    print_message("  %s\n", j);
    assert_non_null(strstr(j, "\"rejected_shape\":1,\"rejected_label\":1,"));
    moco_jw_free(&w);
    close_welcomed(&c);
}

/* Pairs of the next epoch are held until EPOCH_END, at most 256 MiB of
 * them: 11 PAIR messages of 2 x 12 MiB views (epoch 1, while epoch 0
 * runs): 10 held, the 11th dropped and counted (held_dropped 1). Before,
 * 256 messages of any size were held (6 GiB). */
static void test_held_bytes(void **st)
{
    (void)st;
    welcomed c;
    open_welcomed(&c, 5);
    const size_t vb = (size_t)MOCO_VIEW_SIDE_MAX * MOCO_VIEW_SIDE_MAX * 3;
    uint8_t *v = calloc(vb, 1);
    assert_non_null(v);
    stream_event ev;
    assert_int_equal(stream_next(c.s, 50, &ev), 0); /* reads WELCOME */
    stream_stats ss = {0};
    for (int i = 0; i < 11; i++) {
        moco_wire_pair p = {.epoch = 1, .index = (uint64_t)i % 10, .height = MOCO_VIEW_SIDE_MAX, .width = MOCO_VIEW_SIDE_MAX,
                            .channels = 3};
        uint8_t h[MOCO_WIRE_PAIR_SIZE];
        moco_wire_pair_pack(h, &p);
        zmq_send(c.r, c.id, c.idlen, ZMQ_SNDMORE);
        zmq_send(c.r, h, sizeof h, ZMQ_SNDMORE);
        zmq_send(c.r, v, vb, ZMQ_SNDMORE);
        zmq_send(c.r, v, vb, 0);
        for (int k = 0; k < 20 && ss.held + ss.held_dropped < (uint64_t)i + 1; k++) { /* one at a time: the socket's queue is short */
            assert_int_equal(stream_next(c.s, 100, &ev), 0);
            assert_int_equal(ev.kind, STREAM_NONE);
            stream_get_stats(c.s, &ss);
        }
    }
    print_message("  held %llu, held_dropped %llu\n", (unsigned long long)ss.held, (unsigned long long)ss.held_dropped);
    assert_int_equal(ss.held, 10);
    assert_int_equal(ss.held_dropped, 1);
    free(v);
    close_welcomed(&c);
}

/* Direct mode, a consumer of 28x28 views: a worker's frame larger than a
 * PAIRS batch of such views (a PAIR of 1300x1300x3 views: 4.8 MiB frames)
 * disconnects its sender before it is read (it is neither returned nor
 * counted); a right pair from another worker is returned. Before, frames
 * up to 28 MiB were taken from every connection (16 each queued). */
static void test_direct_frame_limit(void **st)
{
    (void)st;
    void *ctx = zmq_ctx_new();
    uint8_t id[256];
    size_t idlen;
    void *r = fake_loader(ctx, id, &idlen);
    char pep[300];
    snprintf(pep, sizeof pep, "%s-pairs", ep);
    stream_cfg cfg = {.pairs_ep = pep, .ctl_ep = ep, .resume_epoch = STREAM_NO_EPOCH, .loader_timeout = 5, .size = 28};
    trainer_stream *s;
    assert_int_equal(stream_open(&cfg, &s), 0);
    recv_hello(r, id, &idlen);
    uint8_t w[32];
    send_to(r, id, idlen, w, moco_pipe_welcome(w, 0, 1, 10, 0, 1000), NULL, 0);
    stream_event ev;
    assert_int_equal(stream_next(s, 50, &ev), 0); /* reads WELCOME */
    void *big = zmq_socket(ctx, ZMQ_PUSH), *good = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 0;
    zmq_setsockopt(big, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(good, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(big, pep), 0);
    assert_int_equal(zmq_connect(good, pep), 0);
    const size_t side = 1300, vb = side * side * 3;
    uint8_t *v = calloc(vb, 1);
    assert_non_null(v);
    moco_wire_pair p = {.epoch = 0, .index = 2, .height = side, .width = side, .channels = 3};
    uint8_t h[MOCO_WIRE_PAIR_SIZE];
    moco_wire_pair_pack(h, &p);
    zmq_send(big, h, sizeof h, ZMQ_SNDMORE);
    zmq_send(big, v, vb, ZMQ_SNDMORE);
    zmq_send(big, v, vb, 0);
    usleep(300 * 1000);
    p = (moco_wire_pair){.epoch = 0, .index = 3, .height = 28, .width = 28, .channels = 3};
    moco_wire_pair_pack(h, &p);
    zmq_send(good, h, sizeof h, ZMQ_SNDMORE);
    zmq_send(good, v, 28 * 28 * 3, ZMQ_SNDMORE);
    zmq_send(good, v, 28 * 28 * 3, 0);
    uint64_t got = pairs_until_none(s, &ev);
    stream_stats ss;
    stream_get_stats(s, &ss);
    print_message("  pairs %llu (bitmap %llx), rejected_shape %llu, malformed %llu\n", (unsigned long long)ss.pairs,
                  (unsigned long long)got, (unsigned long long)ss.rejected_shape, (unsigned long long)ss.malformed);
    assert_int_equal(got, 1ull << 3);
    assert_int_equal(ss.pairs, 1);
    assert_int_equal(ss.rejected_shape, 0); /* never read: the frame limit, not the size check */
    assert_int_equal(ss.malformed, 0);
    free(v);
    zmq_close(big);
    zmq_close(good);
    stream_destroy(&s);
    zmq_close(r);
    zmq_ctx_term(ctx);
}

/* Push pair messages of 2 x 750 KB views (index from *next on) on one PUSH
 * connection that queues 1 itself, without waiting, until it stays full for
 * 1.5 s (the sockets' threads have moved what they will): the messages the
 * connection took. */
static int fill_connection(void *push, const uint8_t *v, size_t side, uint64_t *next)
{
    int sent = 0;
    for (int idle = 0; idle < 30 && sent < 40;) {
        moco_wire_pair p = {.epoch = 0, .index = *next, .height = (uint16_t)side, .width = (uint16_t)side, .channels = 3};
        uint8_t h[MOCO_WIRE_PAIR_SIZE];
        moco_wire_pair_pack(h, &p);
        if (zmq_send(push, h, sizeof h, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            assert_int_equal(errno, EAGAIN);
            idle++;
            usleep(50 * 1000);
            continue;
        }
        zmq_send(push, v, side * side * 3, ZMQ_SNDMORE);
        zmq_send(push, v, side * side * 3, 0);
        sent++, (*next)++, idle = 0;
    }
    return sent;
}

/* Direct mode: a consumer that reads nothing holds at most 2 pair messages
 * per worker connection (cfg.rcvhwm 0: ZMQ_RCVHWM 2 on its PULL socket),
 * so a slow trainer holds little and its workers feel its pace. Two PUSH
 * connections (ZMQ_SNDHWM 1 each; views of 500x500x3, 750 KB) each take
 * exactly 3: 2 in the consumer's queue, then the third, whose header
 * reached the consumer (its queue full, it reads no further) while its
 * first view stops in the kernel's buffer of the unix socket (its send
 * buffer, net.core.wmem_default: 208 KiB here; ZMQ_SNDBUF 4 MiB on the
 * PUSH sockets changed nothing, so on ipc it seems not to reach the kernel)
 * and libzmq's 8 KiB read batch, less than a view; so its
 * last frame stays in the sender's pipe and counts against its SNDHWM 1:
 * zmq_send takes no fourth. A queue of 3 here takes 4 (measured; 1: 2; 16:
 * 17; views of 50x50x3, several of which the kernel holds: 8). Then every
 * one of them is returned, none lost. */
static void test_direct_queue_per_connection(void **st)
{
    (void)st;
    void *ctx = zmq_ctx_new();
    uint8_t id[256];
    size_t idlen;
    void *r = fake_loader(ctx, id, &idlen);
    char pep[300];
    snprintf(pep, sizeof pep, "%s-pairs", ep);
    stream_cfg cfg = {.pairs_ep = pep, .ctl_ep = ep, .resume_epoch = STREAM_NO_EPOCH, .loader_timeout = 5};
    trainer_stream *s;
    assert_int_equal(stream_open(&cfg, &s), 0);
    recv_hello(r, id, &idlen);
    uint8_t w[32];
    send_to(r, id, idlen, w, moco_pipe_welcome(w, 0, 1, 64, 0, 1000), NULL, 0);
    stream_event ev;
    assert_int_equal(stream_next(s, 50, &ev), 0); /* reads WELCOME */
    const size_t side = 500;
    uint8_t *v = calloc(side * side * 3, 1);
    assert_non_null(v);
    void *push[2];
    int sent[2], one = 1, linger = 0;
    uint64_t next = 0;
    FILE *wm = fopen("/proc/sys/net/core/wmem_default", "r"); /* the count below holds while a view does not fit there */
    long wmem = 0;
    if (wm && fscanf(wm, "%ld", &wmem) == 1 && wmem + 8192 >= (long)(side * side * 3))
        fail_msg("net.core.wmem_default %ld: a unix socket's buffer holds a whole view of %zu bytes; this test's count assumes it "
                 "cannot (use larger views)", wmem, side * side * 3);
    if (wm) fclose(wm);
    for (int k = 0; k < 2; k++) {
        push[k] = zmq_socket(ctx, ZMQ_PUSH);
        zmq_setsockopt(push[k], ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(push[k], ZMQ_SNDHWM, &one, sizeof one);
        assert_int_equal(zmq_connect(push[k], pep), 0);
    }
    usleep(200 * 1000); /* both connected: PUSH spreads over the connections it has */
    for (int k = 0; k < 2; k++) sent[k] = fill_connection(push[k], v, side, &next);
    print_message("  a consumer that reads nothing took %d and %d messages on its 2 connections\n", sent[0], sent[1]);
    for (int k = 0; k < 2; k++) assert_int_equal(sent[k], 3); /* its queue of 2, and 1 at the sender */
    uint64_t got = pairs_until_none(s, &ev), want = next >= 64 ? ~0ull : (1ull << next) - 1;
    assert_int_equal(got, want); /* every message taken is returned */
    free(v);
    for (int k = 0; k < 2; k++) zmq_close(push[k]);
    stream_destroy(&s);
    zmq_close(r);
    zmq_ctx_term(ctx);
}

/* A loader that announces heartbeat_ms in WELCOME, then says nothing: the
 * seconds until stream_next calls it silent (MOCO_ETIMEOUT), and the
 * HEARTBEATs the consumer sent it meanwhile (*hbs). */
static double silent_after(double loader_timeout, uint32_t heartbeat_ms, int *hbs)
{
    welcomed c;
    open_welcomed_hb(&c, loader_timeout, MOCO_WELCOME_SERVE, 0, 0, heartbeat_ms);
    usleep(50 * 1000); /* WELCOME waits at the consumer */
    double t0 = moco_now_s();
    stream_event ev;
    int rc = 0;
    *hbs = 0;
    while (!rc && moco_now_s() - t0 < 20) {
        rc = stream_next(c.s, 20, &ev);
        for (uint16_t t; (t = next_type(c.r, 0));) *hbs += t == MOCO_MSG_HEARTBEAT;
    }
    double dt = moco_now_s() - t0;
    print_message("  WELCOME heartbeat %u ms, loader timeout %g s: silent after %.2f s, %d heartbeats sent; %s\n",
                  (unsigned)heartbeat_ms, loader_timeout, dt, *hbs, moco_errmsg());
    assert_int_equal(rc, MOCO_ETIMEOUT);
    assert_non_null(strstr(moco_errmsg(), "silent for"));
    close_welcomed(&c);
    return dt;
}

/* The loader's announced heartbeat sets the pace: at 100 ms a consumer
 * whose loader timeout is 5 s (5 missed heartbeats of 1 s: 5 of 100 ms)
 * calls it silent after 0.5 s, not 5, and beats every 100 ms itself. A
 * hostile value is bounded: 1 ms is taken as 100 ms (not dead after 5 ms,
 * no flood of heartbeats); 4e9 ms and 0 as 1000 ms (the loader timeout as
 * given, not never). Before, the field was advisory: 5 s and 1 s beats. */
static void test_announced_heartbeat(void **st)
{
    (void)st;
    int hbs;
    double dt = silent_after(5, 100, &hbs);
    assert_true(dt >= 0.5 && dt < 1.5);
    assert_true(hbs >= 4); /* every 100 ms for 0.5 s; at 1 s: 1 */
    assert_true(hbs <= dt / 0.1 + 2);
    assert_non_null(strstr(moco_errmsg(), "5 missed heartbeats of 100 ms; it announced 100 ms"));
    dt = silent_after(5, 1, &hbs);
    assert_true(dt >= 0.5 && dt < 1.5);
    assert_true(hbs >= 4 && hbs <= dt / 0.1 + 2);
    assert_non_null(strstr(moco_errmsg(), "5 missed heartbeats of 100 ms; it announced 1 ms"));
    for (int i = 0; i < 2; i++) {
        dt = silent_after(0.6, i ? 0 : UINT32_MAX, &hbs);
        assert_true(dt >= 0.6 && dt < 1.6);
        assert_true(hbs <= 1); /* every second: in 0.6 s at most one */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_none_then_silent), cmocka_unit_test(test_refused),
        cmocka_unit_test(test_resume_epoch_mismatch),
                                       cmocka_unit_test(test_keepalive), cmocka_unit_test(test_keepalive_busy),
                                       cmocka_unit_test(test_wrong_size_dropped), cmocka_unit_test(test_held_bytes),
                                       cmocka_unit_test(test_direct_frame_limit),
                                       cmocka_unit_test(test_direct_queue_per_connection),
                                       cmocka_unit_test(test_announced_heartbeat)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
