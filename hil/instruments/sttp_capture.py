"""Turning received STTP measurements into a `StreamCapture` keyed by point tag.

STTP packets carry no sequence numbers, so the capture's "packets" are frames: runs of
measurements with the same time stamp (one publisher frame, 30–60 per second). A frame's number
is its time on the nominal frame grid, round((t − t_first) · rate), so a frame that never
arrived is a gap, one sent twice a duplicate and one out of order a late arrival, exactly as
`validate().no_gaps()` reports them for TiA. Without time stamps (includeTime=false) each data
packet is a frame, numbered in arrival order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hil.instruments.stream_capture import SignalData, StreamCapture
from hil.protocols.sttp_ticks import TIME_MASK, to_unix


@dataclass
class Chunk:
    """Measurements of one read: global signal key per value, value, Ticks, flags, and how
    many measurements each data packet held (for time-less streams)."""

    keys: np.ndarray
    values: np.ndarray
    ticks: np.ndarray
    flags: np.ndarray
    packet_counts: np.ndarray
    arrival: float

    def __len__(self) -> int:
        return int(self.keys.size)


def frame_starts(ticks: np.ndarray, previous: int | None = None,
                 keys: np.ndarray | None = None) -> np.ndarray:
    """True where a measurement starts a new frame: its time differs from the one before,
    or (given `keys`) its signal already appeared in the current frame, so a frame sent
    twice in a row counts twice."""
    n = ticks.size
    starts = np.empty(n, dtype=bool)
    if n:
        starts[0] = previous is None or int(ticks[0]) != previous
        np.not_equal(ticks[1:], ticks[:-1], out=starts[1:])
    if keys is not None and n > 1:
        run = np.cumsum(starts)
        order = np.lexsort((np.arange(n), keys, run))
        r, k = run[order], keys[order]
        first = np.r_[True, (r[1:] != r[:-1]) | (k[1:] != k[:-1])]
        group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        occurrence = np.empty(n, dtype=np.int64)
        occurrence[order] = np.arange(n) - group_start
        starts[1:] |= occurrence[1:] != occurrence[:-1]
    return starts


def estimate_rate(times: np.ndarray) -> float:
    """Frames per second from the median step between distinct frame times (0: unknown)."""
    steps = np.diff(np.unique(times))
    steps = steps[steps > 0]
    return float(1.0 / np.median(steps)) if steps.size else 0.0


def build_capture(source: str, chunks: list[Chunk], names: list[str], ids: list[str],
                  rate: float, include_time: bool, lost: int = 0) -> StreamCapture:
    """A StreamCapture of `chunks`: one signal per key (`names[key]`, its signal id as the
    channel label), frames as packets. `rate`: nominal frames/s (0: estimated)."""
    keys = np.concatenate([c.keys for c in chunks]) if chunks else np.zeros(0, np.int64)
    values = np.concatenate([c.values for c in chunks]) if chunks else np.zeros(0)
    arrival_each = (np.concatenate([np.full(len(c), c.arrival) for c in chunks]) if chunks
                    else np.zeros(0))
    if include_time:
        ticks = (np.concatenate([c.ticks for c in chunks]) if chunks
                 else np.zeros(0, np.uint64)) & np.uint64(TIME_MASK)
        starts = frame_starts(ticks, keys=keys)
        frame_of = np.cumsum(starts) - 1
        times = np.asarray(to_unix(ticks[starts]), dtype=np.float64)
    else:
        counts = (np.concatenate([c.packet_counts for c in chunks]) if chunks
                  else np.zeros(0, np.int64))
        counts = counts[counts > 0]
        frame_of = np.repeat(np.arange(counts.size), counts)
        first = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
        times = arrival_each[first] if counts.size else np.zeros(0)
        starts = np.zeros(keys.size, dtype=bool)
        starts[first] = True
    arrival = arrival_each[starts]
    rate = rate if rate > 0 else estimate_rate(times)
    if include_time and rate > 0 and times.size:
        numbers = np.rint((times - times.min()) * rate).astype(np.uint64)
    else:
        numbers = np.arange(times.size, dtype=np.uint64)
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(len(names) + 1))
    signals: dict[str, SignalData] = {}
    for k, name in enumerate(names):
        picked = order[bounds[k]:bounds[k + 1]]
        signals[name] = SignalData(name, rate if rate > 0 else 1.0, [ids[k]],
                                   values[picked].reshape(1, -1), 1, frame_of[picked])
    return StreamCapture(source, signals, numbers, times, arrival, lost)
