"""check_json.py: every JSON line the test suite produced parses (issue 15:
"the tests parse every JSON line the suite produces").

    check_json.py DIR

Reads every *.jsonl and *.json file under DIR (regular files only: the
tests leave FIFOs named like outputs, which an open would wait on) (the suite's scratch
directory, run by tests/run.sh at the end) and every line in *.out / *.log
files that starts with '{"' (not the unit-test programs' own logs, whose
lines are their inputs): each must be one valid JSON value. Prints the
count, how many of the pipeline's logs it read (metrics.jsonl, sink.jsonl,
workers.jsonl, loader.jsonl: `moco run` writes them into its run
directory, which the tests keep under DIR) and each bad line with its
file; exit 1 if any is bad, 77 if no JSON was found (nothing to check is
not a pass). DIR/json-audit.jsonl holds every JSON text the project's one
writer (formats/jsonw.c) ended while the suite ran, whatever stream the
command printed it to (MOCO_JSON_AUDIT, set by tests/run.sh): when it is
named in the environment it must exist and hold lines, else exit 1."""
import json
import os
import sys


LOGS = ("metrics.jsonl", "sink.jsonl", "workers.jsonl", "loader.jsonl")


def main(top):
    good, bad = 0, []
    logs = dict.fromkeys(LOGS, 0)
    for d, _, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            kind = f.rsplit(".", 1)[-1]
            if kind not in ("jsonl", "json", "out", "log"):
                continue
            if d == top and f.startswith("test_"):
                continue  # a unit test's own log: its lines are test inputs, some malformed on purpose
            if not os.path.isfile(p):
                continue  # a FIFO the tests left on purpose (an open would wait for a writer forever), a dangling link
            try:
                with open(p, "rb") as fh:
                    data = fh.read(64 << 20)
            except OSError:
                continue
            if f in logs:
                logs[f] += 1
            if kind == "json" and data.strip().startswith(b"{") and b"\n" in data.strip():
                try:
                    json.loads(data)  # a pretty-printed document
                    good += 1
                    continue
                except ValueError:
                    pass
            for n, line in enumerate(data.split(b"\n"), 1):
                s = line.strip()
                if not s or (kind in ("out", "log") and not s.startswith(b"{\"")):
                    continue
                try:
                    json.loads(s.decode("utf-8"))
                    good += 1
                except (ValueError, UnicodeDecodeError) as e:
                    bad.append("%s:%d: %s: %r" % (p, n, e, s[:200]))
    audit = os.environ.get("MOCO_JSON_AUDIT")
    audited = 0
    if audit:
        try:
            with open(audit, "rb") as fh:
                audited = sum(1 for line in fh if line.strip())
        except OSError:
            pass
        if not audited:
            bad.append("%s: missing or empty: the writer's audit copy is not working" % audit)
    for b in bad[:40]:
        print("bad JSON line: " + b)
    print("check_json: %d JSON lines parse, %d do not (%d from the writer's audit copy); read %s" % (
        good, len(bad), audited, ", ".join("%d %s" % (logs[k], k) for k in LOGS)))
    if bad:
        return 1
    return 0 if good else 77


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
