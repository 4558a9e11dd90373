"""`hil check`, the rig doctor, against a full simulated rig and a rig with a dead resource:
what each resource is, whether it answered, versions, round trips, where simulators listen."""
from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import pytest

from hil import cli

FULL = '''
[rig]
name = "doctor"

[console]
kind = "serial"
url = "sim:dut"

[power]
kind = "otii"
host = "sim"
credentials = "creds.json"

[eeg]
kind = "tia"
host = "sim"
signals = "eeg:2x4@250/sine"

[console_tcp]
kind = "tcp"
host = "sim"
'''


def write_rig(folder: Path, text: str) -> Path:
    (folder / "creds.json").write_text('{"username": "u", "password": "doctor-pw-123"}')
    path = folder / "rig.toml"
    path.write_text(textwrap.dedent(text))
    return path


def free_port() -> int:
    """A port nothing listens on (bound, then closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def doctor_json(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:
    code = cli.main(["check", str(path), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_full_simulated_rig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = doctor_json(write_rig(tmp_path, FULL), capsys)
    assert code == 0 and report["ok"] and report["name"] == "doctor"
    found = {r["name"]: r for r in report["resources"]}
    assert list(found) == ["console", "power", "eeg", "console_tcp"]
    assert all(r["ok"] and r["simulated"] and r["error"] == "" for r in found.values())

    power = found["power"]
    assert power["what"] == "otii sim" and power["answered"] is True
    assert power["versions"] == {"device": "Arc-SIM (Arc)", "hardware": "Arc 1.4",
                                 "firmware": "1.3.2"}
    assert power["latency_s"] > 0 and power["listening"][0].startswith("otii at 127.0.0.1:")

    eeg = found["eeg"]
    assert eeg["answered"] is True and eeg["latency_s"] > 0
    assert eeg["versions"] == {"protocol": "TiA 1.0", "signals": "eeg 2ch@250"}
    assert eeg["listening"][0].startswith("tia:eeg at 127.0.0.1:")

    # the DUT is on the simulated Otii's supply: off, so its console opens but stays silent
    console = found["console"]
    assert console["answered"] is False and console["listening"][0].startswith("dut-pty at /dev/")
    assert found["console_tcp"]["listening"][0].startswith("dut-tcp at 127.0.0.1:")
    assert "doctor-pw-123" not in json.dumps(report)


def test_a_powered_console_answers_with_its_prompt(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Without an Otii in the rig the virtual DUT is powered from the start: it answers (still
    booting, or at its prompt: the last line it printed is shown)."""
    path = write_rig(tmp_path, '[console_tcp]\nkind = "tcp"\nhost = "sim"\n')
    code, report = doctor_json(path, capsys)
    [console] = report["resources"]
    assert code == 0 and console["answered"] is True and console["latency_s"] > 0
    assert "boot: ok" in console["reply"] or "dut>" in console["reply"]


def test_dead_resource_fails_with_its_reason(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    path = write_rig(tmp_path, FULL + f'''
[meter]
kind = "tcp"
host = "127.0.0.1"
port = {port}
connect_timeout = 2.0
''')
    code = cli.main(["check", str(path)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "    power        OK, answered" in out and "versions: device Arc-SIM (Arc)" in out
    assert "meter        FAILED: " in out and f"127.0.0.1:{port}" in out
    assert "hil check: meter: " in err and "1 of 5 resource(s) failed to open: meter" in err

    code, report = doctor_json(path, capsys)
    meter = {r["name"]: r for r in report["resources"]}["meter"]
    assert code == 1 and report["ok"] is False
    assert meter["ok"] is False and meter["answered"] is None and str(port) in meter["error"]


def test_bad_rig_file_in_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_rig(tmp_path, '[console]\nkind = "serial"\nbaudrate = "fast"\n')
    code, report = doctor_json(path, capsys)
    assert code == 1 and report["ok"] is False and report["resources"] == []
    assert "key 'baudrate'" in report["error"] or "key 'url'" in report["error"]


def test_no_open_only_checks_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = doctor_json(write_rig(tmp_path, FULL), capsys, "--no-open")
    assert code == 0 and [r["name"] for r in report["resources"]] == \
        ["console", "power", "eeg", "console_tcp"]
    assert all("latency_s" not in r for r in report["resources"])
