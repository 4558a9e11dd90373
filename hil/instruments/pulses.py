"""Pulse detection on a sampled current: where it stays above a threshold, and what each burst cost.

Pure numpy, no loop over samples: one streaming pass compares a cache-sized chunk with the
threshold and finds where that mask flips (`runs_above`), then per-pulse sums come from
`np.add.reduceat` over the pulse samples alone. `PowerTrace.pulses()` is the usual way in;
`find_pulses()` is the kernel.

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


#: Samples compared per step by `runs_above` (its two bool buffers stay in the L2 cache).
RUN_CHUNK = 1 << 19
#: Runs are packed as rows padded to the longest when that copies at most this many times
#: the run samples.
PADDED_ROWS = 1.25
#: Otherwise runs at least this long on average are packed by joining slices (a Python step
#: per run), shorter ones by a gather index (a few array steps per sample).
SLICED_RUNS = 64


def sparse_flatnonzero(mask: np.ndarray) -> np.ndarray:
    """np.flatnonzero of a 1-D bool array whose length is a multiple of 8, much faster when few
    are set: the nonzero 8-byte words are found first, then the set bytes among those alone."""
    words = mask.view(np.uint64)
    nonzero = np.flatnonzero(words != 0)
    sub = np.flatnonzero(words[nonzero].view(np.bool_))
    return nonzero[sub >> 3] * 8 + (sub & 7)


def runs_above(values: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Runs where values > threshold as (first index, one past last index) arrays: what
    `edges(values > threshold)` gives, in one chunked pass without the whole-trace mask."""
    n = values.size
    chunk = min(RUN_CHUNK, n)
    state = np.zeros(chunk + 1, dtype=bool)     # state[0]: was the sample before the chunk above?
    flips = np.zeros(-(-chunk // 8) * 8, dtype=bool)
    parts: list[np.ndarray] = []
    for i in range(0, n, chunk):
        c = values[i:i + chunk]
        m = c.size
        above = state[1:m + 1]
        np.greater(c, threshold, out=above)
        np.not_equal(above, state[:m], out=flips[:m])   # sample i+j starts or ends a run
        flips[m:] = False
        found = sparse_flatnonzero(flips)
        if found.size:
            parts.append(found + i)
        state[0] = above[m - 1]
    change = np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)
    if state[0]:                                 # still above at the end
        change = np.append(change, n)
    return change[0::2], change[1::2]


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


class _Runs:
    """Reduce an array of `n` samples over each run [start, end) with `ufunc.reduceat`.

    When the runs cover less than half the trace, the run samples are packed first, so the
    reduction reads only them instead of every gap between them too. How, depends on the runs:
    runs of about the same length (pulses usually are) are copied whole as equal rows of a
    window view, a row per run padded to the longest (numpy copies them; the reduction skips
    the padding); other long runs by joining slices (a Python step per run); short ones by
    gathering at an index of every run sample.
    """

    def __init__(self, n: int, start: np.ndarray, end: np.ndarray) -> None:
        self.start, self.end, self.n = start, end, n
        lengths = end - start
        total = int(lengths.sum())
        self.rows = 0                             # run row width when packed as rows
        self.first: np.ndarray | None = None      # first sample of each row
        self.slices: list[slice] | None = None
        self.take: np.ndarray | None = None
        self.packed = 2 * total < n
        if not self.packed:
            self._interleave(start, end, n)
            return
        width = int(lengths.max())
        if width * start.size <= PADDED_ROWS * total:
            self.rows = width
            self.first = np.minimum(start, n - width)      # rows stay inside the array
            at = start - self.first + np.arange(start.size) * width
            self._interleave(at, at + lengths, width * start.size)
            return
        self.index = np.cumsum(lengths) - lengths     # where each run starts once packed
        self.every = 1
        if total >= SLICED_RUNS * start.size:
            self.slices = list(map(slice, start.tolist(), end.tolist()))
        else:
            self.take = np.arange(total) + np.repeat(start - self.index, lengths)

    def _interleave(self, start: np.ndarray, end: np.ndarray, size: int) -> None:
        """reduceat indices start0, end0, start1, ... (every other result is a gap)."""
        self.index = np.empty(2 * start.size, dtype=np.intp)
        self.index[0::2], self.index[1::2] = start, end
        if self.index[-1] == size:   # reduceat runs the last index to the end by itself
            self.index = self.index[:-1]
        self.every = 2

    def pack(self, values: np.ndarray) -> np.ndarray:
        """What `reduce` wants: only the run samples when packing pays, else all of them."""
        if self.first is not None:
            step = values.strides[0]
            windows = np.lib.stride_tricks.as_strided(
                values, shape=(self.n - self.rows + 1, self.rows), strides=(step, step),
                writeable=False)
            return windows[self.first].ravel()
        if self.slices is not None:
            return np.concatenate(list(map(values.__getitem__, self.slices)))
        return values if self.take is None else values.take(self.take)

    def reduce(self, ufunc: np.ufunc, packed: np.ndarray) -> np.ndarray:
        """`ufunc` over each run of `pack(values)`."""
        result = ufunc.reduceat(packed, self.index)
        return result if self.every == 1 else result[0::2]

    def integral(self, values: np.ndarray, dt: float | None, weights: np.ndarray | None,
                 packed: np.ndarray | None = None) -> np.ndarray:
        """Trapezoid-weighted integral of `values` over each run (`packed` = pack(values) if known).

        Uniform step `dt`: dt * sum, minus half a step at the trace's first and last sample.
        Otherwise (dt None) the per-sample `weights` from `trapezoid_weights`.
        """
        if dt is None:
            assert weights is not None
            return self.reduce(np.add, self.pack(values * weights))
        if packed is None:
            packed = self.pack(values)
        n = values.size
        ends = (np.where(self.start == 0, values[0], 0.0)
                + np.where(self.end == n, values[-1], 0.0))
        return dt * (self.reduce(np.add, packed) - ends / 2)


def find_pulses(time: np.ndarray, current: np.ndarray, threshold: float, *, min_width: float = 0.0,
                dt: float | None, voltage: float | np.ndarray,
                weights: np.ndarray | None = None, power: np.ndarray | None = None) -> Pulses:
    """Pulses where `current > threshold`, keeping those lasting at least `min_width` seconds.

    `dt` is the uniform time step, or None with `weights` (see `trapezoid_weights`) otherwise.
    `voltage` is a constant (energy = V * charge) or an array; then `power` must be I*V.
    """
    start, end = runs_above(current, threshold)
    if start.size == 0:
        empty = np.zeros(0)
        return Pulses(empty, empty, empty, empty, empty, start, end)
    t_start, t_end = edge_times(time, start, end)
    runs = _Runs(current.size, start, end)
    packed = runs.pack(current)
    charge = runs.integral(current, dt, weights, packed)
    energy = float(voltage) * charge if power is None else runs.integral(power, dt, weights)
    peak = runs.reduce(np.maximum, packed)
    if min_width > 0:
        # relative slack so that a pulse of exactly N samples passes min_width = N / rate
        keep = np.flatnonzero((t_end - t_start) >= min_width * (1 - 1e-9))
        t_start, t_end, peak, charge, energy, start, end = (
            x[keep] for x in (t_start, t_end, peak, charge, energy, start, end))
    return Pulses(t_start, t_end, peak, charge, energy, start, end)
