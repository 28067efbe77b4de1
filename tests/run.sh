#!/usr/bin/env bash
# run.sh: run every unit-test program given as arguments, then every
# tests/cli_*.sh script, and end with one summary line. Exit status 77 from a
# test means "skipped" (e.g. ../shared data absent). Non-zero overall if any
# test failed. A passing test that skipped some of its parts (cmocka's
# "[  SKIPPED ]", or a "skipped: ..." line from a script) has them listed
# under its PASS line and is counted in the summary.
#   MOCO     path of bin/moco (the scripts use it)
#   TESTS    optional regex: run only tests whose name matches
#   MOCO_TEST_TIMEOUT  seconds one test may take (default 1200); a test
#            that waits past it is killed and fails, so a hang is a failure
#            the summary names, not a suite that never ends
set -u
cd "$(dirname "$0")/.."
export MOCO=${MOCO:-$PWD/bin/moco}
# each invocation gets its own scratch directory, so that two suites running
# at once do not trample each other; it is removed when everything passed
own_tmp=0
if [ -z "${MOCO_TEST_TMP:-}" ]; then MOCO_TEST_TMP=$PWD/tests/tmp/run-$$; own_tmp=1; fi
export MOCO_TEST_TMP
mkdir -p "$MOCO_TEST_TMP"
# the kernels' wisdom (trainer/engine/tune.h) of this suite, not the user's
export MOCO_WISDOM=${MOCO_WISDOM:-$MOCO_TEST_TMP/wisdom.jsonl}
# every JSON text our writer ends is also appended here, and parsed last (check_json.py)
export MOCO_JSON_AUDIT=$MOCO_TEST_TMP/json-audit.jsonl
rm -f "$MOCO_JSON_AUDIT"
# sanitizer builds: leaks inside system libraries only (see tests/lsan.supp)
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
# sanitizer builds, the MPI tests (cli_mpi*): Open MPI dlcloses its components
# at MPI_Finalize; LeakSanitizer (gcc 12's) then re-reads the module list
# (/proc/self/maps) for each of their frames in every stack it matches against
# tests/lsan.supp, about 10 s at each rank's exit. A dlclose that keeps them
# mapped (preloaded into those scripts only) leaves the same stacks, their
# frames named, and the same suppressions, checked in a second.
mpi_env=()
if ldd "$MOCO" 2>/dev/null | grep -q libasan; then
  printf '/* run.sh: libraries stay mapped */\nint dlclose(void *h) { (void)h; return 0; }\n' \
    | ${CC:-cc} -shared -fPIC -x c - -o "$MOCO_TEST_TMP/keep-dso.so" \
    && mpi_env=(env "LD_PRELOAD=$MOCO_TEST_TMP/keep-dso.so${LD_PRELOAD:+ $LD_PRELOAD}" \
                    "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0")
fi
pass=0; fail=0; skip=0; partial=0; failed=()
run_one() {
  local name=$1; shift
  if [ -n "${TESTS:-}" ] && ! [[ $name =~ $TESTS ]]; then return; fi
  local t0=$SECONDS log="$MOCO_TEST_TMP/$name.log"
  timeout --kill-after=10 "${MOCO_TEST_TIMEOUT:-1200}" "$@" >"$log" 2>&1
  local rc=$?
  case $rc in
    0) pass=$((pass+1)); echo "PASS  $name ($((SECONDS-t0))s)"
       # parts skipped inside a passing test (cmocka's skip(), a script's "skipped: ..." line) are named
       local parts; parts=$(grep -aE '^\[  SKIPPED \] [^0-9]|^skipped: ' "$log" | awk '!seen[$0]++')
       if [ -n "$parts" ]; then partial=$((partial+1)); echo "$parts" | sed 's/^/    part /'; fi;;
    124|137) fail=$((fail+1)); failed+=("$name"); echo "FAIL  $name: still running after ${MOCO_TEST_TIMEOUT:-1200} s, killed; last lines of $log:"
       tail -n 25 "$log" | sed 's/^/    /';;
    77) skip=$((skip+1)); echo "SKIP  $name: $(tail -n 1 "$log")";;
    *) fail=$((fail+1)); failed+=("$name"); echo "FAIL  $name (exit $rc), last lines of $log:"; tail -n 25 "$log" | sed 's/^/    /';;
  esac
}
for t in "$@"; do run_one "$(basename "$t")" "$t"; done
for s in tests/cli_*.sh; do
  pre=(); case $s in tests/cli_mpi*) pre=("${mpi_env[@]}");; esac
  [ -e "$s" ] && run_one "$(basename "$s" .sh)" "${pre[@]}" bash "$s"
done
# last: every JSON line the suite wrote must parse (skipped without python3)
if command -v python3 >/dev/null; then run_one json_lines python3 tests/check_json.py "$MOCO_TEST_TMP"; fi
echo "TESTS: $pass passed ($partial with parts skipped), $fail failed, $skip skipped${failed:+ (failed: ${failed[*]})}"
if [ "$fail" -eq 0 ] && [ $own_tmp -eq 1 ]; then rm -rf "$MOCO_TEST_TMP"; fi
[ "$fail" -eq 0 ]
