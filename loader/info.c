/* info.c: `moco info DB`: describe a dataset from its metadata (no cursor
 * walk), or with --verify also read every record and check its header and
 * CRC. --json prints the same as one JSON object. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "formats/db.h"
#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/opts.h"
#include "loader/cmd.h"

/* JSON strings: the project's one writer (formats/jsonw.h) */
#define json_str moco_json_fput

typedef struct {
    uint64_t n, bad, expect;
    const char *path;
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
    }
    v->n++;
    return 0;
}

int loader_info_main(int argc, char **argv)
{
    int json = 0, verify = 0;
    const moco_opt opts[] = {
        {"json", MOCO_OPT_FLAG, &json, "print one JSON object", 0, 0, NULL},
        {"verify", MOCO_OPT_FLAG, &verify, "also read every record and check its header and CRC", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco info", "DB [options]",
                               "Print the sample count, classes with their counts, payload sizes, encodings and\n"
                               "image size range of a dataset made by `moco mkdb`.",
                               opts, 1, 1};
    char *pos[1];
    int np, rc = moco_opts_parse(&spec, argc, argv, pos, &np);
    if (rc) return rc == MOCO_OPTS_HELP ? 0 : 2;

    moco_db *db;
    if ((rc = moco_db_open(pos[0], &db))) {
        fprintf(stderr, "moco info: %s\n", moco_errmsg());
        return 1;
    }
    const moco_db_meta *m = moco_db_get_meta(db);
    verify_ctx v = {0, 0, 0, pos[0]};
    if (verify && (rc = moco_db_foreach(db, verify_one, &v))) {
        fprintf(stderr, "moco info: %s\n", moco_errmsg());
        moco_db_destroy(&db);
        return 1;
    }
    double mean = m->count ? (double)m->payload_bytes / (double)m->count : 0;
    if (json) {
        printf("{\"path\":");
        json_str(stdout, pos[0]);
        printf(",\"format_version\":%u,\"count\":%" PRIu64 ",\"num_classes\":%u,\"classes\":[", m->format_version,
               m->count, m->nclasses);
        for (uint32_t i = 0; i < m->nclasses; i++) {
            printf("%s{\"name\":", i ? "," : "");
            json_str(stdout, m->class_names[i]);
            printf(",\"count\":%" PRIu64 "}", m->class_counts[i]);
        }
        printf("],\"unlabelled\":%" PRIu64 ",\"payload_bytes\":%" PRIu64 ",\"mean_payload_bytes\":%.1f,\"encodings\":{",
               m->unlabelled, m->payload_bytes, mean);
        int first = 1;
        for (int e = 0; e < MOCO_ENC_COUNT; e++)
            if (m->enc_counts[e]) {
                printf("%s\"%s\":%" PRIu64, first ? "" : ",", moco_encoding_name(e), m->enc_counts[e]);
                first = 0;
            }
        printf("},\"width\":[%u,%u],\"height\":[%u,%u],\"skipped_at_conversion\":%" PRIu64 ",\"source\":", m->min_w,
               m->max_w, m->min_h, m->max_h, m->skipped);
        json_str(stdout, m->source);
        printf(",\"source_format\":");
        json_str(stdout, m->source_format);
        if (m->shuffled) printf(",\"shuffle_seed\":%" PRIu64, m->shuffle_seed);
        if (verify) printf(",\"verified\":%" PRIu64 ",\"bad_records\":%" PRIu64, v.n, v.bad);
        printf("}\n");
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
        if (verify) printf("verified  %" PRIu64 " records, %" PRIu64 " bad\n", v.n, v.bad);
    }
    int bad = verify && (v.bad || v.n != m->count);
    moco_db_destroy(&db);
    return bad ? 1 : 0;
}
