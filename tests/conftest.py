"""Test-suite conftest: pytester for plugin tests, and the simulated Otii on a virtual DUT."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from hil.sim.dut import VirtualDut
from hil.sim.otii_server import OtiiServer

pytest_plugins = ["pytester"]


@pytest.fixture
def dut() -> Iterator[VirtualDut]:
    """A fresh virtual DUT, unpowered (an Otii or the test supplies it)."""
    d = VirtualDut()
    yield d
    d.close()


@pytest.fixture
def sim(dut: VirtualDut) -> Iterator[OtiiServer]:
    """An Otii TCP server simulator on 127.0.0.1, measuring `dut` (its threads' errors fail
    the test: they are only collected in `server.errors`)."""
    with OtiiServer(dut) as server:
        yield server
        assert not server.errors, f"the Otii simulator failed: {server.errors}"
