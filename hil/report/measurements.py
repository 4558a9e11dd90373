"""Measurements: a named value with a unit and limits, judged once, written to JSON and JUnit."""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measurement:
    """One recorded figure and whether it lies within [low, high] (either limit may be open)."""

    name: str
    value: float
    unit: str = ""
    low: float | None = None
    high: float | None = None
    test: str = ""

    @property
    def passed(self) -> bool:
        if isinstance(self.value, float) and math.isnan(self.value):
            return False
        return ((self.low is None or self.value >= self.low)
                and (self.high is None or self.value <= self.high))

    @property
    def outcome(self) -> str:
        return "pass" if self.passed else "fail"

    def limits(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:.6g}"
        high = "+inf" if self.high is None else f"{self.high:.6g}"
        return f"[{low}, {high}]"

    def describe(self) -> str:
        """One line for reports: `sleep_current = 4.2e-06 A in [-inf, 1e-05]: pass`."""
        return f"{self.name} = {self.value:.6g} {self.unit} in {self.limits()}: {self.outcome}".replace("  ", " ")

    def to_dict(self) -> dict:
        return {**asdict(self), "outcome": self.outcome}


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


def read_json(path: Path) -> list[Measurement]:
    records = json.loads(path.read_text(encoding="utf-8"))
    return [Measurement(**{k: v for k, v in r.items() if k != "outcome"}) for r in records]
