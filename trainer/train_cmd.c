/* train_cmd.c: `moco train` and `moco knn` on the command line: the
 * presets (the official recipes, the one table of them), the flags into a
 * train_cfg (train_parse_args, which `moco run` also asks for a preset's
 * recipe and epochs), the ranks started by mpirun, the stop on SIGINT /
 * SIGTERM / SIGUSR1 with the command that resumes (exit 130). The training
 * itself is train.c's train_run. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vips/vips.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/opts.h"
#include "formats/pipeline.h"
#include "trainer/dist.h"
#include "trainer/engine/par.h"
#include "trainer/engine/resnet.h"
#include "trainer/engine/tune.h"
#include "trainer/evalmodel.h"
#include "trainer/train.h"

/* main_moco.py's long names of --lr and --wd, given instead of them */
static int seen_alias(const moco_optspec *spec, const char *flag)
{
    return (!strcmp(flag, "lr") && moco_opts_seen(spec, "learning-rate")) || (!strcmp(flag, "wd") && moco_opts_seen(spec, "weight-decay"));
}

/* Presets: the official recipes, the one table of them (moco run asks
 * train_parse_args for the preset's recipe and epochs). Applied before the
 * user's flags. */
static void preset(train_cfg *c, const char *name, const moco_optspec *spec)
{
#define SET(flag, field, v) if (!moco_opts_seen(spec, flag) && !seen_alias(spec, flag)) c->field = v
    c->preset = name;
    if (!strcmp(name, "moco-v1")) { /* main_moco.py's defaults */
        c->recipe = "v1";
        SET("lr", lr, 0.03); SET("moco-t", T, 0.07); SET("moco-m", m, 0.999); SET("moco-k", K, 65536); SET("epochs", epochs, 200);
    } else if (!strcmp(name, "moco-v2")) { /* --mlp --moco-t 0.2 --aug-plus --cos */
        c->recipe = "v2";
        SET("lr", lr, 0.03); SET("moco-t", T, 0.2); SET("mlp", mlp, 1); SET("cos", cos, 1); SET("moco-m", m, 0.999);
        SET("moco-k", K, 65536); SET("epochs", epochs, 200);
    } else if (!strcmp(name, "cifar")) { /* the official CIFAR-10 demo */
        c->recipe = "cifar";
        SET("arch", arch, "resnet18-cifar"); SET("batch-size", batch, 512); SET("lr", lr, 0.06); SET("wd", wd, 5e-4);
        SET("moco-k", K, 4096); SET("moco-m", m, 0.99); SET("moco-t", T, 0.1); SET("cos", cos, 1); SET("bn-splits", bn_splits, 8);
        SET("epochs", epochs, 200); SET("size", size, 32); SET("init", init, RN_INIT_DEMO);
    }
#undef SET
}

int train_parse_args(int argc, char **argv, train_cfg *out)
{
    train_cfg c = {.arch = "resnet50", .width = 64, .dim = 128, .K = 65536, .m = 0.999, .T = 0.07, .batch = 256, .lr = 0.03,
                   .momentum = 0.9, .wd = 1e-4, .epochs = TRAIN_EPOCHS, .bn_splits = 1, .size = 224, .knn_every = 1, .knn_k = 200,
                   .knn_t = 0.1, .log_every = 10, .keep = 3, .loader_timeout = 120, .threads = 2};
    long width = 64, dim = 128, K = 65536, batch = 256, epochs = TRAIN_EPOCHS, splits = 1, size = 224, warm = 0, knn_every = 1,
         knn_k = 200, log_every = 10, keep = 3, save_every = 0, start_epoch = 0, threads = 2;
    uint64_t seed = 0, count = 0;
    const char *schedule = "120,160", *presetname = NULL, *norm = "auto", *precision = "fp32", *kernels = "measure";
    const char *init = "torchvision";
    int aug_plus = 0;
    const moco_opt opts[] = {
        {"connect", MOCO_OPT_STR, &c.connect, "the loader's control endpoint", 0, 0, NULL},
        {"bind", MOCO_OPT_STR, &c.bind, "endpoint the workers push pairs to (none: the loader serves them on --connect, moco run --serve)", 0, 0, NULL},
        {"keys", MOCO_OPT_STR, &c.keys, "key directory (moco keygen): CURVE on tcp endpoints", 0, 0, NULL},
        {"insecure", MOCO_OPT_FLAG, &c.insecure, "allow tcp endpoints without --keys", 0, 0, NULL},
        {"out", MOCO_OPT_STR, &c.out, "run directory: metrics.jsonl, checkpoints", 0, 0, NULL},
        {"preset", MOCO_OPT_CHOICE, &presetname, "official recipe defaults (flags given override them)", 0, 0, "moco-v1|moco-v2|cifar"},
        {"arch|-a", MOCO_OPT_CHOICE, &c.arch, "encoder", 0, 0, "resnet18|resnet34|resnet50|resnet18-cifar|resnet50-cifar"},
        {"width", MOCO_OPT_INT, &width, "base width of the ResNet", 1, 1024, NULL},
        {"epochs", MOCO_OPT_INT, &epochs, "epochs in all", 1, TRAIN_MAX_EPOCHS, NULL},
        {"start-epoch", MOCO_OPT_INT, &start_epoch, "first epoch (without --resume)", 0, 1e6, NULL},
        {"batch-size|-b", MOCO_OPT_INT, &batch, "pairs per step", 2, 65536, NULL},
        {"lr", MOCO_OPT_DOUBLE, &c.lr, "initial learning rate", 0, 100, NULL},
        {"learning-rate", MOCO_OPT_DOUBLE, &c.lr, "the same as --lr (main_moco.py's long name)", 0, 100, NULL},
        {"momentum", MOCO_OPT_DOUBLE, &c.momentum, "SGD momentum", 0, 1, NULL},
        {"wd", MOCO_OPT_DOUBLE, &c.wd, "weight decay", 0, 1, NULL},
        {"weight-decay", MOCO_OPT_DOUBLE, &c.wd, "the same as --wd (main_moco.py's long name)", 0, 1, NULL},
        {"schedule", MOCO_OPT_STR, &schedule, "epochs at which the lr is multiplied by 0.1 (without --cos)", 0, 0, NULL},
        {"cos", MOCO_OPT_FLAG, &c.cos, "cosine learning-rate schedule", 0, 0, NULL},
        {"warmup-epochs", MOCO_OPT_INT, &warm, "linear warm-up of the lr over this many epochs", 0, 1e6, NULL},
        {"moco-dim", MOCO_OPT_INT, &dim, "feature dimension", 1, 65536, NULL},
        {"moco-k|--K", MOCO_OPT_INT, &K, "queue size (a multiple of the batch size)", 1, 1e8, NULL},
        {"moco-m|--m", MOCO_OPT_DOUBLE, &c.m, "key encoder momentum", 0, 1, NULL},
        {"moco-t|--T", MOCO_OPT_DOUBLE, &c.T, "softmax temperature", 1e-4, 100, NULL},
        {"mlp", MOCO_OPT_FLAG, &c.mlp, "MLP projection head (MoCo v2)", 0, 0, NULL},
        {"aug-plus", MOCO_OPT_FLAG, &aug_plus, "MoCo v2 augmentation (the workers' --recipe v2; informational here)", 0, 0, NULL},
        {"symmetric", MOCO_OPT_FLAG, &c.symmetric, "symmetric loss, both key sets enqueued", 0, 0, NULL},
        {"bn-splits", MOCO_OPT_INT, &splits, "BN statistics over this many sub-batches (shuffle BN on one process)", 1, 1024, NULL},
        {"size", MOCO_OPT_INT, &size, "view side the model takes (at most the workers' largest view)", 8, MOCO_VIEW_SIDE_MAX, NULL},
        {"normalize", MOCO_OPT_CHOICE, &norm, "mean/std of the inputs", 0, 0, "auto|cifar|imagenet|none"},
        {"init", MOCO_OPT_CHOICE, &init, "conv initialisation: torchvision (Kaiming-normal fan-out), demo (torchvision's, conv1 at "
                                          "PyTorch's default: the official CIFAR-10 demo, --preset cifar's), pytorch (PyTorch's Conv2d "
                                          "default in every conv)", 0, 0, "torchvision|demo|pytorch"},
        {"seed", MOCO_OPT_U64, &seed, "seed of weights, queue and key permutations", 0, 0, NULL},
        {"resume", MOCO_OPT_STR, &c.resume, "checkpoint (or run directory: its checkpoint_last) to resume from: model, optimiser, queue, stream position", 0, 0, NULL},
        {"overwrite", MOCO_OPT_FLAG, &c.overwrite, "--out may hold a run: start afresh (its metrics.jsonl and checkpoints are removed)", 0, 0, NULL},
        {"allow-schedule-change", MOCO_OPT_FLAG, &c.allow_schedule_change,
         "with --resume: accept --epochs, --lr, --cos, --schedule, --warmup-epochs, --batch-size other than the checkpoint's", 0, 0, NULL},
        {"count", MOCO_OPT_U64, &count, "samples per epoch (for the ETA and the lr schedule within an epoch)", 0, 0, NULL},
        {"knn-train", MOCO_OPT_STR, &c.knn_train, "labelled LMDB: kNN bank", 0, 0, NULL},
        {"knn-test", MOCO_OPT_STR, &c.knn_test, "labelled LMDB: kNN queries", 0, 0, NULL},
        {"knn-every", MOCO_OPT_INT, &knn_every, "kNN monitor every N epochs", 1, 1e6, NULL},
        {"knn-k", MOCO_OPT_INT, &knn_k, "neighbours", 1, 1e6, NULL},
        {"knn-t", MOCO_OPT_DOUBLE, &c.knn_t, "kNN temperature", 1e-4, 100, NULL},
        {"save-every", MOCO_OPT_INT, &save_every, "also checkpoint every N steps (0: only per epoch)", 0, 1e9, NULL},
        {"keep", MOCO_OPT_INT, &keep, "per-epoch checkpoints kept", 1, 1e6, NULL},
        {"log-every", MOCO_OPT_INT, &log_every, "steps per metrics record", 1, 1e9, NULL},
        {"threads", MOCO_OPT_INT, &threads, "compute threads", 1, 256, NULL},
        {"precision", MOCO_OPT_CHOICE, &precision, "fp32, or bf16: convolutions and linear layers take bf16 operands and accumulate in fp32 (oneDNN, AVX512_BF16); weights, SGD, BN, loss, queue stay fp32", 0, 0, "fp32|bf16"},
        {"kernels", MOCO_OPT_CHOICE, &kernels, "measure: each convolution pass on the kernel timed fastest here, kept in the wisdom file; rule: the fixed rule (nothing timed)", 0, 0, "measure|rule"},
        {"wisdom", MOCO_OPT_STR, &c.wisdom, "the wisdom file of --kernels measure (default $MOCO_WISDOM, else ~/.cache/moco/wisdom.jsonl)", 0, 0, NULL},
        {"loader-timeout", MOCO_OPT_DOUBLE, &c.loader_timeout, "seconds of loader silence that stop training", 1, 1e7, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco train", "--connect CTL [--bind PAIRS] --out RUN_DIR [options]",
                               "Train MoCo on pairs streamed by the pipeline (moco run starts it all). Flags follow the\n"
                               "official main_moco.py.",
                               opts, 0, 0, "connect out"};
    char *pos[1];
    int np, rc = moco_opts_parse(&spec, argc, argv, pos, &np);
    if (rc) return rc;
    c.width = (int)width; c.dim = (int)dim; c.K = (int)K; c.batch = (int)batch; c.epochs = (int)epochs;
    c.bn_splits = (int)splits; c.size = (int)size; c.warmup_epochs = (int)warm; c.knn_every = (int)knn_every;
    c.knn_k = (int)knn_k; c.log_every = (int)log_every; c.keep = (int)keep; c.save_every = (int)save_every;
    c.start_epoch = (int)start_epoch; c.seed = seed; c.count = count; c.threads = (int)threads;
    c.precision = strcmp(precision, "bf16") ? NN_FP32 : NN_BF16;
    c.kernels = strcmp(kernels, "rule") ? TUNE_MEASURE : TUNE_RULE;
    c.init = rn_init_parse(init);
    if (presetname) preset(&c, presetname, &spec); /* fills what the user did not give */
    if (aug_plus) c.recipe = "v2";
    if (!c.knn_train != !c.knn_test) {
        fprintf(stderr, "moco train: the kNN monitor needs both --knn-train and --knn-test\n");
        return MOCO_OPTS_USAGE;
    }
    if (train_parse_schedule(schedule, &c)) {
        fprintf(stderr, "moco train: %s\n", moco_errmsg());
        return MOCO_OPTS_USAGE;
    }
    if (c.K % (c.batch * (c.symmetric ? 2 : 1))) {
        fprintf(stderr, "moco train: --moco-k %d must be a multiple of the keys per step (%d: --batch-size %d%s)\n", c.K,
                c.batch * (c.symmetric ? 2 : 1), c.batch, c.symmetric ? " x 2, --symmetric" : "");
        return MOCO_OPTS_USAGE;
    }
    if (c.batch % c.bn_splits) {
        fprintf(stderr, "moco train: --batch-size %d must be a multiple of --bn-splits %d\n", c.batch, c.bn_splits);
        return MOCO_OPTS_USAGE;
    }
    evalmodel_norm(norm, c.size, c.mean, c.std);
    c.norm = evalmodel_norm_name(norm, c.size); /* the checkpoints' config says it: evaluation takes the same */
    *out = c;
    return 0;
}

/* The command line that continues this run: ours, without --resume,
 * --overwrite and --start-epoch, plus --resume OUT. */
static void print_resume(int argc, char **argv, const char *out, int ranks)
{
    static const char *const drop[] = {"--resume", "--start-epoch", NULL}, *const flags[] = {"--overwrite", NULL};
    if (ranks > 1) /* a rank's own command line holds no launcher: the checkpoint wants the same number of ranks */
        fprintf(stderr, "moco train: resume with (on %d ranks, with the launcher's other flags as before):\n mpirun -np %d", ranks,
                ranks);
    else
        fprintf(stderr, "moco train: resume with:\n ");
    moco_print_command(stderr, argc, argv, drop, flags);
    fputs(" --resume", stderr);
    moco_print_shell_arg(stderr, out);
    fputc('\n', stderr);
}

int train_main(int argc, char **argv)
{
    train_cfg c;
    int rc = train_parse_args(argc, argv, &c);
    if (rc) return moco_opts_status(rc);
    dist *d = NULL; /* started by mpirun: one rank of the job */
    if ((rc = dist_init(&argc, &argv, &d))) {
        fprintf(stderr, "moco train: %s\n", moco_errmsg());
        return 1;
    }
    c.dist = dist_size(d) > 1 ? d : NULL;
    int rank = dist_rank(d);
    par_set_threads(c.threads); /* chunks of images in parallel, OpenBLAS at one thread per call */
    if (VIPS_INIT("moco")) return 1;
    vips_cache_set_max(0);
    vips_concurrency_set(1);
    train_catch_signals();
    rc = train_run(&c);
    char who[32] = "";
    if (c.dist) snprintf(who, sizeof who, "rank %d of %d: ", rank, dist_size(d));
    if (rc && !(rank && rc == MOCO_EINTR)) fprintf(stderr, "\nmoco train: %s%s\n", who, moco_errmsg());
    else if (!rc && !rank) fprintf(stderr, "\nmoco train: done; checkpoints and metrics.jsonl in %s\n", c.out);
    if (rc && rc != MOCO_EINTR && c.dist) { /* one rank cannot go on: end the job now, not at the next collective */
        fflush(NULL);
        dist_abort(d, 1);
    }
    if (rc == MOCO_EINTR && !rank) {
        /* before dist_finalize, whose fence holds the other ranks: once one of
         * them exits 130, mpirun ends the job, rank 0 included, and the
         * command could go unprinted (cli_mpi 2c saw it) */
        char last[4200];
        snprintf(last, sizeof last, "%s/checkpoint_last.safetensors", c.out);
        if (!getenv("MOCO_RUN_SUPERVISED") && access(last, R_OK) == 0) print_resume(argc, argv, c.out, dist_size(d));
        fflush(NULL);
    }
    dist_finalize(&d);
    if (rc != MOCO_EINTR) return rc ? 1 : 0;
    /* 130, as a shell reports SIGINT; exit here because cli/moco.c turns
     * command statuses above 125 into 1 */
    fflush(NULL);
    exit(130);
}

int train_knn_main(int argc, char **argv)
{
    const char *trdb = NULL, *tedb = NULL;
    long k = 200;
    double t = 0.1;
    evalmodel_flags ef;
    moco_opt opts[EVALMODEL_NOPTS + 6];
    int n = evalmodel_opts(&ef, opts, "batch");
    opts[n++] = (moco_opt){"train", MOCO_OPT_STR, &trdb, "labelled LMDB: the feature bank", 0, 0, NULL};
    opts[n++] = (moco_opt){"test", MOCO_OPT_STR, &tedb, "labelled LMDB: the queries", 0, 0, NULL};
    opts[n++] = (moco_opt){"k", MOCO_OPT_INT, &k, "neighbours", 1, 1e6, NULL};
    opts[n++] = (moco_opt){"t", MOCO_OPT_DOUBLE, &t, "temperature of the vote weights exp(sim / t)", 1e-4, 100, NULL};
    opts[n] = (moco_opt){NULL, 0, NULL, NULL, 0, 0, NULL};
    const moco_optspec spec = {"moco knn", "--ckpt CKPT --train DB --test DB [options]",
                               "Weighted kNN accuracy (the MoCo CIFAR-10 demo's monitor) of a checkpoint's query encoder.",
                               opts, 0, 0, NULL};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    if (!(ef.ckpt || ef.init_seed >= 0) || !trdb || !tedb) {
        fprintf(stderr, "moco knn: --ckpt (or --random-init), --train and --test are required\n");
        return 2;
    }
    resnet *m = NULL;
    float mean[3], std[3];
    double top1 = 0, t0 = moco_now_s();
    int k_used = (int)k;
    if ((rc = evalmodel_open(&ef, &m, mean, std)) ||
        (rc = train_knn(m, trdb, tedb, (int)k, (float)t, mean, std, NULL, &top1, &k_used))) {
        fprintf(stderr, "moco knn: %s\n", moco_errmsg());
        rn_destroy(&m);
        return 1;
    }
    rn_destroy(&m);
    if (ef.note[0]) fprintf(stderr, "moco knn: %s\n", ef.note);
    if (ef.pins && !ef.pinned && !ef.note[0]) /* the note above says it for a bf16 checkpoint run in fp32 */
        fprintf(stderr, "moco knn: the kernels saved in %s were chosen for another batch, thread count or precision: the fixed "
                        "rule ran, and the figure may differ from the training monitor's by an image or so (--batch, --threads "
                        "and --precision as in training take them)\n", ef.ckpt);
    if (k_used < k) /* the official knn_predict's topk would raise; the whole bank votes here */
        fprintf(stderr, "moco knn: --k %ld exceeds the %d samples of --train %s: k %d used\n", k, k_used, trdb, k_used);
    char what[64];
    if (!ef.ckpt) snprintf(what, sizeof what, "random-init %ld", ef.init_seed);
    moco_jw w; /* the path is the user's: escaped */
    moco_jw_begin(&w);
    moco_jw_num(&w, "knn_top1", top1, 2);
    moco_jw_i64(&w, "k", k_used); /* the effective k */
    moco_jw_num(&w, "t", t, 4);
    moco_jw_str(&w, "ckpt", ef.ckpt ? ef.ckpt : what);
    moco_jw_str(&w, "precision", ef.bf16 ? "bf16" : "fp32");
    moco_jw_str(&w, "kernels", ef.kernels);
    if (!strcmp(ef.kernels, "checkpoint")) moco_jw_i64(&w, "kernels_from_ckpt", ef.pinned); /* choices (shape and pass) that ran; 0: the rule */
    moco_jw_num(&w, "seconds", moco_now_s() - t0, 1);
    moco_jw_line(&w, stdout);
    return 0;
}
