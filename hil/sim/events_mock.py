"""Synthetic events (the `TCSMockEvent` of spec §1, §6), seeded for reproducible CI.

Payload model (decided here): a dict whose values are sent as they are, except strings that
start with "~", which name a generator per attribute:

    ~counter                  0, 1, 2, …
    ~uniform:LOW:HIGH         seeded uniform float
    ~normal:MEAN:SIGMA        seeded normal float
    ~choice:A|B|C             seeded choice of text
    ~sine:PERIOD:AMPLITUDE[:OFFSET]   sine of the event's data time
    ~cycle:A|B|C              A, B, C, A, … (a state sequence)

A callable `f(index, t, rng)` is a generator too. Pacing uses the replay's absolute schedule
(event k is due at start + k / rate_hz); `rate_hz` 0 sends a single event. `write_db()` stores
the same events without waiting, to make replay fixtures.
"""
from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hil.errors import SimulatorError
from hil.protocols import events as codec
from hil.protocols.events_db import EventWriter

DEFAULT_TOPIC = "lrs2.hardware.status"
DEFAULT_PAYLOAD: dict[str, Any] = {
    "state": "~choice:idle|exposing|reading|idle",
    "temperature": "~uniform:-10:25",
    "count": "~counter",
    "ok": True,
}
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
Generator = Callable[[int, float, random.Random], Any]


def generator(spec: Any, name: str = "value") -> Generator:
    """The generator of one payload attribute (see the module docstring)."""
    if callable(spec):
        return spec
    if not (isinstance(spec, str) and spec.startswith("~")):
        return lambda k, t, rng: spec
    kind, _, rest = spec[1:].partition(":")
    args = rest.split(":") if rest else []
    try:
        if kind == "counter" and not args:
            return lambda k, t, rng: k
        if kind == "uniform" and len(args) == 2:
            lo, hi = float(args[0]), float(args[1])
            return lambda k, t, rng: rng.uniform(lo, hi)
        if kind == "normal" and len(args) == 2:
            mu, sigma = float(args[0]), float(args[1])
            return lambda k, t, rng: rng.gauss(mu, sigma)
        if kind == "choice" and len(args) == 1:
            options = args[0].split("|")
            return lambda k, t, rng: rng.choice(options)
        if kind == "cycle" and len(args) == 1:
            options = args[0].split("|")
            return lambda k, t, rng: options[k % len(options)]
        if kind == "sine" and len(args) in (2, 3):
            period, amp = float(args[0]), float(args[1])
            offset = float(args[2]) if len(args) == 3 else 0.0
            if period <= 0:
                raise ValueError("the period must be positive")
            return lambda k, t, rng: offset + amp * math.sin(2 * math.pi * t / period)
    except ValueError as exc:
        raise SimulatorError(f"mock payload {name!r}: bad generator {spec!r}: {exc}") from None
    raise SimulatorError(
        f"mock payload {name!r}: unknown generator {spec!r}; use ~counter, ~uniform:LO:HI, "
        "~normal:MEAN:SIGMA, ~choice:A|B, ~cycle:A|B or ~sine:PERIOD:AMP[:OFFSET]")


class MockSource:
    """Status events on `topic` at `rate_hz`, until `count` events or `duration_s` seconds."""

    def __init__(self, topic: str = DEFAULT_TOPIC, *, rate_hz: float = 1.0,
                 count: int | None = None, duration_s: float | None = None,
                 payload: Mapping[str, Any] | None = None, seed: int = 1,
                 clock: Callable[[], float] = time.time) -> None:
        codec.check_topic(topic)
        if not (math.isfinite(rate_hz) and rate_hz >= 0):
            raise SimulatorError(f"mock rate_hz must be finite and >= 0, got {rate_hz!r}")
        if count is not None and count < 0:
            raise SimulatorError(f"mock count must be >= 0, got {count!r}")
        self.topic = topic
        self.rate_hz = rate_hz
        self.count = 1 if rate_hz == 0 else count
        self.duration_s = duration_s
        self.seed = seed
        self.clock = clock
        self._generators = {name: generator(spec, name)
                            for name, spec in (payload or DEFAULT_PAYLOAD).items()}
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def event(self, k: int, t: float, rng: random.Random) -> dict[str, Any]:
        """The body of event `k` at data time `t`."""
        body = {name: gen(k, t, rng) for name, gen in self._generators.items()}
        body[codec.DATA_TIME] = t
        return body

    def dicts(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """`(topic, body)` per event, paced on an absolute schedule."""
        self._stop.clear()
        rng = random.Random(self.seed)
        start = time.monotonic()
        k = 0
        while not self._stop.is_set():
            if self.count is not None and k >= self.count:
                return
            due = start + (k / self.rate_hz if self.rate_hz else 0.0)
            if self.duration_s is not None and due - start > self.duration_s:
                return
            left = due - time.monotonic()
            if left > 0 and self._stop.wait(left):
                return
            yield self.topic, self.event(k, self.clock(), rng)
            k += 1

    def __iter__(self) -> Iterator[list[str]]:
        for topic, body in self.dicts():
            yield [topic, _ENCODE(body)]

    def write_db(self, path: str | Path, count: int, start: float = 1.7672256e9,
                 batch: int = 10_000) -> int:
        """Store `count` events with data and wire times from `start` at `rate_hz`, unpaced
        (a replay fixture). Returns how many."""
        rng = random.Random(self.seed)
        step = 1.0 / self.rate_hz if self.rate_hz else 0.0
        seq = 0
        with EventWriter(path, writer="hil.sim.events_mock") as writer:
            pending: list[codec.Event] = []
            for k in range(count):
                t = start + k * step
                body = self.event(k, t, rng)
                seq += 1
                body[codec.WIRE_TIME] = t + 0.001
                body[codec.SEQ] = seq
                pending.append(codec.Event(self.topic, body))
                if len(pending) >= batch:
                    writer.write(pending)
                    pending = []
            writer.write(pending)
        return count
