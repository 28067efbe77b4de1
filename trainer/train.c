/* train.c: `moco train`, MoCo v1/v2 training on streamed pairs.
 *
 * It consumes the pipeline (trainer/stream.h), forms batches of
 * --batch-size pairs within an epoch (the last partial batch of an epoch is
 * dropped, as the official code's drop_last does), turns the uint8 views
 * into normalised float NCHW, and runs the MoCo step (trainer/moco.h) with
 * the learning rate of the official schedule (step decay at --schedule
 * epochs, or --cos), optionally after a linear warm-up. At the end of each
 * epoch it writes the epoch's checkpoint (trainer/ckpt.h), then, every
 * --knn-every epochs, measures kNN accuracy (trainer/knn.h), then writes
 * the epoch's record; a kill or a stop (which ends the kNN at its next
 * batch) before the record loses nothing: the resume from that checkpoint
 * evaluates the same weights and writes the record ("recovered"). Resuming (--resume)
 * restores the model, optimiser, queue, step and the stream position, so the
 * stream continues exactly where the checkpoint stood; records of
 * metrics.jsonl past the checkpoint's step are dropped (they are trained
 * again) and a "resume" record is added. Changing the schedule (--epochs,
 * --lr, --cos, --schedule, --warmup-epochs, --batch-size, and the loss's and
 * optimiser's --moco-m, --moco-t, --momentum, --wd, --symmetric) on resume
 * needs --allow-schedule-change; another dataset (count) is refused.
 *
 * Trustworthy edges: every input (--knn-train, --knn-test, --resume,
 * --keys, --out) is checked before the first step; an --out that already
 * holds something is refused without --resume or --overwrite; SIGINT /
 * SIGTERM stop before the next step with a checkpoint and the command that
 * resumes (exit 130).
 *
 * Output in --out: metrics.jsonl (one record per --log-every steps and one
 * per epoch), checkpoint_last.safetensors (every epoch and --save-every
 * steps), checkpoint_epoch_NNNN.safetensors (the last --keep kept) and
 * checkpoint_best.safetensors (best kNN).
 *
 * The command line (flags, presets, `moco train` and `moco knn`) is
 * train_cmd.c. */
#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/replace.h"
#include "formats/rundir.h"
#include "trainer/engine/ckpt.h"
#include "trainer/dist.h"
#include "trainer/evalset.h"
#include "trainer/knn.h"
#include "trainer/engine/moco.h"
#include "trainer/engine/par.h"
#include "trainer/engine/tune.h"
#include "trainer/stream.h"
#include "trainer/train.h"

static volatile sig_atomic_t stop_flag;
static void on_signal(int s) { (void)s; stop_flag = 1; }

double train_lr(const train_cfg *c, int64_t epoch, int64_t step_in_epoch, int64_t steps_per_epoch)
{
    double e = (double)epoch + (steps_per_epoch > 0 ? (double)step_in_epoch / (double)steps_per_epoch : 0);
    if (c->warmup_epochs > 0 && e < c->warmup_epochs) return c->lr * (e + 1.0 / (steps_per_epoch > 0 ? steps_per_epoch : 1)) / c->warmup_epochs;
    double lr = c->lr;
    if (c->cos) {
        lr *= 0.5 * (1.0 + cos(M_PI * (double)epoch / (double)c->epochs));
    } else {
        for (int i = 0; i < c->nschedule; i++)
            if (epoch >= c->schedule[i]) lr *= 0.1;
    }
    return lr;
}

int train_parse_schedule(const char *s, train_cfg *c)
{
    c->nschedule = 0;
    if (!s || !*s) return 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || c->nschedule == TRAIN_MAX_SCHEDULE)
            return moco_err(MOCO_EINVAL, "--schedule '%s': expected comma-separated epochs, e.g. 120,160", s);
        if (errno == ERANGE || v > TRAIN_MAX_EPOCHS) /* stored as an int: 4294967297 became 1 */
            return moco_err(MOCO_EINVAL, "--schedule '%s': epoch %.*s is outside [0, %d]", s, (int)(end - p), p, TRAIN_MAX_EPOCHS);
        c->schedule[c->nschedule++] = (int)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) return moco_err(MOCO_EINVAL, "--schedule '%s': expected comma-separated epochs", s);
    }
    return 0;
}

void train_view_to_float(float *x, const uint8_t *v, int row, int S, int c, const float mean[3], const float std[3])
{
    float *o = x + (size_t)row * 3 * S * S;
    for (int ch = 0; ch < 3; ch++) {
        float a = 1.0f / (255.0f * std[ch]), b = -mean[ch] / std[ch];
        int src = c == 1 ? 0 : ch;
        for (int i = 0; i < S * S; i++) o[(size_t)ch * S * S + i] = (float)v[(size_t)i * c + src] * a + b;
    }
}

/* Embed every sample of an evaluation set with the query encoder (eval
 * mode, batches of the model's N, padded), L2-normalised. */
static int embed(resnet *m, evalset *es, float *x, trainer_stream *keep, float **feat, int32_t **labels, int64_t *n)
{
    int N = m->cfg.batch, D = m->cfg.dim, S = m->cfg.size;
    *n = evalset_count(es);
    *feat = malloc(sizeof **feat * (size_t)*n * D);
    *labels = malloc(sizeof **labels * (size_t)(*n + N));
    if (!*feat || !*labels) return moco_err(MOCO_ENOMEM, "out of memory for %lld features", (long long)*n);
    for (int64_t s = 0; s < *n; s += N) {
        int cnt = (int)(*n - s < N ? *n - s : N);
        if (cnt < N) memset(x, 0, sizeof *x * (size_t)N * 3 * S * S);
        if (stop_flag) return moco_err(MOCO_EINTR, "interrupted during the kNN evaluation"); /* SIGTERM: stop now */
        if (keep) stream_keepalive(keep);
        int rc = evalset_read(es, s, cnt, x, *labels + s);
        if (rc) return rc;
        const float *out = rn_forward(m, x, NULL, 0);
        for (int i = 0; i < cnt; i++) {
            double ss = 0;
            for (int d = 0; d < D; d++) ss += (double)out[(size_t)i * D + d] * out[(size_t)i * D + d];
            float inv = (float)(1.0 / (sqrt(ss) > 1e-12 ? sqrt(ss) : 1e-12));
            for (int d = 0; d < D; d++) (*feat)[(size_t)(s + i) * D + d] = out[(size_t)i * D + d] * inv;
        }
    }
    return 0;
}

int train_knn(resnet *m, const char *train_db, const char *test_db, int k, float t, const float mean[3], const float std[3],
              trainer_stream *keep, double *top1, int *k_used)
{
    evalset *tr = NULL, *te = NULL;
    float *x = NULL, *ftr = NULL, *fte = NULL;
    int32_t *ltr = NULL, *lte = NULL, *pred = NULL;
    int64_t ntr = 0, nte = 0;
    int S = m->cfg.size, rc;
    if ((rc = evalset_open(train_db, S, mean, std, &tr)) || (rc = evalset_open(test_db, S, mean, std, &te)) ||
        (rc = evalset_classes_of(te, tr)))
        goto out;
    x = malloc(sizeof *x * (size_t)m->cfg.batch * 3 * S * S);
    if (!x) { rc = moco_err(MOCO_ENOMEM, "out of memory"); goto out; }
    if ((rc = embed(m, tr, x, keep, &ftr, &ltr, &ntr)) || (rc = embed(m, te, x, keep, &fte, &lte, &nte))) goto out;
    pred = malloc(sizeof *pred * (size_t)nte);
    if (!pred) { rc = moco_err(MOCO_ENOMEM, "out of memory"); goto out; }
    int classes = evalset_classes(tr); /* the test set's labels are the training set's indices (evalset_classes_of) */
    if (k_used) *k_used = k < ntr ? k : (int)ntr; /* knn_classify's k: the bank's size at most */
    openblas_set_num_threads(par_threads()); /* one large sgemm per chunk: let OpenBLAS use every thread */
    rc = knn_classify(pred, ftr, ltr, ntr, fte, nte, m->cfg.dim, classes, k, t);
    openblas_set_num_threads(par_threads() > 1 ? 1 : par_threads()); /* back to the engine's setting */
    if (rc) goto out;
    int64_t right = 0;
    for (int64_t i = 0; i < nte; i++) right += pred[i] == lte[i];
    *top1 = 100.0 * (double)right / (double)(nte ? nte : 1);
out:
    evalset_destroy(&tr);
    evalset_destroy(&te);
    free(x); free(ftr); free(fte); free(ltr); free(lte); free(pred);
    return rc;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

/* "120,160" from c->schedule */
static void schedule_str(const train_cfg *c, char *buf, size_t n)
{
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; i < c->nschedule && at < n; i++) at += (size_t)snprintf(buf + at, n - at, i ? ",%d" : "%d", c->schedule[i]);
}

int train_config_meta(const train_cfg *c, char *buf, size_t n, const char **meta)
{
    moco_ckpt_config k; /* formats/checkpoint.h: the config's one writer */
    moco_ckpt_config_init(&k);
    snprintf(k.arch, sizeof k.arch, "%s", c->arch);
    k.width = c->width, k.mlp = c->mlp, k.dim = c->dim, k.K = c->K, k.batch = c->batch;
    k.ranks = c->dist ? dist_size(c->dist) : 1;
    k.m = c->m, k.T = c->T, k.lr = c->lr, k.momentum = c->momentum, k.wd = c->wd;
    k.cos = c->cos, k.warmup_epochs = c->warmup_epochs, k.epochs = c->epochs, k.bn_splits = c->bn_splits;
    k.symmetric = c->symmetric, k.size = c->size;
    schedule_str(c, k.schedule, sizeof k.schedule);
    snprintf(k.precision, sizeof k.precision, "%s", c->precision == NN_BF16 ? "bf16" : "fp32");
    if (c->norm) { /* the input normalisation: the evaluation commands' --normalize auto */
        snprintf(k.normalize, sizeof k.normalize, "%s", c->norm);
        for (int i = 0; i < 3; i++) k.mean[i] = c->mean[i], k.std[i] = c->std[i];
    }
    k.seed = c->seed;
    k.count = c->count > (uint64_t)INT64_MAX ? -1 : (int64_t)c->count; /* -1: refused by the writer */
    /* a config the readers would refuse, or one that does not fit: no config at all */
    int fits = strlen(c->arch) < sizeof k.arch && (!c->norm || strlen(c->norm) < sizeof k.normalize) &&
               moco_ckpt_config_write(&k, buf, n) == 0;
    if (!fits && n > 0) buf[0] = 0;
    meta[0] = MOCO_CKPT_KEY_FORMAT;
    meta[1] = MOCO_CKPT_FORMAT;
    meta[2] = MOCO_CKPT_KEY_CONFIG;
    meta[3] = buf;
    return fits ? 2 : 1;
}

/* Every input path, before anything trains: the kNN sets open as labelled
 * datasets whose classes match by name, the checkpoint to resume exists, the
 * key directory is one. */
static int check_inputs(const train_cfg *c, const char *resume)
{
    struct stat sb;
    if (resume && stat(resume, &sb))
        return moco_err(MOCO_ENOTFOUND, "--resume %s: %s", resume, strerror(errno));
    if (c->keys && (stat(c->keys, &sb) || !S_ISDIR(sb.st_mode)))
        return moco_err(MOCO_ENOTFOUND, "--keys %s: not a directory", c->keys);
    const char *sets[2] = {c->knn_train, c->knn_test}, *names[2] = {"--knn-train", "--knn-test"};
    evalset *e[2] = {NULL, NULL};
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++)
        if (sets[i] && (rc = evalset_open(sets[i], c->size, c->mean, c->std, &e[i])))
            rc = moco_err(rc, "%s %s: %s", names[i], sets[i], moco_errmsg());
    if (!rc && e[0] && e[1] && (rc = evalset_classes_of(e[1], e[0]))) /* as train_knn will, at the first epoch's end */
        rc = moco_err(rc, "--knn-test: %s", moco_errmsg());
    if (!rc && e[0] && c->knn_k > evalset_count(e[0])) /* knn_classify takes the whole bank then: say so once */
        fprintf(stderr, "moco train: --knn-k %d exceeds the %lld samples of --knn-train %s: the kNN monitor uses k %lld\n",
                c->knn_k, (long long)evalset_count(e[0]), c->knn_train, (long long)evalset_count(e[0]));
    evalset_destroy(&e[0]);
    evalset_destroy(&e[1]);
    return rc;
}

/* A resume keeps the schedule the checkpoint was trained with. */
static int schedule_unchanged(const train_cfg *c, const moco_ckpt_config *k, const char *path)
{
    char diff[1024] = "", a[64], b[64], sched[TRAIN_MAX_SCHEDULE * 12];
    size_t at = 0;
#define DIFF(...) (at < sizeof diff ? (void)(at += (size_t)snprintf(diff + at, sizeof diff - at, __VA_ARGS__)) : (void)0)
    if (k->epochs >= 0 && k->epochs != c->epochs) DIFF(", --epochs %d (checkpoint: %d)", c->epochs, k->epochs);
    if (k->batch >= 0 && k->batch != c->batch) DIFF(", --batch-size %d (checkpoint: %d)", c->batch, k->batch);
    int ranks = c->dist ? dist_size(c->dist) : c->ranks > 1 ? c->ranks : 1;
    if (k->ranks >= 0 && k->ranks != ranks)
        DIFF(", %d rank%s (checkpoint: %d; a global batch of %lld against %lld)", ranks, ranks == 1 ? "" : "s", k->ranks,
             (long long)ranks * c->batch, (long long)k->ranks * (k->batch >= 0 ? k->batch : c->batch)); /* both < 2^31: no overflow */
    if (k->cos >= 0 && k->cos != c->cos) DIFF(", %s (checkpoint: %s)", c->cos ? "--cos" : "no --cos", k->cos ? "--cos" : "no --cos");
    if (k->warmup_epochs >= 0 && k->warmup_epochs != c->warmup_epochs)
        DIFF(", --warmup-epochs %d (checkpoint: %d)", c->warmup_epochs, k->warmup_epochs);
    /* the learning rate, and the loss's and the optimiser's settings (a checkpoint's config then
     * claimed the new values for the whole run), compared as the config prints them */
    const char *dn[] = {"--lr", "--moco-m", "--moco-t", "--momentum", "--wd"};
    const double dc[] = {c->lr, c->m, c->T, c->momentum, c->wd}, dkv[] = {k->lr, k->m, k->T, k->momentum, k->wd};
    for (int i = 0; i < 5; i++) {
        snprintf(a, sizeof a, "%g", dc[i]);
        snprintf(b, sizeof b, "%g", dkv[i]);
        if (!isnan(dkv[i]) && strcmp(a, b)) DIFF(", %s %s (checkpoint: %s)", dn[i], a, b);
    }
    if (k->precision[0] && strcmp(k->precision, c->precision == NN_BF16 ? "bf16" : "fp32"))
        DIFF(", --precision %s (checkpoint: %s)", c->precision == NN_BF16 ? "bf16" : "fp32", k->precision);
    if (k->normalize[0] && c->norm && strcmp(k->normalize, c->norm))
        DIFF(", --normalize %s (checkpoint: %s)", c->norm, k->normalize);
    if (k->bn_splits >= 0 && k->bn_splits != c->bn_splits)
        DIFF(", --bn-splits %d (checkpoint: %d)", c->bn_splits, k->bn_splits);
    if (k->symmetric >= 0 && k->symmetric != c->symmetric)
        DIFF(", %s (checkpoint: %s)", c->symmetric ? "--symmetric" : "no --symmetric", k->symmetric ? "--symmetric" : "no --symmetric");
    schedule_str(c, sched, sizeof sched);
    if (!c->cos && k->cos == 0 && strcmp(sched, k->schedule) && k->has_schedule)
        DIFF(", --schedule %s (checkpoint: %s)", sched[0] ? sched : "none", k->schedule[0] ? k->schedule : "none");
#undef DIFF
    if (!at) return 0;
    return moco_err(MOCO_EINVAL, "%s was trained with another schedule: %s. Give the flags it was trained with, or "
                    "--allow-schedule-change to change them in a run under way", path, diff + 2);
}

/* checkpoint_last at a step inside an epoch: the stream position, minus
 * the nb pairs of batch_idx not trained on yet (the loader sends them
 * again on resume) */
static int save_midepoch(const train_cfg *c, trainer_stream *s, const moco *mc, int64_t epoch, int64_t step,
                         const uint64_t *batch_idx, int nb, uint8_t **delivered, const char **meta, int nmeta)
{
    uint32_t pe;
    const uint8_t *bm;
    size_t nbytes;
    char path[4200];
    stream_position(s, &pe, &bm, &nbytes);
    size_t need = c->count ? (size_t)((c->count + 7) / 8) : nbytes;
    free(*delivered);
    if (!(*delivered = calloc(need ? need : 1, 1))) return moco_err(MOCO_ENOMEM, "out of memory");
    if (bm) memcpy(*delivered, bm, need < nbytes ? need : nbytes);
    for (int i = 0; i < nb; i++)
        if (batch_idx[i] / 8 < need) (*delivered)[batch_idx[i] / 8] &= (uint8_t)~(1u << (batch_idx[i] % 8));
    /* ranks: every rank's shard is part of the position; rank 0 writes the union */
    int rc = c->dist ? dist_bor(c->dist, *delivered, need) : 0;
    if (rc || (c->dist && dist_rank(c->dist))) return rc;
    ckpt_state cs = {.epoch = epoch, .step = step, .pipe_epoch = pe, .delivered = *delivered, .delivered_bytes = need};
    snprintf(path, sizeof path, "%s/checkpoint_last.safetensors", c->out);
    return ckpt_save(path, mc, &cs, meta, nmeta);
}

/* Whether the epoch's end evaluates kNN (rank 0 only). */
static int knn_due(const train_cfg *c, int64_t epoch)
{
    return c->knn_train && c->knn_test && c->knn_every > 0 && (epoch + 1) % c->knn_every == 0;
}

/* An epoch's record in metrics.jsonl (formats/README.md). e_steps 0: no
 * step of the epoch in this process (resumed at its very end): loss, acc
 * and pairs/s are null, not a mean of nothing; st NULL: no stream counters
 * (a record written on resume); knn < 0: null. */
typedef struct {
    int64_t epoch, step, e_steps, pairs;
    double loss, acc, lr, seconds, pairs_per_s, starved_pct, knn;
    int dropped, ranks;
    int64_t failed;
    const stream_stats *st;
    int recovered;
} epoch_record;

/* A record's line, written and flushed; on failure (a full disk) the run
 * stops: the file's last line may be torn, which a resume drops, and
 * checkpoint_last holds the last step saved. */
static int put_record(moco_jw *w, FILE *metrics, const char *mpath)
{
    int rc = moco_jw_line(w, metrics);
    return rc ? moco_err(rc, "%s: %s; the run stops here (resume it once there is room)", mpath, moco_errmsg()) : 0;
}

static int write_epoch_record(FILE *metrics, const char *mpath, const epoch_record *r)
{
    moco_jw ew;
    moco_jw_begin(&ew);
    moco_jw_str(&ew, "type", "epoch");
    moco_jw_i64(&ew, "epoch", r->epoch);
    moco_jw_i64(&ew, "step", r->step);
    moco_jw_num(&ew, "loss", r->e_steps ? r->loss / r->e_steps : NAN, 5);
    moco_jw_num(&ew, "acc", r->e_steps ? r->acc / r->e_steps : NAN, 3);
    moco_jw_g(&ew, "lr", r->lr, 6);
    if (r->recovered) {
        moco_jw_null(&ew, "pairs");
        moco_jw_null(&ew, "dropped");
        moco_jw_null(&ew, "failed");
        moco_jw_null(&ew, "seconds");
    } else {
        moco_jw_i64(&ew, "pairs", r->pairs);
        moco_jw_i64(&ew, "dropped", r->dropped);
        moco_jw_i64(&ew, "failed", r->failed);
        moco_jw_num(&ew, "seconds", r->seconds, 2);
    }
    moco_jw_num(&ew, "pairs_per_s", r->pairs_per_s, 2);
    moco_jw_num(&ew, "starved_pct", r->starved_pct, 1);
    if (r->knn >= 0) moco_jw_num(&ew, "knn_top1", r->knn, 2);
    else moco_jw_null(&ew, "knn_top1");
    moco_jw_num(&ew, "peak_rss_mb", peak_rss_mb(), 0);
    if (r->ranks > 1) moco_jw_i64(&ew, "ranks", r->ranks);
    if (r->recovered) moco_jw_bool(&ew, "recovered", 1);
    if (r->st) stream_stats_json(&ew, r->st); /* this rank's (rank 0's) consumer counters since the start */
    return put_record(&ew, metrics, mpath);
}

int train_epoch_recorded(const char *mpath, int64_t epoch, int *have)
{
    *have = 0;
    FILE *in = moco_fopen_regular(mpath); /* a FIFO is refused, not waited on */
    if (!in) return moco_err(MOCO_EIO, "cannot read %s: %s", mpath, strerror(errno));
    char want[96], *line = NULL;
    size_t cap = 0, wl = (size_t)snprintf(want, sizeof want, "{\"type\":\"epoch\",\"epoch\":%lld,", (long long)epoch);
    ssize_t n;
    /* a record is a whole line: a torn last one (a kill mid-write) is not the epoch's record */
    while (!*have && (n = getline(&line, &cap, in)) > 0) *have = line[n - 1] == '\n' && !strncmp(line, want, wl);
    free(line);
    fclose(in);
    return 0;
}

/* Resumed at the start of an epoch (an epoch's checkpoint): if the epoch
 * before has no record (a kill or a stop during its kNN, which comes after
 * the checkpoint), evaluate the same weights now and write the record,
 * marked "recovered" (what only that process knew is null). */
static int recover_record(const train_cfg *c, const char *mpath, FILE *metrics, resnet *q, trainer_stream *s, int64_t epoch,
                          int64_t step, int64_t steps_per_epoch, int ranks, double *knn_out)
{
    *knn_out = -1;
    if (epoch < 1) return 0;
    int have, rc = train_epoch_recorded(mpath, epoch - 1, &have);
    if (rc || have) return rc;
    double knn = -1;
    if (knn_due(c, epoch - 1)) {
        double tk = moco_now_s();
        int rc = train_knn(q, c->knn_train, c->knn_test, c->knn_k, (float)c->knn_t, c->mean, c->std, s, &knn, NULL);
        if (rc) return rc == MOCO_EINTR ? rc : moco_err(rc, "the kNN of epoch %lld, on resume: %s", (long long)(epoch - 1), moco_errmsg());
        fprintf(stderr, "moco train: epoch %lld: kNN top-1 %.2f%% (%.1f s), evaluated on resume: its record was missing\n",
                (long long)(epoch - 1), knn, moco_now_s() - tk);
    }
    epoch_record r = {.epoch = epoch - 1, .step = step, .lr = train_lr(c, epoch - 1, 0, steps_per_epoch), .pairs_per_s = NAN,
                      .starved_pct = NAN, .knn = knn, .ranks = ranks, .recovered = 1};
    *knn_out = knn;
    return write_epoch_record(metrics, mpath, &r);
}

/* The best kNN top-1 among the epoch records of metrics.jsonl (after
 * train_metrics_rewind: those up to the checkpoint), -1 if none. */
double train_best_knn(const char *mpath)
{
    FILE *in = moco_fopen_regular(mpath);
    if (!in) return -1;
    char *line = NULL;
    size_t cap = 0;
    double best = -1;
    while (getline(&line, &cap, in) > 0) {
        const char *p = strstr(line, "\"knn_top1\":");
        if (!strncmp(line, "{\"type\":\"epoch\",", 16) && p) {
            char *end;
            double v = strtod(p + 11, &end);
            if (end != p + 11 && v > best) best = v;
        }
    }
    free(line);
    fclose(in);
    return best;
}

/* A checkpoint: written by rank 0 only (every rank holds the same state). */
static int save_ckpt(const train_cfg *c, const char *path, const moco *mc, const ckpt_state *cs, const char **meta, int nmeta)
{
    return c->dist && dist_rank(c->dist) ? 0 : ckpt_save(path, mc, cs, meta, nmeta);
}

/* Ranks: the votes before each step. Every rank votes when its batch is
 * full, when its shard of the epoch has ended (EPOCH_END), or when it was
 * told to stop; the step happens only when all batches are full. */
enum { VOTE_FULL = 0, VOTE_EPOCH_DONE = 1, VOTE_STOP = 2 };
static void keep_stream(void *s) { stream_keepalive(s); }

/* A rank may wait here long (rank 0 evaluates kNN): it says BUSY meanwhile. */
static int vote(const train_cfg *c, trainer_stream *s, int mine, int *epoch_done, int *stop)
{
    double v[2] = {mine == VOTE_EPOCH_DONE, mine == VOTE_STOP || stop_flag};
    int rc = c->dist ? dist_sum_d_idle(c->dist, v, 2, keep_stream, s) : 0;
    *epoch_done = v[0] > 0;
    *stop = v[1] > 0;
    return rc;
}

/* The checkpoint to resume against this run's flags, from its config alone
 * (the header: read before any model is built or its kernels timed): the
 * model itself (another architecture shares its first tensors with this
 * one: a resnet34 checkpoint loaded as resnet18 dropped 240 tensors), the
 * --size, the dataset (count), the schedule. */
int train_resume_matches(const train_cfg *c, const moco_ckpt_config *kc, const char *resume)
{
    if (kc->arch[0] && (strcmp(kc->arch, c->arch) || (kc->width >= 0 && kc->width != c->width) ||
                        (kc->mlp >= 0 && kc->mlp != c->mlp) || (kc->dim >= 0 && kc->dim != c->dim)))
        return moco_err(MOCO_EINVAL, "%s holds a %s of width %d%s, dim %d; this run builds a %s of width %d%s, dim %d: "
                        "resume with the model it was trained with", resume, kc->arch, kc->width, kc->mlp > 0 ? " with the MLP head" : "",
                        kc->dim, c->arch, c->width, c->mlp ? " with the MLP head" : "", c->dim);
    if (!c->allow_schedule_change && kc->size >= 0 && kc->size != c->size)
        return moco_err(MOCO_EINVAL, "%s was trained at --size %d, this run has %d: give --size %d, or "
                        "--allow-schedule-change to change it in a run under way", resume, kc->size, c->size, kc->size);
    if (!c->allow_schedule_change && kc->count > 0 && c->count && (uint64_t)kc->count != c->count) /* mid-epoch: after the load */
        return moco_err(MOCO_EINVAL, "%s was trained on a dataset of %lld samples, this stream has %llu: resume on the same "
                        "dataset, or give --allow-schedule-change to go on with another one from an epoch's start", resume,
                        (long long)kc->count, (unsigned long long)c->count);
    return c->allow_schedule_change ? 0 : schedule_unchanged(c, kc, resume);
}

int train_run(const train_cfg *cin)
{
    train_cfg cfg = *cin; /* --count may come from the checkpoint */
    const train_cfg *c = &cfg;
    int rc = 0, N = c->batch, S = c->size;
    moco *mc = NULL;
    trainer_stream *s = NULL;
    FILE *metrics = NULL;
    float *x1 = NULL, *x2 = NULL;
    uint64_t *batch_idx = NULL;
    uint8_t *delivered = NULL;
    ckpt_state rs = {0};
    char path[4200], cfgjson[2048];
    const char *meta[6];
    int nmeta = 0, nb = 0;
    char *kernels = NULL; /* the kernels this run chose (tune_used_lines), kept in its checkpoints */
    int64_t epoch = c->start_epoch, step = 0, saved_step = -1; /* saved: the step of checkpoint_last in --out */
    const int rank = c->dist ? dist_rank(c->dist) : 0, ranks = c->dist ? dist_size(c->dist) : 1;
    int draining = 0, stop_after_epoch = 0, agreed_stop = 0; /* ranks: see vote() */
    int drained = 0; /* ranks: pairs of this epoch read while draining: dropped, as the partial batch is */
    int cut = 0; /* the stream ended before the run's last epoch (the loader stopped, or given fewer --epochs) */
    int lock_fd = -1; /* --out's lock (formats/rundir.h) */
    int made_out = 0; /* --out made here (removed again if the run fails before its first checkpoint) */
    int made_metrics = 0; /* metrics.jsonl made here (removed again, if still empty, when the run fails before then) */
    moco_ckpt_config kc;

    uint32_t resume_epoch = STREAM_NO_EPOCH;
    const char *resume = c->resume;
    char rpath[4200];
    rc = resume ? moco_rundir_ckpt("--resume", resume, rpath, sizeof rpath) : 0; /* a run directory: its last checkpoint */
    if (resume) resume = rpath;
    if (!rc) rc = check_inputs(c, resume);
    if (!rc && resume && !(rc = ckpt_read_config(resume, &kc))) { /* the header only: before any model is built */
        if (!cfg.count && kc.count > 0) cfg.count = (uint64_t)kc.count;
        rc = train_resume_matches(c, &kc, resume);
    }
    if (!rc && ranks > 1 && c->bind)
        rc = moco_err(MOCO_EINVAL, "ranks read the loader's serve mode (moco loader --pairs EP --consumers %d): give "
                      "--connect only, not --bind", ranks);
    if (!rc && ranks > 1 && c->bn_splits < 2)
        rc = moco_err(MOCO_EINVAL, "--bn-splits %d with %d ranks: shuffle BN permutes the keys among the BN groups of "
                      "their own rank, so each rank needs --bn-splits 2 or more (with one group the shuffle changes nothing, "
                      "and a query's BN group would be its key's)", c->bn_splits, ranks);
    /* one writer per directory (moco run holds the lock of the trainer it starts) */
    const int supervised = getenv("MOCO_RUN_SUPERVISED") != NULL;
    if (!rc && !rank && !supervised) {
        if (mkdir(c->out, 0755) == 0) made_out = 1;
        else if (errno != EEXIST) rc = moco_err(MOCO_EIO, "cannot create %s: %s", c->out, strerror(errno));
        if (!rc) rc = moco_lock_dir(c->out, &lock_fd);
    }
    if (!rc && !resume && !rank) rc = train_check_out_dir(c->out, c->overwrite);
    if (!rc && resume && !rank) rc = train_resume_into(c->out, resume, "--out"); /* never into another run's directory */
    if (c->dist) { /* every rank learns whether all could start; each says why it could not */
        double bad = rc != 0;
        int r2 = dist_sum_d(c->dist, &bad, 1);
        if (!rc && (r2 || bad > 0)) rc = r2 ? r2 : moco_err(MOCO_EINVAL, "another rank could not start (see its message)");
    }
    /* a failure is also recorded in metrics.jsonl, where the run's records are read afterwards: from here on, in
     * an --out whose checks passed; before, under moco run, which checked it (a resume refused its --knn-train) */
    if (rc) {
        if (!rank && supervised) train_note_failure(c->out, -1, moco_errmsg());
        if (made_out) train_drop_made_out(c->out, &lock_fd);
        if (lock_fd >= 0) close(lock_fd);
        return rc;
    }
    moco_cfg mcfg = {.enc = {.arch = c->arch, .width = c->width, .mlp = c->mlp, .dim = c->dim, .bn_splits = c->bn_splits,
                             .batch = N, .size = S, .precision = c->precision, .init = c->init},
                     .K = c->K, .m = (float)c->m, .T = (float)c->T, .symmetric = c->symmetric, .lr = (float)c->lr,
                     .sgd_momentum = (float)c->momentum, .weight_decay = (float)c->wd, .seed = c->seed};
    tune_configure(c->kernels, c->wisdom);
    if (resume && c->kernels == TUNE_MEASURE) { /* the kernels of the run's first part, over the wisdom file's */
        int lines = 0, taken = 0;
        if ((rc = ckpt_read_kernels(resume, &kernels))) goto out;
        if (kernels) taken = tune_pin(kernels, &lines);
        if (taken < lines && !rank)
            fprintf(stderr, "moco train: warning: %d of the %d kernel choices saved in %s apply here (the others were made on "
                            "another CPU model or thread count, or do not parse): the resumed run may round differently from "
                            "an uninterrupted one\n", taken, lines, resume);
        free(kernels);
        kernels = NULL;
    }
    if ((rc = dist_moco_new(c->dist, &mcfg, &mc))) goto out;
    if ((kernels = tune_used_lines()) && strlen(kernels) >= MOCO_CKPT_KERNELS_MAX) free(kernels), kernels = NULL; /* a reader would pass over it */
    if (c->dist && (rc = moco_set_comm(mc, dist_comm(c->dist)))) goto out;
    if (resume) { /* its config was compared with the flags above (train_resume_matches) */
        if ((rc = ckpt_load(resume, mc, &rs))) goto out;
        /* another dataset: a mid-epoch position (its bitmap of delivered indices) means nothing
         * there, and a whole run's count changes with it */
        if (kc.count > 0 && cfg.count && (uint64_t)kc.count != cfg.count &&
            (rs.delivered_bytes || !c->allow_schedule_change)) {
            rc = moco_err(MOCO_EINVAL, "%s was trained on a dataset of %lld samples, this stream has %llu: %s", resume,
                          (long long)kc.count, (unsigned long long)cfg.count,
                          rs.delivered_bytes ? "its mid-epoch position cannot carry over (resume on the same dataset)"
                                             : "give --allow-schedule-change to go on with another dataset from this epoch");
            goto out;
        }
        epoch = rs.epoch;
        step = rs.step;
        resume_epoch = (uint32_t)rs.pipe_epoch;
    }
    nmeta = train_config_meta(c, cfgjson, sizeof cfgjson, meta);
    if (kernels) meta[2 * nmeta] = MOCO_CKPT_KEY_KERNELS, meta[2 * nmeta + 1] = kernels, nmeta++;
    /* ranks: the same configuration and the same starting weights everywhere */
    /* and the flags that decide which collectives a rank calls when, or what its inputs are: a
     * difference there hung the job in mismatched collectives, or trained on other inputs unseen */
    /* where each rank starts (--start-epoch, or its --resume checkpoint): a rank whose
     * checkpoint ended the run left while the others waited in a collective for good */
    char local[640];
    snprintf(local, sizeof local, "log_every %d save_every %d check_every %ld precision %d mean %.9g %.9g %.9g std %.9g %.9g %.9g "
             "epoch %lld step %lld stream_epoch %u",
             c->log_every, c->save_every, c->dist ? dist_check_every(c->dist) : 0L, c->precision, c->mean[0], c->mean[1], c->mean[2],
             c->std[0], c->std[1], c->std[2], (long long)epoch, (long long)step, resume_epoch);
    if (c->dist && ((rc = dist_same(c->dist, cfgjson, strlen(cfgjson), "the training flags (--arch, --batch-size, --lr, ...)")) ||
                    (rc = dist_same(c->dist, local, strlen(local),
                                    "the run flags (--log-every, --save-every, --normalize, --precision, $MOCO_DIST_CHECK) or "
                                    "the starting point (--start-epoch, the --resume checkpoint)")) ||
                    (rc = dist_check_weights(c->dist, mc))))
        goto out;
    if (resume && c->epochs && epoch >= c->epochs) { /* every rank alike: the starting points agree */
        if (!rank)
            fprintf(stderr, "moco train: %s ends the run (epoch %lld of %d): nothing left to train\n", resume, (long long)epoch,
                    c->epochs);
        goto out;
    }
    if (resume && !rank) fprintf(stderr, "moco train: resumed %s: epoch %lld, step %lld\n", resume, (long long)epoch, (long long)step);
    if (c->precision == NN_BF16 && nn_bf16_emulated() && !rank) /* the test knob, said: it is not the product's bf16 */
        fprintf(stderr, "moco train: bf16 on oneDNN's emulation (MOCO_BF16_EMULATE=1, a test knob: this CPU has no AVX512_BF16)\n");
    if (c->count && c->count < (uint64_t)N * (uint64_t)ranks) { /* every epoch would end without a step, "trained" and
                                                                  * checkpointed; said before metrics.jsonl is made */
        rc = moco_err(MOCO_EINVAL, "the dataset's %" PRIu64 " samples make no batch of %d pairs%s: lower --batch-size", c->count,
                      N * ranks, ranks > 1 ? " (over all ranks)" : "");
        goto out;
    }
    snprintf(path, sizeof path, "%s/metrics.jsonl", c->out);
    int dropped = 0;
    if (!rank) {
        if (mkdir(c->out, 0755) && errno != EEXIST) { rc = moco_err(MOCO_EIO, "cannot create %s: %s", c->out, strerror(errno)); goto out; }
        if (resume && (rc = train_metrics_rewind(path, step, &dropped))) goto out;
    }
    made_metrics = !rank && access(path, F_OK) != 0;
    if (!(metrics = fopen(rank ? "/dev/null" : path, "a"))) { rc = moco_err(MOCO_EIO, "cannot write %s: %s", path, strerror(errno)); goto out; }
    if (resume) {
        moco_jw w; /* the path is the user's: escaped */
        moco_jw_begin(&w);
        moco_jw_str(&w, "type", "resume");
        moco_jw_i64(&w, "epoch", epoch);
        moco_jw_i64(&w, "step", step);
        moco_jw_str(&w, "from", resume);
        moco_jw_i64(&w, "dropped_records", dropped);
        if ((rc = put_record(&w, metrics, path))) goto out;
    }
    x1 = malloc(sizeof *x1 * (size_t)N * 3 * S * S);
    x2 = malloc(sizeof *x2 * (size_t)N * 3 * S * S);
    batch_idx = malloc(sizeof *batch_idx * (size_t)N);
    if (!x1 || !x2 || !batch_idx) { rc = moco_err(MOCO_ENOMEM, "out of memory for a batch of %d", N); goto out; }
    /* the stream position: the loader wants a bitmap of exactly ceil(count / 8) bytes */
    size_t need = (size_t)((c->count + 7) / 8);
    int has_bits = 0;
    for (size_t i = 0; i < rs.delivered_bytes; i++) has_bits |= rs.delivered[i] != 0;
    if (has_bits && !c->count) {
        rc = moco_err(MOCO_EINVAL, "%s was saved mid-epoch: resuming it needs --count (the dataset size)", resume);
        goto out;
    }
    if (has_bits) {
        if (!(delivered = calloc(need, 1))) { rc = moco_err(MOCO_ENOMEM, "out of memory"); goto out; }
        memcpy(delivered, rs.delivered, rs.delivered_bytes < need ? rs.delivered_bytes : need);
    }
    stream_cfg sc = {.pairs_ep = c->bind, .ctl_ep = c->connect, .keys = c->keys, .insecure = c->insecure, .resume_epoch = resume_epoch,
                     .resume_bitmap = has_bits ? delivered : NULL, .count = c->count, .loader_timeout = c->loader_timeout,
                     .rank = rank, .ranks = ranks, .size = S};
    if ((rc = stream_open(&sc, &s))) goto out;

    int64_t steps_per_epoch = c->count ? (int64_t)(c->count / ((uint64_t)N * (uint64_t)ranks)) : 0, step_in_epoch = 0;
    if (has_bits) { /* mid-epoch: the epoch's steps before the checkpoint, where its warm-up stands (they were 0: every
                     * step to the epoch's end took the learning rate of its start) */
        uint64_t got = 0;
        for (size_t i = 0; i < need; i++) got += (uint64_t)__builtin_popcount(delivered[i]);
        step_in_epoch = (int64_t)(got / ((uint64_t)N * (uint64_t)ranks));
    }
    double best = resume && !rank ? train_best_knn(path) : -1; /* checkpoint_best's kNN: a resume replaced it with any model */
    if (resume && !has_bits && !rank) { /* at an epoch's start: the record of the one before, if a kill took it */
        double knn = -1;
        rc = recover_record(c, path, metrics, mc->q, s, epoch, step, steps_per_epoch, ranks, &knn);
        if (rc == MOCO_EINTR && stop_flag) rc = 0; /* stopped again: the next resume evaluates it */
        if (rc) goto out;
        if (knn >= 0 && knn > best) { /* these weights are the checkpoint's: the epoch's end */
            ckpt_state cs = {.epoch = epoch, .step = step, .pipe_epoch = epoch, .delivered = NULL, .delivered_bytes = 0};
            best = knn;
            snprintf(path, sizeof path, "%s/checkpoint_best.safetensors", c->out);
            if ((rc = save_ckpt(c, path, mc, &cs, meta, nmeta))) goto out;
        }
    }
    int tty = isatty(STDERR_FILENO);
    double t_epoch = moco_now_s(), t_log = moco_now_s(), waited0 = 0, waited_log = 0, loss_sum = 0, acc_sum = 0;
    int64_t log_steps = 0, pairs_epoch = 0;
    double e_loss = 0, e_acc = 0;
    int64_t e_steps = 0;
    while (c->dist || !stop_flag) {
        stream_event ev;
        if (c->dist && stop_flag && !draining) { /* ranks: stop together, mid-epoch (see vote()) */
            int ed, st;
            if ((rc = vote(c, s, VOTE_STOP, &ed, &st))) goto out;
            if (!ed) { agreed_stop = 1; break; }
            draining = 1, stop_after_epoch = 1; /* a rank's shard has ended: close the epoch first */
        }
        rc = stream_next(s, 1000, &ev);
        if (!rc && ev.kind == STREAM_NONE) continue;
        if (rc) goto out;
        if (ev.kind == STREAM_END) { /* after the last epoch's end it is never read: epoch_done breaks first */
            cut = c->epochs > 0 && epoch < c->epochs;
            break;
        }
        if (ev.kind == STREAM_EPOCH_END) {
            if (c->dist && !draining) { /* the step that will not happen: tell the others */
                int ed, st;
                if ((rc = vote(c, s, VOTE_EPOCH_DONE, &ed, &st))) goto out;
                stop_after_epoch |= st;
            }
            draining = 0;
            /* drop the partial batch (drop_last), close the epoch */
            stream_stats st;
            stream_get_stats(s, &st);
            double el = moco_now_s() - t_epoch;
            int dropped_pairs = nb + drained; /* before: those drained counted in pairs, not in dropped */
            int64_t failed_epoch = ev.nfailed;
            nb = 0;
            if (c->dist) { /* the epoch's figures over all ranks (rank 0 writes them) */
                double v[5] = {e_loss, e_acc, (double)pairs_epoch, (double)dropped_pairs, (double)failed_epoch};
                if ((rc = dist_sum_d(c->dist, v, 5))) goto out;
                e_loss = v[0] / ranks, e_acc = v[1] / ranks, pairs_epoch = (int64_t)v[2], dropped_pairs = (int)v[3];
                failed_epoch = (int64_t)v[4];
            }
            /* a dataset whose every record fails: no run at all (not an epoch resumed after its good samples were trained) */
            if (e_steps == 0 && step_in_epoch == 0 && failed_epoch > 0 && pairs_epoch == 0) {
                rc = moco_err(MOCO_ECORRUPT, "epoch %lld trained no step: all %lld of its samples failed in the workers (see their log)",
                              (long long)epoch, (long long)failed_epoch);
                goto out;
            }
            int64_t next = (int64_t)ev.epoch + 1;
            /* the epoch's checkpoint (the next epoch, nothing of it
             * delivered yet), then its kNN, then its record. A kill or a
             * stop (SIGINT, SIGTERM: it ends the kNN at the next batch)
             * before the record leaves the record to the resume from this
             * checkpoint, which evaluates the same weights (recover_record) */
            ckpt_state cs = {.epoch = next, .step = step, .pipe_epoch = next, .delivered = NULL, .delivered_bytes = 0};
            snprintf(path, sizeof path, "%s/checkpoint_last.safetensors", c->out);
            if ((rc = save_ckpt(c, path, mc, &cs, meta, nmeta))) goto out;
            saved_step = step;
            snprintf(path, sizeof path, "%s/checkpoint_epoch_%04lld.safetensors", c->out, (long long)next);
            if ((rc = save_ckpt(c, path, mc, &cs, meta, nmeta))) goto out;
            if (c->keep > 0 && next - c->keep >= 1 && !rank) {
                snprintf(path, sizeof path, "%s/checkpoint_epoch_%04lld.safetensors", c->out, (long long)(next - c->keep));
                unlink(path);
            }
            double knn = -1;
            if (knn_due(c, epoch) && !rank) {
                double tk = moco_now_s();
                rc = train_knn(mc->q, c->knn_train, c->knn_test, c->knn_k, (float)c->knn_t, c->mean, c->std, s, &knn, NULL);
                if (rc == MOCO_EINTR && stop_flag) { /* stopped: the resume writes this epoch's record */
                    rc = 0;
                    fprintf(stderr, "%smoco train: epoch %lld: kNN stopped; its record is written on resume\n", tty ? "\n" : "",
                            (long long)epoch);
                    goto epoch_done;
                }
                if (rc) goto out;
                fprintf(stderr, "%smoco train: epoch %lld: kNN top-1 %.2f%% (%.1f s)\n", tty ? "\n" : "", (long long)epoch, knn,
                        moco_now_s() - tk);
            }
            epoch_record e_rec = {.epoch = epoch, .step = step, .e_steps = e_steps, .loss = e_loss, .acc = e_acc,
                                  .lr = train_lr(c, epoch, 0, steps_per_epoch), .pairs = pairs_epoch, .dropped = dropped_pairs,
                                  .failed = failed_epoch, .seconds = el, .pairs_per_s = el > 0 && e_steps ? (double)(e_steps * N * ranks) / el : NAN,
                                  .starved_pct = el > 0 ? 100 * (st.waited_s - waited0) / el : 0, .knn = knn, .ranks = ranks, .st = &st,
                                  /* resumed at its last step (a stop there): every step was the stopped run's, whose figures
                                   * went with it; said so, as recover_record does (before: "pairs":0, unmarked) */
                                  .recovered = e_steps == 0 && step_in_epoch > 0};
            if (e_rec.recovered) e_rec.pairs_per_s = e_rec.starved_pct = NAN, e_rec.st = NULL;
            char mpath[4200];
            snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", c->out);
            if ((rc = write_epoch_record(metrics, mpath, &e_rec))) goto out;
            if (!tty && !rank && !e_rec.recovered) fprintf(stderr, "moco train: epoch %lld: loss %.4f, acc %.1f%%, %.1f pairs/s\n", (long long)epoch,
                              e_steps ? e_loss / e_steps : 0, e_steps ? e_acc / e_steps : 0, el > 0 ? (double)(e_steps * N * ranks) / el : 0);
            if (knn >= 0 && knn > best) {
                best = knn;
                snprintf(path, sizeof path, "%s/checkpoint_best.safetensors", c->out);
                if ((rc = save_ckpt(c, path, mc, &cs, meta, nmeta))) goto out;
            }
        epoch_done:
            waited0 = st.waited_s;
            epoch = next;
            step_in_epoch = 0;
            pairs_epoch = 0;
            drained = 0;
            e_loss = e_acc = 0;
            e_steps = 0;
            t_epoch = moco_now_s();
            if (c->epochs && epoch >= c->epochs) break;
            if (stop_after_epoch) { agreed_stop = 1; break; } /* ranks: told to stop while the epoch ended */
            continue;
        }
        if (draining) { pairs_epoch++, drained++; continue; } /* ranks: another's shard ended; the rest of this one is dropped */
        /* a pair */
        if (ev.pair.height != S || ev.pair.width != S) { /* never: the stream drops them (.size) */
            rc = moco_err(MOCO_EINVAL, "pair (epoch %u, index %" PRIu64 ") has %ux%u views; the model takes %dx%d (--size)",
                          ev.pair.epoch, ev.pair.index, ev.pair.height, ev.pair.width, S, S);
            goto out;
        }
        train_view_to_float(x1, ev.q, nb, S, ev.pair.channels, c->mean, c->std);
        train_view_to_float(x2, ev.k, nb, S, ev.pair.channels, c->mean, c->std);
        batch_idx[nb++] = ev.pair.index;
        pairs_epoch++;
        if (nb < N) continue;
        if (c->dist) { /* ranks: step only when every batch is full */
            int ed, st;
            if ((rc = vote(c, s, VOTE_FULL, &ed, &st))) goto out;
            if (ed) { draining = 1; stop_after_epoch |= st; continue; } /* this batch is dropped with the epoch's end */
            if (st) { agreed_stop = 1; break; }
        }
        nb = 0;
        float lr = (float)train_lr(c, epoch, step_in_epoch, steps_per_epoch);
        moco_stats ms;
        rc = moco_step(mc, x1, x2, NULL, lr, &ms);
        if (rc) goto out; /* a non-finite loss: stop before anything is written */
        /* this rank's loss and contrastive top-1 (the positive ranks first
         * among the logits), averaged over the directions; ms.loss_all and
         * ms.acc_all are the means over the ranks */
        float loss = ms.loss;
        double acc = ms.acc;
        step++;
        step_in_epoch++;
        loss_sum += loss;
        acc_sum += acc;
        e_loss += loss;
        e_acc += acc;
        e_steps++;
        log_steps++;
        if (c->dist && step % 100 == 0 && (rc = dist_check_weights(c->dist, mc))) goto out; /* bit-identical on every rank */
        if (log_steps == c->log_every) {
            double t = moco_now_s();
            if (c->dist) { /* the mean over ranks */
                double v[2] = {loss_sum, acc_sum};
                if ((rc = dist_sum_d(c->dist, v, 2))) goto out;
                loss_sum = v[0] / ranks, acc_sum = v[1] / ranks;
            }
            stream_stats st;
            stream_get_stats(s, &st);
            moco_jw sw;
            moco_jw_begin(&sw);
            moco_jw_str(&sw, "type", "step");
            moco_jw_i64(&sw, "epoch", epoch);
            moco_jw_i64(&sw, "step", step);
            moco_jw_num(&sw, "loss", loss_sum / log_steps, 5);
            moco_jw_num(&sw, "acc", acc_sum / log_steps, 3);
            moco_jw_g(&sw, "lr", lr, 6);
            moco_jw_num(&sw, "pairs_per_s", (double)(log_steps * N * ranks) / (t - t_log), 2);
            moco_jw_num(&sw, "starved_pct", 100 * (st.waited_s - waited_log) / (t - t_log), 1);
            char mpath[4200];
            snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", c->out);
            if ((rc = put_record(&sw, metrics, mpath))) goto out;
            waited_log = st.waited_s;
            if (tty && !rank) {
                double el = moco_now_s() - t_epoch, rate = (double)(e_steps * N * ranks) / (el > 0 ? el : 1);
                double eta = steps_per_epoch ? (double)((steps_per_epoch - step_in_epoch) * N) / (rate > 0 ? rate : 1) : 0;
                fprintf(stderr, "\repoch %lld step %lld/%lld  loss %.4f  acc %5.1f%%  lr %.4g  %.1f pairs/s  starved %.0f%%  ETA %.0fs   ",
                        (long long)epoch, (long long)step_in_epoch, (long long)steps_per_epoch, loss_sum / log_steps,
                        acc_sum / log_steps, lr, rate, 100 * (st.waited_s - waited0) / (el > 0 ? el : 1), eta);
            }
            loss_sum = acc_sum = 0;
            log_steps = 0;
            t_log = t;
        }
        /* not at the epoch's last full batch: its end checkpoint follows,
         * and a resume from there would end the epoch with no step of it */
        if (c->save_every > 0 && step % c->save_every == 0 && !(steps_per_epoch > 0 && step_in_epoch == steps_per_epoch)) {
            /* mid-epoch: the delivered set, minus nothing (the batch was just used) */
            if ((rc = save_midepoch(c, s, mc, epoch, step, batch_idx, 0, &delivered, meta, nmeta))) goto out;
            saved_step = step;
        }
    }
out:; /* a declaration follows: C11 puts a statement after a label (clang-14 insists; make fuzz) */
    /* SIGINT / SIGTERM: whatever stopped the loop, keep what was trained
     * (ranks: only a stop they all agreed on, at the same step); so too
     * when the loader ended the stream early or went silent (one process;
     * ranks: their last common checkpoint) */
    const int stopped = c->dist ? agreed_stop && !rc : stop_flag;
    if (stopped || (!c->dist && s && (cut || rc == MOCO_ETIMEOUT))) {
        char why[512];
        snprintf(why, sizeof why, "%s", rc == MOCO_ETIMEOUT ? moco_errmsg() : "");
        int r2 = 0;
        /* nothing trained (a fresh run stopped before its first step, e.g. while it waited for its loader):
         * no checkpoint, and the --out it made goes (before: a checkpoint of the initial weights, and
         * the advice to resume it) */
        if (s && saved_step != step && step > 0 &&
            !(r2 = save_midepoch(c, s, mc, epoch, step, batch_idx, nb, &delivered, meta, nmeta)))
            saved_step = step;
        if (r2) rc = r2;
        else if (stopped && saved_step >= 0)
            rc = moco_err(MOCO_EINTR, "interrupted at step %lld (epoch %lld): %s/checkpoint_last.safetensors holds it",
                          (long long)step, (long long)epoch, c->out);
        else if (stopped)
            rc = moco_err(MOCO_EINTR, "interrupted before the first step");
        else if (cut && saved_step < 0)
            rc = moco_err(MOCO_EIO, "the loader ended the stream before the first step (was it stopped, or given fewer --epochs?)");
        else if (cut)
            rc = moco_err(MOCO_EIO, "the loader ended the stream in epoch %lld of %d, at step %lld (was it stopped, or given fewer "
                                    "--epochs?): %s/checkpoint_last.safetensors holds this position; resume from it",
                          (long long)epoch, c->epochs, (long long)step, c->out);
        else if (saved_step >= 0)
            rc = moco_err(MOCO_ETIMEOUT, "%s; %s/checkpoint_last.safetensors holds step %lld (epoch %lld); resume from it", why, c->out,
                          (long long)step, (long long)epoch);
    } else if (c->dist && cut && !rc) {
        rc = moco_err(MOCO_EIO, "the loader ended the stream in epoch %lld of %d, at step %lld: resume from the last checkpoint in %s",
                      (long long)epoch, c->epochs, (long long)step, c->out);
    }
    if (metrics) fclose(metrics);
    if (rc && saved_step < 0 && made_metrics) { /* failed before its first checkpoint: a metrics.jsonl this run made */
        char mp[4200];                           /* and left empty is no output (and would refuse the next run) */
        struct stat st;
        snprintf(mp, sizeof mp, "%s/metrics.jsonl", c->out);
        if (stat(mp, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0) unlink(mp);
    }
    if (rc && rc != MOCO_EINTR && !rank) train_note_failure(c->out, epoch, moco_errmsg()); /* a metrics.jsonl left */
    if (rc && made_out && saved_step < 0) train_drop_made_out(c->out, &lock_fd); /* only if it holds nothing but the lock */
    if (lock_fd >= 0) close(lock_fd); /* after the last write */
    stream_destroy(&s);
    moco_destroy(&mc);
    free(x1);
    free(x2);
    free(batch_idx);
    free(delivered);
    free((void *)rs.delivered);
    free(kernels);
    return rc;
}

void train_catch_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL); /* the same stop: mpirun forwards SIGUSR1 to the ranks (SIGTERM ends its job outright) */
}
