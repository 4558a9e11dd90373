"""Checks on a `StreamCapture`: rate, gaps, monotonic time, jitter, value range, waveform, latency.

`capture.validate(measure)` returns a `StreamValidator`; each check computes figures, records
them through the pytest `measure` fixture (which fails the test at its end if any is out of
limits) or, without `measure`, raises `ValidationError` at once. Checks chain:

    capture.validate(measure).rate("eeg").no_gaps().monotonic().jitter(max_ms=5)

Measurement names are stable: `<source>.<signal>.rate`, `<source>.packets.missing`, … so that
dashboards can follow a figure across runs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from hil.errors import ValidationError

if TYPE_CHECKING:
    from hil.instruments.stream_capture import StreamCapture

MAX_FFT = 1 << 22   # zero-padding stops growing here (memory), the peak interpolation remains


class Measure(Protocol):
    """The `measure` fixture: record a figure with its limits (see docs/contracts.md)."""

    def __call__(self, name: str, value: float, unit: str = "", low: float | None = None,
                 high: float | None = None) -> Any: ...


@dataclass(frozen=True)
class CheckResult:
    """One figure a check computed, its limits (None: open) and whether it lies within them."""

    name: str
    value: float
    unit: str
    low: float | None
    high: float | None
    passed: bool

    def describe(self) -> str:
        """`eeg.packets.missing = 3 (expected <= 0)`."""
        unit = f" {self.unit}" if self.unit else ""
        expected = _limits(self.low, self.high, unit)
        return f"{self.name} = {self.value:.6g}{unit} (expected {expected})"


def within(value: float, low: float | None, high: float | None) -> bool:
    """True when value is a number inside [low, high]; NaN (could not measure) never passes."""
    if not math.isfinite(value):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def _limits(low: float | None, high: float | None, unit: str = "") -> str:
    if low is not None and high is not None:
        return f"in [{low:.6g}, {high:.6g}]{unit}"
    if high is not None:
        return f"<= {high:.6g}{unit}"
    if low is not None:
        return f">= {low:.6g}{unit}"
    return "any value"


# -------------------------------------------------------------------- pure analysis
def dominant_frequency(x: np.ndarray, rate: float, pad: int = 8) -> float:
    """Frequency (Hz) of the strongest non-DC spectral peak, NaN if there is none.

    Hann-windowed rfft, zero-padded `pad` times, then a parabola through the log magnitudes of
    the peak bin and its neighbours (exact for a Gaussian peak, close for Hann): the error is a
    small fraction of a bin even when the tone falls between bins.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size < 4 or not np.all(np.isfinite(x)):
        return float("nan")
    nfft = max(x.size, min(x.size * pad, MAX_FFT))
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(x.size), nfft))
    k = int(np.argmax(spectrum[1:])) + 1
    if spectrum[k] <= 0:
        return float("nan")
    if k >= spectrum.size - 1:
        return k * rate / nfft
    a, b, c = np.log(np.maximum(spectrum[k - 1:k + 2], np.finfo(float).tiny))
    curvature = a - 2 * b + c
    delta = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
    return float((k + delta) * rate / nfft)


def sine_amplitude(x: np.ndarray, rate: float, frequency: float) -> float:
    """Peak amplitude of the sine at `frequency` in x: least-squares fit of cos, sin and offset.

    Unlike the FFT peak height this needs no window correction and does not care whether the
    capture holds a whole number of cycles.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size < 3 or not math.isfinite(frequency) or not np.all(np.isfinite(x)):
        return float("nan")
    phase = 2 * np.pi * frequency * np.arange(x.size) / rate
    design = np.column_stack([np.cos(phase), np.sin(phase), np.ones(x.size)])
    (a, b, _), *_ = np.linalg.lstsq(design, x, rcond=None)
    return float(math.hypot(a, b))


def spacing_deviation(capture: StreamCapture, times: np.ndarray,
                      signal: str | None = None) -> np.ndarray:
    """|actual − nominal| spacing (s) between consecutive packets numbered n and n+1.

    Nominal is the time the reference signal's columns in the earlier packet take at its
    nominal rate (default reference: the first signal present in every packet); without one,
    the median spacing. Steps across gaps, duplicates or reordering are left out: `no_gaps`
    reports those.
    """
    if capture.n_packets < 2:
        return np.empty(0)
    steps = np.diff(times)
    consecutive = np.diff(capture.packet_numbers.astype(np.int64)) == 1
    reference = signal if signal is not None else _reference_signal(capture)
    if reference is not None:
        counts = capture.samples_per_packet(reference)
        nominal = counts[:-1] / capture[reference].rate
    else:
        nominal = np.full(steps.size, np.median(steps[consecutive]) if consecutive.any() else 0.0)
    return np.abs(steps - nominal)[consecutive]


def _reference_signal(capture: StreamCapture) -> str | None:
    """First signal that every packet carries (its columns give each packet's nominal span)."""
    for key in capture.signals:
        counts = capture.samples_per_packet(key)
        if counts.size and counts.min() > 0:
            return key
    return None


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def _max(values: np.ndarray) -> float:
    return float(values.max()) if values.size else float("nan")


# -------------------------------------------------------------------- the validator
class StreamValidator:
    """Chainable checks on one capture. Every figure lands in `results`, whatever the mode.

    With `measure`, each figure is recorded there (the test fails at its end if any is out of
    limits); without, a check raises `ValidationError` naming what failed, its limits, the
    measured value, the source and the signal.
    """

    def __init__(self, capture: StreamCapture, measure: Measure | None = None) -> None:
        self.capture = capture
        self.measure = measure
        self.results: list[CheckResult] = []

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def _name(self, *parts: str) -> str:
        return ".".join((self.capture.source, *parts))

    def _figure(self, name: str, value: float, unit: str = "", low: float | None = None,
                high: float | None = None) -> CheckResult:
        return CheckResult(name, float(value), unit, low, high, within(float(value), low, high))

    def _report(self, figures: list[CheckResult], where: str, detail: str = "") -> StreamValidator:
        """Record the figures of one check; in raising mode, raise if any failed."""
        self.results.extend(figures)
        if self.measure is not None:
            for f in figures:
                self.measure(f.name, f.value, unit=f.unit, low=f.low, high=f.high)
            return self
        failed = [f for f in figures if not f.passed]
        if failed:
            lines = "; ".join(f.describe() for f in failed)
            raise ValidationError(f"{lines} [{where}]" + (f": {detail}" if detail else ""))
        return self

    # ---------------------------------------------------------------- checks
    def rate(self, signal: str, expected: float | None = None,
             tolerance: float = 0.01) -> StreamValidator:
        """Measured samples/s per channel (sender timestamps) within ±tolerance (relative)."""
        data = self.capture[signal]
        nominal = data.rate if expected is None else expected
        measured = self.capture.measured_rate(signal)
        figure = self._figure(self._name(signal, "rate"), measured, "Hz",
                              nominal * (1 - tolerance), nominal * (1 + tolerance))
        packets = int(np.count_nonzero(self.capture.samples_per_packet(signal)))
        return self._report([figure], f"source {self.capture.source!r}, signal {signal!r}",
                            f"{data.n_samples} samples in {packets} packets "
                            f"(nominal {nominal:g} Hz)")

    def no_gaps(self) -> StreamValidator:
        """Packet numbers go strictly +1: no missing, duplicate or late packets, none lost."""
        stats = self.capture.packet_stats()
        figures = [self._figure(self._name("packets", what), value, high=0)
                   for what, value in (("missing", stats.missing), ("gaps", stats.gaps),
                                       ("duplicates", stats.duplicates),
                                       ("reordered", stats.reordered),
                                       ("lost", self.capture.lost_packets))]
        detail = f"{stats.packets} packets received"
        if stats.first_gap_after is not None:
            detail += f", first gap after packet number {stats.first_gap_after}"
        return self._report(figures, f"source {self.capture.source!r}, packet numbers", detail)

    def monotonic(self) -> StreamValidator:
        """Sender timestamps never go backwards; counts the steps that do."""
        steps = np.diff(self.capture.timestamps)
        backwards = np.flatnonzero(steps < 0)
        detail = ""
        if backwards.size:
            first = int(backwards[0]) + 1
            detail = (f"first at packet {first} (number {int(self.capture.packet_numbers[first])}),"
                      f" largest step back {-steps.min() * 1e3:.3f} ms")
        figure = self._figure(self._name("timestamps", "backwards"), backwards.size, high=0)
        return self._report([figure], f"source {self.capture.source!r}, timestamps", detail)

    def jitter(self, max_ms: float, p99_ms: float | None = None,
               of: Literal["timestamps", "arrival"] = "timestamps",
               signal: str | None = None) -> StreamValidator:
        """Deviation of packet spacing from nominal, in ms: p99 and max (limited by max_ms).

        `of="timestamps"` judges the sender's pacing; `of="arrival"` the spacing as received
        here (network, OS and our reader included). See `spacing_deviation` for "nominal".
        """
        if of not in ("timestamps", "arrival"):
            raise ValueError(f"jitter(of=...) is 'timestamps' or 'arrival', got {of!r}")
        times = self.capture.timestamps if of == "timestamps" else self.capture.arrival
        deviation = spacing_deviation(self.capture, times, signal) * 1e3
        figures = [self._figure(self._name(of, "jitter_p99"), _percentile(deviation, 99), "ms",
                                high=p99_ms),
                   self._figure(self._name(of, "jitter_max"), _max(deviation), "ms",
                                high=max_ms)]
        return self._report(figures, f"source {self.capture.source!r}, {of}",
                            f"{deviation.size} consecutive packet steps")

    def value_range(self, signal: str, low: float | None = None, high: float | None = None,
                    channels: Sequence[str | int] | None = None) -> StreamValidator:
        """All samples of the channels (default: all) within [low, high] and finite."""
        data = self.capture[signal]
        rows = (list(range(data.n_channels)) if channels is None
                else [data.channel_index(c) for c in channels])
        values = data.samples[rows].astype(np.float64, copy=False)
        finite = np.isfinite(values)
        tag = "" if channels is None else "[" + ",".join(data.channels[r] for r in rows) + "]"
        lowest = float(values[finite].min()) if finite.any() else float("nan")
        highest = float(values[finite].max()) if finite.any() else float("nan")
        figures = [self._figure(self._name(signal + tag, "min"), lowest, data.unit, low=low),
                   self._figure(self._name(signal + tag, "max"), highest, data.unit, high=high),
                   self._figure(self._name(signal + tag, "nonfinite"), np.sum(~finite), high=0)]
        return self._report(figures, f"source {self.capture.source!r}, signal {signal!r}",
                            self._out_of_range(signal, rows, values, low, high))

    def _out_of_range(self, signal: str, rows: list[int], values: np.ndarray,
                      low: float | None, high: float | None) -> str:
        """Which channels broke the range, how often, and when first (s after first packet)."""
        bad = ~np.isfinite(values)
        if low is not None:
            bad |= values < low
        if high is not None:
            bad |= values > high
        if not bad.any():
            return ""
        times = self.capture.signal_times(signal) - self.capture.timestamps.min()
        labels = self.capture[signal].channels
        parts = [f"{labels[r]}: {int(bad[i].sum())} of {bad.shape[1]} samples, first at "
                 f"t={times[np.argmax(bad[i])]:.4f} s"
                 for i, r in enumerate(rows) if bad[i].any()]
        return "out of range on " + "; ".join(parts)

    def waveform(self, signal: str, frequency: float, amplitude: float | None = None,
                 channel: str | int = 0, freq_tolerance: float = 0.01,
                 amp_tolerance: float = 0.05) -> StreamValidator:
        """Dominant frequency (and peak amplitude if given) of one channel, ±relative tolerance.

        The time base is the nominal rate (sample index / rate), so a sender running fast or
        slow shifts the frequency found. Resolution is about rate / n_samples before the peak
        interpolation: give short captures a wider freq_tolerance.
        """
        data = self.capture[signal]
        row = data.channel_index(channel)
        x = data.samples[row]
        found = dominant_frequency(x, data.rate)
        prefix = (signal, data.channels[row])
        figures = [self._figure(self._name(*prefix, "frequency"), found, "Hz",
                                frequency * (1 - freq_tolerance),
                                frequency * (1 + freq_tolerance))]
        if amplitude is not None:
            figures.append(self._figure(self._name(*prefix, "amplitude"),
                                        sine_amplitude(x, data.rate, found), data.unit,
                                        amplitude * (1 - amp_tolerance),
                                        amplitude * (1 + amp_tolerance)))
        return self._report(figures, f"source {self.capture.source!r}, signal {signal!r}, "
                                     f"channel {data.channels[row]!r}",
                            f"{x.size} samples at {data.rate:g} Hz")

    def latency(self, max_ms: float, p99_ms: float | None = None,
                clock: Literal["sender", "hil"] = "sender") -> StreamValidator:
        """Arrival time minus sender timestamp, in ms: p50, p99 and max (limited by max_ms).

        `clock="hil"`: the sender stamps packets with `hil.clock.now()` (our simulators can),
        so arrival − timestamp is the true end-to-end latency (`<source>.latency.*`).

        `clock="sender"` (default): the sender counts from its own epoch (TiA: µs since server
        start), so the clock offset is unknown. It is estimated as the smallest arrival −
        timestamp of the capture, i.e. the fastest packet is taken as zero latency. What is
        reported (`<source>.latency_spread.*`) is therefore how much later than the fastest
        packet each packet arrived: latency jitter, not absolute latency. A constant delay is
        invisible, and drift between the two clocks (e.g. 50 ppm: 3 ms a minute) adds to it.
        Timestamps mark a packet's first sample, so a block's own duration is part of either.
        """
        delay = self.capture.arrival - self.capture.timestamps
        if clock == "hil":
            kind = "latency"
        elif clock == "sender":
            kind = "latency_spread"
            delay = delay - delay.min() if delay.size else delay
        else:
            raise ValueError(f"latency(clock=...) is 'sender' or 'hil', got {clock!r}")
        ms = delay * 1e3
        figures = [self._figure(self._name(kind, "p50"), _percentile(ms, 50), "ms"),
                   self._figure(self._name(kind, "p99"), _percentile(ms, 99), "ms", high=p99_ms),
                   self._figure(self._name(kind, "max"), _max(ms), "ms", high=max_ms)]
        return self._report(figures, f"source {self.capture.source!r}, arrival vs timestamps",
                            f"{ms.size} packets, sender clock {clock!r}")
