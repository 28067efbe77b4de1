/* evalmodel.c: shared flags and loading for the evaluation commands. */
#include "trainer/evalmodel.h"

#include <string.h>
#include <vips/vips.h>

#include "formats/errors.h"
#include "trainer/ckpt.h"
#include "trainer/par.h"

int evalmodel_opts(evalmodel_flags *f, moco_opt *o, const char *batch_flag)
{
    *f = (evalmodel_flags){.arch = "resnet18-cifar", .norm = "auto", .width = 64, .dim = 128, .size = 32, .batch = 256, .threads = 2,
                            .init_seed = -1};
    int n = 0;
    o[n++] = (moco_opt){"ckpt", MOCO_OPT_STR, &f->ckpt, "checkpoint written by moco train (its encoder_q is used)", 0, 0, NULL};
    o[n++] = (moco_opt){"arch", MOCO_OPT_CHOICE, &f->arch, "encoder the checkpoint holds", 0, 0,
                        "resnet18|resnet34|resnet50|resnet18-cifar|resnet50-cifar"};
    o[n++] = (moco_opt){"width", MOCO_OPT_INT, &f->width, "its base width", 1, 1024, NULL};
    o[n++] = (moco_opt){"mlp", MOCO_OPT_FLAG, &f->mlp, "it has the MLP head", 0, 0, NULL};
    o[n++] = (moco_opt){"moco-dim", MOCO_OPT_INT, &f->dim, "its feature dimension", 1, 65536, NULL};
    o[n++] = (moco_opt){"size", MOCO_OPT_INT, &f->size, "input side (resize + centre crop)", 8, 4096, NULL};
    o[n++] = (moco_opt){"normalize", MOCO_OPT_CHOICE, &f->norm, "mean/std of the inputs", 0, 0, "auto|cifar|imagenet|none"};
    o[n++] = (moco_opt){batch_flag, MOCO_OPT_INT, &f->batch, "images per forward", 1, 65536, NULL};
    o[n++] = (moco_opt){"threads", MOCO_OPT_INT, &f->threads, "compute threads", 1, 256, NULL};
    o[n++] = (moco_opt){"random-init", MOCO_OPT_INT, &f->init_seed,
                        "no checkpoint: the encoder as moco train --seed S initialises it (a baseline)", 0, 1e15, NULL};
    return n;
}

void evalmodel_norm(const char *norm, int size, float mean[3], float std[3])
{
    static const float cm[3] = {0.4914f, 0.4822f, 0.4465f}, cs[3] = {0.2023f, 0.1994f, 0.2010f};
    static const float im[3] = {0.485f, 0.456f, 0.406f}, is[3] = {0.229f, 0.224f, 0.225f};
    int none = !strcmp(norm, "none"), cifar = !strcmp(norm, "cifar") || (!strcmp(norm, "auto") && size <= 64);
    for (int i = 0; i < 3; i++) {
        mean[i] = none ? 0.0f : cifar ? cm[i] : im[i];
        std[i] = none ? 1.0f : cifar ? cs[i] : is[i];
    }
}

int evalmodel_open(const evalmodel_flags *f, resnet **m, float mean[3], float std[3])
{
    *m = NULL;
    if (!f->ckpt == (f->init_seed < 0)) return moco_err(MOCO_EINVAL, "give one of --ckpt and --random-init");
    evalmodel_norm(f->norm, (int)f->size, mean, std);
    par_set_threads((int)f->threads);
    if (VIPS_INIT("moco")) return moco_err(MOCO_EVIPS, "cannot start libvips");
    vips_cache_set_max(0);
    rn_cfg c = {.arch = f->arch, .width = (int)f->width, .mlp = f->mlp, .dim = (int)f->dim, .bn_splits = 1,
                .batch = (int)f->batch, .size = (int)f->size};
    int rc = rn_new(&c, f->init_seed < 0 ? 0 : (uint64_t)f->init_seed, 0, NULL, m);
    if (!rc && f->ckpt && (rc = ckpt_load_encoder(f->ckpt, *m))) rn_destroy(m);
    return rc;
}
