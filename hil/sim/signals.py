"""Standalone simulators stop the same way on Ctrl-C and on SIGTERM (how CI and service
managers stop a process): their resources are closed, and the exit status is 0."""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An Event set by SIGINT or SIGTERM while the block runs (the previous handlers come
    back after it): `with stop_on_signals() as stop: stop.wait()`."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
