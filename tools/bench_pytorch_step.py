#!/usr/bin/python3
"""bench_pytorch_step.py: time the MoCo training step in PyTorch (Debian's
python3-torch, CPU) beside `moco bench train` with the same settings, and
print both as JSON lines (the same fields: pairs_per_s, step_ms,
gflop_per_s, peak_rss_mb).

    /usr/bin/python3 tools/bench_pytorch_step.py --arch resnet18-cifar --width 16 \
        --batch-size 256 --size 32 --steps 5 --threads 2 [--moco-k 4096] [--mlp] [--symmetric] [--bf16 | --peers]

--moco-k, --moco-m, --moco-t: the queue length, key momentum, temperature
(main_moco.py's and moco bench train's names; --K, --m, --T are the same).

--bf16: PyTorch under torch.cpu.amp.autocast(dtype=torch.bfloat16), the one
line a PyTorch user adds for bf16, beside ours with --precision bf16. --peers:
side by side in one run, each in its own process: PyTorch fp32, PyTorch bf16
autocast, ours fp32, ours bf16 (skipped, with the reason, where moco cannot
do bf16 here); the last line is one JSON object with all four and the CPU
model. --rounds R (with --peers): the four R times over, interleaved (a
shared machine's speed drifts by tens of percent within minutes; the four
of one round see about the same machine), then each one's median, the
ratios of the medians, and each round's own ratios.

The step is the official CIFAR-10 demo's: momentum update of the key encoder,
shuffled key forward under no_grad (SplitBatchNorm with --bn-splits), query
forward, InfoNCE against the queue, backward, SGD (momentum 0.9, weight
decay), enqueue. Each side runs in its own process (PyTorch first, then
bin/moco), so the peak RSS figures are per process. --no-moco skips ours.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_trainer_golden import make  # noqa: E402  (the same torchvision-named ResNet)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="resnet18-cifar")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--mlp", action="store_true")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--moco-k", "--K", dest="K", type=int, default=4096)
    ap.add_argument("--moco-m", "--m", dest="m", type=float, default=0.99)
    ap.add_argument("--moco-t", "--T", dest="T", type=float, default=0.1)
    ap.add_argument("--bn-splits", type=int, default=8)
    ap.add_argument("--symmetric", action="store_true")
    ap.add_argument("--lr", type=float, default=0.06)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--moco", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bin", "moco"))
    ap.add_argument("--no-moco", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="PyTorch with bf16 autocast (CPU)")
    ap.add_argument("--peers", action="store_true", help="PyTorch fp32 and bf16, then ours, side by side")
    ap.add_argument("--rounds", type=int, default=1, help="--peers: run the four this many times, interleaved; report medians")
    ap.add_argument("--kernels", default="measure", choices=("measure", "rule"),
                    help="ours: kernels chosen by measurement (the wisdom file) or the fixed rule")
    a = ap.parse_args()
    if a.peers:
        return peers(a)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    N = a.batch_size
    fq = make(a.arch, width=a.width, mlp=a.mlp, dim=a.dim, bn_splits=a.bn_splits)
    fk = make(a.arch, width=a.width, mlp=a.mlp, dim=a.dim, bn_splits=a.bn_splits)
    fk.load_state_dict(fq.state_dict())
    for p in fk.parameters():
        p.requires_grad = False
    queue = F.normalize(torch.randn(a.dim, a.K), dim=0)
    opt = torch.optim.SGD(fq.parameters(), a.lr, momentum=0.9, weight_decay=a.wd)
    labels = torch.zeros(N, dtype=torch.long)
    x1, x2 = torch.rand(N, 3, a.size, a.size) * 4 - 2, torch.rand(N, 3, a.size, a.size) * 4 - 2
    ptr = 0

    def ctr(im_q, im_k):
        with torch.cpu.amp.autocast(enabled=a.bf16, dtype=torch.bfloat16):
            q = F.normalize(fq(im_q), dim=1)
            with torch.no_grad():
                perm = torch.randperm(N)
                k = F.normalize(fk(im_k[perm]), dim=1)[torch.argsort(perm)]
            logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.clone().to(q.dtype)], 1) / a.T
            loss = F.cross_entropy(logits.float(), labels)
        return loss, k.float()

    def step():
        nonlocal ptr
        with torch.no_grad():
            for pq, pk in zip(fq.parameters(), fk.parameters()):
                pk.data = pk.data * a.m + pq.data * (1.0 - a.m)
        opt.zero_grad()
        if a.symmetric:
            l12, k2 = ctr(x1, x2)
            l21, k1 = ctr(x2, x1)
            loss, k = l12 + l21, torch.cat([k1, k2], 0)
        else:
            loss, k = ctr(x1, x2)
        loss.backward()
        opt.step()
        with torch.no_grad():
            queue[:, ptr:ptr + k.shape[0]] = k.t()
        ptr = (ptr + k.shape[0]) % a.K
        return loss.item()

    # model FLOPs as bin/moco counts them: 2 x MACs of convs and linears,
    # f_q forward + backward (2x, less the first conv's input gradient) + f_k forward
    macs = [0.0, None]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            m = out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
            if macs[1] is None:
                macs[1] = m
        else:
            m = out.numel() * mod.in_features
        macs[0] += m

    hs = [mod.register_forward_hook(hook) for mod in fq.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        fq.eval()
        fq(x1)
        fq.train()
    for h in hs:
        h.remove()
    f, first = macs[0], macs[1]
    flop = 2 * (2 if a.symmetric else 1) * (f + (2 * f - first) + f)
    fq.train(), fk.train()
    print(f"pytorch {torch.__version__}{' bf16 autocast' if a.bf16 else ''}: {a.arch} width {a.width}{' mlp' if a.mlp else ''}, batch {N}, {a.size}x{a.size}, "
          f"K {a.K}, bn splits {a.bn_splits}{', symmetric' if a.symmetric else ''}, {a.threads} threads, "
          f"{flop / 1e9:.2f} GFLOP per step", flush=True)
    total, best, cpu = 0.0, 1e30, 0.0
    for s in range(a.warmup + a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        print(f"  step {s}{' (warm-up)' if s < a.warmup else ''}: {dt * 1e3:.1f} ms, {dc * 1e3:.1f} CPU ms, loss {loss:.4f}",
              flush=True)
        if s >= a.warmup:
            total += dt
            cpu += dc
            best = min(best, dt)
    st = total / a.steps
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {"bench": "train-pytorch-bf16" if a.bf16 else "train-pytorch", "arch": a.arch, "width": a.width, "batch": N, "size": a.size, "K": a.K,
           "threads": a.threads, "steps": a.steps, "pairs_per_s": round(N / st, 2), "step_ms": round(st * 1e3, 1),
           "gflop_per_s": round(flop / st / 1e9, 1), "peak_rss_mb": round(rss),
           "best_step_ms": round(best * 1e3, 1), "best_pairs_per_s": round(N / best, 2),
           "cpu_ms_per_step": round(cpu / a.steps * 1e3, 1)}
    print(json.dumps(res), flush=True)
    if a.no_moco:
        return
    cmd = [a.moco, "bench", "train", "--arch", a.arch, "--width", str(a.width), "--dim", str(a.dim), "--batch-size", str(N),
           "--size", str(a.size), "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads),
           "--moco-k", str(a.K), "--moco-m", str(a.m), "--moco-t", str(a.T), "--bn-splits", str(a.bn_splits), "--lr", str(a.lr),
           "--wd", str(a.wd)] + (["--mlp"] if a.mlp else []) + (["--symmetric"] if a.symmetric else []) + \
        (["--precision", "bf16"] if a.bf16 else [])
    print("$ " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
    print(out, end="")
    ours = json.loads(out.strip().splitlines()[-1])
    print(f"side by side (mean): pytorch {res['pairs_per_s']} pairs/s, {res['peak_rss_mb']} MB; "
          f"moco {ours['pairs_per_s']} pairs/s, {ours['peak_rss_mb']} MB; speed-up {ours['pairs_per_s'] / res['pairs_per_s']:.2f}x")
    print(f"side by side (best step, less sensitive to other load): pytorch {res['best_pairs_per_s']} pairs/s; "
          f"moco {ours['best_pairs_per_s']} pairs/s; speed-up {ours['best_pairs_per_s'] / res['best_pairs_per_s']:.2f}x")
    print(f"side by side (CPU time per step, all threads; spinning threads count too): pytorch {res['cpu_ms_per_step']} ms; "
          f"moco {ours['cpu_ms_per_step']} ms; ratio {res['cpu_ms_per_step'] / ours['cpu_ms_per_step']:.2f}x")


def cpu_model():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name:")), "?") + \
        " (family %s, model %s)" % tuple(next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith(k)), "?")
                                       for k in ("CPU family:", "Model:"))


def peers(a):
    """PyTorch fp32, PyTorch bf16 autocast (each its own process), then ours."""
    args, skip = [], 0
    for x in sys.argv[1:]:  # PyTorch's runs get our flags, less these
        if skip or x in ("--peers", "--bf16") or x.startswith("--kernels"):
            skip = x == "--kernels" and not skip
            continue
        args.append(x)
    cmd = [a.moco, "bench", "train", "--arch", a.arch, "--width", str(a.width), "--dim", str(a.dim), "--batch-size",
           str(a.batch_size), "--size", str(a.size), "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads",
           str(a.threads), "--moco-k", str(a.K), "--moco-m", str(a.m), "--moco-t", str(a.T), "--bn-splits", str(a.bn_splits), "--lr",
           str(a.lr), "--wd", str(a.wd), "--kernels", a.kernels] + (["--mlp"] if a.mlp else []) + (["--symmetric"] if a.symmetric else [])
    skipped, rounds = {}, []
    for r in range(max(1, a.rounds)):
        if a.rounds > 1:
            print(f"# round {r + 1} of {a.rounds}", flush=True)
        figs = {}
        for name, extra in (("pytorch_fp32", []), ("pytorch_bf16", ["--bf16"])):
            if name in skipped:
                continue
            p = subprocess.run([sys.executable, os.path.abspath(__file__)] + args + extra + ["--no-moco"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
            print(p.stdout, end="", flush=True)
            if p.returncode:
                # PyTorch's bf16 autocast has no convolution on a CPU without AVX-512 (oneDNN: "could not create a
                # primitive descriptor iterator"): that peer is left out, and said so; fp32 must run
                why = (p.stderr.strip().splitlines() or ["exit status %d" % p.returncode])[-1]
                if name == "pytorch_fp32":
                    sys.exit(f"PyTorch fp32 failed: {why}")
                skipped[name] = why
                print(f"(PyTorch bf16 autocast skipped: {why})", flush=True)
                continue
            figs[name] = json.loads(p.stdout.strip().splitlines()[-1])
        for prec in ("fp32", "bf16"):
            if "moco_" + prec in skipped:
                continue
            c = cmd + ["--precision", prec]
            print("$ " + " ".join(c), flush=True)
            p = subprocess.run(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            print(p.stdout, end="")
            if p.returncode:
                if prec == "fp32":
                    sys.exit(f"moco bench train failed: {p.stderr.strip()}")
                skipped["moco_" + prec] = p.stderr.strip()
                print(f"(ours in {prec} skipped: {p.stderr.strip()})", flush=True)
                continue
            figs["moco_" + prec] = json.loads(p.stdout.strip().splitlines()[-1])
            if figs["moco_" + prec].get("build", "release") != "release":
                print(f"WARNING: {a.moco} is a {figs['moco_' + prec]['build']} build: its figures are not the product's", flush=True)
        rounds.append(figs)
    figs = rounds[0]
    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
    res = {"bench": "train-peers", "cpu": cpu_model(), "arch": a.arch, "width": a.width, "batch": a.batch_size, "size": a.size,
           "threads": a.threads, "mlp": a.mlp, "kernels": a.kernels,
           # OpenBLAS's kernel set: ours (moco names one where OpenBLAS falls back below the CPU's level), and
           # $OPENBLAS_CORETYPE as PyTorch's runs had it (None: OpenBLAS's own choice; PyTorch's linear layers use it)
           "blas_core": figs["moco_fp32"].get("blas_core"), "pytorch_openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
           # "release", or "sanitize=...": a sanitizer build's figures are not the product's
           "moco_build": figs["moco_fp32"].get("build"),
           "rounds": len(rounds),
           "pairs_per_s": {k: round(med([f[k]["pairs_per_s"] for f in rounds]), 2) for k in figs},
           "peak_rss_mb": {k: max(f[k]["peak_rss_mb"] for f in rounds) for k in figs}}
    for ours in ("moco_fp32", "moco_bf16"):
        for peer in ("pytorch_fp32", "pytorch_bf16"):
            if ours in figs and peer in figs:
                res[f"{ours}_over_{peer}"] = round(res["pairs_per_s"][ours] / res["pairs_per_s"][peer], 2)
                if len(rounds) > 1:  # each round's own ratio: the spread the machine allows
                    res[f"{ours}_over_{peer}_rounds"] = [round(f[ours]["pairs_per_s"] / f[peer]["pairs_per_s"], 2) for f in rounds]
    if len(rounds) > 1:
        res["pairs_per_s_rounds"] = {k: [f[k]["pairs_per_s"] for f in rounds] for k in figs}
    # the CPU's multiply-add peak as our runs measured it (trainer/engine/peak.h): one thread's, and how
    # far all threads scaled in each round (about the thread count when they have cores of their own and
    # nothing else runs; about 1 on two hyperthreads of one core, or with another load on the machine)
    pk = [f["moco_fp32"] for f in rounds if "peak_fp32_gflops" in f["moco_fp32"]]
    if pk:
        res["peak_isa"] = pk[0]["peak_isa"]
        res["peak_fp32_gflops_1t"] = round(med([f["peak_fp32_gflops_1t"] for f in pk]), 1)
        res["peak_thread_scale_rounds"] = [f["peak_thread_scale"] for f in pk]
        res["moco_fp32_peak_share"] = round(med([f["peak_fp32_share"] for f in pk]), 4)
    if skipped:
        res["skipped"] = skipped
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
