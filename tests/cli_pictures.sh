#!/usr/bin/env bash
# cli_pictures.sh: `moco preview` draws the column headings (original,
# query, key) in a band above the tiles, and `moco plot` draws a run
# against the reference (../shared/reference; only the plain plot is
# checked without it). The band is checked in the PNG's pixels (PIL from
# Debian's python3-pil; skipped without it, or without Fashion-MNIST).
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/pictures
SRC=/usr/share/datasets/fashion-mnist
[ -d $SRC ] || { echo "skipped: $SRC absent"; exit 77; }
/usr/bin/python3 -c 'import PIL' 2>/dev/null || { echo "skipped: python3-pil absent"; exit 77; }
rm -rf "$T" && mkdir -p "$T/run"
$M mkdb $SRC "$T/db" --split test --limit 64 --quiet >/dev/null || fail mkdb
$M preview "$T/db" --out "$T/p.png" --recipe cifar --size 28 --n 8 >/dev/null || fail preview
# the heading band: light text on the dark background in the top 20 rows,
# found as runs of lit pixel columns: six words, original > query > key in
# width, the same in both groups of columns (tiles there instead would give
# some other count and widths)
/usr/bin/python3 - "$T/p.png" <<'PY' || fail "preview: no column headings"
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("L")
w, h = im.size
lit = [sum(1 for y in range(0, 20) if im.getpixel((x, y)) > 150) for x in range(w)]
words, start, last = [], None, -100
for x, l in enumerate(lit):
    if l:
        if start is not None and x - last > 6:
            words.append((start, last))
            start = None
        if start is None:
            start = x
        last = x
if start is not None:
    words.append((start, last))
widths = [b - a + 1 for a, b in words]
print("heading words at x %s, widths %s" % (words, widths))
if len(words) != 6:
    sys.exit("want 6 headings (original, query, key over 2 groups), found %d: %s" % (len(words), words))
for g in (0, 3):
    if not widths[g] > widths[g + 1] > widths[g + 2]:
        sys.exit("group %d: widths %s are not those of original > query > key" % (g // 3, widths[g:g + 3]))
if any(abs(widths[i] - widths[i + 3]) > 1 for i in range(3)):
    sys.exit("the two groups' headings differ: %s" % widths)
PY
cp docs/cifar10-w16-20ep-metrics.jsonl "$T/run/metrics.jsonl"
png() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = "211PNG" ]; }
$M plot "$T/run" --out "$T/p0.png" >/dev/null 2>"$T/plot.err" && png "$T/p0.png" || fail "plot: $(cat "$T/plot.err")"
REF=../shared/reference/cifar10-w16-20ep-pytorch-demo-init.jsonl
if [ -f "$REF" ]; then
  # against the reference: a PNG, and not the plain plot (the reference's curves are drawn)
  $M plot "$T/run" --out "$T/c.png" --compare "$REF" >/dev/null 2>"$T/plot.err" && png "$T/c.png" \
    || fail "plot --compare $REF: $(cat "$T/plot.err")"
  cmp -s "$T/p0.png" "$T/c.png" && fail "plot --compare drew nothing more than the plain plot"
  echo "cli_pictures: preview headings, plot, and plot against the reference ok"
else
  echo "cli_pictures: preview headings and plot ok (note: $REF absent, --compare not checked)"
fi
