#!/usr/bin/python3
"""gen_augment_golden.py: reference values for tests/test_augment.c, computed
with torchvision's own functions (Debian's python3-torchvision, 0.14) on small
fixed images. Run with Debian's python: /usr/bin/python3 tools/gen_augment_golden.py

Writes tests/golden/augment/:
  <case>.bin  one kernel case: magic "MAGD", u32 LE: in_c, in_h, in_w, out_c,
              out_h, out_w, nparams; f64 LE params[nparams]; the input, uint8
              HWC; the expected output, float32 LE planar (C,H,W), 0..255 scale.
              The reference applies torchvision.transforms.functional to the
              input as a float tensor in [0, 1] (no intermediate rounding) and
              multiplies by 255.
  crop_stats.txt  statistics of RandomResizedCrop.get_params over many draws
              (torch.manual_seed printed in the file).
Inputs are a fixed formula (no random generator), so the files are stable.
"""
import math
import os
import struct

import torch
import torchvision
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode, RandomResizedCrop

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "augment")


def image(c, h, w, salt):
    """A fixed uint8 HWC image: smooth gradients plus a hashed texture."""
    t = torch.empty(h, w, c, dtype=torch.uint8)
    for y in range(h):
        for x in range(w):
            for k in range(c):
                v = (x * 37 + y * 61 + k * 89 + salt * 13) % 256
                hsh = ((x * 73856093) ^ (y * 19349663) ^ (k * 83492791) ^ (salt * 2654435761)) & 0xFFFFFFFF
                v = (v + (hsh % 97)) % 256
                t[y, x, k] = v
    return t


def write(name, img_hwc, out_chw, params):
    c, h, w = img_hwc.shape[2], img_hwc.shape[0], img_hwc.shape[1]
    oc, oh, ow = out_chw.shape
    with open(os.path.join(OUT, name + ".bin"), "wb") as f:
        f.write(b"MAGD")
        f.write(struct.pack("<7I", c, h, w, oc, oh, ow, len(params)))
        f.write(struct.pack("<%dd" % len(params), *params))
        f.write(img_hwc.contiguous().numpy().tobytes())
        f.write(struct.pack("<%df" % out_chw.numel(), *out_chw.flatten().tolist()))
    print("%-22s in %dx%dx%d out %dx%dx%d params %s" % (name, c, h, w, oc, oh, ow, params))


def as_float(img_hwc):
    return img_hwc.permute(2, 0, 1).to(torch.float32) / 255.0


def main():
    os.makedirs(OUT, exist_ok=True)
    print("torch", torch.__version__, "torchvision", torchvision.__version__)
    rgb = image(3, 23, 29, 1)
    gray = image(1, 17, 13, 2)
    big = image(3, 40, 36, 3)
    x = as_float(rgb)
    # resize: (top, left, height, width, out_h, out_w, flip)
    for name, img, p in [
        ("resize_down", rgb, (3, 5, 19, 22, 8, 8, 0)),
        ("resize_down_flip", rgb, (0, 0, 23, 29, 7, 11, 1)),
        ("resize_up", rgb, (4, 2, 6, 9, 16, 16, 0)),
        ("resize_gray", gray, (2, 1, 13, 11, 5, 6, 0)),
    ]:
        t = F.resized_crop(as_float(img), p[0], p[1], p[2], p[3], [p[4], p[5]], InterpolationMode.BILINEAR, antialias=True)
        if p[6]:
            t = F.hflip(t)
        write(name, img, t * 255.0, p)
    for f in (1.3, 0.6):
        write("brightness_%g" % f, rgb, F.adjust_brightness(x, f) * 255.0, (f,))
    for f in (1.35, 0.62):
        write("contrast_%g" % f, rgb, F.adjust_contrast(x, f) * 255.0, (f,))
    write("contrast_gray", gray, F.adjust_contrast(as_float(gray), 1.3) * 255.0, (1.3,))
    for f in (1.4, 0.65):
        write("saturation_%g" % f, rgb, F.adjust_saturation(x, f) * 255.0, (f,))
    for f in (0.1, -0.37, 0.45, -0.05):
        write("hue_%g" % f, rgb, F.adjust_hue(x, f) * 255.0, (f,))
    write("grayscale", rgb, F.rgb_to_grayscale(x, 3) * 255.0, ())
    write("blur_23_1.7", big, F.gaussian_blur(as_float(big), [23, 23], [1.7, 1.7]) * 255.0, (23, 1.7))
    write("blur_5_0.8", rgb, F.gaussian_blur(x, [5, 5], [0.8, 0.8]) * 255.0, (5, 0.8))
    write("blur_gray_3_0.5", gray, F.gaussian_blur(as_float(gray), [3, 3], [0.5, 0.5]) * 255.0, (3, 0.5))
    # ColorJitter's chain in a given order: params = order[4], b, c, s, h
    for order, b, c, s, h in [((3, 1, 0, 2), 1.2, 0.7, 1.3, 0.08), ((0, 2, 3, 1), 0.75, 1.25, 0.6, -0.09)]:
        t = x
        for op in order:
            t = [lambda v: F.adjust_brightness(v, b), lambda v: F.adjust_contrast(v, c),
                 lambda v: F.adjust_saturation(v, s), lambda v: F.adjust_hue(v, h)][op](t)
        write("jitter_%d%d%d%d" % order, rgb, t * 255.0, tuple(order) + (b, c, s, h))

    # Whole views: the recipe chains with given parameters, rounded to uint8
    # as the worker does (chain.bin: params = recipe (1 v1, 2 v2), size,
    # top, left, h, w, flip, jitter, order[4], b, c, s, h, gray, blur, sigma, ksize)
    big8 = image(3, 50, 44, 4)
    xb = as_float(big8)
    for name, rec, p in [
        ("chain_v1", 1, (40, 3, 5, 41, 33, 1, 1, (2, 0, 3, 1), 1.3, 0.8, 1.2, 0.3, 1, 0, 0.0, 5)),
        ("chain_v2", 2, (40, 6, 2, 30, 38, 0, 1, (1, 3, 2, 0), 0.7, 1.35, 0.75, -0.08, 0, 1, 1.3, 5)),
        ("chain_v2_gray", 2, (40, 0, 0, 50, 44, 1, 1, (3, 2, 1, 0), 1.1, 0.9, 1.3, 0.05, 1, 1, 0.6, 5)),
    ]:
        size, top, left, h, w, flip, jit, order, b, c, s, hh, gray, blur, sigma, ks = p
        t = F.resized_crop(xb, top, left, h, w, [size, size], InterpolationMode.BILINEAR, antialias=True)
        ops = [lambda v: F.adjust_brightness(v, b), lambda v: F.adjust_contrast(v, c),
               lambda v: F.adjust_saturation(v, s), lambda v: F.adjust_hue(v, hh)]
        if rec == 1 and gray:
            t = F.rgb_to_grayscale(t, 3)
        if jit:
            for op in order:
                t = ops[op](t)
        if rec == 2 and gray:
            t = F.rgb_to_grayscale(t, 3)
        if blur:
            t = F.gaussian_blur(t, [ks, ks], [sigma, sigma])
        if flip:
            t = F.hflip(t)
        write(name, big8, t * 255.0, (rec, size, top, left, h, w, flip, jit) + tuple(order) + (b, c, s, hh, gray, blur, sigma, ks))

    # RandomResizedCrop sampling statistics
    n = 100000
    with open(os.path.join(OUT, "crop_stats.txt"), "w") as f:
        f.write("# RandomResizedCrop.get_params statistics from torchvision %s, torch.manual_seed(0), %d draws each\n"
                % (torchvision.__version__, n))
        f.write("# W H scale_min scale_max mean_area_frac sd_area_frac mean_log_ratio sd_log_ratio fallback_frac\n")
        torch.manual_seed(0)
        for (W, H, s0, s1) in [(500, 375, 0.2, 1.0), (32, 32, 0.08, 1.0), (120, 30, 0.2, 1.0)]:
            img = torch.empty(1, H, W)
            fr, lr, fb = [], [], 0
            for _ in range(n):
                i, j, h, w = RandomResizedCrop.get_params(img, [s0, s1], [3.0 / 4.0, 4.0 / 3.0])
                fr.append(w * h / (W * H))
                lr.append(math.log(w / h))
                # the fallback is the centre crop of the clamped ratio
                in_ratio = W / H
                if in_ratio < 3 / 4:
                    cw, ch = W, int(round(W / (3 / 4)))
                elif in_ratio > 4 / 3:
                    cw, ch = int(round(H * 4 / 3)), H
                else:
                    cw, ch = W, H
                if (w, h, i, j) == (cw, ch, (H - ch) // 2, (W - cw) // 2):
                    fb += 1
            m = sum(fr) / n
            sd = math.sqrt(sum((a - m) ** 2 for a in fr) / n)
            ml = sum(lr) / n
            sl = math.sqrt(sum((a - ml) ** 2 for a in lr) / n)
            f.write("%d %d %g %g %.6f %.6f %.6f %.6f %.6f\n" % (W, H, s0, s1, m, sd, ml, sl, fb / n))
            print("crop stats", W, H, s0, s1, m, sd, ml, sl, fb / n)


if __name__ == "__main__":
    main()
