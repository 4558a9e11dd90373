"""The hil plugin end to end when CI cancels a run: a real pytest in a subprocess, with a rig
whose `power` is a simulated Otii running in THIS process (so its state outlives the run),
switched on by the test; then the run is stopped from outside.

* SIGTERM: the plugin must have installed `hil.fixtures.signals.install_sigterm_as_interrupt()`
  at configure time, so teardown runs: the fixture's finalizer writes its marker and the
  plugin's safe state switches the Otii main output off.
* SIGKILL with `guard = true` on the rig table: nothing in the process runs; the guardian
  (hil.fixtures.guardian, started by the plugin) must switch the main output off.

Both fail while the plugin does not wire those modules in yet (the SIGTERM run then dies with
-15 and leaves the main output on).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hil.sim.otii_server import OtiiServer

WAIT_S = 60.0
USER, PASSWORD = "bench-user", "s3cret-pw"

BENCH = '''
import time
from pathlib import Path
import pytest

@pytest.fixture
def marker():
    yield
    Path("teardown.txt").write_text("ran")

def test_powered_and_stuck(marker, power):
    power.on()
    Path("started.txt").write_text("")
    time.sleep(120)                   # stuck: CI cancels the job here
'''


def wait_until(condition: Callable[[], bool], what: str, proc: subprocess.Popen[str] | None = None,
               timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"pytest ended ({proc.returncode}) while waiting for {what}:"
                                 f"\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def main_is_on(sim: OtiiServer) -> bool:
    with sim.lock:
        return sim.device.main


@pytest.fixture
def bench(sim: OtiiServer, tmp_path: Path) -> Callable[[str], subprocess.Popen[str]]:
    """Start pytest on BENCH with a rig whose power is `sim` (plus `extra` keys)."""
    with sim.lock:
        sim.state.accounts = {USER: PASSWORD}
        sim.state.logged_in = False
    (tmp_path / "otii.json").write_text(json.dumps({"username": USER, "password": PASSWORD}))
    (tmp_path / "test_bench.py").write_text(textwrap.dedent(BENCH))
    started: list[subprocess.Popen[str]] = []

    def start(extra: str = "") -> subprocess.Popen[str]:
        (tmp_path / "rig.toml").write_text(
            f'[power]\nkind = "otii"\nhost = "{sim.host}"\nport = {sim.port}\n'
            f'credentials = "otii.json"\n{extra}')
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rig", "rig.toml",
             "--hil-results", "out", "test_bench.py"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        wait_until(lambda: (tmp_path / "started.txt").exists(), "the test to start", proc)
        assert main_is_on(sim)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_sigterm_runs_teardown_and_switches_the_otii_off(
        bench: Callable[[str], subprocess.Popen[str]], sim: OtiiServer, tmp_path: Path) -> None:
    proc = bench("")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, f"{out}\n{err}"
    assert (tmp_path / "teardown.txt").read_text() == "ran"
    assert not main_is_on(sim)


def test_sigkill_with_guard_switches_the_otii_off(
        bench: Callable[[str], subprocess.Popen[str]], sim: OtiiServer) -> None:
    proc = bench("guard = true\n")
    proc.kill()
    proc.communicate(timeout=WAIT_S)
    wait_until(lambda: not main_is_on(sim), "the guardian to switch the main output off")
