/* cmd.c: the trainer's subcommands (trainer/cmd.h). */
#include "trainer/cmd.h"

#include "trainer/export.h"
#include "trainer/plot.h"
#include "trainer/stream.h"
#include "trainer/train.h"

const moco_command trainer_commands[] = {
    {"train", train_main, "train MoCo on the pairs the pipeline streams (moco run starts it all)"},
    {"knn", train_knn_main, "kNN accuracy of a checkpoint's encoder on labelled LMDBs"},
    {"embed", embed_main, "features of a dataset by a checkpoint's encoder: F.npy (+ F.labels.npy), or .safetensors"},
    {"export", export_main, "a checkpoint's encoder as a torchvision state_dict (safetensors)"},
    {"plot", plot_main, "draw a run's loss, accuracy, kNN and throughput curves as a PNG"},
    {"sink", trainer_sink_main, "a consumer that only counts and checks the pairs (pipeline tests, benchmark)"},
    {NULL, NULL, NULL},
};

const moco_command trainer_benches[] = {
    {"train", trainer_bench_main, "full MoCo training steps on synthetic data (trainer/bench.c)"},
    {NULL, NULL, NULL},
};
