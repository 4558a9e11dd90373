"""The virtual DUT: a small battery-powered sensor node, as a model rather than a script.

One object holds the board's state (supply, power state timeline, GPIO, sensors) and runs its
firmware shell in a thread. Every simulator observes the same object: the console server moves
bytes in and out of it, the Otii simulator reads `current_at()` and `uart_lines()` and drives
`set_supply()`, stream simulators sample `sensor()`. So a console command really changes what the
power analyzer measures.

All times are `hil.clock.now()` seconds. `speed` > 1 shortens every firmware delay.
"""
from __future__ import annotations

import math
import queue
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from hil import clock

FIRMWARE_VERSION = "1.4.2"
PROMPT = b"dut> "
BROWN_OUT_V = 1.8


class PowerState(IntEnum):
    """Power states of the board, in the order of the current table below."""

    OFF = 0
    BOOT = 1
    IDLE = 2
    SLEEP = 3
    TX = 4


#: Typical supply current (A) and its noise (A, one sigma) per power state.
CURRENT = {
    PowerState.OFF: (0.0, 0.0),
    PowerState.BOOT: (12e-3, 0.3e-3),
    PowerState.IDLE: (3.1e-3, 40e-6),
    PowerState.SLEEP: (4.2e-6, 0.15e-6),
    PowerState.TX: (38e-3, 0.8e-3),
}
INRUSH_PEAK_A = 0.180      # charging the board's capacitors at power-on
INRUSH_TAU_S = 0.4e-3
BOOT_SECONDS = 0.35
TX_BURST_SECONDS = 4e-3
TX_GAP_SECONDS = 20e-3
NOISE_QUANTUM_S = 1 / 200_000   # noise is a fixed function of time at this resolution
UART_HISTORY_LINES = 100_000    # uart_lines() keeps this many recent lines (memory stays bounded)


@dataclass(frozen=True)
class UartLine:
    """One line the firmware printed, with the time its last byte left the UART."""

    time: float
    text: str


class _PowerLost(Exception):
    """Internal: the supply went away while the firmware was busy."""


def _hash_noise(t: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic standard-normal-ish noise as a pure function of time (splitmix64 hash)."""
    x = np.floor(np.asarray(t, dtype=np.float64) / NOISE_QUANTUM_S).astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):        # uint64 wrap-around is the point of the hash
        x = x + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    u1 = ((x >> np.uint64(40)).astype(np.float64) + 0.5) / float(1 << 24)
    u2 = (((x >> np.uint64(16)) & np.uint64(0xFFFFFF)).astype(np.float64) + 0.5) / float(1 << 24)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


class VirtualDut:
    """The simulated board: supply, power-state timeline, console firmware, GPIO and sensors."""

    def __init__(self, *, seed: int = 1, speed: float = 1.0, powered: bool = False,
                 voltage: float = 3.3, echo: bool = False) -> None:
        self.seed = seed
        self.speed = speed
        self.echo = echo
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._voltage = 0.0
        self._supply_on = False
        self._generation = 0                     # bumps on every power cycle
        self._starts: list[float] = [clock.now()]
        self._states: list[int] = [PowerState.OFF]
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._uart: deque[UartLine] = deque(maxlen=UART_HISTORY_LINES)
        self._partial = bytearray()             # output bytes of the line being printed
        self._listeners: list[Callable[[bytes], None]] = []
        self._input: queue.Queue[bytes | None] = queue.Queue()
        self._inputs = {1: False, 2: False}      # wired to the Otii's GPO pins
        self._boots = 0
        self._at_prompt = False                  # the shell waits at an empty prompt
        self._fw_generation = -1                 # the power cycle the firmware thread runs in
        self._closed = False
        self._thread = threading.Thread(target=self._firmware, name="virtual-dut", daemon=True)
        self._thread.start()
        if powered:
            self.set_supply(True, voltage)

    # ----------------------------------------------------------------- supply and timeline
    def set_supply(self, on: bool, voltage: float | None = None) -> None:
        """Switch the board's supply; below the brown-out voltage the board is off."""
        with self._lock:
            was = self.powered
            if voltage is not None:
                self._voltage = float(voltage)
            self._supply_on = bool(on)
            now_on = self.powered
            if was != now_on:
                self._generation += 1
                self._at_prompt = False
                self._set_state(PowerState.BOOT if now_on else PowerState.OFF)
                self._changed.notify_all()
                self._input.put(b"")             # wake the shell so it notices at once

    @property
    def powered(self) -> bool:
        return self._supply_on and self._voltage >= BROWN_OUT_V

    @property
    def voltage(self) -> float:
        return self._voltage if self.powered else 0.0

    @property
    def state(self) -> PowerState:
        with self._lock:
            return PowerState(self._states[-1])

    @property
    def boots(self) -> int:
        """How many times the firmware has booted (power-on, reset and panic reboots)."""
        return self._boots

    def _set_state(self, state: PowerState, generation: int | None = None) -> None:
        """Start a new timeline segment. The firmware passes its `generation`: once the supply
        has dropped, a late firmware step must not put a powered state after OFF."""
        with self._lock:
            if generation is not None and generation != self._generation:
                raise _PowerLost
            self._starts.append(clock.now())
            self._states.append(int(state))
            self._arrays = None

    def timeline(self) -> tuple[np.ndarray, np.ndarray]:
        """(start times, states) of every power-state segment so far."""
        with self._lock:
            if self._arrays is None:
                self._arrays = (np.array(self._starts), np.array(self._states, dtype=np.int8))
            return self._arrays

    def state_at(self, t: np.ndarray) -> np.ndarray:
        starts, states = self.timeline()
        idx = np.searchsorted(starts, t, side="right") - 1
        return states[np.clip(idx, 0, None)]

    def current_at(self, t: np.ndarray | float) -> np.ndarray:
        """Supply current (A) drawn at clock times `t`: state current, inrush, noise. Vectorised."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        starts, states = self.timeline()
        idx = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, None)
        st = states[idx]
        mean = np.array([CURRENT[s][0] for s in PowerState])[st]
        sigma = np.array([CURRENT[s][1] for s in PowerState])[st]
        i = mean + sigma * _hash_noise(t, self.seed)
        boot = st == PowerState.BOOT
        if boot.any():
            # inrush only at a power-on (the segment before was OFF), not at a soft reset
            prev_off = np.zeros_like(boot)
            prev_off[boot] = states[np.clip(idx[boot] - 1, 0, None)] == PowerState.OFF
            since = t - starts[idx]
            i = np.where(prev_off, i + INRUSH_PEAK_A * np.exp(-since / INRUSH_TAU_S), i)
        return np.maximum(i, 0.0)

    # ----------------------------------------------------------------- console
    def attach(self, listener: Callable[[bytes], None], *,
               greet: bool = False) -> Callable[[], None]:
        """Call `listener(bytes)` with every byte the firmware prints; returns a detach function.

        `greet`: a terminal connecting to a board that booted earlier would see nothing, so if
        the shell sits at an empty prompt, `listener` gets the prompt at once (only it; the
        UART history is unchanged). It is called under the board's lock: it must not block."""
        with self._lock:
            self._listeners.append(listener)
            if greet and self._at_prompt and self.powered and not self._closed:
                listener(PROMPT)
        return lambda: self._detach(listener)

    def _detach(self, listener: Callable[[bytes], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def feed(self, data: bytes) -> None:
        """Bytes typed into the console's RX line. Lost while the board is unpowered."""
        if self.powered and data:
            self._input.put(bytes(data))

    def uart_lines(self, t0: float = 0.0, t1: float = float("inf")) -> list[UartLine]:
        """Lines printed between two clock times (the Otii's UART `rx` channel)."""
        with self._lock:
            return [ln for ln in self._uart if t0 <= ln.time < t1]

    def _emit(self, data: bytes, *, prompt: bool = False) -> None:
        """Firmware output: record lines, then call listeners (outside the lock: they may block).

        `prompt`: this is the shell's prompt, after which it waits for a command."""
        with self._lock:
            if self._fw_generation != self._generation or self._closed:
                raise _PowerLost                 # an unpowered board prints nothing
            self._at_prompt = prompt
            listeners = list(self._listeners)
            self._partial += data
            while (nl := self._partial.find(b"\n")) >= 0:
                line = self._partial[:nl].rstrip(b"\r").decode("utf-8", "replace")
                self._uart.append(UartLine(clock.now(), line))
                del self._partial[:nl + 1]
        for listener in listeners:
            listener(data)

    def _say(self, text: str) -> None:
        self._emit(text.encode() + b"\r\n")

    # ----------------------------------------------------------------- GPIO
    def set_input(self, pin: int, value: bool) -> None:
        """Drive one of the board's inputs (wired to the Otii's GPO). Pin 1 wakes it from sleep."""
        with self._lock:
            self._inputs[pin] = bool(value)
            self._changed.notify_all()

    def output_at(self, pin: int, t: np.ndarray | float) -> np.ndarray:
        """Board outputs (wired to the Otii's GPI): pin 1 = radio on, pin 2 = awake."""
        st = self.state_at(np.atleast_1d(np.asarray(t, dtype=np.float64)))
        if pin == 1:
            return st == PowerState.TX
        return (st != PowerState.OFF) & (st != PowerState.SLEEP)

    def output_edges(self, pin: int, t0: float, t1: float) -> list[tuple[float, bool]]:
        """Level changes of an output pin between two clock times: [(time, new level)]."""
        starts, _ = self.timeline()
        times = starts[(starts >= t0) & (starts < t1)]
        if times.size == 0:
            return []
        levels = self.output_at(pin, times)
        before = self.output_at(pin, np.nextafter(times, -np.inf))
        return [(float(t), bool(v)) for t, v, b in zip(times, levels, before) if v != b]

    # ----------------------------------------------------------------- sensors
    def sensor(self, name: str, t: np.ndarray | float) -> np.ndarray:
        """Deterministic sensor signals at clock times `t` (NaN-free, zero while unpowered)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        n = _hash_noise(t + 1000.0 * (zlib.crc32(name.encode()) % 97), self.seed)
        if name == "temperature":
            v = 24.0 + 0.5 * np.sin(2 * np.pi * t / 600.0) + 0.02 * n
        elif name == "humidity":
            v = 41.0 + 2.0 * np.sin(2 * np.pi * t / 900.0) + 0.1 * n
        elif name in ("accel_x", "accel_y"):
            f = 1.5 if name == "accel_x" else 2.5
            v = 0.05 * np.sin(2 * np.pi * f * t) + 0.005 * n
        elif name == "accel_z":
            v = 0.98 + 0.005 * n
        else:
            raise KeyError(f"virtual DUT has no sensor {name!r}; it has {', '.join(SENSORS)}")
        return np.where(self.state_at(t) != PowerState.OFF, v, 0.0)

    # ----------------------------------------------------------------- firmware
    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._changed.notify_all()
        self._input.put(None)
        self._thread.join(timeout=2)

    def _wait(self, seconds: float, generation: int, wake_pin: int | None = None) -> float:
        """Sleep `seconds` of firmware time; raise _PowerLost if the supply drops meanwhile."""
        end = clock.now() + seconds / self.speed
        with self._lock:
            while True:
                if self._generation != generation or self._closed:
                    raise _PowerLost
                if wake_pin is not None and self._inputs.get(wake_pin):
                    break
                left = end - clock.now()
                if left <= 0:
                    break
                self._changed.wait(left)
        return (clock.now() - end) * self.speed + seconds

    def _firmware(self) -> None:
        while not self._closed:
            with self._lock:
                while not self.powered and not self._closed:
                    self._changed.wait(0.5)
                generation = self._generation
                self._fw_generation = generation
            if self._closed:
                return
            try:
                self._boot(generation)
                self._shell(generation)
            except _PowerLost:
                self._drain_input()

    def _drain_input(self) -> None:
        while True:
            try:
                self._input.get_nowait()
            except queue.Empty:
                return

    def _boot(self, generation: int) -> None:
        if self.state != PowerState.BOOT:
            self._set_state(PowerState.BOOT, generation)
        self._boots += 1
        self._wait(0.02, generation)
        self._say("")
        self._say("hil-dut bootloader 2.1")
        self._wait(BOOT_SECONDS / 2, generation)
        self._say(f"boot: ok v{FIRMWARE_VERSION} (sensor-node, reset #{self._boots})")
        self._wait(BOOT_SECONDS / 2, generation)
        self._set_state(PowerState.IDLE, generation)

    def _shell(self, generation: int) -> None:
        line = bytearray()
        after_cr = False                         # CR LF is one Enter, not two
        self._emit(PROMPT, prompt=True)
        while True:
            if self._generation != generation or self._closed:
                raise _PowerLost
            try:
                chunk = self._input.get(timeout=0.2)
            except queue.Empty:
                continue
            if chunk is None:
                raise _PowerLost
            if not chunk:
                continue                         # a wake-up from set_supply()
            with self._lock:
                self._at_prompt = False
            if self.echo:
                self._emit(_echoed(chunk, after_cr))
            for byte in chunk:
                if byte == 0x0A and after_cr:
                    after_cr = False             # the LF of a CR LF: Enter was handled at CR
                    continue
                after_cr = byte == 0x0D
                if byte in (0x0A, 0x0D):
                    self._run(bytes(line).decode("utf-8", "replace").strip(), generation)
                    line.clear()
                    self._emit(PROMPT, prompt=True)
                elif byte in (0x08, 0x7F):
                    del line[-1:]
                else:
                    line.append(byte)

    def _run(self, command: str, generation: int) -> None:
        name, _, arg = command.partition(" ")
        handler = getattr(self, f"_cmd_{name}", None)
        if not name:
            return
        if handler is None:
            self._say(f"error: unknown command '{name}' (try 'help')")
            return
        try:
            handler(arg.strip(), generation)
        except ValueError as exc:
            self._say(f"error: {name}: {exc}")

    def _cmd_help(self, arg: str, gen: int) -> None:
        for usage, what in COMMANDS:
            self._say(f"  {usage:<12} {what}")

    def _cmd_version(self, arg: str, gen: int) -> None:
        self._say(f"version: {FIRMWARE_VERSION}")

    def _cmd_status(self, arg: str, gen: int) -> None:
        temp = float(self.sensor("temperature", clock.now())[0])
        self._say(f"state: {self.state.name.lower()} voltage: {self.voltage:.2f} V "
                  f"temp: {temp:.2f} C boots: {self._boots}")

    def _cmd_echo(self, arg: str, gen: int) -> None:
        self._say(arg)

    def _cmd_sensor(self, arg: str, gen: int) -> None:
        t = clock.now()
        v = {name: float(self.sensor(name, t)[0]) for name in SENSORS}
        self._say(f"sensor: temp={v['temperature']:.2f} C hum={v['humidity']:.1f} % "
                  f"accel={v['accel_x']:.3f},{v['accel_y']:.3f},{v['accel_z']:.3f} g")

    def _cmd_sleep(self, arg: str, gen: int) -> None:
        seconds = _positive(arg, "seconds")
        self._say(f"sleep: entering for {seconds:.3f} s")
        self._set_state(PowerState.SLEEP, gen)
        slept = self._wait(seconds, gen, wake_pin=1)
        self._set_state(PowerState.IDLE, gen)
        self._say(f"sleep: awake after {slept:.3f} s")

    def _cmd_tx(self, arg: str, gen: int) -> None:
        bursts = int(_positive(arg, "bursts"))
        for k in range(1, bursts + 1):
            self._set_state(PowerState.TX, gen)
            self._wait(TX_BURST_SECONDS, gen)
            self._set_state(PowerState.IDLE, gen)
            self._say(f"tx: burst {k}/{bursts} 32 bytes")
            self._wait(TX_GAP_SECONDS, gen)
        self._say(f"tx: done {bursts}")

    def _cmd_log(self, arg: str, gen: int) -> None:
        """Exactly `total` bytes of numbered lines; the last one is cut short but still ends
        with a line break, so "log: done" starts a line of its own."""
        total = int(_positive(arg, "bytes"))
        line_no, sent = 0, 0
        chunk = bytearray()
        while sent < total:
            line_no += 1
            text = f"log {line_no:08d} sensor-node heartbeat lorem ipsum dolor sit amet\r\n".encode()
            left = total - sent
            if len(text) > left:
                text = text[:left - 2] + b"\r\n" if left >= 2 else b"\n"
            chunk += text
            sent += len(text)
            if len(chunk) >= 65536:
                self._emit(bytes(chunk))
                chunk.clear()
                if self._generation != gen:
                    raise _PowerLost
        if chunk:
            self._emit(bytes(chunk))
        self._say(f"log: done {total} bytes")

    def _cmd_reset(self, arg: str, gen: int) -> None:
        self._say("reset: rebooting")
        self._boot(gen)

    def _cmd_panic(self, arg: str, gen: int) -> None:
        self._say("PANIC: assertion failed: sensor_ready (drivers/sensor.c:142)")
        self._say("  pc=0x08004a1c lr=0x08003f77 sp=0x20001f40 xpsr=0x61000000")
        self._say("  r0=0x00000000 r1=0x20000a10 r2=0x0000008e r3=0xdeadbeef")
        self._say("rebooting in 100 ms")
        self._wait(0.1, gen)
        self._boot(gen)


SENSORS = ("temperature", "humidity", "accel_x", "accel_y", "accel_z")
COMMANDS = (
    ("help", "list commands"),
    ("version", "print the firmware version"),
    ("status", "power state, supply voltage, temperature"),
    ("reset", "reboot"),
    ("sleep <s>", "deep sleep for s seconds (GPO1 wakes early)"),
    ("tx <n>", "send n radio bursts"),
    ("sensor", "read the sensors"),
    ("echo <text>", "print text"),
    ("log <bytes>", "print that many bytes of log"),
    ("panic", "crash (for watcher tests)"),
)


def _echoed(chunk: bytes, after_cr: bool) -> bytes:
    """What the firmware echoes for typed bytes: every Enter (CR, LF or CR LF) as one CR LF."""
    if after_cr and chunk.startswith(b"\n"):
        chunk = chunk[1:]
    return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _positive(arg: str, what: str) -> float:
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"expected a number of {what}, got '{arg}'") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{what} must be a positive finite number, got {arg}")
    return value
