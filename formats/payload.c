/* payload.c: a record header against its payload's own header (see payload.h). */
#include "formats/payload.h"

#include <stdio.h>
#include <string.h>
#include <turbojpeg.h>
#include <vips/vips.h>

#include "formats/errors.h"

int moco_payload_encoding(const uint8_t *pl, size_t n)
{
    static const uint8_t JPG[3] = {0xFF, 0xD8, 0xFF}, PNGSIG[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    if (n >= 3 && !memcmp(pl, JPG, 3)) return MOCO_ENC_JPEG;
    if (n >= 8 && !memcmp(pl, PNGSIG, 8)) return MOCO_ENC_PNG;
    return -1;
}

int moco_payload_jpeg_channels(int tjcs)
{
    return tjcs == TJCS_GRAY ? 1 : tjcs == TJCS_CMYK || tjcs == TJCS_YCCK ? 4 : 3;
}

int moco_rec_check_claims(const moco_rec_header *h, const moco_payload_info *p, const char *what)
{
    if (h->encoding == MOCO_ENC_RAW) return 0;
    char msg[256];
    size_t n = 0;
    /* the size first: the message the evaluation reader and the workers have always given */
    if ((int64_t)h->width != p->width || (int64_t)h->height != p->height)
        n += (size_t)snprintf(msg + n, sizeof msg - n, "; header says %ux%u, payload claims %dx%d", h->width, h->height,
                              p->width, p->height);
    if (n < sizeof msg && h->channels != p->channels)
        n += (size_t)snprintf(msg + n, sizeof msg - n, "; header says %u channels, payload claims %d", h->channels,
                              p->channels);
    if (n < sizeof msg && h->encoding != p->encoding)
        n += (size_t)snprintf(msg + n, sizeof msg - n, "; header says %s, payload is %s", moco_encoding_name(h->encoding),
                              p->encoding < 0 ? "neither JPEG nor PNG" : moco_encoding_name(p->encoding));
    if (!n) return 0;
    return moco_err(MOCO_ECORRUPT, "%s: %s", what, msg + 2);
}

int moco_rec_check_payload(void *tj, const moco_rec_header *h, const uint8_t *pl, const char *what)
{
    if (h->encoding == MOCO_ENC_RAW) return 0;
    size_t n = h->payload_len;
    moco_payload_info p = {moco_payload_encoding(pl, n), 0, 0, 0};
    int jw, jh, ss, cs;
    if (p.encoding == MOCO_ENC_JPEG) { /* TurboJPEG reads the header alone (microseconds) */
        tjhandle own = tj ? NULL : tjInitDecompress(), t = tj ? tj : own;
        if (!t) return moco_err(MOCO_ENOMEM, "%s: out of memory (TurboJPEG)", what);
        int ok = tjDecompressHeader3(t, pl, (unsigned long)n, &jw, &jh, &ss, &cs) == 0;
        if (own) tjDestroy(own);
        if (ok) {
            p.width = jw, p.height = jh, p.channels = moco_payload_jpeg_channels(cs);
            return moco_rec_check_claims(h, &p, what);
        }
        /* a header TurboJPEG refuses (a recoverable warning in it): libvips reads it, as the decoders do */
    }
    VipsImage *im = vips_image_new_from_buffer(pl, n, "", "access", VIPS_ACCESS_SEQUENTIAL, NULL);
    if (!im) {
        char why[200];
        snprintf(why, sizeof why, "%s", vips_error_buffer());
        vips_error_clear();
        for (char *c = why; *c; c++)
            if (*c == '\n') *c = *(c + 1) ? ' ' : '\0'; /* one line */
        return moco_err(MOCO_ECORRUPT, "%s: the payload's own header is unreadable (header says %s): %s", what,
                        moco_encoding_name(h->encoding), why);
    }
    p.width = vips_image_get_width(im), p.height = vips_image_get_height(im), p.channels = vips_image_get_bands(im);
    g_object_unref(im);
    return moco_rec_check_claims(h, &p, what);
}
