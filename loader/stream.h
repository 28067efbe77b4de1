/* stream.h: the streaming loader (`moco loader`): hands dataset records to
 * augmentation workers on demand and tracks them until the consumer has
 * acknowledged each, so that every valid sample reaches the consumer exactly
 * once per epoch whatever happens to the workers.
 *
 * Design (see formats/pipeline.h for the messages):
 * - epoch order: a permutation of 0..N-1 that is a pure function of
 *   (seed, epoch) (formats/rng.h, key (seed, epoch, "perm")).
 * - credit: a worker says READY(free, received, batch); the loader sends it
 *   at most free - (sent - received) records, batch at a time in one
 *   SAMPLES message (single SAMPLEs to a version-1 worker). A slow worker
 *   holds up nobody; a new worker joins at any time.
 * - per sample state: pending, issued (to worker w, at time t), done
 *   (acknowledged by the consumer), failed (the worker could not decode it).
 *   A worker silent for --worker-timeout is declared dead and its issued
 *   samples are re-issued; so is any sample unacknowledged for
 *   --reissue-after seconds (or twice the pipeline's depth, the recent
 *   longest time from issue to acknowledgement, if longer) of its
 *   consumer's clock, which runs only while the consumer is connected and
 *   not BUSY (evaluating). The consumer drops duplicates by (epoch, index).
 * - epochs are sequential: epoch e+1 starts once every sample of e is done
 *   or failed; then EPOCH_END(e, delivered, failed indices) goes to the
 *   consumer. After the last epoch: END to the consumer, STOP to workers.
 * - resume: the consumer's HELLO carries (epoch, delivered bitmap); the
 *   loader delivers exactly the rest of that epoch, then the next ones.
 * - bounds: at most --window samples issued and unacknowledged; every
 *   socket has an explicit high-water mark.
 * - slots and bans (slots.c): at most --max-workers workers; one that holds
 *   samples and returns none is banned for --readmit-after (doubling), its
 *   samples re-issued; a slot held by a banned worker, or by one that holds
 *   nothing and asks for no work, goes to a new worker. */
#ifndef LOADER_STREAM_H
#define LOADER_STREAM_H

#include <stdint.h>

/* The epoch order: perm[0..n) for (seed, epoch). */
void loader_epoch_order(uint64_t seed, uint32_t epoch, uint64_t *perm, uint64_t n);

#endif
