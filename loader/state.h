/* state.h: the streaming loader's state, shared by loader/stream.c (the
 * loader: dispatch, bookkeeping, workers, the consumer) and loader/serve.c
 * (serve mode: the workers' pairs, checked, to the consumer). Private to
 * loader/. */
#ifndef LOADER_STATE_H
#define LOADER_STATE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <zmq.h>

#include "formats/db.h"
#include "formats/jsonw.h"
#include "formats/pipeline.h"
#include "formats/zsec.h"

#define MAX_WORKERS 1024
#define MAX_ID 255
#define NO_EPOCH 0xFFFFFFFFu

enum { PENDING = 0, ISSUED = 1, DONE = 2, FAILED = 3 };

typedef struct {
    uint8_t id[MAX_ID];
    size_t idlen;
    double last_seen;
    uint32_t free_slots;
    uint32_t batch;          /* most records per SAMPLES message; 0: single SAMPLEs (a version-1 worker) */
    uint64_t sent, received; /* records sent to it / it says it received */
    uint64_t holding;        /* samples issued to it and not yet acknowledged or failed */
    double progress;         /* when one of its samples was last acknowledged (or it was first given work) */
    uint64_t acked_at_progress; /* the loader's acknowledged count then */
    int alive, banned;       /* banned: it held samples without progress while others made some */
} worker;

typedef struct {
    /* configuration */
    const char *db_path, *work_ep, *ctl_ep, *pairs_ep, *log_path, *keys;
    uint64_t seed;
    long epochs, start_epoch, window;
    double worker_timeout, reissue_after, consumer_timeout, consumer_wait, stall_timeout;
    int quiet, insecure;
    /* resources */
    moco_db *db;
    uint64_t n;
    void *zctx, *work, *ctl, *pairs; /* pairs: serve mode, the workers' pairs to forward to the consumer */
    moco_sec *sec;
    FILE *log;
    zmq_msg_t fw[3];                 /* serve mode: a checked pair message waiting for room towards the consumer */
    int nfw;
    double last_ack_t;               /* when the consumer last acknowledged a sample */
    uint8_t *rec;
    size_t reccap;
    moco_pipe_sample *bent;  /* the entries of the batch being built */
    /* workers and consumer */
    worker w[MAX_WORKERS];
    int nw, rr;
    uint8_t cid[MAX_ID];
    size_t cidlen;
    int have_consumer;
    double cons_seen;
    /* the current epoch */
    uint32_t epoch;
    int started;
    uint8_t *st;
    uint8_t *touched;                /* issued at least once in this epoch (serve mode checks pairs against it) */
    uint16_t *owner;
    float *t_issued;
    uint64_t *perm, *ring, *failed;
    size_t cursor, rhead, rlen, nfailed;
    uint64_t ndone, outstanding;
    int end_pending;                 /* the epoch is complete; EPOCH_END waits for room towards the consumer */
    int ended;                       /* serve mode: END sent; waiting for BYE or a successor that resumes */
    uint32_t max_epoch;              /* the latest epoch begun (a resume may take the loader back) */
    int bye;                         /* the consumer said BYE after END */
    double linger;                   /* serve mode: after END, seconds without a consumer before exiting */
    /* counters */
    uint64_t sent, reissued, acked, dropped, dead_workers, failed_total, dup_acks, msgs_sent;
    /* rejections: counted, logged, never trusted */
    uint64_t refused_hellos, rejected_failed, rejected_acks, rejected_pairs, stalled_workers, stale_pairs, forwarded;
} loader;

/* An event line of the log: loader_ev_begin, the fields (moco_jw_*), loader_ev_end. */
moco_jw *loader_ev_begin(const loader *L, moco_jw *w, const char *event);
void loader_ev_end(const loader *L, moco_jw *w);

/* A peer's routing id as hex (at most 16 bytes of it), in buf (33 bytes). */
const char *loader_hexid(const uint8_t *id, size_t n, char *buf);

/* Serve mode (serve.c): forward what waits for room (1 if it went or there
 * was nothing, 0 if the consumer has no room), and read, check and forward
 * the workers' pair messages while the consumer takes them. */
int loader_forward_pending(loader *L);
void loader_serve_pairs(loader *L);

#endif
