/* pipeline.h: the control messages of the streaming pipeline (loader <->
 * workers, loader <-> consumer): credits, heartbeats, acknowledgements,
 * epoch boundaries and the resume state. The data messages (SAMPLE, PAIR,
 * FAILED) are in wire.h. See formats/README.md, "Pipeline protocol".
 *
 * Every message's first frame starts with the common 8-byte prefix of all
 * moco wire messages: magic "MOCW", u16 LE version, u16 LE type (wire.h).
 * Version 2 of the protocol adds SAMPLES (a batch of records in one
 * message) and the READY that asks for it. All integers little-endian. Parsers check every length
 * against the frame size and never trust a count from the wire.
 *
 * Sockets: the loader binds a ROUTER for workers ("work") and a ROUTER for
 * the consumer ("ctl"); workers and the consumer connect DEALERs. Workers
 * PUSH pairs to the consumer's PULL ("pairs"). A sample is retired only when
 * the consumer acknowledges it, so a worker that dies with work in hand
 * loses nothing: the loader re-issues, the consumer drops duplicates by
 * (epoch, index). */
#ifndef MOCO_PIPELINE_H
#define MOCO_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "formats/wire.h"

/* Control message types: READY, HEARTBEAT, EPOCH_END and STOP are numbered
 * in wire.h; their layouts are defined here, with three more:
 *   READY      worker -> loader, on every change and as its heartbeat:
 *              u32 free (queue slots free now), u64 received (records
 *              received so far, in SAMPLE and SAMPLES messages); version 2
 *              adds u32 batch (most records per SAMPLES it takes; 0: send
 *              single SAMPLEs). The loader's credit is free - (sent - received)
 *   HEARTBEAT  any -> peer: the prefix alone
 *   BUSY       consumer -> loader (version 5), in place of HEARTBEAT while
 *              it is alive but not reading pairs (its user evaluates, say):
 *              the prefix alone. Its samples in flight do not age towards
 *              --reissue-after until it reads again (any other message)
 *   EPOCH_END  loader -> consumer: u32 epoch, u64 delivered, u32 nfailed,
 *              nfailed x u64 indices of records the workers could not decode
 *   STOP       loader -> worker: the prefix alone; finish and exit */
/* The control types (HELLO, ACK, END, PAIRS, SAMPLES, WELCOME, REFUSED)
 * are numbered with the others in wire.h's moco_msg_type. */

#define MOCO_PAIRS_MAX 4096
#define MOCO_SAMPLES_MAX 1024
#define MOCO_SAMPLES_ENTRY 16
#define MOCO_ACK_MAX 4096 /* indices in one ACK */

/* Size limits (formats/README.md, "Limits"): every socket sets
 * ZMQ_MAXMSGSIZE from these, so a larger frame disconnects its sender. */
#define MOCO_BATCH_BYTES ((size_t)4 << 20)   /* a SAMPLES or PAIRS batch stops growing at this size */
#define MOCO_VIEW_SIDE_MAX 2048              /* largest view side (recipes: 1..2048) */
#define MOCO_VIEW_BYTES_MAX ((size_t)MOCO_VIEW_SIDE_MAX * MOCO_VIEW_SIDE_MAX * 3)
#define MOCO_PAIRS_FRAME_MAX (MOCO_BATCH_BYTES + 2 * MOCO_VIEW_BYTES_MAX) /* any frame of PAIR / PAIRS */
/* PAIR / PAIRS messages the loader queues per connection at its pair socket
 * (ZMQ_RCVHWM). Each frame may be up to MOCO_PAIRS_FRAME_MAX (28 MiB), so a
 * mark of 4 let an allowed peer's every extra connection fill 112 MB of the
 * loader's memory; 2 halves that and keeps the stream at full rate (1 stalled
 * it: libzmq 4.3.4, serve mode, nothing delivered). libzmq does not bound
 * the frames of one message: a peer holding a valid key can still make one
 * connection hold a message of many such frames (formats/README.md, Limits). */
#define MOCO_PAIRS_RCVHWM 2
#define MOCO_RECORD_WIRE_MAX ((size_t)64 << 20) /* a longer record is reported failed, never sent */
#define MOCO_SAMPLES_FRAME_MAX (MOCO_BATCH_BYTES + MOCO_RECORD_WIRE_MAX)
#define MOCO_CTL_FRAME_MAX 65536             /* READY, FAILED, HEARTBEAT, ACK, HELLO, WELCOME, REFUSED, END */
#define MOCO_EPOCH_FAILED_MAX (1u << 20)     /* failed indices an EPOCH_END may list; more fails the run */
#define MOCO_COUNT_MAX ((uint64_t)1 << 36)   /* largest dataset a stream serves (HELLO bitmaps: 8 GiB) */

/* Timing (formats/README.md, "Liveness"): every peer sends a HEARTBEAT (a
 * worker: READY) at least this often; the defaults of the timeouts. */
#define MOCO_HEARTBEAT_S 1.0
#define MOCO_HEARTBEAT_MIN_S 0.1     /* the shortest interval a consumer takes from WELCOME's heartbeat_ms */
#define MOCO_WORKER_TIMEOUT_S 5.0    /* loader: a silent worker is dead */
#define MOCO_CONSUMER_TIMEOUT_S 10.0 /* loader: a silent consumer is gone (the stream pauses) */
#define MOCO_LOADER_TIMEOUT_S 60.0   /* consumer: a silent loader is an error */
#define MOCO_REISSUE_AFTER_S 120.0   /* loader: a pair not acknowledged this long goes out again */
#define MOCO_STALL_TIMEOUT_S 10.0    /* loader: a worker returning none of its samples this long (while others deliver) is banned */
#define MOCO_READMIT_AFTER_S 60.0    /* loader: a first ban's length (each later one twice the last, at most 64 x) */
#define MOCO_MAX_WORKERS 1024        /* loader: worker slots, the most and the default */
#define MOCO_LINGER_S 30.0           /* loader, serve mode: after END, seconds without a consumer before exiting */
#define MOCO_WORKER_LOADER_TIMEOUT_S 30.0 /* worker (moco augment): a silent loader ends it */
#define MOCO_ACK_DELAY_S 0.02        /* consumer: an acknowledgement waits at most this long */

/* Serve mode and several consumers (formats/README.md, "Consumer protocol") */
#define MOCO_SERVE_SNDHWM 16         /* pair messages the loader sends ahead of a consumer on its socket */
#define MOCO_CONSUMERS_MAX 4096      /* --consumers / --ranks: consumers of one stream */

/* WELCOME flags */
#define MOCO_WELCOME_SERVE 1u /* pairs come on this (control) socket: serve mode */
#define MOCO_WELCOME_BUSY 2u  /* the loader understands BUSY (an older one: send HEARTBEAT) */
#define MOCO_WELCOME_YIELD_ACK 4u /* serve mode: EPOCH_END once the shard's pairs are all sent (not yet all acknowledged),
                                  * and pairs sent take no room in the window: a consumer may acknowledge a pair when
                                  * its user takes it (an older loader: on receipt, else its batches' tails deadlock) */

/* Small fixed messages. buf must hold 32 bytes; returns the length. READY
 * is written in its version-2 form (24 bytes, with batch). */
size_t moco_pipe_ready(uint8_t *buf, uint32_t free_slots, uint64_t received, uint32_t batch);
size_t moco_pipe_simple(uint8_t *buf, uint16_t type); /* HEARTBEAT, BUSY, STOP, BYE */
size_t moco_pipe_end(uint8_t *buf, uint32_t epochs);
size_t moco_pipe_hello(uint8_t *buf, uint32_t epoch, uint64_t count);
/* HELLO of one of several consumers (version 4, 28 bytes): rank of ranks;
 * with ranks 1 it is the version-1 HELLO above. */
size_t moco_pipe_hello_ranked(uint8_t *buf, uint32_t epoch, uint64_t count, uint32_t rank, uint32_t ranks);
/* WELCOME: 32 bytes. REFUSED: 12 + reason bytes (at most
 * MOCO_WIRE_REASON_MAX; buf holds 12 + MOCO_WIRE_REASON_MAX). */
size_t moco_pipe_welcome(uint8_t *buf, uint32_t epoch, uint32_t epochs, uint64_t count, uint32_t flags, uint32_t heartbeat_ms);
size_t moco_pipe_refused(uint8_t *buf, int32_t code, const char *reason);
/* The heartbeat interval a consumer keeps to, in seconds, from WELCOME's
 * heartbeat_ms: that interval within [MOCO_HEARTBEAT_MIN_S,
 * MOCO_HEARTBEAT_S] (a peer sends at least once a second; a shorter one
 * would have the consumer flood it and call it dead after scheduling
 * jitter); 0 (not said): MOCO_HEARTBEAT_S. The consumer sends at it and
 * calls the loader dead after its loader timeout scaled by it (the same
 * number of missed heartbeats: timeout / MOCO_HEARTBEAT_S). */
double moco_pipe_heartbeat_s(uint32_t heartbeat_ms);

/* ACK: 16 + 8 n bytes; EPOCH_END: 24 + 8 nfailed bytes. Caller sizes buf. */
size_t moco_pipe_ack(uint8_t *buf, uint32_t epoch, const uint64_t *idx, uint32_t n);
size_t moco_pipe_epoch_end(uint8_t *buf, uint32_t epoch, uint64_t delivered, const uint64_t *failed, uint32_t nfailed);

/* PAIRS header frame: 16 + 32 n bytes; pairs[i] packed with
 * moco_wire_pair_pack. */
size_t moco_pipe_pairs_pack(uint8_t *buf, const moco_wire_pair *pairs, uint32_t n);

/* Check a PAIRS message: frame 1 (hdr, hlen) and the length of frame 2.
 * Every header must parse and the views must fill frame 2 exactly. On
 * success *n is the count; moco_pipe_pairs_at() reads header i. */
int moco_pipe_pairs_parse(const uint8_t *hdr, size_t hlen, size_t data_len, uint32_t *n);
void moco_pipe_pairs_at(const uint8_t *hdr, uint32_t i, moco_wire_pair *p);

/* One entry of a SAMPLES message. */
typedef struct {
    uint32_t epoch;
    uint32_t len;   /* bytes of this record in frame 2 */
    uint64_t index;
} moco_pipe_sample;

/* SAMPLES header frame: 16 + 16 n bytes (n <= MOCO_SAMPLES_MAX). */
size_t moco_pipe_samples_pack(uint8_t *buf, const moco_pipe_sample *s, uint32_t n);

/* Check a SAMPLES message: frame 1 (hdr, hlen) and the length of frame 2.
 * The prefix must say version 2 or later, n must be 1..MOCO_SAMPLES_MAX,
 * the header exactly 16 + 16 n bytes and the record lengths must add up to
 * data_len exactly. On success *n is the count; moco_pipe_samples_at()
 * reads entry i (record i starts after the lengths of entries 0..i-1). */
int moco_pipe_samples_parse(const uint8_t *hdr, size_t hlen, size_t data_len, uint32_t *n);
void moco_pipe_samples_at(const uint8_t *hdr, uint32_t i, moco_pipe_sample *s);

/* A parsed control message. Pointers refer into the frame. */
typedef struct {
    uint16_t type;
    uint32_t epoch;       /* HELLO, ACK, EPOCH_END, END (epochs), WELCOME */
    uint32_t epochs;      /* WELCOME: epochs in the run (0: unbounded) */
    uint32_t flags;       /* WELCOME: MOCO_WELCOME_* */
    uint32_t heartbeat_ms; /* WELCOME */
    int32_t code;         /* REFUSED */
    const char *reason;   /* REFUSED: not NUL-terminated, reason_len bytes */
    size_t reason_len;
    uint32_t credits;     /* READY: free slots */
    uint64_t received;    /* READY: records received so far */
    uint32_t batch;       /* READY: most records per SAMPLES (0: version 1, single SAMPLEs) */
    uint64_t count;       /* HELLO, WELCOME: dataset size; EPOCH_END: delivered */
    uint32_t rank, ranks; /* HELLO: this consumer's rank of ranks (version 1 HELLO: 0 of 1) */
    uint32_t n;           /* ACK: indices; EPOCH_END: failed */
    const uint8_t *idx;   /* n x u64 LE (use moco_get_le64) */
} moco_pipe_msg;

/* Parse the first frame of a control message, checking its exact length
 * for its type. Returns 0, MOCO_ECORRUPT or MOCO_EFORMAT (with a message). */
int moco_pipe_parse(const uint8_t *p, size_t n, moco_pipe_msg *m);

#endif
