/* info.c: `moco info DB`: describe a dataset from its metadata (no cursor
 * walk), or with --verify also read every record and check its header, its
 * CRC, its header against its payload's own (encoding, size, channels:
 * formats/payload.h; the CRC covers only the payload), its label (one of the
 * classes) and, over all records, the label counts against the metadata's.
 * --json prints the same as one JSON object. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <vips/vips.h>

#include "formats/db.h"
#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/opts.h"
#include "formats/payload.h"
#include "loader/cmd.h"

typedef struct {
    uint64_t n, bad, expect;
    uint64_t v1; /* records of version 1: their headers carry no CRC */
    const char *path;
    const moco_db_meta *m;
    uint64_t *seen; /* records per class, then the unlabelled ones (nclasses + 1) */
    tjhandle tj;    /* reads JPEG headers */
} verify_ctx;

static int verify_one(void *ctx, uint64_t index, const uint8_t *val, size_t len)
{
    verify_ctx *v = ctx;
    moco_rec_header h;
    const uint8_t *pl;
    char what[64];
    snprintf(what, sizeof what, "record %" PRIu64, index);
    if (index != v->expect) {
        fprintf(stderr, "%s: index gap: expected record %" PRIu64 ", found %" PRIu64 "\n", v->path, v->expect, index);
        v->bad++;
    }
    v->expect = index + 1;
    if (moco_rec_parse(val, len, 1, what, &h, &pl)) {
        fprintf(stderr, "%s: %s\n", v->path, moco_errmsg());
        v->bad++;
    } else if (h.label >= 0 && (uint64_t)h.label >= v->m->nclasses) { /* consistent but false, or version 1 */
        fprintf(stderr, "%s: record %" PRIu64 " has label %d, not one of the dataset's %u classes\n", v->path, index, (int)h.label,
                v->m->nclasses);
        v->bad++;
    } else {
        v->v1 += h.version == 1;
        v->seen[h.label < 0 ? v->m->nclasses : (uint32_t)h.label]++;
        if (moco_rec_check_payload(v->tj, &h, pl, what)) { /* the header against the payload's own */
            fprintf(stderr, "%s: %s\n", v->path, moco_errmsg());
            v->bad++;
        }
    }
    v->n++;
    return 0;
}

int loader_info_main(int argc, char **argv)
{
    int json = 0, verify = 0;
    const moco_opt opts[] = {
        {"json", MOCO_OPT_FLAG, &json, "print one JSON object", 0, 0, NULL},
        {"verify", MOCO_OPT_FLAG, &verify, "also read every record and check its header, CRC and label, the header against the image's own (encoding, size, channels), and the label counts against the metadata", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco info", "DB [options]",
                               "Print the sample count, classes with their counts, payload sizes, encodings and\n"
                               "image size range of a dataset made by `moco mkdb`.",
                               opts, 1, 1, NULL};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;

    moco_db *db;
    if ((rc = moco_db_open(pos[0], &db))) {
        fprintf(stderr, "moco info: %s\n", moco_errmsg());
        return 1;
    }
    const moco_db_meta *m = moco_db_get_meta(db);
    verify_ctx v = {.path = pos[0], .m = m};
    if (verify && VIPS_INIT("moco")) { /* reads the headers of PNGs (and of JPEGs TurboJPEG refuses) */
        fprintf(stderr, "moco info: cannot start libvips: %s\n", vips_error_buffer());
        moco_db_destroy(&db);
        return 1;
    }
    if (verify && (!(v.seen = calloc((size_t)m->nclasses + 1, sizeof *v.seen)) || !(v.tj = tjInitDecompress()))) {
        fprintf(stderr, "moco info: out of memory\n");
        free(v.seen);
        moco_db_destroy(&db);
        return 1;
    }
    if (verify && (rc = moco_db_foreach(db, verify_one, &v))) {
        fprintf(stderr, "moco info: %s\n", moco_errmsg());
        free(v.seen);
        tjDestroy(v.tj);
        moco_db_destroy(&db);
        return 1;
    }
    if (v.tj) tjDestroy(v.tj);
    /* the records' labels against the counts the metadata gives (a label changed within range) */
    uint64_t miscounted = 0;
    for (uint32_t i = 0; verify && i <= m->nclasses; i++) {
        uint64_t want = i < m->nclasses ? m->class_counts[i] : m->unlabelled;
        if (v.seen[i] == want) continue;
        miscounted++;
        if (i < m->nclasses)
            fprintf(stderr, "%s: class %u (%s): %" PRIu64 " records carry its label, the metadata says %" PRIu64 "\n", pos[0], i,
                    m->class_names[i], v.seen[i], want);
        else
            fprintf(stderr, "%s: %" PRIu64 " records are unlabelled, the metadata says %" PRIu64 "\n", pos[0], v.seen[i], want);
    }
    free(v.seen);
    double mean = m->count ? (double)m->payload_bytes / (double)m->count : 0;
    if (json) { /* one object, from the project's one JSON writer (formats/jsonw.h) */
        moco_jw w;
        moco_jw_begin(&w);
        moco_jw_str(&w, "path", pos[0]);
        moco_jw_u64(&w, "format_version", m->format_version);
        moco_jw_u64(&w, "count", m->count);
        moco_jw_u64(&w, "num_classes", m->nclasses);
        moco_jw_arr(&w, "classes");
        for (uint32_t i = 0; i < m->nclasses; i++) {
            moco_jw_obj(&w, NULL);
            moco_jw_str(&w, "name", m->class_names[i]);
            moco_jw_u64(&w, "count", m->class_counts[i]);
            moco_jw_close(&w);
        }
        moco_jw_close(&w);
        moco_jw_u64(&w, "unlabelled", m->unlabelled);
        moco_jw_u64(&w, "payload_bytes", m->payload_bytes);
        moco_jw_num(&w, "mean_payload_bytes", mean, 1);
        moco_jw_obj(&w, "encodings");
        for (int e = 0; e < MOCO_ENC_COUNT; e++)
            if (m->enc_counts[e]) moco_jw_u64(&w, moco_encoding_name(e), m->enc_counts[e]);
        moco_jw_close(&w);
        moco_jw_arr(&w, "width");
        moco_jw_u64(&w, NULL, m->min_w);
        moco_jw_u64(&w, NULL, m->max_w);
        moco_jw_close(&w);
        moco_jw_arr(&w, "height");
        moco_jw_u64(&w, NULL, m->min_h);
        moco_jw_u64(&w, NULL, m->max_h);
        moco_jw_close(&w);
        moco_jw_u64(&w, "skipped_at_conversion", m->skipped);
        moco_jw_str(&w, "source", m->source);
        moco_jw_str(&w, "source_format", m->source_format);
        if (m->shuffled) moco_jw_u64(&w, "shuffle_seed", m->shuffle_seed);
        if (verify) {
            moco_jw_u64(&w, "verified", v.n);
            moco_jw_u64(&w, "bad_records", v.bad);
            moco_jw_u64(&w, "miscounted_classes", miscounted);
            moco_jw_u64(&w, "version1_records", v.v1);
        }
        if (moco_jw_line(&w, stdout)) {
            fprintf(stderr, "moco info: %s\n", moco_errmsg());
            moco_db_destroy(&db);
            return 1;
        }
    } else {
        printf("dataset   %s (format version %u)\n", pos[0], m->format_version);
        printf("source    %s (%s)%s\n", m->source, m->source_format, m->shuffled ? ", shuffled" : "");
        if (m->shuffled) printf("seed      %" PRIu64 "\n", m->shuffle_seed);
        printf("samples   %" PRIu64 " (%" PRIu64 " inputs skipped at conversion)\n", m->count, m->skipped);
        printf("payload   %.1f MB in all, %.0f bytes per sample\n", (double)m->payload_bytes / 1e6, mean);
        printf("encoding ");
        for (int e = 0; e < MOCO_ENC_COUNT; e++)
            if (m->enc_counts[e]) printf(" %s: %" PRIu64, moco_encoding_name(e), m->enc_counts[e]);
        printf("\nsize      width %u-%u, height %u-%u\n", m->min_w, m->max_w, m->min_h, m->max_h);
        printf("classes   %u\n", m->nclasses);
        for (uint32_t i = 0; i < m->nclasses; i++)
            printf("  %5u  %-24s %" PRIu64 "\n", i, m->class_names[i], m->class_counts[i]);
        if (m->unlabelled) printf("  unlabelled  %" PRIu64 "\n", m->unlabelled);
        if (verify)
            printf("verified  %" PRIu64 " records, %" PRIu64 " bad; %" PRIu64 " label counts differ from the metadata\n", v.n, v.bad,
                   miscounted);
        if (verify && v.v1)
            printf("          %" PRIu64 " records of version 1 (written before 2026-12-05): their headers carry no CRC, so a "
                   "label moved to another class by damage shows only in the class counts (a dataset written again by `moco mkdb` has version 2)\n",
                   v.v1);
    }
    int bad = verify && (v.bad || miscounted || v.n != m->count);
    moco_db_destroy(&db);
    return bad ? 1 : 0;
}
