"""moco_stream's copies of the contract constants against their one home,
formats/wire.h and formats/pipeline.h: the message types, the magic, the
version, the WELCOME flags, the limits and the timing; and
moco_stream.torch.MEAN_STD, the normalisation constants, against
formats/normalize.h, decimal literal for decimal literal, and so the copies in
the Python tools (NORM_COPIES: tools/quality's PyTorch references, the golden
generator, the torchvision benchmark). The headers are
parsed (#define NAME value and the moco_msg_type enum; the MOCO_NORM_*
initialisers), so a constant that changes on one side fails here instead of
drifting silently. Run:
    PYTHONPATH=tools/python /usr/bin/python3 -m unittest discover -s tools/python/tests
"""
import inspect
import os
import re
import unittest
from decimal import Decimal

import moco_stream

FORMATS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "formats")


def parse_header(path, known):
    """Add the header's #defines (evaluated) and enum members to known."""
    text = open(path).read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    for m in re.finditer(r"^\s*(MOCO_MSG_[A-Z_]+)\s*=\s*(\d+)", text, flags=re.M):
        known[m.group(1)] = int(m.group(2))
    for m in re.finditer(r"^#define\s+(MOCO_[A-Z0-9_]+)\s+(.+?)\s*$", text, flags=re.M):
        name, expr = m.group(1), m.group(2)
        if expr.startswith('"'):
            known[name] = expr.strip('"').encode()
            continue
        expr = re.sub(r"\((?:size_t|uint64_t|uint32_t|int64_t)\)", "", expr)
        expr = re.sub(r"\b(\d+)[uU][lL]*\b", r"\1", expr)
        try:
            known[name] = eval(expr, {}, dict(known))  # only the headers' own arithmetic
        except (NameError, SyntaxError):
            pass  # a macro with arguments or a name from elsewhere: not compared
    return known


def norm_constants():
    """formats/normalize.h's MOCO_NORM_<NAME>_MEAN / _STD: {name: (mean, std)}, each a tuple of
    the decimal literals as written (Decimal, the float suffix dropped)."""
    with open(os.path.join(FORMATS, "normalize.h")) as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    got = {}
    for m in re.finditer(r"^#define\s+MOCO_NORM_([A-Z]+)_(MEAN|STD)\s+\{([^}]*)\}\s*$", text, flags=re.M):
        lits = [x.strip() for x in m.group(3).split(",")]
        for x in lits:
            if not re.fullmatch(r"\d+\.\d+[fF]?", x):
                raise ValueError("formats/normalize.h MOCO_NORM_%s_%s: %r is no decimal literal" % (m.group(1), m.group(2), x))
        got.setdefault(m.group(1).lower(), {})[m.group(2)] = tuple(Decimal(x.rstrip("fF")) for x in lits)
    return {k: (v.get("MEAN"), v.get("STD")) for k, v in got.items()}


# formats/README.md "Normalisation": the recipes' names map onto the checkpoint's
RECIPE_NORM = {"cifar": "cifar", "v1": "imagenet", "v2": "imagenet", "lincls": "imagenet"}


def contract():
    known = {}
    parse_header(os.path.join(FORMATS, "wire.h"), known)
    parse_header(os.path.join(FORMATS, "pipeline.h"), known)
    return known


class Constants(unittest.TestCase):
    def test_headers_parsed(self):
        c = contract()
        for name in ("MOCO_WIRE_VERSION", "MOCO_MSG_BUSY", "MOCO_PAIRS_FRAME_MAX", "MOCO_COUNT_MAX",
                     "MOCO_SERVE_SNDHWM", "MOCO_ACK_DELAY_S"):
            self.assertIn(name, c, "%s not found in formats/wire.h or formats/pipeline.h" % name)

    def test_match(self):
        c = contract()
        pairs = {
            "MAGIC": "MOCO_WIRE_MAGIC",
            "VERSION_MAX": "MOCO_WIRE_VERSION",
            "T_PAIR": "MOCO_MSG_PAIR",
            "T_HEARTBEAT": "MOCO_MSG_HEARTBEAT",
            "T_EPOCH_END": "MOCO_MSG_EPOCH_END",
            "T_HELLO": "MOCO_MSG_HELLO",
            "T_ACK": "MOCO_MSG_ACK",
            "T_END": "MOCO_MSG_END",
            "T_PAIRS": "MOCO_MSG_PAIRS",
            "T_WELCOME": "MOCO_MSG_WELCOME",
            "T_REFUSED": "MOCO_MSG_REFUSED",
            "T_BYE": "MOCO_MSG_BYE",
            "T_BUSY": "MOCO_MSG_BUSY",
            "WELCOME_SERVE": "MOCO_WELCOME_SERVE",
            "WELCOME_BUSY": "MOCO_WELCOME_BUSY",
            "VIEW_SIDE_MAX": "MOCO_VIEW_SIDE_MAX",
            "PAIRS_N_MAX": "MOCO_PAIRS_MAX",
            "ACK_MAX": "MOCO_ACK_MAX",
            "EPOCH_FAILED_MAX": "MOCO_EPOCH_FAILED_MAX",
            "COUNT_MAX": "MOCO_COUNT_MAX",
            "PAIRS_FRAME_MAX": "MOCO_PAIRS_FRAME_MAX",
            "REASON_MAX": "MOCO_WIRE_REASON_MAX",
            "HEARTBEAT_S": "MOCO_HEARTBEAT_S",
            "HEARTBEAT_MIN_S": "MOCO_HEARTBEAT_MIN_S",
            "ACK_EVERY_S": "MOCO_ACK_DELAY_S",
            "HELD_MSGS_MAX": "MOCO_SERVE_SNDHWM",
        }
        for py, cname in pairs.items():
            self.assertIn(cname, c, "%s not found in formats/" % cname)
            self.assertEqual(getattr(moco_stream, py), c[cname],
                             "moco_stream.%s = %r, formats/ %s = %r" % (py, getattr(moco_stream, py), cname, c[cname]))

    def test_loader_timeout_default(self):
        c = contract()
        default = inspect.signature(moco_stream.PairStream.__init__).parameters["timeout"].default
        self.assertEqual(default, c["MOCO_LOADER_TIMEOUT_S"])

    def test_normalisation(self):
        """MEAN_STD's numbers are formats/normalize.h's, the same decimal literals (0.2010 and 0.201
        are one literal; 0.2011 or a float32 rounding such as 0.20100000500679016 is not)."""
        from moco_stream.torch import MEAN_STD
        c = norm_constants()
        self.assertEqual(sorted(c), ["cifar", "imagenet", "none"], "formats/normalize.h: %s" % sorted(c))
        for name, (mean, std) in c.items():
            self.assertTrue(mean and std and len(mean) == 3 and len(std) == 3,
                            "formats/normalize.h %s: want 3 means and 3 stds: %s %s" % (name, mean, std))
        self.assertEqual(set(MEAN_STD), set(c) | set(RECIPE_NORM), "MEAN_STD's names against formats/ and the recipes")
        for py in sorted(MEAN_STD):
            name = py if py in c else RECIPE_NORM[py]
            got = tuple(tuple(Decimal(repr(float(x))) for x in part) for part in MEAN_STD[py])
            self.assertEqual(got, c[name], "moco_stream.torch.MEAN_STD[%r] = %r; formats/normalize.h %s: mean %s std %s"
                             % (py, MEAN_STD[py], name, [str(x) for x in c[name][0]], [str(x) for x in c[name][1]]))

    def test_normalisation_copies(self):
        """The tools that cannot include formats/normalize.h (PyTorch references, benchmarks, golden
        generators) hold the same numbers: every [a, b, c] / (a, b, c) of decimal literals in each file,
        in order, is formats/normalize.h's constant named here; a changed digit on either side, a copy
        added or removed, or a file gone fails."""
        c = norm_constants()
        root = os.path.join(FORMATS, "..")
        for path, names in sorted(NORM_COPIES.items()):
            full = os.path.join(root, path)
            self.assertTrue(os.path.isfile(full), "%s: the copy listed in NORM_COPIES is gone (update the list)" % path)
            with open(full) as f:
                found = [tuple(Decimal(x) for x in m.groups()) for m in TRIPLE.finditer(f.read())]
            want = [c[name][0 if part == "mean" else 1] for name, part in names]
            self.assertEqual(found, want, "%s: normalisation triples %s, formats/normalize.h's %s %s"
                             % (path, [[str(x) for x in t] for t in found], names, [[str(x) for x in t] for t in want]))


# Copies of formats/normalize.h's constants in files that cannot include it, relative to the repository
# root: the constant each [a, b, c] triple of decimal literals in the file is, in order (C code includes
# formats/normalize.h; tests/test_ckpt.c's literals are checkpoint bytes, test data)
NORM_COPIES = {
    "tools/quality/bf16_error.py": [("cifar", "mean"), ("cifar", "std")],
    "tools/quality/pytorch_knn.py": [("cifar", "mean"), ("cifar", "std")],
    "tools/quality/pytorch_views_epoch.py": [("cifar", "mean"), ("cifar", "std")],
    "tools/gen_eval_golden.py": [("imagenet", "mean"), ("imagenet", "std")],
    "tools/bench_torchvision_aug.py": [("imagenet", "mean"), ("imagenet", "std"), ("cifar", "mean"), ("cifar", "std")],
}
TRIPLE = re.compile(r"[\[(]\s*(\d+\.\d+)\s*,\s*(\d+\.\d+)\s*,\s*(\d+\.\d+)\s*[\])]")


if __name__ == "__main__":
    unittest.main()
