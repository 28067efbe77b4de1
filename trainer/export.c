/* export.c: `moco export` and `moco embed`, taking trained weights out.
 * export: the query encoder of a checkpoint as a plain state_dict with
 *   torchvision's names (encoder_q. stripped), optionally without the head
 *   (--backbone), for torchvision's load_state_dict.
 * embed: the L2-normalised features of every sample of a dataset, with its
 *   labels, as safetensors (features F32 (N, dim), labels I64 (N)). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "formats/errors.h"
#include "formats/opts.h"
#include "formats/safetensors.h"
#include "trainer/ckpt.h"
#include "trainer/evalset.h"
#include "trainer/export.h"

int export_main(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *which = "encoder_q";
    int backbone = 0;
    const moco_opt opts[] = {
        {"ckpt", MOCO_OPT_STR, &ckpt, "checkpoint written by moco train", 0, 0, NULL},
        {"out", MOCO_OPT_STR, &out, "safetensors file to write", 0, 0, NULL},
        {"encoder", MOCO_OPT_CHOICE, &which, "which encoder", 0, 0, "encoder_q|encoder_k"},
        {"backbone", MOCO_OPT_FLAG, &backbone, "drop the projection head (fc.*)", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco export", "--ckpt CKPT --out FILE [options]",
                               "Write an encoder of a checkpoint with torchvision's state_dict names, e.g. for\n"
                               "torchvision.models.resnet50().load_state_dict(safetensors.torch.load_file(FILE)).",
                               opts, 0, 0};
    char *pos[1];
    int np, rc = moco_opts_parse(&spec, argc, argv, pos, &np);
    if (rc) return rc == MOCO_OPTS_HELP ? 0 : 2;
    if (!ckpt || !out) {
        fprintf(stderr, "moco export: --ckpt and --out are required\n");
        return 2;
    }
    moco_st *f;
    if ((rc = moco_st_open(ckpt, &f))) {
        fprintf(stderr, "moco export: %s\n", moco_errmsg());
        return 1;
    }
    int n = moco_st_count(f), k = 0;
    size_t pl = strlen(which) + 1;
    moco_st_entry *e = calloc((size_t)n + 1, sizeof *e);
    for (int i = 0; e && i < n; i++) {
        const moco_st_tensor *t = moco_st_at(f, i);
        if (strncmp(t->name, which, pl - 1) || t->name[pl - 1] != '.') continue;
        const char *name = t->name + pl;
        if (backbone && !strncmp(name, "fc.", 3)) continue;
        e[k].name = name;
        e[k].dtype = t->dtype;
        e[k].ndim = t->ndim;
        memcpy(e[k].shape, t->shape, sizeof e[k].shape);
        e[k].data = moco_st_data(f, t);
        k++;
    }
    const char *meta[] = {"format", "pt", "source", ckpt};
    rc = !e ? moco_err(MOCO_ENOMEM, "out of memory")
         : k == 0 ? moco_err(MOCO_ENOTFOUND, "%s: no %s.* tensors (not a moco checkpoint?)", ckpt, which)
                  : moco_st_write(out, e, k, meta, 2);
    if (rc) fprintf(stderr, "moco export: %s\n", moco_errmsg());
    else printf("moco export: %d tensors of %s to %s\n", k, which, out);
    free(e);
    moco_st_destroy(&f);
    return rc ? 1 : 0;
}

int embed_main(int argc, char **argv)
{
    const char *ckpt = NULL, *db = NULL, *out = NULL, *arch = "resnet18-cifar", *norm = "auto";
    long width = 64, dim = 128, size = 32, batch = 256, threads = 2;
    int mlp = 0;
    const moco_opt opts[] = {
        {"ckpt", MOCO_OPT_STR, &ckpt, "checkpoint (moco train)", 0, 0, NULL},
        {"db", MOCO_OPT_STR, &db, "dataset LMDB to embed", 0, 0, NULL},
        {"out", MOCO_OPT_STR, &out, "safetensors file: features (N, dim), labels (N)", 0, 0, NULL},
        {"arch", MOCO_OPT_CHOICE, &arch, "encoder the checkpoint holds", 0, 0, "resnet18|resnet34|resnet50|resnet18-cifar|resnet50-cifar"},
        {"width", MOCO_OPT_INT, &width, "its base width", 1, 1024, NULL},
        {"mlp", MOCO_OPT_FLAG, &mlp, "it has the MLP head", 0, 0, NULL},
        {"moco-dim", MOCO_OPT_INT, &dim, "its feature dimension", 1, 65536, NULL},
        {"size", MOCO_OPT_INT, &size, "input side (resize + centre crop)", 8, 4096, NULL},
        {"normalize", MOCO_OPT_CHOICE, &norm, "mean/std of the inputs", 0, 0, "auto|cifar|imagenet|none"},
        {"batch", MOCO_OPT_INT, &batch, "images per forward", 1, 65536, NULL},
        {"threads", MOCO_OPT_INT, &threads, "compute threads", 1, 256, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco embed", "--ckpt CKPT --db DB --out FILE [options]",
                               "Features of every sample of DB by a checkpoint's query encoder (no augmentation).", opts, 0, 0};
    char *pos[1];
    int np, rc = moco_opts_parse(&spec, argc, argv, pos, &np);
    if (rc) return rc == MOCO_OPTS_HELP ? 0 : 2;
    if (!ckpt || !db || !out) {
        fprintf(stderr, "moco embed: --ckpt, --db and --out are required\n");
        return 2;
    }
    int cifar = !strcmp(norm, "cifar") || (!strcmp(norm, "auto") && size <= 64);
    float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2023f, 0.1994f, 0.2010f};
    if (!cifar) {
        const float im[3] = {0.485f, 0.456f, 0.406f}, is[3] = {0.229f, 0.224f, 0.225f};
        for (int i = 0; i < 3; i++) { mean[i] = !strcmp(norm, "none") ? 0 : im[i]; std[i] = !strcmp(norm, "none") ? 1 : is[i]; }
    }
    openblas_set_num_threads((int)threads);
    if (VIPS_INIT("moco")) return 1;
    vips_cache_set_max(0);
    rn_cfg c = {.arch = arch, .width = (int)width, .mlp = mlp, .dim = (int)dim, .bn_splits = 1, .batch = (int)batch, .size = (int)size};
    resnet *m = NULL;
    evalset *es = NULL;
    float *x = NULL, *feat = NULL;
    int32_t *lab = NULL;
    int64_t *lab64 = NULL, n = 0;
    if ((rc = rn_new(&c, 0, 0, NULL, &m)) || (rc = ckpt_load_encoder(ckpt, m)) || (rc = evalset_open(db, (int)size, mean, std, &es)))
        goto out;
    n = evalset_count(es);
    x = malloc(sizeof *x * (size_t)batch * 3 * size * size);
    feat = malloc(sizeof *feat * (size_t)n * dim);
    lab = malloc(sizeof *lab * (size_t)(n + batch));
    lab64 = malloc(sizeof *lab64 * (size_t)n);
    if (!x || !feat || !lab || !lab64) { rc = moco_err(MOCO_ENOMEM, "out of memory"); goto out; }
    for (int64_t s = 0; s < n; s += batch) {
        int cnt = (int)(n - s < batch ? n - s : batch);
        if (cnt < batch) memset(x, 0, sizeof *x * (size_t)batch * 3 * size * size);
        if ((rc = evalset_read(es, s, cnt, x, lab + s))) goto out;
        const float *o = rn_forward(m, x, NULL, 0);
        for (int i = 0; i < cnt; i++) {
            double ss = 0;
            for (int d = 0; d < dim; d++) ss += (double)o[(size_t)i * dim + d] * o[(size_t)i * dim + d];
            double inv = 1.0 / (sqrt(ss) > 1e-12 ? sqrt(ss) : 1e-12);
            for (int d = 0; d < dim; d++) feat[(size_t)(s + i) * dim + d] = (float)(o[(size_t)i * dim + d] * inv);
        }
    }
    for (int64_t i = 0; i < n; i++) lab64[i] = lab[i];
    moco_st_entry e[2] = {{"features", MOCO_ST_F32, 2, {n, dim}, feat}, {"labels", MOCO_ST_I64, 1, {n}, lab64}};
    const char *meta[] = {"ckpt", ckpt, "db", db};
    rc = moco_st_write(out, e, 2, meta, 2);
out:
    if (rc) fprintf(stderr, "moco embed: %s\n", moco_errmsg());
    else printf("moco embed: %lld x %ld features to %s\n", (long long)n, dim, out);
    rn_destroy(&m);
    evalset_destroy(&es);
    free(x); free(feat); free(lab); free(lab64);
    return rc ? 1 : 0;
}
