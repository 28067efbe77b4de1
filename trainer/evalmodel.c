/* evalmodel.c: shared flags and loading for the evaluation commands. */
#include "trainer/evalmodel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "formats/errors.h"
#include "formats/normalize.h"
#include "formats/rundir.h"
#include "trainer/engine/ckpt.h"
#include "trainer/engine/par.h"
#include "trainer/engine/tune.h"
#include "trainer/evalset.h"

/* the encoders, and the largest width, dim and input side, the flags take:
 * a checkpoint's config is held to the same */
#define ARCHS "resnet18|resnet34|resnet50|resnet18-cifar|resnet50-cifar"
#define WIDTH_MAX 1024
#define DIM_MAX 65536
#define SIZE_MAX_SIDE 4096

int evalmodel_opts(evalmodel_flags *f, moco_opt *o, const char *batch_flag)
{
    *f = (evalmodel_flags){.norm = "auto", .threads = 2, .init_seed = -1, .kernels = "checkpoint", .precision = "checkpoint"};
    int n = 0;
    o[n++] = (moco_opt){"ckpt", MOCO_OPT_STR, &f->ckpt, "checkpoint written by moco train (its encoder_q is used), or a run directory (its checkpoint_last)", 0, 0, NULL};
    o[n++] = (moco_opt){"arch|-a", MOCO_OPT_CHOICE, &f->arch, "encoder; none: the checkpoint's (resnet18-cifar without one)", 0, 0,
                        ARCHS};
    o[n++] = (moco_opt){"width", MOCO_OPT_INT, &f->width, "its base width; 0: the checkpoint's (64 without one)", 0, WIDTH_MAX, NULL};
    o[n++] = (moco_opt){"mlp", MOCO_OPT_FLAG, &f->mlp, "it has the MLP head (default: as the checkpoint says)", 0, 0, NULL};
    o[n++] = (moco_opt){"moco-dim", MOCO_OPT_INT, &f->dim, "its feature dimension; 0: the checkpoint's (128 without one)", 0, DIM_MAX, NULL};
    o[n++] = (moco_opt){"size", MOCO_OPT_INT, &f->size, "input side, resize + centre crop; 0: the checkpoint's training size (32 without one)", 0, SIZE_MAX_SIDE, NULL};
    o[n++] = (moco_opt){"normalize", MOCO_OPT_CHOICE, &f->norm, "mean/std of the inputs", 0, 0, "auto|cifar|imagenet|none"};
    o[n++] = (moco_opt){batch_flag, MOCO_OPT_INT, &f->batch, "images per forward (default: the checkpoint's training batch, else 256)", 1, 65536, NULL};
    o[n++] = (moco_opt){"threads", MOCO_OPT_INT, &f->threads, "compute threads", 1, 256, NULL};
    o[n++] = (moco_opt){"random-init", MOCO_OPT_INT, &f->init_seed,
                        "no checkpoint: the encoder as moco train --seed S initialises it (a baseline)", 0, 1e15, NULL};
    o[n++] = (moco_opt){"kernels", MOCO_OPT_CHOICE, &f->kernels,
                        "checkpoint: the kernels the checkpoint's run chose, where it kept them for this batch and --threads "
                        "(its monitor's figures to the digit), else the fixed rule; rule: the fixed rule; measure: each "
                        "convolution's forward on the kernel timed fastest here, kept in the wisdom file (nothing timed by the "
                        "other two)", 0, 0, "checkpoint|rule|measure"};
    o[n++] = (moco_opt){"wisdom", MOCO_OPT_STR, &f->wisdom,
                        "the wisdom file of --kernels measure (default $MOCO_WISDOM, else ~/.cache/moco/wisdom.jsonl)", 0, 0, NULL};
    o[n++] = (moco_opt){"precision", MOCO_OPT_CHOICE, &f->precision,
                        "the forward's precision; checkpoint: the one its run trained in (its monitor's figures to the digit; "
                        "a bf16 one runs in fp32 where this CPU or build has no bf16, and says so)", 0, 0, "checkpoint|fp32|bf16"};
    return n;
}

const char *evalmodel_norm_name(const char *norm, int size)
{
    if (!strcmp(norm, "auto")) return size <= EVALSET_SMALL_SIDE ? "cifar" : "imagenet";
    return !strcmp(norm, "cifar") ? "cifar" : !strcmp(norm, "imagenet") ? "imagenet" : !strcmp(norm, "none") ? "none" : NULL;
}

int evalmodel_resolve(evalmodel_flags *f)
{
    if (!f->ckpt || f->ckpt == f->ckpt_buf) return 0;
    int rc = moco_rundir_ckpt("--ckpt", f->ckpt, f->ckpt_buf, sizeof f->ckpt_buf);
    if (!rc) f->ckpt = f->ckpt_buf;
    return rc;
}

/* arch is one of ARCHS */
static int known_arch(const char *arch)
{
    size_t n = strlen(arch);
    for (const char *a = ARCHS; *a;) {
        size_t l = strcspn(a, "|");
        if (l == n && !strncmp(a, arch, n)) return 1;
        a += l + (a[l] == '|');
    }
    return 0;
}

/* c describes an encoder the flags could describe: rn_new refuses another
 * with a message that names no file (a dim of 2^31 - 1: "out of memory for
 * 8389833 MB of activations"), and moco lincls would start its workers at a
 * size they refuse. 0, or MOCO_ECORRUPT naming path and the field. */
static int config_in_range(const char *p, const moco_ckpt_config *c)
{
    if (c->arch[0] && !known_arch(c->arch))
        return moco_err(MOCO_ECORRUPT, "%s: its config's arch \"%s\" is none of %s", p, c->arch, ARCHS);
    const int got[3] = {c->width, c->dim, c->size}, max[3] = {WIDTH_MAX, DIM_MAX, SIZE_MAX_SIDE};
    static const char *const field[3] = {"width", "dim", "size"};
    for (int i = 0; i < 3; i++)
        if (got[i] > max[i])
            return moco_err(MOCO_ECORRUPT, "%s: its config's %s %d is above %d, the largest the flags take", p, field[i], got[i], max[i]);
    return 0;
}

int evalmodel_ckpt_size(const char *ckpt, long *size)
{
    char path[4200];
    moco_ckpt_config cc;
    int rc = moco_rundir_ckpt("--ckpt", ckpt, path, sizeof path);
    if (!rc && !(rc = ckpt_read_config(path, &cc)) && !(rc = config_in_range(path, &cc))) *size = cc.size > 0 ? cc.size : 32;
    return rc;
}

void evalmodel_norm(const char *norm, int size, float mean[3], float std[3])
{
    static const float cm[3] = MOCO_NORM_CIFAR_MEAN, cs[3] = MOCO_NORM_CIFAR_STD;
    static const float im[3] = MOCO_NORM_IMAGENET_MEAN, is[3] = MOCO_NORM_IMAGENET_STD;
    static const float nm[3] = MOCO_NORM_NONE_MEAN, ns[3] = MOCO_NORM_NONE_STD;
    const char *n = evalmodel_norm_name(norm, size);
    int none = n && !strcmp(n, "none"), cifar = n && !strcmp(n, "cifar");
    for (int i = 0; i < 3; i++) {
        mean[i] = none ? nm[i] : cifar ? cm[i] : im[i];
        std[i] = none ? ns[i] : cifar ? cs[i] : is[i];
    }
}

int evalmodel_describe(evalmodel_flags *f, const moco_ckpt_config *c)
{
    const char *p = f->ckpt;
    int rc = config_in_range(p, c);
    if (rc) return rc;
    if (f->arch && c->arch[0] && strcmp(f->arch, c->arch))
        return moco_err(MOCO_EINVAL, "%s holds a %s encoder; --arch %s contradicts it", p, c->arch, f->arch);
    if (f->width && c->width > 0 && f->width != c->width)
        return moco_err(MOCO_EINVAL, "%s holds an encoder of width %d (encoder_q.conv1.weight has %d output channels); "
                        "--width %ld contradicts it", p, c->width, c->width, f->width);
    if (f->mlp && c->mlp == 0)
        return moco_err(MOCO_EINVAL, "%s holds an encoder with the linear head (fc.weight); --mlp contradicts it", p);
    if (f->dim && c->dim > 0 && f->dim != c->dim)
        return moco_err(MOCO_EINVAL, "%s holds an encoder of --moco-dim %d; --moco-dim %ld contradicts it", p, c->dim, f->dim);
    if (c->normalize[0]) { /* the inputs it was trained on: auto means those */
        const char *kn = strcmp(c->normalize, "auto") ? evalmodel_norm_name(c->normalize, 0) : NULL;
        if (!kn)
            return moco_err(MOCO_ECORRUPT, "%s: its config's normalize \"%s\" is none of cifar, imagenet, none", p, c->normalize);
        if (strcmp(f->norm, "auto") && strcmp(f->norm, kn))
            return moco_err(MOCO_EINVAL, "%s was trained on inputs normalised as --normalize %s; --normalize %s contradicts it", p, kn,
                            f->norm);
        if (c->has_mean_std) { /* the constants it was trained with are the ones kn stands for here */
            float mean[3], std[3];
            evalmodel_norm(kn, 0, mean, std);
            for (int i = 0; i < 3; i++)
                if (fabs(c->mean[i] - mean[i]) > 1e-6 || fabs(c->std[i] - std[i]) > 1e-6)
                    return moco_err(MOCO_EFORMAT,
                                    "%s: its config's normalize \"%s\" has mean [%g, %g, %g] and std [%g, %g, %g]; this "
                                    "build's \"%s\" is mean [%g, %g, %g] and std [%g, %g, %g]",
                                    p, kn, c->mean[0], c->mean[1], c->mean[2], c->std[0], c->std[1], c->std[2], kn,
                                    (double)mean[0], (double)mean[1], (double)mean[2], (double)std[0], (double)std[1],
                                    (double)std[2]);
        }
        f->norm = kn;
    }
    if (!f->arch && c->arch[0]) {
        snprintf(f->arch_buf, sizeof f->arch_buf, "%s", c->arch);
        f->arch = f->arch_buf;
    }
    if (!f->width && c->width > 0) f->width = c->width;
    if (!f->mlp && c->mlp > 0) f->mlp = 1;
    if (!f->dim && c->dim > 0) f->dim = c->dim;
    if (!f->size && c->size > 0) f->size = c->size;
    return 0;
}

/* f->bf16 from --precision and the checkpoint's (trained) precision: a
 * bf16 checkpoint where bf16 cannot run is put on fp32 with f->note saying
 * why; --precision bf16 there is the engine's refusal. */
static int pick_precision(evalmodel_flags *f, const char *trained)
{
    const char *p = f->precision ? f->precision : "checkpoint";
    int want = !strcmp(p, "bf16") || (!strcmp(p, "checkpoint") && !strcmp(trained, "bf16"));
    f->bf16 = 0, f->note[0] = 0;
    if (!want) return 0;
    int rc = nn_bf16_available();
    if (rc && !strcmp(p, "bf16")) return rc; /* its message says why */
    if (rc) {
        snprintf(f->note, sizeof f->note, "%s was trained in bf16, and bf16 cannot run here. Its forward runs in fp32, and its "
                 "figures may differ from its run's monitor by an image or so. Why: %s", f->ckpt, moco_errmsg());
        return 0;
    }
    f->bf16 = 1;
    return 0;
}

int evalmodel_open(evalmodel_flags *f, resnet **m, float mean[3], float std[3])
{
    *m = NULL;
    if (!f->ckpt == (f->init_seed < 0)) return moco_err(MOCO_EINVAL, "give one of --ckpt and --random-init");
    moco_ckpt_config cc;
    int rc;
    if (f->ckpt && ((rc = evalmodel_resolve(f)) || (rc = ckpt_read_config(f->ckpt, &cc)) || (rc = evalmodel_describe(f, &cc)))) return rc;
    if (!f->arch) f->arch = "resnet18-cifar";
    if (!f->width) f->width = 64;
    if (!f->dim) f->dim = 128;
    if (!f->size) f->size = 32;
    evalmodel_norm(f->norm, (int)f->size, mean, std);
    par_set_threads((int)f->threads);
    if (VIPS_INIT("moco")) return moco_err(MOCO_EVIPS, "cannot start libvips");
    vips_cache_set_max(0);
    int measure = f->kernels && !strcmp(f->kernels, "measure"), pin = !f->kernels || !strcmp(f->kernels, "checkpoint");
    if (!f->batch) f->batch = f->ckpt && cc.batch > 0 ? cc.batch : 256; /* the monitor's forwards ran at the training batch */
    if ((rc = pick_precision(f, f->ckpt ? cc.precision : ""))) return rc;
    tune_configure(measure ? TUNE_MEASURE : pin ? TUNE_CHECKPOINT : TUNE_RULE, f->wisdom);
    f->pinned = f->pins = 0;
    if (pin && f->ckpt) {
        char *k = NULL;
        if ((rc = ckpt_read_kernels(f->ckpt, &k))) return rc;
        tune_pin(k, &f->pins);
        free(k);
    }
    rn_cfg c = {.arch = f->arch, .width = (int)f->width, .mlp = f->mlp, .dim = (int)f->dim, .bn_splits = 1,
                .batch = (int)f->batch, .size = (int)f->size, .precision = f->bf16 ? NN_BF16 : NN_FP32};
    rc = rn_new(&c, f->init_seed < 0 ? 0 : (uint64_t)f->init_seed, 0, NULL, m);
    if (!rc && measure) tune_keep(); /* the choices are made as the model is built: keep them now */
    if (!rc && f->pins) { /* how many of the model's convolutions run on the checkpoint's kernels */
        char *u = tune_used_lines();
        for (const char *p = u; p && (p = strchr(p, '\n')); p++) f->pinned++;
        free(u);
    }
    if (!rc && f->ckpt && (rc = ckpt_load_encoder(f->ckpt, *m))) rn_destroy(m);
    return rc;
}
