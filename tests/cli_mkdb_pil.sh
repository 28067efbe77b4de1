#!/usr/bin/env bash
# cli_mkdb_pil.sh: `moco mkdb` against Pillow (torchvision's loader), on
# inputs where PIL and libvips part ways: what PIL refuses, mkdb refuses
# (named and counted), what it opens, mkdb stores, each class one case.
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/mkdb_pil
rm -rf "$T" && mkdir -p "$T"
/usr/bin/python3 -c "import PIL, numpy" 2>/dev/null || { echo "skipped: no PIL/numpy for /usr/bin/python3"; exit 77; }

# 1. PNG ancillary chunks that PIL refuses (PngImagePlugin, Pillow 9.4): an
# iCCP, zTXt or iTXt chunk that inflates past MAX_TEXT_CHUNK (1 MiB;
# "Decompressed Data Too Large"), before the image data (at open) or after it
# (at load); a zTXt whose compression method is not 0, an iCCP without its
# name's separator ("Unknown compression method"); text chunks adding up past
# MAX_TEXT_MEMORY (64 MiB; "Too much memory used in text chunks"). And what it
# takes: 1 MiB exactly, an iTXt stored uncompressed (no limit), a compressed
# iTXt of method 1 or a corrupt zTXt stream (dropped), 64 MiB of text exactly,
# 65 MiB of iTXt that is not UTF-8 (not counted). Before: all stored (libvips
# reads them, and warned at each decode in the workers), 11 samples that
# torchvision's ImageFolder cannot load.
/usr/bin/python3 - "$T/png" "$T/png-verdicts" <<'PY' || fail "making the PNG folder"
import io, os, struct, sys, zlib, numpy as np
from PIL import Image, PngImagePlugin
d, verdicts = sys.argv[1], sys.argv[2]
K = PngImagePlugin.MAX_TEXT_CHUNK
assert K == 1 << 20 and PngImagePlugin.MAX_TEXT_MEMORY == 64 * K, "Pillow's limits moved"
b = io.BytesIO()
Image.fromarray(np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(b, "PNG")
png = b.getvalue()
def chunk(t, data):
    return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data))
def put(cls, *chunks, after=False):
    i = png.find(b"IEND" if after else b"IDAT") - 4
    os.makedirs(os.path.join(d, cls))
    open(os.path.join(d, cls, "x.png"), "wb").write(png[:i] + b"".join(chunks) + png[i:])
z = lambda n, c=b"\0": zlib.compress(c * n, 9)
for n in (K, K + 1, 2 * K):
    put("iccp-%d" % n, chunk(b"iCCP", b"profile\0\0" + z(n)))
    put("ztxt-%d" % n, chunk(b"zTXt", b"key\0\0" + z(n, b"a")))
    put("itxt-%d" % n, chunk(b"iTXt", b"key\0\1\0en\0\0" + z(n, b"a")))
put("ztxt-after-%d" % (K + 1), chunk(b"zTXt", b"key\0\0" + z(K + 1, b"a")), after=True)
put("ztxt-method1", chunk(b"zTXt", b"key\0\1" + z(10)))
put("iccp-no-separator", chunk(b"iCCP", b"profile, no separator, no compressed data"))
put("itxt-plain-2M", chunk(b"iTXt", b"key\0\0\0en\0\0" + b"a" * (2 * K)))
put("itxt-method1", chunk(b"iTXt", b"key\0\1\1en\0\0" + z(2 * K)))
put("ztxt-corrupt", chunk(b"zTXt", b"key\0\0" + b"\x78\x9c\xff\xff\xff" * 10))
put("text-64M", *[chunk(b"zTXt", b"k%d\0\0" % i + z(K, b"a")) for i in range(64)])
put("text-65M", *[chunk(b"zTXt", b"k%d\0\0" % i + z(K, b"a")) for i in range(64)], chunk(b"tEXt", b"t\0" + b"a" * 10))
put("text-65M-itxt", *[chunk(b"iTXt", b"k%d\0\1\0\0\0" % i + z(K, b"a")) for i in range(65)])
put("text-65M-not-utf8", *[chunk(b"iTXt", b"k%d\0\1\0\0\0" % i + z(K, b"\xff")) for i in range(65)])
with open(verdicts, "w") as v:
    for cls in sorted(os.listdir(d)):
        try:
            Image.open(os.path.join(d, cls, "x.png")).convert("RGB")
            v.write("%s ok\n" % cls)
        except Exception as e:  # the reason mkdb gives, from PIL's (a SyntaxError at open is "cannot identify")
            e = str(e)
            why = next((w for w in ("Decompressed Data Too Large", "Too much memory used in text chunks",
                                    "Unknown compression method") if w in e), e)
            v.write("%s %s\n" % (cls, "Unknown compression method" if "cannot identify" in e else why))
PY
grep -c ' ok$' "$T/png-verdicts" | grep -qx 8 || fail "PIL's verdicts moved: $(cat "$T/png-verdicts")"
$M mkdb "$T/png" "$T/db-png" --quiet >"$T/out" 2>"$T/err" || fail "mkdb of the PNG folder: $(cat "$T/err")"
while read -r cls verdict; do
  if [ "$verdict" = ok ]; then
    grep -q "skipping $T/png/$cls/" "$T/err" && fail "$cls: PIL opens it, mkdb skipped it: $(grep "/$cls/" "$T/err")"
  else
    grep "skipping $T/png/$cls/x.png: PNG [a-zA-Z]* chunk at byte [0-9]*: " "$T/err" | grep -qF "PIL refuses it ($verdict)" ||
      fail "$cls: PIL refuses it ($verdict), mkdb did not skip it so: $(grep "/$cls/" "$T/err")"
  fi
done <"$T/png-verdicts"
grep -q "; skipped 11; " "$T/out" && [ "$(grep -c '^moco mkdb: skipping ' "$T/err")" = 11 ] || fail "want 11 skipped: $(cat "$T/out" "$T/err")"
PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$T/db-png/data.mdb" "$T/png-verdicts" <<'PY' || fail "the PNGs stored are not those PIL opens"
import sys
from dbrecords import records
classes = [l.split()[0] for l in open(sys.argv[2])]
want = sorted(l.split()[0] for l in open(sys.argv[2]) if l.split()[1] == "ok")
got = sorted(classes[r[2]] for r in records(sys.argv[1]))
assert got == want, (got, want)
PY
echo "PNG chunks: the 11 PNGs PIL refuses (iCCP/zTXt/iTXt past 1 MiB, before or after IDAT; unknown compression; text past 64 MiB) skipped with PIL's reason; the 8 it opens stored"

# 2. Netpbm samples as PIL reads them (Pillow's PpmDecoder): a PGM or PPM whose
# maxval is not 255 gives min(255, round(v / maxval * 255)), half to even; a
# PGM of maxval over 255 is PIL's mode "I" (v scaled to 65535), which
# convert("RGB") clips to 255. Binary and plain (ASCII), grey and colour, every
# sample value 0..maxval (at 65535: all 65536) and, binary, values over the
# maxval (PIL clamps); a plain sample over the maxval PIL refuses, and so does
# mkdb; PBM, plain and binary. Before (ImageMagick through libvips): a level
# apart at maxval 100, 1000, 4095, 65535, and a PGM over 255 scaled where PIL
# clips (up to 252 levels apart).
/usr/bin/python3 - "$T/pnm" <<'PY' || fail "making the Netpbm folder"
import os, sys, numpy as np
from PIL import Image
d, g = sys.argv[1], np.random.default_rng(17)
def put(cls, data):
    os.makedirs(os.path.join(d, cls))
    open(os.path.join(d, cls, "x.pnm"), "wb").write(data)
for mv in (1, 2, 15, 100, 255, 256, 1000, 4095, 65535):
    for ch in (1, 3):
        n = mv + 1 + (0 if mv > 255 else 256 - mv - 1)  # every value; binary 8-bit: up to 255, over the maxval too
        w = 256
        vals = np.arange(n * ch) % n
        vals = np.concatenate([vals, g.integers(0, n, (-len(vals)) % (w * ch) + w * ch)])
        a = vals.reshape(-1, w, ch)
        body = a.astype(">u2" if mv > 255 else "u1").tobytes()
        put("P%d-%d" % (5 if ch == 1 else 6, mv), b"P%d\n%d %d\n%d\n" % (5 if ch == 1 else 6, w, a.shape[0], mv) + body)
        a = np.minimum(a, mv)[:64]  # plain: within the maxval
        put("P%d-%d" % (2 if ch == 1 else 3, mv), b"P%d\n%d %d\n%d\n" % (2 if ch == 1 else 3, w, a.shape[0], mv) +
            "\n".join(" ".join(str(int(v)) for v in row.ravel()) for row in a).encode() + b"\n")
put("z-plain-over-maxval", b"P2\n3 1\n15\n0 16 3\n")
bits = g.integers(0, 2, (5, 13))
put("pbm-plain", b"P1\n13 5\n" + " ".join(str(int(v)) for v in bits.ravel()).encode() + b"\n")
put("pbm-raw", b"P4\n13 5\n" + np.packbits(bits, axis=1).tobytes())
try:
    Image.open(os.path.join(d, "z-plain-over-maxval", "x.pnm")).convert("RGB")
    sys.exit("PIL reads a plain sample over the maxval")
except ValueError:
    pass
PY
$M mkdb "$T/pnm" "$T/db-pnm" --quiet >"$T/out" 2>"$T/err" || fail "mkdb of the Netpbm folder: $(cat "$T/err")"
grep -q "skipping $T/pnm/z-plain-over-maxval/x.pnm: a sample 16 over the maxval 15: PIL refuses it" "$T/err" &&
  [ "$(grep -c '^moco mkdb: skipping ' "$T/err")" = 1 ] || fail "Netpbm: want the plain sample over the maxval skipped, only it: $(cat "$T/err")"
PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$T/pnm" "$T/db-pnm/data.mdb" <<'PY' || fail "Netpbm stored otherwise than PIL reads it"
import sys
from dbrecords import against_pil
seen, bad = against_pil(sys.argv[1], sys.argv[2], skip={"z-plain-over-maxval"})
assert not bad, bad
print("  %d Netpbm files stored as PNG, pixel for pixel PIL's convert(\"RGB\")" % len(seen))
PY
echo "Netpbm: PGM/PPM of maxval 1, 2, 15, 100, 255, 256, 1000, 4095, 65535 (binary, plain; every sample value) and PBM stored as PIL's convert(\"RGB\"), byte for byte; a plain sample over the maxval refused"

# 3. Memory of a CMYK JPEG (made RGB as PIL does, stored as PNG): one 8000 x
# 8000 image on one thread peaks under 450 MB (measured 351 MB: the 4-byte
# CMYK buffer TurboJPEG fills, converted in place and handed to libvips
# without a copy, and the PNG it writes). Before: 671 MB (the CMYK buffer,
# an RGB buffer and libvips' copy of it). Not under a sanitizer, whose
# shadow memory is counted too.
if ldd "$M" 2>/dev/null | grep -q 'libasan\|libtsan'; then
  echo "skipped: the CMYK JPEG's peak memory (a sanitizer build)"
elif [ ! -x /usr/bin/time ]; then
  echo "skipped: the CMYK JPEG's peak memory (no /usr/bin/time)"
else
  /usr/bin/python3 - "$T/big/a/x.jpg" <<'PY' || fail "making the 8000 x 8000 CMYK JPEG"
import os, sys, numpy as np
from PIL import Image
os.makedirs(os.path.dirname(sys.argv[1]))
y, x = np.mgrid[0:8000, 0:8000]
a = np.stack([(x // 32) & 255, (y // 32) & 255, ((x + y) // 64) & 255, (x * y // 4096) & 255], -1).astype(np.uint8)
Image.fromarray(a, "CMYK").save(sys.argv[1], quality=90)
PY
  /usr/bin/time -f '%M' -o "$T/rss" $M mkdb "$T/big" "$T/db-big" --threads 1 --quiet >"$T/out" 2>"$T/err" || fail "mkdb of the big CMYK JPEG: $(cat "$T/err")"
  rss=$(tail -1 "$T/rss")
  PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$T/db-big/data.mdb" <<'PY' || fail "the big CMYK JPEG is not stored as an 8000 x 8000 RGB PNG"
import sys
from dbrecords import records
enc, ch, label, w, h, payload = next(records(sys.argv[1]))
assert (enc, ch, w, h) == (2, 3, 8000, 8000) and payload[:4] == b"\x89PNG", (enc, ch, w, h)
PY
  [ "$rss" -lt 460800 ] || fail "an 8000 x 8000 CMYK JPEG: peak RSS $rss kB, want under 450 MB"
  echo "an 8000 x 8000 CMYK JPEG on one thread: peak RSS $((rss / 1024)) MB (under 450)"
fi
