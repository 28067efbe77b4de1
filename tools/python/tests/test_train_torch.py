"""Tests of tools/python/train_moco_torch.py's failure paths against a fake
loader (fake_loader.py), each a few seconds on the CPU with a tiny model:
a non-finite loss trains nothing and leaves the last good checkpoint, and
so do non-finite weights after a finite loss (not saved at the epoch's end); a
checkpoint that does not load, or is not one, is refused with a clear error
and nothing is written; a second SIGINT while the first one's checkpoint is
saved stops at once (exit 130, no .tmp, the last checkpoint stands).
Skipped without torch.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from fake_loader import FakeLoader

try:
    import torch
except ImportError:
    torch = None

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(HERE, "..", "train_moco_torch.py")
# 32 pairs of 4x4x3, batch 8: 4 steps an epoch; with --wd 1e4 the loss of step 5 is NaN
MODEL = ["-a", "resnet18-cifar", "--width", "4", "-b", "8", "--moco-k", "16", "--lr", "0.1", "--momentum", "0",
         "--epochs", "2", "--seed", "1", "--threads", "1", "--timeout", "10", "--insecure"]


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@unittest.skipIf(torch is None, "python3-torch absent")
class TestTrain(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.out = os.path.join(self.dir, "out")
        self.ckpt = os.path.join(self.out, "checkpoint_last.pt")
        self.loaders = []

    def tearDown(self):
        for f in self.loaders:
            f.close()
        shutil.rmtree(self.dir)

    def train(self, *extra, prelude=None):
        f = FakeLoader(count=32, epochs=2, per_msg=8, resend_after=100.0)
        f.start()
        self.loaders.append(f)
        argv = ["--stream", f.endpoint] + MODEL + ["--out", self.out] + list(extra)
        if prelude is None:
            cmd = [sys.executable, TRAIN] + argv
        else:  # prelude runs in the script's process before main()
            cmd = [sys.executable, "-c", "import sys; sys.path.insert(0, %r); import train_moco_torch as t\n%s\n"
                   "sys.argv[0] = t.__file__; sys.exit(t.main(sys.argv[1:]))" % (os.path.dirname(TRAIN), prelude)]
            cmd += argv
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return r.returncode, r.stderr

    def test_nan_loss_keeps_last_checkpoint(self):
        rc, err = self.train("--wd", "1e4")
        self.assertEqual(rc, 1, err)
        self.assertIn("the loss is nan at step 5 (epoch 1): not trained on; %s (step 4) stands" % self.ckpt, err)
        ck = torch.load(self.ckpt, map_location="cpu")
        self.assertEqual((ck["epoch"], ck["step"]), (1, 4))
        self.assertEqual(ck["stream"], {"version": 1, "epoch": 0, "count": 32, "delivered": b"\xff" * 4})
        bad = [k for k, v in ck["state_dict"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
        self.assertEqual(bad, [])
        self.assertEqual(sorted(os.listdir(self.out)), ["checkpoint_0001.pt", "checkpoint_last.pt", "metrics.jsonl"])

        # 2. that checkpoint less one tensor: refused before anything is trained or saved
        ck["state_dict"].pop("encoder_k.fc.bias")
        torch.save(ck, self.ckpt)
        before = sha(self.ckpt)
        rc, err = self.train("--wd", "1e4", "--resume", self.ckpt)
        self.assertEqual(rc, 1, err)
        self.assertIn("train_moco_torch: --resume %s: the checkpoint does not match this model (resnet18-cifar, "
                      "width 4, moco-dim 128, moco-k 16): Error(s) in loading state_dict for MoCo: Missing key(s) in "
                      "state_dict: \"encoder_k.fc.bias\".; nothing saved, %s unchanged" % (self.ckpt, self.ckpt), err)
        self.assertNotIn("to continue", err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(sha(self.ckpt), before)

    def test_not_a_checkpoint(self):
        os.makedirs(self.out)
        for obj, what in ((torch.zeros(3), "a Tensor, not a dict"),
                          ({"state_dict": {}, "optimizer": {}, "epoch": "1", "step": 0, "stream": None},
                           "'epoch' is a str")):
            torch.save(obj, self.ckpt)
            before = sha(self.ckpt)
            r = subprocess.run([sys.executable, TRAIN, "--stream", "ipc://%s/none" % self.dir] + MODEL
                               + ["--out", self.out, "--resume", self.ckpt], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertEqual(r.stderr.strip(), "train_moco_torch: %s is not a checkpoint of this script (%s)"
                             % (self.ckpt, what))
            self.assertEqual(sha(self.ckpt), before)

    def test_second_sigint_while_saving(self):
        # torch.save, 1st call (the end of epoch 0): a SIGINT after it (while computing: stop after the step);
        # 2nd call (that SIGINT's checkpoint): a partial .tmp, then a second SIGINT
        prelude = "\n".join([
            "import os, signal, time, torch",
            "real, n = torch.save, [0]",
            "def save(obj, f):",
            "    n[0] += 1",
            "    if n[0] == 2:",
            "        open(f, 'wb').write(b'partial')",
            "        os.kill(os.getpid(), signal.SIGINT)",
            "        time.sleep(5)",
            "    real(obj, f)",
            "    if n[0] == 1:",
            "        os.kill(os.getpid(), signal.SIGINT)",
            "torch.save = save"])
        rc, err = self.train("--save-freq", "0", prelude=prelude)
        self.assertEqual(rc, 130, err)
        self.assertNotIn("Traceback", err)
        self.assertIn("SIGINT again: stopped without saving; %s (step 4 or before) stands" % self.ckpt, err)
        self.assertEqual(sorted(os.listdir(self.out)), ["checkpoint_last.pt", "metrics.jsonl"])
        ck = torch.load(self.ckpt, map_location="cpu")
        self.assertEqual((ck["epoch"], ck["step"]), (1, 4))


    def test_nonfinite_weights_not_saved(self):
        # a finite loss, then an inf in a query weight at the last step of epoch 1 (step 8, the optimizer's
        # 8th step; no forward after it): the end of epoch 1 does not save it, the checkpoint of step 4 stands
        prelude = "\n".join([
            "import torch",
            "real, n = torch.optim.SGD.step, [0]",
            "def step(self, *args, **kw):",
            "    r = real(self, *args, **kw)",
            "    n[0] += 1",
            "    if n[0] == 8:",
            "        with torch.no_grad():",
            "            self.param_groups[0]['params'][0].view(-1)[0] = float('inf')",
            "    return r",
            "torch.optim.SGD.step = step"])
        rc, err = self.train(prelude=prelude)
        self.assertEqual(rc, 1, err)
        self.assertNotIn("Traceback", err)
        self.assertIn("epoch 1 done: 4 steps", err)  # the loss stayed finite: it is the weights' check that refused
        self.assertIn("train_moco_torch: encoder_q.conv1.weight has non-finite values at step 8: not saved; "
                      "%s (step 4) stands" % self.ckpt, err)
        self.assertEqual(sorted(os.listdir(self.out)), ["checkpoint_0001.pt", "checkpoint_last.pt", "metrics.jsonl"])
        ck = torch.load(self.ckpt, map_location="cpu")
        self.assertEqual((ck["epoch"], ck["step"]), (1, 4))
        ep0 = torch.load(os.path.join(self.out, "checkpoint_0001.pt"), map_location="cpu")["state_dict"]
        self.assertEqual(sorted(ck["state_dict"]), sorted(ep0))  # the weights of epoch 0's end, both
        for k, v in ep0.items():
            self.assertTrue(torch.equal(ck["state_dict"][k], v), k)
        bad = [k for k, v in ck["state_dict"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
        self.assertEqual(bad, [])

if __name__ == "__main__":
    unittest.main()
