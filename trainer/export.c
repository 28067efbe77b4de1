/* export.c: `moco export` and `moco embed`, taking trained weights out.
 * export: the query encoder's backbone (the projection head dropped, as the
 *   papers do downstream; --with-head keeps it) as a plain state_dict with
 *   torchvision's names (encoder_q. stripped), for torchvision's
 *   load_state_dict (strict=False without the head; strict with it). The
 *   checkpoint is checked first (checksum, no NaN or infinite weights, every
 *   tensor's name, dtype and shape against the encoder its config
 *   describes, as knn loads it, none extra), and
 *   its description (arch, width, mlp, dim) goes into the metadata
 *   ("moco.arch", "moco.encoder").
 * embed: the pooled backbone features (or, with --head, the head's
 *   outputs) of every sample of a dataset in index order, not normalised:
 *   a NumPy .npy file (float32 (N, F); labels, when the dataset has them,
 *   in OUT-without-.npy.labels.npy as int64 (N)) or, for OUT.safetensors
 *   (or .st), safetensors (features F32 (N, F), labels I64 (N)); another
 *   extension is refused, as export refuses any but those two. Written atomically;
 *   the .npy pair is consistent: both files are written to temporaries
 *   first (nothing replaced when either fails), and an unlabelled dataset
 *   removes an old OUT.labels.npy (said on stderr).
 * Neither command writes onto its --ckpt (the same file: device and inode,
 * a link to it included): refused before anything is written. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/errors.h"
#include "formats/rundir.h"
#include "formats/jsonw.h"
#include "formats/opts.h"
#include "formats/replace.h"
#include "formats/safetensors.h"
#include "trainer/engine/ckpt.h"
#include "trainer/evalmodel.h"
#include "trainer/evalset.h"
#include "trainer/export.h"

/* out (or its link's file) is the checkpoint ckpt: MOCO_EINVAL naming both, as cp's "are the same file" */
static int not_the_ckpt(const char *out, const char *ckpt)
{
    struct stat a, b;
    if (!ckpt || stat(out, &a) || stat(ckpt, &b) || a.st_dev != b.st_dev || a.st_ino != b.st_ino) return 0;
    return moco_err(MOCO_EINVAL, "--out %s is the checkpoint --ckpt %s (the same file): writing it would destroy the checkpoint; "
                    "give another --out", out, ckpt);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcasecmp(s + a - b, suffix);
}

/* The format --out's extension names: OUT_NPY (.npy, embed only) or OUT_ST
 * (.safetensors, .st); any other name is refused (0, said naming the
 * supported ones): a features.bin or encoder.pt held safetensors that
 * np.fromfile or torch.load then misread or refused. */
enum { OUT_NPY = 1, OUT_ST = 2 };
static int out_format(const char *cmd, const char *out, int npy_ok)
{
    if (npy_ok && ends_with(out, ".npy")) return OUT_NPY;
    if (ends_with(out, ".safetensors") || ends_with(out, ".st")) return OUT_ST;
    if (npy_ok)
        fprintf(stderr, "moco %s: --out %s: moco %s writes FILE.npy (NumPy; labels in FILE.labels.npy) or FILE.safetensors "
                        "(or FILE.st): give one of those\n", cmd, out, cmd);
    else
        fprintf(stderr, "moco %s: --out %s: moco %s writes safetensors only: give FILE.safetensors (or FILE.st), and load it "
                        "with safetensors.torch.load_file or moco_stream.torch.load_safetensors, not torch.load\n", cmd, out, cmd);
    return 0;
}

int export_main(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *which = "encoder_q";
    int with_head = 0;
    const moco_opt opts[] = {
        {"ckpt", MOCO_OPT_STR, &ckpt, "checkpoint written by moco train, or a run directory (its checkpoint_last)", 0, 0, NULL},
        {"out", MOCO_OPT_STR, &out, "safetensors file to write: FILE.safetensors (or .st)", 0, 0, NULL},
        {"encoder", MOCO_OPT_CHOICE, &which, "which encoder", 0, 0, "encoder_q|encoder_k"},
        {"with-head", MOCO_OPT_FLAG, &with_head, "keep the projection head (fc.*); without it, the backbone only", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco export", "--ckpt CKPT --out FILE [options]",
                               "Write the backbone of a checkpoint's encoder (the projection head dropped) with torchvision's\n"
                               "state_dict names, e.g. for torchvision.models.resnet50().load_state_dict(\n"
                               "moco_stream.torch.load_safetensors(FILE), strict=False) (tools/python; or the safetensors\n"
                               "package's safetensors.torch.load_file where it is installed); --with-head keeps fc.* too.\n"
                               "Feed it inputs normalised as its metadata's moco.encoder says (normalize, mean, std).",
                               opts, 0, 0, "ckpt out"};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    if (!out_format("export", out, 0)) return 2;
    moco_st *f;
    moco_ckpt_config cc;
    char ckpt_path[4200]; /* a run directory: its checkpoint_last */
    if ((rc = moco_rundir_ckpt("--ckpt", ckpt, ckpt_path, sizeof ckpt_path))) {
        fprintf(stderr, "moco export: %s\n", moco_errmsg());
        return 1;
    }
    ckpt = ckpt_path;
    if ((rc = not_the_ckpt(out, ckpt)) || (rc = ckpt_open(ckpt, &f, &cc))) { /* checksum; NaN or infinite weights refused */
        fprintf(stderr, "moco export: %s\n", moco_errmsg());
        return 1;
    }
    /* the encoder the config describes, built as knn builds it, and the
     * checkpoint checked against it as a load does: every tensor there with
     * its dtype and shape, none extra (a missing tensor, an I32 one, a
     * forged name were exported before) */
    evalmodel_flags ef;
    moco_opt eo[EVALMODEL_NOPTS + 1];
    evalmodel_opts(&ef, eo, "batch");
    ef.ckpt = ckpt, ef.batch = 2, ef.threads = 1; /* 2: BN needs two samples */
    ef.kernels = "rule", ef.precision = "fp32";   /* a check, not a figure */
    resnet *m = NULL;
    char pfx[16];
    float mean[3], sd[3];
    snprintf(pfx, sizeof pfx, "%s.", which);
    if ((rc = evalmodel_open(&ef, &m, mean, sd)) || (rc = ckpt_check_encoder(f, ckpt, m, pfx))) {
        fprintf(stderr, "moco export: %s\n", moco_errmsg());
        rn_destroy(&m);
        moco_st_destroy(&f);
        return 1;
    }
    rn_destroy(&m);
    int n = moco_st_count(f), k = 0;
    size_t pl = strlen(which) + 1;
    moco_st_entry *e = calloc((size_t)n + 1, sizeof *e);
    for (int i = 0; e && i < n; i++) {
        const moco_st_tensor *t = moco_st_at(f, i);
        if (strncmp(t->name, which, pl - 1) || t->name[pl - 1] != '.') continue;
        const char *name = t->name + pl;
        if (!with_head && !strncmp(name, "fc.", 3)) continue;
        e[k].name = name;
        e[k].dtype = t->dtype;
        e[k].ndim = t->ndim;
        memcpy(e[k].shape, t->shape, sizeof e[k].shape);
        e[k].data = moco_st_data(f, t);
        k++;
    }
    /* what the encoder is, from the checkpoint's config (rn_save's moco.arch too) */
    moco_jw dj;
    moco_jw_begin(&dj);
    moco_jw_str(&dj, "arch", cc.arch);
    moco_jw_i64(&dj, "width", cc.width);
    moco_jw_i64(&dj, "mlp", cc.mlp);
    moco_jw_i64(&dj, "dim", cc.dim);
    moco_jw_i64(&dj, "head", with_head);
    /* the inputs' normalisation it was trained with (a user of the file must feed it so: features off by
     * several units otherwise; "auto" is CIFAR's at 64 px and less) */
    if (cc.normalize[0]) moco_jw_str(&dj, "normalize", cc.normalize);
    if (cc.has_mean_std) {
        const char *k[2] = {"mean", "std"};
        for (int j = 0; j < 2; j++) {
            moco_jw_arr(&dj, k[j]);
            for (int c = 0; c < 3; c++) moco_jw_g(&dj, NULL, j ? cc.std[c] : cc.mean[c], 9);
            moco_jw_close(&dj);
        }
    }
    const char *desc = moco_jw_end(&dj);
    const char *meta[] = {"format", "pt", "source", ckpt, "moco.arch", cc.arch, "moco.encoder", desc};
    rc = !e || !desc ? moco_err(MOCO_ENOMEM, "out of memory")
         : k == 0 ? moco_err(MOCO_ENOTFOUND, "%s: no %s.* tensors (not a moco checkpoint?)", ckpt, which)
                  : moco_st_write(out, e, k, meta, cc.has_config && cc.arch[0] ? 4 : 2);
    if (rc) fprintf(stderr, "moco export: %s\n", moco_errmsg());
    else printf("moco export: %d tensors of %s to %s\n", k, which, out);
    moco_jw_free(&dj);
    free(e);
    moco_st_destroy(&f);
    return rc ? 1 : 0;
}

/* a NumPy .npy file being written: its temporary file, not yet renamed */
typedef struct {
    FILE *f;
    int finished; /* written, fsync'ed and closed: only the rename is left */
    const char *path;
    char target[1100], tmp[1200];
} npy_tmp;

/* a NumPy .npy file (format 1.0): dtype "<f4" or "<i8", C order, 2-D
 * (rows, cols) or 1-D (cols 0), written whole to path.tmp (o->f open);
 * npy_finish fsyncs and closes it, npy_commit renames it (and fsyncs the
 * directory), npy_abort removes it */
static int write_npy(npy_tmp *o, const char *path, const void *data, const char *descr, size_t elem, int64_t rows, int64_t cols)
{
    char hdr[256], *target = o->target, *tmp = o->tmp;
    o->f = NULL, o->finished = 0, o->path = path;
    int rc = moco_replace_target(path, target, sizeof o->target); /* never renamed onto /dev/null or a directory */
    if (rc) return rc;
    int n = cols ? snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld, %lld), }", descr,
                            (long long)rows, (long long)cols)
                 : snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld,), }", descr, (long long)rows);
    int total = (10 + n + 1 + 63) / 64 * 64; /* magic, version, length, dict, padding, newline */
    memset(hdr + n, ' ', (size_t)(total - 10 - n - 1));
    hdr[total - 10 - 1] = '\n';
    snprintf(tmp, sizeof o->tmp, "%s.tmp", target);
    FILE *f = moco_create_tmp(tmp, path); /* never through a link planted at the temporary name */
    if (!f) return MOCO_EIO;
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)((total - 10) & 0xff), (uint8_t)((total - 10) >> 8)};
    size_t cnt = (size_t)rows * (size_t)(cols ? cols : 1);
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(hdr, 1, (size_t)(total - 10), f) == (size_t)(total - 10) &&
             fwrite(data, elem, cnt, f) == cnt;
    if (!ok) {
        int e = errno ? errno : EIO;
        fclose(f);
        unlink(tmp);
        return moco_err(MOCO_EIO, "cannot write %s: %s", path, strerror(e));
    }
    o->f = f;
    return 0;
}

static int npy_finish(npy_tmp *o)
{
    FILE *f = o->f;
    o->f = NULL;
    int rc = f ? moco_finish_tmp(f, o->tmp, o->path) : 0;
    o->finished = f && !rc;
    return rc;
}

static int npy_commit(npy_tmp *o)
{
    int rc = o->finished ? moco_rename_tmp(o->tmp, o->target, o->path) : 0;
    o->finished = 0;
    return rc;
}

static void npy_abort(npy_tmp *o)
{
    if (o->f) fclose(o->f);
    if (o->f || o->finished) unlink(o->tmp);
    o->f = NULL, o->finished = 0;
}


int embed_main(int argc, char **argv)
{
    const char *db = NULL, *out = NULL;
    int head = 0;
    evalmodel_flags ef;
    moco_opt opts[EVALMODEL_NOPTS + 5];
    int n = evalmodel_opts(&ef, opts, "batch");
    opts[n++] = (moco_opt){"db", MOCO_OPT_STR, &db, "dataset LMDB to embed (labelled or not)", 0, 0, NULL};
    opts[n++] = (moco_opt){"out", MOCO_OPT_STR, &out, "FILE.npy (labels to FILE.labels.npy) or FILE.safetensors (or .st); other names are refused", 0, 0, NULL};
    opts[n++] = (moco_opt){"head", MOCO_OPT_FLAG, &head, "the projection head's outputs instead of the pooled features", 0, 0, NULL};
    opts[n] = (moco_opt){NULL, 0, NULL, NULL, 0, 0, NULL};
    const moco_optspec spec = {"moco embed", "--ckpt CKPT --db DB --out FILE [options]",
                               "Features of every sample of DB, in index order, by a checkpoint's query encoder (evaluation\n"
                               "view, no augmentation): the pooled backbone features, or the head's outputs with --head; not\n"
                               "normalised.",
                               opts, 0, 0, NULL};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    if (!(ef.ckpt || ef.init_seed >= 0) || !db || !out) {
        fprintf(stderr, "moco embed: --ckpt (or --random-init), --db and --out are required\n");
        return 2;
    }
    const int fmt = out_format("embed", out, 1), npy = fmt == OUT_NPY;
    if (!fmt) return 2;
    char lp[1200] = ""; /* OUT.labels.npy beside OUT.npy */
    if (npy) snprintf(lp, sizeof lp, "%.*s.labels.npy", (int)(strlen(out) - 4), out);
    int B = 0, S = 0;
    resnet *m = NULL;
    evalset *es = NULL;
    float *x = NULL, *feat = NULL, mean[3], std[3];
    int32_t *lab = NULL;
    int64_t *lab64 = NULL, cnt = 0;
    int D = 0, labelled = 0;
    npy_tmp fo = {0}, lo = {0};
    if ((rc = evalmodel_resolve(&ef)) || (rc = not_the_ckpt(out, ef.ckpt)) || (npy && (rc = not_the_ckpt(lp, ef.ckpt)))) goto out;
    if ((rc = evalmodel_open(&ef, &m, mean, std))) goto out; /* resolves ef from the checkpoint */
    if (ef.note[0]) fprintf(stderr, "moco embed: %s\n", ef.note);
    B = (int)ef.batch, S = (int)ef.size;
    if ((rc = evalset_open_any(db, S, mean, std, &es))) goto out;
    D = head ? (int)ef.dim : m->features;
    labelled = evalset_labelled(es);
    cnt = evalset_count(es);
    x = malloc(sizeof *x * (size_t)B * 3 * S * S);
    feat = malloc(sizeof *feat * (size_t)(cnt ? cnt : 1) * D);
    lab = malloc(sizeof *lab * (size_t)(cnt + B));
    lab64 = malloc(sizeof *lab64 * (size_t)(cnt ? cnt : 1));
    if (!x || !feat || !lab || !lab64) { rc = moco_err(MOCO_ENOMEM, "out of memory"); goto out; }
    for (int64_t s = 0; s < cnt; s += B) {
        int k = (int)(cnt - s < B ? cnt - s : B);
        if (k < B) memset(x, 0, sizeof *x * (size_t)B * 3 * S * S);
        if ((rc = evalset_read(es, s, k, x, lab + s))) goto out;
        const float *o = rn_forward(m, x, NULL, 0);
        memcpy(feat + (size_t)s * D, head ? o : rn_pooled(m), sizeof *feat * (size_t)k * D);
    }
    for (int64_t i = 0; i < cnt; i++) lab64[i] = lab[i];
    if (npy) { /* both temporaries written and fsync'ed first (a full disk says so there, and nothing is replaced);
                * then the labels renamed, and the features last */
        char lt[1100];
        if ((rc = write_npy(&fo, out, feat, "<f4", sizeof *feat, cnt, D)) || (rc = npy_finish(&fo))) goto out;
        if (labelled) {
            if ((rc = write_npy(&lo, lp, lab64, "<i8", sizeof *lab64, cnt, 0)) || (rc = npy_finish(&lo)) ||
                (rc = npy_commit(&lo)))
                goto out;
        } else if (!(rc = moco_replace_target(lp, lt, sizeof lt)) && unlink(lt) == 0) { /* no stale labels beside new features */
            fprintf(stderr, "moco embed: %s is unlabelled: removed the old %s\n", db, lp);
        } else if (!rc && errno != ENOENT) {
            rc = moco_err(MOCO_EIO, "cannot remove the old %s (%s is unlabelled): %s", lp, db, strerror(errno));
        }
        if (rc) goto out;
        if ((rc = npy_commit(&fo))) {
            if (labelled) unlink(lo.target); /* never new labels without their features */
            goto out;
        }
    } else {
        moco_st_entry e[2] = {{"features", MOCO_ST_F32, 2, {cnt, D}, feat}, {"labels", MOCO_ST_I64, 1, {cnt}, lab64}};
        char what[64];
        snprintf(what, sizeof what, "random-init %ld", ef.init_seed);
        const char *meta[] = {"ckpt", ef.ckpt ? ef.ckpt : what, "db", db, "features", head ? "head" : "pooled"};
        rc = moco_st_write(out, e, labelled ? 2 : 1, meta, 3);
    }
out:
    npy_abort(&fo);
    npy_abort(&lo);
    if (rc) fprintf(stderr, "moco embed: %s\n", moco_errmsg());
    else printf("moco embed: %lld x %d %s features to %s\n", (long long)cnt, D, head ? "head" : "pooled", out);
    rn_destroy(&m);
    evalset_destroy(&es);
    free(x); free(feat); free(lab); free(lab64);
    return rc ? 1 : 0;
}
