/* fuzz_ckpt_config.c: libFuzzer target for the checkpoint metadata
 * contract's reader, moco_ckpt_config_parse (formats/checkpoint.c), on the
 * "config" string as read_meta hands it over (NUL-terminated, at most
 * MOCO_CKPT_CONFIG_MAX bytes), then train_resume_matches (trainer/train.c)
 * with what it parsed against a run's flags, twice: the flags of the seeds'
 * model and, to reach every comparison, flags that differ in each.
 * A config that parses is written again (moco_ckpt_config_write) and must
 * parse back to the same fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats/checkpoint.h"
#include "formats/errors.h"
#include "trainer/train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char js[MOCO_CKPT_CONFIG_MAX];
    if (size >= sizeof js) size = sizeof js - 1;
    memcpy(js, data, size);
    js[size] = 0;
    moco_ckpt_config c;
    if (moco_ckpt_config_parse(js, "fuzz", &c)) return 0;
    train_cfg a = {.arch = "resnet18-cifar", .width = 1, .mlp = 1, .dim = 4, .K = 8, .batch = 2, .epochs = 3, .bn_splits = 1,
                   .size = 8, .lr = 0.06, .momentum = 0.9, .wd = 5e-4, .m = 0.99, .T = 0.1, .seed = 3, .cos = 1, .count = 64};
    train_cfg b = {.arch = "resnet50", .width = 7, .mlp = 0, .dim = 9, .K = 9, .batch = 5, .epochs = 4, .bn_splits = 3,
                   .size = 9, .lr = 0.5, .momentum = 0.5, .wd = 1e-3, .m = 0.5, .T = 0.5, .seed = 4, .cos = 0, .count = 65,
                   .warmup_epochs = 1, .symmetric = 1, .norm = "imagenet", .schedule = {1, 2}, .nschedule = 2};
    (void)train_resume_matches(&a, &c, "fuzz");
    (void)train_resume_matches(&b, &c, "fuzz");
    char out[MOCO_CKPT_CONFIG_MAX];
    moco_ckpt_config d;
    if (moco_ckpt_config_write(&c, out, sizeof out) == 0) {
        if (moco_ckpt_config_parse(out, "again", &d)) abort();
        if (strcmp(c.arch, d.arch) || c.width != d.width || c.K != d.K || c.count != d.count || c.seed != d.seed) abort();
    }
    return 0;
}
