#!/usr/bin/env bash
# cli_datasets.sh: the real datasets: CIFAR-10 JPEGs from ../shared/data
# (skipped when absent) and Fashion-MNIST from the Debian package. Checks the
# counts `moco info --json` reports and prints the conversion time. With
# PIL: image folders (classes by name, formats stored as PIL reads them,
# formats refused, enumeration rules).
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/datasets
rm -rf "$T" && mkdir -p "$T"
count() { $M info --json "$1" | grep -o '"count":[0-9]*,"num_classes":[0-9]*' | head -1; }
if [ -d /usr/share/datasets/fashion-mnist ]; then
  for s in train:60000 test:10000; do
    $M mkdb /usr/share/datasets/fashion-mnist "$T/fm-${s%%:*}" --split "${s%%:*}" --quiet || fail "fashion-mnist ${s%%:*}"
    [ "$(count "$T/fm-${s%%:*}")" = "\"count\":${s##*:},\"num_classes\":10" ] || fail "fashion-mnist ${s%%:*}: $(count "$T/fm-${s%%:*}")"
  done
  echo "fashion-mnist: 60000 / 10000 samples, 10 classes"
else
  echo "skipped: fashion-mnist counts (/usr/share/datasets/fashion-mnist absent)"
fi
# Damaged datasets (issue "Trustworthy edges", item 1): a copy of
# Fashion-MNIST's test split with data.mdb cut short (half, one page short,
# 4096 bytes) or with a page zeroed. Every command that opens it exits with
# one line naming data.mdb, never a signal (before the fix: SIGBUS, 135, and
# LMDB's assertion abort, 134). Runs before the CIFAR part, which is skipped
# without ../shared.
if [ -d /usr/share/datasets/fashion-mnist ]; then
  mkdir -p "$T"
  $M mkdb /usr/share/datasets/fashion-mnist "$T/fm" --split test --quiet >/dev/null || fail "fashion-mnist test split"
  sz=$(stat -c %s "$T/fm/data.mdb")
  one_line_naming() { # $1: what, $2: expected exit status, $3: status, $4: stderr file, $5: the file
    [ "$3" -eq "$2" ] || fail "$1: exit $3, expected $2"
    grep -qF "$5" "$4" || fail "$1: stderr does not name $5: $(cat "$4")"
    [ "$(wc -l <"$4")" -eq 1 ] || fail "$1: not one line: $(cat "$4")"
  }
  for cut in $((sz / 2)) $((sz - 4096)) 4096; do
    rm -rf "$T/cut" && cp -r "$T/fm" "$T/cut" && truncate -s "$cut" "$T/cut/data.mdb" || fail "copying"
    $M info "$T/cut" >/dev/null 2>"$T/err"
    one_line_naming "moco info, data.mdb cut to $cut bytes" 1 $? "$T/err" "$T/cut/data.mdb"
    $M info --verify --json "$T/cut" >/dev/null 2>"$T/err"
    one_line_naming "moco info --verify, data.mdb cut to $cut bytes" 1 $? "$T/err" "$T/cut/data.mdb"
    $M preview "$T/cut" --out "$T/p.png" >/dev/null 2>"$T/err"
    one_line_naming "moco preview, data.mdb cut to $cut bytes" 1 $? "$T/err" "$T/cut/data.mdb"
    timeout 60 $M run "$T/cut" --epochs 1 --workers 1 --run-dir "$T/run" >/dev/null 2>"$T/err"
    one_line_naming "moco run, data.mdb cut to $cut bytes" 2 $? "$T/err" "$T/cut/data.mdb"
    for args in "--train $T/cut --test $T/fm" "--train $T/fm --test $T/cut"; do
      timeout 60 $M knn --random-init 1 --width 4 --size 28 --threads 1 $args >/dev/null 2>"$T/err"
      one_line_naming "moco knn $args, data.mdb cut to $cut bytes" 1 $? "$T/err" "$T/cut/data.mdb"
    done
    timeout 60 $M embed --random-init 1 --width 4 --size 28 --threads 1 --db "$T/cut" --out "$T/e.npy" >/dev/null 2>"$T/err"
    one_line_naming "moco embed, data.mdb cut to $cut bytes" 1 $? "$T/err" "$T/cut/data.mdb"
  done
  rm -rf "$T/cut" && cp -r "$T/fm" "$T/cut" || fail "copying"
  dd if=/dev/zero of="$T/cut/data.mdb" bs=4096 seek=$((sz / 4096 / 2)) count=1 conv=notrunc status=none || fail "zeroing"
  $M info --verify "$T/cut" >/dev/null 2>"$T/err"
  one_line_naming "moco info --verify, a page zeroed" 1 $? "$T/err" "$T/cut/data.mdb"
  echo "damaged datasets: info, info --verify, preview, run, knn (bank and queries), embed exit 1 or 2 naming data.mdb (3 truncations, a zeroed page)"
  # A record header's label damaged (the CRC covers the payload, not the header): out of
  # the classes, it is a bad record for info --verify and an error naming the record for
  # knn and lincls (before: lincls indexed its logits with it, a SIGSEGV at 2000000000 and a
  # silently wrong gradient at 10 or -1); within them, info --verify finds the class counts
  # differ from the metadata's.
  $M mkdb /usr/share/datasets/fashion-mnist "$T/small" --split test --limit 256 --quiet >/dev/null || fail "fashion-mnist, 256"
  # OUT with a trailing slash, new and then replaced (before: "cannot create OUT/.tmp-PID", and
  # --force refused the dataset for holding mkdb's own temporary directory)
  $M mkdb /usr/share/datasets/fashion-mnist "$T/slash/" --split test --limit 8 --quiet >/dev/null 2>"$T/err" || fail "mkdb OUT/: $(cat "$T/err")"
  $M mkdb /usr/share/datasets/fashion-mnist "$T/slash/" --split test --limit 16 --quiet --force >/dev/null 2>"$T/err" || fail "mkdb OUT/ --force: $(cat "$T/err")"
  [ "$(count "$T/slash")" = '"count":16,"num_classes":10' ] && [ "$(ls -A "$T/slash" | tr '\n' ' ')" = "data.mdb lock.mdb " ] || fail "mkdb OUT/: $(count "$T/slash"), $(ls -A "$T/slash")"
  relabel() { # $1: dataset, $2: new label or "next" (the next class): the first record's label in data.mdb,
              # its header CRC recomputed (a false header, consistent) unless $3 is "damage"
    PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$1/data.mdb" "$2" "${3:-}" <<'PY'
import struct, sys
from dbrecords import patch_first
p, want, how = sys.argv[1:4]
b = open(p, "rb").read()
i = b.find(b"MOCR")
old = struct.unpack_from("<i", b, i + 8)[0]
patch_first(p, 8, "<i", (old + 1) % 10 if want == "next" else int(want), crc=how != "damage")
PY
  }
  for bad in 10 -2 2000000000; do
    rm -rf "$T/lab" && cp -r "$T/small" "$T/lab" && relabel "$T/lab" $bad || fail "relabelling"
    $M info --verify "$T/lab" >"$T/out" 2>"$T/err" && fail "info --verify passed a record labelled $bad"
    if [ "$bad" = -2 ]; then want="$T/lab: record [0-9]*: label -2 (expected >= -1)"; else want="$T/lab: record [0-9]* has label $bad, not one of the dataset's 10 classes"; fi
    grep -q "$want" "$T/err" || fail "info --verify, label $bad: $(cat "$T/err")"
    timeout 60 $M knn --random-init 1 --width 4 --size 28 --threads 1 --train "$T/lab" --test "$T/small" >/dev/null 2>"$T/err"
    [ $? -eq 1 ] && grep -q "$want" "$T/err" || fail "knn, label $bad: $(cat "$T/err")"
    for side in "--train $T/lab --test $T/small" "--train $T/small --test $T/lab"; do
      timeout 60 $M lincls --random-init 1 --arch resnet18-cifar --width 4 --size 28 --epochs 1 --threads 1 --cached-features $side >/dev/null 2>"$T/err"
      rc=$?
      [ $rc -eq 1 ] && grep -q "$want" "$T/err" || fail "lincls $side, label $bad: exit $rc: $(cat "$T/err")"
    done
  done
  rm -rf "$T/lab" && cp -r "$T/small" "$T/lab" && relabel "$T/lab" next || fail "relabelling"
  $M info --verify --json "$T/lab" >"$T/out" 2>"$T/err" && fail "info --verify passed a label moved to another class"
  grep -q '"bad_records":0,"miscounted_classes":2' "$T/out" || fail "info --verify --json, a label moved: $(cat "$T/out")"
  [ "$(grep -c "$T/lab: class [0-9] (.*): [0-9]* records carry its label, the metadata says [0-9]*" "$T/err")" = 2 ] || fail "want the two classes named: $(cat "$T/err")"
  # the same label moved by a damaged byte (the header CRC not recomputed): the record itself is
  # found bad, by info --verify and by knn (before record version 2: bad_records 0, knn exit 0)
  rm -rf "$T/lab" && cp -r "$T/small" "$T/lab" && relabel "$T/lab" next damage || fail "relabelling"
  $M info --verify --json "$T/lab" >"$T/out" 2>"$T/err" && fail "info --verify passed a damaged label"
  grep -q '"bad_records":1,' "$T/out" && grep -q '"version1_records":0}' "$T/out" && grep -q "$T/lab: record [0-9]*: header CRC mismatch (a header field is damaged: label [0-9]" "$T/err" \
    || fail "info --verify --json, a damaged label: $(cat "$T/out" "$T/err")"
  timeout 60 $M knn --random-init 1 --width 4 --size 28 --threads 1 --train "$T/lab" --test "$T/small" >/dev/null 2>"$T/err"
  [ $? -eq 1 ] && grep -q "$T/lab: record [0-9]*: header CRC mismatch" "$T/err" || fail "knn, a damaged label: $(cat "$T/err")"
  $M info --verify "$T/small" >/dev/null 2>"$T/err" || fail "the undamaged copy does not verify: $(cat "$T/err")"
  echo "a damaged label: a bad record for info --verify, an error naming the record for knn and lincls; a label moved within the classes: two class counts named, or, damaged (its header CRC not rewritten), the record named"
  rm -rf "$T"
else
  echo "skipped: damaged datasets and labels (/usr/share/datasets/fashion-mnist absent)"
fi
# Classes are matched by name between the training and the test set: a test
# folder holding only "bees" is class 0 of its own dataset and class 1 of the
# training set's (ants, bees). Its images are the training set's bees, so kNN
# with k 1 finds each one itself: 100% (before: compared by index, 0%), and
# linear evaluation's labels follow. A test class the training set lacks is
# refused, naming both datasets.
if /usr/bin/python3 -c 'import PIL' 2>/dev/null; then
  /usr/bin/python3 - "$T/cls" <<'PY' || fail "making the class folders"
import os, random, sys
from PIL import Image
r = random.Random(5)
for split, classes in (("train", ["ants", "bees"]), ("test", ["bees"]), ("odd", ["bees", "wasps"]), ("jpeg", ["ants"])):
    for c in classes:
        os.makedirs(os.path.join(sys.argv[1], split, c))
        for i in range(6):
            rr = random.Random((len(c) * 100 + ord(c[0])) * 10 + i) if c != "wasps" else r
            im = Image.frombytes("RGB", (32, 32), bytes(rr.randrange(256) for _ in range(32 * 32 * 3)))
            im.save(os.path.join(sys.argv[1], split, c, "%d.%s" % (i, "jpg" if split == "jpeg" else "png")))
PY
  for split in train test odd jpeg; do $M mkdb "$T/cls/$split" "$T/cls/db-$split" --quiet >/dev/null || fail "mkdb $split"; done
  K="--random-init 1 --width 4 --size 32 --threads 1"
  got=$($M knn $K --k 1 --train "$T/cls/db-train" --test "$T/cls/db-test" 2>"$T/err" | grep -o '"knn_top1":[0-9.]*')
  [ "$got" = '"knn_top1":100.00' ] || fail "knn, the test set's one class by name: $got $(cat "$T/err")"
  $M knn $K --train "$T/cls/db-train" --test "$T/cls/db-odd" >/dev/null 2>"$T/err" && fail "knn took a test class the training set lacks"
  grep -q "$T/cls/db-odd has class 'wasps', which $T/cls/db-train (2 classes: 'ants', ...) does not" "$T/err" || fail "knn, a class missing: $(cat "$T/err")"
  $M lincls $K --arch resnet18-cifar --epochs 1 --cached-features --train "$T/cls/db-train" --test "$T/cls/db-odd" >/dev/null 2>"$T/err" &&
    fail "lincls took a test class the training set lacks"
  grep -q "has class 'wasps'" "$T/err" || fail "lincls, a class missing: $(cat "$T/err")"
  # moco train checks it before its first step (before: at the first epoch's kNN, after
  # training it; here with no loader, where it waited for one)
  timeout 20 $M train --connect "ipc://$T/cls/none-c" --bind "ipc://$T/cls/none-p" --size 32 --epochs 1 --arch resnet18-cifar \
    --width 4 --batch-size 4 --moco-k 8 --threads 1 --out "$T/cls/t" --knn-train "$T/cls/db-train" --knn-test "$T/cls/db-odd" >/dev/null 2>"$T/err"
  rc=$?
  [ $rc -eq 1 ] && grep -q "^moco train: --knn-test: $T/cls/db-odd has class 'wasps'" "$T/err" || fail "train, a kNN class missing: exit $rc: $(cat "$T/err")"
  echo "classes matched by name: kNN 100% on a one-class test set (class 0 there, 1 in training); a class the training set lacks refused (by moco train before its first step)"
  # info --verify checks each record's header against its image's own header (the CRC covers
  # only the payload): a copy with one field of one record's header changed (width, height,
  # channels, encoding) is a bad record, named with the reason, exit 1 (before: "0 bad", exit
  # 0, and knn refused the dataset). A channels field that lies is refused by embed too (before:
  # a colour JPEG was read grey, exit 0). A label moved to another valid class is not found in
  # the record (the format has no check for it): only the class counts differ (above).
  for split in train jpeg; do
    for f in "12 33 header says 33x32, payload claims 32x32" "16 96 header says 32x96, payload claims 32x32" \
             "7 1 header says 1 channels, payload claims 3" "6 x header says ENC, payload is PAYLOAD"; do
      set -- $f; off=$1 val=$2; shift 2; want="$*"
      enc=png payload=png; [ $split = jpeg ] && enc=jpeg payload=jpeg
      [ "$val" = x ] && { if [ $split = jpeg ]; then val=2 enc=png; else val=1 enc=jpeg; fi; }
      want=${want/ENC/$enc}; want=${want/PAYLOAD/$payload}
      rm -rf "$T/cls/hdr" && cp -r "$T/cls/db-$split" "$T/cls/hdr" || fail "copying db-$split"
      PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$T/cls/hdr/data.mdb" "$off" "$val" <<'PY' || fail "patching the header of $split's first record"
import sys
from dbrecords import patch_first
off, val = int(sys.argv[2]), int(sys.argv[3])
patch_first(sys.argv[1], off, "<I" if off >= 12 else "<B", val)
PY
      $M info --verify "$T/cls/hdr" >"$T/out" 2>"$T/err"; rc=$?
      [ $rc -eq 1 ] && grep -q "^$T/cls/hdr: record [0-9]*: $want\$" "$T/err" && grep -q "verified  [0-9]* records, 1 bad" "$T/out" ||
        fail "info --verify, $split, header offset $off set to $val: exit $rc, want '$want': $(cat "$T/out" "$T/err")"
      if [ $off = 7 ]; then
        timeout 60 $M embed $K --db "$T/cls/hdr" --out "$T/cls/e.npy" >/dev/null 2>"$T/err"; rc=$?
        [ $rc -eq 1 ] && grep -q "$T/cls/hdr: record [0-9]*: $want" "$T/err" || fail "embed, $split, header 1 channel: exit $rc $(cat "$T/err")"
      fi
    done
    $M info --verify "$T/cls/db-$split" >/dev/null 2>"$T/err" || fail "the undamaged db-$split does not verify: $(cat "$T/err")"
  done
  echo "a record header's width, height, channels or encoding changed (PNG, JPEG): a bad record for info --verify, named with the reason"
  # a record whose header gives another size than its image (JPEG: TurboJPEG scaled to the
  # header's size, and the rows were read at the wrong width, exit 0; PNG: libvips), refused
  # by the evaluation reader as by the augmentation workers
  for split in train jpeg; do
    PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$T/cls/db-$split/data.mdb" <<'PY' || fail "patching the header of $split's first record"
import sys
from dbrecords import patch_first
assert patch_first(sys.argv[1], 12, "<I", 33) == 32
PY
    timeout 60 $M embed $K --db "$T/cls/db-$split" --out "$T/cls/e.npy" >/dev/null 2>"$T/err"; rc=$?
    [ $rc -eq 1 ] && grep -q "$T/cls/db-$split: record [0-9]*: header says 33x32, payload claims 32x32" "$T/err" || fail "embed, $split, header 33 wide: exit $rc $(cat "$T/err")"
  done
  echo "a header that gives another size than its image (PNG, JPEG): refused by embed, naming the record"
  # CMYK as PIL's convert("RGB") gives it (torchvision's loader), byte for byte: mkdb makes a
  # CMYK JPEG or TIFF RGB as Pillow does (a JPEG's inks inverted, Pillow's raw mode "CMYK;I",
  # Adobe marker or not; Pillow's cmyk2rgb with its MULDIV255 rounding) and stores it as a PNG
  # whose header says 3 channels, so no decoder ever sees CMYK. Before: the JPEGs were stored
  # as they were (4 channels) and the TIFFs converted, both by libvips through a CMYK profile
  # (19-28 levels apart on average per channel, at most 123). One class per file: PIL's JPEG
  # (Adobe marker, transform 0); the same without its Adobe marker (libvips would not invert
  # it); the same with 40 bytes of its scan zeroed (a libjpeg warning, which sends it down
  # mkdb's libvips path; PIL decodes it through); a YCCK 4:2:0 JPEG written by TurboJPEG;
  # TIFFs of random inks, of every (ink, black) pair, under Orientation 6, with an embedded
  # ICC profile (ignored, as by PIL), and 16-bit (Pillow keeps each ink's high byte).
  /usr/bin/python3 - "$T/cls/cmyk" <<'PY' || fail "making the CMYK folder"
import ctypes, ctypes.util, os, struct, sys, numpy as np
from PIL import Image, ImageCms
d, g = sys.argv[1], np.random.default_rng(7)
def put(cls, name):
    os.makedirs(os.path.join(d, cls))
    return os.path.join(d, cls, name)
a = g.integers(0, 256, (30, 40, 4), dtype=np.uint8)
a[:, :8, 3] = 0  # no black: the inks alone
Image.fromarray(a, "CMYK").save(put("jpeg-adobe", "x.jpg"), quality=90)
b = open(os.path.join(d, "jpeg-adobe", "x.jpg"), "rb").read()
i = b.find(b"\xff\xee")
assert i > 0 and b[i + 15] == 0, "PIL wrote no Adobe marker of transform 0"
open(put("jpeg-noadobe", "x.jpg"), "wb").write(b[:i] + b[i + 2 + int.from_bytes(b[i + 2:i + 4], "big"):])
s = b.find(b"\xff\xda")
m = (s + b.rfind(b"\xff\xd9")) // 2  # 40 bytes of the scan zeroed: a warning, not a truncation
open(put("jpeg-warn", "x.jpg"), "wb").write(b[:m] + bytes(40) + b[m + 40:])
tj = ctypes.CDLL(ctypes.util.find_library("turbojpeg") or "libturbojpeg.so.0")
tj.tjInitCompress.restype = tj.tjInitDecompress.restype = ctypes.c_void_p
tj.tjGetErrorStr2.restype = ctypes.c_char_p
w = open(os.path.join(d, "jpeg-warn", "x.jpg"), "rb").read()
h, out = ctypes.c_void_p(tj.tjInitDecompress()), ctypes.create_string_buffer(40 * 30 * 4)
rc = tj.tjDecompress2(h, w, ctypes.c_ulong(len(w)), out, 40, 0, 30, 11, 8192)  # TJPF_CMYK, TJFLAG_STOPONWARNING
assert rc == -1 and tj.tjGetErrorCode(h) == 0 and b"premature end" not in tj.tjGetErrorStr2(h), (rc, tj.tjGetErrorStr2(h))
buf, size = ctypes.POINTER(ctypes.c_ubyte)(), ctypes.c_ulong(0)
px = np.ascontiguousarray(g.integers(0, 256, (24, 36, 4), dtype=np.uint8))
assert tj.tjCompress2(ctypes.c_void_p(tj.tjInitCompress()), px.ctypes.data_as(ctypes.c_void_p), 36, 0, 24, 11,  # TJPF_CMYK
                      ctypes.byref(buf), ctypes.byref(size), 2, 90, 0) == 0  # TJSAMP_420, quality 90
y = ctypes.string_at(buf, size.value)
k = y.find(b"\xff\xee")
assert k > 0 and y[k + 15] == 2, "TurboJPEG wrote no YCCK"
open(put("jpeg-ycck", "x.jpg"), "wb").write(y)
Image.fromarray(g.integers(0, 256, (30, 40, 4), dtype=np.uint8), "CMYK").save(put("tiff", "x.tif"))
x, yy = np.meshgrid(np.arange(256), np.arange(256))
Image.fromarray(np.stack([x, 255 - x, (x + yy) & 255, yy], -1).astype(np.uint8), "CMYK").save(put("tiff-pairs", "x.tif"))
Image.fromarray(g.integers(0, 256, (20, 50, 4), dtype=np.uint8), "CMYK").save(put("tiff-rot6", "x.tif"), tiffinfo={274: 6})
# an embedded ICC profile (sRGB's, the one Pillow can make): convert("RGB") ignores it, so must mkdb
srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
Image.fromarray(g.integers(0, 256, (30, 40, 4), dtype=np.uint8), "CMYK").save(put("tiff-icc", "x.tif"), icc_profile=srgb)
# 16-bit little-endian CMYK, uncompressed (Pillow cannot write it, it reads it as "CMYK;16L")
a16 = g.integers(0, 65536, (30, 40, 4), dtype=np.uint16)
data = a16.astype("<u2").tobytes()
tags = [(256, 4, 1, 40), (257, 4, 1, 30), (258, 3, 4, 8 + 2 + 10 * 12 + 4), (259, 3, 1, 1), (262, 3, 1, 5),
        (273, 4, 1, 8 + 2 + 10 * 12 + 4 + 8), (277, 3, 1, 4), (278, 4, 1, 30), (279, 4, 1, len(data)), (284, 3, 1, 1)]
t = b"II*\x00" + struct.pack("<IH", 8, len(tags))
for tag, typ, cnt, val in tags:
    t += struct.pack("<HHI", tag, typ, cnt) + struct.pack("<HH" if typ == 3 and cnt == 1 else "<I", *((val, 0) if typ == 3 and cnt == 1 else (val,)))
open(put("tiff16", "x.tif"), "wb").write(t + struct.pack("<I4H", 0, 16, 16, 16, 16) + data)
im = Image.open(os.path.join(d, "tiff16", "x.tif"))
assert im.mode == "CMYK" and (np.array(im) == a16 >> 8).all(), "the 16-bit TIFF is not read by PIL as its high bytes"
PY
  $M mkdb "$T/cls/cmyk" "$T/cls/db-cmyk" --quiet >/dev/null 2>"$T/err" || fail "mkdb of the CMYK folder: $(cat "$T/err")"
  PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$T/cls/cmyk" "$T/cls/db-cmyk/data.mdb" <<'PY' || fail "CMYK stored otherwise than PIL's convert(\"RGB\")"
import sys
from dbrecords import against_pil
seen, bad = against_pil(sys.argv[1], sys.argv[2], mode="CMYK", channels=3)
assert not bad, bad
print("  %d CMYK files stored as PNG, pixel for pixel PIL's convert(\"RGB\")" % len(seen))
PY
  # shrunk (--max-side 20, resampled: no longer PIL's pixels): the mean colour stays within 1.5
  # levels per channel of PIL's convert("RGB") (measured 0.3 at most; before, through the
  # profile: 8-24 off); a JPEG is stored as a 3-channel JPEG, a TIFF as a PNG
  rm -rf "$T/cls/cmyk-small" && mkdir -p "$T/cls/cmyk-small" && cp -r "$T/cls/cmyk/jpeg-adobe" "$T/cls/cmyk/jpeg-ycck" "$T/cls/cmyk/tiff" \
    "$T/cls/cmyk/tiff16" "$T/cls/cmyk-small/" || fail "copying"
  $M mkdb "$T/cls/cmyk-small" "$T/cls/db-cmyk-small" --max-side 20 --quiet >/dev/null 2>"$T/err" || fail "mkdb --max-side of CMYK: $(cat "$T/err")"
  PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$T/cls/cmyk-small" "$T/cls/db-cmyk-small/data.mdb" <<'PY' || fail "CMYK shrunk: colours off PIL's"
import io, os, struct, sys, numpy as np
from PIL import Image
from dbrecords import records
d = sys.argv[1]
classes = sorted(os.listdir(d))
seen, bad = set(), []
for enc, ch, label, w, h, payload in records(sys.argv[2]):
    cls = classes[label]
    want = np.array(Image.open(os.path.join(d, cls, os.listdir(os.path.join(d, cls))[0])).convert("RGB")).reshape(-1, 3).mean(0)
    got = np.array(Image.open(io.BytesIO(payload)).convert("RGB")).reshape(-1, 3).mean(0)
    if (enc, ch) != ((1 if cls.startswith("jpeg") else 2), 3) or max(w, h) != 20 or np.abs(got - want).max() > 1.5:
        bad.append("%s: encoding %d, %d channels, %dx%d, mean colour off by %s" % (cls, enc, ch, w, h, np.abs(got - want).round(2)))
    seen.add(cls)
assert not bad, bad
assert seen == set(classes), sorted(set(classes) - seen)
PY
  $M mkdb --help | grep -qF "CMYK (JPEG, TIFF) made RGB as PIL's convert(\"RGB\") does, stored as PNG" || fail "mkdb --help does not say how CMYK is stored"
  echo "CMYK: JPEG (Adobe marker or not, YCCK, a warning) and TIFF (8-bit, 16-bit, rotated, an ICC profile, every ink/black pair) stored as PNG, byte for byte PIL's convert(\"RGB\"); shrunk: mean colour within 1.5 levels"
  # JPEGs whose header gives libjpeg a recoverable warning: 3 junk bytes before a marker (DQT,
  # SOF, DHT, SOS of an RGB 4:2:0 JPEG; DQT of a grey and of a CMYK one). PIL (torchvision's
  # loader) decodes them to the clean file's pixels; mkdb stores them as PNG (no decoder
  # downstream meets the warning), pixel for pixel PIL's convert("RGB"), with --max-side too
  # (not shrunk). Junk before EOI: stored as it is, a JPEG. Before: "corrupt or truncated JPEG
  # header", skipped (with --max-side: stored as they were, JPEGs). Still refused, named and
  # counted, as PIL refuses them: a header cut short (with junk or without), and a junk header
  # whose scan is cut short.
  /usr/bin/python3 - "$T/cls/jwarn" <<'PY' || fail "making the JPEG-warning folder"
import io, os, sys, numpy as np
from PIL import Image
d, g = sys.argv[1], np.random.default_rng(11)
def jpeg(a, mode):
    b = io.BytesIO()
    Image.fromarray(a, mode).save(b, "JPEG", quality=90)
    return b.getvalue()
def junk(b, marker, last=False):
    i = b.rfind(marker) if last else b.find(marker)
    assert i > 0, marker
    return b[:i] + b"\x00\x11\x22" + b[i:]
def put(cls, name, data):
    os.makedirs(os.path.join(d, cls), exist_ok=True)
    open(os.path.join(d, cls, name), "wb").write(data)
rgb = jpeg(g.integers(0, 256, (64, 80, 3), dtype=np.uint8), "RGB")
cases = {"dqt": junk(rgb, b"\xff\xdb"), "sof": junk(rgb, b"\xff\xc0"), "dht": junk(rgb, b"\xff\xc4"),
         "sos": junk(rgb, b"\xff\xda"), "grey": junk(jpeg(g.integers(0, 256, (48, 40), dtype=np.uint8), "L"), b"\xff\xdb"),
         "cmyk": junk(jpeg(g.integers(0, 256, (30, 40, 4), dtype=np.uint8), "CMYK"), b"\xff\xdb"),
         "eoi": junk(rgb, b"\xff\xd9", last=True)}
clean = np.array(Image.open(io.BytesIO(rgb)).convert("RGB"))
for cls, b in cases.items():
    put(cls, "x.jpg", b)
    if cls in ("dqt", "sof", "dht", "sos", "eoi"):
        assert (np.array(Image.open(io.BytesIO(b)).convert("RGB")) == clean).all(), cls + ": PIL reads other pixels than the clean file's"
s, h = rgb.find(b"\xff\xda"), junk(rgb, b"\xff\xdb")
bad = {"cut-header.jpg": rgb[:s - 20], "junk-cut-header.jpg": h[:h.find(b"\xff\xc4") + 10], "junk-cut-scan.jpg": h[:len(h) - 1500]}
for name, b in bad.items():
    put("z-bad", name, b)
    try:
        Image.open(io.BytesIO(b)).convert("RGB")
        sys.exit(name + ": PIL decodes it")
    except (OSError, SyntaxError):
        pass
PY
  for ms in "" "--max-side 4096"; do
    rm -rf "$T/cls/db-jwarn"
    $M mkdb "$T/cls/jwarn" "$T/cls/db-jwarn" $ms >"$T/out" 2>"$T/err" || fail "mkdb $ms of the JPEG-warning folder: $(cat "$T/err")"
    for f in cut-header junk-cut-header junk-cut-scan; do
      grep -q "skipping $T/cls/jwarn/z-bad/$f.jpg: \(corrupt or truncated\|not a readable image\)" "$T/err" || fail "mkdb $ms: $f.jpg not refused: $(cat "$T/err")"
    done
    grep -q "; skipped 3; " "$T/out" && [ "$(grep -c "^moco mkdb: skipping " "$T/err")" = 3 ] || fail "mkdb $ms: want 3 skipped: $(cat "$T/out" "$T/err")"
    PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$T/cls/jwarn" "$T/cls/db-jwarn/data.mdb" <<'PY' || fail "mkdb $ms: JPEGs with a header warning stored otherwise than PIL's convert(\"RGB\")"
import io, os, struct, sys, numpy as np
from PIL import Image
from dbrecords import records
d = sys.argv[1]
classes = sorted(os.listdir(d))
want_enc = {"eoi": (1, 3), "grey": (2, 1)}
seen, bad = set(), []
for enc, ch, label, w, h, payload in records(sys.argv[2]):
    cls = classes[label]
    want = np.array(Image.open(os.path.join(d, cls, "x.jpg")).convert("RGB"))
    got = np.array(Image.open(io.BytesIO(payload)).convert("RGB"))
    if (enc, ch) != want_enc.get(cls, (2, 3)) or got.shape != want.shape or (got != want).any():
        bad.append("%s: encoding %d, %d channels, %s" % (cls, enc, ch, got.shape if got.shape != want.shape else
                                                         "max |diff| %d" % np.abs(got.astype(int) - want).max()))
    seen.add(cls)
assert not bad, bad
assert seen == set(classes) - {"z-bad"}, sorted(set(classes) - seen)
PY
  done
  echo "JPEG header warnings (junk before DQT, SOF, DHT, SOS; RGB, grey, CMYK): stored as PNG, pixel for pixel PIL's convert(\"RGB\"), --max-side too; junk before EOI: stored as it is; a header or scan cut short: refused, named, counted"
  # GIF, first frame, as PIL's convert("RGB") gives it: PIL opens it as mode P, and a
  # transparent pixel is the colour of the transparent index in the palette (alpha dropped);
  # outside a first frame smaller than the screen, Pillow 9.4 fills with the transparent index,
  # or index 0 without one; an index past the colour table is grey (i, i, i). libvips gives
  # RGBA, (0, 0, 0, 0) at a transparent pixel and black or transparent outside the frame,
  # which mkdb stored as a 4-channel PNG (the workers then saw black). Now 3 channels, PIL's
  # pixels: GIFs saved by PIL (a transparent index; two frames; an RGBA image, quantised) and
  # written here (a local colour table; a frame smaller than the screen, with a transparent
  # index, without one, with one past the table). A GIF without any colour table (PIL reads
  # its indices as grey levels, libvips through a palette of its own) is refused, named.
  /usr/bin/python3 - "$T/cls/gif" <<'PY' || fail "making the GIF folder"
import os, struct, sys, numpy as np
from PIL import Image
d, g = sys.argv[1], np.random.default_rng(13)
def path(cls, name="x.gif"):
    os.makedirs(os.path.join(d, cls), exist_ok=True)
    return os.path.join(d, cls, name)
def pim(seed_shape=(30, 40)):
    im = Image.fromarray(g.integers(0, 16, seed_shape, dtype=np.uint8), "P")
    im.putpalette([int(v) for v in g.integers(0, 256, 48)])
    return im
pim().save(path("pil-trans"), transparency=3)
pim().save(path("pil-anim"), save_all=True, append_images=[pim()], transparency=5, disposal=2)
rgba = g.integers(0, 256, (30, 40, 4), dtype=np.uint8)
rgba[..., 3] = np.where(g.random((30, 40)) < 0.3, 0, 255)
Image.fromarray(rgba, "RGBA").save(path("pil-rgba"))
def gif(sw, sh, x, y, w, h, idx, trans=None, gct=None, lct=None):
    """A GIF89a of one frame; LZW codes one index each, a clear code before the table grows"""
    def table(t):
        n = max(0, (len(t) - 1).bit_length() - 1)
        return n, b"".join(bytes(c) for c in t) + bytes(3 * ((2 << n) - len(t)))
    out = b"GIF89a" + struct.pack("<HH", sw, sh)
    if gct:
        n, t = table(gct)
        out += bytes([0x80 | n, 1, 0]) + t
    else:
        out += bytes([0, 1, 0])
    if trans is not None:
        out += b"\x21\xf9\x04\x01\x00\x00" + bytes([trans]) + b"\x00"
    n, t = table(lct) if lct else (0, b"")
    out += b"\x2c" + struct.pack("<HHHH", x, y, w, h) + bytes([0x80 | n if lct else 0]) + t
    mcs = max(2, int(max(idx)).bit_length())
    codes, run = [1 << mcs], 0
    for v in idx:
        if run == (1 << mcs) - 2:
            codes.append(1 << mcs)
            run = 0
        codes.append(int(v))
        run += 1
    codes.append((1 << mcs) + 1)
    acc = bits = 0
    data = bytearray()
    for c in codes:
        acc |= c << bits
        bits += mcs + 1
        while bits >= 8:
            data.append(acc & 255)
            acc >>= 8
            bits -= 8
    if bits:
        data.append(acc)
    blocks = b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255))
    return out + bytes([mcs]) + blocks + b"\x00\x3b"
pal = [tuple(int(v) for v in g.integers(0, 256, 3)) for _ in range(16)]
idx = g.integers(0, 16, 40 * 30)
open(path("lct-trans"), "wb").write(gif(40, 30, 0, 0, 40, 30, idx, trans=5, gct=pal[::-1], lct=pal))
open(path("frame-trans"), "wb").write(gif(50, 40, 5, 4, 40, 30, idx, trans=3, gct=pal))
open(path("frame-opaque"), "wb").write(gif(50, 40, 5, 4, 40, 30, idx, gct=pal))
open(path("frame-past-table"), "wb").write(gif(50, 40, 5, 4, 40, 30, idx % 4, trans=9, gct=pal[:4]))
open(path("z-bad", "no-table.gif"), "wb").write(gif(40, 30, 0, 0, 40, 30, idx % 4, trans=2))
for cls in sorted(os.listdir(d)):
    for f in os.listdir(os.path.join(d, cls)):
        im = Image.open(os.path.join(d, cls, f))
        assert im.mode == ("L" if cls == "z-bad" else "P"), (cls, f, im.mode)
PY
  $M mkdb "$T/cls/gif" "$T/cls/db-gif" >"$T/out" 2>"$T/err" || fail "mkdb of the GIF folder: $(cat "$T/err")"
  grep -q "skipping $T/cls/gif/z-bad/no-table.gif: a GIF without a colour table" "$T/err" && grep -q "; skipped 1; " "$T/out" ||
    fail "a GIF without a colour table not refused, named and counted: $(cat "$T/out" "$T/err")"
  PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$T/cls/gif" "$T/cls/db-gif/data.mdb" <<'PY' || fail "GIFs stored otherwise than PIL's convert(\"RGB\")"
import io, os, struct, sys, numpy as np
from PIL import Image
from dbrecords import records
d = sys.argv[1]
classes = sorted(os.listdir(d))
seen, bad = set(), []
for enc, ch, label, w, h, payload in records(sys.argv[2]):
    cls = classes[label]
    want = np.array(Image.open(os.path.join(d, cls, "x.gif")).convert("RGB")).astype(int)
    got = np.array(Image.open(io.BytesIO(payload)).convert("RGB")).astype(int)
    if (enc, ch) != (2, 3) or got.shape != want.shape or (got != want).any():
        bad.append("%s: encoding %d, %d channels, %s" % (cls, enc, ch, got.shape if got.shape != want.shape else
                                                         "%d pixels differ" % (got != want).any(-1).sum()))
    seen.add(cls)
assert not bad, bad
assert seen == set(classes) - {"z-bad"}, sorted(set(classes) - seen)
PY
  echo "GIF: transparent pixels, the screen outside a smaller first frame, a local colour table: 3 channels, pixel for pixel PIL's convert(\"RGB\"); a GIF without a colour table refused, named"
  # Formats: what mkdb stores must be what PIL (torchvision's loader) reads. One class per
  # file, so a record's label names its source. Accepted and pixel for pixel PIL's
  # convert("RGB"): a TIFF under each of the 8 Orientation tags (PIL applies it; before: stored
  # unrotated), WebP, GIF, BMP, PPM/PGM/PBM, JPEG 2000. Refused, each named with the loader
  # and counted in skipped (before: stored, TGA upside down, XBM inverted, the ICO's smallest
  # size, a PDF or an SVG rasterised): TGA, ICO, XBM, PDF, SVG.
  /usr/bin/python3 - "$T/cls/fmt" <<'PY' || fail "making the format folder"
import os, sys, numpy as np
from PIL import Image
d = sys.argv[1]
a = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
a[:8] = 255
im = Image.fromarray(a)
def put(cls, name, save):
    os.makedirs(os.path.join(d, cls))
    save(os.path.join(d, cls, name))
for o in range(1, 9):
    put("tif%d" % o, "x.tif", lambda p, o=o: im.save(p, tiffinfo={274: o}))
for ext in ("webp", "gif", "bmp", "ppm", "jp2"):
    put(ext, "x." + ext, lambda p, e=ext: im.save(p, lossless=True) if e == "webp" else im.save(p))
put("pgm", "x.pgm", lambda p: im.convert("L").save(p))
put("pbm", "x.pbm", lambda p: im.convert("1").save(p))
put("z-bad", "a.tga", lambda p: im.save(p))
os.symlink("a.tga", os.path.join(d, "z-bad", "a-link.tga"))
im.save(os.path.join(d, "z-bad", "b.ico"), sizes=[(16, 16), (64, 48)])
im.convert("1").save(os.path.join(d, "z-bad", "c.xbm"))
im.save(os.path.join(d, "z-bad", "d.pdf"))
open(os.path.join(d, "z-bad", "e.svg"), "w").write('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"><rect width="64" height="48"/></svg>')
PY
  jp2=1; $M mkdb "$T/cls/fmt" "$T/cls/db-fmt" --quiet >"$T/out" 2>"$T/err" || fail "mkdb of the format folder: $(cat "$T/err")"
  grep -q "skipping $T/cls/fmt/jp2/x.jp2: not an accepted format" "$T/err" && fail "JPEG 2000 refused: $(cat "$T/err")"
  grep -q "skipping $T/cls/fmt/jp2/x.jp2: not a readable image" "$T/err" && jp2=0 # a libvips without openjpeg
  for f in a.tga:magickload a-link.tga:magickload b.ico:magickload c.xbm:magickload d.pdf:pdfload e.svg:svgload; do
    grep -q "skipping $T/cls/fmt/z-bad/${f%%:*}: not an accepted format: libvips reads it with ${f##*:}, whose pixels are not known to match PIL's" "$T/err" \
      || fail "${f%%:*} not refused with its loader: $(cat "$T/err")"
  done
  grep -q "; skipped $((6 + 1 - jp2)); " "$T/out" || fail "format folder: skipped count: $(cat "$T/out")"
  PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$T/cls/fmt" "$T/cls/db-fmt/data.mdb" $jp2 <<'PY' || fail "the stored formats differ from PIL's reading"
import io, os, struct, sys, numpy as np
from PIL import Image
from dbrecords import records
d, jp2 = sys.argv[1], sys.argv[3] == "1"
classes = sorted(os.listdir(d))
seen = set()
for enc, ch, label, w, h, payload in records(sys.argv[2]):
    cls = classes[label]
    src = os.path.join(d, cls, sorted(os.listdir(os.path.join(d, cls)))[0])
    want = np.array(Image.open(src).convert("RGB"))
    got = np.array(Image.open(io.BytesIO(payload)).convert("RGB"))
    assert got.shape == want.shape and (got == want).all(), (cls, got.shape, want.shape)
    seen.add(cls)
expect = set(classes) - {"z-bad"} - (set() if jp2 else {"jp2"})
assert seen == expect, sorted(expect - seen)
print("  %d formats stored as PIL reads them" % len(seen))
PY
  echo "formats: TIFF (8 orientations, applied), WebP, GIF, BMP, PPM/PGM/PBM$([ $jp2 = 1 ] && echo ", JPEG 2000") as PIL reads them; TGA, ICO, XBM, PDF, SVG refused, named and counted"
  # Enumeration, as documented (mkdb --help): a hidden class folder is skipped (ImageFolder
  # would make .ipynb_checkpoints a class), an empty class folder is a class of 0 samples
  mkdir -p "$T/cls/enum/.ipynb_checkpoints" "$T/cls/enum/ants" "$T/cls/enum/empty" && cp "$T/cls/fmt/bmp/x.bmp" "$T/cls/enum/.ipynb_checkpoints/" &&
    cp "$T/cls/fmt/bmp/x.bmp" "$T/cls/enum/ants/" || fail "copying"
  $M mkdb "$T/cls/enum" "$T/cls/db-enum" --quiet >/dev/null 2>"$T/err" || fail "mkdb enum: $(cat "$T/err")"
  $M info --json "$T/cls/db-enum" | grep -q '"classes":\[{"name":"ants","count":1},{"name":"empty","count":0}\]' \
    || fail "enumeration: $($M info --json "$T/cls/db-enum")"
  $M mkdb --help | grep -q "hidden entries" || fail "mkdb --help does not say hidden entries are skipped"
  echo "enumeration: a hidden class folder skipped, an empty one kept with 0 samples (as --help says)"
  # an image the stream could never carry (a 69 MB PNG: over the 64 MiB a record may take on
  # the wire) is skipped at import with its reason (before: written, then failed by the loader
  # every epoch)
  mkdir -p "$T/cls/big/a"
  /usr/bin/python3 -c 'import sys, numpy as np; from PIL import Image
Image.fromarray(np.random.default_rng(1).integers(0, 256, (4800, 4800, 3), dtype=np.uint8)).save(sys.argv[1], compress_level=0)
Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(sys.argv[2])' "$T/cls/big/a/big.png" "$T/cls/big/a/small.png" || fail "making the big PNG"
  $M mkdb "$T/cls/big" "$T/cls/db-big" >"$T/out" 2>"$T/err" || fail "mkdb with one image too big: $(cat "$T/err")"
  grep -q "skipping $T/cls/big/a/big.png: larger than the 64 MiB a record may take on the stream" "$T/err" || fail "the big PNG was not skipped with its reason: $(cat "$T/err")"
  [ "$(count "$T/cls/db-big")" = '"count":1,"num_classes":1' ] || fail "mkdb with one image too big: $(count "$T/cls/db-big")"
  rm -rf "$T/cls/big"
  echo "an image over the stream's 64 MiB record limit: skipped at import, naming it"
  # many broken files at once, on 4 threads: each refusal says its own libvips reason on one
  # line (before: libvips' error buffer is one for the process, and 14-18 of 60 truncated PNGs
  # got no reason while others got a second line, another file's)
  mkdir -p "$T/cls/trunc/a" "$T/cls/trunc/b"
  /usr/bin/python3 -c 'import io, sys, numpy as np; from PIL import Image
for i in range(60):
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(b, "PNG")
    open("%s/a/p%02d.png" % (sys.argv[1], i), "wb").write(b.getvalue()[:b.tell() // 2])
Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(sys.argv[1] + "/b/ok.png")' "$T/cls/trunc" || fail "making the truncated PNGs"
  $M mkdb "$T/cls/trunc" "$T/cls/db-trunc" --threads 4 >"$T/out" 2>"$T/err" || fail "mkdb with 60 truncated PNGs: $(cat "$T/err")"
  [ "$(grep -c "^moco mkdb: skipping $T/cls/trunc/a/p[0-9]*.png: corrupt or truncated image data: vipspng: libpng read error\$" "$T/err")" = 60 ] \
    && [ "$(wc -l < "$T/err")" = 60 ] || fail "60 truncated PNGs on 4 threads: not one line each with its reason: $(head -c 1500 "$T/err")"
  rm -rf "$T/cls/trunc" "$T/cls/db-trunc"
  echo "60 truncated PNGs on 4 threads: each skipped with its own libvips reason, one line each"
else
  echo "skipped: classes matched by name, headers of another size, CMYK as PIL reads it, an image too big (python3-pil absent)"
fi
# a full disk (a 3 MiB tmpfs, where this machine lets root mount one): LMDB's short write is its
# EIO; mkdb says the device is full, writes nothing, and leaves no temporary directory
if [ -d /usr/share/datasets/fashion-mnist ] && mkdir -p "$T/full" && mount -t tmpfs -o size=3m tmpfs "$T/full" 2>/dev/null; then
  $M mkdb /usr/share/datasets/fashion-mnist "$T/full/db" --split train --limit 10000 --quiet >/dev/null 2>"$T/err"; rc=$?
  left=$(ls -A "$T/full")
  umount "$T/full"
  [ $rc -eq 1 ] && grep -q "writing records: Input/output error: the device is full ([0-9]* KiB free); nothing written to $T/full/db" "$T/err" \
    && [ -z "$left" ] || fail "mkdb on a full disk: exit $rc, left '$left': $(cat "$T/err")"
  echo "mkdb on a full disk: the device is full, said; nothing written, nothing left"
else
  echo "skipped: no tmpfs could be mounted here; the full-disk check of mkdb was not run"
fi
tgz=../shared/data/cifar10-jpeg.tar.gz
[ -f "$tgz" ] || { echo "skipped: $tgz absent"; exit 77; }
mkdir -p "$T/src" && tar -xzf "$tgz" -C "$T/src" || fail "unpacking $tgz"
for s in train:50000 test:10000; do
  t0=$(date +%s.%N)
  $M mkdb "$T/src" "$T/cifar-${s%%:*}" --split "${s%%:*}" --quiet >"$T/out" 2>"$T/err" || fail "cifar ${s%%:*}: $(cat "$T/err")"
  cat "$T/out"
  t1=$(date +%s.%N)
  [ "$(count "$T/cifar-${s%%:*}")" = "\"count\":${s##*:},\"num_classes\":10" ] || fail "cifar ${s%%:*}: $(count "$T/cifar-${s%%:*}")"
  echo "cifar-10 ${s%%:*}: ${s##*:} samples in $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s"
done
$M info --verify "$T/cifar-test" >/dev/null || fail "cifar test does not verify"
rm -rf "$T"
