#!/usr/bin/python3
"""gen_bf16_golden.py: write what PyTorch's bf16 autocast gives for a few
convolutions and a linear layer, forward and backward, for tests/test_bf16.c
to compare `--precision bf16` with (tests/golden/trainer/bf16_conv.safetensors).

    /usr/bin/python3 tools/gen_bf16_golden.py [OUTDIR]

Debian's python3-torch (1.13), CPU. Each layer runs under
torch.cpu.amp.autocast(dtype=torch.bfloat16), the one line a PyTorch user
adds: the fp32 input and weights are rounded to bf16 (round to nearest
even), the product accumulates in fp32 inside oneDNN, and the output is
bf16; backward is fed an upstream gradient that is exactly representable
in bf16 (as autocast's own backward would be), and the gradients come back
to the fp32 leaves through the casts. Everything is stored as float32, NCHW
as PyTorch keeps it:
  conv<i>.dims   int64 [N, Ci, H, W, Co, k, stride, pad]
  conv<i>.x .w .dy       fp32 input and weights, the bf16-exact gradient
  conv<i>.y .dx .dw      PyTorch's results (bf16 values)
  lin.dims       int64 [N, F, O];  lin.x .w .b .dy, lin.y .dx .dw .db
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_trainer_golden import save_st  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "trainer")
CONVS = [  # N, Ci, H, W, Co, k, stride, pad
    (2, 16, 8, 8, 32, 3, 1, 1),
    (3, 16, 9, 9, 32, 3, 2, 1),
    (2, 3, 12, 12, 16, 3, 1, 1),
    (4, 32, 6, 6, 64, 1, 2, 0),
]


def main():
    torch.manual_seed(13)
    torch.set_num_threads(2)
    t = {}
    for i, (N, Ci, H, W, Co, k, s, p) in enumerate(CONVS):
        x = (torch.rand(N, Ci, H, W) * 4 - 2).requires_grad_()
        w = (torch.randn(Co, Ci, k, k) * (2.0 / (Ci * k * k)) ** 0.5).requires_grad_()
        with torch.cpu.amp.autocast(dtype=torch.bfloat16):
            y = F.conv2d(x, w, stride=s, padding=p)
        assert y.dtype == torch.bfloat16, y.dtype
        dy = torch.randn(y.shape).to(torch.bfloat16)
        y.backward(dy)
        pre = f"conv{i}."
        t.update({pre + "dims": torch.tensor([N, Ci, H, W, Co, k, s, p], dtype=torch.int64), pre + "x": x.detach(),
                  pre + "w": w.detach(), pre + "dy": dy.float(), pre + "y": y.detach().float(), pre + "dx": x.grad,
                  pre + "dw": w.grad})
    N, Fi, O = 8, 64, 40
    x = (torch.rand(N, Fi) * 2 - 1).requires_grad_()
    w = (torch.randn(O, Fi) * Fi ** -0.5).requires_grad_()
    b = (torch.rand(O) * 0.2 - 0.1).requires_grad_()
    with torch.cpu.amp.autocast(dtype=torch.bfloat16):
        y = F.linear(x, w, b)
    assert y.dtype == torch.bfloat16, y.dtype
    dy = torch.randn(y.shape).to(torch.bfloat16)
    y.backward(dy)
    t.update({"lin.dims": torch.tensor([N, Fi, O], dtype=torch.int64), "lin.x": x.detach(), "lin.w": w.detach(),
              "lin.b": b.detach(), "lin.dy": dy.float(), "lin.y": y.detach().float(), "lin.dx": x.grad, "lin.dw": w.grad,
              "lin.db": b.grad})
    os.makedirs(OUT, exist_ok=True)
    save_st(os.path.join(OUT, "bf16_conv.safetensors"), t)


if __name__ == "__main__":
    main()
