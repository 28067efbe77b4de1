/* dbcheck.c: layer 1 of formats/db.c's defence against damaged files
 * (see its top comment): data.mdb checked before LMDB maps it, by reading
 * its two meta pages (liblmdb 0.9's layout, spelled out below) and walking
 * the B-trees of the meta page LMDB will use, every page once. Promise: a
 * file LMDB would fault on (cut short) or loop on (some damaged pages) is
 * refused here with MOCO_ECORRUPT and a message naming it. */
#include "formats/dbcheck.h"
#include "formats/errors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(sizeof(size_t) == 8 && sizeof(void *) == 8, "the LMDB layout below is liblmdb's on 64-bit hosts");

/* ---- layer 1: the meta pages -------------------------------------------
 * liblmdb 0.9 (64-bit, native byte order): pages 0 and 1 of data.mdb are
 * meta pages. A page starts with a 16-byte header: page number (u64), pad
 * (u16), flags (u16, 0x08 = meta), two u16. The meta follows: magic (u32,
 * 0xBEEFC0DE), data version (u32, 1), map address (u64), map size (u64),
 * two 48-byte database records (free pages, main; the first one's u32 pad is
 * the page size; a record's root page number is at its offset 40), the last
 * page number (u64) and the transaction id (u64). LMDB reads the meta with
 * the larger transaction id. */
enum {
    LM_HDR = 16, LM_FLAGS = 10, LM_P_META = 0x08,
    LM_MAGIC = LM_HDR, LM_VERSION = LM_HDR + 4, LM_DBS = LM_HDR + 24, LM_DB_SIZE = 48, LM_DB_ROOT = 40,
    LM_DB_FLAGS = 4, LM_DB_DEPTH = 6, /* in a database record: u16 flags, u16 depth */
    LM_LAST_PG = LM_HDR + 120, LM_TXNID = LM_HDR + 128, LM_META_END = LM_HDR + 136,
};
#define LM_MAGIC_VALUE 0xBEEFC0DEu
#define LM_NO_PAGE UINT64_MAX

typedef struct {
    uint32_t psize;
    uint64_t last_pg, txnid;
    uint16_t main_flags, main_depth;
    uint64_t main_root;
} lm_meta;

static uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Parse meta page i (its first LM_META_END bytes). NULL when valid, else
 * what is wrong with it. */
static const char *parse_meta(const uint8_t *p, unsigned i, lm_meta *m)
{
    if (!(ld16(p + LM_FLAGS) & LM_P_META) || ld64(p) != i) return "not a meta page";
    if (ld32(p + LM_MAGIC) != LM_MAGIC_VALUE) return "bad magic";
    if (ld32(p + LM_VERSION) != 1) return "not LMDB data version 1";
    m->psize = ld32(p + LM_DBS);
    if (m->psize < 512 || m->psize > 65536 || (m->psize & (m->psize - 1))) return "bad page size";
    m->last_pg = ld64(p + LM_LAST_PG);
    m->txnid = ld64(p + LM_TXNID);
    if (m->last_pg < 1 || m->last_pg >= UINT64_MAX / 65536) return "bad last page number";
    for (int d = 0; d < 2; d++) {
        uint64_t root = ld64(p + LM_DBS + d * LM_DB_SIZE + LM_DB_ROOT);
        if (root != LM_NO_PAGE && (root < 2 || root > m->last_pg)) return "root page out of range";
    }
    m->main_flags = ld16(p + LM_DBS + LM_DB_SIZE + LM_DB_FLAGS);
    m->main_depth = ld16(p + LM_DBS + LM_DB_SIZE + LM_DB_DEPTH);
    m->main_root = ld64(p + LM_DBS + LM_DB_SIZE + LM_DB_ROOT);
    return NULL;
}

/* ---- layer 1b: the B-trees -----------------------------------------------
 * LMDB trusts every page header on its way down a tree. One whose mp_lower
 * is below the 16-byte header makes the page's key count wrap to about
 * 2^31; LMDB's binary search over it (int low + high overflows) then never
 * ends, and when the page also claims to be LEAF2 with keys of 0 bytes it
 * touches no memory either, so no fault stops it: mdb_dbi_open, mdb_get and
 * the walks hang (found by tests/fuzz/fuzz_lmdb; LMDB 0.9.24). A branch
 * entry pointing back at an ancestor or at a page seen before makes LMDB
 * revisit pages (a chain of them multiplies the work). So before LMDB maps
 * the file, walk_tree reads (pread) every branch page of the main database
 * and of the databases it names, the main database's leaves, and the
 * headers of the other leaves, and checks: the page's own number, its type
 * (a branch above the recorded depth, a leaf at it, nothing else), its
 * bounds (header <= lower <= upper <= page size, node offsets and keys
 * inside the page), child page numbers inside the file, each page reached
 * once, the depth at most LMDB's cursor stack (32), the databases' flags
 * those of a moco dataset (no DUPSORT / DUPFIXED: no LEAF2 pages, no
 * sub-trees inside nodes). Overflow pages (large values) are LMDB's plain
 * bytes: in_file and the guard cover them. Cost: one pread per branch page
 * and one 16-byte pread per leaf page. */
enum {
    LM_PG_FLAGS = 10, LM_PG_LOWER = 12, LM_PG_UPPER = 14,     /* in a page header */
    LM_P_BRANCH = 0x01, LM_P_LEAF = 0x02, LM_P_OVERFLOW = 0x04, LM_P_LEAF2 = 0x20, LM_P_SUBP = 0x40,
    LM_NODE = 8, LM_F_BIGDATA = 0x01, LM_F_SUBDATA = 0x02, LM_F_DUPDATA = 0x04, /* node: lo, hi, flags, ksize */
    LM_CURSOR_STACK = 32,
    LM_DB_KEYFLAGS = 0x02 | 0x08, /* MDB_REVERSEKEY, MDB_INTEGERKEY: only the key order; anything else is refused */
};

typedef struct {
    int fd;
    const char *f;    /* the file, for messages */
    uint32_t psize;
    uint64_t last_pg;
    uint8_t *seen;    /* a bit per page: reached already */
} lm_walk;

static int walk_err(const lm_walk *w, const char *db, uint64_t pg, const char *why)
{
    return moco_err(MOCO_ECORRUPT, "%s: damaged: %s, page %llu: %s", w->f, db, (unsigned long long)pg, why);
}

static int walk_tree(lm_walk *w, const char *db, uint64_t pg, unsigned level, unsigned depth, int is_main);

/* A database record (48 bytes) found in the main database: its tree. */
static int walk_db(lm_walk *w, const char *name, const uint8_t *rec)
{
    uint16_t flags = ld16(rec + LM_DB_FLAGS), depth = ld16(rec + LM_DB_DEPTH);
    uint64_t root = ld64(rec + LM_DB_ROOT);
    if (flags & ~LM_DB_KEYFLAGS) return walk_err(w, name, root, "database flags of no moco dataset");
    if (root == LM_NO_PAGE) return 0; /* empty */
    if (root < 2 || root > w->last_pg) return walk_err(w, name, root, "root page out of range");
    if (depth < 1 || depth > LM_CURSOR_STACK) return walk_err(w, name, root, "tree depth out of range");
    return walk_tree(w, name, root, 0, depth, 0);
}

static int walk_tree(lm_walk *w, const char *db, uint64_t pg, unsigned level, unsigned depth, int is_main)
{
    if (w->seen[pg >> 3] >> (pg & 7) & 1) return walk_err(w, db, pg, "reached twice (a cycle or a shared page)");
    w->seen[pg >> 3] |= (uint8_t)(1u << (pg & 7));
    int leaf = level + 1 == depth, rc = 0;
    /* a leaf of a named database: its header is enough (LMDB searches it, reads no page through it) */
    size_t want = leaf && !is_main ? LM_HDR : w->psize;
    uint8_t *p = malloc(want);
    if (!p) return moco_err(MOCO_ENOMEM, "%s: out of memory", w->f);
    ssize_t n = pread(w->fd, p, want, (off_t)(pg * w->psize));
    if (n != (ssize_t)want) {
        rc = n < 0 ? moco_err(MOCO_EIO, "%s: %s", w->f, strerror(errno)) : walk_err(w, db, pg, "beyond the end of the file");
        goto out;
    }
    uint16_t type = ld16(p + LM_PG_FLAGS) & (LM_P_BRANCH | LM_P_LEAF | LM_P_OVERFLOW | LM_P_META | LM_P_LEAF2 | LM_P_SUBP);
    uint16_t lower = ld16(p + LM_PG_LOWER), upper = ld16(p + LM_PG_UPPER);
    if (ld64(p) != pg) { rc = walk_err(w, db, pg, "its header holds another page number"); goto out; }
    if (type != (leaf ? LM_P_LEAF : LM_P_BRANCH)) {
        rc = walk_err(w, db, pg, leaf ? "not a leaf page at the tree's depth" : "not a branch page above the tree's depth");
        goto out;
    }
    if (lower < LM_HDR || (lower - LM_HDR) % 2 || lower > upper || upper > w->psize) {
        rc = walk_err(w, db, pg, "page bounds out of range");
        goto out;
    }
    unsigned nkeys = (lower - LM_HDR) / 2u;
    if (!leaf && nkeys < 1) { rc = walk_err(w, db, pg, "a branch page without entries"); goto out; }
    if (want == LM_HDR) goto out;
    for (unsigned i = 0; i < nkeys && !rc; i++) {
        uint16_t off = ld16(p + LM_HDR + 2 * i);
        if (off < upper || (size_t)off + LM_NODE > w->psize) { rc = walk_err(w, db, pg, "a node outside the page"); break; }
        const uint8_t *nd = p + off;
        uint16_t nflags = ld16(nd + 4), ksize = ld16(nd + 6);
        if ((size_t)off + LM_NODE + ksize > w->psize) { rc = walk_err(w, db, pg, "a key outside the page"); break; }
        if (!leaf) {
            uint64_t child = ld16(nd) | (uint64_t)ld16(nd + 2) << 16 | (uint64_t)nflags << 32;
            if (child < 2 || child > w->last_pg) { rc = walk_err(w, db, pg, "a child page out of range"); break; }
            rc = walk_tree(w, db, child, level + 1, depth, is_main);
        } else if (nflags & LM_F_SUBDATA) { /* the main database: a named database's record */
            uint32_t dsize = ld16(nd) | (uint32_t)ld16(nd + 2) << 16;
            char name[64];
            snprintf(name, sizeof name, "database '%.*s'", ksize < 40 ? (int)ksize : 40, (const char *)nd + LM_NODE);
            for (char *c = name; *c; c++)
                if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) *c = '?';
            if ((nflags & (LM_F_BIGDATA | LM_F_DUPDATA)) || dsize != LM_DB_SIZE || (size_t)off + LM_NODE + ksize + dsize > w->psize)
                rc = walk_err(w, db, pg, "a malformed database record");
            else
                rc = walk_db(w, name, nd + LM_NODE + ksize);
        } else if (nflags & LM_F_DUPDATA) {
            rc = walk_err(w, db, pg, "duplicate-key data, which no moco dataset holds");
        }
    }
out:
    free(p);
    return rc;
}

/* Layer 1b for the meta page m of the open file fd. */
static int check_trees(int fd, const char *f, const lm_meta *m)
{
    lm_walk w = {fd, f, m->psize, m->last_pg, NULL};
    if (m->main_flags & ~LM_DB_KEYFLAGS)
        return moco_err(MOCO_ECORRUPT, "%s: damaged: main database flags of no moco dataset (0x%x)", f, m->main_flags);
    if (m->main_root == LM_NO_PAGE) return 0; /* an empty environment: LMDB finds no databases */
    if (m->main_depth < 1 || m->main_depth > LM_CURSOR_STACK)
        return moco_err(MOCO_ECORRUPT, "%s: damaged: main database depth %u out of range", f, m->main_depth);
    if (!(w.seen = calloc((size_t)(m->last_pg / 8 + 1), 1))) return moco_err(MOCO_ENOMEM, "%s: out of memory", f);
    int rc = walk_tree(&w, "the main database", m->main_root, 0, m->main_depth, 1);
    free(w.seen);
    return rc;
}

/* Does dir look like a folder of images (a class subdirectory, or an image
 * file among its first entries)? */
static int looks_like_images(const char *dir)
{
    static const char *const ext[] = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp", ".jp2", ".ppm", ".pgm", NULL};
    DIR *d = opendir(dir);
    struct dirent *de;
    int yes = 0;
    for (int seen = 0; d && !yes && seen < 1000 && (de = readdir(d)); seen++) {
        const char *n = de->d_name, *dot = strrchr(n, '.');
        if (n[0] == '.') continue;
        char p[4200];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, n);
        if (!stat(p, &st) && S_ISDIR(st.st_mode)) yes = 1;
        for (int i = 0; !yes && dot && ext[i]; i++) yes = !strcasecmp(dot, ext[i]);
    }
    if (d) closedir(d);
    return yes;
}

/* DIR/data.mdb (f) cannot be opened (errno e): a missing DIR, a directory
 * that is no dataset (an image folder: pack it first), or f's own error. */
static int not_a_dataset(const char *dir, const char *f, int e)
{
    struct stat st;
    if (e == ENOENT && !stat(dir, &st) && S_ISDIR(st.st_mode)) {
        if (looks_like_images(dir))
            return moco_err(MOCO_ENOTFOUND, "%s is a directory but not a moco dataset (no data.mdb); an image folder? pack it "
                            "first: moco mkdb %s OUT", dir, dir);
        return moco_err(MOCO_ENOTFOUND, "%s is a directory but not a moco dataset (no data.mdb; moco mkdb makes one)", dir);
    }
    if (e == ENOENT || e == ENOTDIR)
        return moco_err(e == ENOENT ? MOCO_ENOTFOUND : MOCO_EIO, "%s: cannot open dataset: %s", dir, strerror(e));
    return moco_err(MOCO_EIO, "%s: cannot open dataset: %s", f, strerror(e));
}

int moco_db_check_file(const char *dir, uint64_t *data_end, uint64_t *ino)
{
    char f[4200];
    uint8_t b[LM_META_END];
    lm_meta m[2];
    struct stat st;
    int rc = 0;
    snprintf(f, sizeof f, "%s/data.mdb", dir);
    int fd = open(f, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block the open: refused below */
    if (fd < 0) return not_a_dataset(dir, f, errno);
    if (fstat(fd, &st) != 0) { rc = moco_err(MOCO_EIO, "%s: %s", f, strerror(errno)); goto out; }
    if (!S_ISREG(st.st_mode)) { rc = moco_err(MOCO_ECORRUPT, "%s: not a regular file", f); goto out; }
    for (unsigned i = 0; i < 2; i++) {
        off_t off = i ? (off_t)m[0].psize : 0;
        ssize_t n = pread(fd, b, sizeof b, off);
        if (n < 0) { rc = moco_err(MOCO_EIO, "%s: %s", f, strerror(errno)); goto out; }
        if ((size_t)n < sizeof b) {
            rc = moco_err(MOCO_ECORRUPT, "%s: truncated: %lld bytes, too short to hold LMDB's two meta pages", f,
                          (long long)st.st_size);
            goto out;
        }
        const char *why = parse_meta(b, i, &m[i]);
        if (why) { rc = moco_err(MOCO_ECORRUPT, "%s: damaged: meta page %u: %s", f, i, why); goto out; }
    }
    if (m[0].psize != m[1].psize) {
        rc = moco_err(MOCO_ECORRUPT, "%s: damaged: the meta pages disagree on the page size (%u, %u)", f, m[0].psize,
                      m[1].psize);
        goto out;
    }
    for (unsigned i = 0; i < 2; i++) {
        uint64_t need = (m[i].last_pg + 1) * m[i].psize;
        if ((uint64_t)st.st_size < need) {
            rc = moco_err(MOCO_ECORRUPT, "%s: truncated: %lld bytes, but meta page %u counts %llu pages of %u bytes (%llu)",
                          f, (long long)st.st_size, i, (unsigned long long)(m[i].last_pg + 1), m[i].psize,
                          (unsigned long long)need);
            goto out;
        }
    }
    /* The meta page LMDB reads: the newest transaction number T (mdb_env_pick_meta:
     * meta 0 on a tie) goes into the lock file, and a read transaction reads meta
     * page T & 1 (mdb_txn_renew0). LMDB writes transaction T to page T & 1, so in a
     * file it wrote the two are one page; if not, the walk below would check one
     * tree while LMDB searches the other (a loop found by fuzz_lmdb). */
    const unsigned newest = m[1].txnid > m[0].txnid, used = (unsigned)(m[newest].txnid & 1);
    if (used != newest) {
        rc = moco_err(MOCO_ECORRUPT, "%s: damaged: meta page %u holds the newest transaction (%llu), which belongs in meta page %u",
                      f, newest, (unsigned long long)m[newest].txnid, used);
        goto out;
    }
    const lm_meta *cur = &m[used];
    if ((rc = check_trees(fd, f, cur))) goto out;
    *data_end = (cur->last_pg + 1) * cur->psize;
    *ino = (uint64_t)st.st_ino;
out:
    close(fd);
    return rc;
}
