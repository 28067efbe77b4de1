/* payload.h: what a sample record's encoded payload says of itself (its
 * format from its first bytes; its size and channels from its own header,
 * no pixel decoded), and the one check of a record header against it. The
 * CRC covers only the payload: this check is what finds a header whose
 * width, height, channels or encoding was damaged. `moco info --verify`,
 * the evaluation reader (trainer/evalset.c) and the augmentation workers
 * (augment/augment.c) all use it. A label moved to another valid class
 * cannot be found from a record alone (the format has no check for it). */
#ifndef MOCO_PAYLOAD_H
#define MOCO_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "formats/record.h"

typedef struct {
    int encoding;        /* MOCO_ENC_JPEG, MOCO_ENC_PNG, or -1: neither signature */
    int width, height;   /* as the payload's own header gives them */
    int channels;        /* bands as stored (1-4), as moco mkdb counted them */
} moco_payload_info;

/* MOCO_ENC_JPEG (FF D8 FF), MOCO_ENC_PNG (its 8-byte signature) or -1. */
int moco_payload_encoding(const uint8_t *pl, size_t n);

/* Channels of a JPEG from TurboJPEG's colour space (a TJCS_* value): grey
 * 1, CMYK and YCCK 4, others 3 (moco mkdb's count). */
int moco_payload_jpeg_channels(int tjcs);

/* Compare an encoded record's header (encoding, width x height, channels)
 * with what its payload claims. 0, or MOCO_ECORRUPT with a message naming
 * `what` and each field that differs ("record 3: header says 33x32,
 * payload claims 32x32"). A raw record is not compared (its length is, by
 * moco_rec_parse). */
int moco_rec_check_claims(const moco_rec_header *h, const moco_payload_info *p, const char *what);

/* Read the payload's own header (a JPEG with TurboJPEG, through `tj`, a
 * tjhandle from tjInitDecompress, or NULL to make one for the call;
 * otherwise libvips' header reader, which needs VIPS_INIT) and compare it
 * with h, as moco_rec_check_claims. 0 for a raw record. MOCO_ECORRUPT with
 * a message naming `what` when the payload's header is unreadable or
 * differs; MOCO_ENOMEM. */
int moco_rec_check_payload(void *tj, const moco_rec_header *h, const uint8_t *pl, const char *what);

#endif
