"""Simulators a rig asks for, started on first use: the virtual bench exists only when a
table says "sim" (a rig of real hardware never imports a simulator)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hil.sim.bench import VirtualBench


class Simulators:
    """One `VirtualBench` for a whole rig, made when the first simulated table opens.

    `dut_on_otii`: the rig has a simulated Otii, so the virtual DUT is powered by it (off until
    its main output is switched on) rather than from the start.
    """

    def __init__(self, *, dut_on_otii: bool = False, seed: int = 1, speed: float = 1.0) -> None:
        self.dut_on_otii, self.seed, self.speed = dut_on_otii, seed, speed
        self._bench: VirtualBench | None = None

    @property
    def bench(self) -> VirtualBench:
        if self._bench is None:
            from hil.sim.bench import VirtualBench
            self._bench = VirtualBench(dut_on_otii=self.dut_on_otii, seed=self.seed,
                                       speed=self.speed)
        return self._bench

    @property
    def started(self) -> bool:
        return self._bench is not None

    def close(self) -> None:
        bench, self._bench = self._bench, None
        if bench is not None:
            bench.close()

    def __enter__(self) -> Simulators:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
