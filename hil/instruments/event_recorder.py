"""Record a live ZeroMQ event stream into the SQLite schema of `hil.protocols.events_db`.

`EventRecorder(url, db)` subscribes and records with two threads: a receiver that only moves
messages from the socket to a pending list, and a writer that commits that list, one
transaction per batch (`batch` events or `flush_s` seconds, whichever comes first; all that is
pending when the writer comes round, so a writer that fell behind catches up with bigger
transactions). SQLite does its work without the GIL, so receiving and writing overlap. At most
`MAX_PENDING` events wait; beyond that the receiver pauses and ZeroMQ's queue (`rcvhwm`) holds
the rest. `close()` (also on Ctrl-C / SIGTERM in `hil record events`) commits everything
received, so only a crash or SIGKILL can lose events, and then only those not yet committed
(received after the last committed batch); the file stays a valid database (WAL).

Each stored event keeps its received `__data_time`, `__wire_time`, `__seq` and our receive time.
Bodies are not decoded in Python: SQLite's JSON functions take the reserved keys out of a
whole batch in one statement (see `EventWriter.write_frames`). A malformed message is counted
and logged, never stored half; a database error (locked, full) stops the recorder and is
raised by the next `check()` / `close()`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import zmq

from hil import clock
from hil.errors import InstrumentConnectError, InstrumentError, ProtocolError
from hil.protocols.events import SEQ, SeqStats, parse_body, raw_seq
from hil.protocols.events_db import EventWriter

log = logging.getLogger(__name__)

DEFAULT_BATCH = 5000
DEFAULT_FLUSH_S = 0.5
DEFAULT_RCVHWM = 1_000_000
POLL_MS = 50
BURST = 4096
MAX_PENDING = 200_000          # received, not yet committed: the receiver pauses beyond this
JOIN_S = 60.0                  # close(): time the writer gets to commit what is pending


class EventRecorder:
    """Subscribes to `url` (topic prefixes `topics`, empty = all) and stores into `db`."""

    def __init__(self, url: str, db: str | Path, topics: Sequence[str] = (), *,
                 batch: int = DEFAULT_BATCH, flush_s: float = DEFAULT_FLUSH_S,
                 max_bytes: int | None = None, rcvhwm: int = DEFAULT_RCVHWM,
                 connect_timeout: float = 5.0, name: str = "recorder") -> None:
        if batch < 1 or not flush_s > 0:
            raise ValueError(f"batch must be >= 1 and flush_s > 0, got {batch}, {flush_s}")
        self.url, self.db, self.name = url, Path(db), name
        self.batch, self.flush_s = batch, flush_s
        self.received = 0
        self.malformed = 0
        self.seq: dict[str, SeqStats] = {}
        self.error: BaseException | None = None
        self._writer = EventWriter(db, max_bytes=max_bytes, writer="hil.instruments.recorder")
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._pending: list[tuple[str, bytes, float]] = []
        self._ready = threading.Condition()    # guards _pending and _receiving
        self._receiving = True
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED)
        try:
            for topic in topics or ("",):
                self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
            self._sock.connect(url)
        except zmq.ZMQError as exc:
            self._shutdown_sockets()
            self._writer.close()
            raise InstrumentConnectError(f"{name}: cannot subscribe to {url}: {exc}") from None
        self._thread = threading.Thread(target=self._receive, name=f"event-recorder-{name}",
                                        daemon=True)
        self._write_thread = threading.Thread(target=self._write_loop, daemon=True,
                                              name=f"event-recorder-{name}-writer")
        self._write_thread.start()
        self._thread.start()
        if connect_timeout > 0 and not self._connected.wait(connect_timeout):
            self.close(raise_error=False)
            raise InstrumentConnectError(f"{name}: no event publisher answered at {url} within "
                                         f"{connect_timeout:g} s")

    def __repr__(self) -> str:
        return f"EventRecorder({self.url} -> {self.db}, written={self.written})"

    @property
    def written(self) -> int:
        """Events committed to the database so far."""
        return self._writer.events_written

    def _receive(self) -> None:
        """Receiver thread: socket to `_pending`, until stopped or the writer failed."""
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(POLL_MS))
                if self._monitor in ready:
                    self._monitor.recv_multipart()
                    self._connected.set()
                if self._sock in ready and len(self._pending) < MAX_PENDING:
                    self._hand_over(self._take())
            while taken := self._take():     # what already arrived when asked to stop
                self._hand_over(taken)
        except Exception as exc:             # noqa: BLE001 - kept and raised by check()/close()
            self._fail(exc, "receiving")
        finally:
            with self._ready:
                self._receiving = False
                self._ready.notify_all()

    def _hand_over(self, taken: list[tuple[str, bytes, float]]) -> None:
        if taken:
            with self._ready:
                self._pending.extend(taken)
                if len(self._pending) >= self.batch:
                    self._ready.notify_all()

    def _write_loop(self) -> None:
        """Writer thread: commit what is pending (a full batch, or every `flush_s`), and the
        rest once the receiver has stopped."""
        try:
            while True:
                with self._ready:
                    self._ready.wait_for(lambda: len(self._pending) >= self.batch
                                         or not self._receiving, self.flush_s)
                    batch, self._pending = self._pending, []
                    last = not self._receiving
                if batch:
                    self._flush(batch)
                if last:
                    return
        except Exception as exc:             # noqa: BLE001 - kept and raised by check()/close()
            self._fail(exc, "writing")

    def _fail(self, exc: BaseException, doing: str) -> None:
        if self.error is None:
            self.error = exc
        log.error("%s: recording stopped while %s: %s", self, doing, exc, exc_info=exc)
        self._stop.set()

    def _take(self) -> list[tuple[str, bytes, float]]:
        """Waiting messages (one burst) as (topic, body, receive time). Bodies are not
        decoded here: SQLite reads them (a malformed one is skipped there)."""
        taken: list[tuple[str, bytes, float]] = []
        sock, now, seq = self._sock, clock.now(), self.seq
        for _ in range(BURST):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                if len(frames) != 2:
                    raise ProtocolError(f"an event has 2 frames, got {len(frames)}",
                                        field="frames")
                topic = frames[0].decode()
            except (ProtocolError, UnicodeDecodeError) as exc:
                self.malformed += 1
                log.warning("%s: malformed event not recorded: %s (at %s)", self, exc, self.url)
                continue
            body = frames[1]
            taken.append((topic, body, now))
            stats = seq.get(topic)
            if stats is None:
                stats = seq[topic] = SeqStats(topic)
            known, number = raw_seq(body)
            if not known:                    # only parsing tells (a bad body: no number)
                try:
                    number = parse_body(body).get(SEQ)
                except ProtocolError:
                    number = None
            stats.observe(number)
        self.received += len(taken)
        return taken

    def _flush(self, pending: list[tuple[str, bytes, float]]) -> None:
        bad = self._writer.write_frames(pending)
        if bad:
            self.malformed += bad
            log.warning("%s: %d malformed event bodies not recorded", self, bad)

    def check(self) -> None:
        """Raise the error that stopped the recorder, if any."""
        if self.error is not None:
            raise self.error

    def run_for(self, seconds: float) -> None:
        """Record for `seconds` (returns early, raising, if the recorder failed)."""
        deadline = time.monotonic() + seconds
        while ((left := deadline - time.monotonic()) > 0 and self._thread.is_alive()
               and self._write_thread.is_alive()):
            self._stop.wait(min(left, 0.1))
        self.check()

    def close(self, raise_error: bool = True) -> None:
        """Commit pending events, stop, close the database; raise a recording error."""
        self._stop.set()
        me = threading.current_thread()
        if me is not self._thread:
            self._thread.join(10.0)
        if me is not self._write_thread:
            self._write_thread.join(JOIN_S)
        if self._thread.is_alive() or self._write_thread.is_alive():
            stuck = InstrumentError(f"{self.name}: the recorder did not finish writing within "
                                    f"{JOIN_S:g} s; {self.db} is left open (what is committed "
                                    "is valid)")
            log.error("%s", stuck)
            if raise_error:
                raise stuck
            return
        self._shutdown_sockets()
        self._writer.close()
        if raise_error:
            self.check()

    def _shutdown_sockets(self) -> None:
        if self._sock.closed:
            return
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass                             # the monitor was never started
        self._monitor.close(0)
        self._sock.close(0)
        self._ctx.term()

    def __enter__(self) -> EventRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(raise_error=exc[0] is None)


def lost_events(recorder: EventRecorder) -> int:
    """`__seq` numbers missing across all topics the recorder saw."""
    return sum(s.missing for s in recorder.seq.values())

