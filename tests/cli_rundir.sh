#!/usr/bin/env bash
# cli_rundir.sh: the edges of a training run (issue "Trustworthy edges",
# items 3 and 7), on a Fashion-MNIST subset (Debian package; skipped when
# absent) with a tiny ResNet, so that each run takes a second or two:
#  3b. every input is checked before the first step: a missing --knn-train,
#      --knn-test, --resume or --keys fails at once, naming it (before: after
#      the first epoch, or never without a loader); a run directory moco run
#      made for a trainer that failed so is removed;
#  7e. `moco run DB --out DIR` trains into DIR (--out is --run-dir); a
#      trainer flag that moco run sets itself (--count, --connect) is
#      refused, not silently overridden;
#  7a. a run directory that holds something is refused without --resume or
#      --overwrite (moco run and moco train); --overwrite starts afresh; a
#      --resume of another directory's run into one holding another run is
#      refused;
#  7c. a resume with another --epochs / --lr is refused without
#      --allow-schedule-change, by moco run before it starts anything;
#  7q. a resume of a run already complete says so and starts nothing;
#  7r. a trainer's refusal is recorded in metrics.jsonl too;
#  3a. the epoch's checkpoint is written before its kNN evaluation: SIGTERM
#      as it appears stops the kNN, exit 130, and the printed command
#      resumes the run, evaluates epoch 0 and writes its record;
#  3c. SIGKILL during that evaluation: the resumed run has every epoch's
#      record once, kNN included (epoch 0's evaluated on resume);
#  3d. SIGTERM after an epoch's last step, before its end: the resume's
#      record of that epoch is marked recovered, not one of 0 pairs;
#  7d. a trainer killed (SIGKILL) steps after its last checkpoint and
#      resumed: metrics.jsonl has a "resume" record and no step twice;
#  7b. Ctrl-C to `moco run` mid-epoch: exit 130, a checkpoint, the command
#      that resumes, which finishes the run;
#  7f. the loader killed under `moco run`: exit 1, FAILED, a checkpoint, the
#      command that resumes, which finishes the run;
#  7o. a trainer that fails after saving a checkpoint: the resume command;
#  7p. moco run without --epochs trains moco train's 200 (main_moco.py's),
#      and --serve streams 200 as well;
#  8b. a preset's augmentation reaches the workers (the trainer's preset table).
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
HERE=$(cd "$(dirname "$0")" && pwd) # tests/, for dbrecords.py (the script cds into $T)
T=${MOCO_TEST_TMP:?}/rundir
SRC=/usr/share/datasets/fashion-mnist
[ -d $SRC ] || { echo "skipped: $SRC absent"; exit 77; }
rm -rf "$T" && mkdir -p "$T" && T=$(cd "$T" && pwd)
cd "$T" || fail "cd $T" # moco run's default run directory (runs/) lands here
$M mkdb $SRC db --split test --limit 512 --shuffle --seed 3 --quiet >/dev/null || fail mkdb
MODEL="--arch resnet18-cifar --width 4 --batch-size 32 --moco-k 256 --moco-m 0.99 --moco-t 0.1 --cos --bn-splits 4 --threads 1"
RUN="--workers 1 --recipe cifar --size 28 --seed 1 $MODEL --lr 0.06 --quiet"
steps() { grep -o '"type":"step","epoch":[0-9]*,"step":[0-9]*' "$1" | grep -o '[0-9]*$'; }
epochs() { grep -c '"type":"epoch"' "$1" 2>/dev/null; }

# 3b. inputs checked before the first step (no loader here: the old trainer waited for one)
TR="--connect ipc://$T/nothing-c --bind ipc://$T/nothing-p --size 28 --epochs 1 $MODEL"
for bad in "--knn-train $T/missing --knn-test db" "--knn-train db --knn-test $T/missing" "--resume $T/missing" "--keys $T/missing"; do
  rm -rf t3b
  timeout 20 $M train $TR --out t3b $bad >/dev/null 2>t3b.err; rc=$?
  [ $rc -eq 1 ] && grep -q "$T/missing" t3b.err || fail "train $bad: exit $rc (want 1 at once, naming it): $(tail -2 t3b.err)"
done
t0=$SECONDS
timeout 60 $M run db $RUN --epochs 1 --run-dir r3b --knn-train "$T/missing" --knn-test db >/dev/null 2>r3b.err; rc=$?
[ $rc -eq 1 ] && grep -q "$T/missing" r3b.err || fail "moco run with a missing --knn-train: exit $rc: $(tail -2 r3b.err)"
[ -e r3b/metrics.jsonl ] && fail "moco run with a missing --knn-train trained first: $(head -c 300 r3b/metrics.jsonl)"
# the run directory moco run made for it goes, as after a loader that cannot bind (before: r3b was left
# with .lock, loader.jsonl, loader.log, workers.jsonl and workers.log, and the corrected command was
# refused it as 'not empty'); so does runs/ made for the default one; an empty one given stays, empty
mkdir r3bd && cd r3bd || fail "cd r3bd"
timeout 60 $M run ../db $RUN --epochs 1 --knn-train "$T/missing" --knn-test ../db >/dev/null 2>../r3bd.err; rc=$?
cd "$T" || fail "cd $T"
mkdir r3be
timeout 60 $M run db $RUN --epochs 1 --run-dir r3be --knn-train "$T/missing" --knn-test db >/dev/null 2>r3be.err
[ $rc -eq 1 ] && grep -q "moco train: --knn-train $T/missing" r3bd.err && grep -q "moco run: the consumer failed" r3bd.err \
  && [ -d r3bd ] && [ -z "$(ls -A r3bd)" ] && [ ! -e r3b ] && grep -q "moco train: --knn-train $T/missing" r3be.err && [ -d r3be ] && [ -z "$(ls r3be)" ] \
  || fail "3b: a trainer that refused its --knn-train left: $(ls -AR r3b r3bd 2>&1 | tr '\n' ' '); r3be: $(ls -A r3be 2>&1)"
# ... and what only the trainer used to find once the pipeline ran (leaving the directory behind,
# which the corrected command was then refused): a batch larger than the dataset, a
# --start-epoch past --epochs
timeout 60 $M run db $RUN --epochs 1 --batch-size 1024 --moco-k 1024 --run-dir r3bb >/dev/null 2>r3b.err; rc=$?
[ $rc -eq 2 ] && grep -q "^moco run: db: the dataset's 512 samples make no batch of 1024 pairs: lower --batch-size" r3b.err \
  && [ ! -e r3bb ] && [ -d db ] || fail "moco run, a batch of 1024 on 512 samples: exit $rc: $(tail -2 r3b.err); $(ls r3bb 2>&1)"
timeout 60 $M run db $RUN --epochs 2 --start-epoch 2 --run-dir r3bs >/dev/null 2>r3b.err; rc=$?
[ $rc -eq 2 ] && grep -q "^moco run: --start-epoch 2 leaves nothing to run of --epochs 2" r3b.err && [ ! -e r3bs ] \
  || fail "moco run --start-epoch 2 --epochs 2: exit $rc: $(tail -2 r3b.err); $(ls r3bs 2>&1)"
echo "3b: a missing --knn-train, --knn-test, --resume or --keys is refused before the first step ($((SECONDS - t0)) s through moco run); moco run refuses a batch over the dataset and a --start-epoch past --epochs before it starts anything"

# 7e. --out is --run-dir
timeout 60 $M run db $RUN --epochs 1 --out o1 >/dev/null 2>o1.err || fail "moco run --out: $(tail -3 o1.err)"
[ "$(epochs o1/metrics.jsonl)" = 1 ] || fail "moco run --out o1 did not train into o1 (runs/: $(ls runs 2>/dev/null))"
[ -e runs ] && fail "moco run --out o1 also made runs/"
$M run db $RUN --epochs 1 --out o1 --run-dir o2 >/dev/null 2>o12.err; rc=$?
[ $rc -eq 2 ] && grep -q "moco run: --out o1 and --run-dir o2: the same flag twice" o12.err || fail "--out o1 --run-dir o2: exit $rc (want 2), $(cat o12.err)"
for f in "--count 7" "--connect ipc://elsewhere" "--count=7"; do
  $M run db $RUN --epochs 1 --run-dir o3 $f >/dev/null 2>o3.err; rc=$?
  [ $rc -eq 2 ] || fail "moco run $f (a trainer flag the supervisor sets) should exit 2, got $rc"
  grep -q -- "${f%%[ =]*} is set by moco run itself" o3.err || fail "moco run $f: no clear message: $(cat o3.err)"
  [ -e o3 ] && fail "moco run $f made its run directory before refusing"
done
echo "7e: moco run --out DIR trains into DIR; --out and --run-dir disagreeing: exit 2; --count / --connect that moco run sets itself: exit 2"

# 7a. a run directory that holds a run
$M run db $RUN --epochs 1 --run-dir o1 >/dev/null 2>o1b.err; rc=$?
[ $rc -eq 2 ] && grep -q "not empty.*--resume o1.*--overwrite" o1b.err || fail "moco run into a used --run-dir: exit $rc: $(tail -2 o1b.err)"
[ "$(epochs o1/metrics.jsonl)" = 1 ] || fail "the refused run wrote into o1"
timeout 20 $M train $TR --out o1 >/dev/null 2>o1c.err; rc=$?
[ $rc -eq 1 ] && grep -q "not empty" o1c.err || fail "moco train --out of a used directory: exit $rc: $(tail -2 o1c.err)"
timeout 60 $M run db $RUN --epochs 1 --run-dir o1 --overwrite >/dev/null 2>o1d.err || fail "--overwrite: $(tail -3 o1d.err)"
[ "$(epochs o1/metrics.jsonl)" = 1 ] && ! grep -q '"type":"resume"' o1/metrics.jsonl || fail "--overwrite did not start afresh"
# resumed from another directory's run: into a new run directory, or its own run's; one holding another run is refused
# and left as it was (a copy of a run's own checkpoint resumes into it: cli_train, cli_mpi)
# (before: o5's checkpoints were replaced by o1's run and its metrics rewound into a mix of both runs)
timeout 60 $M run db ${RUN/--seed 1/--seed 2} --epochs 1 --run-dir o5 >/dev/null 2>o5.err || fail "run o5: $(tail -3 o5.err)"
md5sum o5/* > o5.md5 || fail "o5 holds nothing"
timeout 60 $M run db $RUN --epochs 1 --run-dir o5 --resume o1 >/dev/null 2>o5b.err; rc=$?
[ $rc -eq 2 ] && grep -q "run-dir o5 holds another run (checkpoint_last.safetensors: seed 2, resnet18-cifar width 4 dim 128, 512 samples; --resume o1/checkpoint_last.safetensors: seed 1," o5b.err \
  || fail "moco run --resume o1 into the used o5: exit $rc: $(tail -2 o5b.err)"
timeout 20 $M train $TR --lr 0.06 --out o5 --resume o1 >/dev/null 2>o5c.err; rc=$?
[ $rc -eq 1 ] && grep -q -- "--out o5 holds another run (checkpoint_last.safetensors: seed 2" o5c.err \
  || fail "moco train --resume o1 --out o5 (used): exit $rc: $(tail -2 o5c.err)"
md5sum -c --quiet o5.md5 || fail "a refused resume from o1 changed o5"
timeout 60 $M run db $RUN --epochs 2 --allow-schedule-change --run-dir o6 --resume o1 >/dev/null 2>o6.err || fail "resume o1 into a new o6: $(tail -3 o6.err)"
grep -q '"type":"resume","epoch":1,"step":16,"from":"o1/checkpoint_last.safetensors"' o6/metrics.jsonl && grep -q '"type":"epoch","epoch":1,"step":32,"loss":[0-9]' o6/metrics.jsonl \
  || fail "resume o1 into a new o6: $(cat o6/metrics.jsonl | head -3)"
echo "7a: a used run directory is refused (moco run: exit 2, moco train: exit 1); --overwrite starts afresh; a run resumed from another directory's goes on in a new one, and one holding another run is refused and left unchanged"

# 7c. the schedule is kept on resume
# (the loss's and optimiser's settings too: a resume took them and the checkpoint then claimed them for the whole run)
# (and the precision, where this CPU has bf16: before, a bf16 run resumed in fp32 went on unseen)
BF16=; grep -q avx512_bf16 /proc/cpuinfo && BF16="--epochs 1 --precision bf16"
for change in "--epochs 2" "--epochs 1 --lr 0.1" "--epochs 1 --moco-t 0.2" "--epochs 1 --moco-m 0.5" "--epochs 1 --wd 0.01" \
              "--epochs 1 --momentum 0.5" $([ -n "$BF16" ] && echo "BF16"); do
  [ "$change" = BF16 ] && change=$BF16
  touch o1/checkpoint_last.safetensors # as if saved a moment ago: a refused resume saves nothing, so no resume command
  md5sum o1/loader.jsonl o1/workers.jsonl >o1e.md5
  timeout 60 $M run db $RUN --run-dir o1 --resume o1 $change >/dev/null 2>o1e.err; rc=$?
  flag=${change##*--}; flag=--${flag%% *}
  # refused by moco run before the loader and workers start (before: by the trainer, exit 1, once they ran)
  [ $rc -eq 2 ] && grep -q "^moco run: o1/checkpoint_last.safetensors was trained with another schedule: $flag" o1e.err \
    && md5sum -c --quiet o1e.md5 && ! grep -q "moco train" o1e.err || fail "resume with $change: exit $rc: $(tail -2 o1e.err)"
  grep -q "resume with" o1e.err && fail "a refused resume ($change), which saved nothing, printed a resume command: $(grep 'resume with' o1e.err)"
done
timeout 60 $M run db $RUN --run-dir o1 --resume o1 --epochs 1 --symmetric >/dev/null 2>o1e.err; rc=$?
[ $rc -eq 2 ] && grep -q "^moco run: .*another schedule: --symmetric (checkpoint: no --symmetric)" o1e.err || fail "resume with --symmetric: exit $rc: $(grep 'moco train' o1e.err | tail -2)"
# --bn-splits, a training-behaviour flag as --symmetric is (before: a resume with another one went on unseen)
timeout 60 $M run db $RUN --run-dir o1 --resume o1 --epochs 1 --bn-splits 2 >/dev/null 2>o1e.err; rc=$?
[ $rc -eq 2 ] && grep -q "^moco run: .*another schedule: --bn-splits 2 (checkpoint: 4)" o1e.err || fail "resume with --bn-splits 2: exit $rc: $(grep 'moco train' o1e.err | tail -2)"
# another dataset (512 samples in the checkpoint, 256 now): refused, naming both counts
$M mkdb $SRC db256 --split test --limit 256 --shuffle --seed 3 --quiet >/dev/null || fail "mkdb db256"
timeout 60 $M run db256 $RUN --run-dir o1 --resume o1 --epochs 2 >/dev/null 2>o1e.err; rc=$?
[ $rc -eq 2 ] && grep -q "^moco run: .*was trained on a dataset of 512 samples, this stream has 256" o1e.err || fail "resume on another dataset: exit $rc: $(grep 'moco train' o1e.err | tail -2)"
[ "$(epochs o1/metrics.jsonl)" = 1 ] || fail "a refused resume trained"
timeout 60 $M run db $RUN --run-dir o1 --resume o1 --epochs 2 --allow-schedule-change >/dev/null 2>o1f.err \
  || fail "--allow-schedule-change: $(tail -3 o1f.err)"
[ "$(epochs o1/metrics.jsonl)" = 2 ] && grep -q '"type":"resume","epoch":1,"step":16' o1/metrics.jsonl \
  || fail "--allow-schedule-change did not resume and train epoch 2"
echo "7c: --epochs / --lr / --moco-t / --moco-m / --wd / --momentum / --symmetric / --bn-splits changed on resume, or another dataset: refused by moco run before it starts anything; with --allow-schedule-change: trained on"

# 7q. a resume whose checkpoint ends the run (o1: epoch 2 of 2) is said to be complete, exit 0, as moco
#     train says it, and nothing starts (before: the loader and the worker ran and appended to o1's logs,
#     then the trainer found nothing to train); resumed from there into a new directory: none is left
md5sum o1/* >o1q.md5
timeout 60 $M run db $RUN --epochs 2 --run-dir o1 --resume o1 >/dev/null 2>o1q.err; rc=$?
[ $rc -eq 0 ] && grep -qx "moco run: o1/checkpoint_last.safetensors ends the run (epoch 2 of 2): nothing left to train" o1q.err \
  && [ -d o1 ] && md5sum -c --quiet o1q.md5 && ! grep -q "^moco \(loader\|augment\|train\)" o1q.err \
  || fail "7q: resume of a complete run: exit $rc: $(tail -3 o1q.err); $(md5sum -c --quiet o1q.md5 2>&1)"
timeout 60 $M run db ${RUN/--quiet/} --epochs 2 --allow-schedule-change --run-dir o7 --resume o1 >/dev/null 2>o7q.err; rc=$?
[ $rc -eq 0 ] && grep -qx "moco run: o1/checkpoint_last.safetensors ends the run (epoch 2 of 2): nothing left to train" o7q.err \
  && [ ! -e o7 ] && ! grep -q "^moco \(loader\|augment\|train\)\|^moco run: db: 512 samples" o7q.err \
  || fail "7q: resume of a complete run into o7: exit $rc: $(tail -3 o7q.err); o7: $(ls -A o7 2>&1)"
echo "7q: a resume of a complete run: said so, exit 0, no loader or worker started, o1's logs unchanged, no new directory left"

# 7r. a trainer's refusal is also recorded in metrics.jsonl, where the run's records are read afterwards
#     (before: on stderr only): under moco run (a resume whose --knn-train is missing, refused by the
#     trainer once started), and by moco train on its own (no loader answers), with the epoch it stood at
timeout 60 $M run db $RUN --epochs 3 --allow-schedule-change --run-dir o1 --resume o1 --knn-train "$T/missing" --knn-test db \
  >/dev/null 2>o1r.err; rc=$?
msg=$(sed -n 's/^moco train: \(--knn-train .*\)$/\1/p' o1r.err)
[ $rc -eq 1 ] && [ -n "$msg" ] && grep -q "^moco run: FAILED" o1r.err && [ "$(tail -1 o1/metrics.jsonl)" = "{\"type\":\"failed\",\"error\":\"$msg\"}" ] \
  || fail "7r: a resume whose --knn-train is missing: exit $rc: $(tail -3 o1r.err); metrics.jsonl ends: $(tail -1 o1/metrics.jsonl)"
timeout 30 $M train --connect ipc://$T/nothing-c --bind ipc://$T/nothing-p --size 28 --epochs 3 --allow-schedule-change $MODEL \
  --lr 0.06 --seed 1 --count 512 --out o1 --resume o1 --loader-timeout 1 >/dev/null 2>o1t.err; rc=$?
msg=$(sed -n 's/^moco train: \(no loader answered .*\)$/\1/p' o1t.err)
[ $rc -eq 1 ] && [ -n "$msg" ] && [ "$(tail -1 o1/metrics.jsonl)" = "{\"type\":\"failed\",\"epoch\":2,\"error\":\"$msg\"}" ] \
  || fail "7r: moco train with no loader: exit $rc: $(tail -3 o1t.err); metrics.jsonl ends: $(tail -1 o1/metrics.jsonl)"
echo "7r: a trainer's refusal, under moco run and alone: its message also in metrics.jsonl's last record"

# the pipeline by hand, as moco run starts it, so that the trainer can be signalled
# each pipeline gets its own socket directory, $S: the helpers of a stopped one may still be
# closing (a worker's pushes to a dead trainer linger 2 s) while the next runs, and must not
# reach its sockets
sock() { NS=$((${NS:-0} + 1)); S=$T/s$NS; mkdir -p "$S"; }
pipeline() { # $1: run directory, rest: trainer flags
  local d=$1; shift
  sock
  $M loader --db db --bind ipc://$S/w --ctl ipc://$S/c --epochs "${EPOCHS:-2}" --seed 1 --quiet &
  LP=$!
  $M augment --connect ipc://$S/w --push ipc://$S/p --recipe cifar --size 28 --seed 1 --quiet &
  WP=$!
  $M train --connect ipc://$S/c --bind ipc://$S/p --out "$d" --epochs "${EPOCHS:-2}" --seed 1 --size 28 --count 512 $MODEL --lr 0.06 \
    --log-every 1 "$@" 2>>"$d.err" &
  TP=$!
}
wait_step() { # $1: metrics file, $2: step
  for _ in $(seq 3000); do grep -q "\"step\":$2," "$1" 2>/dev/null && return 0; sleep 0.01; done
  return 1
}
helpers() { kill $LP $WP 2>/dev/null; wait $LP $WP 2>/dev/null; }
# the same, not waited for here (their sockets are not used again): all are waited for at the end
LEFT=
release() { kill $LP $WP 2>/dev/null; LEFT="$LEFT $LP $WP"; }

# 3a. SIGTERM during the kNN evaluation after epoch 0 (16 steps): its bank is
# the whole Fashion-MNIST test set (10,000), a few seconds at width 4. The
# epoch's checkpoint comes first, then the kNN, then the epoch's record: the
# signal is sent the moment the checkpoint appears, so it lands in the kNN.
$M mkdb $SRC big --split test --quiet >/dev/null || fail "mkdb big"
wait_file() { for _ in $(seq 3000); do [ -e "$1" ] && return 0; sleep 0.01; done; return 1; }
pipeline k --knn-train big --knn-test db
wait_file k/checkpoint_epoch_0001.safetensors || fail "epoch 0 never ended: $(tail -3 k.err)"
kill -TERM $TP; wait $TP; rc=$?
helpers
[ $rc -eq 130 ] || fail "SIGTERM during kNN: exit $rc, want 130: $(tail -3 k.err)"
grep -q "epoch 0: kNN stopped; its record is written on resume" k.err || fail "SIGTERM did not land in the kNN: $(tail -3 k.err)"
grep -q "kNN top-1" k.err && fail "the kNN evaluation ended before SIGTERM came: $(grep kNN k.err)"
grep -q '"type":"epoch"' k/metrics.jsonl && fail "an epoch record without its kNN: $(grep '"type":"epoch"' k/metrics.jsonl)"
cmd=$(grep -A1 "moco train: resume with:" k.err | tail -1)
echo "$cmd" | grep -q -- "--resume k$" || fail "no resume command printed: $(tail -3 k.err)"
rm -f "$S"/* # the printed command's endpoints, those of the pipeline stopped (its helpers waited for)
$M loader --db db --bind ipc://$S/w --ctl ipc://$S/c --epochs 2 --seed 1 --quiet & LP=$!
$M augment --connect ipc://$S/w --push ipc://$S/p --recipe cifar --size 28 --seed 1 --quiet & WP=$!
eval "timeout 300 $cmd" 2>k2.err || { helpers; fail "the printed command did not resume: $(tail -3 k2.err)"; }
wait $LP $WP
grep -q "epoch 0: kNN top-1 .* evaluated on resume" k2.err || fail "the resume did not evaluate epoch 0: $(tail -5 k2.err)"
[ "$(epochs k/metrics.jsonl)" = 2 ] && grep -q '"type":"resume","epoch":1,"step":16' k/metrics.jsonl \
  || fail "the resumed run: $(cut -c1-60 k/metrics.jsonl | tail -4)"
for e in 0 1; do
  [ "$(grep -c "\"type\":\"epoch\",\"epoch\":$e,.*\"knn_top1\":[0-9]" k/metrics.jsonl)" = 1 ] \
    || fail "epoch $e: want one record with its kNN: $(grep '"type":"epoch"' k/metrics.jsonl)"
done
grep -q '"type":"epoch","epoch":0,.*"recovered":true' k/metrics.jsonl || fail "epoch 0's record is not marked recovered"
echo "3a: SIGTERM during kNN: exit 130, checkpoint_epoch_0001 written first; the printed command resumed at step 16, wrote epoch 0's record with its kNN, and finished"

# 3c. SIGKILL during that kNN evaluation (a crash, the OOM killer): the
# epoch's checkpoint exists, its record does not; the resume (from step 16)
# evaluates the checkpoint's weights and writes epoch 0's record, kNN and
# all, once, and trains no step twice.
pipeline kk --knn-train big --knn-test db --save-every 8
wait_file kk/checkpoint_epoch_0001.safetensors || fail "epoch 0 never ended: $(tail -3 kk.err)"
kill -KILL $TP; wait $TP 2>/dev/null
release
grep -q "kNN top-1" kk.err && fail "the kNN evaluation ended before SIGKILL came: $(grep kNN kk.err)"
pipeline kk --knn-train big --knn-test db --save-every 8 --resume kk
wait $TP || { helpers; fail "resume after SIGKILL during kNN: $(tail -3 kk.err)"; }
wait $LP $WP
grep -q "epoch 0: kNN top-1 .* evaluated on resume" kk.err || fail "the resume did not evaluate epoch 0: $(tail -5 kk.err)"
grep -q '"type":"resume","epoch":1,"step":16' kk/metrics.jsonl || fail "not resumed from the epoch's checkpoint: $(grep resume kk/metrics.jsonl)"
for e in 0 1; do
  [ "$(grep -c "\"type\":\"epoch\",\"epoch\":$e," kk/metrics.jsonl)" = 1 ] \
    || fail "epoch $e: want one record after SIGKILL during kNN and resume: $(grep -v '"type":"step"' kk/metrics.jsonl | cut -c1-70)"
done
[ "$(grep '"type":"epoch"' kk/metrics.jsonl | grep -c '"knn_top1":[0-9]')" = 2 ] || fail "an epoch without its kNN: $(grep '"type":"epoch"' kk/metrics.jsonl)"
dup=$(steps kk/metrics.jsonl | sort -n | uniq -d | tr '\n' ' ')
[ -z "$dup" ] || fail "steps recorded twice after SIGKILL during kNN: $dup"
echo "3c: SIGKILL during kNN, resumed: $(grep -o '"type":"resume","epoch":[0-9]*,"step":[0-9]*' kk/metrics.jsonl); each epoch's record once, with its kNN"

# 3d. SIGTERM after epoch 0's last step (16) and before its end: the loader is stopped (SIGSTOP) at
# step 4, when it has issued the whole epoch, so the worker's pairs still reach step 16 but the end
# never comes. The checkpoint holds step 16 mid-epoch; the resume trains no step of epoch 0, only
# meets its end: its record is marked recovered, the figures of the stopped run null, the kNN
# evaluated (before: "pairs":0, "dropped":0, "seconds":0.00, "stream" and no mark)
pipeline ls --knn-train db --knn-test db
wait_step ls/metrics.jsonl 4 || { helpers; fail "3d: no step 4: $(tail -3 ls.err)"; }
kill -STOP $LP
wait_step ls/metrics.jsonl 16; got=$?
kill -TERM $TP; wait $TP; rc=$?
kill -CONT $LP; helpers
[ $got -eq 0 ] && ! grep -q '"type":"epoch"' ls/metrics.jsonl || fail "3d: the stop did not land between step 16 and epoch 0's end: $(grep -v '"type":"step"' ls/metrics.jsonl | cut -c1-80; tail -2 ls.err)"
[ $rc -eq 130 ] && grep -q "interrupted at step 16 (epoch 0)" ls.err || fail "3d: SIGTERM at step 16: exit $rc: $(tail -2 ls.err)"
pipeline ls --knn-train db --knn-test db --resume ls; wait $TP || { helpers; fail "3d: the resume: $(tail -3 ls.err)"; }; wait $LP $WP
grep -q '"type":"resume","epoch":0,"step":16,' ls/metrics.jsonl || fail "3d: not resumed at step 16 of epoch 0: $(grep resume ls/metrics.jsonl)"
grep -q '"type":"epoch","epoch":0,"step":16,"loss":null,"acc":null,"lr":0.06,"pairs":null,"dropped":null,"failed":null,"seconds":null,"pairs_per_s":null,"starved_pct":null,"knn_top1":[0-9][0-9.]*,"peak_rss_mb":[0-9]*,"recovered":true}$' ls/metrics.jsonl \
  && [ "$(epochs ls/metrics.jsonl)" = 2 ] && grep -q '"type":"epoch","epoch":1,"step":32,"loss":[0-9].*"pairs":512,' ls/metrics.jsonl \
  || fail "3d: epoch 0's record after a resume at its last step: $(grep '"type":"epoch"' ls/metrics.jsonl | cut -c1-230)"
echo "3d: SIGTERM between epoch 0's last step and its end: resumed at step 16, epoch 0's record marked recovered (figures null, kNN evaluated)"

# 7d. SIGKILL in epoch 1 or later, after its first steps: the checkpoint is
# the last epoch's (a multiple of 16 steps), so the records of the steps
# after it are trained again on resume, and must appear once. Ten epochs
# (160 steps, 3 s): the signal comes as soon as step 17 is seen, but a
# loaded machine may let the trainer run on for a while; where it lands is
# read back from metrics.jsonl.
EPOCHS=10 pipeline cut
wait_step cut/metrics.jsonl 17 || fail "no step 17: $(tail -3 cut.err)"
kill -KILL $TP; wait $TP 2>/dev/null
release
last=$(steps cut/metrics.jsonl | tail -1)
[ "$last" -lt 160 ] || fail "the trainer ended its 10 epochs before SIGKILL"
ck=$((last / 16 * 16)) # the last epoch checkpoint at or before it
EPOCHS=10 pipeline cut --resume cut
wait $TP || { helpers; fail "resume after SIGKILL: $(tail -3 cut.err)"; }
wait $LP $WP
dup=$(steps cut/metrics.jsonl | sort -n | uniq -d | tr '\n' ' ')
[ -z "$dup" ] || fail "steps recorded twice after the resume: $dup"
[ "$(steps cut/metrics.jsonl | wc -l)" = 160 ] || fail "want 160 step records, got $(steps cut/metrics.jsonl | wc -l)"
r=$(grep '"type":"resume"' cut/metrics.jsonl)
# killed on an epoch's last step: its checkpoint may or may not be written yet
from=$(echo "$r" | grep -o '"step":[0-9]*' | grep -o '[0-9]*$')
[ "$ck" = "$last" ] && [ "$from" = $((ck - 16)) ] && ck=$from
want='"dropped_records":[1-9]'; [ "$ck" = "$last" ] && want='"dropped_records":0'
echo "$r" | grep -q "\"epoch\":$((ck / 16)),\"step\":$ck,.*$want" || fail "killed at step $last: resume record: $r"
echo "7d: killed at step $last, resumed from step $ck: $r; no step recorded twice"

# $1: the run directory of a stopped `moco run` (stderr in $1.err), $2: the
# case: the trainer said where it stopped (step >= 20, in $at), one resume
# command was printed, and it finishes the 20 epochs, each step recorded once
resumed_to_end() {
  local d=$1 cmd dup
  at=$(grep -o "interrupted at step [0-9]*" $d.err | grep -o '[0-9]*$')
  [ -n "$at" ] && [ "$at" -ge 20 ] || fail "$2: the trainer did not say where it stopped: $(tail -4 $d.err)"
  [ "$(grep -c "resume with:" $d.err)" = 1 ] || fail "$2: want one resume command: $(cat $d.err)"
  cmd=$(grep -A1 "moco run: resume with:" $d.err | tail -1)
  echo "$cmd" | grep -q -- "--run-dir $d --resume $d$" || fail "$2: resume command: $cmd"
  eval "timeout 300 $cmd" >/dev/null 2>$d.resumed.err || fail "$2: the printed command failed: $(tail -3 $d.resumed.err)"
  # the resume's epoch is the stopped step's (16 steps an epoch); a stop at an epoch's last step may
  # record either epoch (the epoch ended, or the next not begun: at step 32, epoch 1 or 2)
  [ "$(epochs $d/metrics.jsonl)" = 20 ] &&
    grep -qE "\"type\":\"resume\",\"epoch\":($((at / 16))|$(((at - 1) / 16))),\"step\":$at," $d/metrics.jsonl \
    || fail "$2: the resumed run (stopped at step $at): $(grep -v '"type":"step"' $d/metrics.jsonl)"
  dup=$(steps $d/metrics.jsonl | sort -n | uniq -d | tr '\n' ' ')
  [ -z "$dup" ] || fail "$2: steps recorded twice: $dup"
}

# 7b. Ctrl-C to moco run mid-epoch
# 320 steps, about 5 s: at 80 (1.5 s) a loaded CI machine once let the
# trainer finish the 60 steps between seeing step 20 and the signal
$M run db $RUN --epochs 20 --log-every 1 --run-dir c >/dev/null 2>c.err &
RP=$!
wait_step c/metrics.jsonl 20 || fail "no step 20: $(tail -3 c.err)"
kill -INT $RP; wait $RP; rc=$?
[ $rc -eq 130 ] || fail "Ctrl-C: moco run exited $rc, want 130: $(tail -4 c.err)"
grep -q "FAILED" c.err && fail "Ctrl-C: moco run says FAILED"
resumed_to_end c "7b"
echo "7b: Ctrl-C at step $at: exit 130, checkpoint, resume command; resumed to the end (20 epochs)"

# 7f. the loader dies (SIGKILL) under moco run mid-epoch: the run fails
#     (exit 1, "the loader failed", "FAILED", not "interrupted"), the trainer
#     was stopped with its position kept, and the printed command resumes it
#     to the end (the old supervisor took the trainer's stop for a Ctrl-C:
#     exit 130, "interrupted")
$M run db $RUN --epochs 20 --log-every 1 --run-dir lf >/dev/null 2>lf.err &
RP=$!
wait_step lf/metrics.jsonl 20 || fail "7f: no step 20: $(tail -3 lf.err)"
LDR=$(pgrep -P $RP -f "^moco loader ")
[ -n "$LDR" ] || fail "7f: no loader process under moco run ($RP)"
kill -KILL $LDR; wait $RP; rc=$?
[ $rc -eq 1 ] || fail "7f: the loader killed: moco run exited $rc, want 1: $(tail -4 lf.err)"
grep -q "moco run: the loader failed (signal 9" lf.err || fail "7f: no 'the loader failed': $(tail -4 lf.err)"
grep -q "moco run: FAILED" lf.err || fail "7f: no FAILED: $(tail -3 lf.err)"
grep -q "moco run: interrupted" lf.err && fail "7f: moco run says interrupted: $(tail -3 lf.err)"
resumed_to_end lf "7f"
echo "7f: loader killed at step $at: exit 1, FAILED, checkpoint, resume command; resumed to the end (20 epochs)"

# 7g. the trainer itself killed (SIGKILL: the OOM killer, say) under moco run: exit 1, and the
#     printed resume command (before: none without --ranks) finishes the run from its last
#     checkpoint (--save-every 4)
$M run db $RUN --epochs 20 --log-every 1 --save-every 4 --run-dir tk >/dev/null 2>tk.err &
RP=$!
wait_step tk/metrics.jsonl 20 || fail "7g: no step 20: $(tail -3 tk.err)"
TRN=$(pgrep -P $RP -f "^moco train ")
[ -n "$TRN" ] || fail "7g: no trainer process under moco run ($RP)"
kill -KILL $TRN; wait $RP; rc=$?
[ $rc -eq 1 ] && grep -q "moco run: the consumer failed (signal 9" tk.err || fail "7g: the trainer killed: exit $rc: $(tail -4 tk.err)"
[ "$(grep -c "resume with:" tk.err)" = 1 ] || fail "7g: want one resume command: $(tail -4 tk.err)"
cmd=$(grep -A1 "moco run: resume with:" tk.err | tail -1)
eval "timeout 300 $cmd" >/dev/null 2>tk.resumed.err || fail "7g: the printed command failed: $(tail -3 tk.resumed.err)"
[ "$(epochs tk/metrics.jsonl)" = 20 ] && [ -z "$(steps tk/metrics.jsonl | sort -n | uniq -d)" ] || fail "7g: the resumed run: $(grep -v '"type":"step"' tk/metrics.jsonl | tail -3)"
echo "7g: the trainer killed under moco run: exit 1, a resume command; resumed to the end (20 epochs)"

# 7h. one writer per run directory: a second trainer or moco run on a directory in use is refused,
#     naming the holder (before: both ran, mixed their checkpoints and metrics, and exited 0); the
#     lock goes with its process (SIGKILL), and the directory is usable again
$M train $TR --out lk >/dev/null 2>lk1.err &
LK=$!
for _ in $(seq 3000); do [ -s lk/.lock ] && break; sleep 0.01; done
timeout 20 $M train $TR --out lk >/dev/null 2>lk2.err; rc=$?
[ $rc -eq 1 ] && grep -q "lk is in use by another run (pid $LK)" lk2.err || { kill $LK; fail "7h: a second trainer on lk: exit $rc: $(tail -2 lk2.err)"; }
timeout 60 $M run db $RUN --epochs 1 --run-dir lk --overwrite >/dev/null 2>lk3.err; rc=$?
[ $rc -eq 1 ] && grep -q "lk is in use by another run (pid $LK)" lk3.err || { kill $LK; fail "7h: moco run --overwrite on lk in use: exit $rc: $(tail -2 lk3.err)"; }
kill -KILL $LK; wait $LK 2>/dev/null
timeout 60 $M run db $RUN --epochs 1 --run-dir lk --overwrite >/dev/null 2>lk4.err || fail "7h: lk after its holder was killed: $(tail -3 lk4.err)"
[ "$(epochs lk/metrics.jsonl)" = 1 ] || fail "7h: the run after the holder's death did not train into lk"
echo "7h: a run directory in use: a second moco train or moco run refused, naming the holder's pid; free again once it died"

# 7i. checkpoint_best after a resume: the best kNN of the records kept (here forged to 99.99 at
#     epoch 0) still stands; before, every resume replaced checkpoint_best with its first model
timeout 120 $M run db $RUN --epochs 1 --run-dir b1 --knn-train db --knn-test db >/dev/null 2>b1.err || fail "7i: $(tail -3 b1.err)"
best=$(sha256sum <b1/checkpoint_best.safetensors) || fail "7i: no checkpoint_best"
sed -i 's/"knn_top1":[0-9.]*/"knn_top1":99.99/' b1/metrics.jsonl
timeout 120 $M run db $RUN --epochs 2 --run-dir b1 --resume b1 --knn-train db --knn-test db --allow-schedule-change \
  >/dev/null 2>b2.err || fail "7i: the resume: $(tail -3 b2.err)"
[ "$(grep -c '"type":"epoch".*"knn_top1":[0-9]' b1/metrics.jsonl)" = 2 ] || fail "7i: want 2 epochs with kNN: $(grep '"type":"epoch"' b1/metrics.jsonl)"
[ "$(sha256sum <b1/checkpoint_best.safetensors)" = "$best" ] \
  || fail "7i: the resume replaced checkpoint_best (99.99 at epoch 0) with $(grep -o '"knn_top1":[0-9.]*' b1/metrics.jsonl | tail -1)"
echo "7i: after a resume, checkpoint_best stays the best of the run's records (epoch 1's kNN $(grep -o '"knn_top1":[0-9.]*' b1/metrics.jsonl | tail -1 | cut -d: -f2) < 99.99)"

# 7j. a mid-epoch resume keeps the warm-up's place: every step's learning rate is the
#     uninterrupted run's (before: the epoch's position restarted at 0 on resume, and each step
#     to the epoch's end took the learning rate of the epoch's start)
lrs() { grep -o '"type":"step","epoch":[0-9]*,"step":[0-9]*,"loss":[-0-9.e]*,"acc":[0-9.e]*,"lr":[-0-9.e]*' "$1" \
  | sed 's/.*"step":\([0-9]*\),.*"lr":\(.*\)/\1 \2/'; }
WU="--warmup-epochs 2 --save-every 2"
pipeline wref $WU; wait $TP || { helpers; fail "7j: the reference run: $(tail -3 wref.err)"; }; wait $LP $WP
pipeline wcut $WU
wait_step wcut/metrics.jsonl 3 || { helpers; fail "7j: no step 3: $(tail -3 wcut.err)"; }
kill -KILL $TP; wait $TP 2>/dev/null; release
pipeline wcut $WU --resume wcut; wait $TP || { helpers; fail "7j: the resume: $(tail -3 wcut.err)"; }; wait $LP $WP
from=$(grep -o '"type":"resume","epoch":[0-9]*,"step":[0-9]*' wcut/metrics.jsonl | grep -o '[0-9]*$')
[ -n "$from" ] && [ $((from % 16)) -ne 0 ] || fail "7j: not resumed mid-epoch: $(grep resume wcut/metrics.jsonl)"
[ "$(lrs wcut/metrics.jsonl | wc -l)" = 32 ] && [ "$(lrs wcut/metrics.jsonl)" = "$(lrs wref/metrics.jsonl)" ] \
  || fail "7j: resumed at step $from: learning rates differ from the uninterrupted run's: $(diff <(lrs wref/metrics.jsonl) <(lrs wcut/metrics.jsonl) | head -6 | tr '\n' ' ')"
echo "7j: resumed mid-epoch at step $from with --warmup-epochs 2: the 32 steps' learning rates are the uninterrupted run's"

# 7k. a resume with another model is refused before anything is loaded, naming both (before:
#     another architecture that shares its first tensors was loaded and the rest dropped)
timeout 60 $M run db $RUN --run-dir b1 --resume b1 --epochs 2 --width 8 >/dev/null 2>b3.err; rc=$?
[ $rc -eq 2 ] && grep -q "^moco run: .*holds a resnet18-cifar of width 4, dim 128; this run builds a resnet18-cifar of width 8, dim 128" b3.err \
  || fail "7k: resume with --width 8: exit $rc: $(grep 'moco train' b3.err | tail -2)"
echo "7k: a resume with another model (--width 8 for 4): refused, naming both"

# 7l. moco run --start-epoch reaches the trainer as well as the loader (before: the loader streamed
#     epoch 1 and the trainer recorded it as epoch 0, with epoch 0's learning rate)
timeout 60 $M run db $RUN --epochs 2 --start-epoch 1 --run-dir se >/dev/null 2>se.err || fail "7l: $(tail -3 se.err)"
[ "$(grep -c '"type":"epoch"' se/metrics.jsonl)" = 1 ] && grep -q '"type":"epoch","epoch":1,' se/metrics.jsonl \
  && [ -e se/checkpoint_epoch_0002.safetensors ] || fail "7l: --start-epoch 1 of 2: $(grep '"type":"epoch"' se/metrics.jsonl | cut -c1-60) $(ls se)"
echo "7l: moco run --start-epoch 1 --epochs 2: one epoch, recorded as epoch 1, checkpoint_epoch_0002"
# 7p. moco run without --epochs trains moco train's --epochs, main_moco.py's 200 (before: 1, a run of one
#     epoch on a schedule of one, where moco train alone took 200); --sink streams 1
timeout 60 $M run db $RUN --start-epoch 200 --run-dir ep >/dev/null 2>ep.err; rc=$?
[ $rc -eq 2 ] && grep -q "^moco run: --start-epoch 200 leaves nothing to run of --epochs 200 " ep.err && [ ! -e ep ] \
  || fail "7p: --start-epoch 200 without --epochs: exit $rc: $(tail -2 ep.err)"
timeout 60 $M run db $RUN --start-epoch 199 --run-dir ep >/dev/null 2>ep.err || fail "7p: --start-epoch 199 without --epochs: $(tail -3 ep.err)"
[ "$(epochs ep/metrics.jsonl)" = 1 ] && grep -q '"type":"epoch","epoch":199,"step":16,' ep/metrics.jsonl \
  && grep -aq '"epochs\\":200,' ep/checkpoint_last.safetensors || fail "7p: $(grep '"type":"epoch"' ep/metrics.jsonl | cut -c1-80)"
timeout 60 $M run db --sink --workers 1 --start-epoch 1 --run-dir eps >/dev/null 2>ep.err; rc=$?
[ $rc -eq 2 ] && grep -q "^moco run: --start-epoch 1 leaves nothing to run of --epochs 1 " ep.err || fail "7p: --sink: exit $rc: $(tail -2 ep.err)"
# --serve feeds a training elsewhere, of the same length: 200 too (before: 1; --start-epoch 199 was refused
# as 'of --epochs 1'); the loader's own count, in its end event, and the consumer gets epoch 199 and END
sock
timeout 60 $M run db --serve ipc://$S/sv --workers 1 --recipe cifar --size 28 --start-epoch 199 --run-dir epv --quiet >/dev/null 2>epv.err &
sv=$!
timeout 30 $M sink --connect ipc://$S/sv --loader-timeout 10 --json epv.json >/dev/null 2>epv-sink.err; src=$?
wait $sv; rc=$?
[ $rc -eq 0 ] && [ $src -eq 0 ] && grep -q '^{"event":"end","epoch":199,"epochs":200}$' epv/loader.jsonl \
  && grep -q '"pairs":512,"epochs":1,"per_epoch":\[{"epoch":199,"pairs":512,"failed":0,"ok":true}\]' epv.json \
  || fail "7p: --serve without --epochs: exit $rc, sink $src: $(tail -2 epv.err) $(tail -1 epv-sink.err); $(grep '"event":"end"' epv/loader.jsonl)"
echo "7p: moco run without --epochs: moco train's 200 (--start-epoch 199 trains epoch 199 of 200); --serve: 200 (the loader's end event); --sink: 1"

# 7m. workers that make another --size than the trainer's: their pairs are dropped (a stray
#     peer's would be, unacknowledged), and when nothing else comes the trainer stops, saying why
#     (a run that dropped them for ever would loop on the loader's re-issues)
rm -rf wsz && sock
$M loader --db db --bind ipc://$S/w --ctl ipc://$S/c --epochs 1 --seed 1 --quiet & LP=$!
$M augment --connect ipc://$S/w --push ipc://$S/p --recipe cifar --size 32 --seed 1 --quiet & WP=$!
timeout 60 $M train --connect ipc://$S/c --bind ipc://$S/p --out wsz --epochs 1 --size 28 --count 512 $MODEL >/dev/null 2>wsz.err; rc=$?
release
[ $rc -eq 1 ] && grep -q "256 pairs of 32x32 views and 0 of the right size: the workers make another --size than this consumer's 28" wsz.err \
  || fail "7m: workers at --size 32, trainer at 28: exit $rc (124: looped): $(tail -3 wsz.err)"
echo "7m: workers at --size 32 for a trainer at 28: exit 1 after 256 pairs dropped, saying why"

# 7n. a write to metrics.jsonl that fails (the file-size limit, 1 KiB, with SIGXFSZ ignored: the write
#     fails with EFBIG as on a full disk with ENOSPC) stops the run, naming the file (before: the
#     records were lost, a torn line stayed mid-file, and the run went on to exit 0)
rm -rf mf && sock
$M loader --db db --bind ipc://$S/w --ctl ipc://$S/c --epochs 2 --seed 1 --quiet & LP=$!
$M augment --connect ipc://$S/w --push ipc://$S/p --recipe cifar --size 28 --seed 1 --quiet & WP=$!
( trap '' XFSZ; ulimit -f 1; exec timeout 60 $M train --connect ipc://$S/c --bind ipc://$S/p --out mf --epochs 2 --size 28 \
    --count 512 $MODEL --log-every 1 --kernels rule ) >/dev/null 2>mf.err; rc=$?
release
[ $rc -eq 1 ] && grep -q "mf/metrics.jsonl: cannot write a JSON line: File too large; the run stops here" mf.err \
  || fail "7n: metrics.jsonl over the file-size limit: exit $rc: $(tail -3 mf.err)"
# every line but a torn last one (which a resume drops) is whole JSON; the file goes, so that
# the suite's check of every JSON line written (json_lines) does not meet the torn one
# (at least one line before the last: open() fails on a missing file, and a file of one line
# would leave nothing to check)
python3 - mf/metrics.jsonl <<'PY' || fail "7n: a torn line before the last, or under 2 lines: $(head -c 300 mf/metrics.jsonl)"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) >= 2, "%d lines" % len(lines)
for l in lines[:-1]: json.loads(l)
PY
rm -rf mf
echo "7n: a failed write to metrics.jsonl: exit 1, naming the file and the error"

# 7o. a trainer that fails after it saved a checkpoint (here the kNN evaluation after epoch 0,
#     on a --knn-train whose first record's label was damaged to 10 after the start's checks):
#     moco run says FAILED and prints the command that resumes (before: nothing to resume with)
rm -rf lab ko && cp -r db lab && PYTHONPATH="$HERE" /usr/bin/python3 - lab/data.mdb <<'PY' || fail "7o: relabelling"
import sys
from dbrecords import patch_first
patch_first(sys.argv[1], 8, "<i", 10)
PY
timeout 120 $M run db $RUN --epochs 2 --run-dir ko --knn-train lab --knn-test db >/dev/null 2>ko.err; rc=$?
[ $rc -eq 1 ] && grep -q "lab: record [0-9]* has label 10, not one of the dataset's 10 classes" ko.err \
  && grep -q '^moco run: FAILED' ko.err && [ -e ko/checkpoint_last.safetensors ] \
  || fail "7o: the kNN failing after epoch 0's checkpoint: exit $rc: $(tail -4 ko.err)"
grep -A1 '^moco run: resume with:' ko.err | tail -1 | grep -q -- "--run-dir ko --resume ko$" \
  || fail "7o: no resume command after the trainer failed with a checkpoint saved: $(tail -4 ko.err)"
echo "7o: a trainer that failed after saving (its kNN set damaged): FAILED and the command that resumes"

# 8b. the supervisor takes a preset's augmentation and epochs from the
#     trainer's own preset table (it does not re-parse the trainer's flags):
#     the workers get --recipe v2 for moco-v2 (or --aug-plus), cifar for cifar
for pr in "--preset moco-v2:v2" "--preset cifar:cifar" "--aug-plus:v2"; do
  flag=${pr%%:*}; want=${pr##*:}
  timeout 120 $M run db --workers 1 --size 28 --seed 1 $MODEL --lr 0.06 $flag --epochs 1 --run-dir "p$want$RANDOM" \
    2>"$T/preset.err" >/dev/null || fail "moco run $flag: $(tail -3 "$T/preset.err")"
  grep -q "augment .*--recipe $want " "$T/preset.err" || fail "moco run $flag: the workers did not get --recipe $want: $(grep augment "$T/preset.err")"
done
echo "8b: presets: moco-v2 and --aug-plus give the workers recipe v2, cifar the cifar recipe"
wait $LEFT 2>/dev/null # the helpers released above
echo "run directories: inputs checked first, used directories refused, schedule kept, interruptions resumable"
