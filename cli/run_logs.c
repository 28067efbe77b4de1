/* run_logs.c: what moco run reads in its run directory, and removes from
 * it, once its processes have ended (cli/run.h): moco bench pipeline's
 * summary line, from sink.json and the loader's last statistics; the
 * removal of a benchmark's temporary log directory; whether the loader's
 * log says that no sample was ever sent (a trainer that failed before it
 * read any: its directory holds nothing of a run). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/run.h"
#include "formats/errors.h"
#include "formats/jsonw.h"

/* Print the benchmark's JSON line: the sink's summary and the loader's
 * last statistics, per stage. */
void run_bench_summary(const char *run_dir, long workers)
{
    char p[1200], sinkj[8192] = "", loadj[4096] = "", line[4096];
    snprintf(p, sizeof p, "%s/sink.json", run_dir);
    FILE *f = fopen(p, "r");
    if (f) { if (!fgets(sinkj, sizeof sinkj, f)) sinkj[0] = 0; fclose(f); }
    snprintf(p, sizeof p, "%s/loader.jsonl", run_dir);
    f = fopen(p, "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "{\"t\"", 4)) snprintf(loadj, sizeof loadj, "%s", line);
    if (f) fclose(f);
    sinkj[strcspn(sinkj, "\n")] = 0;
    loadj[strcspn(loadj, "\n")] = 0;
    double pps = 0, starved = 0;
    const char *x = strstr(sinkj, "\"pairs_per_s\":");
    if (x) pps = atof(x + 14);
    x = strstr(sinkj, "\"starved_pct\":");
    if (x) starved = atof(x + 14);
    moco_jw w; /* the last line; the sink's and the loader's lines nested as they are (null unless each parses) */
    moco_jw_begin(&w);
    moco_jw_str(&w, "bench", "pipeline");
    moco_jw_i64(&w, "workers", workers);
    moco_jw_num(&w, "pairs_per_s", pps, 1);
    moco_jw_num(&w, "pairs_per_s_per_worker", workers ? pps / (double)workers : 0, 1);
    moco_jw_num(&w, "starved_pct", starved, 1);
    moco_jw_json(&w, "sink", sinkj);
    moco_jw_json(&w, "loader", loadj);
    if (moco_jw_line(&w, stdout)) fprintf(stderr, "moco bench pipeline: %s\n", moco_errmsg());
}

/* Remove a benchmark's temporary log directory: its files, then itself. */
void run_remove_logs(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[4400];
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    if (d) closedir(d);
    rmdir(dir);
}

int run_nothing_sent(const char *run_dir)
{
    char p[1200], line[4096];
    snprintf(p, sizeof p, "%s/loader.jsonl", run_dir);
    FILE *f = fopen(p, "r");
    if (!f) return errno == ENOENT;
    int idle = 1; /* statistics lines only (an event, a failed record say, is a record of why), each "sent":0 */
    while (idle && fgets(line, sizeof line, f)) idle = !strncmp(line, "{\"t\":", 5) && strstr(line, ",\"sent\":0,") != NULL;
    fclose(f);
    return idle;
}
