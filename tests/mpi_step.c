/* mpi_step.c: data-parallel MoCo (trainer/dist.h, moco_set_comm) checked
 * under `mpirun -np R` (R >= 2; tests/cli_mpi_step.sh runs R = 2). Every
 * rank checks, and the program exits non-zero on every rank if any check
 * failed anywhere:
 *   1. the comm on its own: bucket averages exact and bit-identical, also
 *      for buckets shorter than R and not multiples of R; the small
 *      collectives (sum, min, or, broadcast from every root); dist_same
 *      and dist_check_weights refuse differing ranks, naming rank 1;
 *   2. over 5 steps (asymmetric with 2048-float gradient buckets, and
 *      symmetric + MLP head with the default 1M buckets), R ranks at batch
 *      B with s BN splits compute the same losses (mean over ranks) and the
 *      same query and key weights, SGD momentum, BN counters and queue as
 *      one process at batch R x B with R x s splits, within the float32
 *      tolerances stated below. The one-process reference (computed on
 *      every rank) sees the same pairs and key permutations, arranged so
 *      its BN groups are the ranks' groups: split BN takes rows n % S, so
 *      reference row R*s*t + r*s + j is rank r's row s*t + j (for the
 *      queries, and for the permuted keys: the ranks' permutations become
 *      one block-diagonal permutation in that order); the queue is then
 *      compared column for column through the same map. BN running
 *      statistics are not compared with the reference: every rank takes
 *      rank 0's (as DDP's broadcast_buffers), the reference averages all;
 *   3. after every step every rank's whole state is bit-identical (the
 *      bytes of each part hashed and compared across ranks);
 *   4. rank r draws its own key permutations; rank 0's are those of a
 *      single process;
 *   5. K not a multiple of R x N x directions is refused; a NaN on rank 1
 *      stops every rank with MOCO_ENUMERIC naming rank 1, weights
 *      unchanged, and the check then finds the ranks' BN statistics apart;
 *   6. the periodic check inside moco_step (MOCO_DIST_CHECK=1, set here
 *      before dist_init: every step): weights that drifted apart on rank 1
 *      fail the next step on every rank with MOCO_ENUMERIC naming rank 1.
 * `mpi_step --shards ...` (no mpirun) prints the loader's shards instead
 * (print_shards). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/errors.h"
#include "formats/rng.h"
#include "loader/stream.h"
#include "trainer/dist.h"
#include "trainer/engine/blascore.h"
#include "trainer/engine/moco.h"
#include "trainer/engine/par.h"

/* float32 tolerances against the one-process reference (relative to the
 * largest magnitude of the expected tensor, or of the weights' change from
 * their initial values); measured differences are printed */
#define TOL_LOSS 1e-5
#define TOL_WEIGHTS 1e-4
#define TOL_FREE 1e-3 /* the free-running reference, after 5 steps (see test_steps) */

static int nfail, RANK, R;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (!(cond)) {                                                    \
            nfail++;                                                      \
            printf("rank %d: FAIL %s:%d: ", RANK, __FILE__, __LINE__);     \
            printf(__VA_ARGS__);                                          \
            printf("\n");                                                 \
            fflush(stdout);                                               \
        }                                                                 \
    } while (0)

#define OK(call) CHECK((call) == 0, "%s: %s", #call, moco_errmsg())

/* Largest |got - want| / max(max|want|, 1e-3) over n values. */
static double reldiff(const float *got, const float *want, size_t n)
{
    double md = 0, sc = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= md)) md = d;
        sc = fmax(sc, fabs(want[i]));
    }
    return md / fmax(sc, 1e-3);
}

/* 1. the comm and the small collectives on their own */
static void test_comm(dist *d)
{
    const moco_comm *c = dist_comm(d);
    CHECK(c->rank == RANK && c->size == R, "comm says rank %d of %d", c->rank, c->size);
    /* buckets of every awkward size, one started at a time like backward */
    enum { NG = 3000 };
    static float g[NG];
    for (int i = 0; i < NG; i++) g[i] = (float)i + (float)RANK;
    const size_t cuts[] = {NG, 1999, 998, 997, 3, 1, 0}; /* ranges [cuts[i+1], cuts[i]) */
    for (int i = 0; cuts[i]; i++) OK(c->grad_ready(c->ctx, g, cuts[i + 1], cuts[i] - cuts[i + 1]));
    OK(c->grad_ready(c->ctx, g, 0, 0)); /* a poke */
    OK(c->grad_wait(c->ctx));
    int bad = 0;
    for (int i = 0; i < NG; i++) bad += g[i] != (float)i + (float)(R - 1) / 2.0f; /* exact: small integers and halves */
    CHECK(!bad, "%d of %d averaged gradients wrong (g[0] %g, want %g)", bad, NG, (double)g[0], (R - 1) / 2.0);
    OK(dist_same(d, g, sizeof g, "averaged gradients"));
    /* the additions' order: (1 + 2^-24 + ...) is not associative; whatever
     * it gives, every rank must get the same bits */
    for (int i = 0; i < NG; i++) g[i] = RANK % 2 ? 1e-8f * (float)(i + 1) : 1.0f + (float)i * 1e-3f;
    OK(c->grad_ready(c->ctx, g, 0, NG));
    OK(c->grad_wait(c->ctx));
    OK(dist_same(d, g, sizeof g, "averaged small gradients"));
    CHECK(dist_wait_seconds(d) >= 0, "negative wait");
    /* all-gather, broadcast */
    float loc[3] = {(float)RANK, 1.5f, -(float)RANK}, all[3 * 64];
    if (R <= 64) {
        OK(c->allgather(c->ctx, loc, all, 3));
        for (int r = 0; r < R; r++) CHECK(all[3 * r] == r && all[3 * r + 2] == -r, "all-gather: rank %d's part wrong", r);
    }
    for (int root = 0; root < R; root++) {
        uint64_t v = RANK == root ? 1000u + (uint64_t)root : 7;
        OK(dist_bcast(d, &v, sizeof v, root));
        CHECK(v == 1000u + (uint64_t)root, "broadcast from %d gave %llu", root, (unsigned long long)v);
    }
    CHECK(dist_bcast(d, loc, 4, R) == MOCO_EINVAL, "broadcast from a rank that does not exist accepted");
    double s[2] = {RANK + 1.0, 0.1 * RANK};
    OK(dist_sum_d(d, s, 2));
    CHECK(s[0] == R * (R + 1) / 2.0 && fabs(s[1] - 0.05 * R * (R - 1)) < 1e-12, "sum %g %g", s[0], s[1]);
    OK(dist_same(d, s, sizeof s, "sums"));
    int mn = 10 - RANK;
    OK(dist_min_i(d, &mn));
    CHECK(mn == 11 - R, "min %d, want %d", mn, 11 - R);
    uint8_t bits[8] = {0};
    bits[(RANK / 8) % 8] |= (uint8_t)(1u << (RANK % 8));
    OK(dist_bor(d, bits, sizeof bits));
    for (int r = 0; r < R && r < 64; r++) CHECK(bits[r / 8] >> (r % 8) & 1, "or: bit of rank %d missing", r);
    /* differing bytes are found and named */
    int mine = RANK > 0;
    int rc = dist_same(d, &mine, sizeof mine, "a test flag");
    CHECK(rc == MOCO_EINVAL && strstr(moco_errmsg(), "ranks differ in a test flag: rank 1"), "dist_same: %d, '%s'", rc, moco_errmsg());
    if (!RANK) printf("comm: averages exact and bit-identical; collectives right; dist_same: %s\n", moco_errmsg());
}

/* the state compared across ranks after every step */
static void same_state(dist *d, const moco *mc, int step)
{
    char w[64];
    snprintf(w, sizeof w, "query parameters after step %d", step);
    OK(dist_same(d, mc->q->params, sizeof(float) * mc->q->nparams, w));
    snprintf(w, sizeof w, "momentum after step %d", step);
    OK(dist_same(d, mc->q->momentum, sizeof(float) * mc->q->nparams, w));
    snprintf(w, sizeof w, "key parameters after step %d", step);
    OK(dist_same(d, mc->k->params, sizeof(float) * mc->k->nparams, w));
    snprintf(w, sizeof w, "BN buffers after step %d", step);
    OK(dist_same(d, mc->q->buffers, sizeof(float) * mc->q->nbuffers, w));
    OK(dist_same(d, mc->k->buffers, sizeof(float) * mc->k->nbuffers, w));
    snprintf(w, sizeof w, "BN counters after step %d", step);
    OK(dist_same(d, mc->q->counts, sizeof(int64_t) * mc->q->ncounts, w));
    OK(dist_same(d, mc->k->counts, sizeof(int64_t) * mc->k->ncounts, w));
    snprintf(w, sizeof w, "queue after step %d", step);
    OK(dist_same(d, mc->queue, sizeof(float) * (size_t)mc->cfg.enc.dim * mc->cfg.K, w));
    int64_t ps[2] = {mc->ptr, mc->steps};
    OK(dist_same(d, ps, sizeof ps, "queue pointer and step"));
    OK(dist_check_weights(d, mc));
}

/* reference row of rank r's row n (s BN splits per rank) */
static size_t pos(int r, size_t n, int s) { return (size_t)R * s * (n / s) + (size_t)r * s + n % s; }

/* queue columns: in every block of R*B, rank r's key n is column r*B + n
 * here, pos(r, n) in the reference; to_ref 1 maps ours to the reference's */
static void map_queue(float *dst, const float *src, int D, int K, int B, int S, int to_ref)
{
    for (int blk = 0; blk < K; blk += R * B)
        for (int r = 0; r < R; r++)
            for (int n = 0; n < B; n++) {
                size_t a = (size_t)blk + (size_t)r * B + n, b = (size_t)blk + pos(r, n, S);
                for (int d = 0; d < D; d++)
                    if (to_ref) dst[(size_t)d * K + b] = src[(size_t)d * K + a];
                    else dst[(size_t)d * K + a] = src[(size_t)d * K + b];
            }
}

/* 2-4. R ranks at batch B against one process at R x B. Each step starts
 * the reference from the ranks' state (weights, momentum, BN buffers,
 * queue through the column map): so every step is compared on its own,
 * and float32 differences do not compound (over 5 steps without this, one
 * seed's fifth step moved an early BN bias by 3e-4 where the others stayed
 * near 1e-6: a ReLU or BN near-tie flipped by rounding, as in the golden
 * cases of trainer/README.md). A second reference runs free, never reset,
 * as a trajectory: its loss at every step and its weights after the last
 * are checked at the looser TOL_FREE. */
static void test_steps(dist *d, int sym, int mlp, size_t bucket)
{
    enum { B = 8, S = 2, SZ = 16, DIM = 16, STEPS = 5 };
    const int dirs = sym ? 2 : 1, K = 4 * R * B; /* 64 for 2 ranks */
    moco_cfg cfg = {.enc = {.arch = "resnet18-cifar", .width = 4, .mlp = mlp, .dim = DIM, .bn_splits = S, .batch = B, .size = SZ},
                    .K = K, .m = 0.99f, .T = 0.2f, .symmetric = sym, .lr = 0.06f, .sgd_momentum = 0.9f, .weight_decay = 5e-4f, .seed = 21};
    moco_cfg rcfg = cfg;
    rcfg.enc.batch = R * B, rcfg.enc.bn_splits = R * S;
    moco *mc = NULL, *ref = NULL, *solo = NULL, *fr = NULL;
    if (moco_new(&cfg, &mc) || moco_set_comm(mc, dist_comm(d)) || moco_new(&rcfg, &ref) || moco_new(&cfg, &solo) ||
        moco_new(&rcfg, &fr)) {
        CHECK(0, "set-up: %s", moco_errmsg());
        goto out;
    }
    mc->bucket_floats = getenv("MPI_STEP_BUCKET") ? (size_t)atol(getenv("MPI_STEP_BUCKET")) : bucket;
    const size_t img = 3 * SZ * SZ, P = mc->q->nparams, NB = mc->q->nbuffers, QN = (size_t)DIM * K;
    float *xg = malloc(sizeof(float) * 2 * R * B * img), *xr = malloc(sizeof(float) * 2 * R * B * img);
    float *q0 = calloc(P, sizeof(float)), *k0 = calloc(P, sizeof(float)), *dg = calloc(P, sizeof(float)), *dw = calloc(P, sizeof(float));
    float *qmap = calloc(QN, sizeof(float));
    uint64_t *perms = malloc(sizeof(uint64_t) * (size_t)R * dirs * B), *pref = malloc(sizeof(uint64_t) * (size_t)R * dirs * B);
    CHECK(!memcmp(mc->q->params, ref->q->params, sizeof(float) * P), "reference starts from other weights");
    if (!RANK)
        printf("%s%s, resnet18-cifar width 4, %dx%d, %d ranks x batch %d (%d BN splits) against 1 x %d (%d splits), K %d, "
               "%zu parameters, buckets of %zu floats\n",
               sym ? "symmetric" : "asymmetric", mlp ? " + MLP head" : "", SZ, SZ, R, B, S, R * B, R * S, K, P, mc->bucket_floats);
    double worst[5] = {0}, worst_free = 0; /* loss, query weights, momentum, key weights, queue; free-running loss */
    for (int step = 0; step < STEPS; step++) {
        /* the reference starts from our state */
        memcpy(ref->q->params, mc->q->params, sizeof(float) * P);
        memcpy(ref->q->momentum, mc->q->momentum, sizeof(float) * P);
        memcpy(ref->k->params, mc->k->params, sizeof(float) * P);
        memcpy(ref->q->buffers, mc->q->buffers, sizeof(float) * NB);
        memcpy(ref->k->buffers, mc->k->buffers, sizeof(float) * NB);
        map_queue(ref->queue, mc->queue, DIM, K, B, S, 1);
        CHECK(ref->ptr == mc->ptr && ref->steps == mc->steps, "step %d: pointer or step count apart", step);
        memcpy(q0, mc->q->params, sizeof(float) * P);
        memcpy(k0, mc->k->params, sizeof(float) * P);
        /* the global pairs, the same on every rank; rank r's are [r*B, r*B + B) */
        moco_rng g;
        moco_rng_init(&g, 21, 50, (uint64_t)step, 0);
        for (size_t i = 0; i < 2 * (size_t)R * B * img; i++) xg[i] = (float)(moco_rng_uniform(&g) * 4 - 2);
        const float *x1 = xg + (size_t)RANK * B * img, *x2 = xg + ((size_t)R * B + (size_t)RANK * B) * img;
        /* every rank's key permutations, from its own stream */
        uint64_t *mine = perms + (size_t)RANK * dirs * B;
        for (int dir = 0; dir < dirs; dir++) moco_key_perm(mc, step, dir, mine + dir * B);
        for (int r = 0; r < R; r++) OK(dist_bcast(d, perms + (size_t)r * dirs * B, sizeof(uint64_t) * dirs * B, r));
        uint64_t p0[B];
        moco_key_perm(solo, step, 0, p0);
        CHECK(!memcmp(p0, perms, sizeof p0), "rank 0's permutation is not the single-process one at step %d", step);
        CHECK(memcmp(perms, perms + (size_t)dirs * B, sizeof p0), "ranks 0 and 1 drew the same permutation at step %d", step);
        /* the reference's pairs and permutations, in BN-group order */
        for (int v = 0; v < 2; v++)
            for (int r = 0; r < R; r++)
                for (int n = 0; n < B; n++)
                    memcpy(xr + ((size_t)v * R * B + pos(r, n, S)) * img, xg + ((size_t)v * R * B + (size_t)r * B + n) * img,
                           sizeof(float) * img);
        for (int dir = 0; dir < dirs; dir++)
            for (int r = 0; r < R; r++)
                for (int i = 0; i < B; i++)
                    pref[(size_t)dir * R * B + pos(r, i, S)] = pos(r, perms[((size_t)r * dirs + dir) * B + i], S);
        moco_stats st, rst;
        OK(moco_step(mc, x1, x2, NULL, 0.06f, &st));
        OK(moco_step(ref, xr, xr + (size_t)R * B * img, pref, 0.06f, &rst));
        moco_stats fst;
        OK(moco_step(fr, xr, xr + (size_t)R * B * img, pref, 0.06f, &fst));
        double ef = fabs((double)st.loss_all - fst.loss) / fmax(fabs(fst.loss), 1e-3);
        worst_free = fmax(worst_free, ef);
        CHECK(ef <= TOL_FREE, "step %d: loss %.7f, the free-running one process %.7f", step, (double)st.loss_all, (double)fst.loss);
        double sum = st.loss;
        OK(dist_sum_d(d, &sum, 1));
        double e[5];
        e[0] = fabs((double)st.loss_all - rst.loss) / fmax(fabs(rst.loss), 1e-3);
        for (size_t i = 0; i < P; i++) dg[i] = mc->q->params[i] - q0[i], dw[i] = ref->q->params[i] - q0[i];
        e[1] = reldiff(dg, dw, P);
        e[2] = reldiff(mc->q->momentum, ref->q->momentum, P);
        for (size_t i = 0; i < P; i++) dg[i] = mc->k->params[i] - k0[i], dw[i] = ref->k->params[i] - k0[i];
        e[3] = reldiff(dg, dw, P);
        map_queue(qmap, ref->queue, DIM, K, B, S, 0);
        e[4] = reldiff(mc->queue, qmap, QN);
        for (int i = 0; i < 5; i++) worst[i] = fmax(worst[i], e[i]);
        if (!RANK)
            printf("  step %d: loss %.6f (ranks %.6f), one process %.6f; acc %.2f%%, one process %.2f%%; relative differences: "
                   "loss %.2g, query weights (change) %.2g, momentum %.2g, key weights (change) %.2g, queue %.2g\n",
                   step, (double)st.loss_all, sum / R, (double)rst.loss, (double)st.acc_all, (double)rst.acc, e[0], e[1], e[2], e[3], e[4]);
        CHECK(e[0] <= TOL_LOSS, "step %d: loss %.7f, one process %.7f", step, (double)st.loss_all, (double)rst.loss);
        CHECK(e[1] <= TOL_WEIGHTS && e[2] <= TOL_WEIGHTS && e[3] <= TOL_WEIGHTS && e[4] <= TOL_WEIGHTS,
              "step %d: state differs from one process: q %.3g momentum %.3g k %.3g queue %.3g", step, e[1], e[2], e[3], e[4]);
        CHECK(e[1] > 0 || e[2] > 0, "step %d: bit-identical to one process: suspicious (the comparison sees nothing)", step);
        CHECK(fabs(sum / R - st.loss_all) <= 1e-6 * fabs(sum), "mean loss %.7f, the ranks' losses give %.7f", (double)st.loss_all, sum / R);
        CHECK(fabs(st.acc_all - rst.acc) <= 100.0 / (R * B) + 1e-3, "step %d: accuracy %.2f, one process %.2f", step,
              (double)st.acc_all, (double)rst.acc);
        CHECK(!memcmp(mc->q->counts, ref->q->counts, sizeof(int64_t) * mc->q->ncounts), "BN counters differ from one process");
        CHECK(mc->ptr == ref->ptr, "step %d: queue pointer %lld, one process %lld", step, (long long)mc->ptr, (long long)ref->ptr);
        same_state(d, mc, step);
    }
    if (!RANK)
        printf("  worst over %d steps: loss %.2g (tolerance %.0e); query weights %.2g, momentum %.2g, key weights %.2g, queue %.2g "
               "(tolerance %.0e)\n",
               STEPS, worst[0], TOL_LOSS, worst[1], worst[2], worst[3], worst[4], TOL_WEIGHTS);
    /* the trajectory: after 5 steps, against the reference that ran free */
    double fq = reldiff(mc->q->params, fr->q->params, P), fk = reldiff(mc->k->params, fr->k->params, P);
    map_queue(qmap, fr->queue, DIM, K, B, S, 0);
    double fqu = reldiff(mc->queue, qmap, QN);
    if (!RANK)
        printf("  free-running over %d steps: worst loss %.2g; after the last, query weights %.2g, key weights %.2g, queue %.2g "
               "(tolerance %.0e)\n", STEPS, worst_free, fq, fk, fqu, TOL_FREE);
    CHECK(fq <= TOL_FREE && fk <= TOL_FREE && fqu <= TOL_FREE, "after %d free-running steps: q %.3g k %.3g queue %.3g", STEPS, fq,
          fk, fqu);
    CHECK(fq > 0, "after %d steps bit-identical to one process: suspicious (the comparison sees nothing)", STEPS);
    free(dg), free(dw), free(qmap), free(xg), free(xr), free(q0), free(k0), free(perms), free(pref);
out:
    moco_destroy(&mc);
    moco_destroy(&ref);
    moco_destroy(&solo);
    moco_destroy(&fr);
}

/* 5. refusals and a NaN on one rank */
static void test_refusals(dist *d)
{
    /* K = 16 (R + 1): a multiple of batch 8 x 2 directions, not of R x 16 */
    moco_cfg cfg = {.enc = {.arch = "resnet18-cifar", .width = 4, .mlp = 0, .dim = 8, .bn_splits = 2, .batch = 8, .size = 8},
                    .K = 16 * (R + 1), .m = 0.99f, .T = 0.2f, .symmetric = 1, .lr = 0.06f, .sgd_momentum = 0.9f, .weight_decay = 5e-4f, .seed = 3};
    moco *mc = NULL;
    OK(moco_new(&cfg, &mc));
    int rc = moco_set_comm(mc, dist_comm(d));
    CHECK(rc == MOCO_EINVAL && strstr(moco_errmsg(), "multiple of ranks x batch x directions"), "K=%d with %d ranks: %d '%s'", cfg.K,
          R, rc, moco_errmsg());
    if (!RANK) printf("refused: %s\n", moco_errmsg());
    moco_destroy(&mc);
    cfg.K = 16 * R * 2, cfg.symmetric = 0;
    OK(moco_new(&cfg, &mc));
    OK(moco_set_comm(mc, dist_comm(d)));
    const size_t nx = 8 * 3 * 8 * 8;
    float *x = malloc(sizeof(float) * 2 * nx), *before = malloc(sizeof(float) * mc->q->nparams);
    moco_rng g;
    moco_rng_init(&g, 3, 60, (uint64_t)RANK, 0);
    for (size_t i = 0; i < 2 * nx; i++) x[i] = (float)(moco_rng_uniform(&g) * 2 - 1);
    moco_stats st;
    OK(moco_step(mc, x, x + nx, NULL, 0.06f, &st));
    memcpy(before, mc->q->params, sizeof(float) * mc->q->nparams);
    if (RANK == 1) x[7] = NAN;
    rc = moco_step(mc, x, x + nx, NULL, 0.06f, &st);
    CHECK(rc == MOCO_ENUMERIC && strstr(moco_errmsg(), "on rank 1 of"), "NaN on rank 1: %d '%s'", rc, moco_errmsg());
    CHECK(!memcmp(before, mc->q->params, sizeof(float) * mc->q->nparams), "weights changed by a failed step");
    if (!RANK) printf("NaN on rank 1: %s\n", moco_errmsg());
    rc = dist_check_weights(d, mc); /* rank 1's BN statistics saw the NaN */
    CHECK(rc == MOCO_ENUMERIC && strstr(moco_errmsg(), "BN running statistics of rank 1"), "check after a NaN: %d '%s'", rc,
          moco_errmsg());
    if (!RANK) printf("check: %s\n", moco_errmsg());
    free(x), free(before);
    moco_destroy(&mc);
}

static void test_periodic_check(dist *d)
{
    moco_cfg cfg = {.enc = {.arch = "resnet18-cifar", .width = 4, .mlp = 0, .dim = 8, .bn_splits = 2, .batch = 8, .size = 8},
                    .K = 16 * R, .m = 0.99f, .T = 0.2f, .lr = 0.06f, .sgd_momentum = 0.9f, .weight_decay = 5e-4f, .seed = 3};
    moco *mc = NULL;
    OK(moco_new(&cfg, &mc));
    OK(moco_set_comm(mc, dist_comm(d)));
    const size_t nx = 8 * 3 * 8 * 8;
    float *x = malloc(sizeof(float) * 2 * nx);
    moco_rng g;
    moco_rng_init(&g, 3, 61, (uint64_t)RANK, 0);
    for (size_t i = 0; i < 2 * nx; i++) x[i] = (float)(moco_rng_uniform(&g) * 2 - 1);
    moco_stats st;
    OK(moco_step(mc, x, x + nx, NULL, 0.06f, &st)); /* in step: the check passes */
    if (RANK == 1) mc->q->params[5] += 1e-3f;      /* a bug or a bit flip on rank 1 */
    int rc = moco_step(mc, x, x + nx, NULL, 0.06f, &st);
    CHECK(rc == MOCO_ENUMERIC && strstr(moco_errmsg(), "ranks diverged") && strstr(moco_errmsg(), "of rank 1 "),
          "drifted weights on rank 1: %d '%s'", rc, moco_errmsg());
    if (!RANK) printf("periodic check: %s\n", moco_errmsg());
    free(x);
    moco_destroy(&mc);
}

/* `mpi_step --shards SEED EPOCH N R`, without mpirun: the rank whose shard
 * holds each sample of that epoch in the loader's serve mode (position p of
 * loader_epoch_order goes to rank p % R), a line "index rank" per sample
 * (tests/cli_mpi_step.sh builds a dataset from it). */
static int print_shards(char **argv)
{
    uint64_t n = strtoull(argv[4], NULL, 10), R = strtoull(argv[5], NULL, 10);
    uint64_t *perm = n ? malloc(sizeof *perm * n) : NULL;
    if (!perm || !R) return 2;
    loader_epoch_order(strtoull(argv[2], NULL, 10), (uint32_t)strtoul(argv[3], NULL, 10), perm, n);
    for (uint64_t p = 0; p < n; p++) printf("%llu %llu\n", (unsigned long long)perm[p], (unsigned long long)(p % R));
    free(perm);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "--shards")) return print_shards(argv);
    dist *d;
    blas_core_restart(argv); /* OpenBLAS's kernels as in bin/moco (trainer/engine/blascore.h) */
    setenv("MOCO_DIST_CHECK", "1", 1); /* the periodic check after every step (test 6) */
    if (dist_init(&argc, &argv, &d)) {
        fprintf(stderr, "mpi_step: %s\n", moco_errmsg());
        return 1;
    }
    RANK = dist_rank(d), R = dist_size(d);
    if (R < 2) {
        fprintf(stderr, "mpi_step: run it under mpirun -np 2 (or more); this is a single process\n");
        dist_finalize(&d);
        return 2;
    }
    par_set_threads(1);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_comm(d);
    test_steps(d, 0, 0, 2048);
    test_steps(d, 1, 1, RN_BUCKET_FLOATS);
    test_refusals(d);
    test_periodic_check(d);
    int ok = nfail == 0;
    if (dist_min_i(d, &ok)) ok = 0;
    if (!RANK) printf("%s: %d ranks, %d failed checks on rank 0\n", ok ? "PASS" : "FAIL", R, nfail);
    dist_finalize(&d);
    return ok ? 0 : 1;
}
