/* db.c: read-only access to a dataset LMDB and its metadata encoding. */
#include "formats/db.h"
#include "formats/errors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct moco_db {
    MDB_env *env;
    MDB_dbi samples, meta;
    MDB_txn *rtxn; /* reset between calls, renewed on use */
    char *path;
    moco_db_meta m;
};

void moco_db_meta_clear(moco_db_meta *m)
{
    if (m->class_names)
        for (uint32_t i = 0; i < m->nclasses; i++) free(m->class_names[i]);
    free(m->class_names);
    free(m->class_counts);
    free(m->source);
    free(m->source_format);
    memset(m, 0, sizeof *m);
}

static int put(MDB_txn *t, MDB_dbi d, const char *k, const void *v, size_t n)
{
    MDB_val key = {strlen(k), (void *)k}, val = {n, (void *)v};
    int rc = mdb_put(t, d, &key, &val, 0);
    if (rc) moco_err(rc, "writing metadata '%s': %s", k, mdb_strerror(rc));
    return rc;
}

static int put_u64(MDB_txn *t, MDB_dbi d, const char *k, uint64_t v)
{
    uint8_t b[8];
    moco_put_le64(b, v);
    return put(t, d, k, b, 8);
}

int moco_db_meta_put(MDB_txn *t, MDB_dbi d, const moco_db_meta *m)
{
    int rc;
    size_t nlen = 0;
    for (uint32_t i = 0; i < m->nclasses; i++) nlen += strlen(m->class_names[i]) + 1;
    char *names = malloc(nlen + 1);
    uint8_t *counts = malloc((size_t)m->nclasses * 8 + 8);
    if (!names || !counts) {
        free(names);
        free(counts);
        return moco_err(MOCO_ENOMEM, "metadata: out of memory");
    }
    char *p = names;
    for (uint32_t i = 0; i < m->nclasses; i++) {
        size_t l = strlen(m->class_names[i]);
        memcpy(p, m->class_names[i], l);
        p += l;
        *p++ = '\n';
    }
    for (uint32_t i = 0; i < m->nclasses; i++) moco_put_le64(counts + 8 * i, m->class_counts[i]);
    uint8_t enc[8 * MOCO_ENC_COUNT], sz[16];
    for (int i = 0; i < MOCO_ENC_COUNT; i++) moco_put_le64(enc + 8 * i, m->enc_counts[i]);
    moco_put_le32(sz, m->min_w);
    moco_put_le32(sz + 4, m->max_w);
    moco_put_le32(sz + 8, m->min_h);
    moco_put_le32(sz + 12, m->max_h);
    if ((rc = put_u64(t, d, "format_version", MOCO_DB_FORMAT_VERSION)) ||
        (rc = put_u64(t, d, "count", m->count)) ||
        (rc = put(t, d, "classes", names, (size_t)(p - names))) ||
        (rc = put(t, d, "class_counts", counts, (size_t)m->nclasses * 8)) ||
        (rc = put_u64(t, d, "unlabelled", m->unlabelled)) ||
        (rc = put(t, d, "source", m->source ? m->source : "", m->source ? strlen(m->source) : 0)) ||
        (rc = put(t, d, "source_format", m->source_format ? m->source_format : "",
                  m->source_format ? strlen(m->source_format) : 0)) ||
        (rc = put_u64(t, d, "payload_bytes", m->payload_bytes)) ||
        (rc = put(t, d, "encodings", enc, sizeof enc)) ||
        (rc = put(t, d, "size_range", sz, sizeof sz)) ||
        (rc = put_u64(t, d, "skipped", m->skipped)))
        goto out;
    if (m->shuffled) rc = put_u64(t, d, "shuffle_seed", m->shuffle_seed);
out:
    free(names);
    free(counts);
    return rc;
}

/* Fetch meta entry k; missing is MOCO_ECORRUPT unless optional. */
static int get(MDB_txn *t, MDB_dbi d, const char *path, const char *k, MDB_val *v, int optional)
{
    MDB_val key = {strlen(k), (void *)k};
    int rc = mdb_get(t, d, &key, v);
    if (rc == MDB_NOTFOUND && optional) return MDB_NOTFOUND;
    if (rc == MDB_NOTFOUND) return moco_err(MOCO_ECORRUPT, "%s: metadata entry '%s' is missing", path, k);
    if (rc) return moco_err(rc, "%s: reading metadata '%s': %s", path, k, mdb_strerror(rc));
    return 0;
}

static int get_u64(MDB_txn *t, MDB_dbi d, const char *path, const char *k, uint64_t *out)
{
    MDB_val v;
    int rc = get(t, d, path, k, &v, 0);
    if (rc) return rc;
    if (v.mv_size != 8) return moco_err(MOCO_ECORRUPT, "%s: metadata '%s' has %zu bytes, expected 8", path, k, v.mv_size);
    *out = moco_get_le64(v.mv_data);
    return 0;
}

static int get_str(MDB_txn *t, MDB_dbi d, const char *path, const char *k, char **out)
{
    MDB_val v;
    int rc = get(t, d, path, k, &v, 0);
    if (rc) return rc;
    if (!(*out = malloc(v.mv_size + 1))) return moco_err(MOCO_ENOMEM, "%s: out of memory", path);
    memcpy(*out, v.mv_data, v.mv_size);
    (*out)[v.mv_size] = 0;
    return 0;
}

int moco_db_meta_get(MDB_txn *t, MDB_dbi d, const char *path, moco_db_meta *m)
{
    uint64_t ver = 0, seed = 0;
    char *names = NULL;
    MDB_val v;
    int rc;
    memset(m, 0, sizeof *m);
    if ((rc = get_u64(t, d, path, "format_version", &ver))) return rc;
    if (ver != MOCO_DB_FORMAT_VERSION)
        return moco_err(MOCO_EFORMAT, "%s: dataset format version %llu, this build reads version %d", path,
                        (unsigned long long)ver, MOCO_DB_FORMAT_VERSION);
    m->format_version = (uint32_t)ver;
    if ((rc = get_u64(t, d, path, "count", &m->count)) ||
        (rc = get_u64(t, d, path, "unlabelled", &m->unlabelled)) ||
        (rc = get_u64(t, d, path, "payload_bytes", &m->payload_bytes)) ||
        (rc = get_u64(t, d, path, "skipped", &m->skipped)) ||
        (rc = get_str(t, d, path, "source", &m->source)) ||
        (rc = get_str(t, d, path, "source_format", &m->source_format)) ||
        (rc = get_str(t, d, path, "classes", &names)))
        goto fail;
    /* class names: each terminated by '\n' */
    uint32_t n = 0;
    for (char *p = names; *p; p++) n += *p == '\n';
    if (n > MOCO_DB_MAX_CLASSES) {
        rc = moco_err(MOCO_ECORRUPT, "%s: %u classes (limit %d)", path, n, MOCO_DB_MAX_CLASSES);
        goto fail;
    }
    m->class_names = calloc(n ? n : 1, sizeof *m->class_names);
    m->class_counts = calloc(n ? n : 1, sizeof *m->class_counts);
    if (!m->class_names || !m->class_counts) { rc = moco_err(MOCO_ENOMEM, "%s: out of memory", path); goto fail; }
    char *s = names;
    for (uint32_t i = 0; i < n; i++) {
        char *e = strchr(s, '\n');
        *e = 0;
        if (!(m->class_names[i] = strdup(s))) { rc = moco_err(MOCO_ENOMEM, "%s: out of memory", path); goto fail; }
        m->nclasses = i + 1;
        s = e + 1;
    }
    if (*s) { rc = moco_err(MOCO_ECORRUPT, "%s: metadata 'classes' is not newline-terminated", path); goto fail; }
    if ((rc = get(t, d, path, "class_counts", &v, 0))) goto fail;
    if (v.mv_size != (size_t)n * 8) {
        rc = moco_err(MOCO_ECORRUPT, "%s: 'class_counts' holds %zu bytes for %u classes", path, v.mv_size, n);
        goto fail;
    }
    uint64_t total = m->unlabelled;
    for (uint32_t i = 0; i < n; i++) total += m->class_counts[i] = moco_get_le64((uint8_t *)v.mv_data + 8 * i);
    if (total != m->count) {
        rc = moco_err(MOCO_ECORRUPT, "%s: class counts sum to %llu, count is %llu", path,
                      (unsigned long long)total, (unsigned long long)m->count);
        goto fail;
    }
    if ((rc = get(t, d, path, "encodings", &v, 0))) goto fail;
    if (v.mv_size != 8 * MOCO_ENC_COUNT) { rc = moco_err(MOCO_ECORRUPT, "%s: malformed 'encodings'", path); goto fail; }
    for (int i = 0; i < MOCO_ENC_COUNT; i++) m->enc_counts[i] = moco_get_le64((uint8_t *)v.mv_data + 8 * i);
    if ((rc = get(t, d, path, "size_range", &v, 0))) goto fail;
    if (v.mv_size != 16) { rc = moco_err(MOCO_ECORRUPT, "%s: malformed 'size_range'", path); goto fail; }
    m->min_w = moco_get_le32(v.mv_data);
    m->max_w = moco_get_le32((uint8_t *)v.mv_data + 4);
    m->min_h = moco_get_le32((uint8_t *)v.mv_data + 8);
    m->max_h = moco_get_le32((uint8_t *)v.mv_data + 12);
    rc = get(t, d, path, "shuffle_seed", &v, 1);
    if (rc == 0) {
        if ((rc = get_u64(t, d, path, "shuffle_seed", &seed))) goto fail;
        m->shuffled = 1;
        m->shuffle_seed = seed;
    } else if (rc != MDB_NOTFOUND) {
        goto fail;
    }
    free(names);
    return 0;
fail:
    free(names);
    moco_db_meta_clear(m);
    return rc;
}

int moco_db_open(const char *path, moco_db **out)
{
    int rc;
    MDB_txn *t = NULL;
    moco_db *db = calloc(1, sizeof *db);
    *out = NULL;
    if (!db || !(db->path = strdup(path))) { free(db); return moco_err(MOCO_ENOMEM, "%s: out of memory", path); }
    if ((rc = mdb_env_create(&db->env)) || (rc = mdb_env_set_maxdbs(db->env, 4)) ||
        (rc = mdb_env_open(db->env, path, MDB_RDONLY | MDB_NOTLS | MDB_NORDAHEAD, 0644))) {
        rc = moco_err(rc == ENOENT ? MOCO_ENOTFOUND : MOCO_ELMDB, "%s: cannot open dataset: %s", path,
                      mdb_strerror(rc));
        goto fail;
    }
    if ((rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &t))) {
        rc = moco_err(MOCO_ELMDB, "%s: %s", path, mdb_strerror(rc));
        goto fail;
    }
    if ((rc = mdb_dbi_open(t, MOCO_DB_SAMPLES, 0, &db->samples)) || (rc = mdb_dbi_open(t, MOCO_DB_META, 0, &db->meta))) {
        rc = moco_err(MOCO_ECORRUPT, "%s: not a moco dataset (no '%s' database: %s)", path,
                      db->samples ? MOCO_DB_META : MOCO_DB_SAMPLES, mdb_strerror(rc));
        goto fail;
    }
    /* commit, so the database handles outlive this transaction */
    rc = mdb_txn_commit(t);
    t = NULL;
    if (rc || (rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &t))) {
        rc = moco_err(MOCO_ELMDB, "%s: %s", path, mdb_strerror(rc));
        goto fail;
    }
    if ((rc = moco_db_meta_get(t, db->meta, path, &db->m))) goto fail;
    MDB_stat st;
    if ((rc = mdb_stat(t, db->samples, &st))) { rc = moco_err(MOCO_ELMDB, "%s: %s", path, mdb_strerror(rc)); goto fail; }
    if (st.ms_entries != db->m.count) {
        rc = moco_err(MOCO_ECORRUPT, "%s: metadata says %llu samples, database holds %zu", path,
                      (unsigned long long)db->m.count, st.ms_entries);
        goto fail;
    }
    mdb_txn_reset(t);
    db->rtxn = t;
    *out = db;
    return 0;
fail:
    if (t) mdb_txn_abort(t);
    moco_db_destroy(&db);
    return rc;
}

void moco_db_destroy(moco_db **pdb)
{
    moco_db *db = *pdb;
    if (!db) return;
    if (db->rtxn) mdb_txn_abort(db->rtxn);
    if (db->env) mdb_env_close(db->env);
    moco_db_meta_clear(&db->m);
    free(db->path);
    free(db);
    *pdb = NULL;
}

const moco_db_meta *moco_db_get_meta(const moco_db *db) { return &db->m; }
const char *moco_db_path(const moco_db *db) { return db->path; }

int moco_db_get(moco_db *db, uint64_t index, uint8_t **buf, size_t *cap, size_t *len)
{
    uint8_t k[MOCO_KEY_SIZE];
    MDB_val key = {MOCO_KEY_SIZE, k}, val;
    int rc = mdb_txn_renew(db->rtxn);
    if (rc) return moco_err(MOCO_ELMDB, "%s: %s", db->path, mdb_strerror(rc));
    moco_key_encode(index, k);
    rc = mdb_get(db->rtxn, db->samples, &key, &val);
    if (rc == MDB_NOTFOUND) {
        rc = moco_err(MOCO_ENOTFOUND, "%s: no record %llu", db->path, (unsigned long long)index);
    } else if (rc) {
        rc = moco_err(MOCO_ELMDB, "%s: record %llu: %s", db->path, (unsigned long long)index, mdb_strerror(rc));
    } else {
        if (*cap < val.mv_size) {
            uint8_t *nb = realloc(*buf, val.mv_size);
            if (!nb) {
                mdb_txn_reset(db->rtxn);
                return moco_err(MOCO_ENOMEM, "%s: record %llu: out of memory", db->path, (unsigned long long)index);
            }
            *buf = nb;
            *cap = val.mv_size;
        }
        memcpy(*buf, val.mv_data, val.mv_size);
        *len = val.mv_size;
    }
    mdb_txn_reset(db->rtxn);
    return rc;
}

int moco_db_foreach(moco_db *db, int (*fn)(void *, uint64_t, const uint8_t *, size_t), void *ctx)
{
    MDB_cursor *c = NULL;
    MDB_val key, val;
    int rc = mdb_txn_renew(db->rtxn), r = 0;
    if (rc) return moco_err(MOCO_ELMDB, "%s: %s", db->path, mdb_strerror(rc));
    if ((rc = mdb_cursor_open(db->rtxn, db->samples, &c))) {
        mdb_txn_reset(db->rtxn);
        return moco_err(MOCO_ELMDB, "%s: %s", db->path, mdb_strerror(rc));
    }
    while ((rc = mdb_cursor_get(c, &key, &val, r ? MDB_NEXT : MDB_FIRST)) == 0) {
        r = 1;
        if (key.mv_size != MOCO_KEY_SIZE) {
            rc = moco_err(MOCO_ECORRUPT, "%s: key of %zu bytes in '%s'", db->path, key.mv_size, MOCO_DB_SAMPLES);
            break;
        }
        int u = fn(ctx, moco_key_decode(key.mv_data), val.mv_data, val.mv_size);
        if (u) { rc = u; break; }
    }
    if (rc == MDB_NOTFOUND) rc = 0;
    else if (rc > 0 || (rc < 0 && rc >= MDB_KEYEXIST && rc <= MDB_LAST_ERRCODE)) rc = moco_err(MOCO_ELMDB, "%s: %s", db->path, mdb_strerror(rc));
    mdb_cursor_close(c);
    mdb_txn_reset(db->rtxn);
    return rc;
}
