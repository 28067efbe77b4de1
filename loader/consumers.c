/* consumers.c: the loader's side of its consumers (ranks): HELLO
 * (WELCOME, or REFUSED with the reason: one consumer per rank, the same
 * resume state for every rank of a session, the dataset's count, the run's
 * epochs), BYE, heartbeats and ACKs (only of indices handed out to that
 * consumer's shard in the current epoch). Split from stream.c, which keeps
 * the dispatch, the workers and the main loop; the state is in state.h. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/pipeline.h"
#include "formats/record.h"
#include "formats/wire.h"
#include "loader/state.h"

/* Answer a HELLO we do not accept: REFUSED with the reason, logged and
 * counted; the run goes on. */
static void refuse(loader *L, const inmsg *m, int32_t code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void refuse(loader *L, const inmsg *m, int32_t code, const char *fmt, ...)
{
    char why[512], hb[40];
    uint8_t b[12 + MOCO_WIRE_REASON_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    L->refused_hellos++;
    loader_send_to(L->ctl, m->id, m->idlen, b, moco_pipe_refused(b, code, why), NULL, 0);
    if (!loader_quota_ok(&L->q_refused, LOADER_QUOTA_BURST)) return;
    fprintf(stderr, "moco loader: refused a HELLO from %s: %s (%" PRIu64 " refused so far)\n", loader_hexid(m->id, m->idlen, hb), why,
            L->refused_hellos);
    moco_jw w;
    loader_ev_begin(L, &w, "refused_hello");
    moco_jw_str(&w, "peer", hb);
    moco_jw_str(&w, "reason", why);
    loader_quota_used(&L->q_refused, &w);
    loader_ev_end(L, &w);
}

/* The consumer (rank) whose socket sent m, or -1. */
static int find_consumer(const loader *L, const inmsg *m)
{
    for (int r = 0; r < L->R; r++) {
        const consumer *c = &L->c[r];
        if (c->present && c->idlen == m->idlen && !memcmp(c->id, m->id, m->idlen)) return r;
    }
    return -1;
}

/* A hash of a resume state: the consumers of one session must agree on it. */
static uint64_t state_hash(uint32_t epoch, const uint8_t *bm, size_t n)
{
    uint64_t h = 1469598103934665603ull ^ epoch;
    for (size_t i = 0; i < n; i++) h = (h ^ bm[i]) * 1099511628211ull;
    return h;
}

static void consumer_gone(loader *L, int r)
{
    consumer *c = &L->c[r];
    loader_age(L, r, moco_now_s());
    c->present = c->connected = 0;
    c->idlen = 0;
    loader_drop_held(L, r);
    /* serve mode: the samples whose pairs went (or waited here) for it and were never acknowledged go out
     * again now, for its successor; before, they waited --reissue-after (120 s of reading). A consumer
     * acknowledges a pair when its user takes it: these are all its user did not get */
    uint64_t back = 0;
    for (uint64_t i = 0; L->pairs && L->started && i < L->n; i++)
        if (L->st[i] == ISSUED && L->touched[i] >= 2 && L->shard[i] == r) loader_reissue(L, i), back++;
    if (back)
        fprintf(stderr, "moco loader: re-issuing the %" PRIu64 " samples whose pairs went to the consumer%s that left, "
                        "unacknowledged\n", back, L->R > 1 ? " of a rank" : "");
}

static void on_hello(loader *L, inmsg *m, const moco_pipe_msg *pm)
{
    if (pm->ranks != (uint32_t)L->R) {
        refuse(L, m, MOCO_EINVAL, "this loader serves %d consumer%s (--consumers); the HELLO is of rank %u of %u", L->R,
               L->R == 1 ? "" : "s", pm->rank, pm->ranks);
        return;
    }
    int r = (int)pm->rank, me = find_consumer(L, m);
    consumer *c = &L->c[r];
    if (me >= 0 && me != r) {
        refuse(L, m, MOCO_EINVAL, "this socket is the consumer of rank %d; it cannot say HELLO as rank %d", me, r);
        return;
    }
    /* one consumer per rank: another may take over only once it has been
     * silent for --consumer-timeout (killed, to be resumed) */
    if (c->present && me != r && moco_now_s() - c->seen <= L->consumer_timeout) {
        if (L->R == 1)
            refuse(L, m, MOCO_EINVAL, "another consumer is connected to this run (silent ones are replaced after %.0f s)",
                   L->consumer_timeout);
        else
            refuse(L, m, MOCO_EINVAL, "another consumer is connected as rank %d of this run (silent ones are replaced after %.0f s)",
                   r, L->consumer_timeout);
        return;
    }
    if (pm->count && pm->count != L->n) {
        refuse(L, m, MOCO_EINVAL, "the consumer's state is for a dataset of %" PRIu64 " samples; %s holds %" PRIu64, pm->count,
               L->db_path, L->n);
        return;
    }
    const uint8_t *bm = NULL;
    if (m->nf == 2) {
        if (pm->epoch == NO_EPOCH || zmq_msg_size(&m->f[1]) != (L->n + 7) / 8) {
            refuse(L, m, MOCO_EINVAL, "a resume bitmap of %zu bytes; this dataset needs %" PRIu64 " (and an epoch)",
                   zmq_msg_size(&m->f[1]), (L->n + 7) / 8);
            return;
        }
        bm = zmq_msg_data(&m->f[1]);
    }
    if (L->ended && pm->epoch == NO_EPOCH) {
        refuse(L, m, MOCO_EINVAL, "this run is over (all %ld epochs were delivered); a consumer with a resume state may "
                                  "still take what it did not get", L->epochs);
        return;
    }
    uint32_t e = pm->epoch != NO_EPOCH ? pm->epoch : L->started ? L->epoch : (uint32_t)L->start_epoch;
    if (L->epochs && e >= (uint32_t)L->epochs) {
        refuse(L, m, MOCO_EINVAL, "the consumer asks for epoch %u; the run has %ld epochs", e, L->epochs);
        return;
    }
    /* several consumers: the first of a session (none present and heard
     * from) sets the stream's state; the others must say HELLO with the same */
    double now = moco_now_s();
    int others = 0;
    for (int j = 0; j < L->R; j++) {
        if (j == r) continue;
        if (L->c[j].present && now - L->c[j].seen > L->consumer_timeout) consumer_gone(L, j); /* silent: of a session gone */
        others += L->c[j].present;
    }
    uint64_t h = state_hash(pm->epoch, bm, bm ? (L->n + 7) / 8 : 0);
    if (others && h != L->session_hash) {
        refuse(L, m, MOCO_EINVAL, "rank %d says HELLO with another resume state than the other ranks of this run (epoch %u%s)", r,
               pm->epoch, bm ? " and its delivered bitmap" : "");
        return;
    }
    if (c->present && me != r) consumer_gone(L, r); /* its silent predecessor */
    if (me != r) c->end_sent = 0; /* a new consumer: the EPOCH_END its predecessor got is due to it too */
    memcpy(c->id, m->id, m->idlen);
    c->idlen = m->idlen;
    loader_age(L, r, now);
    c->busy = 0;
    c->present = c->connected = 1;
    c->seen = now;
    c->bye = 0;
    L->ended = 0; /* a successor resuming after END: the run goes on */
    if (!others) {
        /* samples it has not got go out again: also those acknowledged by a previous consumer */
        L->session_hash = h;
        loader_begin_epoch(L, e, bm);
    } else if (c->ndone && L->started) {
        /* a rank's successor in a session under way: what its predecessor acknowledged stays delivered (the
         * other ranks go on), and what that one had not yet handed to its caller is lost to this epoch;
         * said, not silent (every rank restarted from its state() gets it all) */
        fprintf(stderr, "moco loader: the consumer of rank %d joins a session under way: the %" PRIu64 " samples of its shard "
                        "its predecessor acknowledged in epoch %u are not sent again (restart every rank from its state() "
                        "to be given what that one did not train on)\n", r, c->ndone, L->epoch);
        moco_jw w;
        loader_ev_begin(L, &w, "rank_replaced");
        moco_jw_i64(&w, "rank", r);
        moco_jw_u64(&w, "acknowledged", c->ndone);
        loader_ev_end(L, &w);
    }
    uint8_t b[32];
    uint32_t flags = (L->pairs ? MOCO_WELCOME_SERVE | MOCO_WELCOME_YIELD_ACK : 0) | MOCO_WELCOME_BUSY;
    loader_send_to(L->ctl, c->id, c->idlen, b,
            moco_pipe_welcome(b, L->epoch, (uint32_t)L->epochs, L->n, flags, (uint32_t)(MOCO_HEARTBEAT_S * 1000)), NULL, 0);
    if (!L->quiet) {
        if (L->R == 1)
            fprintf(stderr, "moco loader: consumer connected; epoch %u, %" PRIu64 " of %" PRIu64 " samples already delivered\n",
                    L->epoch, L->ndone, L->n);
        else
            fprintf(stderr, "moco loader: consumer of rank %d of %d connected; epoch %u, %" PRIu64 " of %" PRIu64
                            " samples already delivered\n", r, L->R, L->epoch, L->ndone, L->n);
    }
    moco_jw w;
    loader_ev_begin(L, &w, "consumer");
    moco_jw_i64(&w, "rank", r);
    moco_jw_u64(&w, "delivered_before", L->ndone);
    loader_ev_end(L, &w);
}

int loader_on_consumer_msg(loader *L, inmsg *m)
{
    const uint8_t *p = zmq_msg_data(&m->f[0]);
    size_t n = zmq_msg_size(&m->f[0]);
    moco_pipe_msg pm;
    uint16_t type = 0;
    if (moco_pipe_parse(p, n, &pm)) {
        /* a HELLO we cannot take is answered, as every refused one is (one of rank 2 of 2, say, waited for its
         * WELCOME in silence); other messages that do not parse are only counted */
        char why[256];
        snprintf(why, sizeof why, "a malformed HELLO: %s", moco_errmsg());
        if (!moco_wire_peek(p, n, &type) && type == MOCO_MSG_HELLO) refuse(L, m, MOCO_EINVAL, "%s", why);
        else L->dropped++;
        return 0;
    }
    if (pm.type == MOCO_MSG_HELLO) {
        on_hello(L, m, &pm);
        return 0;
    }
    int r = find_consumer(L, m);
    if (r < 0 || m->nf != 1) { L->dropped++; return 0; }
    consumer *c = &L->c[r];
    if (!c->connected) fprintf(stderr, "moco loader: the consumer%s is back\n", L->R > 1 ? " of a rank" : "");
    c->seen = moco_now_s();
    loader_age(L, r, c->seen);
    c->connected = 1;
    if (pm.type == MOCO_MSG_BUSY && !c->busy) { /* it stops reading (it evaluates, or waits for a rank that does) */
        moco_jw w;
        loader_ev_begin(L, &w, "consumer_busy");
        moco_jw_i64(&w, "rank", r);
        loader_ev_end(L, &w);
    }
    c->busy = pm.type == MOCO_MSG_BUSY;
    if (pm.type == MOCO_MSG_HEARTBEAT || pm.type == MOCO_MSG_BUSY) return 0;
    if (pm.type == MOCO_MSG_BYE) { /* it left: the next HELLO for its rank may come from anyone */
        c->bye = L->ended;
        if (!L->quiet) fprintf(stderr, "moco loader: the consumer%s said goodbye\n", L->R > 1 ? " of a rank" : "");
        moco_jw w;
        loader_ev_begin(L, &w, "consumer_left");
        moco_jw_i64(&w, "rank", r);
        moco_jw_u64(&w, "delivered", L->ndone);
        loader_ev_end(L, &w);
        int bye = c->bye;
        consumer_gone(L, r);
        c->bye = bye;
        return 0;
    }
    if (pm.type != MOCO_MSG_ACK) { L->dropped++; return 0; }
    if (pm.epoch > L->max_epoch) { /* of an epoch not begun: none of it was handed out */
        L->rejected_acks += pm.n;
        return 0;
    }
    if (pm.epoch != L->epoch) return 0; /* late acks of a finished epoch (or of one before a resume) */
    double now = moco_now_s(), age = loader_age(L, r, now);
    for (uint32_t j = 0; j < pm.n; j++) {
        uint64_t i = moco_get_le64(pm.idx + 8 * (size_t)j);
        if (i >= L->n || !L->touched[i] || L->shard[i] != r) { /* never handed out to it: it cannot have it */
            if (i < L->n && L->st[i] == DONE) { L->dup_acks++; continue; } /* delivered before a resume */
            L->rejected_acks++;
            continue;
        }
        if (L->st[i] == DONE || L->st[i] == FAILED) { L->dup_acks++; continue; }
        if (L->st[i] == ISSUED) {
            /* the pipeline's depth, as the time from issue to acknowledgement:
             * up at once, down slowly */
            double lat = age - (double)L->t_issued[i];
            c->depth_s = lat > c->depth_s ? lat : 0.999 * c->depth_s + 0.001 * lat;
            L->w[L->owner[i]].progress = now, L->w[L->owner[i]].acked_at_progress = L->acked;
            loader_unhold(L, i);
            loader_retire(L, i);
        }
        L->st[i] = DONE;
        L->ndone++;
        c->ndone++;
        L->acked++;
    }
    return 0;
}

/* Several consumers (--consumers R): one rank away (it never came, left, or
 * went silent) while others are connected holds them for ever at its shard's
 * end of the epoch. Once it has been away --consumer-wait seconds (counted
 * from its last word, or from none_since, the last time no consumer was
 * connected), the run stops: the connected ranks get REFUSED with the reason
 * (they stop with it, not at their --loader-timeout), and the error naming
 * the rank is returned (the caller stops the workers). Returns 0, or it. */
int loader_check_ranks_away(loader *L, double t, double none_since)
{
    for (int r = 0; r < L->R; r++) {
        const consumer *c = &L->c[r];
        double since = c->seen > none_since ? c->seen : none_since;
        if (c->connected || t - since <= L->consumer_wait) continue;
        char why[400];
        snprintf(why, sizeof why, "the consumer of rank %d of %d has been away for %.0f s (--consumer-wait %g) while other "
                 "ranks read: they would wait for its shard of epoch %u for ever; the run stops (restart every rank from "
                 "its last checkpoint)", r, L->R, t - since, L->consumer_wait, L->epoch);
        uint8_t b[12 + MOCO_WIRE_REASON_MAX];
        size_t bl = moco_pipe_refused(b, MOCO_ETIMEOUT, why);
        for (int j = 0; j < L->R; j++)
            if (L->c[j].connected) loader_send_to(L->ctl, L->c[j].id, L->c[j].idlen, b, bl, NULL, 0);
        moco_jw w;
        loader_ev_begin(L, &w, "rank_away");
        moco_jw_i64(&w, "rank", r);
        moco_jw_num(&w, "away_s", t - since, 1);
        moco_jw_u64(&w, "epoch", L->epoch);
        loader_ev_end(L, &w);
        return moco_err(MOCO_ETIMEOUT, "%s", why);
    }
    return 0;
}
