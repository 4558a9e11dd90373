"""The virtual DUT's host software as an event source: its power-state changes as events.

Topic `dut.power.state`, body `{"state": "sleep", "previous": "idle", "boots": 3,
"__data_time": <hil clock time of the change>}`. The first event is the state at start. Data
times are the DUT model's own, so `trace.between(event_a, event_b)` on a simulated Otii trace
cuts exactly at the state changes.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from hil.sim.dut import PowerState, VirtualDut

TOPIC = "dut.power.state"
POLL_S = 0.005


class DutEvents:
    """Polls `dut.timeline()` every `poll_s` and yields each state change once."""

    def __init__(self, dut: VirtualDut, *, poll_s: float = POLL_S) -> None:
        self.dut = dut
        self.poll_s = poll_s
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def dicts(self) -> Iterator[tuple[str, dict[str, Any]]]:
        self._stop.clear()
        starts, states = self.dut.timeline()
        seen = len(starts)
        previous = PowerState(int(states[-1]))
        yield TOPIC, self._body(previous, None, float(starts[-1]))
        while not self._stop.wait(self.poll_s):
            starts, states = self.dut.timeline()
            for t, s in zip(starts[seen:].tolist(), states[seen:].tolist()):
                state = PowerState(s)
                if state != previous:
                    yield TOPIC, self._body(state, previous, t)
                    previous = state
            seen = len(starts)

    def _body(self, state: PowerState, previous: PowerState | None, t: float) -> dict[str, Any]:
        return {"state": state.name.lower(),
                "previous": None if previous is None else previous.name.lower(),
                "boots": self.dut.boots, "__data_time": t}
