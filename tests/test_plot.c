/* test_plot.c: the axes of `moco plot`: 1-2-5 steps, whole-step ranges,
 * zero-based and capped percentages, labels without exponents or noise
 * digits (1.35e+03 and -0.641 were printed before); extreme values refused
 * or drawn clamped; the PNG written whole or not at all; the mean curve of
 * a group of runs; a run's epoch means drawn when its step records are
 * fewer than its epochs; a checkpoint or a directory without metrics.jsonl
 * refused saying so. */
#include "tests/testutil.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "formats/errors.h"
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

/* dir/metrics.jsonl holds text */
static void write_metrics(const char *dir, const char *text)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* dir/metrics.jsonl holds text; moco plot dir --out out: its exit status */
static int plot(const char *dir, const char *text, const char *out)
{
    write_metrics(dir, text);
    char *argv[] = {"plot", (char *)dir, "--out", (char *)out, NULL};
    return plot_main(4, argv);
}

static int is_png(const char *path)
{
    size_t n = 0;
    uint8_t *b = tu_read_file(path, &n);
    int ok = b && n > 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8);
    free(b);
    return ok;
}

/* Values finite but extreme: 1e308 and -1e308 (their range is infinite:
 * NaN ticks, casts of doubles out of int's range, a blank panel, exit 0
 * before) are refused naming the file, line and value; -5e-324 and 0 (a
 * range below what a tenth of the value pads) get an axis; a step record
 * far beyond the last epoch is drawn clamped. The PNG is written whole or
 * not at all: a FIFO at --out is refused (it was written into), a failed
 * write (RLIMIT_FSIZE: a full disk) leaves the old file. */
static void test_extremes_and_output(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("test_plot");
    char out[4200], msg[8600];
    snprintf(out, sizeof out, "%s/c.png", dir);
    assert_int_equal(plot(dir, "{\"type\":\"epoch\",\"epoch\":0,\"step\":10,\"loss\":5,\"pairs_per_s\":1e308}\n"
                               "{\"type\":\"epoch\",\"epoch\":1,\"step\":20,\"loss\":4,\"pairs_per_s\":-1e308}\n", out), 1);
    snprintf(msg, sizeof msg, "%s/metrics.jsonl: line 1: pairs_per_s 1e+308: the panel \"throughput (pairs/s)\" has no finite axis "
             "for values from -1e+308 to 1e+308", dir);
    assert_string_equal(moco_errmsg(), msg);
    assert_false(tu_exists(out));
    double a, b, st;
    plot_axis(-5e-324, 0, 1, 100, &a, &b, &st);
    print_message("  [-5e-324, 0] -> [%g, %g] step %g\n", a, b, st);
    assert_true(a == -1 && b == 1 && st == 0.5);
    assert_int_equal(plot(dir, "{\"type\":\"epoch\",\"epoch\":0,\"step\":10,\"knn_top1\":-5e-324}\n"
                               "{\"type\":\"epoch\",\"epoch\":1,\"step\":20,\"knn_top1\":0}\n"
                               "{\"type\":\"step\",\"step\":1e300,\"loss\":3,\"acc\":1e300}\n", out), 0);
    assert_true(is_png(out));
    /* a FIFO at --out */
    char fifo[4200];
    snprintf(fifo, sizeof fifo, "%s/fifo.png", dir);
    assert_int_equal(mkfifo(fifo, 0644), 0);
    const char *ok = "{\"type\":\"epoch\",\"epoch\":0,\"step\":10,\"loss\":5,\"knn_top1\":20,\"pairs_per_s\":100}\n";
    assert_int_equal(plot(dir, ok, fifo), 1);
    snprintf(msg, sizeof msg, "%s is a FIFO, not a regular file; not replacing it", fifo);
    assert_string_equal(moco_errmsg(), msg);
    /* a full disk: the old PNG stays */
    size_t n0, n1;
    uint8_t *old = tu_read_file(out, &n0);
    assert_non_null(old);
    struct rlimit rl0, rl;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl0), 0);
    void (*sig0)(int) = signal(SIGXFSZ, SIG_IGN);
    rl = rl0;
    rl.rlim_cur = 1024;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
    char *argv[] = {"plot", (char *)dir, "--out", out, NULL}; /* metrics.jsonl: ok's, written above */
    int rc = plot_main(4, argv);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl0), 0);
    signal(SIGXFSZ, sig0);
    assert_int_equal(rc, 1);
    snprintf(msg, sizeof msg, "cannot write %s: %s; it is left as it was", out, strerror(EFBIG));
    assert_string_equal(moco_errmsg(), msg);
    uint8_t *now = tu_read_file(out, &n1);
    assert_non_null(now);
    assert_int_equal(n1, n0);
    assert_memory_equal(now, old, n0);
    free(old);
    free(now);
    assert_int_not_equal(tu_sh("ls '%s' | grep -q 'tmp$'", dir), 0);
}

/* A group's mean curve: only at the x every run holds, each run's own
 * mean first (run 0 holds epoch 2 twice, as a resumed run's file may), in
 * increasing x whatever the order read; cap bounds what is written; no
 * runs, or more than PLOT_MAX_RUNS, is refused. */
static void test_mean_curve(void **state)
{
    (void)state;
    const double x0[] = {3, 1, 2, 2}, y0[] = {50, 10, 20, 30};
    const double x1[] = {1, 2, 3, 4}, y1[] = {14, 40, 56, 70};
    const double x2[] = {2, 1, 3}, y2[] = {31, 12, 47};
    const double *xs[] = {x0, x1, x2}, *ys[] = {y0, y1, y2};
    const int len[] = {4, 4, 3};
    double mx[8], my[8];
    int n = plot_mean_curve(3, xs, ys, len, mx, my, 8);
    assert_int_equal(n, 3);
    const double wx[] = {1, 2, 3}, wy[] = {12, 32, 51}; /* (10+14+12)/3, (25+40+31)/3, (50+56+47)/3 */
    for (int i = 0; i < 3; i++) {
        print_message("  x %g: mean %g (want %g)\n", mx[i], my[i], wy[i]);
        assert_true(mx[i] == wx[i] && fabs(my[i] - wy[i]) < 1e-12);
    }
    assert_int_equal(plot_mean_curve(3, xs, ys, len, mx, my, 2), 2);
    assert_true(mx[1] == 2 && fabs(my[1] - 32) < 1e-12);
    assert_int_equal(plot_mean_curve(1, xs + 1, ys + 1, len + 1, mx, my, 8), 4); /* one run: itself */
    assert_true(mx[3] == 4 && my[3] == 70);
    assert_int_equal(plot_mean_curve(0, xs, ys, len, mx, my, 8), MOCO_EINVAL);
    assert_int_equal(plot_mean_curve(PLOT_MAX_RUNS + 1, xs, ys, len, mx, my, 8), MOCO_EINVAL);
    assert_string_equal(moco_errmsg(), "a mean curve of 17 series (1 to 16)");
}

/* panel i of the run at path draws the n points (x[k], y[k]), on axes that hold every one */
static void panel_is(const char *path, int i, int n, const double *x, const double *y)
{
    double px[64], py[64];
    plot_panel_info in = {0};
    double epochs = plot_panel_points(path, i, px, py, 64, &in);
    print_message("  panel \"%s\": %g epochs, %d points, y axis [%g, %g], x axis [0, %g]\n", plot_panel_titles[i], epochs, in.n,
                  in.ylo, in.yhi, in.xhi);
    for (int k = 0; k < in.n && k < 64; k++) print_message("    (%g, %g)\n", px[k], py[k]);
    assert_true(epochs > 0);
    assert_int_equal(in.n, n);
    for (int k = 0; k < n; k++) {
        assert_true(fabs(px[k] - x[k]) < 1e-12 && fabs(py[k] - y[k]) < 1e-12);
        assert_true(py[k] >= in.ylo && py[k] <= in.yhi);
        assert_true(px[k] >= 0 && px[k] <= in.xhi);
    }
}

/* A run with fewer steps per epoch than --log-every: its epoch records
 * hold loss and acc (the epoch means), its step records few or none. The
 * loss and accuracy panels draw the epoch means against epochs, on axes
 * that hold them (before: "no data" with no step record; with one, that
 * one point, the axis around it and the means outside). With more step
 * records than epochs, the step records are drawn as before. A checkpoint
 * and a directory without metrics.jsonl are refused saying so. */
static void test_epoch_means(void **state)
{
    (void)state;
    char dir[4200], path[4300], out[4300], msg[9000];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir("test_plot_means"));
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    snprintf(out, sizeof out, "%s/p.png", dir);
    const char *epochs = "{\"type\":\"epoch\",\"epoch\":0,\"step\":4,\"loss\":6.5,\"acc\":10,\"knn_top1\":20,\"pairs_per_s\":100}\n"
                         "{\"type\":\"epoch\",\"epoch\":1,\"step\":8,\"loss\":6,\"acc\":20,\"knn_top1\":25,\"pairs_per_s\":110}\n"
                         "{\"type\":\"epoch\",\"epoch\":2,\"step\":12,\"loss\":5.5,\"acc\":30,\"knn_top1\":30,\"pairs_per_s\":120}\n";
    const double ex[] = {1, 2, 3}, eloss[] = {6.5, 6, 5.5}, eacc[] = {10, 20, 30};
    /* epoch records only */
    write_metrics(dir, epochs);
    panel_is(path, 0, 3, ex, eloss);
    panel_is(path, 1, 3, ex, eacc);
    const double knn[] = {20, 25, 30};
    panel_is(path, 2, 3, ex, knn);
    assert_int_equal(plot(dir, epochs, out), 0);
    assert_true(is_png(out));
    /* one step record (step 10 of 12, --log-every 10): the epoch means still */
    char text[2000];
    snprintf(text, sizeof text, "%s{\"type\":\"step\",\"epoch\":2,\"step\":10,\"loss\":7.25,\"acc\":4}\n", epochs);
    write_metrics(dir, text);
    panel_is(path, 0, 3, ex, eloss);
    panel_is(path, 1, 3, ex, eacc);
    /* more step records than epochs (4 steps an epoch, --log-every 2): the step records */
    const char *steps = "{\"type\":\"step\",\"epoch\":0,\"step\":2,\"loss\":7,\"acc\":5}\n"
                        "{\"type\":\"step\",\"epoch\":0,\"step\":4,\"loss\":6.75,\"acc\":6}\n"
                        "{\"type\":\"epoch\",\"epoch\":0,\"step\":4,\"loss\":6.9,\"acc\":5.5}\n"
                        "{\"type\":\"step\",\"epoch\":1,\"step\":6,\"loss\":6.5,\"acc\":8}\n"
                        "{\"type\":\"step\",\"epoch\":1,\"step\":8,\"loss\":6.25,\"acc\":9}\n"
                        "{\"type\":\"epoch\",\"epoch\":1,\"step\":8,\"loss\":6.4,\"acc\":8.5}\n";
    write_metrics(dir, steps);
    const double sx[] = {0.5, 1, 1.5, 2}, sloss[] = {7, 6.75, 6.5, 6.25}, sacc[] = {5, 6, 8, 9};
    panel_is(path, 0, 4, sx, sloss);
    panel_is(path, 1, 4, sx, sacc);
    /* a checkpoint: 8 bytes of header length (LE), its JSON header, the tensor's 8 bytes */
    const char hdr[] = "{\"queue_ptr\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}";
    char ckpt[4300];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint_last.safetensors", dir);
    FILE *f = fopen(ckpt, "wb");
    assert_non_null(f);
    uint8_t len[8] = {sizeof hdr - 1}, zero[8] = {0};
    assert_true(fwrite(len, 8, 1, f) == 1 && fwrite(hdr, sizeof hdr - 1, 1, f) == 1 && fwrite(zero, 8, 1, f) == 1);
    fclose(f);
    char *argv[] = {"plot", ckpt, "--out", out, NULL};
    assert_int_equal(plot_main(4, argv), 1);
    snprintf(msg, sizeof msg, "%s is a safetensors checkpoint, not a run directory or its metrics.jsonl", ckpt);
    print_message("  %s\n", moco_errmsg());
    assert_string_equal(moco_errmsg(), msg);
    /* a directory without metrics.jsonl */
    char empty[4300];
    snprintf(empty, sizeof empty, "%s/empty", dir);
    assert_int_equal(mkdir(empty, 0755), 0);
    argv[1] = empty;
    assert_int_equal(plot_main(4, argv), 1);
    snprintf(msg, sizeof msg, "%s holds no metrics.jsonl: not a run directory of moco train", empty);
    print_message("  %s\n", moco_errmsg());
    assert_string_equal(moco_errmsg(), msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_axes), cmocka_unit_test(test_labels), cmocka_unit_test(test_units),
                                       cmocka_unit_test(test_extremes_and_output), cmocka_unit_test(test_mean_curve),
                                       cmocka_unit_test(test_epoch_means)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
