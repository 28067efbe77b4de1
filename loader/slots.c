/* slots.c: the loader's worker slots and bans (`moco loader --max-workers,
 * --stall-timeout, --readmit-after`): which slot a new worker gets, when a
 * worker that holds samples and returns none is banned, and when it gets
 * work again. The rest of the worker protocol is in stream.c. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/jsonw.h"
#include "loader/state.h"

/* A slot for a new worker: a free one (never used, or its worker dead),
 * else the banned worker's seen least recently (its samples were re-issued
 * when it was banned; it only loses the memory of its ban, and a peer can
 * shed that anyway by reconnecting under a new routing id), else the live
 * worker that has held nothing and asked for no work the longest, once that
 * is --worker-timeout (it says READY, but as good as silent: an honest
 * worker that holds nothing has room, so credit). Before, banned slots were
 * kept for good, and a peer that stalled and reconnected --max-workers
 * times locked every later worker out; and peers that said READY with no
 * credit held the slots for good. -1: all live and in use. */
int loader_free_slot(loader *L, double now)
{
    int k, old = -1, idle = -1;
    for (k = 0; k < L->nw; k++) {
        const worker *w = &L->w[k];
        if (!w->alive && !w->banned) return k;
        if (w->banned && (old < 0 || w->last_seen < L->w[old].last_seen)) old = k;
        if (w->alive && !w->banned && !w->holding && loader_credit(w) <= 0 && now - w->useful_at > L->worker_timeout &&
            (idle < 0 || w->useful_at < L->w[idle].useful_at))
            idle = k;
    }
    if (L->nw < L->max_workers) return L->nw++;
    char hb[40];
    if (old < 0 && idle >= 0) {
        L->idle_reclaimed++;
        fprintf(stderr, "moco loader: slot %d of worker %s, which held nothing and asked for no work for %.0f s, goes to a "
                        "new worker (all %ld slots taken)\n", idle, loader_hexid(L->w[idle].id, L->w[idle].idlen, hb),
                now - L->w[idle].useful_at, L->max_workers);
        return idle;
    }
    if (old < 0) return -1;
    for (uint64_t i = 0; i < L->n; i++) /* none should be: worker_dead re-issued them */
        if (loader_in_hands(L, i, old)) loader_reissue(L, i);
    L->reclaimed_slots++;
    fprintf(stderr, "moco loader: slot %d of the banned worker %s goes to a new worker (all %ld slots taken)\n", old,
            loader_hexid(L->w[old].id, L->w[old].idlen, hb), L->max_workers);
    return old;
}

/* A banned worker that still says READY gets work again once its ban is
 * over: a worker stuck for a while (a huge image, a paused host) is not
 * lost to the run for good, and one that stalls again is banned for twice
 * as long. */
void loader_readmit(loader *L, int k, double now)
{
    worker *w = &L->w[k];
    char hb[40];
    w->banned = 0;
    w->useful_at = now;
    L->readmitted_workers++;
    fprintf(stderr, "moco loader: worker %d (%s) gets work again, %.1f s after its ban (%d so far)\n", k,
            loader_hexid(w->id, w->idlen, hb), now - w->banned_at, w->bans);
    moco_jw j;
    loader_ev_begin(L, &j, "readmitted_worker");
    moco_jw_i64(&j, "worker", k);
    moco_jw_str(&j, "peer", hb);
    moco_jw_i64(&j, "bans", w->bans);
    moco_jw_num(&j, "after_s", now - w->banned_at, 3);
    loader_ev_end(L, &j);
}

/* Does worker k hold up the run: nothing can be issued (the epoch's last
 * samples are out, or the window is full), no other worker holds a sample
 * and makes progress, another live one asks for work, and a sample k holds has waited
 * --stall-timeout of its consumer's reading (BUSY time does not count, so a
 * slow trainer is no stall)? There the others cannot deliver 2 x --window
 * while k holds what is left: without this, a peer that heart-beats and
 * claims credit kept the epoch's tail, or a whole window, until
 * --reissue-after, and could take it again once re-issued. */
static int holds_up_the_run(loader *L, int k, double t)
{
    int idle = 0;
    for (int r = 0; r < L->R; r++)
        if (loader_shard_room(L, r) > 0) return 0;
    for (int j = 0; j < L->nw; j++) {
        if (j == k || !L->w[j].alive || L->w[j].banned) continue;
        /* another worker that holds samples and makes progress; one that
         * is stalled itself does not count (two stuck peers, or one peer
         * with two sockets, each kept the other from being banned) */
        if (L->w[j].holding && t - L->w[j].progress <= L->stall_timeout) return 0;
        idle |= loader_credit(&L->w[j]) > 0;
    }
    if (!idle) return 0;
    for (int r = 0; r < L->R; r++) loader_age(L, r, t);
    for (uint64_t i = 0; i < L->n; i++)
        if (loader_in_hands(L, i, k) && L->c[L->shard[i]].age - L->t_issued[i] > L->stall_timeout) return 1;
    return 0;
}

/* A worker that holds samples and returns none of them, while the consumer
 * acknowledges plenty from the others (or while the others stand idle
 * because it holds all that can be issued), is stuck or lying: its samples
 * go to the others, and it gets no more work until its ban is over
 * (loader_readmit). */
void loader_check_stalls(loader *L, double t)
{
    for (int k = 0; L->started && L->stall_timeout > 0 && k < L->nw; k++) {
        worker *w = &L->w[k];
        if (!w->alive || w->banned || !w->holding || t - w->progress <= L->stall_timeout) continue;
        int tail = 0;
        if (L->acked - w->acked_at_progress <= 2 * (uint64_t)L->window && !(tail = holds_up_the_run(L, k, t))) continue;
        char hb[40], until[48] = " for good (--readmit-after 0)";
        uint64_t held = w->holding;
        w->bans++;
        double ban = L->readmit_after * (double)(1u << (w->bans - 1 < 6 ? w->bans - 1 : 6));
        if (ban > 0) snprintf(until, sizeof until, " for %.0f s (ban %d)", ban, w->bans);
        fprintf(stderr, "moco loader: worker %d (%s) held %" PRIu64 " samples for %.0f s without returning one, while %s%" PRIu64
                        " others were delivered; it gets no more work%s\n", k, loader_hexid(w->id, w->idlen, hb), held,
                t - w->progress, tail ? "the other workers stood idle (nothing more could be issued) and " : "",
                L->acked - w->acked_at_progress, until);
        L->stalled_workers++;
        loader_worker_dead(L, k, "stalled");
        w->banned = 1;
        w->banned_at = t;
        w->ban_until = t + ban;
        moco_jw j;
        loader_ev_begin(L, &j, "stalled_worker");
        moco_jw_i64(&j, "worker", k);
        moco_jw_str(&j, "peer", hb);
        moco_jw_u64(&j, "held", held);
        moco_jw_num(&j, "ban_s", ban, 3); /* 0: for good (--readmit-after 0) */
        loader_ev_end(L, &j);
    }
}
