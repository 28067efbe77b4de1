/* plot.c: `moco plot RUN_DIR [RUN_DIR ...] --out curves.png`: four panels
 * drawn with libvips from each RUN_DIR/metrics.jsonl: loss, contrastive
 * top-1 accuracy, kNN top-1 accuracy and throughput (pairs/s), against
 * epochs (the epoch records; the loss and accuracy from the step records
 * where there are more of them than epochs, else the epoch means).
 * --compare adds a second group in orange: RUN_DIRs, or
 * JSON-lines files of per-epoch records {"epoch": 1-based, "loss",
 * "knn_top1", "pairs_per_s"} such as ../shared/reference's PyTorch run,
 * comma-separated. A group of several runs (seeds) is drawn as its mean
 * curve, each run pale behind it; with --compare, the kNN curves' largest
 * gap is printed. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <vips/vips.h>

#include "formats/errors.h"
#include "formats/opts.h"
#include "formats/replace.h"
#include "trainer/plot.h"

const char *const plot_panel_titles[4] = {"InfoNCE loss (nats)", "contrastive top-1 accuracy (%)", "kNN top-1 accuracy (%)",
                                          "throughput (pairs/s)"};
const char *const plot_x_label = "epoch";

#define MAXPTS 100000 /* points of one series */
#define PW 560        /* panel size */
#define PH 360
#define MARGIN 60

typedef struct {
    double *x, *y;
    long *line; /* of the file, for messages */
    int n, cap;
    const char *path, *key;
} series;

/* one run's four series (loss, acc, knn, speed), or a group's mean curves */
typedef struct {
    series s[4];
    char path[4200]; /* the file read */
    const char *arg; /* as given: the legend */
} run;

typedef struct {
    run r[PLOT_MAX_RUNS];
    int n;
    run mean; /* n > 1 */
} group;

static int field(const char *line, const char *key, double *v)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(line, k);
    if (!p || !strncmp(p + strlen(k), "null", 4)) return 0;
    *v = atof(p + strlen(k));
    return 1;
}

enum { PLOT_MAX_EPOCHS = 1000000 };

/* a point kept (past MAXPTS points, and for values no axis draws, none is) */
static int add(series *s, double x, double y, long no)
{
    if (s->n >= MAXPTS || !isfinite(x) || !isfinite(y)) return 0;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 256;
        double *nx = realloc(s->x, cap * sizeof *nx), *ny = nx ? realloc(s->y, cap * sizeof *ny) : NULL;
        long *nl = ny ? realloc(s->line, cap * sizeof *nl) : NULL;
        if (nx) s->x = nx;
        if (ny) s->y = ny;
        if (nl) s->line = nl;
        if (!nl) return moco_err(MOCO_ENOMEM, "%s: no memory for %d points of %s", s->path, cap, s->key);
        s->cap = cap;
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->line[s->n] = no;
    s->n++;
    return 0;
}

static void series_free(series *s)
{
    free(s->x);
    free(s->y);
    free(s->line);
    memset(s, 0, sizeof *s);
}

static void run_free(run *r)
{
    for (int i = 0; i < 4; i++) series_free(&r->s[i]);
}

static void group_free(group *g)
{
    for (int i = 0; i < g->n; i++) run_free(&g->r[i]);
    run_free(&g->mean);
    g->n = 0;
}

/* a pixel coordinate: v clamped to [a, b] before it becomes an int (a cast
 * of a double out of int's range is undefined) */
static int pix(double v, int a, int b) { return !(v > a) ? a : v < b ? (int)v : b; }

static int text(VipsImage *im, const char *str, int x, int y, int size)
{
    VipsImage *t;
    char font[32];
    snprintf(font, sizeof font, "sans %d", size);
    if (vips_text(&t, str, "font", font, "dpi", 72, NULL)) return -1;
    double ink[3] = {30, 30, 30};
    /* the text mask is a band of 0..255: paint ink through it */
    int r = vips_draw_mask(im, ink, 3, t, x, y, NULL);
    g_object_unref(t);
    return r;
}

void plot_axis(double lo, double hi, int zero, double cap, double *alo, double *ahi, double *step)
{
    if (zero && lo > 0) lo = 0;
    /* one value (or values closer than the doubles around them resolve ticks): a little room around it */
    if (!(hi - lo > 1e-9 * fmax(1, fmax(fabs(lo), fabs(hi))))) {
        /* around 0 (-5e-324 and 0), a tenth of the value would be no room */
        double pad = fabs(lo) > 1e-5 ? fabs(lo) * 0.1 : 1;
        int nonneg = lo >= 0;
        lo -= pad, hi += pad;
        if (zero && nonneg && lo < 0) lo = 0;
    }
    double raw = (hi - lo) / 5, mag = pow(10, floor(log10(raw))), st = mag;
    static const double mult[] = {1, 2, 5, 10};
    for (int i = 0; i < 4; i++)
        if (mult[i] * mag >= raw) { st = mult[i] * mag; break; }
    double a = floor(lo / st + 1e-9) * st, b = ceil(hi / st - 1e-9) * st;
    if (cap > 0 && b > cap && hi <= cap) b = cap;
    if (b <= a) b = a + st;
    *alo = a, *ahi = b, *step = st;
}

void plot_tick_label(double v, double step, char *buf, size_t n)
{
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (dec > 6) dec = 6;
    if (fabs(v) < step * 1e-6) v = 0; /* no "-0" */
    snprintf(buf, n, "%.*f", dec, v);
}

typedef struct {
    double x, y;
    int run;
} mpoint;

static int mpoint_cmp(const void *a, const void *b)
{
    const mpoint *p = a, *q = b;
    return p->x < q->x ? -1 : p->x > q->x ? 1 : p->run - q->run;
}

int plot_mean_curve(int n, const double *const *x, const double *const *y, const int *len, double *mx, double *my, int cap)
{
    if (n < 1 || n > PLOT_MAX_RUNS) return moco_err(MOCO_EINVAL, "a mean curve of %d series (1 to %d)", n, PLOT_MAX_RUNS);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += len[i] > 0 ? (size_t)len[i] : 0;
    mpoint *p = malloc((total ? total : 1) * sizeof *p);
    if (!p) return moco_err(MOCO_ENOMEM, "no memory for a mean curve of %zu points", total);
    size_t k = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < len[i]; j++) p[k++] = (mpoint){x[i][j], y[i][j], i};
    qsort(p, total, sizeof *p, mpoint_cmp);
    int out = 0;
    for (size_t a = 0; a < total && out < cap;) {
        size_t b = a;
        double sum = 0;
        int runs = 0;
        while (b < total && p[b].x == p[a].x) { /* sorted by run within one x: a run's points there are adjacent */
            size_t e = b;
            double s = 0;
            for (; e < total && p[e].x == p[a].x && p[e].run == p[b].run; e++) s += p[e].y;
            sum += s / (double)(e - b); /* the run's mean at x: a resumed run may hold an epoch twice */
            runs++;
            b = e;
        }
        if (runs == n) mx[out] = p[a].x, my[out] = sum / n, out++;
        a = b;
    }
    free(p);
    return out;
}

static void draw(VipsImage *im, const series *s, const double *ink, int x0, int y0, int w, int h, double lo, double hi, double xmax,
                 int thick)
{
    int px = -1, py = -1;
    for (int i = 0; i < s->n; i++) { /* a step record's x may lie far beyond the last epoch */
        int x = x0 + pix(w * s->x[i] / xmax, -1, w + 1), y = y0 - pix(h * (s->y[i] - lo) / (hi - lo), -1, h + 1);
        if (px >= 0) {
            vips_draw_line(im, (double *)ink, 3, px, py, x, y, NULL);
            if (thick) vips_draw_line(im, (double *)ink, 3, px, py - 1, x, y - 1, NULL);
        }
        if (thick && s->n < 200) vips_draw_rect(im, (double *)ink, 3, x - 2, y - 2, 5, 5, "fill", TRUE, NULL);
        px = x;
        py = y;
    }
}

/* The y axis of panel i over the runs of both groups (not all empty): 0,
 * or MOCO_ECORRUPT naming the file, line and value (the largest in
 * magnitude) when no axis of doubles holds them (1e308 and -1e308: their
 * difference is infinite) */
static int yaxis(const group *const *g, int ng, int i, double *lo, double *hi, double *step)
{
    const series *ws = NULL;
    int wi = 0;
    double l = 0, h = 0;
    for (int k = 0; k < ng; k++)
        for (int r = 0; r < g[k]->n; r++) {
            const series *q = &g[k]->r[r].s[i];
            for (int j = 0; j < q->n; j++) {
                if (!ws) ws = q, wi = j, l = h = q->y[j];
                l = q->y[j] < l ? q->y[j] : l;
                h = q->y[j] > h ? q->y[j] : h;
                if (fabs(q->y[j]) > fabs(ws->y[wi])) ws = q, wi = j;
            }
        }
    int percent = i == 1 || i == 2;
    plot_axis(l, h, percent, percent ? 100 : 0, lo, hi, step);
    if (!ws || (isfinite(*lo) && isfinite(*hi) && isfinite(*hi - *lo) && *step > 0 && isfinite(*step))) return 0;
    return moco_err(MOCO_ECORRUPT, "%s: line %ld: %s %g: the panel \"%s\" has no finite axis for values from %g to %g", ws->path,
                    ws->line[wi], ws->key, ws->y[wi], plot_panel_titles[i], l, h);
}

static int group_points(const group *g, int i)
{
    int n = 0;
    for (int r = 0; r < g->n; r++) n += g->r[r].s[i].n;
    return n;
}

static const double BLUE[3] = {20, 90, 200}, ORANGE[3] = {230, 120, 20};

/* one group's curves in panel i: a single run as it is; several runs pale,
 * their mean curve over them */
static void draw_group(VipsImage *im, const group *g, int i, const double *ink, int x0, int y0, int w, int h, double lo, double hi,
                       double xmax)
{
    if (g->n == 1) {
        draw(im, &g->r[0].s[i], ink, x0, y0, w, h, lo, hi, xmax, 1);
        return;
    }
    double pale[3];
    for (int c = 0; c < 3; c++) pale[c] = ink[c] + 0.65 * (255 - ink[c]);
    for (int r = 0; r < g->n; r++) draw(im, &g->r[r].s[i], pale, x0, y0, w, h, lo, hi, xmax, 0);
    draw(im, &g->mean.s[i], ink, x0, y0, w, h, lo, hi, xmax, 1);
}

/* the x axis of every panel: 0 to *hi epochs (at least 1), ticks *step apart (whole epochs) */
static void xaxis(double epochs, double *hi, double *step)
{
    double lo;
    plot_axis(0, epochs > 0 ? epochs : 1, 1, 0, &lo, hi, step);
    if (*step < 1) *step = 1, *hi = ceil(*hi); /* whole epochs */
}

/* panel i: group a in blue, b (may be empty) in orange, on a y range that holds both (yaxis checked it) */
static int panel(VipsImage *im, int ox, int oy, int i, const group *a, const group *b, double epochs)
{
    double white[3] = {255, 255, 255}, grey[3] = {200, 200, 200}, axis[3] = {60, 60, 60};
    vips_draw_rect(im, white, 3, ox, oy, PW, PH, "fill", TRUE, NULL);
    int x0 = ox + MARGIN, y0 = oy + PH - 40, w = PW - MARGIN - 20, h = PH - 80;
    text(im, plot_panel_titles[i], ox + MARGIN, oy + 10, 14);
    vips_draw_line(im, axis, 3, x0, y0, x0 + w, y0, NULL);
    vips_draw_line(im, axis, 3, x0, y0, x0, y0 - h, NULL);
    if (group_points(a, i) == 0 && group_points(b, i) == 0) {
        text(im, "no data", x0 + w / 2 - 30, y0 - h / 2, 12);
        return 0;
    }
    double lo, hi, step, xhi, xstep;
    const group *gs[2] = {a, b};
    if (yaxis(gs, 2, i, &lo, &hi, &step)) return MOCO_ECORRUPT;
    char lab[64];
    /* ticks counted, not stepped to: a step below the spacing of doubles near lo would never arrive */
    int ny = (int)fmin(floor((hi - lo) / step + 1e-6), 50) + 1;
    for (int t = 0; t < ny; t++) {
        double v = lo + step * t;
        int y = y0 - pix(h * (v - lo) / (hi - lo), 0, h);
        vips_draw_line(im, grey, 3, x0 + 1, y, x0 + w, y, NULL);
        plot_tick_label(v, step, lab, sizeof lab);
        text(im, lab, ox + 5, y - 7, 10);
    }
    xaxis(epochs, &xhi, &xstep);
    double xmax = xhi;
    int nx = (int)fmin(floor(xhi / xstep + 1e-9), 50) + 1;
    for (int t = 0; t < nx; t++) {
        double v = xstep * t;
        plot_tick_label(v, xstep, lab, sizeof lab);
        text(im, lab, x0 + pix(w * v / xmax, 0, w) - 4, y0 + 8, 10);
    }
    text(im, plot_x_label, x0 + w / 2 - 15, y0 + 22, 10);
    draw_group(im, b, i, ORANGE, x0, y0, w, h, lo, hi, xmax);
    draw_group(im, a, i, BLUE, x0, y0, w, h, lo, hi, xmax);
    return 0;
}

/* the points of src in place of dst's (src left empty) */
static void series_take(series *dst, series *src)
{
    series_free(dst);
    *dst = *src;
    memset(src, 0, sizeof *src);
}

/* a safetensors file (a checkpoint) rather than text: 8 bytes of header
 * length (little-endian) that fits the file, then its JSON's '{' */
static int is_safetensors(FILE *f)
{
    uint8_t b[9];
    long size = fseek(f, 0, SEEK_END) ? -1 : ftell(f);
    rewind(f);
    if (size < 9 || fread(b, 1, 9, f) != 9) return 0;
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    return h >= 2 && h <= (uint64_t)size - 8 && b[8] == '{';
}

/* a run's series from its metrics.jsonl (0-based epoch records, step
 * records), or from a file of 1-based per-epoch records without "type";
 * returns the number of epochs, -1 with a message naming path. Loss and
 * accuracy: the step records where there are more of them than epoch
 * records with that value (they show the curve within epochs), else the
 * epoch records' means at each epoch's end (a run with fewer steps an
 * epoch than --log-every has few step records or none). */
static double load(const char *path, series *loss, series *acc, series *knn, series *speed)
{
    FILE *f = moco_fopen_regular(path); /* a FIFO is refused, not waited on */
    if (!f) return -1;
    if (is_safetensors(f)) {
        fclose(f);
        moco_err(MOCO_EFORMAT, "%s is a safetensors checkpoint, not a run directory or its metrics.jsonl", path);
        return -1;
    }
    rewind(f);
    double epochs = 0, spe = 0; /* steps per epoch, from the epoch records */
    loss->path = acc->path = knn->path = speed->path = path;
    loss->key = "loss", acc->key = "acc", knn->key = "knn_top1", speed->key = "pairs_per_s";
    series eloss = *loss, eacc = *acc; /* the epoch records' means */
    char line[8192];
    long no = 0;
    int rc = 0;
    /* two passes: epoch records first (they give steps per epoch) */
    while (!rc && fgets(line, sizeof line, f)) {
        double e, st, v;
        int ours = strstr(line, "\"type\":\"epoch\"") != NULL, plain = !strstr(line, "\"type\":");
        no++;
        if (!(ours || plain) || !field(line, "epoch", &e)) continue;
        if (!(e >= 0 && e <= PLOT_MAX_EPOCHS)) { /* 1e999 reads as inf: no axis holds it */
            fclose(f);
            moco_err(MOCO_ECORRUPT, "%s: line %ld: epoch %g is not an epoch number (0 to %d)", path, no, e, PLOT_MAX_EPOCHS);
            return -1;
        }
        if (plain) e -= 1; /* 1-based */
        if (e + 1 > epochs) epochs = e + 1;
        if (ours && field(line, "step", &st) && e >= 0 && st > 0) spe = st / (e + 1);
        if (field(line, "loss", &v)) rc = add(&eloss, e + 1, v, no);
        if (!rc && field(line, "acc", &v)) rc = add(&eacc, e + 1, v, no);
        if (!rc && field(line, "knn_top1", &v)) rc = add(knn, e + 1, v, no);
        if (!rc && field(line, "pairs_per_s", &v)) rc = add(speed, e + 1, v, no);
    }
    rewind(f);
    no = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        double st, v;
        no++;
        if (!strstr(line, "\"type\":\"step\"") || !field(line, "step", &st) || spe <= 0) continue;
        if (field(line, "loss", &v)) rc = add(loss, st / spe, v, no);
        if (!rc && field(line, "acc", &v)) rc = add(acc, st / spe, v, no);
    }
    fclose(f);
    if (!rc && loss->n <= eloss.n) series_take(loss, &eloss);
    if (!rc && acc->n <= eacc.n) series_take(acc, &eacc);
    series_free(&eloss); /* what was not taken */
    series_free(&eacc);
    return rc ? -1 : epochs;
}

/* g emptied, then one run in it, loaded from path: its epochs (load's) */
static double load_alone(group *g, const char *path)
{
    group_free(g);
    g->n = 1;
    run *r = &g->r[0];
    return load(path, &r->s[0], &r->s[1], &r->s[2], &r->s[3]);
}

double plot_load_check(const char *path)
{
    static group g;
    double epochs = load_alone(&g, path);
    const group *gs[1] = {&g};
    for (int i = 0; epochs > 0 && i < 4; i++) {
        double a, b, st;
        if (yaxis(gs, 1, i, &a, &b, &st)) epochs = -1;
    }
    group_free(&g);
    return epochs;
}

double plot_panel_points(const char *path, int i, double *x, double *y, int cap, plot_panel_info *info)
{
    if (i < 0 || i > 3 || cap < 0) return moco_err(MOCO_EINVAL, "panel %d, cap %d (panels 0 to 3, cap >= 0)", i, cap), -1;
    static group g;
    double epochs = load_alone(&g, path);
    const group *gs[1] = {&g};
    const series *s = &g.r[0].s[i];
    if (epochs > 0 && s->n && yaxis(gs, 1, i, &info->ylo, &info->yhi, &info->ystep)) epochs = -1;
    if (epochs >= 0) {
        info->n = s->n;
        for (int k = 0; k < s->n && k < cap; k++) x[k] = s->x[k], y[k] = s->y[k];
        xaxis(epochs, &info->xhi, &info->xstep);
    }
    group_free(&g);
    return epochs;
}

/* run r of a group from arg: arg/metrics.jsonl where arg is a directory,
 * else the file arg; its epochs, or -1 with a message (0: no epoch
 * records) */
static double load_run(run *r, const char *arg)
{
    r->arg = arg;
    struct stat st;
    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(r->path, sizeof r->path, "%s/metrics.jsonl", arg);
        if (stat(r->path, &st) != 0 && errno == ENOENT) {
            moco_err(MOCO_ENOTFOUND, "%s holds no metrics.jsonl: not a run directory of moco train", arg);
            return -1;
        }
    } else {
        snprintf(r->path, sizeof r->path, "%s", arg);
    }
    return load(r->path, &r->s[0], &r->s[1], &r->s[2], &r->s[3]);
}

/* each panel's mean curve of a group of several runs */
static int group_mean(group *g)
{
    if (g->n < 2) return 0;
    for (int i = 0; i < 4; i++) {
        const double *xs[PLOT_MAX_RUNS], *ys[PLOT_MAX_RUNS];
        int len[PLOT_MAX_RUNS], cap = 0;
        for (int r = 0; r < g->n; r++) {
            xs[r] = g->r[r].s[i].x, ys[r] = g->r[r].s[i].y, len[r] = g->r[r].s[i].n;
            cap = len[r] > cap ? len[r] : cap;
        }
        series *m = &g->mean.s[i];
        m->path = "the mean curve", m->key = g->r[0].s[i].key;
        if (!cap) continue;
        double *mx = malloc(cap * sizeof *mx), *my = malloc(cap * sizeof *my);
        int n = mx && my ? plot_mean_curve(g->n, xs, ys, len, mx, my, cap) : moco_err(MOCO_ENOMEM, "no memory for a mean curve");
        for (int k = 0; n > 0 && k < n; k++)
            if (add(m, mx[k], my[k], 0)) n = MOCO_ENOMEM;
        free(mx);
        free(my);
        if (n < 0) return n;
    }
    return 0;
}

/* the kNN curve a group is drawn with: its one run's, or its mean */
static const series *knn_curve(const group *g) { return g->n == 1 ? &g->r[0].s[2] : &g->mean.s[2]; }

/* "PATH" or "the mean of N runs" */
static void describe(const group *g, const char *label, char *buf, size_t n)
{
    if (g->n == 1) snprintf(buf, n, "%s", label ? label : g->r[0].arg);
    else snprintf(buf, n, "%s%sthe mean of %d runs", label ? label : "", label ? ", " : "", g->n);
}

/* the kNN gap, a's curve minus b's, at the epochs both have: printed */
static void print_gap(const group *a, const group *b, const char *la, const char *lb)
{
    const series *p = knn_curve(a), *q = knn_curve(b);
    int both = 0, within = 0;
    double worst = 0, at = 0;
    for (int i = 0; i < p->n; i++)
        for (int j = 0; j < q->n; j++)
            if (p->x[i] == q->x[j] && p->x[i] == floor(p->x[i])) {
                double d = p->y[i] - q->y[j];
                both++;
                within += fabs(d) <= 1.0;
                if (fabs(d) > fabs(worst) || both == 1) worst = d, at = p->x[i];
                break;
            }
    char da[4400], db[4400];
    describe(a, la, da, sizeof da);
    describe(b, lb, db, sizeof db);
    if (!both) {
        printf("moco plot: kNN top-1: no epoch that both %s and %s have\n", da, db);
        return;
    }
    printf("moco plot: kNN top-1, %s minus %s, at the %d epochs both have: largest difference %+.2f points at epoch %g; "
           "within 1 point at %d of %d\n",
           da, db, both, worst, at, within, both);
}

/* the comma-separated runs of --compare into parts (at most PLOT_MAX_RUNS): their count, or -1 */
static int split(char *s, char **parts)
{
    int n = 0;
    for (char *save = NULL, *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n == PLOT_MAX_RUNS) return -1;
        parts[n++] = t;
    }
    return n;
}

static int plot_draw(group *a, group *b, const char *out, const char *label, const char *clabel, double epochs);

int plot_main(int argc, char **argv)
{
    const char *out = "curves.png", *compare = NULL, *label = NULL, *clabel = NULL;
    const moco_opt opts[] = {
        {"out", MOCO_OPT_STR, &out, "PNG to write", 0, 0, NULL},
        {"compare", MOCO_OPT_STR, &compare,
         "RUN_DIRs or JSON-lines files of per-epoch records, comma-separated, drawn in orange (several: their mean)", 0, 0, NULL},
        {"label", MOCO_OPT_STR, &label, "legend of the RUN_DIRs with --compare (default: the path)", 0, 0, NULL},
        {"compare-label", MOCO_OPT_STR, &clabel, "legend of the --compare runs (default: the path)", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco plot", "RUN_DIR [RUN_DIR ...] [--out curves.png] [--compare RUN|EPOCHS.jsonl[,...]]",
                               "Draw loss, contrastive accuracy, kNN accuracy and throughput against epochs from\n"
                               "RUN_DIR/metrics.jsonl (written by moco train); --compare draws other runs beside them.\n"
                               "Several runs (seeds) are drawn as their mean curve, each run pale behind it (up to 16);\n"
                               "with --compare, the largest difference of the kNN curves is printed.",
                               opts, 1, PLOT_MAX_RUNS, NULL};
    char *pos[PLOT_MAX_RUNS];
    int np, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    if (!moco_opts_suffix(&spec, "out", out, ".png", "the curves are written as a PNG")) return 2;
    char *cparts[PLOT_MAX_RUNS], *cbuf = NULL;
    int nc = 0;
    if (compare) {
        if (!(cbuf = strdup(compare))) return 1;
        if ((nc = split(cbuf, cparts)) <= 0) {
            fprintf(stderr, "moco plot: --compare '%s': %s\n", compare, nc ? "more than 16 runs" : "no run named");
            free(cbuf);
            return 2;
        }
    }
    static group a, b; /* static: 2 x 17 runs of 4 KB paths; the points are on the heap */
    int rc = 1;
    double epochs = 0;
    for (int k = 0; k < np + nc; k++) {
        group *g = k < np ? &a : &b;
        const char *arg = k < np ? pos[k] : cparts[k - np];
        run *r = &g->r[g->n++];
        double e = load_run(r, arg);
        if (e < 0) {
            fprintf(stderr, "moco plot: %s\n", moco_errmsg()); /* it names the file */
            goto done;
        }
        if (e == 0) {
            if (k < np) fprintf(stderr, "moco plot: %s has no epoch records yet\n", r->path);
            else fprintf(stderr, "moco plot: %s: no per-epoch records\n", r->path);
            goto done;
        }
        epochs = e > epochs ? e : epochs;
    }
    /* every panel's axis, before anything is drawn or written */
    const group *gs[2] = {&a, &b};
    for (int i = 0; i < 4; i++) {
        double lo, hi, st;
        if (yaxis(gs, 2, i, &lo, &hi, &st)) {
            fprintf(stderr, "moco plot: %s\n", moco_errmsg()); /* it names the file and line */
            goto done;
        }
    }
    if (group_mean(&a) || group_mean(&b)) {
        fprintf(stderr, "moco plot: %s\n", moco_errmsg());
        goto done;
    }
    if ((rc = plot_draw(&a, &b, out, label, clabel, epochs)) == 0) {
        if (b.n) print_gap(&a, &b, label, clabel);
        printf("moco plot: %s (%g epochs)\n", out, epochs);
    }
done:
    group_free(&a);
    group_free(&b);
    free(cbuf);
    return rc;
}

/* the picture: legends when there are two groups, the four panels, the PNG written whole */
static int plot_draw(group *a, group *b, const char *out, const char *label, const char *clabel, double epochs)
{
    if (VIPS_INIT("moco")) return 1;
    int top = b->n ? 30 : 0, rc;
    VipsImage *im = NULL, *black;
    if (vips_black(&black, 2 * PW + 30, 2 * PH + 30 + top, "bands", 3, NULL) || vips_linear1(black, &im, 1, 235, NULL) ||
        vips_cast_uchar(im, &black, NULL)) {
        fprintf(stderr, "moco plot: libvips: %s\n", vips_error_buffer());
        return 1;
    }
    g_object_unref(im);
    im = black;
    VipsImage *mem = vips_image_copy_memory(im);
    g_object_unref(im);
    if (!mem) return 1;
    if (b->n) {
        char legend[9000], d[4400];
        const group *g[2] = {a, b};
        const char *l[2] = {label, clabel};
        for (int k = 0; k < 2; k++) {
            describe(g[k], l[k], d, sizeof d);
            snprintf(legend, sizeof legend, "%s%s", d, g[k]->n > 1 ? " (pale: each run)" : "");
            vips_draw_rect(mem, (double *)(k ? ORANGE : BLUE), 3, 10 + k * (PW + 10), 12, 24, 6, "fill", TRUE, NULL);
            text(mem, legend, 40 + k * (PW + 10), 6, 12);
        }
    }
    for (int i = 0; i < 4; i++) panel(mem, 10 + (i % 2) * (PW + 10), 10 + top + (i / 2) * (PH + 10), i, a, b, epochs);
    /* encoded in memory, then written whole or not at all (a temporary
     * file, checked writes, fsync, rename): never a cut PNG, never into a FIFO */
    void *png = NULL;
    size_t npng = 0;
    rc = vips_pngsave_buffer(mem, &png, &npng, NULL);
    g_object_unref(mem);
    if (rc) {
        fprintf(stderr, "moco plot: cannot encode %s: %s\n", out, vips_error_buffer());
        return 1;
    }
    rc = moco_write_replace(out, png, npng);
    g_free(png);
    if (rc) {
        fprintf(stderr, "moco plot: %s\n", moco_errmsg()); /* it names the file */
        return 1;
    }
    return 0;
}
