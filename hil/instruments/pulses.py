"""Pulse detection on a sampled current: where it stays above a threshold, and what each burst cost.

Plain numpy, no loop over samples: the edges are where `current > threshold` flips (`edges`), and
per-pulse sums and peaks come from `ufunc.reduceat` over the runs. `PowerTrace.pulses()` is the
usual way in; `find_pulses()` is the kernel.

How a pulse is measured: each sample stands for the time from half-way to its left neighbour to
half-way to its right neighbour (the first and last sample of the trace only for their inner half).
Those are the trapezoid rule's weights, so a pulse of N samples on a uniform grid lasts exactly
N sample intervals, and the pulses plus the gaps between them add up to `PowerTrace.charge()`.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np


@dataclass(frozen=True, slots=True)
class Pulse:
    """One burst above the threshold. Times in seconds on the trace's time axis (relative to t0)."""

    start: float      #: s, rising edge: half-way from the last sample below to the first above
    end: float        #: s, the falling edge
    duration: float   #: s, end - start
    peak: float       #: A, highest sample
    mean: float       #: A, average current over the pulse (charge / duration)
    charge: float     #: C
    energy: float     #: J

    @property
    def charge_mah(self) -> float:
        """Charge in mAh (1 mAh = 3.6 C)."""
        return self.charge / 3.6


class Pulses(Sequence[Pulse]):
    """The pulses of a trace: a read-only list of `Pulse`, also readable column-wise as arrays.

    Built from arrays so that a trace with a hundred thousand bursts costs no Python objects
    until you index it; `durations`, `charges` … give whole columns for limits and plots.
    """

    def __init__(self, start: np.ndarray, end: np.ndarray, peak: np.ndarray, charge: np.ndarray,
                 energy: np.ndarray, start_index: np.ndarray, end_index: np.ndarray) -> None:
        self.starts = start
        self.ends = end
        self.durations = end - start
        self.peaks = peak
        self.charges = charge
        self.energies = energy
        with np.errstate(divide="ignore", invalid="ignore"):
            self.means = np.where(self.durations > 0, charge / self.durations, peak)
        #: First sample index of each pulse and one past its last sample (into the trace's arrays).
        self.start_index = start_index
        self.end_index = end_index

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, i: int) -> Pulse: ...
    @overload
    def __getitem__(self, i: slice) -> list[Pulse]: ...

    def __getitem__(self, i: int | slice) -> Pulse | list[Pulse]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return Pulse(float(self.starts[i]), float(self.ends[i]), float(self.durations[i]),
                     float(self.peaks[i]), float(self.means[i]), float(self.charges[i]),
                     float(self.energies[i]))

    def __iter__(self) -> Iterator[Pulse]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Pulses, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        if not len(self):
            return "Pulses([])"
        return (f"Pulses({len(self)} pulses, duration {self.durations.min():.4g}.."
                f"{self.durations.max():.4g} s, peak max {self.peaks.max():.4g} A)")


def edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of True in `mask` as (first index, one past last index) arrays, found with np.diff."""
    change = np.flatnonzero(np.diff(mask)) + 1       # np.diff of bools: True where it flips
    if mask.size and mask[0]:
        change = np.concatenate(([0], change))
    if mask.size and mask[-1]:
        change = np.concatenate((change, [mask.size]))
    return change[0::2], change[1::2]


def edge_times(time: np.ndarray, start: np.ndarray,
               end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Times of the rising and falling edges: half-way between samples, or the trace's ends."""
    n = time.size
    t_start = np.where(start == 0, time[0], (time[start - 1] + time[start]) / 2)
    after = np.minimum(end, n - 1)
    t_end = np.where(end == n, time[-1], (time[end - 1] + time[after]) / 2)
    return t_start, t_end


def trapezoid_weights(time: np.ndarray) -> np.ndarray:
    """Time each sample stands for: (t[k+1] - t[k-1]) / 2, half intervals at both ends."""
    w = np.empty_like(time)
    if time.size == 1:
        w[0] = 0.0
        return w
    w[1:-1] = (time[2:] - time[:-2]) / 2
    w[0] = (time[1] - time[0]) / 2
    w[-1] = (time[-1] - time[-2]) / 2
    return w


def run_sums(ufunc: np.ufunc, values: np.ndarray, start: np.ndarray,
             end: np.ndarray) -> np.ndarray:
    """`ufunc` reduced over each run values[start[i]:end[i]] (runs disjoint, increasing, not empty).

    One `reduceat` over the bounds start0, end0, start1, …; every other result is a gap.
    """
    bounds = np.column_stack((start, end)).ravel()
    if bounds[-1] == values.size:          # reduceat runs the last bound to the end by itself
        bounds = bounds[:-1]
    return ufunc.reduceat(values, bounds)[0::2]


def run_integrals(values: np.ndarray, start: np.ndarray, end: np.ndarray, dt: float | None,
                  weights: np.ndarray | None) -> np.ndarray:
    """Trapezoid-weighted integral of `values` over each run.

    Uniform step `dt`: dt * sum, minus half a step at the trace's first and last sample.
    Otherwise (dt None) the per-sample `weights` from `trapezoid_weights`.
    """
    if dt is None:
        assert weights is not None
        return run_sums(np.add, values * weights, start, end)
    n = values.size
    ends = np.where(start == 0, values[0], 0.0) + np.where(end == n, values[-1], 0.0)
    return dt * (run_sums(np.add, values, start, end) - ends / 2)


def find_pulses(time: np.ndarray, current: np.ndarray, threshold: float, *, min_width: float = 0.0,
                dt: float | None, voltage: float | np.ndarray,
                weights: np.ndarray | None = None, power: np.ndarray | None = None) -> Pulses:
    """Pulses where `current > threshold`, keeping those lasting at least `min_width` seconds.

    `dt` is the uniform time step, or None with `weights` (see `trapezoid_weights`) otherwise.
    `voltage` is a constant (energy = V * charge) or an array; then `power` must be I*V.
    """
    start, end = edges(current > threshold)
    if start.size == 0:
        empty = np.zeros(0)
        return Pulses(empty, empty, empty, empty, empty, start, end)
    t_start, t_end = edge_times(time, start, end)
    charge = run_integrals(current, start, end, dt, weights)
    if power is None:
        energy = float(voltage) * charge
    else:
        energy = run_integrals(power, start, end, dt, weights)
    peak = run_sums(np.maximum, current, start, end)
    if min_width > 0:
        # relative slack so that a pulse of exactly N samples passes min_width = N / rate
        keep = np.flatnonzero((t_end - t_start) >= min_width * (1 - 1e-9))
        t_start, t_end, peak, charge, energy, start, end = (
            x[keep] for x in (t_start, t_end, peak, charge, energy, start, end))
    return Pulses(t_start, t_end, peak, charge, energy, start, end)
