"""Deadline: one timeout shared by the several waits of one operation."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Deadline:
    """A point in time `seconds` from creation; `remaining` never goes below zero."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    @property
    def end(self) -> float:
        return self.start + self.seconds

    @property
    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start
