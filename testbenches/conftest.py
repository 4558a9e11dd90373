"""Bench-wide fixtures a lab would write once: a freshly booted DUT.

On a rig with a power analyzer the DUT is powered up through it (and powered off again by the
instrument's safe state after the test); on a rig without one it is reset from its console.
"""
from __future__ import annotations

import pytest

BOOT_BANNER = r"boot: ok v(\d+\.\d+\.\d+)"
PROMPT = "dut> "


@pytest.fixture
def booted(request: pytest.FixtureRequest, console):
    """Boot the DUT and wait for its prompt; returns the banner match (group 1: version)."""
    try:
        power = request.getfixturevalue("power")
    except pytest.FixtureLookupError:
        power = None
    console.drain()
    if power is not None:
        power.on()
    else:
        console.write("reset\n")
    banner = console.expect(BOOT_BANNER, timeout=5)
    console.expect_exact(PROMPT, timeout=5)
    return banner
