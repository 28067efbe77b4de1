/* stream.h: the consumer end of the pipeline, used by the trainer and by
 * the counting sink. It binds the PULL socket the workers push pairs to,
 * connects to the loader's control socket, and turns what arrives into an
 * ordered sequence of events: PAIR, EPOCH_END, END.
 *
 * Promises:
 * - each (epoch, index) is returned at most once: duplicates (a re-issued
 *   sample that the first worker had in fact finished) and pairs of finished
 *   epochs are dropped and counted;
 * - every PAIR is acknowledged to the loader, which re-issues what is never
 *   acknowledged, so with EPOCH_END(e) all valid samples of e have been
 *   returned, and no PAIR of epoch e+1 is returned before EPOCH_END(e);
 * - malformed frames are dropped and counted, never trusted; a pair is
 *   returned only if its epoch is the current one and its index is below
 *   the dataset's count (and, given cfg.size and cfg.classes, its views are
 *   SxS and its label in range; else it is not acknowledged); one of the
 *   next epoch is held (bounded: HELD_MAX messages, HELD_BYTES_MAX bytes)
 *   until EPOCH_END, any other is rejected and counted; nothing is
 *   allocated by a number a peer sent (the delivered bitmap has the
 *   dataset's size);
 * - two topologies: the workers push to a PULL bound here (pairs_ep), or,
 *   in serve mode (pairs_ep NULL), the loader forwards them on the one
 *   control socket (formats/README.md, "serve mode");
 * - the resume state (epoch, bitmap of indices delivered in it) can be read
 *   at any time for a checkpoint, and given back at open.
 * Not thread-safe: one thread owns a stream (ZeroMQ sockets are per thread). */
#ifndef TRAINER_STREAM_H
#define TRAINER_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "formats/jsonw.h"
#include "formats/wire.h"

#define STREAM_NO_EPOCH 0xFFFFFFFFu

typedef struct {
    const char *pairs_ep;         /* bound here (PULL); NULL: serve mode, the pairs come on ctl_ep */
    const char *ctl_ep;           /* the loader's control endpoint (connected) */
    const char *keys;             /* key directory for tcp endpoints (CURVE), or NULL */
    int insecure;                 /* allow tcp without keys */
    uint32_t resume_epoch;        /* STREAM_NO_EPOCH: let the loader choose */
    const uint8_t *resume_bitmap; /* delivered indices of resume_epoch, or NULL */
    uint64_t count;               /* dataset size if known (bitmap bits), else 0 */
    int rcvhwm;                   /* pair messages queued here at most, per connection (0: 2) */
    int size;                     /* the views' side S the user takes (0: any): pairs of other sizes are dropped and
                                   * counted (rejected_shape), not acknowledged; frames are limited to a PAIRS batch
                                   * of such views */
    int classes;                  /* labels the user takes: [0, classes) (0: any); pairs of other labels are dropped
                                   * and counted (rejected_label), not acknowledged */
    double loader_timeout;        /* seconds of loader silence that are an error (0: 60), at the default 1 s
                                   * heartbeat: scaled by the interval the loader's WELCOME announces (bounded to
                                   * [0.1, 1] s, moco_pipe_heartbeat_s), at which this consumer also sends */
    int rank, ranks;              /* serve mode, one of several consumers (moco loader --consumers R): this rank of R
                                   * (0 of 0 or 1: the only one); it gets its shard, EPOCH_END when its shard is done */
} stream_cfg;

enum { STREAM_NONE = 0, STREAM_PAIR = 1, STREAM_EPOCH_END = 2, STREAM_END = 3 };

typedef struct {
    int kind;
    /* STREAM_PAIR: header and the two views, valid until the next call */
    moco_wire_pair pair;
    const uint8_t *q, *k;
    /* STREAM_EPOCH_END (epoch, delivered, failed indices as u64 LE) and
     * STREAM_END (epoch = epochs completed) */
    uint32_t epoch;
    uint64_t delivered;
    uint32_t nfailed;
    const uint8_t *failed;
} stream_event;

typedef struct {
    uint64_t pairs, duplicates, stale, malformed, acks_sent;
    /* rejected and counted: a pair of an epoch neither current nor next, an
     * index >= the dataset's count; held: pairs of the next epoch kept until
     * EPOCH_END; held_dropped: more of them than HELD_MAX messages or
     * HELD_BYTES_MAX bytes (the loader sends what is never acknowledged
     * again); rejected_shape: views not SxS (cfg.size), rejected_label: a label
     * outside [0, cfg.classes); neither acknowledged */
    uint64_t rejected_epoch, rejected_index, held, held_dropped, auth_rejected, rejected_shape, rejected_label;
    uint64_t count;  /* the dataset's size (given or from the loader's WELCOME) */
    double waited_s; /* time spent inside stream_next waiting for data */
} stream_stats;

typedef struct trainer_stream trainer_stream;

/* Bind, connect and say HELLO. Returns 0 or MOCO_EZMQ / MOCO_ENOMEM. */
int stream_open(const stream_cfg *cfg, trainer_stream **out);

/* Wait up to timeout_ms (-1: until something happens) for the next event.
 * Returns 0 with *ev filled: STREAM_NONE if nothing came in time (not an
 * error: ask again), else the event; or an error: the loader silent longer
 * than loader_timeout (scaled as above; MOCO_ETIMEOUT, naming it), the loader refused this
 * consumer (MOCO_EINVAL), ... */
int stream_next(trainer_stream *s, int timeout_ms, stream_event *ev);

/* The current epoch and the bitmap of its indices returned so far
 * (*nbytes = ceil(bits / 8)); valid until the next stream_next. */
void stream_position(const trainer_stream *s, uint32_t *epoch, const uint8_t **bitmap, size_t *nbytes);

void stream_get_stats(const trainer_stream *s, stream_stats *st);

/* Between stream_next calls that are far apart (the end-of-epoch kNN): send
 * the acknowledgements held here and BUSY (HEARTBEAT to a loader that does
 * not know BUSY), at once and then once a second, reading nothing, so that
 * the loader neither takes this consumer for gone nor re-issues the pairs
 * waiting for it. The next stream_next says HEARTBEAT at once. */
void stream_keepalive(trainer_stream *s);

/* The counters as the object "stream" of a JSON line, the same keys in
 * `moco train`'s epoch records, `moco sink`'s last line and PairStream.stats:
 * duplicates, stale, malformed, rejected_epoch, rejected_index,
 * rejected_shape, rejected_label, held, held_dropped, auth_rejected. */
void stream_stats_json(moco_jw *w, const stream_stats *st);

/* Send outstanding acknowledgements, close, free; *s = NULL. */
void stream_destroy(trainer_stream **s);

/* `moco sink`: a consumer that only counts and checks (also the pipeline
 * benchmark's consumer). */
int trainer_sink_main(int argc, char **argv);

/* `moco sink --resume-indices PATH`: the indices (decimal numbers separated
 * by white space) into *bm, a calloc'ed bitmap of count bits (bit i of byte
 * i / 8), which the caller frees (set on every return but MOCO_EIO). 0, or MOCO_EIO (PATH
 * missing or not a regular file), MOCO_EINVAL (an index >= count),
 * MOCO_ENOMEM; the message names PATH. A word that is not a number is
 * MOCO_EINVAL too (a damaged file), a read error MOCO_EIO. Exposed for
 * tests/fuzz/fuzz_sink.c. */
int sink_load_indices(const char *path, uint64_t count, uint8_t **bm);

#endif
