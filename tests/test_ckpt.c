/* test_ckpt.c: checkpoints that can be trusted (trainer/ckpt.h):
 *  - the CRC-32 of the tensor data in __metadata__: a checkpoint with one
 *    byte of tensor data flipped is refused (MOCO_ECORRUPT naming the file)
 *    by ckpt_load, ckpt_load_encoder and ckpt_open;
 *  - NaN or infinite weights are refused at load (MOCO_ENUMERIC naming the
 *    tensor) by ckpt_load, by evalmodel_open (knn, lincls, embed) and by
 *    moco export;
 *  - checkpoints describe themselves: evalmodel_open builds the encoder from
 *    the "config" metadata (arch, width, mlp, dim, size) without flags, and
 *    refuses flags that contradict it; a checkpoint without a config falls
 *    back to the flags;
 *  - a model tensor the model lacks (a resnet34 checkpoint loaded as
 *    resnet18, a forged encoder_q.extra) is refused, naming it;
 *  - another "format" is refused by every reader; none at all is read;
 *  - train.epoch / pipeline.epoch >= 2^32 - 1, train.step >= 2^53 refused;
 *  - moco export checks names, dtypes and shapes as a load does (a missing
 *    tensor, an I32 one, an extra one, a name that is not UTF-8).
 *  - the metadata contract (formats/checkpoint.h): the config writer
 *    writes the bytes the code before it wrote (golden texts and their
 *    config_crc32), a checkpoint carrying them loads, every field survives
 *    writer -> reader at its range's edges, the writer refuses what the
 *    reader would, and the reader refuses each malformed field with
 *    MOCO_ECORRUPT naming the file and the field;
 *  - the training size moco lincls reads before it starts its workers is
 *    held to the flags' range, as evalmodel_open holds the config.
 * Small models: resnet18-cifar width 4, 8x8 inputs, batch 4, K 16. */
#include "tests/testutil.h"

#include <math.h>

#include "formats/checkpoint.h"
#include "formats/errors.h"
#include "formats/safetensors.h"
#include "trainer/engine/ckpt.h"
#include "trainer/evalmodel.h"
#include "trainer/export.h"
#include "trainer/engine/moco.h"
#include "trainer/train.h"

/* a tiny MoCo model (mlp head, dim 8) and the train_cfg that describes it */
static moco *tiny(train_cfg *tc)
{
    moco_cfg cfg = {.enc = {.arch = "resnet18-cifar", .width = 4, .mlp = 1, .dim = 8, .bn_splits = 2, .batch = 4, .size = 8},
                    .K = 16, .m = 0.99f, .T = 0.1f, .lr = 0.06f, .sgd_momentum = 0.9f, .weight_decay = 5e-4f, .seed = 3};
    moco *mc;
    if (moco_new(&cfg, &mc)) fail_msg("moco_new: %s", moco_errmsg());
    *tc = (train_cfg){.arch = "resnet18-cifar", .width = 4, .mlp = 1, .dim = 8, .K = 16, .batch = 4, .epochs = 3, .bn_splits = 2,
                      .size = 8, .lr = 0.06, .momentum = 0.9, .wd = 5e-4, .m = 0.99, .T = 0.1, .seed = 3, .cos = 1, .count = 64};
    return mc;
}

/* save mc with tc's config metadata (none when tc is NULL) to dir/name */
static const char *save(const char *dir, const char *name, const moco *mc, const train_cfg *tc)
{
    static char path[4200];
    char json[2048];
    const char *meta[4];
    int nmeta = tc ? train_config_meta(tc, json, sizeof json, meta) : 0;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ckpt_state st = {.epoch = 1, .step = 16, .pipe_epoch = 1};
    if (ckpt_save(path, mc, &st, meta, nmeta)) fail_msg("ckpt_save: %s", moco_errmsg());
    return path;
}

static long data_offset(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t b[8];
    assert_non_null(f);
    assert_int_equal(fread(b, 1, 8, f), 8);
    fclose(f);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
    return (long)(8 + hl);
}

static void flip_byte(const char *path, long off)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, off, SEEK_SET), 0);
    int c = fgetc(f);
    assert_true(c != EOF);
    assert_int_equal(fseek(f, off, SEEK_SET), 0);
    fputc(c ^ 0x01, f);
    assert_int_equal(fclose(f), 0);
}

/* The whole header of path (from byte 8, hl bytes; NUL-terminated copy),
 * and its writing back in place (the same length). */
static char *read_header(const char *path, size_t *hl)
{
    *hl = (size_t)data_offset(path) - 8;
    char *h = calloc(*hl + 1, 1);
    FILE *f = fopen(path, "rb");
    assert_non_null(h);
    assert_non_null(f);
    assert_int_equal(fseek(f, 8, SEEK_SET), 0);
    assert_int_equal(fread(h, 1, *hl, f), *hl);
    fclose(f);
    return h;
}

static void write_header(const char *path, const char *h, size_t hl)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 8, SEEK_SET), 0);
    assert_int_equal(fwrite(h, 1, hl, f), hl);
    assert_int_equal(fclose(f), 0);
}

/* Rewrite the header CRC of a header changed on purpose, so that what stands
 * behind it (config_crc32, the model checks) is what a test sees. */
static void reseal_header(char *h, size_t hl)
{
    char *at = strstr(h, "\"" MOCO_CKPT_KEY_HEADER_CRC32 "\":\"");
    assert_non_null(at);
    at += strlen("\"" MOCO_CKPT_KEY_HEADER_CRC32 "\":\"");
    char hex[9];
    snprintf(hex, sizeof hex, "%08x", (unsigned)moco_st_header_crc(h, hl, (size_t)(at - h)));
    memcpy(at, hex, 8);
}

static void test_checksum(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("test_ckpt_crc");
    train_cfg tc;
    moco *mc = tiny(&tc), *mc2 = tiny(&tc);
    char path[4200];
    snprintf(path, sizeof path, "%s", save(dir, "c.safetensors", mc, &tc));
    ckpt_state st = {0};
    assert_int_equal(ckpt_load(path, mc2, &st), 0); /* intact: loads */
    free((void *)st.delivered);
    /* the lowest mantissa byte of the first weight: still a finite float */
    long off = data_offset(path) + 4 * 7;
    flip_byte(path, off);
    int rc = ckpt_load(path, mc2, &st);
    printf("one byte of tensor data flipped (file offset %ld): %s\n", off, moco_errmsg());
    assert_int_equal(rc, MOCO_ECORRUPT);
    assert_non_null(strstr(moco_errmsg(), path));
    assert_non_null(strstr(moco_errmsg(), "checksum"));
    resnet *m = NULL;
    rn_cfg rc2 = {.arch = "resnet18-cifar", .width = 4, .mlp = 1, .dim = 8, .bn_splits = 1, .batch = 4, .size = 8};
    assert_int_equal(rn_new(&rc2, 1, 0, NULL, &m), 0);
    assert_int_equal(ckpt_load_encoder(path, m), MOCO_ECORRUPT);
    moco_st *f = NULL;
    assert_int_equal(ckpt_open(path, &f, NULL), MOCO_ECORRUPT);
    assert_null(f);
    flip_byte(path, off); /* flipped back: accepted again */
    assert_int_equal(ckpt_load_encoder(path, m), 0);
    /* a flipped byte in the last tensor (pipeline.delivered ends the data) */
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    flip_byte(path, (long)sb.st_size - 1);
    assert_int_equal(ckpt_load(path, mc2, &st), MOCO_ECORRUPT);
    flip_byte(path, (long)sb.st_size - 1);
    assert_int_equal(ckpt_read_config(path, &(moco_ckpt_config){0}), 0);
    /* two tensors of one shape with their data_offsets swapped: the data, so data_crc32, unchanged
     * and the tensors still tiling the data; before header_crc32 it loaded, the query encoder's
     * first convolution taking the key encoder's weights and the other way round */
    size_t hl;
    char *h = read_header(path, &hl);
    char *q = strstr(h, "\"encoder_q.conv1.weight\""), *k = strstr(h, "\"encoder_k.conv1.weight\"");
    assert_non_null(q);
    assert_non_null(k);
    q = strstr(q, "\"data_offsets\":["), k = strstr(k, "\"data_offsets\":[");
    assert_non_null(q);
    assert_non_null(k);
    q += strlen("\"data_offsets\":"), k += strlen("\"data_offsets\":");
    size_t ql = (size_t)(strchr(q, ']') + 1 - q), kl = (size_t)(strchr(k, ']') + 1 - k);
    assert_true(q < k);
    char *sw = malloc(hl + 1); /* [..q) k-offsets (q+ql..k) q-offsets (k+kl..] */
    assert_non_null(sw);
    size_t o = 0;
    memcpy(sw + o, h, (size_t)(q - h)), o += (size_t)(q - h);
    memcpy(sw + o, k, kl), o += kl;
    memcpy(sw + o, q + ql, (size_t)(k - (q + ql))), o += (size_t)(k - (q + ql));
    memcpy(sw + o, q, ql), o += ql;
    memcpy(sw + o, k + kl, hl - (size_t)(k + kl - h)), o += hl - (size_t)(k + kl - h);
    assert_int_equal(o, hl);
    assert_memory_not_equal(sw, h, hl);
    write_header(path, sw, hl);
    int lrc = ckpt_load(path, mc2, &st);
    printf("two tensors' offsets swapped in the header: %s\n", moco_errmsg());
    assert_int_equal(lrc, MOCO_ECORRUPT);
    assert_non_null(strstr(moco_errmsg(), "the header (tensor names, shapes, offsets, metadata) fails its checksum"));
    assert_int_equal(ckpt_load_encoder(path, m), MOCO_ECORRUPT);
    write_header(path, h, hl);
    assert_int_equal(ckpt_load(path, mc2, &st), 0); /* restored: loads */
    free((void *)st.delivered);
    free(sw), free(h);
    /* the config: "size":8 made "size":9 in the header (the evaluation commands build their
     * model and preprocessing from it; before config_crc32 the change went unseen) */
    char *hdr = malloc((size_t)data_offset(path));
    FILE *hf = fopen(path, "rb");
    assert_non_null(hdr);
    assert_non_null(hf);
    assert_int_equal(fread(hdr, 1, (size_t)data_offset(path), hf), (size_t)data_offset(path));
    fclose(hf);
    char *sz = memmem(hdr, (size_t)data_offset(path), "size\\\":8", 8);
    assert_non_null(sz);
    long soff = (long)(sz - hdr) + 7;
    free(hdr);
    flip_byte(path, soff); /* '8' ^ 1 = '9' */
    moco_ckpt_config cc;
    assert_int_equal(ckpt_read_config(path, &cc), MOCO_ECORRUPT);
    printf("the config's size changed in the header: %s\n", moco_errmsg());
    assert_non_null(strstr(moco_errmsg(), path));
    assert_non_null(strstr(moco_errmsg(), "the header (tensor names, shapes, offsets, metadata) fails its checksum"));
    assert_int_equal(ckpt_load_encoder(path, m), MOCO_ECORRUPT);
    /* the header CRC rewritten to match: config_crc32 behind it still finds the change */
    h = read_header(path, &hl);
    reseal_header(h, hl);
    write_header(path, h, hl);
    assert_int_equal(ckpt_read_config(path, &cc), MOCO_ECORRUPT);
    assert_non_null(strstr(moco_errmsg(), "config metadata fails its checksum"));
    flip_byte(path, soff);
    free(h);
    h = read_header(path, &hl);
    reseal_header(h, hl);
    write_header(path, h, hl);
    assert_int_equal(ckpt_read_config(path, &cc), 0);
    assert_int_equal(cc.size, 8);
    free(h);
    rn_destroy(&m);
    moco_destroy(&mc);
    moco_destroy(&mc2);
}

static void test_nan_refused(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("test_ckpt_nan");
    train_cfg tc;
    moco *mc = tiny(&tc), *mc2 = tiny(&tc);
    const rn_tensor *t = rn_find(mc->q, "layer2.0.conv1.weight");
    assert_non_null(t);
    ((float *)rn_data(mc->q, t))[5] = NAN;
    char path[4200];
    snprintf(path, sizeof path, "%s", save(dir, "nan.safetensors", mc, &tc));
    /* evaluation: what knn, lincls and embed load through */
    evalmodel_flags ef;
    moco_opt opts[EVALMODEL_NOPTS + 1];
    evalmodel_opts(&ef, opts, "batch");
    ef.ckpt = path;
    ef.batch = 4;
    ef.threads = 1;
    resnet *m = NULL;
    float mean[3], std[3];
    int rc = evalmodel_open(&ef, &m, mean, std);
    printf("NaN weight: %s\n", moco_errmsg());
    assert_int_equal(rc, MOCO_ENUMERIC);
    assert_null(m);
    assert_non_null(strstr(moco_errmsg(), "encoder_q.layer2.0.conv1.weight"));
    assert_non_null(strstr(moco_errmsg(), "element 5"));
    /* resume */
    ckpt_state st = {0};
    assert_int_equal(ckpt_load(path, mc2, &st), MOCO_ENUMERIC);
    /* export */
    char out[4300];
    snprintf(out, sizeof out, "%s/e.safetensors", dir);
    char *argv[] = {"export", "--ckpt", path, "--out", out, NULL};
    assert_int_equal(export_main(5, argv), 1);
    assert_false(tu_exists(out));
    /* an infinity in the key encoder */
    ((float *)rn_data(mc->q, t))[5] = 0.5f;
    t = rn_find(mc->k, "fc.2.bias");
    assert_non_null(t);
    ((float *)rn_data(mc->k, t))[0] = -INFINITY;
    snprintf(path, sizeof path, "%s", save(dir, "inf.safetensors", mc, &tc));
    assert_int_equal(ckpt_load(path, mc2, &st), MOCO_ENUMERIC);
    printf("infinite weight: %s\n", moco_errmsg());
    assert_non_null(strstr(moco_errmsg(), "encoder_k.fc.2.bias"));
    moco_destroy(&mc);
    moco_destroy(&mc2);
}

static int open_with(const char *ckpt, const char *arch, long width, int mlp, long dim, evalmodel_flags *ef, resnet **m)
{
    moco_opt opts[EVALMODEL_NOPTS + 1];
    float mean[3], std[3];
    evalmodel_opts(ef, opts, "batch");
    ef->ckpt = ckpt;
    ef->arch = arch;
    ef->width = width;
    ef->mlp = mlp;
    ef->dim = dim;
    ef->batch = 4;
    ef->threads = 1;
    return evalmodel_open(ef, m, mean, std);
}

static void test_self_describing(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("test_ckpt_desc");
    train_cfg tc;
    moco *mc = tiny(&tc);
    char path[4200], bare[4200];
    snprintf(path, sizeof path, "%s", save(dir, "c.safetensors", mc, &tc));
    snprintf(bare, sizeof bare, "%s", save(dir, "bare.safetensors", mc, NULL));
    moco_ckpt_config cc;
    assert_int_equal(ckpt_read_config(path, &cc), 0);
    assert_true(cc.has_config);
    assert_string_equal(cc.arch, "resnet18-cifar");
    assert_int_equal(cc.width, 4);
    assert_int_equal(cc.mlp, 1);
    assert_int_equal(cc.dim, 8);
    assert_int_equal(cc.size, 8);
    assert_int_equal(cc.epochs, 3);
    assert_int_equal(cc.cos, 1);
    assert_true(fabs(cc.lr - 0.06) < 1e-9);
    assert_int_equal((int)cc.count, 64);

    /* no flags: everything from the checkpoint, weights equal to encoder_q's */
    evalmodel_flags ef;
    resnet *m = NULL;
    assert_int_equal(open_with(path, NULL, 0, 0, 0, &ef, &m), 0);
    assert_string_equal(m->cfg.arch, "resnet18-cifar");
    assert_int_equal(m->cfg.width, 4);
    assert_int_equal(m->cfg.mlp, 1);
    assert_int_equal(m->cfg.dim, 8);
    assert_int_equal(m->cfg.size, 8);
    assert_int_equal(ef.size, 8);
    assert_memory_equal(m->params, mc->q->params, sizeof(float) * m->nparams);
    rn_destroy(&m);
    /* flags that agree are fine */
    assert_int_equal(open_with(path, "resnet18-cifar", 4, 1, 8, &ef, &m), 0);
    rn_destroy(&m);
    /* flags that contradict it are errors naming the flag */
    struct { const char *arch; long width; long dim; const char *want; } bad[] = {
        {"resnet50", 0, 0, "--arch resnet50"}, {NULL, 8, 0, "--width 8"}, {NULL, 0, 16, "--moco-dim 16"}};
    for (int i = 0; i < 3; i++) {
        int rc = open_with(path, bad[i].arch, bad[i].width, 0, bad[i].dim, &ef, &m);
        printf("contradicting flag: %s\n", moco_errmsg());
        assert_int_equal(rc, MOCO_EINVAL);
        assert_null(m);
        assert_non_null(strstr(moco_errmsg(), bad[i].want));
    }
    /* --mlp against a checkpoint with the linear head */
    moco_cfg lin = {.enc = {.arch = "resnet18-cifar", .width = 4, .mlp = 0, .dim = 8, .bn_splits = 2, .batch = 4, .size = 8},
                    .K = 16, .m = 0.99f, .T = 0.1f, .lr = 0.06f, .sgd_momentum = 0.9f, .weight_decay = 5e-4f, .seed = 3};
    moco *ml;
    assert_int_equal(moco_new(&lin, &ml), 0);
    tc.mlp = 0;
    char lpath[4200];
    snprintf(lpath, sizeof lpath, "%s", save(dir, "lin.safetensors", ml, &tc));
    assert_int_equal(open_with(lpath, NULL, 0, 1, 0, &ef, &m), MOCO_EINVAL);
    assert_non_null(strstr(moco_errmsg(), "--mlp"));
    assert_int_equal(open_with(lpath, NULL, 0, 0, 0, &ef, &m), 0);
    assert_int_equal(m->cfg.mlp, 0);
    rn_destroy(&m);
    /* without a config: the flags (and their old defaults) decide */
    assert_int_equal(open_with(bare, NULL, 0, 0, 0, &ef, &m), MOCO_EINVAL); /* width 64, no mlp: shapes differ */
    assert_int_equal(open_with(bare, "resnet18-cifar", 4, 1, 8, &ef, &m), 0);
    rn_destroy(&m);
    /* export records what the encoder is */
    char out[4300];
    snprintf(out, sizeof out, "%s/e.safetensors", dir);
    char *argv[] = {"export", "--ckpt", path, "--out", out, NULL};
    assert_int_equal(export_main(5, argv), 0);
    assert_int_equal(tu_sh("head -c 4096 '%s' | grep -aq '\"moco.arch\":\"resnet18-cifar\"'", out), 0);
    moco_destroy(&ml);
    moco_destroy(&mc);
}

/* How forge changes a file: tensor set (I64[1]) given the value v; the
 * tensor drop left out; the tensor *extra added; __metadata__ format = fmt
 * (none when NULL) and tc's config (none when NULL), or the config text
 * config with config_crc32 = config_crc (none when NULL); no data_crc32. */
typedef struct {
    const char *set;
    int64_t v;
    const char *drop;
    const moco_st_entry *extra;
    const char *fmt;
    const train_cfg *tc;
    const char *config, *config_crc;
} forgery;

/* src rewritten to dst as fo says: a forged file, as a hand could make it */
static void forge(const char *src, const char *dst, const forgery *fo)
{
    moco_st *f;
    assert_int_equal(moco_st_open(src, &f), 0);
    int n = moco_st_count(f), k = 0;
    moco_st_entry *e = calloc((size_t)n + 1, sizeof *e);
    assert_non_null(e);
    for (int i = 0; i < n; i++) {
        const moco_st_tensor *t = moco_st_at(f, i);
        if (fo->drop && !strcmp(t->name, fo->drop)) continue;
        e[k] = (moco_st_entry){t->name, t->dtype, t->ndim, {0}, moco_st_data(f, t)};
        memcpy(e[k].shape, t->shape, sizeof t->shape);
        if (fo->set && !strcmp(t->name, fo->set)) e[k].data = &fo->v;
        k++;
    }
    if (fo->extra) e[k++] = *fo->extra;
    char json[2048];
    const char *meta[8] = {"format", fo->fmt}, *cm[4];
    int nm = fo->fmt ? 1 : 0;
    if (fo->tc && train_config_meta(fo->tc, json, sizeof json, cm) == 2) meta[2 * nm] = "config", meta[2 * nm++ + 1] = json;
    if (fo->config) meta[2 * nm] = "config", meta[2 * nm++ + 1] = fo->config;
    if (fo->config_crc) meta[2 * nm] = "config_crc32", meta[2 * nm++ + 1] = fo->config_crc;
    assert_int_equal(moco_st_write(dst, e, k, nm ? meta : NULL, nm), 0);
    free(e);
    moco_st_destroy(&f);
}

/* every model tensor of the file must be the model's: a resnet34 checkpoint
 * holds every tensor of resnet18 (same names and shapes) and loaded as one
 * with 240 tensors dropped; a forged encoder_q.extra was accepted */
static void test_extra_tensors(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("test_ckpt_extra");
    moco_cfg c18 = {.enc = {.arch = "resnet18", .width = 2, .mlp = 0, .dim = 8, .bn_splits = 1, .batch = 4, .size = 32},
                    .K = 16, .m = 0.99f, .T = 0.1f, .lr = 0.06f, .sgd_momentum = 0.9f, .weight_decay = 5e-4f, .seed = 3};
    moco_cfg c34 = c18;
    c34.enc.arch = "resnet34";
    moco *m18, *m34;
    assert_int_equal(moco_new(&c18, &m18), 0);
    assert_int_equal(moco_new(&c34, &m34), 0);
    char p34[4200], p18[4200], forged[4200];
    snprintf(p34, sizeof p34, "%s", save(dir, "r34.safetensors", m34, NULL));
    snprintf(p18, sizeof p18, "%s", save(dir, "r18.safetensors", m18, NULL));
    ckpt_state st = {0};
    int rc = ckpt_load(p34, m18, &st);
    printf("resnet34 checkpoint resumed as resnet18: %s\n", moco_errmsg());
    assert_int_equal(rc, MOCO_EINVAL);
    assert_non_null(strstr(moco_errmsg(), p34));
    assert_non_null(strstr(moco_errmsg(), ".layer1.2.")); /* resnet34's third block: resnet18 has two */
    assert_non_null(strstr(moco_errmsg(), "is not part of the model (resnet18, width 2)"));
    resnet *enc = NULL;
    rn_cfg rc18 = {.arch = "resnet18", .width = 2, .dim = 8, .bn_splits = 1, .batch = 4, .size = 32};
    assert_int_equal(rn_new(&rc18, 1, 0, NULL, &enc), 0);
    assert_int_equal(ckpt_load_encoder(p34, enc), MOCO_EINVAL);
    assert_non_null(strstr(moco_errmsg(), "is not part of the model"));
    /* one forged tensor under each model prefix (the last: a momentum
     * buffer of a BN buffer, not a parameter, with its shape) */
    static const float v16[16];
    const moco_st_entry extras[] = {{"encoder_q.extra", MOCO_ST_F32, 1, {2}, v16},
                                    {"encoder_k.layer9.weight", MOCO_ST_F32, 1, {2}, v16},
                                    {"momentum_buffer.bn1.running_mean", MOCO_ST_F32, 1, {2}, v16}};
    const rn_tensor *rm = rn_find(m18->q, "bn1.running_mean");
    assert_non_null(rm);
    assert_int_equal(rm->shape[0], 2);
    for (int i = 0; i < 3; i++) {
        snprintf(forged, sizeof forged, "%s/forged%d.safetensors", dir, i);
        forge(p18, forged, &(forgery){.extra = &extras[i], .fmt = "moco-checkpoint-1"});
        assert_int_equal(ckpt_load(p18, m18, &st), 0); /* the genuine one loads */
        free((void *)st.delivered);
        rc = ckpt_load(forged, m18, &st);
        printf("%s: %s\n", extras[i].name, moco_errmsg());
        assert_int_equal(rc, MOCO_EINVAL);
        char want[512];
        snprintf(want, sizeof want, "%s: tensor %s is not part of the model (resnet18, width 2)", forged, extras[i].name);
        assert_string_equal(moco_errmsg(), want);
        assert_int_equal(ckpt_load_encoder(forged, enc), MOCO_EINVAL); /* knn, lincls, embed */
        assert_string_equal(moco_errmsg(), want);
    }
    assert_int_equal(ckpt_load_encoder(p18, enc), 0);
    rn_destroy(&enc);
    moco_destroy(&m18);
    moco_destroy(&m34);
}

/* __metadata__ format: another one (a later layout) is refused by every
 * reader, naming the file and the value; none at all (files saved without
 * metadata) is legal */
/* train's config writer (train_config_meta) -> the checkpoint reader
 * (ckpt_read_config): every field the reader knows comes back as written,
 * under the format the readers take (MOCO_CKPT_FORMAT); a field renamed on one
 * side only would come back absent (-1, NAN, "") and fail here. */
static void test_config_roundtrip(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("test_ckpt_roundtrip");
    train_cfg tc;
    moco *mc = tiny(&tc);
    tc.K = 16, tc.batch = 4, tc.epochs = 7, tc.bn_splits = 2, tc.symmetric = 1, tc.cos = 0, tc.warmup_epochs = 2;
    tc.lr = 0.125, tc.m = 0.875, tc.T = 0.25, tc.momentum = 0.75, tc.wd = 0.0625, tc.count = 12345, tc.seed = 9;
    tc.schedule[0] = 3, tc.schedule[1] = 5, tc.nschedule = 2;
    tc.precision = NN_BF16;
    tc.norm = "imagenet";
    const float im[3] = {0.485f, 0.456f, 0.406f}, is[3] = {0.229f, 0.224f, 0.225f};
    for (int i = 0; i < 3; i++) tc.mean[i] = im[i], tc.std[i] = is[i];
    char json[2048];
    const char *meta[4];
    assert_int_equal(train_config_meta(&tc, json, sizeof json, meta), 2);
    assert_string_equal(meta[0], "format");
    assert_string_equal(meta[1], MOCO_CKPT_FORMAT);
    const char *path = save(dir, "c.safetensors", mc, &tc);
    moco_ckpt_config cc;
    assert_int_equal(ckpt_read_config(path, &cc), 0);
    assert_true(cc.has_config && cc.has_schedule && cc.has_mean_std);
    assert_string_equal(cc.arch, "resnet18-cifar");
    assert_string_equal(cc.schedule, "3,5");
    assert_string_equal(cc.precision, "bf16");
    assert_string_equal(cc.normalize, "imagenet");
    assert_int_equal(cc.width, 4);
    assert_int_equal(cc.mlp, 1);
    assert_int_equal(cc.dim, 8);
    assert_int_equal(cc.size, 8);
    assert_int_equal(cc.K, 16);
    assert_int_equal(cc.batch, 4);
    assert_int_equal(cc.ranks, 1);
    assert_int_equal(cc.epochs, 7);
    assert_int_equal(cc.cos, 0);
    assert_int_equal(cc.warmup_epochs, 2);
    assert_int_equal(cc.symmetric, 1);
    assert_int_equal(cc.bn_splits, 2);
    assert_true(cc.lr == 0.125 && cc.m == 0.875 && cc.T == 0.25 && cc.momentum == 0.75 && cc.wd == 0.0625);
    assert_int_equal((int)cc.count, 12345);
    assert_true(cc.has_seed && cc.seed == 9);
    for (int i = 0; i < 3; i++) assert_true(fabs(cc.mean[i] - im[i]) < 1e-6 && fabs(cc.std[i] - is[i]) < 1e-6);

    /* the evaluation commands take normalize's constants from this build: a
     * config whose mean or std differ from them is refused, naming both */
    evalmodel_flags ef;
    resnet *m = NULL;
    assert_int_equal(open_with(path, NULL, 0, 0, 0, &ef, &m), 0);
    rn_destroy(&m);
    tc.mean[1] = 0.5f;
    path = save(dir, "m.safetensors", mc, &tc);
    assert_int_equal(open_with(path, NULL, 0, 0, 0, &ef, &m), MOCO_EFORMAT);
    printf("another mean: %s\n", moco_errmsg());
    assert_non_null(strstr(moco_errmsg(), "mean [0.485, 0.5, 0.406]"));
    assert_non_null(strstr(moco_errmsg(), "mean [0.485, 0.456, 0.406]"));
    assert_null(m);
    moco_destroy(&mc);
}

static void test_format(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("test_ckpt_format");
    train_cfg tc;
    moco *mc = tiny(&tc);
    char path[4200], v2[4200], none[4200], want[8600];
    snprintf(path, sizeof path, "%s", save(dir, "c.safetensors", mc, &tc));
    snprintf(v2, sizeof v2, "%s/v2.safetensors", dir);
    snprintf(none, sizeof none, "%s/none.safetensors", dir);
    forge(path, v2, &(forgery){.fmt = "moco-checkpoint-2"});
    forge(path, none, &(forgery){0});
    snprintf(want, sizeof want, "%s: format \"moco-checkpoint-2\" is not a checkpoint this build reads (\"moco-checkpoint-1\")", v2);
    ckpt_state st = {0};
    assert_int_equal(ckpt_load(v2, mc, &st), MOCO_EFORMAT); /* resume */
    printf("another format: %s\n", moco_errmsg());
    assert_string_equal(moco_errmsg(), want);
    moco_ckpt_config cc;
    assert_int_equal(ckpt_read_config(v2, &cc), MOCO_EFORMAT); /* knn, lincls, embed: evalmodel_open */
    assert_string_equal(moco_errmsg(), want);
    moco_st *f = NULL;
    assert_int_equal(ckpt_open(v2, &f, NULL), MOCO_EFORMAT);
    assert_null(f);
    resnet *m = NULL;
    rn_cfg rc2 = {.arch = "resnet18-cifar", .width = 4, .mlp = 1, .dim = 8, .bn_splits = 1, .batch = 4, .size = 8};
    assert_int_equal(rn_new(&rc2, 1, 0, NULL, &m), 0);
    assert_int_equal(ckpt_load_encoder(v2, m), MOCO_EFORMAT);
    char out[4300];
    snprintf(out, sizeof out, "%s/e.safetensors", dir);
    char *argv[] = {"export", "--ckpt", v2, "--out", out, NULL};
    assert_int_equal(export_main(5, argv), 1);
    assert_false(tu_exists(out));
    /* no format: loads */
    assert_int_equal(ckpt_load(none, mc, &st), 0);
    free((void *)st.delivered);
    assert_int_equal(ckpt_load_encoder(none, m), 0);
    rn_destroy(&m);
    moco_destroy(&mc);
}

/* the position scalars: a pipeline.epoch of 2^40 restarted the stream at
 * epoch 0 (the trainer keeps it in 32 bits), a train.step of 2^62 was taken */
static void test_position_range(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("test_ckpt_range");
    train_cfg tc;
    moco *mc = tiny(&tc);
    char path[4200], bad[4200], want[8600];
    snprintf(path, sizeof path, "%s", save(dir, "c.safetensors", mc, &tc)); /* epoch 1, step 16, pipeline epoch 1 */
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    struct { const char *name; int64_t v; int ok; } cases[] = {
        {"pipeline.epoch", (int64_t)1 << 40, 0}, {"pipeline.epoch", 0xFFFFFFFFll, 0}, {"pipeline.epoch", 0xFFFFFFFEll, 1},
        {"pipeline.epoch", 5, 1}, /* a loader started at a later epoch than the trainer */
        {"train.epoch", (int64_t)1 << 32, 0}, {"train.step", (int64_t)1 << 62, 0}, {"train.step", (int64_t)1 << 53, 0},
        {"train.step", ((int64_t)1 << 53) - 1, 1}, {"train.step", -1, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        forge(path, bad, &(forgery){.set = cases[i].name, .v = cases[i].v, .fmt = "moco-checkpoint-1"});
        ckpt_state st = {0};
        int rc = ckpt_load(bad, mc, &st);
        if (cases[i].ok) {
            assert_int_equal(rc, 0);
            assert_int_equal(!strcmp(cases[i].name, "train.step") ? st.step : st.pipe_epoch, cases[i].v);
            free((void *)st.delivered);
            continue;
        }
        printf("%s %lld: %s\n", cases[i].name, (long long)cases[i].v, moco_errmsg());
        assert_int_equal(rc, MOCO_ECORRUPT);
        snprintf(want, sizeof want, "%s: tensor %s out of range", bad, cases[i].name);
        assert_memory_equal(moco_errmsg(), want, strlen(want));
    }
    moco_destroy(&mc);
}

/* moco export checks the checkpoint as a load does: a missing tensor, one
 * of another dtype, an extra one, a name that is not UTF-8 were all
 * exported, exit 0; now exit 1 naming it, and nothing written */
static void test_export_checked(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("test_ckpt_export");
    train_cfg tc;
    moco *mc = tiny(&tc);
    char path[4200], bad[4200], out[4300];
    snprintf(path, sizeof path, "%s", save(dir, "c.safetensors", mc, &tc));
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    snprintf(out, sizeof out, "%s/e.safetensors", dir);
    const rn_tensor *w = rn_find(mc->q, "layer1.0.conv1.weight");
    assert_non_null(w);
    static int32_t i32[4096];
    static const float two[2];
    const moco_st_entry as_i32 = {"encoder_q.layer1.0.conv1.weight", MOCO_ST_I32, 4, {w->shape[0], w->shape[1], w->shape[2], w->shape[3]}, i32},
                        extra = {"encoder_q.layer5.0.conv1.weight", MOCO_ST_F32, 1, {2}, two},
                        ff = {"encoder_q.layer1.0.conv1.weight\xff", MOCO_ST_F32, 1, {2}, two},
                        k_extra = {"encoder_k.extra", MOCO_ST_F32, 1, {2}, two};
    struct { forgery fo; const char *encoder; int rc; const char *want; } cases[] = {
        {{.drop = "encoder_q.layer1.0.conv1.weight", .tc = &tc}, "encoder_q", MOCO_ENOTFOUND, ": no tensor encoder_q.layer1.0.conv1.weight"},
        {{.drop = "encoder_k.bn1.bias", .tc = &tc}, "encoder_k", MOCO_ENOTFOUND, ": no tensor encoder_k.bn1.bias"},
        {{.drop = "encoder_q.layer1.0.conv1.weight", .extra = &as_i32, .tc = &tc}, "encoder_q", MOCO_EFORMAT,
         ": tensor encoder_q.layer1.0.conv1.weight is I32 with 4 dims, expected F32 with 4"},
        {{.extra = &extra, .tc = &tc}, "encoder_q", MOCO_EINVAL,
         ": tensor encoder_q.layer5.0.conv1.weight is not part of the model (resnet18-cifar, width 4, mlp head)"},
        {{.extra = &k_extra, .tc = &tc}, "encoder_q", MOCO_EINVAL, ": tensor encoder_k.extra is not part of the model"},
        {{.extra = &ff, .tc = &tc}, "encoder_q", MOCO_ECORRUPT, "UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        forge(path, bad, &cases[i].fo);
        char *argv[] = {"export", "--ckpt", bad, "--out", out, "--encoder", (char *)cases[i].encoder, NULL};
        int rc = export_main(7, argv);
        printf("export, case %zu: %s\n", i, moco_errmsg());
        assert_int_equal(rc, 1);
        assert_false(tu_exists(out));
        assert_non_null(strstr(moco_errmsg(), bad));
        assert_non_null(strstr(moco_errmsg(), cases[i].want));
        /* the loaders say the same (knn, lincls, embed: ckpt_load_encoder) */
        resnet *m = NULL;
        rn_cfg rc2 = {.arch = "resnet18-cifar", .width = 4, .mlp = 1, .dim = 8, .bn_splits = 1, .batch = 4, .size = 8};
        assert_int_equal(rn_new(&rc2, 1, 0, NULL, &m), 0);
        if (!strcmp(cases[i].encoder, "encoder_q")) assert_int_equal(ckpt_load_encoder(bad, m), cases[i].rc);
        rn_destroy(&m);
    }
    /* the genuine file, and the same rewritten with its config: exported */
    forge(path, bad, &(forgery){.tc = &tc});
    for (int i = 0; i < 2; i++) {
        char *argv[] = {"export", "--ckpt", i ? bad : path, "--out", out, "--encoder", "encoder_k", "--with-head", NULL};
        assert_int_equal(export_main(8, argv), 0);
        assert_true(tu_exists(out));
        unlink(out);
    }
    moco_destroy(&mc);
}

/* ---- the metadata contract (formats/checkpoint.h) ---------------------- */

/* The config text as the code before formats/checkpoint.c wrote it
 * (train_config_meta of commit dee65d5, for the train_cfg of golden_cfg(i)),
 * with its config_crc32: the writer must keep writing these bytes, and a
 * checkpoint that carries them must keep loading. (The whole checkpoint
 * files of these three configs were compared byte for byte, old build
 * against new, when the contract moved.) */
static const struct { const char *json, *crc; } golden[] = {
    {"{\"arch\":\"resnet18-cifar\",\"width\":4,\"mlp\":1,\"dim\":8,\"K\":16,\"m\":0.99,\"T\":0.1,\"batch_size\":4,\"ranks\":1,"
     "\"lr\":0.06,\"momentum\":0.9,\"wd\":0.0005,\"cos\":1,\"schedule\":\"\",\"warmup_epochs\":0,\"epochs\":3,\"bn_splits\":2,"
     "\"symmetric\":0,\"size\":8,\"precision\":\"fp32\",\"seed\":3,\"count\":64}",
     "43ac41f8"},
    {"{\"arch\":\"resnet18-cifar\",\"width\":4,\"mlp\":1,\"dim\":8,\"K\":16,\"m\":0.875,\"T\":0.25,\"batch_size\":4,\"ranks\":1,"
     "\"lr\":0.125,\"momentum\":0.75,\"wd\":0.0625,\"cos\":0,\"schedule\":\"3,5\",\"warmup_epochs\":2,\"epochs\":7,\"bn_splits\":2,"
     "\"symmetric\":1,\"size\":8,\"precision\":\"bf16\",\"normalize\":\"imagenet\",\"mean\":[0.485,0.456,0.406],"
     "\"std\":[0.229,0.224,0.225],\"seed\":9,\"count\":12345}",
     "c1c7c0bd"},
    {"{\"arch\":\"resnet18-cifar\",\"width\":4,\"mlp\":1,\"dim\":8,\"K\":16,\"m\":0.999,\"T\":0.07,\"batch_size\":4,\"ranks\":1,"
     "\"lr\":0.03,\"momentum\":0.75,\"wd\":0.0001,\"cos\":1,\"schedule\":\"120,160\",\"warmup_epochs\":2,\"epochs\":7,\"bn_splits\":2,"
     "\"symmetric\":1,\"size\":8,\"precision\":\"fp32\",\"normalize\":\"cifar\",\"mean\":[0.4914,0.4822,0.4465],"
     "\"std\":[0.2023,0.1994,0.201],\"seed\":18446744073709551615,\"count\":12345}",
     "75cd18ed"},
};

/* the train_cfg golden[i] was written from */
static void golden_cfg(int i, train_cfg *tc)
{
    *tc = (train_cfg){.arch = "resnet18-cifar", .width = 4, .mlp = 1, .dim = 8, .K = 16, .batch = 4, .epochs = 3, .bn_splits = 2,
                      .size = 8, .lr = 0.06, .momentum = 0.9, .wd = 5e-4, .m = 0.99, .T = 0.1, .seed = 3, .cos = 1, .count = 64};
    if (i == 0) return;
    tc->epochs = 7, tc->symmetric = 1, tc->cos = 0, tc->warmup_epochs = 2;
    tc->lr = 0.125, tc->m = 0.875, tc->T = 0.25, tc->momentum = 0.75, tc->wd = 0.0625, tc->count = 12345, tc->seed = 9;
    tc->schedule[0] = 3, tc->schedule[1] = 5, tc->nschedule = 2;
    tc->precision = NN_BF16;
    tc->norm = "imagenet";
    const float im[3] = {0.485f, 0.456f, 0.406f}, is[3] = {0.229f, 0.224f, 0.225f};
    for (int j = 0; j < 3; j++) tc->mean[j] = im[j], tc->std[j] = is[j];
    if (i == 1) return;
    tc->seed = UINT64_MAX, tc->norm = "cifar", tc->lr = 0.03, tc->wd = 1e-4, tc->m = 0.999, tc->T = 0.07;
    const float cm[3] = {0.4914f, 0.4822f, 0.4465f}, cs[3] = {0.2023f, 0.1994f, 0.2010f};
    for (int j = 0; j < 3; j++) tc->mean[j] = cm[j], tc->std[j] = cs[j];
    tc->schedule[0] = 120, tc->schedule[1] = 160, tc->cos = 1, tc->precision = NN_FP32;
}

/* the writer writes the old bytes; a file that carries them (and their old
 * config_crc32) reads back every field and loads for evaluation; parsed and
 * written again they come out the same */
static void test_config_golden(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("test_ckpt_golden");
    train_cfg tc0;
    moco *mc = tiny(&tc0);
    char path[4200], old[4200], json[2048], crc[16];
    snprintf(path, sizeof path, "%s", save(dir, "c.safetensors", mc, &tc0));
    for (int i = 0; i < 3; i++) {
        train_cfg tc;
        golden_cfg(i, &tc);
        const char *meta[4];
        assert_int_equal(train_config_meta(&tc, json, sizeof json, meta), 2);
        assert_string_equal(meta[0], MOCO_CKPT_KEY_FORMAT);
        assert_string_equal(meta[1], "moco-checkpoint-1");
        assert_string_equal(meta[2], MOCO_CKPT_KEY_CONFIG);
        assert_string_equal(json, golden[i].json);
        moco_ckpt_crc32_hex(json, strlen(json), crc, sizeof crc);
        assert_string_equal(crc, golden[i].crc);
        /* a checkpoint as the old code wrote it */
        snprintf(old, sizeof old, "%s/old%d.safetensors", dir, i);
        forge(path, old, &(forgery){.fmt = "moco-checkpoint-1", .config = golden[i].json, .config_crc = golden[i].crc});
        moco_ckpt_config cc, want;
        assert_int_equal(ckpt_read_config(old, &cc), 0);
        assert_int_equal(moco_ckpt_config_parse(golden[i].json, "golden", &want), 0);
        assert_true(cc.has_config && cc.has_schedule && cc.has_seed);
        assert_string_equal(cc.arch, tc.arch);
        assert_int_equal(cc.epochs, tc.epochs);
        assert_true(cc.lr == tc.lr && cc.wd == tc.wd && cc.m == tc.m && cc.T == tc.T);
        assert_true(cc.seed == tc.seed);
        assert_int_equal(cc.count, (int64_t)tc.count);
        assert_int_equal(cc.has_mean_std, i > 0);
        assert_string_equal(cc.normalize, i == 0 ? "" : tc.norm);
        assert_string_equal(cc.precision, i == 1 ? "bf16" : "fp32");
        char again[2048];
        assert_int_equal(moco_ckpt_config_write(&cc, again, sizeof again), 0);
        assert_string_equal(again, golden[i].json);
        evalmodel_flags ef;
        resnet *m = NULL;
        assert_int_equal(open_with(old, NULL, 0, 0, 0, &ef, &m), 0);
        assert_int_equal(m->cfg.width, 4);
        assert_int_equal(m->cfg.mlp, 1);
        rn_destroy(&m);
    }
    moco_destroy(&mc);
}

/* every field of moco_ckpt_config through the writer and the reader, at
 * the edges of the reader's ranges */
static void test_config_fields(void **state)
{
    (void)state;
    moco_ckpt_config c, r;
    moco_ckpt_config_init(&c);
    snprintf(c.arch, sizeof c.arch, "%s", "resnet50-cifar");
    memset(c.schedule, '7', sizeof c.schedule - 1); /* the longest schedule the struct holds */
    c.schedule[sizeof c.schedule - 1] = 0;
    snprintf(c.precision, sizeof c.precision, "bf16");
    snprintf(c.normalize, sizeof c.normalize, "none");
    int *ints[] = {&c.width, &c.mlp, &c.dim, &c.size, &c.K, &c.batch, &c.ranks, &c.epochs, &c.cos, &c.warmup_epochs, &c.symmetric, &c.bn_splits};
    for (int i = 0; i < 12; i++) *ints[i] = i == 0 ? 0x7fffffff : 100 + i; /* each its own value: a swap fails */
    c.lr = 1.5, c.m = 0.25, c.T = 3e-7, c.momentum = 0.125, c.wd = 1e-300;
    const double mean[3] = {0.1234567, 0.7654321, 0.3141593}, std[3] = {0.2718282, 0.1414214, 0.1732051}; /* 7 digits */
    for (int i = 0; i < 3; i++) c.mean[i] = mean[i], c.std[i] = std[i];
    c.seed = UINT64_MAX, c.count = INT64_MAX;
    char js[MOCO_CKPT_CONFIG_MAX];
    assert_int_equal(moco_ckpt_config_write(&c, js, sizeof js), 0);
    assert_int_equal(moco_ckpt_config_parse(js, "x.safetensors", &r), 0);
    assert_true(r.has_config && r.has_schedule && r.has_mean_std && r.has_seed);
    assert_string_equal(r.arch, c.arch);
    assert_string_equal(r.schedule, c.schedule);
    assert_string_equal(r.precision, c.precision);
    assert_string_equal(r.normalize, c.normalize);
    int *rints[] = {&r.width, &r.mlp, &r.dim, &r.size, &r.K, &r.batch, &r.ranks, &r.epochs, &r.cos, &r.warmup_epochs, &r.symmetric, &r.bn_splits};
    for (int i = 0; i < 12; i++) assert_int_equal(*rints[i], *ints[i]);
    assert_true(r.lr == c.lr && r.m == c.m && r.T == c.T && r.momentum == c.momentum && r.wd == c.wd);
    for (int i = 0; i < 3; i++) assert_true(r.mean[i] == c.mean[i] && r.std[i] == c.std[i]);
    assert_true(r.seed == UINT64_MAX);
    assert_true(r.count == INT64_MAX);
    /* "": no config; {}: a config with every field absent */
    assert_int_equal(moco_ckpt_config_parse("", "x.safetensors", &r), 0);
    assert_false(r.has_config);
    assert_int_equal(moco_ckpt_config_parse("{}", "x.safetensors", &r), 0);
    assert_true(r.has_config);
    assert_false(r.has_schedule || r.has_mean_std || r.has_seed);
    assert_true(r.width == -1 && r.bn_splits == -1 && r.count == -1 && isnan(r.lr) && isnan(r.wd) && !r.arch[0] && !r.normalize[0]);
    /* mean without std: no constants to check against */
    assert_int_equal(moco_ckpt_config_parse("{\"normalize\":\"cifar\",\"mean\":[1,2,3]}", "x.safetensors", &r), 0);
    assert_string_equal(r.normalize, "cifar");
    assert_false(r.has_mean_std);
    /* the writer refuses what the reader would refuse, naming the field; buf is "" then */
    moco_ckpt_config w = c;
    w.symmetric = -1;
    assert_int_equal(moco_ckpt_config_write(&w, js, sizeof js), MOCO_EINVAL);
    assert_string_equal(js, "");
    assert_string_equal(moco_errmsg(), "checkpoint config: field \"symmetric\" is out of the range a reader takes");
    w = c, w.T = NAN;
    assert_int_equal(moco_ckpt_config_write(&w, js, sizeof js), MOCO_EINVAL);
    assert_non_null(strstr(moco_errmsg(), "\"T\""));
    w = c, w.std[2] = INFINITY;
    assert_int_equal(moco_ckpt_config_write(&w, js, sizeof js), MOCO_EINVAL);
    assert_non_null(strstr(moco_errmsg(), "\"std\""));
    w = c, w.count = -1;
    assert_int_equal(moco_ckpt_config_write(&w, js, sizeof js), MOCO_EINVAL);
    assert_non_null(strstr(moco_errmsg(), "\"count\""));
    assert_int_equal(moco_ckpt_config_write(&c, js, 64), MOCO_EINVAL); /* does not fit: nothing, not a cut text */
    assert_string_equal(js, "");
    assert_non_null(strstr(moco_errmsg(), "more than the 63 a reader takes"));
}

/* the reader's range checks: each malformed field is MOCO_ECORRUPT naming
 * the file and the field */
static void test_config_ranges(void **state)
{
    (void)state;
    struct { const char *json, *want; } cases[] = {
        {"{\"width\":-1}", "field \"width\" is not an integer in [0, 2^31)"},
        {"{\"bn_splits\":2147483648}", "field \"bn_splits\" is not an integer in [0, 2^31)"},
        {"{\"K\":\"16\"}", "field \"K\" is not an integer in [0, 2^31)"},
        {"{\"size\":8.5}", "field \"size\" is not an integer in [0, 2^31)"},
        {"{\"lr\":\"0.03\"}", "field \"lr\" is not a finite number"},
        {"{\"wd\":1e999}", "field \"wd\" is not a finite number"},
        {"{\"T\":null}", "field \"T\" is not a finite number"},
        {"{\"mean\":[0.4,0.5],\"std\":[1,1,1]}", "field \"mean\" is not an array of 3 finite numbers"},
        {"{\"mean\":[0.4,0.5,0.6,0.7],\"std\":[1,1,1]}", "field \"mean\" is not an array of 3 finite numbers"},
        {"{\"mean\":[0.4,0.5,0.6],\"std\":[1,\"1\",1]}", "field \"std\" is not an array of 3 finite numbers"},
        {"{\"arch\":\"resnet18-cifar-resnet18-cifar-xx\"}", "field \"arch\" is not a string of at most 31 bytes"},
        {"{\"precision\":\"bfloat16\"}", "field \"precision\" is not a string of at most 7 bytes"},
        {"{\"normalize\":7}", "field \"normalize\" is not a string of at most 15 bytes"},
        {"{\"schedule\":[120,160]}", "field \"schedule\" is not a string of at most 191 bytes"},
        {"{\"seed\":-3}", "field \"seed\" is not an integer in [0, 2^64)"},
        {"{\"count\":9223372036854775808}", "field \"count\" is not an integer in [0, 2^63)"},
        {"[1,2]", "__metadata__ config is not a JSON object"},
    };
    char want[512];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        moco_ckpt_config c;
        int rc = moco_ckpt_config_parse(cases[i].json, "x.safetensors", &c);
        printf("%s: %s\n", cases[i].json, moco_errmsg());
        assert_int_equal(rc, MOCO_ECORRUPT);
        snprintf(want, sizeof want, "x.safetensors: %s%s", strncmp(cases[i].want, "field", 5) ? "" : "__metadata__ config ",
                 cases[i].want);
        assert_string_equal(moco_errmsg(), want);
    }
    /* in a file: every reader names it (resume and export through ckpt_open, the evaluation commands) */
    const char *dir = tu_tmpdir("test_ckpt_ranges");
    train_cfg tc;
    moco *mc = tiny(&tc);
    char path[4200], bad[4200];
    snprintf(path, sizeof path, "%s", save(dir, "c.safetensors", mc, &tc));
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    forge(path, bad, &(forgery){.fmt = "moco-checkpoint-1", .config = "{\"arch\":\"resnet18-cifar\",\"width\":-4}"});
    snprintf(want, sizeof want, "%s: __metadata__ config field \"width\" is not an integer in [0, 2^31)", bad);
    moco_ckpt_config cc;
    assert_int_equal(ckpt_read_config(bad, &cc), MOCO_ECORRUPT);
    assert_string_equal(moco_errmsg(), want);
    moco_st *f = NULL;
    assert_int_equal(ckpt_open(bad, &f, &cc), MOCO_ECORRUPT);
    assert_string_equal(moco_errmsg(), want);
    assert_null(f);
    evalmodel_flags ef;
    resnet *m = NULL;
    assert_int_equal(open_with(bad, NULL, 0, 0, 0, &ef, &m), MOCO_ECORRUPT);
    assert_string_equal(moco_errmsg(), want);
    moco_destroy(&mc);
}

/* moco lincls reads the training size before it starts its workers
 * (evalmodel_ckpt_size): a config no flags could describe is refused there
 * as evalmodel_open refuses it, naming the file and the field, not passed
 * to the workers as --size 4097 */
static void test_ckpt_size_in_range(void **st)
{
    (void)st;
    const char *dir = tu_tmpdir("test_ckpt_size");
    train_cfg tc;
    moco *mc = tiny(&tc);
    long size = -1;
    const char *p = save(dir, "ok.safetensors", mc, &tc);
    if (evalmodel_ckpt_size(p, &size)) fail_msg("%s", moco_errmsg());
    assert_int_equal(size, 8);
    tc.size = 4097;
    p = save(dir, "big.safetensors", mc, &tc);
    size = -1;
    assert_int_equal(evalmodel_ckpt_size(p, &size), MOCO_ECORRUPT);
    assert_int_equal(size, -1);
    if (!strstr(moco_errmsg(), "big.safetensors: its config's size 4097 is above 4096")) fail_msg("%s", moco_errmsg());
    moco_destroy(&mc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checksum),
        cmocka_unit_test(test_nan_refused),
        cmocka_unit_test(test_self_describing),
        cmocka_unit_test(test_extra_tensors),
        cmocka_unit_test(test_config_roundtrip),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_position_range),
        cmocka_unit_test(test_export_checked),
        cmocka_unit_test(test_config_golden),
        cmocka_unit_test(test_config_fields),
        cmocka_unit_test(test_config_ranges),
        cmocka_unit_test(test_ckpt_size_in_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
