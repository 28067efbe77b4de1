/* sources.h: what `moco mkdb` converts: an image folder, CIFAR-10 binary
 * batches, or IDX files (MNIST / Fashion-MNIST), enumerated into a flat list
 * of items with labels and class names.
 *
 * Folder items are file paths, read and checked later (in parallel) by
 * mkdb; an entry that cannot be read as a file (a broken symbolic link, a
 * FIFO) is an item with a reason (skip), for mkdb to name and count. CIFAR and IDX files are read and validated completely here: a
 * truncated or malformed file is an error naming the file and the byte
 * offset, and no item list is returned. */
#ifndef LOADER_SOURCES_H
#define LOADER_SOURCES_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *path;            /* folder: the image file; raw: the source file */
    const uint8_t *pixels; /* raw sources: h*w*c HWC pixels; NULL for files */
    uint64_t offset;       /* raw sources: byte offset of the sample in path */
    int32_t label;
    uint32_t w, h, c;      /* raw sources only */
    char *skip;            /* folder: why this entry cannot be read, or NULL */
} mk_item;

typedef struct {
    mk_item *items;
    size_t n;
    char **classes;
    uint32_t nclasses;
    const char *format;    /* "folder", "cifar10" or "idx" (static string) */
    char *root;            /* the directory actually read (after --split) */
    uint8_t **blobs;       /* raw sources: owned pixel memory */
    size_t nblobs;
    /* private to sources.c: the output never to be taken as an input */
    const char *out_base;  /* OUT's last component, or NULL */
    int out_exists, out_parent_known;
    uint64_t out_dev, out_ino, parent_dev, parent_ino;
} mk_source;

/* Detect the format of src ("auto") or use the one given ("folder",
 * "cifar10", "idx"), pick the split (NULL: the source must hold only one),
 * and enumerate. Returns 0, MOCO_EINVAL (bad split/format, or a class
 * folder whose name is not UTF-8 or holds a newline; the message names it),
 * MOCO_ENOTFOUND, MOCO_ECORRUPT (truncated or malformed file, naming it and
 * the offset), MOCO_EIO or MOCO_ENOMEM. On failure *s is empty. */
int mk_source_open(const char *src, const char *format, const char *split, mk_source *s);

/* mk_source_open for `moco mkdb SRC OUT`: an image folder's walk also
 * leaves out, naming it on stderr, the dataset at out (the directory itself,
 * or a link to it, wherever it sits under src) and mkdb's temporary and
 * set-aside directories beside it (OUT.tmp-PID, OUT.old-PID): an OUT inside
 * SRC is never a class, nor its files inputs. out may be NULL. */
int mk_source_open_out(const char *src, const char *format, const char *split, const char *out, mk_source *s);

/* Free everything s owns; safe on a zeroed or already-freed source. */
void mk_source_free(mk_source *s);
/* name (a path: any bytes) for a message, into out (cap bytes): control
 * bytes and bytes that are not UTF-8 written as \n, \xHH (a file named
 * with a newline printed a line of its own). */
void mk_escape_name(const char *name, char *out, size_t cap);

#endif
