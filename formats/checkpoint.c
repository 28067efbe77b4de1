/* checkpoint.c: a checkpoint's "config" metadata, written and read in one
 * place (see checkpoint.h). */
#include "formats/checkpoint.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "formats/errors.h"
#include "formats/json.h"
#include "formats/jsonw.h"

/* the int and double fields: key and place (the reader's loops; the
 * writer keeps its own fixed order) */
typedef struct {
    const char *key;
    size_t off;
} field;
#define F(key, member) {key, offsetof(moco_ckpt_config, member)}
static const field ints[] = {F("width", width), F("mlp", mlp), F("dim", dim), F("size", size), F("K", K),
                             F("batch_size", batch), F("ranks", ranks), F("epochs", epochs), F("cos", cos),
                             F("warmup_epochs", warmup_epochs), F("symmetric", symmetric), F("bn_splits", bn_splits)};
static const field dbls[] = {F("lr", lr), F("m", m), F("T", T), F("momentum", momentum), F("wd", wd)};
#undef F
#define NINTS (int)(sizeof ints / sizeof *ints)
#define NDBL (int)(sizeof dbls / sizeof *dbls)
static int *int_at(moco_ckpt_config *c, int i) { return (int *)((char *)c + ints[i].off); }
static int int_of(const moco_ckpt_config *c, int i) { return *(const int *)((const char *)c + ints[i].off); }
static double *dbl_at(moco_ckpt_config *c, int i) { return (double *)((char *)c + dbls[i].off); }
static double dbl_of(const moco_ckpt_config *c, int i) { return *(const double *)((const char *)c + dbls[i].off); }

void moco_ckpt_config_init(moco_ckpt_config *c)
{
    *c = (moco_ckpt_config){.lr = NAN, .m = NAN, .T = NAN, .momentum = NAN, .wd = NAN, .count = -1};
    for (int i = 0; i < NINTS; i++) *int_at(c, i) = -1;
}

void moco_ckpt_crc32_hex(const void *s, size_t len, char *out, size_t cap)
{
    snprintf(out, cap, "%08lx", (unsigned long)crc32_z(crc32_z(0L, Z_NULL, 0), (const Bytef *)s, len));
}

/* ---- writing ------------------------------------------------------------ */

/* the first field the reader would refuse, or NULL */
static const char *unreadable(const moco_ckpt_config *c)
{
    for (int i = 0; i < NINTS; i++)
        if (int_of(c, i) < 0) return ints[i].key;
    for (int i = 0; i < NDBL; i++)
        if (!isfinite(dbl_of(c, i))) return dbls[i].key;
    if (c->count < 0) return "count";
    const char *sk[] = {"arch", "schedule", "precision", "normalize"};
    const char *sv[] = {c->arch, c->schedule, c->precision, c->normalize};
    const size_t sn[] = {sizeof c->arch, sizeof c->schedule, sizeof c->precision, sizeof c->normalize};
    for (int i = 0; i < 4; i++)
        if (!memchr(sv[i], 0, sn[i])) return sk[i];
    if (c->normalize[0])
        for (int i = 0; i < 3; i++) {
            if (!isfinite(c->mean[i])) return "mean";
            if (!isfinite(c->std[i])) return "std";
        }
    return NULL;
}

int moco_ckpt_config_write(const moco_ckpt_config *c, char *buf, size_t n)
{
    if (n > 0) buf[0] = 0;
    const char *bad = unreadable(c);
    if (bad) return moco_err(MOCO_EINVAL, "checkpoint config: field \"%s\" is out of the range a reader takes", bad);
    moco_jw w; /* formats/jsonw: the one JSON writer */
    moco_jw_begin(&w);
    moco_jw_str(&w, "arch", c->arch);
    moco_jw_i64(&w, "width", c->width);
    moco_jw_i64(&w, "mlp", c->mlp);
    moco_jw_i64(&w, "dim", c->dim);
    moco_jw_i64(&w, "K", c->K);
    moco_jw_g(&w, "m", c->m, 0);
    moco_jw_g(&w, "T", c->T, 0);
    moco_jw_i64(&w, "batch_size", c->batch);
    moco_jw_i64(&w, "ranks", c->ranks);
    moco_jw_g(&w, "lr", c->lr, 0);
    moco_jw_g(&w, "momentum", c->momentum, 0);
    moco_jw_g(&w, "wd", c->wd, 0);
    moco_jw_i64(&w, "cos", c->cos);
    moco_jw_str(&w, "schedule", c->schedule);
    moco_jw_i64(&w, "warmup_epochs", c->warmup_epochs);
    moco_jw_i64(&w, "epochs", c->epochs);
    moco_jw_i64(&w, "bn_splits", c->bn_splits);
    moco_jw_i64(&w, "symmetric", c->symmetric);
    moco_jw_i64(&w, "size", c->size);
    moco_jw_str(&w, "precision", c->precision);
    if (c->normalize[0]) { /* the input normalisation: the evaluation commands' --normalize auto */
        moco_jw_str(&w, "normalize", c->normalize);
        moco_jw_arr(&w, "mean");
        for (int i = 0; i < 3; i++) moco_jw_g(&w, NULL, c->mean[i], 7); /* the float constants, as written */
        moco_jw_close(&w);
        moco_jw_arr(&w, "std");
        for (int i = 0; i < 3; i++) moco_jw_g(&w, NULL, c->std[i], 7);
        moco_jw_close(&w);
    }
    moco_jw_u64(&w, "seed", c->seed);
    moco_jw_u64(&w, "count", (uint64_t)c->count);
    const char *js = moco_jw_end(&w);
    int rc = 0;
    size_t len = js ? strlen(js) : 0;
    if (!js) rc = moco_err(MOCO_ENOMEM, "checkpoint config: out of memory");
    else if (len >= n || len >= MOCO_CKPT_CONFIG_MAX) /* a cut JSON text would not parse */
        rc = moco_err(MOCO_EINVAL, "checkpoint config: %zu bytes of JSON, more than the %zu a reader takes", len,
                      (n < MOCO_CKPT_CONFIG_MAX ? n : MOCO_CKPT_CONFIG_MAX) - 1);
    else memcpy(buf, js, len + 1);
    moco_jw_free(&w);
    return rc;
}

/* ---- reading ------------------------------------------------------------ */

static int bad_field(const char *path, const char *key, const char *what)
{
    return moco_err(MOCO_ECORRUPT, "%s: __metadata__ config field \"%s\" is not %s", path, key, what);
}

/* a JSON number token as a finite double */
static int num_of(const char *js, const moco_json_tok *t, double *v)
{
    char num[64];
    if (t->type != MOCO_JSON_NUM || t->len >= sizeof num) return -1;
    snprintf(num, sizeof num, "%.*s", (int)t->len, js + t->start);
    *v = strtod(num, NULL);
    return isfinite(*v) ? 0 : -1;
}

int moco_ckpt_config_parse(const char *js, const char *path, moco_ckpt_config *c)
{
    moco_ckpt_config_init(c);
    if (!*js) return 0;
    moco_json_tok tk[256];
    int nt;
    if (moco_json_parse(js, strlen(js), path, tk, 256, &nt) || tk[0].type != MOCO_JSON_OBJ)
        return moco_err(MOCO_ECORRUPT, "%s: __metadata__ config is not a JSON object", path);
    c->has_config = 1;
    const char *sk[] = {"arch", "schedule", "precision", "normalize"};
    char *sv[] = {c->arch, c->schedule, c->precision, c->normalize};
    const size_t sn[] = {sizeof c->arch, sizeof c->schedule, sizeof c->precision, sizeof c->normalize};
    for (int s = 0; s < 4; s++) {
        int i = moco_json_get(js, tk, 0, sk[s]);
        if (i < 0) continue;
        if (tk[i].type != MOCO_JSON_STR || moco_json_str(js, &tk[i], sv[s], sn[s])) {
            char what[64];
            snprintf(what, sizeof what, "a string of at most %zu bytes", sn[s] - 1);
            sv[s][0] = 0;
            return bad_field(path, sk[s], what);
        }
        if (s == 1) c->has_schedule = 1;
    }
    for (int k = 0; k < NINTS; k++) {
        int i = moco_json_get(js, tk, 0, ints[k].key);
        uint64_t u;
        if (i < 0) continue;
        if (tk[i].type != MOCO_JSON_NUM || moco_json_u64(js, &tk[i], &u) || u > 0x7fffffff)
            return bad_field(path, ints[k].key, "an integer in [0, 2^31)");
        *int_at(c, k) = (int)u;
    }
    for (int d = 0; d < NDBL; d++) {
        int i = moco_json_get(js, tk, 0, dbls[d].key);
        if (i >= 0 && num_of(js, &tk[i], dbl_at(c, d))) return bad_field(path, dbls[d].key, "a finite number");
    }
    const char *ak[] = {"mean", "std"};
    double *av[] = {c->mean, c->std};
    int arrays = 0;
    for (int a = 0; a < 2; a++) { /* arrays of 3 numbers (their elements are the tokens after it) */
        int i = moco_json_get(js, tk, 0, ak[a]);
        if (i < 0) continue;
        if (tk[i].type != MOCO_JSON_ARR || tk[i].size != 3) return bad_field(path, ak[a], "an array of 3 finite numbers");
        for (int j = 0; j < 3; j++)
            if (num_of(js, &tk[i + 1 + j], &av[a][j])) return bad_field(path, ak[a], "an array of 3 finite numbers");
        arrays++;
    }
    c->has_mean_std = arrays == 2;
    int i = moco_json_get(js, tk, 0, "seed");
    uint64_t u;
    if (i >= 0) {
        if (tk[i].type != MOCO_JSON_NUM || moco_json_u64(js, &tk[i], &u)) return bad_field(path, "seed", "an integer in [0, 2^64)");
        c->seed = u, c->has_seed = 1;
    }
    i = moco_json_get(js, tk, 0, "count");
    if (i >= 0) {
        if (tk[i].type != MOCO_JSON_NUM || moco_json_u64(js, &tk[i], &u) || u > (uint64_t)INT64_MAX)
            return bad_field(path, "count", "an integer in [0, 2^63)");
        c->count = (int64_t)u;
    }
    return 0;
}
