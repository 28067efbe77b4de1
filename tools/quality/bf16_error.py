#!/usr/bin/python3
"""bf16_error.py: how far one MoCo step's gradient moves from the exact one
under bf16, ours (`--precision bf16`) beside PyTorch's bf16 autocast, on
the same weights, images, key permutation and queue.

    /usr/bin/python3 tools/quality/bf16_error.py [--ckpt CKPT] [--width 16]
        [--batch 256] [--K 4096] [--splits 8] [--images CIFAR_TAR | --random-images]
        [--seed 0] [--batches 1] [--key-equal | --key-seed S]
        [--step-grads build/release/tools/quality/step_grads]

The exact gradient is PyTorch's in float64. Beside it, each in its own
precision from the same start:
  torch_fp32       PyTorch, float32
  torch_bf16_enc   PyTorch, both encoders under
                   torch.cpu.amp.autocast(dtype=torch.bfloat16), the
                   normalisation, logits and loss in float32 (as ours)
  torch_bf16_all   PyTorch, the whole step under autocast (as
                   tools/bench_pytorch_step.py --bf16 times it: the logits
                   q @ queue in bf16 too)
  ours_fp32, ours_bf16   this engine (step_grads, `make quality-tools`)
  ours_bf16_store_conv, ours_bf16_store_fp32
                   ours in bf16 with only the conv outputs, or no
                   activations, kept in bf16 between forward and backward
  ours_bf16_fp32_X (--decompose) ours in bf16 with X on fp32 kernels
                   (trainer/engine/resnet.c's $MOCO_BF16_FP32): fwd (every
                   convolution's forward), bwd, stem (the first
                   convolution), linear, and combinations; --parts
                   lists others, e.g. "fwd16;fwd128" (the forward of the
                   convolutions with 16, or 128, output channels)
ours_bf16 is the rule's bf16 everywhere, as autocast does; `--kernels
measure` may put some passes on fp32 kernels where they are faster (the
stem's forward, on AMD EPYC family 26 model 2).
For each, the relative error of the query encoder's gradient,
||g - g64|| / ||g64||, over all parameters together ("all") and per
tensor (the median and the worst), and of the loss. The weights are
--ckpt's encoders (a `moco train` checkpoint of resnet18-cifar, its queue
too) or a seeded torchvision initialisation; the images are two views of
--batch CIFAR-10 training images made by the official demo's torchvision
recipe (or Gaussian noise with --random-images). The key encoder is the
checkpoint's (or --key-seed's initialisation), moved by the step's
momentum update (m = 0.99) as in training; with --key-equal (and without
--ckpt or --key-seed) it equals the query encoder, an easier task than
training's (a loss of about 2 against training's 6 at epoch 3), as the
tool measured before 2026-12-02. With --batches B, B batches at the same
weights, and bf16's error set against the minibatch noise of SGD itself
(noise() below). The last line is one JSON object.

The float32 errors (1e-6 - 1e-3) are set by chance: one ReLU input within
rounding of zero that lands on the other side of it in the float32 run
changes one element of the gradient below it, and that one element can
dominate a bias gradient that otherwise cancels (seen here: ours 4.8e-4
against PyTorch's 3.4e-5 on one case, 3.8e-4 against 3.8e-4 on another).
bf16's errors are 100x larger. Exit status 77 where this CPU
has no bf16 path.
"""
import argparse
import copy
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from bench_pytorch_step import cpu_model  # noqa: E402
from gen_trainer_golden import load_st, make, save_st  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def views(tar, n, seed):
    """Two views each of n CIFAR-10 training JPEGs, the demo's recipe."""
    from PIL import Image
    from torchvision import transforms as Tr
    rng = random.Random(seed)
    with tarfile.open(tar) as t:
        names = [m for m in t.getmembers() if m.isfile() and m.name.startswith("train/") and m.name.endswith(".jpg")]
        pick = sorted(rng.sample(range(len(names)), n))
        imgs = [Image.open(io.BytesIO(t.extractfile(names[i]).read())).convert("RGB") for i in pick]
    aug = Tr.Compose([Tr.RandomResizedCrop(32), Tr.RandomHorizontalFlip(), Tr.RandomApply([Tr.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                      Tr.RandomGrayscale(p=0.2), Tr.ToTensor(), Tr.Normalize(MEAN, STD)])
    torch.manual_seed(seed)
    return torch.stack([aug(im) for im in imgs]), torch.stack([aug(im) for im in imgs])


def torch_step(base, x1, x2, perms, queue, T, mode, base_k=None):
    """The loss and {name: grad (float64)} of one step in mode f64 / fp32 /
    bf16_enc / bf16_all; the key encoder is base_k after the momentum
    update towards base (m = 0.99, as step_grads), else base."""
    dt = torch.float64 if mode == "f64" else torch.float32
    fq, fk = copy.deepcopy(base).to(dt), copy.deepcopy(base_k if base_k is not None else base).to(dt)
    if base_k is not None:
        with torch.no_grad():
            for pk, pq in zip(fk.parameters(), fq.parameters()):
                pk.mul_(0.99).add_(pq, alpha=1 - 0.99)
    fq.train(), fk.train()
    for p in fk.parameters():
        p.requires_grad = False
    Q = queue.to(dt)
    ac = mode.startswith("bf16")
    labels = torch.zeros(x1.shape[0], dtype=torch.long)

    def ctr(xq, xk, p):
        with torch.cpu.amp.autocast(enabled=ac, dtype=torch.bfloat16):
            q = fq(xq.to(dt))
            with torch.no_grad():
                k = fk(xk.to(dt)[p])[torch.argsort(p)]
            if mode == "bf16_all":
                q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
                logits = torch.cat([(q * k).sum(1, keepdim=True), q @ Q.to(q.dtype)], 1) / T
        if mode != "bf16_all":
            q, k = F.normalize(q.to(dt), dim=1), F.normalize(k.to(dt), dim=1)
            logits = torch.cat([(q * k).sum(1, keepdim=True), q @ Q], 1) / T
        return F.cross_entropy(logits.to(dt), labels)

    loss = ctr(x1, x2, perms[0])
    if len(perms) == 2:
        loss = loss + ctr(x2, x1, perms[1])
    loss.backward()
    return float(loss), {n: p.grad.detach().double() for n, p in fq.named_parameters()}


def errors(g, ref):
    num = sum(float((g[n] - ref[n]).pow(2).sum()) for n in ref)
    den = sum(float(ref[n].pow(2).sum()) for n in ref)
    per = sorted((float((g[n] - ref[n]).norm() / max(float(ref[n].norm()), 1e-300)), n) for n in ref)
    return {"all": (num / den) ** 0.5, "median": per[len(per) // 2][0], "worst": per[-1][0], "worst_tensor": per[-1][1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="a moco train checkpoint (resnet18-cifar): its query encoder and queue")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--K", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--splits", type=int, default=8)
    ap.add_argument("--T", type=float, default=0.1)
    ap.add_argument("--symmetric", action="store_true")
    ap.add_argument("--mlp", action="store_true")
    ap.add_argument("--images", default=os.path.join(HERE, "..", "..", "..", "shared", "data", "cifar10-jpeg.tar.gz"))
    ap.add_argument("--random-images", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, default=1,
                    help="batches (seeds seed, seed+1, ...) at the same weights; with 2 or more, bf16's error against "
                         "the minibatch noise of SGD itself")
    ap.add_argument("--key-equal", action="store_true", help="the key encoder equal to the query encoder, not --ckpt's")
    ap.add_argument("--key-seed", type=int, help="without --ckpt: the key encoder a seeded initialisation of its own")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decompose", action="store_true",
                    help="also ours in bf16 with parts on fp32 kernels ($MOCO_BF16_FP32: the forward, the backward, "
                         "the stem, the linear layers, and combinations)")
    ap.add_argument("--parts", default="",
                    help="';'-separated $MOCO_BF16_FP32 values to measure besides (e.g. 'fwd16;fwd32;fwd64;fwd128')")
    ap.add_argument("--step-grads", default=os.path.join(HERE, "..", "..", "build", "release", "tools", "quality", "step_grads"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    base = make("resnet18-cifar", width=a.width, mlp=a.mlp, dim=a.dim, bn_splits=a.splits)
    queue = F.normalize(torch.randn(a.dim, a.K), dim=0)
    base_k = None
    if a.ckpt:
        st = load_st(a.ckpt, lambda k: k.startswith("encoder_q.") or k.startswith("encoder_k.") or k == "queue")
        queue = st.pop("queue")
        base.load_state_dict({k[len("encoder_q."):]: v for k, v in st.items() if k.startswith("encoder_q.")}, strict=True)
        if not a.key_equal:
            base_k = copy.deepcopy(base)
            base_k.load_state_dict({k[len("encoder_k."):]: v for k, v in st.items() if k.startswith("encoder_k.")}, strict=True)
        a.dim, a.K = queue.shape
    elif a.key_seed is not None:  # a key encoder of its own without a checkpoint (the tool's test)
        torch.manual_seed(a.key_seed)
        base_k = make("resnet18-cifar", width=a.width, mlp=a.mlp, dim=a.dim, bn_splits=a.splits)
    N = a.batch
    print(f"bf16_error: resnet18-cifar width {a.width}{' mlp' if a.mlp else ''}, batch {N}, K {a.K}, dim {a.dim}, "
          f"{a.splits} BN splits{', symmetric' if a.symmetric else ''}; weights: {a.ckpt or f'seeded init {a.seed}'}"
          f"{'' if base_k is not None else ', key encoder = query encoder'}; "
          f"images: {'Gaussian' if a.random_images else 'CIFAR-10 train, the demo recipe'}; CPU: {cpu_model()}", flush=True)
    out, grads = [], []
    for b in range(a.batches):
        seed = a.seed + b
        if a.batches > 1:
            print(f"batch {b + 1} of {a.batches} (seed {seed})", flush=True)
        res, g = one_batch(a, base, base_k, queue, seed)
        out.append(res)
        grads.append(g)
    summary = noise(grads) if a.batches > 1 else {}
    for k, v in summary.items():
        print(f"{k}: error {v['error']:.4f} of the gradient (mean over batches), errors' mean cosine across batches "
              f"{v['error_cos']:+.3f}; minibatch noise {v['noise']:.3f} of the mean gradient; the largest error / noise "
              f"of a tensor {v['worst_over_noise']:.4f} ({v['worst_tensor']})")
    print(json.dumps({"cpu": cpu_model(), "width": a.width, "batch": N, "ckpt": a.ckpt, "key_equal": base_k is None,
                      "random_images": a.random_images, "seed": a.seed, "batches": out if a.batches > 1 else None,
                      **({} if a.batches > 1 else out[0]), "noise": summary}))


def one_batch(a, base, base_k, queue, seed):
    """One batch (seed's images and key permutation): the table of errors,
    and {"f64": grads, name: grads} for noise()."""
    N = a.batch
    if a.random_images:
        torch.manual_seed(seed)
        x1, x2 = torch.randn(N, 3, 32, 32), torch.randn(N, 3, 32, 32)
    else:
        x1, x2 = views(a.images, N, seed)
    perms = [torch.randperm(N)] + ([torch.randperm(N)] if a.symmetric else [])
    loss64, g64 = torch_step(base, x1, x2, perms, queue, a.T, "f64", base_k)
    res, grads = {"loss_f64": loss64}, {"f64": g64}
    for mode in ("fp32", "bf16_enc", "bf16_all"):
        loss, g = torch_step(base, x1, x2, perms, queue, a.T, mode, base_k)
        res["torch_" + mode] = dict(errors(g, g64), loss=abs(loss - loss64) / abs(loss64))
        grads["torch_" + mode] = g
    with tempfile.TemporaryDirectory() as d:
        case = {f"init.{k}": v for k, v in base.state_dict().items()}
        if base_k is not None:
            case.update({f"initk.{k}": v for k, v in base_k.state_dict().items()})
        case.update({"x1": x1, "x2": x2, "perm": torch.cat(perms), "queue": queue.contiguous(),
                     "cfg": torch.tensor([N, 32, a.K, a.dim, a.splits, int(a.symmetric), int(a.mlp), a.width], dtype=torch.int64),
                     "cfgf": torch.tensor([a.T], dtype=torch.float32)})
        cp = os.path.join(d, "case.safetensors")
        save_st(cp, case)
        runs = [("fp32", "all", ""), ("bf16", "all", ""), ("bf16", "conv", ""), ("bf16", "fp32", "")]
        if a.decompose:
            runs += [("bf16", "all", k) for k in ("fwd", "bwd", "stem", "linear", "stem,linear", "fwd,bwd,linear")]
        runs += [("bf16", "all", k) for k in a.parts.split(";") if k]
        for prec, store, keep in runs:
            out = os.path.join(d, prec + store + keep + ".safetensors")
            rc = subprocess.run([a.step_grads, cp, out, prec, store], env=dict(os.environ, MOCO_BF16_FP32=keep)).returncode
            if rc == 77:
                sys.exit(77)  # step_grads said why: no bf16 on this CPU
            if rc:
                sys.exit(f"bf16_error: {a.step_grads} {prec} {store} failed (exit status {rc})")
            g = {k: v.double() for k, v in load_st(out, lambda k: True).items()}
            loss = float(g.pop("loss")[0])
            name = "ours_" + prec + ("" if store == "all" or prec == "fp32" else "_store_" + store)
            name += "_fp32_" + keep.replace(",", "+") if keep else ""
            res[name] = dict(errors(g, g64), loss=abs(loss - loss64) / abs(loss64))
            grads[name] = g
    print(f"{'':34} {'gradient, all':>14} {'per-tensor median':>18} {'worst':>9}  {'loss':>9}")
    for k, v in res.items():
        if k != "loss_f64":
            print(f"{k:34} {v['all']:14.3e} {v['median']:18.3e} {v['worst']:9.3e}  {v['loss']:9.2e}   worst at {v['worst_tensor']}")
    res["ours_bf16_over_torch_bf16_enc"] = res["ours_bf16"]["all"] / res["torch_bf16_enc"]["all"]
    print(f"ours bf16 / PyTorch bf16 autocast (encoders), gradient error: {res['ours_bf16_over_torch_bf16_enc']:.3f}", flush=True)
    return res, grads


def noise(grads):
    """bf16's error against SGD's own noise, over batches at the same
    weights: per precision, the error's size (relative to each batch's
    gradient, all parameters), how alike the errors of different batches
    are (mean pairwise cosine: near 0 when independent, as rounding is;
    near 1 when a bias repeats), the minibatch noise (the batches'
    gradients about their mean, relative to the mean), and the tensor where
    the error is largest against that tensor's minibatch noise."""
    B = len(grads)
    names = sorted(grads[0]["f64"])
    flat = lambda d: torch.cat([d[n].flatten() for n in names])
    G = [flat(x["f64"]) for x in grads]
    Gm = torch.stack(G).mean(0)
    corr = (B / (B - 1)) ** 0.5  # the spread about the sample mean, for the spread about the true one
    noise_all = sum(float((g - Gm).norm()) for g in G) / B * corr / float(Gm.norm())
    out = {}
    for k in ("ours_bf16", "torch_bf16_enc"):
        E = [flat(x[k]) - g for x, g in zip(grads, G)]
        cos = [float(E[i] @ E[j] / (E[i].norm() * E[j].norm())) for i in range(B) for j in range(i + 1, B)]
        worst, wt = 0.0, ""
        for n in names:
            gs = torch.stack([x["f64"][n].flatten() for x in grads])
            es = torch.stack([x[k][n].flatten() for x in grads]) - gs
            nz = float((gs - gs.mean(0)).norm(dim=1).mean()) * corr
            r = float(es.norm(dim=1).mean()) / nz if nz > 0 else 0.0
            if r > worst:
                worst, wt = r, n
        out[k] = {"error": sum(float(e.norm() / g.norm()) for e, g in zip(E, G)) / B, "error_cos": sum(cos) / len(cos),
                  "noise": noise_all, "worst_over_noise": worst, "worst_tensor": wt}
    return out


if __name__ == "__main__":
    main()
