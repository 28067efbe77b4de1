/* pilrules.h: where PIL (Pillow 9.4, torchvision's loader) refuses a file
 * that libvips reads, for `moco mkdb`, which must refuse it too (a sample
 * that torchvision's ImageFolder cannot load is never stored).
 *
 * Each function reads only the bytes given and allocates nothing but the
 * reason it returns. */
#ifndef LOADER_PILRULES_H
#define LOADER_PILRULES_H

#include <stddef.h>
#include <stdint.h>

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

#endif
