/* stream.c: the consumer end of the pipeline (see stream.h): sockets bounded
 * by what one connection may queue, pairs checked (epoch, index, the views'
 * size) before they are returned and acknowledged. */
#include "trainer/stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/pipeline.h"
#include "formats/record.h"
#include "formats/endpoints.h"
#include "formats/zsec.h"

#define ACK_BATCH 256
#define ACK_DELAY_S MOCO_ACK_DELAY_S /* acknowledgements wait here at most this long */
#define HELD_MAX 256     /* pair messages of the next epoch kept until its EPOCH_END */
#define HELD_BYTES_MAX ((size_t)256 << 20) /* and their bytes at most */

/* A pair message being consumed: a PAIR (3 frames: header, q, k) or a
 * PAIRS batch (2 frames: headers, views); its next pair is mi of mn, at
 * byte moff of the views. */
typedef struct {
    zmq_msg_t f[3];
    int nf, batch;
    uint32_t mi, mn;
    size_t moff;
    uint32_t epoch; /* held: the epoch whose turn it waits for */
    size_t bytes;   /* held: its frames' bytes */
} pmsg;

struct trainer_stream {
    void *zctx, *pull, *ctl;
    moco_sec *sec;
    int serve;               /* pairs come on ctl */
    const char *ctl_ep;
    double loader_timeout, loader_seen, last_hb, last_ack, last_ctl;
    double hb_s;             /* the heartbeat interval: the loader's WELCOME's, bounded (moco_pipe_heartbeat_s) */
    double silent_s;         /* loader silence that is an error: loader_timeout scaled by hb_s / MOCO_HEARTBEAT_S */
    uint32_t hb_ms;          /* what WELCOME announced (0: none yet) */
    uint32_t epoch;          /* the epoch being returned */
    int have_epoch, welcomed;
    int resumed;             /* HELLO said where this consumer resumes: resume_epoch */
    uint32_t resume_epoch;
    int busy_ok, busy;       /* the loader understands BUSY; the last heartbeat sent was one */
    uint64_t count;          /* dataset size: the bitmap's bits; pairs of larger indices are rejected */
    uint8_t *seen;           /* bitmap of indices returned in epoch, ceil(count / 8) bytes */
    size_t seen_bytes;
    uint64_t acks[ACK_BATCH];
    uint32_t nacks, ack_epoch;
    /* the message being consumed; it stays alive until all of it is
     * consumed, so the views last returned stay valid until the next call */
    pmsg cur;
    pmsg held[HELD_MAX];     /* ring: pair messages of the next epoch */
    int hhead, nheld;
    size_t heldbytes;
    int size, classes;       /* the views' side and the labels ([0, classes)) the user takes, or 0 */
    zmq_msg_t ctlmsg;        /* the EPOCH_END last returned */
    int have_ctlmsg;
    int ended;
    int refused;             /* the loader sent REFUSED: the message is in refusal */
    char refusal[MOCO_WIRE_REASON_MAX + 1];
    stream_stats st;
};

static int seen_get(const trainer_stream *s, uint64_t i)
{
    return (i >> 3) < s->seen_bytes && (s->seen[i >> 3] >> (i & 7) & 1);
}

static void seen_set(trainer_stream *s, uint64_t i) { s->seen[i >> 3] |= (uint8_t)(1u << (i & 7)); }

/* The dataset's size is known (given, or from WELCOME): the bitmap. */
static int set_count(trainer_stream *s, uint64_t count)
{
    if (count == 0 || count > MOCO_COUNT_MAX)
        return moco_err(MOCO_EINVAL, "a dataset of %llu samples (1..%llu)", (unsigned long long)count,
                        (unsigned long long)MOCO_COUNT_MAX);
    s->count = s->st.count = count;
    s->seen_bytes = (size_t)((count + 7) / 8);
    if (!(s->seen = calloc(s->seen_bytes, 1))) return moco_err(MOCO_ENOMEM, "out of memory for the delivered-index bitmap");
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
    s->loader_timeout = cfg->loader_timeout > 0 ? cfg->loader_timeout : MOCO_LOADER_TIMEOUT_S;
    s->hb_s = MOCO_HEARTBEAT_S; /* until WELCOME says */
    s->silent_s = s->loader_timeout;
    s->serve = cfg->pairs_ep == NULL;
    s->ctl_ep = cfg->ctl_ep;
    s->zctx = zmq_ctx_new();
    int rc = 0;
    if ((rc = moco_sec_new(s->zctx, cfg->keys, cfg->insecure, "moco consumer", NULL, &s->sec))) goto fail;
    if (!s->serve) s->pull = zmq_socket(s->zctx, ZMQ_PULL);
    s->ctl = zmq_socket(s->zctx, ZMQ_DEALER);
    int hwm = cfg->rcvhwm > 0 ? cfg->rcvhwm : 2, linger = 0, chwm = 10000, crhwm = s->serve ? MOCO_SERVE_SNDHWM : 1000;
    /* a frame of PAIRS (a batch stops growing at MOCO_BATCH_BYTES: one pair
     * more) or PAIR; an EPOCH_END of 2^20 failed indices is smaller. Given
     * the views' size, the workers' frames are held to views of that size
     * (larger ones disconnect their sender); the control socket keeps the
     * general limit: in serve mode the loader forwards what workers sent */
    int64_t ctlmax = (int64_t)MOCO_PAIRS_FRAME_MAX, maxmsg = ctlmax;
    s->size = cfg->size > 0 && cfg->size <= MOCO_VIEW_SIDE_MAX ? cfg->size : 0;
    s->classes = cfg->classes > 0 ? cfg->classes : 0;
    if (s->size) maxmsg = (int64_t)(MOCO_BATCH_BYTES + 2 * (size_t)s->size * (size_t)s->size * 3 + 65536);
    if ((!s->serve && (!s->pull || zmq_setsockopt(s->pull, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
                       zmq_setsockopt(s->pull, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
                       zmq_setsockopt(s->pull, ZMQ_LINGER, &linger, sizeof linger))) ||
        !s->ctl || zmq_setsockopt(s->ctl, ZMQ_SNDHWM, &chwm, sizeof chwm) || zmq_setsockopt(s->ctl, ZMQ_RCVHWM, &crhwm, sizeof crhwm) ||
        zmq_setsockopt(s->ctl, ZMQ_MAXMSGSIZE, &ctlmax, sizeof ctlmax) || zmq_setsockopt(s->ctl, ZMQ_LINGER, &linger, sizeof linger)) {
        rc = moco_err(MOCO_EZMQ, "cannot create sockets: %s", zmq_strerror(errno));
        goto fail;
    }
    if (!s->serve && (rc = moco_bind_endpoints(s->sec, s->pull, cfg->pairs_ep))) goto fail;
    if ((rc = moco_sec_connect(s->sec, s->ctl, cfg->ctl_ep)) || zmq_connect(s->ctl, cfg->ctl_ep)) {
        if (!rc) rc = moco_err(MOCO_EZMQ, "cannot connect to %s: %s", cfg->ctl_ep, zmq_strerror(errno));
        goto fail;
    }
    if (cfg->count && (rc = set_count(s, cfg->count))) goto fail;
    uint8_t h[32];
    size_t hl = moco_pipe_hello_ranked(h, cfg->resume_epoch, cfg->count, (uint32_t)cfg->rank, (uint32_t)(cfg->ranks > 1 ? cfg->ranks : 1));
    int withmap = cfg->resume_epoch != STREAM_NO_EPOCH && cfg->resume_bitmap && cfg->count;
    if (cfg->resume_epoch != STREAM_NO_EPOCH) {
        s->epoch = s->resume_epoch = cfg->resume_epoch;
        s->have_epoch = s->resumed = 1;
        if (withmap) memcpy(s->seen, cfg->resume_bitmap, s->seen_bytes);
    }
    if (zmq_send(s->ctl, h, hl, withmap ? ZMQ_SNDMORE : 0) != (int)hl ||
        (withmap && zmq_send(s->ctl, cfg->resume_bitmap, s->seen_bytes, 0) < 0)) {
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

/* A control message from the loader (frames f, n; taken over). Returns 1
 * if it produced an event, 0 if not, or an error (REFUSED, a WELCOME that
 * does not fit this consumer). */
static int handle_ctl(trainer_stream *s, zmq_msg_t *f, int n, stream_event *ev)
{
    moco_pipe_msg pm;
    if (n != 1 || moco_pipe_parse(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &pm)) {
        s->st.malformed++;
        drop_frames(f, &n);
        return 0;
    }
    int rc = 0;
    if (pm.type == MOCO_MSG_WELCOME && !s->welcomed) {
        int serve = (pm.flags & MOCO_WELCOME_SERVE) != 0;
        if (serve != s->serve)
            rc = moco_err(MOCO_EINVAL, "the loader at %s %s; %s", s->ctl_ep,
                          serve ? "serves pairs on its control socket (--serve)" : "has its workers push pairs to the consumer",
                          serve ? "connect without a pair endpoint (no --bind)" : "give the endpoint they push to (--bind)");
        else if (s->count && pm.count != s->count)
            rc = moco_err(MOCO_EINVAL, "the loader at %s streams a dataset of %llu samples, not %llu", s->ctl_ep,
                          (unsigned long long)pm.count, (unsigned long long)s->count);
        else if (s->resumed && pm.epoch != s->resume_epoch) /* a loader of several consumers already further on */
            rc = moco_err(MOCO_EINVAL, "the loader at %s streams epoch %u, but this consumer resumes in epoch %u: its position "
                          "there would be lost (the epochs between untrained, or its delivered indices taken for another "
                          "epoch's); restart the loader and all its consumers from one checkpoint",
                          s->ctl_ep, pm.epoch, s->resume_epoch);
        else if (!s->count)
            rc = set_count(s, pm.count);
        if (!rc) {
            s->welcomed = 1;
            s->busy_ok = (pm.flags & MOCO_WELCOME_BUSY) != 0;
            /* the loader's heartbeat: sent at, and missed as many times as with the default one (0:
             * the default; a hostile 1 ms or 4e9 ms is bounded) */
            s->hb_ms = pm.heartbeat_ms;
            s->hb_s = moco_pipe_heartbeat_s(pm.heartbeat_ms);
            s->silent_s = s->loader_timeout * (s->hb_s / MOCO_HEARTBEAT_S);
            s->epoch = pm.epoch;
            s->have_epoch = 1;
        }
    } else if (pm.type == MOCO_MSG_REFUSED) {
        size_t l = pm.reason_len;
        for (size_t i = 0; i < l; i++) s->refusal[i] = pm.reason[i] >= 0x20 && pm.reason[i] < 0x7f ? pm.reason[i] : '?';
        s->refusal[l] = 0;
        s->refused = 1;
        rc = moco_err(MOCO_EINVAL, "the loader at %s refused this consumer: %s", s->ctl_ep, s->refusal);
    } else if (pm.type == MOCO_MSG_EPOCH_END && s->welcomed && pm.epoch == s->epoch) {
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
        memset(s->seen, 0, s->seen_bytes);
        return 1;
    } else if (pm.type == MOCO_MSG_END && s->welcomed) {
        flush_acks(s);
        ev->kind = STREAM_END;
        ev->epoch = pm.epoch;
        s->ended = 1;
        rc = 1;
    } else if (pm.type != MOCO_MSG_HEARTBEAT) {
        s->st.malformed++; /* also an EPOCH_END of another epoch: never trusted */
    }
    drop_frames(f, &n);
    return rc;
}

/* Read the control socket (direct mode); returns 1 if it produced an event. */
static int on_ctl(trainer_stream *s, stream_event *ev)
{
    zmq_msg_t f[3];
    int n = recv_multi(s->ctl, f);
    if (n == 0) return 0;
    s->loader_seen = moco_now_s();
    if (n < 0) { s->st.malformed++; return 0; }
    return handle_ctl(s, f, n, ev);
}

/* Check frames f (n) as a pair message and make it the current one. */
static int set_current(trainer_stream *s, zmq_msg_t *f, int n)
{
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
    memcpy(s->cur.f, f, sizeof(zmq_msg_t) * (size_t)n);
    s->cur.nf = n;
    s->cur.batch = type == MOCO_MSG_PAIRS;
    s->cur.mn = s->cur.batch ? cnt : 1;
    s->cur.mi = 0;
    s->cur.moff = 0;
    return 1;
}

/* Take the next message as the current one: a held one whose epoch has
 * come, else from the socket (serve mode: control messages are handled on
 * the way, in order). Returns 1 (a current message), 0 (none waiting), 2
 * (an event in *ev) or an error. */
static int take_message(trainer_stream *s, stream_event *ev)
{
    if (s->nheld && s->held[s->hhead].epoch <= s->epoch) {
        s->cur = s->held[s->hhead];
        s->heldbytes -= s->cur.bytes;
        s->hhead = (s->hhead + 1) % HELD_MAX;
        s->nheld--;
        return 1;
    }
    if (!s->welcomed && !s->serve) return 0; /* pairs only once the loader has welcomed us: then the count is known */
    for (;;) {
        zmq_msg_t f[3];
        int n = recv_multi(s->serve ? s->ctl : s->pull, f);
        if (n == 0) return 0;
        if (s->serve) s->loader_seen = moco_now_s();
        if (n < 0) { s->st.malformed++; continue; }
        uint16_t type = 0;
        if (s->serve && (moco_wire_peek(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &type) ||
                         (type != MOCO_MSG_PAIR && type != MOCO_MSG_PAIRS))) {
            int r = handle_ctl(s, f, n, ev);
            if (r) return r < 0 ? r : 2;
            continue;
        }
        if (s->serve && !s->welcomed) { s->st.malformed++; drop_frames(f, &n); continue; }
        if (set_current(s, f, n)) return 1;
    }
}

/* The current message's next pair: header and views. */
static void peek_pair(const trainer_stream *s, moco_wire_pair *p, const uint8_t **q, const uint8_t **k)
{
    const pmsg *m = &s->cur;
    if (!m->batch) {
        moco_wire_pair_parse(zmq_msg_data((zmq_msg_t *)&m->f[0]), zmq_msg_size((zmq_msg_t *)&m->f[0]), p);
        *q = zmq_msg_data((zmq_msg_t *)&m->f[1]);
        *k = zmq_msg_data((zmq_msg_t *)&m->f[2]);
        return;
    }
    moco_pipe_pairs_at(zmq_msg_data((zmq_msg_t *)&m->f[0]), m->mi, p);
    const uint8_t *d = (const uint8_t *)zmq_msg_data((zmq_msg_t *)&m->f[1]) + m->moff;
    *q = d;
    *k = d + moco_wire_pair_view_bytes(p);
}

/* Dropped for their size or label, this many and ten times those taken:
 * a misconfiguration (stream_next fails), not a stray peer. */
#define MISFIT_MAX 256

/* Decide about pair p: 1 return it, 0 dropped, 2 it belongs to the next
 * epoch (hold it until EPOCH_END). */
static int accept_pair(trainer_stream *s, const moco_wire_pair *p)
{
    if (p->index >= s->count) { s->st.rejected_index++; return 0; }
    if (p->epoch < s->epoch) { s->st.stale++; return 0; } /* a late duplicate of a finished epoch */
    if (p->epoch == s->epoch + 1) return 2;              /* EPOCH_END of this epoch is on its way */
    if (p->epoch != s->epoch) { s->st.rejected_epoch++; return 0; }
    if (s->size && (p->height != (uint32_t)s->size || p->width != (uint32_t)s->size)) {
        /* not acknowledged: the loader issues the sample again */
        if (!(s->st.rejected_shape & (s->st.rejected_shape + 1)))
            fprintf(stderr, "moco consumer: dropped a pair (epoch %u, index %llu) of %ux%u views; %dx%d are taken "
                            "(--size; %llu dropped so far)\n", p->epoch, (unsigned long long)p->index, p->height, p->width,
                    s->size, s->size, (unsigned long long)s->st.rejected_shape + 1);
        s->st.rejected_shape++;
        return 0;
    }
    if (s->classes && (p->label < 0 || p->label >= s->classes)) {
        if (!(s->st.rejected_label & (s->st.rejected_label + 1)))
            fprintf(stderr, "moco consumer: dropped a pair (epoch %u, index %llu) of label %d; classes are [0, %d) "
                            "(%llu dropped so far)\n", p->epoch, (unsigned long long)p->index, (int)p->label, s->classes,
                    (unsigned long long)s->st.rejected_label + 1);
        s->st.rejected_label++;
        return 0;
    }
    if (seen_get(s, p->index)) {
        s->st.duplicates++;
        ack(s, p->epoch, p->index); /* the loader may not have heard the first ack */
        return 0;
    }
    seen_set(s, p->index);
    ack(s, p->epoch, p->index);
    s->st.pairs++;
    return 1;
}

/* The current message's next pair is of the next epoch: keep the message
 * (from that pair on) until EPOCH_END; beyond HELD_MAX messages or
 * HELD_BYTES_MAX bytes, drop it (what is never acknowledged is sent
 * again). */
static void hold_current(trainer_stream *s)
{
    size_t bytes = 0;
    for (int i = 0; i < s->cur.nf; i++) bytes += zmq_msg_size(&s->cur.f[i]);
    if (s->nheld == HELD_MAX || s->heldbytes + bytes > HELD_BYTES_MAX) {
        s->st.held_dropped += s->cur.mn - s->cur.mi;
        drop_frames(s->cur.f, &s->cur.nf);
        return;
    }
    s->st.held += s->cur.mn - s->cur.mi;
    s->cur.epoch = s->epoch + 1;
    s->cur.bytes = bytes;
    s->heldbytes += bytes;
    s->held[(s->hhead + s->nheld++) % HELD_MAX] = s->cur;
    s->cur.nf = 0;
}

void stream_keepalive(trainer_stream *s)
{
    double t = moco_now_s();
    int start = s->busy_ok && !s->busy; /* just stopped reading: say so at once */
    if (s->ended || (!start && t - s->last_hb < s->hb_s)) return;
    if (s->nacks) flush_acks(s); /* before BUSY: any other message ends it */
    uint8_t hb[16];
    zmq_send(s->ctl, hb, moco_pipe_simple(hb, s->busy_ok ? MOCO_MSG_BUSY : MOCO_MSG_HEARTBEAT), ZMQ_DONTWAIT);
    s->busy = s->busy_ok;
    s->last_hb = t;
}

int stream_next(trainer_stream *s, int timeout_ms, stream_event *ev)
{
    double t0 = moco_now_s(), deadline = timeout_ms < 0 ? 1e300 : t0 + timeout_ms / 1000.0;
    memset(ev, 0, sizeof *ev);
    if (s->ended) {
        ev->kind = STREAM_END;
        return 0;
    }
    if (s->refused) return moco_err(MOCO_EINVAL, "the loader at %s refused this consumer: %s", s->ctl_ep, s->refusal);
    int rc = 0;
    for (;;) {
        double t = moco_now_s();
        if (s->busy || t - s->last_hb >= s->hb_s) { /* reading again: the loader's clock runs */
            uint8_t hb[16];
            zmq_send(s->ctl, hb, moco_pipe_simple(hb, MOCO_MSG_HEARTBEAT), ZMQ_DONTWAIT);
            s->busy = 0;
            s->last_hb = t;
        }
        if (s->nacks && t - s->last_ack >= ACK_DELAY_S) flush_acks(s);
        if (s->cur.nf && s->cur.mi == s->cur.mn) drop_frames(s->cur.f, &s->cur.nf); /* all consumed, and the caller done with it */
        /* direct mode: the control socket is read between pair messages and
         * every 10 ms: not on every pair (an empty read costs a system
         * call), which is safe because a pair of epoch e+1 is held until
         * EPOCH_END(e) has been read. Serve mode: one socket, in order. */
        if (!s->serve && (!s->cur.nf || t - s->last_ctl > 0.01)) {
            s->last_ctl = t;
            if ((rc = on_ctl(s, ev))) break;
        }
        if (s->cur.nf || (rc = take_message(s, ev)) == 1) {
            rc = 0;
            moco_wire_pair p;
            const uint8_t *q, *k;
            peek_pair(s, &p, &q, &k);
            int r = accept_pair(s, &p);
            if (r == 2) {
                hold_current(s);
                continue;
            }
            s->cur.mi++;
            s->cur.moff += 2 * moco_wire_pair_view_bytes(&p);
            /* nothing but pairs of another size or of labels out of range: the workers' --size (or
             * the dataset) is not this consumer's, not a stray peer; dropping them for ever would
             * loop on re-issues, so it is an error, said once */
            uint64_t bad = s->st.rejected_shape + s->st.rejected_label;
            if (!r && bad >= MISFIT_MAX && bad > 10 * s->st.pairs) {
                rc = s->st.rejected_shape ? moco_err(MOCO_EINVAL, "%llu pairs of %ux%u views and %llu of the right size: the "
                                                     "workers make another --size than this consumer's %d (give both the same)",
                                                     (unsigned long long)s->st.rejected_shape, p.height, p.width,
                                                     (unsigned long long)s->st.pairs, s->size)
                                          : moco_err(MOCO_EINVAL, "%llu pairs of labels outside [0, %d) and %llu within: the "
                                                     "dataset's labels are not this consumer's classes",
                                                     (unsigned long long)s->st.rejected_label, s->classes,
                                                     (unsigned long long)s->st.pairs);
                break;
            }
            if (r == 1) {
                ev->kind = STREAM_PAIR;
                ev->pair = p;
                ev->q = q;
                ev->k = k;
                break;
            }
            continue;
        }
        if (rc) break; /* an event (2) or an error */
        if ((rc = moco_sec_check_refused(s->sec, s->ctl_ep))) { /* our key is not in the loader's allow list */
            s->st.waited_s += moco_now_s() - t0;
            return rc;
        }
        if (t - s->loader_seen > s->silent_s) {
            s->st.waited_s += moco_now_s() - t0;
            if (!s->welcomed) /* never answered: most often nothing listens there, or another endpoint */
                return moco_err(MOCO_ETIMEOUT, "no loader answered at %s in %.0f s (no WELCOME to this consumer's HELLO): is the "
                                "loader running, and is this its control endpoint (moco loader --ctl)?", s->ctl_ep,
                                t - s->loader_seen);
            if (s->hb_s != MOCO_HEARTBEAT_S)
                return moco_err(MOCO_ETIMEOUT, "the loader at %s has been silent for %.1f s (%.0f missed heartbeats of %.0f ms; "
                                "it announced %u ms)", s->ctl_ep, t - s->loader_seen, s->silent_s / s->hb_s, s->hb_s * 1000,
                                (unsigned)s->hb_ms);
            return moco_err(MOCO_ETIMEOUT, "the loader at %s has been silent for %.0f s", s->ctl_ep, t - s->loader_seen);
        }
        if (t >= deadline) { /* nothing yet: ev->kind is STREAM_NONE */
            s->st.waited_s += moco_now_s() - t0;
            return 0;
        }
        /* nothing to return: sleep until a message comes (pairs arrive in
         * batches, so this is one wake-up per batch, not per pair), or until
         * the acknowledgements held here are due (ACK_BATCH of them or
         * ACK_DELAY_S old: every message wakes the loader) */
        zmq_pollitem_t it[2] = {{s->ctl, 0, ZMQ_POLLIN, 0}, {s->pull, 0, ZMQ_POLLIN, 0}};
        double left = deadline - t;
        if (s->nacks && s->last_ack + ACK_DELAY_S - t < left) left = s->last_ack + ACK_DELAY_S - t;
        if (left > s->hb_s) left = s->hb_s; /* awake for the next heartbeat (at most 250 ms, below) */
        long ms = left > 0.25 ? 250 : left > 0 ? (long)(left * 1000) + 1 : 0;
        zmq_poll(it, s->serve || s->cur.nf || !s->welcomed ? 1 : 2, ms);
    }
    s->st.waited_s += moco_now_s() - t0;
    return rc < 0 ? rc : 0;
}

void stream_position(const trainer_stream *s, uint32_t *epoch, const uint8_t **bitmap, size_t *nbytes)
{
    *epoch = s->have_epoch ? s->epoch : 0;
    *bitmap = s->seen;
    *nbytes = s->seen_bytes;
}

void stream_stats_json(moco_jw *w, const stream_stats *st)
{
    moco_jw_obj(w, "stream");
    moco_jw_u64(w, "duplicates", st->duplicates);
    moco_jw_u64(w, "stale", st->stale);
    moco_jw_u64(w, "malformed", st->malformed);
    moco_jw_u64(w, "rejected_epoch", st->rejected_epoch);
    moco_jw_u64(w, "rejected_index", st->rejected_index);
    moco_jw_u64(w, "rejected_shape", st->rejected_shape);
    moco_jw_u64(w, "rejected_label", st->rejected_label);
    moco_jw_u64(w, "held", st->held);
    moco_jw_u64(w, "held_dropped", st->held_dropped);
    moco_jw_u64(w, "auth_rejected", st->auth_rejected);
    moco_jw_close(w);
}

void stream_get_stats(const trainer_stream *s, stream_stats *st)
{
    *st = s->st;
    st->auth_rejected = moco_sec_rejected(s->sec);
}

void stream_destroy(trainer_stream **ps)
{
    trainer_stream *s = *ps;
    if (!s) return;
    if (s->ctl) {
        flush_acks(s);
        uint8_t b[16]; /* goodbye: the loader may serve another consumer at once */
        zmq_send(s->ctl, b, moco_pipe_simple(b, MOCO_MSG_BYE), ZMQ_DONTWAIT);
    }
    drop_frames(s->cur.f, &s->cur.nf);
    while (s->nheld) {
        drop_frames(s->held[s->hhead].f, &s->held[s->hhead].nf);
        s->hhead = (s->hhead + 1) % HELD_MAX;
        s->nheld--;
    }
    if (s->have_ctlmsg) zmq_msg_close(&s->ctlmsg);
    if (s->pull) zmq_close(s->pull);
    if (s->ctl) {
        int linger = 200; /* the last acknowledgements and the goodbye go out */
        zmq_setsockopt(s->ctl, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(s->ctl);
    }
    moco_sec_destroy(&s->sec);
    if (s->zctx) zmq_ctx_term(s->zctx);
    moco_run_sockdir_cleanup(); /* moco run's socket directory, if this is a child of it */
    free(s->seen);
    free(s);
    *ps = NULL;
}
