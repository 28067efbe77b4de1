/* test_lincls.c: the linear-evaluation classifier learns a separable problem
 * to (almost) perfection and fails a random-label one (top-1 and top-5 at
 * chance), with the official
 * hyper-parameters scaled to a small run. With fewer than 5 classes top-5
 * is undefined (NaN: null in moco lincls's JSON), not 100%. */
#include "tests/testutil.h"

#include <math.h>

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

/* 2 and 4 classes: top-1 measured, top-5 NaN (it was 100 whatever the model); 5: defined */
static void test_top5_few_classes(void **st)
{
    (void)st;
    static float x[200 * F];
    static int32_t y[200];
    moco_rng r;
    moco_rng_init(&r, 9, 0, 0, 0);
    make(x, y, 200, &r, 1);
    lincls_cfg c = {.epochs = 1, .batch = 32, .lr = 0.1, .momentum = 0.9, .seed = 1};
    for (int classes = 2; classes <= 5; classes++) {
        for (int i = 0; i < 200; i++) y[i] %= classes;
        double top1 = -1, top5 = -1;
        assert_int_equal(lincls_train_eval(x, y, 100, x + 100 * F, y + 100, 100, F, classes, &c, &top1, &top5), 0);
        print_message("  %d classes: top-1 %.1f%%, top-5 %g\n", classes, top1, top5);
        assert_true(top1 >= 0 && top1 <= 100);
        if (classes < 5) assert_true(isnan(top5));
        else assert_true(top5 == 100.0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_learns_separable), cmocka_unit_test(test_top5_few_classes)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
