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
#   MOCO_TEST_JOBS  how many tests run at once (default 2), in lanes: the
#            known-slow ones first, a test's line printed when it ends;
#            1 runs them one after another in the order above. Each test
#            gets its own scratch directory $MOCO_TEST_TMP/<name> and, in
#            MOCO_TEST_LANE (0 .. MOCO_TEST_LANES-1), the lane it runs in:
#            tests/ports.sh draws its tcp ports from that lane's own range.
#            json_lines runs last, after all the others ended.
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
# SANITIZE=undefined: a report names its stack (the build stops at the first, -fno-sanitize-recover)
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# SANITIZE=thread: what uninstrumented libraries (libzmq, glib/libvips,
# OpenBLAS, oneDNN) do is not tracked, their hand-offs would read as races;
# tests/tsan.supp for what that leaves inside them (never our code); the
# first report ends the process (exit 66), so that the test that ran it fails
if ldd "$MOCO" 2>/dev/null | grep -q libtsan; then
  export TSAN_OPTIONS=${TSAN_OPTIONS:-suppressions=$PWD/tests/tsan.supp:ignore_noninstrumented_modules=1:halt_on_error=1:exitcode=66:second_deadlock_stack=1:print_suppressions=0}
fi
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
jobs_n=${MOCO_TEST_JOBS:-2}
[[ $jobs_n =~ ^[1-9][0-9]?$ ]] || { echo "run.sh: MOCO_TEST_JOBS=$jobs_n: want a count of 1 to 99" >&2; exit 2; }
# lanes need `wait -n -p` (bash 5.1); an older bash runs the tests one by one
if (( BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1) )); then jobs_n=1; fi
export MOCO_TEST_LANES=$jobs_n
top=$MOCO_TEST_TMP
# report NAME RC SECONDS: the test's PASS/FAIL/SKIP line (and its log's tail or skipped parts)
report() {
  local name=$1 rc=$2 secs=$3 log="$top/$1.log"
  case $rc in
    0) pass=$((pass+1)); echo "PASS  $name (${secs}s)"
       # parts skipped inside a passing test (cmocka's skip(), a script's "skipped: ..." line) are named
       local parts; parts=$(grep -aE '^\[  SKIPPED \] [^0-9]|^skipped: ' "$log" | awk '!seen[$0]++')
       if [ -n "$parts" ]; then partial=$((partial+1)); echo "$parts" | sed 's/^/    part /'; fi;;
    124|137) fail=$((fail+1)); failed+=("$name"); echo "FAIL  $name: still running after ${MOCO_TEST_TIMEOUT:-1200} s, killed; last lines of $log:"
       tail -n 25 "$log" | sed 's/^/    /';;
    77) skip=$((skip+1)); echo "SKIP  $name: $(tail -n 1 "$log")";;
    *) fail=$((fail+1)); failed+=("$name")
       # a unit-test program's failed assertions (cmocka's ERROR and LINE), wherever they are in its log:
       # the tail alone showed a later test's output and only the failing test's name
       local why; why=$(grep -aE '^\[  ERROR   \]|^\[   LINE   \]' "$log" | head -n 20)
       if [ -n "$why" ]; then echo "FAIL  $name (exit $rc), its failed assertions:"; echo "$why" | sed 's/^/    /'; fi
       echo "FAIL  $name (exit $rc), last lines of $log:"; tail -n 25 "$log" | sed 's/^/    /';;
  esac
}
# the tests in today's order: each a name and what runs it (a program, or a script)
names=(); what=()
for t in "$@"; do names+=("$(basename "$t")"); what+=("$t"); done
for s in tests/cli_*.sh; do [ -e "$s" ] && { names+=("$(basename "$s" .sh)"); what+=("$s"); }; done
# with lanes, the slowest first (seconds, release build, 2026-12-02), so that
# no lane is left with a long test at the end; the rest in today's order
slow=(cli_rundir cli_mpi cli_python cli_train test_pipeline cli_demo cli_hostile cli_usage cli_torch_train
      cli_run cli_peers cli_datasets cli_jsonlines cli_kernels cli_quality test_stream test_zsec)
order=()
if [ "$jobs_n" -gt 1 ]; then
  for n in "${slow[@]}"; do for i in "${!names[@]}"; do [ "${names[$i]}" = "$n" ] && order+=("$i"); done; done
fi
for i in "${!names[@]}"; do [[ " ${order[*]} " == *" $i "* ]] || order+=("$i"); done
declare -A lane_of=() test_of=() t0_of=()
free_lanes=(); for ((l = 0; l < jobs_n; l++)); do free_lanes+=("$l"); done
# start test I in the first free lane, in the background: its own scratch
# directory, its lane, the per-test timeout; its output to $top/NAME.log
start() {
  local name=${names[$1]} w=${what[$1]} lane=${free_lanes[0]}
  free_lanes=("${free_lanes[@]:1}")
  local argv=("$w")
  case $w in
    # with a test beside them, ranks that wait for each other (MPI_Wait in
    # each step's gradient exchange) yield the core instead of spinning on it
    tests/cli_mpi*) argv=("${mpi_env[@]}" bash "$w")
       [ "$jobs_n" -gt 1 ] && argv=(env OMPI_MCA_mpi_yield_when_idle=1 "${argv[@]}");;
    *.sh) argv=(bash "$w");;
  esac
  mkdir -p "$top/$name"
  # a command put in the background (no job control) has SIGINT and SIGQUIT
  # ignored, and so would every process it starts: the tests send them (an
  # interrupted run must stop), so the subshell gives them back their defaults
  ( trap - INT QUIT
    MOCO_TEST_TMP=$top/$name MOCO_TEST_LANE=$lane \
      exec timeout --kill-after=10 "${MOCO_TEST_TIMEOUT:-1200}" "${argv[@]}" >"$top/$name.log" 2>&1 ) &
  lane_of[$!]=$lane; test_of[$!]=$name; t0_of[$!]=$SECONDS
}
# wait for any running test to end; report it and free its lane
reap() {
  local pid rc
  wait -n -p pid "${!test_of[@]}"; rc=$?
  report "${test_of[$pid]}" "$rc" "$((SECONDS - t0_of[$pid]))"
  free_lanes+=("${lane_of[$pid]}")
  unset "lane_of[$pid]" "test_of[$pid]" "t0_of[$pid]"
}
# interrupted: the running tests are stopped too (timeout passes the signal on)
trap 'kill -TERM "${!test_of[@]}" 2>/dev/null; exit 130' INT TERM
# alone, after the lanes (with lanes only): cli_hostile. Its rounds wait on
# the loader's --stall-timeout of 0.5-2 s. Beside another test (ASan build,
# 2026-12-02) its slots round once failed: its staller took the epoch's last
# 48 samples, and the loader then banned a staller only while others
# delivered. The loader now bans one that holds all that can be issued
# (loader/stream.c, holds_up_the_run; cli_hostile's window round); the test
# stays alone, as its timeouts are short for a busy neighbour.
alone=" cli_hostile "
for phase in lanes alone; do
  for i in "${order[@]}"; do
    if [ -n "${TESTS:-}" ] && ! [[ ${names[$i]} =~ $TESTS ]]; then continue; fi
    if [ "$jobs_n" -gt 1 ] && [[ $alone == *" ${names[$i]} "* ]]; then [ $phase = alone ] || continue
    else [ $phase = lanes ] || continue; fi
    [ "${#test_of[@]}" -lt "$jobs_n" ] || reap
    start "$i"
  done
  while [ "${#test_of[@]}" -gt 0 ]; do reap; done
done
trap - INT TERM
# last, alone: every JSON line the suite wrote must parse (skipped without python3)
if command -v python3 >/dev/null && { [ -z "${TESTS:-}" ] || [[ json_lines =~ $TESTS ]]; }; then
  t0=$SECONDS
  timeout --kill-after=10 "${MOCO_TEST_TIMEOUT:-1200}" python3 tests/check_json.py "$top" >"$top/json_lines.log" 2>&1
  report json_lines $? $((SECONDS - t0))
fi
echo "TESTS: $pass passed ($partial with parts skipped), $fail failed, $skip skipped${failed:+ (failed: ${failed[*]})}"
if [ "$fail" -eq 0 ] && [ $own_tmp -eq 1 ]; then rm -rf "$MOCO_TEST_TMP"; fi
[ "$fail" -eq 0 ]
