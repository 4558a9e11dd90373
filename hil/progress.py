"""Progress of long waits: a capture or replay longer than a few seconds says how far it is.

Instruments report through the `hil.progress` logger (INFO); the pytest plugin shows those
lines on the terminal as they come, and they stay in the test's captured log. Waits shorter
than `QUIET_FOR` say nothing.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Sized, TypeVar

T = TypeVar("T", bound=Sized)

logger = logging.getLogger("hil.progress")
QUIET_FOR = 3.0     # seconds before the first line
EVERY = 2.0         # seconds between lines after that


def track(items: Iterable[T], what: str, seconds: float | None = None,
          unit: str = "items") -> Iterator[T]:
    """Yield `items`, saying now and then how long it has run and how many (len() of each
    item) came: `eeg: capturing, 4 of 10 s, 2000 packets`."""
    start = time.monotonic()
    next_at, total = start + QUIET_FOR, 0
    for item in items:
        total += len(item)
        now = time.monotonic()
        if now >= next_at:
            ran = f"{now - start:.0f} of {seconds:g} s" if seconds else f"{now - start:.0f} s"
            logger.info("%s, %s, %d %s", what, ran, total, unit)
            next_at = now + EVERY
        yield item
