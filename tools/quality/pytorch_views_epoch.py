#!/usr/bin/python3
"""pytorch_views_epoch.py VIEWS N SEED OUT [--no-shuffle] [--bn-splits S]: one epoch of the MoCo CIFAR-10
demo's recipe in PyTorch (resnet18-cifar width 16 built as torchvision does,
conv1 replaced as the demo does, SplitBatchNorm 8, batch 256, K 4096, m 0.99,
T 0.1, lr 0.03, wd 5e-4) on the first N pairs of a views file, batches in
the same order as `views_epoch train` (SplitMix64 permutation (seed, 77, 0,
0)). Writes encoder_q as a checkpoint that `moco knn --ckpt OUT --width 16`
evaluates. --no-shuffle feeds the key batch unpermuted (no shuffle BN);
--bn-splits S changes the 8 BN splits (1: BN over the whole batch)."""
import sys, os, json, struct, numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from gen_trainer_golden import make, save_st
M64 = (1 << 64) - 1
def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)
class R:
    def __init__(s, a, b, c, d):
        x = mix((a + 0x9E3779B97F4A7C15) & M64); x = mix(x ^ ((b + 0x632BE59BD9B4E019) & M64))
        x = mix(x ^ ((c + 0x8CB92BA72F3D8DD7) & M64)); s.s = mix(x ^ ((d + 0xD1B54A32D192ED03) & M64))
    def u64(s):
        s.s = (s.s + 0x9E3779B97F4A7C15) & M64; return mix(s.s)
    def below(s, n):
        m = s.u64() * n; lo = m & M64
        if lo < n:
            t = ((1 << 64) - n) % n
            while lo < t:
                m = s.u64() * n; lo = m & M64
        return m >> 64
def perm(seed, e, n):
    g = R(seed, 77, e, 0); p = list(range(n))
    for i in range(n, 1, -1):
        j = g.below(i); p[i - 1], p[j] = p[j], p[i - 1]
    return p
import argparse
ap = argparse.ArgumentParser()
ap.add_argument('views'); ap.add_argument('n', type=int); ap.add_argument('seed', type=int); ap.add_argument('out')
ap.add_argument('--no-shuffle', action='store_true'); ap.add_argument('--bn-splits', type=int, default=8)
a_ = ap.parse_args()
views, n, seed, out, shuffle, splits = a_.views, a_.n, a_.seed, a_.out, not a_.no_shuffle, a_.bn_splits
torch.set_num_threads(2); torch.manual_seed(seed)
N, K, dim, m, T = 256, 4096, 128, 0.99, 0.1
fq = make('resnet18-cifar', width=16, mlp=False, dim=dim, bn_splits=splits)
fk = make('resnet18-cifar', width=16, mlp=False, dim=dim, bn_splits=splits)
for mod in fq.modules():  # the demo's init: torchvision's (BN 1/0), conv1 replaced after it (default Conv2d init)
    if isinstance(mod, torch.nn.BatchNorm2d): torch.nn.init.ones_(mod.weight); torch.nn.init.zeros_(mod.bias)
fq.conv1.reset_parameters()
fk.load_state_dict(fq.state_dict())
for p in fk.parameters(): p.requires_grad = False
queue = F.normalize(torch.randn(dim, K), dim=0); ptr = 0
opt = torch.optim.SGD(fq.parameters(), 0.03, momentum=0.9, weight_decay=5e-4)
a = np.fromfile(views, dtype=np.uint8)[: n * 2 * 3072].reshape(n, 2, 32, 32, 3)
mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1); std = torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1)
P = perm(seed, 0, n); labels = torch.zeros(N, dtype=torch.long)
fq.train(); fk.train(); tot = 0; steps = 0
for b in range(0, n - N + 1, N):
    idx = P[b:b + N]
    x = torch.from_numpy(a[idx]).permute(0, 1, 4, 2, 3).float() / 255.0
    x1 = ((x[:, 0] - mean) / std).contiguous(); x2 = ((x[:, 1] - mean) / std).contiguous()
    with torch.no_grad():
        for pq, pk in zip(fq.parameters(), fk.parameters()): pk.data = pk.data * m + pq.data * (1 - m)
    q = F.normalize(fq(x1), dim=1)
    with torch.no_grad():
        pr = torch.randperm(N) if shuffle else torch.arange(N); k = F.normalize(fk(x2[pr]), dim=1)[torch.argsort(pr)]
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.clone()], 1) / T
    loss = F.cross_entropy(logits, labels)
    opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): queue[:, ptr:ptr + N] = k.t()
    ptr = (ptr + N) % K; tot += loss.item(); steps += 1
    if steps % 20 == 0: print('step', steps, tot / steps, flush=True, file=sys.stderr)
print(json.dumps({"loss": tot / steps}))
sd = {('encoder_q.' + k): v for k, v in fq.state_dict().items()}
save_st(out, sd)
