/* fuzz_evalmodel.c: libFuzzer target for what the evaluation commands
 * (moco knn, lincls, embed) make of a checkpoint's config: evalmodel_open
 * reads it (ckpt_read_config: fuzz_ckpt's) and resolves the flags against it
 * (evalmodel_describe, trainer/evalmodel.c): contradictions, the
 * normalisation and its constants, the encoder it describes. Input: 2 bytes
 * choosing the flags (byte 0: bits 0-2 --arch (0, 6, 7: not given), bit 3
 * --mlp, bits 4-5 --normalize auto/cifar/imagenet/none; byte 1: bits 0-1
 * --width, 2-3 --moco-dim, 4-5 --size, each 0 (not given) or one of three
 * values), then the "config" string (NUL-terminated, at most
 * MOCO_CKPT_CONFIG_MAX bytes, as read_meta hands it over).
 * Checked: a refusal names the file; what is accepted agrees with the flags
 * given and with the checkpoint, its normalisation has a name, and the
 * encoder it describes is one the flags could describe (a known arch, width
 * <= 1024, dim <= 65536, size <= 4096) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats/checkpoint.h"
#include "formats/errors.h"
#include "trainer/evalmodel.h"

#define PATH "fuzz.safetensors"

static const char *const archs[] = {"resnet18", "resnet34", "resnet50", "resnet18-cifar", "resnet50-cifar"};
static const char *const norms[] = {"auto", "cifar", "imagenet", "none"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    static const long widths[] = {0, 1, 64, 1024}, dims[] = {0, 1, 128, 65536}, sizes[] = {0, 8, 32, 4096};
    evalmodel_flags f = {.ckpt = PATH, .norm = norms[data[0] >> 4 & 3], .batch = 2, .threads = 1, .init_seed = -1};
    int a = data[0] & 7;
    f.arch = a >= 1 && a <= 5 ? archs[a - 1] : NULL;
    f.mlp = data[0] >> 3 & 1;
    f.width = widths[data[1] & 3], f.dim = dims[data[1] >> 2 & 3], f.size = sizes[data[1] >> 4 & 3];
    const evalmodel_flags given = f;
    data += 2, size -= 2;
    char js[MOCO_CKPT_CONFIG_MAX];
    if (size >= sizeof js) size = sizeof js - 1;
    memcpy(js, data, size);
    js[size] = 0;
    moco_ckpt_config c;
    if (moco_ckpt_config_parse(js, PATH, &c)) return 0;
    int rc = evalmodel_describe(&f, &c);
    if (rc) {
        if ((rc != MOCO_EINVAL && rc != MOCO_ECORRUPT && rc != MOCO_EFORMAT) || !strstr(moco_errmsg(), PATH)) abort();
        return 0;
    }
    /* the flags given stand; what was not given comes from the checkpoint */
    if (given.arch && f.arch != given.arch) abort();
    if (c.arch[0] && (!f.arch || strcmp(f.arch, c.arch))) abort();
    if (given.width ? f.width != given.width : f.width != (c.width > 0 ? c.width : 0)) abort();
    if (given.dim ? f.dim != given.dim : f.dim != (c.dim > 0 ? c.dim : 0)) abort();
    if (given.size ? f.size != given.size : f.size != (c.size > 0 ? c.size : 0)) abort();
    if (f.mlp != (given.mlp || c.mlp > 0)) abort();
    if (!evalmodel_norm_name(f.norm, 32) || (c.normalize[0] && strcmp(f.norm, c.normalize))) abort();
    /* an encoder the flags could describe */
    int known = !f.arch;
    for (int i = 0; i < 5; i++) known |= f.arch && !strcmp(f.arch, archs[i]);
    if (!known || f.width < 0 || f.width > 1024 || f.dim < 0 || f.dim > 65536 || f.size < 0 || f.size > 4096) abort();
    return 0;
}
