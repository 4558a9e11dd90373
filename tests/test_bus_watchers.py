"""fail_on() watchers: checked by the reader thread on every chunk, surfaced by the next call."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from hil.buses import TcpBus
from hil.errors import BusTimeout, PatternError, WatcherTriggered

WAIT = 5.0


@pytest.fixture
def pair() -> Iterator[tuple[TcpBus, socket.socket]]:
    """A TcpBus and the device's end of the connection."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        bus = TcpBus("127.0.0.1", server.getsockname()[1], timeout=WAIT)
        conn, _ = server.accept()
    yield bus, conn
    bus.close()
    conn.close()


def wait_for_hit(bus: TcpBus) -> None:
    deadline = time.monotonic() + WAIT
    while not bus.watcher_hits:
        assert time.monotonic() < deadline, "the watcher never fired"
        time.sleep(0.005)


def test_a_hit_is_recorded_without_any_call_and_raised_by_the_next_one(pair) -> None:
    bus, device = pair
    bus.fail_on(r"PANIC: (.*)")
    device.sendall(b"boot ok\r\nPANIC: assertion failed: x (a.c:1)\r\nrebooting\r\n")
    wait_for_hit(bus)                                       # nobody called expect
    hit = bus.watcher_hits[0]
    assert (hit.pattern, hit.start) == (r"PANIC: (.*)", 9)
    assert hit.line == "PANIC: assertion failed: x (a.c:1)"
    with pytest.raises(WatcherTriggered) as caught:
        bus.write(b"status\n")
    message = str(caught.value)
    assert "PANIC: (.*)" in message and "byte 9" in message and "assertion failed: x" in message
    bus.write(b"status\n")                                  # raised once, then usable again


def test_a_waiting_expect_is_woken_by_a_hit(pair) -> None:
    bus, device = pair
    bus.fail_on("PANIC", exact=True)
    threading.Timer(0.05, device.sendall, [b"PANIC: boom\r\n"]).start()
    with pytest.raises(WatcherTriggered, match="PANIC"):
        bus.expect("never", timeout=60)                     # not a BusTimeout a minute later


def test_check_watchers_raises_a_hit_no_call_raised(pair) -> None:
    bus, device = pair
    bus.fail_on("assert failed")
    device.sendall(b"x assert failed y\r\n")
    wait_for_hit(bus)
    with pytest.raises(WatcherTriggered, match="assert failed"):
        bus.check_watchers()
    bus.check_watchers()                                    # nothing new: no error
    assert len(bus.watcher_hits) == 1


def test_a_hit_split_across_chunks_is_found_and_counted_once(pair) -> None:
    bus, device = pair
    bus.fail_on("PANIC")
    device.sendall(b"PA")
    deadline = time.monotonic() + WAIT      # the split is real: "PA" was read on its own
    while bus.received < 2:
        assert time.monotonic() < deadline, "the first half never arrived"
        time.sleep(0.002)
    device.sendall(b"NIC then PANIC\r\n")
    deadline = time.monotonic() + WAIT
    while len(bus.watcher_hits) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert [h.start for h in bus.watcher_hits] == [0, 11]
    with pytest.raises(WatcherTriggered, match="and 1 more"):
        bus.check_watchers()


def test_only_output_after_fail_on_counts(pair) -> None:
    bus, device = pair
    device.sendall(b"old PANIC\r\n")
    bus.expect_exact("old PANIC")
    bus.fail_on("PANIC")
    device.sendall(b"fine\r\n")
    bus.expect_exact("fine")
    assert bus.watcher_hits == []


def test_removed_watchers_and_context_managed_ones_stop_watching(pair) -> None:
    bus, device = pair
    watcher = bus.fail_on("PANIC")
    watcher.remove()
    with bus.fail_on("oops"):
        pass
    device.sendall(b"PANIC oops\r\ndone\r\n")
    bus.expect_exact("done")
    assert bus.watcher_hits == []
    bus.check_watchers()


def test_a_watcher_that_matches_nothing_is_refused(pair) -> None:
    bus, _ = pair
    with pytest.raises(PatternError, match="empty string"):
        bus.fail_on(r"x*")
    with pytest.raises(PatternError, match="invalid regex"):
        bus.fail_on(r"PANIC(")


def test_a_hit_does_not_turn_a_timeout_into_silence(pair) -> None:
    bus, device = pair
    bus.fail_on("PANIC")
    with pytest.raises(BusTimeout):
        bus.expect("x", timeout=0.02)                       # no hit: a plain timeout
    device.sendall(b"PANIC\r\n")
    wait_for_hit(bus)
    with pytest.raises(WatcherTriggered):
        bus.expect("x", timeout=0.02)
