#!/usr/bin/python3
"""pytorch_knn.py CKPT CIFAR_JPEG_DIR [WIDTH]: the kNN monitor of the MoCo
CIFAR-10 demo, in PyTorch, on a checkpoint's encoder_q (resnet18-cifar, fc
head): images decoded with PIL from DIR/{train,test}/<class>/*.jpg,
ToTensor + Normalize (the demo's CIFAR mean and std), eval mode,
L2-normalised head outputs, the 200 nearest training features by cosine
similarity, votes weighted exp(sim / 0.1). A cross-check of `moco knn`,
which must print the same figure for the same checkpoint."""
import json
import os
import sys

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from gen_trainer_golden import load_st, make  # noqa: E402

ckpt, root = sys.argv[1], sys.argv[2]
width = int(sys.argv[3]) if len(sys.argv) > 3 else 16
torch.set_num_threads(2)
model = make('resnet18-cifar', width=width, mlp=False, dim=128)
state = {k[len('encoder_q.'):]: v for k, v in load_st(ckpt, lambda k: k.startswith('encoder_q.')).items()}
model.load_state_dict(state, strict=True)
model.eval()
tf = T.Compose([T.ToTensor(), T.Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])])
classes = sorted(os.listdir(os.path.join(root, 'train')))


def features(split):
    xs, ys = [], []
    for ci, c in enumerate(classes):
        d = os.path.join(root, split, c)
        for f in sorted(os.listdir(d)):
            xs.append(tf(Image.open(os.path.join(d, f)).convert('RGB')))
            ys.append(ci)
    out = []
    with torch.no_grad():
        for i in range(0, len(xs), 512):
            out.append(F.normalize(model(torch.stack(xs[i:i + 512])), dim=1))
    return torch.cat(out), torch.tensor(ys)


ftr, ltr = features('train')
fte, lte = features('test')
k, t, C, right = 200, 0.1, len(classes), 0
for i in range(0, len(fte), 500):
    w, idx = (fte[i:i + 500] @ ftr.t()).topk(k, dim=-1)
    votes = torch.zeros(len(idx) * k, C).scatter_(1, ltr[idx].view(-1, 1), 1).view(len(idx), k, C)
    pred = (votes * (w / t).exp().unsqueeze(-1)).sum(1).argmax(dim=-1)
    right += (pred == lte[i:i + 500]).sum().item()
print(json.dumps({"knn_top1": round(100 * right / len(fte), 2), "ckpt": ckpt}))
