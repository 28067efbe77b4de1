#!/usr/bin/env bash
# cli_kernels.sh: kernels chosen by measurement (trainer/engine/tune.h)
# through `moco bench train --explain`, on a small resnet18-cifar:
#  - the first run times every convolution's candidates (each marked * in
#    the table), writes the wisdom file, and its last JSON line names the
#    choice of every pass; each choice is the fastest time on its row;
#  - a second run finds them all in the file: nothing is timed, same choices;
#  - --kernels rule: the fixed rule, nothing timed, no file;
#  - the JSON's "build" says release, or sanitize=KIND with a warning;
#  - on an AVX-512 CPU: both levels of the direct kernels, oneDNN and its
#    Winograd where they can run; capped at AVX2 (DNNL_MAX_CPU_ISA, and
#    MOCO_CONV3=1 as a CPU without AVX-512) oneDNN's fp32 kernels without
#    Winograd, the wisdom keyed by the caps;
#  - a wisdom line that does not parse is a warning naming the file (the run
#    goes on and the line is dropped at the next write, here at once: width 4
#    has new shapes); an unwritable file is a warning too.
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/kernels
rm -rf "$T" && mkdir -p "$T"
B="bench train --arch resnet18-cifar --width 8 --batch-size 16 --size 16 --K 64 --bn-splits 2 --steps 1 --warmup 0 --threads 2 --explain"
W="$T/w/wisdom.jsonl"
ALG='gemm|direct|direct-avx2|lanes|bf16|onednn|onednn-wino|wino|wino4' # the columns of the table, in order

$M $B --wisdom "$W" >"$T/1.out" 2>"$T/1.err" || fail "bench --explain: $(tail -3 "$T/1.err")"
# the JSON names the build; a sanitizer build says on stderr that its figures are not the product's
case "${BUILD:-build/release}" in
  */release) want=release;;
  *) want="sanitize=${BUILD##*/}"
     grep -q "WARNING: this binary is a sanitizer build (-fsanitize=${BUILD##*/})" "$T/1.err" || fail "no sanitizer warning: $(head -3 "$T/1.err")";;
esac
tail -n 1 "$T/1.out" | grep -q "\"build\":\"$want\"" || fail "bench train JSON: want \"build\":\"$want\": $(tail -n 1 "$T/1.out" | cut -c1-200)"
# this CPU's measured peak (trainer/engine/peak.h): the ISA the direct kernels use, a
# figure within what such a core can do (2 ports x lanes x 2 FLOP x at most 6 GHz; at
# least 1 GFLOP/s), bf16 dot products exactly where the CPU has them, and the step's
# share of the peak consistent with its own GFLOP/s
peak_check() { # out-file want-isa
  python3 - "$1" "$2" "$(grep -qw avx512_bf16 /proc/cpuinfo && [ "$2" = avx512 ] && echo 1 || echo 0)" <<'PY' || fail "peak: $(grep 'peak (' "$1")"
import json, sys
out, isa, bf = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
j = json.loads(open(out).read().strip().splitlines()[-1])
assert j["peak_isa"] == isa, ("isa", j["peak_isa"], isa)
lanes = 16 if isa == "avx512" else 8
for k in ("peak_fp32_gflops_1t", "peak_fp32_gflops"):
    assert 1 <= j[k] <= 2 * lanes * 2 * 6 * j["threads"] ** (k == "peak_fp32_gflops"), (k, j[k])
assert abs(j["peak_thread_scale"] - j["peak_fp32_gflops"] / j["peak_fp32_gflops_1t"]) < 0.01, "scale"
assert abs(j["peak_fp32_share"] - j["gflop_per_s"] / j["peak_fp32_gflops"]) <= 0.001 + 0.01 * j["peak_fp32_share"], "share"
assert ("peak_bf16_gflops_1t" in j) == bf, ("bf16 fields", bf)
if bf:  # vdpbf16ps: twice an FMA's work per lane
    assert 1 <= j["peak_bf16_gflops_1t"] <= 2 * 16 * 4 * 6, j["peak_bf16_gflops_1t"]
print("peak: %s %.1f GFLOP/s on 1 thread, %.1f on %d; the step %.1f%% of it" % (isa, j["peak_fp32_gflops_1t"], j["peak_fp32_gflops"], j["threads"], 100 * j["peak_fp32_share"]))
PY
  grep -q "^  this CPU's peak (measured, multiply-adds in registers): fp32 $2 " "$1" || fail "no peak line naming $2: $(head -5 "$1")"
  grep -q "^  model FLOP/s: [0-9.]*% of the fp32 peak on " "$1" || fail "no share of the peak printed"
}
if grep -qw fma /proc/cpuinfo && grep -qw avx2 /proc/cpuinfo; then
  if grep -qw avx512f /proc/cpuinfo && [ -z "${MOCO_CONV3:-}" ]; then peak_check "$T/1.out" avx512; else peak_check "$T/1.out" avx2; fi
fi
rows=$(grep -cE "^  .* (fwd|bwd|bwd-w) +($ALG) " "$T/1.out")
[ "$rows" = 40 ] || fail "want 40 rows (20 convolutions x 2 passes), got $rows: $(cat "$T/1.out")"
# our Winograd kernels (wino.h) timed on exactly the passes they can run: 3x3 stride 1, channels multiples
# of 8, plane sides multiples of 2 (wino) or 4 (wino4), on a CPU with AVX2 and FMA
if grep -qw fma /proc/cpuinfo && grep -qw avx2 /proc/cpuinfo; then
  read -r bad t2 t4 < <(awk -v alg="$ALG" '$0 ~ " (fwd|bwd|bwd-w) +(" alg ") " {
    for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, ks, "/"); split($(i - 3), sh, "x")
      ok = ks[1] == 3 && ks[2] == 1 && sh[2] % 8 == 0 && $(i - 1) % 8 == 0; ok2 = ok && sh[3] % 2 == 0 && sh[4] % 2 == 0; ok4 = ok && sh[3] % 4 == 0 && sh[4] % 4 == 0 }
    for (i = 1; i <= NF; i++) if ($i == "fwd" || $i == "bwd" || $i == "bwd-w") { w2 = $(i + 9) != "-"; w4 = $(i + 10) != "-"
      if (w2 != ok2 || w4 != ok4) bad++; t2 += w2; t4 += w4; break }
  } END { print bad + 0, t2 + 0, t4 + 0 }' "$T/1.out")
  [ "$bad" = 0 ] && [ "$t2" = 26 ] && [ "$t4" = 20 ] ||
    fail "want wino timed on the 26 passes of 3x3 stride-1 convolutions of 8k channels, wino4 on the 20 of them with planes of 4k, no others; got $bad misplaced, $t2 and $t4"
  echo "wino timed on $t2 passes, wino4 on $t4, exactly where they can run"
fi
[ "$(grep -cE "(fwd|bwd|bwd-w) +($ALG) .*[*]$" "$T/1.out")" = 40 ] || fail "the first run did not time every row"
grep -q "bwd-w" "$T/1.out" || fail "the stem's backward has no input gradient: want pass bwd-w"
# on each row, the choice is the smallest time shown (times print to 3
# decimals: a tie there is the choice's, faster unrounded)
awk -v alg="$ALG" '$0 ~ " (fwd|bwd|bwd-w) +(" alg ") " {
  n = split(alg, names, "|"); c = ""; best = 1e30; start = 0; cv = ""
  for (i = 1; i <= NF; i++) if ($i == "fwd" || $i == "bwd" || $i == "bwd-w") { c = $(i + 1); start = i + 2; break }
  for (k = 0; k < n; k++) { v = $(start + k); if (names[k + 1] == c) cv = v; if (v != "-" && v + 0 < best) { best = v + 0; bn = names[k + 1] } }
  if (cv == "" || cv == "-" || cv + 0 > best) { print "row chooses " c " but " bn " was faster: " $0; bad = 1 }
} END { exit bad }' "$T/1.out" || fail "a choice is not the fastest candidate"
# an AVX-512 CPU times its direct kernels at both levels (AVX-512 and AVX2)
if grep -qw avx512f /proc/cpuinfo && [ -z "${MOCO_CONV3:-}" ]; then
  both=$(awk -v alg="$ALG" '$0 ~ " (fwd|bwd|bwd-w) +(" alg ") " {
    for (i = 1; i <= NF; i++) if ($i == "fwd" || $i == "bwd" || $i == "bwd-w") { if ($(i + 3) != "-" && $(i + 4) != "-") n++; break }
  } END { print n + 0 }' "$T/1.out")
  [ "$both" -ge 8 ] || fail "want the direct kernels timed at both levels on the 16x16 and 8x8 3x3 rows, got $both rows"
  echo "AVX-512 CPU: $both rows timed both direct and direct-avx2"
  # and oneDNN's fp32 kernels (a build with oneDNN: the Makefile's test) on every pass of kernel size > 1
  if [ -e /usr/include/dnnl.h ]; then
    read -r timed want < <(awk -v alg="$ALG" '$0 ~ " (fwd|bwd|bwd-w) +(" alg ") " {
      for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, ks, "/"); k = ks[1] } # a pass row after the first: the shape above
      for (i = 1; i <= NF; i++) if ($i == "fwd" || $i == "bwd" || $i == "bwd-w") { if ($(i + 7) != "-") t++; break }
      if (k != 1) w++
    } END { print t + 0, w + 0 }' "$T/1.out")
    [ "$timed" = "$want" ] && [ "$want" -gt 0 ] || fail "want onednn timed on the $want passes of kernel size > 1, got $timed"
    echo "AVX-512 CPU: onednn timed on all $timed passes of kernel size > 1"
    # and its Winograd kernels on exactly the passes of 3x3 stride-1 convolutions of 16k channels in and out
    read -r timed want < <(awk -v alg="$ALG" '$0 ~ " (fwd|bwd|bwd-w) +(" alg ") " {
      for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, ks, "/"); split($(i - 3), sh, "x"); ok = ks[1] == 3 && ks[2] == 1 && sh[2] % 16 == 0 && $(i - 1) % 16 == 0 }
      for (i = 1; i <= NF; i++) if ($i == "fwd" || $i == "bwd" || $i == "bwd-w") { if (($(i + 8) != "-") != ok) bad++; if (ok) w++; if ($(i + 8) != "-") t++; break }
    } END { print (bad ? -1 : t + 0), w + 0 }' "$T/1.out")
    [ "$timed" = "$want" ] && [ "$want" -gt 0 ] || fail "want onednn-wino timed on the $want passes of 3x3 stride-1 16k-channel convolutions only, got $timed (-1: elsewhere too)"
    echo "AVX-512 CPU: onednn-wino timed on the $timed passes of 3x3 stride-1 convolutions of 16k channels"
    # oneDNN capped at AVX2 (DNNL_MAX_CPU_ISA) has no Winograd: that candidate drops out, the run goes on,
    # and the wisdom is keyed by the cap (a later uncapped run measures afresh)
    DNNL_MAX_CPU_ISA=AVX2 $M $B --wisdom "$T/w/capped.jsonl" >"$T/c.out" 2>"$T/c.err" || fail "DNNL_MAX_CPU_ISA=AVX2: $(tail -3 "$T/c.err")"
    n=$(awk -v alg="$ALG" '$0 ~ " (fwd|bwd|bwd-w) +(" alg ") " { for (i = 1; i <= NF; i++) if ($i == "fwd" || $i == "bwd" || $i == "bwd-w") { if ($(i + 8) != "-") t++; r++; break } } END { print r + 0, t + 0 }' "$T/c.out")
    [ "$n" = "40 0" ] || fail "DNNL_MAX_CPU_ISA=AVX2: want 40 rows, onednn-wino timed on none; got rows and timed: $n"
    grep -q '"build":"[^"]*-dnnl=AVX2"' "$T/w/capped.jsonl" || fail "the capped run's wisdom is not keyed by the cap: $(head -c 300 "$T/w/capped.jsonl")"
    echo "DNNL_MAX_CPU_ISA=AVX2: onednn-wino not a candidate, the wisdom keyed by the cap"
    # as on a CPU without AVX-512 (MOCO_CONV3=1, oneDNN capped too): oneDNN's fp32 kernels stay candidates on
    # every pass of kernel size > 1 (the AVX2 transposes, nhwc.h), Winograd on none, the wisdom keyed by both caps
    MOCO_CONV3=1 DNNL_MAX_CPU_ISA=AVX2 $M $B --wisdom "$T/w/avx2.jsonl" >"$T/a.out" 2>"$T/a.err" || fail "MOCO_CONV3=1: $(tail -3 "$T/a.err")"
    peak_check "$T/a.out" avx2 # the peak of the instructions the kernels run
    n=$(awk -v alg="$ALG" '$0 ~ " (fwd|bwd|bwd-w) +(" alg ") " {
      for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, ks, "/"); k = ks[1] }
      for (i = 1; i <= NF; i++) if ($i == "fwd" || $i == "bwd" || $i == "bwd-w") { r++; if ($(i + 7) != "-") t++; if ($(i + 8) != "-") wi++; if ($(i + 4) != "-") a2++; if (k != 1) w++; break }
    } END { print r + 0, t + 0, w + 0, wi + 0, a2 + 0 }' "$T/a.out")
    read -r rows timed want wino a2 <<<"$n"
    [ "$rows" = 40 ] && [ "$timed" = "$want" ] && [ "$want" -gt 0 ] && [ "$wino" = 0 ] && [ "$a2" = 0 ] ||
      fail "MOCO_CONV3=1: want 40 rows, onednn timed on every pass of kernel size > 1, onednn-wino and direct-avx2 on none; got rows, timed, want, wino, direct-avx2: $n"
    grep -q '"build":"[^"]*-dnnl=AVX2-conv3=1"' "$T/w/avx2.jsonl" || fail "the MOCO_CONV3=1 run's wisdom is not keyed by it: $(head -c 300 "$T/w/avx2.jsonl")"
    echo "MOCO_CONV3=1: onednn timed on all $timed passes of kernel size > 1, no onednn-wino, the wisdom keyed by both caps"
  fi
fi
[ "$(wc -l <"$W")" -ge 10 ] || fail "the wisdom file has $(wc -l <"$W") lines"
tail -1 "$T/1.out" | python3 -c '
import json, sys
j = json.loads(sys.stdin.read())
assert j["kernels"] == "measure", j["kernels"]
assert len(j["convs"]) == 20, len(j["convs"])
assert [(l["name"], l["train"]) for l in j["linears"]] == [("fc.weight", "gemm")], j["linears"]  # fp32: OpenBLAS, the only candidate
assert all(c["fwd"] in c["fwd_ms"] and c["bwd"] in c["bwd_ms"] for c in j["convs"])
assert j["conv_ms_chosen"] <= j["conv_ms_rule"] * 1.0001, (j["conv_ms_chosen"], j["conv_ms_rule"])
print(" ".join(c["fwd"] + "/" + c["bwd"] for c in j["convs"]))' >"$T/1.choices" || fail "the JSON line: $(tail -1 "$T/1.out" | cut -c1-300)"
echo "first run: 40 passes timed, each on its fastest candidate: $(cat "$T/1.choices" | cut -c1-120)..."

$M $B --wisdom "$W" >"$T/2.out" 2>"$T/2.err" || fail "second bench: $(tail -3 "$T/2.err")"
# (the 40 rows are there: with no table, nothing would carry a *)
rows=$(grep -cE "^  .* (fwd|bwd|bwd-w) +($ALG) " "$T/2.out")
[ "$rows" = 40 ] || fail "the second run: want 40 rows, got $rows: $(cat "$T/2.out")"
grep -qE '\*$' "$T/2.out" && fail "the second run timed kernels again: $(grep -E '\*$' "$T/2.out" | head -3)"
tail -1 "$T/2.out" | python3 -c 'import json, sys; j = json.loads(sys.stdin.read()); print(" ".join(c["fwd"] + "/" + c["bwd"] for c in j["convs"]))' >"$T/2.choices"
cmp -s "$T/1.choices" "$T/2.choices" || fail "the second run chose differently: $(cat "$T/2.choices")"
echo "second run: every choice from the wisdom file, none timed"

rm -rf "$T/r"
$M $B --kernels rule --wisdom "$T/r/wisdom.jsonl" >"$T/3.out" 2>&1 || fail "--kernels rule: $(tail -3 "$T/3.out")"
[ -e "$T/r/wisdom.jsonl" ] && fail "--kernels rule wrote a wisdom file"
rows=$(grep -cE "^  .* (fwd|bwd|bwd-w) +($ALG) " "$T/3.out")
[ "$rows" = 40 ] || fail "--kernels rule: want 40 rows, got $rows: $(cat "$T/3.out")"
grep -qE '\*$' "$T/3.out" && fail "--kernels rule timed kernels"
grep -q '"kernels":"rule"' "$T/3.out" || fail "--kernels rule: not in the JSON line"
echo "--kernels rule: nothing timed, no file"

echo '{"cpu": broken' >>"$W"
n0=$(wc -l <"$W")
$M $B --width 4 --wisdom "$W" >"$T/4.out" 2>"$T/4.err" || fail "a damaged wisdom file stopped the run: $(tail -3 "$T/4.err")"
grep -q "warning: wisdom file $W: 1 line does not parse" "$T/4.err" || fail "no warning naming the damaged file: $(cat "$T/4.err")"
grep -q broken "$W" && fail "the line that does not parse was kept when the file was written again (width 4: new shapes)"
[ "$(wc -l <"$W")" -gt $((n0 - 1)) ] || fail "the rewrite lost lines: $n0 -> $(wc -l <"$W")"
$M $B --wisdom /proc/none/wisdom.jsonl >"$T/5.out" 2>"$T/5.err" || fail "an unwritable wisdom file stopped the run"
grep -q "warning: cannot write the wisdom file /proc/none/wisdom.jsonl" "$T/5.err" || fail "no warning naming the unwritable file: $(cat "$T/5.err")"
# a directory where the wisdom file should be: neither read nor replaced, a warning naming it (not a silent skip)
mkdir -p "$T/wdir"
$M $B --width 4 --wisdom "$T/wdir" >"$T/5d.out" 2>"$T/5d.err" || fail "a directory as the wisdom file stopped the run: $(tail -3 "$T/5d.err")"
grep -q "warning: wisdom file: $T/wdir is a directory, not a regular file; not read" "$T/5d.err" || fail "no warning that the directory was not read: $(cat "$T/5d.err")"
[ -d "$T/wdir" ] || fail "the directory named as the wisdom file is gone"
echo "a damaged or unwritable wisdom file, or a directory: a warning naming it; the run goes on"
# a MOCO_CONV3 value that caps nothing (not 0, 1 or 2) is said and ignored, and keys no wisdom
# of its own: the run finds its choices in the file (before: silent, and all timed again)
MOCO_CONV3=x $M $B --wisdom "$W" >"$T/7.out" 2>"$T/7.err" || fail "MOCO_CONV3=x: $(tail -3 "$T/7.err")"
grep -q "moco: warning: MOCO_CONV3=x is not 0, 1 or 2: ignored" "$T/7.err" || fail "MOCO_CONV3=x: no warning: $(cat "$T/7.err")"
[ "$(grep -cE "^  .* (fwd|bwd|bwd-w) +($ALG) " "$T/7.out")" = 40 ] && ! grep -qE '\*$' "$T/7.out" \
  || fail "MOCO_CONV3=x: want the 40 choices from the file, nothing timed: $(grep -cE '\*$' "$T/7.out") timed"
echo "MOCO_CONV3=x: a warning, the wisdom of the uncapped kernels"

# OpenBLAS's kernel set (trainer/engine/blascore.h): on a CPU with AVX2 and
# FMA the run uses a set at least that level, even where OpenBLAS alone
# falls back to SSE3 ("Prescott"; Debian's 0.3.21 on CPUs newer than it
# knows); a set named in $OPENBLAS_CORETYPE stands; the wisdom key changes
# with the set (its GEMM times depend on it).
core() { sed -n 's/.*"blas_core":"\([^"]*\)".*/\1/p' "$1"; }
c1=$(core "$T/1.out")
[ -n "$c1" ] || fail "no blas_core in the JSON line: $(tail -1 "$T/1.out" | cut -c1-300)"
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  case $c1 in Haswell|Zen|Excavator|SkylakeX|Cooperlake|SapphireRapids) ;;
    *) fail "an AVX2+FMA CPU runs OpenBLAS's $c1 kernels";; esac
  grep -q "OpenBLAS kernels $c1" "$T/1.out" || fail "--explain does not name the kernel set $c1"
fi
OPENBLAS_CORETYPE=Prescott $M $B --wisdom "$W" >"$T/6.out" 2>"$T/6.err" || fail "OPENBLAS_CORETYPE=Prescott: $(tail -3 "$T/6.err")"
[ "$(core "$T/6.out")" = Prescott ] || fail "\$OPENBLAS_CORETYPE=Prescott was overridden: $(core "$T/6.out")"
if [ "$c1" != Prescott ]; then
  [ "$(grep -cE '\*$' "$T/6.out")" = 40 ] || fail "another OpenBLAS kernel set reused the wisdom of $c1 (want all 40 passes timed again)"
  grep -q "\-Prescott\"" "$W" && grep -q "\-$c1\"" "$W" || fail "the wisdom file does not key lines by the kernel set: $(cut -c1-200 "$W" | head -3)"
fi
echo "OpenBLAS kernels: $c1 here (OPENBLAS_CORETYPE unset), Prescott when named; the wisdom keyed by them"
# --profile: where the timed steps go; the step's parts cover its time, and
# the encoders' parts (convolutions, BN, the rest) lie within the encoder
# passes they are part of
$M bench train --arch resnet18-cifar --width 8 --batch-size 16 --size 16 --K 64 --bn-splits 2 --steps 3 --warmup 1 --threads 2 \
  --profile --wisdom "$W" >"$T/7.out" 2>"$T/7.err" || fail "bench --profile: $(tail -3 "$T/7.err")"
grep -q "where a step goes" "$T/7.out" || fail "--profile printed no breakdown: $(cat "$T/7.out")"
tail -1 "$T/7.out" | python3 -c '
import json, sys
j = json.loads(sys.stdin.read()); p = j["profile_ms"]; step = j["step_ms"]
parts = ["momentum_update", "key_forward", "query_forward", "loss", "query_backward", "sgd", "enqueue"]
enc = ["conv_forward", "bn_forward", "other_forward", "conv_backward", "bn_backward", "other_backward"]
assert sorted(p) == sorted(parts + enc), "profile keys: %s" % sorted(p)
assert all(p[k] >= 0 for k in p), p
s = sum(p[k] for k in parts)
assert 0.8 * step <= s <= step * 1.02 + 0.05, "the parts add up to %.2f ms of a %.2f ms step" % (s, step)
fwd = p["conv_forward"] + p["bn_forward"] + p["other_forward"]
bwd = p["conv_backward"] + p["bn_backward"] + p["other_backward"]
assert fwd <= p["key_forward"] + p["query_forward"] + 0.05, "encoder forward parts %.2f > the forwards %.2f" % (fwd, p["key_forward"] + p["query_forward"])
assert bwd <= p["query_backward"] + 0.05, "encoder backward parts %.2f > the backward %.2f" % (bwd, p["query_backward"])
assert p["conv_forward"] > 0 and p["conv_backward"] > 0 and p["bn_forward"] > 0 and p["bn_backward"] > 0, p
print("profile: the parts cover %.0f%% of the step; convolutions %.1f ms, BN %.1f ms" % (100 * s / step, p["conv_forward"] + p["conv_backward"], p["bn_forward"] + p["bn_backward"]))
' || fail "--profile JSON: $(tail -1 "$T/7.out" | cut -c1-400)"

# the evaluation commands (moco knn here; lincls and embed share the flags):
# --kernels measure times each convolution's forward at the command's batch
# (no backward pass: nothing is trained), keeps the choices in the wisdom
# file, and a second run reads them (the file unchanged); the default, rule,
# times nothing and writes no file
SRC=/usr/share/datasets/fashion-mnist
if [ -d $SRC ]; then
  $M mkdb $SRC "$T/db" --split test --limit 64 --shuffle --seed 3 --quiet >/dev/null 2>"$T/mkdb.err" || fail "mkdb: $(cat "$T/mkdb.err")"
  EW="$T/ew/wisdom.jsonl"
  K="knn --random-init 1 --width 4 --size 28 --batch 24 --threads 2 --train $T/db --test $T/db"
  $M $K --kernels measure --wisdom "$EW" >"$T/k1.out" 2>"$T/k1.err" || fail "knn --kernels measure: $(tail -3 "$T/k1.err")"
  grep -q '"kernels":"measure"' "$T/k1.out" || fail "knn --kernels measure: not in its JSON line: $(cat "$T/k1.out")"
  [ -s "$EW" ] || fail "knn --kernels measure wrote no wisdom file"
  lines=$(wc -l <"$EW")
  fwd=$(grep -c '"pass":"fwd","shape":\[24,' "$EW")
  [ "$lines" -ge 8 ] && [ "$fwd" = "$lines" ] \
    || fail "knn --kernels measure: want only forward choices at batch 24 (8 or more), got $fwd of $lines lines: $(cut -c1-160 "$EW" | head -3)"
  cp "$EW" "$T/ew1.jsonl"
  $M $K --kernels measure --wisdom "$EW" >"$T/k2.out" 2>"$T/k2.err" || fail "knn --kernels measure, again: $(tail -3 "$T/k2.err")"
  cmp -s "$EW" "$T/ew1.jsonl" || fail "a second knn --kernels measure changed the wisdom file (it should have found every choice there)"
  $M $K --wisdom "$T/ew/rule.jsonl" >"$T/k3.out" 2>"$T/k3.err" || fail "knn (default): $(tail -3 "$T/k3.err")"
  grep -q '"kernels":"checkpoint","kernels_from_ckpt":0' "$T/k3.out" \
    || fail "knn: the default is not the checkpoint's kernels (none here: --random-init), else the rule: $(cat "$T/k3.out")"
  [ -e "$T/ew/rule.jsonl" ] && fail "knn's default (no checkpoint: the rule) wrote a wisdom file"
  $M $K --kernels rule --wisdom "$T/ew/rule.jsonl" >"$T/k4.out" 2>"$T/k4.err" || fail "knn --kernels rule: $(tail -3 "$T/k4.err")"
  grep -q '"kernels":"rule"' "$T/k4.out" || fail "knn --kernels rule: not in its JSON line: $(cat "$T/k4.out")"
  [ -e "$T/ew/rule.jsonl" ] && fail "knn --kernels rule wrote a wisdom file"
  echo "knn --kernels measure: $lines forward choices at its batch, none for a backward; read back the second time; the default and rule write none"
else
  echo "skipped: the evaluation commands' --kernels ($SRC absent)"
fi
