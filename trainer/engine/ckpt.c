/* ckpt.c: MoCo checkpoints (see ckpt.h). */
#include "trainer/engine/ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "formats/errors.h"
#include "formats/json.h"

static moco_st_dtype dtype_of(const rn_tensor *t) { return t->kind == RN_COUNT ? MOCO_ST_I64 : MOCO_ST_F32; }

/* entries for every tensor of model m under prefix; names stored in names */
static int add_model(moco_st_entry *e, int n, char (*names)[MOCO_ST_MAX_NAME + 1], const resnet *m, const char *prefix,
                     int momentum)
{
    for (int i = 0; i < m->ntensors; i++) {
        const rn_tensor *t = &m->tensors[i];
        if (momentum && t->kind != RN_PARAM) continue;
        snprintf(names[n], MOCO_ST_MAX_NAME + 1, "%s%s", prefix, t->name);
        e[n].name = names[n];
        e[n].dtype = dtype_of(t);
        e[n].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) e[n].shape[d] = t->shape[d];
        e[n].data = momentum ? (const void *)(m->momentum + t->off) : rn_data(m, t);
        n++;
    }
    return n;
}

int ckpt_save(const char *path, const moco *mc, const ckpt_state *st, const char *const *meta, int nmeta)
{
    int cap = 3 * mc->q->ntensors + 16;
    moco_st_entry *e = calloc((size_t)cap, sizeof *e);
    char (*names)[MOCO_ST_MAX_NAME + 1] = calloc((size_t)cap, sizeof *names);
    const char **meta2 = calloc((size_t)(2 * nmeta + 6), sizeof *meta2);
    if (!e || !names || !meta2) {
        free(e);
        free(names);
        free(meta2);
        return moco_err(MOCO_ENOMEM, "%s: out of memory", path);
    }
    int n = add_model(e, 0, names, mc->q, "encoder_q.", 0);
    n = add_model(e, n, names, mc->k, "encoder_k.", 0);
    n = add_model(e, n, names, mc->q, "momentum_buffer.", 1);
    int64_t scalars[5];
    scalars[0] = mc->ptr;
    scalars[1] = st->epoch;
    scalars[2] = st->step;
    scalars[3] = (int64_t)mc->cfg.seed;
    scalars[4] = st->pipe_epoch;
    e[n++] = (moco_st_entry){"queue", MOCO_ST_F32, 2, {mc->cfg.enc.dim, mc->cfg.K}, mc->queue};
    const char *sn[5] = {"queue_ptr", "train.epoch", "train.step", "train.seed", "pipeline.epoch"};
    for (int i = 0; i < 5; i++) e[n++] = (moco_st_entry){sn[i], MOCO_ST_I64, 1, {1}, &scalars[i]};
    static const uint8_t none[1];
    e[n++] = (moco_st_entry){"pipeline.delivered", MOCO_ST_U8, 1, {(int64_t)st->delivered_bytes},
                             st->delivered_bytes ? st->delivered : none};
    /* the data section is the entries' bytes in this order (moco_st_write) */
    uLong crc = crc32_z(0L, Z_NULL, 0);
    for (int i = 0; i < n; i++) {
        size_t bytes = moco_st_dtype_size(e[i].dtype);
        for (int d = 0; d < e[i].ndim; d++) bytes *= (size_t)e[i].shape[d];
        crc = crc32_z(crc, e[i].data, bytes);
    }
    char crcs[16];
    snprintf(crcs, sizeof crcs, "%08lx", (unsigned long)crc);
    for (int i = 0; i < 2 * nmeta; i++) meta2[i] = meta[i];
    int nm = nmeta;
    meta2[2 * nm] = MOCO_CKPT_KEY_DATA_CRC32;
    meta2[2 * nm++ + 1] = crcs;
    /* the config too: the evaluation commands build their model from it */
    char ccrcs[16];
    for (int i = 0; i < nmeta; i++)
        if (!strcmp(meta[2 * i], MOCO_CKPT_KEY_CONFIG)) {
            moco_ckpt_crc32_hex(meta[2 * i + 1], strlen(meta[2 * i + 1]), ccrcs, sizeof ccrcs);
            meta2[2 * nm] = MOCO_CKPT_KEY_CONFIG_CRC32;
            meta2[2 * nm++ + 1] = ccrcs;
            break;
        }
    meta2[2 * nm] = MOCO_CKPT_KEY_HEADER_CRC32; /* last: every other byte of the header is under it */
    meta2[2 * nm++ + 1] = MOCO_ST_HEADER_CRC;
    int rc = moco_st_write(path, e, n, meta2, nm);
    free(e);
    free(names);
    free(meta2);
    return rc;
}

/* ---- reading the header's __metadata__ ---------------------------------- */

/* The header of the file open as fd: its "config" (decoded, "" if none)
 * and "data_crc32" ("" if none) metadata strings; "config_crc32", where the
 * file has it, checked against the config. */
static int read_meta(int fd, const char *path, char *config, size_t ccap, char *crc, size_t crccap, char *kern, size_t kcap)
{
    char ccrc[32] = "";
    config[0] = crc[0] = 0;
    if (kern) kern[0] = 0;
    uint8_t b8[9];
    struct stat sb;
    if (fstat(fd, &sb)) return moco_err(MOCO_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return moco_err(MOCO_EIO, "%s: not a regular file", path);
    ssize_t got = pread(fd, b8, sizeof b8, 0);
    if (got < 8) return moco_err(MOCO_ECORRUPT, "%s: shorter than a safetensors header", path);
    uint64_t hl = 0;
    int rc0 = moco_st_header_len(b8, (size_t)got, (uint64_t)sb.st_size, path, &hl);
    if (rc0) return rc0;
    char *h = malloc(hl);
    int maxtok = (int)(hl / 2 + 2), nt, rc = 0;
    moco_json_tok *tk = malloc(sizeof *tk * (size_t)maxtok);
    if (!h || !tk) { rc = moco_err(MOCO_ENOMEM, "%s: out of memory", path); goto out; }
    if (pread(fd, h, hl, 8) != (ssize_t)hl) { rc = moco_err(MOCO_EIO, "%s: cannot read the header", path); goto out; }
    if ((rc = moco_json_parse(h, hl, path, tk, maxtok, &nt))) goto out;
    if (tk[0].type != MOCO_JSON_OBJ) { rc = moco_err(MOCO_ECORRUPT, "%s: header is not a JSON object", path); goto out; }
    int md = moco_json_get(h, tk, 0, "__metadata__");
    if (md < 0 || tk[md].type != MOCO_JSON_OBJ) goto out;
    int hc = moco_json_get(h, tk, md, MOCO_CKPT_KEY_HEADER_CRC32);
    if (hc >= 0) { /* files written before it have none */
        char want[9] = "", got[9];
        if (tk[hc].type != MOCO_JSON_STR || tk[hc].len != 8) {
            rc = moco_err(MOCO_ECORRUPT, "%s: __metadata__ " MOCO_CKPT_KEY_HEADER_CRC32 " is not 8 hex digits: the file is damaged", path);
            goto out;
        }
        memcpy(want, h + tk[hc].start, 8);
        snprintf(got, sizeof got, "%08x", (unsigned)moco_st_header_crc(h, hl, tk[hc].start));
        if (strcmp(got, want)) {
            rc = moco_err(MOCO_ECORRUPT, "%s: the header (tensor names, shapes, offsets, metadata) fails its checksum (CRC-32 %s, "
                          "the header says %s): the file is damaged", path, got, want);
            goto out;
        }
    }
    int c = moco_json_get(h, tk, md, MOCO_CKPT_KEY_CONFIG), k = moco_json_get(h, tk, md, MOCO_CKPT_KEY_DATA_CRC32),
        kc = moco_json_get(h, tk, md, MOCO_CKPT_KEY_CONFIG_CRC32), fm = moco_json_get(h, tk, md, MOCO_CKPT_KEY_FORMAT);
    if (fm >= 0) { /* absent in files saved without metadata: legal */
        char fmt[64];
        if (tk[fm].type != MOCO_JSON_STR || tk[fm].len >= sizeof fmt || moco_json_str(h, &tk[fm], fmt, sizeof fmt)) {
            rc = moco_err(MOCO_EFORMAT, "%s: __metadata__ format is not a short string, expected \"" MOCO_CKPT_FORMAT "\"", path);
            goto out;
        }
        if (strcmp(fmt, MOCO_CKPT_FORMAT)) {
            rc = moco_err(MOCO_EFORMAT, "%s: format \"%s\" is not a checkpoint this build reads (\"" MOCO_CKPT_FORMAT "\")", path, fmt);
            goto out;
        }
    }
    if ((c >= 0 && (tk[c].type != MOCO_JSON_STR || moco_json_str(h, &tk[c], config, ccap))) ||
        (k >= 0 && (tk[k].type != MOCO_JSON_STR || moco_json_str(h, &tk[k], crc, crccap))) ||
        (kc >= 0 && (tk[kc].type != MOCO_JSON_STR || moco_json_str(h, &tk[kc], ccrc, sizeof ccrc)))) {
        rc = moco_err(MOCO_ECORRUPT, "%s: __metadata__ config, data_crc32 or config_crc32 malformed", path);
        goto out;
    }
    int kk = kern ? moco_json_get(h, tk, md, MOCO_CKPT_KEY_KERNELS) : -1;
    if (kk >= 0 && (tk[kk].type != MOCO_JSON_STR || moco_json_str(h, &tk[kk], kern, kcap))) kern[0] = 0; /* a hint: ignored */
    if (kc >= 0) { /* files written before it existed have none */
        char got[16];
        moco_ckpt_crc32_hex(config, strlen(config), got, sizeof got);
        if (c < 0 || strcmp(got, ccrc))
            rc = moco_err(MOCO_ECORRUPT, "%s: the config metadata fails its checksum (CRC-32 %s, the header says %s): the file is damaged",
                          path, c < 0 ? "of nothing" : got, ccrc);
    }
out:
    free(h);
    free(tk);
    return rc;
}

int ckpt_read_config(const char *path, moco_ckpt_config *cfg)
{
    char config[MOCO_CKPT_CONFIG_MAX], crc[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO: refused by read_meta, not waited on */
    if (fd < 0) return moco_err(errno == ENOENT ? MOCO_ENOTFOUND : MOCO_EIO, "cannot open %s: %s", path, strerror(errno));
    int rc = read_meta(fd, path, config, sizeof config, crc, sizeof crc, NULL, 0);
    close(fd);
    return rc ? rc : moco_ckpt_config_parse(config, path, cfg);
}

int ckpt_read_kernels(const char *path, char **out)
{
    char config[MOCO_CKPT_CONFIG_MAX], crc[32];
    *out = NULL;
    char *k = malloc(MOCO_CKPT_KERNELS_MAX);
    if (!k) return moco_err(MOCO_ENOMEM, "%s: out of memory", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        free(k);
        return moco_err(errno == ENOENT ? MOCO_ENOTFOUND : MOCO_EIO, "cannot open %s: %s", path, strerror(errno));
    }
    int rc = read_meta(fd, path, config, sizeof config, crc, sizeof crc, k, MOCO_CKPT_KERNELS_MAX);
    close(fd);
    if (rc || !k[0]) free(k);
    else *out = k;
    return rc;
}

/* the CRC-32 of the data section, and every F32 tensor finite */
static int check_data(const moco_st *f, const char *path, const char *want)
{
    int n = moco_st_count(f);
    const uint8_t *base = NULL;
    uint64_t len = 0;
    for (int i = 0; i < n; i++) {
        const moco_st_tensor *t = moco_st_at(f, i);
        if (t->begin == 0 && t->end > 0) base = moco_st_data(f, t);
        if (t->end > len) len = t->end;
    }
    if (*want) {
        uLong crc = crc32_z(0L, Z_NULL, 0);
        if (base) crc = crc32_z(crc, base, (z_size_t)len);
        char got[16];
        snprintf(got, sizeof got, "%08lx", (unsigned long)crc);
        if (strcmp(got, want))
            return moco_err(MOCO_ECORRUPT, "%s: the tensor data fails its checksum (CRC-32 %s, the header says %s): the file is damaged",
                            path, got, want);
    }
    for (int i = 0; i < n; i++) {
        const moco_st_tensor *t = moco_st_at(f, i);
        if (t->dtype != MOCO_ST_F32) continue;
        const uint8_t *p = moco_st_data(f, t);
        uint64_t cnt = (t->end - t->begin) / 4;
        for (uint64_t j = 0; j < cnt; j++) {
            uint32_t u;
            memcpy(&u, p + 4 * j, 4);
            if ((u & 0x7f800000u) == 0x7f800000u) {
                float v;
                memcpy(&v, &u, 4);
                return moco_err(MOCO_ENUMERIC, "%s: tensor %s holds %s at element %llu: refusing diverged weights", path, t->name,
                                isnan(v) ? "NaN" : "an infinity", (unsigned long long)j);
            }
        }
    }
    return 0;
}

int ckpt_open(const char *path, moco_st **out, moco_ckpt_config *cfg)
{
    char config[MOCO_CKPT_CONFIG_MAX], crc[32];
    moco_st *f = NULL;
    int rc = 0;
    *out = NULL;
    /* the header is read through a second descriptor: retry if the file was
     * replaced (an atomic rename by a running trainer) in between */
    for (int attempt = 0;; attempt++) {
        struct stat a, b;
        if (stat(path, &a))
            return moco_err(errno == ENOENT ? MOCO_ENOTFOUND : MOCO_EIO, "cannot open %s: %s", path, strerror(errno));
        if ((rc = moco_st_open(path, &f))) return rc;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) { rc = moco_err(MOCO_EIO, "cannot open %s: %s", path, strerror(errno)); goto fail; }
        rc = read_meta(fd, path, config, sizeof config, crc, sizeof crc, NULL, 0);
        int same = !fstat(fd, &b) && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
        close(fd);
        if (rc) goto fail;
        if (same || attempt == 3) break;
        moco_st_destroy(&f);
    }
    if ((rc = check_data(f, path, crc))) goto fail;
    if (cfg && (rc = moco_ckpt_config_parse(config, path, cfg))) goto fail;
    *out = f;
    return 0;
fail:
    moco_st_destroy(&f);
    return rc;
}

/* ---- loading ----------------------------------------------------------- */

/* check (dry) or copy every tensor of m from prefix */
static int read_model(const moco_st *f, resnet *m, const char *prefix, int momentum, int dry, const char *path)
{
    char name[MOCO_ST_MAX_NAME + 1];
    for (int i = 0; i < m->ntensors; i++) {
        const rn_tensor *t = &m->tensors[i];
        if (momentum && t->kind != RN_PARAM) continue;
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        const moco_st_tensor *ft = moco_st_find(f, name);
        if (!ft) return moco_err(MOCO_ENOTFOUND, "%s: no tensor %s", path, name);
        if (ft->dtype != dtype_of(t) || ft->ndim != t->ndim)
            return moco_err(MOCO_EFORMAT, "%s: tensor %s is %s with %d dims, expected %s with %d", path, name,
                            moco_st_dtype_name(ft->dtype), ft->ndim, moco_st_dtype_name(dtype_of(t)), t->ndim);
        for (int d = 0; d < t->ndim; d++)
            if (ft->shape[d] != t->shape[d])
                return moco_err(MOCO_EINVAL, "%s: tensor %s has dim %d of %lld, the model has %lld", path, name, d,
                                (long long)ft->shape[d], (long long)t->shape[d]);
        if (!dry) {
            void *dst = momentum ? (void *)(m->momentum + t->off) : rn_data(m, t);
            memcpy(dst, moco_st_data(f, ft), ft->end - ft->begin);
        }
    }
    return 0;
}

/* every tensor of the file under prefix must be one of m's (momentum: one of
 * its parameters): a resnet34 checkpoint holds every resnet18 tensor, and
 * would otherwise load as one with the rest dropped */
static int no_extras(const moco_st *f, const resnet *m, const char *prefix, int momentum, const char *path)
{
    size_t pl = strlen(prefix);
    for (int i = 0; i < moco_st_count(f); i++) {
        const char *name = moco_st_at(f, i)->name;
        if (strncmp(name, prefix, pl)) continue;
        const rn_tensor *t = rn_find(m, name + pl);
        if (!t || (momentum && t->kind != RN_PARAM))
            return moco_err(MOCO_EINVAL, "%s: tensor %s is not part of the model (%s, width %d%s)", path, name, m->cfg.arch,
                            m->cfg.width, m->cfg.mlp ? ", mlp head" : "");
    }
    return 0;
}

/* the model tensors of a checkpoint: the query encoder's (all that evaluation
 * loads), the key encoder's, the query parameters' momentum; none extra */
static int check_models(const moco_st *f, const resnet *q, const char *path)
{
    return no_extras(f, q, "encoder_q.", 0, path) || no_extras(f, q, "encoder_k.", 0, path) ||
                   no_extras(f, q, "momentum_buffer.", 1, path)
               ? MOCO_EINVAL
               : 0;
}

static int read_i64(const moco_st *f, const char *name, int64_t *v)
{
    int64_t shape[1] = {1};
    return moco_st_read(f, name, MOCO_ST_I64, 1, shape, v);
}

int ckpt_load(const char *path, moco *mc, ckpt_state *st)
{
    moco_st *f;
    int rc = ckpt_open(path, &f, NULL);
    if (rc) return rc;
    int64_t ptr, ep, step, seed, pe;
    int64_t qshape[2] = {mc->cfg.enc.dim, mc->cfg.K};
    const moco_st_tensor *dl = moco_st_find(f, "pipeline.delivered");
    if ((rc = read_model(f, mc->q, "encoder_q.", 0, 1, path)) || (rc = read_model(f, mc->k, "encoder_k.", 0, 1, path)) ||
        (rc = read_model(f, mc->q, "momentum_buffer.", 1, 1, path)) || (rc = read_i64(f, "queue_ptr", &ptr)) ||
        (rc = read_i64(f, "train.epoch", &ep)) || (rc = read_i64(f, "train.step", &step)) ||
        (rc = read_i64(f, "train.seed", &seed)) || (rc = read_i64(f, "pipeline.epoch", &pe)) ||
        (rc = check_models(f, mc->q, path)))
        goto out;
    if (!moco_st_find(f, "queue")) { rc = moco_err(MOCO_ENOTFOUND, "%s: no tensor queue", path); goto out; }
    if (!dl || dl->dtype != MOCO_ST_U8 || dl->ndim != 1) {
        rc = moco_err(MOCO_ECORRUPT, "%s: tensor pipeline.delivered missing or not U8[n]", path);
        goto out;
    }
    /* the trainer keeps the stream's epoch in 32 bits (2^32 - 1 means none)
     * and counts steps in doubles (the schedule): anything beyond is a forged
     * or damaged file. (The stream's epoch may be ahead of the training
     * epoch: a loader started at a later --start-epoch.) */
    const char *bad = ptr < 0 || ptr >= mc->cfg.K           ? "queue_ptr"
                      : ep < 0 || ep >= (int64_t)UINT32_MAX ? "train.epoch"
                      : step < 0 || step >= CKPT_MAX_STEP   ? "train.step"
                      : pe < 0 || pe >= (int64_t)UINT32_MAX ? "pipeline.epoch"
                                                            : NULL;
    if (bad) {
        rc = moco_err(MOCO_ECORRUPT, "%s: tensor %s out of range (queue_ptr %lld of K %d, train.epoch %lld, train.step %lld, "
                      "pipeline.epoch %lld; epochs are below 2^32 - 1, steps below 2^53)",
                      path, bad, (long long)ptr, mc->cfg.K, (long long)ep, (long long)step, (long long)pe);
        goto out;
    }
    if ((uint64_t)seed != mc->cfg.seed) {
        rc = moco_err(MOCO_EINVAL, "%s: trained with --seed %lld, this run has --seed %llu", path, (long long)seed,
                      (unsigned long long)mc->cfg.seed);
        goto out;
    }
    uint8_t *bm = malloc(dl->end - dl->begin + 1);
    if (!bm) { rc = moco_err(MOCO_ENOMEM, "out of memory"); goto out; }
    /* everything checked: now copy */
    if ((rc = moco_st_read(f, "queue", MOCO_ST_F32, 2, qshape, mc->queue))) { free(bm); goto out; }
    read_model(f, mc->q, "encoder_q.", 0, 0, path);
    read_model(f, mc->k, "encoder_k.", 0, 0, path);
    read_model(f, mc->q, "momentum_buffer.", 1, 0, path);
    memcpy(bm, moco_st_data(f, dl), dl->end - dl->begin);
    mc->ptr = ptr;
    mc->steps = step;
    st->epoch = ep;
    st->step = step;
    st->pipe_epoch = pe;
    st->delivered = bm;
    st->delivered_bytes = dl->end - dl->begin;
out:
    moco_st_destroy(&f);
    return rc;
}

int ckpt_read_epoch(const char *path, int64_t *epoch)
{
    moco_st *f;
    int rc = ckpt_open(path, &f, NULL);
    if (rc) return rc;
    if (!(rc = read_i64(f, "train.epoch", epoch)) && (*epoch < 0 || *epoch >= (int64_t)UINT32_MAX))
        rc = moco_err(MOCO_ECORRUPT, "%s: tensor train.epoch out of range (%lld; epochs are below 2^32 - 1)", path, (long long)*epoch);
    moco_st_destroy(&f);
    return rc;
}

int ckpt_check_encoder(const moco_st *f, const char *path, resnet *m, const char *prefix)
{
    int rc = read_model(f, m, prefix, 0, 1, path);
    return rc ? rc : check_models(f, m, path);
}

int ckpt_load_encoder(const char *path, resnet *m)
{
    moco_st *f;
    int rc = ckpt_open(path, &f, NULL);
    if (rc) return rc;
    if (!(rc = read_model(f, m, "encoder_q.", 0, 1, path)) && !(rc = check_models(f, m, path)))
        read_model(f, m, "encoder_q.", 0, 0, path);
    moco_st_destroy(&f);
    return rc;
}
