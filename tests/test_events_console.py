"""A recorded console session replayed as a simulated console (pty and TCP), and the rig kinds."""
from __future__ import annotations

from pathlib import Path

import pytest

from hil.buses.serial import SerialBus
from hil.buses.tcp import TcpBus
from hil.cli import record_console as record_console_cli
from hil.errors import RigError
from hil.instruments.console_recording import record_console
from hil.protocols.events_db import ConsoleEntry, read_console
from hil.rig.loader import load_rig, open_resource, simulators_for
from hil.sim.console_replay import ConsoleScript, serve_replay
from hil.sim.dut import VirtualDut
from hil.sim.dut_server import serve_tcp

PROMPT = "dut> "


@pytest.fixture(scope="module")
def session_db(tmp_path_factory) -> Path:
    """A real session: the virtual DUT's console over TCP, recorded from the bus transcript."""
    db = tmp_path_factory.mktemp("console") / "session.sqlite"
    dut = VirtualDut(powered=True)
    try:
        with serve_tcp(dut) as server:
            bus = TcpBus(server.host, server.port, name="lab")
            try:
                bus.expect_exact(PROMPT, timeout=5)
                for command in ("version", "status", "status", "tx 1"):
                    bus.writeline(command)
                    bus.expect_exact(PROMPT, timeout=5)
                saved = record_console(db, bus.transcript, "lab-1")
            finally:
                bus.close()
    finally:
        dut.close()
    assert saved.entries > 8 and saved.lost == 0
    return db


def test_script_cuts_commands_and_replies():
    entries = [ConsoleEntry(0.0, "rx", b"hello\r\n> "), ConsoleEntry(1.0, "tx", b"a\r"),
               ConsoleEntry(1.0, "tx", b"\nb\n"), ConsoleEntry(1.5, "rx", b"B!\r\n"),
               ConsoleEntry(2.0, "rx", b"> ")]
    script = ConsoleScript.from_entries("s", entries)
    assert script.preamble == [(0.0, b"hello\r\n> ")]
    assert script.replies == {b"a": [[]], b"b": [[(0.5, b"B!\r\n"), (1.0, b"> ")]]}
    assert script.prompt == b"> "                   # what replies end with most often


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_recorded_session_answers_like_the_dut(session_db, transport):
    served = serve_replay(session_db, speedup=0, transport=transport, hold=transport == "pty")
    try:
        bus = (SerialBus(served.path, name="replay") if transport == "pty"
               else TcpBus(served.host, served.port, name="replay"))
        served.begin()
        try:
            banner = bus.expect(r"boot: ok v(\S+) ", timeout=5)
            bus.expect_exact(PROMPT, timeout=5)
            assert bus.query("version\n", expect=r"version: (\S+)\r\n").group(1) == \
                banner.group(1)
            first = bus.query("status\n", expect=r"boots: (\d+)").group(0)
            second = bus.query("status\r\n", expect=r"boots: (\d+)").group(0)
            third = bus.query("status\n", expect=r"boots: (\d+)").group(0)
            assert first and second and third == second     # recorded order, last repeats
            bus.query("tx 1\n", expect="tx: done 1")
            error = bus.query("format flash\n", expect=r"error: command 'format flash' was "
                              r"never recorded in session 'lab-1'; recorded commands: [^\r]*")
            assert "'version'" in error.group(0) and "'tx 1'" in error.group(0)
            bus.expect_exact("\r\n" + PROMPT, timeout=5)     # then the prompt, like the DUT
            assert served.console.unknown == ["format flash"]
        finally:
            bus.close()
    finally:
        served.close()


def test_session_names_and_missing_sessions(session_db):
    assert read_console(session_db)[0] == "lab-1"
    with pytest.raises(Exception, match="no console session 'nope'.*lab-1"):
        read_console(session_db, "nope")


def rig(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text(body)
    return path


def test_console_replay_kind_opens_a_bus(tmp_path, session_db):
    loaded = load_rig(rig(tmp_path, f'[c]\nkind = "console_replay"\ndb = "{session_db}"\n'
                                    'speedup = 0.0\n'))
    with simulators_for(loaded) as sims:
        bus = open_resource(loaded["c"], sims)
        try:
            bus.expect_exact(PROMPT, timeout=5)
            bus.query("version\n", expect="version: ")
        finally:
            bus.close()


def test_events_kind_mock_simulator(tmp_path):
    loaded = load_rig(rig(tmp_path, '[ev]\nkind = "events"\nurl = "sim:mock"\n'
                                    'mock_rate = 100.0\ntopics = ["lrs2."]\n'))
    with simulators_for(loaded) as sims:
        sub = open_resource(loaded["ev"], sims)
        try:
            first = sub.expect_event("lrs2.hardware.status", timeout=5)
            assert first.seq == 1                 # the simulator waited for us: nothing missed
        finally:
            sub.close()


@pytest.mark.parametrize("table, key, text", [
    ('url = "sim:replay"\nspeedup = -1.0', "speedup", "out of range"),
    ('url = "sim:replay"\nhistory = 0', "history", "out of range"),
    ('url = "sim:replay"\nsort_by = "time"', "sort_by", "is not one of"),
    ('url = "sim:nothing"', "url", "names no simulator"),
])
def test_events_kind_checks_keys(tmp_path, table, key, text):
    with pytest.raises(RigError, match=text) as info:
        load_rig(rig(tmp_path, f'[ev]\nkind = "events"\n{table}\n'))
    assert info.value.key == key


@pytest.mark.parametrize("table, key, text", [
    ('url = "sim:replay"', "db", "needs the database"),
    ('url = "sim:replay"\ndb = "missing.sqlite"', "db", "does not exist"),
    ('url = "localhost:5556"', "url", "no ZeroMQ address"),
])
def test_events_kind_open_errors_name_the_key(tmp_path, table, key, text):
    loaded = load_rig(rig(tmp_path, f'[ev]\nkind = "events"\n{table}\n'))
    with simulators_for(loaded) as sims, pytest.raises(RigError, match=text) as info:
        open_resource(loaded["ev"], sims)
    assert info.value.key == key


def test_record_console_command_stores_a_session_that_replays(tmp_path, capsys):
    rig_file = tmp_path / "rig.toml"
    rig_file.write_text('[console]\nkind = "tcp"\nhost = "sim"\n')   # no otii: the DUT is on
    db = tmp_path / "lab.sqlite"
    code = record_console_cli.main([f"{rig_file}:console", "--db", str(db), "--session", "s1",
                                    "--send", "version", "--expect", "dut> ",
                                    "--settle", "0.5"])
    assert code == 0, capsys.readouterr().err
    name, entries = read_console(db, "s1")
    assert name == "s1" and any(b"version" in e.data for e in entries if e.direction == "tx")
    assert ConsoleScript.from_entries(name, entries).replies[b"version"]


def test_record_console_command_on_an_unpowered_dut_says_why(tmp_path, capsys):
    rig_file = tmp_path / "rig.toml"     # the simulated otii powers the DUT: off until a test
    rig_file.write_text('[power]\nkind = "otii"\nhost = "sim"\n'
                        '[console]\nkind = "tcp"\nhost = "sim"\n')
    code = record_console_cli.main([f"{rig_file}:console", "--db", str(tmp_path / "x.sqlite"),
                                    "--send", "version", "--timeout", "0.3", "--settle", "0"])
    assert code == 1
    assert "nothing was ever received; is the DUT on?" in capsys.readouterr().err
