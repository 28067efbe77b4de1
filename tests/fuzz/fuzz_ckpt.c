/* fuzz_ckpt.c: libFuzzer target for what `moco train --resume` reads of a
 * checkpoint (trainer/engine/ckpt.c, formats/checkpoint.c, trainer/train.c):
 * the input is written as a .safetensors file, then
 *   ckpt_read_config (the header's __metadata__: format, config, the
 *   CRC-32s; moco_ckpt_config_parse) and train_resume_matches against a
 *   tiny model's flags, as train_run does before any model is built;
 *   ckpt_open and ckpt_check_encoder (the evaluation commands);
 *   ckpt_load into that tiny model (every tensor's name, dtype, shape, the
 *   queue, train.* and pipeline.* positions, the delivered bitmap).
 * Each either succeeds or returns a MOCO_E* code; nothing else may happen.
 * With MOCO_FUZZ_CKPT_SEEDS=DIR set, it writes its seed checkpoints (the
 * tiny model saved at an epoch's end and mid-epoch) into DIR and exits:
 * tests/fuzz/make_corpus.py runs it so. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/errors.h"
#include "trainer/engine/ckpt.h"
#include "trainer/engine/moco.h"
#include "trainer/train.h"

static char dir[256], path[300];
static moco *mc;
static train_cfg tc;

static void tiny(void)
{
    moco_cfg cfg = {.enc = {.arch = "resnet18-cifar", .width = 1, .mlp = 1, .dim = 4, .bn_splits = 1, .batch = 2, .size = 8},
                    .K = 8, .m = 0.99f, .T = 0.1f, .lr = 0.06f, .sgd_momentum = 0.9f, .weight_decay = 5e-4f, .seed = 3};
    if (moco_new(&cfg, &mc)) { fprintf(stderr, "moco_new: %s\n", moco_errmsg()); abort(); }
    tc = (train_cfg){.arch = "resnet18-cifar", .width = 1, .mlp = 1, .dim = 4, .K = 8, .batch = 2, .epochs = 3, .bn_splits = 1,
                     .size = 8, .lr = 0.06, .momentum = 0.9, .wd = 5e-4, .m = 0.99, .T = 0.1, .seed = 3, .cos = 1, .count = 64};
}

static void seeds(const char *out)
{
    char json[2048], p[512];
    const char *meta[4];
    int nmeta = train_config_meta(&tc, json, sizeof json, meta);
    uint8_t bm[8] = {0xff, 0x0f, 0, 0x80, 0, 0, 0, 0}; /* 64 samples, some delivered */
    ckpt_state e = {.epoch = 1, .step = 32, .pipe_epoch = 1}, m = {.epoch = 1, .step = 40, .pipe_epoch = 1, .delivered = bm,
                                                                    .delivered_bytes = sizeof bm};
    snprintf(p, sizeof p, "%s/epoch.safetensors", out);
    if (ckpt_save(p, mc, &e, meta, nmeta)) { fprintf(stderr, "%s\n", moco_errmsg()); exit(1); }
    snprintf(p, sizeof p, "%s/midepoch.safetensors", out);
    if (ckpt_save(p, mc, &m, meta, nmeta)) { fprintf(stderr, "%s\n", moco_errmsg()); exit(1); }
    exit(0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    tiny();
    const char *s = getenv("MOCO_FUZZ_CKPT_SEEDS");
    if (s && *s) seeds(s);
    snprintf(dir, sizeof dir, "/tmp/moco-fuzz-ckpt-XXXXXX");
    if (!mkdtemp(dir)) abort();
    snprintf(path, sizeof path, "%s/c.safetensors", dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    moco_ckpt_config kc;
    if (!ckpt_read_config(path, &kc)) (void)train_resume_matches(&tc, &kc, path);
    moco_st *st = NULL;
    if (!ckpt_open(path, &st, &kc)) {
        (void)ckpt_check_encoder(st, path, mc->q, "encoder_q.");
        moco_st_destroy(&st);
    } else if (st) abort(); /* NULL on failure (ckpt.h) */
    ckpt_state cs = {0};
    if (!ckpt_load(path, mc, &cs)) {
        if (cs.delivered_bytes && !cs.delivered) abort();
        free((void *)cs.delivered);
    }
    return 0;
}
