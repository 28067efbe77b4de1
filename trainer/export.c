/* export.c: `moco export` and `moco embed`, taking trained weights out.
 * export: the query encoder of a checkpoint as a plain state_dict with
 *   torchvision's names (encoder_q. stripped), optionally without the head
 *   (--backbone), for torchvision's load_state_dict.
 * embed: the L2-normalised features of every sample of a dataset, with its
 *   labels, as safetensors (features F32 (N, dim), labels I64 (N)). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/errors.h"
#include "formats/opts.h"
#include "formats/safetensors.h"
#include "trainer/ckpt.h"
#include "trainer/evalmodel.h"
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
    const char *db = NULL, *out = NULL;
    evalmodel_flags ef;
    moco_opt opts[EVALMODEL_NOPTS + 4];
    int n = evalmodel_opts(&ef, opts, "batch");
    opts[n++] = (moco_opt){"db", MOCO_OPT_STR, &db, "dataset LMDB to embed", 0, 0, NULL};
    opts[n++] = (moco_opt){"out", MOCO_OPT_STR, &out, "safetensors file: features (N, dim), labels (N)", 0, 0, NULL};
    opts[n] = (moco_opt){NULL, 0, NULL, NULL, 0, 0, NULL};
    const moco_optspec spec = {"moco embed", "--ckpt CKPT --db DB --out FILE [options]",
                               "Features of every sample of DB by a checkpoint's query encoder (no augmentation).", opts, 0, 0};
    char *pos[1];
    int np, rc = moco_opts_parse(&spec, argc, argv, pos, &np);
    if (rc) return rc == MOCO_OPTS_HELP ? 0 : 2;
    if (!(ef.ckpt || ef.init_seed >= 0) || !db || !out) {
        fprintf(stderr, "moco embed: --ckpt (or --random-init), --db and --out are required\n");
        return 2;
    }
    const int B = (int)ef.batch, S = (int)ef.size, D = (int)ef.dim;
    resnet *m = NULL;
    evalset *es = NULL;
    float *x = NULL, *feat = NULL, mean[3], std[3];
    int32_t *lab = NULL;
    int64_t *lab64 = NULL, cnt = 0;
    if ((rc = evalmodel_open(&ef, &m, mean, std)) || (rc = evalset_open(db, S, mean, std, &es))) goto out;
    cnt = evalset_count(es);
    x = malloc(sizeof *x * (size_t)B * 3 * S * S);
    feat = malloc(sizeof *feat * (size_t)cnt * D);
    lab = malloc(sizeof *lab * (size_t)(cnt + B));
    lab64 = malloc(sizeof *lab64 * (size_t)cnt);
    if (!x || !feat || !lab || !lab64) { rc = moco_err(MOCO_ENOMEM, "out of memory"); goto out; }
    for (int64_t s = 0; s < cnt; s += B) {
        int k = (int)(cnt - s < B ? cnt - s : B);
        if (k < B) memset(x, 0, sizeof *x * (size_t)B * 3 * S * S);
        if ((rc = evalset_read(es, s, k, x, lab + s))) goto out;
        const float *o = rn_forward(m, x, NULL, 0);
        for (int i = 0; i < k; i++) {
            double ss = 0;
            for (int d = 0; d < D; d++) ss += (double)o[(size_t)i * D + d] * o[(size_t)i * D + d];
            double inv = 1.0 / (sqrt(ss) > 1e-12 ? sqrt(ss) : 1e-12);
            for (int d = 0; d < D; d++) feat[(size_t)(s + i) * D + d] = (float)(o[(size_t)i * D + d] * inv);
        }
    }
    for (int64_t i = 0; i < cnt; i++) lab64[i] = lab[i];
    moco_st_entry e[2] = {{"features", MOCO_ST_F32, 2, {cnt, D}, feat}, {"labels", MOCO_ST_I64, 1, {cnt}, lab64}};
    char what[64];
    snprintf(what, sizeof what, "random-init %ld", ef.init_seed);
    const char *meta[] = {"ckpt", ef.ckpt ? ef.ckpt : what, "db", db};
    rc = moco_st_write(out, e, 2, meta, 2);
out:
    if (rc) fprintf(stderr, "moco embed: %s\n", moco_errmsg());
    else printf("moco embed: %lld x %d features to %s\n", (long long)cnt, D, out);
    rn_destroy(&m);
    evalset_destroy(&es);
    free(x); free(feat); free(lab); free(lab64);
    return rc ? 1 : 0;
}
