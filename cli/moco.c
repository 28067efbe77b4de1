/* moco.c: main() of bin/moco, a git-style front end that dispatches to the
 * subcommands of the three processes (loader/, augment/, trainer/). It is the
 * only code that includes more than one of them, and the only place that
 * exits. Exit status: 0 success, 1 failure, 2 bad usage. */
#include <stdio.h>
#include <string.h>

#include "augment/cmd.h"
#include "augment/pipe.h"
#include "cli/run.h"
#include "loader/cmd.h"
#include "trainer/cmd.h"
#include "trainer/export.h"
#include "trainer/lincls.h"
#include "trainer/plot.h"
#include "trainer/stream.h"
#include "trainer/train.h"

typedef struct {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *about;
} command;

static int bench_main(int argc, char **argv);
int cli_keygen_main(int argc, char **argv); /* cli/keygen.c */

static const command commands[] = {
    {"mkdb", loader_mkdb_main, "pack an image folder, CIFAR-10 or IDX files into a dataset LMDB"},
    {"info", loader_info_main, "describe a dataset LMDB (count, classes, sizes, encodings)"},
    {"loader", loader_stream_main, "stream a dataset LMDB to augmentation workers, exactly once per epoch"},
    MOCO_AUGMENT_COMMANDS
    MOCO_TRAINER_COMMANDS
    {"train", train_main, "train MoCo on the pairs the pipeline streams (moco run starts it all)"},
    {"knn", train_knn_main, "kNN accuracy of a checkpoint's encoder on labelled LMDBs"},
    {"lincls", cli_lincls_main, "linear evaluation: a classifier on a checkpoint's frozen features"},
    {"embed", embed_main, "features of a dataset by a checkpoint's encoder, as safetensors"},
    {"export", export_main, "a checkpoint's encoder as a torchvision state_dict (safetensors)"},
    {"plot", plot_main, "draw a run's loss, accuracy, kNN and throughput curves as a PNG"},
    {"sink", trainer_sink_main, "a consumer that only counts and checks the pairs (pipeline tests, benchmark)"},
    {"keygen", cli_keygen_main, "create the key directory of a deployment (CURVE keys and the allow list)"},
    {"run", cli_run_main, "start a whole pipeline on a dataset: loader, N workers, consumer; supervise it"},
    {"bench", bench_main, "benchmarks: moco bench WHAT (see moco bench --help)"},
    {NULL, NULL, NULL},
};

/* `moco bench WHAT`: the benchmarks, one per process kind. */
static const command benches[] = {
    {"pipeline", cli_bench_pipeline_main, "the whole pipeline into the counting sink: pairs/s, starved %, per stage"},
    MOCO_AUGMENT_BENCHES
    MOCO_TRAINER_BENCHES
    {NULL, NULL, NULL},
};

static int bench_main(int argc, char **argv)
{
    if (argc >= 2)
        for (const command *c = benches; c->name; c++)
            if (!strcmp(argv[1], c->name)) return c->main(argc - 1, argv + 1);
    int help = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    FILE *f = help ? stdout : stderr;
    if (argc >= 2 && !help) fprintf(f, "moco bench: unknown benchmark '%s'\n", argv[1]);
    fprintf(f, "usage: moco bench WHAT [options]   (moco bench WHAT --help for its flags)\n\nbenchmarks:\n");
    for (const command *c = benches; c->name; c++) fprintf(f, "  %-9s %s\n", c->name, c->about);
    return help ? 0 : 2;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: moco COMMAND [options]   (moco COMMAND --help for its flags)\n\n"
               "MoCo self-supervised training, as processes joined by ZeroMQ.\n\ncommands:\n");
    for (const command *c = commands; c->name; c++) fprintf(f, "  %-9s %s\n", c->name, c->about);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    /* `moco augment` is the pipeline worker (augment/pipe_main.c), also for
     * --help; only `moco augment --pull ...` is the standalone worker that
     * `moco bench augment` starts (augment/worker.c) */
    if (!strcmp(argv[1], "augment")) {
        for (int i = 2; i < argc; i++)
            if (!strncmp(argv[i], "--pull", 6)) return augment_worker_main(argc - 1, argv + 1);
        return augment_pipe_main(argc - 1, argv + 1);
    }
    for (const command *c = commands; c->name; c++)
        if (!strcmp(argv[1], c->name)) {
            int rc = c->main(argc - 1, argv + 1);
            return rc == 130 ? 130 : rc < 0 || rc > 125 ? 1 : rc; /* 130: stopped by a signal, resumable */
        }
    fprintf(stderr, "moco: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
