/* test_plot.c: the axes of `moco plot`: 1-2-5 steps, whole-step ranges,
 * zero-based and capped percentages, labels without exponents or noise
 * digits (1.35e+03 and -0.641 were printed before). */
#include "tests/testutil.h"

#include <math.h>
#include <string.h>

#include "trainer/plot.h"

static void axis_is(double lo, double hi, int zero, double cap, double elo, double ehi, double est)
{
    double a, b, st;
    plot_axis(lo, hi, zero, cap, &a, &b, &st);
    print_message("  [%g, %g] zero %d cap %g -> [%g, %g] step %g\n", lo, hi, zero, cap, a, b, st);
    assert_true(fabs(a - elo) < 1e-9 && fabs(b - ehi) < 1e-9 && fabs(st - est) < 1e-12);
    double m = st / pow(10, floor(log10(st)));
    assert_true(fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9);
    int n = (int)lround((b - a) / st);
    assert_true(n >= 1 && n <= 6);
    assert_true(a <= lo + 1e-9 && b >= (cap > 0 && hi > cap ? cap : hi) - 1e-9);
}

static void test_axes(void **state)
{
    (void)state;
    axis_is(36.76, 61.99, 1, 100, 0, 80, 20);   /* kNN %: from 0 */
    axis_is(4.74, 6.6, 0, 0, 4.5, 7, 0.5);      /* loss */
    axis_is(0, 1350, 0, 0, 0, 1500, 500);       /* throughput */
    axis_is(12, 99.5, 1, 100, 0, 100, 20);      /* capped at 100 */
    axis_is(-0.641, 0.2, 0, 0, -0.8, 0.2, 0.2);
    axis_is(5, 5, 0, 0, 4.4, 5.6, 0.2);         /* one value */
    /* two values 2e-12 apart near 12345 (a metrics file's full-precision floats): closer than
     * ticks can be told apart there, so one value with room around it; before, a step of
     * 5e-13, below the spacing of doubles at 12345 (1.8e-12), and the tick loop never ended */
    double a, b, st;
    plot_axis(12345.678901234567, 12345.678901234569, 0, 0, &a, &b, &st);
    print_message("  [12345.678901234567, ...569] -> [%.17g, %.17g] step %g\n", a, b, st);
    assert_true(a + st > a && st > 1e-6 && b > a && (b - a) / st <= 6.0 + 1e-9);
}

static void label_is(double v, double step, const char *want)
{
    char b[64];
    plot_tick_label(v, step, b, sizeof b);
    print_message("  %g (step %g) -> \"%s\"\n", v, step, b);
    assert_string_equal(b, want);
    assert_null(strchr(b, 'e'));
}

static void test_labels(void **state)
{
    (void)state;
    label_is(1500, 500, "1500");
    label_is(4.6000000000000005, 0.2, "4.6");
    label_is(60, 20, "60");
    label_is(-1e-17, 0.2, "0.0");
    label_is(0.05, 0.05, "0.05");
}

/* every panel names its unit: "(...)" at the end of its title; the x axis is epochs */
static void test_units(void **state)
{
    (void)state;
    const char *want[4] = {"(nats)", "(%)", "(%)", "(pairs/s)"};
    for (int i = 0; i < 4; i++) {
        size_t n = strlen(plot_panel_titles[i]), u = strlen(want[i]);
        assert_true(n > u);
        assert_string_equal(plot_panel_titles[i] + n - u, want[i]);
    }
    assert_string_equal(plot_x_label, "epoch");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_axes), cmocka_unit_test(test_labels), cmocka_unit_test(test_units)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
