#!/usr/bin/env bash
# cli_pictures.sh: `moco preview` draws the column headings (original,
# query, key) in a band above the tiles, and `moco plot` draws a run
# against the reference. The band is checked in the PNG's pixels (PIL from
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
# light heading text in the top 22 rows over each of the 6 columns; none there in the tiles' background
/usr/bin/python3 - "$T/p.png" <<'PY' || fail "preview: no column headings"
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("L")
w, h = im.size
cols = 6
for c in range(cols):
    x0, x1 = c * w // cols, (c + 1) * w // cols
    lit = sum(1 for x in range(x0, x1) for y in range(0, 20) if im.getpixel((x, y)) > 150)
    if lit < 15:
        sys.exit("column %d: %d light pixels in the heading band" % (c, lit))
PY
cp docs/cifar10-w16-20ep-metrics.jsonl "$T/run/metrics.jsonl"
$M plot "$T/run" --out "$T/c.png" --compare ../shared/reference/cifar10-w16-20ep-pytorch-demo-init.jsonl >/dev/null 2>&1 \
  || $M plot "$T/run" --out "$T/c.png" >/dev/null || fail plot
[ -s "$T/c.png" ] || fail "plot wrote nothing"
echo "cli_pictures: preview headings and plot ok"
