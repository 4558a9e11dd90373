"""The ZeroMQ event publisher: `send_tcs_event` and the `start(events)` loop of spec §1, §3, §7.

Socket decisions (spec §7, §9): an XPUB socket (a PUB that also receives subscriptions, with
XPUB_VERBOSE so every subscriber's subscription is seen), so `wait_for_subscribers()` can hold
a replay until its consumers are there (no slow-joiner loss); `SNDHWM` 1 000 000 messages per
subscriber (the default 1 000 drops events of any fast replay); `LINGER` 200 ms, so closing
never hangs on a consumer that went away. Each topic's events carry `__seq` 1, 2, 3 … so a
consumer sees every loss a full queue causes. Sending never blocks (PUB drops instead).

A socket is not thread-safe: every use here holds one lock, so a test thread may send while a
replay thread runs.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import zmq

from hil.errors import BusTimeout, ProtocolError, SimulatorError
from hil.protocols import events as codec

DEFAULT_SNDHWM = 1_000_000
DEFAULT_LINGER_MS = 200
POLL_MS = 50
DRAIN_EVERY = 1024           # events sent between two looks at incoming subscriptions
_SNDMORE = int(zmq.SNDMORE)  # a plain int: combining the enum costs more than the send


def bind_url(url: str) -> str:
    """A ZeroMQ bind address: "tcp://host:0" (any free port) becomes "tcp://host:*"."""
    if url.startswith("tcp://") and url.endswith(":0"):
        return url[:-2] + ":*"
    return url


class EventPublisher:
    """Publishes `[topic, JSON]` events on `url` (tcp://host:port, ipc://path; port 0 = any)."""

    def __init__(self, url: str = "tcp://127.0.0.1:0", *, sndhwm: int = DEFAULT_SNDHWM,
                 linger_ms: int = DEFAULT_LINGER_MS,
                 clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.linger_ms = linger_ms
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.XPUB)
        try:
            self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)
            self._sock.setsockopt(zmq.SNDHWM, sndhwm)
            self._sock.setsockopt(zmq.LINGER, linger_ms)
            self._sock.bind(bind_url(url))
        except zmq.ZMQError as exc:
            self._sock.close(0)
            self._ctx.term()
            raise SimulatorError(f"event publisher cannot bind {url}: {exc}") from None
        self.url = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._lock = threading.RLock()
        self._seq: dict[str, int] = {}
        self._frames0: dict[str, bytes] = {}  # checked topic -> frame 0
        self._subscriptions: Counter[bytes] = Counter()
        self.sent = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"EventPublisher({self.url}, sent={self.sent})"

    # ------------------------------------------------------------------ sending
    def send_event(self, topic: str, event: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
        """Send one event (`send_tcs_event`): a dict or a JSON object string, copied, with
        `__wire_time` set now when absent and the topic's next `__seq`. Returns what was sent."""
        frame0 = self._frame0(topic)
        body = codec.prepare(event, self.clock())
        with self._lock:
            seq = self._seq.get(topic, 0) + 1
            body[codec.SEQ] = seq
            self._send(frame0, codec.encode_body(body))
            self._seq[topic] = seq
        return body

    def send_prepared(self, event: codec.Prepared) -> None:
        """Send an event whose attributes are JSON text already (a replay's fast path): the
        reserved keys are appended as text, `__wire_time` now when it has none."""
        topic = event.topic
        frame0 = self._frame0(topic)
        wire = None if event.wire_time is not None else self.clock()
        with self._lock:
            seq = self._seq.get(topic, 0) + 1
            self._send(frame0, event.text(seq, wire).encode())
            self._seq[topic] = seq

    def send_frames(self, frames: list[bytes]) -> None:
        """Send a raw multipart message as it is (no `__seq`, no checks)."""
        with self._lock:
            self._check_open()
            self._sock.send_multipart(frames)
            self._count_sent()

    def _frame0(self, topic: str) -> bytes:
        """Frame 0 of `topic`, checked once per topic."""
        frame = self._frames0.get(topic)
        if frame is None:
            frame = self._frames0[topic] = codec.check_topic(topic)
        return frame

    def _send(self, frame0: bytes, body: bytes) -> None:
        """One `[topic, body]` message: two plain sends (what `send_multipart` does, minus
        its per-call checks), atomic for subscribers like any multipart message."""
        self._check_open()
        sock = self._sock
        sock.send(frame0, _SNDMORE)
        sock.send(body)
        self._count_sent()

    def _check_open(self) -> None:
        if self._closed:
            raise SimulatorError(f"event publisher {self.url} is closed")

    def _count_sent(self) -> None:
        self.sent += 1
        if self.sent % DRAIN_EVERY == 0:
            self._drain_subscriptions()

    def start(self, events: Iterable[Any], stop: threading.Event | None = None) -> int:
        """Send every event of `events` (the `start()` loop of spec §1) until it ends or `stop`
        is set; returns how many were sent. Items: None (skipped), `(topic, dict | JSON)`.
        A source with a `stream()` (Replay: may yield `Prepared` text) or `dicts()` method
        (MockSource, DutEvents) is read through it."""
        reader = getattr(events, "stream", None) or getattr(events, "dicts", None)
        items = reader() if callable(reader) else events
        count = 0
        for index, item in enumerate(items):
            if stop is not None and stop.is_set():
                break
            if item is None:
                continue
            if isinstance(item, codec.Prepared):
                self.send_prepared(item)
                count += 1
                continue
            try:
                topic, event = item
            except (TypeError, ValueError):
                raise ProtocolError(f"event {index} of the source is {item!r}, not "
                                    "(topic, event) or None", field="item") from None
            self.send_event(topic, event)
            count += 1
        return count

    # ------------------------------------------------------------------ subscriptions
    def _drain_subscriptions(self) -> None:
        """Take every (un)subscription message waiting on the XPUB socket."""
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self._subscriptions[msg[1:]] += 1
            elif msg[:1] == b"\x00" and self._subscriptions[msg[1:]] > 0:
                self._subscriptions[msg[1:]] -= 1

    def subscribers(self, topic: str | None = None) -> int:
        """Subscriptions now active that would receive `topic` (any topic when None)."""
        with self._lock:
            self._drain_subscriptions()
            return self._count(topic)

    def _count(self, topic: str | None) -> int:
        if topic is None:
            return sum(self._subscriptions.values())
        name = topic.encode()
        return sum(n for prefix, n in self._subscriptions.items() if name.startswith(prefix))

    def wait_for_subscribers(self, n: int = 1, timeout: float = 10.0,
                             topic: str | None = None,
                             stop: threading.Event | None = None) -> int:
        """Wait until at least `n` subscriptions that receive `topic` (any, when None) have
        arrived (spec §7: no event is lost to a slow joiner), or `stop` is set. BusTimeout
        after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._drain_subscriptions()
                have = self._count(topic)
                if have >= n or (stop is not None and stop.is_set()):
                    return have
                left = deadline - time.monotonic()
                if left <= 0:
                    subs = sorted(p.decode(errors="replace") for p, k in
                                  self._subscriptions.items() if k) or ["none"]
                    raise BusTimeout(
                        f"event publisher {self.url}: timed out after {timeout:g} s waiting for "
                        f"{n} subscriber(s){f' to {topic!r}' if topic else ''}; have {have} "
                        f"(subscriptions: {', '.join(repr(s) for s in subs)})")
                self._sock.poll(min(POLL_MS, max(1, int(left * 1000))), zmq.POLLIN)

    # ------------------------------------------------------------------ life cycle
    def close(self, linger_ms: int | None = None) -> None:
        """Close the socket, waiting at most `linger_ms` (default LINGER) for queued events to
        go out, and the context."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sock.close(self.linger_ms if linger_ms is None else linger_ms)
        self._ctx.term()

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
