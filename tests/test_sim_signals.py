"""Every standalone simulator (`hil sim …`) stops cleanly on SIGTERM, how CI and service
managers stop a process: exit status 0, nothing on stderr that reads as an error. (TiA and
STTP used to die by the signal; the event publisher closed its socket under a thread still
waiting for its first subscriber and exited 1.)"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_DB = ROOT / "testbenches" / "rigs" / "events" / "console-session.sqlite"


@pytest.mark.parametrize("args", [
    ["sim", "dut", "--port", "0"],
    ["sim", "otii", "--port", "0"],
    ["sim", "tia", "--port", "0"],
    ["sim", "sttp", "--port", "0"],
    ["sim", "console", "--db", str(CONSOLE_DB), "--port", "0"],
    ["sim", "events", "--mock", "--url", "tcp://127.0.0.1:0"],   # waits for a subscriber
], ids=lambda a: a[1])
def test_a_standalone_simulator_stops_cleanly_on_sigterm(args: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "127.0.0.1:" in proc.stdout.readline()        # listening: where it says
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "error" not in err.lower() and "Traceback" not in err, err
