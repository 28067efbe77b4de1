/* sink.c: `moco sink`, a consumer that only counts and checks what the
 * pipeline delivers: per epoch, every index at most once (the stream drops
 * duplicates; the sink re-checks), the count against the loader's
 * EPOCH_END, view sizes consistent (every view as high and as wide as the
 * first; 1 or 3 channels, since grey inputs stay one channel by design and
 * the trainer replicates it; the summary counts each). It is the pipeline's benchmark consumer
 * (`--delay-ms` makes it a slow one, `--pause-at` one that stops reading a
 * while, as the trainer does to evaluate) and the tests' witness
 * (`--index-log`). */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/pipeline.h"
#include "formats/opts.h"
#include "formats/record.h"
#include "formats/replace.h"
#include "trainer/stream.h"

static volatile sig_atomic_t stop_flag;
static void on_signal(int s) { (void)s; stop_flag = 1; }

/* A refusal, also in the --log (sink.jsonl of a run directory, which is
 * read afterwards; moco run prints the sink's stderr only):
 * {"t":T,"event":"failed","error":MSG}. */
static void log_failure(FILE *stats, const char *path, double t, const char *msg, int *warned)
{
    if (!stats) return;
    moco_jw j;
    moco_jw_begin(&j);
    moco_jw_num(&j, "t", t, 3);
    moco_jw_str(&j, "event", "failed");
    moco_jw_str(&j, "error", msg);
    moco_jw_log(&j, stats, "moco sink", path, warned);
}

/* Read "index" lines into a bitmap of count bits (stream.h). */
int sink_load_indices(const char *path, uint64_t count, uint8_t **bm)
{
    FILE *f = moco_fopen_regular(path); /* a FIFO is refused, not waited on; the message names path */
    if (!f) return MOCO_EIO;
    *bm = calloc((size_t)((count + 7) / 8), 1);
    unsigned long long i;
    uint64_t nread = 0;
    int rc = 0, got = EOF;
    while (*bm && (got = fscanf(f, "%llu", &i)) == 1) {
        if (i >= count) { rc = moco_err(MOCO_EINVAL, "%s: index %llu >= --count %" PRIu64, path, i, count); break; }
        (*bm)[i >> 3] |= (uint8_t)(1u << (i & 7));
        nread++;
    }
    /* a damaged file is refused, not read up to the damage (it was: "1 2 x 3" gave 1 and 2) */
    if (!rc && *bm && ferror(f)) rc = moco_err(MOCO_EIO, "%s: read error after %" PRIu64 " indices", path, nread);
    else if (!rc && *bm && got != EOF)
        rc = moco_err(MOCO_EINVAL, "%s: after %" PRIu64 " indices, a word that is not an index (decimal numbers separated by "
                      "white space)", path, nread);
    fclose(f);
    if (!*bm) return moco_err(MOCO_ENOMEM, "out of memory");
    return rc;
}

int trainer_sink_main(int argc, char **argv)
{
    int insecure = 0;
    const char *keys = NULL;
    const char *bind_ep = NULL, *ctl_ep = NULL, *index_log = NULL, *resume_file = NULL, *json_out = NULL, *stats_path = NULL;
    long delay_ms = 0, resume_epoch = -1, stop_after = 0, quiet = 0, pause_at = 0;
    uint64_t count = 0;
    double timeout = 60, seconds = 0, warmup = 0, pause_s = 0;
    int q = 0, pause_silent = 0;
    const moco_opt opts[] = {
        {"bind", MOCO_OPT_STR, &bind_ep, "endpoint the workers push pairs to (bound here; none: the loader serves them on --connect)", 0, 0, NULL},
        {"keys", MOCO_OPT_STR, &keys, "key directory (moco keygen): CURVE on tcp endpoints", 0, 0, NULL},
        {"insecure", MOCO_OPT_FLAG, &insecure, "allow tcp endpoints without --keys", 0, 0, NULL},
        {"connect", MOCO_OPT_STR, &ctl_ep, "the loader's control endpoint", 0, 0, NULL},
        {"count", MOCO_OPT_U64, &count, "dataset size: check that every epoch delivers it all", 0, (double)MOCO_COUNT_MAX, NULL},
        {"delay-ms", MOCO_OPT_INT, &delay_ms, "sleep this long per pair (a slow consumer)", 0, 100000, NULL},
        {"index-log", MOCO_OPT_STR, &index_log, "write 'epoch index' of every pair received here", 0, 0, NULL},
        {"resume-epoch", MOCO_OPT_INT, &resume_epoch, "resume this epoch (with --resume-indices)", 0, 1e9, NULL},
        {"resume-indices", MOCO_OPT_STR, &resume_file, "file of indices of --resume-epoch already delivered", 0, 0, NULL},
        {"pause-at", MOCO_OPT_INT, &pause_at, "after this many pairs, stop reading for --pause-s, saying BUSY (as `moco train` "
                                             "does while it evaluates)", 0, 1e12, NULL},
        {"pause-s", MOCO_OPT_DOUBLE, &pause_s, "seconds of the --pause-at pause", 0, 1e6, NULL},
        {"pause-silent", MOCO_OPT_FLAG, &pause_silent, "pause without a word (a test of the loader's re-issue)", 0, 0, NULL},
        {"stop-after", MOCO_OPT_INT, &stop_after, "exit (status 3) after this many pairs, as if killed", 0, 1e12, NULL},
        {"loader-timeout", MOCO_OPT_DOUBLE, &timeout, "seconds of loader silence that end the run with an error", 0.5, 1e6, NULL},
        {"seconds", MOCO_OPT_DOUBLE, &seconds, "stop after this long from the first pair (0: at the end of the stream)", 0, 1e9, NULL},
        {"warmup", MOCO_OPT_DOUBLE, &warmup, "pairs of this many seconds after the first are not counted in pairs_per_s; "
                                             "with --seconds, the run lasts warmup + seconds", 0, 1e6, NULL},
        {"log", MOCO_OPT_STR, &stats_path, "append a JSON line of statistics here once a second", 0, 0, NULL},
        {"json", MOCO_OPT_STR, &json_out, "also write the final JSON summary to this file", 0, 0, NULL},
        {"quiet", MOCO_OPT_FLAG, &q, "no progress on stderr", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco sink", "--connect ENDPOINT [--bind ENDPOINT] [options]",
                               "Consume the pipeline's pairs, count and check them, and print a JSON summary as the last line.",
                               opts, 0, 0, "connect"};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    quiet = q;
    if ((resume_epoch >= 0) != (resume_file != NULL) || (resume_file && !count)) {
        fprintf(stderr, "moco sink: --resume-epoch, --resume-indices and --count go together\n");
        return 2;
    }
    uint8_t *bm = NULL;
    if (resume_file && (rc = sink_load_indices(resume_file, count, &bm))) {
        fprintf(stderr, "moco sink: %s\n", moco_errmsg());
        return 2;
    }
    FILE *log = index_log ? fopen(index_log, "w") : NULL, *stats = stats_path ? fopen(stats_path, "a") : NULL;
    int stats_warned = 0;
    if (stats_path && !stats) {
        fprintf(stderr, "moco sink: cannot write %s\n", stats_path);
        free(bm);
        if (log) fclose(log);
        return 1;
    }
    if (index_log && !log) {
        fprintf(stderr, "moco sink: cannot write %s\n", index_log);
        free(bm);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    stream_cfg cfg = {.pairs_ep = bind_ep, .ctl_ep = ctl_ep, .keys = keys, .insecure = insecure, .resume_epoch = resume_epoch >= 0 ? (uint32_t)resume_epoch : STREAM_NO_EPOCH,
                      .resume_bitmap = bm, .count = count, .loader_timeout = timeout};
    trainer_stream *s;
    if ((rc = stream_open(&cfg, &s))) {
        fprintf(stderr, "moco sink: %s\n", moco_errmsg());
        free(bm);
        if (log) fclose(log);
        return 1;
    }
    uint64_t total = 0, in_epoch = 0, resumed = 0, bad = 0, bytes = 0, failed = 0, grey = 0, colour = 0;
    uint64_t total0 = 0, bytes0 = 0; /* counted before the warm-up ended */
    if (bm)
        for (uint64_t i = 0; i < count; i++) resumed += bm[i >> 3] >> (i & 7) & 1;
    uint32_t epochs = 0, h = 0, w = 0, c = 0;
    double t0 = moco_now_s(), t_first = 0, t_meas = 0, last = t0, last_stat = t0, last_wait = 0;
    uint64_t last_total = 0;
    int status = 0;
    /* the summary's per_epoch list: the first SINK_EPOCHS_SHOWN epochs (then a count) */
    enum { SINK_EPOCHS_SHOWN = 64 };
    struct { uint32_t epoch, failed; uint64_t pairs; int ok; } per_epoch[SINK_EPOCHS_SHOWN];
    uint32_t nper = 0;
    while (!stop_flag) {
        stream_event ev;
        rc = stream_next(s, 250, &ev);
        if (!rc && ev.kind == STREAM_NONE) { /* nothing yet */
            if (seconds > 0 && t_first && moco_now_s() - t_first >= warmup + seconds) break;
            continue;
        }
        if (rc) {
            fprintf(stderr, "\nmoco sink: %s\n", moco_errmsg());
            log_failure(stats, stats_path, moco_now_s() - t0, moco_errmsg(), &stats_warned);
            status = 1;
            break;
        }
        if (ev.kind == STREAM_PAIR) {
            if (!t_first) t_first = moco_now_s();
            if (!h) { h = ev.pair.height; w = ev.pair.width; c = ev.pair.channels; }
            if (ev.pair.height != h || ev.pair.width != w || (ev.pair.channels != 1 && ev.pair.channels != 3)) bad++;
            grey += ev.pair.channels == 1;
            colour += ev.pair.channels == 3;
            total++;
            in_epoch++;
            bytes += 2 * moco_wire_pair_view_bytes(&ev.pair);
            if (log) fprintf(log, "%u %" PRIu64 "\n", ev.pair.epoch, ev.pair.index);
            if (delay_ms) usleep((useconds_t)delay_ms * 1000);
            if (pause_at && (long)total == pause_at)
                for (double tp = moco_now_s(); moco_now_s() - tp < pause_s;) {
                    if (!pause_silent) stream_keepalive(s);
                    usleep(20000);
                }
            if (stop_after && (long)total >= stop_after) {
                stream_destroy(&s);
                if (log) fclose(log);
                if (stats) fclose(stats);
                free(bm);
                fprintf(stderr, "moco sink: stopping after %" PRIu64 " pairs (--stop-after)\n", total);
                return 3;
            }
        } else if (ev.kind == STREAM_EPOCH_END) {
            uint64_t here = in_epoch + (epochs == 0 ? resumed : 0);
            int ok = here == ev.delivered && (!count || ev.delivered + ev.nfailed == count);
            if (!ok) {
                char why[200];
                snprintf(why, sizeof why, "epoch %u: received %" PRIu64 ", loader delivered %" PRIu64 ", failed %u, count %" PRIu64,
                         ev.epoch, here, ev.delivered, ev.nfailed, count);
                fprintf(stderr, "\nmoco sink: %s\n", why);
                log_failure(stats, stats_path, moco_now_s() - t0, why, &stats_warned);
                status = 1;
            }
            for (uint32_t j = 0; j < ev.nfailed; j++)
                fprintf(stderr, "moco sink: epoch %u: record %" PRIu64 " could not be decoded\n", ev.epoch, moco_get_le64(ev.failed + 8 * j));
            failed += ev.nfailed;
            if (nper < SINK_EPOCHS_SHOWN) {
                per_epoch[nper].epoch = ev.epoch;
                per_epoch[nper].failed = ev.nfailed;
                per_epoch[nper].pairs = here;
                per_epoch[nper].ok = ok;
            }
            nper++;
            if (!quiet) fprintf(stderr, "%smoco sink: epoch %u: %" PRIu64 " pairs%s\n", isatty(2) ? "\n" : "", ev.epoch, here, ok ? "" : " (MISMATCH)");
            epochs++;
            in_epoch = 0;
        } else if (ev.kind == STREAM_END) {
            break;
        }
        double t = moco_now_s();
        if (t_first && !t_meas && t - t_first >= warmup) { /* the measurement starts */
            t_meas = warmup > 0 ? t : t_first;
            total0 = warmup > 0 ? total : 0;
            bytes0 = warmup > 0 ? bytes : 0;
        }
        if (seconds > 0 && t_first && t - t_first >= warmup + seconds) break;
        if (stats && t - last_stat >= 1.0) {
            stream_stats st;
            stream_get_stats(s, &st);
            moco_jw j;
            moco_jw_begin(&j);
            moco_jw_num(&j, "t", t - t0, 3);
            moco_jw_u64(&j, "pairs", total);
            moco_jw_num(&j, "pairs_per_s", (double)(total - last_total) / (t - last_stat), 1);
            moco_jw_num(&j, "starved_pct", 100 * (st.waited_s - last_wait) / (t - last_stat), 1);
            moco_jw_u64(&j, "duplicates", st.duplicates);
            moco_jw_u64(&j, "malformed", st.malformed);
            moco_jw_u64(&j, "epochs", epochs);
            moco_jw_log(&j, stats, "moco sink", stats_path, &stats_warned); /* written and flushed */
            last_stat = t;
            last_total = total;
            last_wait = st.waited_s;
        }
        if (!quiet && isatty(2) && t - last > 1) {
            stream_stats st;
            stream_get_stats(s, &st);
            fprintf(stderr, "\rsink: %" PRIu64 " pairs  %.0f pairs/s  starved %.0f%%   ", total, (double)total / (t - t0),
                    100 * st.waited_s / (t - t0));
            last = t;
        }
    }
    if (stop_flag) status = 1;
    double el = moco_now_s() - (t_meas ? t_meas : t_first ? t_first : t0);
    if (!t_meas) total0 = bytes0 = 0; /* ended within the warm-up: count it all */
    stream_stats st;
    stream_get_stats(s, &st);
    stream_destroy(&s);
    if (bad) {
        char why[200];
        snprintf(why, sizeof why, "%" PRIu64 " pairs had another view size than %ux%u, or channels other than 1 or 3", bad, h, w);
        fprintf(stderr, "moco sink: %s\n", why);
        log_failure(stats, stats_path, moco_now_s() - t0, why, &stats_warned);
        status = 1;
    }
    if (log) fclose(log);
    if (stats) fclose(stats);
    free(bm);
    moco_jw j;
    moco_jw_begin(&j);
    moco_jw_u64(&j, "pairs", total);
    moco_jw_u64(&j, "epochs", epochs);
    moco_jw_arr(&j, "per_epoch");
    for (uint32_t i = 0; i < nper && i < SINK_EPOCHS_SHOWN; i++) {
        moco_jw_obj(&j, NULL);
        moco_jw_u64(&j, "epoch", per_epoch[i].epoch);
        moco_jw_u64(&j, "pairs", per_epoch[i].pairs);
        moco_jw_u64(&j, "failed", per_epoch[i].failed);
        moco_jw_bool(&j, "ok", per_epoch[i].ok);
        moco_jw_close(&j);
    }
    moco_jw_close(&j);
    if (nper > SINK_EPOCHS_SHOWN) moco_jw_u64(&j, "per_epoch_omitted", nper - SINK_EPOCHS_SHOWN);
    moco_jw_u64(&j, "failed", failed);
    stream_stats_json(&j, &st);
    moco_jw_num(&j, "pairs_per_s", el > 0 ? (double)(total - total0) / el : 0, 1);
    moco_jw_num(&j, "mb_per_s", el > 0 ? (double)(bytes - bytes0) / el / 1e6 : 0, 1);
    moco_jw_num(&j, "starved_pct", 100 * st.waited_s / (moco_now_s() - t0), 1);
    moco_jw_arr(&j, "view");
    moco_jw_u64(&j, NULL, h);
    moco_jw_u64(&j, NULL, w);
    moco_jw_u64(&j, NULL, c);
    moco_jw_close(&j);
    moco_jw_obj(&j, "channels"); /* pairs by channels of their views: grey inputs stay one channel */
    moco_jw_u64(&j, "1", grey);
    moco_jw_u64(&j, "3", colour);
    moco_jw_close(&j);
    moco_jw_g(&j, "warmup_s", warmup, 0);
    moco_jw_bool(&j, "ok", !status);
    const char *json = moco_jw_end(&j);
    if (!json) {
        fprintf(stderr, "moco sink: out of memory for the summary\n");
        moco_jw_free(&j);
        return 1;
    }
    printf("%s\n", json);
    if (json_out) { /* whole or not at all: a temporary file, checked writes, fsync, rename */
        size_t n = strlen(json);
        char *line = malloc(n + 2);
        int rc = line ? 0 : moco_err(MOCO_ENOMEM, "out of memory for %s", json_out);
        if (line) memcpy(line, json, n), line[n] = '\n', line[n + 1] = 0;
        if (rc || (rc = moco_write_replace(json_out, line, n + 1))) {
            fprintf(stderr, "moco sink: %s\n", moco_errmsg());
            status = 1;
        }
        free(line);
    }
    moco_jw_free(&j);
    return status;
}
