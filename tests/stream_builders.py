"""Synthetic stream captures with known properties, for the StreamCapture and validation tests."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hil.instruments.stream_capture import SignalData, StreamCapture

Wave = Callable[[np.ndarray, int], np.ndarray]   # (times, channel) -> values


def sine(frequency: float = 10.0, amplitude: float = 1.0) -> Wave:
    """Channel c carries amplitude·(c+1)·sin(2π f t)."""
    return lambda t, c: amplitude * (c + 1) * np.sin(2 * np.pi * frequency * t)


def synthetic(n_packets: int = 100, rate: float = 250.0, block: int = 10,
              channels: Sequence[str] = ("C3", "C4"), source: str = "eeg",
              wave: Wave | None = None, t0: float = 1000.0, first_number: int = 0,
              arrival_offset: float = 5000.0, latency: float = 0.002,
              extra: dict[str, SignalData] | None = None) -> StreamCapture:
    """A perfect stream: packets numbered +1, timestamps exactly block/rate apart, constant latency.

    Signal "eeg" carries `block` columns per packet; samples are `wave` at the sample times.
    Arrival = timestamp + arrival_offset (the clocks' epochs differ) + block duration + latency.
    """
    wave = wave or sine()
    timestamps = t0 + np.arange(n_packets) * block / rate
    times = t0 + np.arange(n_packets * block) / rate
    samples = np.vstack([wave(times, c) for c in range(len(channels))]) if channels else \
        np.empty((0, n_packets * block))
    signals = {"eeg": SignalData("eeg", rate, list(channels), samples, block_size=block, unit="uV")}
    signals.update(extra or {})
    return StreamCapture(
        source=source, signals=signals,
        packet_numbers=np.arange(first_number, first_number + n_packets, dtype=np.uint64),
        timestamps=timestamps,
        arrival=timestamps + arrival_offset + block / rate + latency)


class Recorder:
    """A stand-in for the pytest `measure` fixture: it only remembers what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str, float | None, float | None]] = []

    def __call__(self, name: str, value: float, unit: str = "", low: float | None = None,
                 high: float | None = None) -> None:
        self.calls.append((name, value, unit, low, high))

    def value(self, name: str) -> float:
        values = [v for n, v, *_ in self.calls if n == name]
        assert values, f"{name} not recorded; got {[c[0] for c in self.calls]}"
        return values[-1]
