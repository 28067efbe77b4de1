/* sources.c: enumerate an image folder, CIFAR-10 batches or IDX files.
 *
 * Folder: SRC/<class>/.../<file>, classes and files in byte order of their
 * names (as torchvision's ImageFolder sorts them), hidden entries skipped
 * (ImageFolder would make .ipynb_checkpoints a class), symbolic links
 * followed, an empty class kept (0 samples; ImageFolder raises). A class
 * name must be UTF-8 without a newline (the dataset's class list holds it):
 * any other is refused, naming the folder. An entry that is not a file or a
 * directory (a broken link, a FIFO, a socket, a device) becomes an item
 * with a reason, for mkdb to name and count as skipped.
 * A folder whose subdirectories are split names (train, test, val) needs
 * --split unless it holds only one.
 * CIFAR-10: data_batch_1..5.bin (train) or test_batch.bin (test), records of
 * 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32), converted to HWC.
 * IDX: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz], big-endian header.
 * A SRC holding data.mdb (a moco dataset: moco mkdb's arguments swapped) is
 * refused before any of these. OUT inside SRC (mk_source_open_out), and
 * mkdb's OUT.tmp-PID and OUT.old-PID beside it, are never classes or files
 * of the folder: they are left out, named. */
#include "loader/sources.h"
#include "formats/errors.h"
#include "formats/json.h"
#include "formats/replace.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static const char *const CIFAR10_NAMES[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                              "dog", "frog", "horse", "ship", "truck"};
static const char *const FASHION_NAMES[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

void mk_source_free(mk_source *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].path);
        free(s->items[i].skip);
    }
    free(s->items);
    for (uint32_t i = 0; i < s->nclasses; i++) free(s->classes[i]);
    free(s->classes);
    for (size_t i = 0; i < s->nblobs; i++) free(s->blobs[i]);
    free(s->blobs);
    free(s->root);
    memset(s, 0, sizeof *s);
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p) return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

static int add_item(mk_source *s, size_t *cap, mk_item it)
{
    if (s->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 1024;
        mk_item *ni = realloc(s->items, nc * sizeof *ni);
        if (!ni) return moco_err(MOCO_ENOMEM, "out of memory listing %s", s->root);
        s->items = ni;
        *cap = nc;
    }
    s->items[s->n++] = it;
    return 0;
}

static int add_class(mk_source *s, const char *name)
{
    char **nc = realloc(s->classes, (s->nclasses + 1) * sizeof *nc);
    if (!nc) return moco_err(MOCO_ENOMEM, "out of memory");
    s->classes = nc;
    if (!(nc[s->nclasses] = strdup(name))) return moco_err(MOCO_ENOMEM, "out of memory");
    s->nclasses++;
    return 0;
}

/* Is the entry name of directory dir (path p, a directory: callers ask
 * only for those, so a file costs no stat more) the output or one of
 * mkdb's directories beside it (see mk_source_open_out)? Then, unless
 * quiet, it is named on stderr, and left out. */
static int is_output(const mk_source *s, const char *dir, const char *name, const char *p, int quiet)
{
    struct stat st;
    if (!s->out_base) return 0;
    int ours = 0;
    if (s->out_exists && stat(p, &st) == 0 && (uint64_t)st.st_dev == s->out_dev && (uint64_t)st.st_ino == s->out_ino) {
        ours = 1;
    } else {
        size_t bl = strlen(s->out_base);
        const char *tail = !strncmp(name, s->out_base, bl) ? name + bl : NULL;
        const char *digits = tail && !strncmp(tail, ".tmp-", 5) ? tail + 5 : tail && !strncmp(tail, ".old-", 5) ? tail + 5 : NULL;
        if (digits && *digits && strspn(digits, "0123456789") == strlen(digits) && s->out_parent_known && stat(dir, &st) == 0 &&
            (uint64_t)st.st_dev == s->parent_dev && (uint64_t)st.st_ino == s->parent_ino)
            ours = 2;
    }
    if (ours && !quiet)
        fprintf(stderr, "moco mkdb: ignoring %s: %s, not an input\n", p,
                ours == 1 ? "it is OUT, the dataset being written" : "a directory of mkdb's beside OUT (OUT.tmp-PID, OUT.old-PID)");
    return ours;
}

static int cmp_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }
static int not_hidden(const struct dirent *d) { return d->d_name[0] != '.'; }

/* Sorted visible entries of dir; returns count or -1 with a message. */
static int list_dir(const char *dir, struct dirent ***out)
{
    int n = scandir(dir, out, not_hidden, cmp_name);
    if (n < 0) moco_err(MOCO_EIO, "cannot read directory %s: %s", dir, strerror(errno));
    return n;
}

static void free_list(struct dirent **l, int n)
{
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

/* Why an entry of a class folder that is neither a directory nor a regular
 * file cannot be read (malloc'd), from its lstat and stat. */
static char *unreadable_why(const char *p)
{
    struct stat lst, st;
    char *m = NULL;
    int r;
    if (lstat(p, &lst) != 0) {
        r = asprintf(&m, "cannot stat: %s", strerror(errno));
    } else if (S_ISLNK(lst.st_mode) && stat(p, &st) != 0) {
        int e = errno;
        char to[4096];
        ssize_t n = readlink(p, to, sizeof to - 1);
        to[n > 0 ? n : 0] = 0;
        r = e == ENOENT ? asprintf(&m, "broken symbolic link (to %s, which does not exist)", to)
                        : asprintf(&m, "cannot follow the symbolic link to %s: %s", to, strerror(e));
    } else {
        if (stat(p, &st) != 0) st = lst;
        const char *k = S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISSOCK(st.st_mode) ? "a socket" : S_ISCHR(st.st_mode) ? "a character device"
                      : S_ISBLK(st.st_mode) ? "a block device" : "of an unknown kind";
        r = asprintf(&m, "not a regular file (%s; not opened)", k);
    }
    return r < 0 ? NULL : m;
}

/* Add every regular file under dir (recursively, sorted) with label, and
 * every entry that cannot be read as an item with its reason. */
static int walk_files(mk_source *s, size_t *cap, const char *dir, int32_t label, int depth)
{
    struct dirent **l;
    int n = list_dir(dir, &l), rc = 0;
    if (n < 0) return MOCO_EIO;
    if (depth > 32) {
        free_list(l, n);
        return moco_err(MOCO_EINVAL, "%s: directories nested too deep", dir);
    }
    for (int i = 0; i < n && !rc; i++) {
        char *p = join(dir, l[i]->d_name);
        if (!p) { rc = moco_err(MOCO_ENOMEM, "out of memory"); break; }
        if (is_dir(p)) {
            if (!is_output(s, dir, l[i]->d_name, p, 0)) rc = walk_files(s, cap, p, label, depth + 1);
            free(p);
        } else {
            int reg = is_file(p);
            char *why = reg ? NULL : unreadable_why(p);
            if (!reg && !why) rc = moco_err(MOCO_ENOMEM, "out of memory");
            else rc = add_item(s, cap, (mk_item){.path = p, .label = label, .skip = why});
            if (rc) { free(p); free(why); }
        }
    }
    free_list(l, n);
    return rc;
}

/* NULL if name can be a class name (UTF-8, no newline: the dataset's class
 * list is newline-separated UTF-8), else why not. */
static const char *bad_class_name(const char *name)
{
    size_t n = strlen(name);
    if (memchr(name, '\n', n)) return "holds a newline, which the dataset's class list cannot hold";
    for (size_t i = 0; i < n;) {
        int k = moco_utf8_len((const unsigned char *)name + i, n - i);
        if (!k) return "is not valid UTF-8, which the dataset's class names must be";
        i += (size_t)k;
    }
    return NULL;
}

void mk_escape_name(const char *name, char *out, size_t cap)
{
    size_t o = 0, n = strlen(name);
    for (size_t i = 0; i < n && o + 5 < cap;) {
        unsigned char c = (unsigned char)name[i];
        int k = moco_utf8_len((const unsigned char *)name + i, n - i);
        if (c == '\n') o += (size_t)snprintf(out + o, cap - o, "\\n");
        else if (!k || c < 0x20 || c == 0x7F) o += (size_t)snprintf(out + o, cap - o, "\\x%02X", c);
        else if (o + (size_t)k < cap) { memcpy(out + o, name + i, (size_t)k); o += (size_t)k; i += (size_t)k; continue; }
        else break;
        i++;
    }
    out[o] = 0;
}

static int is_split_name(const char *n)
{
    return !strcmp(n, "train") || !strcmp(n, "test") || !strcmp(n, "val") || !strcmp(n, "valid") ||
           !strcmp(n, "validation");
}

static int open_folder(const char *src, const char *split, mk_source *s)
{
    struct dirent **l;
    size_t cap = 0;
    int n, rc = 0;
    if (split) {
        s->root = join(src, split);
        if (!s->root) return moco_err(MOCO_ENOMEM, "out of memory");
        if (!is_dir(s->root)) return moco_err(MOCO_EINVAL, "%s: no split '%s' (no directory %s)", src, split, s->root);
    } else {
        if ((n = list_dir(src, &l)) < 0) return MOCO_EIO;
        int splits = 0, dirs = 0;
        char names[256] = "";
        for (int i = 0; i < n; i++) {
            char *p = join(src, l[i]->d_name);
            if (p && is_dir(p) && !is_output(s, src, l[i]->d_name, p, 1)) {
                dirs++;
                if (is_split_name(l[i]->d_name)) {
                    splits++;
                    if (strlen(names) + strlen(l[i]->d_name) + 3 < sizeof names) {
                        if (*names) strcat(names, ", ");
                        strcat(names, l[i]->d_name);
                    }
                }
            }
            free(p);
        }
        free_list(l, n);
        if (splits && splits == dirs)
            return moco_err(MOCO_EINVAL, "%s holds the splits %s: choose one with --split", src, names);
        if (!(s->root = strdup(src))) return moco_err(MOCO_ENOMEM, "out of memory");
    }
    if ((n = list_dir(s->root, &l)) < 0) return MOCO_EIO;
    for (int i = 0; i < n && !rc; i++) {
        char *p = join(s->root, l[i]->d_name);
        if (!p) { rc = moco_err(MOCO_ENOMEM, "out of memory"); break; }
        int dir = is_dir(p);
        const char *bad = dir ? bad_class_name(l[i]->d_name) : NULL;
        if (dir && is_output(s, s->root, l[i]->d_name, p, 0)) {
            /* named, left out */
        } else if (bad) {
            char esc[4096];
            mk_escape_name(p, esc, sizeof esc);
            rc = moco_err(MOCO_EINVAL, "class directory '%s': its name %s; rename it", esc, bad);
        } else if (dir) {
            if (!(rc = add_class(s, l[i]->d_name))) rc = walk_files(s, &cap, p, (int32_t)(s->nclasses - 1), 0);
        } else {
            fprintf(stderr, "moco mkdb: ignoring %s: not inside a class directory\n", p);
        }
        free(p);
    }
    free_list(l, n);
    if (!rc && s->nclasses == 0)
        rc = moco_err(MOCO_EINVAL, "%s: no class directories (expected SRC/<class>/<image>)", s->root);
    s->format = "folder";
    return rc;
}

/* Read a whole file, transparently gunzipping. */
static int slurp(const char *path, uint8_t **out, size_t *len)
{
    gzFile f = gzopen(path, "rb");
    if (!f) return moco_err(errno == ENOENT ? MOCO_ENOTFOUND : MOCO_EIO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 20, n = 0;
    uint8_t *b = malloc(cap);
    int rc = 0;
    while (b) {
        if (n == cap) {
            uint8_t *nb = cap > ((size_t)1 << 32) ? NULL : realloc(b, cap * 2);
            if (!nb) { /* an error, never the file's first part taken for all of it */
                rc = moco_err(MOCO_ENOMEM, "%s: out of memory after %zu bytes (at most 8 GiB are read)", path, n);
                break;
            }
            b = nb;
            cap *= 2;
        }
        int r = gzread(f, b + n, (unsigned)((cap - n) > (1u << 30) ? (1u << 30) : (cap - n)));
        if (r < 0) {
            int e;
            const char *m = gzerror(f, &e);
            rc = moco_err(MOCO_ECORRUPT, "%s: read error after %zu bytes: %s", path, n, m);
            break;
        }
        if (r == 0) {
            int e;
            const char *m = gzerror(f, &e);
            if (e != Z_OK && e != Z_STREAM_END) rc = moco_err(MOCO_ECORRUPT, "%s: corrupt gzip stream after %zu bytes: %s", path, n, m);
            break;
        }
        n += (size_t)r;
    }
    if (!b && !rc) rc = moco_err(MOCO_ENOMEM, "%s: out of memory", path);
    gzclose(f);
    if (rc) { free(b); return rc; }
    *out = b;
    *len = n;
    return 0;
}

static int keep_blob(mk_source *s, uint8_t *b)
{
    uint8_t **nb = realloc(s->blobs, (s->nblobs + 1) * sizeof *nb);
    if (!nb) { free(b); return moco_err(MOCO_ENOMEM, "out of memory"); }
    s->blobs = nb;
    s->blobs[s->nblobs++] = b;
    return 0;
}

/* Load the class names of a CIFAR directory (batches.meta.txt, one per line)
 * or fall back to the standard CIFAR-10 names. */
static int cifar_classes(mk_source *s, const char *dir)
{
    char *p = join(dir, "batches.meta.txt");
    FILE *f = p ? moco_fopen_regular(p) : NULL; /* absent or not a regular file: the standard names */
    free(p);
    int rc = 0;
    if (f) {
        char line[256];
        while (!rc && fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = 0;
            if (*line) rc = add_class(s, line);
        }
        fclose(f);
        if (!rc && s->nclasses == 10) return 0;
        for (uint32_t i = 0; i < s->nclasses; i++) free(s->classes[i]);
        s->nclasses = 0;
    }
    for (int i = 0; i < 10 && !rc; i++) rc = add_class(s, CIFAR10_NAMES[i]);
    return rc;
}

static int open_cifar(const char *src, const char *split, mk_source *s)
{
    static const char *const train[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                        "data_batch_4.bin", "data_batch_5.bin", NULL};
    static const char *const test[] = {"test_batch.bin", NULL};
    char *sub = join(src, "cifar-10-batches-bin");
    if (!sub) return moco_err(MOCO_ENOMEM, "out of memory");
    if (is_dir(sub)) s->root = sub;
    else { free(sub); if (!(s->root = strdup(src))) return moco_err(MOCO_ENOMEM, "out of memory"); }
    char *t1 = join(s->root, train[0]), *t2 = join(s->root, test[0]);
    int has_train = t1 && is_file(t1), has_test = t2 && is_file(t2);
    free(t1);
    free(t2);
    if (!split && has_train && has_test)
        return moco_err(MOCO_EINVAL, "%s holds the CIFAR-10 train and test batches: choose one with --split train|test", src);
    if (!split) split = has_train ? "train" : "test";
    const char *const *files;
    if (!strcmp(split, "train")) files = train;
    else if (!strcmp(split, "test")) files = test;
    else return moco_err(MOCO_EINVAL, "%s: CIFAR-10 has splits train and test, not '%s'", src, split);
    int rc = cifar_classes(s, s->root);
    size_t cap = 0;
    for (int fi = 0; files[fi] && !rc; fi++) {
        char *p = join(s->root, files[fi]);
        uint8_t *b = NULL;
        size_t len = 0;
        if (!p) return moco_err(MOCO_ENOMEM, "out of memory");
        if ((rc = slurp(p, &b, &len))) { free(p); break; }
        enum { REC = 1 + 3072 };
        if (len == 0 || len % REC) {
            rc = moco_err(MOCO_ECORRUPT, "%s: truncated or malformed CIFAR-10 batch: %zu bytes is not a whole number of "
                          "%d-byte records (incomplete record at offset %zu)", p, len, REC, len - len % REC);
            free(b);
            free(p);
            break;
        }
        /* convert in place to HWC, keep the label bytes apart */
        uint8_t *pix = malloc(len / REC * 3072);
        if (!pix || (rc = keep_blob(s, pix))) { free(b); free(p); if (!pix) rc = moco_err(MOCO_ENOMEM, "out of memory"); break; }
        for (size_t r = 0; r < len / REC && !rc; r++) {
            const uint8_t *in = b + r * REC;
            if (in[0] >= 10) {
                rc = moco_err(MOCO_ECORRUPT, "%s: record %zu (offset %zu): label %u is not a CIFAR-10 class (0-9)", p, r,
                              r * REC, in[0]);
                break;
            }
            uint8_t *o = pix + r * 3072;
            for (int i = 0; i < 1024; i++) {
                o[3 * i] = in[1 + i];
                o[3 * i + 1] = in[1 + 1024 + i];
                o[3 * i + 2] = in[1 + 2048 + i];
            }
            char *ip = strdup(p);
            if (!ip) { rc = moco_err(MOCO_ENOMEM, "out of memory"); break; }
            rc = add_item(s, &cap, (mk_item){.path = ip, .pixels = o, .offset = r * REC, .label = in[0], .w = 32, .h = 32, .c = 3});
            if (rc) free(ip);
        }
        free(b);
        free(p);
    }
    s->format = "cifar10";
    return rc;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* Path of the first existing of dir/name and dir/name.gz, or NULL. */
static char *find_idx(const char *dir, const char *name)
{
    char *p = join(dir, name);
    if (p && is_file(p)) return p;
    free(p);
    char gz[256];
    snprintf(gz, sizeof gz, "%s.gz", name);
    p = join(dir, gz);
    if (p && is_file(p)) return p;
    free(p);
    return NULL;
}

static int open_idx(const char *src, const char *split, mk_source *s)
{
    if (!(s->root = strdup(src))) return moco_err(MOCO_ENOMEM, "out of memory");
    char *tr = find_idx(src, "train-images-idx3-ubyte"), *te = find_idx(src, "t10k-images-idx3-ubyte");
    int both = tr && te;
    free(tr);
    free(te);
    if (!split && both)
        return moco_err(MOCO_EINVAL, "%s holds the train and test (t10k) IDX files: choose one with --split train|test", src);
    if (!split) split = tr ? "train" : "test";
    const char *pre = !strcmp(split, "train") ? "train" : !strcmp(split, "test") ? "t10k" : NULL;
    if (!pre) return moco_err(MOCO_EINVAL, "%s: IDX datasets have splits train and test, not '%s'", src, split);
    char in[64], ln[64];
    snprintf(in, sizeof in, "%s-images-idx3-ubyte", pre);
    snprintf(ln, sizeof ln, "%s-labels-idx1-ubyte", pre);
    char *ip = find_idx(src, in), *lp = find_idx(src, ln);
    uint8_t *ib = NULL, *lb = NULL;
    size_t il = 0, ll = 0;
    int rc = 0;
    if (!ip || !lp) {
        rc = moco_err(MOCO_ENOTFOUND, "%s: no %s[.gz] or %s[.gz]", src, in, ln);
        goto out;
    }
    if ((rc = slurp(ip, &ib, &il)) || (rc = slurp(lp, &lb, &ll))) goto out;
    if (il < 16 || be32(ib) != 0x00000803) {
        rc = moco_err(MOCO_ECORRUPT, "%s: not an IDX image file (%s at offset 0)", ip, il < 16 ? "header truncated" : "bad magic");
        goto out;
    }
    if (ll < 8 || be32(lb) != 0x00000801) {
        rc = moco_err(MOCO_ECORRUPT, "%s: not an IDX label file (%s at offset 0)", lp, ll < 8 ? "header truncated" : "bad magic");
        goto out;
    }
    uint32_t n = be32(ib + 4), rows = be32(ib + 8), cols = be32(ib + 12), nl = be32(lb + 4);
    if (rows < 1 || cols < 1 || rows > 65535 || cols > 65535) {
        rc = moco_err(MOCO_ECORRUPT, "%s: image size %ux%u out of range (offset 8)", ip, rows, cols);
        goto out;
    }
    if (n != nl) {
        rc = moco_err(MOCO_ECORRUPT, "%s holds %u images but %s holds %u labels", ip, n, lp, nl);
        goto out;
    }
    uint64_t need = 16 + (uint64_t)n * rows * cols;
    if (il != need) {
        rc = moco_err(MOCO_ECORRUPT, "%s: %s at offset %zu (header promises %u images of %ux%u: %llu bytes)", ip,
                      il < need ? "truncated" : "trailing bytes", il < need ? il : (size_t)need, n, rows, cols,
                      (unsigned long long)need);
        goto out;
    }
    if (ll != 8 + (uint64_t)n) {
        rc = moco_err(MOCO_ECORRUPT, "%s: %s at offset %zu (header promises %u labels)", lp,
                      ll < 8 + (uint64_t)n ? "truncated" : "trailing bytes", ll < 8 + (size_t)n ? ll : 8 + (size_t)n, n);
        goto out;
    }
    uint32_t maxl = 0;
    for (uint32_t i = 0; i < n; i++) maxl = lb[8 + i] > maxl ? lb[8 + i] : maxl;
    int fashion = strstr(src, "fashion") != NULL;
    for (uint32_t c = 0; c <= maxl && !rc; c++) {
        char name[16];
        snprintf(name, sizeof name, "%u", c);
        rc = add_class(s, fashion && maxl < 10 ? FASHION_NAMES[c] : name);
    }
    if (rc || (rc = keep_blob(s, ib))) { ib = NULL; goto out; }
    size_t cap = 0;
    for (uint32_t i = 0; i < n && !rc; i++) {
        char *p = strdup(ip);
        if (!p) { rc = moco_err(MOCO_ENOMEM, "out of memory"); break; }
        uint64_t off = 16 + (uint64_t)i * rows * cols;
        rc = add_item(s, &cap, (mk_item){.path = p, .pixels = ib + off, .offset = off, .label = lb[8 + i], .w = cols, .h = rows, .c = 1});
        if (rc) free(p);
    }
    ib = NULL; /* owned by s->blobs */
    s->format = "idx";
out:
    if (ib && (!s->nblobs || s->blobs[s->nblobs - 1] != ib)) free(ib);
    free(lb);
    free(ip);
    free(lp);
    return rc;
}

static int has(const char *dir, const char *name, int want_dir)
{
    char *p = join(dir, name);
    int r = p && (want_dir ? is_dir(p) : is_file(p));
    free(p);
    return r;
}

/* 1 = CIFAR-10 binary, 2 = IDX, 0 = image folder */
static int detect(const char *src)
{
    if (has(src, "data_batch_1.bin", 0) || has(src, "test_batch.bin", 0) || has(src, "cifar-10-batches-bin", 1)) return 1;
    const char *idx[] = {"train-images-idx3-ubyte", "t10k-images-idx3-ubyte"};
    for (int i = 0; i < 2; i++) {
        char *p = find_idx(src, idx[i]);
        if (p) { free(p); return 2; }
    }
    return 0;
}

int mk_source_open(const char *src, const char *format, const char *split, mk_source *s)
{
    return mk_source_open_out(src, format, split, NULL, s);
}

int mk_source_open_out(const char *src, const char *format, const char *split, const char *out, mk_source *s)
{
    memset(s, 0, sizeof *s);
    char ob[4096], par[4096];
    if (out && strlen(out) < sizeof ob) { /* OUT without trailing slashes, as dbw_open takes it */
        struct stat st;
        size_t ol = strlen(out);
        memcpy(ob, out, ol + 1);
        while (ol > 1 && ob[ol - 1] == '/') ob[--ol] = 0;
        char *sl = strrchr(ob, '/');
        s->out_base = sl ? sl + 1 : ob;
        if (!sl) snprintf(par, sizeof par, ".");
        else if (sl == ob) snprintf(par, sizeof par, "/");
        else snprintf(par, sizeof par, "%.*s", (int)(sl - ob), ob);
        if (stat(ob, &st) == 0) s->out_exists = 1, s->out_dev = (uint64_t)st.st_dev, s->out_ino = (uint64_t)st.st_ino;
        if (stat(par, &st) == 0) s->out_parent_known = 1, s->parent_dev = (uint64_t)st.st_dev, s->parent_ino = (uint64_t)st.st_ino;
        if (!*s->out_base) s->out_base = NULL; /* OUT is "/" */
    }
    struct stat sst;
    if (!is_dir(src)) /* a mistyped path says so (it said "not a directory" for that too) */
        return moco_err(MOCO_ENOTFOUND, "%s: %s", src,
                        stat(src, &sst) ? strerror(errno) : "not a directory (a source is an image folder, CIFAR-10 batches "
                                                              "or IDX files)");
    char mdb[4200];
    snprintf(mdb, sizeof mdb, "%s/data.mdb", src);
    if (!access(mdb, F_OK)) /* moco mkdb DB NEW: the arguments swapped? */
        return moco_err(MOCO_EINVAL, "%s is a moco dataset (it holds data.mdb), not a source to pack: usage: moco mkdb SRC OUT "
                        "(the arguments swapped?)", src);
    int kind = !format || !strcmp(format, "auto") ? detect(src) : !strcmp(format, "cifar10") ? 1 : !strcmp(format, "idx") ? 2 : 0;
    int rc = kind == 1 ? open_cifar(src, split, s) : kind == 2 ? open_idx(src, split, s) : open_folder(src, split, s);
    s->out_base = NULL; /* it pointed into ob */
    if (rc) mk_source_free(s);
    return rc;
}
