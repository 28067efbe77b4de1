/* garbage.c: send garbage frames to the pipeline's bound endpoints, for the
 * soak (tests/soak/soak.sh). Not part of moco: built by the script.
 *   garbage SEED N ENDPOINT:TYPE ...   TYPE is dealer (for the loader's
 *                                      ROUTERs: work, ctl) or push (the
 *                                      consumer's PULL: pairs)
 * Sends N messages to each endpoint: random bytes of random length (0..300),
 * a valid "MOCW" prefix with a random type and a wrong length, valid
 * prefixes of every type with random bodies, and random extra frames.
 * Prints how many messages it sent in all. Exit 0, or 1 on a ZeroMQ error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static uint64_t rng(uint64_t *s)
{
    *s += 0x9E3779B97F4A7C15ull;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int main(int argc, char **argv)
{
    if (argc < 4) { fprintf(stderr, "usage: garbage SEED N ENDPOINT:dealer|push ...\n"); return 2; }
    uint64_t seed = strtoull(argv[1], NULL, 10);
    int n = atoi(argv[2]);
    void *ctx = zmq_ctx_new();
    long sent = 0;
    for (int a = 3; a < argc; a++) {
        char ep[512];
        snprintf(ep, sizeof ep, "%s", argv[a]);
        char *colon = strrchr(ep, ':');
        if (!colon) return 2;
        *colon = 0;
        int push = !strcmp(colon + 1, "push");
        void *s = zmq_socket(ctx, push ? ZMQ_PUSH : ZMQ_DEALER);
        int zero = 0, tmo = 1000;
        zmq_setsockopt(s, ZMQ_LINGER, &tmo, sizeof tmo);
        zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
        (void)zero;
        if (zmq_connect(s, ep)) { fprintf(stderr, "garbage: connect %s: %s\n", ep, zmq_strerror(zmq_errno())); return 1; }
        for (int i = 0; i < n; i++) {
            uint8_t b[320];
            size_t len = rng(&seed) % 301;
            for (size_t j = 0; j < len; j++) b[j] = (uint8_t)rng(&seed);
            int mode = (int)(rng(&seed) % 3);
            if (mode >= 1 && len >= 8) { /* valid prefix, random type (1..63 or any) */
                memcpy(b, "MOCW", 4);
                b[4] = 1, b[5] = 0;
                b[6] = mode == 1 ? (uint8_t)(1 + rng(&seed) % 12) : b[6];
                b[7] = mode == 1 ? 0 : b[7];
            }
            int more = rng(&seed) % 4 == 0;
            if (zmq_send(s, b, len, more ? ZMQ_SNDMORE : 0) < 0) break;
            if (more) {
                size_t l2 = rng(&seed) % 5000;
                uint8_t *x = malloc(l2 + 1);
                for (size_t j = 0; j < l2; j++) x[j] = (uint8_t)rng(&seed);
                zmq_send(s, x, l2, 0);
                free(x);
            }
            sent++;
        }
        zmq_close(s);
    }
    zmq_ctx_term(ctx);
    printf("%ld\n", sent);
    return 0;
}
