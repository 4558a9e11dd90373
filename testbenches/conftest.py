"""Bench-wide fixtures a lab would write once: a freshly booted DUT.

On a rig with a power analyzer the DUT is power-cycled through it (and powered off again by the
instrument's safe state after the test); on a rig without one it is reset from its console.
"""
from __future__ import annotations

import pytest

BOOT_BANNER = r"boot: ok v(\d+\.\d+\.\d+)"
RESET_ANSWER = "reset: rebooting"
PROMPT = "dut> "


@pytest.fixture
def booted(request: pytest.FixtureRequest, console, report):
    """Boot the DUT and wait for its prompt; returns the banner match (group 1: version).

    The banner matched is always the one of the boot started here: with a supply, the board is
    switched off before the output is drained; without one, the reset's own answer is awaited
    first, because a board still printing an earlier boot (power-on, a previous test's reset)
    would otherwise offer its stale banner, and the rest of that boot would land in the test.
    """
    try:
        power = request.getfixturevalue("power")
    except pytest.FixtureLookupError:
        power = None
    with report.step("boot"):
        if power is not None:
            power.off()
            console.drain()
            power.on()
        else:
            console.drain()
            console.write("reset\n")
            console.expect_exact(RESET_ANSWER, timeout=5)
        banner = console.expect(BOOT_BANNER, timeout=5)
        console.expect_exact(PROMPT, timeout=5)
    return banner
