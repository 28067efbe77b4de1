/* run.c: `moco run DB`, one command from a dataset LMDB to a running
 * pipeline: it starts the loader, N augmentation workers and the consumer
 * (the counting sink with --sink) as separate processes of this same
 * program, on ipc:// sockets in a private directory (mode 0700), passes each
 * its own flags, and supervises them:
 * - a worker that dies (SIGKILL, crash) is reported and replaced; the loader
 *   re-issues its samples, so nothing is lost;
 * - Ctrl-C / SIGTERM is forwarded to every process (with --ranks: SIGUSR1
 *   to mpirun, which forwards it to the ranks, in a process group of its
 *   own; the loader and workers once mpirun has ended);
 * - the run succeeds when the consumer and the loader exit 0; it fails
 *   (exit 1) as soon as either fails, and stops the others; after Ctrl-C /
 *   SIGTERM (or a trainer that exits 130) it exits 130 and, when the run
 *   directory holds a checkpoint, prints the command that resumes the run;
 *   a loader that fails stops the trainer, which keeps its position: exit
 *   1 ("FAILED"), and the same resume command.
 * A training run's --run-dir (--out is the same flag) must be empty unless
 * --resume or --overwrite (trainer flags) is given; its lock is taken first
 * (a live run's directory is "in use"), and a --resume checkpoint must exist
 * and match the trainer's flags (model, size, dataset, schedule) before
 * anything starts (formats/rundir.h); one that ends the run is said to, exit
 * 0, and nothing starts. Without --recipe, a --preset or --aug-plus,
 * training uses MoCo v1's augmentation, as main_moco.py does.
 * A flag neither moco run's nor moco train's is reported as moco run's.
 * A --serve ipc://PATH is checked before anything is made; a run whose
 * loader failed before it served, or whose trainer failed before it read a
 * sample, leaves no directory it made with nothing of the run's in. moco
 * lincls: the workers and the evaluation at --size, or the checkpoint's
 * training size. moco bench pipeline: logs in a temporary directory,
 * removed after a successful run, unless --run-dir. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "augment/augment.h"
#include "cli/run.h"
#include "formats/db.h"
#include "formats/clock.h"
#include "formats/endpoints.h"
#include "formats/errors.h"
#include "formats/rundir.h"
#include "formats/opts.h"
#include "formats/pipeline.h"
#include "trainer/engine/ckpt.h"
#include "trainer/evalmodel.h"
#include "trainer/lincls.h"
#include "trainer/train.h"

#define MAX_WORKERS 64
#define MAX_ARGS 128

static volatile sig_atomic_t got_signal;
static void on_signal(int s) { got_signal = s; }

typedef struct {
    char *v[MAX_ARGS];
    int n;
} argvec;

static void add(argvec *a, const char *s)
{
    if (a->n < MAX_ARGS - 1) a->v[a->n++] = strdup(s);
    a->v[a->n] = NULL;
}

static void addf(argvec *a, const char *flag, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void addf(argvec *a, const char *flag, const char *fmt, ...)
{
    char b[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    add(a, flag);
    add(a, b);
}

static void free_args(argvec *a)
{
    for (int i = 0; i < a->n; i++) free(a->v[i]);
    a->n = 0;
}

static pid_t spawn(const argvec *a, const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGINT, SIG_IGN); /* the supervisor forwards what it gets */
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* and if it dies, nothing is left running */
        if (log) { /* open and dup2: between fork and exec only async-signal-safe calls (freopen allocates) */
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) dup2(fd, STDERR_FILENO), close(fd);
        }
        if (!strcmp(a->v[0], "mpirun")) {
            /* a group of its own: a terminal's Ctrl-C reaches the supervisor, which stops the
             * ranks with SIGUSR1; mpirun, which catches SIGINT itself, killed them at once (no
             * stop checkpoint) and left them running when the supervisor exited. Its stdin is
             * /dev/null: mpirun forwards stdin to rank 0, and a read from the terminal would stop
             * a background group */
            setpgid(0, 0);
            int nul = open("/dev/null", O_RDONLY);
            if (nul >= 0) dup2(nul, STDIN_FILENO), close(nul);
            execvp("mpirun", a->v);
            fprintf(stderr, "moco run: cannot start mpirun for --ranks: %s (Debian: apt-get install openmpi-bin)\n", strerror(errno));
        } else {
            execv("/proc/self/exe", a->v);
            fprintf(stderr, "moco run: cannot start %s: %s\n", a->v[1], strerror(errno));
        }
        _exit(127);
    }
    return pid;
}

/* Signal a child; never pid 0 or -1 (the process group, everyone). */
static void sig(pid_t p, int s)
{
    if (p > 0) kill(p, s);
}

static const char *describe(int st, char *b, size_t n)
{
    if (WIFEXITED(st)) snprintf(b, n, "exit status %d", WEXITSTATUS(st));
    else snprintf(b, n, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    return b;
}

static int run_pipeline(int argc, char **argv, int bench, const char *consumer);

/* The command that adds a worker: on another host when bound to tcp (the
 * wildcard host replaced by this host's name; the key directory must be
 * there at the same path), else from another terminal here. */
static void print_worker_command(const argvec *wa, const char *host, long port)
{
    char me[256] = "localhost", ep[2][600];
    if (host && (!*host || !strcmp(host, "*") || !strcmp(host, "0.0.0.0") || !strcmp(host, "[::]")) && !gethostname(me, sizeof me))
        host = me;
    /* wa->v: "moco" "augment" flags...; this run's own log and --quiet stay here */
    char *v[MAX_ARGS];
    int n = 0;
    for (int i = 1; i < wa->n; i++) {
        const char *a = wa->v[i];
        if (host && (!strcmp(a, "--connect") || !strcmp(a, "--push")) && i + 1 < wa->n) {
            int push = !strcmp(a, "--push");
            snprintf(ep[push], sizeof ep[push], "tcp://%s:%ld", host, port + push);
            v[n++] = wa->v[i];
            v[n++] = ep[push];
            i++;
            continue;
        }
        v[n++] = wa->v[i];
    }
    static const char *const drop[] = {"--log", NULL}, *const flags[] = {"--quiet", NULL};
    fprintf(stderr, "moco run: more workers %s:\n ",
            host ? "from another host (with a copy of the key directory)" : "from another terminal");
    moco_print_command(stderr, n, v, drop, flags);
    fputc('\n', stderr);
}

/* The command that continues an interrupted training run: this one,
 * without --resume, --overwrite, --run-dir / --out, plus --run-dir DIR
 * --resume DIR. */
static void print_resume(int argc, char **argv, const char *run_dir)
{
    static const char *const drop[] = {"--resume", "--run-dir", "--out", NULL}, *const flags[] = {"--overwrite", NULL};
    fprintf(stderr, "moco run: resume with:\n ");
    moco_print_command(stderr, argc, argv, drop, flags);
    fputs(" --run-dir", stderr);
    moco_print_shell_arg(stderr, run_dir);
    fputs(" --resume", stderr);
    moco_print_shell_arg(stderr, run_dir);
    fputc('\n', stderr);
}

int cli_run_main(int argc, char **argv)
{
    int rc = run_pipeline(argc, argv, 0, "train");
    if (rc == 130) { /* interrupted; exit here because cli/moco.c turns statuses above 125 into 1 */
        fflush(NULL);
        exit(130);
    }
    return rc;
}

/* `moco lincls`: with --cached-features (or as the pipeline's consumer,
 * --connect) the evaluation itself; otherwise a pipeline on the --train
 * dataset with the "lincls" recipe whose consumer is that evaluation. */
int cli_lincls_main(int argc, char **argv)
{
    const char *db = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cached-features") || !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") ||
            !strncmp(argv[i], "--connect", 9))
            return lincls_main(argc, argv);
        if (!strcmp(argv[i], "--train") && i + 1 < argc) db = argv[i + 1];
        if (!strncmp(argv[i], "--train=", 8)) db = argv[i] + 8;
    }
    if (!db) return lincls_main(argc, argv); /* it says what is missing */
    char **v = malloc(sizeof *v * (size_t)(argc + 2));
    if (!v) return 1;
    v[0] = argv[0], v[1] = (char *)db;
    for (int i = 1; i < argc; i++) v[i + 1] = argv[i];
    v[argc + 1] = NULL;
    int rc = run_pipeline(argc + 1, v, 0, "lincls");
    free(v);
    return rc;
}
int cli_bench_pipeline_main(int argc, char **argv) { return run_pipeline(argc, argv, 1, "sink"); }

/* moco lincls --size 0 (or none): the training size of the checkpoint
 * among the consumer's flags (--ckpt FILE or run directory); 32 without one
 * (--random-init). */
static int lincls_ckpt_size(int n, char **flags, long *size)
{
    const char *ckpt = NULL;
    for (int i = 1; i < n; i++) {
        if (!strcmp(flags[i], "--ckpt") && i + 1 < n) ckpt = flags[i + 1];
        else if (!strncmp(flags[i], "--ckpt=", 7)) ckpt = flags[i] + 7;
    }
    *size = 32;
    return ckpt ? evalmodel_ckpt_size(ckpt, size) : 0;
}

static int run_pipeline(int argc, char **argv, int bench, const char *consumer)
{
    int lincls = !strcmp(consumer, "lincls");
    long workers = 2, epochs = bench || lincls ? 1 : TRAIN_EPOCHS, start_epoch = 0, window = 1024, max_respawn = 100, ranks = 0, consumers = 1;
    const char *hostfile = NULL;
    uint64_t seed = 0;
    int sink = 0, quiet = 0, insecure = 0, via_tcp = 0;
    const char *run_dir = NULL, *out_dir = NULL, *dbflag = NULL, *serve = NULL, *bind = NULL, *keys = NULL;
    double worker_timeout = MOCO_WORKER_TIMEOUT_S, seconds = 10, warmup = 1;
    double stall_timeout = MOCO_STALL_TIMEOUT_S, readmit_after = MOCO_READMIT_AFTER_S;
    long max_workers = MOCO_MAX_WORKERS;
    augment_flags af;
    moco_opt opts[AUGMENT_FLAGS_NOPTS + 28];
    int n = augment_flags_opts(&af, opts);
    int seed_at = -1;
    for (int i = 0; i < n; i++) {
        if (!strcmp(opts[i].name, "seed")) seed_at = i;
        if (lincls && !strcmp(opts[i].name, "size")) { /* 0: the checkpoint's training size, as moco lincls --help says */
            opts[i].min = 0;
            af.size = 0;
        }
        if (!bench && !lincls && !strcmp(opts[i].name, "recipe")) { /* main_moco.py without --aug-plus */
            opts[i].help = "augmentation recipe; training: v1 unless --aug-plus (v2) or a --preset says otherwise, as "
                           "main_moco.py; --sink/--serve: v2 (the defaults below are v2's)";
            af.recipe = "v1";
        }
    }
    if (seed_at >= 0) { /* one --seed for the loader's order and the views */
        opts[seed_at].dst = &seed;
        opts[seed_at].help = "seed of the epoch order and of the augmentations";
    }
    opts[n++] = (moco_opt){"workers|-j", MOCO_OPT_INT, &workers, "augmentation worker processes here (0 with --bind: only remote ones; 1, none remote: training repeatable bit for bit)", 0, MAX_WORKERS, NULL};
    opts[n++] = (moco_opt){"epochs", MOCO_OPT_INT, &epochs,
                           "epochs to stream; training: moco train's (main_moco.py's 200, or the preset's); --serve: 200 too "
                           "(the external trainer's run); --sink: 1; lincls: 100; bench pipeline: until --seconds", 1, 1e6,
                           NULL};
    opts[n++] = (moco_opt){"start-epoch", MOCO_OPT_INT, &start_epoch, "first epoch", 0, 1e6, NULL};
    opts[n++] = (moco_opt){"window", MOCO_OPT_INT, &window, "loader: most samples in flight", 1, 1e7, NULL};
    opts[n++] = (moco_opt){"worker-timeout", MOCO_OPT_DOUBLE, &worker_timeout, "loader: seconds of silence that make a worker dead", 0.2, 3600, NULL};
    opts[n++] = (moco_opt){"max-workers", MOCO_OPT_INT, &max_workers, "loader: worker slots, for workers here and from other hosts",
                           1, MOCO_MAX_WORKERS, NULL};
    opts[n++] = (moco_opt){"stall-timeout", MOCO_OPT_DOUBLE, &stall_timeout, "loader: seconds a worker may hold samples and return none "
                                                                             "while others deliver before it is banned (0: never)", 0, 1e6, NULL};
    opts[n++] = (moco_opt){"readmit-after", MOCO_OPT_DOUBLE, &readmit_after, "loader: seconds of a first ban, twice as long after each "
                                                                             "later one (0: bans are for good)", 0, 1e6, NULL};
    if (bench) {
        opts[n++] = (moco_opt){"db", MOCO_OPT_STR, &dbflag, "dataset LMDB", 0, 0, NULL};
        opts[n++] = (moco_opt){"seconds", MOCO_OPT_DOUBLE, &seconds, "measure this long", 0.5, 1e6, NULL};
        opts[n++] = (moco_opt){"warmup", MOCO_OPT_DOUBLE, &warmup,
                               "seconds after the first pair not measured (processes start, caches fill; bench augment also measures warm)",
                               0, 1e6, NULL};
    } else {
        opts[n++] = (moco_opt){"sink", MOCO_OPT_FLAG, &sink, "consume with the counting sink instead of training", 0, 0, NULL};
    }
    if (!lincls) {
        opts[n++] = (moco_opt){"serve", MOCO_OPT_STR, &serve,
                               "no trainer: serve the pairs to an external consumer that connects here (ipc://PATH, or "
                               "tcp://HOST:PORT with --keys): moco_stream.PairStream, moco sink --connect, moco train --connect", 0, 0, NULL};
        opts[n++] = (moco_opt){"bind", MOCO_OPT_STR, &bind,
                               "tcp://HOST:PORT: workers connect here (PORT) and push their pairs to PORT+1, so that workers on "
                               "other hosts can join (the command is printed); default: private ipc sockets", 0, 0, NULL};
        opts[n++] = (moco_opt){"keys", MOCO_OPT_STR, &keys, "key directory (moco keygen DIR): CURVE on every tcp endpoint", 0, 0, NULL};
        opts[n++] = (moco_opt){"insecure", MOCO_OPT_FLAG, &insecure, "allow tcp endpoints without --keys", 0, 0, NULL};
        opts[n++] = (moco_opt){"workers-via-tcp", MOCO_OPT_FLAG, &via_tcp,
                               "with --bind: local workers connect over tcp too (default: over private ipc sockets, "
                               "without the encryption cost), as remote ones do", 0, 0, NULL};
    }
    if (!bench && !lincls) {
        opts[n++] = (moco_opt){"ranks", MOCO_OPT_INT, &ranks,
                               "train data-parallel on R MPI ranks (mpirun -np R moco train ...; each rank gets its shard of "
                               "the stream, --threads each; global batch R x --batch-size)", 0, MOCO_CONSUMERS_MAX, NULL};
        opts[n++] = (moco_opt){"consumers", MOCO_OPT_INT, &consumers,
                               "with --serve: serve R consumers (the ranks of a data-parallel trainer, e.g. PairStream(rank=r, "
                               "ranks=R)), each its shard of every epoch", 1, MOCO_CONSUMERS_MAX, NULL};
        opts[n++] = (moco_opt){"hostfile", MOCO_OPT_STR, &hostfile, "with --ranks: mpirun's --hostfile (ranks on other hosts; "
                               "needs --bind tcp://HOST:PORT, their stream is then at PORT+2)", 0, 0, NULL};
    }
    opts[n++] = (moco_opt){"run-dir", MOCO_OPT_STR, &run_dir, "directory for logs (default: runs/run-DATE-TIME)", 0, 0, NULL};
    if (!bench) opts[n++] = (moco_opt){"out", MOCO_OPT_STR, &out_dir, "the same as --run-dir", 0, 0, NULL};
    opts[n++] = (moco_opt){"max-respawn", MOCO_OPT_INT, &max_respawn, "replace dead workers at most this many times", 0, 1e6, NULL};
    opts[n++] = (moco_opt){"quiet", MOCO_OPT_FLAG, &quiet, "less output", 0, 0, NULL};
    opts[n] = (moco_opt){NULL, 0, NULL, NULL, 0, 0, NULL};
    (void)insecure;
    const moco_optspec run_spec = {lincls ? "moco lincls" : "moco run", "DB [options]",
                                   "Start the loader, --workers augmentation workers and the trainer (or, with --sink, the\n"
                                   "counting sink) on DB, supervise them, and replace workers that die. Every flag not listed\n"
                                   "here goes to the trainer (see moco train --help: --preset, --arch, --lr, --knn-train, ...).\n"
                                   "The run directory holds logs, metrics.jsonl and checkpoints; sockets go to a private directory.",
                                   opts, 1, 1, NULL};
    const moco_optspec bench_spec = {"moco bench pipeline", "--db DB [--workers N] [--seconds T] [recipe options]",
                                      "The whole pipeline (loader, N worker processes, sockets) into the counting sink for\n"
                                      "--warmup + --seconds, measured over the last --seconds; prints pairs/s, starved % and\n"
                                      "per-stage figures, the last line one JSON object.",
                                      opts, 0, 0, "db"};
    const moco_optspec spec = bench ? bench_spec : run_spec;
    /* moco run: our flags (and the recipe's) here, every other flag to the
     * trainer, which checks them before anything starts. DB comes first. */
    char *mine[MAX_ARGS], *theirs[MAX_ARGS];
    int nmine = 0, ntheirs = 0;
    mine[nmine++] = argv[0];
    theirs[ntheirs++] = (char *)consumer;
    for (int i = 1; i < argc && nmine < MAX_ARGS - 1 && ntheirs < MAX_ARGS - 8; i++) {
        const char *a = argv[i];
        if (bench || a[0] != '-' || !a[1] || !strcmp(a, "--help") || !strcmp(a, "-h")) { mine[nmine++] = argv[i]; continue; }
        /* ours by any spelling (--workers, -j, -j4); the rest, long or short (-a, -b: main_moco.py's), the trainer's */
        const char *attached;
        const moco_opt *o = moco_opts_find(&spec, a, &attached);
        size_t l = a[1] == '-' ? strcspn(a + 2, "=") : 0;
        /* the trainer's flags that this supervisor sets itself: never overridden silently */
        static const char *const set_here[][2] = {{"connect", "the trainer connects to this run's loader"},
                                                  {"count", "the number of records in DB"}};
        for (size_t k = 0; !o && l && k < sizeof set_here / sizeof *set_here; k++)
            if (strlen(set_here[k][0]) == l && !strncmp(set_here[k][0], a + 2, l)) {
                fprintf(stderr, "moco run: --%s is set by moco run itself (%s); it is a flag of moco train started by hand\n",
                        set_here[k][0], set_here[k][1]);
                return 2;
            }
        char **dst = o ? mine : theirs;
        int *nd = o ? &nmine : &ntheirs;
        dst[(*nd)++] = argv[i];
        /* a trainer's flag takes the next argument as its value unless that is a flag itself (--x, -x; not -1);
         * -xV holds its value (-b256, -aresnet50), but a word without digits is a long name with one dash
         * (-lr 0.03: the trainer says which flag was meant) */
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        int value_in_arg = o ? attached != NULL : a[1] == '-' ? a[2 + l] != 0 : a[2] && strpbrk(a + 2, "0123456789=") != NULL;
        int next_is_flag = next && next[0] == '-' && (next[1] == '-' || isalpha((unsigned char)next[1]));
        int takes_value = o ? o->kind != MOCO_OPT_FLAG : !next_is_flag;
        if (!value_in_arg && takes_value && next) dst[(*nd)++] = argv[++i];
    }
    if (!bench && argc > 1 && argv[1][0] == '-' && argv[1][1] && strcmp(argv[1], "--help") && strcmp(argv[1], "-h")) {
        fprintf(stderr, "moco run: the dataset comes first: moco run DB [options]\n");
        return 2;
    }
    char *pos[1];
    int np, opt_exit;
    if (!moco_opts_run(&spec, nmine, mine, pos, &np, &opt_exit)) return opt_exit;
    const char *db = bench ? dbflag : pos[0];
    if (out_dir && run_dir && strcmp(out_dir, run_dir)) {
        fprintf(stderr, "moco run: --out %s and --run-dir %s: the same flag twice, with two directories\n", out_dir, run_dir);
        return 2;
    }
    if (out_dir) run_dir = out_dir;
    if (bench) {
        sink = 1;
        quiet = 1;
        if (!moco_opts_seen(&spec, "epochs")) epochs = 1000000;
    }
    /* the trainer's flags, read by its own parser (its preset table, train_cmd.c):
     * a preset's augmentation and epochs, --resume, --overwrite */
    train_cfg tc;
    char resume_arg[4096] = "";
    memset(&tc, 0, sizeof tc);
    if (!sink && !lincls && !serve) {
        argvec v = {0};
        add(&v, "train");
        for (int i = 1; i < ntheirs; i++) add(&v, theirs[i]);
        const char *fixed[] = {"--connect", "ipc://x", "--out", "x"};
        for (int i = 0; i < 4; i++) add(&v, fixed[i]);
        moco_opts_passed_on(&spec); /* an unknown flag is neither ours nor the trainer's: said as ours, both helps */
        int bad = train_parse_args(v.n, v.v, &tc);
        moco_opts_passed_on(NULL);
        if (!bad && tc.resume) snprintf(resume_arg, sizeof resume_arg, "%s", tc.resume); /* tc's strings are v's */
        free_args(&v);
        if (bad) return 2;
    }
    if (lincls) { /* the consumer's flags, before anything starts (before: an unknown one failed the started run) */
        argvec v = {0};
        add(&v, "lincls");
        for (int i = 1; i < ntheirs; i++) add(&v, theirs[i]);
        moco_opts_passed_on(&spec);
        int bad = lincls_check_args(v.n, v.v);
        moco_opts_passed_on(NULL);
        free_args(&v);
        if (bad) return 2;
    }
    int resuming = tc.resume != NULL, overwrite = tc.overwrite;
    if (resuming) { /* before anything starts (the trainer found it missing only once the pipeline ran) */
        char rp[4200];
        struct stat rs;
        if (moco_rundir_ckpt("--resume", resume_arg, rp, sizeof rp) ||
            (stat(rp, &rs) && moco_err(MOCO_ENOTFOUND, "--resume %s: %s", rp, strerror(errno)))) {
            fprintf(stderr, "moco run: %s\n", moco_errmsg());
            return 2;
        }
    }
    augment_recipe recipe;
    af.seed = seed;
    if (!moco_opts_seen(&spec, "recipe") && tc.recipe) af.recipe = tc.recipe; /* the preset's (or --aug-plus's) augmentation */
    else if (!moco_opts_seen(&spec, "recipe") && !bench && !lincls && (sink || serve))
        af.recipe = "v2"; /* no trainer here: the stream's recipe stays moco augment's default (training: v1, above) */
    long lincls_size = 0; /* main_lincls.py evaluates at the pre-training resolution */
    if (lincls) { /* main_lincls.py: crops and flips, 100 epochs; --size 0: the checkpoint's training size */
        if (!moco_opts_seen(&spec, "recipe")) af.recipe = "lincls";
        if (!moco_opts_seen(&spec, "epochs")) epochs = 100;
        if ((lincls_size = af.size) == 0 && lincls_ckpt_size(ntheirs, theirs, &lincls_size)) {
            fprintf(stderr, "moco lincls: %s\n", moco_errmsg());
            return 1;
        }
    }
    /* training here: moco train's own (200 as main_moco.py's, or the preset's; before, 1: a run without --epochs
     * trained one epoch, on a schedule of one); --serve feeds a training elsewhere, of the same length: 200 too
     * (before: 1, and a main_moco.py-length consumer met END after its first epoch); the counting sink: 1 */
    if (!bench && !lincls && !moco_opts_seen(&spec, "epochs")) epochs = sink ? 1 : serve ? TRAIN_EPOCHS : tc.epochs;
    if (augment_flags_recipe(&af, &spec, &recipe)) return 2;
    if (lincls) recipe.size = (int)lincls_size; /* the workers' and the consumer's */
    moco_db *d;
    if (moco_db_open(db, &d)) {
        fprintf(stderr, "moco run: %s\n", moco_errmsg());
        return 2;
    }
    uint64_t count = moco_db_get_meta(d)->count;
    moco_db_destroy(&d);
    /* what the trainer would find only once the pipeline ran (and leave a run directory behind) */
    if (!sink && !lincls && !serve && count < (uint64_t)tc.batch * (uint64_t)(ranks ? ranks : 1)) {
        fprintf(stderr, "moco run: %s: the dataset's %llu samples make no batch of %lld pairs%s: lower --batch-size\n", db,
                (unsigned long long)count, (long long)tc.batch * (ranks ? ranks : 1), ranks > 1 ? " (over all ranks)" : "");
        return 2;
    }
    if (start_epoch && start_epoch >= epochs) {
        fprintf(stderr, "moco run: --start-epoch %ld leaves nothing to run of --epochs %ld (epochs count from 0)\n", start_epoch, epochs);
        return 2;
    }
    if (bind) {
        const char *colon = strrchr(bind, ':');
        char *end = NULL;
        long p = colon ? strtol(colon + 1, &end, 10) : 0;
        if (strncmp(bind, "tcp://", 6) || !colon || colon - bind <= 6 || !end || *end || p < 1 || p > 65534) {
            fprintf(stderr, "moco run: --bind takes tcp://HOST:PORT (PORT and PORT+1 are used), not '%s'\n", bind);
            return 2;
        }
    }
    if (ranks && (sink || serve)) {
        fprintf(stderr, "moco run: --ranks trains here on R ranks; it does not go with %s\n", sink ? "--sink" : "--serve");
        return 2;
    }
    if (consumers > 1 && !serve) {
        fprintf(stderr, "moco run: --consumers goes with --serve (external consumers); to train here on R ranks, give --ranks R\n");
        return 2;
    }
    if (hostfile && (!ranks || !bind)) {
        fprintf(stderr, "moco run: --hostfile needs --ranks and --bind tcp://HOST:PORT (ranks on other hosts reach the stream over tcp)\n");
        return 2;
    }
    if (workers > max_workers) {
        fprintf(stderr, "moco run: --workers %ld here is more than --max-workers %ld (the loader's worker slots): %ld of them "
                        "would be refused; give --max-workers %ld or more\n", workers, max_workers, workers - max_workers, workers);
        return 2;
    }
    if (workers == 0 && !bind) {
        fprintf(stderr, "moco run: --workers 0 needs --bind (workers on other hosts)\n");
        return 2;
    }
    if (serve && strncmp(serve, "tcp://", 6) && strncmp(serve, "ipc://", 6)) {
        fprintf(stderr, "moco run: --serve takes ipc://PATH or tcp://HOST:PORT, not '%s'\n", serve);
        return 2;
    }
    if (serve && !strncmp(serve, "ipc://@", 7) && !insecure) { /* no file, no permissions: any local user gets in */
        fprintf(stderr, "moco run: %s is an abstract ipc socket, which any local user can connect to: give --serve "
                        "ipc://PATH in a private directory or, to let anyone on this host in, --insecure\n", serve);
        return 2;
    }
    if (serve && moco_ipc_check("--serve", serve)) { /* before: the loader failed to bind it, the run directory left */
        fprintf(stderr, "moco run: %s\n", moco_errmsg());
        return 2;
    }
    if ((bind || (serve && !strncmp(serve, "tcp://", 6))) && !keys && !insecure) {
        fprintf(stderr, "moco run: %s is a tcp endpoint: give --keys DIR (make one with moco keygen DIR) or, to let anyone "
                        "who can reach it in, --insecure\n", bind ? bind : serve);
        return 2;
    }
    char keys_abs[4096];
    if (keys && !realpath(keys, keys_abs)) {
        fprintf(stderr, "moco run: --keys %s: %s\n", keys, strerror(errno));
        return 2;
    }
    if (keys) keys = keys_abs;

    if (!sink && !lincls) { /* the trainer's flags are checked before anything is created */
        argvec v = {0};
        add(&v, "train");
        for (int i = 1; i < ntheirs; i++) add(&v, theirs[i]);
        const char *fixed[] = {"--connect", "ipc://x", "--bind", "ipc://x", "--out", "x"};
        for (int i = 0; i < 6; i++) add(&v, fixed[i]);
        addf(&v, "--epochs", "%ld", epochs);
        addf(&v, "--size", "%d", recipe.size);
        train_cfg tc;
        moco_opts_passed_on(&spec);
        int bad = train_parse_args(v.n, v.v, &tc);
        moco_opts_passed_on(NULL);
        /* a --resume against these flags, as the trainer compares them (model, size, dataset, schedule), before
         * anything starts (before: refused by the trainer once the loader and workers ran) */
        char rp[4200];
        moco_ckpt_config kc;
        tc.count = count, tc.ranks = (int)ranks;
        if (!bad && !serve && tc.resume &&
            (moco_rundir_ckpt("--resume", tc.resume, rp, sizeof rp) || ckpt_read_config(rp, &kc) || train_resume_matches(&tc, &kc, rp))) {
            fprintf(stderr, "moco run: %s\n", moco_errmsg());
            bad = 1;
        }
        free_args(&v);
        if (bad) return 2;
    }
    if (serve && !bench && ntheirs > 1) { /* before anything is created (before: the run directory was left) */
        fprintf(stderr, "moco run: with --serve there is no trainer here; '%s' means nothing\n", theirs[1]);
        return 2;
    }
    if (sink && !bench && ntheirs > 1) {
        fprintf(stderr, "moco run: with --sink, '%s' means nothing\n", theirs[1]);
        return 2;
    }
    char rdir[1024], sockdir[] = "/tmp/moco-run-XXXXXX";
    int bench_tmp = 0; /* bench pipeline without --run-dir: its logs in a temporary directory, removed at the end */
    int made_runs = 0; /* runs/, made for the default run directory */
    if (!run_dir && bench) {
        const char *td = getenv("TMPDIR");
        snprintf(rdir, sizeof rdir, "%s/moco-bench-XXXXXX", td && *td ? td : "/tmp");
        if (!mkdtemp(rdir)) {
            fprintf(stderr, "moco bench pipeline: cannot create a log directory %s: %s\n", rdir, strerror(errno));
            return 1;
        }
        run_dir = rdir;
        bench_tmp = 1;
    }
    if (!run_dir) {
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        made_runs = mkdir("runs", 0755) == 0;
        snprintf(rdir, sizeof rdir, "runs/run-%04d%02d%02d-%02d%02d%02d-%d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec, (int)getpid());
        run_dir = rdir;
    }
    struct stat rst;
    int made_dir = !bench_tmp && mkdir(run_dir, 0755) == 0; /* removed again if the run fails before writing a byte */
    if (!made_dir && !bench_tmp && errno != EEXIST) {
        fprintf(stderr, "moco run: cannot create %s: %s\n", run_dir, strerror(errno));
        return 1;
    }
    if (stat(run_dir, &rst) != 0) {
        fprintf(stderr, "moco run: --run-dir %s: %s\n", run_dir, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(rst.st_mode)) { /* /dev/null, a file: said here, before any process starts */
        fprintf(stderr, "moco run: --run-dir %s: not a directory\n", run_dir);
        return 1;
    }
    int lock_fd; /* held to the end (formats/rundir.h); not inherited: the trainer we start knows it is supervised */
    if (moco_lock_dir(run_dir, &lock_fd)) { /* first: a live run's directory is "in use", not "not empty" */
        fprintf(stderr, "moco run: %s\n", moco_errmsg());
        if (bench_tmp) run_remove_logs(run_dir);
        return 1;
    }
    /* a training run's directory starts empty; the advice names --resume only where a checkpoint is */
    char rck[4200]; /* resumed from elsewhere: never into another run's directory */
    if (!sink && !lincls && !serve && ((!resuming && !overwrite && moco_rundir_check_new(run_dir, "--run-dir", 0)) ||
                                       (resuming && (moco_rundir_ckpt("--resume", resume_arg, rck, sizeof rck) ||
                                                     train_resume_into(run_dir, rck, "--run-dir"))))) {
        fprintf(stderr, "moco run: %s\n", moco_errmsg());
        close(lock_fd);
        return 2;
    }
    /* a checkpoint that ends the run: said as moco train says it, exit 0, before the loader and workers start (before:
     * they started, appended to its loader.jsonl and workers.jsonl, and only the trainer found nothing to train) */
    int64_t ck_epoch = 0; /* resuming: a training run, rck its checkpoint (checked above) */
    int bad = resuming && ckpt_read_epoch(rck, &ck_epoch);
    if (bad || (resuming && ck_epoch >= epochs)) {
        if (bad) fprintf(stderr, "moco run: %s\n", moco_errmsg());
        else fprintf(stderr, "moco run: %s ends the run (epoch %lld of %ld): nothing left to train\n", rck, (long long)ck_epoch, epochs);
        if (made_dir && moco_rundir_drop_empty(run_dir, NULL, &lock_fd, 0) && made_runs) rmdir("runs"); /* resumed from elsewhere */
        if (lock_fd >= 0) close(lock_fd);
        return bad ? 2 : 0;
    }
    /* streamed lincls writes its pipeline's logs (loader.*, workers.*) into --out: never a training run's */
    if (lincls) {
        char held[1200];
        struct stat hs;
        for (int i = 0; i < 2; i++) {
            snprintf(held, sizeof held, "%s/%s", run_dir, i ? MOCO_RUNDIR_LAST : "metrics.jsonl");
            if (stat(held, &hs) == 0) {
                fprintf(stderr, "moco lincls: --out %s holds a training run (%s): its logs (loader.jsonl, workers.jsonl) "
                                "would be replaced by this evaluation's; give another --out\n", run_dir, held);
                close(lock_fd);
                return 2;
            }
        }
    }
    /* the checkpoint the run starts with, if any: a trainer that failed after saving one gets the resume command
     * (a save renames a new file into place; before, an mtime within the starting second counted as saved) */
    char last[1200];
    snprintf(last, sizeof last, "%s/checkpoint_last.safetensors", run_dir);
    struct stat ck0;
    int had_ckpt = stat(last, &ck0) == 0;
    if (!mkdtemp(sockdir)) { /* mode 0700 */
        fprintf(stderr, "moco run: cannot create a socket directory: %s\n", strerror(errno));
        return 1;
    }
    /* the children that bind there remove it as they exit (rmdir: the last
     * one out succeeds), so that it goes also when this supervisor is killed */
    setenv("MOCO_RUN_SOCKDIR", sockdir, 1);
    char work[2300], ctl[1100], pairs[2300], log[1200], host[256] = "", wwork[1100], wpairs[1100];
    long port = 0;
    snprintf(work, sizeof work, "ipc://%s/work", sockdir);
    snprintf(ctl, sizeof ctl, "ipc://%s/ctl", sockdir);
    snprintf(pairs, sizeof pairs, "ipc://%s/pairs", sockdir);
    if (bind) { /* tcp://HOST:PORT: workers at PORT, their pairs to PORT+1 */
        snprintf(host, sizeof host, "%.*s", (int)(strrchr(bind, ':') - bind - 6), bind + 6);
        port = atol(strrchr(bind, ':') + 1);
        /* bound on both: local workers over ipc, remote ones over tcp (CURVE) */
        snprintf(work, sizeof work, "ipc://%s/work,tcp://%s:%ld", sockdir, host, port);
        snprintf(pairs, sizeof pairs, "ipc://%s/pairs,tcp://%s:%ld", sockdir, host, port + 1);
    }
    /* what the local workers connect to */
    snprintf(wwork, sizeof wwork, "ipc://%s/work", sockdir);
    snprintf(wpairs, sizeof wpairs, "ipc://%s/pairs", sockdir);
    if (bind && via_tcp) {
        snprintf(wwork, sizeof wwork, "tcp://%s:%ld", host, port);
        snprintf(wpairs, sizeof wpairs, "tcp://%s:%ld", host, port + 1);
    }
    if (serve) snprintf(ctl, sizeof ctl, "%s", serve);
    char ctl_connect[1100];
    snprintf(ctl_connect, sizeof ctl_connect, "%s", ctl);
    if (hostfile) { /* ranks elsewhere: over tcp (CURVE); they connect by this host's name when bound to every interface */
        char me[256] = "localhost";
        gethostname(me, sizeof me - 1);
        snprintf(ctl, sizeof ctl, "tcp://%s:%ld", host, port + 2);
        snprintf(ctl_connect, sizeof ctl_connect, "tcp://%s:%ld", strcmp(host, "0.0.0.0") && strcmp(host, "*") ? host : me, port + 2);
    }
    char self[4096] = "";
    if (ranks) { /* mpirun starts this program by its path */
        ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
        self[l > 0 ? l : 0] = 0;
    }

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    argvec la = {0}, ca = {0}, wa = {0};
    if (serve && !bench) {
        sink = 0; /* no consumer here: it connects to --serve */
    } else if (!sink) {
        if (ranks) { /* mpirun -np R moco train ...: the loader serves each rank its shard */
            add(&ca, "mpirun");
            addf(&ca, "-np", "%ld", ranks);
            add(&ca, "--bind-to"), add(&ca, "none"); /* each rank runs --threads compute threads */
            add(&ca, "-x"), add(&ca, "MOCO_RUN_SUPERVISED"); /* on every host: the run directory's lock is ours */
            if (hostfile) addf(&ca, "--hostfile", "%s", hostfile);
            else add(&ca, "--oversubscribe"); /* one host: the R ranks asked for, whatever its slots */
            add(&ca, self);
        } else {
            add(&ca, "moco");
        }
        int train_at = ca.n; /* where "train" is */
        for (int i = 0; i < ntheirs; i++) add(&ca, theirs[i]);
        addf(&ca, "--connect", "%s", ctl_connect);
        if (!ranks) addf(&ca, "--bind", "%s", pairs);
        if (keys) addf(&ca, "--keys", "%s", keys);
        if (insecure) add(&ca, "--insecure");
        addf(&ca, "--out", "%s", run_dir);
        addf(&ca, "--epochs", "%ld", epochs);
        if (start_epoch && !resuming) addf(&ca, "--start-epoch", "%ld", start_epoch); /* the loader's first epoch is the trainer's */
        addf(&ca, "--seed", "%llu", (unsigned long long)seed);
        addf(&ca, "--size", "%d", recipe.size);
        addf(&ca, "--count", "%llu", (unsigned long long)count);
        train_cfg tc;
        if (!lincls && train_parse_args(ca.n - train_at, ca.v + train_at, &tc)) {
            free_args(&ca);
            rmdir(sockdir);
            return 2;
        }
    }
    add(&la, "moco");
    add(&la, "loader");
    addf(&la, "--db", "%s", db);
    addf(&la, "--bind", "%s", work);
    addf(&la, "--ctl", "%s", ctl);
    addf(&la, "--epochs", "%ld", epochs);
    addf(&la, "--start-epoch", "%ld", start_epoch);
    addf(&la, "--seed", "%llu", (unsigned long long)seed);
    addf(&la, "--window", "%ld", window);
    addf(&la, "--worker-timeout", "%g", worker_timeout);
    addf(&la, "--max-workers", "%ld", max_workers);
    addf(&la, "--stall-timeout", "%g", stall_timeout);
    addf(&la, "--readmit-after", "%g", readmit_after);
    addf(&la, "--log", "%s/loader.jsonl", run_dir);
    if (serve || ranks) addf(&la, "--pairs", "%s", pairs);
    if (ranks || consumers > 1) addf(&la, "--consumers", "%ld", ranks ? ranks : consumers);
    if (keys) addf(&la, "--keys", "%s", keys);
    if (insecure) add(&la, "--insecure");
    /* the trainer goes quiet during kNN evaluations; if it dies, we stop the loader */
    addf(&la, "--consumer-wait", "%d", 10000000);
    if (quiet) add(&la, "--quiet");
    if (sink) {
        add(&ca, "moco");
        add(&ca, "sink");
        if (!serve) addf(&ca, "--bind", "%s", pairs);
        if (keys) addf(&ca, "--keys", "%s", keys);
        if (insecure) add(&ca, "--insecure");
        addf(&ca, "--connect", "%s", ctl);
        addf(&ca, "--count", "%llu", (unsigned long long)count);
        addf(&ca, "--json", "%s/sink.json", run_dir);
        addf(&ca, "--log", "%s/sink.jsonl", run_dir);
        if (bench) addf(&ca, "--seconds", "%g", seconds);
        if (bench) addf(&ca, "--warmup", "%g", warmup);
        if (quiet) add(&ca, "--quiet");
    }
    add(&wa, "moco");
    add(&wa, "augment");
    addf(&wa, "--connect", "%s", wwork);
    addf(&wa, "--push", "%s", wpairs);
    if (keys) addf(&wa, "--keys", "%s", keys);
    if (insecure) add(&wa, "--insecure");
    /* the recipe, spelled out so that every worker makes the same views */
    addf(&wa, "--recipe", "%s", recipe.name);
    addf(&wa, "--size", "%d", recipe.size);
    addf(&wa, "--seed", "%llu", (unsigned long long)seed);
    for (int i = 1; i < argc; i++) /* pass recipe overrides as given */
        for (int k = 0; k < AUGMENT_FLAGS_NOPTS && opts[k].name; k++) {
            size_t l = strlen(opts[k].name);
            if (k != seed_at && !strncmp(argv[i], "--", 2) && !strncmp(argv[i] + 2, opts[k].name, l) &&
                strcmp(opts[k].name, "recipe") && strcmp(opts[k].name, "size") &&
                (argv[i][2 + l] == 0 || argv[i][2 + l] == '=')) {
                add(&wa, argv[i]);
                if (argv[i][2 + l] == 0 && opts[k].kind != MOCO_OPT_FLAG && i + 1 < argc) add(&wa, argv[++i]);
                break;
            }
        }
    addf(&wa, "--log", "%s/workers.jsonl", run_dir);
    add(&wa, "--quiet");

    pid_t lp, cp, wp[MAX_WORKERS] = {0};
    snprintf(log, sizeof log, "%s/loader.log", run_dir);
    lp = spawn(&la, quiet ? log : NULL);
    snprintf(log, sizeof log, "%s/sink.log", run_dir);
    if (bench) { /* the sink's own summary goes to its log; ours is the last line */
        pid_t p = fork();
        if (p == 0) {
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) dup2(fd, STDOUT_FILENO), close(fd);
            execv("/proc/self/exe", ca.v);
            _exit(127);
        }
        cp = p;
    } else if (ca.n) {
        setenv("MOCO_RUN_SUPERVISED", "1", 1); /* the trainer leaves the resume hint to us */
        cp = spawn(&ca, NULL);
    } else {
        cp = -1; /* serve mode: the consumer is elsewhere */
    }
    snprintf(log, sizeof log, "%s/workers.log", run_dir);
    for (int i = 0; i < workers; i++) wp[i] = spawn(&wa, log);
    if (!quiet) {
        fprintf(stderr, "moco run: %s: %llu samples, %ld epochs, %ld workers, recipe %s at %d px; logs in %s\n", db,
                (unsigned long long)count, epochs, workers, recipe.name, recipe.size, run_dir);
        print_worker_command(&wa, bind ? host : NULL, port);
        if (serve && !bench)
            fprintf(stderr, "moco run: serving %s: connect a consumer, e.g.\n"
                            "  python3: moco_stream.PairStream(\"%s\"%s%s%s)   (tools/python)\n"
                            "  moco sink --connect %s%s%s\n",
                    serve, serve, keys ? ", keys=\"" : "", keys ? keys : "", keys ? "\"" : "", serve, keys ? " --keys " : "",
                    keys ? keys : "");
    }
    int lst = -1, cst = cp > 0 ? -1 : 0, status = 0, respawned = 0, stopping = 0, consumer_done = 0, interrupted = 0;
    int loader_failed = 0, kept = 0; /* kept: the trainer stopped on our SIGTERM and kept its position */
    int consumer_killed = 0;         /* the trainer died of a signal (SIGKILL, the OOM killer): its last checkpoint stands */
    int consumer_failed = 0;         /* ... or failed of itself (refused its flags, its inputs, the stream), not stopped */
    double stop_at = 0, rest_at = 0; /* rest_at: when the loader and workers were told to stop */
    while (lst < 0 || cst < 0) {
        if (got_signal && !stopping) {
            fprintf(stderr, "\nmoco run: %s: stopping every process\n", strsignal(got_signal));
            stopping = 1;
            interrupted = 1;
            stop_at = moco_now_s();
            /* the consumer first: its stop is pending before the loader can
             * end the stream, so a trainer never takes that end for the last
             * epoch's and says "done" (this process may lose the CPU to the
             * loader between two kills) */
            /* ranks: SIGUSR1, which mpirun forwards to them (its SIGTERM kills the job within a
             * second, before a step and a checkpoint can end), and the loader and workers only once
             * mpirun is gone: the loader's end of the stream reached the ranks before the stop did,
             * and they took it for a failure */
            sig(cp, ranks ? SIGUSR1 : SIGTERM);
            if (!ranks) {
                for (int i = 0; i < workers; i++) if (wp[i] > 0) sig(wp[i], SIGTERM);
                sig(lp, SIGTERM);
                rest_at = stop_at;
            }
        }
        if (stopping && !rest_at && (cst >= 0 || moco_now_s() - stop_at > 120)) {
            for (int i = 0; i < workers; i++) if (wp[i] > 0) sig(wp[i], SIGTERM);
            if (lst < 0) sig(lp, SIGTERM); /* never a pid already reaped */
            rest_at = moco_now_s();
        }
        int st;
        pid_t p = waitpid(-1, &st, WNOHANG);
        if (p <= 0) {
            if (stopping && rest_at && moco_now_s() - rest_at > 15) { /* someone ignores SIGTERM */
                if (lst < 0) sig(lp, SIGKILL);
                if (cst < 0) sig(cp, ranks ? SIGTERM : SIGKILL); /* mpirun ends its ranks on SIGTERM */
                for (int i = 0; i < workers; i++) if (wp[i] > 0) sig(wp[i], SIGKILL);
            }
            usleep(50000);
            continue;
        }
        char why[128];
        if (p == lp) {
            lst = st;
            /* a signal to the whole group reaches this process before the
             * loader can die of it: got_signal is set by now, and the loop
             * top stops everything as an interruption */
            if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0) && !consumer_done && !got_signal) {
                if (!stopping) {
                    fprintf(stderr, "moco run: the loader failed (%s)%s%s%s\n", describe(st, why, sizeof why),
                            quiet ? "; its messages are in " : "", quiet ? run_dir : "", quiet ? "/loader.log" : "");
                    loader_failed = 1; /* the trainer's 130 below is our stop, not an interruption */
                }
                status = 1;
                if (!stopping) { stopping = 1; stop_at = moco_now_s(); sig(cp, SIGTERM); }
            }
        } else if (p == cp) {
            cst = st;
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && lst < 0 && !stopping) {
                /* the consumer had enough (--seconds): end the stream */
                stopping = 1;
                stop_at = rest_at = moco_now_s();
                sig(lp, SIGTERM);
                for (int i = 0; i < workers; i++) if (wp[i] > 0) sig(wp[i], SIGTERM);
                consumer_done = 1;
            }
            if (WIFEXITED(st) && WEXITSTATUS(st) == 130) { /* interrupted: it kept a checkpoint */
                interrupted = !loader_failed;
                kept = 1;
                if (!stopping) { stopping = 1; stop_at = rest_at = moco_now_s(); sig(lp, SIGTERM); }
            } else if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
                consumer_killed = WIFSIGNALED(st);
                consumer_failed = !stopping;
                if (!stopping) fprintf(stderr, "moco run: the consumer failed (%s)\n", describe(st, why, sizeof why));
                status = 1;
                if (!stopping) { stopping = 1; stop_at = rest_at = moco_now_s(); sig(lp, SIGTERM); }
            }
        } else {
            for (int i = 0; i < workers; i++)
                if (wp[i] == p) {
                    wp[i] = 0;
                    int clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
                    if (!clean && !stopping && lst < 0) {
                        fprintf(stderr, "moco run: worker %d died (%s)", i, describe(st, why, sizeof why));
                        if (respawned < max_respawn) {
                            wp[i] = spawn(&wa, log);
                            respawned++;
                            fprintf(stderr, "; started a replacement\n");
                        } else {
                            fprintf(stderr, "; not replaced (--max-respawn)\n");
                        }
                    }
                }
        }
    }
    /* loader and consumer are done: workers got STOP; give them a moment.
     * After a failure (a refused run: the trainer may exit before a worker
     * has joined, and then no STOP reaches it) there is nothing of theirs to
     * wait for: they are stopped at once, not after 5 s */
    double t = moco_now_s(), grace = status ? 0 : 5;
    for (;;) {
        int left = 0;
        for (int i = 0; i < workers; i++)
            if (wp[i] > 0) {
                if (waitpid(wp[i], NULL, WNOHANG) == wp[i]) wp[i] = 0;
                else left++;
            }
        if (!left) break;
        if (moco_now_s() - t >= grace)
            for (int i = 0; i < workers; i++) if (wp[i] > 0) sig(wp[i], moco_now_s() - t > 10 ? SIGKILL : SIGTERM);
        usleep(50000);
    }
    char sock[200];
    const char *names[] = {"work", "ctl", "pairs"};
    for (int i = 0; i < 3; i++) {
        snprintf(sock, sizeof sock, "%s/%s", sockdir, names[i]);
        unlink(sock);
    }
    rmdir(sockdir);
    free_args(&la);
    free_args(&ca);
    free_args(&wa);
    if (interrupted) status = 130; /* whatever the others said while stopping */
    if (bench) {
        run_bench_summary(run_dir, workers);
        if (bench_tmp && !status) run_remove_logs(run_dir);
        else if (bench_tmp) fprintf(stderr, "moco bench pipeline: its logs are kept in %s\n", run_dir);
    } else {
        fprintf(stderr, "moco run: %s; %d worker%s replaced\n", status == 130 ? "interrupted" : status ? "FAILED" : "finished",
                respawned, respawned == 1 ? "" : "s");
    }
    /* interrupted, a trainer stopped because the loader failed, a trainer
     * killed by a signal, or (ranks) a rank that died: the last checkpoint
     * holds every rank's position */
    /* ... or a trainer that failed after it saved a checkpoint in this run (a full disk) */
    struct stat ckst;
    int saved_now = stat(last, &ckst) == 0 &&
                    (!had_ckpt || ckst.st_ino != ck0.st_ino || ckst.st_dev != ck0.st_dev ||
                     ckst.st_mtim.tv_sec != ck0.st_mtim.tv_sec || ckst.st_mtim.tv_nsec != ck0.st_mtim.tv_nsec);
    if ((status == 130 || (loader_failed && kept) || (status && (ranks || consumer_killed || saved_now))) && !bench && !sink &&
        !lincls && !serve && access(last, R_OK) == 0)
        print_resume(argc, argv, run_dir);
    /* a loader that failed before it served (a --serve port in use), or a trainer that failed before it read a sample
     * (refused its flags or a --knn-train; its reason on stderr): the directory made for the run goes, with the workers'
     * summaries of 0 pairs and, after the trainer's failure, the loader's logs of a run that sent nothing; a --run-dir
     * that was there, empty, is left empty (before: left with those logs, and the corrected command refused it). A
     * loader's log that records more (records that failed in the workers: why no step was trained) stays */
    static const char *const idle_logs[] = {"workers.jsonl", "workers.log", NULL},
                             *const pipe_logs[] = {"loader.jsonl", "loader.log", "workers.jsonl", "workers.log", NULL};
    int trainer_failed = consumer_failed && !loader_failed && !bench && !sink && !lincls && !serve && run_nothing_sent(run_dir);
    int was_empty = !made_dir && !bench_tmp && !sink && !lincls && !serve && !resuming && !overwrite;
    if ((made_dir || was_empty) && (loader_failed || trainer_failed) &&
        moco_rundir_drop_empty(run_dir, trainer_failed ? pipe_logs : idle_logs, &lock_fd, was_empty) && made_runs)
        rmdir("runs");
    if (lock_fd >= 0) close(lock_fd);
    return status;
}
