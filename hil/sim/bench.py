"""The virtual bench: one virtual DUT and the simulators a rig asks for, started once each.

Openers of simulated resources call `bench.start(key, factory)`: the first call builds the
simulator, later calls (another table naming the same simulator) get the same one. `close()`
stops them all, newest first.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from hil.sim.dut import VirtualDut

T = TypeVar("T")


class VirtualBench:
    """Simulators sharing one VirtualDut. The DUT is supplied by the simulated Otii when the rig
    has one (`dut_on_otii`), otherwise it is powered from the start like a board on a bench PSU."""

    def __init__(self, *, dut_on_otii: bool = False, seed: int = 1, speed: float = 1.0) -> None:
        self.dut_on_otii = dut_on_otii
        self.seed = seed
        self.speed = speed
        self._dut: VirtualDut | None = None
        self._sims: dict[str, Any] = {}
        self._lock = threading.RLock()

    @property
    def dut(self) -> VirtualDut:
        with self._lock:
            if self._dut is None:
                self._dut = VirtualDut(seed=self.seed, speed=self.speed,
                                       powered=not self.dut_on_otii)
            return self._dut

    def start(self, key: str, factory: Callable[[], T]) -> T:
        """Return the simulator named `key`, building it with `factory()` the first time."""
        with self._lock:
            if key not in self._sims:
                self._sims[key] = factory()
            return self._sims[key]

    def close(self) -> None:
        with self._lock:
            sims, self._sims = list(self._sims.values()), {}
            for sim in reversed(sims):
                sim.close()
            if self._dut is not None:
                self._dut.close()
                self._dut = None

    def __enter__(self) -> VirtualBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
