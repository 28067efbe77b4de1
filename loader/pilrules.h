/* pilrules.h: where PIL (Pillow 9.4, torchvision's loader) refuses a file
 * that libvips reads, or reads other pixels from it, for `moco mkdb`, which
 * must refuse it too (a sample that torchvision's ImageFolder cannot load is
 * never stored) or store PIL's pixels.
 *
 * Each function reads only the bytes given; a reason returned in *why or as
 * the result is malloc'd. */
#ifndef LOADER_PILRULES_H
#define LOADER_PILRULES_H

#include <stddef.h>
#include <stdint.h>
#include <vips/vips.h>

/* PIL's limit on one inflated iCCP, zTXt or iTXt chunk (PngImagePlugin's
 * MAX_TEXT_CHUNK, ImageFile.SAFEBLOCK), and on the text of all of them
 * (MAX_TEXT_MEMORY). */
#define PIL_MAX_TEXT_CHUNK ((size_t)1 << 20)
#define PIL_MAX_TEXT_MEMORY (64 * PIL_MAX_TEXT_CHUNK)

/* NULL if PIL opens and loads the PNG file (n bytes, its signature checked
 * by the caller) as far as its ancillary chunks go, else why it refuses it
 * (malloc'd; NULL also when out of memory for the message, which only
 * loses the check). Follows PngImagePlugin's chunk_iCCP, chunk_tEXt,
 * chunk_zTXt and chunk_iTXt: a chunk whose data inflates past
 * PIL_MAX_TEXT_CHUNK ("Decompressed Data Too Large"), a zTXt or iCCP
 * chunk whose compression method is not 0 ("Unknown compression method"),
 * text chunks whose text adds up past PIL_MAX_TEXT_MEMORY ("Too much memory
 * used in text chunks"). Chunks are walked from the first to IEND, as PIL
 * reads them (before IDAT at open, after it at load); a chunk whose length
 * runs past the end of the file ends the walk (libvips judges the rest). */
char *pil_png_refusal(const uint8_t *file, size_t n);

/* A Netpbm file (P1-P6: n >= 2 bytes starting "P1".."P6") opened by
 * libvips' own loader (ppmload, fail_on error) with PIL's pixels, as
 * convert("RGB") (or "L") gives them: a sample v of a PGM or PPM whose
 * maxval is not 255 becomes min(255, round(v / maxval * 255)) in double,
 * half to even (Pillow's PpmDecoder; libvips and ImageMagick scale by other
 * rules, a level apart); a PGM of maxval over 255 is PIL's mode "I", at
 * round(v / maxval * 65535), which convert() clips to 255; a plain (ASCII)
 * sample over maxval is refused, as PIL refuses it. Returns 0 with *out
 * (8-bit, 1 or 3 bands; the caller unrefs it), or -1 with *why. */
int pil_pnm_load(const uint8_t *file, size_t n, VipsImage **out, char **why);

#endif
