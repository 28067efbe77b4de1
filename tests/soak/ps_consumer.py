"""ps_consumer.py: a PairStream consumer for the soak (tests/soak/soak.sh)
that can be SIGKILLed at any moment and resumed exactly.

    ps_consumer.py ENDPOINT KEYS INDEX_LOG STATE_FILE

Appends "epoch index" for every pair it is given to INDEX_LOG, and after
each batch stores, atomically (write, fsync, rename), its resume state with
the length of INDEX_LOG at that point. Started again after a kill, it cuts
INDEX_LOG back to that length (lines of a batch it got but whose state was
not stored are given again) and resumes from the state. A REFUSED (the
killed consumer's place is not free yet) is retried for 60 s. Exit 0 at
the end of the stream, 1 on an error."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "python"))
import moco_stream  # noqa: E402


def save(path, state, log_len):
    tmp = path + ".tmp"
    d = dict(state)
    d["delivered"] = state["delivered"].hex()
    with open(tmp, "w") as f:
        json.dump({"state": d, "log_len": log_len}, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def load(path):
    if not os.path.exists(path):
        return None, 0
    with open(path) as f:
        d = json.load(f)
    st = d["state"]
    st["delivered"] = bytes.fromhex(st["delivered"])
    return st, d["log_len"]


def main(endpoint, keys, log_path, state_path):
    resume, log_len = load(state_path)
    with open(log_path, "a"):
        pass
    os.truncate(log_path, log_len)
    t0 = time.time()
    while True:
        stream = moco_stream.PairStream(endpoint, keys=keys, resume=resume, prefetch=4, timeout=60)
        try:
            stream.wait_welcome(timeout=10)
            break
        except moco_stream.StreamError as e:
            stream.close()
            if time.time() - t0 > 60:
                print("ps_consumer: %s" % e, file=sys.stderr)
                return 1
            time.sleep(0.5)
    with open(log_path, "a") as log, stream:
        for b in stream:
            log.write("".join("%d %d\n" % (b.epoch, i) for i in b.indices.tolist()))
            log.flush()
            save(state_path, stream.state(), log.tell())
    print("ps_consumer: stream ended; stats %s" % json.dumps(stream.stats), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
