/* run.h: `moco run`, the pipeline supervisor (cli/run.c). */
#ifndef CLI_RUN_H
#define CLI_RUN_H

int cli_run_main(int argc, char **argv);
int cli_bench_pipeline_main(int argc, char **argv); /* moco bench pipeline */
int cli_lincls_main(int argc, char **argv);         /* moco lincls: a pipeline into the linear evaluation */

#endif
