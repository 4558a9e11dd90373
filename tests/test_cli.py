"""The `hil` command line: `hil sim dut` as a real process, `hil check` on good and bad rigs."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import serial

from hil import cli
from hil.rig import Key, Resource, RigKind, kinds

WAIT_S = 15.0


# --------------------------------------------------------------------------- hil sim dut
def read_line(proc: subprocess.Popen[bytes], timeout: float = WAIT_S) -> str:
    """The next stdout line of `proc`, failing (with its stderr) if none comes in time."""
    assert proc.stdout is not None
    line = bytearray()
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            proc.kill()
            raise AssertionError(f"no output line within {timeout} s; stderr: "
                                 f"{proc.communicate(timeout=5)[1]!r}")
        byte = os.read(fd, 1)
        if not byte:
            raise AssertionError(f"process exited (rc={proc.wait(5)}) before printing a line; "
                                 f"stderr: {proc.communicate(timeout=5)[1]!r}")
        line += byte
    return line.decode().strip()


@pytest.fixture
def sim_dut(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start `hil sim dut ARGS` (args from the test's parameter); kill it if the test fails."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "sim", "dut", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT_S)


def stop(proc: subprocess.Popen[bytes], sig: int) -> str:
    """Send `sig`, expect a clean exit (code 0, no traceback); returns stderr."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=WAIT_S)
    text = err.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "Traceback" not in text, text
    return text


def recv_until(sock: socket.socket, pattern: bytes, timeout: float = WAIT_S) -> bytes:
    data = bytearray()
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while pattern not in data:
        assert time.monotonic() < deadline, f"no {pattern!r} in {bytes(data)!r}"
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        assert chunk, f"connection closed; got {bytes(data)!r}"
        data += chunk
    return bytes(data)


def test_sim_dut_on_tcp_answers_and_stops_on_sigterm(sim_dut: Any) -> None:
    proc = sim_dut("--port", "0", "--speed", "20", "--seed", "7")
    host, _, port = read_line(proc).rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as sock:
        sock.sendall(b"version\n")                   # powered by default: the firmware answers
        assert b"version: 1.4.2\r\n" in recv_until(sock, b"version: 1.4.2\r\n")
    stop(proc, signal.SIGTERM)


def test_sim_dut_on_pty_with_echo_stops_on_ctrl_c(sim_dut: Any) -> None:
    proc = sim_dut("--pty", "--speed", "20", "--echo")
    path = read_line(proc)
    assert path.startswith("/dev/")
    with serial.Serial(path, timeout=0.2) as port:
        port.write(b"echo hi\n")
        data = bytearray()
        deadline = time.monotonic() + WAIT_S
        while b"hi\r\n" not in data.replace(b"echo hi\r\n", b""):
            assert time.monotonic() < deadline, f"no answer; got {bytes(data)!r}"
            data += port.read(1) + port.read(port.in_waiting)
    assert b"echo hi\r\n" in data                    # --echo: the input comes back
    stop(proc, signal.SIGINT)


def test_sim_dut_needs_a_transport(sim_dut: Any) -> None:
    proc = sim_dut("--speed", "20")
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 2 and b"--pty and/or --port" in err


def test_unknown_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: hil") and "sim dut" in err and "check" in err


# --------------------------------------------------------------------------- hil check
@dataclass
class FakeHandle:
    """What the fake kind's opener returns: remembers how it was opened and closed."""

    name: str
    dut_on_otii: bool
    closed: bool = False

    def close(self) -> None:
        self.closed = True


OPENED: list[FakeHandle] = []


def _open_fake(resource: Resource, bench: Any) -> FakeHandle:
    if resource["fail"]:
        raise resource.error("nothing answers at this address", key="address")
    handle = FakeHandle(resource.name, bench.dut_on_otii)
    OPENED.append(handle)
    return handle


FAKE_KIND = RigKind(keys={"address": Key(str), "rate": Key(int, 10), "fail": Key(bool, False)},
                    open=_open_fake)


def _open_fake_otii(resource: Resource, bench: Any) -> FakeHandle:
    OPENED.append(FakeHandle(resource.name, bench.dut_on_otii))
    return OPENED[-1]


FAKE_OTII = RigKind(keys={"host": Key(str)}, open=_open_fake_otii)


@pytest.fixture(autouse=True)
def fake_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register test-only kinds, so `hil check` is tested apart from the real drivers."""
    monkeypatch.setitem(kinds._registered, "fake", f"{__name__}:FAKE_KIND")
    monkeypatch.setitem(kinds.BUILTIN, "otii", f"{__name__}:FAKE_OTII")
    OPENED.clear()


def write_rig(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text(text)
    return path


GOOD = """
[probe]
kind = "fake"
address = "sim:probe"

[meter]
kind = "fake"
address = "10.0.0.7"
rate = 25
"""


def test_check_prints_each_resource(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_rig(tmp_path, GOOD)
    assert cli.main(["check", str(path), "--no-open"]) == 0
    out = capsys.readouterr().out
    assert f"rig {path}: 2 resource(s)" in out
    assert '[probe]  kind = "fake"  (simulated)' in out and 'address = "sim:probe"' in out
    assert "rate = 10" in out and "fail = false" in out          # defaults shown too
    assert '[meter]  kind = "fake"\n' in out and "rate = 25" in out
    assert OPENED == []                                         # nothing opened without --open


def test_check_open_opens_and_closes_every_resource(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(write_rig(tmp_path, GOOD)), "--open"]) == 0
    out = capsys.readouterr().out
    assert [h.name for h in OPENED] == ["probe", "meter"] and all(h.closed for h in OPENED)
    assert not OPENED[0].dut_on_otii                             # no simulated Otii in this rig
    assert "probe  OK" in out and "meter  OK" in out and "all 2 resource(s)" in out


def test_check_open_reports_each_failure(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write_rig(tmp_path, GOOD + '\n[broken]\nkind = "fake"\naddress = "x"\nfail = true\n'
                     + '\n[power]\nkind = "otii"\nhost = "sim"\n')
    assert cli.main(["check", str(path), "--open"]) == 1
    captured = capsys.readouterr()
    assert "probe   OK" in captured.out and "power   OK" in captured.out
    assert (f"broken  FAILED: nothing answers at this address (file {path}, table [broken], "
            f"key 'address')") in captured.out
    assert "1 of 4 resource(s) failed to open: broken" in captured.err
    assert all(h.dut_on_otii for h in OPENED)        # the rig has a simulated Otii
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("text, expected", [
    ("[a\nkind = 1", "not valid TOML"),
    ("", "defines no resources"),
    ('[probe]\naddress = "x"', "missing 'kind' (one of {kinds}) (file {file}, table [probe], "
                               "key 'kind')"),
    ('[probe]\nkind = "laser"', "unknown kind 'laser'; known kinds: {kinds} (file {file}, "
                                "table [probe], key 'kind')"),
    ('[probe]\nkind = "fake"', "missing required key for kind 'fake' (file {file}, "
                               "table [probe], key 'address')"),
    ('[probe]\nkind = "fake"\naddress = "x"\nrate = "fast"',
     "got 'fast' (file {file}, table [probe], key 'rate')"),
    ('[probe]\nkind = "fake"\naddress = "x"\nspeed = 3',
     "unknown key for kind 'fake'; known keys: address, fail, rate (file {file}, "
     "table [probe], key 'speed')"),
    ('probe = 3', "must be a table ([probe]), got 3 (file {file}, table [probe])"),
])
def test_check_reports_a_broken_rig_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            text: str, expected: str) -> None:
    path = write_rig(tmp_path, text)
    assert cli.main(["check", str(path)]) == 1
    captured = capsys.readouterr()
    known = ", ".join(sorted(kinds.registered()))
    assert expected.format(file=path, kinds=known) in captured.err
    assert captured.err.startswith("hil check: error: ") and "Traceback" not in captured.err
    assert captured.out == ""


def test_check_missing_file_as_a_process(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    proc = subprocess.run([sys.executable, "-m", "hil.cli", "check", str(missing)],
                          capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 1
    assert proc.stderr == f"hil check: error: rig file not found (file {missing})\n"


def test_check_opens_the_simulated_console(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """End to end with the real serial kind: the simulated DUT console opens."""
    path = write_rig(tmp_path, '[console]\nkind = "serial"\nurl = "sim:dut"\n')
    assert cli.main(["check", str(path), "--open"]) == 0, capsys.readouterr()
    assert "console  OK" in capsys.readouterr().out
