#!/usr/bin/env bash
# cli_quality.sh: tools/quality's Python helpers (seed_spread.py, ref_seeds.py):
# their unit tests, with the real reference script when ../shared is beside us,
# and bf16_error.py on this build's step_grads.
set -u
case ${BUILD:-build/release} in */release) ;; *) echo "skipped: a sanitizer build: these are tests of Python tools; step_grads' bf16 path runs instrumented in cli_bf16 and test_bf16"; exit 77;; esac
cd "$(dirname "$0")/.."
export STEP_GRADS=$PWD/${BUILD:-build/release}/tools/quality/step_grads
[ -x "$STEP_GRADS" ] || { echo "FAIL: $STEP_GRADS is not built (make tests builds it)"; exit 1; }
out=$(timeout 400 /usr/bin/python3 -m unittest discover -s tools/quality/tests -p 'test_*.py' -v 2>&1)
rc=$?
echo "$out" | tail -n 22
[ $rc -eq 0 ] || { echo "FAIL: tools/quality unit tests"; exit 1; }
# every test written in tools/quality/tests must have run (a count kept by hand here went stale once)
want=$(cat tools/quality/tests/test_*.py | grep -c '^    def test_')
[ "$want" -gt 0 ] || { echo "FAIL: no test_ methods found in tools/quality/tests"; exit 1; }
echo "$out" | grep -q "^Ran $want tests" || { echo "FAIL: expected $want tests (the test_ methods in tools/quality/tests)"; exit 1; }
echo "tools/quality: unit tests passed"
