/* pipe.c: the augmentation worker's side of the pipeline protocol
 * (formats/pipeline.h): `moco augment --connect LOADER --push CONSUMER`.
 *
 * A DEALER connected to the loader receives records, in SAMPLES batches
 * (or single SAMPLEs from a version-1 loader), at most as many as this
 * worker advertised in READY(free, received, batch) messages, which it
 * sends when a batch's worth of its queue is free and once a second as its
 * heartbeat (from a thread of its own while one record takes longer). A batch stays one ZeroMQ frame; the queue points into it and
 * it is freed when its last record is done. Each record becomes one pair,
 * pushed to the consumer in PAIRS batches, or one FAILED report to the
 * loader. Output waits for the consumer (POLLOUT) while heartbeats go on, so
 * a slow consumer slows this worker down instead of filling its memory.
 * Memory is bounded by --queue records (and the batch frames they point
 * into) plus one PAIRS batch.
 *
 * Exit: 0 on the loader's STOP; 1 when the loader is silent for
 * --loader-timeout seconds, when the loader or the consumer refuses our
 * CURVE key, or on a signal (augment_pipe_stop set). The
 * augmentation itself is a function given by the caller (augment_pair in
 * the worker; something trivial in the pipeline's tests). */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "augment/pipe.h"
#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/pipeline.h"
#include "formats/wire.h"
#include "formats/zsec.h"

#define MAX_QUEUE AUGMENT_PIPE_MAX_QUEUE

/* A received frame of records, shared by the queue entries that point
 * into it; freed with the last of them. */
typedef struct {
    zmq_msg_t m;
    int refs;
} holder;

typedef struct {
    holder *h;
    const uint8_t *rec;
    size_t len;
    uint32_t epoch;
    uint64_t index;
} queued;

static void release(queued *e)
{
    if (e->h && --e->h->refs == 0) {
        zmq_msg_close(&e->h->m);
        free(e->h);
    }
    e->h = NULL;
}

/* Queue the records of frame f (a SAMPLE's record, or a SAMPLES's records
 * as listed in hdr with n entries), taking f over. Returns the records
 * received; those beyond the queue's room are counted in st->overflow. */
static uint64_t enqueue(queued *q, int qhead, int *qlen, zmq_msg_t *f, const uint8_t *hdr, uint32_t n,
                        const moco_wire_sample *one, augment_pipe_stats *st)
{
    holder *h = malloc(sizeof *h);
    if (!h) { /* the loader re-issues what is never acknowledged */
        st->overflow += n;
        return n;
    }
    zmq_msg_init(&h->m);
    zmq_msg_move(&h->m, f);
    h->refs = 1; /* ours until the loop ends */
    const uint8_t *data = zmq_msg_data(&h->m);
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        moco_pipe_sample s = {0};
        if (hdr) moco_pipe_samples_at(hdr, i, &s);
        else s = (moco_pipe_sample){.epoch = one->epoch, .index = one->index};
        size_t len = hdr ? s.len : zmq_msg_size(&h->m);
        if (*qlen == MAX_QUEUE) {
            st->overflow++; /* the loader broke its credit; it re-issues what is never acknowledged */
        } else {
            queued *e = &q[(qhead + (*qlen)++) % MAX_QUEUE];
            *e = (queued){.h = h, .rec = data + off, .len = len, .epoch = s.epoch, .index = s.index};
            h->refs++;
        }
        off += len;
    }
    queued self = {.h = h};
    release(&self);
    return n;
}

volatile sig_atomic_t augment_pipe_stop;
#define stop_flag augment_pipe_stop

static void free_view(void *data, void *hint)
{
    (void)hint;
    free(data);
}

static void send_ready(void *dealer, int free_slots, uint64_t received, int batch)
{
    uint8_t b[32];
    size_t n = moco_pipe_ready(b, (uint32_t)(free_slots > 0 ? free_slots : 0), received, (uint32_t)batch);
    zmq_send(dealer, b, n, ZMQ_DONTWAIT);
}

/* The heartbeat while one record is being made: the loop holds `mx` all the
 * time except inside the augmentation function, so the dealer socket is
 * used by one thread at a time, each hand-over a full memory barrier (what
 * ZeroMQ asks of a socket used by several threads). While a record takes
 * longer than a second (a huge image, a slow decoder), this thread says
 * READY with the loop's last figures once a second: the loader declares a
 * worker silent for --worker-timeout dead, and one slow record did that to
 * a healthy worker. A worker stuck for good inside one record is the
 * loader's --stall-timeout and --reissue-after to catch, not silence's. */
typedef struct {
    pthread_mutex_t mx;
    void *dealer;
    int in_fn, quit, free_now, batch;
    uint64_t received;
    double last_ready;
} beat;

static void *beat_main(void *arg)
{
    beat *b = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals stay the loop's (its poll returns EINTR) */
    for (;;) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (pthread_mutex_trylock(&b->mx)) continue; /* the loop holds it: it is not inside a record */
        int quit = b->quit;
        double t = moco_now_s();
        if (!quit && b->in_fn && t - b->last_ready >= 1.0) {
            send_ready(b->dealer, b->free_now, b->received, b->batch);
            b->last_ready = t;
        }
        pthread_mutex_unlock(&b->mx);
        if (quit) return NULL;
    }
}

/* A finished pair waiting for the consumer. */
typedef struct {
    uint8_t hdr[MOCO_WIRE_PAIR_SIZE];
    uint8_t *q, *k;
    size_t bytes;
} outpair;

#define OUT_MAX 64 /* pairs sent together in one PAIRS message, or fewer once they hold MOCO_BATCH_BYTES */

/* Send the finished pairs as one PAIRS message (two frames: headers,
 * views). If the consumer is not taking, they stay for a later try.
 * Returns 0, or MOCO_ENOMEM. */
static int send_pairs(void *push, outpair *out, int *nout, size_t *outbytes, augment_pipe_stats *st)
{
    moco_wire_pair ph[OUT_MAX];
    uint8_t hb[16 + MOCO_WIRE_PAIR_SIZE * OUT_MAX];
    for (int i = 0; i < *nout; i++) moco_wire_pair_parse(out[i].hdr, sizeof out[i].hdr, &ph[i]);
    size_t hl = moco_pipe_pairs_pack(hb, ph, (uint32_t)*nout);
    uint8_t *data = malloc(*outbytes);
    if (!data) return moco_err(MOCO_ENOMEM, "out of memory for a batch of %zu bytes", *outbytes);
    size_t off = 0;
    for (int i = 0; i < *nout; i++) {
        memcpy(data + off, out[i].q, out[i].bytes);
        memcpy(data + off + out[i].bytes, out[i].k, out[i].bytes);
        off += 2 * out[i].bytes;
    }
    zmq_msg_t md;
    zmq_msg_init_data(&md, data, *outbytes, free_view, NULL); /* zero copy: zmq frees it */
    if (zmq_send(push, hb, hl, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&md); /* the consumer is not taking: try again later */
        return 0;
    }
    zmq_msg_send(&md, push, 0); /* once the first frame is accepted, the rest is too */
    for (int i = 0; i < *nout; i++) {
        free(out[i].q);
        free(out[i].k);
        out[i].q = out[i].k = NULL;
    }
    st->pairs += (uint64_t)*nout;
    *nout = 0;
    *outbytes = 0;
    return 0;
}

int augment_pipe_run(const augment_pipe_cfg *cfg, augment_pipe_fn fn, void *fnctx, augment_pipe_stats *st)
{
    int rc = 0, cap = cfg->queue > 0 && cfg->queue <= MAX_QUEUE ? cfg->queue : 16;
    /* records per SAMPLES: a quarter of the queue, so that while this worker
     * works through one batch, more are on their way (a wake-up of the
     * loader can take milliseconds on a busy machine) */
    int batch = cap / 4 > 1 ? cap / 4 : 1;
    if (batch > MOCO_SAMPLES_MAX) batch = MOCO_SAMPLES_MAX;
    void *zctx = zmq_ctx_new(), *dealer = zmq_socket(zctx, ZMQ_DEALER), *push = zmq_socket(zctx, ZMQ_PUSH);
    moco_sec *sec = NULL;
    /* the largest frame the loader sends (a SAMPLES batch); the push socket receives nothing */
    int64_t maxin = (int64_t)MOCO_SAMPLES_FRAME_MAX, maxpush = MOCO_CTL_FRAME_MAX;
    /* the high-water mark counts messages, and a message holds a batch */
    int hwm = cfg->sndhwm > OUT_MAX ? cfg->sndhwm / OUT_MAX : 2, zero = 0, linger = 2000, rhwm = 2 * MAX_QUEUE;
    queued q[MAX_QUEUE];
    outpair out[OUT_MAX];
    int qhead = 0, qlen = 0, nout = 0, last_free = -1;
    size_t outbytes = 0; /* view bytes of the nout finished pairs */
    uint64_t received = 0, last_recv = 0;
    size_t vmax = cfg->view_bytes;
    beat hb = {.mx = PTHREAD_MUTEX_INITIALIZER};
    pthread_t hb_thread;
    int hb_running = 0;
    memset(st, 0, sizeof *st);
    memset(out, 0, sizeof out);
    if (!dealer || !push || zmq_setsockopt(push, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger) || zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(dealer, ZMQ_RCVHWM, &rhwm, sizeof rhwm) || zmq_setsockopt(dealer, ZMQ_MAXMSGSIZE, &maxin, sizeof maxin) ||
        zmq_setsockopt(push, ZMQ_MAXMSGSIZE, &maxpush, sizeof maxpush)) {
        rc = moco_err(MOCO_EZMQ, "cannot create sockets: %s", zmq_strerror(errno));
        goto out;
    }
    if ((rc = moco_sec_new(zctx, cfg->keys, cfg->insecure, "moco augment", NULL, &sec)) ||
        (rc = moco_sec_connect(sec, dealer, cfg->loader_ep)) || (rc = moco_sec_connect(sec, push, cfg->push_ep)))
        goto out;
    if (zmq_connect(dealer, cfg->loader_ep)) {
        rc = moco_err(MOCO_EZMQ, "cannot connect to the loader at %s: %s", cfg->loader_ep, zmq_strerror(errno));
        goto out;
    }
    if (zmq_connect(push, cfg->push_ep)) {
        rc = moco_err(MOCO_EZMQ, "cannot connect to the consumer at %s: %s", cfg->push_ep, zmq_strerror(errno));
        goto out;
    }
    double loader_seen = moco_now_s(), last_ready = 0, t_report = moco_now_s();
    pthread_mutex_lock(&hb.mx); /* ours, but inside the augmentation function */
    hb.dealer = dealer, hb.batch = batch;
    if (pthread_create(&hb_thread, NULL, beat_main, &hb)) {
        pthread_mutex_unlock(&hb.mx);
        rc = moco_err(MOCO_ENOMEM, "cannot start the heartbeat thread");
        goto out;
    }
    hb_running = 1;
    while (!stop_flag) {
        /* credit: advertise when a batch's worth is free (and as a heartbeat) */
        int free_now = cap - qlen - nout;
        double t = moco_now_s();
        if ((free_now >= batch && (free_now != last_free || received != last_recv)) || t - last_ready >= 1.0) {
            send_ready(dealer, free_now, received, batch);
            last_free = free_now;
            last_recv = received;
            last_ready = t;
        }
        /* a full batch goes first, so that there is room to work on */
        if ((nout == OUT_MAX || outbytes >= MOCO_BATCH_BYTES) && (rc = send_pairs(push, out, &nout, &outbytes, st))) break;
        /* block only when there is nothing to do: a poll is three system
         * calls, and with work queued the receives and sends below need none */
        int busy = qlen > 0 && nout < OUT_MAX && outbytes < MOCO_BATCH_BYTES;
        if (!busy) {
            zmq_pollitem_t it[2] = {{dealer, 0, ZMQ_POLLIN, 0}, {push, 0, ZMQ_POLLOUT, 0}};
            if (zmq_poll(it, nout ? 2 : 1, 100) < 0) {
                if (errno == EINTR) continue;
                rc = moco_err(MOCO_EZMQ, "poll: %s", zmq_strerror(errno));
                break;
            }
        }
        /* everything the loader has sent; not while a batch's worth of work
         * is queued (an empty read is a system call), but at least twice a
         * second (its heartbeats) */
        for (int rd = !busy || qlen < batch || t - loader_seen > 0.5; rd;) {
            zmq_msg_t f[2];
            zmq_msg_init(&f[0]);
            if (zmq_msg_recv(&f[0], dealer, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&f[0]); break; }
            loader_seen = moco_now_s();
            int nf = 1, extra = 0;
            while (zmq_msg_more(&f[nf - 1])) {
                zmq_msg_t x;
                zmq_msg_init(&x);
                zmq_msg_recv(&x, dealer, 0);
                if (nf < 2) f[nf++] = x;
                else { extra = 1; if (!zmq_msg_more(&x)) { zmq_msg_close(&x); break; } zmq_msg_close(&x); }
            }
            uint16_t type = 0;
            moco_wire_sample smp;
            uint32_t cnt = 0;
            if (extra || moco_wire_peek(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &type)) {
                st->malformed++;
            } else if (type == MOCO_MSG_SAMPLES && nf == 2 &&
                       !moco_pipe_samples_parse(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), zmq_msg_size(&f[1]), &cnt)) {
                received += enqueue(q, qhead, &qlen, &f[1], zmq_msg_data(&f[0]), cnt, NULL, st);
            } else if (type == MOCO_MSG_SAMPLE && nf == 2 &&
                       !moco_wire_sample_parse(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &smp)) {
                received += enqueue(q, qhead, &qlen, &f[1], NULL, 1, &smp, st);
            } else if (type == MOCO_MSG_STOP && nf == 1) {
                for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
                st->stopped = 1;
                goto out;
            } else if (type != MOCO_MSG_HEARTBEAT || nf != 1) {
                st->malformed++;
            }
            for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
        }
        /* the finished pairs, once the batch is full, large, or nothing else is waiting */
        if (nout && (nout == OUT_MAX || qlen == 0 || outbytes >= MOCO_BATCH_BYTES) && (rc = send_pairs(push, out, &nout, &outbytes, st)))
            break;
        /* make pairs */
        while (qlen > 0 && nout < OUT_MAX && outbytes < MOCO_BATCH_BYTES) {
            queued *e = &q[qhead];
            qhead = (qhead + 1) % MAX_QUEUE;
            qlen--;
            outpair *o = &out[nout];
            o->q = malloc(vmax);
            o->k = malloc(vmax);
            augment_pipe_views info;
            int r;
            if (!o->q || !o->k) {
                r = moco_err(MOCO_ENOMEM, "out of memory for views");
            } else {
                hb.free_now = cap - qlen - nout, hb.received = received, hb.last_ready = last_ready, hb.in_fn = 1;
                pthread_mutex_unlock(&hb.mx);
                r = fn(fnctx, e->rec, e->len, e->epoch, e->index, o->q, o->k, &info);
                pthread_mutex_lock(&hb.mx);
                hb.in_fn = 0;
                last_ready = hb.last_ready; /* the heartbeat's READY, if it sent one */
            }
            if (r == 0) {
                moco_wire_pair ph = {.epoch = e->epoch, .label = info.label, .index = e->index, .height = (uint16_t)info.height,
                                     .width = (uint16_t)info.width, .channels = (uint8_t)info.channels, .layout = MOCO_LAYOUT_HWC_U8};
                moco_wire_pair_pack(o->hdr, &ph);
                o->bytes = moco_wire_pair_view_bytes(&ph);
                outbytes += 2 * o->bytes;
                nout++;
            } else {
                free(o->q);
                free(o->k);
                o->q = o->k = NULL;
                uint8_t fb[MOCO_WIRE_FAILED_MIN + MOCO_WIRE_REASON_MAX];
                size_t fl = moco_wire_failed_pack(fb, e->epoch, e->index, r, moco_errmsg());
                zmq_send(dealer, fb, fl, ZMQ_DONTWAIT);
                st->failed++;
                if (st->failed <= 20) fprintf(stderr, "moco augment: %s\n", moco_errmsg());
            }
            release(e);
            /* READY at least once a second while busy too (formats/README.md): a batch of slow
             * records took longer than the loader's --worker-timeout, and a healthy worker was
             * declared dead and its samples re-issued */
            double tn = moco_now_s();
            if (tn - last_ready >= 1.0) {
                free_now = cap - qlen - nout;
                send_ready(dealer, free_now, received, batch);
                last_free = free_now, last_recv = received, last_ready = tn;
            }
        }
        t = moco_now_s();
        if (moco_sec_refused(sec)) { /* our key is not in the allow list of the loader or of the consumer */
            char eps[1024];
            snprintf(eps, sizeof eps, "%s (or %s)", cfg->loader_ep, cfg->push_ep);
            rc = moco_sec_check_refused(sec, eps);
            break;
        }
        if (t - loader_seen > cfg->loader_timeout) {
            rc = moco_err(MOCO_ETIMEOUT, "the loader at %s has been silent for %.0f s", cfg->loader_ep, t - loader_seen);
            break;
        }
        if (cfg->report && t - t_report >= 1.0) {
            cfg->report(cfg->report_ctx, st, qlen, nout);
            t_report = t;
        }
    }
    if (stop_flag && !rc) rc = moco_err(MOCO_EINTR, "interrupted");
out:
    if (hb_running) {
        hb.quit = 1;
        pthread_mutex_unlock(&hb.mx);
        pthread_join(hb_thread, NULL);
    }
    pthread_mutex_destroy(&hb.mx);
    if (cfg->report) cfg->report(cfg->report_ctx, st, qlen, nout); /* the final figures */
    while (qlen > 0) {
        release(&q[qhead]);
        qhead = (qhead + 1) % MAX_QUEUE;
        qlen--;
    }
    for (int i = 0; i < OUT_MAX; i++) {
        free(out[i].q);
        free(out[i].k);
    }
    if (dealer) zmq_close(dealer);
    if (push) zmq_close(push);
    moco_sec_destroy(&sec);
    zmq_ctx_term(zctx);
    return rc;
}

