/* wire.h: the messages moco processes send each other over ZeroMQ.
 * See formats/README.md, "Wire messages", for the byte layouts.
 *
 * Every message is a ZeroMQ multipart message whose first frame (the header)
 * starts with the same 8 bytes: the ASCII magic "MOCW", a little-endian u16
 * version and a little-endian u16 message type. The version is the lowest
 * protocol version that defines the message's layout (1 for most; 2 for the
 * SAMPLES batch and the READY that asks for it; 3 WELCOME, REFUSED, BYE; 4
 * the ranked HELLO; 5 BUSY: moco_wire_type_version), so that a peer of version
 * 1 still understands everything it can. A reader accepts versions 1 up to
 * MOCO_WIRE_VERSION. The rest of the header is fixed per type; bulk data (a
 * record, pixels) follows in further frames so that it can be sent and
 * received without copying.
 *
 * Promises: the parsers read only within the frame they are given (they are
 * safe on any bytes: fuzzable), reject a wrong magic, a wrong version, an
 * unknown or unexpected type, a short or over-long header, a non-zero
 * reserved field and a field out of its range (a PAIR's sides: 1 to
 * MOCO_VIEW_SIDE_MAX) with MOCO_ECORRUPT / MOCO_EFORMAT and a message naming
 * what was wrong. The
 * packers never fail (callers give buffers of the stated sizes). No function
 * here allocates or touches a socket. */
#ifndef MOCO_WIRE_H
#define MOCO_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define MOCO_WIRE_MAGIC "MOCW"
#define MOCO_WIRE_VERSION 5 /* the newest version this build reads and writes */
#define MOCO_WIRE_PREFIX_SIZE 8

typedef enum {
    /* every message type of every version, in one place; layouts in
     * formats/README.md (data: this header; control: pipeline.h) */
    MOCO_MSG_SAMPLE = 1,    /* loader -> worker: (epoch, index) + record frame */
    MOCO_MSG_PAIR = 2,      /* worker -> consumer: header + query view + key view */
    MOCO_MSG_FAILED = 3,    /* worker -> loader: (epoch, index) could not be augmented */
    MOCO_MSG_READY = 4,     /* worker -> loader: credit for more samples */
    MOCO_MSG_HEARTBEAT = 5, /* either way: I am alive */
    MOCO_MSG_EPOCH_END = 6, /* loader -> consumer: every sample of an epoch is done or failed */
    MOCO_MSG_STOP = 7,      /* loader -> worker: finish and exit */
    MOCO_MSG_HELLO = 8,     /* consumer -> loader: start or resume; the resume state (version 4: and its rank of R) */
    MOCO_MSG_ACK = 9,       /* consumer -> loader: these (epoch, index) were received */
    MOCO_MSG_END = 10,      /* loader -> consumer: no more data */
    MOCO_MSG_PAIRS = 11,    /* worker -> consumer: a batch of PAIRs in two frames */
    MOCO_MSG_SAMPLES = 12,  /* loader -> worker (version 2): a batch of records in two frames */
    MOCO_MSG_WELCOME = 13,  /* loader -> consumer (version 3): HELLO accepted; count, epochs, mode */
    MOCO_MSG_REFUSED = 14,  /* loader -> a peer (version 3): HELLO refused, or (after WELCOME) no longer served, with the reason */
    MOCO_MSG_BYE = 15,      /* consumer -> loader (version 3): I am leaving; another may say HELLO now */
    MOCO_MSG_BUSY = 16,     /* consumer -> loader (version 5): alive, not reading pairs now (a heartbeat) */
    MOCO_MSG_TYPE_MAX = 64  /* types >= this are invalid */
} moco_msg_type;

/* Header frame sizes (exact, for version 1). */
#define MOCO_WIRE_SAMPLE_SIZE 24
#define MOCO_WIRE_PAIR_SIZE 32
#define MOCO_WIRE_FAILED_MIN 24        /* followed by 0..MOCO_WIRE_REASON_MAX bytes of text */
#define MOCO_WIRE_REASON_MAX 1000

/* Pixel layouts of a PAIR's views. */
#define MOCO_LAYOUT_HWC_U8 0

typedef struct {
    uint32_t epoch;
    uint64_t index;
} moco_wire_sample;

typedef struct {
    uint32_t epoch;
    int32_t label;      /* class index, -1 unlabelled */
    uint64_t index;
    uint16_t height, width;
    uint8_t channels;   /* 1 or 3 */
    uint8_t layout;     /* MOCO_LAYOUT_HWC_U8 */
} moco_wire_pair;

typedef struct {
    uint32_t epoch;
    int32_t code;        /* a MOCO_E* code */
    uint64_t index;
    const char *reason;  /* UTF-8, NOT NUL-terminated; points into the frame */
    size_t reason_len;
} moco_wire_failed;

/* Write the 8-byte prefix, with the version that defines type's layout
 * (moco_wire_type_version). */
void moco_wire_prefix_pack(uint8_t out[MOCO_WIRE_PREFIX_SIZE], uint16_t type);

/* The version whose layout this build writes for type: 2 for SAMPLES and
 * READY, 1 for the others. */
uint16_t moco_wire_type_version(uint16_t type);

/* Check magic and version of a header frame and return its type in *type.
 * Returns 0, MOCO_ECORRUPT (shorter than 8 bytes, wrong magic, type 0 or >=
 * MOCO_MSG_TYPE_MAX) or MOCO_EFORMAT (version 0 or newer than
 * MOCO_WIRE_VERSION). */
int moco_wire_peek(const void *frame, size_t len, uint16_t *type);

/* The version field of a frame that moco_wire_peek accepted. */
uint16_t moco_wire_version(const void *frame);

/* SAMPLE header: out must hold MOCO_WIRE_SAMPLE_SIZE bytes. */
void moco_wire_sample_pack(uint8_t out[MOCO_WIRE_SAMPLE_SIZE], const moco_wire_sample *s);
int moco_wire_sample_parse(const void *frame, size_t len, moco_wire_sample *out);

/* PAIR header: out must hold MOCO_WIRE_PAIR_SIZE bytes. The parser also
 * checks that height, width >= 1, channels is 1 or 3 and layout is known. */
void moco_wire_pair_pack(uint8_t out[MOCO_WIRE_PAIR_SIZE], const moco_wire_pair *p);
int moco_wire_pair_parse(const void *frame, size_t len, moco_wire_pair *out);

/* Bytes in each view frame of a PAIR: height * width * channels. */
static inline size_t moco_wire_pair_view_bytes(const moco_wire_pair *p)
{
    return (size_t)p->height * p->width * p->channels;
}

/* FAILED header + reason text (truncated to MOCO_WIRE_REASON_MAX bytes):
 * out must hold MOCO_WIRE_FAILED_MIN + MOCO_WIRE_REASON_MAX bytes. Returns
 * the frame length. reason may be NULL. */
size_t moco_wire_failed_pack(uint8_t *out, uint32_t epoch, uint64_t index, int32_t code, const char *reason);
/* out->reason points into frame (valid while the frame is). */
int moco_wire_failed_parse(const void *frame, size_t len, moco_wire_failed *out);

/* "SAMPLE", "PAIR", ... or "?" */
const char *moco_msg_type_name(int type);

#endif
