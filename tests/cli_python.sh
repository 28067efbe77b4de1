#!/usr/bin/env bash
# cli_python.sh: the Python consumer tools/python/moco_stream: its unit tests
# against a fake loader (protocol, hostile messages, resume, CURVE) and, with
# torch, train_moco_torch.py's failure paths (test_train_torch.py), then, when
# `moco run` has --serve, end to end against the real pipeline (exactly once,
# kill and resume), two ranks reading their shards (e2e_shards.py), over tcp
# with keys (e2e_keys.py: the README example ends the run at once; a wrong
# server.key is named) and a 2-second run of tools/python/bench_stream.py.
# Skipped (77) when Debian's python3-zmq or python3-numpy is absent.
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/python
PY=/usr/bin/python3
cd "$(dirname "$0")/.."
$PY -c 'import zmq, numpy' 2>/dev/null || { echo "skipped: python3-zmq or python3-numpy absent"; exit 77; }
rm -rf "$T" && mkdir -p "$T"
export PYTHONPATH=$PWD/tools/python:$PWD/tools/python/tests
# the whole report kept: a failure shows its test's name and traceback (the last 4 lines
# alone said "FAILED (failures=1)" and no more, a CI failure that could not be read)
timeout 120 $PY -m unittest discover -s tools/python/tests -p 'test_*.py' >"$T/unit.log" 2>&1
rc=$?
tail -n 4 "$T/unit.log"
if [ $rc -ne 0 ]; then
  grep -aE -A30 '^(FAIL|ERROR): ' "$T/unit.log" | head -n 120
  fail "moco_stream unit tests (exit $rc)"
fi
timeout 120 $PY tools/python/tests/e2e_shards.py "$M" "$T/shards" || fail "several consumers (--consumers 2): shards"
timeout 120 $PY tools/python/tests/e2e_keys.py "$M" "$T/keys"
case $? in
  0|77) ;;
  *) fail "end to end over tcp with keys: the README example ends moco run at once; a wrong server.key named";;
esac
timeout 150 $PY tools/python/tests/e2e_serve.py "$M" "$T/e2e"
rc=$?
case $rc in
  0) timeout 60 $PY tools/python/bench_stream.py --moco "$M" --db "$T/e2e/db" --workers 1 \
       --recipe cifar --size 28 --seconds 2 >"$T/bench.out" 2>&1 || { cat "$T/bench.out"; fail bench_stream; }
     tail -n 1 "$T/bench.out" | $PY -c 'import json,sys; d=json.loads(sys.stdin.read()); assert d["pairs"] > 0, d' \
       || { cat "$T/bench.out"; fail "bench_stream: no JSON line with pairs > 0"; }
     echo "moco_stream: unit tests, end to end and bench_stream passed";;
  77) echo "moco_stream: unit tests passed; end to end skipped (moco run has no --serve yet)";;
  *) fail "end to end (exit $rc)";;
esac
