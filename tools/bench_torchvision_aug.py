#!/usr/bin/python3
"""bench_torchvision_aug.py: time torchvision's MoCo augmentation on one core,
and `moco bench augment` on the same core and the same images, side by side.

  /usr/bin/python3 tools/bench_torchvision_aug.py --images DIR --db DB --recipe v2 --size 224 [--seconds 5]

DIR is the image folder the dataset DB was made from (`moco mkdb DIR DB`);
both sides read every image file into memory first (at most --limit), then
measure for --seconds (best of --rounds, alternating): torchvision decode only (PIL open + convert RGB), the
MoCo pair pipeline as the official code writes it (PIL in, ToTensor +
Normalize out) and the same without ToTensor/Normalize (PIL views out, closer
to our uint8 views). Both processes are pinned to one CPU (--cpu, default 0)
and torch uses one thread. Recipes as in the MoCo code: v1 and v2 from
main_moco.py (v2 = --aug-plus, with PIL GaussianBlur as moco/loader.py), cifar
from the MoCo CIFAR-10 demo notebook. The last line is one JSON object.
"""
import argparse
import glob
import io
import json
import os
import random
import subprocess
import sys
import time

import torch
import torchvision
import torchvision.transforms as T
from PIL import Image, ImageFilter


class GaussianBlur:
    """moco/loader.py's blur: PIL GaussianBlur with sigma uniform in [0.1, 2]."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, x):
        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.sigma[0], self.sigma[1])))


def pipeline(recipe, size, tensor_out):
    norm = [T.ToTensor(), T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])] if tensor_out else []
    if recipe == "v1":
        ops = [T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomGrayscale(p=0.2),
               T.ColorJitter(0.4, 0.4, 0.4, 0.4), T.RandomHorizontalFlip()]
    elif recipe == "v2":
        ops = [T.RandomResizedCrop(size, scale=(0.2, 1.0)),
               T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
               T.RandomApply([GaussianBlur([0.1, 2.0])], p=0.5), T.RandomHorizontalFlip()]
    else:  # cifar demo: normalisation with CIFAR-10 statistics
        if tensor_out:
            norm = [T.ToTensor(), T.Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])]
        ops = [T.RandomResizedCrop(size), T.RandomHorizontalFlip(p=0.5),
               T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)]
    return T.Compose(ops + norm)


def timed(fn, blobs, seconds):
    n, t0 = 0, time.perf_counter()
    while True:
        fn(blobs[n % len(blobs)])
        n += 1
        t = time.perf_counter() - t0
        if t >= seconds:
            return n / t, n, t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="image folder (JPEG/PNG files, searched recursively)")
    ap.add_argument("--db", help="the dataset LMDB made from the same folder: also run moco bench augment on it")
    ap.add_argument("--recipe", default="v2", choices=["v1", "v2", "cifar"])
    ap.add_argument("--size", type=int, default=0, help="output side (default 224, cifar 32)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--limit", type=int, default=20000, help="images read into memory at most")
    ap.add_argument("--cpu", type=int, default=0, help="CPU to pin both benchmarks to")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate torchvision and moco this many times; report the best of each (a shared machine is noisy)")
    ap.add_argument("--moco", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bin", "moco"))
    a = ap.parse_args()
    size = a.size or (32 if a.recipe == "cifar" else 224)
    os.sched_setaffinity(0, {a.cpu})
    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)
    files = sorted(f for ext in ("jpg", "jpeg", "JPG", "png", "PNG")
                   for f in glob.glob(os.path.join(a.images, "**", "*." + ext), recursive=True))[: a.limit]
    if not files:
        sys.exit("no images under %s" % a.images)
    blobs = [open(f, "rb").read() for f in files]
    print("torchvision %s, torch %s, PIL %s; %d images (%.1f MB) from %s; recipe %s, size %d; one thread on CPU %d"
          % (torchvision.__version__, torch.__version__, Image.__version__, len(blobs), sum(map(len, blobs)) / 1e6,
             a.images, a.recipe, size, a.cpu))

    def load(b):
        return Image.open(io.BytesIO(b)).convert("RGB")

    tv_full, tv_pil = pipeline(a.recipe, size, True), pipeline(a.recipe, size, False)

    def pair_full(b):
        im = load(b)
        return tv_full(im), tv_full(im)

    def pair_pil(b):
        im = load(b)
        return tv_pil(im), tv_pil(im)

    best = {"dec": 0.0, "full": 0.0, "pil": 0.0, "moco": None}
    for rnd in range(a.rounds):
        dec, _, _ = timed(load, blobs, a.seconds)
        full, n, t = timed(pair_full, blobs, a.seconds)
        pil, n2, t2 = timed(pair_pil, blobs, a.seconds)
        print("round %d: torchvision decode only (PIL open + RGB) %.1f images/s; pairs (official: + ToTensor/Normalize) "
              "%.1f pairs/s (%d in %.1f s); pairs (PIL views out) %.1f pairs/s (%d in %.1f s)"
              % (rnd + 1, dec, full, n, t, pil, n2, t2), flush=True)
        best["dec"], best["full"], best["pil"] = max(best["dec"], dec), max(best["full"], full), max(best["pil"], pil)
        if a.db:
            cmd = ["taskset", "-c", str(a.cpu), a.moco, "bench", "augment", "--db", a.db, "--recipe", a.recipe,
                   "--size", str(size), "--seconds", str(a.seconds), "--limit", str(a.limit)]
            print("$ " + " ".join(cmd), flush=True)
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            print(out, end="", flush=True)
            ours = json.loads(out.strip().splitlines()[-1])
            if best["moco"] is None or ours["pairs_per_s"] > best["moco"]["pairs_per_s"]:
                best["moco"] = ours
    full, pil = best["full"], best["pil"]
    res = {"recipe": a.recipe, "size": size, "images": len(blobs), "rounds": a.rounds,
           "torchvision_decode_per_s": round(best["dec"], 1), "torchvision_pairs_per_s": round(full, 1),
           "torchvision_pairs_per_s_pil_out": round(pil, 1)}
    if best["moco"]:
        ours = best["moco"]
        res.update({"moco_pairs_per_s": ours["pairs_per_s"], "moco_decode_per_s": ours["decode_per_s"],
                    "speedup_vs_torchvision": round(ours["pairs_per_s"] / full, 2),
                    "speedup_vs_torchvision_pil_out": round(ours["pairs_per_s"] / pil, 2)})
        print("side by side, one core, best of %d: moco %.1f pairs/s vs torchvision %.1f (official) / %.1f (PIL out): "
              "%.2fx / %.2fx" % (a.rounds, ours["pairs_per_s"], full, pil, res["speedup_vs_torchvision"],
                                 res["speedup_vs_torchvision_pil_out"]))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
