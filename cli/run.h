/* run.h: `moco run`, the pipeline supervisor (cli/run.c). */
#ifndef CLI_RUN_H
#define CLI_RUN_H

#include "formats/opts.h"

int cli_run_main(int argc, char **argv);
int cli_bench_pipeline_main(int argc, char **argv); /* moco bench pipeline */
int cli_lincls_main(int argc, char **argv);         /* moco lincls: a pipeline into the linear evaluation */
int cli_keygen_main(int argc, char **argv);         /* moco keygen (cli/keygen.c) */

/* The commands of cli/ (the supervisor and what spans processes), and its benchmark. */
extern const moco_command cli_commands[], cli_benches[];

#endif
