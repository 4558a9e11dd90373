"""The test suite's one polling wait: it ends by its timeout with an AssertionError naming what
was awaited, so no test can hang on a condition that never comes."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str = "the condition",
               timeout: float = 5.0) -> T:
    """Poll `condition` until it is true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)
    return result
