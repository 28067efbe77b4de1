/* pipeline.c: pack and strictly parse the pipeline's control messages. */
#include "formats/pipeline.h"
#include "formats/errors.h"
#include "formats/record.h"

#include <string.h>

size_t moco_pipe_simple(uint8_t *b, uint16_t type)
{
    moco_wire_prefix_pack(b, type);
    return MOCO_WIRE_PREFIX_SIZE;
}

size_t moco_pipe_ready(uint8_t *b, uint32_t free_slots, uint64_t received, uint32_t batch)
{
    moco_wire_prefix_pack(b, MOCO_MSG_READY); /* version 2: with batch */
    moco_put_le32(b + 8, free_slots);
    moco_put_le64(b + 12, received);
    moco_put_le32(b + 20, batch);
    return 24;
}

size_t moco_pipe_end(uint8_t *b, uint32_t epochs)
{
    moco_wire_prefix_pack(b, MOCO_MSG_END);
    moco_put_le32(b + 8, epochs);
    return 12;
}

size_t moco_pipe_hello(uint8_t *b, uint32_t epoch, uint64_t count)
{
    moco_wire_prefix_pack(b, MOCO_MSG_HELLO);
    moco_put_le32(b + 8, epoch);
    moco_put_le64(b + 12, count);
    return 20;
}

size_t moco_pipe_hello_ranked(uint8_t *b, uint32_t epoch, uint64_t count, uint32_t rank, uint32_t ranks)
{
    if (ranks <= 1) return moco_pipe_hello(b, epoch, count);
    moco_pipe_hello(b, epoch, count);
    moco_put_le16(b + 4, 4);
    moco_put_le32(b + 20, rank);
    moco_put_le32(b + 24, ranks);
    return 28;
}

size_t moco_pipe_welcome(uint8_t *b, uint32_t epoch, uint32_t epochs, uint64_t count, uint32_t flags, uint32_t heartbeat_ms)
{
    moco_wire_prefix_pack(b, MOCO_MSG_WELCOME);
    moco_put_le32(b + 8, epoch);
    moco_put_le32(b + 12, epochs);
    moco_put_le64(b + 16, count);
    moco_put_le32(b + 24, flags);
    moco_put_le32(b + 28, heartbeat_ms);
    return 32;
}

double moco_pipe_heartbeat_s(uint32_t heartbeat_ms)
{
    double s = heartbeat_ms / 1000.0;
    if (!heartbeat_ms || s > MOCO_HEARTBEAT_S) return MOCO_HEARTBEAT_S;
    return s < MOCO_HEARTBEAT_MIN_S ? MOCO_HEARTBEAT_MIN_S : s;
}

size_t moco_pipe_refused(uint8_t *b, int32_t code, const char *reason)
{
    moco_wire_prefix_pack(b, MOCO_MSG_REFUSED);
    moco_put_le32(b + 8, (uint32_t)code);
    size_t n = reason ? strnlen(reason, MOCO_WIRE_REASON_MAX) : 0;
    if (n) memcpy(b + 12, reason, n);
    return 12 + n;
}

size_t moco_pipe_ack(uint8_t *b, uint32_t epoch, const uint64_t *idx, uint32_t n)
{
    moco_wire_prefix_pack(b, MOCO_MSG_ACK);
    moco_put_le32(b + 8, epoch);
    moco_put_le32(b + 12, n);
    for (uint32_t i = 0; i < n; i++) moco_put_le64(b + 16 + 8 * (size_t)i, idx[i]);
    return 16 + 8 * (size_t)n;
}

size_t moco_pipe_epoch_end(uint8_t *b, uint32_t epoch, uint64_t delivered, const uint64_t *failed, uint32_t nf)
{
    moco_wire_prefix_pack(b, MOCO_MSG_EPOCH_END);
    moco_put_le32(b + 8, epoch);
    moco_put_le64(b + 12, delivered);
    moco_put_le32(b + 20, nf);
    for (uint32_t i = 0; i < nf; i++) moco_put_le64(b + 24 + 8 * (size_t)i, failed[i]);
    return 24 + 8 * (size_t)nf;
}

static int want(size_t n, size_t need, const char *what)
{
    if (n != need) return moco_err(MOCO_ECORRUPT, "%s message of %zu bytes, expected %zu", what, n, need);
    return 0;
}

int moco_pipe_parse(const uint8_t *p, size_t n, moco_pipe_msg *m)
{
    int rc = moco_wire_peek(p, n, &m->type);
    if (rc) return rc;
    m->epoch = m->credits = m->n = 0;
    m->count = m->received = 0;
    m->batch = 0;
    m->idx = NULL;
    m->epochs = m->flags = m->heartbeat_ms = 0;
    m->code = 0;
    m->rank = 0;
    m->ranks = 1;
    m->reason = NULL;
    m->reason_len = 0;
    switch (m->type) {
    case MOCO_MSG_HEARTBEAT:
    case MOCO_MSG_BUSY:
    case MOCO_MSG_STOP:
    case MOCO_MSG_BYE:
        return want(n, MOCO_WIRE_PREFIX_SIZE, moco_msg_type_name(m->type));
    case MOCO_MSG_READY: /* version 1: 20 bytes; version 2: 24, with batch */
        if ((rc = want(n, moco_wire_version(p) >= 2 ? 24 : 20, "READY"))) return rc;
        m->credits = moco_get_le32(p + 8);
        m->received = moco_get_le64(p + 12);
        if (n == 24) m->batch = moco_get_le32(p + 20);
        if (m->batch > MOCO_SAMPLES_MAX)
            return moco_err(MOCO_ECORRUPT, "READY asks for batches of %u records (at most %d)", m->batch, MOCO_SAMPLES_MAX);
        return 0;
    case MOCO_MSG_END:
        if ((rc = want(n, 12, "END"))) return rc;
        m->epoch = moco_get_le32(p + 8);
        return 0;
    case MOCO_MSG_HELLO: /* version 1-3: 20 bytes; version 4: 28, with rank and ranks */
        if ((rc = want(n, moco_wire_version(p) >= 4 ? 28 : 20, "HELLO"))) return rc;
        m->epoch = moco_get_le32(p + 8);
        m->count = moco_get_le64(p + 12);
        m->rank = n == 28 ? moco_get_le32(p + 20) : 0;
        m->ranks = n == 28 ? moco_get_le32(p + 24) : 1;
        if (m->ranks < 1 || m->rank >= m->ranks)
            return moco_err(MOCO_ECORRUPT, "HELLO of rank %u of %u ranks", m->rank, m->ranks);
        return 0;
    case MOCO_MSG_WELCOME:
        if ((rc = want(n, 32, "WELCOME"))) return rc;
        m->epoch = moco_get_le32(p + 8);
        m->epochs = moco_get_le32(p + 12);
        m->count = moco_get_le64(p + 16);
        m->flags = moco_get_le32(p + 24);
        m->heartbeat_ms = moco_get_le32(p + 28);
        return 0;
    case MOCO_MSG_REFUSED:
        if (n < 12 || n > 12 + MOCO_WIRE_REASON_MAX)
            return moco_err(MOCO_ECORRUPT, "REFUSED message of %zu bytes (12..%d)", n, 12 + MOCO_WIRE_REASON_MAX);
        m->code = (int32_t)moco_get_le32(p + 8);
        m->reason = (const char *)p + 12;
        m->reason_len = n - 12;
        return 0;
    case MOCO_MSG_ACK:
        if (n < 16) return want(n, 16, "ACK");
        m->epoch = moco_get_le32(p + 8);
        m->n = moco_get_le32(p + 12);
        if (m->n > MOCO_ACK_MAX) return moco_err(MOCO_ECORRUPT, "ACK of %u indices (at most %d)", m->n, MOCO_ACK_MAX);
        if ((rc = want(n, 16 + 8 * (size_t)m->n, "ACK"))) return rc;
        m->idx = p + 16;
        return 0;
    case MOCO_MSG_EPOCH_END:
        if (n < 24) return want(n, 24, "EPOCH_END");
        m->epoch = moco_get_le32(p + 8);
        m->count = moco_get_le64(p + 12);
        m->n = moco_get_le32(p + 20);
        if (m->n > MOCO_EPOCH_FAILED_MAX)
            return moco_err(MOCO_ECORRUPT, "EPOCH_END of epoch %u lists %u failed indices (at most %u)", m->epoch, m->n,
                            MOCO_EPOCH_FAILED_MAX);
        if ((rc = want(n, 24 + 8 * (size_t)m->n, "EPOCH_END"))) return rc;
        m->idx = p + 24;
        return 0;
    default:
        return moco_err(MOCO_ECORRUPT, "%s message (type %u) is not a control message", moco_msg_type_name(m->type), m->type);
    }
}

/* The 16-byte head of a batch message (PAIRS, SAMPLES): prefix, u32 count,
 * u32 reserved 0; then count entries of `entry` bytes. */
static size_t batch_head_pack(uint8_t *b, uint16_t type, uint32_t n, size_t entry)
{
    moco_wire_prefix_pack(b, type);
    moco_put_le32(b + 8, n);
    moco_put_le32(b + 12, 0);
    return 16 + entry * n;
}

/* Check that head: the count within 1..max, the reserved field 0, and the
 * frame exactly as long as the count says. what/unit name it in messages. */
static int batch_head_check(const uint8_t *hdr, size_t hlen, size_t entry, uint32_t max, const char *what,
                            const char *unit, uint32_t *cnt)
{
    if (hlen < 16) return moco_err(MOCO_ECORRUPT, "%s header of %zu bytes", what, hlen);
    *cnt = moco_get_le32(hdr + 8);
    if (*cnt < 1 || *cnt > max || moco_get_le32(hdr + 12) != 0)
        return moco_err(MOCO_ECORRUPT, "%s of %u %s (1..%u) or a non-zero reserved field", what, *cnt, unit, max);
    if (hlen != 16 + entry * *cnt)
        return moco_err(MOCO_ECORRUPT, "%s header of %zu bytes for %u %s", what, hlen, *cnt, unit);
    return 0;
}

size_t moco_pipe_pairs_pack(uint8_t *b, const moco_wire_pair *pairs, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) moco_wire_pair_pack(b + 16 + (size_t)MOCO_WIRE_PAIR_SIZE * i, &pairs[i]);
    return batch_head_pack(b, MOCO_MSG_PAIRS, n, MOCO_WIRE_PAIR_SIZE);
}

int moco_pipe_pairs_parse(const uint8_t *hdr, size_t hlen, size_t data_len, uint32_t *n)
{
    uint16_t type;
    int rc = moco_wire_peek(hdr, hlen, &type);
    if (rc) return rc;
    if (type != MOCO_MSG_PAIRS) return moco_err(MOCO_ECORRUPT, "%s message where PAIRS was expected", moco_msg_type_name(type));
    uint32_t cnt;
    if ((rc = batch_head_check(hdr, hlen, MOCO_WIRE_PAIR_SIZE, MOCO_PAIRS_MAX, "PAIRS", "pairs", &cnt))) return rc;
    size_t need = 0;
    for (uint32_t i = 0; i < cnt; i++) {
        moco_wire_pair p;
        if ((rc = moco_wire_pair_parse(hdr + 16 + (size_t)MOCO_WIRE_PAIR_SIZE * i, MOCO_WIRE_PAIR_SIZE, &p))) return rc;
        need += 2 * moco_wire_pair_view_bytes(&p);
    }
    if (need != data_len) return moco_err(MOCO_ECORRUPT, "PAIRS views need %zu bytes, the frame holds %zu", need, data_len);
    *n = cnt;
    return 0;
}

void moco_pipe_pairs_at(const uint8_t *hdr, uint32_t i, moco_wire_pair *p)
{
    moco_wire_pair_parse(hdr + 16 + (size_t)MOCO_WIRE_PAIR_SIZE * i, MOCO_WIRE_PAIR_SIZE, p);
}

size_t moco_pipe_samples_pack(uint8_t *b, const moco_pipe_sample *s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *e = b + 16 + (size_t)MOCO_SAMPLES_ENTRY * i;
        moco_put_le32(e, s[i].epoch);
        moco_put_le32(e + 4, s[i].len);
        moco_put_le64(e + 8, s[i].index);
    }
    return batch_head_pack(b, MOCO_MSG_SAMPLES, n, MOCO_SAMPLES_ENTRY);
}

int moco_pipe_samples_parse(const uint8_t *hdr, size_t hlen, size_t data_len, uint32_t *n)
{
    uint16_t type;
    int rc = moco_wire_peek(hdr, hlen, &type);
    if (rc) return rc;
    if (type != MOCO_MSG_SAMPLES) return moco_err(MOCO_ECORRUPT, "%s message where SAMPLES was expected", moco_msg_type_name(type));
    if (moco_wire_version(hdr) < 2) return moco_err(MOCO_ECORRUPT, "SAMPLES in a version-1 message (it is new in version 2)");
    uint32_t cnt;
    if ((rc = batch_head_check(hdr, hlen, MOCO_SAMPLES_ENTRY, MOCO_SAMPLES_MAX, "SAMPLES", "records", &cnt))) return rc;
    uint64_t need = 0; /* at most 1024 x (2^32 - 1): no overflow */
    for (uint32_t i = 0; i < cnt; i++) need += moco_get_le32(hdr + 16 + (size_t)MOCO_SAMPLES_ENTRY * i + 4);
    if (need != data_len)
        return moco_err(MOCO_ECORRUPT, "SAMPLES records need %llu bytes, the frame holds %zu", (unsigned long long)need, data_len);
    *n = cnt;
    return 0;
}

void moco_pipe_samples_at(const uint8_t *hdr, uint32_t i, moco_pipe_sample *s)
{
    const uint8_t *e = hdr + 16 + (size_t)MOCO_SAMPLES_ENTRY * i;
    s->epoch = moco_get_le32(e);
    s->len = moco_get_le32(e + 4);
    s->index = moco_get_le64(e + 8);
}
