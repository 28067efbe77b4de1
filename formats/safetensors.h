/* safetensors.h: read and write .safetensors files (the format of Hugging
 * Face's safetensors: an 8-byte little-endian header length N, N bytes of
 * JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
 * "__metadata__": {"k": "v"}}, then the raw little-endian tensor bytes, with
 * offsets relative to the end of the header).
 *
 * The reader trusts nothing: the header length must fit the file, the JSON
 * must be strict, every tensor needs a known dtype, a shape of at most
 * MOCO_ST_MAX_DIMS non-negative dimensions, and offsets with
 * e - b == product(shape) * dtype size (overflow-checked); the tensors must
 * tile the data area exactly (no overlap, no hole, nothing after), names are
 * unique and at most MOCO_ST_MAX_NAME bytes. Failures are MOCO_ECORRUPT with
 * a message naming the file and the tensor; a file is never half-loaded.
 *
 * Caveats: the whole file is read into memory; byte order is little-endian
 * (the only one this code runs on). */
#ifndef MOCO_SAFETENSORS_H
#define MOCO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define MOCO_ST_MAX_DIMS 8
#define MOCO_ST_MAX_NAME 191
#define MOCO_ST_MAX_HEADER (100u << 20)

typedef enum {
    MOCO_ST_F32, MOCO_ST_F64, MOCO_ST_F16, MOCO_ST_BF16, MOCO_ST_I64, MOCO_ST_I32,
    MOCO_ST_I16, MOCO_ST_I8, MOCO_ST_U8, MOCO_ST_BOOL, MOCO_ST_U16, MOCO_ST_U32, MOCO_ST_U64,
    MOCO_ST_NDTYPES
} moco_st_dtype;

typedef struct {
    char name[MOCO_ST_MAX_NAME + 1];
    moco_st_dtype dtype;
    int ndim;
    int64_t shape[MOCO_ST_MAX_DIMS];
    uint64_t begin, end; /* byte offsets in the data area */
} moco_st_tensor;

typedef struct moco_st moco_st;

/* "F32", ... */
const char *moco_st_dtype_name(moco_st_dtype d);
size_t moco_st_dtype_size(moco_st_dtype d);

/* The first n (>= 8) bytes b of a safetensors file of file_len bytes: 0
 * and *hl its header length; or MOCO_ECORRUPT naming what: "not a
 * safetensors checkpoint" when they cannot start one (a length under 2 or
 * over MOCO_ST_MAX_HEADER, or no '{' after it: an .npy, a data.mdb), or a
 * length that does not fit the file (cut short). */
int moco_st_header_len(const uint8_t *b, size_t n, uint64_t file_len, const char *what, uint64_t *hl);

/* Open path (read whole) / parse a copy of buf[0..len). `what` names the
 * source in messages. Returns 0 and a handle, MOCO_EIO, MOCO_ENOMEM or
 * MOCO_ECORRUPT. */
int moco_st_open(const char *path, moco_st **out);
int moco_st_parse(const void *buf, size_t len, const char *what, moco_st **out);
void moco_st_destroy(moco_st **st);

int moco_st_count(const moco_st *st);
const moco_st_tensor *moco_st_at(const moco_st *st, int i); /* in header order */
/* The tensor called name, or NULL. */
const moco_st_tensor *moco_st_find(const moco_st *st, const char *name);
/* Its bytes (valid until moco_st_destroy). */
const void *moco_st_data(const moco_st *st, const moco_st_tensor *t);

/* Copy tensor `name` into dst after checking it exists (MOCO_ENOTFOUND),
 * has the dtype (MOCO_EFORMAT) and exactly the shape given (MOCO_EINVAL);
 * messages name the file and the tensor and show both shapes. */
int moco_st_read(const moco_st *st, const char *name, moco_st_dtype dtype, int ndim, const int64_t *shape, void *dst);

/* One tensor to write. */
typedef struct {
    const char *name;
    moco_st_dtype dtype;
    int ndim;
    int64_t shape[MOCO_ST_MAX_DIMS];
    const void *data;
} moco_st_entry;

/* Write e[0..n) to path atomically (path.tmp, fsync, rename), header padded
 * with spaces to a multiple of 8 bytes. meta (may be NULL) is a list of
 * nmeta key/value string pairs for "__metadata__". A value that is the
 * pointer MOCO_ST_HEADER_CRC (at most one) is written as the header's own
 * CRC-32: 8 lower-case hex digits, of the whole header (padding included)
 * as it reads with those 8 digits written as '0' (moco_st_header_crc).
 * Returns 0, MOCO_EINVAL (a bad name or shape) or MOCO_EIO. */
extern const char MOCO_ST_HEADER_CRC[];
int moco_st_write(const char *path, const moco_st_entry *e, int n, const char *const *meta, int nmeta);

/* The CRC-32 of header h[0..hl) with the 8 bytes at h + at read as '0'
 * (at + 8 <= hl): what a header CRC written as above must equal. */
uint32_t moco_st_header_crc(const char *h, size_t hl, size_t at);

#endif
