/* exp_terms.c: does the loss's vector exp (glibc libmvec, trainer/engine/
 * loss.c) change what the trainer computes, or only perturb it as any
 * summation order does? It fills ROWS rows of 4097 logits (InfoNCE's 1 + K
 * at K 4096; uniform in +-1..+-10, i.e. +-0.1..+-1 cosines over T 0.1),
 * runs nn_row_expsum at SIMD level 2 (AVX-512 libmvec) and 0 (scalar exp)
 * on each, and prints how many float terms differ, by how many ulp, and the
 * largest relative difference of the row sums (double). Seeded; needs a CPU
 * with AVX-512 for the comparison to mean anything (it says so otherwise).
 *
 *   make build/release/tools/quality/exp_terms && build/release/tools/quality/exp_terms [ROWS]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/rng.h"
#include "trainer/engine/conv3.h"
#include "trainer/engine/nn.h"

int main(int argc, char **argv)
{
    const int L = 4097, rows = argc > 1 ? atoi(argv[1]) : 2048;
    conv3_set_simd(2);
    if (conv3_simd() < 2) {
        fprintf(stderr, "exp_terms: this CPU has no AVX-512 level: nothing to compare\n");
        return 1;
    }
    float *l = malloc(sizeof(float) * L), *a = malloc(sizeof(float) * L), *b = malloc(sizeof(float) * L);
    if (!l || !a || !b || rows < 1) return 1;
    moco_rng r;
    moco_rng_init(&r, 1, 0, 0, 0);
    long differ = 0, total = 0;
    int max_ulp = 0;
    double max_sum_rel = 0;
    for (int row = 0; row < rows; row++) {
        for (int i = 0; i < L; i++) l[i] = (float)((2 * moco_rng_uniform(&r) - 1) * (1 + row % 10));
        conv3_set_simd(2);
        const float mx = nn_row_max(l, L);
        const double sa = nn_row_expsum(a, l, L, mx);
        conv3_set_simd(0);
        const double sb = nn_row_expsum(b, l, L, mx);
        max_sum_rel = fmax(max_sum_rel, fabs(sa - sb) / sb);
        for (int i = 0; i < L; i++, total++) {
            if (a[i] == b[i]) continue;
            int32_t ia, ib;
            memcpy(&ia, &a[i], 4), memcpy(&ib, &b[i], 4);
            differ++;
            max_ulp = abs(ia - ib) > max_ulp ? abs(ia - ib) : max_ulp;
        }
    }
    printf("exp_terms: %d rows of %d: %ld of %ld float terms differ, by at most %d ulp; row sums differ by at most %.2e (relative)\n",
           rows, L, differ, total, max_ulp, max_sum_rel);
    printf("{\"rows\":%d,\"terms\":%ld,\"terms_differ\":%ld,\"max_ulp\":%d,\"max_sum_rel\":%.3e}\n", rows, total, differ, max_ulp,
           max_sum_rel);
    free(l), free(a), free(b);
    return 0;
}
