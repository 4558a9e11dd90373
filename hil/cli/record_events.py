"""`hil record events URL --db FILE [--seconds S]`: record a live ZeroMQ event stream.

Writes hil's SQLite schema in batched transactions until `--seconds` pass, or Ctrl-C /
SIGTERM, which commit the last batch: only a crash or SIGKILL can lose events, at most one
batch (`--flush` seconds' worth), and the file stays a valid database.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from hil.errors import HilError
from hil.instruments.event_recorder import (DEFAULT_BATCH, DEFAULT_FLUSH_S, EventRecorder,
                                           lost_events)


def main(argv: list[str] | None = None) -> int:
    """0 when recording ended cleanly, 1 on an error (database locked or full, no publisher)."""
    p = argparse.ArgumentParser(prog="hil record events", description=__doc__.splitlines()[0])
    p.add_argument("url", help="publisher address, tcp://HOST:PORT or ipc://PATH")
    p.add_argument("--db", required=True, help="SQLite file to write (created or appended to)")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--topics", default="", help="topic prefixes, comma-separated (default: all)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="events per transaction")
    p.add_argument("--flush", type=float, default=DEFAULT_FLUSH_S,
                   help="commit at least this often, seconds")
    p.add_argument("--connect-timeout", type=float, default=5.0,
                   help="seconds to wait for the publisher (0: do not wait)")
    p.add_argument("--max-bytes", type=int, help="size limit of the database file")
    args = p.parse_args(argv)
    if args.seconds is not None and not args.seconds >= 0:
        p.error("--seconds must be >= 0")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda s, f: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    try:
        recorder = EventRecorder(args.url, args.db, topics, batch=args.batch,
                                 flush_s=args.flush, max_bytes=args.max_bytes,
                                 connect_timeout=args.connect_timeout)
    except (HilError, ValueError) as exc:
        print(f"hil record events: error: {exc}", file=sys.stderr)
        _restore(previous)
        return 1
    print(f"recording {args.url} into {args.db}; Ctrl-C to stop", file=sys.stderr, flush=True)
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    status = 0
    try:
        while not stop.wait(0.1):
            if recorder.error is not None or (deadline is not None
                                              and time.monotonic() >= deadline):
                break
    finally:
        try:
            recorder.close()
        except HilError as exc:
            print(f"hil record events: error: {exc}", file=sys.stderr)
            status = 1
        _restore(previous)
    print(f"hil record events: {recorder.written} events written to {args.db} "
          f"({lost_events(recorder)} lost by __seq, {recorder.malformed} malformed)",
          file=sys.stderr)
    return status


def _restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
