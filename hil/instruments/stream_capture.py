"""What a stream instrument (TiA, STTP, ZeroMQ events) hands a test: numpy arrays per signal.

A `StreamCapture` holds one row per received packet (connection packet number, the sender's
timestamp, our arrival time) and, per signal, a `SignalData` with the samples and the packet
each sample column came from. Drivers build it; tests read and `validate()` it, and save or plot
it with `hil.report.csv_files` and `hil.report.plots`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hil.instruments.validation import Measure, StreamValidator


@dataclass(eq=False, repr=False)
class SignalData:
    """One signal of a stream: `samples[channel, column]` at a nominal `rate` per channel.

    `packet_index[j]` is the index (into the capture's packet arrays) of the packet sample
    column j came from. None means every packet carried exactly `block_size` columns.
    """

    name: str
    rate: float
    channels: list[str]
    samples: np.ndarray
    block_size: int = 1
    packet_index: np.ndarray | None = None
    unit: str = ""

    def __post_init__(self) -> None:
        self.channels = [str(c) for c in self.channels]
        self.samples = np.asarray(self.samples)
        if self.samples.ndim == 1 and len(self.channels) == 1:
            self.samples = self.samples.reshape(1, -1)
        if self.samples.ndim != 2 or self.samples.shape[0] != len(self.channels):
            raise ValueError(
                f"signal {self.name!r}: samples must have shape (n_channels={len(self.channels)}, "
                f"n_samples), got {self.samples.shape}")
        if self.packet_index is not None:
            self.packet_index = np.asarray(self.packet_index, dtype=np.int64)
            if self.packet_index.shape != (self.n_samples,):
                raise ValueError(
                    f"signal {self.name!r}: packet_index needs one entry per sample column "
                    f"({self.n_samples}), got shape {self.packet_index.shape}")
        if self.block_size < 1:
            raise ValueError(f"signal {self.name!r}: block_size must be >= 1, "
                             f"got {self.block_size}")

    @property
    def n_channels(self) -> int:
        return self.samples.shape[0]

    @property
    def n_samples(self) -> int:
        """Sample columns (samples per channel)."""
        return self.samples.shape[1]

    def channel_index(self, channel: str | int) -> int:
        """Row of `channel`, given by label or by position; KeyError names the labels there are."""
        if isinstance(channel, (int, np.integer)):
            if not -self.n_channels <= channel < self.n_channels:
                raise KeyError(f"signal {self.name!r} has {self.n_channels} channels, "
                               f"no channel {channel}")
            return int(channel) % self.n_channels
        try:
            return self.channels.index(channel)
        except ValueError:
            raise KeyError(f"signal {self.name!r} has no channel {channel!r} "
                           f"(channels: {', '.join(self.channels)})") from None

    def __getitem__(self, channel: str | int) -> np.ndarray:
        """One channel as a 1-D array, by label (`eeg["C3"]`) or position (`eeg[0]`)."""
        return self.samples[self.channel_index(channel)]

    def packet_indices(self) -> np.ndarray:
        """For every sample column the index of its packet (explicit, or implied by block_size)."""
        if self.packet_index is not None:
            return self.packet_index
        return np.arange(self.n_samples, dtype=np.int64) // self.block_size

    def __repr__(self) -> str:
        return (f"SignalData({self.name!r}, rate={self.rate:g}, channels={self.n_channels}, "
                f"samples={self.n_samples}, block_size={self.block_size})")


@dataclass(frozen=True)
class PacketStats:
    """How a sequence of connection packet numbers departs from strictly +1.

    `missing`: numbers inside [first, last] never received; `gaps`: runs of missing numbers;
    `duplicates`: packets whose number was already received; `reordered`: first arrivals of a
    number lower than one received before (it came late); `first_gap_after`: the number after
    which the first gap starts (None without gaps).
    """

    packets: int
    missing: int
    gaps: int
    duplicates: int
    reordered: int
    first_gap_after: int | None = None


def packet_stats(numbers: np.ndarray) -> PacketStats:
    """Count gaps, missing numbers, duplicates and late arrivals in a packet-number sequence."""
    numbers = np.asarray(numbers, dtype=np.uint64)
    if numbers.size == 0:
        return PacketStats(0, 0, 0, 0, 0)
    unique, first = np.unique(numbers, return_index=True)
    steps = np.diff(unique)  # unique is sorted, so steps >= 1 and no uint64 wrap-around
    holes = steps > 1
    missing = int(np.sum(steps[holes] - np.uint64(1)))
    is_first = np.zeros(numbers.size, dtype=bool)
    is_first[first] = True
    running_max = np.maximum.accumulate(numbers)
    late = np.zeros(numbers.size, dtype=bool)
    late[1:] = numbers[1:] < running_max[:-1]
    first_gap = int(unique[:-1][holes][0]) if holes.any() else None
    return PacketStats(packets=int(numbers.size), missing=missing, gaps=int(holes.sum()),
                       duplicates=int(numbers.size - unique.size),
                       reordered=int(np.sum(late & is_first)), first_gap_after=first_gap)


@dataclass(eq=False, repr=False)
class StreamCapture:
    """Packets received from one stream source, and the samples they carried per signal.

    Per packet: `packet_numbers` (uint64, the connection's counter), `timestamps` (float64
    seconds on the sender's clock and epoch) and `arrival` (`hil.clock.now()` on receipt).
    `lost_packets` counts packets the driver itself knows it lost (e.g. a full queue).
    """

    source: str
    signals: dict[str, SignalData]
    packet_numbers: np.ndarray
    timestamps: np.ndarray
    arrival: np.ndarray
    lost_packets: int = 0

    def __post_init__(self) -> None:
        self.packet_numbers = np.asarray(self.packet_numbers, dtype=np.uint64)
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        self.arrival = np.asarray(self.arrival, dtype=np.float64)
        n = self.packet_numbers.size
        if self.timestamps.shape != (n,) or self.arrival.shape != (n,):
            raise ValueError(
                f"capture {self.source!r}: packet_numbers, timestamps and arrival need one entry "
                f"per packet, got shapes {self.packet_numbers.shape}, {self.timestamps.shape}, "
                f"{self.arrival.shape}")
        for key, signal in self.signals.items():
            self._check_signal(key, signal)

    def _check_signal(self, key: str, signal: SignalData) -> None:
        """A signal's sample columns must point at packets that exist."""
        if signal.packet_index is None:
            if signal.n_samples != self.n_packets * signal.block_size:
                raise ValueError(
                    f"capture {self.source!r}, signal {key!r}: without packet_index every packet "
                    f"carries block_size={signal.block_size} columns, so {self.n_packets} packets "
                    f"need {self.n_packets * signal.block_size}, got {signal.n_samples}")
        elif signal.n_samples and (signal.packet_index.min() < 0
                                   or signal.packet_index.max() >= self.n_packets):
            raise ValueError(f"capture {self.source!r}, signal {key!r}: packet_index outside "
                             f"[0, {self.n_packets})")

    # ---------------------------------------------------------------- access
    def __getitem__(self, signal: str) -> SignalData:
        """The named signal; KeyError lists the signals there are."""
        try:
            return self.signals[signal]
        except KeyError:
            raise KeyError(f"capture {self.source!r} has no signal {signal!r} "
                           f"(signals: {', '.join(self.signals) or 'none'})") from None

    def __contains__(self, signal: object) -> bool:
        return signal in self.signals

    @property
    def n_packets(self) -> int:
        return int(self.packet_numbers.size)

    @property
    def duration(self) -> float:
        """Sender time covered: last minus first timestamp plus one typical packet step (s)."""
        if self.n_packets < 2:
            return 0.0
        steps = np.diff(self.timestamps)
        return float(self.timestamps.max() - self.timestamps.min() + np.median(steps))

    def samples_per_packet(self, signal: str) -> np.ndarray:
        """How many sample columns of `signal` each packet carried."""
        return np.bincount(self[signal].packet_indices(), minlength=self.n_packets)

    def signal_times(self, signal: str) -> np.ndarray:
        """Sender-clock time of every sample column of `signal`.

        A packet's timestamp is taken as the time of its first column of that signal; the next
        columns in the same packet follow at the nominal rate.
        """
        data = self[signal]
        index = data.packet_indices()
        if index.size == 0:
            return np.empty(0)
        position = np.arange(index.size)
        starts = np.ones(index.size, dtype=bool)
        starts[1:] = index[1:] != index[:-1]
        run_start = np.maximum.accumulate(np.where(starts, position, 0))
        return self.timestamps[index] + (position - run_start) / data.rate

    def measured_rate(self, signal: str) -> float:
        """Samples/s per channel from sender timestamps and sample counts (NaN: too few packets).

        Between the earliest and the latest timestamp of packets carrying the signal, every
        column was sent except those of the latest packet: rate = (n - n_last) / span. Lost
        packets lower it (their samples never arrived), as they should.
        """
        counts = self.samples_per_packet(signal)
        carrying = np.flatnonzero(counts)
        if carrying.size < 2:
            return float("nan")
        times = self.timestamps[carrying]
        span = float(times.max() - times.min())
        if span <= 0:
            return float("nan")
        last = carrying[np.argmax(times)]
        return float((counts.sum() - counts[last]) / span)

    def packet_stats(self) -> PacketStats:
        """Gaps, missing packets, duplicates and reordering in the connection packet numbers."""
        return packet_stats(self.packet_numbers)

    def summary(self) -> dict[str, Any]:
        """Plain-data overview for logs and reports: packets, gaps, and per signal the rates."""
        stats = self.packet_stats()
        return {
            "source": self.source,
            "packets": self.n_packets,
            "duration": self.duration,
            "lost": self.lost_packets,
            "missing": stats.missing,
            "gaps": stats.gaps,
            "duplicates": stats.duplicates,
            "reordered": stats.reordered,
            "signals": {
                key: {"channels": s.n_channels, "samples": s.n_samples, "rate": s.rate,
                      "measured_rate": self.measured_rate(key)}
                for key, s in self.signals.items()},
        }

    def __repr__(self) -> str:
        signals = ", ".join(f"{k}: {s.n_channels}x{s.n_samples} @ {s.rate:g}/s"
                            for k, s in self.signals.items())
        return (f"StreamCapture({self.source!r}, {self.n_packets} packets, "
                f"{self.duration:.3f} s, lost={self.lost_packets}; {signals})")

    # ---------------------------------------------------------------- selecting, combining
    def take(self, packets: Sequence[int] | np.ndarray) -> StreamCapture:
        """A capture of these packets (indices, in order, repeats allowed) and their samples."""
        packets = np.asarray(packets, dtype=np.int64).reshape(-1)
        if packets.size and (packets.min() < -self.n_packets or packets.max() >= self.n_packets):
            raise IndexError(f"capture {self.source!r} has {self.n_packets} packets")
        packets = packets % max(self.n_packets, 1)
        signals = {key: _take_signal(s, packets, self.n_packets) for key, s in self.signals.items()}
        return StreamCapture(source=self.source, signals=signals,
                             packet_numbers=self.packet_numbers[packets],
                             timestamps=self.timestamps[packets], arrival=self.arrival[packets],
                             lost_packets=self.lost_packets)

    def between(self, start: float | Any, end: float | Any) -> StreamCapture:
        """Packets that arrived in [start, end) on hil's clock (floats, or marks with `.time`)."""
        t0, t1 = float(getattr(start, "time", start)), float(getattr(end, "time", end))
        return self.take(np.flatnonzero((self.arrival >= t0) & (self.arrival < t1)))

    def concat(self, other: StreamCapture) -> StreamCapture:
        """This capture followed by `other` (same signals, rates and channels; source of self)."""
        if set(self.signals) != set(other.signals):
            raise ValueError(f"cannot concat captures with signals {sorted(self.signals)} and "
                             f"{sorted(other.signals)}")
        signals = {key: _concat_signal(key, s, other.signals[key], self.n_packets)
                   for key, s in self.signals.items()}
        return StreamCapture(
            source=self.source, signals=signals,
            packet_numbers=np.concatenate([self.packet_numbers, other.packet_numbers]),
            timestamps=np.concatenate([self.timestamps, other.timestamps]),
            arrival=np.concatenate([self.arrival, other.arrival]),
            lost_packets=self.lost_packets + other.lost_packets)

    # ---------------------------------------------------------------- validation
    def validate(self, measure: Measure | None = None) -> StreamValidator:
        """Chainable checks (rate, gaps, jitter, …) recorded through `measure`, or raising."""
        from hil.instruments.validation import StreamValidator
        return StreamValidator(self, measure)


def _take_signal(s: SignalData, packets: np.ndarray, n_packets: int) -> SignalData:
    """The columns of one signal that belong to `packets`, re-indexed to their new positions."""
    index = s.packet_indices()
    order = np.argsort(index, kind="stable")
    starts = np.searchsorted(index[order], np.arange(n_packets), side="left")
    ends = np.searchsorted(index[order], np.arange(n_packets), side="right")
    counts = ends[packets] - starts[packets]
    columns = (np.concatenate([order[starts[p]:ends[p]] for p in packets.tolist()])
               if packets.size else np.empty(0, dtype=np.int64))
    new_index = None if s.packet_index is None else np.repeat(np.arange(packets.size), counts)
    return SignalData(name=s.name, rate=s.rate, channels=list(s.channels),
                      samples=s.samples[:, columns], block_size=s.block_size,
                      packet_index=new_index, unit=s.unit)


def _concat_signal(key: str, a: SignalData, b: SignalData, shift: int) -> SignalData:
    """Join one signal of two captures; b's packet indices move past a's packets."""
    if a.rate != b.rate or a.channels != b.channels:
        raise ValueError(f"cannot concat signal {key!r}: rate {a.rate} vs {b.rate}, "
                         f"channels {a.channels} vs {b.channels}")
    implicit = a.packet_index is None and b.packet_index is None and a.block_size == b.block_size
    index = None if implicit else np.concatenate([a.packet_indices(), b.packet_indices() + shift])
    return SignalData(name=a.name, rate=a.rate, channels=list(a.channels),
                      samples=np.concatenate([a.samples, b.samples], axis=1),
                      block_size=a.block_size, packet_index=index, unit=a.unit)
