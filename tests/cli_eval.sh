#!/usr/bin/env bash
# cli_eval.sh: the edges of the evaluation commands (knn, lincls, embed,
# export) and of the training flags they share, on a Fashion-MNIST subset
# (Debian package; skipped when absent) with a tiny ResNet (a run of one
# epoch, a few seconds):
#  a. --schedule beyond the --epochs maximum (or int) is refused naming it
#     (train, lincls): 4294967297 was epoch 1, 2147483648 epoch -2^31;
#  b. moco train --size is capped at the workers' largest view (2048);
#  c. an empty --train / --test set: "holds no samples", exit 1 (knn,
#     lincls) and refused by the training monitor before the first step;
#  d. embed: an unlabelled dataset removes an old OUT.labels.npy; a labels
#     file that cannot be written leaves no features file; a failed fsync
#     of either new file leaves the old pair as it was;
#  e. export / embed --out naming the --ckpt file (or a link to it):
#     refused, the checkpoint intact; an --out whose extension is not a
#     format the command writes (export: .safetensors, .st; embed: also
#     .npy): refused, naming them, nothing written;
#  f. batch 1 in the evaluation commands (BN in eval mode): the same kNN as
#     batch 256 (it was refused as training BN's "2 samples per split");
#  g. --k beyond the bank: the effective k reported, and said on stderr
#     (moco knn; the training monitor at its start);
#  h. the normalisation travels in the checkpoint: knn's --normalize auto
#     is the training's, a contradicting --normalize is refused, a resume
#     with another one is a schedule change;
#  i. a bad --resume is refused before the model is built, leaving no new
#     --out directory.
# The empty and unlabelled datasets are made by editing copies of a real
# one with a small LMDB program (compiled here; those checks are skipped
# without a C compiler).
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/eval
SRC=/usr/share/datasets/fashion-mnist
[ -d $SRC ] || { echo "skipped: $SRC absent"; exit 77; }
rm -rf "$T" && mkdir -p "$T" && T=$(cd "$T" && pwd)
cd "$T" || fail "cd $T"
$M mkdb $SRC db --split test --limit 256 --shuffle --seed 3 --quiet >/dev/null || fail mkdb
$M mkdb $SRC bank --split train --limit 300 --shuffle --seed 2 --quiet >/dev/null || fail mkdb
MODEL="--arch resnet18-cifar --width 4 --batch-size 32 --moco-k 256 --moco-m 0.99 --moco-t 0.1 --cos --bn-splits 4 --threads 1"
RUN="--workers 1 --recipe cifar --size 28 --seed 1 $MODEL --lr 0.06 --quiet --kernels rule"
timeout 120 $M run db $RUN --epochs 1 --normalize imagenet --run-dir r >/dev/null 2>r.err || fail "moco run: $(tail -3 r.err)"
CK=r/checkpoint_last.safetensors
EV="--train bank --test db --threads 1"

# a. --schedule in range
for s in 4294967297 2147483648 1000001; do
  timeout -s KILL 20 $M train --connect ipc://$T/none --out ta --schedule "10,$s" >/dev/null 2>ta.err; rc=$?
  [ $rc -eq 2 ] && grep -q "moco train: --schedule '10,$s': epoch $s is outside \[0, 1000000\]" ta.err \
    || fail "train --schedule 10,$s: exit $rc: $(cat ta.err)"
  $M lincls --ckpt $CK $EV --cached-features --epochs 3 --schedule "$s" >/dev/null 2>la.err; rc=$?
  [ $rc -eq 2 ] && grep -q "moco lincls: --schedule '$s': epoch $s is outside" la.err || fail "lincls --schedule $s: exit $rc: $(cat la.err)"
done
[ -e ta ] && fail "a refused --schedule left --out ta"
echo "a: --schedule beyond 1000000 (or an int) refused, naming the flag and the value"

# b. moco train --size at most the workers' largest view
timeout -s KILL 20 $M train --connect ipc://$T/none --out tb --size 3000 >/dev/null 2>tb.err; rc=$?
[ $rc -eq 2 ] && grep -q -- "--size: 3000 is outside \[8, 2048\]" tb.err || fail "train --size 3000: exit $rc: $(cat tb.err)"
echo "b: moco train --size 3000 refused (the workers make views of 2048 at most)"

# f. batch 1 (BN in eval mode): the same figure as batch 256
k256=$($M knn --ckpt $CK $EV 2>knn.err | tail -1 | grep -o '"knn_top1":[0-9.]*') || fail "knn: $(cat knn.err)"
k1=$($M knn --ckpt $CK $EV --batch 1 2>knn1.err | tail -1 | grep -o '"knn_top1":[0-9.]*')
[ -n "$k1" ] && [ "$k1" = "$k256" ] || fail "knn --batch 1: '$k1' (batch 256: $k256): $(cat knn1.err)"
$M embed --ckpt $CK --db db --out b1.npy --batch 1 2>b1.err | grep -q "moco embed: 256 x 32 pooled features to b1.npy" \
  || fail "embed --batch 1: $(cat b1.err)"
l1=$($M lincls --ckpt $CK $EV --cached-features --forward-batch 1 --epochs 1 2>l1.err | tail -1)
echo "$l1" | grep -q '"lincls_top1":[0-9]' || fail "lincls --forward-batch 1: $(cat l1.err)"
echo "f: knn --batch 1 = batch 256 ($k1); embed --batch 1 and lincls --forward-batch 1 run"

# g. the effective k
out=$($M knn --ckpt $CK $EV --k 1000 2>kg.err | tail -1)
echo "$out" | grep -q '"k":300,' && grep -q "moco knn: --k 1000 exceeds the 300 samples of --train bank: k 300 used" kg.err \
  || fail "knn --k 1000 on a bank of 300: $out / $(cat kg.err)"
out=$($M knn --ckpt $CK $EV --k 7 2>kg7.err | tail -1)
echo "$out" | grep -q '"k":7,' && [ ! -s kg7.err ] || fail "knn --k 7: $out / $(cat kg7.err)"
timeout -s KILL 20 $M train --connect ipc://$T/none --out tg $MODEL --size 28 --kernels rule --knn-train bank --knn-test db --knn-k 1000 \
  --loader-timeout 1 >/dev/null 2>tg.err
grep -q "moco train: --knn-k 1000 exceeds the 300 samples of --knn-train bank: the kNN monitor uses k 300" tg.err \
  || fail "the monitor's --knn-k 1000 on a bank of 300: $(cat tg.err)"
echo "g: --k beyond the bank reports the k used (300) and says so (knn, and the monitor at its start)"

# h. the normalisation is the checkpoint's
grep -aq '"normalize\\":\\"imagenet\\",\\"mean\\":\[0.485,0.456,0.406\],\\"std\\":\[0.229,0.224,0.225\]' $CK \
  || fail "the checkpoint's config has no normalize: $(strings $CK | grep -o 'precision.*count' | head -1)"
kimg=$($M knn --ckpt $CK $EV --normalize imagenet | tail -1 | grep -o '"knn_top1":[0-9.]*')
[ "$k256" = "$kimg" ] || fail "knn with --normalize auto ($k256) differs from --normalize imagenet ($kimg), the training's"
$M knn --ckpt $CK $EV --normalize cifar >/dev/null 2>kh.err; rc=$?
[ $rc -eq 1 ] && grep -q "$CK was trained on inputs normalised as --normalize imagenet; --normalize cifar contradicts it" kh.err \
  || fail "knn --normalize cifar on an imagenet-normalised checkpoint: exit $rc: $(cat kh.err)"
$M embed --ckpt $CK --db db --out h.npy --normalize none >/dev/null 2>eh.err; rc=$?
[ $rc -eq 1 ] && grep -q "contradicts it" eh.err && [ ! -e h.npy ] || fail "embed --normalize none: exit $rc: $(cat eh.err)"
timeout 60 $M run db $RUN --epochs 1 --run-dir r --resume r >/dev/null 2>rh.err; rc=$?
[ $rc -eq 2 ] && grep -q "^moco run: .*another schedule: --normalize cifar (checkpoint: imagenet)" rh.err \
  || fail "resume with another --normalize: exit $rc: $(grep 'moco train' rh.err | tail -2)"
echo "h: the checkpoint's normalisation (imagenet at 28 px) is knn's auto; --normalize cifar refused; a resume with another refused"

# i. a bad --resume: refused before the model is built, no --out left
echo hello >txt; : >emptyf
for r in "$CK" emptyf txt; do
  rm -rf ri
  t0=$SECONDS
  timeout -s KILL 30 $M train --connect ipc://$T/none --out ri --resume $r >/dev/null 2>ri.err; rc=$?
  case $r in
    $CK) want="holds a resnet18-cifar of width 4, dim 128; this run builds a resnet50 of width 64" ;;
    *) want="$r: shorter than a safetensors header" ;;
  esac
  [ $rc -eq 1 ] && grep -q "$want" ri.err || fail "train --resume $r: exit $rc after $((SECONDS - t0)) s: $(tail -2 ri.err)"
  [ -e ri ] && fail "train --resume $r left --out ri: $(ls -A ri)"
done
# a run that fails after making --out (no loader answers: it waits --loader-timeout, then stops) removes the
# --out it made (lock and empty metrics.jsonl with it), and keeps one it had not made, which the next run
# takes again (a lock alone is no earlier run's output: the third run fails for the loader, not for ri2)
mkdir ri2
for o in ri3 ri2 ri2; do
  timeout -s KILL 30 $M train --connect ipc://$T/none --out $o --loader-timeout 1 --arch resnet18-cifar --width 4 \
    --kernels rule >/dev/null 2>ri.err; rc=$?
  [ $rc -eq 1 ] && grep -q "no loader answered at ipc://$T/none in 1 s (no WELCOME to this consumer's HELLO)" ri.err || fail "train --out $o, no loader: exit $rc: $(tail -2 ri.err)"
done
[ -e ri3 ] && fail "a run that failed before its first checkpoint left the --out it made: $(ls -A ri3)"
[ -d ri2 ] || fail "a failed run removed an --out it had not made"
[ "$(ls -A ri2)" = .lock ] || fail "failed runs left more than their lock in --out ri2: $(ls -A ri2)"
# stopped (SIGINT) while it waits for its loader: nothing trained, so no checkpoint and no --out left (before: a
# checkpoint of the initial weights, and the advice to resume it)
$M train --connect ipc://$T/none --out ri4 --arch resnet18-cifar --width 4 --kernels rule >/dev/null 2>ri.err & p=$!
for _ in $(seq 100); do [ -e ri4/metrics.jsonl ] && break; sleep 0.1; done
sleep 0.5; kill -INT $p; wait $p; rc=$?
[ $rc -ne 0 ] && grep -q "interrupted before the first step" ri.err && ! grep -q "resume" ri.err \
  || fail "train stopped while waiting for its loader: exit $rc: $(tail -2 ri.err)"
[ -e ri4 ] && fail "train stopped before its first step left --out ri4: $(ls -A ri4)"
echo "i: --resume of another model, an empty file, a text file: refused at once, no --out left; a run without a loader, failed or stopped, removes the --out it made only"

# e. --out naming the checkpoint
cp $CK keep.st; cp $CK c.st; ln -s c.st link.st
for c in "export --ckpt c.st --out c.st" "export --ckpt c.st --out link.st" "embed --ckpt c.st --db db --out link.st" \
         "embed --ckpt c.st --db db --out c.st"; do
  $M $c >/dev/null 2>e.err; rc=$?
  [ $rc -eq 1 ] && grep -q "is the checkpoint --ckpt c.st (the same file)" e.err && cmp -s c.st keep.st \
    || fail "$c: exit $rc: $(cat e.err)"
done
cp $CK c.labels.npy
$M embed --ckpt c.labels.npy --db db --out c.npy >/dev/null 2>e.err; rc=$?
[ $rc -eq 1 ] && grep -q "is the checkpoint" e.err && [ ! -e c.npy ] && cmp -s c.labels.npy keep.st \
  || fail "embed --out c.npy, its labels file the checkpoint: exit $rc: $(cat e.err)"
echo "e: export / embed --out naming the checkpoint (or a link to it) refused, the checkpoint intact"
# ... and an --out whose extension names a format the command does not write (before: features.bin
# and encoder.pt held safetensors, silently, that np.fromfile and torch.load then misread or refused)
for c in "export --ckpt c.st --out enc.pt" "export --ckpt c.st --out enc.npy" "embed --ckpt c.st --db db --out feat.bin" \
         "embed --ckpt c.st --db db --out feat"; do
  $M $c >/dev/null 2>e.err; rc=$?
  o=${c##* }
  case $c in
    export*) want="moco export: --out $o: moco export writes safetensors only: give FILE.safetensors (or FILE.st)" ;;
    *) want="moco embed: --out $o: moco embed writes FILE.npy (NumPy; labels in FILE.labels.npy) or FILE.safetensors (or FILE.st)" ;;
  esac
  [ $rc -eq 2 ] && grep -qF "$want" e.err && [ ! -e "$o" ] && [ -z "$(ls | grep "^${o%.*}\.")" ] \
    || fail "$c: exit $rc (want 2, nothing written): $(cat e.err); $(ls | grep "^${o%.*}")"
done
$M embed --ckpt c.st --db db --out feat.SafeTensors >/dev/null 2>e.err && [ -s feat.SafeTensors ] || fail "embed --out feat.SafeTensors: $(cat e.err)"
echo "e: export / embed --out of another extension (.pt, .npy for export, .bin or none for embed): exit 2 naming the supported ones, nothing written"

# d. embed writes a consistent pair
rm -rf z.npy z.labels.npy; mkdir z.labels.npy
$M embed --ckpt $CK --db db --out z.npy >/dev/null 2>z.err; rc=$?
[ $rc -eq 1 ] && grep -q "z.labels.npy is a directory" z.err && [ ! -e z.npy ] && [ -z "$(ls | grep 'z\..*tmp')" ] \
  || fail "embed with a labels path that cannot be written: exit $rc, $(ls -d z* | tr '\n' ' '): $(cat z.err)"
# the features' write failing at their fsync (a full disk: MOCO_TEST_FAIL_FSYNC), over an old pair: both
# files stay as they were (before: the new labels had replaced the old ones, and were then removed)
$M embed --ckpt $CK --db db --out y.npy >/dev/null 2>y.err && md5sum y.npy y.labels.npy >y.md5 || fail "embed y.npy: $(cat y.err)"
for sfx in y.npy.tmp y.labels.npy.tmp; do
  MOCO_TEST_FAIL_FSYNC=$sfx $M embed --ckpt $CK --db db --out y.npy --batch 8 >/dev/null 2>y.err; rc=$?
  [ $rc -eq 1 ] && grep -q "cannot write .*${sfx%.tmp}: No space left on device; it is left as it was" y.err && md5sum -c --quiet y.md5 \
    && [ -z "$(ls | grep 'y\..*tmp')" ] || fail "embed over an old pair, the fsync of $sfx failing: exit $rc, $(ls y.* | tr '\n' ' '): $(cat y.err)"
done
echo "d: a labels file that cannot be written leaves no features file; a features or labels file whose fsync fails leaves the old pair as it was"

CC=${CC:-cc}
cat >edit.c <<'EOF'
/* edit.c DB empty|unlabel: an empty dataset (no samples, consistent metadata) or an unlabelled one (labels -1, 0 classes;
 * a version 2 record's header CRC, bytes 28..31, rewritten: formats/README.md) */
#include <lmdb.h>
#include <zlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv)
{
    MDB_env *e; MDB_txn *t; MDB_dbi s, m; MDB_val k, x; MDB_cursor *cu; uint64_t z = 0, enc[3] = {0, 0, 0}, n;
    if (argc != 3 || mdb_env_create(&e) || mdb_env_set_maxdbs(e, 4) || mdb_env_set_mapsize(e, 1 << 26) || mdb_env_open(e, argv[1], 0, 0644) ||
        mdb_txn_begin(e, NULL, 0, &t) || mdb_dbi_open(t, "samples", 0, &s) || mdb_dbi_open(t, "meta", 0, &m)) return 1;
    if (!strcmp(argv[2], "empty")) {
        mdb_drop(t, s, 0);
        k.mv_data = "class_counts"; k.mv_size = 12; if (mdb_get(t, m, &k, &x)) return 1;
        MDB_val zc = {x.mv_size, calloc(1, x.mv_size)}, ze = {8, &z}, ee = {24, enc};
        mdb_put(t, m, &k, &zc, 0);
        k.mv_data = "count"; k.mv_size = 5; mdb_put(t, m, &k, &ze, 0);
        k.mv_data = "payload_bytes"; k.mv_size = 13; mdb_put(t, m, &k, &ze, 0);
        k.mv_data = "encodings"; k.mv_size = 9; mdb_put(t, m, &k, &ee, 0);
    } else {
        k.mv_data = "count"; k.mv_size = 5; if (mdb_get(t, m, &k, &x)) return 1;
        memcpy(&n, x.mv_data, 8);
        MDB_val nv = {8, &n}, ev = {0, ""};
        k.mv_data = "unlabelled"; k.mv_size = 10; mdb_put(t, m, &k, &nv, 0);
        k.mv_data = "classes"; k.mv_size = 7; mdb_put(t, m, &k, &ev, 0);
        k.mv_data = "class_counts"; k.mv_size = 12; mdb_put(t, m, &k, &ev, 0);
        mdb_cursor_open(t, s, &cu);
        while (!mdb_cursor_get(cu, &k, &x, MDB_NEXT)) {
            char *b = malloc(x.mv_size); int32_t l = -1;
            memcpy(b, x.mv_data, x.mv_size); memcpy(b + 8, &l, 4);
            if (b[4] >= 2) { uint32_t c = (uint32_t)crc32(0L, (const Bytef *)b, 28); memcpy(b + 28, &c, 4); } /* little-endian host */
            MDB_val y = {x.mv_size, b};
            mdb_cursor_put(cu, &k, &y, MDB_CURRENT);
            free(b);
        }
    }
    int rc = mdb_txn_commit(t);
    mdb_env_close(e);
    return rc != 0;
}
EOF
if ! $CC -o edit edit.c -llmdb -lz 2>cc.err; then
  echo "skipped: c, d (unlabelled): no C compiler with LMDB here: $(head -2 cc.err)"
  exit 0
fi
cp -r db empty && ./edit empty empty && cp -r db unl && ./edit unl unlabel || fail "editing the datasets"
$M info --verify empty >/dev/null 2>&1 || fail "the emptied dataset does not verify"

# c. empty sets
for c in "knn --ckpt $CK --train bank --test empty" "knn --ckpt $CK --train empty --test db" \
         "lincls --ckpt $CK --train bank --test empty --cached-features --epochs 1" \
         "lincls --ckpt $CK --train empty --test db --cached-features --epochs 1"; do
  $M $c --threads 1 >c.out 2>c.err; rc=$?
  [ $rc -eq 1 ] && grep -q "empty holds no samples" c.err && [ ! -s c.out ] || fail "$c: exit $rc: $(cat c.out c.err)"
done
# streamed lincls: its datasets checked before its pipeline starts (before: the started run failed, exit 1, and left
# a run directory of its logs under runs/)
mkdir -p sl && (cd sl && timeout 60 $M lincls --ckpt ../$CK --train ../db --test ../empty --epochs 1 --threads 1 >../c.out 2>../c.err); rc=$?
[ $rc -eq 2 ] && grep -q "moco lincls: ../empty holds no samples" c.err && ! grep -q "moco loader" c.err && [ -z "$(ls -A sl)" ] \
  || fail "streamed lincls with an empty --test: exit $rc, sl holds '$(ls -A sl)': $(cat c.err)"
rm -rf rc
timeout 60 $M run db $RUN --epochs 1 --run-dir rc --knn-train bank --knn-test empty >/dev/null 2>rc.err; rc=$?
[ $rc -eq 1 ] && grep -q -- "moco train: --knn-test empty: empty holds no samples" rc.err && [ ! -e rc/checkpoint_last.safetensors ] \
  || fail "the monitor with an empty --knn-test: exit $rc: $(grep moco rc.err | tail -2)"
echo "c: an empty kNN / lincls set: 'holds no samples', exit 1 (streamed lincls: exit 2, before its pipeline starts); the training monitor refuses it before the first step"

# d. an unlabelled dataset removes an old labels file
$M embed --ckpt $CK --db db --out st.npy >/dev/null && [ -s st.labels.npy ] || fail "embed of a labelled set: no labels file"
$M embed --ckpt $CK --db unl --out st.npy >/dev/null 2>st.err; rc=$?
[ $rc -eq 0 ] && [ ! -e st.labels.npy ] && grep -q "moco embed: unl is unlabelled: removed the old st.labels.npy" st.err \
  || fail "embed of an unlabelled set over an old pair: exit $rc, $(ls st.* | tr '\n' ' '): $(cat st.err)"
echo "d: an unlabelled dataset removes the old labels file beside the features"
echo "evaluation edges: ranges, empty sets, file pairs, batch 1, effective k, normalisation, early resume checks"
