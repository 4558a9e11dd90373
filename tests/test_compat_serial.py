"""`hil.buses.compat.cmd_serial` against the virtual DUT on a pty, and against a raw socket
through pyserial's socket:// URL."""
from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from hil.buses.compat import deinit_all, link_bus
from hil.buses.compat.cmd_serial import (config_serial, deinit_serial, expect_serial,
                                         init_serial, inval_serial, read_bin_serial,
                                         read_bin_until_serial, read_serial, read_until_serial,
                                         write_bin_serial, write_serial, wrnrd_bin_serial,
                                         wrnrd_bin_until_serial, wrnrd_serial,
                                         wrnrd_until_serial)
from hil.buses.compat.cmd_tcp import config_tcp, init_tcp, wrnrd_until_tcp
from hil.errors import BusConnectError, BusDataError, BusError, BusTimeout
from hil.sim.dut import FIRMWARE_VERSION, VirtualDut
from hil.sim.dut_server import PtyConsole, serve_pty, serve_tcp
from waiting import wait_until

WAIT = 5.0


@pytest.fixture(autouse=True)
def _no_links_left() -> Iterator[None]:
    yield
    assert deinit_all() == []


@pytest.fixture
def dut() -> Iterator[VirtualDut]:
    board = VirtualDut(speed=20.0)              # off: open_dut powers it once it listens
    yield board
    board.close()


@pytest.fixture
def pty(dut: VirtualDut) -> Iterator[PtyConsole]:
    with serve_pty(dut) as console:
        yield console


def open_dut(pty: PtyConsole, link_id: str = "dut") -> None:
    """A configured link to the DUT's pty, its boot read through to the first prompt."""
    init_serial(link_id, f"serial(device={pty.path},baudrate=115200,timeout={WAIT})")
    assert config_serial(link_id) == pty.path
    if not pty.dut.powered:
        pty.dut.set_supply(True, 3.3)
    expect_serial(link_id, r"boot: ok")
    assert read_until_serial(link_id, "dut> ") == f" v{FIRMWARE_VERSION} (sensor-node, reset #1)"


def test_each_function_against_the_virtual_dut(pty: PtyConsole) -> None:
    open_dut(pty)
    assert wrnrd_until_serial("dut", r"version\n", r"\n") == f"version: {FIRMWARE_VERSION}"
    assert expect_serial("dut", "dut> ") == "Pattern found"
    assert wrnrd_serial("dut", r"echo abc\r\n", 5) == "abc"
    assert read_serial("dut", 5) == "dut> "
    assert wrnrd_bin_serial("dut", "6563686f2041420a", 4) == "41420d0a"   # "echo AB\n"
    expect_serial("dut", "dut> ")
    assert wrnrd_bin_until_serial("dut", "6563686f2068690a", r"\r\n") == "6869"
    expect_serial("dut", "dut> ")
    write_serial("dut", r"echo key=value;\n")
    assert read_until_serial("dut", r"=,;") == "key"
    assert read_bin_until_serial("dut", r";,\n") == "76616c7565"
    write_bin_serial("dut", "656368")
    write_serial("dut", r"o done\n")
    assert expect_serial("dut", r"done\r\n").match.before == b"\r\ndut> "
    assert read_bin_serial("dut", 5) == "6475743e20"


def test_a_serial_read_returns_what_came_by_its_timeout(pty: PtyConsole) -> None:
    """As pyserial's read did: fewer bytes than asked is a result, not an error."""
    open_dut(pty)
    bus = link_bus("dut", "serial")
    before = bus.received
    write_serial("dut", r"echo abc\n")
    wait_until(lambda: bus.received >= before + 10, "the whole reply")   # "abc\r\ndut> "
    assert read_serial("dut", 100, 0.2) == "abcdut> "
    with pytest.raises(BusTimeout, match="100 bytes"):
        read_serial("dut", 100, 0.1)          # nothing at all came: still an error


def test_serial_and_tcp_links_at_once_on_one_board(dut: VirtualDut, pty: PtyConsole) -> None:
    with serve_tcp(dut) as tcp:
        open_dut(pty, "uart")
        init_tcp("net", f"tcp(host=127.0.0.1,port={tcp.port},timeout={WAIT})")
        config_tcp("net")
        link_bus("net").drain()
        assert wrnrd_until_tcp("net", r"echo over tcp\n", r"\n").endswith("over tcp")
        assert expect_serial("uart", "over tcp") == "Pattern found"   # one board, both consoles


@pytest.fixture
def raw() -> Iterator[tuple[str, socket.socket]]:
    """A serial link over socket:// to a plain socket, and that socket's side."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(WAIT)
        port = listener.getsockname()[1]
        init_serial("raw", f"serial(url=socket://127.0.0.1:{port},timeout={WAIT},"
                           "nibbles=low_first)")
        config_serial("raw")
        conn, _ = listener.accept()
        conn.settimeout(WAIT)
        with conn:
            yield "raw", conn


def test_hex_and_end_characters_over_a_raw_serial_peer(raw: tuple[str, socket.socket]) -> None:
    link, conn = raw
    write_bin_serial(link, "a0f1")                       # low nibble first: 0a 1f
    assert conn.recv(2) == b"\x0a\x1f"
    conn.sendall(b"one\rtwo\nthree\x00>")
    assert read_until_serial(link, r"\n,\r") == "one"
    assert read_until_serial(link, r"\n,\r") == "two"
    assert read_until_serial(link, ">") == "three"      # the NUL dropped
    conn.sendall(b"\xab\xcd!")
    assert read_bin_until_serial(link, "!") == "badc"
    with pytest.raises(BusDataError, match="odd number"):
        write_bin_serial(link, "abc")


def test_a_missing_device_fails_at_config_and_the_link_stays_unconfigured() -> None:
    init_serial("ghost", "serial(device=/dev/hil-no-such-tty)")
    with pytest.raises(BusConnectError, match="/dev/hil-no-such-tty"):
        config_serial("ghost")
    with pytest.raises(BusError, match="'ghost' is not configured"):
        write_serial("ghost", "x")


def test_a_usb_id_no_port_has_is_named() -> None:
    init_serial("usb", "serial(vendor=fffe,product=0001,serialnum=XYZ)")
    with pytest.raises(BusConnectError, match="no connected port is USB fffe:0001 serial XYZ"):
        config_serial("usb")


def test_serial_link_states(pty: PtyConsole) -> None:
    open_dut(pty, "s")
    assert inval_serial("s") == "ok"
    with pytest.raises(BusError, match="invalidated by inval_serial"):
        expect_serial("s", "x")
    config_serial("s")
    assert wrnrd_until_serial("s", r"version\n", r"\n") == f"version: {FIRMWARE_VERSION}"
    assert deinit_serial("s") == "ok"
    with pytest.raises(BusError, match="was deinitialised by deinit_serial"):
        read_serial("s", 1)
