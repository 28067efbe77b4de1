/* test_lincls.c: the linear-evaluation classifier learns a separable problem
 * to (almost) perfection and fails a random-label one (top-1 and top-5 at
 * chance), with the official
 * hyper-parameters scaled to a small run. */
#include "tests/testutil.h"

#include "formats/rng.h"
#include "trainer/lincls.h"

enum { NTR = 2000, NTE = 1000, F = 16, C = 10 };

static void make(float *x, int32_t *y, int n, moco_rng *r, int random_labels)
{
    for (int i = 0; i < n; i++) {
        y[i] = (int32_t)moco_rng_below(r, C);
        for (int f = 0; f < F; f++) x[i * F + f] = (float)(moco_rng_uniform(r) - 0.5 + (f == y[i] ? 1.0 : 0.0));
        if (random_labels) y[i] = (int32_t)moco_rng_below(r, C);
    }
}

static void test_learns_separable(void **st)
{
    (void)st;
    static float xtr[NTR * F], xte[NTE * F];
    static int32_t ytr[NTR], yte[NTE];
    moco_rng r;
    moco_rng_init(&r, 7, 0, 0, 0);
    make(xtr, ytr, NTR, &r, 0);
    make(xte, yte, NTE, &r, 0);
    lincls_cfg c = {.epochs = 20, .batch = 64, .lr = 1.0, .momentum = 0.9, .wd = 0, .schedule = {12, 16}, .nschedule = 2, .seed = 1};
    double top1 = 0, top5 = 0;
    assert_int_equal(lincls_train_eval(xtr, ytr, NTR, xte, yte, NTE, F, C, &c, &top1, &top5), 0);
    print_message("  separable: top-1 %.1f%%, top-5 %.1f%%\n", top1, top5);
    assert_true(top1 > 97);
    assert_true(top5 >= top1 && top5 > 99);
    /* random labels: nothing to learn */
    make(xtr, ytr, NTR, &r, 1);
    make(xte, yte, NTE, &r, 1);
    assert_int_equal(lincls_train_eval(xtr, ytr, NTR, xte, yte, NTE, F, C, &c, &top1, &top5), 0);
    print_message("  random labels: top-1 %.1f%%, top-5 %.1f%%\n", top1, top5);
    assert_true(top1 < 20);
    assert_true(top5 > 35 && top5 < 65); /* chance: 5 of 10 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_learns_separable)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
