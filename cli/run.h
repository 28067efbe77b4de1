/* run.h: `moco run`, the pipeline supervisor (cli/run.c). */
#ifndef CLI_RUN_H
#define CLI_RUN_H

#include "formats/opts.h"

int cli_run_main(int argc, char **argv);
int cli_bench_pipeline_main(int argc, char **argv); /* moco bench pipeline */
int cli_lincls_main(int argc, char **argv);         /* moco lincls: a pipeline into the linear evaluation */
int cli_keygen_main(int argc, char **argv);         /* moco keygen (cli/keygen.c) */

/* cli/run_logs.c, for cli/run.c: moco bench pipeline's JSON line (sink.json and the loader's last statistics in
 * run_dir); the removal of its temporary log directory; 1 when run_dir/loader.jsonl is missing or holds statistics
 * lines alone, each of "sent":0 (no consumer got a sample), else 0. */
void run_bench_summary(const char *run_dir, long workers);
void run_remove_logs(const char *dir);
int run_nothing_sent(const char *run_dir);

/* The commands of cli/ (the supervisor and what spans processes), and its benchmark. */
extern const moco_command cli_commands[], cli_benches[];

#endif
