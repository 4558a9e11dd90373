"""The "serial" and "tcp" rig kinds: keys, defaults, and opening the simulated DUT console."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.buses import SerialBus, TcpBus
from hil.errors import RigError, WatcherTriggered
from hil.rig import Simulators, check_table, open_resource
from hil.sim.dut import FIRMWARE_VERSION

WAIT = 10.0


@pytest.fixture
def bench() -> Iterator[Simulators]:
    with Simulators(speed=20.0) as made:
        yield made


def test_serial_keys_have_the_documented_defaults() -> None:
    r = check_table("console", {"kind": "serial", "url": "/dev/ttyUSB0"}, "rig.toml")
    assert dict(r.settings) == {
        "url": "/dev/ttyUSB0", "baudrate": 115200, "bytesize": 8, "parity": "N",
        "stopbits": 1.0, "xonxoff": False, "rtscts": False, "dsrdtr": False,
        "encoding": "utf-8", "line_ending": "\n", "timeout": 10.0, "retention": 16 << 20}


@pytest.mark.parametrize("table, key", [
    ({"kind": "serial"}, "url"),
    ({"kind": "serial", "url": "x", "parity": "X"}, "parity"),
    ({"kind": "serial", "url": "x", "stopbits": 3}, "stopbits"),
    ({"kind": "tcp"}, "host"),
    ({"kind": "tcp", "host": "h", "port": "23"}, "port"),
])
def test_bad_tables_name_the_key(table: dict, key: str) -> None:
    with pytest.raises(RigError, match=f"key '{key}'"):
        check_table("console", table, "rig.toml")


def test_sim_dut_opens_the_virtual_console_through_a_pty(bench: Simulators) -> None:
    r = check_table("console", {"kind": "serial", "url": "sim:dut", "timeout": WAIT}, "sim.toml")
    with open_resource(r, bench) as bus:
        assert isinstance(bus, SerialBus) and bus.url.startswith("/dev/pts/")
        assert bus.name == "console" and bus.timeout == WAIT
        assert bus.expect(r"boot: ok v([\d.]+)").group(1) == FIRMWARE_VERSION
        bus.expect_exact("dut> ")
        assert bus.query("version\n", expect=r"version: (\S+)\r\n").group(1) == FIRMWARE_VERSION
        bus.fail_on("PANIC")
        bus.writeline("panic")
        with pytest.raises(WatcherTriggered, match="assertion failed: sensor_ready"):
            bus.expect("never")


def test_tcp_sim_opens_the_virtual_console_over_tcp(bench: Simulators) -> None:
    r = check_table("shell", {"kind": "tcp", "host": "sim", "timeout": WAIT}, "sim.toml")
    with open_resource(r, bench) as bus:
        assert isinstance(bus, TcpBus) and bus.port > 0
        bus.expect_exact("dut> ")
        assert bus.query("echo hello\n", expect=r"(\w+)\r\n").group(1) == "hello"


def test_tcp_opens_a_real_host_and_port(bench: Simulators) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        r = check_table("shell", {"kind": "tcp", "host": "127.0.0.1",
                                  "port": server.getsockname()[1]}, "lab.toml")
        with open_resource(r, bench) as bus:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"hello\r\n")
                assert bus.read_until(b"\n") == b"hello\r\n"


@pytest.mark.parametrize("table, key", [
    ({"kind": "serial", "url": "sim:otii"}, "url"),
    ({"kind": "tcp", "host": "sim:dut"}, "host"),
    ({"kind": "tcp", "host": "127.0.0.1"}, "port"),
])
def test_bad_values_are_rig_errors_naming_file_table_and_key(bench: Simulators, table: dict,
                                                             key: str) -> None:
    with pytest.raises(RigError, match=rf"rigs/lab.toml, table \[console\], key '{key}'"):
        open_resource(check_table("console", table, str(Path("rigs/lab.toml"))), bench)
