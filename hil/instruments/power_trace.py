"""`PowerTrace`: what a power capture hands a test: numpy time, current, voltage, and analysis.

Plots and CSV files of a trace are written by `hil.report.plots` and `hil.report.csv_files`.

Times are seconds on the trace's own axis (0 at the first sample of the capture); `t0` is the
`hil.clock.now()` time of that 0, so console marks and expect matches (same clock) can be placed
on the trace with `between()`. Windows are views sharing the parent's arrays and time axis.

Integrals (charge, energy) use the trapezoid rule and are exact for piecewise-linear signals on
any time axis; a uniform axis (the normal case) is detected once, when the constructor checks
that time increases, and then makes them a single sum. Statistics are plain numpy calls.

The trace does not copy the arrays it is given: do not modify them afterwards.
"""
from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from hil.errors import ValidationError
from hil.instruments.pulses import Pulse, Pulses, find_pulses, trapezoid_weights

__all__ = ["BatteryLife", "PowerTrace", "Pulse", "Pulses", "format_si", "si_scale"]

#: Spacings within this relative spread of their mean count as a uniform time axis.
UNIFORM_RTOL = 1e-6
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
    (e.g. GPIO edges or console events the driver recorded) for `between()` and for plots.
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
        """Current percentile(s), A, by np.percentile (linear interpolation); q in 0..100."""
        qs = np.asarray(q, dtype=np.float64)
        if qs.size == 0 or not np.all((qs >= 0) & (qs <= 100)):
            raise ValidationError(f"percentile q must be within 0..100, got {q!r}")
        out = np.percentile(self._current, qs)
        return float(out) if qs.ndim == 0 else out

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
        if not math.isfinite(threshold):
            raise ValidationError(f"pulse threshold must be a finite current in A, got {threshold}")
        if not min_width >= 0:
            raise ValidationError(f"pulse min_width must be >= 0 s, got {min_width}")
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
    """Check time is finite and strictly increasing; the step if uniform, else None."""
    n = time.size
    if n == 1:
        if not math.isfinite(time[0]):
            raise ValidationError(f"time is {time[0]}")
        return 0.0
    steps = np.diff(time)
    smallest, largest = float(steps.min()), float(steps.max())
    if not (smallest > 0 and largest < math.inf):    # also false for NaN
        _raise_bad_time(time)
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
