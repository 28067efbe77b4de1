/* bench.c: `moco bench train`: full MoCo steps (moco.h) on synthetic data,
 * in one process or, under `mpirun -np R`, data-parallel over R ranks
 * (trainer/dist.h; each rank --batch-size pairs, the global batch R times
 * that). Rank 0 prints each step's time, a summary, and as its last line
 * one JSON object (formats/jsonw.h) with pairs_per_s (global), step_ms,
 * gflop_per_s (model FLOPs done by all ranks: f_q forward + backward and
 * f_k forward, per direction), peak_rss_mb (summed over ranks), for shared
 * machines cpu_ms_per_step (all threads of all ranks) and the best step
 * (best_step_ms, best_pairs_per_s), and ranks, threads (per rank),
 * allreduce_wait_ms (per step, mean over ranks: time blocked waiting for
 * the gradient average that backward did not hide) and allreduce_share
 * (that wait over the step time).
 * tools/bench_pytorch_step.py times the same step in PyTorch;
 * tools/bench_mpi.sh compares 1 process x 2 threads with 2 ranks x 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/opts.h"
#include "formats/rng.h"
#include "trainer/cmd.h"
#include "trainer/dist.h"
#include "trainer/engine/blascore.h"
#include "trainer/engine/moco.h"
#include "trainer/engine/par.h"
#include "trainer/engine/peak.h"
#include "trainer/engine/tune.h"

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

/* The rule's algorithm of one pass of a convolution (what --kernels rule runs). */
static int rule_algo(const rn_conv_info *c, int precision)
{
    const int *s = c->shape;
    return precision == NN_BF16 ? NN_ALGO_BF16 : nn_conv_rule(s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
}

/* ms of the chosen and of the rule's algorithm over all convolutions, for
 * one step: two forwards (query, key) and one backward. Negative when the
 * times are unknown (--kernels rule times nothing). */
static void step_conv_ms(const resnet *m, double *chosen, double *rule)
{
    *chosen = *rule = 0;
    for (int i = 0; i < rn_conv_count(m); i++) {
        rn_conv_info c;
        rn_conv_get(m, i, &c);
        for (int p = 0; p < 2; p++) {
            if (c.algo[p] < 0) continue;
            double k = p ? 1 : 2, a = c.ms[p][c.algo[p]], r = c.ms[p][rule_algo(&c, m->cfg.precision)];
            if (a < 0 || r < 0) { *chosen = *rule = -1; return; }
            *chosen += k * a, *rule += k * r;
        }
    }
}

/* one table row's times, a column per algorithm ("-": not a candidate) */
static void ms_cells(const double *ms)
{
    for (int a = NN_ALGO_GEMM; a < NN_ALGO_COUNT; a++)
        if (ms[a] >= 0) printf(" %11.3f", ms[a]);
        else printf(" %11s", "-");
}

/* key: {algorithm: ms} of the candidates */
static void ms_json(moco_jw *w, const char *key, const double *ms)
{
    moco_jw_obj(w, key);
    for (int a = NN_ALGO_GEMM; a < NN_ALGO_COUNT; a++)
        if (ms[a] >= 0) moco_jw_num(w, nn_algo_name(a), ms[a], 3);
    moco_jw_close(w);
}

static void explain_kernels(const resnet *m, double seconds)
{
    printf("  kernels: --kernels %s; %s, %d threads, OpenBLAS kernels %s; wisdom %s (%.1f s to make the models)\n",
           tune_mode() == TUNE_MEASURE ? "measure" : "rule", tune_cpu()[0] ? tune_cpu() : "CPU not read", par_threads(), blas_core(),
           tune_mode() == TUNE_MEASURE ? tune_path() : "not used", seconds);
    printf("  %-28s %-22s %-5s %-11s", "convolution", "N x Ci x H x W > Co k/s", "pass", "choice");
    for (int a = NN_ALGO_GEMM; a < NN_ALGO_COUNT; a++) printf(" %11s", nn_algo_name(a));
    printf("  (ms per call; * measured now)\n");
    for (int i = 0; i < rn_conv_count(m); i++) {
        rn_conv_info c;
        rn_conv_get(m, i, &c);
        char shape[64], name[64];
        snprintf(shape, sizeof shape, "%dx%dx%dx%d > %d %d/%d", c.shape[0], c.shape[1], c.shape[2], c.shape[3], c.shape[4], c.shape[5], c.shape[6]);
        snprintf(name, sizeof name, "%.*s", (int)(strlen(c.name) > 7 ? strlen(c.name) - 7 : strlen(c.name)), c.name); /* less ".weight" */
        for (int p = 0; p < 2; p++) {
            if (c.algo[p] < 0) continue;
            printf("  %-28s %-22s %-5s %-11s", p ? "" : name, p ? "" : shape, tune_pass_name(p ? c.bwd_pass : TUNE_FWD), nn_algo_name(c.algo[p]));
            ms_cells(c.ms[p]);
            printf("%s\n", c.measured[p] ? "  *" : "");
        }
    }
    if (rn_linear_count(m))
        printf("  %-28s %-22s %-5s %-11s  (ms of the forward, and of the backward too under train)\n", "linear layer", "N x F > O", "pass", "choice");
    for (int i = 0; i < rn_linear_count(m); i++) {
        rn_conv_info c;
        rn_linear_get(m, i, &c);
        char shape[64], name[64];
        snprintf(shape, sizeof shape, "%d x %d > %d", c.shape[0], c.shape[1], c.shape[4]);
        snprintf(name, sizeof name, "%.*s", (int)(strlen(c.name) > 7 ? strlen(c.name) - 7 : strlen(c.name)), c.name);
        printf("  %-28s %-22s %-5s %-11s", name, shape, m->grads ? "train" : "fwd",
               nn_algo_name(c.algo[0]));
        ms_cells(c.ms[0]);
        printf("%s\n", c.measured[0] ? "  *" : c.ms[0][c.algo[0]] < 0 ? "  (the only candidate, or the rule)" : "");
    }
    double chosen, rule;
    step_conv_ms(m, &chosen, &rule);
    if (chosen >= 0)
        printf("  convolutions of one step (2 forwards, 1 backward), as timed one by one: %.1f ms on the choices, %.1f ms on the "
               "fixed rule\n", chosen, rule);
}

static void kernels_json(moco_jw *w, const resnet *m)
{
    double chosen, rule;
    step_conv_ms(m, &chosen, &rule);
    moco_jw_num(w, "conv_ms_chosen", chosen >= 0 ? chosen : NAN, 2);
    moco_jw_num(w, "conv_ms_rule", rule >= 0 ? rule : NAN, 2);
    moco_jw_str(w, "cpu", tune_cpu());
    moco_jw_arr(w, "convs");
    for (int i = 0; i < rn_conv_count(m); i++) {
        rn_conv_info c;
        rn_conv_get(m, i, &c);
        moco_jw_obj(w, NULL);
        moco_jw_str(w, "name", c.name);
        moco_jw_arr(w, "shape");
        for (int k = 0; k < 8; k++) moco_jw_i64(w, NULL, c.shape[k]);
        moco_jw_close(w);
        for (int p = 0; p < 2; p++) {
            if (c.algo[p] < 0) continue;
            moco_jw_str(w, p ? "bwd" : "fwd", nn_algo_name(c.algo[p]));
            ms_json(w, p ? "bwd_ms" : "fwd_ms", c.ms[p]);
        }
        moco_jw_close(w);
    }
    moco_jw_close(w);
    moco_jw_arr(w, "linears"); /* shape N, F, O; "train": forward and backward, as one choice */
    for (int i = 0; i < rn_linear_count(m); i++) {
        rn_conv_info c;
        rn_linear_get(m, i, &c);
        moco_jw_obj(w, NULL);
        moco_jw_str(w, "name", c.name);
        moco_jw_arr(w, "shape");
        moco_jw_i64(w, NULL, c.shape[0]), moco_jw_i64(w, NULL, c.shape[1]), moco_jw_i64(w, NULL, c.shape[4]);
        moco_jw_close(w);
        moco_jw_str(w, "train", nn_algo_name(c.algo[0]));
        ms_json(w, "train_ms", c.ms[0]);
        moco_jw_close(w);
    }
    moco_jw_close(w);
}

/* --profile: ms per step of each part of the step, and of the encoders' */
static void print_profile(const double *prof, const double *rprof, double steps, double step_s)
{
    printf("  where a step goes, ms (share of the step):\n   ");
    for (int i = 0; i < MOCO_PROF_N; i++) printf(" %s %.1f (%.0f%%)", moco_prof_names[i], prof[i] / steps * 1e3, 100 * prof[i] / steps / step_s);
    printf("\n  within the encoders' forwards and backward (both encoders):\n   ");
    for (int i = 0; i < RN_PROF_N; i++) printf(" %s %.1f (%.0f%%)", rn_prof_names[i], rprof[i] / steps * 1e3, 100 * rprof[i] / steps / step_s);
    printf("\n");
}

static void profile_json(moco_jw *w, const double *prof, const double *rprof, double steps)
{
    moco_jw_obj(w, "profile_ms");
    for (int i = 0; i < MOCO_PROF_N; i++) moco_jw_num(w, moco_prof_names[i], prof[i] / steps * 1e3, 2);
    for (int i = 0; i < RN_PROF_N; i++) moco_jw_num(w, rn_prof_names[i], rprof[i] / steps * 1e3, 2);
    moco_jw_close(w);
}

int trainer_bench_main(int argc, char **argv)
{
    const char *arch = "resnet18-cifar";
    long width = 64, batch = 256, size = 32, steps = 5, warmup = 1, threads = 2, K = 4096, dim = 128, splits = 8;
    int mlp = 0, sym = 0, explain = 0, profile = 0;
    const char *precision = "fp32", *kernels = "measure", *wisdom = NULL;
    double m = 0.99, T = 0.1, lr = 0.06, wd = 5e-4;
    uint64_t seed = 1;
    const moco_opt opts[] = {
        {"arch|-a", MOCO_OPT_CHOICE, &arch, "encoder", 0, 0, "resnet18|resnet34|resnet50|resnet18-cifar|resnet50-cifar"},
        {"width", MOCO_OPT_INT, &width, "base width (64 = torchvision)", 1, 1024, NULL},
        {"mlp", MOCO_OPT_FLAG, &mlp, "MLP head (MoCo v2)", 0, 0, NULL},
        {"dim", MOCO_OPT_INT, &dim, "output features", 1, 65536, NULL},
        {"batch-size|-b", MOCO_OPT_INT, &batch, "pairs per step per rank (global batch: ranks x this)", 2, 65536, NULL},
        {"size", MOCO_OPT_INT, &size, "input height and width", 1, 4096, NULL},
        {"steps", MOCO_OPT_INT, &steps, "timed steps", 1, 1000000, NULL},
        {"warmup", MOCO_OPT_INT, &warmup, "untimed steps first", 0, 1000, NULL},
        {"threads", MOCO_OPT_INT, &threads, "compute threads per rank", 1, 256, NULL},
        {"moco-k|--K", MOCO_OPT_INT, &K, "queue length (a multiple of ranks x batch x directions)", 1, 1 << 24, NULL},
        {"moco-m|--m", MOCO_OPT_DOUBLE, &m, "key encoder momentum", 0, 1, NULL},
        {"moco-t|--T", MOCO_OPT_DOUBLE, &T, "softmax temperature", 1e-6, 1e6, NULL},
        {"bn-splits", MOCO_OPT_INT, &splits, "BN sub-batches per rank (shuffle BN)", 1, 65536, NULL},
        {"symmetric", MOCO_OPT_FLAG, &sym, "symmetric loss (both directions)", 0, 0, NULL},
        {"lr", MOCO_OPT_DOUBLE, &lr, "learning rate", 0, 1e3, NULL},
        {"wd", MOCO_OPT_DOUBLE, &wd, "weight decay", 0, 1, NULL},
        {"seed", MOCO_OPT_U64, &seed, "seed of weights, data and permutations", 0, 0, NULL},
        {"precision", MOCO_OPT_CHOICE, &precision, "fp32, or bf16: convolutions and linear layers take bf16 operands, accumulate in fp32", 0, 0, "fp32|bf16"},
        {"kernels", MOCO_OPT_CHOICE, &kernels, "measure: each convolution pass on the kernel timed fastest here (the wisdom file); rule: the fixed rule", 0, 0, "measure|rule"},
        {"wisdom", MOCO_OPT_STR, &wisdom, "the wisdom file (default $MOCO_WISDOM, else ~/.cache/moco/wisdom.jsonl)", 0, 0, NULL},
        {"explain", MOCO_OPT_FLAG, &explain, "show each convolution's kernel choices and the times of every candidate", 0, 0, NULL},
        {"profile", MOCO_OPT_FLAG, &profile, "show where the timed steps go: the step's parts, and the encoders' convolutions, batch norm and the rest", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco bench train", "[options]",
                               "Time full MoCo training steps (key momentum update, shuffled key forward, query forward\n"
                               "and backward, InfoNCE against the queue, SGD) on synthetic images, in one process, or\n"
                               "data-parallel under `mpirun -np R moco bench train ...` (gradients averaged over the\n"
                               "ranks while backward runs). The last line is one JSON object.",
                               opts, 0, 0, NULL};
    dist *d = NULL;
    moco *mc = NULL;
    float *x = NULL;
    int rc = dist_init(&argc, &argv, &d), ret = 1;
    if (rc) {
        fprintf(stderr, "moco bench train: %s\n", moco_errmsg());
        return 1;
    }
    const int R = dist_size(d), rank = dist_rank(d);
    char who[32] = "";
    if (R > 1) snprintf(who, sizeof who, " (rank %d of %d)", rank, R);
    char *pos[1];
    int np, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) {
        ret = opt_exit;
        goto out;
    }
    par_set_threads((int)threads);

    moco_cfg cfg = {.enc = {.arch = arch, .width = (int)width, .mlp = mlp, .dim = (int)dim, .bn_splits = (int)splits,
                            .batch = (int)batch, .size = (int)size, .precision = strcmp(precision, "bf16") ? NN_FP32 : NN_BF16},
                    .K = (int)K, .m = (float)m, .T = (float)T, .symmetric = sym, .lr = (float)lr, .sgd_momentum = 0.9f,
                    .weight_decay = (float)wd, .seed = seed};
    tune_configure(strcmp(kernels, "rule") ? TUNE_MEASURE : TUNE_RULE, wisdom);
    double t_make = moco_now_s();
    if ((rc = dist_moco_new(d, &cfg, &mc)) || (rc = moco_set_comm(mc, dist_comm(d)))) {
        fprintf(stderr, "moco bench train%s: %s\n", who, moco_errmsg());
        ret = rc == MOCO_EINVAL ? 2 : 1;
        goto out;
    }
    size_t n = (size_t)batch * 3 * (size_t)size * (size_t)size;
    if (!(x = malloc(sizeof(float) * 2 * n))) {
        fprintf(stderr, "moco bench train%s: out of memory for the inputs\n", who);
        goto out;
    }
    moco_rng r;
    moco_rng_init(&r, seed, 4, (uint64_t)rank, 0); /* each rank its own pairs; rank 0 as a single process */
    for (size_t i = 0; i < 2 * n; i++) x[i] = (float)(moco_rng_uniform(&r) * 4.0 - 2.0);
    double flop = 2.0 * moco_step_macs(mc) * R;
    if (!rank) {
        printf("moco bench train: %s width %ld%s, batch %ld", arch, width, mlp ? " mlp" : "", batch * R);
        if (R > 1) printf(" (%d ranks x %ld)", R, batch);
        printf(", %ldx%ld, K %ld, dim %ld, bn splits %ld%s, %ld threads%s, %s\n", size, size, K, dim, splits, sym ? ", symmetric" : "",
               threads, R > 1 ? " per rank" : "", precision);
        if (nn_bf16_emulated() && !strcmp(precision, "bf16"))
            printf("  bf16 on oneDNN's emulation (MOCO_BF16_EMULATE=1, a test knob: this CPU has no AVX512_BF16)\n");
        printf("  %.1f M parameters, %.2f GFLOP per step, activations %.0f MB%s\n", (double)mc->q->nparams / 1e6, flop / 1e9,
               (double)rn_arena_bytes(mc->q) / 1048576.0, R > 1 ? " per rank" : "");
    }
    t_make = moco_now_s() - t_make;
    if (!rank && explain) explain_kernels(mc->q, t_make);
    nn_peak pk = {.isa = "none"};
    if (R == 1) { /* ranks on one host would measure each other's load */
        nn_peak_measure(&pk);
        if (pk.fp32_one > 0) {
            printf("  this CPU's peak (measured, multiply-adds in registers): fp32 %s %.1f GFLOP/s on 1 thread, %.1f on %d (%.2fx)",
                   pk.isa, pk.fp32_one, pk.fp32_all, pk.threads, pk.fp32_all / pk.fp32_one);
            if (pk.bf16_one > 0) printf("; bf16 dot products %.1f, %.1f", pk.bf16_one, pk.bf16_all);
            printf("\n");
        }
    }
    double t_all = 0, best = 1e30, c_all = 0, w_all = 0;
    moco_stats st = {0};
    double prof[MOCO_PROF_N] = {0}, rprof[RN_PROF_N] = {0};
    for (long s = 0; s < warmup + steps; s++) {
        if (profile && s == warmup) mc->prof = prof, mc->q->prof = mc->k->prof = rprof; /* both encoders into one */
        double t0 = moco_now_s(), c0 = cpu_s(), w0 = dist_wait_seconds(d);
        if ((rc = moco_step(mc, x, x + n, NULL, (float)lr, &st))) {
            fprintf(stderr, "moco bench train%s: %s\n", who, moco_errmsg());
            goto out;
        }
        double dt = moco_now_s() - t0, dc = cpu_s() - c0, dw = dist_wait_seconds(d) - w0;
        if (!rank) {
            printf("  step %ld%s: %.1f ms, %.1f CPU ms, loss %.4f", s, s < warmup ? " (warm-up)" : "", dt * 1e3, dc * 1e3, (double)st.loss_all);
            if (R > 1) printf(", waited %.1f ms for the gradient average", dw * 1e3);
            printf("\n");
            fflush(stdout);
        }
        if (s >= warmup) t_all += dt, c_all += dc, w_all += dw, best = dt < best ? dt : best;
    }
    /* over the ranks: CPU time and memory summed, the wait averaged */
    double tot[3] = {c_all, peak_rss_mb(), w_all};
    if ((rc = dist_sum_d(d, tot, 3))) {
        fprintf(stderr, "moco bench train%s: %s\n", who, moco_errmsg());
        goto out;
    }
    double step_s = t_all / (double)steps, rss = tot[1], cpu_ms = tot[0] / (double)steps * 1e3, wait_ms = tot[2] / R / (double)steps * 1e3;
    long gb = batch * R;
    if (!rank) {
        printf("  mean %.1f ms/step (best %.1f), %.1f pairs/s, %.1f GFLOP/s, peak RSS %.0f MB; %.1f CPU ms/step", step_s * 1e3,
               best * 1e3, (double)gb / step_s, flop / step_s / 1e9, rss, cpu_ms);
        if (R > 1) printf("; waited %.1f ms/step for the gradient average (%.1f%%)", wait_ms, 100 * wait_ms / (step_s * 1e3));
        printf("\n");
        if (pk.fp32_all > 0) {
            printf("  model FLOP/s: %.1f%% of the fp32 peak on %d threads", 100 * flop / step_s / 1e9 / pk.fp32_all, pk.threads);
            if (pk.bf16_all > 0 && !strcmp(precision, "bf16")) printf(", %.1f%% of the bf16 peak", 100 * flop / step_s / 1e9 / pk.bf16_all);
            printf("\n");
        }
        if (profile) print_profile(prof, rprof, (double)steps, step_s);
        moco_jw w;
        moco_jw_begin(&w);
        moco_jw_str(&w, "bench", "train");
#ifdef MOCO_SANITIZE
        moco_jw_str(&w, "build", "sanitize=" MOCO_SANITIZE);
#else
        moco_jw_str(&w, "build", "release");
#endif
        moco_jw_str(&w, "arch", arch);
        moco_jw_i64(&w, "width", width);
        moco_jw_bool(&w, "mlp", mlp);
        moco_jw_i64(&w, "batch", gb);
        moco_jw_i64(&w, "batch_per_rank", batch);
        moco_jw_i64(&w, "size", size);
        moco_jw_i64(&w, "K", K);
        moco_jw_i64(&w, "bn_splits", splits);
        moco_jw_bool(&w, "symmetric", sym);
        moco_jw_str(&w, "precision", precision);
        if (nn_bf16_emulated() && !strcmp(precision, "bf16")) moco_jw_bool(&w, "bf16_emulated", 1);
        moco_jw_i64(&w, "ranks", R);
        moco_jw_i64(&w, "threads", threads);
        moco_jw_i64(&w, "steps", steps);
        moco_jw_num(&w, "pairs_per_s", (double)gb / step_s, 2);
        moco_jw_num(&w, "step_ms", step_s * 1e3, 1);
        moco_jw_num(&w, "gflop_per_s", flop / step_s / 1e9, 1);
        moco_jw_num(&w, "peak_rss_mb", rss, 0);
        moco_jw_num(&w, "cpu_ms_per_step", cpu_ms, 1);
        moco_jw_num(&w, "best_step_ms", best * 1e3, 1);
        moco_jw_num(&w, "best_pairs_per_s", (double)gb / best, 2);
        moco_jw_num(&w, "loss", st.loss_all, 4);
        moco_jw_num(&w, "acc", st.acc_all, 2);
        moco_jw_num(&w, "allreduce_wait_ms", wait_ms, 2);
        moco_jw_num(&w, "allreduce_share", wait_ms / (step_s * 1e3), 4);
        moco_jw_str(&w, "kernels", kernels);
        moco_jw_str(&w, "blas_core", blas_core());
        if (pk.fp32_all > 0) {
            moco_jw_str(&w, "peak_isa", pk.isa);
            moco_jw_num(&w, "peak_fp32_gflops_1t", pk.fp32_one, 1);
            moco_jw_num(&w, "peak_fp32_gflops", pk.fp32_all, 1);
            moco_jw_num(&w, "peak_thread_scale", pk.fp32_all / pk.fp32_one, 2);
            moco_jw_num(&w, "peak_fp32_share", flop / step_s / 1e9 / pk.fp32_all, 4);
            if (pk.bf16_all > 0) {
                moco_jw_num(&w, "peak_bf16_gflops_1t", pk.bf16_one, 1);
                moco_jw_num(&w, "peak_bf16_gflops", pk.bf16_all, 1);
            }
        }
        if (explain) kernels_json(&w, mc->q);
        if (profile) profile_json(&w, prof, rprof, (double)steps);
        moco_jw_line(&w, stdout);
    }
    ret = 0;
out:
    free(x);
    moco_destroy(&mc);
    dist_finalize(&d);
    return ret;
}
