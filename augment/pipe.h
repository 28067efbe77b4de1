/* pipe.h: the augmentation worker in the pipeline (see pipe.c). */
#ifndef AUGMENT_PIPE_H
#define AUGMENT_PIPE_H

#include <stddef.h>
#include <stdint.h>


typedef struct {
    uint64_t pairs, failed, malformed, overflow;
    int stopped; /* the loader said STOP */
} augment_pipe_stats;

#define AUGMENT_PIPE_MAX_QUEUE 1024

/* What the augmentation step made: the views' shape and the label. */
typedef struct {
    int32_t label;
    int height, width, channels;
} augment_pipe_views;

/* Make the two views of one record into q and k (each view_bytes long);
 * 0 or a MOCO_E* code with a message (the record is then reported FAILED). */
typedef int (*augment_pipe_fn)(void *ctx, const uint8_t *rec, size_t len, uint32_t epoch, uint64_t index, uint8_t *q,
                               uint8_t *k, augment_pipe_views *out);

typedef struct {
    const char *loader_ep, *push_ep;
    const char *keys;      /* key directory (CURVE on tcp endpoints), or NULL */
    int insecure;          /* tcp without keys */
    size_t view_bytes;     /* largest view fn writes */
    int queue;             /* records held at most (the credit), 1..AUGMENT_PIPE_MAX_QUEUE; the
                            * loader sends batches of a quarter of it */
    int sndhwm;            /* pairs queued towards the consumer at most */
    double loader_timeout; /* seconds */
    void (*report)(void *ctx, const augment_pipe_stats *st, int queued, int pending);
    void *report_ctx;
} augment_pipe_cfg;

/* Serve the loader until it says STOP (returns 0), goes silent (MOCO_ETIMEOUT)
 * or a signal arrives (MOCO_EINTR). */
int augment_pipe_run(const augment_pipe_cfg *cfg, augment_pipe_fn fn, void *fnctx, augment_pipe_stats *st);

/* Set by a signal handler to make augment_pipe_run return. */
#include <signal.h>
extern volatile sig_atomic_t augment_pipe_stop;

/* `moco augment --connect LOADER --push CONSUMER [recipe flags]` */
int augment_pipe_main(int argc, char **argv);

#endif
