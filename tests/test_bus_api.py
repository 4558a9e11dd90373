"""The Bus API over real transports: a pseudo-terminal opened through pyserial (like a USB
UART), a loopback TCP socket, and pyserial's loop://. The test plays the device's side."""
from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from hil import clock
from hil.buses import Bus, Match, SerialBus, TcpBus
from hil.errors import BusDataError, BusError, BusTimeout, ConnectionLost
from waiting import wait_until

WAIT = 5.0          # every wait in these tests ends by then (no test should come close)


@dataclass
class Device:
    """The far end of a bus: what the DUT would do."""

    send: Callable[[bytes], None]
    recv: Callable[[], bytes]
    hang_up: Callable[[], None]


class PtyLink:
    """A pty pair: the bus opens the slave by path through pyserial, the test owns the master."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        self.bus = SerialBus(os.ttyname(self.slave), timeout=WAIT)
        self.device = Device(self._send, lambda: os.read(self.master, 65536), self.hang_up)

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def hang_up(self) -> None:
        os.close(self.slave)
        os.close(self.master)
        self.master = self.slave = -1

    def close(self) -> None:
        self.bus.close()
        if self.master >= 0:
            self.hang_up()


class TcpLink:
    """A TCP connection on 127.0.0.1: the bus connects, the test accepts."""

    def __init__(self) -> None:
        with socket.create_server(("127.0.0.1", 0)) as server:
            self.bus = TcpBus("127.0.0.1", server.getsockname()[1], timeout=WAIT)
            self.conn, _ = server.accept()
        self.conn.settimeout(WAIT)
        self.device = Device(self.conn.sendall, lambda: self.conn.recv(65536), self.hang_up)

    def hang_up(self) -> None:
        self.conn.close()

    def close(self) -> None:
        self.bus.close()
        self.conn.close()


@pytest.fixture(params=["pty", "tcp"])
def link(request: pytest.FixtureRequest) -> Iterator[PtyLink | TcpLink]:
    made = PtyLink() if request.param == "pty" else TcpLink()
    yield made
    made.close()


@pytest.fixture
def bus(link: PtyLink | TcpLink) -> Bus:
    return link.bus


@pytest.fixture
def device(link: PtyLink | TcpLink) -> Device:
    return link.device


def received(bus: Bus, n: int) -> None:
    wait_until(lambda: bus.received >= n, f"{n} bytes received")


def recv_exactly(device: Device, n: int) -> bytes:
    data = b""
    while len(data) < n:
        data += device.recv()
    return data


# ------------------------------------------------------------------ expect
def test_expect_returns_a_match_with_groups_offsets_before_and_time(bus: Bus,
                                                                    device: Device) -> None:
    sent_at = clock.now()
    device.send(b"boot\r\nversion: 1.4.2 (build=77)\r\n")
    m = bus.expect(r"version: (?P<v>[\d.]+) \(build=(\d+)\)")
    assert isinstance(m, Match) and m.index == 0
    assert m.group() == "version: 1.4.2 (build=77)" and m.group(1) == "1.4.2"
    assert m.groups() == ("1.4.2", "77") and m.groupdict() == {"v": "1.4.2"} and m["v"] == "1.4.2"
    assert m.group(1, 2) == ("1.4.2", "77")
    assert (m.start, m.end) == (6, 31) and m.before == "boot\r\n"
    assert sent_at <= m.time <= clock.now()


def test_expect_consumes_so_the_next_expect_finds_the_next_occurrence(bus: Bus,
                                                                     device: Device) -> None:
    device.send(b"tick 1\r\ntick 2\r\ntick 3\r\n")
    assert [bus.expect(r"tick (\d)").group(1) for _ in range(3)] == ["1", "2", "3"]
    with pytest.raises(BusTimeout):
        bus.expect(r"tick (\d)", timeout=0.05)


def test_a_zero_width_pattern_matches_at_the_cursor_with_nothing_unread(bus: Bus,
                                                                       device: Device) -> None:
    device.send(b"abc\n")
    bus.expect("abc")
    assert bus.read(1) == b"\n"
    # nothing is unread, yet the look-behind sees the consumed bytes: a match, not a wait
    match = bus.expect(r"(?<=\n)", timeout=0.5)
    assert (match.start, match.end, match.text) == (4, 4, "")


def test_expect_a_list_reports_which_pattern_matched(bus: Bus, device: Device) -> None:
    device.send(b"login: ")
    m = bus.expect([r"Password:", r"login: ", r"\$ "])
    assert (m.index, m.pattern) == (1, r"login: ")


def test_a_value_split_across_writes_is_not_cut_short(bus: Bus, device: Device) -> None:
    bus.settle = WAIT                     # the rest comes "a little later": never too late
    device.send(b"value=12")
    waiter = threading.Timer(0.02, device.send, [b"345\r\n"])   # the rest, a little later
    waiter.start()
    try:
        assert bus.expect(r"value=(\d+)").group(1) == "12345"
    finally:
        waiter.join()


def test_a_match_at_the_end_is_taken_once_the_device_stays_silent(bus: Bus,
                                                                  device: Device) -> None:
    device.send(b"value=12")
    assert bus.expect(r"value=(\d+)").group(1) == "12"


def test_expect_exact_and_bytes_patterns(bus: Bus, device: Device) -> None:
    device.send(b"a+b=(c)\r\n\x00\x01\xfe\xff data")
    m = bus.expect_exact("a+b=(c)")
    assert (m.group(), m.start) == ("a+b=(c)", 0)
    m = bus.expect(rb"\xfe\xff (\w+)")
    assert m.group(1) == b"data" and m.before == b"\r\n\x00\x01"


def test_invalid_utf8_never_breaks_text_matching(bus: Bus, device: Device) -> None:
    device.send(b"\xff\xfe garbage \xc3 then ok=1\r\n")
    m = bus.expect(r"ok=(\d)")
    assert m.group(1) == "1" and m.before == "\ufffd\ufffd garbage \ufffd then "


def test_dollar_matches_before_crlf(bus: Bus, device: Device) -> None:
    device.send(b"temp: 21.5 C (ok)\r\ntemp: 22.0 C\r\n")
    assert bus.expect(r"^temp: ([\d.]+) C$").group(1) == "22.0"


# ------------------------------------------------------------------ reads
def test_read_returns_exactly_n_bytes(bus: Bus, device: Device) -> None:
    device.send(b"abcdef")
    assert bus.read(4) == b"abcd" and bus.read(2) == b"ef"
    with pytest.raises(BusTimeout, match="1 bytes"):
        bus.read(1, timeout=0.05)


def test_read_until_returns_up_to_the_terminator_in_its_type(bus: Bus, device: Device) -> None:
    device.send(b"line one\r\nline two\nA;B|C")
    assert bus.read_until() == b"line one\r\n"
    assert bus.read_until("\n") == "line two\n"
    assert bus.read_until([b"|", b";"]) == b"A;"


def test_lines_yields_complete_lines_then_stops_at_the_timeout(bus: Bus, device: Device) -> None:
    device.send(b"one\r\ntwo\nthr")
    assert list(bus.lines(timeout=0.1)) == ["one", "two"]
    device.send(b"ee\r\n")
    assert next(bus.lines()) == "three"


def test_drain_discards_unread_bytes(bus: Bus, device: Device) -> None:
    device.send(b"stale ok\r\n")
    received(bus, 10)
    assert bus.drain() == b"stale ok\r\n" and bus.pending == 0
    device.send(b"fresh ok\r\n")
    assert bus.expect(r"(\w+) ok").group(1) == "fresh"


def test_query_writes_then_waits_ignoring_earlier_output(bus: Bus, device: Device) -> None:
    device.send(b"sleep: awake (old)\r\n")
    received(bus, 20)

    def answer() -> None:
        assert recv_exactly(device, 8) == b"sleep 2\n"
        device.send(b"sleep: entering\r\nsleep: awake (new)\r\n")
    answering = threading.Thread(target=answer)
    answering.start()
    m = bus.query("sleep 2\n", expect=r"awake \((\w+)\)")
    answering.join(WAIT)
    assert m.group(1) == "new" and m.before == "sleep: entering\r\nsleep: "


def test_mark_remembers_offset_and_time(bus: Bus, device: Device) -> None:
    device.send(b"12345")
    received(bus, 5)
    before = clock.now()
    mark = bus.mark("sleep")
    assert bus.marks["sleep"] is mark and mark.offset == 5 and before <= mark.time <= clock.now()


# ------------------------------------------------------------------ writes
def test_write_writeline_and_write_hex_send_the_right_bytes(bus: Bus, device: Device) -> None:
    bus.write(b"\x00raw")
    bus.write("tëxt")
    bus.writeline("cmd")
    bus.write_hex("0a1B ff 00")
    assert recv_exactly(device, 16) == b"\x00raw" + "tëxt".encode() + b"cmd\n\x0a\x1b\xff\x00"


@pytest.mark.parametrize("timeout", [-1, float("nan"), float("inf"), "5", True])
def test_a_timeout_that_is_no_time_is_refused_clearly(bus: Bus, timeout: object) -> None:
    for call in (lambda: bus.expect("x", timeout=timeout), lambda: bus.read(1, timeout),
                 lambda: bus.read_until(b"\n", timeout), lambda: list(bus.lines(timeout)),
                 lambda: setattr(bus, "timeout", timeout)):
        with pytest.raises(BusDataError, match=rf"{bus.name}: timeout must be a finite number "
                                               rf"of seconds, 0 or more; got {timeout!r}"):
            call()
    assert bus.timeout == WAIT                        # the default stays as it was


def test_timeout_zero_takes_what_already_arrived(bus: Bus, device: Device) -> None:
    device.send(b"ready\n")
    wait_until(lambda: bus.received == 6, "the bytes")
    assert bus.expect("ready", timeout=0).text == "ready"
    with pytest.raises(BusTimeout, match="timed out after 0 s"):
        bus.expect("more", timeout=0)


@pytest.mark.parametrize("bad, why", [("0g", "'g' is not a hex digit"),
                                      ("abc", "odd number of hex digits"),
                                      ("0x0a", "'x' is not a hex digit")])
def test_write_hex_rejects_bad_hex_clearly(bus: Bus, bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        bus.write_hex(bad)


def test_line_ending_is_configurable() -> None:
    with SerialBus("loop://", line_ending="\r\n", timeout=WAIT) as bus:
        bus.writeline("AT")
        assert bus.read_until(b"\n") == b"AT\r\n"


# ------------------------------------------------------------------ errors
def test_timeout_error_says_what_how_long_where_and_shows_the_tail(bus: Bus,
                                                                   device: Device) -> None:
    device.send(b"x" * 500 + b"boot: FAILED\r\n")
    received(bus, 514)
    with pytest.raises(BusTimeout) as caught:
        bus.expect(r"boot: ok", timeout=0.05)
    message = str(caught.value)
    assert "regex 'boot: ok'" in message and "0.05 s" in message and bus.name in message
    assert "boot: FAILED\\r\\n'" in message and len(caught.value.tail) == 200
    assert caught.value.tail.endswith(b"boot: FAILED\r\n")


def test_peer_closing_mid_expect_raises_connection_lost_at_once(link: PtyLink | TcpLink) -> None:
    link.device.send(b"last words\r\n")
    received(link.bus, 12)
    closer = threading.Timer(0.05, link.device.hang_up)
    closer.start()
    with pytest.raises(ConnectionLost) as caught:
        link.bus.expect("never", timeout=60)       # a BusTimeout would take a minute
    closer.join()
    message = str(caught.value)
    assert "regex 'never'" in message and "last words\\r\\n" in message
    with pytest.raises(ConnectionLost):
        link.bus.write(b"anyone?")


def test_closing_the_bus_mid_expect_is_a_clear_error(link: PtyLink | TcpLink) -> None:
    closer = threading.Timer(0.05, link.bus.close)
    closer.start()
    with pytest.raises(BusError, match="closed while waiting"):
        link.bus.expect("never", timeout=60)       # a BusTimeout would take a minute
    closer.join()


def test_the_reader_takes_over_after_each_wait(link: PtyLink | TcpLink) -> None:
    """While a caller waits it reads the transport and the reader thread keeps off; after
    the wait the reader reads (and stamps) what comes, with no call made."""
    bus, device = link.bus, link.device
    for round_ in range(3):
        device.send(b"ping %d\n" % round_)
        assert bus.expect(r"ping (\d)").group(1) == str(round_)
        before = bus.received
        sent = clock.now()
        device.send(b"unasked\n")
        received(bus, before + 8)                  # read by the reader thread: no call
        with bus.buffer.lock:
            stamp = bus.buffer.time_at(bus.buffer.end - 1)
        assert sent <= stamp < sent + WAIT


def test_bytes_before_the_hang_up_can_still_be_read(link: PtyLink | TcpLink) -> None:
    link.device.send(b"hi\r\nbye\r\nunterminated")
    received(link.bus, 21)
    link.device.hang_up()
    wait_until(lambda: link.bus.buffer.closed, "the reader saw the hang-up")
    assert link.bus.expect("hi").start == 0
    assert list(link.bus.lines()) == ["", "bye", "unterminated"]


def test_a_closed_bus_refuses_calls() -> None:
    bus = SerialBus("loop://", timeout=WAIT)
    bus.close()
    bus.close()                                    # idempotent
    with pytest.raises(Exception, match="closed"):
        bus.expect("x")


# ------------------------------------------------------------------ transcript
def test_transcript_records_both_directions_with_times(bus: Bus, device: Device) -> None:
    start = bus.transcript.position()
    bus.writeline("status")
    assert recv_exactly(device, 7) == b"status\n"
    device.send(b"state: idle\r\n\x1b[0m")
    received(bus, 17)
    entries = bus.transcript.raw(since=start)
    assert [(e.direction, e.data) for e in entries][:1] == [("tx", b"status\n")]
    assert b"".join(e.data for e in entries if e.direction == "rx") == b"state: idle\r\n\x1b[0m"
    assert all(a.time <= b.time for a, b in zip(entries, entries[1:]))
    text = bus.transcript.render(since=start)
    assert " tx status\\n\n" in text and " rx state: idle\\r\\n\n" in text and "\\x1b[0m" in text
    later = bus.transcript.position()
    assert "status" not in bus.transcript.render(since=later)


# ------------------------------------------------------------------ serial lines
def test_modem_lines_and_break_on_a_serial_url() -> None:
    with SerialBus("loop://", timeout=WAIT) as bus:
        bus.set_dtr(False)
        bus.set_rts(True)
        bus.send_break(0.01)
        assert bus.port.dtr is False and bus.port.rts is True


# ------------------------------------------------------------------ readers and floods
def test_a_flood_arrives_whole_and_in_order(bus: Bus, device: Device) -> None:
    lines = b"".join(b"log %06d lorem ipsum dolor sit amet\r\n" % i for i in range(30_000))
    sender = threading.Thread(target=device.send, args=(lines + b"END\r\n",))
    sender.start()
    m = bus.expect(r"END\r\n", timeout=30)
    sender.join(WAIT)
    assert m.start == len(lines) and m.before_bytes == lines


def test_two_threads_waiting_on_one_bus_both_get_their_answer(bus: Bus,
                                                              device: Device) -> None:
    """Both wait at once (one reads the transport, the other waits on the buffer) before
    anything is written; each gets its own answer."""
    results: dict[str, str] = {}

    def wait_for(word: str) -> None:
        results[word] = bus.expect(rf"({word})", timeout=WAIT).group(1)
    threads = [threading.Thread(target=wait_for, args=(w,)) for w in ("alpha", "beta")]
    for thread in threads:
        thread.start()
    wait_until(lambda: bus._waiting == 2, "both threads wait")
    device.send(b"beta\r\nalpha\r\n")
    for thread in threads:
        thread.join(WAIT)
    assert results == {"alpha": "alpha", "beta": "beta"}


def test_socket_urls_work_through_serial_bus() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        bus = SerialBus(f"socket://127.0.0.1:{server.getsockname()[1]}", timeout=WAIT)
        conn, _ = server.accept()
    with bus, conn:
        conn.sendall(b"hello from socket://\r\n")
        assert bus.expect(r"hello from (\S+)").group(1) == "socket://"
        bus.writeline("ack")
        assert conn.recv(16) == b"ack\n"


def test_drain_sees_output_that_arrived_just_now(link: PtyLink | TcpLink) -> None:
    """Right after an expect the reader thread steps aside; drain (and so query) must still
    discard output already waiting in the kernel."""
    bus, device, stale = link.bus, link.device, b"stale: awake\r\n"
    for i in range(20):
        device.send(b"ready %d\r\n" % i)
        bus.expect(r"ready (\d+)\r\n")
        before = bus.received
        device.send(stale)
        wait_until(lambda: bus.received - before + waiting(bus_fd(bus)) >= len(stale),
                   "the stale line reached the bus's side")
        assert bus.drain() == stale


def waiting(fd: int) -> int:
    """Bytes the kernel holds for `fd`, not yet read."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def bus_fd(bus: Bus) -> int:
    return bus.port.fd if isinstance(bus, SerialBus) else bus._transport.sock.fileno()
