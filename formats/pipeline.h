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
 *   EPOCH_END  loader -> consumer: u32 epoch, u64 delivered, u32 nfailed,
 *              nfailed x u64 indices of records the workers could not decode
 *   STOP       loader -> worker: the prefix alone; finish and exit */
enum {
    MOCO_MSG_HELLO = 8, /* consumer -> loader: u32 epoch (0xFFFFFFFF: the loader's choice), u64 count
                         * (0: unknown); optional frame 2: bitmap of the indices of that epoch
                         * already delivered, ceil(count / 8) bytes, bit i = byte i/8, bit i%8 */
    MOCO_MSG_ACK = 9,   /* consumer -> loader: u32 epoch, u32 n, n x u64 indices received */
    MOCO_MSG_END = 10,  /* loader -> consumer: u32 epochs completed; no more data */
    MOCO_MSG_PAIRS = 11, /* worker -> consumer: a batch of PAIRs in two frames (fewer messages):
                          * frame 1: prefix, u32 n (1..MOCO_PAIRS_MAX), u32 0, then n PAIR header
                          * frames of 32 bytes each (wire.h); frame 2: the views, q1 k1 q2 k2 ...,
                          * each height * width * channels bytes of its header, nothing between */
    MOCO_MSG_SAMPLES = 12, /* loader -> worker (version 2): a batch of records in two frames:
                            * frame 1: prefix, u32 n (1..MOCO_SAMPLES_MAX), u32 0, then n entries
                            * of 16 bytes: u32 epoch, u32 record length, u64 index; frame 2: the
                            * records as stored, in entry order, nothing between */
};

#define MOCO_PAIRS_MAX 4096
#define MOCO_SAMPLES_MAX 1024
#define MOCO_SAMPLES_ENTRY 16

/* Small fixed messages. buf must hold 32 bytes; returns the length. READY
 * is written in its version-2 form (24 bytes, with batch). */
size_t moco_pipe_ready(uint8_t *buf, uint32_t free_slots, uint64_t received, uint32_t batch);
size_t moco_pipe_simple(uint8_t *buf, uint16_t type); /* HEARTBEAT, STOP */
size_t moco_pipe_end(uint8_t *buf, uint32_t epochs);
size_t moco_pipe_hello(uint8_t *buf, uint32_t epoch, uint64_t count);

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
    uint32_t epoch;       /* HELLO, ACK, EPOCH_END, END (epochs) */
    uint32_t credits;     /* READY: free slots */
    uint64_t received;    /* READY: records received so far */
    uint32_t batch;       /* READY: most records per SAMPLES (0: version 1, single SAMPLEs) */
    uint64_t count;       /* HELLO: dataset size; EPOCH_END: delivered */
    uint32_t n;           /* ACK: indices; EPOCH_END: failed */
    const uint8_t *idx;   /* n x u64 LE (use moco_get_le64) */
} moco_pipe_msg;

/* Parse the first frame of a control message, checking its exact length
 * for its type. Returns 0, MOCO_ECORRUPT or MOCO_EFORMAT (with a message). */
int moco_pipe_parse(const uint8_t *p, size_t n, moco_pipe_msg *m);

#endif
