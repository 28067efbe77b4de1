/* checkpoint.h: the metadata contract of a moco train checkpoint (the
 * safetensors "__metadata__" strings; the tensors are the engine's,
 * trainer/engine/ckpt.h), in one place: the format string, the key names,
 * and the "config" JSON object with its one writer and its one reader.
 *
 * Promise: moco_ckpt_config_write writes the fields in one fixed order
 * (arch, width, mlp, dim, K, m, T, batch_size, ranks, lr, momentum, wd,
 * cos, schedule, warmup_epochs, epochs, bn_splits, symmetric, size,
 * precision, [normalize, mean, std,] seed, count), doubles as printf's %g
 * (mean and std with 7 significant digits), normalize with mean and std only
 * when normalize is not "". moco_ckpt_config_parse reads what it wrote back
 * field for field; a field absent (older checkpoints lack precision,
 * normalize, ...) is left at its "absent" value (below), and a field
 * present but out of range is MOCO_ECORRUPT naming the file and the field.
 * What the writer writes, the reader reads: the writer refuses
 * (MOCO_EINVAL naming the field) what the reader would refuse. */
#ifndef MOCO_CHECKPOINT_H
#define MOCO_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

/* __metadata__ "format": the layout this build writes and reads */
#define MOCO_CKPT_FORMAT "moco-checkpoint-1"
/* the __metadata__ keys */
#define MOCO_CKPT_KEY_FORMAT "format"
#define MOCO_CKPT_KEY_CONFIG "config"             /* the JSON object below, as a string */
#define MOCO_CKPT_KEY_DATA_CRC32 "data_crc32"     /* zlib CRC-32 of the data section, 8 hex digits */
#define MOCO_CKPT_KEY_CONFIG_CRC32 "config_crc32" /* that of the config string */
/* since 2026-12-05: the CRC-32 of the whole header (tensor names, dtypes,
 * shapes, offsets and every metadata string), 8 hex digits, computed with
 * its own digits as '0' (formats/safetensors.h, MOCO_ST_HEADER_CRC): two
 * tensors' offsets swapped left data_crc32 right and loaded each as the other */
#define MOCO_CKPT_KEY_HEADER_CRC32 "header_crc32"
/* optional: the kernels the run chose by measurement (moco train --kernels
 * measure), one line of the wisdom file's format each (trainer/engine/tune.h);
 * a resume runs on them, so that it ends byte-identical to an uninterrupted
 * run whatever the wisdom file says by then. Covered by header_crc32 (in
 * files written before it, a damaged line is ignored and measured). */
#define MOCO_CKPT_KEY_KERNELS "kernels"
/* the longest kernels string a reader takes (bytes, the NUL included) */
#define MOCO_CKPT_KERNELS_MAX 65536
/* the longest config string a reader takes (bytes, the NUL included) */
#define MOCO_CKPT_CONFIG_MAX 4096

/* The "config" object. Absent on read: -1 (ints and count), NAN (lr, m,
 * T, momentum, wd), "" (strings), has_* 0; has_config 0 when the
 * checkpoint has no config at all. Ints are in [0, 2^31), count in
 * [0, 2^63), doubles finite, mean and std 3 numbers each. */
typedef struct {
    int has_config, has_schedule;
    char arch[32];
    char schedule[192];  /* "120,160": the step-decay epochs ("" with none) */
    char precision[8];   /* "fp32", "bf16", "" (before 2026-12-01) */
    char normalize[16];  /* the inputs' mean and std: "cifar", "imagenet", "none", "" (before 2026-12-02) */
    int width, mlp, dim, size, K, batch, ranks, epochs, cos, warmup_epochs, symmetric, bn_splits;
    double lr, m, T, momentum, wd;
    int has_mean_std;    /* with normalize: the mean and std it stands for, as written (3 each) */
    double mean[3], std[3];
    int has_seed;
    uint64_t seed;
    int64_t count;       /* samples per epoch (the dataset) */
} moco_ckpt_config;

/* c with every field absent (see above). */
void moco_ckpt_config_init(moco_ckpt_config *c);

/* c as the config JSON into buf (n bytes, NUL-terminated). Returns 0;
 * MOCO_EINVAL naming the field when it is out of the reader's range (a
 * negative int or count, a non-finite double) or a string is not
 * NUL-terminated in its array; MOCO_ENOMEM; MOCO_EINVAL when the text does
 * not fit in n bytes or MOCO_CKPT_CONFIG_MAX. buf is "" on failure. */
int moco_ckpt_config_write(const moco_ckpt_config *c, char *buf, size_t n);

/* The config JSON js (NUL-terminated; "" means no config) of the file
 * path into *c. Returns 0, or MOCO_ECORRUPT naming path and the field (or
 * that it is not a JSON object). */
int moco_ckpt_config_parse(const char *js, const char *path, moco_ckpt_config *c);

/* "%08lx" of zlib's CRC-32 of s[0..len) into out (9 bytes at least): the
 * form of data_crc32 and config_crc32. */
void moco_ckpt_crc32_hex(const void *s, size_t len, char *out, size_t cap);

#endif
