#!/usr/bin/env bash
# cli_quality.sh: tools/quality's Python helpers (seed_spread.py, ref_seeds.py):
# their unit tests, with the real reference script when ../shared is beside us.
set -u
cd "$(dirname "$0")/.."
out=$(timeout 120 /usr/bin/python3 -m unittest discover -s tools/quality/tests -p 'test_*.py' -v 2>&1)
rc=$?
echo "$out" | tail -n 12
[ $rc -eq 0 ] || { echo "FAIL: tools/quality unit tests"; exit 1; }
echo "$out" | grep -q "^Ran 5 tests" || { echo "FAIL: expected 5 tests"; exit 1; }
echo "tools/quality: unit tests passed"
