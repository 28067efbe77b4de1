/* stream.c: `moco loader`, the LMDB-backed streaming loader. The design and
 * its promises are in stream.h; the messages in formats/pipeline.h and
 * formats/wire.h; serve mode in serve.c; the consumers' messages (HELLO,
 * ACK, BYE) in consumers.c. One thread, one ZeroMQ context, two ROUTER sockets polled
 * together; the LMDB environment is opened here, after any fork. */
#include "loader/stream.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "formats/db.h"
#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/opts.h"
#include "formats/pipeline.h"
#include "formats/rng.h"
#include "formats/wire.h"
#include "formats/endpoints.h"
#include "formats/zsec.h"
#include "loader/cmd.h"

#include "loader/state.h"

/* An event line of the log: ev_begin, the fields (moco_jw_*), ev_end. */
moco_jw *loader_ev_begin(const loader *L, moco_jw *w, const char *event)
{
    moco_jw_begin(w);
    moco_jw_str(w, "event", event);
    moco_jw_u64(w, "epoch", L->epoch);
    return w;
}

static int log_warned; /* a failed write to --log, said once */

void loader_ev_end(const loader *L, moco_jw *w)
{
    if (L->log) moco_jw_log(w, L->log, "moco loader", L->log_path, &log_warned);
    else moco_jw_free(w);
}

int loader_quota_ok(loader_quota *q, uint64_t burst)
{
    double now = moco_now_s();
    if (q->lines >= burst && now - q->at < LOADER_QUOTA_EVERY) {
        q->skipped++;
        return 0;
    }
    q->lines++;
    q->at = now;
    return 1;
}

void loader_quota_used(loader_quota *q, moco_jw *w)
{
    if (q->skipped) moco_jw_u64(w, "suppressed", q->skipped);
    q->skipped = 0;
}

/* A peer's routing id as hex, for messages. */
const char *loader_hexid(const uint8_t *id, size_t n, char *buf)
{
    static const char hx[] = "0123456789abcdef";
    if (n > 16) n = 16;
    for (size_t i = 0; i < n; i++) { buf[2 * i] = hx[id[i] >> 4]; buf[2 * i + 1] = hx[id[i] & 15]; }
    buf[2 * n] = 0;
    return buf;
}

static volatile sig_atomic_t stop_flag;
static void on_signal(int s) { (void)s; stop_flag = 1; }

void loader_epoch_order(uint64_t seed, uint32_t epoch, uint64_t *perm, uint64_t n)
{
    moco_rng r;
    moco_rng_init(&r, seed, epoch, 0x7065726d /* "perm" */, 0);
    moco_rng_permutation(&r, perm, n);
}

/* ---- sending ---- */

/* Send frames to the ROUTER peer id; ZMQ_ROUTER_MANDATORY makes an unknown
 * peer an error (EHOSTUNREACH) rather than a silent drop. */
int loader_send_to(void *sock, const uint8_t *id, size_t idlen, const void *a, size_t alen, const void *b, size_t blen)
{
    if (zmq_send(sock, id, idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -1;
    if (zmq_send(sock, a, alen, (b ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) return -1;
    if (b && zmq_send(sock, b, blen, ZMQ_DONTWAIT) < 0) return -1;
    return 0;
}

static void queue_push(loader *L, uint64_t idx)
{
    consumer *c = &L->c[L->shard[idx]];
    c->ring[(c->rhead + c->rlen) % c->rcap] = idx;
    c->rlen++;
}

/* Sample idx leaves the issued state (acknowledged, failed or re-issued). */
void loader_retire(loader *L, uint64_t idx)
{
    consumer *c = &L->c[L->shard[idx]];
    L->outstanding--;
    c->outstanding--;
    if (L->touched[idx] == 3) c->sent--;
}

double loader_age(loader *L, int r, double now)
{
    consumer *c = &L->c[r];
    if (c->connected && now > c->age_at) *(c->busy ? &c->busy_s : &c->age) += now - c->age_at;
    c->age_at = now;
    return c->age;
}

int loader_all_connected(const loader *L)
{
    for (int r = 0; r < L->R; r++)
        if (!L->c[r].connected) return 0;
    return 1;
}

void loader_unhold(loader *L, uint64_t idx)
{
    worker *w = &L->w[L->owner[idx]];
    if (L->touched[idx] >= 2) return; /* its pair came back: it left the worker's hands then (serve.c) */
    if (w->holding) w->holding--;
}

int loader_in_hands(const loader *L, uint64_t idx, int k)
{
    return L->st[idx] == ISSUED && L->owner[idx] == k && L->touched[idx] < 2;
}

void loader_reissue(loader *L, uint64_t idx)
{
    loader_unhold(L, idx);
    L->st[idx] = PENDING;
    loader_retire(L, idx);
    L->reissued++;
    queue_push(L, idx);
}

void loader_worker_dead(loader *L, int k, const char *why)
{
    worker *w = &L->w[k];
    w->alive = 0;
    L->dead_workers++;
    uint64_t back = 0;
    for (uint64_t i = 0; i < L->n; i++) /* serve mode: a pair it returned is not its to lose */
        if (loader_in_hands(L, i, k)) { loader_reissue(L, i); back++; }
    fprintf(stderr, "moco loader: worker %d %s; re-issuing its %" PRIu64 " samples\n", k, why, back);
}

/* Start epoch e; samples set in bitmap (ceil(n/8) bytes, may be NULL) were
 * already delivered. */
void loader_begin_epoch(loader *L, uint32_t e, const uint8_t *bitmap)
{
    /* a consumer resuming the running epoch: pairs issued before still count as issued */
    if (!(L->started && L->epoch == e)) memset(L->touched, 0, L->n);
    L->epoch = e;
    if (e > L->max_epoch) L->max_epoch = e;
    L->started = 1;
    loader_epoch_order(L->seed, e, L->perm, L->n);
    for (int k = 0; k < L->nw; k++) L->w[k].holding = 0;
    memset(L->st, PENDING, L->n);
    L->nfailed = L->ndone = L->outstanding = 0;
    for (int r = 0; r < L->R; r++) {
        consumer *c = &L->c[r];
        c->n = L->n / (uint64_t)L->R + ((uint64_t)r < L->n % (uint64_t)L->R);
        c->cursor = (uint64_t)r;
        c->rhead = c->rlen = 0;
        c->ndone = c->nfailed = c->outstanding = c->sent = 0;
        c->end_sent = 0;
    }
    for (uint64_t p = 0; p < L->n; p++) L->shard[L->perm[p]] = (uint16_t)(p % (uint64_t)L->R);
    if (bitmap)
        for (uint64_t i = 0; i < L->n; i++)
            if (bitmap[i >> 3] >> (i & 7) & 1) { L->st[i] = DONE; L->ndone++; L->c[L->shard[i]].ndone++; }
}

/* The next pending sample of shard r to issue, or -1. Re-issues go first. */
static int64_t next_sample(loader *L, int r)
{
    consumer *c = &L->c[r];
    while (c->rlen) {
        uint64_t i = c->ring[c->rhead];
        c->rhead = (c->rhead + 1) % c->rcap;
        c->rlen--;
        if (L->st[i] == PENDING) return (int64_t)i;
    }
    while (c->cursor < L->n) {
        uint64_t i = L->perm[c->cursor];
        c->cursor += (uint64_t)L->R;
        if (L->st[i] == PENDING) return (int64_t)i;
    }
    return -1;
}

/* A sample of shard r failed (a worker could not decode it, or it is too large to send). */
static void fail_sample(loader *L, uint64_t i)
{
    consumer *c = &L->c[L->shard[i]];
    L->st[i] = FAILED;
    c->failed[c->nfailed++] = i;
    L->nfailed++;
    L->failed_total++;
}

int64_t loader_credit(const worker *w)
{
    int64_t inflight = (int64_t)(w->sent - w->received);
    return w->alive && !w->banned ? (int64_t)w->free_slots - inflight : 0;
}


static void free_batch(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* Send worker k up to max pending samples: one SAMPLES message (or, to a
 * version-1 worker, one SAMPLE), the records read from the database into
 * one buffer that ZeroMQ frees once sent. Returns the number of samples
 * sent (0: none pending), or a MOCO_E* code on a database failure. The
 * samples are marked issued to k as they are read, so that a failed send
 * is simply the worker's death: loader_worker_dead() takes them all back. */
static int64_t send_batch(loader *L, int k, uint32_t max, int r)
{
    worker *w = &L->w[k];
    size_t cap = 0, used = 0;
    uint8_t *buf = NULL;
    uint32_t n = 0;
    double now = moco_now_s();
    moco_db_reads_begin(); /* one guard set-up for the batch's reads, not one per read */
    while (n < max && used < MOCO_BATCH_BYTES) {
        int64_t i = next_sample(L, r);
        if (i < 0) break;
        size_t len;
        int rc = moco_db_get(L->db, (uint64_t)i, &L->rec, &L->reccap, &len);
        if (!rc && len > MOCO_RECORD_WIRE_MAX) { /* larger than any worker accepts: failed, never sent */
            fail_sample(L, (uint64_t)i);
            fprintf(stderr, "moco loader: record %" PRId64 " of %s is %zu bytes, over the %zu-byte limit of a message; failed\n",
                    i, L->db_path, len, MOCO_RECORD_WIRE_MAX);
            moco_jw w;
            loader_ev_begin(L, &w, "failed");
            moco_jw_i64(&w, "index", i);
            moco_jw_str(&w, "reason", "record over the message limit");
            moco_jw_u64(&w, "bytes", len);
            loader_ev_end(L, &w);
            continue;
        }
        if (!rc && used + len > cap) { /* first guess: max records like this one */
            size_t nc = cap ? 2 * cap : len * max < MOCO_BATCH_BYTES ? len * max : MOCO_BATCH_BYTES;
            if (nc < used + len) nc = used + len;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) rc = moco_err(MOCO_ENOMEM, "out of memory for a batch of %zu bytes", nc);
            else { buf = nb; cap = nc; }
        }
        if (rc) { /* an LMDB failure is fatal: the database is ours */
            moco_db_reads_end();
            free(buf);
            return rc;
        }
        memcpy(buf + used, L->rec, len);
        used += len;
        L->st[i] = ISSUED;
        L->touched[i] = 1;
        L->owner[i] = (uint16_t)k;
        L->t_issued[i] = (float)loader_age(L, r, now);
        L->outstanding++;
        L->c[r].outstanding++;
        if (!w->holding++) w->progress = moco_now_s(), w->acked_at_progress = L->acked;
        L->bent[n] = (moco_pipe_sample){.epoch = L->epoch, .len = (uint32_t)len, .index = (uint64_t)i};
        n++;
    }
    moco_db_reads_end();
    if (n == 0) { free(buf); return 0; }
    uint8_t hdr[16 + MOCO_SAMPLES_ENTRY * MOCO_SAMPLES_MAX];
    size_t hl;
    if (w->batch) {
        hl = moco_pipe_samples_pack(hdr, L->bent, n);
    } else {
        moco_wire_sample smp = {.epoch = L->epoch, .index = L->bent[0].index};
        moco_wire_sample_pack(hdr, &smp);
        hl = MOCO_WIRE_SAMPLE_SIZE;
    }
    zmq_msg_t data;
    if (!buf) buf = malloc(1); /* an empty record: still a frame */
    if (!buf || zmq_msg_init_data(&data, buf, used, free_batch, NULL)) {
        free(buf);
        return moco_err(MOCO_ENOMEM, "out of memory for a message");
    }
    /* unroutable or full: the worker is gone or stuck */
    if (zmq_send(L->work, w->id, w->idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(L->work, hdr, hl, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&data);
        loader_worker_dead(L, k, errno == EHOSTUNREACH ? "disconnected" : "is not accepting work");
        return n;
    }
    if (zmq_msg_send(&data, L->work, ZMQ_DONTWAIT) < 0) zmq_msg_close(&data); /* not expected once the first frames went */
    L->sent += n;
    w->sent += n;
    L->msgs_sent++;
    return n;
}

/* Room in shard r's window (--window split over the consumers), if it has
 * samples left to issue; else 0. Serve mode: samples whose pairs were sent
 * to the consumer take no room (they wait for its user, who may need a
 * batch of more than the window before it acknowledges any; its socket and
 * queue bound them). */
int64_t loader_shard_room(const loader *L, int r)
{
    const consumer *c = &L->c[r];
    int64_t win = L->window / L->R > 0 ? L->window / L->R : 1;
    if (!c->rlen && c->cursor >= L->n) return 0;
    return win - (int64_t)(c->outstanding - c->sent);
}

/* Hand out samples while workers have credit and the windows allow: to
 * each worker in turn, as many as its credit, the window and its batch size
 * allow in one message, the shards taking turns (one shard per message, so
 * that a worker's pairs mostly go to one consumer). */
static int dispatch(loader *L)
{
    if (!loader_all_connected(L) || !L->started) return 0;
    for (int tries = 0; tries < L->nw;) {
        int k = L->rr, r = -1;
        int64_t room = 0;
        for (int j = 0; j < L->R && room <= 0; j++) {
            r = (L->crr + j) % L->R;
            room = loader_shard_room(L, r);
        }
        if (room <= 0) return 0; /* every window full, or nothing pending */
        worker *w = &L->w[k];
        L->rr = (L->rr + 1) % L->nw;
        int64_t c = loader_credit(w);
        if (c <= 0) { tries++; continue; }
        int64_t max = w->batch ? w->batch : 1;
        if (max > c) max = c;
        if (max > room) max = room;
        L->crr = (r + 1) % L->R;
        int64_t n = send_batch(L, k, (uint32_t)max, r);
        if (n < 0) return (int)n;
        tries = w->alive ? 0 : tries + 1;
    }
    return 0;
}

/* ---- receiving ---- */

/* Receive one multipart message from a ROUTER (inmsg, state.h): identity
 * into id, the data frames into f. Returns the number of data frames (1 or
 * 2), or -1 (malformed: more frames, empty). */

static int recv_router(void *sock, inmsg *m)
{
    zmq_msg_t part;
    int more = 1, idx = 0, bad = 0;
    m->nf = 0;
    m->idlen = 0;
    while (more) {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            if (idx == 0) return 0;
            bad = 1;
            break;
        }
        more = zmq_msg_more(&part);
        if (idx == 0) {
            m->idlen = zmq_msg_size(&part) < MAX_ID ? zmq_msg_size(&part) : MAX_ID;
            memcpy(m->id, zmq_msg_data(&part), m->idlen);
            zmq_msg_close(&part);
        } else if (m->nf < 2) {
            m->f[m->nf++] = part;
        } else {
            zmq_msg_close(&part);
            bad = 1;
        }
        idx++;
    }
    if (bad || m->nf == 0) {
        for (int i = 0; i < m->nf; i++) zmq_msg_close(&m->f[i]);
        m->nf = 0;
        return -1;
    }
    return m->nf;
}

static void close_msg(inmsg *m)
{
    for (int i = 0; i < m->nf; i++) zmq_msg_close(&m->f[i]);
    m->nf = 0;
}

static int find_worker(loader *L, const uint8_t *id, size_t idlen)
{
    for (int k = 0; k < L->nw; k++)
        if (L->w[k].idlen == idlen && !memcmp(L->w[k].id, id, idlen)) return k;
    return -1;
}

static void on_worker_msg(loader *L, inmsg *m)
{
    const uint8_t *p = zmq_msg_data(&m->f[0]);
    size_t n = zmq_msg_size(&m->f[0]);
    uint16_t type;
    if (moco_wire_peek(p, n, &type)) { L->dropped++; return; }
    int k = find_worker(L, m->id, m->idlen);
    if (type == MOCO_MSG_READY) {
        moco_pipe_msg pm;
        if (m->nf != 1 || moco_pipe_parse(p, n, &pm)) { L->dropped++; return; }
        double now = moco_now_s();
        if (k < 0) {
            if ((k = loader_free_slot(L, now)) < 0) {
                L->refused_workers++;
                if (L->refused_workers <= 20 || !(L->refused_workers & (L->refused_workers - 1))) {
                    char hb[40];
                    fprintf(stderr, "moco loader: refused a new worker (%s): all %ld worker slots (--max-workers) are "
                                    "taken by live workers (%" PRIu64 " refused so far)\n",
                            loader_hexid(m->id, m->idlen, hb), L->max_workers, L->refused_workers);
                }
                return;
            }
            memset(&L->w[k], 0, sizeof L->w[k]);
            memcpy(L->w[k].id, m->id, m->idlen);
            L->w[k].idlen = m->idlen;
            L->w[k].sent = pm.received;
            L->w[k].useful_at = now;
            if (!L->quiet) fprintf(stderr, "moco loader: worker %d joined\n", k);
        } else if (!L->w[k].alive && !L->w[k].banned) {
            /* back from the dead: what it had was re-issued. Its counts stand (the same
             * connection: a new one would have a new routing id), and so does `sent`: records
             * still in flight to it arrive and count in its READY; resetting `sent` to its
             * `received` put it below every later READY, which were then ignored, and its credit
             * stayed at 0 for good (one worker: the run hung) */
            if (!L->quiet) fprintf(stderr, "moco loader: worker %d is back\n", k);
        }
        worker *w = &L->w[k];
        w->alive = 1;
        w->last_seen = now;
        w->free_slots = pm.credits;
        w->batch = pm.batch;
        if (pm.received <= w->sent) w->received = pm.received;
        if (w->banned && L->readmit_after > 0 && now >= w->ban_until) loader_readmit(L, k, now);
        if (loader_credit(w) > 0 || w->holding) w->useful_at = now;
        return;
    }
    if (k < 0) { L->dropped++; return; } /* unknown peer: say READY first */
    L->w[k].last_seen = moco_now_s();
    if (type == MOCO_MSG_HEARTBEAT) return;
    if (type == MOCO_MSG_FAILED) {
        moco_wire_failed f;
        if (m->nf != 1 || moco_wire_failed_parse(p, n, &f)) { L->dropped++; return; }
        /* only the worker that holds a sample may say it failed; every
         * report not applied is counted (also a late one about a finished
         * epoch, which a real worker may send after a re-issue) */
        if (f.epoch != L->epoch || f.index >= L->n || !loader_in_hands(L, f.index, k)) {
            char hb[40];
            loader_hexid(m->id, m->idlen, hb); /* for the log line and the event, whether or not the line is printed */
            L->rejected_failed++;
            /* lines: each worker's first LOADER_QUOTA_BURST, and all workers' first 5 x that */
            if (!loader_quota_ok(&L->w[k].q_failed, LOADER_QUOTA_BURST)) return;
            if (!loader_quota_ok(&L->q_failed, 5 * LOADER_QUOTA_BURST)) {
                L->w[k].q_failed.skipped++;
                return;
            }
            fprintf(stderr, "moco loader: rejected a FAILED report of sample %" PRIu64 " (epoch %u) from worker %d (%s), "
                            "which does not hold it (%" PRIu64 " rejected so far)\n",
                    f.index, f.epoch, k, hb, L->rejected_failed);
            moco_jw w;
            loader_ev_begin(L, &w, "rejected");
            moco_jw_str(&w, "what", "FAILED");
            moco_jw_u64(&w, "index", f.index);
            moco_jw_u64(&w, "claimed_epoch", f.epoch);
            moco_jw_i64(&w, "worker", k);
            moco_jw_str(&w, "peer", hb);
            loader_quota_used(&L->w[k].q_failed, &w);
            loader_ev_end(L, &w);
            return;
        }
        {
            loader_unhold(L, f.index);
            L->w[k].progress = moco_now_s(), L->w[k].acked_at_progress = L->acked;
            loader_retire(L, f.index);
            fail_sample(L, f.index);
            /* the reason is a peer's text: only printable ASCII goes to the terminal and the JSON log */
            char why[MOCO_WIRE_REASON_MAX + 1];
            size_t wl = 0;
            for (size_t j = 0; j < f.reason_len; j++) {
                char c = f.reason[j];
                why[wl++] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? c : '?';
            }
            why[wl] = 0;
            fprintf(stderr, "moco loader: record %" PRIu64 " failed in a worker: %s\n", f.index, why);
            moco_jw w;
            loader_ev_begin(L, &w, "failed");
            moco_jw_u64(&w, "index", f.index);
            moco_jw_strn(&w, "reason", f.reason, f.reason_len); /* the peer's bytes, escaped */
            loader_ev_end(L, &w);
        }
        return;
    }
    L->dropped++;
}

/* ---- periodic work ---- */

/* STOP to every live worker: the loader is done (or gives up), so they
 * stop now rather than at their loader timeout. */
static void loader_stop_workers(loader *L)
{
    uint8_t b[16];
    size_t l = moco_pipe_simple(b, MOCO_MSG_STOP);
    for (int k = 0; k < L->nw; k++)
        if (L->w[k].alive) loader_send_to(L->work, L->w[k].id, L->w[k].idlen, b, l, NULL, 0);
}

static void heartbeats(loader *L)
{
    uint8_t hb[16];
    size_t hl = moco_pipe_simple(hb, MOCO_MSG_HEARTBEAT);
    for (int k = 0; k < L->nw; k++)
        if (L->w[k].alive) loader_send_to(L->work, L->w[k].id, L->w[k].idlen, hb, hl, NULL, 0);
    for (int r = 0; r < L->R; r++)
        if (L->c[r].connected) loader_send_to(L->ctl, L->c[r].id, L->c[r].idlen, hb, hl, NULL, 0);
}

static void check_timeouts(loader *L, double t)
{
    for (int k = 0; k < L->nw; k++)
        if (L->w[k].alive && t - L->w[k].last_seen > L->worker_timeout) loader_worker_dead(L, k, "went silent");
    loader_check_stalls(L, t);
    if (!L->started || L->reissue_after <= 0) return;
    uint64_t late = 0;
    /* late: unacknowledged for --reissue-after, or for twice the pipeline's
     * depth when that is longer (a slow consumer behind a deep queue) */
    double after[MOCO_CONSUMERS_MAX];
    for (int r = 0; r < L->R; r++) {
        loader_age(L, r, t);
        after[r] = 2 * L->c[r].depth_s > L->reissue_after ? 2 * L->c[r].depth_s : L->reissue_after;
    }
    for (uint64_t i = 0; i < L->n; i++)
        if (L->st[i] == ISSUED && L->c[L->shard[i]].age - L->t_issued[i] > after[L->shard[i]]) { loader_reissue(L, i); late++; }
    if (late) fprintf(stderr, "moco loader: re-issuing %" PRIu64 " samples unacknowledged for %.0f s of their consumer's reading\n", late,
                      after[0]);
}

static void report(loader *L, double t, double t0, uint64_t *last_sent, double *last_t)
{
    int alive = 0;
    for (int k = 0; k < L->nw; k++) alive += L->w[k].alive;
    double rate = t > *last_t ? (double)(L->sent - *last_sent) / (t - *last_t) : 0;
    *last_sent = L->sent;
    *last_t = t;
    if (L->log) {
        moco_jw w;
        moco_jw_begin(&w);
        moco_jw_num(&w, "t", t - t0, 3);
        moco_jw_u64(&w, "epoch", L->epoch);
        moco_jw_u64(&w, "done", L->ndone);
        moco_jw_u64(&w, "of", L->n);
        moco_jw_num(&w, "records_per_s", rate, 1);
        moco_jw_u64(&w, "in_flight", L->outstanding);
        uint64_t requeued = 0;
        for (int r = 0; r < L->R; r++) requeued += L->c[r].rlen;
        moco_jw_u64(&w, "requeued", requeued);
        moco_jw_i64(&w, "workers", alive);
        moco_jw_u64(&w, "sent", L->sent);
        moco_jw_u64(&w, "reissued", L->reissued);
        double busy = 0, depth = 0;
        for (int r = 0; r < L->R; r++) {
            loader_age(L, r, t);
            busy += L->c[r].busy_s;
            if (L->c[r].depth_s > depth) depth = L->c[r].depth_s;
        }
        moco_jw_num(&w, "consumer_busy_s", busy, 3);
        moco_jw_num(&w, "depth_s", depth, 3);
        moco_jw_u64(&w, "failed", L->failed_total);
        moco_jw_u64(&w, "dropped_msgs", L->dropped);
        moco_jw_u64(&w, "dead_workers", L->dead_workers);
        moco_jw_u64(&w, "sample_msgs", L->msgs_sent);
        moco_jw_u64(&w, "refused_hellos", L->refused_hellos);
        moco_jw_u64(&w, "rejected_failed", L->rejected_failed);
        moco_jw_u64(&w, "rejected_acks", L->rejected_acks);
        moco_jw_u64(&w, "rejected_pairs", L->rejected_pairs);
        moco_jw_u64(&w, "stalled_workers", L->stalled_workers);
        moco_jw_u64(&w, "refused_workers", L->refused_workers);
        moco_jw_u64(&w, "reclaimed_slots", L->reclaimed_slots);
        moco_jw_u64(&w, "idle_reclaimed", L->idle_reclaimed);
        moco_jw_u64(&w, "readmitted_workers", L->readmitted_workers);
        moco_jw_u64(&w, "auth_rejected", moco_sec_rejected(L->sec));
        moco_jw_u64(&w, "handshake_dropped", moco_sec_dropped(L->sec));
        moco_jw_u64(&w, "forwarded_msgs", L->forwarded);
        moco_jw_u64(&w, "stale_pairs", L->stale_pairs);
        moco_jw_u64(&w, "held_bytes_peak", L->held_bytes_peak);
        moco_jw_u64(&w, "held_full", L->held_full);
        if (L->R > 1) moco_jw_u64(&w, "split_msgs", L->split_msgs);
        moco_jw_log(&w, L->log, "moco loader", L->log_path, &log_warned);
    }
    if (!L->quiet && isatty(STDERR_FILENO))
        fprintf(stderr, "\rloader: epoch %u %" PRIu64 "/%" PRIu64 "  %.0f rec/s  in flight %" PRIu64 "  workers %d  failed %" PRIu64 "   ",
                L->epoch, L->ndone, L->n, rate, L->outstanding, alive, L->failed_total);
}

/* EPOCH_END to each consumer whose shard of the epoch is complete (once it
 * has room): every sample acknowledged, failed, or (serve mode) its pair
 * sent to it, so that a consumer that acknowledges what its user takes can
 * hand over the epoch's last, short batch; `delivered` counts those sent
 * too. When every shard is acknowledged or failed, the next epoch begins.
 * Returns 1 when the last epoch is complete, 0, or an error. */
static int epoch_complete(loader *L)
{
    if (!L->started) return 0;
    int all = 1;
    for (int r = 0; r < L->R; r++) {
        consumer *c = &L->c[r];
        if (c->ndone + c->nfailed < c->n) all = 0; /* the next epoch waits for its acknowledgements */
        if (c->end_sent) continue;
        if (c->ndone + c->nfailed + c->sent < c->n) { all = 0; continue; }
        if (L->nfailed > MOCO_EPOCH_FAILED_MAX)
            return moco_err(MOCO_ECORRUPT, "%" PRIu64 " records of %s failed in epoch %u (more than %u): the dataset is damaged",
                            L->nfailed, L->db_path, L->epoch, MOCO_EPOCH_FAILED_MAX);
        size_t len = 24 + 8 * c->nfailed;
        uint8_t *b = malloc(len);
        if (!b) return moco_err(MOCO_ENOMEM, "out of memory");
        moco_pipe_epoch_end(b, L->epoch, c->ndone + c->sent, c->failed, (uint32_t)c->nfailed);
        int rc = c->connected ? loader_send_to(L->ctl, c->id, c->idlen, b, len, NULL, 0) : -1;
        free(b);
        if (rc) { all = 0; continue; } /* no room towards it (serve mode), or it is gone: try again on the next turn */
        c->end_sent = 1;
    }
    if (!all) return 0;
    if (!L->quiet)
        fprintf(stderr, "%smoco loader: epoch %u complete: %" PRIu64 " delivered, %" PRIu64 " failed\n",
                isatty(STDERR_FILENO) ? "\n" : "", L->epoch, L->ndone, L->nfailed);
    moco_jw w;
    loader_ev_begin(L, &w, "epoch_end");
    moco_jw_u64(&w, "delivered", L->ndone);
    moco_jw_u64(&w, "failed", L->nfailed);
    loader_ev_end(L, &w);
    if (L->epochs && L->epoch + 1 >= (uint32_t)L->epochs) return 1;
    loader_begin_epoch(L, L->epoch + 1, NULL);
    return 0;
}

/* END to every consumer: the run is over. */
static void send_end(loader *L)
{
    uint8_t b[16];
    size_t l = moco_pipe_end(b, L->epoch + 1);
    for (int r = 0; r < L->R; r++) {
        consumer *c = &L->c[r];
        loader_drop_held(L, r); /* stale duplicates by now */
        /* serve mode: the pipe to the consumer may be full for a moment */
        for (double t0 = moco_now_s(); c->connected && loader_send_to(L->ctl, c->id, c->idlen, b, l, NULL, 0) && errno == EAGAIN &&
                                       moco_now_s() - t0 < 5;) {
            zmq_pollitem_t it = {L->ctl, 0, ZMQ_POLLOUT, 0};
            zmq_poll(&it, 1, 100);
        }
    }
}

static void say_goodbye(loader *L)
{
    if (!L->ended) send_end(L);
    loader_stop_workers(L);
}

/* A socket of ours bound at ep: type, send and receive HWMs, largest frame
 * accepted (set before the bind: libzmq applies them to the pipes of
 * later binds and connections only). */
static void *open_bound(loader *L, int type, const char *ep, int sndhwm, int hwm, int64_t maxmsg, int *rc)
{
    void *s = zmq_socket(L->zctx, type);
    int one = 1, linger = 1000;
    if (!s || (type == ZMQ_ROUTER && zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one)) ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm) || zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) || zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger)) {
        *rc = moco_err(MOCO_EZMQ, "cannot create a socket for %s: %s", ep, zmq_strerror(errno));
        if (s) zmq_close(s);
        return NULL;
    }
    if ((*rc = moco_bind_endpoints(L->sec, s, ep))) {
        zmq_close(s);
        return NULL;
    }
    return s;
}

static int run(loader *L)
{
    int rc = 0;
    /* the consumer's socket also carries a HELLO's bitmap, and in serve mode the pairs */
    int64_t ctl_max = (int64_t)((L->n + 7) / 8 + 64);
    if (ctl_max < MOCO_CTL_FRAME_MAX) ctl_max = MOCO_CTL_FRAME_MAX;
    if ((rc = moco_sec_new(L->zctx, L->keys, L->insecure, "moco loader", L->log, &L->sec))) return rc;
    /* the pairs: a few messages wait here at most (for each worker's
     * connection): the workers feel the consumer's pace */
    if (!(L->work = open_bound(L, ZMQ_ROUTER, L->work_ep, 1000, 1000, MOCO_CTL_FRAME_MAX, &rc)) ||
        !(L->ctl = open_bound(L, ZMQ_ROUTER, L->ctl_ep, L->pairs_ep ? MOCO_SERVE_SNDHWM : 1000, 1000, ctl_max, &rc)) ||
        (L->pairs_ep && !(L->pairs = open_bound(L, ZMQ_PULL, L->pairs_ep, 1000, MOCO_PAIRS_RCVHWM, (int64_t)MOCO_PAIRS_FRAME_MAX, &rc))))
        return rc;
    if (!L->quiet)
        fprintf(stderr, "moco loader: %s, %" PRIu64 " samples; workers: %s%s%s; consumer: %s%s\n", L->db_path, L->n, L->work_ep,
                L->pairs ? ", their pairs: " : "", L->pairs ? L->pairs_ep : "", L->ctl_ep, L->pairs ? " (serve mode)" : "");
    double t0 = moco_now_s(), last_hb = 0, last_rep = t0, waited_since = t0, none_since = t0;
    uint64_t last_sent = 0;
    int finished = 0;
    while (!stop_flag && !finished) {
        /* serve mode: new pairs when none waits for room, else room towards the consumer */
        int held = L->pairs ? loader_forward_pending(L) : 0, any = 0, bye = 1;
        for (int r = 0; r < L->R; r++) any |= L->c[r].connected;
        zmq_pollitem_t items[3] = {{L->work, 0, ZMQ_POLLIN, 0},
                                   {L->ctl, 0, (short)(ZMQ_POLLIN | (held ? ZMQ_POLLOUT : 0)), 0},
                                   {L->pairs, 0, ZMQ_POLLIN, 0}};
        /* the pairs are read only while a consumer is connected: polled
         * without one, a waiting message woke the poll at once, forever */
        if (zmq_poll(items, L->pairs && any && held <= (L->R > 1 ? LOADER_HELD_MAX : 0) ? 3 : 2, held ? 20 : 100) < 0) {
            if (errno == EINTR) continue;
            return moco_err(MOCO_EZMQ, "poll: %s", zmq_strerror(errno));
        }
        inmsg m;
        for (int burst = 0; burst < 256 && (items[1].revents & ZMQ_POLLIN); burst++) {
            int r = recv_router(L->ctl, &m);
            if (r == 0) break;
            if (r < 0) { L->dropped++; continue; }
            rc = loader_on_consumer_msg(L, &m);
            close_msg(&m);
            if (rc) return rc;
        }
        for (int burst = 0; burst < 256 && (items[0].revents & ZMQ_POLLIN); burst++) {
            int r = recv_router(L->work, &m);
            if (r == 0) break;
            if (r < 0) { L->dropped++; continue; }
            on_worker_msg(L, &m);
            close_msg(&m);
        }
        any = 0;
        for (int r = 0; r < L->R; r++) any |= L->c[r].connected, bye &= L->c[r].bye;
        if (L->pairs && any) loader_serve_pairs(L);
        double t = moco_now_s();
        if (t - last_hb >= 1.0) {
            heartbeats(L);
            check_timeouts(L, t);
            last_hb = t;
        }
        for (int r = 0; r < L->R; r++) {
            consumer *c = &L->c[r];
            if (!c->connected || t - c->seen <= L->consumer_timeout) continue;
            if (L->R == 1)
                fprintf(stderr, "moco loader: the consumer has been silent for %.0f s; pausing until it or another one connects\n",
                        t - c->seen);
            else
                fprintf(stderr, "moco loader: the consumer of rank %d has been silent for %.0f s; pausing until it or another one "
                                "connects\n", r, t - c->seen);
            loader_age(L, r, t);
            c->connected = 0;
        }
        if (!any) none_since = t;
        if (L->R > 1 && any && !L->ended && (rc = loader_check_ranks_away(L, t, none_since))) {
            loader_stop_workers(L);
            return rc;
        }
        if (any) waited_since = t;
        else if (t - waited_since > L->consumer_wait) {
            loader_stop_workers(L);
            return moco_err(MOCO_ETIMEOUT, "no consumer on %s for %.0f s (--consumer-wait)", L->ctl_ep, t - waited_since);
        }
        /* even with no consumer connected: the last acknowledgements and
         * the BYEs of every rank can come in one turn, and the epoch they
         * completed must still end (before: the loader waited, then failed) */
        if (!L->ended) {
            int r = epoch_complete(L);
            if (r < 0) return r;
            if (r && L->pairs) { /* serve mode: END, then wait for BYE, or for a successor that resumes */
                send_end(L);
                L->ended = 1;
                L->started = 0;
                moco_jw w;
                loader_ev_begin(L, &w, "end");
                moco_jw_i64(&w, "epochs", L->epochs);
                loader_ev_end(L, &w);
            } else {
                finished = r;
            }
            if (!r && any && (rc = dispatch(L))) return rc;
        }
        if (L->ended && (bye || (!any && t - waited_since > L->linger))) finished = 1;
        if (t - last_rep >= 1.0) report(L, t, t0, &last_sent, &last_rep);
        /* no pause to let messages gather: workers ask for work in batches
         * (READY when a batch's worth is free), the consumer acknowledges in
         * batches, and samples go out in SAMPLES messages, so each wake-up
         * already serves many samples */
    }
    report(L, moco_now_s(), t0, &last_sent, &last_rep);
    say_goodbye(L);
    if (stop_flag) return moco_err(MOCO_EINTR, "interrupted");
    if (!L->quiet) {
        char bans[160] = "";
        if (L->stalled_workers || L->idle_reclaimed || L->refused_workers)
            snprintf(bans, sizeof bans,
                     "; %" PRIu64 " bans of stalling workers (%" PRIu64 " given work again), %" PRIu64 " idle slots reclaimed, %" PRIu64
                     " new workers refused (all slots taken)", L->stalled_workers, L->readmitted_workers, L->idle_reclaimed,
                     L->refused_workers);
        fprintf(stderr, "moco loader: done: %" PRIu64 " samples sent, %" PRIu64 " re-issued, %" PRIu64 " failed, %" PRIu64
                        " malformed messages dropped%s\n", L->sent, L->reissued, L->failed_total, L->dropped, bans);
    }
    return 0;
}

int loader_stream_main(int argc, char **argv)
{
    loader *L = calloc(1, sizeof *L);
    if (!L) return 1;
    L->work_ep = NULL;
    L->ctl_ep = NULL;
    L->epochs = 1;
    L->window = 1024;
    L->worker_timeout = MOCO_WORKER_TIMEOUT_S;
    L->reissue_after = MOCO_REISSUE_AFTER_S;
    L->consumer_timeout = MOCO_CONSUMER_TIMEOUT_S;
    L->consumer_wait = 300;
    L->stall_timeout = MOCO_STALL_TIMEOUT_S;
    L->readmit_after = MOCO_READMIT_AFTER_S;
    L->linger = MOCO_LINGER_S;
    L->max_workers = MAX_WORKERS;
    long consumers = 1;
    const moco_opt opts[] = {
        {"db", MOCO_OPT_STR, &L->db_path, "dataset LMDB to stream (from moco mkdb)", 0, 0, NULL},
        {"bind", MOCO_OPT_STR, &L->work_ep, "endpoint(s) the workers connect to (e.g. ipc:///run/x/work, tcp://127.0.0.1:5555; "
                                             "a comma-separated list binds each: ipc in the clear, tcp with CURVE)", 0, 0, NULL},
        {"ctl", MOCO_OPT_STR, &L->ctl_ep, "endpoint the consumer connects to (default: --bind's ipc path + .ctl, or tcp port + 1)", 0, 0, NULL},
        {"epochs", MOCO_OPT_INT, &L->epochs, "number of epochs (0: unbounded)", 0, 1e9, NULL},
        {"start-epoch", MOCO_OPT_INT, &L->start_epoch, "first epoch (the consumer's resume state overrides it)", 0, 1e9, NULL},
        {"seed", MOCO_OPT_U64, &L->seed, "seed of the per-epoch order", 0, 0, NULL},
        {"pairs", MOCO_OPT_STR, &L->pairs_ep, "serve mode: bind this endpoint for the workers' pairs (moco augment --push) and "
                                              "forward them, checked, to the consumer over --ctl (one socket: PairStream, moco sink --connect)", 0, 0, NULL},
        {"consumers", MOCO_OPT_INT, &consumers, "serve mode: consumers (ranks of a data-parallel trainer), each given its shard "
                                                "of every epoch: the samples at positions rank, rank + R, ... of its order", 1, MOCO_CONSUMERS_MAX, NULL},
        {"keys", MOCO_OPT_STR, &L->keys, "key directory (moco keygen): CURVE on every tcp endpoint", 0, 0, NULL},
        {"insecure", MOCO_OPT_FLAG, &L->insecure, "allow tcp endpoints without --keys (anyone who can connect is trusted)", 0, 0, NULL},
        {"max-workers", MOCO_OPT_INT, &L->max_workers, "worker slots: a new worker is refused while every slot holds a live "
                                                         "one in use; the slot of a banned (stalled) worker, or of one that held "
                                                         "nothing and asked for no work for --worker-timeout, is reclaimed", 1, MAX_WORKERS, NULL},
        {"window", MOCO_OPT_INT, &L->window, "most samples issued and not yet acknowledged (serve mode: nor sent to "
                                             "the consumer)", 1, 1e7, NULL},
        {"worker-timeout", MOCO_OPT_DOUBLE, &L->worker_timeout, "seconds of silence after which a worker is dead", 0.2, 3600, NULL},
        {"reissue-after", MOCO_OPT_DOUBLE, &L->reissue_after, "re-issue a sample unacknowledged for this many seconds of its consumer's reading (connected, not BUSY), "
                                                                   "or twice the pipeline's depth if longer (0: never)", 0, 1e6, NULL},
        {"consumer-timeout", MOCO_OPT_DOUBLE, &L->consumer_timeout, "seconds of consumer silence before pausing", 0.2, 3600, NULL},
        {"linger", MOCO_OPT_DOUBLE, &L->linger, "serve mode: after the last epoch, wait this long without a consumer "
                                                "(one killed before it got everything resumes here) unless it says BYE", 0, 1e6, NULL},
        {"stall-timeout", MOCO_OPT_DOUBLE, &L->stall_timeout, "a worker that returns none of its samples this long, while "
                                                              "2 x --window others are delivered (or while the others stand idle, "
                                                              "as it holds all that can be issued), gets no more work (0: never)", 0, 1e6, NULL},
        {"readmit-after", MOCO_OPT_DOUBLE, &L->readmit_after, "a banned worker that still says READY gets work again after "
                                                              "this many seconds, twice as long after each later ban "
                                                              "(at most 64 x; 0: bans are for good)", 0, 1e6, NULL},
        {"consumer-wait", MOCO_OPT_DOUBLE, &L->consumer_wait, "seconds to wait for a consumer before giving up (with --consumers R: for each rank, while others read)", 1, 1e7, NULL},
        {"log", MOCO_OPT_STR, &L->log_path, "write JSON lines of statistics here, once a second", 0, 0, NULL},
        {"quiet", MOCO_OPT_FLAG, &L->quiet, "no progress on stderr", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco loader", "--db DB --bind ENDPOINT [--ctl ENDPOINT] [options]",
                               "Stream the records of a dataset LMDB to augmentation workers (moco augment --connect),\n"
                               "every valid sample exactly once per epoch to the consumer (moco train or the sink).",
                               opts, 0, 0, "db bind"};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) { free(L); return opt_exit; }
    L->R = (int)consumers;
    L->held_bytes_max = LOADER_HELD_BYTES_MAX;
    const char *hb = getenv("MOCO_LOADER_HELD_BYTES"); /* a lower cap, for tests */
    if (hb && *hb) {
        char *e = NULL;
        unsigned long long v = strtoull(hb, &e, 10);
        if (*e || hb[0] == '-' || v == 0 || v > LOADER_HELD_BYTES_MAX) {
            fprintf(stderr, "moco loader: MOCO_LOADER_HELD_BYTES=%s: give bytes from 1 to %zu\n", hb, LOADER_HELD_BYTES_MAX);
            free(L);
            return 2;
        }
        L->held_bytes_max = (size_t)v;
    }
    if (L->R > 1 && !L->pairs_ep) {
        fprintf(stderr, "moco loader: --consumers %d needs serve mode (--pairs): each consumer gets its shard over its control socket\n", L->R);
        free(L);
        return 2;
    }
    char ctl_buf[1100];
    if (!L->ctl_ep) { /* derived from --bind: ipc://P -> ipc://P.ctl, tcp://H:N -> tcp://H:N+1 */
        const char *colon = strrchr(L->work_ep, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (strchr(L->work_ep, ',')) {
            fprintf(stderr, "moco loader: --bind lists several endpoints: give --ctl\n");
            free(L);
            return 2;
        } else if (!strncmp(L->work_ep, "ipc://", 6)) {
            snprintf(ctl_buf, sizeof ctl_buf, "%s.ctl", L->work_ep);
        } else if (!strncmp(L->work_ep, "tcp://", 6) && end && !*end && port > 0 && port < 65535) {
            snprintf(ctl_buf, sizeof ctl_buf, "%.*s:%ld", (int)(colon - L->work_ep), L->work_ep, port + 1);
        } else {
            fprintf(stderr, "moco loader: cannot derive the consumer endpoint from %s: give --ctl\n", L->work_ep);
            free(L);
            return 2;
        }
        L->ctl_ep = ctl_buf;
    }
    int status = 1;
    if ((rc = moco_db_open(L->db_path, &L->db))) {
        fprintf(stderr, "moco loader: %s\n", moco_errmsg());
        free(L);
        return 2;
    }
    L->n = moco_db_get_meta(L->db)->count;
    if (L->n == 0 || L->n > MOCO_COUNT_MAX) {
        fprintf(stderr, "moco loader: %s: %" PRIu64 " samples\n", L->db_path, L->n);
        goto out;
    }
    L->st = calloc(L->n, 1); /* PENDING: a report that comes before the first epoch finds nothing ISSUED */
    L->touched = calloc(L->n, 1);
    L->owner = malloc(L->n * sizeof *L->owner);
    L->t_issued = malloc(L->n * sizeof *L->t_issued);
    L->perm = malloc(L->n * sizeof *L->perm);
    L->shard = calloc(L->n, sizeof *L->shard);
    L->bent = malloc(MOCO_SAMPLES_MAX * sizeof *L->bent);
    L->c = calloc((size_t)L->R, sizeof *L->c);
    int ok = L->st && L->touched && L->owner && L->t_issued && L->perm && L->shard && L->bent && L->c;
    for (int r = 0; ok && r < L->R; r++) { /* a shard's re-issues and failures: at most its size each */
        L->c[r].rcap = (size_t)(L->n / (uint64_t)L->R + 1);
        ok = (L->c[r].ring = malloc(L->c[r].rcap * sizeof(uint64_t))) && (L->c[r].failed = malloc(L->c[r].rcap * sizeof(uint64_t)));
    }
    if (!ok) {
        fprintf(stderr, "moco loader: out of memory for %" PRIu64 " samples\n", L->n);
        goto out;
    }
    if (L->log_path && !(L->log = fopen(L->log_path, "a"))) {
        fprintf(stderr, "moco loader: cannot open %s: %s\n", L->log_path, strerror(errno));
        goto out;
    }
    struct sigaction sa = {.sa_handler = on_signal}, old;
    /* SIGINT left ignored when it came ignored: moco run ignores it in its children and stops
     * them in order (the ranks first); a terminal's Ctrl-C to the whole group reached this loader
     * too, whose end of the stream could reach the ranks before their stop */
    if (sigaction(SIGINT, NULL, &old) || old.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    L->zctx = zmq_ctx_new();
    rc = run(L);
    if (rc) fprintf(stderr, "moco loader: %s\n", moco_errmsg());
    else status = 0;
out:
    for (int r = 0; L->c && r < L->R; r++) loader_drop_held(L, r);
    if (L->work) zmq_close(L->work);
    if (L->ctl) zmq_close(L->ctl);
    if (L->pairs) zmq_close(L->pairs);
    moco_sec_destroy(&L->sec);
    if (L->zctx) zmq_ctx_term(L->zctx);
    if (L->log) fclose(L->log);
    moco_db_destroy(&L->db);
    moco_run_sockdir_cleanup(); /* moco run's socket directory, if this is a child of it */
    free(L->st);
    free(L->touched);
    free(L->owner);
    free(L->t_issued);
    free(L->perm);
    for (int r = 0; L->c && r < L->R; r++) {
        free(L->c[r].ring);
        free(L->c[r].failed);
        free(L->c[r].held);
    }
    free(L->c);
    free(L->shard);
    free(L->bent);
    free(L->rec);
    free(L);
    return status;
}
