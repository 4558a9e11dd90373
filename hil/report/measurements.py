"""Measurements: a named value with a unit and limits, judged once, written to JSON and JUnit.

A figure with limits passes or fails; one without limits is "info" (recorded, counted as
passing). Numbers are shown with as many digits as it takes to see the verdict: a value that
misses its limit by 2 in 2 million must not print the same as the limit.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

DIGITS = 6                 # significant digits shown when they suffice
MAX_DIGITS = 17            # enough to tell any two different floats apart


@dataclass(frozen=True)
class Measurement:
    """One recorded figure and whether it lies within [low, high] (either limit may be open)."""

    name: str
    value: float
    unit: str = ""
    low: float | None = None
    high: float | None = None
    test: str = ""
    rig: str = ""          # the rig the test ran on (its [rig] name)

    @property
    def has_limits(self) -> bool:
        return self.low is not None or self.high is not None

    @property
    def passed(self) -> bool:
        """Within the limits (a figure without limits passes unless it is NaN)."""
        if math.isnan(self.value):
            return False
        return ((self.low is None or self.value >= self.low)
                and (self.high is None or self.value <= self.high))

    @property
    def outcome(self) -> str:
        """"pass", "fail", or "info" for a figure without limits."""
        if not self.passed:
            return "fail"
        return "pass" if self.has_limits else "info"

    def digits(self) -> int:
        """Significant digits that show the value apart from every limit it differs from."""
        limits = [x for x in (self.low, self.high) if x is not None and x != self.value]
        for digits in range(DIGITS, MAX_DIGITS + 1):
            shown = format_number(self.value, digits)
            if all(format_number(x, digits) != shown for x in limits):
                return digits
        return MAX_DIGITS

    def limits(self) -> str:
        """`[low, high]` with open ends as -inf/+inf, at the value's precision."""
        digits = self.digits()
        low = "-inf" if self.low is None else format_number(self.low, digits)
        high = "+inf" if self.high is None else format_number(self.high, digits)
        return f"[{low}, {high}]"

    def reading(self) -> str:
        """The value with its unit and, if any, its limits: `4.2e-06 A in [-inf, 1e-05]`."""
        text = format_number(self.value, self.digits())
        if self.unit:
            text += f" {self.unit}"
        return f"{text} in {self.limits()}" if self.has_limits else text

    def describe(self) -> str:
        """One line for reports: `sleep_current = 4.2e-06 A in [-inf, 1e-05]: pass`."""
        return f"{self.name} = {self.reading()}: {self.outcome}"

    def to_dict(self) -> dict:
        """The JSON record: the fields, plus `outcome` and `passed` (added, never renamed)."""
        return {**asdict(self), "outcome": self.outcome, "passed": self.passed}


def format_number(x: float, digits: int = DIGITS) -> str:
    """`x` with `digits` significant digits; whole numbers below 1e16 without an exponent."""
    if math.isfinite(x) and x == int(x) and abs(x) < 1e16:
        return str(int(x))
    return f"{x:.{digits}g}"


def junit_properties(m: Measurement) -> list[tuple[str, object]]:
    """JUnit XML properties of one measurement: the value as a number, then its unit, limits
    (only those set) and outcome beside it, e.g. `measure.sleep_current = 4.2e-06`,
    `measure.sleep_current.unit = A`, `.high = 1e-05`, `.outcome = pass`."""
    key = f"measure.{m.name}"
    props: list[tuple[str, object]] = [(key, m.value)]
    if m.unit:
        props.append((f"{key}.unit", m.unit))
    if m.low is not None:
        props.append((f"{key}.low", m.low))
    if m.high is not None:
        props.append((f"{key}.high", m.high))
    props.append((f"{key}.outcome", m.outcome))
    return props


def allure_parameter(m: Measurement) -> str:
    """The Allure parameter value, plain text: `4.2e-06 A in [-inf, 1e-05]: pass`."""
    return f"{m.reading()}: {m.outcome}"


class Unquoted:
    """Text that Allure shows as it is: allure-pytest quotes str parameters ('...') but shows
    other objects by their repr, so `allure.dynamic.parameter(name, Unquoted(text))`."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


def check_value(name: str, value: object) -> float:
    """Measurements are numbers: reject strings, None and arrays with a clear message."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"measurement {name!r} needs a number, got {type(value).__name__} {value!r}")
    try:
        return float(value)  # numpy scalars
    except (TypeError, ValueError):
        raise TypeError(f"measurement {name!r} needs a single number, got {value!r}") from None


def write_json(measurements: Iterable[Measurement], path: Path) -> Path:
    """Write all measurements as one JSON document (a list of records)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [m.to_dict() for m in measurements]
    path.write_text(json.dumps(records, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    return path


_FIELDS = {f.name for f in fields(Measurement)}


def read_json(path: Path) -> list[Measurement]:
    """Read a file written by `write_json` (derived and unknown keys are ignored)."""
    records = json.loads(path.read_text(encoding="utf-8"))
    return [Measurement(**{k: v for k, v in r.items() if k in _FIELDS}) for r in records]
