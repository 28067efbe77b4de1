#!/usr/bin/python3
"""train_moco_torch.py: MoCo v1/v2 in PyTorch, fed by the C pipeline's serve mode.

The C tools read the LMDB and augment (`moco run DB --serve ENDPOINT`); this
script only trains, on CUDA when torch finds it, else on the CPU (--device to
force). The flags are the official main_moco.py's; the model, loss, queue and
momentum update follow ../shared/reference/moco_ref.py (split BN for shuffle BN
on one device: --bn-splits).

One host (the stream over a local socket):

    moco run DB --serve ipc:///tmp/moco.sock --recipe cifar --size 32 --epochs 200 &
    /usr/bin/python3 tools/python/train_moco_torch.py --stream ipc:///tmp/moco.sock \\
        -a resnet18-cifar --epochs 200 --moco-k 4096 --moco-m 0.99 --moco-t 0.1 --cos --bn-splits 8 --out runs/cifar

Two hosts (CPU host augments, GPU host trains; the stream is encrypted with the keys):

    # CPU host
    moco keygen keys
    moco run DB --serve tcp://0.0.0.0:5555 --keys keys --workers 8 --recipe v2 --epochs 200
    # GPU host, with a copy of keys/
    python3 tools/python/train_moco_torch.py --stream tcp://CPUHOST:5555 --keys keys \\
        -a resnet50 --mlp --cos --aug-plus --moco-t 0.2 --epochs 200 --bn-splits 8 --out runs/v2

--epochs must equal the loader's --epochs (the lr schedule needs it). Checkpoints
(OUT/checkpoint_last.pt every epoch and at the end, OUT/checkpoint_NNNN.pt per
--save-freq) hold the encoders, queue, optimizer, step and the stream position:
`--resume OUT/checkpoint_last.pt` continues exactly where training stopped (Ctrl-C
saves one and exits 130), against the same `moco run` (it takes the new consumer once the
old one has been silent for its --consumer-timeout, 10 s) or a new one on the same DB with the
same --seed and --epochs. OUT/metrics.jsonl: one JSON object per line ("type":
"step" or "epoch"; an epoch record carries, as `moco train`'s, "knn_top1" (null: no
kNN monitor here), "peak_rss_mb" and "stream": the
consumer's counters since this process started: duplicates, stale, malformed,
rejected_epoch, rejected_index, held, held_dropped, auth_rejected); the last
stdout line is a JSON summary. Exit: 0 done, 1 error, 2 usage, 130 interrupted.
A non-finite loss trains nothing on its batch and ends the run (exit 1); no
checkpoint with non-finite values is ever written: the last good one stands. A
--resume checkpoint that does not load into the model is refused (exit 1) with
nothing written. A second Ctrl-C, while a step computes or the first one's
checkpoint is saved, stops at once (exit 130, no .tmp left).
"""
import argparse
import copy
import json
import math
import os
import resource
import signal
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# what this script needs beyond the standard library, with the Debian packages that give it
NEEDS = {"torch": "python3-torch", "numpy": "python3-numpy", "zmq": "python3-zmq"}


def _missing(e):
    """A module this script needs is not in this interpreter: say which, and how to get it (no traceback)."""
    name = (getattr(e, "name", None) or "?").split(".")[0]
    sys.stderr.write("train_moco_torch.py: this Python (%s) has no module '%s' (%s). Run the script with an interpreter "
                     "that has PyTorch, NumPy and pyzmq, e.g. Debian's /usr/bin/python3 after apt-get install %s "
                     "(a pyenv or venv python3 on PATH may lack them)\n"
                     % (sys.executable, name, e, " ".join(NEEDS.values())))
    sys.exit(1)


try:
    import numpy  # noqa: E402,F401
    import torch  # noqa: E402
    import torch.nn as nn  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
    import zmq  # noqa: E402,F401
except ImportError as _e:
    _missing(_e)

# the recipes' constants (formats/README.md "Normalisation"): moco_stream.torch's, the one Python copy
from moco_stream.torch import MEAN_STD  # noqa: E402
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet18-cifar", "resnet50-cifar")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class UsageError(Exception):
    pass


# ----------------------------------------------------------------------------
# model: ResNet with a base width, split BN (moco_ref.py), MoCo (main_moco.py / moco_ref.py)

class SplitBatchNorm(nn.BatchNorm2d):
    """BN over `splits` sub-batches (moco_ref.py): shuffle BN on one device."""

    def __init__(self, c, splits):
        super().__init__(c)
        self.splits = splits

    def forward(self, x):
        N, C, H, W = x.shape
        if self.training or not self.track_running_stats:
            rm = self.running_mean.repeat(self.splits)
            rv = self.running_var.repeat(self.splits)
            out = F.batch_norm(x.reshape(-1, C * self.splits, H, W), rm, rv, self.weight.repeat(self.splits),
                               self.bias.repeat(self.splits), True, self.momentum, self.eps).view(N, C, H, W)
            self.running_mean.data.copy_(rm.view(self.splits, C).mean(0))
            self.running_var.data.copy_(rv.view(self.splits, C).mean(0))
            return out
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, self.momentum,
                            self.eps)


def make_bn(splits):
    return (lambda c: SplitBatchNorm(c, splits)) if splits > 1 else nn.BatchNorm2d


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(s, cin, planes, stride, bn):
        super().__init__()
        s.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        s.bn1 = bn(planes)
        s.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        s.bn2 = bn(planes)
        s.downsample = None
        if stride != 1 or cin != planes:
            s.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), bn(planes))

    def forward(s, x):
        o = F.relu(s.bn1(s.conv1(x)))
        o = s.bn2(s.conv2(o))
        return F.relu(o + (x if s.downsample is None else s.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4  # torchvision's v1.5: the stride on the 3x3 conv

    def __init__(s, cin, planes, stride, bn):
        super().__init__()
        out = planes * 4
        s.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        s.bn1 = bn(planes)
        s.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        s.bn2 = bn(planes)
        s.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        s.bn3 = bn(out)
        s.downsample = None
        if stride != 1 or cin != out:
            s.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), bn(out))

    def forward(s, x):
        o = F.relu(s.bn1(s.conv1(x)))
        o = F.relu(s.bn2(s.conv2(o)))
        o = s.bn3(s.conv3(o))
        return F.relu(o + (x if s.downsample is None else s.downsample(x)))


class ResNet(nn.Module):
    """torchvision's ResNet with a base width; `cifar`: 3x3 stride-1 conv1, no max-pool (the CIFAR demo)."""

    def __init__(s, arch, width=64, num_classes=128, in_ch=3, bn_splits=1):
        super().__init__()
        base = arch.replace("-cifar", "")
        block, layers = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
                         "resnet50": (Bottleneck, [3, 4, 6, 3])}[base]
        s.cifar = arch.endswith("-cifar")
        bn = make_bn(bn_splits)
        if s.cifar:
            s.conv1 = nn.Conv2d(in_ch, width, 3, 1, 1, bias=False)
        else:
            s.conv1 = nn.Conv2d(in_ch, width, 7, 2, 3, bias=False)
        s.bn1 = bn(width)
        cin = width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1, bn))
                cin = planes * block.expansion
            setattr(s, "layer%d" % (i + 1), nn.Sequential(*blocks))
        s.fc = nn.Linear(cin, num_classes)
        # torchvision's initialisation (what main_moco.py gets): kaiming-normal fan-out, BN 1/0
        for m in s.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if s.cifar:  # the CIFAR demo replaces conv1 after construction: Conv2d's default init
            s.conv1.reset_parameters()

    def forward(s, x):
        x = F.relu(s.bn1(s.conv1(x)))
        if not s.cifar:
            x = F.max_pool2d(x, 3, 2, 1)
        x = s.layer4(s.layer3(s.layer2(s.layer1(x))))
        return s.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class MoCo(nn.Module):
    """Query/key encoders, the queue and its pointer, named as main_moco.py's builder names them."""

    def __init__(s, arch, width, dim=128, K=65536, m=0.999, T=0.07, mlp=False, in_ch=3, bn_splits=1):
        super().__init__()
        s.K, s.m, s.T = K, m, T
        s.encoder_q = ResNet(arch, width, dim, in_ch, bn_splits)
        if mlp:  # MoCo v2's head: fc -> Linear, ReLU, fc
            d = s.encoder_q.fc.weight.shape[1]
            s.encoder_q.fc = nn.Sequential(nn.Linear(d, d), nn.ReLU(), s.encoder_q.fc)
        s.encoder_k = copy.deepcopy(s.encoder_q)
        for p in s.encoder_k.parameters():
            p.requires_grad = False
        s.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))
        s.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        s._pq = [p for p in s.encoder_q.parameters()]
        s._pk = [p for p in s.encoder_k.parameters()]

    @torch.no_grad()
    def momentum_update(s):
        torch._foreach_mul_(s._pk, s.m)
        torch._foreach_add_(s._pk, s._pq, alpha=1 - s.m)

    def forward(s, xq, xk):
        """Returns logits (N x 1+K, positives in column 0) and the normalised keys, for enqueue()."""
        q = F.normalize(s.encoder_q(xq).float(), dim=1)
        with torch.no_grad():
            s.momentum_update()
            perm = torch.randperm(xk.size(0), device=xk.device)  # shuffle BN (split BN sees other sub-batches)
            inv = torch.argsort(perm)
            k = F.normalize(s.encoder_k(xk[perm]).float(), dim=1)[inv]
        l_pos = (q * k).sum(1, keepdim=True)
        l_neg = q @ s.queue  # the queue only changes after the backward pass (enqueue)
        return torch.cat([l_pos, l_neg], 1) / s.T, k

    @torch.no_grad()
    def enqueue(s, k):
        n = k.size(0)
        ptr = int(s.queue_ptr)
        assert s.K % n == 0
        s.queue[:, ptr:ptr + n] = k.t()
        s.queue_ptr[0] = (ptr + n) % s.K


# ----------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="train_moco_torch.py",
        description="MoCo v1/v2 training in PyTorch from `moco run DB --serve ENDPOINT` "
                    "(flags as in the official main_moco.py).",
        epilog=__doc__[__doc__.index("One host"):],
        formatter_class=type("Fmt", (argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter),
                             {}))
    p.add_argument("--stream", metavar="ENDPOINT", help="the loader's serve endpoint (ipc://PATH, tcp://HOST:PORT)")
    p.add_argument("--keys", metavar="DIR", help="the key directory of `moco keygen` (a copy of the server's)")
    p.add_argument("--insecure", action="store_true", help="allow tcp:// to another host without --keys")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds of silence from the loader that end the run")
    p.add_argument("--prefetch", type=int, default=16, help="batches the stream reader may hold")
    p.add_argument("-a", "--arch", default="resnet50", choices=ARCHS)
    p.add_argument("--width", type=int, default=64, help="base width of the ResNet")
    p.add_argument("--epochs", type=int, default=200, help="epochs (must equal the loader's --epochs)")
    p.add_argument("-b", "--batch-size", type=int, default=256)
    p.add_argument("--lr", "--learning-rate", type=float, default=0.03, dest="lr")
    p.add_argument("--schedule", default=["120", "160"], nargs="*",
                   help="epochs at which lr drops by 10x (ignored with --cos): 120 160 or 120,160")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--wd", "--weight-decay", type=float, default=1e-4, dest="weight_decay")
    p.add_argument("--cos", action="store_true", help="cosine lr schedule (per epoch)")
    p.add_argument("--moco-dim", type=int, default=128)
    p.add_argument("--moco-k", type=int, default=65536, help="queue size (a multiple of the batch size)")
    p.add_argument("--moco-m", type=float, default=0.999)
    p.add_argument("--moco-t", type=float, default=0.07)
    p.add_argument("--mlp", action="store_true", help="MoCo v2's MLP head")
    p.add_argument("--aug-plus", action="store_true",
                   help="MoCo v2's augmentation: done by the C workers (moco run --recipe v2); only checked here")
    p.add_argument("--recipe", choices=("cifar", "v1", "v2"), default=None,
                   help="the workers' recipe, for the mean/std (default: cifar for views <= 64 px, else v2/v1)")
    p.add_argument("--bn-splits", type=int, default=1, help="split BN over this many sub-batches (shuffle BN)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("-p", "--print-freq", type=int, default=10, help="a step record every this many steps")
    p.add_argument("--resume", metavar="PATH", default="", help="a checkpoint of this script")
    p.add_argument("--out", metavar="DIR", default="runs/moco-torch", help="checkpoints and metrics.jsonl")
    p.add_argument("--save-freq", type=int, default=1, help="keep checkpoint_NNNN.pt every this many epochs (0: never)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--gpu", type=int, default=None, help="as in main_moco.py: --device cuda:GPU")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU or CUDA)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps in all (tests)")
    a = p.parse_args(argv)
    if not a.stream:
        p.error("--stream ENDPOINT is required (the endpoint of `moco run DB --serve ENDPOINT`)")
    try:
        a.schedule = [int(x) for s in a.schedule for x in str(s).split(",") if x.strip()]
    except ValueError:
        p.error("--schedule takes epochs: 120,160 or 120 160")
    for name, v, lo in (("--epochs", a.epochs, 1), ("--batch-size", a.batch_size, 1), ("--width", a.width, 1),
                        ("--moco-k", a.moco_k, 1), ("--moco-dim", a.moco_dim, 1), ("--bn-splits", a.bn_splits, 1),
                        ("--print-freq", a.print_freq, 1)):
        if v < lo:
            p.error("%s must be >= %d" % (name, lo))
    if a.moco_k % a.batch_size != 0:  # main_moco.py: assert self.K % batch_size == 0
        p.error("--moco-k %d must be a multiple of --batch-size %d (the queue takes whole batches)"
                % (a.moco_k, a.batch_size))
    if a.batch_size % a.bn_splits != 0:
        p.error("--batch-size %d must be a multiple of --bn-splits %d" % (a.batch_size, a.bn_splits))
    if not 0 <= a.moco_m < 1 or a.moco_t <= 0:
        p.error("--moco-m must be in [0, 1) and --moco-t > 0")
    if a.gpu is not None:
        a.device = "cuda:%d" % a.gpu
    return a


def adjust_learning_rate(optimizer, epoch, a):
    """main_moco.py's: cosine or step decay, once per epoch."""
    lr = a.lr
    if a.cos:
        lr *= 0.5 * (1.0 + math.cos(math.pi * epoch / a.epochs))
    else:
        for milestone in a.schedule:
            lr *= 0.1 if epoch >= milestone else 1.0
    for g in optimizer.param_groups:
        g["lr"] = lr
    return lr


def atomic_save(obj, path):
    """path is the old file or the whole new one; no PATH.tmp is left, also when interrupted."""
    tmp = path + ".tmp"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class NonFinite(Exception):
    """The model has non-finite values: it is not saved over the last checkpoint."""


class ResumeMismatch(Exception):
    """--resume names a checkpoint whose weights or optimizer do not load into this model."""


class HardStop(BaseException):
    """A second SIGINT/SIGTERM while a step computes or the first one's checkpoint is saved: stop now,
    saving nothing (no .tmp left); the last checkpoint stands."""


class Interrupt:
    """SIGINT/SIGTERM: raise at once while waiting for data; while computing, after the step.
    A second signal while computing stops at once without a checkpoint: a step cut short
    between opt.step() and the stream position after it would be saved as not trained, and a
    resume would train its batch twice; the last checkpoint stands instead."""

    def __init__(self):
        self.signum = 0
        self.waiting = False
        self.stopping = False
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self.handler)

    def handler(self, signum, frame):
        if self.stopping:  # HardStop raised: its handler runs
            return
        first = not self.signum
        self.signum = signum
        if self.waiting and first:
            raise KeyboardInterrupt
        if not first:  # while computing, or saving the checkpoint of the first signal
            self.stopping = True
            raise HardStop


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return train(a)
    except UsageError as e:
        log("train_moco_torch: %s" % e)
        return 2


def train(a):
    import numpy as np
    import moco_stream
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

    if a.device:
        dev = torch.device(a.device)
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device %s: torch finds no CUDA device" % a.device)
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.seed is not None:
        torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    ckpt_path = os.path.join(a.out, "checkpoint_last.pt")
    metrics_path = os.path.join(a.out, "metrics.jsonl")

    if a.aug_plus and a.recipe in ("v1", "cifar"):
        log("train_moco_torch: warning: --aug-plus is MoCo v2's augmentation, but --recipe %s" % a.recipe)

    ck = None
    if a.resume:
        if not os.path.isfile(a.resume):
            raise UsageError("--resume %s: no such file" % a.resume)
        try:
            ck = torch.load(a.resume, map_location="cpu")
        except Exception as e:
            log("train_moco_torch: %s is not a readable checkpoint: %s" % (a.resume, e))
            return 1
        if not isinstance(ck, dict):
            log("train_moco_torch: %s is not a checkpoint of this script (a %s, not a dict)"
                % (a.resume, type(ck).__name__))
            return 1
        for key, types in (("state_dict", dict), ("optimizer", dict), ("epoch", int), ("step", int),
                           ("stream", (dict, type(None))), ("args", dict), ("progress", (dict, type(None)))):
            if key not in ck:
                if key in ("args", "progress"):
                    continue
                log("train_moco_torch: %s is not a checkpoint of this script (no %r)" % (a.resume, key))
                return 1
            if not isinstance(ck[key], types) or isinstance(ck[key], bool):
                log("train_moco_torch: %s is not a checkpoint of this script (%r is a %s)"
                    % (a.resume, key, type(ck[key]).__name__))
                return 1
        old = ck.get("args", {})
        for key in ("arch", "width", "moco_dim", "moco_k", "mlp", "batch_size", "epochs", "moco_m", "moco_t", "lr", "cos",
                    "schedule", "weight_decay", "momentum"):
            if key in old and old[key] != getattr(a, key):
                raise UsageError("--resume %s was trained with --%s %s, not %s" % (
                    a.resume, key.replace("_", "-"), old[key], getattr(a, key)))
        if ck["epoch"] >= a.epochs and not ck.get("progress"):
            log("%s ends the run (epoch %d of %d): nothing to train" % (a.resume, ck["epoch"], a.epochs))
            print(json.dumps({"ok": True, "epochs": ck["epoch"], "steps": ck["step"], "trained_steps": 0,
                              "checkpoint": a.resume}), flush=True)
            return 0
        log("resuming from %s: epoch %d, step %d" % (a.resume, ck["epoch"], ck["step"]))

    # metrics.jsonl: fresh, or on resume what the checkpoint covers (nothing after it twice)
    keep = []
    if ck is not None and os.path.exists(metrics_path):
        done_epochs = ck["progress"]["epoch"] if ck.get("progress") else ck["epoch"]
        with open(metrics_path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if r.get("step", 0) <= ck["step"] and (r.get("type") != "epoch" or r.get("epoch", 0) < done_epochs):
                    keep.append(line if line.endswith("\n") else line + "\n")
    if ck is None and os.path.exists(ckpt_path):
        log("train_moco_torch: warning: %s exists and will be overwritten (--resume it to continue that run)"
            % ckpt_path)
    with open(metrics_path, "w") as f:
        f.writelines(keep)
    mf = open(metrics_path, "a")

    def record(r):
        mf.write(json.dumps(r, separators=(",", ":")) + "\n")
        mf.flush()

    try:
        stream = moco_stream.PairStream(a.stream, keys=a.keys, resume=ck["stream"] if ck else None,
                                        batch_size=a.batch_size, prefetch=a.prefetch, timeout=a.timeout,
                                        insecure=a.insecure)
    except ValueError as e:  # a tcp:// endpoint without --keys, a bad resume state, ...
        raise UsageError("--stream %s: %s%s" % (a.stream, e, " (--keys DIR, or --insecure)" if "keys" in str(e) else ""))
    except Exception as e:
        log("train_moco_torch: --stream %s: %s" % (a.stream, e))
        return 1

    def check_epochs():
        n = getattr(stream, "epochs", None)
        if n and n != a.epochs:
            raise UsageError("--epochs %d, but the loader streams %d epochs: pass --epochs %d (the lr schedule "
                             "needs the true count)" % (a.epochs, n, n))

    try:
        ww = getattr(stream, "wait_welcome", None)
        if ww is not None:  # the loader's count and epochs, before anything is built
            ww()
    except Exception as e:
        log("train_moco_torch: %s" % e)
        close(stream)
        return 1
    check_epochs()
    intr = Interrupt()
    model = opt = None
    scale = shift = None
    B = a.batch_size
    step = ck["step"] if ck else 0
    trained_steps = 0
    saved_state = ck["stream"] if ck else None  # the stream position after the last trained (or dropped) batch
    next_epoch = ck["epoch"] if ck else 0
    prog = None  # the epoch in progress: sums for its record
    if ck and ck.get("progress"):
        prog = dict(ck["progress"])
    cur = None
    lr = a.lr
    last_loss = float("nan")
    win = {"t": time.time(), "pairs": 0, "wait": 0.0, "loss": 0.0, "acc": 0.0, "n": 0}
    t_run = time.time()
    pairs_total = 0
    done = False
    nonfinite = False  # a non-finite loss ended the run: nothing saved after it
    saved_step = ck["step"] if ck else None  # the step of checkpoint_last.pt as this run knows it
    exit_code = 0
    complete = False
    if a.bf16:
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda"
                    else torch.cpu.amp.autocast(dtype=torch.bfloat16))
    else:
        autocast = None

    def build(in_ch, hw):
        nonlocal model, opt, scale, shift
        recipe = a.recipe or ("cifar" if max(hw) <= 64 else ("v2" if a.aug_plus else "v1"))
        mean, std = MEAN_STD[recipe]
        if a.aug_plus:
            log("augmentation: done by the C workers; --aug-plus expects `moco run ... --recipe v2` (crop 0.2-1, "
                "jitter 0.4/0.4/0.4/0.1 p=0.8, grayscale p=0.2, blur p=0.5, flip)")
        else:
            log("augmentation: done by the C workers (`moco run ... --recipe %s`)" % recipe)
        mean, std = torch.tensor(mean[:in_ch]), torch.tensor(std[:in_ch])
        if in_ch == 1:
            mean, std = mean[:1], std[:1]
        # (x / 255 - mean) / std = x * scale + shift, per channel
        scale = (1.0 / (255.0 * std)).view(1, in_ch, 1, 1).to(dev)
        shift = (-mean / std).view(1, in_ch, 1, 1).to(dev)
        # built and loaded in locals: a checkpoint that does not load leaves model None (nothing is saved)
        m = MoCo(a.arch, a.width, a.moco_dim, a.moco_k, a.moco_m, a.moco_t, a.mlp, in_ch, a.bn_splits).to(dev)
        o = torch.optim.SGD(m.encoder_q.parameters(), a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
        if ck is not None:
            if ck.get("in_channels", in_ch) != in_ch:
                raise UsageError("the checkpoint's encoder takes %d channels, the stream has %d"
                                 % (ck["in_channels"], in_ch))
            try:
                m.load_state_dict(ck["state_dict"])
                o.load_state_dict(ck["optimizer"])
                rng = ck.get("rng") or {}
                if "cpu" in rng:
                    torch.set_rng_state(rng["cpu"])
                if dev.type == "cuda" and rng.get("cuda") is not None:
                    torch.cuda.set_rng_state(rng["cuda"], dev)
            except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
                raise ResumeMismatch("--resume %s: the checkpoint does not match this model (%s, width %d, "
                                     "moco-dim %d, moco-k %d%s): %s; nothing saved, %s unchanged"
                                     % (a.resume, a.arch, a.width, a.moco_dim, a.moco_k, ", mlp" if a.mlp else "",
                                        " ".join(str(e).split()), a.resume))
        model, opt = m, o
        nparams = sum(p.numel() for p in model.encoder_q.parameters())
        log("model: MoCo %s width %d (%.2fM params), %d-channel %dx%d views, recipe %s mean/std, K=%d m=%g T=%g%s, "
            "bn-splits %d, device %s%s" % (a.arch, a.width, nparams / 1e6, in_ch, hw[0], hw[1], recipe, a.moco_k,
                                           a.moco_m, a.moco_t, ", mlp" if a.mlp else "", a.bn_splits, dev,
                                           ", bf16" if a.bf16 else ""))

    def to_input(x):
        t = torch.from_numpy(np.ascontiguousarray(x))  # N x H x W x C uint8
        if t.dim() == 3:
            t = t.unsqueeze(-1)
        t = t.to(dev, non_blocking=True)  # uint8 over the bus: 4x less than float
        return (t.permute(0, 3, 1, 2).float() * scale + shift).contiguous()

    def checkpoint(path_extra=None, final=False):
        """Save; a model or optimizer with a non-finite value is not saved (the last checkpoint stands):
        raises NonFinite."""
        nonlocal saved_step
        sd = model.state_dict()
        bad = next((k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
        if bad is None:
            for st in opt.state.values():
                for k, v in st.items():
                    if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                        bad = "the optimizer's " + k
        if bad is not None:
            raise NonFinite("%s has non-finite values at step %d: not saved; %s" % (
                bad, step, ("%s (step %d) stands" % (ckpt_path, saved_step)) if saved_step is not None
                else "no checkpoint saved"))
        ck_out = {
            "state_dict": sd, "optimizer": opt.state_dict(), "epoch": next_epoch, "step": step,
            "args": vars(a), "stream": saved_state, "progress": dict(prog) if prog and prog["steps"] + prog[
                "dropped"] > 0 else None,
            "in_channels": int(scale.shape[1]), "arch": a.arch, "complete": final,
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None},
        }
        atomic_save(ck_out, ckpt_path)
        saved_step = step
        if path_extra:
            atomic_save(ck_out, path_extra)

    def start_epoch(e):
        nonlocal prog, lr
        lr = adjust_learning_rate(opt, e, a)
        if not (prog and prog["epoch"] == e):
            prog = {"epoch": e, "steps": 0, "loss": 0.0, "acc": 0.0, "pairs": 0, "dropped": 0, "seconds": 0.0,
                    "wait": 0.0}
        prog["t0"] = time.time() - prog["seconds"]

    def end_epoch(e):
        nonlocal prog, next_epoch
        secs = time.time() - prog["t0"]
        failed = None
        for ee in getattr(stream, "epoch_ends", []) or []:
            if ee[0] == e:
                failed = ee[2] if isinstance(ee[2], int) else len(ee[2])
        n = max(prog["steps"], 1)
        r = {"type": "epoch", "epoch": e, "step": step, "loss": round(prog["loss"] / n, 6),
             "acc": round(prog["acc"] / n, 3), "lr": lr, "pairs": prog["pairs"], "dropped": prog["dropped"],
             "failed": failed, "seconds": round(secs, 2), "pairs_per_s": round(prog["pairs"] / max(secs, 1e-9), 2),
             "starved_pct": round(100.0 * prog["wait"] / max(secs, 1e-9), 1),
             "knn_top1": None,  # no kNN monitor here: null, as `moco train` writes when it does not evaluate
             "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),  # KiB on Linux
             "stream": stream_counters(stream)}
        record(r)
        log("epoch %d done: %d steps, loss %.4f, acc %.2f%%, %.1f pairs/s, %.1f s"
            % (e, prog["steps"], r["loss"], r["acc"], r["pairs_per_s"], secs))
        next_epoch = e + 1
        prog = None
        extra = None
        if a.save_freq > 0 and next_epoch % a.save_freq == 0:
            extra = os.path.join(a.out, "checkpoint_%04d.pt" % next_epoch)
        checkpoint(extra, final=next_epoch >= a.epochs)

    it = iter(stream)
    try:  # a second signal anywhere below, saving included: stop at once (HardStop)
        try:
            while True:
                t0 = time.time()
                intr.waiting = True
                try:
                    if intr.signum:
                        raise KeyboardInterrupt
                    b = next(it)
                except StopIteration:
                    break
                finally:
                    intr.waiting = False
                wait = time.time() - t0
                e = int(b.epoch)
                if model is None:
                    check_epochs()
                    xs = np.asarray(b.xq)
                    build(xs.shape[3] if xs.ndim == 4 else 1, xs.shape[1:3])
                if e != cur:
                    if cur is not None:
                        end_epoch(cur)
                    if e >= a.epochs:
                        raise UsageError("the stream delivers epoch %d, past --epochs %d" % (e, a.epochs))
                    if e < next_epoch:
                        log("train_moco_torch: warning: the stream delivers epoch %d, but epoch %d is done"
                            % (e, next_epoch - 1))
                    cur = e
                    start_epoch(e)
                prog["wait"] += wait
                win["wait"] += wait
                n = len(b.indices)
                if n < B:  # drop_last, as main_moco.py's loader: the queue takes whole batches
                    prog["dropped"] += n
                    saved_state = stream.state()
                    continue
                xq, xk = to_input(b.xq), to_input(b.xk)
                if autocast is not None:
                    with autocast:
                        logits, k = model(xq, xk)
                else:
                    logits, k = model(xq, xk)
                labels = torch.zeros(logits.size(0), dtype=torch.long, device=dev)
                loss = F.cross_entropy(logits, labels)
                lv = float(loss.item())
                if not math.isfinite(lv):  # before the step: no NaN weights, no stream position past this batch
                    log("train_moco_torch: the loss is %s at step %d (epoch %d): not trained on; %s" % (
                        lv, step + 1, e, ("%s (step %d) stands" % (ckpt_path, saved_step)) if saved_step is not None
                        else "no checkpoint saved"))
                    exit_code = 1
                    nonfinite = True
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                model.enqueue(k)
                saved_state = stream.state()
                step += 1
                trained_steps += 1
                acc = float((logits.argmax(1) == 0).float().mean().item()) * 100.0
                last_loss = lv
                prog["steps"] += 1
                prog["loss"] += lv
                prog["acc"] += acc
                prog["pairs"] += n
                pairs_total += n
                win["pairs"] += n
                win["loss"] += lv
                win["acc"] += acc
                win["n"] += 1
                prog["seconds"] = time.time() - prog["t0"]
                if step % a.print_freq == 0:
                    now = time.time()
                    dt = max(now - win["t"], 1e-9)
                    r = {"type": "step", "epoch": e, "step": step, "loss": round(win["loss"] / win["n"], 6),
                         "acc": round(win["acc"] / win["n"], 3), "lr": lr, "pairs_per_s": round(win["pairs"] / dt, 2),
                         "starved_pct": round(100.0 * win["wait"] / dt, 1)}
                    record(r)
                    log("epoch %d step %d: loss %.4f acc %.2f%% lr %.5g %.1f pairs/s (waiting %.0f%%)"
                        % (e, step, r["loss"], r["acc"], lr, r["pairs_per_s"], r["starved_pct"]))
                    win = {"t": now, "pairs": 0, "wait": 0.0, "loss": 0.0, "acc": 0.0, "n": 0}
                if a.max_steps and trained_steps >= a.max_steps:
                    log("--max-steps %d reached" % a.max_steps)
                    done = True
                    break
                if intr.signum:
                    raise KeyboardInterrupt
            else:
                pass
            if not done and exit_code == 0:
                if model is None:
                    log("train_moco_torch: the stream ended before delivering a batch")
                    exit_code = 1
                else:
                    saved_state = stream.state()
                    if cur is not None and prog is not None:
                        end_epoch(cur)
                    if next_epoch < a.epochs:
                        log("train_moco_torch: the stream ended after epoch %d of %d" % (next_epoch, a.epochs))
                        exit_code = 1
                    else:
                        complete = True
            elif model is not None and not nonfinite:
                if prog is not None:
                    prog["seconds"] = time.time() - prog["t0"]
                checkpoint()
        except (NonFinite, ResumeMismatch) as e:
            log("train_moco_torch: %s" % e)
            close(stream)
            return 1
        except KeyboardInterrupt:
            signame = signal.Signals(intr.signum or signal.SIGINT).name
            if model is not None:
                if prog is not None:
                    prog["seconds"] = time.time() - prog["t0"]
                try:
                    checkpoint()
                    log("%s: saved %s at step %d (epoch %d); to continue (with the same `moco run` still serving, "
                        "or a new one), run:\n  %s" % (signame, ckpt_path, step, cur if cur is not None else next_epoch,
                                                       resume_command(ckpt_path)))
                except NonFinite as e:
                    log("train_moco_torch: %s: %s" % (signame, e))
            else:
                log("%s before the first batch: nothing saved" % signame)
            close(stream)
            return 130
        except UsageError:
            close(stream)
            raise
        except Exception as e:  # the stream failed (timeout, refused, ...): keep what was trained
            log("train_moco_torch: %s: %s" % (type(e).__name__, e))
            if model is not None:
                try:
                    checkpoint()
                    log("saved %s at step %d; to continue:\n  %s" % (ckpt_path, step, resume_command(ckpt_path)))
                except NonFinite as e2:
                    log("train_moco_torch: %s" % e2)
            close(stream)
            return 1
    except HardStop:
        log("%s again: stopped without saving; %s (step %d or before) stands"
            % (signal.Signals(intr.signum).name, ckpt_path, saved_step if saved_step is not None else step))
        close(stream)
        return 130
    secs = time.time() - t_run
    summary = {"ok": exit_code == 0, "complete": complete, "epochs": next_epoch, "steps": step,
               "trained_steps": trained_steps, "pairs": pairs_total, "loss": last_loss,
               "pairs_per_s": round(pairs_total / max(secs, 1e-9), 2), "seconds": round(secs, 2),
               "device": str(dev), "count": getattr(stream, "count", None),
               "checkpoint": ckpt_path if model is not None else None, "metrics": metrics_path}
    try:
        summary["stream"] = dict(getattr(stream, "stats", {}) or {})
    except Exception:
        pass
    close(stream)
    mf.close()
    print(json.dumps(summary, default=str), flush=True)
    return exit_code


# the keys of the "stream" object of an epoch record: those of `moco train`'s
# (trainer/stream.h, stream_stats_json; formats/README.md, metrics.jsonl)
# the keys of moco train's "stream" object (formats/README.md); rejected_shape and rejected_label
# stay 0 here: PairStream takes whatever size comes, and torch refuses a batch of another size
STREAM_KEYS = ("duplicates", "stale", "malformed", "rejected_epoch", "rejected_index", "held", "held_dropped",
               "auth_rejected", "rejected_shape", "rejected_label")


def stream_counters(stream):
    """The stream's counters (PairStream.stats) under STREAM_KEYS, as integers."""
    st = dict(getattr(stream, "stats", None) or {})
    return {k: int(st.get(k, 0)) for k in STREAM_KEYS}


def resume_command(path):
    """This command line with --resume PATH (any earlier --resume and --max-steps left out)."""
    import shlex
    argv, out, skip = sys.argv[1:], [], False
    for x in argv:
        if skip:
            skip = False
            continue
        if x in ("--resume", "--max-steps"):
            skip = True
            continue
        if x.startswith("--resume=") or x.startswith("--max-steps="):
            continue
        out.append(x)
    return " ".join(shlex.quote(x) for x in [sys.executable, sys.argv[0]] + out + ["--resume", path])


def close(stream):
    c = getattr(stream, "close", None)
    if c:
        try:
            c()
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(main())
