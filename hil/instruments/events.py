"""ZeroMQ event subscriber: wait for, iterate, capture and check `[topic, JSON]` events.

`EventSubscriber(url, topics)` connects a SUB socket (topics are ZeroMQ byte prefixes; spec §2:
end them with "." or give full names) and a reader thread keeps a timeline of received events
(bounded by `history`), each with its receive time on `hil.clock`. The reader does not parse
JSON: it keeps each body as received and reads `__seq` from its text (`codec.raw_seq`); a body
is parsed when something looks at the event (a wait scanning it, `history`, `capture`,
`check_sequence`), so a fast stream costs little more than receiving it. A body that turns out
malformed is counted in `malformed` and logged once, left out of what is returned, and (strict)
raised by the next wait. Like a bus:

* `expect_event(topic, where=…, timeout=…)` waits for the next matching event and consumes
  the timeline through it; a timeout raises `BusTimeout` listing the recent events, a publisher
  that went away raises `ConnectionLost` (heartbeats notice a frozen one), never a hang.
* `events(topic)` yields events as they come, `capture(seconds)` returns a `StreamCapture` of
  the numeric fields, `seq_stats()` / `check_sequence()` count losses by `__seq`,
  `latency()` gives receive time − `__wire_time`.

A topic argument matches exactly, or as a prefix when it ends with "." or "*".
"""
from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from hil import clock
from hil.errors import (BusTimeout, ConnectionLost, HilError, InstrumentConnectError,
                        ProtocolError, ValidationError)
from hil.instruments.stream_capture import SignalData, StreamCapture, packet_stats
from hil.protocols import events as codec
from hil.protocols.events import Event, SeqStats

log = logging.getLogger(__name__)

DEFAULT_RCVHWM = 1_000_000     # messages queued before ZeroMQ drops (spec §7; default 1 000)
DEFAULT_HISTORY = 100_000      # events kept in memory
HEARTBEAT_MS = 1000            # ZMTP heartbeats: a frozen publisher counts as gone after
HEARTBEAT_TIMEOUT_MS = 3000    # this long without any traffic
POLL_MS = 50
BURST = 4096                   # messages taken per wake-up of the reader
RECENT_SHOWN = 8

Where = Callable[[Event], bool] | Mapping[str, Any] | None


def topic_matcher(topic: str | None) -> Callable[[str], bool]:
    """None: any topic; "a.b." or "a.b*": prefix; otherwise the exact topic."""
    if topic is None:
        return lambda t: True
    if topic.endswith("*"):
        prefix = topic[:-1]
        return lambda t: t.startswith(prefix)
    if topic.endswith("."):
        return lambda t: t.startswith(topic)
    return lambda t: t == topic


def where_matcher(where: Where) -> tuple[Callable[[Event], bool], str]:
    """(predicate, description) for a callable or a mapping of field values."""
    if where is None:
        return (lambda ev: True), ""
    if callable(where):
        return where, f" where {getattr(where, '__name__', repr(where))}"
    wanted = dict(where)
    missing = object()

    def fields_equal(ev: Event) -> bool:
        return all(ev.body.get(k, missing) == v for k, v in wanted.items())
    return fields_equal, " where " + ", ".join(f"{k}={v!r}" for k, v in wanted.items())


@dataclass(frozen=True)
class Latency:
    """Bus latency (receive time − `__wire_time`) over `n` events, seconds."""

    n: int
    median: float
    p95: float
    max: float

    def __str__(self) -> str:
        return (f"latency over {self.n} events: median {self.median * 1e3:.3f} ms, "
                f"p95 {self.p95 * 1e3:.3f} ms, max {self.max * 1e3:.3f} ms")


class EventSubscriber:
    """Subscribes to `url` for `topics` (prefixes; empty = everything). See module docstring."""

    def __init__(self, url: str, topics: Sequence[str] = (), *, timeout: float = 10.0,
                 connect_timeout: float = 5.0, history: int = DEFAULT_HISTORY,
                 rcvhwm: int = DEFAULT_RCVHWM, name: str = "events", strict: bool = True) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1 event, got {history}")
        self.url = url
        self.topics = tuple(topics)
        self.name = name
        self.timeout = timeout
        self.strict = strict
        self.received = 0                   # events received in all
        self.dropped = 0                    # oldest events pushed out of the history
        self.malformed = 0                  # messages that broke the wire format (a body:
                                            # counted when first parsed)
        self._events: deque[Event] = deque(maxlen=history)
        self._base = 0                      # absolute index of _events[0]
        self._cursor = 0                    # absolute index of the first unconsumed event
        self._seq: dict[str, SeqStats] = {}
        self._cond = threading.Condition()
        self._pending: list[BaseException] = []
        self._connected = False
        self._ever_connected = False
        self._lost_at: float | None = None
        self._closing = False
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        try:
            self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
            self._sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
            self._monitor = self._sock.get_monitor_socket(
                zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
            for topic in self.topics or ("",):
                self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
            self._sock.connect(url)
        except zmq.ZMQError as exc:
            self._close_sockets()
            raise InstrumentConnectError(f"{name}: cannot subscribe to {url}: {exc}") from None
        self._reader = threading.Thread(target=self._read_loop, name=f"events-{name}",
                                        daemon=True)
        self._reader.start()
        if connect_timeout > 0:
            self._await_connection(connect_timeout)

    def __repr__(self) -> str:
        return f"EventSubscriber({self.name}, {self.url}, received={self.received})"

    def _await_connection(self, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._ever_connected or self._pending, timeout):
                self.close()
                raise InstrumentConnectError(
                    f"{self.name}: no event publisher answered at {self.url} within "
                    f"{timeout:g} s (is it running and bound to that address?)")

    # ------------------------------------------------------------------ reader thread
    def _read_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        try:
            while not self._closing:
                ready = dict(poller.poll(POLL_MS))
                if self._monitor in ready:
                    self._monitor_events()
                if self._sock in ready:
                    self._take_burst()
        except Exception as exc:               # noqa: BLE001 - handed to the next caller
            if not self._closing:
                log.error("%s: reader failed: %s", self, exc, exc_info=exc)
                with self._cond:
                    self._pending.append(exc)
                    self._cond.notify_all()

    def _monitor_events(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            with self._cond:
                if event["event"] == zmq.EVENT_CONNECTED:
                    self._connected = self._ever_connected = True
                    self._lost_at = None
                elif event["event"] == zmq.EVENT_DISCONNECTED:
                    self._connected = False
                    self._lost_at = clock.now()
                self._cond.notify_all()

    def _take_burst(self) -> None:
        batch: list[list[bytes]] = []
        recv = self._sock.recv_multipart
        for _ in range(BURST):
            try:
                batch.append(recv(zmq.NOBLOCK))
            except zmq.Again:
                break
        now = clock.now()
        taken: list[tuple[Event, int | None]] = []
        errors: list[ProtocolError] = []
        decode_lazy, raw_seq = codec.decode_lazy, codec.raw_seq
        for frames in batch:
            try:
                ev = decode_lazy(frames, now)
                known, seq = raw_seq(frames[1])
                if not known:                    # only parsing tells: parse (and check) now
                    seq = ev.body.get(codec.SEQ)
            except ProtocolError as exc:
                errors.append(exc.at(self.url))
                continue
            taken.append((ev, seq))
        with self._cond:
            events, seq_stats = self._events, self._seq
            for ev, seq in taken:
                if len(events) == events.maxlen:
                    self._base += 1
                    self.dropped += 1
                events.append(ev)
                stats = seq_stats.get(ev.topic)
                if stats is None:
                    stats = seq_stats[ev.topic] = SeqStats(ev.topic)
                stats.observe(seq)
            self.received += len(taken)
            self.malformed += len(errors)
            if errors and self.strict:
                self._pending.extend(errors[:1])
            self._cond.notify_all()
        for exc in errors:
            log.warning("%s: malformed event skipped: %s", self, exc)

    def _usable(self, ev: Event) -> bool:
        """True when `ev`'s body parses (parsing it now if needed). A malformed one is counted
        and logged the first time, its error queued for the next wait (strict); called with
        the lock held."""
        if ev.parsed:
            return True
        first = not ev.checked
        exc = ev.decode_error()
        if exc is None:
            return True
        if first:
            exc.at(self.url)
            self.malformed += 1
            log.warning("%s: malformed event skipped: %s", self, exc)
            if self.strict:
                self._pending.append(exc)
        return False

    # ------------------------------------------------------------------ waiting
    def _raise_pending(self) -> None:
        if self._pending:
            exc = self._pending.pop(0)
            raise exc

    @property
    def _end(self) -> int:
        return self._base + len(self._events)

    def expect_event(self, topic: str | None = None, where: Where = None,
                     timeout: float | None = None) -> Event:
        """The next unconsumed event on `topic` whose fields match `where` (a predicate on the
        Event, or field values); consumes the timeline through it."""
        __tracebackhide__ = True
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        on_topic = topic_matcher(topic)
        matches, described = where_matcher(where)
        what = f"event {topic or '(any topic)'}{described}"
        with self._cond:
            self._check_open()
            began_end, unread = self._end, self._end - max(self._cursor, self._base)
            scan = max(self._cursor, self._base)
            while True:
                self._raise_pending()
                scan = max(scan, self._base)
                end = self._end
                for index in range(scan, end):
                    ev = self._events[index - self._base]
                    if not on_topic(ev.topic):
                        continue
                    if not self._usable(ev):
                        self._raise_pending()
                        continue
                    if matches(ev):
                        self._cursor = index + 1
                        return ev
                scan = end
                if self._ever_connected and not self._connected:
                    raise self._lost(f"waiting for {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timeout(what, limit, unread, self._end - began_end)
                self._cond.wait(left)

    def expect_sequence(self, topic: str, field: str, values: Sequence[Any],
                        timeout: float | None = None) -> list[Event]:
        """Wait for `field` of `topic` to take `values` in this order (other events between
        are allowed); one timeout for the whole sequence. Returns the matching events."""
        __tracebackhide__ = True
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        found: list[Event] = []
        for value in values:
            try:
                found.append(self.expect_event(topic, {field: value},
                                               max(0.0, deadline - time.monotonic())))
            except BusTimeout as exc:
                seen = ", ".join(repr(ev.body.get(field)) for ev in found) or "none yet"
                raise BusTimeout(f"{exc} [sequence {field}={list(values)!r} of {topic}: "
                                 f"matched {seen}]", tail=exc.tail) from None
        return found

    def events(self, topic: str | None = None, where: Where = None,
               timeout: float | None = None) -> Iterator[Event]:
        """Yield each matching event as it arrives (consuming it) until `timeout` seconds have
        passed in all or the publisher went away."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                yield self.expect_event(topic, where, max(0.0, deadline - time.monotonic()))
            except (BusTimeout, ConnectionLost):
                return

    def drain(self) -> list[Event]:
        """Consume and return every event received but not consumed yet."""
        with self._cond:
            self._raise_pending()
            start = max(self._cursor, self._base)
            out = [ev for ev in (self._events[i - self._base] for i in range(start, self._end))
                   if self._usable(ev)]
            self._cursor = self._end
            self._raise_pending()
            return out

    def position(self) -> int:
        """The timeline position now: pass it to `history(since=…)` later."""
        with self._cond:
            return self._end

    def history(self, since: int = 0, topic: str | None = None) -> list[Event]:
        """Retained events from position `since` on (consumed or not), oldest first; malformed
        ones left out (and counted)."""
        on_topic = topic_matcher(topic)
        with self._cond:
            start = max(since, self._base)
            return [ev for ev in itertools.islice(self._events, start - self._base, None)
                    if on_topic(ev.topic) and self._usable(ev)]

    # ------------------------------------------------------------------ errors
    def _check_open(self) -> None:
        if self._closing:
            raise HilError(f"{self.name}: the event subscriber is closed")

    def _recent(self) -> str:
        recent = list(self._events)[-RECENT_SHOWN:]
        if not recent:
            state = "connected" if self._connected else (
                "disconnected" if self._ever_connected else "never connected")
            return f"nothing was ever received from {self.url} ({state})"
        t_last = recent[-1].received
        rows = [f"  {ev.received - t_last:+.3f} s  {ev.describe()}" for ev in recent]
        return f"last {len(recent)} of {self.received} events received:\n" + "\n".join(rows)

    def _timeout(self, what: str, limit: float, unread: int, arrived: int) -> BusTimeout:
        recent = self._recent()
        return BusTimeout(f"{self.name}: timed out after {limit:g} s waiting for {what}; "
                          f"{unread} unconsumed events when the wait began, {arrived} arrived "
                          f"during it; {recent}", tail=recent.encode())

    def _lost(self, doing: str) -> ConnectionLost:
        ago = clock.now() - self._lost_at if self._lost_at is not None else 0.0
        return ConnectionLost(f"{self.name}: the event publisher at {self.url} went away "
                              f"{ago:.1f} s ago (disconnected, or silent past the "
                              f"{HEARTBEAT_TIMEOUT_MS / 1000:g} s heartbeat) while "
                              f"{doing}; {self._recent()}")

    # ------------------------------------------------------------------ figures
    def seq_stats(self, topic: str | None = None) -> dict[str, SeqStats]:
        """Per topic: events, `__seq` numbers missing (lost), repeats (restart/duplicate)."""
        on_topic = topic_matcher(topic)
        with self._cond:
            return {t: SeqStats(**vars(s)) for t, s in self._seq.items() if on_topic(t)}

    def check_sequence(self, topic: str | None = None) -> dict[str, SeqStats]:
        """ValidationError when any topic lost events or restarted its `__seq`, or a message
        was malformed (every retained body is parsed here); else the stats. Events pushed out
        of the history are not losses (see `dropped`)."""
        __tracebackhide__ = True
        with self._cond:
            for ev in self._events:
                self._usable(ev)
        stats = self.seq_stats(topic)
        bad = [s.describe() for s in stats.values() if not s.ok]
        if bad or self.malformed:
            raise ValidationError(f"{self.name}: event stream from {self.url} is not complete: "
                                  f"{'; '.join(bad)}"
                                  + (f"; {self.malformed} malformed messages" if self.malformed
                                     else ""))
        return stats

    def latency(self, topic: str | None = None, since: int = 0) -> Latency:
        """Receive time − `__wire_time` over the retained events (ValidationError if none)."""
        values = np.array([ev.latency for ev in self.history(since, topic)], dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValidationError(f"{self.name}: no event with a __wire_time to measure "
                                  "latency on")
        return Latency(int(values.size), float(np.median(values)),
                       float(np.percentile(values, 95)), float(values.max()))

    def capture(self, seconds: float, topic: str | None = None,
                fields: Sequence[str] | None = None) -> StreamCapture:
        """Events arriving over the next `seconds` (consumed), as a `StreamCapture` whose
        signals are the numeric fields (one channel each; bools are not numbers here).

        Signal names are the field names when one exact topic is captured, `topic/field`
        otherwise. Packet numbers are `__seq` for one topic, else the arrival order;
        `lost_packets` counts `__seq` numbers missing inside the capture."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"capture seconds must be finite and >= 0, got {seconds!r}")
        with self._cond:
            self._check_open()
            start = self._end
        end_time = time.monotonic() + seconds
        with self._cond:
            while (left := end_time - time.monotonic()) > 0:
                self._raise_pending()
                self._cond.wait(left)
            self._raise_pending()
            start = max(start, self._base)
            taken = [ev for ev in itertools.islice(self._events, start - self._base, None)
                     if self._usable(ev)]
            self._cursor = max(self._cursor, self._end)
        on_topic = topic_matcher(topic)
        return events_to_capture([ev for ev in taken if on_topic(ev.topic)],
                                 source=self.name, fields=fields)

    # ------------------------------------------------------------------ life cycle
    def safe_state(self) -> None:
        """A listener has nothing to switch off; raise what the reader thread met meanwhile."""
        with self._cond:
            self._raise_pending()

    def close(self) -> None:
        """Stop the reader and close the sockets (no linger: close never waits)."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        if threading.current_thread() is not self._reader and self._reader.is_alive():
            self._reader.join(2.0)
        self._close_sockets()

    def _close_sockets(self) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass                              # the monitor was never started
        monitor = getattr(self, "_monitor", None)
        if monitor is not None:
            monitor.close(0)
        self._sock.close(0)
        self._ctx.term()

    def __enter__(self) -> EventSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def events_to_capture(events: Sequence[Event], source: str = "events",
                      fields: Sequence[str] | None = None) -> StreamCapture:
    """A `StreamCapture` of the numeric fields of `events` (see `EventSubscriber.capture`)."""
    topics = sorted({ev.topic for ev in events})
    one_topic = len(topics) <= 1
    seqs = [ev.seq for ev in events]
    numbered = one_topic and events and all(isinstance(s, int) for s in seqs)
    numbers = np.array(seqs if numbered else range(len(events)), dtype=np.uint64)
    timestamps = np.array([ev.time for ev in events], dtype=np.float64)
    arrival = np.array([ev.received for ev in events], dtype=np.float64)
    columns: dict[str, tuple[list[int], list[float]]] = {}
    for i, ev in enumerate(events):
        for name, value in ev.body.items():
            if name in codec.RESERVED or (fields is not None and name not in fields):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            key = name if one_topic else f"{ev.topic}/{name}"
            idx, vals = columns.setdefault(key, ([], []))
            idx.append(i)
            vals.append(float(value))
    signals = {}
    for key, (idx, vals) in columns.items():
        times = timestamps[idx]
        span = float(times.max() - times.min()) if len(idx) > 1 else 0.0
        rate = (len(idx) - 1) / span if span > 0 else math.nan
        signals[key] = SignalData(name=key, rate=rate, channels=[key.rsplit("/", 1)[-1]],
                                  samples=np.array([vals]), packet_index=np.array(idx))
    lost = packet_stats(numbers).missing if numbered else sum(
        packet_stats(np.array([ev.seq for ev in events if ev.topic == t
                               and isinstance(ev.seq, int)], dtype=np.uint64)).missing
        for t in topics)
    return StreamCapture(source=source, signals=signals, packet_numbers=numbers,
                         timestamps=timestamps, arrival=arrival, lost_packets=lost)
