#!/usr/bin/python3
"""gen_eval_golden.py: reference tensors for tests/test_evalset.c: torchvision's
evaluation transforms (Debian's python3-torchvision 0.14 on python3-pil 9.4)

    ImageFolder's loader (PIL Image.open(...).convert("RGB")),
    Resize(resize_side(size)), CenterCrop(size), ToTensor(), Normalize(MEAN, STD)

applied to a few non-square photos at two sizes. resize_side: main_lincls.py's
validation view Resize(256) + CenterCrop(224) at its ratio 0.875
(floor(size / 0.875)) above 64 px; the size itself at CIFAR sizes (<= 64),
where the official CIFAR-10 demo takes the image as it is (trainer/evalset.h).
Run with Debian's python:

    /usr/bin/python3 tools/gen_eval_golden.py [--data ../shared/data]

Sources (tests/golden/eval/, stored byte for byte, all non-square):
  e1_formica.jpg   193x130, 4:2:0 (hymenoptera train/ants/formica.jpeg)
  e2_ant1.jpg      199x272, 4:4:4 (hymenoptera train/ants/Ant_1.jpg)
  e3_antphotos.jpg 343x236, progressive 4:2:0 (hymenoptera "ant photos.jpg")
  e4_wide.jpg      500x181, 4:4:4 (hymenoptera train/ants/6240338_93729615ec.jpg)
  e5_grey.jpg      150x97 greyscale, synthetic (PIL, quality 90)
  e6_synth.png     96x131 RGB, synthetic (at size 32 a downscale, at 96 an upscale to 109)
The photos come from ../shared/data/hymenoptera-jpeg.tar.gz (extracted to
a temporary directory); the synthetic ones are a fixed formula.

Writes tests/golden/eval/<source stem>_s<size>.bin, little-endian:
  magic "MEVG"; u32 version (1), size, src_w, src_h, resized_w, resized_h,
  crop_top, crop_left; f32 mean[3], std[3];
  u8 crop[size][size][3]: the PIL image after Resize + CenterCrop (HWC);
  f32 x[3][size][size]: the normalised tensor (CHW).
"""
import argparse
import os
import shutil
import struct
import tarfile
import tempfile

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "golden", "eval")
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
SIZES = (32, 96)
SMALL_SIDE = 64  # trainer/evalset.h EVALSET_SMALL_SIDE


def resize_side(size):
    """The shorter side before CenterCrop(size): 256 at 224 (crop ratio 0.875), size itself at <= 64 px."""
    return size if size <= SMALL_SIDE else size * 8 // 7
PHOTOS = [
    ("e1_formica.jpg", "train/ants/formica.jpeg"),
    ("e2_ant1.jpg", "train/ants/Ant_1.jpg"),
    ("e3_antphotos.jpg", "train/ants/ant photos.jpg"),
    ("e4_wide.jpg", "train/ants/6240338_93729615ec.jpg"),
]


def synthetic(h, w, c, salt):
    """Smooth gradients, a ring and a hashed texture: fixed, no RNG."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    planes = []
    for k in range(c):
        v = (x * (3 + k) * 255 // max(w - 1, 1) + y * (5 - k) * 255 // max(h - 1, 1)) // 4
        r2 = (x - w // 3) ** 2 + (y - h // 2) ** 2
        v = v + np.where((r2 > 150) & (r2 < 500), 90, 0)
        hsh = ((x * 73856093) ^ (y * 19349663) ^ ((k + 1) * 83492791) ^ (salt * 2654435761)) & 0xFFFFFFFF
        v = (v + hsh % 61) % 256
        planes.append(v.astype(np.uint8))
    return np.stack(planes, axis=2) if c > 1 else planes[0]


def eval_tensor(path, size):
    """The ImageFolder loader and the documented eval transforms, step by step."""
    with open(path, "rb") as f:
        img = Image.open(f).convert("RGB")
    src_w, src_h = img.size
    resized = T.Resize(resize_side(size))(img)
    crop = T.CenterCrop(size)(resized)
    x = T.Normalize(MEAN, STD)(T.ToTensor()(crop))
    # the same through one Compose, as a user would write it
    full = T.Compose([T.Resize(resize_side(size)), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])(img)
    assert torch.equal(full, x)
    rw, rh = resized.size
    top = int(round((rh - size) / 2.0))
    left = int(round((rw - size) / 2.0))
    assert np.array_equal(np.asarray(crop), np.asarray(resized)[top:top + size, left:left + size])
    return src_w, src_h, rw, rh, top, left, np.asarray(crop, dtype=np.uint8), x.numpy().astype("<f4")


def write(stem, size, g):
    src_w, src_h, rw, rh, top, left, crop, x = g
    name = "%s_s%d.bin" % (stem, size)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"MEVG")
        f.write(struct.pack("<8I", 1, size, src_w, src_h, rw, rh, top, left))
        f.write(struct.pack("<6f", *MEAN, *STD))
        f.write(np.ascontiguousarray(crop).tobytes())
        f.write(np.ascontiguousarray(x).tobytes())
    # what today's code would do differently: rounded long side, floor offsets
    short, long_ = min(src_w, src_h), max(src_w, src_h)
    print("%-24s src %dx%d -> resized %dx%d (rounded long side would be %d), crop top %d left %d (floor: %d %d)"
          % (name, src_w, src_h, rw, rh, int(resize_side(size) * long_ / short + 0.5), top, left, (rh - size) // 2,
             (rw - size) // 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    args = ap.parse_args()
    print("torch", torch.__version__, "torchvision", torchvision.__version__, "PIL", PIL.__version__)
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="gen_eval_golden.")
    try:
        with tarfile.open(os.path.join(args.data, "hymenoptera-jpeg.tar.gz")) as t:
            for _, member in PHOTOS:
                t.extract(member, tmp)
        for name, member in PHOTOS:
            shutil.copyfile(os.path.join(tmp, member), os.path.join(OUT, name))
    finally:
        shutil.rmtree(tmp)
    Image.fromarray(synthetic(97, 150, 1, 5), "L").save(os.path.join(OUT, "e5_grey.jpg"), quality=90)
    Image.fromarray(synthetic(131, 96, 3, 6), "RGB").save(os.path.join(OUT, "e6_synth.png"))
    names = [n for n, _ in PHOTOS] + ["e5_grey.jpg", "e6_synth.png"]
    for name in names:
        path = os.path.join(OUT, name)
        im = Image.open(path)
        assert im.size[0] != im.size[1], name
        print("%-18s %6d bytes %dx%d %s" % (name, os.path.getsize(path), im.size[0], im.size[1], im.mode))
        for size in SIZES:
            write(os.path.splitext(name)[0], size, eval_tensor(path, size))


if __name__ == "__main__":
    main()
