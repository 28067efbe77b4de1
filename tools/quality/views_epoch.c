/* views_epoch.c: an experiment, not part of bin/moco. It separates the two
 * halves of training quality, the augmentation and the trainer, by running
 * MoCo epochs on views stored in a file, so that the same views can go to
 * this trainer and to PyTorch (pytorch_views_epoch.py), and views made by
 * torchvision (torchvision_views.py) or by ours can go to either.
 *
 *   views_epoch records DB OUT                 payloads of DB, as (u32 LE length, bytes), index order
 *   views_epoch ours DB OUT SEED EPOCHS        our cifar-recipe views, (epoch, index) order
 *   views_epoch train VIEWS N EPOCHS SEED BANK_DB TEST_DB [LR]
 *       resnet18-cifar width 16, batch 256, K 4096, m 0.99, T 0.1, lr LR (0.03)
 *       cosine over 20 epochs, wd 5e-4, 8 BN splits; batches in the order of
 *       moco_rng_permutation(seed, 77, epoch, 0); one JSON line per epoch
 *       with the mean loss and the kNN top-1 (k 200, t 0.1).
 * A views file holds, per epoch and index, the query then the key view, each
 * 32x32x3 uint8 HWC. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment/augment.h"
#include "formats/db.h"
#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/normalize.h"
#include "formats/record.h"
#include "formats/rng.h"
#include "trainer/engine/moco.h"
#include "trainer/engine/par.h"
#include "trainer/train.h"

#define S 32
#define VB (S * S * 3)

/* CIFAR-10's mean and std, as the reference's Normalize and moco train use (formats/normalize.h) */
static const float mean[3] = MOCO_NORM_CIFAR_MEAN, std[3] = MOCO_NORM_CIFAR_STD;

static int fail(const char *what)
{
    fprintf(stderr, "views_epoch: %s: %s\n", what, moco_errmsg());
    return 1;
}

static int records(const char *dbpath, const char *out)
{
    moco_db *db;
    if (moco_db_open(dbpath, &db)) return fail(dbpath);
    uint64_t n = moco_db_get_meta(db)->count;
    FILE *f = fopen(out, "wb");
    uint8_t *buf = NULL;
    size_t cap = 0, len;
    int rc = !f;
    for (uint64_t i = 0; i < n && !rc; i++) {
        if (moco_db_get(db, i, &buf, &cap, &len)) { rc = fail("record"); break; }
        uint32_t pl = (uint32_t)(len - MOCO_REC_HEADER_SIZE);
        uint8_t le[4];
        moco_put_le32(le, pl);
        rc = fwrite(le, 4, 1, f) != 1 || fwrite(buf + MOCO_REC_HEADER_SIZE, 1, pl, f) != pl;
    }
    if (f && fclose(f)) rc = 1;
    free(buf);
    moco_db_destroy(&db);
    if (!rc) printf("%llu records to %s\n", (unsigned long long)n, out);
    return rc;
}

static int ours(const char *dbpath, const char *out, uint64_t seed, int epochs)
{
    moco_db *db;
    if (moco_db_open(dbpath, &db)) return fail(dbpath);
    uint64_t n = moco_db_get_meta(db)->count;
    augment_recipe r;
    augment_ctx *ctx = NULL;
    if (augment_recipe_init(&r, "cifar", S)) return fail("recipe");
    r.seed = seed;
    if (augment_ctx_new(&r, &ctx)) return fail("augment");
    FILE *f = fopen(out, "wb");
    uint8_t *buf = NULL, q[VB], k[VB];
    size_t cap = 0, len;
    int rc = !f;
    for (int e = 0; e < epochs && !rc; e++)
        for (uint64_t i = 0; i < n && !rc; i++) {
            augment_info info;
            if (moco_db_get(db, i, &buf, &cap, &len) || augment_pair(ctx, buf, len, (uint32_t)e, i, q, k, &info)) {
                rc = fail("views");
                break;
            }
            if (info.channels != 3) { fprintf(stderr, "views_epoch: record %llu is not RGB\n", (unsigned long long)i); rc = 1; }
            rc = rc || fwrite(q, 1, VB, f) != VB || fwrite(k, 1, VB, f) != VB;
        }
    if (f && fclose(f)) rc = 1;
    free(buf);
    augment_ctx_destroy(&ctx);
    moco_db_destroy(&db);
    return rc;
}

static void to_float(float *o, const uint8_t *src)
{
    for (int ch = 0; ch < 3; ch++)
        for (int i = 0; i < S * S; i++) o[ch * S * S + i] = ((float)src[i * 3 + ch] / 255.0f - mean[ch]) / std[ch];
}

static int train(const char *views, long n, int epochs, uint64_t seed, const char *bank, const char *test, double lr0)
{
    const int N = 256;
    par_set_threads(2);
    moco_cfg mc = {.enc = {.arch = "resnet18-cifar", .width = 16, .dim = 128, .bn_splits = 8, .batch = N, .size = S},
                   .K = 4096, .m = 0.99f, .T = 0.1f, .lr = (float)lr0, .sgd_momentum = 0.9f, .weight_decay = 5e-4f, .seed = seed};
    moco *m = NULL;
    if (moco_new(&mc, &m)) return fail("model");
    FILE *f = fopen(views, "rb");
    uint8_t *all = malloc((size_t)n * 2 * VB);
    float *x1 = malloc(sizeof(float) * N * 3 * S * S), *x2 = malloc(sizeof(float) * N * 3 * S * S);
    uint64_t *perm = malloc(sizeof *perm * (size_t)n);
    int rc = !f || !all || !x1 || !x2 || !perm;
    for (int e = 0; e < epochs && !rc; e++) {
        if (fread(all, 2 * VB, (size_t)n, f) != (size_t)n) { fprintf(stderr, "views_epoch: %s: short\n", views); rc = 1; break; }
        moco_rng g;
        moco_rng_init(&g, seed, 77, (uint64_t)e, 0);
        moco_rng_permutation(&g, perm, (uint64_t)n);
        float lr = (float)(lr0 * 0.5 * (1.0 + cos(M_PI * e / 20.0)));
        double sum = 0;
        int steps = 0;
        for (long b = 0; b + N <= n && !rc; b += N) {
            for (int j = 0; j < N; j++) {
                const uint8_t *v = all + perm[b + j] * 2 * VB;
                to_float(x1 + (size_t)j * 3 * S * S, v);
                to_float(x2 + (size_t)j * 3 * S * S, v + VB);
            }
            moco_stats st;
            if (moco_step(m, x1, x2, NULL, lr, &st)) { rc = fail("step"); break; }
            sum += st.loss, steps++;
            if (steps % 20 == 0) fprintf(stderr, "epoch %d step %d mean loss %.4f\n", e + 1, steps, sum / steps);
        }
        double top1 = 0;
        if (!rc && train_knn(m->q, bank, test, 200, 0.1f, mean, std, NULL, &top1, NULL)) rc = fail("kNN");
        if (!rc) {
            moco_jw w;
            moco_jw_begin(&w);
            moco_jw_i64(&w, "epoch", e + 1);
            moco_jw_num(&w, "loss", steps ? sum / steps : NAN, 4);
            moco_jw_num(&w, "knn_top1", top1, 2);
            if (moco_jw_line(&w, stdout)) rc = fail("the epoch's line");
        }
        fflush(stdout);
    }
    if (f) fclose(f);
    free(all), free(x1), free(x2), free(perm);
    moco_destroy(&m);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "records")) return records(argv[2], argv[3]);
    if (argc == 6 && !strcmp(argv[1], "ours")) return ours(argv[2], argv[3], strtoull(argv[4], NULL, 10), atoi(argv[5]));
    if ((argc == 8 || argc == 9) && !strcmp(argv[1], "train"))
        return train(argv[2], atol(argv[3]), atoi(argv[4]), strtoull(argv[5], NULL, 10), argv[6], argv[7],
                     argc == 9 ? atof(argv[8]) : 0.03);
    fprintf(stderr, "usage: see the comment at the top of tools/quality/views_epoch.c\n");
    return 2;
}
