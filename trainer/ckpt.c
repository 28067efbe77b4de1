/* ckpt.c: MoCo checkpoints (see ckpt.h). */
#include "trainer/ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/errors.h"
#include "formats/safetensors.h"

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
    if (!e || !names) {
        free(e);
        free(names);
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
    int rc = moco_st_write(path, e, n, meta, nmeta);
    free(e);
    free(names);
    return rc;
}

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

static int read_i64(const moco_st *f, const char *name, int64_t *v)
{
    int64_t shape[1] = {1};
    return moco_st_read(f, name, MOCO_ST_I64, 1, shape, v);
}

int ckpt_load(const char *path, moco *mc, ckpt_state *st)
{
    moco_st *f;
    int rc = moco_st_open(path, &f);
    if (rc) return rc;
    int64_t ptr, ep, step, seed, pe;
    int64_t qshape[2] = {mc->cfg.enc.dim, mc->cfg.K};
    const moco_st_tensor *dl = moco_st_find(f, "pipeline.delivered");
    if ((rc = read_model(f, mc->q, "encoder_q.", 0, 1, path)) || (rc = read_model(f, mc->k, "encoder_k.", 0, 1, path)) ||
        (rc = read_model(f, mc->q, "momentum_buffer.", 1, 1, path)) || (rc = read_i64(f, "queue_ptr", &ptr)) ||
        (rc = read_i64(f, "train.epoch", &ep)) || (rc = read_i64(f, "train.step", &step)) ||
        (rc = read_i64(f, "train.seed", &seed)) || (rc = read_i64(f, "pipeline.epoch", &pe)))
        goto out;
    if (!moco_st_find(f, "queue")) { rc = moco_err(MOCO_ENOTFOUND, "%s: no tensor queue", path); goto out; }
    if (!dl || dl->dtype != MOCO_ST_U8 || dl->ndim != 1) {
        rc = moco_err(MOCO_ECORRUPT, "%s: tensor pipeline.delivered missing or not U8[n]", path);
        goto out;
    }
    if (ptr < 0 || ptr >= mc->cfg.K || ep < 0 || step < 0 || pe < 0) {
        rc = moco_err(MOCO_ECORRUPT, "%s: queue_ptr %lld, epoch %lld, step %lld out of range", path, (long long)ptr,
                      (long long)ep, (long long)step);
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

int ckpt_load_encoder(const char *path, resnet *m)
{
    moco_st *f;
    int rc = moco_st_open(path, &f);
    if (rc) return rc;
    if (!(rc = read_model(f, m, "encoder_q.", 0, 1, path))) read_model(f, m, "encoder_q.", 0, 0, path);
    moco_st_destroy(&f);
    return rc;
}
