#!/usr/bin/python3
"""torchvision_views.py RECORDS OUT SEED EPOCHS: the reference recipe's views
(the MoCo CIFAR-10 demo's transforms on PIL images, as ../shared/reference
describes them) of every record payload in RECORDS (written by
`views_epoch records`), in (epoch, index) order, query then key, 32x32x3
uint8 HWC each: the views file that views_epoch.c and
pytorch_views_epoch.py train on."""
import io
import random
import struct
import sys

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

records, out, seed, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(seed)
random.seed(seed)
tf = T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(p=0.5),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)])
imgs = []
with open(records, "rb") as f:
    while True:
        h = f.read(4)
        if not h:
            break
        imgs.append(Image.open(io.BytesIO(f.read(struct.unpack("<I", h)[0]))).convert("RGB"))
with open(out, "wb") as o:
    for e in range(epochs):
        for im in imgs:
            for v in range(2):
                o.write(np.asarray(tf(im), dtype=np.uint8).tobytes())
print(f"{len(imgs)} images x {epochs} epochs to {out}")
