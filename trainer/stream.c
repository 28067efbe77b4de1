/* stream.c: the consumer end of the pipeline (see stream.h). */
#include "trainer/stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/pipeline.h"
#include "formats/record.h"

#define ACK_BATCH 256
#define ACK_DELAY_S 0.02 /* acknowledgements wait here at most this long */
#define MAX_INDEX ((uint64_t)1 << 40)

struct trainer_stream {
    void *zctx, *pull, *ctl;
    double loader_timeout, loader_seen, last_hb, last_ack, last_ctl;
    uint32_t epoch;          /* the epoch being returned */
    int have_epoch;
    uint8_t *seen;           /* bitmap of indices returned in epoch */
    size_t seen_bytes;
    uint64_t acks[ACK_BATCH];
    uint32_t nacks, ack_epoch;
    /* the pair message being consumed: a PAIR (3 frames: header, q, k) or
     * a PAIRS batch (2 frames: headers, views); its next pair is mi of mn,
     * at byte moff of the views. It stays alive until all of it is
     * consumed, so the views last returned stay valid until the next call;
     * a pair of a later epoch waits in it for the EPOCH_END before it. */
    zmq_msg_t mf[3];
    int mnf, batch, held;    /* held: its next pair waits for an EPOCH_END */
    uint32_t mi, mn;
    size_t moff;
    zmq_msg_t ctlmsg;        /* the EPOCH_END last returned */
    int have_ctlmsg;
    int ended;
    stream_stats st;
};

static int seen_get(const trainer_stream *s, uint64_t i)
{
    return (i >> 3) < s->seen_bytes && (s->seen[i >> 3] >> (i & 7) & 1);
}

static int seen_set(trainer_stream *s, uint64_t i)
{
    if ((i >> 3) >= s->seen_bytes) {
        size_t nb = s->seen_bytes ? s->seen_bytes : 1024;
        while (nb <= (i >> 3)) nb *= 2;
        uint8_t *p = realloc(s->seen, nb);
        if (!p) return moco_err(MOCO_ENOMEM, "out of memory for the delivered-index bitmap");
        memset(p + s->seen_bytes, 0, nb - s->seen_bytes);
        s->seen = p;
        s->seen_bytes = nb;
    }
    s->seen[i >> 3] |= (uint8_t)(1u << (i & 7));
    return 0;
}

static void flush_acks(trainer_stream *s)
{
    if (!s->nacks) return;
    uint8_t b[16 + 8 * ACK_BATCH];
    size_t n = moco_pipe_ack(b, s->ack_epoch, s->acks, s->nacks);
    if (zmq_send(s->ctl, b, n, ZMQ_DONTWAIT) == (int)n) s->st.acks_sent += s->nacks;
    /* if the control queue is full the loader is gone or stuck; it re-issues
     * what it never hears about, and duplicates are dropped here */
    s->nacks = 0;
    s->last_ack = moco_now_s();
}

static void ack(trainer_stream *s, uint32_t epoch, uint64_t index)
{
    if (s->nacks && s->ack_epoch != epoch) flush_acks(s);
    s->ack_epoch = epoch;
    s->acks[s->nacks++] = index;
    if (s->nacks == ACK_BATCH) flush_acks(s);
}

int stream_open(const stream_cfg *cfg, trainer_stream **out)
{
    trainer_stream *s = calloc(1, sizeof *s);
    *out = NULL;
    if (!s) return moco_err(MOCO_ENOMEM, "out of memory");
    s->loader_timeout = cfg->loader_timeout > 0 ? cfg->loader_timeout : 60;
    s->zctx = zmq_ctx_new();
    s->pull = zmq_socket(s->zctx, ZMQ_PULL);
    s->ctl = zmq_socket(s->zctx, ZMQ_DEALER);
    int hwm = cfg->rcvhwm > 0 ? cfg->rcvhwm : 16, linger = 0, chwm = 10000;
    int rc = 0;
    if (!s->pull || !s->ctl || zmq_setsockopt(s->pull, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(s->pull, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(s->ctl, ZMQ_SNDHWM, &chwm, sizeof chwm) || zmq_setsockopt(s->ctl, ZMQ_LINGER, &linger, sizeof linger)) {
        rc = moco_err(MOCO_EZMQ, "cannot create sockets: %s", zmq_strerror(errno));
        goto fail;
    }
    if (zmq_bind(s->pull, cfg->pairs_ep)) {
        rc = moco_err(MOCO_EZMQ, "cannot bind %s: %s", cfg->pairs_ep, zmq_strerror(errno));
        goto fail;
    }
    if (zmq_connect(s->ctl, cfg->ctl_ep)) {
        rc = moco_err(MOCO_EZMQ, "cannot connect to %s: %s", cfg->ctl_ep, zmq_strerror(errno));
        goto fail;
    }
    uint8_t h[32];
    size_t hl = moco_pipe_hello(h, cfg->resume_epoch, cfg->count);
    if (cfg->resume_epoch != STREAM_NO_EPOCH) {
        s->epoch = cfg->resume_epoch;
        s->have_epoch = 1;
        if (cfg->resume_bitmap && cfg->count) {
            size_t nb = (size_t)((cfg->count + 7) / 8);
            if ((rc = seen_set(s, cfg->count - 1))) goto fail;
            memcpy(s->seen, cfg->resume_bitmap, nb);
            memset(s->seen + nb, 0, s->seen_bytes - nb);
        }
    }
    int withmap = cfg->resume_epoch != STREAM_NO_EPOCH && cfg->resume_bitmap && cfg->count;
    if (zmq_send(s->ctl, h, hl, withmap ? ZMQ_SNDMORE : 0) != (int)hl ||
        (withmap && zmq_send(s->ctl, cfg->resume_bitmap, (size_t)((cfg->count + 7) / 8), 0) < 0)) {
        rc = moco_err(MOCO_EZMQ, "cannot greet the loader at %s: %s", cfg->ctl_ep, zmq_strerror(errno));
        goto fail;
    }
    s->loader_seen = s->last_hb = s->last_ack = s->last_ctl = moco_now_s();
    *out = s;
    return 0;
fail:
    stream_destroy(&s);
    return rc;
}

static void drop_frames(zmq_msg_t *f, int *n)
{
    for (int i = 0; i < *n; i++) zmq_msg_close(&f[i]);
    *n = 0;
}

/* Receive one whole multipart message (at most 3 frames kept; more is
 * malformed). Returns frames kept, 0 if none waiting, -1 if malformed. */
static int recv_multi(void *sock, zmq_msg_t *f)
{
    int n = 0, bad = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            if (n == 0 && !bad) return 0;
            break;
        }
        more = zmq_msg_more(&m);
        if (n < 3) f[n++] = m;
        else { zmq_msg_close(&m); bad = 1; }
    }
    if (bad) { drop_frames(f, &n); return -1; }
    return n;
}

/* Handle one message from the loader; returns 1 if it produced an event. */
static int on_ctl(trainer_stream *s, stream_event *ev)
{
    zmq_msg_t f[3];
    int n = recv_multi(s->ctl, f);
    if (n == 0) return 0;
    if (n < 0) { s->st.malformed++; return 0; }
    s->loader_seen = moco_now_s();
    moco_pipe_msg pm;
    if (n != 1 || moco_pipe_parse(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &pm)) {
        s->st.malformed++;
        drop_frames(f, &n);
        return 0;
    }
    if (pm.type == MOCO_MSG_EPOCH_END) {
        flush_acks(s);
        ev->kind = STREAM_EPOCH_END;
        ev->epoch = pm.epoch;
        ev->delivered = pm.count;
        ev->nfailed = pm.n;
        ev->failed = pm.idx;
        if (s->have_ctlmsg) zmq_msg_close(&s->ctlmsg);
        s->ctlmsg = f[0]; /* keeps ev->failed valid */
        s->have_ctlmsg = 1;
        /* the next epoch starts empty */
        s->epoch = pm.epoch + 1;
        s->have_epoch = 1;
        if (s->seen) memset(s->seen, 0, s->seen_bytes);
        return 1;
    }
    if (pm.type == MOCO_MSG_END) {
        flush_acks(s);
        ev->kind = STREAM_END;
        ev->epoch = pm.epoch;
        s->ended = 1;
        drop_frames(f, &n);
        return 1;
    }
    if (pm.type != MOCO_MSG_HEARTBEAT) s->st.malformed++;
    drop_frames(f, &n);
    return 0;
}

/* Take a pair message from the socket as the current one, after checking
 * it; returns 1 if there is one, 0 if none is waiting. */
static int take_message(trainer_stream *s)
{
    zmq_msg_t f[3];
    int n = recv_multi(s->pull, f);
    if (n == 0) return 0;
    if (n < 0) { s->st.malformed++; return 0; }
    moco_wire_pair p;
    uint32_t cnt = 0;
    const uint8_t *h = zmq_msg_data(&f[0]);
    size_t hl = zmq_msg_size(&f[0]);
    uint16_t type = 0;
    int ok = !moco_wire_peek(h, hl, &type);
    if (ok && type == MOCO_MSG_PAIR)
        ok = n == 3 && !moco_wire_pair_parse(h, hl, &p) && zmq_msg_size(&f[1]) == moco_wire_pair_view_bytes(&p) &&
             zmq_msg_size(&f[2]) == moco_wire_pair_view_bytes(&p);
    else if (ok && type == MOCO_MSG_PAIRS)
        ok = n == 2 && !moco_pipe_pairs_parse(h, hl, zmq_msg_size(&f[1]), &cnt);
    else
        ok = 0;
    if (!ok) {
        s->st.malformed++;
        drop_frames(f, &n);
        return 0;
    }
    memcpy(s->mf, f, sizeof(zmq_msg_t) * (size_t)n);
    s->mnf = n;
    s->batch = type == MOCO_MSG_PAIRS;
    s->mn = s->batch ? cnt : 1;
    s->mi = 0;
    s->moff = 0;
    return 1;
}

/* The current message's next pair: header and views. */
static void peek_pair(const trainer_stream *s, moco_wire_pair *p, const uint8_t **q, const uint8_t **k)
{
    if (!s->batch) {
        moco_wire_pair_parse(zmq_msg_data((zmq_msg_t *)&s->mf[0]), zmq_msg_size((zmq_msg_t *)&s->mf[0]), p);
        *q = zmq_msg_data((zmq_msg_t *)&s->mf[1]);
        *k = zmq_msg_data((zmq_msg_t *)&s->mf[2]);
        return;
    }
    moco_pipe_pairs_at(zmq_msg_data((zmq_msg_t *)&s->mf[0]), s->mi, p);
    const uint8_t *d = (const uint8_t *)zmq_msg_data((zmq_msg_t *)&s->mf[1]) + s->moff;
    *q = d;
    *k = d + moco_wire_pair_view_bytes(p);
}

/* Decide about pair p: 1 return it, 0 dropped, 2 it belongs to a later
 * epoch (wait for EPOCH_END), -1 out of memory. */
static int accept_pair(trainer_stream *s, const moco_wire_pair *p)
{
    if (p->index >= MAX_INDEX) { s->st.malformed++; return 0; }
    if (!s->have_epoch) { s->epoch = p->epoch; s->have_epoch = 1; }
    if (p->epoch < s->epoch) { s->st.stale++; return 0; } /* a late duplicate of a finished epoch */
    if (p->epoch > s->epoch) return 2;                    /* EPOCH_END of this epoch is on its way */
    if (seen_get(s, p->index)) {
        s->st.duplicates++;
        ack(s, p->epoch, p->index); /* the loader may not have heard the first ack */
        return 0;
    }
    if (seen_set(s, p->index)) return -1;
    ack(s, p->epoch, p->index);
    s->st.pairs++;
    return 1;
}

int stream_next(trainer_stream *s, int timeout_ms, stream_event *ev)
{
    double t0 = moco_now_s(), deadline = timeout_ms < 0 ? 1e300 : t0 + timeout_ms / 1000.0;
    memset(ev, 0, sizeof *ev);
    if (s->ended) {
        ev->kind = STREAM_END;
        return 0;
    }
    for (;;) {
        double t = moco_now_s();
        if (t - s->last_hb >= 1.0) {
            uint8_t hb[16];
            zmq_send(s->ctl, hb, moco_pipe_simple(hb, MOCO_MSG_HEARTBEAT), ZMQ_DONTWAIT);
            s->last_hb = t;
        }
        if (s->nacks && t - s->last_ack >= ACK_DELAY_S) flush_acks(s);
        if (s->mnf && s->mi == s->mn) drop_frames(s->mf, &s->mnf); /* all consumed, and the caller done with it */
        /* the control socket is read between pair messages, while a pair
         * waits for its EPOCH_END, and every 10 ms: not on every pair (an
         * empty read costs a system call), which is safe because a pair of
         * epoch e+1 is held until EPOCH_END(e) has been read */
        if (!s->mnf || s->held || t - s->last_ctl > 0.01) {
            s->last_ctl = t;
            if (on_ctl(s, ev)) break;
        }
        s->held = 0;
        if (s->mnf || take_message(s)) {
            moco_wire_pair p;
            const uint8_t *q, *k;
            peek_pair(s, &p, &q, &k);
            int r = accept_pair(s, &p);
            if (r < 0) return moco_err(MOCO_ENOMEM, "out of memory for the delivered-index bitmap");
            if (r == 2) {
                s->held = 1;
            } else {
                s->mi++;
                s->moff += 2 * moco_wire_pair_view_bytes(&p);
                if (r == 1) {
                    ev->kind = STREAM_PAIR;
                    ev->pair = p;
                    ev->q = q;
                    ev->k = k;
                    break;
                }
                continue;
            }
        }
        if (t - s->loader_seen > s->loader_timeout) {
            s->st.waited_s += moco_now_s() - t0;
            return moco_err(MOCO_ETIMEOUT, "the loader has been silent for %.0f s", t - s->loader_seen);
        }
        if (t >= deadline) {
            s->st.waited_s += moco_now_s() - t0;
            return MOCO_ETIMEOUT;
        }
        /* nothing to return: sleep until a message comes (pairs arrive in
         * batches, so this is one wake-up per batch, not per pair), or until
         * the acknowledgements held here are due (ACK_BATCH of them or
         * ACK_DELAY_S old: every message wakes the loader) */
        zmq_pollitem_t it[2] = {{s->ctl, 0, ZMQ_POLLIN, 0}, {s->pull, 0, ZMQ_POLLIN, 0}};
        double left = deadline - t;
        if (s->nacks && s->last_ack + ACK_DELAY_S - t < left) left = s->last_ack + ACK_DELAY_S - t;
        long ms = left > 0.25 ? 250 : left > 0 ? (long)(left * 1000) + 1 : 0;
        zmq_poll(it, s->mnf ? 1 : 2, ms);
    }
    s->st.waited_s += moco_now_s() - t0;
    return 0;
}

void stream_position(const trainer_stream *s, uint32_t *epoch, const uint8_t **bitmap, size_t *nbytes)
{
    *epoch = s->have_epoch ? s->epoch : 0;
    *bitmap = s->seen;
    *nbytes = s->seen_bytes;
}

void stream_get_stats(const trainer_stream *s, stream_stats *st) { *st = s->st; }

void stream_destroy(trainer_stream **ps)
{
    trainer_stream *s = *ps;
    if (!s) return;
    if (s->ctl) flush_acks(s);
    drop_frames(s->mf, &s->mnf);
    if (s->have_ctlmsg) zmq_msg_close(&s->ctlmsg);
    if (s->pull) zmq_close(s->pull);
    if (s->ctl) zmq_close(s->ctl);
    if (s->zctx) zmq_ctx_term(s->zctx);
    free(s->seen);
    free(s);
    *ps = NULL;
}
