/* test_replace.c: formats/replace.c, and the writers that rename a
 * temporary file onto a path (checkpoints through moco_st_write, the
 * wisdom file through tune_save): none of them replaces what is not a
 * regular file (a FIFO and a directory stand in here for /dev/null, which
 * a rename run as root would replace with a plain file), a symbolic link
 * to a regular file stays a link while the file it names is written, and
 * a link planted at the temporary name is never written through. Readers
 * (moco_fopen_regular, the wisdom file) refuse a FIFO at once. */
#include "tests/testutil.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>

#include "formats/errors.h"
#include "formats/replace.h"
#include "formats/safetensors.h"
#include "trainer/engine/par.h"
#include "trainer/engine/tune.h"

static mode_t kind_of(const char *p)
{
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    return st.st_mode & S_IFMT;
}

/* a regular file at p holding text */
static void put(const char *p, const char *text)
{
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* dir/name, in a static buffer of its own per slot */
static const char *at(int slot, const char *dir, const char *name)
{
    static char b[8][4200];
    snprintf(b[slot], sizeof b[slot], "%s/%s", dir, name);
    return b[slot];
}

static void test_target(void **s)
{
    (void)s;
    const char *d = tu_tmpdir("replace_target");
    char t[4200];
    const char *none = at(0, d, "none"), *reg = at(1, d, "reg"), *fifo = at(2, d, "fifo"), *sub = at(3, d, "sub");
    const char *lreg = at(4, d, "link-reg"), *ldir = at(5, d, "link-dir"), *ldang = at(6, d, "link-dangling");
    assert_int_equal(moco_replace_target(none, t, sizeof t), 0);
    assert_string_equal(t, none);

    put(reg, "x\n");
    assert_int_equal(moco_replace_target(reg, t, sizeof t), 0);
    assert_string_equal(t, reg);

    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(symlink("reg", lreg), 0);
    assert_int_equal(symlink("sub", ldir), 0);
    assert_int_equal(symlink("nothing-here", ldang), 0);

    /* a link to a regular file: its target, resolved */
    assert_int_equal(moco_replace_target(lreg, t, sizeof t), 0);
    char *real = realpath(reg, NULL);
    assert_non_null(real);
    assert_string_equal(t, real);
    free(real);

    /* refused, each with a message naming the path and what is there */
    const char *bad[] = {fifo, sub, ldir, ldang};
    const char *what[] = {"a FIFO", "a directory", "a directory", "to nothing"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(moco_replace_target(bad[i], t, sizeof t), MOCO_EIO);
        printf("  %s\n", moco_errmsg());
        assert_non_null(strstr(moco_errmsg(), bad[i]));
        assert_non_null(strstr(moco_errmsg(), what[i]));
    }
    /* reading: a regular file opens, a FIFO is refused at once (no writer is ever coming), nothing is ENOENT */
    FILE *r = moco_fopen_regular(reg);
    assert_non_null(r);
    assert_int_equal(fgetc(r), 'x');
    fclose(r);
    errno = 0;
    assert_null(moco_fopen_regular(fifo));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(moco_errmsg(), fifo));
    assert_non_null(strstr(moco_errmsg(), "a FIFO"));
    errno = 0;
    assert_null(moco_fopen_regular(sub));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(moco_errmsg(), "a directory"));
    assert_null(moco_fopen_regular(none));
    assert_int_equal(errno, ENOENT);
    assert_int_equal(unlink(fifo), 0); /* nothing that waits is left for later readers of the scratch directory */
    /* too small a buffer: an error, not a cut path */
    char small[8];
    assert_int_equal(moco_replace_target(reg, small, sizeof small), MOCO_EINVAL);
}

static void test_checkpoint_writer(void **s)
{
    (void)s;
    const char *d = tu_tmpdir("replace_st");
    float w[4] = {1, 2, 3, 4};
    moco_st_entry e[] = {{"w", MOCO_ST_F32, 1, {4}, w}};
    const char *fifo = at(0, d, "ckpt-fifo"), *sub = at(1, d, "ckpt-dir"), *reg = at(2, d, "real.safetensors");
    const char *link = at(3, d, "link.safetensors");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(moco_st_write(fifo, e, 1, NULL, 0), MOCO_EIO);
    assert_non_null(strstr(moco_errmsg(), fifo));
    assert_int_equal(kind_of(fifo), S_IFIFO); /* still a FIFO */
    assert_int_equal(moco_st_write(sub, e, 1, NULL, 0), MOCO_EIO);
    assert_int_equal(kind_of(sub), S_IFDIR);
    assert_false(tu_exists(at(4, d, "ckpt-fifo.tmp")));
    assert_int_equal(unlink(fifo), 0);

    /* through a link: the link stays, the file it names holds the tensors */
    put(reg, "");
    assert_int_equal(symlink("real.safetensors", link), 0);
    assert_int_equal(moco_st_write(link, e, 1, NULL, 0), 0);
    assert_int_equal(kind_of(link), S_IFLNK);
    assert_int_equal(kind_of(reg), S_IFREG);
    moco_st *st = NULL;
    assert_int_equal(moco_st_open(reg, &st), 0);
    float got[4];
    assert_int_equal(moco_st_read(st, "w", MOCO_ST_F32, 1, (int64_t[]){4}, got), 0);
    assert_memory_equal(got, w, sizeof w);
    moco_st_destroy(&st);

    /* a link planted at the temporary name: removed, never written through */
    const char *victim = at(5, d, "victim"), *out = at(6, d, "planted.safetensors"), *plant = at(7, d, "planted.safetensors.tmp");
    put(victim, "precious\n");
    assert_int_equal(symlink("victim", plant), 0);
    assert_int_equal(moco_st_write(out, e, 1, NULL, 0), 0);
    size_t vlen = 0;
    uint8_t *v = tu_read_file(victim, &vlen);
    assert_int_equal(vlen, 9);
    assert_memory_equal(v, "precious\n", 9);
    free(v);
    assert_false(tu_exists(plant));
    assert_int_equal(kind_of(out), S_IFREG);
    assert_int_equal(moco_st_open(out, &st), 0);
    moco_st_destroy(&st);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char m[] = "test_replace: the wisdom file's reader blocked on a FIFO\n";
    if (write(2, m, sizeof m - 1) < 0) _exit(3);
    _exit(2);
}

static void test_wisdom_writer(void **s)
{
    (void)s;
    const char *d = tu_tmpdir("replace_wisdom");
    const char *fifo = at(0, d, "wisdom-fifo"), *reg = at(1, d, "real.jsonl"), *link = at(2, d, "wisdom.jsonl");
    const tune_shape sh = {8, 16, 4, 4, 16, 1, 1, 0};
    tune_choice c;
    par_set_threads(1);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    signal(SIGALRM, on_alarm);
    alarm(60); /* a reader that opens the FIFO waits for a writer forever */
    tune_configure(TUNE_MEASURE, fifo);
    assert_int_equal(tune_conv(&sh, TUNE_FWD, NN_FP32, 1 << 16, &c), 0);
    alarm(0);
    assert_int_equal(c.measured, 1);
    const char *note = tune_note();
    assert_non_null(note);
    printf("  note: %s\n", note);
    assert_non_null(strstr(note, "a FIFO"));
    assert_int_equal(tune_save(), MOCO_EIO);
    printf("  %s\n", moco_errmsg());
    assert_non_null(strstr(moco_errmsg(), fifo));
    assert_int_equal(kind_of(fifo), S_IFIFO);
    assert_false(tu_exists(at(3, d, "wisdom-fifo.lock")));
    assert_int_equal(unlink(fifo), 0);

    /* a link to a regular file: written through, the link kept */
    put(reg, "");
    assert_int_equal(symlink("real.jsonl", link), 0);
    tune_configure(TUNE_MEASURE, link);
    assert_int_equal(tune_conv(&sh, TUNE_FWD, NN_FP32, 1 << 16, &c), 0);
    assert_int_equal(tune_save(), 0);
    assert_int_equal(kind_of(link), S_IFLNK);
    size_t len = 0;
    uint8_t *text = tu_read_file(reg, &len);
    assert_non_null(text);
    assert_true(len > 0);
    assert_non_null(strstr((const char *)text, "\"shape\":[8,16,4,4,16,1,1,0]"));
    free(text);
    tune_configure(TUNE_MEASURE, link); /* read back through the link: not timed */
    assert_int_equal(tune_conv(&sh, TUNE_FWD, NN_FP32, 1 << 16, &c), 0);
    assert_int_equal(c.measured, 0);

    /* a link planted at the temporary name (path.PID.tmp) is not written through */
    const char *victim = at(4, d, "victim"), *out = at(5, d, "planted.jsonl");
    char plant[4300];
    snprintf(plant, sizeof plant, "%s.%d.tmp", out, (int)getpid());
    put(victim, "precious\n");
    assert_int_equal(symlink("victim", plant), 0);
    tune_configure(TUNE_MEASURE, out);
    assert_int_equal(tune_conv(&sh, TUNE_FWD, NN_FP32, 1 << 16, &c), 0);
    assert_int_equal(tune_save(), 0);
    text = tu_read_file(victim, &len);
    assert_int_equal(len, 9);
    assert_memory_equal(text, "precious\n", 9);
    free(text);
    assert_false(tu_exists(plant));
    text = tu_read_file(out, &len);
    assert_non_null(strstr((const char *)text, "\"shape\":[8,16,4,4,16,1,1,0]"));
    free(text);
    tune_configure(TUNE_RULE, NULL);
}

/* an output under a missing directory: the path the user gave and the
 * directory named, never the temporary file's name */
static void test_missing_directory(void **s)
{
    (void)s;
    const char *d = tu_tmpdir("replace_nodir");
    char out[4200], msg[8600];
    snprintf(out, sizeof out, "%s/nodir/x.safetensors", d);
    assert_int_equal(moco_write_replace(out, "x", 1), MOCO_EIO);
    snprintf(msg, sizeof msg, "cannot write %s: directory %s/nodir does not exist", out, d);
    assert_string_equal(moco_errmsg(), msg);
    float w[2] = {1, 2};
    moco_st_entry e[] = {{"a", MOCO_ST_F32, 1, {2}, w}};
    assert_int_equal(moco_st_write(out, e, 1, NULL, 0), MOCO_EIO);
    assert_string_equal(moco_errmsg(), msg);
    /* a file where a directory should be */
    put(at(0, d, "file"), "x");
    snprintf(out, sizeof out, "%s/file/x.png", d);
    assert_int_equal(moco_write_replace(out, "x", 1), MOCO_EIO);
    assert_null(strstr(moco_errmsg(), ".tmp"));
    assert_non_null(strstr(moco_errmsg(), out));
    assert_int_equal(moco_err_output("create", "a/b/", ENOENT), MOCO_EIO);
    assert_string_equal(moco_errmsg(), "cannot create a/b/: directory a does not exist");
    assert_int_equal(moco_err_output("write", "x", EACCES), MOCO_EIO);
    assert_string_equal(moco_errmsg(), "cannot write x: Permission denied");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target),
        cmocka_unit_test(test_checkpoint_writer),
        cmocka_unit_test(test_wisdom_writer),
        cmocka_unit_test(test_missing_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
