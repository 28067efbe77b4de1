"""moco_stream: the Python consumer of `moco run DB --serve ENDPOINT`.

Written from formats/README.md ("Consumer protocol over one socket: serve
mode (version 3)") alone. It promises:

* one ZeroMQ DEALER, owned by one background thread, which sends HELLO (with
  the resume state), waits for WELCOME or REFUSED, checks every frame strictly
  (magic, version 1..3, type, exact lengths, n ranges, views filling frame 2
  exactly), drops and counts whatever fails, ACKs a pair once it has been
  YIELDED to the caller (the iterator hands the indices it yields to the
  thread; at most 4096 indices per ACK, at least every 20 ms), so that what
  a rank received but never yielded (closed, killed) is not acknowledged and
  the loader gives it to the rank's successor; to a loader whose WELCOME
  lacks flag 4 (it would hold EPOCH_END until every pair is acknowledged:
  an epoch's short last batch would never fill), on receipt as before; sends a
  HEARTBEAT every second, also while the caller is slow; once the caller
  has left the queue full for a second, or has been away from the iterator
  for a second while pairs wait for it (it trains a long step, evaluates),
  BUSY instead, to a loader whose WELCOME says it knows BUSY (flag 2), so
  that the loader does not re-send the pairs waiting here, and HEARTBEAT
  again as soon as it reads; close() sends BYE, and so does the iterator's end (END
  reached and everything yielded: the loader, which waits for BYE after END,
  ends at once, not after --consumer-timeout and --linger) and interpreter
  exit for a stream not closed;
* every index of every epoch is yielded exactly once: duplicates (re-sent
  pairs) are dropped, and ACKed again when the first was yielded (not before
  it is); a pair of the next epoch is held
  (bounded) until EPOCH_END of the current one; any other epoch or an index
  >= count is dropped; nothing is allocated by a number a peer sent;
* backpressure: at most `prefetch` messages wait for the caller; when they
  are full the thread stops reading the socket (the loader then stops) but
  keeps heart-beating; with batch_size, pairs waiting to fill a batch are
  copied out of their frame when they are a small part of it;
* state() describes what was YIELDED to the caller; PairStream(resume=state)
  yields exactly the rest; iterating in another process than the creating
  one (a forked DataLoader worker) raises StreamError;
* a loader silent for `timeout` seconds (while we listen; scaled by the
  heartbeat interval its WELCOME announced, bounded to [HEARTBEAT_MIN_S,
  HEARTBEAT_S], against HEARTBEAT_S: as many missed heartbeats), REFUSED, or a
  missing WELCOME raise StreamError from the iterator; with keys, a loader
  that refuses this consumer's key (its ZAP handler: the key is not in its
  allow list) raises at once, naming the endpoint and the key file, and
  counts stats["auth_rejected"]; so does a loader that closes HANDSHAKE_CLOSED_MAX
  connections before any CURVE handshake succeeded (its server key is not our
  server.key: it cannot decrypt our HELLO), naming server.key; a loader not
  listening yet (connection refused) is waited for, up to `timeout`;
* every rejection (stats: malformed, unknown, rejected_epoch, rejected_index,
  rejected_epoch_end, held_dropped, stale, duplicates) is logged on the
  logger "moco_stream", rate-limited per kind as the C loader does (the
  first LOG_FIRST, then the 32nd, 64th, 128th, ...): one record per
  rejected pair (or message, where it has no pair) naming the endpoint, the
  kind, the epoch and the index; WARNING, but INFO for stale and duplicates
  (re-sent pairs: routine). Without a logging configuration Python prints
  WARNING records to stderr.
"""
import atexit
import collections
import logging
import os
import struct
import threading
import time
import weakref

import numpy as np
import zmq

from ._arrays import (Batch, _new_bitmap, _bits_count, _bits_test, _bits_set,  # noqa: F401
                      _first_occurrence, _build_batches, _root_nbytes, _compact, _concat)

__all__ = ["PairStream", "StreamError", "Batch", "MAGIC", "PAIRS_FRAME_MAX"]


# formats/README.md, "Wire messages", "Pipeline protocol", "Limits"
MAGIC = b"MOCW"
VERSION_MAX = 5             # MOCO_WIRE_VERSION (formats/wire.h): versions 1..5 are read
T_PAIR, T_HEARTBEAT, T_EPOCH_END, T_HELLO, T_ACK, T_END, T_PAIRS = 2, 5, 6, 8, 9, 10, 11
T_WELCOME, T_REFUSED, T_BYE, T_BUSY = 13, 14, 15, 16
WELCOME_SERVE, WELCOME_BUSY, WELCOME_YIELD_ACK = 1, 2, 4
EPOCH_ANY = 0xFFFFFFFF
VIEW_SIDE_MAX = 2048
PAIRS_N_MAX = 4096
ACK_MAX = 4096
EPOCH_FAILED_MAX = 1 << 20
COUNT_MAX = 1 << 36
PAIRS_FRAME_MAX = 4 * 1024 * 1024 + 2 * 2048 * 2048 * 3
REASON_MAX = 1000
FRAMES_MAX = 3              # frames of the longest message a loader sends (PAIR)
HEARTBEAT_S = 1.0
HEARTBEAT_MIN_S = 0.1       # the shortest interval taken from WELCOME's heartbeat_ms
ACK_EVERY_S = 0.02
HELD_MAX = 1 << 16          # pairs of the next epoch held before EPOCH_END
HELD_MSGS_MAX = 16          # ... in at most this many messages (the loader's 16 ahead)
HELD_BYTES_MAX = 256 << 20  # ... and at most this many view bytes (as the C consumer's held bytes)
LOG_FIRST = 20              # rejections logged per kind before only the powers of two
HANDSHAKE_CLOSED_MAX = 3    # connections closed before any CURVE handshake succeeded: the wrong server.key

def heartbeat_s(heartbeat_ms):
    """The heartbeat interval (s) a consumer keeps to, from WELCOME's heartbeat_ms, as
    formats/pipeline.c's moco_pipe_heartbeat_s: within [HEARTBEAT_MIN_S, HEARTBEAT_S]
    (a hostile 1 ms or 4e9 ms bounded); 0 or None (not said): HEARTBEAT_S."""
    if not heartbeat_ms or heartbeat_ms / 1000 > HEARTBEAT_S:
        return HEARTBEAT_S
    return max(HEARTBEAT_MIN_S, heartbeat_ms / 1000)


logger = logging.getLogger("moco_stream")
# re-sent pairs are routine (a loader re-issues after a timeout): INFO, not WARNING
_LOG_LEVEL = {"duplicates": logging.INFO, "stale": logging.INFO}

PREFIX = struct.Struct("<4sHH")
PAIR_DTYPE = np.dtype([("magic", "S4"), ("version", "<u2"), ("type", "<u2"),
                       ("epoch", "<u4"), ("label", "<i4"), ("index", "<u8"),
                       ("height", "<u2"), ("width", "<u2"), ("channels", "u1"),
                       ("layout", "u1"), ("reserved", "<u2")])
assert PAIR_DTYPE.itemsize == 32


_open = weakref.WeakSet()   # streams not closed yet


@atexit.register
def _close_open():
    """At interpreter exit: close (BYE) the streams left open, of this process only."""
    for s in list(_open):
        if s._pid == os.getpid():
            s.close()


def state_union(states):
    """The resume state of several ranks' PairStreams (rank r's state()),
    all of one epoch: the union of what they delivered. Every rank resumes
    from it (resume=...)."""
    states = list(states)
    if not states:
        raise ValueError("state_union of no states")
    e, n = states[0]["epoch"], states[0]["count"]
    if any(st["epoch"] != e or st["count"] != n for st in states):
        raise ValueError("state_union: the ranks' states are of different epochs or datasets: %s"
                         % [(st["epoch"], st["count"]) for st in states])
    bm = np.zeros(len(states[0]["delivered"]), np.uint8)
    for st in states:
        bm |= np.frombuffer(st["delivered"], np.uint8)
    return {"version": 1, "epoch": e, "count": n, "delivered": bm.tobytes()}


class StreamError(RuntimeError):
    """The stream cannot go on: REFUSED (code, reason), no WELCOME, a silent
    loader, or an inconsistent loader."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


def prefix(mtype, version=1):
    return PREFIX.pack(MAGIC, version, mtype)


def pack_hello(epoch=EPOCH_ANY, count=0, rank=0, ranks=1):
    """HELLO; of one of several consumers (version 4, with rank and ranks)
    when ranks > 1: the loader (--consumers ranks) serves each its shard."""
    if ranks > 1:
        return prefix(T_HELLO, 4) + struct.pack("<IQII", epoch, count, rank, ranks)
    return prefix(T_HELLO) + struct.pack("<IQ", epoch, count)


def pack_ack(epoch, indices):
    return prefix(T_ACK) + struct.pack("<II", epoch, len(indices)) + \
        np.asarray(indices, dtype="<u8").tobytes()


class _Queue:
    """Bounded (in pair messages) queue; control items always fit."""

    def __init__(self, bound):
        self.bound, self.items, self.npairs = bound, collections.deque(), 0
        self.cv = threading.Condition()

    def full(self):
        return self.npairs >= self.bound

    def put(self, item, pairs):
        with self.cv:
            self.items.append((item, pairs))
            self.npairs += pairs
            self.cv.notify_all()

    def get(self, timeout):
        with self.cv:
            if not self.items:
                self.cv.wait(timeout)
            if not self.items:
                return None
            item, pairs = self.items.popleft()
            self.npairs -= pairs
            self.cv.notify_all()
            return item

    def wait_room(self, timeout):
        with self.cv:
            if self.full():
                self.cv.wait(timeout)
            return not self.full()


class PairStream:
    """Iterate over Batch(xq, xk, labels, indices, epoch) until END.

    endpoint: the loader's serve endpoint, ipc://... or tcp://host:port.
    keys: a `moco keygen` directory (client.key_secret, server.key): CURVE
    on tcp:// (ignored on ipc://, as the C side does: a local socket is not
    encrypted). A malformed endpoint raises ValueError at once.
    resume: a dict from state(). batch_size: None yields one Batch per
    message, B yields batches of exactly B pairs of one epoch and one shape
    (the last of an epoch may be smaller). prefetch: messages waiting for the
    caller. timeout: seconds of loader silence (or without WELCOME) that end
    the stream with StreamError. rank, ranks: one of several consumers of a
    loader started with --consumers ranks (a data-parallel trainer, as
    DistributedSampler): this one gets the samples at positions rank,
    rank + ranks, ... of each epoch's order, EPOCH_END when they are all
    delivered; every rank must resume from the same state (the union of the
    ranks' states: state_union()).
    """

    def __init__(self, endpoint, keys=None, resume=None, batch_size=None, prefetch=16,
                 timeout=60.0, insecure=False, rank=0, ranks=1):
        if endpoint.startswith("tcp://") and keys is None and not insecure:
            raise ValueError("a tcp endpoint needs keys= (a `moco keygen` directory) "
                             "or insecure=True")
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be None or >= 1")
        if not 0 <= rank < ranks:
            raise ValueError("rank must be in 0 .. ranks-1")
        self.rank, self.ranks = int(rank), int(ranks)
        self._pid = os.getpid()            # iterated in this process only (check_process)
        self.endpoint, self.timeout = endpoint, float(timeout)
        self.batch_size = batch_size
        self.count = self.epochs = None
        self.heartbeat_ms = self.flags = None
        self.stats = collections.Counter(pairs=0, duplicates=0, stale=0, rejected_epoch=0,
                                         rejected_index=0, malformed=0, held=0,
                                         held_dropped=0, refused=0, unknown=0,
                                         heartbeats_sent=0, busy_sent=0, acks_sent=0, acked=0,
                                         messages=0, yielded=0, rejected_epoch_end=0,
                                         # handshakes in which the loader refused our key
                                         auth_rejected=0)
        self.epoch_ends = []
        self.ended = None                  # epochs completed, from END
        self._hello_epoch, self._hello_count, self._hello_bitmap = EPOCH_ANY, 0, None
        if resume is not None:
            self._check_resume(resume)
        # caller-side state: what was yielded
        self._y_epoch = self._hello_epoch
        self._y_bitmap = None
        self._y_base = self._hello_bitmap  # resumed: already delivered before
        self._welcome_epoch = EPOCH_ANY
        self._pending = {}                 # shape -> list of partial Batch (batch_size)
        self._out = collections.deque()
        self._done = False
        self._welcomed = threading.Event()
        self._ack_on_yield = False         # WELCOME flag 4: ACK what was yielded (else on receipt)
        self._yields = collections.deque()  # (epoch, indices) yielded, for the thread to ACK
        self._in_next, self._left_next = False, time.monotonic()  # the caller waits in __next__; left it at
        self._q = _Queue(max(1, int(prefetch)))
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._mon = None                   # with keys: the socket's connections and handshakes
        self._key_file = self._server_key_file = None
        self._shaken, self._closed_unshaken = False, 0   # a handshake succeeded; connections closed before
        try:
            self._setup_socket(keys)
        except Exception as e:
            if self._mon is not None:      # an open monitor socket: ctx.term() would wait for ever
                self._sock.disable_monitor()
                self._mon.close(0)
            self._sock.close(0)
            self._ctx.term()
            if isinstance(e, zmq.ZMQError):
                raise ValueError("moco_stream: cannot connect to %r: %s (ipc://PATH or tcp://HOST:PORT)"
                                 % (self.endpoint, e)) from e
            raise
        self._thread = threading.Thread(target=self._run, name="moco_stream", daemon=True)
        self._thread.start()
        _open.add(self)                    # BYE at interpreter exit unless closed before

    # ---- setup --------------------------------------------------------------
    def _check_resume(self, r):
        if not isinstance(r, dict) or r.get("version") != 1:
            raise ValueError("resume: not a moco_stream state (version 1)")
        try:
            epoch, count, bm = int(r["epoch"]), int(r["count"]), bytes(r["delivered"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError("resume: not a moco_stream state: %r" % e)
        if epoch == EPOCH_ANY:     # state taken before WELCOME: the loader's choice
            return
        if not 0 <= epoch < EPOCH_ANY or not 0 < count <= COUNT_MAX:
            raise ValueError("resume: epoch or count out of range")
        if len(bm) != (count + 7) // 8:
            raise ValueError("resume: the bitmap must be ceil(count/8) bytes")
        if count % 8 and bm and bm[-1] >> (count % 8):
            raise ValueError("resume: bits set past count")
        self._hello_epoch, self._hello_count, self._hello_bitmap = epoch, count, bm

    def _setup_socket(self, keys):
        s = self._sock
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, PAIRS_FRAME_MAX)
        s.setsockopt(zmq.RCVHWM, 4)
        if keys is not None and self.endpoint.startswith("tcp://"):   # as the C side: no CURVE on ipc://
            import zmq.auth as zauth
            pub, sec = zauth.load_certificate(os.path.join(keys, "client.key_secret"))
            if sec is None:
                raise ValueError("%s: no secret key" % os.path.join(keys, "client.key_secret"))
            self._server_key_file = os.path.join(keys, "server.key")
            server = zauth.load_certificate(self._server_key_file)[0]
            s.curve_publickey, s.curve_secretkey, s.curve_serverkey = pub, sec, server
            self._key_file = os.path.join(keys, "client.key")
            # DISCONNECTED: a connection (CONNECTED) closed; a refused one (no loader yet) is only CLOSED
            self._mon = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_DISCONNECTED
                                             | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        s.connect(self.endpoint)

    # ---- caller side --------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        self.check_process()
        self._in_next = True
        try:
            return self._next()
        finally:
            self._in_next, self._left_next = False, time.monotonic()

    def _next(self):
        while True:
            while not self._out:
                if self._done:
                    # END (or an error) taken and everything yielded: BYE now, so that the loader,
                    # which waits for it after END, ends at once (not after --consumer-timeout
                    # and --linger) also for a caller that never calls close()
                    self.close()
                    raise StopIteration
                item = self._q.get(0.5)
                if item is None:
                    if not self._thread.is_alive() and not self._q.items:
                        self._done = True
                        raise StreamError("moco_stream: the receiver thread stopped")
                    continue
                self._take(item)
            b = self._out.popleft()
            if isinstance(b, Batch):
                self._mark_yielded(b)
                return b
            self._y_epoch, self._y_bitmap, self._y_base = b[1], None, None   # EPOCH_END

    def check_process(self):
        """StreamError in any process but the creating one (a forked DataLoader worker): the copy of the
        queue there holds pairs the loader already has ACKs for, and what it yields is not in state()."""
        if os.getpid() != self._pid:
            raise StreamError("moco_stream: this PairStream of %s was created in process %d and is iterated in "
                              "process %d (a DataLoader worker?): use it in the creating process, with a "
                              "DataLoader's num_workers=0" % (self.endpoint, self._pid, os.getpid()))

    def _take(self, item):
        kind = item[0]
        if kind == "batch":
            if self.batch_size is None:
                self._out.append(item[1])
            else:
                self._accumulate(item[1])
        elif kind == "epoch_end":
            self._flush_pending()
            self._out.append(("advance", item[1] + 1))
        elif kind == "end":
            self._flush_pending()
            self._done = True
        elif kind == "error":
            self._done = True
            self._out.clear()
            raise item[1]

    def _accumulate(self, b):
        parts = self._pending.setdefault(b.xq.shape[1:], [])
        parts.append(b)
        have = sum(len(p.indices) for p in parts)
        B = self.batch_size
        while have >= B:
            xb = _concat(parts)
            self._out.append(Batch(xb.xq[:B], xb.xk[:B], xb.labels[:B], xb.indices[:B], xb.epoch))
            rest = Batch(xb.xq[B:], xb.xk[B:], xb.labels[B:], xb.indices[B:], xb.epoch)
            parts[:] = [rest] if len(rest.indices) else []
            have -= B
        parts[:] = [_compact(p) for p in parts]     # waiting: no whole frame kept for a few pairs

    def _flush_pending(self):
        for parts in self._pending.values():
            if parts:
                self._out.append(_concat(parts))
        self._pending.clear()

    def _mark_yielded(self, b):
        if self._y_epoch != b.epoch:           # the first batch, when not resuming
            self._y_epoch, self._y_bitmap, self._y_base = b.epoch, None, None
        if self._y_bitmap is None:
            self._y_bitmap = _new_bitmap(self.count)
        _bits_set(self._y_bitmap, b.indices.astype(np.uint64))
        if self._ack_on_yield:
            self._yields.append((b.epoch, b.indices))   # the thread ACKs them (it alone owns the socket)
        self.stats["yielded"] += len(b.indices)

    def wait_welcome(self, timeout=None):
        """Block until WELCOME (then count and epochs are set) or raise StreamError."""
        deadline = time.monotonic() + (self.timeout + 1 if timeout is None else timeout)
        while not self._welcomed.wait(0.05):
            with self._q.cv:
                err = next((it for it, _ in self._q.items if it[0] == "error"), None)
            if err is not None:
                raise err[1]
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise StreamError("moco_stream: no WELCOME from %s" % self.endpoint)
        return self

    def state(self):
        """{"version": 1, "epoch", "count", "delivered"}: what was yielded so far.
        Before WELCOME (and without resume) epoch is 0xFFFFFFFF: the loader's choice."""
        epoch = self._y_epoch
        if epoch == EPOCH_ANY and self._welcomed.is_set():
            epoch = self._welcome_epoch
        if epoch == EPOCH_ANY:
            return {"version": 1, "epoch": EPOCH_ANY, "count": 0, "delivered": b""}
        count = self.count if self.count is not None else self._hello_count
        bm = _new_bitmap(count) if self._y_bitmap is None else self._y_bitmap.copy()
        if self._y_base is not None:
            bm |= np.frombuffer(self._y_base, np.uint8)
        return {"version": 1, "epoch": int(epoch), "count": int(count), "delivered": bm.tobytes()}

    def close(self):
        """Stop: the last ACKs (of what was yielded) and a BYE go out (the loader
        takes a successor's HELLO at once); then the socket closes. Pairs
        received but not yet yielded are not acknowledged: the loader gives them
        to this rank's next consumer, with or without this stream's state()
        (to a loader without WELCOME flag 4 they were acknowledged on receipt:
        closing with some says how many, as only a resume from state() is given
        them again)."""
        left = self.stats["pairs"] - self.stats["yielded"]
        if not self._stop.is_set() and left > 0 and self._welcomed.is_set() and not self._ack_on_yield:
            logger.warning("moco_stream: %s: closing rank %d with %d pairs received and acknowledged but not yielded "
                           "(this loader takes ACKs on receipt: no WELCOME flag 4): the loader counts them as "
                           "delivered; a resume from this stream's state() is given them again, a successor without "
                           "it is not", self.endpoint, self.rank, left)
        elif not self._stop.is_set() and left > 0:
            logger.info("moco_stream: %s: closing rank %d with %d pairs received but not yielded, not acknowledged: "
                        "the loader sends them to this rank's next consumer", self.endpoint, self.rank, left)
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)
        if not self._thread.is_alive() and not self._ctx.closed:
            self._sock.close(0)
            self._ctx.term()
        _open.discard(self)

    def __del__(self):
        # collected: its thread has ended (the thread holds the stream while it runs); never
        # blocks, never in another process (a forked copy: the context is the parent's)
        if getattr(self, "_pid", None) == os.getpid() and hasattr(self, "_thread"):
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- receiver thread ----------------------------------------------------
    def _run(self):
        try:
            self._receive()
        except StreamError as e:
            self._q.put(("error", e), 0)
        except Exception as e:  # a bug: surface it to the caller
            self._q.put(("error", StreamError("moco_stream: %r" % e)), 0)
        finally:
            if self._mon is not None:
                self._sock.disable_monitor()
                self._mon.close(0)
            if self._welcomed.is_set() and self._stop.is_set():   # close(): BYE, after the last ACKs
                self._send([prefix(T_BYE, 3)])
                self._sock.close(linger=500)
            else:
                self._sock.close(0)

    def _send(self, frames):
        try:
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=True)
            return True
        except zmq.Again:
            return False

    def _receive(self):
        hello = [pack_hello(self._hello_epoch, self._hello_count, self.rank, self.ranks)]
        if self._hello_bitmap is not None:
            hello.append(self._hello_bitmap)
        deadline = time.monotonic() + self.timeout
        while not self._send(hello):
            if time.monotonic() > deadline or self._stop.is_set():
                raise StreamError("moco_stream: cannot send HELLO to %s" % self.endpoint)
            time.sleep(0.01)
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        if self._mon is not None:
            poller.register(self._mon, zmq.POLLIN)
        while not self._welcomed.is_set():     # wait for WELCOME or REFUSED
            if self._stop.is_set():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise StreamError("moco_stream: no WELCOME from %s within %.1f s"
                                  % (self.endpoint, self.timeout))
            ready = dict(poller.poll(min(left, 0.1) * 1000))
            if self._mon is not None and self._mon in ready:
                self._handshake_failed()
            if self._sock in ready:
                frames = self._recv()
                self.stats["messages"] += 1
                if frames is not None:
                    self._before_welcome(frames)
        self._stream()

    def _recv(self):
        """One message, frame by frame: no more than FRAMES_MAX frames are kept; a message of more is
        received to its end, each further frame dropped at once, and counted malformed (None)."""
        frames, extra = [], 0
        while True:
            f = self._sock.recv(copy=False)
            more = f.more
            if len(frames) < FRAMES_MAX:
                frames.append(f)
            else:
                extra += 1
            del f
            if not more:
                break
        if extra:
            self._reject("malformed", what="a message of %d frames (at most %d in this protocol)"
                         % (FRAMES_MAX + extra, FRAMES_MAX))
            return None
        return frames

    def _handshake_failed(self):
        """A monitor event: the loader's ZAP handler refused our key, or it closed HANDSHAKE_CLOSED_MAX
        connections before any handshake succeeded (it could not decrypt our HELLO: its server key is
        not our server.key; the loader logs a cryptographic error). A loader not listening yet refuses
        the connection: CLOSED, not CONNECTED, not counted."""
        from zmq.utils.monitor import recv_monitor_message
        ev = recv_monitor_message(self._mon)
        if ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._shaken = True
        elif ev["event"] == zmq.EVENT_DISCONNECTED and not self._shaken:
            self._closed_unshaken += 1
            if self._closed_unshaken >= HANDSHAKE_CLOSED_MAX:
                self.stats["auth_rejected"] += 1
                raise StreamError("moco_stream: %s closed %d connections during the CURVE handshake: %s is "
                                  "probably not that loader's server key (copy the loader's key directory to "
                                  "this host; do not run moco keygen per host)"
                                  % (self.endpoint, self._closed_unshaken, self._server_key_file))
        if ev["event"] != zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return
        self.stats["auth_rejected"] += 1
        raise StreamError("moco_stream: %s refused this consumer's key %s (CURVE authentication failed, "
                          "status %d): add it to the allow list of the loader's key directory (moco keygen)"
                          % (self.endpoint, self._key_file, int(ev["value"])))

    def _header(self, frames):
        """(type, version, frame-1 bytes) of a message, or None (counted malformed)."""
        h = frames[0].bytes
        if len(h) < 8:
            self._reject("malformed", what="a message of %d bytes" % len(h))
            return None
        magic, version, mtype = PREFIX.unpack_from(h)
        if magic != MAGIC or not 1 <= version <= VERSION_MAX or mtype == 0 or mtype >= 64:
            self._reject("malformed", what="a message with prefix %r version %d type %d" % (magic, version, mtype))
            return None
        return mtype, version, h

    def _before_welcome(self, frames):
        hd = self._header(frames)
        if hd is None:
            return
        mtype, _, h = hd
        if mtype == T_REFUSED and len(frames) == 1 and 12 <= len(h) <= 12 + REASON_MAX:
            code = struct.unpack_from("<i", h, 8)[0]
            reason = h[12:].decode("utf-8", "replace")
            self.stats["refused"] += 1
            raise StreamError("moco_stream: the loader refused the HELLO: %s (%d)"
                              % (reason, code), code)
        if mtype == T_WELCOME and len(frames) == 1 and len(h) == 32:
            epoch, epochs, count, flags, hb = struct.unpack_from("<IIQII", h, 8)
            if not 0 < count <= COUNT_MAX:
                raise StreamError("moco_stream: WELCOME count %d out of range" % count)
            if self._hello_count and count != self._hello_count:
                raise StreamError("moco_stream: WELCOME count %d, resume state %d"
                                  % (count, self._hello_count))
            if self._hello_epoch != EPOCH_ANY and epoch != self._hello_epoch:
                raise StreamError("moco_stream: WELCOME epoch %d, resume state %d"
                                  % (epoch, self._hello_epoch))
            if not flags & WELCOME_SERVE:
                raise StreamError("moco_stream: the loader is not in serve mode (flags %#x)" % flags)
            self.count, self.epochs, self.flags, self.heartbeat_ms = count, epochs, flags, hb
            self._ack_on_yield = bool(flags & WELCOME_YIELD_ACK)
            self._epoch = self._welcome_epoch = epoch
            self._welcomed.set()
            return
        self._reject("malformed" if mtype in (T_WELCOME, T_REFUSED) else "unknown",
                     what="a message of type %d (%d frames, %d bytes) before WELCOME" % (mtype, len(frames), len(h)))

    # -- after WELCOME
    def _stream(self):
        count = self.count
        self._seen = _new_bitmap(count)                   # accepted in self._epoch
        if self._hello_bitmap is not None:
            self._seen[:] = np.frombuffer(self._hello_bitmap, np.uint8)
        self._acked = self._seen.copy()                   # ... and ACKed (yielded, or delivered before the resume)
        self._held = []                                   # (Batch) of self._epoch + 1
        self._held_idx = set()
        self._held_bytes = 0                              # view bytes of the pairs held
        self._acks = []                                   # [epoch, [indices]] to ACK, oldest first
        self._nacks = 0                                   # indices in self._acks
        self._ack_since = None
        hb_every = heartbeat_s(self.heartbeat_ms)
        silent = self.timeout * hb_every / HEARTBEAT_S  # as many missed heartbeats as timeout at HEARTBEAT_S
        now = time.monotonic()
        next_hb, heard = now, now
        busy_ok = bool(self.flags & WELCOME_BUSY)
        full_since, busy = None, False          # the caller left the queue full since; BUSY said
        sock = self._sock
        while not self._stop.is_set():
            self._take_yields()
            now = time.monotonic()
            if self._q.full():
                full_since = now if full_since is None else full_since
            else:
                full_since = None
            # the caller does not read: it left the queue full, or pairs wait for it while it is away from the
            # iterator (a long step, an evaluation); they are not acknowledged yet (ack on yield) and must not age
            away = not self._in_next and self.stats["pairs"] > self.stats["yielded"] and \
                now - self._left_next >= hb_every
            if busy_ok and not busy and ((full_since is not None and now - full_since >= hb_every) or away):
                self._flush_acks()              # before BUSY: any other message ends it
                busy, next_hb = True, now
            elif busy and full_since is None and not away:
                busy, next_hb = False, now      # reading again: at once
            if now >= next_hb:
                if self._send([prefix(T_BUSY, 5) if busy else prefix(T_HEARTBEAT)]):
                    self.stats["busy_sent" if busy else "heartbeats_sent"] += 1
                next_hb = now + hb_every
            if self._acks and (self._nacks >= ACK_MAX or now - self._ack_since >= ACK_EVERY_S):
                self._flush_acks()
            wait = next_hb - now
            if self._acks:
                wait = min(wait, max(0.0, self._ack_since + ACK_EVERY_S - now))
            if self.stats["pairs"] > self.stats["yielded"]:
                wait = min(wait, ACK_EVERY_S)   # the caller's yields are ACKed within about 20 ms
            if self._q.full():                  # backpressure: do not read, keep beating
                self._q.wait_room(min(wait, 0.1))
                heard = time.monotonic()        # we were not listening
                continue
            if now - heard > silent:
                raise StreamError("moco_stream: no message from the loader for %.1f s (%.0f missed heartbeats of "
                                  "%.0f ms; it announced %s ms)" % (silent, silent / hb_every, hb_every * 1000,
                                                                   self.heartbeat_ms))
            if not sock.poll(max(1, int(min(wait, 0.1) * 1000)), zmq.POLLIN):
                if self._acks:
                    self._flush_acks()
                continue
            frames = self._recv()
            heard = time.monotonic()
            self.stats["messages"] += 1
            if frames is not None and self._message(frames) == "end":
                self._take_yields()
                self._flush_acks()
                # the loader waits for BYE (close()) after END: a consumer
                # killed before it yielded everything may still resume from
                # it; keep beating until then
                while not self._stop.wait(hb_every):
                    self._send([prefix(T_HEARTBEAT)])
                return
        self._take_yields()                     # close(): what the caller got is acknowledged before BYE
        self._flush_acks()

    def _reject(self, kind, n=1, epochs=None, indices=None, what=None):
        """Count n rejections of one kind (n pairs with their epochs and
        indices, arrays or one number, or one message with neither) and log
        those due: per kind the first LOG_FIRST, then the 32nd, 64th, ...
        (as the C loader)."""
        c0 = self.stats[kind]
        self.stats[kind] = c0 + n
        if c0 >= LOG_FIRST and (c0 + n).bit_length() == c0.bit_length():
            return                                  # no power of two in c0+1 .. c0+n
        due = list(range(min(n, max(0, LOG_FIRST - c0))))
        p = 1 << max(c0, LOG_FIRST).bit_length()    # the powers of two past LOG_FIRST and c0
        while p <= c0 + n:
            due.append(p - c0 - 1)
            p <<= 1
        level = _LOG_LEVEL.get(kind, logging.WARNING)
        if not logger.isEnabledFor(level):
            return
        for j in due:
            e = epochs if epochs is None or np.ndim(epochs) == 0 else epochs[j]
            i = indices if indices is None or np.ndim(indices) == 0 else indices[j]
            e = None if e is None else int(e)
            i = None if i is None else int(i)
            logger.log(level, "moco_stream: %s: %s: epoch %s index %s (%s; the stream is at epoch %s, count %s; "
                       "%d %s so far)", self.endpoint, kind, "-" if e is None else e, "-" if i is None else i,
                       what or "a pair", getattr(self, "_epoch", "-"), self.count, c0 + j + 1, kind,
                       extra={"endpoint": self.endpoint, "kind": kind, "epoch": e, "index": i,
                              "total": c0 + j + 1})

    def _flush_acks(self):
        while self._acks:
            epoch, idx = self._acks[0]
            chunk = idx[:ACK_MAX]
            if not self._send([pack_ack(epoch, chunk)]):
                return                          # HWM: retry on the next round
            del idx[:ACK_MAX]
            if not idx:
                self._acks.pop(0)
            self._nacks -= len(chunk)
            self.stats["acks_sent"] += 1
            self.stats["acked"] += len(chunk)
        self._ack_since = None

    def _ack(self, epoch, idx):
        """Indices (an array) of epoch to ACK, in the next ACK of that epoch."""
        if not len(idx):
            return
        if not self._acks:
            self._ack_since = time.monotonic()
        if not self._acks or self._acks[-1][0] != epoch:
            self._acks.append([epoch, []])
        self._acks[-1][1].extend(idx.tolist())
        self._nacks += len(idx)

    def _take_yields(self):
        """ACK what the iterator yielded (ack on yield); of the current epoch, a
        re-sent copy of it is ACKed again from now on."""
        while self._yields:
            epoch, idx = self._yields.popleft()
            idx = idx.astype(np.uint64)
            if epoch == self._epoch:
                _bits_set(self._acked, idx)
            self._ack(epoch, idx)

    def _accepted(self, idx):
        """Pairs (indices of self._epoch) accepted for the caller; to a loader without
        WELCOME flag 4, ACKed now (on receipt)."""
        self.stats["pairs"] += len(idx)
        if not self._ack_on_yield:
            _bits_set(self._acked, idx)
            self._ack(self._epoch, idx)

    def _message(self, frames):
        hd = self._header(frames)
        if hd is None:
            return None
        mtype, _, h = hd
        if mtype == T_PAIRS:
            return self._pairs(frames, h, single=False)
        if mtype == T_PAIR:
            return self._pairs(frames, h, single=True)
        what = "a message of type %d (%d frames, %d bytes)" % (mtype, len(frames), len(h))
        if len(frames) != 1:
            self._reject("malformed", what=what)
        elif mtype == T_HEARTBEAT:
            if len(h) != 8:
                self._reject("malformed", what=what)
        elif mtype == T_EPOCH_END:
            return self._epoch_end(frames)
        elif mtype == T_END:
            if len(h) != 12:
                self._reject("malformed", what=what)
                return None
            self.ended = struct.unpack_from("<I", h, 8)[0]
            self._q.put(("end", self.ended), 0)
            return "end"
        elif mtype == T_REFUSED and 12 <= len(h) <= 12 + REASON_MAX:
            # after WELCOME: the loader stops serving this consumer (another rank
            # stayed away past its --consumer-wait), and says why
            code = struct.unpack_from("<i", h, 8)[0]
            self.stats["refused"] += 1
            raise StreamError("moco_stream: the loader stopped serving this consumer: %s (%d)"
                              % (h[12:].decode("utf-8", "replace"), code), code)
        elif mtype in (T_WELCOME, T_REFUSED):    # a second WELCOME, or a REFUSED out of bounds
            self._reject("malformed", what=what)
        elif mtype <= 14:                        # known types a loader does not send
            self._reject("malformed", what=what)
        else:
            self._reject("unknown", what=what)
        return None

    def _epoch_end(self, frames):
        h = frames[0].bytes
        if len(h) < 24:
            self._reject("malformed", what="an EPOCH_END of %d bytes" % len(h))
            return None
        epoch, delivered, nfailed = struct.unpack_from("<IQI", h, 8)
        if nfailed > EPOCH_FAILED_MAX or len(h) != 24 + 8 * nfailed:
            self._reject("malformed", epochs=epoch,
                         what="an EPOCH_END of %d bytes naming %d failed samples" % (len(h), nfailed))
            return None
        if epoch != self._epoch:
            self._reject("rejected_epoch_end", epochs=epoch, what="an EPOCH_END")
            return None
        failed = np.frombuffer(h, dtype="<u8", count=nfailed, offset=24).astype(np.int64)
        self._take_yields()                 # of this epoch, before it ends here
        self._flush_acks()                  # (ACKs of it that wait go out later: the loader waits for them)
        seen = _bits_count(self._seen)
        # what the loader counts as delivered (of this rank's shard with ranks > 1) but never came: said, not
        # only counted. A predecessor of this rank (closed or killed) acknowledged them: it yielded them to its
        # caller (nothing lost); from a loader without flag 4, it received them (lost, unless the ranks restart)
        missing = max(0, delivered + nfailed - seen)
        self.stats["missing"] += missing
        if missing and self._ack_on_yield:
            logger.info("moco_stream: %s: epoch %d: %d samples the loader counts as delivered to rank %d never came to "
                        "this consumer: a predecessor of this rank (closed or killed) yielded them to its caller",
                        self.endpoint, epoch, missing, self.rank)
        elif missing:
            logger.warning("moco_stream: %s: epoch %d: %d samples the loader counts as delivered to rank %d never came "
                           "to this consumer (a predecessor of this rank, closed or killed, received them; this loader "
                           "takes ACKs on receipt): restart every rank from its state() (moco_stream.state_union) to "
                           "be given them", self.endpoint, epoch, missing, self.rank)
        self.epoch_ends.append((epoch, delivered, failed.tolist()))
        self._q.put(("epoch_end", epoch, delivered, failed), 0)
        # the next epoch begins: release what was held
        self._epoch += 1
        self._seen = _new_bitmap(self.count)
        self._acked = _new_bitmap(self.count)
        held, self._held, self._held_idx, self._held_bytes = self._held, [], set(), 0
        for hb in held:
            idx = hb.indices.astype(np.uint64)
            self._accepted(idx)
            _bits_set(self._seen, idx)
            self._q.put(("batch", hb), 1)
        return None

    def _pairs(self, frames, h, single):
        """Validate a PAIRS (or PAIR) message; queue the pairs of this epoch."""
        if single:
            if len(frames) != 3 or len(h) != 32:
                self._reject("malformed", what="a PAIR message (%d frames, header %d bytes)" % (len(frames), len(h)))
                return None
            hdr = np.frombuffer(h, dtype=PAIR_DTYPE, count=1)
            views = [frames[1].buffer, frames[2].buffer]
        else:
            if len(frames) != 2 or len(h) < 16:
                self._reject("malformed", what="a PAIRS message (%d frames, frame 1 %d bytes)" % (len(frames), len(h)))
                return None
            n, zero = struct.unpack_from("<II", h, 8)
            if not 1 <= n <= PAIRS_N_MAX or zero != 0 or len(h) != 16 + 32 * n:
                self._reject("malformed", what="a PAIRS message of n %d (reserved %d, frame 1 %d bytes)"
                             % (n, zero, len(h)))
                return None
            hdr = np.frombuffer(h, dtype=PAIR_DTYPE, count=n, offset=16)
            views = [frames[1].buffer]
        ok = ((hdr["magic"] == MAGIC) & (hdr["version"] >= 1) & (hdr["version"] <= VERSION_MAX)
              & (hdr["type"] == T_PAIR) & (hdr["height"] >= 1) & (hdr["height"] <= VIEW_SIDE_MAX)
              & (hdr["width"] >= 1) & (hdr["width"] <= VIEW_SIDE_MAX)
              & ((hdr["channels"] == 1) | (hdr["channels"] == 3))
              & (hdr["layout"] == 0) & (hdr["reserved"] == 0))
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            self._reject("malformed", epochs=int(hdr["epoch"][bad]), indices=int(hdr["index"][bad]),
                         what="a pair message whose pair %d of %d has a bad header" % (bad, len(hdr)))
            return None
        size = (hdr["height"].astype(np.int64) * hdr["width"] * hdr["channels"])
        if single:
            if views[0].nbytes != size[0] or views[1].nbytes != size[0]:
                self._reject("malformed", epochs=int(hdr["epoch"][0]), indices=int(hdr["index"][0]),
                             what="a PAIR message whose views are not %d bytes" % size[0])
                return None
        elif views[0].nbytes != 2 * int(size.sum()):
            self._reject("malformed", epochs=int(hdr["epoch"][0]), indices=int(hdr["index"][0]),
                         what="a PAIRS message of %d pairs with %d view bytes, not %d"
                         % (len(hdr), views[0].nbytes, 2 * int(size.sum())))
            return None
        # per pair: epoch and index
        epoch, index = hdr["epoch"].astype(np.int64), hdr["index"]
        bad_index = index >= np.uint64(self.count)
        cur, nxt = epoch == self._epoch, epoch == self._epoch + 1
        stale = (epoch < self._epoch) & ~bad_index
        bad_epoch = ~cur & ~nxt & ~stale & ~bad_index
        for kind, m in (("rejected_index", bad_index), ("stale", stale), ("rejected_epoch", bad_epoch)):
            if m.any():
                p = np.flatnonzero(m)
                self._reject(kind, len(p), epoch[p], index[p])
        keep_cur = cur & ~bad_index
        keep_nxt = nxt & ~bad_index
        # duplicates within the epoch (also within this message)
        if keep_cur.any():
            pos = np.flatnonzero(keep_cur)
            idx = index[pos]
            first = _first_occurrence(idx)
            dup = (_bits_test(self._seen, idx) == 1) | ~first
            if dup.any():
                self._reject("duplicates", int(dup.sum()), self._epoch, idx[dup])
                # acknowledge again what was acknowledged (yielded); a copy of a pair that waits for the caller
                # is not: its ACK follows its yield
                again = idx[dup][_bits_test(self._acked, idx[dup]) == 1]
                self._ack(self._epoch, again)
            keep_cur[pos[dup]] = False
            acc = idx[~dup]
            if len(acc):
                _bits_set(self._seen, acc)
                self._accepted(acc)
        if keep_nxt.any() and len(self._held) >= HELD_MSGS_MAX:
            p = np.flatnonzero(keep_nxt)
            self._reject("held_dropped", len(p), epoch[p], index[p],
                         what="a pair of the next epoch (%d messages held already)" % len(self._held))
            keep_nxt[:] = False
        if keep_nxt.any():
            for p in np.flatnonzero(keep_nxt):
                i = int(index[p])
                if i in self._held_idx:
                    self._reject("duplicates", 1, int(epoch[p]), i)
                    keep_nxt[p] = False
                elif len(self._held_idx) >= HELD_MAX:
                    self._reject("held_dropped", 1, int(epoch[p]), i,
                                 what="a pair of the next epoch (%d pairs held already)" % len(self._held_idx))
                    keep_nxt[p] = False
                elif self._held_bytes + 2 * int(size[p]) > HELD_BYTES_MAX:
                    self._reject("held_dropped", 1, int(epoch[p]), i,
                                 what="a pair of the next epoch (%d view bytes held already)" % self._held_bytes)
                    keep_nxt[p] = False
                else:
                    self._held_idx.add(i)
                    self._held_bytes += 2 * int(size[p])
                    self.stats["held"] += 1
        if not keep_cur.any() and not keep_nxt.any():
            return None
        for sel, dest in ((keep_cur, "q"), (keep_nxt, "held")):
            if sel.any():
                for b in _build_batches(hdr, size, views, sel, single):
                    if dest == "q":
                        self._q.put(("batch", b), 1)
                    else:
                        self._held.append(b)
        return None
