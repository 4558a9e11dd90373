"""The guardian (dead-man's switch) with real processes: a parent that is SIGKILLed, a real
simulated Otii whose main output must read back off afterwards, a Ctrl-C to the parent's
process group that must leave the guardian alone.

A "parent" here is a small Python child process that arms a Guardian and then waits to be
killed; targets come from tests/guardian_targets.py.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from hil.fixtures.guardian import Guardian, GuardianError, Target
from hil.sim.otii_server import OtiiServer

from waiting import wait_until as _wait_until

TESTS = Path(__file__).parent
WAIT_S = 30.0
wait_until = partial(_wait_until, timeout=WAIT_S)     # this file's waits are longer
USER, PASSWORD = "bench-user", "s3cret-pw"

PARENT = '''
import json, sys, time
from hil.fixtures.guardian import Guardian, Target
spec = json.loads(sys.argv[1])
{prepare}
guardian = Guardian([Target(**t) for t in spec["targets"]], log_path=spec["log"]).start()
try:
    print(guardian.pid, flush=True)       # (a Ctrl-C may come right after this line)
    time.sleep(120)                       # until killed
except KeyboardInterrupt:
    print("stopped", guardian.stop(), flush=True)
'''

SWITCH_ON = '''
from otii_tcp_client import otii_client
otii = otii_client.OtiiClient().connect(host=spec["host"], port=spec["port"], try_for_seconds=5,
    licensing=otii_client.LicensingMode.AUTO, credentials=spec["credentials"])
otii.get_devices()[0].set_main(True)
'''


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


class Parent:
    """A child process that arms a guardian; `.guardian_pid` once it is armed."""

    def __init__(self, spec: dict, prepare: str = "", new_session: bool = False) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(TESTS), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(PARENT).format(prepare=prepare),
             json.dumps(spec)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=new_session)
        self.guardian_pid = int(self.line())

    def line(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            raise AssertionError(f"parent said nothing within {WAIT_S} s: "
                                 f"{self.proc.communicate()[1]}")
        return line.strip()

    def kill(self) -> None:
        self.proc.kill()                      # SIGKILL: no teardown, no atexit, nothing
        self.proc.communicate(timeout=WAIT_S)

    def wait_guardian(self) -> None:
        wait_until(lambda: gone(self.guardian_pid), "the guardian to exit")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        if not gone(self.guardian_pid):
            os.kill(self.guardian_pid, signal.SIGKILL)


@pytest.fixture
def parents() -> Iterator[list[Parent]]:
    started: list[Parent] = []
    yield started
    for parent in started:
        parent.close()


def target(name: str, call: str, **kwargs: object) -> dict:
    return {"name": name, "call": call, "kwargs": kwargs}


# --------------------------------------------------------------------------- the mechanism
def test_parent_killed_runs_every_target_even_past_a_failing_and_a_hanging_one(
        tmp_path: Path, parents: list[Parent]) -> None:
    log = tmp_path / "guardian.log"
    spec = {"log": str(log), "targets": [
        target("broken", "guardian_targets:fail", message="supply unreachable"),
        dict(target("stuck", "guardian_targets:hang", seconds=600), timeout=0.5),
        target("power", "guardian_targets:write_marker", path=str(tmp_path / "off.txt"),
               password="hunter2")]}
    parents.append(parent := Parent(spec))
    assert not (tmp_path / "off.txt").exists()
    parent.kill()
    parent.wait_guardian()
    assert (tmp_path / "off.txt").read_text() == "called"
    text = log.read_text()
    assert "died without teardown" in text
    assert "broken: FAILED after" in text and "RuntimeError: supply unreachable" in text
    assert "stuck: FAILED: no answer within 0.5 s" in text
    assert "power: safe state reached" in text
    assert "done: 1 of 3 target(s) safe, 2 FAILED" in text
    assert "hunter2" not in text and "password=***" in text


def test_clean_stop_does_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker, log = tmp_path / "off.txt", tmp_path / "guardian.log"
    guardian = Guardian([Target("power", "guardian_targets:write_marker",
                                {"path": str(marker)})], log_path=log)
    monkeypatch.setenv("PYTHONPATH",
                       os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    with guardian:
        assert guardian.running
        pid = guardian.pid
    assert not guardian.running and pid is not None and gone(pid)
    assert guardian.stop() == 0                  # idempotent, keeps the exit code
    assert not marker.exists()
    assert "clean end" in log.read_text()


def test_ctrl_c_to_the_parents_process_group_leaves_the_guardian_to_a_clean_end(
        tmp_path: Path, parents: list[Parent]) -> None:
    log = tmp_path / "guardian.log"
    spec = {"log": str(log), "targets": [
        target("power", "guardian_targets:write_marker", path=str(tmp_path / "off.txt"))]}
    parents.append(parent := Parent(spec, new_session=True))
    os.killpg(parent.proc.pid, signal.SIGINT)     # what a terminal's Ctrl-C does
    assert parent.line() == "stopped 0"           # the guardian was alive to hear "done"
    parent.wait_guardian()
    assert "clean end" in log.read_text() and not (tmp_path / "off.txt").exists()


def test_guardian_does_not_outlive_its_lifetime(tmp_path: Path) -> None:
    log = tmp_path / "guardian.log"
    guardian = Guardian([], log_path=log, lifetime=0.5).start()
    try:
        wait_until(lambda: not guardian.running, "the guardian to end its watch")
    finally:
        assert guardian.stop() == 0
    assert "lifetime of 0.5 s over; exiting without acting" in log.read_text()


def test_bad_targets_are_refused_before_anything_runs() -> None:
    with pytest.raises(GuardianError,
                       match=r"target 'x': call 'no_colon' is not 'module:function'"):
        Guardian([Target("x", "no_colon")])
    with pytest.raises(GuardianError, match=r"target 'x': kwargs must be plain JSON"):
        Guardian([Target("x", "m:f", {"path": Path("/tmp")})])
    with pytest.raises(GuardianError, match="timeout must be positive"):
        Guardian([Target("x", "m:f", timeout=0)])
    with pytest.raises(GuardianError, match="distinct names"):
        Guardian([Target("x", "m:f"), Target("x", "m:g")])
    with pytest.raises(GuardianError, match="needs name, call"):
        Guardian([{"name": "x", "function": "m:f"}])
    assert Guardian([{"name": "x", "call": "m:f", "kwargs": {"a": 1}}]).targets == [
        Target("x", "m:f", {"a": 1})]


def test_a_target_that_cannot_be_imported_fails_start_with_its_name() -> None:
    guardian = Guardian([Target("power", "hil_no_such_module:switch_off")])
    with pytest.raises(GuardianError, match=r"refused its targets: .*target 'power': cannot "
                                            r"load 'hil_no_such_module:switch_off'"):
        guardian.start()
    assert not guardian.running
    with pytest.raises(GuardianError, match=r"cannot load 'hil.errors:no_such_function'"):
        Guardian([Target("power", "hil.errors:no_such_function")]).start()


# --------------------------------------------------------------------------- a real Otii
@pytest.fixture
def otii(sim: OtiiServer, tmp_path: Path) -> tuple[OtiiServer, Path]:
    """The simulated Otii requiring a login, and a credentials file for it."""
    with sim.lock:
        sim.state.accounts = {USER: PASSWORD}
        sim.state.logged_in = False
    credentials = tmp_path / "otii-credentials.json"
    credentials.write_text(json.dumps({"username": USER, "password": PASSWORD}))
    return sim, credentials


def main_is_on(sim: OtiiServer) -> bool:
    with sim.lock:
        return sim.device.main


def kill_parent_with_main_on(sim: OtiiServer, credentials: Path, call: str, log: Path,
                             parents: list[Parent]) -> None:
    kwargs = {"host": sim.host, "port": sim.port, "credentials": str(credentials),
              "timeout": 5.0}
    spec = {"log": str(log), "host": sim.host, "port": sim.port,
            "credentials": str(credentials),
            "targets": [dict(target("power", call, **kwargs), timeout=20.0)]}
    parents.append(parent := Parent(spec, prepare=SWITCH_ON))
    assert main_is_on(sim)
    parent.kill()
    wait_until(lambda: not main_is_on(sim), "the guardian to switch the Otii main output off")
    parent.wait_guardian()
    text = log.read_text()
    assert "power: safe state reached" in text
    assert PASSWORD not in text and "credentials=***" in text


def test_kill_9_switches_the_simulated_otii_off_with_a_stand_in_target(
        otii: tuple[OtiiServer, Path], tmp_path: Path, parents: list[Parent]) -> None:
    sim, credentials = otii
    kill_parent_with_main_on(sim, credentials, "guardian_targets:otii_main_off",
                             tmp_path / "guardian.log", parents)


def test_kill_9_switches_the_simulated_otii_off_with_otii_guard(
        otii: tuple[OtiiServer, Path], tmp_path: Path, parents: list[Parent]) -> None:
    sim, credentials = otii
    kill_parent_with_main_on(sim, credentials, "hil.instruments.otii_guard:switch_off",
                             tmp_path / "guardian.log", parents)
