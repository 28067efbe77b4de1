"""Unit tests of moco_stream.PairStream against a fake loader (fake_loader.py):
WELCOME/REFUSED, exactly once over epochs with duplicates, re-sent and early
next-epoch pairs, hostile messages dropped with exact counts, ACK coverage,
resume and BYE, backpressure with heartbeats, timeouts, CURVE. Run:
    PYTHONPATH=tools/python /usr/bin/python3 -m unittest discover -s tools/python/tests
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

import moco_stream
from fake_loader import FakeLoader, pairs_msg, pair_msg, prefix

SHAPE = (4, 4, 3)


def collect(stream, check_pixels=True):
    """{epoch: [indices]} of everything yielded."""
    got = {}
    for b in stream:
        assert b.xq.shape[0] == b.xk.shape[0] == len(b.labels) == len(b.indices)
        assert b.xq.dtype == np.uint8 and b.indices.dtype == np.int64
        if check_pixels:
            for j, i in enumerate(b.indices):
                assert (b.xq[j] == i % 251).all() and (b.xk[j] == (i * 7 + 3) % 251).all()
                assert b.labels[j] == i % 10
        got.setdefault(b.epoch, []).extend(int(i) for i in b.indices)
    return got


class Base(unittest.TestCase):
    def setUp(self):
        self.loaders, self.streams = [], []

    def tearDown(self):
        for s in self.streams:
            s.close()
        for f in self.loaders:
            f.close()

    def loader(self, **kw):
        kw.setdefault("resend_after", 100.0)
        f = FakeLoader(**kw)
        f.start()
        self.loaders.append(f)
        return f

    def stream(self, endpoint, **kw):
        kw.setdefault("timeout", 10.0)
        if endpoint.startswith("tcp://") and "keys" not in kw:
            kw["insecure"] = True
        s = moco_stream.PairStream(endpoint, **kw)
        self.streams.append(s)
        return s

    def assertExact(self, got, epochs, count, failed=()):
        want = sorted(set(range(count)) - set(failed))
        for e in epochs:
            self.assertEqual(sorted(got.get(e, [])), want, "epoch %d" % e)
        self.assertEqual(sorted(got), sorted(epochs))


class TestBitmap(unittest.TestCase):
    def test_bits_count(self):
        # the count of delivered samples at EPOCH_END, a chunk at a time (no temporary 8x the bitmap):
        # the same as np.unpackbits' on every length and chunk boundary
        rng = np.random.default_rng(5)
        for n in (0, 1, 7, 8, 9, 1000, 65537):
            b = rng.integers(0, 256, size=n, dtype=np.uint8)
            for chunk in (1, 3, 4096, 1 << 22):
                self.assertEqual(moco_stream._bits_count(b, chunk), int(np.unpackbits(b).sum()), (n, chunk))
        self.assertEqual(moco_stream._bits_count(np.full(1 << 20, 255, dtype=np.uint8)), 8 << 20)


class TestHandshake(Base):
    def test_welcome(self):
        f = self.loader(count=30, epochs=1, start_epoch=4)
        s = self.stream(f.endpoint).wait_welcome()
        self.assertEqual((s.count, s.epochs), (30, 5))
        self.assertEqual(s.state(), {"version": 1, "epoch": 4, "count": 30, "delivered": bytes(4)})
        self.assertExact(collect(s), [4], 30)
        self.assertEqual(f.hellos, [(0xFFFFFFFF, 0, None)])
        self.assertEqual(s.state()["epoch"], 5)
        self.assertEqual(s.ended, 5)

    def test_refused(self):
        f = self.loader(refuse=(-33007, "another consumer is connected"))
        s = self.stream(f.endpoint)
        with self.assertRaises(moco_stream.StreamError) as cm:
            next(iter(s))
        self.assertIn("another consumer is connected", str(cm.exception))
        self.assertEqual(cm.exception.code, -33007)
        self.assertEqual(s.stats["refused"], 1)

    def test_refused_after_welcome(self):
        # the loader stops serving this consumer (another rank stayed away past
        # its --consumer-wait): an error with its reason and code, not a wait
        # for the rest of the epoch; a REFUSED longer than 12 + REASON_MAX
        # bytes stays malformed (counted, dropped)
        reason = "the consumer of rank 1 of 2 has been away for 3 s (--consumer-wait 3)"
        hostile = [[prefix(14, 3) + struct.pack("<i", -33006) + b"x" * (moco_stream.REASON_MAX + 1)],
                   [prefix(14, 3) + struct.pack("<i", -33006) + reason.encode()]]
        f = self.loader(count=50, epochs=1, hostile=hostile)
        s = self.stream(f.endpoint)
        t0 = time.monotonic()
        with self.assertRaises(moco_stream.StreamError) as cm:
            collect(s)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertIn("the loader stopped serving this consumer: " + reason, str(cm.exception))
        self.assertEqual(cm.exception.code, -33006)
        self.assertEqual((s.stats["refused"], s.stats["malformed"]), (1, 1), dict(s.stats))

    def test_no_welcome(self):
        d = tempfile.mkdtemp()
        try:
            s = self.stream("ipc://%s/nobody" % d, timeout=0.5)
            t0 = time.monotonic()
            with self.assertRaisesRegex(moco_stream.StreamError, r"no WELCOME from ipc://.*/nobody within 0\.5 s"):
                next(iter(s))
            self.assertLess(time.monotonic() - t0, 3)
        finally:
            shutil.rmtree(d)

    def test_silent_loader(self):
        f = self.loader(silent=True)
        s = self.stream(f.endpoint, timeout=1.0)
        t0 = time.monotonic()
        with self.assertRaisesRegex(moco_stream.StreamError, "no message"):
            next(iter(s))
        self.assertLess(time.monotonic() - t0, 4)

    def test_announced_heartbeat(self):
        """The WELCOME's heartbeat interval sets the pace: at 100 ms a timeout of 5 s (5 missed
        heartbeats of 1 s) is 0.5 s of silence, and the consumer beats every 100 ms; a hostile 1 ms
        is taken as 100 ms (not dead after 5 ms, no flood), 4e9 ms and 0 as 1 s (the timeout as
        given, not never). Before, the silence was always `timeout` and 1 ms beat every 1 ms."""
        self.assertEqual([moco_stream.heartbeat_s(x) for x in (0, None, 1, 99, 100, 250, 1000, 1001, 0xFFFFFFFF)],
                         [1.0, 1.0, 0.1, 0.1, 0.1, 0.25, 1.0, 1.0, 1.0])
        for hb, timeout, lo, hi, beats in ((100, 5.0, 0.5, 1.5, (4, 16)), (1, 5.0, 0.5, 1.5, (4, 16)),
                                           (0xFFFFFFFF, 1.0, 1.0, 2.5, (1, 3)), (0, 1.0, 1.0, 2.5, (1, 3))):
            f = self.loader(silent=True, heartbeat_ms=hb)
            s = self.stream(f.endpoint, timeout=timeout).wait_welcome()
            t0 = time.monotonic()
            with self.assertRaisesRegex(moco_stream.StreamError, "no message from the loader") as cm:
                next(iter(s))
            dt = time.monotonic() - t0
            time.sleep(0.1)                       # the loader records what came
            for _ in range(40):                   # its thread may lag on a loaded machine: up to 2 s more
                if len(f.heartbeats) >= beats[0]:
                    break
                time.sleep(0.05)
            n = len(f.heartbeats)
            self.assertTrue(lo <= dt + 0.1 and dt < hi, "heartbeat %d ms, timeout %g: silent after %.2f s (want %g..%g): %s"
                            % (hb, timeout, dt, lo, hi, cm.exception))
            self.assertTrue(beats[0] <= n <= beats[1], "heartbeat %d ms: %d heartbeats in %.2f s" % (hb, n, dt))
            if 0 < hb < 1000:
                self.assertIn("missed heartbeats of 100 ms; it announced %d ms" % hb, str(cm.exception))

    def test_tcp_needs_keys(self):
        with self.assertRaisesRegex(ValueError, r"a tcp endpoint needs keys= .* or insecure=True"):
            moco_stream.PairStream("tcp://127.0.0.1:1")
        moco_stream.PairStream("tcp://127.0.0.1:1", insecure=True, timeout=0.1).close()

    def test_bad_resume(self):
        with self.assertRaisesRegex(ValueError, r"resume: the bitmap must be ceil\(count/8\) bytes"):
            moco_stream.PairStream("ipc:///nonexistent/x", resume={"version": 1, "epoch": 0,
                                   "count": 20, "delivered": b"\0"})


class TestExactlyOnce(Base):
    def test_two_epochs_dups_resent_early(self):
        count, failed = 301, (5, 77)
        f = self.loader(count=count, epochs=2, dup=True, early_next=True, failed=failed)
        s = self.stream(f.endpoint)
        got = collect(s)
        self.assertIsNone(f.error)
        self.assertExact(got, [0, 1], count, failed)
        n = count - len(failed)
        msgs = -(-n // 7)
        # per epoch: 2 duplicates per message but the first; + the early pair once
        self.assertEqual(s.stats["duplicates"], 2 * 2 * (msgs - 1) + 1)
        self.assertEqual(s.stats["held"], 1)
        self.assertEqual(s.stats["pairs"], 2 * n)
        self.assertEqual([(e, d, fl) for e, d, fl in s.epoch_ends],
                         [(0, count - 2, [5, 77]), (1, count - 2, [5, 77])])
        for e in (0, 1):           # ACKs cover every accepted index, nothing else
            self.assertEqual(set(f.acks[e]), set(range(count)) - set(failed))
        self.assertEqual(s.stats["malformed"] + s.stats["rejected_index"], 0)

    def test_batch_size(self):
        f = self.loader(count=100, epochs=2, per_msg=9)
        s = self.stream(f.endpoint, batch_size=16)
        sizes = {}
        got = {}
        for b in s:
            sizes.setdefault(b.epoch, []).append(len(b.indices))
            got.setdefault(b.epoch, []).extend(b.indices.tolist())
        self.assertEqual(sizes[0], [16] * 6 + [4])
        self.assertEqual(sizes[1], [16] * 6 + [4])
        self.assertExact(got, [0, 1], 100)

    def test_batch_size_leftover_compact(self):
        # messages of 9 pairs, batches of 8: the pair left waiting is a copy, not a view of its 9-pair frame
        f = self.loader(count=40, epochs=1, per_msg=9, shape=(16, 16, 3))
        s = self.stream(f.endpoint, batch_size=8)
        it = iter(s)
        got = []
        for k in range(1, 5):
            got.extend(next(it).indices.tolist())
            waiting = [p for parts in s._pending.values() for p in parts]
            self.assertEqual(sum(len(p.indices) for p in waiting), k)   # 9k received, 8k yielded
            for p in waiting:                  # each view at least a quarter of what it keeps alive
                for x in (p.xq, p.xk):
                    self.assertLessEqual(moco_stream._root_nbytes(x), 4 * x.nbytes, (k, len(p.indices)))
        got.extend(i for b in it for i in b.indices.tolist())
        self.assertEqual(sorted(got), list(range(40)))

    def test_big_acks(self):
        f = self.loader(count=20000, epochs=1, shape=(1, 1, 1), per_msg=4096)
        s = self.stream(f.endpoint, batch_size=1000)
        got = collect(s, check_pixels=False)
        self.assertExact(got, [0], 20000)
        self.assertLessEqual(max(f.ack_sizes), 4096)
        self.assertEqual(sorted(f.acks[0]), list(range(20000)))

    def test_hostile(self):
        e = 2
        good = (4, 4, 3)
        wrong_magic = pairs_msg([(e, 3, good)])
        wrong_magic[0] = b"MOCX" + wrong_magic[0][4:]
        huge_n = pairs_msg([(e, 3, good)], n=2 ** 31)
        n5000 = pairs_msg([(e, 3, good)], n=5000)
        v4 = pairs_msg([(e, 3, good)])   # a version newer than MOCO_WIRE_VERSION: malformed
        v4[0] = prefix(11, moco_stream.VERSION_MAX + 1) + v4[0][8:]
        v5 = pairs_msg([(e, 11, good)])  # version 5 (MOCO_WIRE_VERSION): accepted, as by the C readers
        v5[0] = prefix(11, 5) + v5[0][8:]
        bad_inner = pairs_msg([(e, 3, good)])
        bad_inner[0] = bad_inner[0][:16 + 28] + b"\x02" + bad_inner[0][16 + 29:]   # channels 2
        hostile = [
            pairs_msg([(e + 5, 1, good)]),                  # rejected_epoch
            pairs_msg([(e, 50, good)]),                     # rejected_index (== count)
            pairs_msg([(e, 2 ** 40 - 1, good)]),            # rejected_index
            pairs_msg([(e - 1, 2, good)]),                  # stale
            pairs_msg([(e, 3, good), (e, 4, good)], short=1),   # malformed
            wrong_magic, huge_n, n5000, v4, bad_inner,      # malformed x5
            [prefix(6) + struct.pack("<IQI", e, 0, 2 ** 30)],  # EPOCH_END nfailed huge: malformed
            [prefix(5) + b"x"],                             # HEARTBEAT too long: malformed
            [prefix(40, 3) + b"future"],                    # unknown
            pair_msg(e, 7, (2, 2, 1)),                      # single PAIR: accepted
            v5,                                             # accepted
            pairs_msg([(e, 8, (3, 3, 3)), (e, 9, (3, 3, 3)), (e, 10, (5, 2, 1)), (e, 8, (3, 3, 3))]),
        ]
        f = self.loader(count=50, epochs=1, start_epoch=e, hostile=hostile)
        with self.assertLogs("moco_stream", level="INFO") as logs:   # before the receiver starts
            s = self.stream(f.endpoint)
            got = collect(s)
        self.assertIsNone(f.error)
        self.assertExact(got, [e], 50)
        st = s.stats
        self.assertEqual((st["rejected_epoch"], st["rejected_index"], st["stale"], st["malformed"],
                          st["unknown"]), (1, 2, 1, 8, 1), dict(st))
        # 7, 8, 9, 10, 11 came early, so the stream's copies are duplicates; so is the twin 8
        self.assertEqual(st["duplicates"], 6)
        self.assertEqual(st["pairs"], 50)
        # every rejection logged once (all within the first 20 of a kind), naming
        # the endpoint, the kind, the epoch and the index
        recs = logs.records
        for r in recs:
            self.assertIn(f.endpoint, r.getMessage())
            self.assertIn(": %s: " % r.kind, r.getMessage())
        def by(kind):
            return sorted(((r.epoch, r.index) for r in recs if r.kind == kind),
                          key=lambda t: [-1 if x is None else x for x in t])
        self.assertEqual(by("rejected_index"), [(e, 50), (e, 2 ** 40 - 1)])
        self.assertEqual([r.getMessage().count("epoch %d index 50 " % e) for r in recs
                          if r.kind == "rejected_index"].count(1), 1)
        self.assertEqual(by("rejected_epoch"), [(e + 5, 1)])
        self.assertEqual(by("stale"), [(e - 1, 2)])
        self.assertEqual(len(by("malformed")), 8)
        self.assertEqual(len(by("unknown")), 1)
        self.assertEqual(by("duplicates"), [(e, 7), (e, 8), (e, 8), (e, 9), (e, 10), (e, 11)])
        self.assertEqual(len(recs), 2 + 1 + 1 + 8 + 1 + 6, [r.getMessage() for r in recs])
        levels = {r.kind: r.levelname for r in recs}
        self.assertEqual((levels["rejected_index"], levels["malformed"], levels["duplicates"]),
                         ("WARNING", "WARNING", "INFO"))

    def test_many_frames(self):
        # a message of 50 frames: received frame by frame, at most 3 kept, counted malformed once
        many = [pairs_msg([(0, 3, SHAPE)])[0]] + [b"x" * 1000] * 49
        f = self.loader(count=20, epochs=1, hostile=[many])
        with self.assertLogs("moco_stream", level="WARNING") as logs:
            s = self.stream(f.endpoint)
            self.assertExact(collect(s), [0], 20)
        self.assertEqual([r.getMessage() for r in logs.records],
                         ["moco_stream: %s: malformed: epoch - index - (a message of 50 frames (at most 3 in this "
                          "protocol); the stream is at epoch 0, count 20; 1 malformed so far)" % f.endpoint])
        self.assertEqual(s.stats["malformed"], 1)

    def test_rejections_rate_limited(self):
        # 70 pairs of a far epoch, then 1 more: logged are the first 20, the 32nd and
        # the 64th (as the C loader), the 71st not
        far = [pairs_msg([(9, i, (1, 1, 1)) for i in range(70)]), pairs_msg([(9, 70, (1, 1, 1))])]
        f = self.loader(count=80, epochs=1, hostile=far)
        with self.assertLogs("moco_stream", level="WARNING") as logs:
            s = self.stream(f.endpoint)
            got = collect(s)
        self.assertExact(got, [0], 80)
        self.assertEqual(s.stats["rejected_epoch"], 71)
        self.assertEqual([(r.kind, r.epoch) for r in logs.records], [("rejected_epoch", 9)] * 22)
        self.assertEqual([r.index for r in logs.records], list(range(20)) + [31, 63])
        self.assertEqual([r.total for r in logs.records], list(range(1, 21)) + [32, 64])


    def test_held_bounded(self):
        early = [pairs_msg([(1, i, SHAPE)]) for i in range(17)]   # epoch 1 before EPOCH_END(0)
        f = self.loader(count=50, epochs=2, hostile=early)
        with self.assertLogs("moco_stream", level="WARNING") as logs:
            s = self.stream(f.endpoint)
            self.assertExact(collect(s), [0, 1], 50)
        self.assertEqual([(r.kind, r.epoch, r.index) for r in logs.records], [("held_dropped", 1, 16)])
        self.assertEqual((s.stats["held"], s.stats["held_dropped"], s.stats["duplicates"]),
                         (16, 1, 16))


    def test_held_bytes_bounded(self):
        # next-epoch pairs are also held up to HELD_BYTES_MAX view bytes (here 3 pairs of 2 x 48 bytes)
        early = [pairs_msg([(1, i, SHAPE)]) for i in range(5)]
        saved = moco_stream.HELD_BYTES_MAX
        moco_stream.HELD_BYTES_MAX = 3 * 2 * 48
        try:
            f = self.loader(count=50, epochs=2, hostile=early)
            with self.assertLogs("moco_stream", level="WARNING") as logs:
                s = self.stream(f.endpoint)
                self.assertExact(collect(s), [0, 1], 50)
        finally:
            moco_stream.HELD_BYTES_MAX = saved
        self.assertEqual([(r.kind, r.epoch, r.index) for r in logs.records], [("held_dropped", 1, 3), ("held_dropped", 1, 4)])
        self.assertIn("(288 view bytes held already)", logs.output[0])
        self.assertEqual((s.stats["held"], s.stats["held_dropped"], s.stats["duplicates"]), (3, 2, 3))


class TestRanks(Base):
    def test_missing_of_shard(self):
        # rank 0 of 2 (count 10): its EPOCH_END says 5 delivered, 4 came: 1 missing (before: 10 - 4 = 6)
        import zmq
        d = tempfile.mkdtemp()
        ctx = zmq.Context()
        srv = ctx.socket(zmq.ROUTER)
        srv.setsockopt(zmq.LINGER, 0)
        try:
            ep = "ipc://%s/serve" % d
            srv.bind(ep)
            s = self.stream(ep, rank=0, ranks=2)
            self.assertTrue(srv.poll(5000))
            ident, hello = srv.recv_multipart()
            self.assertEqual(hello, prefix(8, 4) + struct.pack("<IQII", 0xFFFFFFFF, 0, 0, 2))
            for m in ([prefix(13, 3) + struct.pack("<IIQII", 0, 1, 10, 1, 1000)],
                      pairs_msg([(0, i, SHAPE) for i in (0, 2, 4, 6)]),
                      [prefix(6) + struct.pack("<IQI", 0, 5, 0)], [prefix(10) + struct.pack("<I", 1)]):
                srv.send_multipart([ident] + m)
            self.assertEqual(collect(s), {0: [0, 2, 4, 6]})
            self.assertEqual(s.stats["missing"], 1)
        finally:
            srv.close(0)
            ctx.term()
            shutil.rmtree(d)


class TestResume(Base):
    def test_resume(self):
        count = 200
        f1 = self.loader(count=count, epochs=2, seed=3)
        s1 = self.stream(f1.endpoint, batch_size=16, prefetch=4)
        first = {}
        it = iter(s1)
        for _ in range(5):
            b = next(it)
            first.setdefault(b.epoch, []).extend(b.indices.tolist())
        st = s1.state()
        s1.close()
        for _ in range(100):
            if f1.byes:
                break
            time.sleep(0.02)
        self.assertEqual(len(f1.byes), 1)          # close() says BYE
        f1.close()
        self.loaders.remove(f1)
        self.assertEqual((st["epoch"], st["count"], len(st["delivered"])), (0, count, 25))
        bits = np.unpackbits(np.frombuffer(st["delivered"], np.uint8), bitorder="little")
        self.assertEqual(sorted(np.flatnonzero(bits).tolist()), sorted(first[0]))
        f2 = self.loader(count=count, epochs=2, seed=4)
        s2 = self.stream(f2.endpoint, resume=st)
        second = collect(s2)
        self.assertEqual(f2.hellos, [(0, count, st["delivered"])])
        union = {0: first[0] + second[0], 1: second[1]}
        self.assertExact(union, [0, 1], count)


class TestBackpressure(Base):
    def test_heartbeats_while_slow(self):
        f = self.loader(count=400, epochs=1, per_msg=1, shape=(8, 8, 3))
        s = self.stream(f.endpoint, prefetch=2).wait_welcome()
        time.sleep(2.6)                 # the caller does not read
        hb = len(f.heartbeats)
        self.assertGreaterEqual(hb, 2)
        # the loader was held back: ACKed on receipt, so only the prefetch queue (2), the message the reader holds and
        # at most one batch of ACKs in flight; not the 400
        self.assertLessEqual(len(f.acks.get(0, [])), 16, len(f.acks.get(0, [])))
        self.assertExact(collect(s), [0], 400)
        self.assertEqual(f.busy, [])    # this loader's WELCOME does not know BUSY

    def test_busy_while_caller_pauses(self):
        f = self.loader(count=400, epochs=1, per_msg=1, shape=(8, 8, 3), busy_ok=True)
        s = self.stream(f.endpoint, prefetch=2).wait_welcome()
        # the caller does not read: BUSY after a second, then each second. It reads again just
        # after the second BUSY, a second before the next is due (a fixed 3.5 s sleep left 0.4 s:
        # a late BUSY on a loaded machine came after the caller read again)
        t0 = time.monotonic()
        while s.stats["busy_sent"] < 2 and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        busy = s.stats["busy_sent"]
        self.assertEqual(busy, 2)
        self.assertExact(collect(s), [0], 400)
        for _ in range(60):             # the loader's thread records what came: it may lag on a loaded machine
            if len(f.busy) >= busy:
                break
            time.sleep(0.05)
        self.assertEqual(len(f.busy), busy)    # BUSY no more once the caller reads again
        # reading again: a HEARTBEAT at once, after the last BUSY
        words = [w for t, w in f.words]
        after = words[len(words) - words[::-1].index(16):]
        self.assertTrue(after and after[0] == 5, after[:3])
        self.assertEqual(s.stats["busy_sent"], busy)


class TestAckOnYield(Base):
    """To a loader whose WELCOME has flag 4, a pair is acknowledged once it is yielded (before: on receipt)."""

    def test_ack_follows_yield(self):
        # 50 pairs an epoch in messages of 7, each but the first with a re-sent pair and a twin
        f = self.loader(count=50, epochs=2, per_msg=7, dup=True, yield_ack=True)
        s = self.stream(f.endpoint, batch_size=8, prefetch=16)
        it = iter(s)
        got = [int(i) for _ in range(2) for i in next(it).indices]
        t0 = time.monotonic()       # all 50 come (the queue holds them); the ACKs of the 16 yielded follow
        while (s.stats["pairs"] < 50 or len(f.acks.get(0, ())) < 16) and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        time.sleep(0.3)             # any ACK of a pair not yielded would come by now
        # ACKed: what was yielded, no more (the 34 waiting and their re-sent copies are not)
        self.assertEqual(sorted(set(f.acks.get(0, []))), sorted(got))
        self.assertEqual(s.stats["pairs"], 50)
        self.assertGreater(s.stats["duplicates"], 0)
        rest = collect(s)
        rest.setdefault(0, [])[:0] = got
        self.assertExact(rest, [0, 1], 50)
        # the epoch's last batch, 2 pairs, came after EPOCH_END: the loader sent it before all were acknowledged
        for e in (0, 1):
            self.assertEqual(sorted(set(f.acks[e])), list(range(50)), "epoch %d" % e)
        self.assertEqual(s.state()["epoch"], 2)

    def test_busy_while_caller_is_away(self):
        # the queue never fills (5 messages of 4, prefetch 16); the caller takes one batch and goes away for
        # 2.5 s: the 16 pairs that wait for it, unacknowledged, must not age towards a re-send: BUSY
        f = self.loader(count=20, epochs=1, per_msg=4, yield_ack=True, busy_ok=True)
        s = self.stream(f.endpoint, batch_size=4, prefetch=16)
        it = iter(s)
        first = next(it)
        time.sleep(2.5)
        self.assertFalse(s._q.full())
        self.assertGreaterEqual(s.stats["busy_sent"], 1)
        got = collect(s)
        got[0][:0] = first.indices.tolist()
        self.assertExact(got, [0], 20)
        for _ in range(60):
            if len(f.busy) >= 1:
                break
            time.sleep(0.05)
        self.assertGreaterEqual(len(f.busy), 1)

    def test_close_leaves_unyielded_unacknowledged(self):
        f = self.loader(count=50, epochs=1, per_msg=10, yield_ack=True)
        s = self.stream(f.endpoint, batch_size=10, prefetch=16)
        got = next(iter(s)).indices.tolist()
        t0 = time.monotonic()
        while s.stats["pairs"] < 50 and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        with self.assertLogs("moco_stream", "INFO") as cm:
            s.close()
        t0 = time.monotonic()
        while not f.byes and time.monotonic() - t0 < 5:
            time.sleep(0.01)
        self.assertEqual(len(f.byes), 1)
        self.assertEqual(sorted(set(f.acks.get(0, []))), sorted(got))   # the 40 not yielded: not acknowledged
        self.assertEqual([r.levelname for r in cm.records], ["INFO"])
        self.assertIn("with 40 pairs received but not yielded, not acknowledged", cm.output[0])


class TestSafetensors(unittest.TestCase):
    def test_load(self):
        # moco_stream.torch.load_safetensors: what `moco export` writes, read without the safetensors package
        import json
        import moco_stream.torch as mt
        a = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
        b = np.array([5, -1], dtype=np.int64)
        h = {"__metadata__": {"format": "pt"}, "conv.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
             "labels": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}
        hj = json.dumps(h).encode()
        hj += b" " * (-len(hj) % 8)
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "e.safetensors")
            with open(p, "wb") as f:
                f.write(struct.pack("<Q", len(hj)) + hj + a.tobytes() + b.tobytes())
            t = mt.load_safetensors(p)
            self.assertEqual(sorted(t), ["conv.weight", "labels"])
            self.assertTrue(np.array_equal(t["conv.weight"].numpy(), a) and np.array_equal(t["labels"].numpy(), b))
            self.assertEqual(mt.load_safetensors.metadata, {"format": "pt"})
            whole = open(p, "rb").read()
            for cut in (4, 8 + len(hj) - 1, len(whole) - 1):  # cut short: in the length, the header, the data
                with open(p, "wb") as f:
                    f.write(whole[:cut])
                with self.assertRaisesRegex(ValueError, "^" + p + ": "):
                    mt.load_safetensors(p)


class TestTorch(Base):
    def test_dataset(self):
        try:
            import torch
            from moco_stream.torch import PairDataset, MEAN_STD
        except ImportError:
            self.skipTest("python3-torch absent")
        f = self.loader(count=60, epochs=1, per_msg=8)
        ds = PairDataset(f.endpoint, recipe="cifar", batch_size=32, insecure=True, timeout=10)
        self.streams.append(ds.stream)
        mean, std = MEAN_STD["cifar"]
        seen = []
        for xq, xk, labels, indices, epoch in torch.utils.data.DataLoader(ds, batch_size=None):
            self.assertEqual(xq.dtype, torch.float32)
            self.assertEqual(tuple(xq.shape[1:]), (3, 4, 4))
            i = int(indices[0])
            for c in range(3):
                want = ((i % 251) / 255 - mean[c]) / std[c]
                self.assertAlmostEqual(float(xq[0, c, 1, 2]), want, places=5)
            self.assertEqual(int(labels[0]), i % 10)
            seen.extend(indices.tolist())
        self.assertEqual(sorted(seen), list(range(60)))
        self.assertEqual(ds.stream.state()["epoch"], 1)

    def test_checkpoint_names(self):
        # a checkpoint's config "normalize" names (imagenet, none) are taken as well as the recipes'
        try:
            from moco_stream.torch import PairDataset, MEAN_STD
        except ImportError:
            self.skipTest("python3-torch absent")
        for name, want in (("imagenet", MEAN_STD["v2"]), ("none", ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))):
            f = self.loader(count=8, epochs=1)
            ds = PairDataset(f.endpoint, recipe=name, insecure=True, timeout=10)
            self.streams.append(ds.stream)
            self.assertEqual((ds.mean, ds.std), tuple(tuple(v) for v in want))
        with self.assertRaises(ValueError):
            PairDataset("ipc:///nonexistent/x", recipe="imagenet1k")


    def test_dataset_in_worker(self):
        # a forked DataLoader worker would yield pairs the parent already ACKed, unknown to its state()
        try:
            import torch
            from moco_stream.torch import PairDataset
        except ImportError:
            self.skipTest("python3-torch absent")
        f = self.loader(count=60, epochs=1, per_msg=8)
        ds = PairDataset(f.endpoint, batch_size=8, insecure=True, timeout=10)
        self.streams.append(ds.stream)
        ds.stream.wait_welcome()
        time.sleep(0.3)                 # pairs wait in the queue, to be inherited by the fork
        with self.assertRaises(moco_stream.StreamError) as cm:
            next(iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1)))
        self.assertIn("PairDataset of %s in a DataLoader worker: use num_workers=0" % f.endpoint, str(cm.exception))
        self.assertEqual(ds.stream.stats["yielded"], 0)
        seen = [i for b in ds.stream for i in b.indices.tolist()]   # the creating process gets all of them
        self.assertEqual(sorted(seen), list(range(60)))

    def test_stream_in_child_process(self):
        f = self.loader(count=20, epochs=1, per_msg=8)
        s = self.stream(f.endpoint).wait_welcome()
        time.sleep(0.3)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                next(iter(s))
            except moco_stream.StreamError as e:
                code = 3 if "was created in process %d and is iterated in process %d" % (
                    os.getppid(), os.getpid()) in str(e) else 2
            finally:
                os._exit(code)
        self.assertEqual(os.waitpid(pid, 0)[1] >> 8, 3)
        self.assertExact(collect(s), [0], 20)

    def test_dataset_mean_std(self):
        try:
            import torch
            from moco_stream.torch import PairDataset
        except ImportError:
            self.skipTest("python3-torch absent")
        for mean, std in (((0.5, 0.5), (0.5, 0.5)), ((0.5, 0.5, 0.5), (0.5,))):
            with self.assertRaises(ValueError) as cm:
                PairDataset("ipc:///nonexistent/x", mean=mean, std=std)
            self.assertEqual(str(cm.exception), "mean and std need 1 value (for every channel) or 3 (one per "
                             "channel; a 1-channel view uses the first), not %d and %d" % (len(mean), len(std)))
        f = self.loader(count=16, epochs=1, per_msg=8)
        ds = PairDataset(f.endpoint, mean=(0.5,), std=(0.25,), insecure=True, timeout=10)
        self.streams.append(ds.stream)
        n = 0
        for xq, xk, labels, indices, epoch in ds:        # 3-channel views, one constant for each
            self.assertEqual(tuple(xq.shape[1:]), (3, 4, 4))
            for j, i in enumerate(indices.tolist()):
                self.assertTrue(torch.allclose(xq[j], torch.full((3, 4, 4), ((i % 251) / 255 - 0.5) / 0.25)))
            n += len(indices)
        self.assertEqual(n, 16)


class TestCurve(Base):
    def setUp(self):
        super().setUp()
        import zmq.auth as zauth
        self.dir = tempfile.mkdtemp()
        zauth.create_certificates(self.dir, "server")
        zauth.create_certificates(self.dir, "client")
        os.mkdir(os.path.join(self.dir, "allowed"))
        shutil.copy(os.path.join(self.dir, "client.key"), os.path.join(self.dir, "allowed"))
        self.other = tempfile.mkdtemp()          # a client key that is not allowed
        zauth.create_certificates(self.other, "client")
        shutil.copy(os.path.join(self.dir, "server.key"), self.other)

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.dir)
        shutil.rmtree(self.other)

    def test_curve(self):
        f = self.loader(count=40, epochs=1, curve_dir=self.dir)
        self.assertTrue(f.endpoint.startswith("tcp://127.0.0.1:"))
        with self.assertRaises(ValueError):
            moco_stream.PairStream(f.endpoint)
        s = self.stream(f.endpoint, keys=self.dir)
        self.assertExact(collect(s), [0], 40)

    def test_bad_endpoint_with_keys(self):
        # before: with keys= a failed connect() left the monitor socket open and ctx.term() hung for ever
        code = ("import moco_stream\n"
                "for ep in ('tcp://127.0.0.1', 'nonsense'):\n"
                "    try:\n"
                "        moco_stream.PairStream(ep, keys=%r)\n"
                "    except ValueError as e:\n"
                "        print(e)\n" % self.dir)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "moco_stream: cannot connect to 'tcp://127.0.0.1': Invalid argument "
                         "(ipc://PATH or tcp://HOST:PORT)\n"
                         "moco_stream: cannot connect to 'nonsense': Invalid argument (ipc://PATH or tcp://HOST:PORT)\n")

    def test_keys_on_ipc(self):
        # the C side never uses CURVE on ipc:// (formats/zsec.c): keys= there is no CURVE either
        # (before: a CURVE client against a plain server, "no WELCOME" after the timeout)
        d = tempfile.mkdtemp()
        try:
            f = self.loader(endpoint="ipc://%s/serve" % d, count=40, epochs=1)
            s = self.stream(f.endpoint, keys=self.dir, timeout=3.0)
            self.assertExact(collect(s), [0], 40)
            self.assertEqual(s.stats["auth_rejected"], 0)
        finally:
            shutil.rmtree(d)

    def test_curve_not_allowed(self):
        # refused by the loader's ZAP handler: an error at once (not after
        # the timeout) naming the endpoint and our key file, and counted
        f = self.loader(count=40, epochs=1, curve_dir=self.dir)
        s = self.stream(f.endpoint, keys=self.other, timeout=30.0)
        t0 = time.monotonic()
        with self.assertRaises(moco_stream.StreamError) as e:
            next(iter(s))
        self.assertLess(time.monotonic() - t0, 10.0)
        self.assertIn("refused this consumer's key " + os.path.join(self.other, "client.key"), str(e.exception))
        self.assertIn(f.endpoint, str(e.exception))
        self.assertEqual(s.stats["auth_rejected"], 1)
        self.assertEqual(f.hellos, [])

    def test_curve_wrong_server_key(self):
        # the loader cannot decrypt a HELLO sealed for another server key: it closes every connection
        # during the handshake and logs a cryptographic error; the client saw only reconnections and
        # said "no WELCOME" after its whole timeout. (a) a key directory of another keygen (its client
        # key is not allowed either), (b) the allowed client key with another server.key
        other = tempfile.mkdtemp()
        try:
            import zmq.auth as zauth
            zauth.create_certificates(other, "server")
            zauth.create_certificates(other, "client")
            wrong = tempfile.mkdtemp(dir=other)
            for name in ("client.key", "client.key_secret"):
                shutil.copy(os.path.join(self.dir, name), wrong)
            shutil.copy(os.path.join(other, "server.key"), wrong)
            f = self.loader(count=40, epochs=1, curve_dir=self.dir)
            for keys in (other, wrong):
                s = self.stream(f.endpoint, keys=keys, timeout=20.0)
                t0 = time.monotonic()
                with self.assertRaises(moco_stream.StreamError) as e:
                    next(iter(s))
                self.assertLess(time.monotonic() - t0, 10.0, keys)
                self.assertIn("%s closed 3 connections during the CURVE handshake: %s is probably not that "
                              "loader's server key" % (f.endpoint, os.path.join(keys, "server.key")),
                              str(e.exception))
                self.assertEqual(s.stats["auth_rejected"], 1)
            self.assertEqual(f.hellos, [])
            # the right keys still work
            self.assertExact(collect(self.stream(f.endpoint, keys=self.dir)), [0], 40)
        finally:
            shutil.rmtree(other)

    def test_curve_loader_starts_late(self):
        # started before the loader binds: refused connections are not taken for a wrong server key
        import socket
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            port = so.getsockname()[1]
        s = self.stream("tcp://127.0.0.1:%d" % port, keys=self.dir, timeout=20.0)
        time.sleep(2.0)
        self.loader(endpoint="tcp://127.0.0.1:%d" % port, count=40, epochs=1, curve_dir=self.dir)
        self.assertExact(collect(s), [0], 40)
        self.assertEqual(s.stats["auth_rejected"], 0)


class TestBye(Base):
    def test_bye_at_end_without_close(self):
        # iterated to the end, never closed (tools/python/README.md's example): BYE at once, so that
        # `moco run --serve`, which waits for it after END, ends (before: only after close(), or
        # --consumer-timeout and --linger after the process was gone)
        f = self.loader(count=40, epochs=2)
        s = moco_stream.PairStream(f.endpoint, timeout=10.0, insecure=True)
        self.assertExact(collect(s), [0, 1], 40)
        deadline = time.monotonic() + 2.0
        while not f.byes and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(len(f.byes), 1)
        self.assertTrue(s._ctx.closed)

    def test_bye_at_exit(self):
        # a stream left open at interpreter exit (mid-run, and after the last pair but before the
        # iterator's end): the process exits at once, with BYE (a successor is taken at once)
        for code in ("next(iter(s))", "[next(it) for it in [iter(s)] for _ in range(40)]"):
            f = self.loader(count=40, epochs=1, per_msg=1)
            prog = ("import moco_stream\n"
                    "s = moco_stream.PairStream(%r, insecure=True, timeout=10.0, prefetch=1)\n"
                    "%s\n" % (f.endpoint, code))
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=20, env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertLess(time.monotonic() - t0, 8.0, code)
            deadline = time.monotonic() + 2.0
            while not f.byes and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(len(f.byes), 1, code)

    def test_collected(self):
        # a stream whose thread ended (here: REFUSED), dropped without close(): collected, context freed
        import gc
        import warnings
        f = self.loader(refuse=(3, "busy"))
        s = moco_stream.PairStream(f.endpoint, timeout=10.0, insecure=True)
        with self.assertRaises(moco_stream.StreamError):
            next(iter(s))
        s._thread.join(5)
        ctx = s._ctx
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            del s
            gc.collect()
        self.assertTrue(ctx.closed)


if __name__ == "__main__":
    unittest.main()
