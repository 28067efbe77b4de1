/* bench.c: `moco bench train`: full MoCo steps (moco.h) on synthetic data
 * in one process. Prints each step's time, a summary, and as its last line
 * one JSON object with pairs_per_s, step_ms, gflop_per_s (model FLOPs done:
 * f_q forward + backward and f_k forward, per direction), peak_rss_mb, and
 * for shared machines cpu_ms_per_step and the best step (best_step_ms,
 * best_pairs_per_s).
 * tools/bench_pytorch_step.py times the same step in PyTorch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/opts.h"
#include "formats/rng.h"
#include "trainer/cmd.h"
#include "trainer/moco.h"
#include "trainer/par.h"

/* CPU seconds of the whole process (all threads): on a shared machine it
 * shows the work done, which wall time mixes with other processes' load. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Peak resident set of this process image in MB: VmHWM from /proc (it
 * starts afresh at exec, unlike getrusage's ru_maxrss, which keeps the
 * parent's high-water mark when the parent forked us from a big process). */
static double peak_rss_mb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    if (f) fclose(f);
    if (kb < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = (double)ru.ru_maxrss;
    }
    return kb / 1024.0;
}

int trainer_bench_main(int argc, char **argv)
{
    const char *arch = "resnet18-cifar";
    long width = 64, batch = 256, size = 32, steps = 5, warmup = 1, threads = 2, K = 4096, dim = 128, splits = 8;
    int mlp = 0, sym = 0;
    double m = 0.99, T = 0.1, lr = 0.06, wd = 5e-4;
    uint64_t seed = 1;
    const moco_opt opts[] = {
        {"arch", MOCO_OPT_CHOICE, &arch, "encoder", 0, 0, "resnet18|resnet34|resnet50|resnet18-cifar|resnet50-cifar"},
        {"width", MOCO_OPT_INT, &width, "base width (64 = torchvision)", 1, 1024, NULL},
        {"mlp", MOCO_OPT_FLAG, &mlp, "MLP head (MoCo v2)", 0, 0, NULL},
        {"dim", MOCO_OPT_INT, &dim, "output features", 1, 65536, NULL},
        {"batch-size", MOCO_OPT_INT, &batch, "pairs per step", 2, 65536, NULL},
        {"size", MOCO_OPT_INT, &size, "input height and width", 1, 4096, NULL},
        {"steps", MOCO_OPT_INT, &steps, "timed steps", 1, 1000000, NULL},
        {"warmup", MOCO_OPT_INT, &warmup, "untimed steps first", 0, 1000, NULL},
        {"threads", MOCO_OPT_INT, &threads, "compute threads", 1, 256, NULL},
        {"K", MOCO_OPT_INT, &K, "queue length", 1, 1 << 24, NULL},
        {"m", MOCO_OPT_DOUBLE, &m, "key encoder momentum", 0, 1, NULL},
        {"T", MOCO_OPT_DOUBLE, &T, "temperature", 1e-6, 1e6, NULL},
        {"bn-splits", MOCO_OPT_INT, &splits, "BN sub-batches (shuffle BN)", 1, 65536, NULL},
        {"symmetric", MOCO_OPT_FLAG, &sym, "symmetric loss (both directions)", 0, 0, NULL},
        {"lr", MOCO_OPT_DOUBLE, &lr, "learning rate", 0, 1e3, NULL},
        {"wd", MOCO_OPT_DOUBLE, &wd, "weight decay", 0, 1, NULL},
        {"seed", MOCO_OPT_U64, &seed, "seed of weights, data and permutations", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco bench train", "[options]",
                               "Time full MoCo training steps (key momentum update, shuffled key forward, query forward\n"
                               "and backward, InfoNCE against the queue, SGD) on synthetic images, in one process.\n"
                               "The last line is one JSON object.",
                               opts, 0, 0};
    char *pos[1];
    int np, rc = moco_opts_parse(&spec, argc, argv, pos, &np);
    if (rc) return rc == MOCO_OPTS_HELP ? 0 : 2;
    par_set_threads((int)threads);

    moco_cfg cfg = {{arch, (int)width, mlp, (int)dim, (int)splits, (int)batch, (int)size}, (int)K, (float)m, (float)T, sym,
                    (float)lr, 0.9f, (float)wd, seed};
    moco *mc;
    if ((rc = moco_new(&cfg, &mc))) {
        fprintf(stderr, "moco bench train: %s\n", moco_errmsg());
        return rc == MOCO_EINVAL ? 2 : 1;
    }
    size_t n = (size_t)batch * 3 * (size_t)size * (size_t)size;
    float *x = malloc(sizeof(float) * 2 * n);
    if (!x) {
        fprintf(stderr, "moco bench train: out of memory for the inputs\n");
        moco_destroy(&mc);
        return 1;
    }
    moco_rng r;
    moco_rng_init(&r, seed, 4, 0, 0);
    for (size_t i = 0; i < 2 * n; i++) x[i] = (float)(moco_rng_uniform(&r) * 4.0 - 2.0);
    double flop = 2.0 * moco_step_macs(mc);
    printf("moco bench train: %s width %ld%s, batch %ld, %ldx%ld, K %ld, dim %ld, bn splits %ld%s, %ld threads\n", arch,
           width, mlp ? " mlp" : "", batch, size, size, K, dim, splits, sym ? ", symmetric" : "", threads);
    printf("  %.1f M parameters, %.2f GFLOP per step, activations %.0f MB\n", (double)mc->q->nparams / 1e6, flop / 1e9,
           (double)rn_arena_bytes(mc->q) / 1048576.0);
    double t_all = 0, best = 1e30, c_all = 0;
    float loss = 0;
    for (long s = 0; s < warmup + steps; s++) {
        double t0 = moco_now_s(), c0 = cpu_s();
        if ((rc = moco_step(mc, x, x + n, NULL, (float)lr, &loss))) {
            fprintf(stderr, "moco bench train: %s\n", moco_errmsg());
            free(x);
            moco_destroy(&mc);
            return 1;
        }
        double dt = moco_now_s() - t0, dc = cpu_s() - c0;
        printf("  step %ld%s: %.1f ms, %.1f CPU ms, loss %.4f\n", s, s < warmup ? " (warm-up)" : "", dt * 1e3, dc * 1e3,
               (double)loss);
        fflush(stdout);
        if (s >= warmup) t_all += dt, c_all += dc, best = dt < best ? dt : best;
    }
    double step_s = t_all / (double)steps, rss = peak_rss_mb();
    printf("  mean %.1f ms/step (best %.1f), %.1f pairs/s, %.1f GFLOP/s, peak RSS %.0f MB; %.1f CPU ms/step\n", step_s * 1e3,
           best * 1e3, (double)batch / step_s, flop / step_s / 1e9, rss, c_all / (double)steps * 1e3);
    printf("{\"bench\":\"train\",\"arch\":\"%s\",\"width\":%ld,\"mlp\":%s,\"batch\":%ld,\"size\":%ld,\"K\":%ld,\"bn_splits\":%ld,"
           "\"symmetric\":%s,\"threads\":%ld,\"steps\":%ld,\"pairs_per_s\":%.2f,\"step_ms\":%.1f,\"gflop_per_s\":%.1f,"
           "\"peak_rss_mb\":%.0f,\"cpu_ms_per_step\":%.1f,\"best_step_ms\":%.1f,\"best_pairs_per_s\":%.2f,\"loss\":%.4f}\n",
           arch, width, mlp ? "true" : "false", batch, size, K, splits, sym ? "true" : "false", threads, steps,
           (double)batch / step_s, step_s * 1e3, flop / step_s / 1e9, rss, c_all / (double)steps * 1e3, best * 1e3,
           (double)batch / best, (double)loss);
    free(x);
    moco_destroy(&mc);
    return 0;
}
