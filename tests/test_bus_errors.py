"""Bad input and bad peers: missing devices, refused connections, floods, a dying reader."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from hil.buses import Bus, SerialBus, TcpBus
from hil.errors import BusConnectError, BusTimeout, ConnectionLost, PatternError

WAIT = 5.0
MiB = 1 << 20


def free_port() -> int:
    """A local port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_names_host_port_and_reason() -> None:
    port = free_port()
    with pytest.raises(BusConnectError, match=rf"127\.0\.0\.1:{port}: Connection refused"):
        TcpBus("127.0.0.1", port, connect_timeout=WAIT)


def test_missing_serial_device_names_the_path_and_reason() -> None:
    with pytest.raises(BusConnectError, match=r"/dev/ttyHIL-missing: No such file or directory"):
        SerialBus("/dev/ttyHIL-missing")


def test_refused_socket_url_and_unknown_url_scheme() -> None:
    url = f"socket://127.0.0.1:{free_port()}"
    with pytest.raises(BusConnectError, match=rf"{url}.*refused"):
        SerialBus(url)
    with pytest.raises(BusConnectError, match="nope://x"):
        SerialBus("nope://x")


def test_invalid_regex_names_the_pattern() -> None:
    with SerialBus("loop://", timeout=WAIT) as bus, \
            pytest.raises(PatternError, match=r"invalid regex 'value=\[0-9'"):
        bus.expect(r"value=[0-9")


def test_unsupported_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="utf-16"):
        SerialBus("loop://", encoding="utf-16")


def test_a_50_mib_flood_nobody_reads_keeps_memory_bounded() -> None:
    total, retention = 50 * MiB, 1 * MiB
    with socket.create_server(("127.0.0.1", 0)) as server:
        bus = TcpBus("127.0.0.1", server.getsockname()[1], timeout=WAIT, retention=retention)
        conn, _ = server.accept()
    block = b"flood line lorem ipsum dolor sit amet 0123456789\r\n" * 1300
    try:
        sent = 0
        while sent < total:
            conn.sendall(block)
            sent += len(block)
        conn.sendall(b"END OF FLOOD\r\n")
        sent += 14
        assert bus.expect_exact("END OF FLOOD", timeout=30).end == sent - 2
        assert bus.buffer.used <= retention == len(bus.buffer.data)
        assert bus.buffer.dropped > 0 and bus.buffer.dropped + bus.buffer.used == sent
        assert len(bus.transcript._tx) == 0 and len(bus.buffer._ends) < 100_000
        rx = [e for e in bus.transcript.raw() if e.direction == "rx"]
        assert sum(len(e.data) for e in rx) <= retention and sum(e.lost for e in rx) > 0
    finally:
        bus.close()
        conn.close()


def test_a_reader_exception_is_not_swallowed() -> None:
    class Broken:
        """Delivers some output, then fails like a USB adapter being unplugged."""

        description, direct = "broken", False

        def __init__(self) -> None:
            self.calls = 0

        def wait(self) -> bool:
            return True

        def read_into(self, room: memoryview) -> int:
            self.calls += 1
            if self.calls == 1:
                room[:14] = b"partial output"
                return 14
            raise OSError(5, "Input/output error")

        def write(self, data: bytes, timeout: float) -> None: ...
        def wake(self) -> None: ...
        def close(self) -> None: ...

    with Bus(Broken(), timeout=WAIT) as bus:
        with pytest.raises(ConnectionLost, match="reader failed: OSError.*Input/output") as e:
            bus.expect("never")
        assert isinstance(e.value.__cause__, OSError) and "partial output" in str(e.value)
        with pytest.raises(ConnectionLost):
            bus.write(b"x")


def test_the_pty_device_vanishing_is_connection_lost() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    bus = SerialBus(path, timeout=WAIT)
    try:
        threading.Timer(0.05, lambda: (os.close(slave), os.close(master))).start()
        with pytest.raises(ConnectionLost, match=f"{path}: connection lost waiting for"):
            bus.expect("never", timeout=60)
    finally:
        bus.close()


def test_close_stops_the_reader_thread() -> None:
    bus = SerialBus("loop://", timeout=WAIT)
    reader = bus._reader
    bus.close()
    deadline = time.monotonic() + WAIT
    while reader.is_alive():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_writing_to_a_peer_that_does_not_read_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        bus = TcpBus("127.0.0.1", server.getsockname()[1], timeout=0.2)
        conn, _ = server.accept()
    master, slave = os.openpty()
    serial_bus = SerialBus(os.ttyname(slave), timeout=0.2)
    try:
        for stuck in (bus, serial_bus):
            with pytest.raises(BusTimeout, match=r"timed out after 0.2 s writing .* not reading"):
                stuck.write(b"x" * (64 * MiB))
    finally:
        bus.close()
        serial_bus.close()
        conn.close()
        os.close(slave)
        os.close(master)
