"""One clock for every timestamp hil takes: epoch seconds that never jump backwards.

Bus arrival times, marks, power-trace start times and stream timestamps all come from `now()`,
so a console mark can be placed on a power trace. It is `time.monotonic()` shifted once to the
wall clock at import, so intervals are exact and values still read as dates.
"""
from __future__ import annotations

import time

_OFFSET = time.time() - time.monotonic()


def now() -> float:
    """Seconds since the epoch, monotonic within this process."""
    return time.monotonic() + _OFFSET


def to_monotonic(t: float) -> float:
    """Convert a `now()` value back to `time.monotonic()` (for sleeping until it)."""
    return t - _OFFSET
