/* carve.h: named sub-allocations of one block, each starting on a 64-byte
 * boundary (a cache line; also what AVX-512 loads like), whatever the types
 * and odd counts that come before it.
 *
 * Two passes over the same layout function: the first, on a carver with
 * base NULL, only measures; then allocate moco_carve_bytes() with
 * moco_carve_alloc() (aligned to 64) and run the layout again to get the
 * pointers.
 *
 *   static void layout(thing *t, moco_carve *c) {
 *       t->a = moco_carve_take(c, sizeof(float) * na);
 *       t->idx = moco_carve_take(c, sizeof(uint64_t) * n);
 *   }
 *   moco_carve c = {0};  layout(t, &c);          measure
 *   c.base = moco_carve_alloc(&c);  if (!c.base) ... ENOMEM
 *   c.used = 0;  layout(t, &c);                  carve; free(c.base) frees all
 */
#ifndef TRAINER_CARVE_H
#define TRAINER_CARVE_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define MOCO_CARVE_ALIGN 64

typedef struct {
    char *base;   /* NULL while measuring */
    size_t used;  /* bytes laid out so far */
    int overflow; /* a size overflowed size_t: the layout is unusable */
} moco_carve;

/* The next `bytes`, 64-byte aligned: a pointer into base, or NULL while
 * measuring (or after an overflow). */
static inline void *moco_carve_take(moco_carve *c, size_t bytes)
{
    size_t off = (c->used + (MOCO_CARVE_ALIGN - 1)) & ~(size_t)(MOCO_CARVE_ALIGN - 1);
    if (off < c->used || off + bytes < off) c->overflow = 1;
    if (c->overflow) return NULL;
    c->used = off + bytes;
    return c->base ? c->base + off : NULL;
}

/* Bytes the measured layout needs, rounded up to the alignment (as
 * aligned_alloc requires); 0 after an overflow. */
static inline size_t moco_carve_bytes(const moco_carve *c)
{
    size_t n = (c->used + (MOCO_CARVE_ALIGN - 1)) & ~(size_t)(MOCO_CARVE_ALIGN - 1);
    return c->overflow || n < c->used ? 0 : n ? n : MOCO_CARVE_ALIGN;
}

/* One 64-byte aligned block for the measured layout (free() releases it),
 * or NULL (out of memory, or an overflowed layout). */
static inline char *moco_carve_alloc(const moco_carve *c)
{
    size_t n = moco_carve_bytes(c);
    return n ? (char *)aligned_alloc(MOCO_CARVE_ALIGN, n) : NULL;
}

#endif
