"""The virtual DUT console served on a pseudo-terminal (pyserial) and on TCP (raw sockets)."""
from __future__ import annotations

import logging
import os
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import pytest
import serial
from dut_text import golden_log
from waiting import wait_until as _wait_until

from hil.sim.dut import PROMPT, VirtualDut
from hil.sim.dut_server import OutputBuffer, PtyConsole, TcpConsole, serve_pty, serve_tcp

SPEED = 20.0
WAIT_S = 10.0
wait_until = partial(_wait_until, timeout=WAIT_S)     # this file's waits are longer
BIG = 10 * 1024 * 1024


def read_until(recv: Callable[[], bytes], pattern: bytes, timeout: float = WAIT_S) -> bytes:
    """Read chunks until `pattern` arrives; everything read, up to and including it.

    Only the newest chunk (plus a pattern's length) is searched, so 10 MiB stays linear."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    searched = 0
    while (at := data.find(pattern, max(0, searched - len(pattern)))) < 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} within {timeout} s; got {len(data)} bytes "
                                 f"ending {bytes(data[-200:])!r}")
        searched = len(data)
        data += recv()
    return bytes(data[:at + len(pattern)])


def read_n(recv: Callable[[], bytes], n: int, timeout: float = WAIT_S) -> bytes:
    """Read exactly until `n` bytes have arrived (or fail after `timeout`)."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while len(data) < n:
        assert time.monotonic() < deadline, f"only {len(data)} of {n} bytes in {timeout} s"
        data += recv()
    return bytes(data)


def serial_recv(port: serial.Serial) -> Callable[[], bytes]:
    """Whatever has arrived (waiting up to the port's timeout for the first byte)."""
    return lambda: port.read(1) + port.read(port.in_waiting)


def socket_recv(sock: socket.socket) -> Callable[[], bytes]:
    def recv() -> bytes:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return b""
        if not data:
            raise AssertionError("the server closed the connection")
        return data
    return recv


def log_done(dut: VirtualDut, n: int) -> Callable[[], bool]:
    return lambda: any(f"log: done {n} bytes" in ln.text for ln in dut.uart_lines())


@pytest.fixture
def dut() -> Iterator[VirtualDut]:
    board = VirtualDut(speed=SPEED)
    yield board
    board.close()


@pytest.fixture
def pty(dut: VirtualDut) -> Iterator[PtyConsole]:
    console = serve_pty(dut)
    yield console
    console.close()


@pytest.fixture
def tcp(dut: VirtualDut) -> Iterator[TcpConsole]:
    console = serve_tcp(dut)
    yield console
    console.close()


def open_port(console: PtyConsole) -> serial.Serial:
    return serial.Serial(console.path, baudrate=115200, timeout=0.1)


def connect(console: TcpConsole, clients_after: int | None = None) -> socket.socket:
    """Connect and wait until the server has accepted (so the client sees all later output)."""
    before = console.clients
    sock = socket.create_connection((console.host, console.port), timeout=WAIT_S)
    sock.settimeout(0.1)
    wait_until(lambda: console.clients >= (clients_after or before + 1), "the server to accept")
    return sock


def powered(dut: VirtualDut, recv: Callable[[], bytes]) -> bytes:
    """Switch the board on and return its banner up to the first prompt."""
    dut.set_supply(True, 3.3)
    return read_until(recv, PROMPT)


class FakeDut:
    """Stands in for VirtualDut to test the transport alone: records input, emits on demand."""

    def __init__(self, feed_error: Exception | None = None) -> None:
        self.fed = bytearray()
        self.listeners: list[Callable[[bytes], None]] = []
        self.feed_error = feed_error

    def attach(self, listener: Callable[[bytes], None], *,
               greet: bool = False) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def feed(self, data: bytes) -> None:
        if self.feed_error:
            raise self.feed_error
        self.fed += data

    def emit(self, data: bytes) -> None:
        for listener in list(self.listeners):
            listener(data)


ALL_BYTES = bytes(range(256)) * 4


# --------------------------------------------------------------------------- pty
def test_pty_is_a_raw_tty(pty: PtyConsole) -> None:
    assert pty.path.startswith("/dev/") and os.path.exists(pty.path)
    fd = os.open(pty.path, os.O_RDWR | os.O_NOCTTY)
    try:
        assert os.isatty(fd)
        iflag, oflag, _, lflag, *_ = termios.tcgetattr(fd)
        assert not lflag & (termios.ECHO | termios.ICANON | termios.ISIG)
        assert not oflag & termios.OPOST
        assert not iflag & (termios.ICRNL | termios.INLCR | termios.IGNCR | termios.IXON)
    finally:
        os.close(fd)


def test_pty_passes_every_byte_unchanged_both_ways() -> None:
    fake = FakeDut()
    with serve_pty(fake) as console, open_port(console) as port:   # type: ignore[arg-type]
        port.write(ALL_BYTES)
        wait_until(lambda: len(fake.fed) >= len(ALL_BYTES), "input to reach the DUT")
        assert bytes(fake.fed) == ALL_BYTES
        fake.emit(ALL_BYTES)
        assert read_n(serial_recv(port), len(ALL_BYTES)) == ALL_BYTES


def test_pty_banner_and_commands(dut: VirtualDut, pty: PtyConsole) -> None:
    with open_port(pty) as port:
        banner = powered(dut, serial_recv(port))
        assert b"hil-dut bootloader 2.1\r\n" in banner and b"boot: ok v1.4.2" in banner
        port.write(b"version\n")
        assert read_until(serial_recv(port), PROMPT) == b"version: 1.4.2\r\n" + PROMPT
        port.write(b"bogus\n")
        assert b"error: unknown command 'bogus'" in read_until(serial_recv(port), PROMPT)


def test_pty_delivers_10_mib_log_intact(dut: VirtualDut, pty: PtyConsole) -> None:
    with open_port(pty) as port:
        powered(dut, serial_recv(port))
        port.write(b"log %d\n" % BIG)
        data = read_until(serial_recv(port), b"log: done %d bytes\r\n" % BIG, timeout=60)
    assert data == golden_log(BIG) + b"log: done %d bytes\r\n" % BIG
    assert pty.dropped == 0


def test_pty_client_can_close_and_reopen(dut: VirtualDut, pty: PtyConsole) -> None:
    dut.set_supply(True, 3.3)
    for word in (b"first", b"second", b"third"):
        with open_port(pty) as port:
            port.write(b"echo " + word + b"\n")
            read_until(serial_recv(port), word + b"\r\n")
    assert pty.error is None


def test_pty_output_is_bounded_when_nobody_reads(dut: VirtualDut) -> None:
    limit = 64 * 1024
    with serve_pty(dut, buffer_bytes=limit, stall_seconds=0.2) as console:
        dut.set_supply(True, 3.3)
        dut.feed(b"log 2000000\n")                    # nobody has the pty open
        wait_until(log_done(dut, 2_000_000), "the log to finish")
        assert console.pending <= limit
        assert console.dropped > 2_000_000 - 4 * limit
        with open_port(console) as port:              # still serving afterwards
            port.write(b"echo still here\n")
            read_until(serial_recv(port), b"still here\r\n")


def test_pty_client_that_stops_reading_loses_only_old_output(dut: VirtualDut) -> None:
    with serve_pty(dut, buffer_bytes=64 * 1024, stall_seconds=0.2) as console, \
            open_port(console) as port:
        powered(dut, serial_recv(port))
        port.write(b"log 1000000\n")                  # ...and read nothing meanwhile
        wait_until(log_done(dut, 1_000_000), "the log to finish")
        assert console.dropped > 0
        port.write(b"echo fresh\n")
        tail = read_until(serial_recv(port), b"fresh\r\n")
        assert b"log: done 1000000 bytes\r\n" in tail


# --------------------------------------------------------------------------- tcp
def test_tcp_passes_every_byte_unchanged_both_ways() -> None:
    fake = FakeDut()
    with serve_tcp(fake) as console, connect(console) as sock:     # type: ignore[arg-type]
        sock.sendall(ALL_BYTES)
        wait_until(lambda: len(fake.fed) >= len(ALL_BYTES), "input to reach the DUT")
        assert bytes(fake.fed) == ALL_BYTES
        fake.emit(ALL_BYTES)
        assert read_n(socket_recv(sock), len(ALL_BYTES)) == ALL_BYTES


def test_tcp_banner_and_commands(dut: VirtualDut, tcp: TcpConsole) -> None:
    with connect(tcp) as sock:
        banner = powered(dut, socket_recv(sock))
        assert banner.startswith(b"\r\nhil-dut bootloader") and b"boot: ok v1.4.2" in banner
        sock.sendall(b"version\n")
        assert read_until(socket_recv(sock), PROMPT) == b"version: 1.4.2\r\n" + PROMPT


def test_tcp_client_of_a_booted_board_gets_the_prompt_at_once(dut: VirtualDut,
                                                              tcp: TcpConsole) -> None:
    with connect(tcp) as first:
        powered(dut, socket_recv(first))
        with connect(tcp) as late:
            assert read_until(socket_recv(late), PROMPT) == PROMPT
            first.sendall(b"echo x\n")          # the first client got no second prompt
            assert read_until(socket_recv(first), b"x\r\n") == b"x\r\n"
            assert read_until(socket_recv(late), PROMPT) == b"x\r\n" + PROMPT


def test_tcp_client_joining_mid_command_gets_no_prompt_before_its_output(
        dut: VirtualDut, tcp: TcpConsole) -> None:
    with connect(tcp) as first:
        powered(dut, socket_recv(first))
        first.sendall(b"sleep 600\n")            # busy until woken
        read_until(socket_recv(first), b"sleep: entering")
        with connect(tcp) as late:
            dut.set_input(1, True)               # wake it: the command ends
            data = read_until(socket_recv(late), PROMPT)
        assert data.startswith(b"sleep: awake after") and data.count(PROMPT) == 1


def test_tcp_delivers_10_mib_log_intact(dut: VirtualDut, tcp: TcpConsole) -> None:
    with connect(tcp) as sock:
        powered(dut, socket_recv(sock))
        sock.sendall(b"log %d\n" % BIG)
        data = read_until(socket_recv(sock), b"log: done %d bytes\r\n" % BIG, timeout=60)
    assert data == golden_log(BIG) + b"log: done %d bytes\r\n" % BIG
    assert tcp.dropped == 0


def test_two_tcp_clients_share_the_console(dut: VirtualDut, tcp: TcpConsole) -> None:
    with connect(tcp) as a, connect(tcp) as b:
        for sock in (a, b):
            assert b"boot: ok" in powered(dut, socket_recv(sock))
        a.sendall(b"echo from a\n")
        b_got = read_until(socket_recv(b), b"from a\r\n")
        assert b"from a\r\n" in read_until(socket_recv(a), b"from a\r\n") and b_got
        b.sendall(b"echo from b\n")
        for sock in (a, b):
            read_until(socket_recv(sock), b"from b\r\n")


def test_tcp_stalled_client_does_not_hold_back_a_reader(dut: VirtualDut) -> None:
    n = 4 * 1024 * 1024
    with serve_tcp(dut, buffer_bytes=64 * 1024, stall_seconds=1.5) as console:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((console.host, console.port))
        with stalled, connect(console, clients_after=2) as reader:
            powered(dut, socket_recv(reader))
            reader.sendall(b"log %d\n" % n)
            data = read_until(socket_recv(reader), b"log: done %d bytes\r\n" % n, timeout=60)
            assert data == golden_log(n) + b"log: done %d bytes\r\n" % n
            assert console.dropped > 0                # all of it the stalled client's


def test_tcp_client_vanishing_mid_stream_does_not_break_the_server(
        dut: VirtualDut, tcp: TcpConsole) -> None:
    dut.set_supply(True, 3.3)
    with connect(tcp) as gone:
        gone.sendall(b"log 3000000\n")
        read_until(socket_recv(gone), b"log 00000100")
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # closed with a reset while the server was sending
    wait_until(lambda: tcp.clients == 0, "the server to notice the client left")
    with connect(tcp) as sock:
        sock.sendall(b"echo alive\n")
        read_until(socket_recv(sock), b"alive\r\n", timeout=30)
    assert tcp.error is None


def test_tcp_client_can_disconnect_and_reconnect(dut: VirtualDut, tcp: TcpConsole) -> None:
    dut.set_supply(True, 3.3)
    for word in (b"one", b"two"):
        with connect(tcp) as sock:
            sock.sendall(b"echo " + word + b"\n")
            read_until(socket_recv(sock), word + b"\r\n")
        wait_until(lambda: tcp.clients == 0, "the server to drop the client")


def test_tcp_port_in_use_is_a_clear_error(tcp: TcpConsole, dut: VirtualDut) -> None:
    from hil.errors import SimulatorError
    with pytest.raises(SimulatorError, match=f"cannot listen on 127.0.0.1:{tcp.port}"):
        serve_tcp(dut, port=tcp.port)


# --------------------------------------------------------------------------- life cycle
def _close_in_thread(console: PtyConsole | TcpConsole) -> None:
    closer = threading.Thread(target=console.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "close() hung"


def test_close_is_prompt_while_output_is_stuck(dut: VirtualDut) -> None:
    pty = serve_pty(dut)
    tcp = serve_tcp(dut)
    idle = socket.create_connection((tcp.host, tcp.port))     # connected, never reads
    idle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        wait_until(lambda: tcp.clients == 1, "the server to accept")
        dut.set_supply(True, 3.3)
        dut.feed(b"log 50000000\n")
        wait_until(lambda: pty.pending > 0 and any(
            "log 00001000" in ln.text for ln in dut.uart_lines()), "output to pile up")
        _close_in_thread(tcp)
        _close_in_thread(pty)
        dut.set_supply(False)                      # stop the log
        wait_until(lambda: not [t for t in threading.enumerate()
                                if t.name.startswith(("dut-pty", "dut-tcp"))],
                   "the console threads to end")
    finally:
        idle.close()
        tcp.close()
        pty.close()


def test_close_twice_is_harmless(dut: VirtualDut) -> None:
    for console in (serve_pty(dut), serve_tcp(dut)):
        console.close()
        console.close()


def test_thread_error_is_logged_and_recorded(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeDut(feed_error=RuntimeError("feed exploded"))
    with caplog.at_level(logging.ERROR, logger="hil.sim.dut_server"):
        with serve_pty(fake) as console, open_port(console) as port:   # type: ignore[arg-type]
            port.write(b"x")
            wait_until(lambda: console.error is not None, "the error to be recorded")
            assert isinstance(console.error, RuntimeError)
    assert any("reader stopped" in r.getMessage() and "feed exploded" in r.getMessage()
               for r in caplog.records)


def test_tcp_client_error_is_logged_and_server_keeps_serving(
        caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeDut(feed_error=RuntimeError("feed exploded"))
    with caplog.at_level(logging.ERROR, logger="hil.sim.dut_server"):
        with serve_tcp(fake) as console:                                # type: ignore[arg-type]
            with connect(console) as sock:
                sock.sendall(b"x")
                wait_until(lambda: console.clients == 0, "the bad client to be dropped")
            fake.feed_error = None
            with connect(console) as sock:
                sock.sendall(b"ok")
                wait_until(lambda: bytes(fake.fed) == b"ok", "the next client's input")
            assert console.error is None
    assert any("feed exploded" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- output buffer
def test_output_buffer_drops_oldest_when_nobody_takes() -> None:
    buf = OutputBuffer(limit=10, stall_seconds=0.05)
    buf.put(b"0123456789")
    buf.put(b"abcdef")                       # waits ~stall_seconds, then drops the oldest
    assert buf.pending == 10 and buf.dropped == 6
    assert buf.take(100) == b"6789abcdef"


def test_output_buffer_holds_the_producer_back_while_the_reader_keeps_up() -> None:
    buf = OutputBuffer(limit=1000, stall_seconds=5.0)
    got = bytearray()

    data = bytes(range(256)) * 800

    def reader() -> None:
        while len(got) < len(data):
            chunk = buf.take(300)
            got.extend(chunk)
            buf.wrote(len(chunk))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(0, len(data), 777):
        buf.put(data[i:i + 777])
    thread.join(WAIT_S)
    assert not thread.is_alive() and bytes(got) == data and buf.dropped == 0
