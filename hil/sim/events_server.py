"""An event simulator: a publisher serving one source (replay, mock, virtual DUT) in a thread.

`EventServer(source, url)` binds at once (so `.url` is known), waits in its thread until
`wait` subscriptions have arrived (no slow-joiner loss), then sends the source's events. When
the source ends it publishes one marker on `hil.replay.done` with the replay's statistics, so a
test knows the replay finished. An error in the thread is logged with its traceback, kept in
`.error` and published on `hil.replay.error`: never swallowed.

`hil sim events` runs it standalone (see `main`).
"""
from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from hil.errors import HilError
from hil.sim.events_publisher import DEFAULT_LINGER_MS, DEFAULT_SNDHWM, EventPublisher

log = logging.getLogger(__name__)

DONE_TOPIC = "hil.replay.done"
ERROR_TOPIC = "hil.replay.error"
JOIN_S = 2.0
PROGRESS_AFTER = 3.0       # a replay running longer than this says how far it is,
PROGRESS_EVERY = 5.0       # this often


class EventServer:
    """Serves `source` on `url` from a thread (see the module docstring)."""

    def __init__(self, source: Iterable[Any], url: str = "tcp://127.0.0.1:0", *,
                 wait: int = 1, wait_timeout: float = 60.0, sndhwm: int = DEFAULT_SNDHWM,
                 linger_ms: int = DEFAULT_LINGER_MS, name: str = "events") -> None:
        self.source = source
        self.name = name
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.publisher = EventPublisher(url, sndhwm=sndhwm, linger_ms=linger_ms)
        self.url = self.publisher.url
        self.error: BaseException | None = None
        self.sent = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"event-server-{name}",
                                        daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"EventServer({self.name}, {self.url}, sent={self.sent})"

    def _run(self) -> None:
        try:
            if self.wait > 0:
                self.publisher.wait_for_subscribers(self.wait, self.wait_timeout,
                                                    stop=self._stop)
            if self._stop.is_set():                  # closed while waiting for subscribers
                return
            self.sent = self.publisher.start(self.source, self._stop)
            if not self._stop.is_set():
                self.publisher.send_event(DONE_TOPIC, self._done_body())
        except Exception as exc:
            self.error = exc
            log.error("%s: serving events failed: %s", self, exc, exc_info=exc)
            try:
                self.publisher.send_event(ERROR_TOPIC, {"error": f"{type(exc).__name__}: {exc}",
                                                        "source": self.name})
            except HilError:
                pass                         # closed meanwhile: the error is logged and kept
        finally:
            self.done.set()

    def _done_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"source": self.name, "sent": self.sent}
        stats = getattr(self.source, "stats", None)
        if stats is not None:
            body.update(filtered=stats.filtered, skipped=sum(stats.skipped.values()),
                        unknown_types=stats.unknown_types, null_times=stats.null_times,
                        summary=stats.summary())
        return body

    def close(self, linger_ms: int | None = None) -> None:
        """Stop the source and the thread, then close the socket (queued events get
        `linger_ms` to go out; default the publisher's short LINGER)."""
        self._stop.set()
        stop = getattr(self.source, "stop", None)
        if callable(stop):
            stop()
        self._thread.join(JOIN_S)
        if self._thread.is_alive():
            log.warning("%s: thread did not stop within %.1f s", self, JOIN_S)
        self.publisher.close(linger_ms)

    def __enter__(self) -> EventServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hil sim events",
        description="Publish events over ZeroMQ: replay an SQLite event database (hil's or "
                    "tcs_lib's schema) or send seeded mock status events. Prints the bound "
                    "URL; runs until the replay ends, or Ctrl-C / SIGTERM.")
    p.add_argument("--url", default="tcp://127.0.0.1:5556",
                   help="where to publish (tcp://HOST:PORT, port 0 = any; ipc://PATH)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", help="replay this SQLite event database")
    src.add_argument("--mock", action="store_true", help="send mock status events")
    p.add_argument("--speedup", type=float, default=1.0,
                   help="replay speed-up (10 = ten times faster; 0 or inf = as fast as possible)")
    p.add_argument("--topics", default="", help="replay only these topics, comma-separated")
    p.add_argument("--prefix", action="store_true", help="--topics are prefixes")
    p.add_argument("--sort-by", default="none", choices=("none", "__data_time", "__wire_time"))
    p.add_argument("--loop", action="store_true", help="replay again after the last event")
    p.add_argument("--convert-number", action="store_true", help="text that is a number "
                   "becomes one")
    p.add_argument("--convert-bool", action="store_true", help="true/false become booleans")
    p.add_argument("--topic", default="lrs2.hardware.status", help="--mock: topic")
    p.add_argument("--rate", type=float, default=1.0, help="--mock: events per second")
    p.add_argument("--count", type=int, help="--mock: stop after this many events")
    p.add_argument("--seed", type=int, default=1, help="--mock: random seed")
    p.add_argument("--wait", type=int, default=1,
                   help="subscriptions to wait for before sending (0: start at once)")
    p.add_argument("--wait-timeout", type=float, default=3600.0,
                   help="seconds to wait for them")
    p.add_argument("--sndhwm", type=int, default=DEFAULT_SNDHWM,
                   help="messages queued per subscriber before ZeroMQ drops")
    p.add_argument("--drain", type=float, default=60.0,
                   help="after the last event, seconds queued events may take to go out")
    return p


def _source(args: argparse.Namespace) -> Any:
    if args.mock:
        from hil.sim.events_mock import MockSource
        return MockSource(args.topic, rate_hz=args.rate, count=args.count, seed=args.seed)
    from hil.sim.events_replay import Replay
    topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    return Replay(args.db, sort_by=args.sort_by, speedup=args.speedup, topics=topics or None,
                  prefix=args.prefix, convert_number=args.convert_number,
                  convert_bool=args.convert_bool, loop=args.loop)


def main(argv: list[str] | None = None) -> int:
    """`hil sim events`: 0 when the replay ran to its end or was stopped, 1 on an error."""
    args = _parser().parse_args(argv)
    if math.isnan(args.speedup):
        _parser().error("--speedup must be a number")
    logging.basicConfig(level=logging.INFO, format="hil sim events: %(message)s")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda s, f: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        source = _source(args)
        server = EventServer(source, args.url, wait=args.wait, wait_timeout=args.wait_timeout,
                             sndhwm=args.sndhwm, name="mock" if args.mock else args.db)
    except HilError as exc:
        print(f"hil sim events: error: {exc}", file=sys.stderr)
        return 1
    try:
        print(server.url, flush=True)
        started, next_note = time.monotonic(), time.monotonic() + PROGRESS_AFTER
        while not stop.wait(0.1):
            if server.done.is_set():
                break
            if time.monotonic() >= next_note:       # a long replay says how far it is
                sent = server.publisher.sent
                waiting = " (waiting for a subscriber)" if not sent and args.wait else ""
                print(f"hil sim events: {sent} events sent in {time.monotonic() - started:.0f} "
                      f"s{waiting}", file=sys.stderr, flush=True)
                next_note = time.monotonic() + PROGRESS_EVERY
    finally:                                 # a replay that ended lets slow consumers catch up
        server.close(int(args.drain * 1000) if server.done.is_set() and not stop.is_set()
                     else None)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = getattr(source, "stats", None)
    summary = stats.summary() if stats is not None else f"{server.sent} events sent"
    print(f"hil sim events: {summary}", file=sys.stderr)
    if server.error is not None:
        print(f"hil sim events: error: {server.error}", file=sys.stderr)
        return 1
    return 0
