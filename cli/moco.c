/* moco.c: main() of bin/moco, a git-style front end that dispatches to the
 * subcommands of the three processes (loader/, augment/, trainer/). It is the
 * only code that includes more than one of them, and the only place that
 * exits. Exit status: 0 success, 1 failure, 2 bad usage. */
#include <stdio.h>
#include <string.h>

#include "augment/cmd.h"
#include "cli/run.h"
#include "loader/cmd.h"
#include "trainer/cmd.h"
#include "trainer/engine/blascore.h"

static int bench_main(int argc, char **argv);

const moco_command cli_commands[] = {
    {"lincls", cli_lincls_main, "linear evaluation: a classifier on a checkpoint's frozen features"},
    {"keygen", cli_keygen_main, "create the key directory of a deployment (CURVE keys and the allow list)"},
    {"run", cli_run_main, "start a whole pipeline on a dataset: loader, N workers, consumer; supervise it"},
    {"bench", bench_main, "benchmarks: moco bench WHAT (see moco bench --help)"},
    {NULL, NULL, NULL},
};

const moco_command cli_benches[] = {
    {"pipeline", cli_bench_pipeline_main, "the whole pipeline into the counting sink: pairs/s, starved %, per stage"},
    {NULL, NULL, NULL},
};

/* Every command, and every benchmark, in the order `moco --help` lists them. */
static const moco_command *const command_tables[] = {loader_commands, augment_commands, trainer_commands, cli_commands, NULL};
static const moco_command *const bench_tables[] = {cli_benches, augment_benches, trainer_benches, NULL};

static const moco_command *find(const moco_command *const *tables, const char *name)
{
    for (int t = 0; tables[t]; t++)
        for (const moco_command *c = tables[t]; c->name; c++)
            if (!strcmp(c->name, name)) return c;
    return NULL;
}

static void list(FILE *f, const moco_command *const *tables)
{
    for (int t = 0; tables[t]; t++)
        for (const moco_command *c = tables[t]; c->name; c++) fprintf(f, "  %-9s %s\n", c->name, c->about);
}

/* `moco bench WHAT`: the benchmarks, one per process kind. */
static int bench_main(int argc, char **argv)
{
    const moco_command *c = argc >= 2 ? find(bench_tables, argv[1]) : NULL;
#ifdef MOCO_SANITIZE
    if (c)
        fprintf(stderr, "moco bench: WARNING: this binary is a sanitizer build (-fsanitize=%s); its figures are not the "
                        "product's (`make bin/moco` relinks the release build)\n", MOCO_SANITIZE);
#endif
    if (c) return c->main(argc - 1, argv + 1);
    int help = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    FILE *f = help ? stdout : stderr;
    if (argc >= 2 && !help) fprintf(f, "moco bench: unknown benchmark '%s'\n", argv[1]);
    fprintf(f, "usage: moco bench WHAT [options]   (moco bench WHAT --help for its flags)\n\nbenchmarks:\n");
    list(f, bench_tables);
    return help ? 0 : 2;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: moco COMMAND [options]   (moco COMMAND --help for its flags)\n\n"
               "MoCo self-supervised training, as processes joined by ZeroMQ.\n\ncommands:\n");
    list(f, command_tables);
}

int main(int argc, char **argv)
{
    /* OpenBLAS chose its kernels when it loaded; where it fell back to a
     * lower instruction set than this CPU runs, start again with the right
     * set named (trainer/engine/blascore.h). If exec fails, go on as is. */
    blas_core_restart(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    const moco_command *c = find(command_tables, argv[1]);
    if (c) {
        int rc = c->main(argc - 1, argv + 1);
        return rc == 130 ? 130 : rc < 0 || rc > 125 ? 1 : rc; /* 130: stopped by a signal, resumable */
    }
    fprintf(stderr, "moco: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
