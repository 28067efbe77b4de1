/* serve.c: the loader's serve mode (`moco loader --pairs EP`, `moco run
 * --serve`): the workers push their pairs to the loader, which checks each
 * message against the epoch's state (formats/README.md, "serve mode": the
 * current epoch, an index below the count and handed out in this epoch;
 * leftovers of an epoch before a resume are stale) and forwards it,
 * unchanged and without copying, to the consumer whose shard holds its
 * pairs (`--consumers R`: rank r gets the samples at positions r, r + R, ...
 * of each epoch's order; a message of several shards is split, its views
 * copied), over that consumer's control socket, while it has room: so the
 * consumers' pace reaches the workers. Each issue of a sample has its pair
 * forwarded once: more copies (a late worker's, a peer's repeats) are
 * dropped as stale. Rejected messages are counted and logged. A sample whose
 * pair came back is out of its worker's hands (no stall, no re-issue when
 * the worker dies); once sent on the consumer's socket it waits for the
 * consumer's user, who acknowledges it, and takes no room in the window. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "formats/clock.h"
#include "formats/pipeline.h"
#include "formats/wire.h"
#include "loader/state.h"

/* The pairs of message m go out to consumer r now: those of samples issued
 * in this epoch and forwarded (touched 2) are with it (touched 3, counted in
 * its `sent`) until it acknowledges them. */
static void mark_sent(loader *L, int r, const heldmsg *m)
{
    const uint8_t *h = zmq_msg_data((zmq_msg_t *)&m->f[0]);
    size_t hl = zmq_msg_size((zmq_msg_t *)&m->f[0]);
    uint16_t type;
    uint32_t cnt = 1;
    moco_wire_pair one;
    if (moco_wire_peek(h, hl, &type)) return;
    if (type == MOCO_MSG_PAIRS) {
        if (moco_pipe_pairs_parse(h, hl, zmq_msg_size((zmq_msg_t *)&m->f[1]), &cnt)) return;
    } else if (moco_wire_pair_parse(h, hl, &one)) {
        return;
    }
    for (uint32_t i = 0; i < cnt; i++) {
        moco_wire_pair p = one;
        if (type == MOCO_MSG_PAIRS) moco_pipe_pairs_at(h, i, &p);
        if (!L->started || p.epoch != L->epoch || p.index >= L->n || L->st[p.index] != ISSUED || L->touched[p.index] != 2 ||
            L->shard[p.index] != r)
            continue;
        L->touched[p.index] = 3;
        L->c[r].sent++;
    }
}

/* Check a pair message from a worker (frames f, nf) against the epoch's
 * state. Returns -1 to reject it (malformed; a pair of another epoch, of an
 * index out of range or never handed out: nothing of it is used), else the
 * number of its pairs to forward: those of the current epoch whose sample
 * has not had its pair forwarded since it was last issued (each issue is
 * forwarded once; they are marked forwarded here, keep[i] = 1). The others
 * are dropped as stale (*nstale: of a finished epoch, or copies of a pair
 * already forwarded). *dest is the consumer whose shard holds all the
 * forwarded pairs when the message can go on whole (every pair of it
 * forwarded, one shard), else -2 (the forwarded pairs are copied out). */
static int check_pairs(loader *L, zmq_msg_t *f, int nf, uint32_t *npairs, int *dest, uint8_t *keep, uint32_t *nstale)
{
    const uint8_t *h = zmq_msg_data(&f[0]);
    size_t hl = zmq_msg_size(&f[0]);
    uint16_t type;
    uint32_t cnt = 1;
    moco_wire_pair one;
    *npairs = 1;
    *dest = -1;
    *nstale = 0;
    if (moco_wire_peek(h, hl, &type)) return -1;
    if (type == MOCO_MSG_PAIRS) {
        if (nf != 2 || moco_pipe_pairs_parse(h, hl, zmq_msg_size(&f[1]), &cnt)) return -1;
    } else if (type == MOCO_MSG_PAIR) {
        if (nf != 3 || moco_wire_pair_parse(h, hl, &one) || zmq_msg_size(&f[1]) != moco_wire_pair_view_bytes(&one) ||
            zmq_msg_size(&f[2]) != moco_wire_pair_view_bytes(&one))
            return -1;
    } else {
        return -1;
    }
    *npairs = cnt;
    for (uint32_t i = 0; i < cnt; i++) { /* first all checked, then marked */
        moco_wire_pair p = one;
        if (type == MOCO_MSG_PAIRS) moco_pipe_pairs_at(h, i, &p);
        if (p.index >= L->n || p.epoch > L->max_epoch) return -1; /* (epoch, max_epoch]: left over from before a resume */
        if (p.epoch == L->epoch && L->started && !L->touched[p.index]) return -1;
    }
    int fwd = 0;
    for (uint32_t i = 0; i < cnt; i++) {
        moco_wire_pair p = one;
        if (type == MOCO_MSG_PAIRS) moco_pipe_pairs_at(h, i, &p);
        keep[i] = p.epoch == L->epoch && L->started && L->touched[p.index] == 1;
        if (!keep[i]) { (*nstale)++; continue; }
        if (L->st[p.index] == ISSUED) { /* back from its worker: out of its hands (no longer its to stall on or lose) */
            loader_unhold(L, p.index);
            L->w[L->owner[p.index]].progress = moco_now_s(), L->w[L->owner[p.index]].acked_at_progress = L->acked;
        }
        L->touched[p.index] = 2;
        int r = L->shard[p.index];
        *dest = !fwd || *dest == r ? r : -2;
        fwd++;
    }
    if (*nstale && fwd) *dest = -2;
    return fwd;
}

/* Append a message for consumer r (frames moved in). */
static int hold(loader *L, int r, zmq_msg_t *f, int nf)
{
    consumer *c = &L->c[r];
    size_t bytes = 0;
    for (int i = 0; i < nf; i++) bytes += zmq_msg_size(&f[i]);
    if (c->nheld == c->heldcap) {
        int nc = c->heldcap ? 2 * c->heldcap : 8;
        heldmsg *nh = malloc(sizeof *nh * (size_t)nc);
        if (!nh) return -1;
        for (int i = 0; i < c->nheld; i++) nh[i] = c->held[(c->hhead + i) % c->heldcap];
        free(c->held);
        c->held = nh;
        c->hhead = 0;
        c->heldcap = nc;
    }
    heldmsg *m = &c->held[(c->hhead + c->nheld) % c->heldcap];
    memcpy(m->f, f, sizeof(zmq_msg_t) * (size_t)nf);
    m->nf = nf;
    m->bytes = bytes;
    c->nheld++;
    if (c->heldbytes <= L->held_bytes_max && c->heldbytes + bytes > L->held_bytes_max) L->held_full++;
    c->heldbytes += bytes;
    if (c->heldbytes > L->held_bytes_peak) L->held_bytes_peak = c->heldbytes;
    return 0;
}

void loader_drop_held(loader *L, int r)
{
    consumer *c = &L->c[r];
    for (; c->nheld; c->nheld--, c->hhead = (c->hhead + 1) % c->heldcap) {
        heldmsg *m = &c->held[c->hhead];
        for (int i = 0; i < m->nf; i++) zmq_msg_close(&m->f[i]);
    }
    c->heldbytes = 0;
}

int loader_forward_pending(loader *L)
{
    int left = 0;
    for (int r = 0; r < L->R; r++) {
        consumer *c = &L->c[r];
        while (c->nheld && c->connected) {
            heldmsg *m = &c->held[c->hhead];
            if (zmq_send(L->ctl, c->id, c->idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) break; /* full, or gone: later */
            mark_sent(L, r, m); /* the identity went: the rest of the message goes too */
            for (int i = 0; i < m->nf; i++)
                if (zmq_msg_send(&m->f[i], L->ctl, i + 1 < m->nf ? ZMQ_SNDMORE : 0) < 0) zmq_msg_close(&m->f[i]);
            c->heldbytes -= m->bytes;
            c->hhead = (c->hhead + 1) % c->heldcap;
            c->nheld--;
            L->forwarded++;
        }
        left += c->nheld;
        if (c->heldbytes > L->held_bytes_max) left += LOADER_HELD_MAX + 1; /* full: as many messages as may wait */
    }
    return left;
}

static void free_data(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* A PAIRS or PAIR message of which only some pairs go on (keep), or whose
 * pairs lie in several shards: one PAIRS message per shard of the kept
 * pairs, views copied. Returns 0, or -1 when out of memory (all dropped;
 * the loader re-issues what is never acknowledged). */
static int split(loader *L, zmq_msg_t *f, int nf, const uint8_t *keep)
{
    const uint8_t *h = zmq_msg_data(&f[0]);
    uint16_t type;
    uint32_t cnt = 1;
    moco_wire_pair one;
    moco_wire_peek(h, zmq_msg_size(&f[0]), &type);
    if (type == MOCO_MSG_PAIRS) moco_pipe_pairs_parse(h, zmq_msg_size(&f[0]), zmq_msg_size(&f[1]), &cnt);
    else moco_wire_pair_parse(h, zmq_msg_size(&f[0]), &one);
    moco_wire_pair *ph = malloc(sizeof *ph * cnt);
    size_t *off = malloc(sizeof *off * cnt);
    uint8_t *hb = malloc(16 + (size_t)MOCO_WIRE_PAIR_SIZE * cnt);
    int rc = ph && off && hb ? 0 : -1, shards = 0;
    size_t at = 0;
    for (uint32_t i = 0; !rc && i < cnt; i++) {
        ph[i] = one;
        if (type == MOCO_MSG_PAIRS) moco_pipe_pairs_at(h, i, &ph[i]);
        off[i] = at;
        at += 2 * moco_wire_pair_view_bytes(&ph[i]);
    }
    for (int r = 0; !rc && r < L->R; r++) {
        moco_wire_pair sub[MOCO_PAIRS_MAX];
        uint32_t ns = 0;
        size_t bytes = 0;
        for (uint32_t i = 0; i < cnt && ns < MOCO_PAIRS_MAX; i++)
            if (keep[i] && L->shard[ph[i].index] == r) {
                sub[ns++] = ph[i];
                bytes += 2 * moco_wire_pair_view_bytes(&ph[i]);
            }
        if (!ns) continue;
        shards++;
        uint8_t *data = malloc(bytes ? bytes : 1);
        zmq_msg_t out[2];
        if (!data) { rc = -1; break; }
        size_t w = 0;
        for (uint32_t i = 0; i < cnt; i++)
            if (keep[i] && L->shard[ph[i].index] == r) {
                size_t vb = moco_wire_pair_view_bytes(&ph[i]);
                if (type == MOCO_MSG_PAIRS) {
                    memcpy(data + w, (const uint8_t *)zmq_msg_data(&f[1]) + off[i], 2 * vb);
                } else {
                    memcpy(data + w, zmq_msg_data(&f[1]), vb);
                    memcpy(data + w + vb, zmq_msg_data(&f[2]), vb);
                }
                w += 2 * vb;
            }
        size_t hl = moco_pipe_pairs_pack(hb, sub, ns);
        zmq_msg_init_size(&out[0], hl);
        memcpy(zmq_msg_data(&out[0]), hb, hl);
        zmq_msg_init_data(&out[1], data, bytes, free_data, NULL);
        if (hold(L, r, out, 2)) { zmq_msg_close(&out[0]); zmq_msg_close(&out[1]); rc = -1; }
    }
    free(ph);
    free(off);
    free(hb);
    for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
    if (shards > 1) L->split_msgs++;
    return rc;
}

/* Read and forward pair messages while the consumers take them: with one
 * consumer, a message waits here only while it has no room (its pace
 * reaches the workers); with several, each has its own queue (bounded by
 * its shard's window, as each issue is forwarded once), so that one rank
 * busy in a collective never stops the pairs of another; reading stops at
 * LOADER_HELD_MAX messages held in all, or L->held_bytes_max for one
 * (LOADER_HELD_BYTES_MAX; counted in held_full each time a queue goes over
 * it; nothing is dropped: the pairs wait in the workers' sockets). */
void loader_serve_pairs(loader *L)
{
    for (int burst = 0; burst < 256; burst++) {
        int left = loader_forward_pending(L);
        if (left > (L->R > 1 ? LOADER_HELD_MAX : 0)) return;
        zmq_msg_t f[4];
        int nf = 0, more = 1, bad = 0;
        while (more) {
            zmq_msg_init(&f[nf < 3 ? nf : 3]);
            if (zmq_msg_recv(&f[nf < 3 ? nf : 3], L->pairs, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&f[nf < 3 ? nf : 3]);
                if (nf == 0) return;
                bad = 1;
                break;
            }
            more = zmq_msg_more(&f[nf < 3 ? nf : 3]);
            if (nf < 3) nf++;
            else { zmq_msg_close(&f[3]); bad = 1; }
        }
        uint32_t np = 0, nstale = 0;
        uint8_t keep[MOCO_PAIRS_MAX];
        int dest = -1, r = bad ? -1 : check_pairs(L, f, nf, &np, &dest, keep, &nstale);
        if (r >= 0) L->stale_pairs += nstale;
        if (r > 0 && dest >= 0) {
            if (!hold(L, dest, f, nf)) continue;
            r = 0; /* out of memory: dropped, re-issued later */
        } else if (r > 0) {
            split(L, f, nf, keep);
            continue;
        }
        for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
        if (r >= 0) continue;
        L->rejected_pairs += np;
        if (!loader_quota_ok(&L->q_rejected, LOADER_QUOTA_BURST)) continue;
        fprintf(stderr, "moco loader: rejected a pair message of %u pairs (malformed, another epoch, an index out of range "
                        "or never handed out; %" PRIu64 " pairs rejected so far)\n", np, L->rejected_pairs);
        moco_jw w;
        loader_ev_begin(L, &w, "rejected");
        moco_jw_str(&w, "what", "pairs");
        moco_jw_u64(&w, "pairs", np);
        moco_jw_u64(&w, "total", L->rejected_pairs);
        loader_quota_used(&L->q_rejected, &w);
        loader_ev_end(L, &w);
    }
}
