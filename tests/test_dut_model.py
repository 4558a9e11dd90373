"""The virtual DUT as a model: power states, firmware shell, GPIO, sensors, current."""
from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
from dut_text import golden_log

from hil import clock
from hil.sim.dut import (BOOT_SECONDS, CURRENT, FIRMWARE_VERSION, INRUSH_PEAK_A, INRUSH_TAU_S,
                         PROMPT, SENSORS,
                         PowerState, VirtualDut, _hash_noise)

SPEED = 20.0
WAIT_S = 10.0


class Output:
    """Everything the DUT prints (via its listener), with waits that time out."""

    def __init__(self, dut: VirtualDut) -> None:
        self.data = bytearray()
        self._cond = threading.Condition()
        self.detach = dut.attach(self._on_output)

    def _on_output(self, chunk: bytes) -> None:
        with self._cond:
            self.data += chunk
            self._cond.notify_all()

    def wait_for(self, pattern: bytes, start: int = 0, timeout: float = WAIT_S) -> int:
        """Offset just past the first `pattern` at or after `start`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (i := self.data.find(pattern, start)) < 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} within {timeout} s; output ends with "
                                         f"{bytes(self.data[-300:])!r}")
                self._cond.wait(left)
            return i + len(pattern)

    def since(self, start: int) -> bytes:
        with self._cond:
            return bytes(self.data[start:])


@pytest.fixture
def dut() -> Iterator[VirtualDut]:
    board = VirtualDut(seed=3, speed=SPEED)
    yield board
    board.close()


@pytest.fixture
def out(dut: VirtualDut) -> Output:
    return Output(dut)


def boot(dut: VirtualDut, out: Output) -> int:
    """Power the board and wait for its first prompt; returns the output offset after it."""
    start = len(out.data)
    dut.set_supply(True, 3.3)
    return out.wait_for(PROMPT, out.wait_for(b"boot: ok", start))


def command(dut: VirtualDut, out: Output, line: str, until: bytes) -> bytes:
    """Type a command and return its output up to and including `until` and the next prompt."""
    start = len(out.data)
    dut.feed(line.encode() + b"\n")
    end = out.wait_for(PROMPT, out.wait_for(until, start))
    return out.since(start)[:end - start]


def segments(dut: VirtualDut, t0: float = 0.0) -> list[tuple[float, float, PowerState]]:
    """(start, end, state) of every timeline segment starting at or after t0 (end=inf last)."""
    starts, states = dut.timeline()
    ends = np.append(starts[1:], np.inf)
    return [(float(s), float(e), PowerState(int(st)))
            for s, e, st in zip(starts, ends, states) if s >= t0]


# --------------------------------------------------------------------------- supply and boot
def test_unpowered_board_is_off(dut: VirtualDut) -> None:
    assert not dut.powered and dut.voltage == 0.0 and dut.state == PowerState.OFF
    assert dut.current_at(clock.now()).tolist() == [0.0]
    dut.set_supply(True, 1.5)                      # below brown-out: still off
    assert not dut.powered and dut.state == PowerState.OFF


def test_power_on_boots_then_idles(dut: VirtualDut, out: Output) -> None:
    t_on = clock.now()
    dut.set_supply(True, 3.3)
    assert dut.powered and dut.voltage == 3.3 and dut.state == PowerState.BOOT
    end = out.wait_for(PROMPT, out.wait_for(b"boot: ok"))
    banner = out.since(0)[:end]
    assert b"hil-dut bootloader 2.1\r\n" in banner
    assert f"boot: ok v{FIRMWARE_VERSION} (sensor-node, reset #1)\r\n".encode() in banner
    assert dut.state == PowerState.IDLE and dut.boots == 1
    assert [s for _, _, s in segments(dut, t_on)] == [PowerState.BOOT, PowerState.IDLE]
    lines = [ln.text for ln in dut.uart_lines(t_on)]
    assert f"boot: ok v{FIRMWARE_VERSION} (sensor-node, reset #1)" in lines


# --------------------------------------------------------------------------- power states
def test_sleep_enters_sleep_then_idle(dut: VirtualDut, out: Output) -> None:
    boot(dut, out)
    t0 = clock.now()
    reply = command(dut, out, "sleep 0.5", b"sleep: awake")
    assert b"sleep: entering for 0.500 s\r\n" in reply
    segs = segments(dut, t0)
    assert [s for _, _, s in segs] == [PowerState.SLEEP, PowerState.IDLE]
    start, end, _ = segs[0]
    assert end - start >= 0.5 / SPEED               # firmware time is scaled by speed
    mid = (start + end) / 2
    assert dut.state_at(np.array([mid])).tolist() == [PowerState.SLEEP]
    assert not dut.output_at(2, mid)[0]             # "awake" pin low while asleep
    assert dut.output_edges(2, t0, clock.now()) == [(start, False), (end, True)]


def test_wake_pin_ends_sleep_early(dut: VirtualDut, out: Output) -> None:
    boot(dut, out)
    start = len(out.data)
    dut.feed(b"sleep 1000\n")
    out.wait_for(b"sleep: entering", start)
    dut.set_input(1, True)
    out.wait_for(b"sleep: awake after", start)
    assert dut.state == PowerState.IDLE


def test_tx_bursts_are_tx_segments_and_radio_pin_pulses(dut: VirtualDut, out: Output) -> None:
    boot(dut, out)
    t0 = clock.now()
    reply = command(dut, out, "tx 3", b"tx: done 3")
    assert reply.count(b"tx: burst ") == 3 and b"tx: burst 3/3 32 bytes" in reply
    tx = [(s, e) for s, e, st in segments(dut, t0) if st == PowerState.TX]
    assert len(tx) == 3
    edges = dut.output_edges(1, t0, clock.now())
    assert edges == [edge for s, e in tx for edge in ((s, True), (e, False))]
    mid = np.array([(s + e) / 2 for s, e in tx])
    assert dut.output_at(1, mid).all()


def test_speed_factor_scales_firmware_time() -> None:
    fast = VirtualDut(speed=50.0)
    out = Output(fast)
    try:
        boot(fast, out)
        t0 = clock.now()
        reply = command(fast, out, "sleep 5", b"sleep: awake")    # 0.1 s of wall time
        slept = float(reply.split(b"awake after ")[1].split(b" s")[0])
        assert slept >= 5.0
        start, end, _ = segments(fast, t0)[0]
        assert end - start >= 5.0 / 50.0
        boot_start, boot_end, state = segments(fast)[1]
        assert state == PowerState.BOOT and boot_end - boot_start >= BOOT_SECONDS / 50.0
    finally:
        fast.close()


# --------------------------------------------------------------------------- power off, reboots
def test_power_off_stops_firmware_and_drops_input(dut: VirtualDut, out: Output) -> None:
    boot(dut, out)
    start = len(out.data)
    dut.feed(b"sleep 1000\n")
    out.wait_for(b"sleep: entering", start)
    t_off = clock.now()
    dut.set_supply(False)
    assert dut.state == PowerState.OFF and not dut.powered
    assert dut.current_at(clock.now()).tolist() == [0.0]
    dut.feed(b"version\n")                          # typed into an unpowered board: lost
    t_on = clock.now()
    after = boot(dut, out)
    reply = command(dut, out, "echo marker", b"marker\r\n")
    assert b"version:" not in out.since(start)[:after - start] + reply
    assert b"sleep: awake" not in out.since(start)
    assert dut.boots == 2
    assert [st for start, _, st in segments(dut, t_off) if start < t_on] == [PowerState.OFF]
    assert dut.uart_lines(t_off, t_on) == []


def test_reset_reboots_without_inrush(dut: VirtualDut, out: Output) -> None:
    boot(dut, out)
    t0 = clock.now()
    reply = command(dut, out, "reset", b"reset #2)")
    assert b"reset: rebooting\r\n" in reply and dut.boots == 2
    segs = segments(dut, t0)
    assert [st for _, _, st in segs] == [PowerState.BOOT, PowerState.IDLE]
    soft = dut.current_at(segs[0][0] + 1e-6)[0]
    first_boot = segments(dut)[1]
    hard = dut.current_at(first_boot[0] + 1e-6)[0]
    assert hard > INRUSH_PEAK_A / 2                 # inrush at power-on...
    assert soft < 2 * CURRENT[PowerState.BOOT][0]   # ...but not at a soft reset


def test_panic_prints_a_crash_and_reboots(dut: VirtualDut, out: Output) -> None:
    boot(dut, out)
    reply = command(dut, out, "panic", b"reset #2)")
    assert b"PANIC: assertion failed" in reply and b"rebooting in 100 ms" in reply
    assert dut.boots == 2 and dut.state == PowerState.IDLE


# --------------------------------------------------------------------------- current
def test_current_is_deterministic_and_in_range_per_state(dut: VirtualDut, out: Output) -> None:
    t0 = clock.now()
    boot(dut, out)
    command(dut, out, "tx 2", b"tx: done 2")
    command(dut, out, "sleep 0.4", b"sleep: awake")
    seen = set()
    for start, end, state in segments(dut, t0 - 1.0):
        if end == np.inf:
            end = clock.now()
        if state == PowerState.BOOT:
            start += 12 * INRUSH_TAU_S               # past the inrush
        t = np.linspace(start, end, 64)[1:-1]
        i = dut.current_at(t)
        np.testing.assert_array_equal(i, dut.current_at(t))   # a pure function of time
        mean, sigma = CURRENT[state]
        assert np.all(np.abs(i - mean) <= 6 * sigma + 1e-12), state
        seen.add(state)
    assert seen == set(PowerState)
    t = np.linspace(t0, clock.now(), 100)
    assert not np.array_equal(_hash_noise(t, 3), _hash_noise(t, 4))     # the seed matters


def test_noise_has_no_overflow_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        noise = _hash_noise(np.linspace(0, 1, 10_000) + 1.7e9, seed=12345)
    assert abs(noise.mean()) < 0.1 and 0.9 < noise.std() < 1.1


# --------------------------------------------------------------------------- sensors
def test_sensors_are_zero_while_off_and_plausible_when_on(dut: VirtualDut, out: Output) -> None:
    t_off = clock.now()
    for name in SENSORS:
        assert dut.sensor(name, t_off).tolist() == [0.0]
    boot(dut, out)
    t = np.linspace(clock.now() - 0.01, clock.now(), 50)
    assert np.all((dut.sensor("temperature", t) > 23) & (dut.sensor("temperature", t) < 25))
    assert np.all(np.abs(dut.sensor("accel_z", t) - 0.98) < 0.05)
    np.testing.assert_array_equal(dut.sensor("humidity", t), dut.sensor("humidity", t))
    reply = command(dut, out, "sensor", b"g\r\n")
    assert reply.startswith(b"sensor: temp=2")
    with pytest.raises(KeyError, match="no sensor 'pressure'"):
        dut.sensor("pressure", t)


# --------------------------------------------------------------------------- shell
def test_unknown_and_malformed_commands_answer_an_error(dut: VirtualDut, out: Output) -> None:
    boot(dut, out)
    assert b"error: unknown command 'frobnicate' (try 'help')\r\n" in command(
        dut, out, "frobnicate now", b"(try 'help')")
    assert b"error: sleep: expected a number of seconds, got 'soon'" in command(
        dut, out, "sleep soon", b"error: sleep")
    for bad in ("tx inf", "log nan", "tx -2"):          # must not kill the firmware
        assert b"error: " in command(dut, out, bad, b"\r\n")
    assert f"version: {FIRMWARE_VERSION}\r\n".encode() in command(
        dut, out, "version", b"version: ")


def test_help_status_echo(dut: VirtualDut, out: Output) -> None:
    boot(dut, out)
    assert b"  log <bytes>" in command(dut, out, "help", b"panic")
    assert b"state: idle voltage: 3.30 V" in command(dut, out, "status", b"boots: 1\r\n")
    assert b"hello world\r\n" in command(dut, out, "echo hello world", b"hello world\r\n")


def test_echo_mode_echoes_input() -> None:
    board = VirtualDut(speed=SPEED, echo=True)
    out = Output(board)
    try:
        boot(board, out)
        assert command(board, out, "version", b"version: ").startswith(b"version\r\n")
    finally:
        board.close()


@pytest.mark.parametrize("n", [1, 2, 10, 63, 64, 69, 70, 65_536, 200_001])
def test_log_emits_exactly_n_bytes_before_done(dut: VirtualDut, out: Output, n: int) -> None:
    boot(dut, out)
    reply = command(dut, out, f"log {n}", f"log: done {n} bytes\r\n".encode())
    assert reply == golden_log(n) + f"log: done {n} bytes\r\n".encode() + PROMPT


@pytest.mark.parametrize("n", [1, 10, 100, 65_537])
def test_log_output_ends_with_a_line_break(dut: VirtualDut, out: Output, n: int) -> None:
    boot(dut, out)
    reply = command(dut, out, f"log {n}", b"log: done")
    assert reply[:n].endswith(b"\n")
    assert f"log: done {n} bytes" in [ln.text for ln in dut.uart_lines()]


def test_crlf_is_one_enter_and_a_lone_cr_is_one_too(dut: VirtualDut, out: Output) -> None:
    start = boot(dut, out)
    dut.feed(b"version\r\n")
    dut.feed(b"echo a\r")                      # what minicom sends for Enter
    dut.feed(b"\necho b\n")                   # ...with the LF of a CR LF in the next chunk
    end = out.wait_for(PROMPT, out.wait_for(b"b\r\n", start))
    assert out.since(start)[:end - start] == (f"version: {FIRMWARE_VERSION}\r\n".encode() + PROMPT
                                              + b"a\r\n" + PROMPT + b"b\r\n" + PROMPT)
    dut.feed(b"\r")                            # an empty Enter answers with a prompt
    assert out.wait_for(PROMPT, end) == end + len(PROMPT)


def test_echo_mode_echoes_every_enter_as_one_line_break() -> None:
    board = VirtualDut(speed=SPEED, echo=True)
    out = Output(board)
    try:
        start = boot(board, out)
        board.feed(b"echo x\r")
        board.feed(b"\n")
        board.feed(b"echo y\n")
        end = out.wait_for(PROMPT, out.wait_for(b"y\r\n", out.wait_for(b"echo y", start)))
        assert out.since(start)[:end - start] == (b"echo x\r\nx\r\n" + PROMPT
                                                  + b"echo y\r\ny\r\n" + PROMPT)
    finally:
        board.close()


# --------------------------------------------------------------------------- greeting
def test_listener_attached_at_the_prompt_is_greeted_with_it(dut: VirtualDut, out: Output) -> None:
    start = boot(dut, out)
    greeted = Output.__new__(Output)
    greeted.data, greeted._cond = bytearray(), threading.Condition()
    greeted.detach = dut.attach(greeted._on_output, greet=True)
    assert bytes(greeted.data) == PROMPT          # at once, before any firmware output
    assert out.since(start) == b""                # the others see nothing new
    plain = Output(dut)
    assert plain.data == bytearray()              # without greet: nothing
    assert [ln.text for ln in dut.uart_lines()].count("dut> ") == 0


def test_no_greeting_while_off_booting_or_busy() -> None:
    board = VirtualDut(speed=0.5)                  # a slow boot: 0.7 s
    out = Output(board)
    try:
        seen: list[bytes] = []
        board.attach(seen.append, greet=True)()    # unpowered: attach, detach
        assert seen == []
        board.set_supply(True, 3.3)
        detach = board.attach(seen.append, greet=True)   # while booting
        out.wait_for(PROMPT)
        detach()
        assert seen[0] != PROMPT and b"".join(seen).endswith(b"reset #1)\r\n" + PROMPT)
        seen.clear()
        start = len(out.data)
        board.feed(b"sleep 60\n")                 # busy with a command
        out.wait_for(b"sleep: entering", start)
        detach = board.attach(seen.append, greet=True)
        board.set_input(1, True)                   # wake it early
        out.wait_for(PROMPT, out.wait_for(b"sleep: awake", start))
        detach()
        assert seen[0].startswith(b"sleep: awake")
    finally:
        board.close()
