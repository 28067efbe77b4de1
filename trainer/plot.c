/* plot.c: `moco plot RUN_DIR --out curves.png`: four panels drawn with
 * libvips from RUN_DIR/metrics.jsonl: loss, contrastive top-1 accuracy,
 * kNN top-1 accuracy and throughput (pairs/s), against epochs (the epoch
 * records; the step records fill in the loss and accuracy between them).
 * --compare adds a second run in orange: another RUN_DIR, or a JSON-lines
 * file of per-epoch records {"epoch": 1-based, "loss", "knn_top1",
 * "pairs_per_s"} such as ../shared/reference's PyTorch run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "formats/errors.h"
#include "formats/opts.h"
#include "formats/replace.h"
#include "trainer/plot.h"

const char *const plot_panel_titles[4] = {"InfoNCE loss (nats)", "contrastive top-1 accuracy (%)", "kNN top-1 accuracy (%)",
                                          "throughput (pairs/s)"};
const char *const plot_x_label = "epoch";

#define MAXPTS 100000
#define PW 560 /* panel size */
#define PH 360
#define MARGIN 60

typedef struct {
    double x[MAXPTS], y[MAXPTS];
    long line[MAXPTS]; /* of the file, for messages */
    int n;
    const char *path, *key;
} series;

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

static void add(series *s, double x, double y, long no)
{
    if (s->n < MAXPTS && isfinite(x) && isfinite(y)) {
        s->x[s->n] = x;
        s->y[s->n] = y;
        s->line[s->n] = no;
        s->n++;
    }
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

static void draw(VipsImage *im, const series *s, double *ink, int x0, int y0, int w, int h, double lo, double hi, double xmax)
{
    int px = -1, py = -1;
    for (int i = 0; i < s->n; i++) { /* a step record's x may lie far beyond the last epoch */
        int x = x0 + pix(w * s->x[i] / xmax, -1, w + 1), y = y0 - pix(h * (s->y[i] - lo) / (hi - lo), -1, h + 1);
        if (px >= 0) vips_draw_line(im, ink, 3, px, py, x, y, NULL);
        if (s->n < 200) vips_draw_rect(im, ink, 3, x - 2, y - 2, 5, 5, "fill", TRUE, NULL);
        px = x;
        py = y;
    }
}

/* The y axis of a panel holding s and c (not both empty): 0, or
 * MOCO_ECORRUPT naming the file, line and value (the largest in magnitude)
 * when no axis of doubles holds them (1e308 and -1e308: their difference
 * is infinite) */
static int yaxis(const series *s, const series *c, int percent, const char *title, double *lo, double *hi, double *step)
{
    const series *ws = s->n ? s : c;
    int wi = 0;
    double l = ws->y[0], h = l;
    for (int k = 0; k < 2; k++) {
        const series *q = k ? c : s;
        for (int i = 0; i < q->n; i++) {
            l = q->y[i] < l ? q->y[i] : l;
            h = q->y[i] > h ? q->y[i] : h;
            if (fabs(q->y[i]) > fabs(ws->y[wi])) ws = q, wi = i;
        }
    }
    plot_axis(l, h, percent, percent ? 100 : 0, lo, hi, step);
    if (isfinite(*lo) && isfinite(*hi) && isfinite(*hi - *lo) && *step > 0 && isfinite(*step)) return 0;
    return moco_err(MOCO_ECORRUPT, "%s: line %ld: %s %g: the panel \"%s\" has no finite axis for values from %g to %g", ws->path,
                    ws->line[wi], ws->key, ws->y[wi], title, l, h);
}

/* one panel: s in blue, c (may be empty) in orange, on a y range that holds both (yaxis checked it) */
static int panel(VipsImage *im, int ox, int oy, const char *title, const series *s, const series *c, double epochs, int percent)
{
    double white[3] = {255, 255, 255}, grey[3] = {200, 200, 200}, ink[3] = {20, 90, 200}, axis[3] = {60, 60, 60},
           orange[3] = {230, 120, 20};
    vips_draw_rect(im, white, 3, ox, oy, PW, PH, "fill", TRUE, NULL);
    int x0 = ox + MARGIN, y0 = oy + PH - 40, w = PW - MARGIN - 20, h = PH - 80;
    text(im, title, ox + MARGIN, oy + 10, 14);
    vips_draw_line(im, axis, 3, x0, y0, x0 + w, y0, NULL);
    vips_draw_line(im, axis, 3, x0, y0, x0, y0 - h, NULL);
    if (s->n == 0 && c->n == 0) {
        text(im, "no data", x0 + w / 2 - 30, y0 - h / 2, 12);
        return 0;
    }
    double lo, hi, step, xlo, xhi, xstep;
    if (yaxis(s, c, percent, title, &lo, &hi, &step)) return MOCO_ECORRUPT;
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
    plot_axis(0, epochs > 0 ? epochs : 1, 1, 0, &xlo, &xhi, &xstep);
    if (xstep < 1) xstep = 1, xhi = ceil(xhi); /* whole epochs */
    double xmax = xhi;
    int nx = (int)fmin(floor(xhi / xstep + 1e-9), 50) + 1;
    for (int t = 0; t < nx; t++) {
        double v = xstep * t;
        plot_tick_label(v, xstep, lab, sizeof lab);
        text(im, lab, x0 + pix(w * v / xmax, 0, w) - 4, y0 + 8, 10);
    }
    text(im, plot_x_label, x0 + w / 2 - 15, y0 + 22, 10);
    draw(im, c, orange, x0, y0, w, h, lo, hi, xmax);
    draw(im, s, ink, x0, y0, w, h, lo, hi, xmax);
    return 0;
}

/* a run's series from its metrics.jsonl (0-based epoch records, step
 * records), or from a file of 1-based per-epoch records without "type";
 * returns the number of epochs, -1 if path cannot be read */
static double load(const char *path, series *loss, series *acc, series *knn, series *speed)
{
    FILE *f = moco_fopen_regular(path); /* a FIFO is refused, not waited on */
    if (!f) return -1;
    double epochs = 0, spe = 0; /* steps per epoch, from the epoch records */
    loss->path = acc->path = knn->path = speed->path = path;
    loss->key = "loss", acc->key = "acc", knn->key = "knn_top1", speed->key = "pairs_per_s";
    char line[8192];
    long no = 0;
    /* two passes: epoch records first (they give steps per epoch) */
    while (fgets(line, sizeof line, f)) {
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
        if (plain && field(line, "loss", &v)) add(loss, e + 1, v, no);
        if (field(line, "knn_top1", &v)) add(knn, e + 1, v, no);
        if (field(line, "pairs_per_s", &v)) add(speed, e + 1, v, no);
    }
    rewind(f);
    no = 0;
    while (fgets(line, sizeof line, f)) {
        double st, v;
        no++;
        if (!strstr(line, "\"type\":\"step\"") || !field(line, "step", &st) || spe <= 0) continue;
        if (field(line, "loss", &v)) add(loss, st / spe, v, no);
        if (field(line, "acc", &v)) add(acc, st / spe, v, no);
    }
    fclose(f);
    return epochs;
}

double plot_load_check(const char *path)
{
    static series s[4], none; /* static: 3 MB */
    for (int i = 0; i < 4; i++) s[i].n = 0;
    double epochs = load(path, &s[0], &s[1], &s[2], &s[3]);
    for (int i = 0; epochs > 0 && i < 4; i++) {
        double a, b, st;
        if (s[i].n && yaxis(&s[i], &none, i == 1 || i == 2, plot_panel_titles[i], &a, &b, &st)) return -1;
    }
    return epochs;
}

int plot_main(int argc, char **argv)
{
    const char *out = "curves.png", *compare = NULL, *label = NULL, *clabel = NULL;
    const moco_opt opts[] = {
        {"out", MOCO_OPT_STR, &out, "PNG to write", 0, 0, NULL},
        {"compare", MOCO_OPT_STR, &compare, "another RUN_DIR, or a JSON-lines file of per-epoch records, drawn in orange", 0, 0, NULL},
        {"label", MOCO_OPT_STR, &label, "legend of RUN_DIR with --compare (default: its path)", 0, 0, NULL},
        {"compare-label", MOCO_OPT_STR, &clabel, "legend of the --compare run (default: its path)", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco plot", "RUN_DIR [--out curves.png] [--compare RUN_DIR2|EPOCHS.jsonl]",
                               "Draw loss, contrastive accuracy, kNN accuracy and throughput against epochs from\n"
                               "RUN_DIR/metrics.jsonl (written by moco train); --compare draws a second run beside it.",
                               opts, 1, 1, NULL};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    if (!moco_opts_suffix(&spec, "out", out, ".png", "the curves are written as a PNG")) return 2;
    char path[4200], cpath[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", pos[0]);
    static series loss, acc, knn, speed, closs, cacc, cknn, cspeed; /* static: 6 MB; empty at each call */
    loss.n = acc.n = knn.n = speed.n = closs.n = cacc.n = cknn.n = cspeed.n = 0;
    double epochs = load(path, &loss, &acc, &knn, &speed), cepochs = 0;
    if (epochs < 0) {
        fprintf(stderr, "moco plot: %s\n", moco_errmsg()); /* it names the file */
        return 1;
    }
    if (epochs == 0) {
        fprintf(stderr, "moco plot: %s has no epoch records yet\n", path);
        return 1;
    }
    if (compare) {
        snprintf(cpath, sizeof cpath, "%s/metrics.jsonl", compare);
        FILE *d = moco_fopen_regular(cpath);
        if (d) fclose(d);
        else snprintf(cpath, sizeof cpath, "%s", compare);
        if ((cepochs = load(cpath, &closs, &cacc, &cknn, &cspeed)) <= 0) {
            if (cepochs < 0) fprintf(stderr, "moco plot: %s\n", moco_errmsg()); /* it names the file */
            else fprintf(stderr, "moco plot: %s: no per-epoch records\n", cpath);
            return 1;
        }
        if (cepochs > epochs) epochs = cepochs;
    }
    /* every panel's axis, before anything is drawn or written */
    const series *ps[4][2] = {{&loss, &closs}, {&acc, &cacc}, {&knn, &cknn}, {&speed, &cspeed}};
    for (int i = 0; i < 4; i++) {
        double a, b, st;
        if ((ps[i][0]->n || ps[i][1]->n) && yaxis(ps[i][0], ps[i][1], i == 1 || i == 2, plot_panel_titles[i], &a, &b, &st)) {
            fprintf(stderr, "moco plot: %s\n", moco_errmsg()); /* it names the file and line */
            return 1;
        }
    }
    if (VIPS_INIT("moco")) return 1;
    int top = compare ? 30 : 0;
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
    if (compare) {
        char legend[9000];
        double blue[3] = {20, 90, 200}, orange[3] = {230, 120, 20};
        vips_draw_rect(mem, blue, 3, 10, 12, 24, 6, "fill", TRUE, NULL);
        snprintf(legend, sizeof legend, "%s", label ? label : pos[0]);
        text(mem, legend, 40, 6, 12);
        vips_draw_rect(mem, orange, 3, PW + 20, 12, 24, 6, "fill", TRUE, NULL);
        snprintf(legend, sizeof legend, "%s", clabel ? clabel : compare);
        text(mem, legend, PW + 50, 6, 12);
    }
    panel(mem, 10, 10 + top, plot_panel_titles[0], &loss, &closs, epochs, 0);
    panel(mem, PW + 20, 10 + top, plot_panel_titles[1], &acc, &cacc, epochs, 1);
    panel(mem, 10, PH + 20 + top, plot_panel_titles[2], &knn, &cknn, epochs, 1);
    panel(mem, PW + 20, PH + 20 + top, plot_panel_titles[3], &speed, &cspeed, epochs, 0);
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
    printf("moco plot: %s (%g epochs)\n", out, epochs);
    return 0;
}
