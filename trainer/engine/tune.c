/* tune.c: the measurements and the wisdom file of tune.h. The table of
 * choices lives in memory (loaded from the file at the first tune_conv);
 * tune_save merges the new choices into the file. One thread (the one
 * making models) calls these. */
#include "trainer/engine/tune.h"
#include "trainer/engine/conv3.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/json.h"
#include "formats/jsonw.h"
#include "formats/replace.h"
#include "formats/rng.h"
#include "trainer/engine/blascore.h"
#include "trainer/engine/par.h"

typedef struct {
    tune_shape s;
    int layer;                  /* TUNE_CONV or TUNE_LINEAR */
    int pass, precision, fresh; /* fresh: measured here, not yet saved */
    int used;                   /* returned by tune_conv or tune_linear (tune_used_lines) */
    tune_choice c;
} entry;

static int mode = TUNE_RULE, loaded;
static char path[4096], cpu[128], build[64], note[4096 + 256];
static entry *tab;
static int ntab, captab;

static const char *const pass_names[TUNE_PASSES] = {"fwd", "bwd", "bwd-w"};
const char *tune_pass_name(int pass) { return pass >= 0 && pass < TUNE_PASSES ? pass_names[pass] : "?"; }
int tune_mode(void) { return mode; }
const char *tune_path(void) { return path; }
const char *tune_cpu(void) { return cpu; }
const char *tune_build(void) { return build; }

const char *tune_note(void)
{
    static char out[sizeof note];
    if (!note[0]) return NULL;
    memcpy(out, note, sizeof note), note[0] = 0;
    return out;
}

int tune_configure(int m, const char *p)
{
    mode = m, loaded = 0, ntab = 0, note[0] = 0;
    const char *e = getenv("MOCO_WISDOM"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (p && *p) snprintf(path, sizeof path, "%s", p);
    else if (e && *e) snprintf(path, sizeof path, "%s", e);
    else if (x && *x) snprintf(path, sizeof path, "%s/moco/wisdom.jsonl", x);
    else snprintf(path, sizeof path, "%s/.cache/moco/wisdom.jsonl", h && *h ? h : "/tmp");
    return 0;
}

/* The key of this process: CPU model, build, threads. */
static void identify(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512], name[96] = "unknown", fam[16] = "?", mod[16] = "?";
    while (f && fgets(line, sizeof line, f)) { /* the first processor's */
        char *v = strchr(line, ':');
        if (!v) continue;
        for (v++; *v == ' ' || *v == '\t'; v++) {}
        v[strcspn(v, "\n")] = 0;
        if (!strncmp(line, "model name", 10)) snprintf(name, sizeof name, "%s", v);
        else if (!strncmp(line, "cpu family", 10)) snprintf(fam, sizeof fam, "%s", v);
        else if (!strncmp(line, "model\t", 6) || !strncmp(line, "model ", 6)) snprintf(mod, sizeof mod, "%s", v);
        else if (!strncmp(line, "processor", 9) && strcmp(v, "0")) break;
    }
    if (f) fclose(f);
    snprintf(cpu, sizeof cpu, "%s (family %s, model %s)", name, fam, mod);
    struct stat st;
    /* the build: this program's file, OpenBLAS's kernel set (the GEMM
     * candidates' times depend on it: blascore.h), and oneDNN's instruction
     * set where DNNL_MAX_CPU_ISA caps it (it decides which of its kernels
     * exist: under AVX2, no Winograd), and our own where MOCO_CONV3 caps it */
    const char *isa = getenv("DNNL_MAX_CPU_ISA");
    char c3[16] = ""; /* the level our kernels were capped to, when they were (an ignored MOCO_CONV3 caps nothing) */
    if (conv3_simd_capped()) snprintf(c3, sizeof c3, "-conv3=%d", conv3_simd());
    if (!stat("/proc/self/exe", &st))
        snprintf(build, sizeof build, "%lld-%lld-%.20s%s%.12s%s", (long long)st.st_size, (long long)st.st_mtime, blas_core(),
                 isa && *isa ? "-dnnl=" : "", isa && *isa ? isa : "", c3);
    else snprintf(build, sizeof build, "unknown");
}

static int same_shape(const tune_shape *a, const tune_shape *b) { return !memcmp(a, b, sizeof *a); }

static entry *find(int layer, const tune_shape *s, int pass, int precision)
{
    for (int i = 0; i < ntab; i++)
        if (tab[i].layer == layer && tab[i].pass == pass && tab[i].precision == precision && same_shape(&tab[i].s, s)) return &tab[i];
    return NULL;
}

static entry *add(void)
{
    if (ntab == captab) {
        int cap = captab ? 2 * captab : 64;
        entry *t = realloc(tab, sizeof *t * (size_t)cap);
        if (!t) return NULL;
        tab = t, captab = cap;
    }
    memset(&tab[ntab], 0, sizeof *tab);
    return &tab[ntab++];
}

/* ------------------------------------------------------------ the file */

typedef struct {
    char cpu[128], build[64];
    uint64_t threads;
    entry e;
} line_rec;

static int tok_str(const char *s, const moco_json_tok *t, int obj, const char *key, char *buf, size_t cap)
{
    int i = moco_json_get(s, t, obj, key);
    return i < 0 || t[i].type != MOCO_JSON_STR ? MOCO_ECORRUPT : moco_json_str(s, &t[i], buf, cap);
}

static int algo_of(const char *name)
{
    for (int a = 1; a < NN_ALGO_COUNT; a++)
        if (!strcmp(name, nn_algo_name(a))) return a;
    return -1;
}

/* One line of the file; 0 or MOCO_ECORRUPT. *keyed: its key (cpu, build,
 * threads) was read, whatever the rest: a line of another build or CPU may
 * name choices or precisions this one does not know, and is kept as is. */
static int parse_line(const char *s, size_t len, line_rec *r, int *keyed)
{
    moco_json_tok t[64];
    *keyed = 0;
    int n, rc = moco_json_parse(s, len, "wisdom line", t, 64, &n);
    if (rc) return rc;
    int th = t[0].type == MOCO_JSON_OBJ ? moco_json_get(s, t, 0, "threads") : -1;
    if (th < 0 || tok_str(s, t, 0, "cpu", r->cpu, sizeof r->cpu) || tok_str(s, t, 0, "build", r->build, sizeof r->build) ||
        t[th].type != MOCO_JSON_NUM || moco_json_u64(s, &t[th], &r->threads))
        return MOCO_ECORRUPT;
    *keyed = 1;
    char prec[16], pass[16], choice[16];
    if (tok_str(s, t, 0, "precision", prec, sizeof prec) || tok_str(s, t, 0, "pass", pass, sizeof pass) ||
        tok_str(s, t, 0, "choice", choice, sizeof choice))
        return MOCO_ECORRUPT;
    int sh = moco_json_get(s, t, 0, "shape"), ms = moco_json_get(s, t, 0, "ms");
    if (sh < 0 || t[sh].type != MOCO_JSON_ARR || t[sh].size != 8 || ms < 0 || t[ms].type != MOCO_JSON_OBJ)
        return MOCO_ECORRUPT;
    entry *e = &r->e;
    memset(e, 0, sizeof *e);
    int dims[8]; /* by name below: &e->s.N + k past N is out of that int's bounds (C11 6.5.6) */
    for (int k = 0, i = sh + 1; k < 8; k++, i = t[i].end) {
        uint64_t v;
        if (moco_json_u64(s, &t[i], &v) || v > (1u << 30)) return MOCO_ECORRUPT;
        dims[k] = (int)v;
    }
    e->s = (tune_shape){dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6], dims[7]};
    e->precision = !strcmp(prec, "bf16") ? NN_BF16 : !strcmp(prec, "fp32") ? NN_FP32 : -1;
    char layer[16] = "conv"; /* absent: a convolution (the files before linear layers were measured) */
    if (moco_json_get(s, t, 0, "layer") >= 0 && tok_str(s, t, 0, "layer", layer, sizeof layer)) return MOCO_ECORRUPT;
    e->layer = !strcmp(layer, "linear") ? TUNE_LINEAR : !strcmp(layer, "conv") ? TUNE_CONV : -1;
    if (e->layer < 0) return MOCO_ECORRUPT;
    e->pass = -1;
    for (int p = 0; p < TUNE_PASSES; p++)
        if (!strcmp(pass, pass_names[p])) e->pass = p;
    e->c.algo = algo_of(choice);
    if (e->precision < 0 || e->pass < 0 || e->c.algo < 0) return MOCO_ECORRUPT;
    for (int a = 0; a < NN_ALGO_COUNT; a++) e->c.ms[a] = -1;
    for (int k = 0, i = ms + 1; k < t[ms].size; k++, i = t[i + 1].end) {
        char name[16];
        int a;
        if (moco_json_str(s, &t[i], name, sizeof name) || (a = algo_of(name)) < 0 || t[i + 1].type != MOCO_JSON_NUM)
            return MOCO_ECORRUPT;
        e->c.ms[a] = strtod(s + t[i + 1].start, NULL);
    }
    return e->c.ms[e->c.algo] >= 0 ? 0 : MOCO_ECORRUPT;
}

static int ours(const line_rec *r) { return !strcmp(r->cpu, cpu) && !strcmp(r->build, build) && r->threads == (uint64_t)par_threads(); }

static void load(void)
{
    loaded = 1;
    identify();
    /* a regular file only: a FIFO would block the read, /dev/null reads as empty */
    FILE *f = moco_fopen_regular(path);
    if (!f) {
        if (errno != ENOENT) snprintf(note, sizeof note, "wisdom file: %s; not read", moco_errmsg());
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int bad = 0, first = 0, no = 0, keyed;
    line_rec r;
    while ((len = getline(&line, &cap, f)) > 0) {
        no++;
        if (parse_line(line, (size_t)len, &r, &keyed)) {
            if ((!keyed || ours(&r)) && !bad++) first = no; /* another build's: kept, not ours to judge */
            continue;
        }
        entry *e;
        if (ours(&r) && !find(r.e.layer, &r.e.s, r.e.pass, r.e.precision) && (e = add())) *e = r.e;
    }
    free(line);
    fclose(f);
    if (bad)
        snprintf(note, sizeof note, "wisdom file %s: %d %s not parse (the first is line %d); ignored, and dropped at the next write",
                 path, bad, bad > 1 ? "lines do" : "line does", first);
}

int tune_load(void)
{
    if (!loaded) load();
    return ntab;
}

static int write_entry(FILE *f, const entry *e)
{
    moco_jw w;
    moco_jw_begin(&w);
    moco_jw_str(&w, "cpu", cpu);
    moco_jw_str(&w, "build", build);
    moco_jw_i64(&w, "threads", par_threads());
    moco_jw_str(&w, "precision", e->precision == NN_BF16 ? "bf16" : "fp32");
    if (e->layer == TUNE_LINEAR) moco_jw_str(&w, "layer", "linear");
    moco_jw_str(&w, "pass", pass_names[e->pass]);
    moco_jw_arr(&w, "shape");
    const int dims[8] = {e->s.N, e->s.Ci, e->s.H, e->s.W, e->s.Co, e->s.k, e->s.stride, e->s.pad};
    for (int k = 0; k < 8; k++) moco_jw_i64(&w, NULL, dims[k]);
    moco_jw_close(&w);
    moco_jw_str(&w, "choice", nn_algo_name(e->c.algo));
    moco_jw_obj(&w, "ms");
    for (int a = 1; a < NN_ALGO_COUNT; a++)
        if (e->c.ms[a] >= 0) moco_jw_num(&w, nn_algo_name(a), e->c.ms[a], 3);
    moco_jw_close(&w);
    return moco_jw_line(&w, f);
}

static int mkdirs(const char *file)
{
    char d[sizeof path];
    snprintf(d, sizeof d, "%s", file);
    for (char *p = d + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(d, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return 0;
}

int tune_save(void)
{
    int fresh = 0;
    for (int i = 0; i < ntab; i++) fresh += tab[i].fresh;
    if (mode != TUNE_MEASURE || !fresh) return 0;
    char target[sizeof path], lock[sizeof path + 8], tmp[sizeof path + 32];
    int lfd = -1, rc = 0;
    FILE *in = NULL, *out = NULL;
    if (mkdirs(path)) return moco_err(MOCO_EIO, "cannot write the wisdom file %s: %s", path, strerror(errno));
    if ((rc = moco_replace_target(path, target, sizeof target))) { /* /dev/null, a directory: never renamed onto */
        char msg[1100];
        snprintf(msg, sizeof msg, "%s", moco_errmsg());
        return moco_err(MOCO_EIO, "cannot write the wisdom file: %s", msg);
    }
    snprintf(lock, sizeof lock, "%s.lock", target);
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", target, (int)getpid());
    if ((lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0 || flock(lfd, LOCK_EX)) {
        rc = moco_err(MOCO_EIO, "cannot write the wisdom file %s: %s", path, strerror(errno));
        goto out;
    }
    if (!(out = moco_create_tmp(tmp, path))) {
        rc = moco_err(MOCO_EIO, "cannot write the wisdom file %s: %s", path, strerror(errno));
        goto out;
    }
    /* the file's lines, less ours that we replace and ours that do not parse */
    if (!(in = moco_fopen_regular(target)) && errno != ENOENT) {
        rc = MOCO_EIO; /* the message names target: its lines must not be lost */
        goto out;
    }
    int ok = 1, keyed;
    errno = 0;
    if (in) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        line_rec r;
        while (ok && (len = getline(&line, &cap, in)) > 0) {
            /* another build's or CPU's line is kept verbatim, parsed or not */
            if (parse_line(line, (size_t)len, &r, &keyed) && (!keyed || ours(&r))) continue;
            entry *e = ours(&r) ? find(r.e.layer, &r.e.s, r.e.pass, r.e.precision) : NULL;
            if (e && e->fresh) continue;
            ok = fwrite(line, 1, (size_t)len, out) == (size_t)len && (line[len - 1] == '\n' || fputc('\n', out) != EOF);
        }
        free(line);
    }
    for (int i = 0; ok && i < ntab; i++)
        if (tab[i].fresh) ok = !write_entry(out, &tab[i]);
    if (!ok) { /* a full disk: the old file stays */
        rc = moco_err(MOCO_EIO, "cannot write the wisdom file %s: %s; it is left as it was", path, strerror(errno ? errno : EIO));
        goto out;
    }
    /* every write checked (ferror), fsync, rename, fsync of the directory */
    rc = moco_commit_tmp(out, tmp, target, path);
    out = NULL;
    if (rc) goto out;
    for (int i = 0; i < ntab; i++) tab[i].fresh = 0;
out:
    if (in) fclose(in);
    if (out) fclose(out), unlink(tmp);
    if (lfd >= 0) close(lfd); /* and the lock with it */
    return rc;
}

char *tune_used_lines(void)
{
    if (mode == TUNE_RULE) return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    int n = 0, bad = 0;
    for (int i = 0; i < ntab; i++)
        if (tab[i].used) bad |= write_entry(f, &tab[i]), n++;
    if (fclose(f) || bad || !n) {
        free(buf);
        return NULL;
    }
    return buf;
}

int tune_pin(const char *text, int *lines)
{
    *lines = 0;
    if (mode == TUNE_RULE || !text) return 0;
    if (mode == TUNE_CHECKPOINT) identify(); /* the key only: the wisdom file is not read */
    else if (!loaded) load();
    int n = 0;
    for (const char *s = text; *s;) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) + 1 : strlen(s);
        line_rec r;
        int keyed;
        ++*lines;
        /* another CPU's or thread count's choices were made for other kernels' speeds: measured here instead */
        if (!parse_line(s, len, &r, &keyed) && !strcmp(r.cpu, cpu) && r.threads == (uint64_t)par_threads()) {
            entry *e = find(r.e.layer, &r.e.s, r.e.pass, r.e.precision);
            if (!e) e = add();
            if (e) *e = r.e, n++; /* neither fresh (the file is not rewritten for it) nor used yet */
        }
        s += len;
    }
    return n;
}

void tune_keep(void)
{
    const char *n = tune_note();
    if (n) fprintf(stderr, "moco: warning: %s\n", n);
    if (tune_save()) fprintf(stderr, "moco: warning: %s; the kernels will be timed again next run\n", moco_errmsg());
}

/* ------------------------------------------------------- measurement */

typedef struct {
    float *x, *w, *y, *dx, *dw, *work;
} bufs;

/* The synthetic tensors and scratch are mapped and unmapped, not taken
 * from the heap: freed heap blocks stay resident and would raise the
 * process's peak RSS under the model's arena, which is allocated next.
 * They ask for huge pages, as the arena does (resnet.c arena_alloc), so
 * that candidates are timed as the step will run them. */
static float *alloc_fill(size_t n, moco_rng *r)
{
    size_t bytes = sizeof(float) * (n ? n : 1) + 64;
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    if (!getenv("MOCO_NO_THP")) (void)madvise(m, bytes, MADV_HUGEPAGE);
    *(size_t *)m = bytes;
    float *p = (float *)((char *)m + 64); /* zero-filled; 64-byte aligned */
    if (r)
        for (size_t i = 0; i < n; i++) p[i] = (float)(moco_rng_uniform(r) * 2.0 - 1.0);
    return p;
}

static void unmap(float *p)
{
    if (!p) return;
    void *m = (char *)p - 64;
    munmap(m, *(size_t *)m);
}

static void run_pass(int pass, const nn_conv *d, bufs *b)
{
    if (pass == TUNE_FWD) conv2d_forward(b->y, b->x, b->w, d, b->work);
    else conv2d_backward(pass == TUNE_BWD ? b->dx : NULL, b->dw, b->y, b->x, b->w, d, b->work);
}

/* ms of one candidate: the best of a few calls; the first two alone decide
 * a candidate more than 3x slower than the best so far (not the first one
 * alone: it can pay for first touches of the scratch, which oneDNN's
 * Winograd kernels did here, 31 ms against 3 ms after) */
static int time_algo(const tune_shape *s, int pass, int algo, size_t budget, bufs *b, double best, double *ms)
{
    nn_conv d;
    size_t wf = 0;
    memset(&d, 0, sizeof d);
    int rc = nn_conv_plan(&d, s->N, s->Ci, s->H, s->W, s->Co, s->k, s->stride, s->pad, algo, budget, &wf);
    if (rc) return rc;
    float *work = alloc_fill(wf + 16, NULL);
    if (!work) {
        nn_conv_free(&d);
        return moco_err(MOCO_ENOMEM, "out of memory timing a convolution");
    }
    b->work = work;
    double t0 = moco_now_s();
    run_pass(pass, &d, b);
    double t = moco_now_s() - t0, min = t, total = t;
    for (int i = 0; i < 5 && (i < 1 || (min * 1e3 <= 3 * best && (i < 2 || total < 0.05))); i++) {
        t0 = moco_now_s();
        run_pass(pass, &d, b);
        t = moco_now_s() - t0, total += t;
        min = t < min ? t : min;
    }
    *ms = min * 1e3;
    unmap(work);
    nn_conv_free(&d);
    return 0;
}

static int measure(const tune_shape *s, int pass, int precision, size_t budget, tune_choice *c)
{
    const int Ho = (s->H + 2 * s->pad - s->k) / s->stride + 1, Wo = (s->W + 2 * s->pad - s->k) / s->stride + 1;
    const size_t nx = (size_t)s->N * s->Ci * s->H * s->W, ny = (size_t)s->N * s->Co * Ho * Wo, nw = (size_t)s->Co * s->Ci * s->k * s->k;
    moco_rng r;
    moco_rng_init(&r, 0x7475, (uint64_t)s->Ci, (uint64_t)s->Co, (uint64_t)s->H);
    bufs b = {alloc_fill(nx, &r), alloc_fill(nw, &r), alloc_fill(ny, &r), pass == TUNE_BWD ? alloc_fill(nx, NULL) : NULL,
              pass != TUNE_FWD ? alloc_fill(nw, NULL) : NULL, NULL};
    int rc = 0;
    if (!b.x || !b.w || !b.y || (pass == TUNE_BWD && !b.dx) || (pass != TUNE_FWD && !b.dw))
        rc = moco_err(MOCO_ENOMEM, "out of memory timing convolution %d->%d %dx%d", s->Ci, s->Co, s->H, s->W);
    double best = 1e300;
    c->algo = NN_ALGO_GEMM, c->measured = 1;
    for (int a = 0; a < NN_ALGO_COUNT; a++) c->ms[a] = -1;
    for (int a = NN_ALGO_GEMM; a < NN_ALGO_COUNT && !rc; a++) {
        if ((a == NN_ALGO_BF16 && precision != NN_BF16) || !nn_conv_algo_ok(a, s->Ci, s->H, s->W, s->Co, s->k, s->stride, s->pad))
            continue;
        if ((rc = time_algo(s, pass, a, budget, &b, best, &c->ms[a]))) {
            /* a library that declines the shape here (oneDNN without its
             * AVX-512 kernels, e.g. under DNNL_MAX_CPU_ISA=AVX2, has no
             * Winograd): not a candidate on this machine */
            if (rc == MOCO_EINVAL && (a == NN_ALGO_ONEDNN || a == NN_ALGO_WINO)) {
                c->ms[a] = -1, rc = 0;
                continue;
            }
            break;
        }
        if (c->ms[a] < best) best = c->ms[a], c->algo = a;
    }
    unmap(b.x), unmap(b.w), unmap(b.y), unmap(b.dx), unmap(b.dw);
    return rc;
}

/* A line's choice is taken only where it is a candidate: one that can run
 * the shape here, and bf16 only under bf16 (an fp32 line that says bf16,
 * hand-edited or damaged, would otherwise round an fp32 run's operands). */
static int takes(const entry *e, const tune_shape *s, int precision)
{
    return e && (precision == NN_BF16 || e->c.algo != NN_ALGO_BF16) &&
           nn_conv_algo_ok(e->c.algo, s->Ci, s->H, s->W, s->Co, s->k, s->stride, s->pad);
}

int tune_conv(const tune_shape *s, int pass, int precision, size_t budget, tune_choice *out)
{
    if (mode == TUNE_MEASURE && !loaded) load();
    /* the file's choice or the one measured here (TUNE_MEASURE), or a checkpoint's (tune_pin) */
    entry *e = mode != TUNE_RULE ? find(TUNE_CONV, s, pass, precision) : NULL;
    if (takes(e, s, precision)) {
        *out = e->c;
        out->measured = e->fresh;
        e->used = 1;
        return 0;
    }
    if (mode != TUNE_MEASURE) {
        out->algo = precision == NN_BF16 ? NN_ALGO_BF16 : nn_conv_rule(s->Ci, s->H, s->W, s->Co, s->k, s->stride, s->pad);
        out->measured = 0;
        for (int a = 0; a < NN_ALGO_COUNT; a++) out->ms[a] = -1;
        return 0;
    }
    tune_choice c;
    int rc = measure(s, pass, precision, budget, &c);
    if (rc) return rc;
    if (!e) e = add();
    if (e) e->s = *s, e->layer = TUNE_CONV, e->pass = pass, e->precision = precision, e->fresh = 1, e->used = 1, e->c = c;
    *out = c;
    return 0;
}

/* One linear layer's forward (and backward when grads) on GEMM (OpenBLAS)
 * or bf16 (oneDNN), in ms: the best of a few calls after a first one. */
static int time_linear(int N, int F, int O, int grads, int algo, bufs *b, double *ms)
{
    nn_lowp *lp = NULL;
    size_t wf = 0;
    int rc = algo == NN_ALGO_BF16 ? nn_linear_bf16(&lp, N, F, O, &wf) : 0;
    if (rc) return rc;
    float *work = alloc_fill(wf + 16, NULL), *bias = b->work;
    if (!work) {
        nn_lowp_free(&lp);
        return moco_err(MOCO_ENOMEM, "out of memory timing a linear layer");
    }
    double min = 1e300, total = 0;
    for (int i = 0; i < 6 && (i < 3 || total < 0.05); i++) {
        double t0 = moco_now_s();
        if (lp) linear_forward_bf16(b->y, b->x, b->w, bias, lp, work);
        else linear_forward(b->y, b->x, b->w, bias, N, F, O);
        if (grads && lp) linear_backward_bf16(b->dx, b->dw, bias, b->y, b->x, lp, work);
        else if (grads) linear_backward(b->dx, b->dw, bias, b->y, b->x, b->w, N, F, O);
        double t = moco_now_s() - t0;
        total += t, min = i && t < min ? t : min; /* the first call warms */
    }
    *ms = min * 1e3;
    unmap(work);
    nn_lowp_free(&lp);
    return 0;
}

int tune_linear(int N, int F, int O, int grads, int precision, tune_choice *out)
{
    for (int a = 0; a < NN_ALGO_COUNT; a++) out->ms[a] = -1;
    out->measured = 0;
    out->algo = precision == NN_BF16 ? NN_ALGO_BF16 : NN_ALGO_GEMM;
    if (mode == TUNE_RULE || precision != NN_BF16) return 0; /* fp32: OpenBLAS, the only candidate */
    if (mode == TUNE_MEASURE && !loaded) load();
    const tune_shape s = {N, F, 1, 1, O, 1, 1, 0};
    const int pass = grads ? TUNE_BWD : TUNE_FWD;
    entry *e = find(TUNE_LINEAR, &s, pass, precision);
    /* a forward alone (the evaluation commands) on a checkpoint that keeps
     * the layer's training choice: that line's, which its forwards ran on
     * (the monitor's figure; before, the rule's, which rounds otherwise) */
    if (!e && !grads && mode == TUNE_CHECKPOINT) e = find(TUNE_LINEAR, &s, TUNE_BWD, precision);
    if (e && (e->c.algo == NN_ALGO_GEMM || e->c.algo == NN_ALGO_BF16)) {
        *out = e->c;
        out->measured = e->fresh;
        e->used = 1;
        return 0;
    }
    if (mode == TUNE_CHECKPOINT) return 0; /* no choice kept for it: the rule's */
    moco_rng r;
    moco_rng_init(&r, 0x6c69, (uint64_t)N, (uint64_t)F, (uint64_t)O);
    const size_t nx = (size_t)N * F, nw = (size_t)O * F, ny = (size_t)N * O;
    bufs b = {alloc_fill(nx, &r), alloc_fill(nw, &r), alloc_fill(ny, &r), alloc_fill(nx, NULL), alloc_fill(nw, NULL),
              alloc_fill((size_t)O, &r)}; /* work: the bias */
    int rc = 0;
    if (!b.x || !b.w || !b.y || !b.dx || !b.dw || !b.work)
        rc = moco_err(MOCO_ENOMEM, "out of memory timing linear layer %d x %d -> %d", N, F, O);
    tune_choice c = {NN_ALGO_GEMM, 1, {0}};
    for (int a = 0; a < NN_ALGO_COUNT; a++) c.ms[a] = -1;
    if (!rc) rc = time_linear(N, F, O, grads, NN_ALGO_GEMM, &b, &c.ms[NN_ALGO_GEMM]);
    if (!rc) rc = time_linear(N, F, O, grads, NN_ALGO_BF16, &b, &c.ms[NN_ALGO_BF16]);
    if (!rc && c.ms[NN_ALGO_BF16] < c.ms[NN_ALGO_GEMM]) c.algo = NN_ALGO_BF16;
    unmap(b.x), unmap(b.w), unmap(b.y), unmap(b.dx), unmap(b.dw), unmap(b.work);
    if (rc) return rc;
    if (!e) e = add();
    if (e) e->s = s, e->layer = TUNE_LINEAR, e->pass = pass, e->precision = precision, e->fresh = 1, e->used = 1, e->c = c;
    *out = c;
    return 0;
}
