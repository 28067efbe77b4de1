"""A fake `moco run --serve` loader for the moco_stream tests: one ROUTER
speaking formats/README.md's serve protocol (HELLO -> WELCOME/REFUSED,
PAIRS, ACK, EPOCH_END, END, HEARTBEAT, BYE), with knobs for duplicates, re-sent
pairs, an early next-epoch pair, failed samples, hostile messages, CURVE,
silence and refusal. It records every HELLO, ACK, HEARTBEAT and BYE it gets."""
import struct
import threading
import time

import numpy as np
import zmq

MAGIC = b"MOCW"
ANY = 0xFFFFFFFF


def prefix(mtype, version=1, magic=MAGIC):
    return struct.pack("<4sHH", magic, version, mtype)


def pair_header(epoch, index, shape, label=None):
    h, w, c = shape
    lab = (index % 10) if label is None else label
    return prefix(2) + struct.pack("<IiQHHBBH", epoch, lab, index, h, w, c, 0, 0)


def views(index, shape):
    n = shape[0] * shape[1] * shape[2]
    q = np.full(n, index % 251, np.uint8).tobytes()
    k = np.full(n, (index * 7 + 3) % 251, np.uint8).tobytes()
    return q, k


def pairs_msg(items, n=None, short=0):
    """items: (epoch, index, shape) -> [frame1, frame2] of a PAIRS message."""
    hdrs, data = [], []
    for epoch, index, shape in items:
        hdrs.append(pair_header(epoch, index, shape))
        data.extend(views(index, shape))
    f1 = prefix(11) + struct.pack("<II", len(items) if n is None else n, 0) + b"".join(hdrs)
    f2 = b"".join(data)
    return [f1, f2[:len(f2) - short]]


def pair_msg(epoch, index, shape):
    q, k = views(index, shape)
    return [pair_header(epoch, index, shape), q, k]


class FakeLoader(threading.Thread):
    def __init__(self, endpoint="tcp://127.0.0.1:*", count=50, epochs=2, start_epoch=0,
                 shape=(4, 4, 3), per_msg=7, dup=False, early_next=False, failed=(),
                 hostile=(), refuse=None, silent=False, curve_dir=None, resend_after=1.0,
                 seed=1, busy_ok=False, heartbeat_ms=1000, yield_ack=False):
        super().__init__(daemon=True)
        self.count, self.epochs, self.start_epoch = count, epochs, start_epoch
        self.shape, self.per_msg, self.dup, self.early_next = shape, per_msg, dup, early_next
        self.failed, self.hostile, self.refuse, self.silent = set(failed), list(hostile), refuse, silent
        self.resend_after, self.rng = resend_after, np.random.default_rng(seed)
        self.busy_ok, self.busy = busy_ok, []     # WELCOME flag 2; when BUSY came
        self.heartbeat_ms = heartbeat_ms          # WELCOME's heartbeat interval
        # WELCOME flag 4, as the loader: EPOCH_END once the epoch's pairs are sent, then the ACKs awaited
        self.yield_ack = yield_ack
        self.words = []                           # (time, type) of every HEARTBEAT and BUSY
        self.hellos, self.acks, self.ack_sizes, self.heartbeats, self.byes = [], {}, [], [], []
        self.error, self.finished = None, threading.Event()
        self.stop = threading.Event()
        self.ctx = zmq.Context()
        self.auth = None
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.SNDHWM, 16)
        if curve_dir is not None:
            import os
            import zmq.auth as zauth
            from zmq.auth.thread import ThreadAuthenticator
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=os.path.join(curve_dir, "allowed"))
            pub, sec = zauth.load_certificate(os.path.join(curve_dir, "server.key_secret"))
            self.sock.curve_secretkey, self.sock.curve_publickey = sec, pub
            self.sock.curve_server = True
        self.sock.bind(endpoint)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.peer = None

    # -- plumbing
    def service(self, ms=5):
        """Receive and record what the consumer sends."""
        while self.sock.poll(ms, zmq.POLLIN):
            ms = 0
            f = self.sock.recv_multipart()
            ident, h = f[0], f[1]
            magic, version, mtype = struct.unpack_from("<4sHH", h)
            assert magic == MAGIC and version == {15: 3, 16: 5}.get(mtype, 1), h[:8]
            if mtype == 8:
                epoch, count = struct.unpack_from("<IQ", h, 8)
                assert len(h) == 20
                self.hellos.append((epoch, count, f[2] if len(f) > 2 else None))
                self.peer = ident
            elif mtype == 9:
                epoch, n = struct.unpack_from("<II", h, 8)
                assert len(h) == 16 + 8 * n and n <= 4096, (len(h), n)
                idx = np.frombuffer(h, "<u8", n, 16)
                self.ack_sizes.append(n)
                self.acks.setdefault(epoch, []).extend(int(i) for i in idx)
            elif mtype == 15:
                assert len(h) == 8 and len(f) == 2
                self.byes.append(ident)
            elif mtype == 5:
                assert len(h) == 8
                self.heartbeats.append(time.monotonic())
                self.words.append((time.monotonic(), 5))
            elif mtype == 16 and self.busy_ok:
                assert len(h) == 8
                self.busy.append(time.monotonic())
                self.words.append((time.monotonic(), 16))
            else:
                raise AssertionError("unexpected message type %d" % mtype)

    def send(self, frames):
        while not self.stop.is_set():
            try:
                self.sock.send_multipart([self.peer] + list(frames), flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                self.service(10)

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported to the test
            self.error = e
        finally:
            self.finished.set()
            while not self.stop.is_set():
                try:
                    self.service(20)
                except Exception:
                    pass

    def close(self):
        self.stop.set()
        self.join(5)
        self.sock.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()

    def _run(self):
        while not self.hellos:
            if self.stop.is_set():
                return
            self.service(20)
        epoch, count, bitmap = self.hellos[0]
        if self.refuse is not None:
            code, reason = self.refuse
            self.send([prefix(14, 3) + struct.pack("<i", code) + reason.encode()])
            return
        done = set()
        if epoch == ANY:
            epoch = self.start_epoch
        elif bitmap is not None:
            bits = np.unpackbits(np.frombuffer(bitmap, np.uint8), bitorder="little")
            done = set(np.flatnonzero(bits).tolist())
        end = self.start_epoch + self.epochs
        flags = (3 if self.busy_ok else 1) | (4 if self.yield_ack else 0)
        self.send([prefix(13, 3) + struct.pack("<IIQII", epoch, end, self.count, flags, self.heartbeat_ms)])
        if self.silent:
            return
        first = True
        for e in range(epoch, end):
            todo = [int(i) for i in self.rng.permutation(self.count)
                    if i not in done and i not in self.failed]
            done = set()
            if first:
                for m in self.hostile:
                    self.send(m)
                first = False
            sent = []
            for a in range(0, len(todo), self.per_msg):
                chunk = todo[a:a + self.per_msg]
                items = [(e, i, self.shape) for i in chunk]
                if self.dup and sent:           # a re-sent pair and a twin in one message
                    items.append((e, sent[len(sent) // 2], self.shape))
                    items.append((e, chunk[0], self.shape))
                self.send(pairs_msg(items))
                sent.extend(chunk)
                self.service(0)
            if self.early_next and e + 1 < end:
                self.send(pairs_msg([(e + 1, todo[0], self.shape)]))
            fl = sorted(self.failed)
            epoch_end = [prefix(6) + struct.pack("<IQI", e, self.count - len(fl), len(fl)) + np.asarray(fl, "<u8").tobytes()]
            if self.yield_ack:
                self.send(epoch_end)
            # wait for the ACKs of the whole epoch; re-send what is missing
            t0 = last = time.monotonic()
            need = set(todo)
            while not need <= set(self.acks.get(e, ())):
                if self.stop.is_set():
                    return
                if time.monotonic() - t0 > 30:
                    raise AssertionError("epoch %d: ACKs missing: %d" % (
                        e, len(need - set(self.acks.get(e, ())))))
                if time.monotonic() - last > self.resend_after and not self.yield_ack:
                    miss = sorted(need - set(self.acks.get(e, ())))[:self.per_msg]
                    self.send(pairs_msg([(e, i, self.shape) for i in miss]))
                    last = time.monotonic()
                self.service(10)
            if not self.yield_ack:
                self.send(epoch_end)
        self.send([prefix(10) + struct.pack("<I", end)])
