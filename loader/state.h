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

#define MAX_WORKERS MOCO_MAX_WORKERS
#define MAX_ID 255
#define NO_EPOCH 0xFFFFFFFFu
#define LOADER_HELD_MAX 4096 /* pair messages waiting for all consumers together (several consumers); more: stop reading */
#define LOADER_HELD_BYTES_MAX ((size_t)256 << 20) /* bytes of pairs waiting for one consumer; more: stop reading
                                                   * ($MOCO_LOADER_HELD_BYTES may lower it: tests) */

enum { PENDING = 0, ISSUED = 1, DONE = 2, FAILED = 3 };

/* A limit on the lines a peer's messages make (the first burst, then at
 * most one per LOADER_QUOTA_EVERY s): a flood of refused HELLOs or rejected
 * messages wrote MBs a second to stderr and the log. The lines left out
 * are counted, for the next line's "suppressed"; the totals are the
 * loader's counters. */
#define LOADER_QUOTA_BURST 20
#define LOADER_QUOTA_EVERY 10.0
typedef struct {
    uint64_t lines, skipped;
    double at;
} loader_quota;

typedef struct {
    uint8_t id[MAX_ID];
    size_t idlen;
    double last_seen;
    uint32_t free_slots;
    uint32_t batch;          /* most records per SAMPLES message; 0: single SAMPLEs (a version-1 worker) */
    uint64_t sent, received; /* records sent to it / it says it received */
    uint64_t holding;        /* samples issued to it and not yet returned (serve mode: their pairs checked),
                              * acknowledged or failed */
    double progress;         /* when one of its samples was last acknowledged (or it was first given work) */
    uint64_t acked_at_progress; /* the loader's acknowledged count then */
    int alive, banned;       /* banned: it held samples without progress while others made some; its slot
                              * is reclaimed, oldest first, when every other slot is taken */
    int bans;                /* times banned: each ban lasts --readmit-after x 2^(bans - 1), at most 64 x */
    double banned_at, ban_until; /* its latest ban, and when it is given work again if it still says READY */
    loader_quota q_failed;   /* lines of its rejected FAILED reports (each worker its own: they name it) */
    double useful_at;        /* when it last held a sample or asked for work (credit): a slot idle
                              * for --worker-timeout goes to a new worker that asks for one */
} worker;

/* A pair message waiting for room towards its consumer. */
typedef struct {
    zmq_msg_t f[3];
    int nf;
    size_t bytes;
} heldmsg;

/* One consumer (rank) and its shard of the current epoch: the samples at
 * positions rank, rank + R, rank + 2R, ... of the epoch's order. */
typedef struct {
    uint8_t id[MAX_ID];
    size_t idlen;
    int present;               /* said HELLO, and not BYE since */
    int connected;             /* present and heard from within --consumer-timeout */
    double seen;
    int bye;                   /* said BYE after END */
    int busy;                  /* its last word was BUSY: alive, not reading pairs */
    double age, age_at;        /* its ageing clock: seconds it was connected and not busy, as of age_at */
    double busy_s;             /* seconds it was connected and busy, as of age_at */
    double depth_s;            /* recent longest time from issue to acknowledgement, on its clock */
    uint64_t n, ndone, nfailed, outstanding; /* its shard: size, delivered, failed, issued and unacknowledged */
    uint64_t sent;             /* serve mode: of those outstanding, the ones whose pairs were sent to it (touched 3):
                                * they wait for its user (it acknowledges a pair when its user takes it) and take no
                                * room in its window; once all the rest is done or failed, EPOCH_END goes out */
    uint64_t cursor;           /* the next position of the epoch's order in its shard */
    uint64_t *ring;            /* re-issues of its shard (capacity: the shard's size) */
    size_t rhead, rlen, rcap;
    uint64_t *failed;          /* failed indices of its shard */
    int end_sent;              /* EPOCH_END of the current epoch went out */
    heldmsg *held;             /* serve mode: pair messages waiting for room, oldest first */
    int hhead, nheld, heldcap;
    size_t heldbytes;          /* the views and headers of those messages */
} consumer;

typedef struct {
    /* configuration */
    const char *db_path, *work_ep, *ctl_ep, *pairs_ep, *log_path, *keys;
    uint64_t seed;
    long epochs, start_epoch, window;
    double worker_timeout, reissue_after, consumer_timeout, consumer_wait, stall_timeout;
    int quiet, insecure;
    int R;                           /* consumers (ranks), each served its shard of every epoch */
    long max_workers;                /* worker slots, at most MAX_WORKERS */
    double readmit_after;            /* seconds of a first ban (doubling with each later one); 0: bans are for good */
    /* resources */
    moco_db *db;
    uint64_t n;
    void *zctx, *work, *ctl, *pairs; /* pairs: serve mode, the workers' pairs to forward to the consumer */
    moco_sec *sec;
    FILE *log;
    uint8_t *rec;
    size_t reccap;
    moco_pipe_sample *bent;  /* the entries of the batch being built */
    /* workers and consumers */
    worker w[MAX_WORKERS];
    int nw, rr, crr;
    consumer *c;                     /* R of them */
    uint64_t session_hash;           /* the resume state the consumers of this session said HELLO with */
    /* the current epoch */
    uint32_t epoch;
    int started;
    uint8_t *st;
    uint8_t *touched;                /* 0: never issued in this epoch; 1: issued (every issue sets 1); serve mode: 2,
                                      * its pair forwarded since its latest issue (more copies are dropped), out of
                                      * its worker's hands; 3: that pair sent on the consumer's socket */
    uint16_t *owner;
    uint16_t *shard;                 /* the consumer whose shard a sample is in, this epoch */
    float *t_issued;                 /* the ageing clock of the sample's consumer when it was issued */
    uint64_t *perm;
    uint64_t ndone, nfailed, outstanding; /* over all shards */
    int ended;                       /* serve mode: END sent; waiting for BYE or a successor that resumes */
    uint32_t max_epoch;              /* the latest epoch begun (a resume may take the loader back) */
    double linger;                   /* serve mode: after END, seconds without a consumer before exiting */
    /* counters */
    uint64_t sent, reissued, acked, dropped, dead_workers, failed_total, dup_acks, msgs_sent;
    /* rejections: counted, logged, never trusted */
    uint64_t refused_hellos, rejected_failed, rejected_acks, rejected_pairs, stalled_workers, stale_pairs, forwarded;
    /* stale_pairs: serve mode, pairs dropped as pairs of a finished epoch, or as copies of one already forwarded
     * since its sample was last issued (a late worker's, or a peer's repeats: each issue is forwarded once) */
    uint64_t split_msgs;             /* pair messages of several shards, split */
    uint64_t refused_workers;        /* READYs of new peers while every slot was taken by a live worker */
    uint64_t reclaimed_slots;        /* slots of banned workers given to new peers */
    uint64_t idle_reclaimed;         /* slots of live workers that held nothing and asked for no work, given to new peers */
    uint64_t readmitted_workers;     /* banned workers given work again after their ban */
    size_t held_bytes_max;           /* serve mode: LOADER_HELD_BYTES_MAX, or lower ($MOCO_LOADER_HELD_BYTES) */
    size_t held_bytes_peak;          /* the most bytes that waited for one consumer */
    uint64_t held_full;              /* times a consumer's queue went over held_bytes_max (reading stopped) */
    loader_quota q_refused, q_rejected; /* lines of refused HELLOs; of rejected pair messages */
    loader_quota q_failed;           /* lines of rejected FAILED reports, all workers' (each has its own too) */
} loader;

/* An event line of the log: loader_ev_begin, the fields (moco_jw_*), loader_ev_end. */
moco_jw *loader_ev_begin(const loader *L, moco_jw *w, const char *event);
void loader_ev_end(const loader *L, moco_jw *w);
/* Whether the next line under q may be written (else it is counted as
 * left out); after writing it, loader_quota_used (its "suppressed" field
 * into w, when lines were left out before it). */
int loader_quota_ok(loader_quota *q, uint64_t burst);
void loader_quota_used(loader_quota *q, moco_jw *w);

/* A peer's routing id as hex (at most 16 bytes of it), in buf (33 bytes). */
const char *loader_hexid(const uint8_t *id, size_t n, char *buf);

/* A message from a ROUTER socket: the peer's identity and 1 or 2 data frames. */
typedef struct {
    uint8_t id[MAX_ID];
    size_t idlen;
    zmq_msg_t f[2];
    int nf;
} inmsg;

/* stream.c, for consumers.c: send frames to a ROUTER peer (0, or -1 when
 * it is unknown or has no room); sample idx leaves the issued state, or the
 * hands of its worker; start epoch e (bitmap: already delivered, or NULL). */
int loader_send_to(void *sock, const uint8_t *id, size_t idlen, const void *a, size_t alen, const void *b, size_t blen);
void loader_retire(loader *L, uint64_t idx);
/* A sample issued and not done goes back to be issued again. */
void loader_reissue(loader *L, uint64_t idx);
/* Worker k is dead (why: for the log line): what it holds goes out again. */
void loader_worker_dead(loader *L, int k, const char *why);
/* Records worker w may be sent now (0 when dead or banned). */
int64_t loader_credit(const worker *w);
/* Room in shard r's window, if it has samples left to issue; else 0. */
int64_t loader_shard_room(const loader *L, int r);
/* slots.c: a slot for a new worker (-1: none may be taken), a banned
 * worker given work again, and the bans of stalling workers at time t. */
int loader_free_slot(loader *L, double now);
void loader_readmit(loader *L, int k, double now);
void loader_check_stalls(loader *L, double t);
/* Sample idx leaves the hands of its worker (its pair is back, or it is
 * acknowledged, failed or re-issued); once only, whichever comes first. */
void loader_unhold(loader *L, uint64_t idx);
/* Sample idx is in worker k's hands: issued to it, its pair not back. */
int loader_in_hands(const loader *L, uint64_t idx, int k);
void loader_begin_epoch(loader *L, uint32_t e, const uint8_t *bitmap);
/* Consumer r's ageing clock at now: the seconds it has been connected and
 * not BUSY. Call before its connected or busy state changes. Samples age
 * towards --reissue-after on their consumer's clock, so a consumer that
 * evaluates (BUSY) or is away does not get its samples sent twice. */
double loader_age(loader *L, int r, double now);

/* consumers.c: a message on the consumers' socket (HELLO, BYE, HEARTBEAT,
 * ACK). Returns 0 (what it cannot use is dropped and counted). */
int loader_on_consumer_msg(loader *L, inmsg *m);

/* consumers.c: several consumers, one rank away for --consumer-wait while
 * others read: REFUSED to those, a rank_away event, and the error naming it
 * (0 when none is); none_since: the last time no consumer was connected. */
int loader_check_ranks_away(loader *L, double t, double none_since);

/* All R consumers connected: the stream runs only then. */
int loader_all_connected(const loader *L);

/* Serve mode (serve.c): forward what waits for room towards each consumer
 * (returns how many messages still wait, over all consumers), and read,
 * check and forward the workers' pair messages, each pair to the consumer
 * whose shard it is in (a message of several shards is split). */
int loader_forward_pending(loader *L);
void loader_serve_pairs(loader *L);
/* Drop what waits for consumer r (it left, or the run ended). */
void loader_drop_held(loader *L, int r);

#endif
