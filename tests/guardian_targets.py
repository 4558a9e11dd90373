"""Targets for the guardian tests, called in the guardian process (tests/ is on its path).

`otii_main_off` is a stand-in for `hil.instruments.otii_guard:switch_off` (same signature),
used until that module exists: it switches the first device's main output off through a
connection of its own, with the vendor client.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def write_marker(path: str, text: str = "called", **ignored: Any) -> None:
    Path(path).write_text(text)


def fail(message: str) -> None:
    raise RuntimeError(message)


def hang(seconds: float) -> None:
    time.sleep(seconds)


def otii_main_off(host: str, port: int, device: str = "", credentials: str = "",
                  timeout: float = 5.0) -> None:
    from otii_tcp_client import otii_client
    otii = otii_client.OtiiClient().connect(host=host, port=port, try_for_seconds=int(timeout),
                                            licensing=otii_client.LicensingMode.AUTO,
                                            credentials=credentials)
    try:
        for dev in otii.get_devices():
            if not device or device in (dev.id, dev.name):
                dev.set_main(False)
    finally:
        otii.disconnect()
