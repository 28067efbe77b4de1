#!/usr/bin/env bash
# cli_usage.sh: a new user's first hour (the README walk-through, the usual
# mistakes): each message names the problem and gives advice that works, on
# a Fashion-MNIST subset (Debian package; skipped when absent) and a tiny
# ResNet trained once at 28 px (a few seconds):
#  1. streamed moco lincls evaluates at the checkpoint's training size (28
#     here, not 32): the workers get --size 28, lincls.json records the size
#     and the normalisation; --size 0 means the same; --size N is kept;
#  2. a directory that is no dataset (an image folder) is said to be one,
#     with the moco mkdb command, not "No such file or directory";
#  3. run directories: a live run's is "in use" (its lock before the
#     emptiness check); one with logs but no checkpoint advises --overwrite,
#     not --resume; a --resume without a checkpoint fails before anything
#     starts or is created;
#  4. moco run trains with MoCo v1's augmentation without --recipe, a preset
#     or --aug-plus (main_moco.py), and says so in its first line;
#  5. a flag neither moco run's nor moco train's: "moco run: unknown option",
#     a did-you-mean, both helps;
#  6. --moco-k and --bn-splits: one message each, with the values;
#  7. the evaluation flags documented "0: the checkpoint's" accept 0;
#  8. moco bench pipeline leaves no runs/ behind (a temporary directory),
#     and keeps its logs in --run-dir when given;
#  9. outputs under a missing directory: the message names the user's path
#     and the missing directory, never a .tmp name;
# 10. moco mkdb DB NEW (arguments swapped): DB is said to be a dataset;
# 11. moco --help on embed's .npy; --ckpt RUN_DIR (its checkpoint_last) for
#     knn, embed, export, lincls; a --ckpt that is no safetensors file said
#     so; preview / plot --out with a name not ending in .png refused (exit
#     2); train_moco_torch.py without torch: which interpreter / package,
#     no traceback;
# 12. --learning-rate and --weight-decay, main_moco.py's names of --lr, --wd;
# 13. main_moco.py's short flags: -a (--arch), -b (--batch-size) for moco
#     train and moco run, -j (--workers) for moco run, as -b 32, -b32, -b=32;
#     --help lists them; a near miss (-B, -lr) gets a did-you-mean;
# 14. moco bench train takes main_moco.py's --moco-k --moco-m --moco-t (the
#     documented names) and still --K --m --T: the same step either way, and
#     not the default's;
# 15. moco train (and moco run, passing them on) takes --K --m --T as bench
#     train does: --help lists them beside --moco-k --moco-m --moco-t, they
#     set the same fields (the checkpoint's config of 13's run, the --moco-k
#     and range messages), and a near miss (--k) gets a did-you-mean.
# 16. every flag the documentation shows after `moco CMD` (README.md and
#     the folders' READMEs) is an option of `moco CMD --help` (runs without
#     the data).
# 17. their links lead to files that exist, and anchors to headings.
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/usage
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# 16. the documentation's commands against the program: every flag (--long,
#     -x) that README.md, trainer/, augment/, formats/ and tools/python/README.md
#     show after `moco CMD` (in a code block or a `...` span, up to the next
#     command) is an option line of `moco CMD --help` (bench: `moco bench WHAT
#     --help`; `moco augment --pull ...`: `moco augment --pull --help`; moco
#     run passes the flags it lacks to moco train, moco lincls to moco run)
command -v python3 >/dev/null || fail "16: python3 (a Debian dependency, tools/install-deps.sh) is missing"
out=$(python3 - "$M" "$ROOT" <<'PY' 2>&1
import re, subprocess, sys
moco, root = sys.argv[1], sys.argv[2]
docs = ["README.md", "trainer/README.md", "augment/README.md", "formats/README.md", "tools/python/README.md"]
cmds = "mkdb info loader augment preview train knn embed export plot sink lincls keygen run bench".split()
helps, n, bad = {}, 0, []
def options(c):  # the names on --help's option lines: "  -a, --arch X", "  --moco-k, --K N"
    if c not in helps:
        p = subprocess.run([moco] + c.split() + ["--help"], capture_output=True, text=True)
        if p.returncode != 0: bad.append(f"`moco {c} --help` failed ({p.returncode})")
        names = set()
        for line in p.stdout.splitlines():
            if re.match(r"  -", line):
                for tok in line.split():
                    if not tok.startswith("-"): break
                    names.add(tok.rstrip(","))
        helps[c] = names
    return helps[c]
also = {"run": ["train"], "lincls": ["run"]}
for doc in docs:
    text = open(f"{root}/{doc}").read()
    segs = []
    def fence(m):
        segs.extend(re.sub(r"\\\n", " ", m.group(1)).split("\n"))
        return "\n"
    text = re.sub(r"```[a-z]*\n(.*?)```", fence, text, flags=re.S)
    segs += [s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", text)]
    for s in segs:
        for m in re.finditer(r"(?:^|[\s/(])moco (%s)\b(?: (train|augment|pipeline)\b)?(.*?)"
                             r"(?=(?:^|\s)(?:moco|mpirun|python3|/usr/bin/python3|scp)\s|$)" % "|".join(cmds), s):
            c = m.group(1) + (" " + m.group(2) if m.group(1) == "bench" and m.group(2) else "")
            if c == "augment" and re.match(r"\s*--pull\b", m.group(3)): c = "augment --pull"
            known = set().union(options(c), *(options(a) for a in also.get(c, [])))
            for fl in re.findall(r"(?<![\w-])(--[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?|-[A-Za-z])(?![\w>-])", m.group(3)):
                n += 1
                if fl not in known:
                    bad.append(f"{doc}: moco {c} {fl} is not an option of `moco {c} --help` ({s.strip()[:90]})")
print(n)
for b in bad: print(b)
PY
)
[ $? -eq 0 ] || fail "16: the flag check did not run: $out"
n=$(head -1 <<<"$out"); rest=$(tail -n +2 <<<"$out")
[ -z "$rest" ] || fail "16: flags in the documentation that the program does not take:
$rest"
# fewer would mean the extraction broke (the documents named 135 on 2026-12-02)
[ "$n" -ge 100 ] || fail "16: only $n flag mentions found after moco commands in the documentation"
echo "16: the $n flags the documentation shows after moco commands are options in their --help"
# 17. the same documents' links: every [text](target) that is no URL names a
#     file or folder that exists (relative to the document), and a #anchor a
#     heading of the target (GitHub's anchor: lower case, punctuation but - and
#     _ dropped, spaces as -)
out=$(python3 - "$ROOT" <<'PY' 2>&1
import os, re, sys
root = sys.argv[1]
docs = ["README.md", "trainer/README.md", "augment/README.md", "formats/README.md", "tools/python/README.md"]
def anchors(path):
    text = re.sub(r"```.*?```", "", open(path).read(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}
n, bad = 0, []
for doc in docs:
    text = re.sub(r"```.*?```", "", open(f"{root}/{doc}").read(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target): continue
        n += 1
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(root, os.path.dirname(doc), path)) if path else f"{root}/{doc}"
        if not os.path.exists(full): bad.append(f"{doc}: link {target}: {path} does not exist")
        elif anchor and anchor not in anchors(full): bad.append(f"{doc}: link {target}: no heading of {path or doc} has the anchor #{anchor}")
print(n)
for b in bad: print(b)
PY
)
[ $? -eq 0 ] || fail "17: the link check did not run: $out"
n=$(head -1 <<<"$out"); rest=$(tail -n +2 <<<"$out")
[ -z "$rest" ] || fail "17: links in the documentation that lead nowhere:
$rest"
# fewer would mean the extraction broke (README.md held 10 on 2026-12-02)
[ "$n" -ge 8 ] || fail "17: only $n links found in the documentation"
echo "17: the $n links of the documentation lead to files that exist, and their anchors to headings"
SRC=/usr/share/datasets/fashion-mnist
[ -d $SRC ] || { echo "skipped: $SRC absent"; exit 77; }
rm -rf "$T" && mkdir -p "$T" && T=$(cd "$T" && pwd)
cd "$T" || fail "cd $T"
$M mkdb $SRC db --split test --limit 256 --shuffle --seed 3 --quiet >/dev/null || fail mkdb
MODEL="--arch resnet18-cifar --width 4 --batch-size 32 --moco-k 128 --threads 1"
# 4 (and the fixture): no --recipe, no preset, no --aug-plus: v1, named in the first line
timeout 120 $M run db --workers 1 --size 28 $MODEL --epochs 1 --run-dir r28 >/dev/null 2>r28.err \
  || fail "moco run (the fixture): $(tail -3 r28.err)"
C=r28/checkpoint_last.safetensors
[ -e $C ] || fail "the fixture run saved no checkpoint"
grep -q "augment .*--recipe v1 --size 28 " r28.err || fail "4: moco run without --recipe: the workers did not get v1: $(grep augment r28.err)"
grep -q "^moco run: db: .*recipe v1 at 28 px" r28.err || fail "4: moco run's first line does not name the recipe: $(head -2 r28.err)"
timeout 60 $M run db --sink --workers 1 --size 28 --epochs 1 --run-dir rs >/dev/null 2>rs.err || fail "moco run --sink: $(tail -3 rs.err)"
grep -q "augment .*--recipe v2 " rs.err || fail "4: moco run --sink without --recipe: the stream's recipe is not v2: $(grep augment rs.err)"
echo "4: moco run trains with v1 without --recipe, a preset or --aug-plus (--sink: v2), and names the recipe"

# 1. streamed lincls at the checkpoint's size
LC="--train db --test db --epochs 1 --workers 1 --threads 1"
timeout 120 $M lincls --ckpt $C $LC --out lc >lc.out 2>lc.err || fail "1: moco lincls: $(tail -3 lc.err)"
grep -q "augment .*--recipe lincls --size 28 " lc.err || fail "1: lincls workers not at the checkpoint's 28 px: $(grep augment lc.err)"
grep -q '"size":28,"normalize":"cifar"' lc/lincls.json || fail "1: lincls.json does not record size 28: $(cat lc/lincls.json)"
tail -1 lc.out | grep -q '"size":28' || fail "1: the JSON line does not record size 28: $(tail -1 lc.out)"
timeout 120 $M lincls --ckpt $C $LC --size 0 --out lc0 >/dev/null 2>lc0.err || fail "1: moco lincls --size 0: $(tail -3 lc0.err)"
grep -q '"size":28' lc0/lincls.json || fail "1: --size 0 is not the checkpoint's size: $(cat lc0/lincls.json)"
timeout 120 $M lincls --ckpt $C $LC --size 24 --out lc24 >/dev/null 2>lc24.err || fail "1: moco lincls --size 24: $(tail -3 lc24.err)"
grep -q "augment .*--size 24 " lc24.err && grep -q '"size":24' lc24/lincls.json || fail "1: --size 24 not kept: $(cat lc24/lincls.json)"
echo "1: streamed lincls at the checkpoint's training size (28), --size 0 the same, --size 24 kept; size and normalisation recorded"

# 2. a directory that is no dataset
mkdir -p imgs/train/cat empty && : >imgs/train/cat/a.jpg
for c in "info imgs/train" "run imgs/train --run-dir x2" "knn --ckpt $C --train imgs/train --test db"; do
  err=$($M $c 2>&1 >/dev/null); rc=$?
  [ $rc -ne 0 ] && [[ $err == *"imgs/train is a directory but not a moco dataset (no data.mdb); an image folder? pack it first: moco mkdb imgs/train OUT"* ]] \
    || fail "2: moco $c: rc $rc, '$err'"
done
err=$($M info empty 2>&1); [[ $err == *"empty is a directory but not a moco dataset (no data.mdb"* ]] || fail "2: moco info empty: '$err'"
err=$($M info missing 2>&1); [[ $err == *"missing: cannot open dataset: No such file or directory"* ]] || fail "2: moco info missing: '$err'"
[ -e x2 ] && fail "2: moco run on an image folder made its run directory"
echo "2: an image folder given as a dataset: said so, with the moco mkdb command"

# 3. run directories
mkdir -p early && : >early/workers.log && : >early/.lock
err=$($M run db --workers 1 --size 28 $MODEL --epochs 1 --run-dir early 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"--run-dir early is not empty (it holds workers.log) and holds no checkpoint_last.safetensors"*"give --overwrite"* ]] \
  && [[ $err != *"--resume"* ]] || fail "3: a directory without a checkpoint: rc $rc, '$err'"
err=$($M run db --workers 1 --size 28 $MODEL --epochs 1 --run-dir r28 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"give --resume r28 to continue its run, --overwrite"* ]] || fail "3: a directory with a checkpoint: rc $rc, '$err'"
ls -A early >early.before
err=$($M run db --workers 1 --size 28 $MODEL --epochs 1 --run-dir early --resume early 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"--resume early: a directory without checkpoint_last.safetensors"* ]] \
  || fail "3: --resume of a directory without a checkpoint: rc $rc, '$err'"
ls -A early | cmp -s - early.before || fail "3: --resume without a checkpoint started something: $(ls -A early)"
err=$($M run db --workers 1 --size 28 $MODEL --epochs 1 --run-dir new3 --resume nonexist.safetensors 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"--resume nonexist.safetensors: No such file or directory"* ]] && [ ! -e new3 ] \
  || fail "3: a missing --resume: rc $rc, '$err', $(ls -A new3 2>&1)"
# a live run's directory (its lock held; it holds logs by now): "in use", not "not empty"
mkdir -p live && : >live/workers.log
flock live/.lock sleep 30 & LK=$!
for _ in $(seq 300); do flock -n live/.lock true 2>/dev/null || break; sleep 0.1; done
err=$($M run db --workers 1 --size 28 $MODEL --epochs 1 --run-dir live 2>&1); rc=$?
kill $LK 2>/dev/null; wait $LK 2>/dev/null
[ $rc -eq 1 ] && [[ $err == *"live is in use by another run"* ]] || fail "3: a live run's directory: rc $rc, '$err'"
echo "3: run directories: in use before not empty; --overwrite advised without a checkpoint; --resume checked before anything starts"

# 5. a flag neither moco run's nor moco train's
err=$($M run db --worker 1 --run-dir r5 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"moco run: unknown option '--worker' (neither a run flag nor a train flag); did you mean --workers?"* ]] \
  && [[ $err == *"Try 'moco run --help' and 'moco train --help'."* ]] && [ ! -e r5 ] || fail "5: --worker: rc $rc, '$err'"
err=$($M run db --epoch 1 --run-dir r5 2>&1); [[ $err == *"did you mean --epochs?"* ]] || fail "5: --epoch: '$err'"
err=$($M train --connect ipc://x --out r5 --moco-kk 4 2>&1); [[ $err == *"moco train: unknown option '--moco-kk'; did you mean --moco-k?"* ]] \
  || fail "5: moco train --moco-kk: '$err'"
echo "5: an unknown moco run flag: said as moco run's, did-you-mean, both helps"

# 6. --moco-k and --bn-splits apart
err=$($M train --connect ipc://x --out r6 --batch-size 64 --moco-k 512 --bn-splits 3 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"--batch-size 64 must be a multiple of --bn-splits 3"* ]] && [[ $err != *"moco-k"* ]] \
  || fail "6: --bn-splits 3: rc $rc, '$err'"
err=$($M train --connect ipc://x --out r6 --batch-size 64 --moco-k 500 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"--moco-k 500 must be a multiple of the keys per step (64"* ]] && [[ $err != *"bn-splits"* ]] \
  || fail "6: --moco-k 500: rc $rc, '$err'"
echo "6: --moco-k and --bn-splits: a message each, with the values"

# 7. 0: the checkpoint's
# (the same figure and the same features as without the flags)
$M knn --ckpt $C --train db --test db --threads 1 >k7a.out 2>k7.err || fail "7: knn: $(cat k7.err)"
$M knn --ckpt $C --train db --test db --size 0 --width 0 --moco-dim 0 --threads 1 >k7.out 2>k7.err \
  || fail "7: knn --size 0 --width 0 --moco-dim 0: $(cat k7.err)"
k7a=$(tail -1 k7a.out | grep -o '"knn_top1":[0-9.]*'); k7=$(tail -1 k7.out | grep -o '"knn_top1":[0-9.]*')
[ -n "$k7a" ] && [ "$k7" = "$k7a" ] || fail "7: knn with 0s gave '$k7', without '$k7a'"
$M embed --ckpt $C --db db --out e7a.npy --threads 1 >/dev/null 2>e7.err || fail "7: embed: $(cat e7.err)"
$M embed --ckpt $C --db db --out e7.npy --moco-dim 0 --width 0 --size 0 --threads 1 >/dev/null 2>e7.err || fail "7: embed 0s: $(cat e7.err)"
cmp -s e7.npy e7a.npy || fail "7: embed with 0s wrote other features than without"
err=$($M knn --ckpt $C --train db --test db --size -1 2>&1); [[ $err == *"--size: -1 is outside [0, 4096]"*"Try 'moco knn --help'."* ]] \
  || fail "7: knn --size -1: '$err'"
echo "7: knn and embed take 0 for the checkpoint's --size, --width, --moco-dim"

# 8. bench pipeline leaves nothing behind
mkdir -p b8/tmp && (cd b8 && TMPDIR=$T/b8/tmp timeout 60 $M bench pipeline --db ../db --workers 1 --recipe cifar --size 28 --seconds 0.5 --warmup 0.2 \
  >out 2>err) || fail "8: bench pipeline: $(tail -3 b8/err)"
grep -q '"bench":"pipeline"' b8/out || fail "8: bench pipeline printed no JSON line: $(cat b8/out)"
[ -e b8/runs ] && fail "8: bench pipeline left $(find b8/runs -type f | head -3)"
[ -z "$(ls -A b8/tmp)" ] || fail "8: bench pipeline left its temporary logs: $(ls -A b8/tmp)"
timeout 60 $M bench pipeline --db db --workers 1 --recipe cifar --size 28 --seconds 0.5 --warmup 0.2 --run-dir b8r >/dev/null 2>&1 \
  && [ -s b8r/sink.json ] || fail "8: bench pipeline --run-dir: no sink.json in b8r: $(ls -A b8r 2>&1)"
echo "8: bench pipeline: logs in a temporary directory, removed; kept in --run-dir"

# 9. outputs under a missing directory
for c in "export --ckpt $C --out nodir/x.safetensors" "embed --ckpt $C --db db --out nodir/e.npy --threads 1" "plot r28 --out nodir/c.png" \
         "preview db --out nodir/p.png --n 2 --size 28"; do
  o=${c#* --out }; o=${o%% *}
  err=$($M $c 2>&1 >/dev/null); rc=$?
  [ $rc -eq 1 ] && [[ $err == *"cannot write $o: directory nodir does not exist"* ]] && [[ $err != *.tmp* ]] \
    && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "9: moco $c: rc $rc, '$err'"
done
err=$($M mkdb imgs/train "$T/nodir/out" --quiet 2>&1); rc=$?
[ $rc -ne 0 ] && [[ $err == *"cannot create $T/nodir/out: directory $T/nodir does not exist"* ]] && [[ $err != *.tmp* ]] \
  || fail "9: mkdb into a missing directory: rc $rc, '$err'"
[ -e nodir ] && fail "9: something made nodir"
echo "9: outputs under a missing directory: the user's path and the missing directory named"

# 10. mkdb's arguments swapped
err=$($M mkdb db newdb 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"db is a moco dataset (it holds data.mdb), not a source to pack: usage: moco mkdb SRC OUT"* ]] \
  && [[ $err != *"ignoring"* ]] && [ ! -e newdb ] || fail "10: moco mkdb DB NEW: rc $rc, '$err'"
echo "10: moco mkdb with a dataset as SRC: said so"

# 11a. embed's outputs in moco --help
$M --help | grep -q "^  embed .*F\.npy" || fail "11a: moco --help on embed: $($M --help | grep embed)"
# 11c. --ckpt RUN_DIR
$M knn --ckpt r28 --train db --test db --threads 1 2>&1 | tail -1 | grep -q '"ckpt":"r28/checkpoint_last.safetensors"' \
  || fail "11c: knn --ckpt r28: $($M knn --ckpt r28 --train db --test db 2>&1 | tail -1)"
$M embed --ckpt r28 --db db --out e11.npy --threads 1 >/dev/null 2>e11.err || fail "11c: embed --ckpt r28: $(cat e11.err)"
$M embed --ckpt r28/checkpoint_last.safetensors --db db --out e11a.npy --threads 1 >/dev/null 2>e11.err \
  || fail "11c: embed --ckpt r28/checkpoint_last.safetensors: $(cat e11.err)"
cmp -s e11.npy e11a.npy || fail "11c: embed --ckpt r28 wrote other features than of r28/checkpoint_last.safetensors"
$M export --ckpt r28 --out x11.safetensors >/dev/null 2>x11.err || fail "11c: export --ckpt r28: $(cat x11.err)"
$M export --ckpt r28/checkpoint_last.safetensors --out x11a.safetensors >/dev/null 2>x11.err \
  || fail "11c: export --ckpt r28/checkpoint_last.safetensors: $(cat x11.err)"
cmp -s x11.safetensors x11a.safetensors || fail "11c: export --ckpt r28 wrote another file than of r28/checkpoint_last.safetensors"
timeout 120 $M lincls --ckpt r28 $LC --out lc11 >/dev/null 2>lc11.err && grep -q '"size":28' lc11/lincls.json \
  || fail "11c: lincls --ckpt r28: $(tail -3 lc11.err)"
# streamed lincls into the training run's own directory: refused, the run's files as they were (before: its
# loader.jsonl and workers.jsonl were replaced by the evaluation's)
md5sum r28/* >r28.md5
timeout 120 $M lincls --ckpt r28 $LC --out r28 >/dev/null 2>lc12.err; rc=$?
[ $rc -eq 2 ] && grep -q "moco lincls: --out r28 holds a training run (r28/metrics.jsonl): its logs" lc12.err && md5sum -c --quiet r28.md5 \
  && [ ! -e r28/lincls.json ] || fail "11c: lincls --out r28 (a training run): exit $rc: $(tail -3 lc12.err)"
err=$($M knn --ckpt early --train db --test db 2>&1); [[ $err == *"--ckpt early: a directory without checkpoint_last.safetensors"* ]] \
  || fail "11c: knn --ckpt of a directory without a checkpoint: '$err'"
# 11d. not a safetensors file
err=$($M export --ckpt e11.npy --out x.safetensors 2>&1); [[ $err == *"e11.npy: not a safetensors checkpoint"* ]] || fail "11d: export of an .npy: '$err'"
err=$($M knn --ckpt db/data.mdb --train db --test db 2>&1); [[ $err == *"db/data.mdb: not a safetensors checkpoint"* ]] || fail "11d: knn of data.mdb: '$err'"
head -c 200 $C >cut.safetensors
err=$($M knn --ckpt cut.safetensors --train db --test db 2>&1); [[ $err == *"header length"*"does not fit the file"* ]] \
  || fail "11d: a checkpoint cut short is not 'not a safetensors': '$err'"
# 11e. PNG outputs need a .png name
for c in "preview db --out p.jpg --n 2 --size 28" "plot r28 --out c.jpg"; do
  err=$($M $c 2>&1 >/dev/null); rc=$?
  o=${c#* --out }; o=${o%% *}
  [ $rc -eq 2 ] && [[ $err == *"--out $o: "*"PNG; give a name ending in .png"* ]] && [ ! -e "$o" ] || fail "11e: moco $c: rc $rc, '$err'"
done
$M plot r28 --out C.PNG >/dev/null 2>&1 && [ -s C.PNG ] || fail "11e: plot --out C.PNG refused"
# 11f. the PyTorch trainer without its modules (python3 -S: no site packages)
if [ -x /usr/bin/python3 ]; then
  err=$(/usr/bin/python3 -S "$ROOT/tools/python/train_moco_torch.py" --help 2>&1); rc=$?
  [ $rc -eq 1 ] && [[ $err == *"has no module"*"apt-get install python3-torch python3-numpy python3-zmq"* ]] && [[ $err != *Traceback* ]] \
    || fail "11f: train_moco_torch.py without torch: rc $rc, '$err'"
fi
echo "11: embed's .npy in moco --help; --ckpt RUN_DIR; not a safetensors checkpoint; .png outputs; the PyTorch trainer's missing modules"
# 12. main_moco.py's long names --learning-rate and --weight-decay are --lr and --wd, and a
#     preset's values give way to them as to --lr and --wd (before: unknown options)
rm -rf al
timeout 120 $M run db --workers 1 --preset cifar --size 28 --width 4 --batch-size 32 --moco-k 256 --epochs 1 --kernels rule \
  --learning-rate 0.123 --weight-decay 0.0007 --run-dir al --quiet >/dev/null 2>al.err || fail "12: --learning-rate: $(tail -3 al.err)"
grep -q '"lr":0.123' al/metrics.jsonl && head -c 4000 al/checkpoint_last.safetensors | grep -aq 'wd\\":0.0007' \
  || fail "12: --learning-rate 0.123 / --weight-decay 0.0007 under --preset cifar: $(grep -o '"lr":[0-9.e-]*' al/metrics.jsonl | head -1)"
echo "12: --learning-rate and --weight-decay (main_moco.py's names) over a preset's"
# 13. main_moco.py's -a -b -j (before: "unknown option '-a' (options are --long)")
$M train --help | grep -q -- '^  -a, --arch X  ' && $M train --help | grep -q -- '^  -b, --batch-size N  ' \
  && $M run --help | grep -q -- '^  -j, --workers N  ' && $M train --help | grep -q -- '^  -h, --help  ' \
  || fail "13: --help does not list -a, -b, -j, -h: $($M train --help | grep -e '--arch ' -e '--batch-size ' -e '--help'; $M run --help | grep -e '--workers ')"
rm -rf r13
timeout 120 $M run db -j 1 --size 28 -a resnet18-cifar --width 4 -b 32 --K 128 --m 0.99 --T 0.2 --threads 1 --epochs 1 --kernels rule \
  --run-dir r13 >/dev/null 2>r13.err || fail "13: moco run -j 1 -a resnet18-cifar -b 32: $(tail -3 r13.err)"
grep -q "^moco run: db: 256 samples, 1 epochs, 1 workers," r13.err || fail "13: -j 1 is not 1 worker: $(head -1 r13.err)"
cfg=$(head -c 4000 r13/checkpoint_last.safetensors | tr -d '\\\000')  # the default arch is resnet50, the default batch 256
[[ $cfg == *'"arch":"resnet18-cifar"'* && $cfg == *'"batch_size":32,'* ]] \
  || fail "13: -a resnet18-cifar -b 32 not in the checkpoint's config: $(grep -ao '"arch":"[^"]*"\|"batch_size":[0-9]*' <<<"$cfg")"
for b in "-b48" "-b=48" "-b 48"; do  # the trainer's check of --moco-k names the batch -b gave
  err=$($M train --connect ipc://x --out r13b $b --moco-k 500 2>&1); rc=$?
  [ $rc -eq 2 ] && [[ $err == *"--moco-k 500 must be a multiple of the keys per step (48: --batch-size 48"* ]] \
    || fail "13: moco train $b: rc $rc, '$err'"
done
err=$($M run db -B 32 --run-dir r13c 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"moco run: unknown option '-B' (neither a run flag nor a train flag); did you mean -b?"* ]] && [ ! -e r13c ] \
  || fail "13: moco run -B: rc $rc, '$err'"
err=$($M run db -lr 0.03 --run-dir r13c 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"unknown option '-lr' (neither a run flag nor a train flag); did you mean --lr?"* ]] && [ ! -e r13c ] \
  || fail "13: moco run -lr: rc $rc, '$err'"
err=$($M run db -j x --run-dir r13c 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"moco run: -j: 'x' is not an integer"* ]] || fail "13: moco run -j x: rc $rc, '$err'"
# the evaluation commands and bench augment take them too (main_lincls.py's -a -b)
err=$($M knn --ckpt r13 --train db --test db -a resnet50 2>&1); rc=$?
[ $rc -ne 0 ] && [[ $err == *"holds a resnet18-cifar encoder; --arch resnet50 contradicts it"* ]] || fail "13: moco knn -a resnet50: rc $rc, '$err'"
$M lincls --help | grep -q -- '^  -b, --batch-size N  ' && $M lincls --help | grep -q -- '^  -a, --arch X  ' \
  && $M bench augment --help | grep -q -- '^  -j, --workers N  ' \
  || fail "13: lincls --help lacks -a/-b or bench augment --help lacks -j: $($M lincls --help | grep -e '--arch ' -e '--batch-size '; $M bench augment --help | grep -e '--workers ')"
# moco lincls checks its consumer's flags before it starts anything (before: the pipeline ran, then failed)
err=$(timeout 60 $M lincls --ckpt r13 --train db --test db --run-dir r13l --epoch 3 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == "moco lincls: unknown option '--epoch'; did you mean --epochs?"* ]] && [ ! -e r13l ] \
  || fail "13: moco lincls --epoch: rc $rc, r13l $([ -e r13l ] && echo made), '$err'"
echo "13: main_moco.py's -a -b -j (spaced, attached, -b=V), in --help, with did-you-mean"
# 14. bench train: --moco-k --moco-m --moco-t, and --K --m --T the same (before: --moco-k unknown)
$M bench train --help | grep -q -- '^  --moco-k, --K N  ' && $M bench train --help | grep -q -- '^  --moco-m, --m F  ' \
  && $M bench train --help | grep -q -- '^  --moco-t, --T F  ' || fail "14: bench train --help: $($M bench train --help | grep -i -e moco- -e ' --[KmT] ')"
BT="bench train --width 4 --batch-size 8 --size 16 --steps 2 --warmup 1 --threads 1 --bn-splits 2 --kernels rule --lr 0.5"
$M $BT --moco-k 64 --moco-m 0.5 --moco-t 0.2 >b14n.out 2>b14.err || fail "14: bench train --moco-k: $(tail -3 b14.err)"
$M $BT --K 64 --m 0.5 --T 0.2 >b14o.out 2>b14.err || fail "14: bench train --K: $(tail -3 b14.err)"
$M $BT --K 64 >b14d.out 2>b14.err || fail "14: bench train, default m and T: $(tail -3 b14.err)"
new=$(tail -1 b14n.out) old=$(tail -1 b14o.out) dflt=$(tail -1 b14d.out)
l_new=$(grep -o '"K":64,.*"loss":[0-9.]*' <<<"$new" | grep -o '"loss":[0-9.]*$')
l_old=$(grep -o '"K":64,.*"loss":[0-9.]*' <<<"$old" | grep -o '"loss":[0-9.]*$')
l_dflt=$(grep -o '"loss":[0-9.]*' <<<"$dflt")
[ -n "$l_new" ] && [ "$l_new" = "$l_old" ] && [ -n "$l_dflt" ] && [ "$l_new" != "$l_dflt" ] \
  || fail "14: --moco-k/-m/-t 64/0.5/0.2 gave '$l_new', --K/--m/--T '$l_old' (want the same), defaults '$l_dflt' (want another): $new"
echo "14: bench train: --moco-k --moco-m --moco-t ($l_new), --K --m --T the same, the defaults not ($l_dflt)"
# 15. moco train's --K --m --T (before: "unknown option '--K'")
$M train --help | grep -q -- '^  --moco-k, --K N  ' && $M train --help | grep -q -- '^  --moco-m, --m F  ' \
  && $M train --help | grep -q -- '^  --moco-t, --T F  ' || fail "15: train --help: $($M train --help | grep -i -e moco- -e ' --[KmT] ')"
# 13's run took --K 128 --m 0.99 --T 0.2 through moco run; the defaults are 65536, 0.999, 0.07 (the fixture r28: 128, 0.999, 0.07)
cfg28=$(head -c 4000 $C | tr -d '\\\000')
[[ $cfg == *'"K":128,"m":0.99,"T":0.2,'* && $cfg28 == *'"K":128,"m":0.999,"T":0.07,'* ]] \
  || fail "15: --K 128 --m 0.99 --T 0.2 not in the checkpoint's config: $(grep -o '"K":[^,]*,"m":[^,]*,"T":[^,]*' <<<"$cfg"), fixture $(grep -o '"K":[^,]*,"m":[^,]*,"T":[^,]*' <<<"$cfg28")"
for k in "--K 500" "--K=500" "--moco-k 500"; do
  err=$($M train --connect ipc://x --out r15 -b 64 $k 2>&1); rc=$?
  [ $rc -eq 2 ] && [[ $err == "moco train: --moco-k 500 must be a multiple of the keys per step (64: --batch-size 64)" ]] \
    || fail "15: moco train $k: rc $rc, '$err'"
done
err=$($M train --connect ipc://x --out r15 --m 2 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == "moco train: --m: 2 is outside [0, 1]"* ]] || fail "15: moco train --m 2: rc $rc, '$err'"
err=$($M train --connect ipc://x --out r15 --T 0 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == "moco train: --T: 0 is outside [0.0001, 100]"* ]] || fail "15: moco train --T 0: rc $rc, '$err'"
err=$($M run db --k 4096 --run-dir r15 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"moco run: unknown option '--k' (neither a run flag nor a train flag); did you mean --K?"* ]] && [ ! -e r15 ] \
  || fail "15: moco run --k: rc $rc, '$err'"
err=$($M train --connect ipc://x --out r15 --moco-mm 0.9 2>&1); rc=$?
[ $rc -eq 2 ] && [[ $err == *"moco train: unknown option '--moco-mm'; did you mean --moco-m?"* ]] || fail "15: moco train --moco-mm: rc $rc, '$err'"
echo "15: moco train and moco run: --K --m --T as bench train's, in --help, the same fields as --moco-k --moco-m --moco-t"
echo "cli_usage: a new user's mistakes are named, with advice that works"
