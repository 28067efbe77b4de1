/* rng.h: the explicit, seeded random state every process uses.
 *
 * Part of the contract between processes: the loader's epoch order is a
 * function of (seed, epoch), an augmentation view's random stream is a
 * function of (seed, epoch, index, view). Any process, in any language, that
 * implements these few lines gets the same streams.
 *
 * Generator: SplitMix64 (Steele, Lea, Flood 2014): state += 0x9E3779B97F4A7C15,
 * output = mix(state). Streams are keyed by hashing the key words into the
 * initial state with the same mix. Never rand(), never the clock. */
#ifndef MOCO_RNG_H
#define MOCO_RNG_H

#include <stdint.h>

typedef struct { uint64_t s; } moco_rng;

static inline uint64_t moco_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Seed a stream from up to four key words (unused words: 0). */
static inline void moco_rng_init(moco_rng *r, uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    uint64_t s = moco_mix64(a + 0x9E3779B97F4A7C15ull);
    s = moco_mix64(s ^ (b + 0x632BE59BD9B4E019ull));
    s = moco_mix64(s ^ (c + 0x8CB92BA72F3D8DD7ull));
    s = moco_mix64(s ^ (d + 0xD1B54A32D192ED03ull));
    r->s = s;
}

static inline uint64_t moco_rng_u64(moco_rng *r)
{
    r->s += 0x9E3779B97F4A7C15ull;
    return moco_mix64(r->s);
}

/* Uniform double in [0, 1) with 53 random bits. */
static inline double moco_rng_uniform(moco_rng *r)
{
    return (double)(moco_rng_u64(r) >> 11) * 0x1.0p-53;
}

/* Uniform integer in [0, n), n > 0, without modulo bias (Lemire's method). */
static inline uint64_t moco_rng_below(moco_rng *r, uint64_t n)
{
    __uint128_t m = (__uint128_t)moco_rng_u64(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t t = (0 - n) % n;
        while (lo < t) {
            m = (__uint128_t)moco_rng_u64(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

/* Fill perm[0..n) with a uniformly random permutation of 0..n-1
 * (Fisher-Yates, drawing from the end). */
static inline void moco_rng_permutation(moco_rng *r, uint64_t *perm, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) perm[i] = i;
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = moco_rng_below(r, i);
        uint64_t t = perm[i - 1]; perm[i - 1] = perm[j]; perm[j] = t;
    }
}

#endif
