"""Links a rig provides (register_link, link_resolver), their states, and the (retcode, result)
form of `execcmd`. Real sockets on 127.0.0.1."""
from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from hil.buses import TcpBus
from hil.buses.compat import (CompatWarning, deinit_all, execcmd, link_bus, link_resolver,
                              open_links, register_link, unregister_link)
from hil.buses.compat.cmd_serial import init_serial, write_serial
from hil.buses.compat.cmd_tcp import (config_tcp, deinit_tcp, init_tcp, inval_tcp,
                                      read_until_tcp, write_bin_tcp, write_tcp,
                                      wrnrd_until_tcp)
from hil.errors import BusError

WAIT = 5.0


@pytest.fixture(autouse=True)
def _no_links_left() -> Iterator[None]:
    yield
    assert deinit_all() == []


@pytest.fixture
def peer() -> Iterator[tuple[TcpBus, socket.socket]]:
    """A TcpBus (as a rig would open it) and the server's side of its connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(WAIT)
        bus = TcpBus("127.0.0.1", listener.getsockname()[1], name="dut", timeout=WAIT)
        conn, _ = listener.accept()
        conn.settimeout(WAIT)
        with conn, bus:
            yield bus, conn


def test_a_registered_bus_is_a_link_by_name(peer: tuple[TcpBus, socket.socket]) -> None:
    bus, conn = peer
    register_link("dut", bus)
    try:
        conn.sendall(b"ready\r\n")
        assert read_until_tcp("dut", r"\n") == "ready"
        write_bin_tcp("dut", "4f4b")
        assert conn.recv(2) == b"OK"
        assert "tx OK" in bus.transcript.render(0)          # the rig bus's own transcript
        assert link_bus("dut") is bus and link_bus("dut", "serial") is bus
        write_serial("dut", "any bus\n")                     # a rig link answers to both
        assert conn.recv(8) == b"any bus\n"
    finally:
        unregister_link("dut")
    with pytest.raises(BusError, match="unknown tcp link 'dut'"):
        write_tcp("dut", "x")


def test_inval_and_deinit_never_close_a_rig_bus(peer: tuple[TcpBus, socket.socket]) -> None:
    bus, conn = peer
    register_link("dut", bus)
    try:
        assert inval_tcp("dut") == "ok"
        with pytest.raises(BusError, match="'dut' is not configured .*invalidated"):
            write_tcp("dut", "x")
        assert config_tcp("dut") == "dut"
        write_tcp("dut", "again\n")
        assert conn.recv(6) == b"again\n"
        assert deinit_tcp("dut") == "ok"
        assert not bus.closed
        write_tcp("dut", "rig link again\n")            # the rig's link shows through again
        assert conn.recv(15) == b"rig link again\n"
    finally:
        unregister_link("dut")


def test_init_of_a_rig_link_warns_and_keeps_the_rig_bus(
        peer: tuple[TcpBus, socket.socket]) -> None:
    bus, conn = peer
    register_link("dut", bus)
    try:
        with pytest.warns(CompatWarning, match="the rig provides 'dut'"):
            init_tcp("dut", "tcp(host=lab-dut.example,port=23)")
        assert config_tcp("dut") == "dut"                # not lab-dut.example: the rig wins
        conn.sendall(b"v1.0\n")
        assert wrnrd_until_tcp("dut", r"version\n", r"\n") == "v1.0"
        assert conn.recv(8) == b"version\n"
        with pytest.raises(Exception, match="key 'port'"):
            init_tcp("dut2", "tcp(host=h)")             # conf strings are still checked
        deinit_tcp("dut")
        assert not bus.closed and open_links() == {}
    finally:
        unregister_link("dut")


def test_a_resolver_provides_rig_links_lazily(peer: tuple[TcpBus, socket.socket],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The mechanism alone: the resolver the hil plugin installs around every test (for this
    suite's own rig) is set aside, so 'eeg' is unknown here rather than that rig's TiA."""
    from hil.buses.compat.links import REGISTRY
    monkeypatch.setattr(REGISTRY, "resolvers", [])
    bus, conn = peer
    asked: list[str] = []

    def resolve(name: str) -> object:
        asked.append(name)
        return {"console": bus, "power": object()}.get(name)

    with link_resolver(resolve):
        write_tcp("console", "hello\n")
        assert conn.recv(6) == b"hello\n"
        with pytest.raises(BusError, match="rig resource 'power' is a object, not a bus"):
            write_tcp("power", "x")
        with pytest.raises(BusError, match="unknown tcp link 'eeg'"):
            write_tcp("eeg", "x")
    assert asked == ["console", "power", "eeg"]
    with pytest.raises(BusError, match="unknown tcp link 'console'"):
        write_tcp("console", "x")                        # the resolver is gone


def test_a_link_of_the_other_family_is_named() -> None:
    init_serial("uart", "serial(device=/dev/ttyUSB0)")
    with pytest.raises(BusError, match="'uart' is a serial link, not a tcp one"):
        write_tcp("uart", "x")


def test_execcmd_gives_the_legacy_retcode_pair(peer: tuple[TcpBus, socket.socket]) -> None:
    bus, conn = peer
    register_link("dut", bus)
    try:
        assert execcmd("write_tcp", "dut", r"ping\n") == (1, "ok")
        assert conn.recv(5) == b"ping\n"
        conn.sendall(b"pong\n")
        assert execcmd("read_until_tcp", "dut", r"\n", "1") == (1, "pong")
        code, message = execcmd("read_until_tcp", "dut", r"\n", "0.05")
        assert code == 0 and message.startswith("tcp: dut: timed out after 0.05 s")
        assert execcmd("init_tcp", "x", "tcp(host=h)")[0] == 0
        assert execcmd("frobnicate_tcp", "dut") == (
            0, "frobnicate_tcp: no such command (the tcp and serial commands are known)")
    finally:
        unregister_link("dut")
