"""Compare groups of training runs by their kNN curves: per epoch, each group's mean, range and standard deviation,
the difference between the groups' means, and how many of one group's runs fall inside another group's range.
Then the pairs: every two runs of one group, every run of one group against every run of the other, and with
--matched the i-th run of each group against each other (the same batches on one build: issue 13's quality pair),
each pair judged by issue 13's test, within 1 kNN point at every epoch, and by its largest difference.
With --equivalence M, the two groups' means are tested for equivalence within M points at each epoch, the way a
claim "within a margin" is tested when single runs scatter more than the margin: two one-sided tests at 5% each
(TOST), i.e. the 90% confidence interval of the difference of the means (Welch: unequal variances, the
Welch-Satterthwaite degrees of freedom) must lie inside (-M, M).
With --matched and --equivalence M, also the paired test at each epoch: the 90% interval of the matched pairs'
mean difference (Student's t, n - 1 degrees of freedom) must lie inside (-M, M); pairing removes what a pair
shares, so this is the sharper test where it applies.
With --matched and --window A-B, each matched pair's difference is averaged over epochs A to B, and those pair
means are summarised as a paired comparison: their mean, standard deviation and standard error, the 90% interval
of their mean (Student's t, n - 1 degrees of freedom) and how many pairs fall below and above 0. Pairing by
seed holds whatever the pair shares (the same batches, or only the same initial weights) fixed.
With --metric loss, all of this is done on the epochs' mean training loss instead of kNN top-1 (margins in
loss units then; the "within 1 point" counts of single pairs, a kNN test, are left out).

What it promises: only arithmetic on the files given. It reads our metrics.jsonl (records with "type":"epoch",
epochs counted from 0) and moco_ref.py's logs (records with "epoch" counted from 1) alike, and compares the
epochs that every run of both groups holds.

Usage:
  python3 tools/quality/seed_spread.py --group pytorch A.jsonl B.jsonl ... --group ours C.jsonl D.jsonl ...
      [--matched [--window 12-20]] [--equivalence 1] [--metric knn_top1|loss]
The last line printed is one JSON object (per epoch: the means, the standard deviations, the difference; per kind
of pair: how many pairs, how many within 1 point at every epoch, each pair's largest difference; with
--equivalence, each epoch's interval and how many epochs are equivalent; with --window, the pairs' means over it).
"""
import argparse
import json
import math
import sys


METRICS = {"knn_top1": "a kNN figure", "loss": "a loss figure"}


def epoch_curve(path, key="knn_top1"):
    """{epoch (from 1): the figure `key` (kNN top-1, or the mean loss)} of one run."""
    curve = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError as e:
                raise SystemExit(f"seed_spread: {path}:{n}: not JSON ({e})")
            if key not in r:
                continue
            if r.get("type") == "epoch":
                curve[int(r["epoch"]) + 1] = float(r[key])
            elif "type" not in r:
                curve[int(r["epoch"])] = float(r[key])
    if not curve:
        raise SystemExit(f"seed_spread: {path}: no epoch with {METRICS[key]}")
    return curve


def stats(values):
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd, min(values), max(values)


def t_quantile(p, df):
    """Student's t quantile for 0.5 < p < 1 (no SciPy here): the density integrated by Simpson's rule, bisected."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(t, n=2000):
        h = t / n
        f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
        return 0.5 + h / 3 * (f[0] + f[n] + 4 * sum(f[1:n:2]) + 2 * sum(f[2:n:2]))

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, 2 * hi
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def welch_interval(a, b, level=0.90):
    """The two-sided `level` confidence interval of mean(b) - mean(a), Welch's."""
    ma, sa = stats(a)[:2]
    mb, sb = stats(b)[:2]
    va, vb = sa * sa / len(a), sb * sb / len(b)
    d = mb - ma
    if va + vb == 0:
        return d, d
    df = (va + vb) ** 2 / ((va * va / (len(a) - 1) if len(a) > 1 else 0) + (vb * vb / (len(b) - 1) if len(b) > 1 else 0))
    q = t_quantile(0.5 + level / 2, df) * math.sqrt(va + vb)
    return d - q, d + q


def pair_band(pairs, epochs, band=1.0):
    """Of pairs of curves: how many, how many within band at every epoch, and each pair's largest |difference|."""
    worst = [max(abs(a[e] - b[e]) for e in epochs) for a, b in pairs]
    return {"pairs": len(pairs), "within_all_epochs": sum(w <= band for w in worst),
            "largest_diffs": sorted(round(w, 2) for w in worst)}


def parse_window(text, epochs):
    """'A-B' -> the epochs of every run from A to B; an error names what is wrong."""
    try:
        lo, hi = (int(x) for x in text.split("-"))
    except ValueError:
        raise SystemExit(f"seed_spread: --window {text!r}: give two epochs, as 12-20")
    span = [e for e in epochs if lo <= e <= hi]
    if lo > hi or lo not in epochs or hi not in epochs:
        raise SystemExit(f"seed_spread: --window {text}: the epochs every run holds are {epochs[0]}-{epochs[-1]}")
    return span


def paired_interval(d):
    """Of paired differences d (two or more): their mean, sd, standard error and 90% interval (Student's t, n - 1)."""
    m, sd = stats(d)[:2]
    se = sd / math.sqrt(len(d))
    q = t_quantile(0.95, len(d) - 1) * se
    return m, sd, se, m - q, m + q


def equivalence_line(label, per_epoch, nd=2):
    """One printed line of an equivalence test: how many epochs pass, then each epoch's interval (nd decimals)."""
    return (f"{label}: {sum(q['equivalent'] for q in per_epoch)} of {len(per_epoch)} epochs; intervals "
            + ", ".join(f"{q['epoch']}: [{q['lo']:+.{nd}f}, {q['hi']:+.{nd}f}]" for q in per_epoch))


def window_pairs(pairs, span, nd=3):
    """Each (b, a) pair's mean of b - a over span, then their mean, sd, se, 90% paired-t interval and signs
    (rounded to nd decimals)."""
    d = [sum(b[e] - a[e] for e in span) / len(span) for b, a in pairs]
    m, sd, se, lo, hi = paired_interval(d)
    return {"epochs": [span[0], span[-1]], "pair_means": [round(x, nd) for x in d], "mean": round(m, nd),
            "sd": round(sd, nd), "se": round(se, nd), "lo": round(lo, nd), "hi": round(hi, nd),
            "below": sum(x < 0 for x in d), "above": sum(x > 0 for x in d)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "FILE"))
    p.add_argument("--matched", action="store_true", help="also pair the i-th run of each group (equal counts)")
    p.add_argument("--equivalence", type=float, metavar="M",
                   help="test the means for equivalence within M points at each epoch (TOST, 5%% each side)")
    p.add_argument("--window", metavar="A-B",
                   help="with --matched: each pair's mean difference over epochs A to B, and their paired summary")
    p.add_argument("--metric", choices=sorted(METRICS), default="knn_top1",
                   help="the figure compared: kNN top-1 (default) or the epoch's mean training loss")
    a = p.parse_args()
    if len(a.group) != 2 or any(len(g) < 2 for g in a.group):
        raise SystemExit("seed_spread: give two groups, each a name and at least one file")
    if a.window is not None and (not a.matched or len(a.group[0]) < 3):
        raise SystemExit("seed_spread: --window needs --matched and at least two pairs")
    if a.equivalence is not None and (not a.equivalence > 0 or any(len(g) < 3 for g in a.group)):
        raise SystemExit("seed_spread: --equivalence needs a margin above 0 and at least two runs in each group")
    groups = [(g[0], [epoch_curve(f, a.metric) for f in g[1:]]) for g in a.group]
    epochs = sorted(set.intersection(*[set(c) for _, runs in groups for c in runs]))
    if not epochs:
        raise SystemExit("seed_spread: no epoch is in every run")
    (na, ra), (nb, rb) = groups
    knn = a.metric == "knn_top1"
    nd = 2 if knn else 4  # decimals printed: kNN points, or loss
    print(f"| epoch | {na}: mean (sd) [min, max], {len(ra)} runs | {nb}: mean (sd) [min, max], {len(rb)} runs "
          f"| {nb} - {na} | {nb} runs inside {na}'s range |")
    print("|---|---|---|---|---|")
    out = []
    for e in epochs:
        ma, sa, lo_a, hi_a = stats([c[e] for c in ra])
        mb, sb, lo_b, hi_b = stats([c[e] for c in rb])
        inside = sum(lo_a <= c[e] <= hi_a for c in rb)
        print(f"| {e} | {ma:.{nd}f} ({sa:.{nd}f}) [{lo_a:.{nd}f}, {hi_a:.{nd}f}] | {mb:.{nd}f} ({sb:.{nd}f}) "
              f"[{lo_b:.{nd}f}, {hi_b:.{nd}f}] | {mb - ma:+.{nd}f} | {inside} of {len(rb)} |")
        out.append({"epoch": e, "mean_" + na: round(ma, nd + 1), "sd_" + na: round(sa, nd + 1), "mean_" + nb: round(mb, nd + 1),
                    "sd_" + nb: round(sb, nd + 1), "diff": round(mb - ma, nd + 1), "inside": inside})
    worst = max(out, key=lambda r: abs(r["diff"]))
    print(f"largest |difference of means|: {abs(worst['diff']):.{nd}f} at epoch {worst['epoch']}"
          + (f"; within 1 point at {sum(abs(r['diff']) <= 1 for r in out)} of {len(out)} epochs" if knn else ""))
    kinds = [(f"{na} against {na}", [(x, y) for i, x in enumerate(ra) for y in ra[i + 1:]]),
             (f"{nb} against {nb}", [(x, y) for i, x in enumerate(rb) for y in rb[i + 1:]]),
             (f"{nb} against {na}, every run", [(x, y) for x in rb for y in ra])]
    if a.matched:
        if len(ra) != len(rb):
            raise SystemExit(f"seed_spread: --matched needs as many {nb} runs as {na} runs ({len(rb)} against {len(ra)})")
        kinds.append((f"{nb} against {na}, matched", list(zip(rb, ra))))
    result = {"groups": {na: len(ra), nb: len(rb)}, "epochs": out}
    if a.equivalence is not None:
        m, eq = a.equivalence, []
        unit = (" point" if m == 1 else " points") if knn else ""  # a loss margin has no unit
        for r, e in zip(out, epochs):
            lo, hi = welch_interval([c[e] for c in ra], [c[e] for c in rb])
            eq.append({"epoch": e, "lo": round(lo, nd + 1), "hi": round(hi, nd + 1), "equivalent": -m < lo and hi < m})
        print(equivalence_line(f"equivalence of the means within {m:g}{unit} (TOST, 5% each side: the 90% "
                               f"interval of {nb} - {na} inside (-{m:g}, {m:g}))", eq, nd))
        result["equivalence"] = {"margin": m, "epochs_equivalent": sum(q["equivalent"] for q in eq), "per_epoch": eq}
        if a.matched:
            pe = []
            for e in epochs:
                d, _, _, lo, hi = paired_interval([b[e] - x[e] for b, x in zip(rb, ra)])
                pe.append({"epoch": e, "mean": round(d, nd + 1), "lo": round(lo, nd + 1), "hi": round(hi, nd + 1),
                           "equivalent": -m < lo and hi < m})
            print(equivalence_line(f"paired equivalence within {m:g}{unit} (the 90% interval of the matched "
                                   f"pairs' mean {nb} - {na}, Student's t, {len(ra) - 1} degrees of freedom, inside (-{m:g}, {m:g}))", pe, nd))
            result["equivalence"]["paired"] = {"epochs_equivalent": sum(q["equivalent"] for q in pe), "per_epoch": pe}
    pairs = {}
    for name, pl in kinds if knn else []:
        if not pl:
            continue
        pb = pairs[name] = pair_band(pl, epochs)
        print(f"pairs, {name}: {pb['within_all_epochs']} of {pb['pairs']} within 1 point at every epoch; "
              f"largest differences {', '.join(f'{w:.2f}' for w in pb['largest_diffs'])}")
    if knn:
        result["pairs"] = pairs
    if a.window is not None:
        w = result["window"] = window_pairs(list(zip(rb, ra)), parse_window(a.window, epochs), nd + 1)
        print(f"matched pairs, {nb} - {na} averaged over epochs {w['epochs'][0]}-{w['epochs'][1]}: "
              f"{', '.join(f'{x:+.{nd}f}' for x in w['pair_means'])}; mean {w['mean']:+.{nd}f} (sd {w['sd']:.{nd}f}, "
              f"se {w['se']:.{nd}f}), 90% interval [{w['lo']:+.{nd}f}, {w['hi']:+.{nd}f}]; below 0 in {w['below']} "
              f"of {len(w['pair_means'])}, above in {w['above']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
