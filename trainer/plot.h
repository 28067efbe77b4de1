/* plot.h: `moco plot` (trainer/plot.c), the axis rule it draws with, and
 * the mean curve of a group of runs. */
#ifndef TRAINER_PLOT_H
#define TRAINER_PLOT_H

#include <stddef.h>

int plot_main(int argc, char **argv);

/* At most this many runs in each group of a plot (RUN_DIRs; --compare's). */
#define PLOT_MAX_RUNS 16

/* The mean curve of n series (1 to PLOT_MAX_RUNS; series i holds len[i]
 * points x[i][k], y[i][k] in any order): at each x that every series
 * holds, the mean over the series of each one's mean there (a resumed run
 * may hold an epoch twice); an x that some series lacks is left out.
 * Writes at most cap points to mx, my, in increasing x; returns their
 * count, or MOCO_EINVAL / MOCO_ENOMEM with a message. */
int plot_mean_curve(int n, const double *const *x, const double *const *y, const int *len, double *mx, double *my, int cap);

/* What moco plot reads of RUN_DIR/metrics.jsonl (or a --compare file) at
 * path, for tests/fuzz/fuzz_metrics.c: the series loaded and every panel's
 * y axis checked, as plot_main does before it draws. Returns the number of
 * epochs (0: no epoch records), or -1 with a message naming path (and the
 * line, for a value no axis holds). */
double plot_load_check(const char *path);

/* What panel i (0 to 3, as plot_panel_titles) of `moco plot` draws for
 * the one run at path (a metrics.jsonl, or a file of per-epoch records),
 * for tests: info->n points (0: the panel says "no data"), the first cap
 * of them written to x (epochs) and y in drawing order; the y axis from
 * info->ylo to info->yhi, ticks info->ystep apart (set only when n > 0);
 * the x axis from 0 to info->xhi epochs, ticks info->xstep apart. Returns
 * the number of epochs (0: no epoch records, which moco plot refuses), or
 * -1 with a message naming path (MOCO_EINVAL: i or cap out of range). */
typedef struct {
    int n;
    double ylo, yhi, ystep;
    double xhi, xstep;
} plot_panel_info;
double plot_panel_points(const char *path, int i, double *x, double *y, int cap, plot_panel_info *info);

/* A readable axis for data in [lo, hi]: ticks at multiples of a step of
 * 1, 2 or 5 x 10^k, 3 to 6 intervals, the range widened to whole steps.
 * zero: the axis starts at 0 (accuracies); cap > 0: it ends at most there
 * (100 for a percentage). */
void plot_axis(double lo, double hi, int zero, double cap, double *alo, double *ahi, double *step);

/* The label of tick value v on an axis of that step: fixed-point with just
 * the decimals the step needs ("0.5", "1350", "62"), never an exponent. */
void plot_tick_label(double v, double step, char *buf, size_t n);

/* The four panels' titles, each with its unit in parentheses ("InfoNCE
 * loss (nats)", ...), and the x axis's label, in drawing order. */
extern const char *const plot_panel_titles[4];
extern const char *const plot_x_label;

#endif
