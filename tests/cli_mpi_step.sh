#!/usr/bin/env bash
# cli_mpi_step.sh: data-parallel MoCo over MPI (trainer/dist.h), under
# `mpirun -np 2` (skipped, exit 77, without mpirun):
#  1. $BUILD/tests/mpi_step (tests/mpi_step.c): 2 ranks at batch 8 against
#     1 process at batch 16 over 5 steps, bit-identical state on both ranks
#     after every step, refusals; it exits non-zero on any mismatch;
#  2. `mpirun -np 2 moco bench train` ends with one JSON line for the
#     global batch (2 x 8) with ranks, threads, allreduce_wait_ms and
#     allreduce_share; a K that is not a multiple of 2 x 8 is a usage error.
# Open MPI refuses to run as root unless told; the test machines run as
# root. Sanitizer builds: Open MPI's own allocations that live until exit
# are suppressed in tests/lsan.supp (run.sh sets LSAN_OPTIONS).
set -u
fail() { echo "FAIL: $*"; exit 1; }
command -v mpirun >/dev/null || { echo "skipped: mpirun absent (Debian: openmpi-bin)"; exit 77; }
M=${MOCO:?}
B=${BUILD:-build/release}
T=${MOCO_TEST_TMP:?}/mpi
rm -rf "$T" && mkdir -p "$T"
[ -x "$B/tests/mpi_step" ] || fail "$B/tests/mpi_step is not built (make tests)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# sanitizer builds: Open MPI's components are unloaded before the leak
# check, so only the slow unwinder's stacks reach the libraries that
# tests/lsan.supp names
if [ -n "${LSAN_OPTIONS:-}" ]; then export LSAN_OPTIONS="$LSAN_OPTIONS:fast_unwind_on_malloc=0:malloc_context_size=64"; fi
# no binding: the test machines share their cores with other jobs
RUN="mpirun -np 2 --oversubscribe --bind-to none"

# 1. the engine against one process, and the checks
timeout 300 $RUN "$B/tests/mpi_step" >"$T/step.out" 2>&1
rc=$?
cat "$T/step.out"
[ $rc = 0 ] || fail "mpi_step exited $rc"
grep -q '^PASS: 2 ranks' "$T/step.out" || fail "mpi_step did not report PASS"
[ "$(grep -c 'worst over 5 steps' "$T/step.out")" = 2 ] || fail "mpi_step did not run both cases"

# 2. the benchmark with 2 ranks
timeout 300 $RUN "$M" bench train --width 4 --batch-size 8 --size 16 --K 64 --steps 2 --warmup 1 --bn-splits 2 \
  --threads 1 --symmetric >"$T/bench.out" 2>"$T/bench.err" || { cat "$T/bench.err"; fail "mpirun moco bench train"; }
tail -n 1 "$T/bench.out" >"$T/bench.jsonl"
cat "$T/bench.jsonl"
for k in '"bench":"train"' '"batch":16' '"batch_per_rank":8' '"ranks":2' '"threads":1' '"pairs_per_s":' \
         '"allreduce_wait_ms":[0-9]' '"allreduce_share":[0-9]'; do
  grep -q "$k" "$T/bench.jsonl" || fail "bench JSON lacks $k"
done
[ "$(grep -c '^{' "$T/bench.out")" = 1 ] || fail "only rank 0 should print the JSON line"
timeout 120 $RUN "$M" bench train --width 4 --batch-size 8 --size 16 --K 48 --symmetric --steps 1 --threads 1 --bn-splits 2 \
  >"$T/badk.out" 2>&1
rc=$?
[ $rc = 2 ] || fail "K=48 with 2 ranks x 8 x 2 directions: exit $rc, want 2 (a usage error)"
grep -q "multiple of ranks x batch x directions" "$T/badk.out" || fail "no message for a bad K: $(tail -3 "$T/badk.out")"
echo "ok"
