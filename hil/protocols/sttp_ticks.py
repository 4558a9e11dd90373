"""STTP time stamps: .NET Ticks (100 ns since 0001-01-01 UTC) ↔ datetime and UNIX seconds
(spec §9). Only the low 62 bits are time; bits 63/62 are the leap-second flag and direction."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

TIME_MASK = 0x3FFF_FFFF_FFFF_FFFF
LEAP_SECOND = 1 << 63
LEAP_NEGATIVE = 1 << 62
UNIX_EPOCH = 621_355_968_000_000_000
PER_SECOND = 10_000_000
PER_MILLISECOND = 10_000
_EPOCH = datetime(1, 1, 1, tzinfo=timezone.utc)


def to_unix(ticks: np.ndarray | int) -> np.ndarray | float:
    """UNIX seconds (float64) of Ticks, masked to 62 bits; vectorised for arrays."""
    if isinstance(ticks, (int, np.integer)):
        return ((int(ticks) & TIME_MASK) - UNIX_EPOCH) / PER_SECOND
    t = np.asarray(ticks).astype(np.uint64, copy=False) & np.uint64(TIME_MASK)
    whole = (t.astype(np.int64) - UNIX_EPOCH)
    return whole // PER_SECOND + (whole % PER_SECOND) / PER_SECOND


def from_unix(seconds: np.ndarray | float) -> np.ndarray | int:
    """Ticks of UNIX seconds (rounded to 100 ns); vectorised for arrays."""
    if isinstance(seconds, (int, float)):
        return UNIX_EPOCH + round(seconds * PER_SECOND)
    return (np.rint(np.asarray(seconds, dtype=np.float64) * PER_SECOND).astype(np.int64)
            + UNIX_EPOCH).astype(np.uint64)


def to_datetime(ticks: int) -> datetime:
    """An aware UTC datetime of Ticks (µs resolution: the last 100 ns digit is dropped)."""
    return _EPOCH + timedelta(microseconds=(int(ticks) & TIME_MASK) // 10)


def from_datetime(value: datetime) -> int:
    """Ticks of a datetime (naive ones are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * PER_SECOND + delta.microseconds * 10
