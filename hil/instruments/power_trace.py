"""`PowerTrace`: what a power capture hands a test: numpy time, current, voltage, and analysis.

Times are seconds on the trace's own axis (0 at the first sample of the capture); `t0` is the
`hil.clock.now()` time of that 0, so console marks and expect matches (same clock) can be placed
on the trace with `between()`. Windows are views sharing the parent's arrays and time axis.

Integrals (charge, energy) use the trapezoid rule and are exact for piecewise-linear signals on
any time axis; a uniform axis (the normal case) is detected once, in the same pass that checks
time increases, and then makes them a single sum. Nothing here loops over samples in Python.

The trace does not copy the arrays it is given: do not modify them afterwards.
"""
from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from hil.errors import ValidationError
from hil.instruments.pulses import (Pulse, Pulses, find_pulses, sparse_flatnonzero,
                                    trapezoid_weights)

__all__ = ["BatteryLife", "PowerTrace", "Pulse", "Pulses", "format_si"]

#: Spacings within this relative spread of their mean count as a uniform time axis.
UNIFORM_RTOL = 1e-6
#: Samples processed per step by the streaming passes (fits the L2 cache).
CHUNK = 1 << 16
#: Rows per write in `to_csv`.
CSV_CHUNK = 1 << 16
#: Up to this many samples, percentiles use a plain np.partition of a copy.
PARTITION_BELOW = 1 << 19
#: Columns of the min/max envelope a plot draws (a 10M-sample trace is decimated to this).
PLOT_COLUMNS = 2000
#: Random samples used to bracket each quantile on large traces.
QUANTILE_SAMPLE = 1 << 16
#: Half-width of each bracket in standard deviations of the sample's rank (binomial); a miss
#: costs a second pass with twice the margin.
QUANTILE_SIGMAS = 3.0
#: Chunks of the percentile pass whose bracketed values are gathered at once.
GATHER = 4
HOURS_PER_YEAR = 365.25 * 24

TimeLike = Any
"""A clock time: a float of `hil.clock.now()`, an object with such a `.time` (a console mark,
an expect match), or the name of one of the trace's `marks`."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class BatteryLife:
    """How long a battery lasts at a trace's average current.

    hours = capacity_mah * derating / (average current in mA + self-discharge in mA), where the
    self-discharge is a constant drain of `self_discharge` × capacity per year.
    """

    hours: float
    capacity_mah: float
    average_current: float   #: A, the trace's time-averaged current
    derating: float
    self_discharge: float    #: fraction of the nominal capacity lost per year

    @property
    def days(self) -> float:
        return self.hours / 24

    @property
    def years(self) -> float:
        return self.hours / HOURS_PER_YEAR

    @property
    def timedelta(self) -> datetime.timedelta:
        """As a `datetime.timedelta` (`timedelta.max` when the drain is zero)."""
        if not math.isfinite(self.hours) or self.days >= datetime.timedelta.max.days:
            return datetime.timedelta.max
        return datetime.timedelta(hours=self.hours)

    def __str__(self) -> str:
        return (f"{self.days:.4g} days ({self.hours:.4g} h) on {self.capacity_mah:g} mAh at "
                f"{format_si(self.average_current, 'A')} average, derating {self.derating:g}, "
                f"self-discharge {self.self_discharge:.3g}/year")


# --------------------------------------------------------------------------- the trace


class PowerTrace:
    """A power capture: `time` (s from t0), `current` (A), `voltage` (V), and what they add up to.

    `voltage` may be an array or a constant supply voltage. `marks` name absolute clock times
    (e.g. GPIO edges or console events the driver recorded) for `between()` and `plot()`.
    Raises ValidationError for empty, mismatched, non-finite or non-increasing input.
    """

    def __init__(self, time: np.ndarray, current: np.ndarray, voltage: np.ndarray | float,
                 t0: float = 0.0, marks: Mapping[str, float] | None = None,
                 name: str = "") -> None:
        self.name = name
        self.t0 = float(t0)
        self._time = _readonly(_as_1d("time", time))
        self._current = _readonly(_as_1d("current", current))
        n = self._time.size
        if n == 0:
            raise ValidationError(f"power trace {name!r} is empty: no samples")
        if self._current.size != n:
            raise ValidationError(
                f"power trace {name!r}: current has {self._current.size} samples but time has {n}")
        self._sum: float | None = _checked_sum("current", self._current, self._time)
        self._voltage: np.ndarray | float = _checked_voltage(voltage, self._time)
        self._dt: float | None = _scan_time(self._time)   # the step when uniform, else None
        self.marks = {str(k): _clock_value(v) for k, v in (marks or {}).items()}
        self._power: np.ndarray | None = None
        self._weights: np.ndarray | None = None

    @classmethod
    def from_samples(cls, current: np.ndarray, sample_rate: float,
                     voltage: np.ndarray | float, t0: float = 0.0,
                     marks: Mapping[str, float] | None = None, name: str = "") -> PowerTrace:
        """A trace sampled every 1/sample_rate seconds from t0 (what an Otii channel delivers)."""
        if not sample_rate > 0:
            raise ValidationError(f"sample_rate must be > 0, got {sample_rate}")
        current = np.asarray(current, dtype=np.float64)
        time = np.arange(current.size, dtype=np.float64) / float(sample_rate)
        return cls(time, current, voltage, t0=t0, marks=marks, name=name)

    def _view(self, i0: int, i1: int) -> PowerTrace:
        """Samples [i0, i1) as a trace sharing this one's arrays, time axis, t0 and marks."""
        view = object.__new__(PowerTrace)
        view.name, view.t0, view.marks = self.name, self.t0, self.marks
        view._time, view._current = self._time[i0:i1], self._current[i0:i1]
        v = self._voltage
        view._voltage = v if isinstance(v, float) else v[i0:i1]
        view._sum = None
        view._dt = 0.0 if i1 - i0 == 1 else self._dt
        view._power = None if self._power is None else self._power[i0:i1]
        view._weights = None   # a window's end samples weigh half: not a slice of the parent's
        return view

    # ---- arrays and sizes

    @property
    def time(self) -> np.ndarray:
        """Sample times, s, relative to `t0` (read-only)."""
        return self._time

    @property
    def current(self) -> np.ndarray:
        """Current, A (read-only)."""
        return self._current

    @property
    def voltage(self) -> np.ndarray:
        """Voltage, V, always an array (a constant supply is broadcast, not copied)."""
        if isinstance(self._voltage, float):
            return np.broadcast_to(self._voltage, self._current.shape)
        return self._voltage

    @property
    def power(self) -> np.ndarray:
        """Power I·V, W, computed on first use and kept."""
        if self._power is None:
            self._power = _readonly(self._current * self._voltage)
        return self._power

    @property
    def absolute_time(self) -> np.ndarray:
        """Sample times on the `hil.clock.now()` clock (a new array)."""
        return self.t0 + self._time

    @property
    def start(self) -> float:
        """Clock time of the first sample."""
        return self.t0 + float(self._time[0])

    @property
    def end(self) -> float:
        """Clock time of the last sample."""
        return self.t0 + float(self._time[-1])

    @property
    def duration(self) -> float:
        """s from the first to the last sample."""
        return float(self._time[-1] - self._time[0])

    @property
    def uniform(self) -> bool:
        """True when samples are evenly spaced (within UNIFORM_RTOL)."""
        return self._dt is not None

    @property
    def sample_rate(self) -> float:
        """Hz: 1/step when uniform, else the mean rate; NaN for a single sample."""
        if len(self) < 2:
            return math.nan
        return (len(self) - 1) / self.duration

    def __len__(self) -> int:
        return self._time.size

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name else ""
        return (f"PowerTrace({name}{format_si(self.duration, 's')}, {len(self)} samples @ "
                f"{format_si(self.sample_rate, 'Hz')}, mean {format_si(self.mean(), 'A')})")

    # ---- selecting

    def window(self, t_start: float, t_end: float, *, clip: bool = False) -> PowerTrace:
        """Samples with t_start <= time <= t_end (s on this trace's axis), as a view.

        The window must lie within the trace (give or take one sample interval) unless `clip`.
        """
        return self._select(float(t_start), float(t_end), clip,
                            f"window [{t_start:.6g}, {t_end:.6g}] s")

    def between(self, mark_a: TimeLike, mark_b: TimeLike, *, clip: bool = False) -> PowerTrace:
        """Samples between two clock times: marks/matches with `.time`, clock floats or mark names.

        Epoch-second floats resolve ~0.2 µs, so a sample within a few of their ulps of a mark
        counts as inside (far less than any sample interval).
        """
        a, b = self.clock_time(mark_a), self.clock_time(mark_b)
        what = (f"between {_describe(mark_a)} and {_describe(mark_b)} "
                f"(= [{a - self.t0:.6g}, {b - self.t0:.6g}] s after t0 {self.t0:.6f})")
        ulps = 4 * float(np.spacing(max(abs(a), abs(b), abs(self.t0))))
        return self._select(a - self.t0 - ulps, b - self.t0 + ulps, clip, what)

    def clock_time(self, when: TimeLike) -> float:
        """A `hil.clock` time from a float, an object with `.time`, or the name of a mark."""
        if isinstance(when, str):
            if when not in self.marks:
                raise ValidationError(f"power trace {self.name!r} has no mark {when!r} "
                                      f"(marks: {', '.join(self.marks) or 'none'})")
            return self.marks[when]
        return _clock_value(when)

    def _select(self, t_start: float, t_end: float, clip: bool, what: str) -> PowerTrace:
        t = self._time
        covers = (f"the trace covers [{t[0]:.6g}, {t[-1]:.6g}] s ({len(self)} samples, "
                  f"clock {self.start:.6f} .. {self.end:.6f})")
        if not t_end >= t_start:
            raise ValidationError(f"{what}: the window ends before it starts; {covers}")
        slack = 0.0 if len(self) < 2 else self.duration / (len(self) - 1)
        if not clip and (t_start < t[0] - slack or t_end > t[-1] + slack):
            raise ValidationError(f"{what} reaches outside the trace; {covers}")
        i0 = int(np.searchsorted(t, t_start, side="left"))
        i1 = int(np.searchsorted(t, t_end, side="right"))
        if i1 <= i0:
            raise ValidationError(f"{what} contains no samples; {covers}")
        return self._view(i0, i1)

    # ---- statistics of the current (A)

    def mean(self) -> float:
        """Mean of the current samples, A (what `current.mean()` gives)."""
        if self._sum is None:
            self._sum = float(np.sum(self._current))
        return self._sum / len(self)

    def std(self) -> float:
        """Standard deviation of the current samples (population, ddof=0), A."""
        return float(np.std(self._current))

    def min(self) -> float:
        """Lowest current sample, A."""
        return float(np.min(self._current))

    def max(self) -> float:
        """Highest current sample, A."""
        return float(np.max(self._current))

    @overload
    def percentile(self, q: float) -> float: ...
    @overload
    def percentile(self, q: Sequence[float] | np.ndarray) -> np.ndarray: ...

    def percentile(self, q: float | Sequence[float] | np.ndarray) -> float | np.ndarray:
        """Current percentile(s), A, as np.percentile (linear interpolation); q in 0..100.

        Several quantiles cost about one: see `order_statistics`.
        """
        qs = np.asarray(q, dtype=np.float64)
        if qs.size == 0 or not np.all((qs >= 0) & (qs <= 100)):
            raise ValidationError(f"percentile q must be within 0..100, got {q!r}")
        pos = qs.ravel() / 100 * (len(self) - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, len(self) - 1)
        ranks = np.unique(np.concatenate((lo, hi)))
        values = order_statistics(self._current, ranks)
        a, b = values[np.searchsorted(ranks, lo)], values[np.searchsorted(ranks, hi)]
        frac = pos - lo
        out = np.where(frac >= 0.5, b - (b - a) * (1 - frac), a + (b - a) * frac)
        return float(out[0]) if qs.ndim == 0 else out.reshape(qs.shape)

    # ---- integrals

    def charge(self) -> float:
        """Charge drawn, C (= A·s): trapezoid of current over time."""
        return self._integrate(self._current, self._sum)

    def charge_mah(self) -> float:
        """Charge drawn, mAh."""
        return self.charge() / 3.6

    def energy(self) -> float:
        """Energy, J: trapezoid of power over time (V·charge for a constant voltage)."""
        if isinstance(self._voltage, float):
            return self._voltage * self.charge()
        return self._integrate(self.power, None)

    def average_current(self) -> float:
        """Time-weighted mean current, A (charge / duration); the sample's value if only one."""
        return self.charge() / self.duration if len(self) > 1 else float(self._current[0])

    def average_power(self) -> float:
        """Time-weighted mean power, W (energy / duration)."""
        return self.energy() / self.duration if len(self) > 1 else float(self.power[0])

    def _integrate(self, y: np.ndarray, y_sum: float | None) -> float:
        """Trapezoid of y over time; `y_sum` = sum(y) when already known."""
        if len(self) < 2:
            return 0.0
        if self._dt is None:
            return float(np.trapezoid(y, self._time))
        if y_sum is None:
            y_sum = float(np.sum(y))
        return self._dt * (y_sum - (float(y[0]) + float(y[-1])) / 2)

    # ---- pulses and battery

    def pulses(self, threshold: float, min_width: float = 0.0) -> Pulses:
        """Bursts where current > threshold (A) lasting at least min_width (s); see `pulses.py`."""
        constant_v = isinstance(self._voltage, float)
        if self._dt is None and self._weights is None:
            self._weights = trapezoid_weights(self._time)
        return find_pulses(self._time, self._current, float(threshold), min_width=min_width,
                           dt=self._dt, weights=self._weights, voltage=self._voltage,
                           power=None if constant_v else self.power)

    def battery_life(self, capacity_mah: float, derating: float = 1.0,
                     self_discharge: float = 0.0) -> BatteryLife:
        """Battery life at this trace's average current.

        `derating` (0..1] is the usable fraction of the nominal capacity (cut-off voltage,
        temperature, ageing; 0.7–0.85 is common). `self_discharge` is the fraction of capacity
        the cell loses per year on its own (Li-SOCl2 ~0.01, Li-ion ~0.3), modelled as a
        constant extra drain.
        """
        if not capacity_mah > 0:
            raise ValidationError(f"battery capacity must be > 0 mAh, got {capacity_mah}")
        if not 0 < derating <= 1:
            raise ValidationError(f"derating must be in (0, 1], got {derating}")
        if not self_discharge >= 0:
            raise ValidationError(f"self_discharge must be >= 0 per year, got {self_discharge}")
        average = self.average_current()
        drain_ma = max(average, 0.0) * 1e3 + capacity_mah * self_discharge / HOURS_PER_YEAR
        hours = math.inf if drain_ma == 0 else capacity_mah * derating / drain_ma
        return BatteryLife(hours, float(capacity_mah), average, float(derating),
                           float(self_discharge))

    # ---- reports

    def summary(self) -> dict[str, Any]:
        """The main figures as plain floats, keys suffixed with their unit (for reports/JSON)."""
        p50, p90, p99 = (float(v) for v in self.percentile([50, 90, 99]))
        return {
            "name": self.name, "t0": self.t0, "samples": len(self),
            "duration_s": self.duration, "sample_rate_hz": self.sample_rate,
            "mean_a": self.mean(), "std_a": self.std(), "min_a": self.min(), "max_a": self.max(),
            "p50_a": p50, "p90_a": p90, "p99_a": p99,
            "average_current_a": self.average_current(), "charge_c": self.charge(),
            "charge_mah": self.charge_mah(), "energy_j": self.energy(),
            "average_power_w": self.average_power(),
        }

    def to_csv(self, path: str | Path) -> Path:
        """Write `time_s,current_a,voltage_v` rows, streamed in chunks (fine for 10M samples)."""
        path = Path(path)
        row = "%.12g,%.9g,%.9g\n"
        with path.open("w", encoding="ascii", newline="") as fh:
            fh.write("time_s,current_a,voltage_v\n")
            volts = self.voltage
            for i in range(0, len(self), CSV_CHUNK):
                j = min(i + CSV_CHUNK, len(self))
                block = np.column_stack((self._time[i:j], self._current[i:j], volts[i:j]))
                fh.write((row * (j - i)) % tuple(block.ravel().tolist()))
        return path

    def plot(self, path: str | Path, marks: Mapping[str, TimeLike] | None = None, *,
             log: bool = False, title: str | None = None) -> Path:
        """PNG of current vs time, with this trace's marks and `marks` as labelled vertical lines.

        `log=True` for a log current axis (sleep µA and radio mA on one plot).
        """
        from matplotlib.figure import Figure         # imported late: it takes a while to load
        from matplotlib.ticker import FuncFormatter

        path = Path(path)
        t, low, high = _envelope(self._time, self._current, PLOT_COLUMNS)
        t_scale, t_prefix = si_scale(min(self.duration or 1.0, 1.0))      # s, ms or µs
        x = np.repeat(t * t_scale, 2)                  # one vertical stroke min..max per column
        y = np.column_stack((low, high)).ravel()
        fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")   # Agg canvas, no pyplot
        ax = fig.add_subplot()
        if log:
            ax.plot(x, y, linewidth=0.8)
            ax.set_yscale("log", nonpositive="mask")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_si(v, "A", 3)))
            ax.set_ylabel("current")
        else:
            c_scale, c_prefix = si_scale(float(np.max(np.abs(y))) or 1.0)
            ax.plot(x, y * c_scale, linewidth=0.8)
            ax.set_ylabel(f"current [{c_prefix}A]")
        ax.set_xlabel(f"time [{t_prefix}s] after t0")
        extra = {k: self.clock_time(v) for k, v in (marks or {}).items()}
        for label, at in _marks_in({**self.marks, **extra}.items(), self.t0, t[0], t[-1]):
            ax.axvline(at * t_scale, color="tab:red", linewidth=1, linestyle="--")
            ax.text(at * t_scale, 0.98, f" {label}", transform=ax.get_xaxis_transform(),
                    rotation=90, va="top", ha="right", fontsize=8, color="tab:red",
                    bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(title or f"{self.name or 'power trace'}: {format_si(self.duration, 's')}, "
                              f"mean {format_si(self.mean(), 'A')}, {len(self)} samples")
        fig.savefig(path, format="png")
        return path


# --------------------------------------------------------------------------- order statistics


def order_statistics(a: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Exact values at sorted positions `ranks` of `a` (i.e. np.sort(a)[ranks]) without a sort.

    Small arrays: one np.partition of a copy. Large ones: a random sample brackets each rank
    between two values; one streaming pass counts the samples below each bracket and collects
    the few inside (`_collect`); a partition of those finds the answer. A rank whose bracket
    missed it (the margin is QUANTILE_SIGMAS standard deviations: about 1 call in 100 with
    three brackets) gets a second pass with twice the margin, and should that miss too, a
    partition of everything: the result is always exact.
    """
    ranks = np.asarray(ranks, dtype=np.intp)
    if a.size <= PARTITION_BELOW:
        return np.partition(a, ranks)[ranks]
    out = np.empty(ranks.size)
    todo = np.arange(ranks.size)
    for sigmas in (QUANTILE_SIGMAS, 2 * QUANTILE_SIGMAS):
        values, ok = _bracketed(a, ranks[todo], sigmas)
        out[todo[ok]] = values[ok]
        todo = todo[~ok]
        if todo.size == 0:
            return out
    out[todo] = np.partition(a, ranks[todo])[ranks[todo]]
    return out


def _bracketed(a: np.ndarray, ranks: np.ndarray,
               sigmas: float) -> tuple[np.ndarray, np.ndarray]:
    """(values, ok): the order statistics at `ranks` whose bracket held them (ok)."""
    brackets = _brackets(a, ranks, sigmas)
    below, found, inside = _collect(a, [(lo, hi) for lo, hi, _ in brackets])
    # in sorted order, bracket j's values come right after the earlier brackets' values
    before = np.concatenate(([0], np.cumsum(inside)[:-1]))
    local = np.zeros(ranks.size, dtype=np.intp)
    ok = np.zeros(ranks.size, dtype=bool)
    for (_, _, which), n_below, n_inside, n_before in zip(brackets, below, inside, before):
        at = ranks[which] - n_below
        held = (at >= 0) & (at < n_inside)
        local[which] = np.where(held, at + n_before, 0)
        ok[which] = held
    values = np.zeros(ranks.size)
    if found.size:
        values[ok] = _select(found, local[ok])
    return values, ok


def _select(values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """np.sort(values)[ranks] by single-rank partitions (numpy's fast path; several ranks at
    once take its slow one), each of what lies above the previous rank. A rank right after
    the previous one (percentile interpolation) is just the minimum of that."""
    wanted = np.unique(ranks)
    found = np.empty(wanted.size)
    rest, first = values, 0            # rest holds the values of sorted ranks first, first + 1...
    for i, r in enumerate(wanted.tolist()):
        j = r - first
        if j == 0:                     # nothing to drop below it: no partition needed
            found[i] = rest.min()
            continue
        rest = np.partition(rest, j)
        found[i] = rest[j]
        rest, first = rest[j + 1:], r + 1
    return found[np.searchsorted(wanted, ranks)]


def _brackets(a: np.ndarray, ranks: np.ndarray,
              sigmas: float = QUANTILE_SIGMAS) -> list[tuple[float, float, np.ndarray]]:
    """(low, high, which ranks) value brackets from a sorted random sample, overlaps merged:
    each reaches `sigmas` standard deviations of the sample rank (binomial) either side."""
    n = a.size
    m = min(QUANTILE_SAMPLE, n)
    block = n // m                       # stratified: one random pick in each block of samples
    picks = np.arange(m) * block + np.random.default_rng(0x5EED).integers(0, block, m)
    sample = np.sort(a[picks])
    p = ranks / (n - 1)
    centre = p * (m - 1)
    margin = sigmas * np.sqrt(m * p * (1 - p)) + 2
    i_lo = np.floor(centre - margin).astype(np.intp)
    i_hi = np.ceil(centre + margin).astype(np.intp)
    lo = np.where(i_lo < 0, -np.inf, sample[np.clip(i_lo, 0, m - 1)])
    hi = np.where(i_hi >= m, np.inf, sample[np.clip(i_hi, 0, m - 1)])
    merged: list[tuple[float, float, list[int]]] = []
    for k in np.argsort(lo, kind="stable"):
        if merged and lo[k] <= merged[-1][1]:
            m_lo, m_hi, members = merged[-1]
            merged[-1] = (m_lo, max(m_hi, float(hi[k])), members + [int(k)])
        else:
            merged.append((float(lo[k]), float(hi[k]), [int(k)]))
    return [(l, h, np.array(w, dtype=np.intp)) for l, h, w in merged]


def _collect(a: np.ndarray, bounds: list[tuple[float, float]]
             ) -> tuple[list[int], np.ndarray, list[int]]:
    """For disjoint, increasing brackets (lo, hi): how many values lie below each bracket, the
    values inside the brackets (in no particular order) and how many of those are in each (the
    brackets are [lo, hi] rounded outwards to float32 when the keys are float32, see below).

    One streaming pass, a cache-sized chunk at a time: the chunk is converted once to the keys
    that are compared (float32 when `_float32_bounds` finds that exact, else the float64 values),
    one call compares it with every lower bound and one with every upper bound, the lower-bound
    rows are added up as bytes in 64-bit words (counted out before a byte can overflow), and
    the XOR of all rows marks the values inside some bracket (brackets are disjoint, so a value
    inside one is below an odd number of bounds). Those marks are gathered every GATHER chunks with
    `sparse_flatnonzero` and the float64 values taken out, while they are still in cache.

    float32 keys are exact because rounding to float32 never reverses the order of two values:
    {x : float32(x) < L} is then all the values below some point and {x : L <= float32(x) <= H}
    the run of values right after them, so counting and collecting by the keys still splits the
    sorted array exactly at a rank; the float64 values collected are then partitioned.
    """
    k = len(bounds)
    lo = np.array([b[0] for b in bounds], dtype=np.float64)
    hi = np.array([b[1] for b in bounds], dtype=np.float64)
    keyed = _float32_bounds(lo, hi)
    if keyed is not None:
        lo, hi = keyed
    chunk = CHUNK
    keys = np.empty(chunk, dtype=lo.dtype) if keyed is not None else None
    lo_col, hi_col = lo[:, None], hi[:, None]
    rows = np.zeros((2 * k, chunk), dtype=bool)
    lt, le = rows[:k], rows[k:]
    span = chunk * GATHER
    union = np.zeros(-(-span // 8) * 8, dtype=bool)       # whole words for sparse_flatnonzero
    cuts = [union[g * chunk:(g + 1) * chunk] for g in range(GATHER)]
    # the lt rows are summed as bytes in 64-bit words, each byte counting up to 255 chunks
    tally = np.zeros((k, chunk // 8), dtype=np.uint64) if chunk % 8 == 0 else None
    lt_words = lt.view(np.uint64) if tally is not None else None
    below = np.zeros(k, dtype=np.int64)
    parts: list[np.ndarray] = []
    n = a.size
    full = n - n % chunk
    tallied = 0
    with np.errstate(over="ignore"):                       # huge values become float32 inf
        for s in range(0, full, span):
            e = min(s + span, full)
            for g, i in enumerate(range(s, e, chunk)):
                x = a[i:i + chunk]
                if keys is not None:
                    np.copyto(keys, x, casting="same_kind")
                    x = keys
                np.less(x, lo_col, out=lt)
                np.less_equal(x, hi_col, out=le)
                if tally is not None:
                    np.add(tally, lt_words, out=tally)
                else:
                    below += np.count_nonzero(lt, axis=1)
                np.logical_xor.reduce(rows, axis=0, out=cuts[g])
            if tally is not None:
                tallied += (e - s) // chunk
                if tallied > 255 - GATHER:                 # before a byte can overflow
                    below += _byte_sums(tally)
                    tally.fill(0)
                    tallied = 0
            parts.append(_marked(a, s, e, union))
        if tally is not None:
            below += _byte_sums(tally)
        if full < n:                                       # the last, shorter chunk
            x = a[full:]
            if keys is not None:
                x = x.astype(np.float32)
            r = rows[:, :n - full]
            np.less(x, lo_col, out=r[:k])
            np.less_equal(x, hi_col, out=r[k:])
            below += np.count_nonzero(r[:k], axis=1)
            np.logical_xor.reduce(r, axis=0, out=union[:n - full])
            parts.append(_marked(a, full, n, union))
        found = np.concatenate(parts)
        fkeys = found if keys is None else found.astype(np.float32)
    at_most = [int(np.count_nonzero(fkeys <= h)) for h in hi]
    return [int(b) for b in below], found, np.diff(at_most, prepend=0).tolist()


def _marked(a: np.ndarray, s: int, e: int, union: np.ndarray) -> np.ndarray:
    """The values a[s:e] marked in union[:e - s] (the rest of its last word cleared first)."""
    used = -(-(e - s) // 8) * 8
    union[e - s:used] = False
    return a[s:e].take(sparse_flatnonzero(union[:used]))


def _byte_sums(tally: np.ndarray) -> np.ndarray:
    """Per row, the sum of all the bytes of a (rows, words) uint64 array."""
    return tally.view(np.uint8).reshape(tally.shape[0], -1).sum(axis=1, dtype=np.int64)


def _float32_bounds(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """float32 bounds holding the float64 brackets [lo, hi] (lo rounded down, hi up), or None
    when float32 is too coarse for them (exact either way, but slower: more values would fall
    inside): rounding moves a bound by more than 2**-20 of its size (past float32's range, deep
    in its subnormals), a bracket more than doubles in width, or rounded brackets touch."""
    with np.errstate(over="ignore"):
        lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    lo32 = np.where(lo32 > lo, np.nextafter(lo32, np.float32(-np.inf)), lo32)
    hi32 = np.where(hi32 < hi, np.nextafter(hi32, np.float32(np.inf)), hi32)
    with np.errstate(invalid="ignore"):                    # inf - inf for unbounded sides
        slack_lo = np.where(np.isinf(lo), 0.0, lo - lo32.astype(np.float64))
        slack_hi = np.where(np.isinf(hi), 0.0, hi32.astype(np.float64) - hi)
    finite = np.isfinite(lo) & np.isfinite(hi)
    scale = np.maximum(np.where(np.isinf(lo), 0.0, np.abs(lo)),
                       np.where(np.isinf(hi), 0.0, np.abs(hi)))
    ok = (np.all(np.isfinite(slack_lo) & np.isfinite(slack_hi))
          and np.all(slack_lo + slack_hi <= scale * 2.0 ** -20)
          and np.all(~finite | (slack_lo + slack_hi <= hi - lo))
          and np.all(lo32[1:] > hi32[:-1]))
    return (lo32, hi32) if ok else None


# --------------------------------------------------------------------------- helpers


def format_si(value: float, unit: str, digits: int = 4) -> str:
    """`value` with an SI prefix: format_si(4.2e-6, 'A') == '4.2 µA'."""
    if not math.isfinite(value) or value == 0:
        return f"{value:g} {unit}"
    scale, prefix = si_scale(abs(value))
    return f"{value * scale:.{digits}g} {prefix}{unit}"


def si_scale(magnitude: float) -> tuple[float, str]:
    """(factor, prefix) putting `magnitude` * factor in 1..1000, from nano to giga."""
    for exponent, prefix in ((9, "G"), (6, "M"), (3, "k"), (0, ""), (-3, "m"), (-6, "µ")):
        if magnitude >= 10.0 ** exponent * (1 - 1e-12):
            return 10.0 ** -exponent, prefix
    return 1e9, "n"


def _as_1d(what: str, values: Any) -> np.ndarray:
    """A float64 1-D array of `values` (no copy when it already is one)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} must be numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValidationError(f"{what} must be a 1-D array, got shape {arr.shape}")
    return arr


def _readonly(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view


def _checked_sum(what: str, values: np.ndarray, time: np.ndarray) -> float:
    """sum(values), which doubles as the NaN/inf check: a non-finite sample makes it non-finite."""
    total = float(np.sum(values))
    if not math.isfinite(total):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            at = f" (time {time[i]:.6g} s)" if i < time.size else ""
            raise ValidationError(f"{what} has {bad.size} NaN/inf samples, the first at index "
                                  f"{i}{at}: {values[i]}")
    return total


def _checked_voltage(voltage: Any, time: np.ndarray) -> np.ndarray | float:
    """A constant supply voltage as a float, or a per-sample array matching `time`."""
    if np.ndim(voltage) == 0:
        try:
            value = float(voltage)
        except (TypeError, ValueError):
            raise ValidationError(
                f"voltage must be a number or an array, got {voltage!r}") from None
        if not math.isfinite(value):
            raise ValidationError(f"voltage is {value}")
        return value
    array = _readonly(_as_1d("voltage", voltage))
    if array.size != time.size:
        raise ValidationError(f"voltage has {array.size} samples but time has {time.size}")
    _checked_sum("voltage", array, time)
    return array


def _scan_time(time: np.ndarray) -> float | None:
    """Check time is finite and strictly increasing in one chunked pass; the step if uniform."""
    n = time.size
    if n == 1:
        if not math.isfinite(time[0]):
            raise ValidationError(f"time is {time[0]}")
        return 0.0
    buf = np.empty(min(CHUNK, n - 1))
    smallest, largest = math.inf, -math.inf
    for i in range(0, n - 1, CHUNK):
        j = min(i + CHUNK, n - 1)
        step = np.subtract(time[i + 1:j + 1], time[i:j], out=buf[:j - i])
        lo, hi = float(step.min()), float(step.max())
        if not (lo > 0 and hi < math.inf):    # also false for NaN
            _raise_bad_time(time)
        smallest, largest = min(smallest, lo), max(largest, hi)
    dt = float(time[-1] - time[0]) / (n - 1)
    return dt if largest - smallest <= UNIFORM_RTOL * dt else None


def _raise_bad_time(time: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(time))
    if bad.size:
        i = int(bad[0])
        raise ValidationError(f"time has {bad.size} NaN/inf samples, the first at index {i}: "
                              f"{time[i]}")
    i = int(np.flatnonzero(np.diff(time) <= 0)[0])
    raise ValidationError(f"time must increase strictly: time[{i}] = {float(time[i])!r} s, "
                          f"time[{i + 1}] = {float(time[i + 1])!r} s")


def _clock_value(when: TimeLike) -> float:
    """A float clock time from a float or anything with a float `.time`."""
    value = getattr(when, "time", when)
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"not a clock time (float or object with .time): {when!r}") from None
    if not math.isfinite(t):
        raise ValidationError(f"clock time is {t}: {when!r}")
    return t


def _describe(when: TimeLike) -> str:
    if isinstance(when, str):
        return f"mark {when!r}"
    if hasattr(when, "time"):
        return f"{type(when).__name__} at {float(when.time):.6f}"
    return f"{float(when):.6f}"


def _envelope(time: np.ndarray, y: np.ndarray,
              columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(column start time, min, max) over `columns` equal runs of samples: short spikes survive
    decimation. Traces with few samples come back as they are (min = max = y)."""
    n = y.size
    if n <= 2 * columns:
        return time, y, y
    k = -(-n // columns)
    full = (n // k) * k
    rows = y[:full].reshape(-1, k)
    low, high = rows.min(axis=1), rows.max(axis=1)
    starts = time[0:full:k]
    if full < n:
        low = np.append(low, y[full:].min())
        high = np.append(high, y[full:].max())
        starts = np.append(starts, time[full])
    return starts, low, high


def _marks_in(marks: Iterable[tuple[str, float]], t0: float, lo: float,
              hi: float) -> list[tuple[str, float]]:
    """(label, time on the trace axis) for the marks that fall within [lo, hi]."""
    return [(label, t - t0) for label, t in marks if lo <= t - t0 <= hi]
