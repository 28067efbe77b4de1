/* test_knn.c: the kNN monitor against a full-sort reference, a hand-worked
 * example, and its refusals. */
#include "tests/testutil.h"

#include <math.h>

#include "formats/errors.h"
#include "formats/rng.h"
#include "trainer/knn.h"

static void normalize(float *x, int n, int d)
{
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)x[i * d + j] * x[i * d + j];
        for (int j = 0; j < d; j++) x[i * d + j] = (float)(x[i * d + j] / sqrt(s));
    }
}

static void test_matches_reference(void **st)
{
    (void)st;
    enum { NB = 3000, NQ = 300, D = 16, C = 7 };
    static float bank[NB * D], q[NQ * D];
    static int32_t lab[NB], p1[NQ], p2[NQ];
    moco_rng r;
    moco_rng_init(&r, 42, 0, 0, 0);
    print_message("  seed 42\n");
    for (int i = 0; i < NB; i++) {
        lab[i] = (int32_t)moco_rng_below(&r, C);
        for (int j = 0; j < D; j++) bank[i * D + j] = (float)(moco_rng_uniform(&r) - 0.5 + (j == lab[i] ? 0.7 : 0));
    }
    for (int i = 0; i < NQ * D; i++) q[i] = (float)(moco_rng_uniform(&r) - 0.5);
    for (int i = 0; i < NQ; i++) q[i * D + i % C] += 0.7f;
    normalize(bank, NB, D);
    normalize(q, NQ, D);
    for (int k = 1; k <= 200; k *= 14) {
        assert_int_equal(knn_classify(p1, bank, lab, NB, q, NQ, D, C, k, 0.1f), 0);
        assert_int_equal(knn_classify_ref(p2, bank, lab, NB, q, NQ, D, C, k, 0.1f), 0);
        int diff = 0, right = 0;
        for (int i = 0; i < NQ; i++) {
            diff += p1[i] != p2[i];
            right += p1[i] == i % C;
        }
        print_message("  k=%d: %d of %d differ from the reference, accuracy %.2f\n", k, diff, NQ, (double)right / NQ);
        assert_int_equal(diff, 0);
        assert_true(right > NQ / 2); /* the planted class is found */
    }
}

static void test_hand_example(void **st)
{
    (void)st;
    /* bank on a circle; query at angle 0. sims: 1.0 (label 0), 0.8 (1), 0.6 (1), -1 (0) */
    float bank[4 * 2] = {1, 0, 0.8f, 0.6f, 0.6f, 0.8f, -1, 0};
    int32_t lab[4] = {0, 1, 1, 0}, pred[1];
    float q[2] = {1, 0};
    /* k=1: label 0. k=3, t=1: e^1 = 2.718 vs e^0.8 + e^0.6 = 4.048: label 1.
     * k=3, t=0.1: e^10 = 22026 vs e^8 + e^6 = 3384: label 0 */
    assert_int_equal(knn_classify(pred, bank, lab, 4, q, 1, 2, 2, 1, 0.1f), 0);
    assert_int_equal(pred[0], 0);
    assert_int_equal(knn_classify(pred, bank, lab, 4, q, 1, 2, 2, 3, 1.0f), 0);
    assert_int_equal(pred[0], 1);
    assert_int_equal(knn_classify(pred, bank, lab, 4, q, 1, 2, 2, 3, 0.1f), 0);
    assert_int_equal(pred[0], 0);
    /* k larger than the bank: all four vote. t=1: e^1 + e^-1 = 3.086 (label
     * 0) vs e^0.8 + e^0.6 = 4.048 (label 1); t=0.1: e^10 + e^-10 = 22026 vs
     * e^8 + e^6 = 3384 */
    assert_int_equal(knn_classify(pred, bank, lab, 4, q, 1, 2, 2, 200, 1.0f), 0);
    assert_int_equal(pred[0], 1);
    pred[0] = -1;
    assert_int_equal(knn_classify(pred, bank, lab, 4, q, 1, 2, 2, 200, 0.1f), 0);
    assert_int_equal(pred[0], 0);
    /* a small temperature: sims 1.0 (label 1), 0.99 and 0.98 (label 0), t 0.001: e^1000 against
     * e^990 + e^980, label 1. Unscaled, every weight overflowed to inf and the tie went to class 0. */
    float near[3 * 2] = {1, 0, 0.99f, 0.14106736f, 0.98f, 0.19899749f};
    int32_t nlab[3] = {1, 0, 0};
    pred[0] = -1;
    assert_int_equal(knn_classify(pred, near, nlab, 3, q, 1, 2, 2, 3, 0.001f), 0);
    assert_int_equal(pred[0], 1);
    assert_int_equal(knn_classify(pred, near, nlab, 3, q, 1, 2, 2, 3, 1.0f), 0); /* warm: the two of label 0 outvote it */
    assert_int_equal(pred[0], 0);
    lab[3] = 5;
    assert_int_equal(knn_classify(pred, bank, lab, 4, q, 1, 2, 2, 3, 1.0f), MOCO_EINVAL);
    lab[3] = 0;
    assert_int_equal(knn_classify(pred, bank, lab, 4, q, 1, 2, 2, 0, 1.0f), MOCO_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_matches_reference), cmocka_unit_test(test_hand_example)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
