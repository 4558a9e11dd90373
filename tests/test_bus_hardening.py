"""Hardening of the buses: small retentions, catastrophic regexes, bounded bookkeeping, the
arrival point of `mark()`, and failure output a test author can read. Real sockets and ptys."""
from __future__ import annotations

import os
import socket
import threading
import tty
from collections.abc import Callable, Iterator

import pytest

from hil.buses import Bus, SerialBus, TcpBus
from hil.buses.buffer import MIN_RETENTION, ReceiveBuffer
from hil.errors import BusTimeout, PatternError, WatcherTriggered
from waiting import wait_until

WAIT = 5.0


@pytest.fixture(params=["tcp", "pty"])
def opener(request: pytest.FixtureRequest) -> Iterator[Callable[..., tuple[Bus, Callable]]]:
    """Opens a bus with the given options; returns it and the device's send function."""
    closers: list[Callable[[], None]] = []

    def open_bus(**options: object) -> tuple[Bus, Callable[[bytes], None]]:
        if request.param == "tcp":
            with socket.create_server(("127.0.0.1", 0)) as server:
                bus = TcpBus("127.0.0.1", server.getsockname()[1], timeout=WAIT, **options)
                conn, _ = server.accept()
            closers.extend([bus.close, conn.close])
            return bus, conn.sendall
        master, slave = os.openpty()
        tty.setraw(master)
        bus = SerialBus(os.ttyname(slave), timeout=WAIT, **options)
        closers.extend([bus.close, lambda: os.close(slave), lambda: os.close(master)])

        def send(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(master, view):]
        return bus, send
    yield open_bus
    for close in closers:
        close()


# ------------------------------------------------------------------ small retention
@pytest.mark.parametrize("retention", [MIN_RETENTION, 64 * 1024, 256 * 1024])
def test_a_match_spanning_reads_survives_any_retention(opener, retention: int) -> None:
    """Each read used to discard every unread byte when the retention was at most one read."""
    bus, send = opener(retention=retention)
    for i in range(3):
        before = bus.received
        send(b"boot %d: PA" % i)
        wait_until(lambda: bus.received >= before + 10, "the first half was read")
        send(b"NIC code=%d\r\n" % i)
        m = bus.expect(rb"boot (\d): PANIC code=(\d)\r\n")
        assert m.groups() == (b"%d" % i, b"%d" % i) and m.before == b""


@pytest.mark.parametrize("retention", [MIN_RETENTION, 64 * 1024])
def test_unread_lines_within_a_quarter_of_the_retention_are_all_kept(opener,
                                                                     retention: int) -> None:
    bus, send = opener(retention=retention)
    lines = [b"line %04d\r\n" % i for i in range(retention // 4 // 11)]
    for line in lines:
        send(line)
    wait_until(lambda: bus.received >= sum(map(len, lines)), "all lines were read")
    assert [bus.read_until(b"\n") for _ in lines] == lines


def test_the_buffer_always_keeps_the_newest_quarter() -> None:
    buf = ReceiveBuffer(MIN_RETENTION)
    for i in range(1000):
        buf.append(bytes([i % 251]) * 7, float(i))
        assert buf.used >= min(buf.end, MIN_RETENTION // 4) and buf.used <= MIN_RETENTION
    assert buf.get(buf.end - 7, buf.end) == bytes([999 % 251]) * 7


def test_the_arrival_index_stays_bounded_under_a_trickle() -> None:
    buf = ReceiveBuffer()
    for i in range(200_000):
        buf.append(b"x", i * 0.002)             # each byte its own run of chunks
    assert len(buf._ends) <= 70_000             # MAX_INDEX and a little
    assert buf.time_at(buf.end - 1) == pytest.approx(199_999 * 0.002)
    assert buf.time_at(0) <= buf.time_at(buf.end // 2) <= buf.time_at(buf.end - 1)


# ------------------------------------------------------------------ catastrophic regexes
def test_a_nested_quantifier_runs_in_linear_time_and_times_out_plainly(opener) -> None:
    bus, send = opener()
    send(b"a" * 27 + b"\r\n")
    with pytest.raises(BusTimeout, match=r"timed out after 0.3 s waiting for regex '\(a\+\)\+b'"):
        bus.expect(r"(a+)+b", timeout=0.3)


def test_a_backtracking_only_pattern_raises_a_clear_error_naming_it(opener) -> None:
    bus, send = opener()
    send(b"a" * 60)
    with pytest.raises(BusTimeout, match=r"searching regex '\(a\|aa\)\+\(\?=b\)' did not "
                                         r"finish in time \(catastrophic backtracking"):
        bus.expect(r"(a|aa)+(?=b)", timeout=0.3)


def test_a_pathological_watcher_on_one_bus_does_not_stall_another(opener) -> None:
    slow, send_slow = opener()
    fast, send_fast = opener()
    slow.fail_on(r"(a|aa)+(?=b)")
    send_slow(b"a" * 60)
    answered = threading.Event()

    def answer_later() -> None:     # the second bus's answer comes while the watcher grinds
        wait_until(lambda: slow.received >= 60, "the slow bus read its bytes")
        send_fast(b"ready\r\n")
        answered.set()
    threading.Thread(target=answer_later, daemon=True).start()
    assert fast.expect(r"ready", timeout=WAIT).group() == "ready"
    with pytest.raises(PatternError, match=r"fail_on\('\(a\|aa\)\+\(\?=b\)'\) was removed"):
        wait_until(lambda: slow.check_watchers(), "the slow watcher was dropped")  # raises
    slow.check_watchers()                   # removed: nothing more to raise
    assert answered.is_set()


def test_groups_and_flags_keep_re_semantics_across_engines(opener) -> None:
    bus, send = opener()
    send(b"Temp: 21.5 C\r\nid=ab12 id=ab12\r\n")
    m = bus.expect(r"(?i)temp: (?P<value>[\d.]+)\s+c$")         # RE2
    assert (m["value"], m.groupdict(), m.end) == ("21.5", {"value": "21.5"}, 12)
    m = bus.expect(r"id=(\w+) id=\1")                             # back-reference: `regex`
    assert m.group(1) == "ab12" and m.groups() == ("ab12",)


# ------------------------------------------------------------------ bounded bookkeeping
def test_unraised_watcher_hits_are_capped_and_counted(opener) -> None:
    bus, send = opener()
    bus.fail_on("E!", exact=True)
    send(b"E!" * 3000 + b"\r\ndone\r\n")
    wait_until(lambda: len(bus.watcher_hits) + bus.hits_dropped >= 3000, "all hits were seen")
    assert len(bus.watcher_hits) == 1000 and bus.hits_dropped == 2000
    assert len(bus._unraised) <= 1000
    with pytest.raises(WatcherTriggered, match=r"and 2999 more hits"):
        bus.check_watchers()


# ------------------------------------------------------------------ arrival points
def test_mark_counts_bytes_that_arrived_before_it(opener) -> None:
    """Right after an expect read the transport itself, the reader thread used to stay away
    for 50 ms: a mark then missed bytes already there."""
    bus, send = opener()
    for i in range(20):
        send(b"ready %d\r\n" % i)
        bus.expect(r"ready \d+\r\n")
        before = bus.received
        send(b"late\r\n")
        wait_until(lambda: bus.received - before + kernel_has(bus) >= 6, "the line is here")
        assert bus.mark(f"m{i}").offset == before + 6


def kernel_has(bus: Bus) -> int:
    """Bytes the kernel holds for the bus, not read yet."""
    import fcntl
    import struct
    import termios
    fd = bus.port.fd if isinstance(bus, SerialBus) else bus._transport.sock.fileno()
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


# ------------------------------------------------------------------ failure output
def test_a_timeout_says_what_was_unread_at_the_start_and_what_came_during(opener) -> None:
    bus, send = opener()
    send(b"answer: 42\r\n")
    wait_until(lambda: bus.received >= 12, "the answer arrived before the wait")
    with pytest.raises(BusTimeout, match=r"12 unread bytes when the wait began, 0 arrived "
                                         r"during it"):
        bus.expect(r"answer: 43", timeout=0.05)


def test_a_failed_expect_shows_the_test_line_not_bus_internals(pytester) -> None:
    pytester.makepyfile(test_dut="""
        import socket
        from hil.buses import TcpBus

        def test_boot():
            with socket.create_server(("127.0.0.1", 0)) as server:
                bus = TcpBus("127.0.0.1", server.getsockname()[1])
                conn, _ = server.accept()
            conn.sendall(b"boot: FAILED\\r\\n")
            try:
                bus.expect(r"boot: ok", timeout=0.05)   # the user's line
            finally:
                bus.close()
                conn.close()
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "the user's line" in out and "BusTimeout" in out and "boot: FAILED" in out
    assert "hil/buses/" not in out and "_await" not in out
