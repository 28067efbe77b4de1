#!/usr/bin/python3
"""gen_trainer_golden.py: write the PyTorch reference numbers that the C
trainer tests (tests/test_nn.c, tests/test_trainer.c) compare with, as small
safetensors files under tests/golden/trainer/.

Uses Debian's python3-torch (1.13) and torchvision; run with /usr/bin/python3:
    /usr/bin/python3 tools/gen_trainer_golden.py [OUTDIR]
Deterministic (torch.manual_seed), CPU, float32. Tensors are NCHW as PyTorch
keeps them; model tensors carry torchvision's state_dict names.

    /usr/bin/python3 tools/gen_trainer_golden.py --check-torchvision ARCH WEIGHTS IO
loads WEIGHTS (a safetensors file saved by moco's rn_save) into
torchvision.models.ARCH(num_classes=...) with a strict load_state_dict and
compares its eval-mode output on IO's "x" with IO's "out".

Files:
  layers.safetensors       conv (several k/stride/pad), BN (train S=1,2,4;
                           eval), max-pool, linear, L2 norm, InfoNCE: inputs,
                           outputs, upstream gradient and every gradient
  r18c_w8.safetensors      resnet18-cifar width 8, fc head, batch 4, 16x16:
                           "init.<name>" state_dict, x, out (train), dout,
                           "grad.<param>", "after.<buffer>", out_eval
  r50_w4.safetensors       resnet50 width 4 (7x7 stem, max-pool), MLP head,
                           batch 16, 48x48: same keys. Model references
                           are computed in float64 (float32 BN over a few
                           values is ill-conditioned: at batch 4-8 PyTorch's
                           own float32 gradients are 0.1-50% off), with
                           PyTorch's float32 error stored as torch_f32_err
  moco_a.safetensors       MoCo steps, resnet18-cifar width 4, fc head, N 8,
  moco_b.safetensors       16x16, K 32, dim 16, splits 2; b: symmetric + MLP:
                           init.<name>, queue0, step<i>.x1/x2/perm/loss,
                           q.<name> / k.<name> after the last step, queue, ptr
"""
import json
import os
import struct
import sys
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock, Bottleneck

torch.manual_seed(0)
torch.set_num_threads(2)
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "trainer")


def save_st(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        dt = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        b = t.numpy().tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    print(f"{path}: {len(tensors)} tensors, {8 + len(h) + off} bytes")


class SplitBatchNorm(nn.BatchNorm2d):
    """The MoCo CIFAR-10 demo's SplitBatchNorm (statistics over num_splits
    interleaved sub-batches, running statistics averaged over the splits),
    which also counts num_batches_tracked as BatchNorm2d does."""

    def __init__(self, num_features, num_splits=1, **kw):
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def forward(self, input):
        S = self.num_splits
        if not self.training or S == 1:
            return super().forward(input)
        N, C, H, W = input.shape
        self.num_batches_tracked += 1
        rm, rv = self.running_mean.repeat(S), self.running_var.repeat(S)
        out = F.batch_norm(input.view(-1, C * S, H, W), rm, rv, self.weight.repeat(S), self.bias.repeat(S), True,
                           self.momentum, self.eps).view(N, C, H, W)
        self.running_mean.data.copy_(rm.view(S, C).mean(dim=0))
        self.running_var.data.copy_(rv.view(S, C).mean(dim=0))
        return out


class ResNet(nn.Module):
    """torchvision's ResNet with a base width and the CIFAR stem option; the
    same module names, so the same state_dict keys."""

    def __init__(self, block, layers, width=64, cifar=False, dim=128, mlp=False, bn_splits=1):
        super().__init__()
        norm = partial(SplitBatchNorm, num_splits=bn_splits)
        self._norm_layer = norm
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        if cifar:
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        feat = width * 8 * block.expansion
        self.fc = nn.Sequential(nn.Linear(feat, feat), nn.ReLU(), nn.Linear(feat, dim)) if mlp else nn.Linear(feat, dim)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):  # perturbed so gamma/beta matter in the tests
                nn.init.normal_(m.weight, 1.0, 0.2)
                nn.init.normal_(m.bias, 0.0, 0.2)

    def _make_layer(self, block, planes, blocks, stride=1):
        norm, down = self._norm_layer, None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 norm(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, down, norm_layer=norm)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, norm_layer=norm) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def make(arch, **kw):
    spec = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
            "resnet50": (Bottleneck, [3, 4, 6, 3])}[arch.replace("-cifar", "")]
    return ResNet(*spec, cifar=arch.endswith("-cifar"), **kw)


def layers():
    t = {}
    for i, (N, Ci, H, Co, k, s, p) in enumerate([(2, 3, 9, 4, 3, 2, 1), (2, 5, 6, 3, 1, 1, 0), (3, 4, 7, 6, 1, 2, 0),
                                                 (2, 3, 11, 4, 7, 2, 3), (2, 4, 8, 5, 3, 1, 1), (1, 2, 5, 3, 3, 1, 0)]):
        x = torch.randn(N, Ci, H, H, requires_grad=True)
        w = torch.randn(Co, Ci, k, k, requires_grad=True)
        y = F.conv2d(x, w, stride=s, padding=p)
        dy = torch.randn_like(y)
        y.backward(dy)
        t.update({f"conv{i}.x": x, f"conv{i}.w": w, f"conv{i}.y": y, f"conv{i}.dy": dy, f"conv{i}.dx": x.grad,
                  f"conv{i}.dw": w.grad,
                  f"conv{i}.dims": torch.tensor([N, Ci, H, Co, k, s, p], dtype=torch.int64)})
    for S in (1, 2, 4):
        N, C, H = 8, 3, 3
        bn = SplitBatchNorm(C, num_splits=S)
        with torch.no_grad():
            bn.weight.normal_(1, 0.3), bn.bias.normal_(0, 0.3), bn.running_mean.normal_(0, 1), bn.running_var.uniform_(0.5, 2)
        rm0, rv0 = bn.running_mean.clone(), bn.running_var.clone()
        x = (torch.randn(N, C, H, H) * 2 + 0.5).requires_grad_()
        y = bn(x)
        dy = torch.randn_like(y)
        y.backward(dy)
        bn.eval()
        ye = bn(x)
        t.update({f"bn{S}.x": x, f"bn{S}.gamma": bn.weight, f"bn{S}.beta": bn.bias, f"bn{S}.rm0": rm0, f"bn{S}.rv0": rv0,
                  f"bn{S}.y": y, f"bn{S}.rm1": bn.running_mean, f"bn{S}.rv1": bn.running_var, f"bn{S}.dy": dy,
                  f"bn{S}.dx": x.grad, f"bn{S}.dgamma": bn.weight.grad, f"bn{S}.dbeta": bn.bias.grad, f"bn{S}.y_eval": ye})
    x = F.relu(torch.randn(2, 3, 9, 9)).requires_grad_()  # zeros make ties
    y = F.max_pool2d(x, 3, 2, 1)
    dy = torch.randn_like(y)
    y.backward(dy)
    t.update({"pool.x": x, "pool.y": y, "pool.dy": dy, "pool.dx": x.grad})
    x, w, b = torch.randn(5, 7, requires_grad=True), torch.randn(3, 7, requires_grad=True), torch.randn(3, requires_grad=True)
    y = F.linear(x, w, b)
    dy = torch.randn_like(y)
    y.backward(dy)
    t.update({"fc.x": x, "fc.w": w, "fc.b": b, "fc.y": y, "fc.dy": dy, "fc.dx": x.grad, "fc.dw": w.grad, "fc.db": b.grad})
    x = torch.randn(4, 6, requires_grad=True)
    y = F.normalize(x, dim=1)
    dy = torch.randn_like(y)
    y.backward(dy)
    t.update({"l2.x": x, "l2.y": y, "l2.dy": dy, "l2.dx": x.grad})
    N, D, K, T = 6, 8, 20, 0.07
    q = F.normalize(torch.randn(N, D), dim=1).requires_grad_()
    k = F.normalize(torch.randn(N, D), dim=1)
    queue = F.normalize(torch.randn(D, K), dim=0)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], 1) / T
    loss = F.cross_entropy(logits, torch.zeros(N, dtype=torch.long))
    loss.backward()
    t.update({"nce.q": q, "nce.k": k, "nce.queue": queue, "nce.T": torch.tensor([T]), "nce.loss": loss.reshape(1),
              "nce.dq": q.grad})
    save_st(os.path.join(OUT, "layers.safetensors"), t)


def grads64(arch, width, mlp, dim, splits, state, x, dout, eps=0.0, seed=0):
    """Float64 forward and backward with every weight and input scaled by
    (1 + eps * u), u uniform in [-1, 1] (seeded): with eps at float32's
    rounding, how far the exact gradients move under float32-sized noise."""
    g = torch.Generator().manual_seed(seed)
    noise = lambda v: v.double() * (1 + eps * (2 * torch.rand(v.shape, generator=g, dtype=torch.float64) - 1))
    model = make(arch, width=width, mlp=mlp, dim=dim, bn_splits=splits).double()
    model.load_state_dict({k: noise(v) if v.is_floating_point() else v for k, v in state.items()})
    model.train()
    out = model(noise(x))
    out.backward(dout.double())
    return model, out


def model_case(fname, arch, width, mlp, N, size, splits, dim, seed):
    """Reference computed in float64 (stored as float32): float32 results
    of a deep net with BN depend on summation order by more than rounding
    (BN over few values amplifies them), so the truth is the fair target.
    PyTorch's own float32 error against it is stored as torch_f32_err.

    A case can also be ill-conditioned outright: a ReLU or max-pool decision
    that float32 rounding flips, amplified by BN over few values, moves some
    gradient by percents (the first resnet50 case moved 8.8% under 1 of 5
    float32-sized perturbations of its weights, so its pass or failure
    depended on the BLAS kernels' summation order). Each case is therefore
    probed with 8 perturbations of relative size 2^-22 in float64, and the
    first seed from `seed` on whose gradients all stay within 1e-4 is kept;
    the probe's result is stored as f64_perturb_err."""
    for attempt in range(50):
        torch.manual_seed(seed + attempt)
        model = make(arch, width=width, mlp=mlp, dim=dim, bn_splits=splits)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        x = torch.randn(N, 3, size, size)
        m32 = make(arch, width=width, mlp=mlp, dim=dim, bn_splits=splits)
        m32.load_state_dict(state)
        with torch.no_grad():
            dout = torch.randn_like(m32(x))
        m32.load_state_dict(state)
        model, out = grads64(arch, width, mlp, dim, splits, state, x, dout)
        probe = 0.0
        for s in range(1, 9):
            mp, _ = grads64(arch, width, mlp, dim, splits, state, x, dout, 2.0 ** -22, s)
            probe = max([probe] + [((pp.grad - p.grad).abs().max() / p.grad.abs().max()).item()
                                   for pp, p in zip(mp.parameters(), model.parameters())])
        print(f"{fname}: seed {seed + attempt}: float64 gradients under float32-sized perturbations move by {probe:.3g}")
        if probe < 5e-4:
            break
    else:
        sys.exit(f"{fname}: no well-conditioned case in 50 seeds")
    t = {f"init.{k}": v for k, v in state.items()}
    out32 = m32(x)
    out32.backward(dout)
    err = max(((p32.grad.double() - p.grad).abs().max() / p.grad.abs().max()).item()
              for p32, p in zip(m32.parameters(), model.parameters()))
    print(f"{fname}: PyTorch float32 vs float64: largest relative gradient difference {err:.3g}")
    model.eval()
    with torch.no_grad():
        oe = model(x.double())
    t.update({"x": x, "out": out.float(), "dout": dout.float(), "out_eval": oe.float(),
              "torch_f32_err": torch.tensor([err], dtype=torch.float32),
              "f64_perturb_err": torch.tensor([probe], dtype=torch.float32)})
    for k, p in model.named_parameters():
        t[f"grad.{k}"] = p.grad.float()
    for k, v in model.state_dict().items():
        if "running" in k:
            t[f"after.{k}"] = v.float()
        elif "num_batches" in k:
            t[f"after.{k}"] = v
    save_st(os.path.join(OUT, fname), t)


def moco_case(fname, symmetric, mlp, steps):
    N, size, K, dim, T, m, lr, wd, splits = 8, 16, 32, 16, 0.1, 0.99, 0.06, 5e-4, 2
    fq = make("resnet18-cifar", width=4, mlp=mlp, dim=dim, bn_splits=splits)
    fk = make("resnet18-cifar", width=4, mlp=mlp, dim=dim, bn_splits=splits)
    fk.load_state_dict(fq.state_dict())
    for p in fk.parameters():
        p.requires_grad = False
    queue = F.normalize(torch.randn(dim, K), dim=0)
    t = {f"init.{k}": v.clone() for k, v in fq.state_dict().items()}
    t["queue0"] = queue.clone()
    opt = torch.optim.SGD(fq.parameters(), lr, momentum=0.9, weight_decay=wd)
    ptr = 0
    labels = torch.zeros(N, dtype=torch.long)

    def ctr(im_q, im_k, perm):
        q = F.normalize(fq(im_q), dim=1)
        with torch.no_grad():
            k = F.normalize(fk(im_k[perm]), dim=1)[torch.argsort(perm)]
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.clone()], 1) / T
        return F.cross_entropy(logits, labels), q, k

    fq.train(), fk.train()
    for s in range(steps):
        x1, x2 = torch.randn(N, 3, size, size), torch.randn(N, 3, size, size)
        perms = [torch.randperm(N), torch.randperm(N)] if symmetric else [torch.randperm(N)]
        with torch.no_grad():
            for pq, pk in zip(fq.parameters(), fk.parameters()):
                pk.data = pk.data * m + pq.data * (1.0 - m)
        opt.zero_grad()
        if symmetric:
            l12, q1, k2 = ctr(x1, x2, perms[0])
            l21, q2, k1 = ctr(x2, x1, perms[1])
            loss, k = l12 + l21, torch.cat([k1, k2], 0)
        else:
            loss, q, k = ctr(x1, x2, perms[0])
        loss.backward()
        opt.step()
        with torch.no_grad():
            queue[:, ptr:ptr + k.shape[0]] = k.t()
        ptr = (ptr + k.shape[0]) % K
        t.update({f"step{s}.x1": x1, f"step{s}.x2": x2, f"step{s}.perm": torch.cat(perms),
                  f"step{s}.loss": loss.detach().reshape(1)})
    t.update({f"q.{k}": v for k, v in fq.state_dict().items()})
    t.update({f"k.{k}": v for k, v in fk.state_dict().items()})
    t["queue"], t["ptr"] = queue, torch.tensor([ptr], dtype=torch.int64)
    t["cfg"] = torch.tensor([N, size, K, dim, splits, symmetric, mlp, steps], dtype=torch.int64)
    t["cfgf"] = torch.tensor([T, m, lr, wd])
    save_st(os.path.join(OUT, fname), t)


def load_st(path, keep=lambda name: True):
    """The tensors of a safetensors file whose names keep() accepts (F32 and I64 only)."""
    import numpy as np
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    dt = {"F32": np.float32, "I64": np.int64}
    return {k: torch.from_numpy(np.frombuffer(b, dt[v["dtype"]], int(np.prod(v["shape"], dtype=np.int64)),
                                              8 + n + v["data_offsets"][0]).reshape(v["shape"]).copy())
            for k, v in h.items() if keep(k)}


def check_torchvision(arch, weights, io):
    import torchvision
    sd, t = load_st(weights), load_st(io)
    model = getattr(torchvision.models, arch)(num_classes=sd["fc.weight"].shape[0])
    model.load_state_dict(sd, strict=True)
    model.eval()
    with torch.no_grad():
        out = model(t["x"])
    d = ((out - t["out"]).abs().max() / t["out"].abs().max()).item()
    print(f"torchvision.models.{arch}: strict load_state_dict of {len(sd)} tensors ok; eval output vs moco: "
          f"largest relative difference {d:.3g}")
    sys.exit(0 if d < 1e-4 else 1)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--check-torchvision":
        check_torchvision(*sys.argv[2:])
    os.makedirs(OUT, exist_ok=True)
    layers()
    model_case("r18c_w8.safetensors", "resnet18-cifar", 8, False, 4, 16, 1, 32, 1)
    model_case("r50_w4.safetensors", "resnet50", 4, True, 16, 48, 1, 16, 1)
    torch.manual_seed(2)
    moco_case("moco_a.safetensors", False, False, 3)
    moco_case("moco_b.safetensors", True, True, 2)
