"""The simulated Otii Arc/Ace and its recordings, measuring a VirtualDut.

No protocol here: the device's settings, its supply output over time, over-current trips, and
recordings whose samples are generated lazily (vectorised) from the DUT's current model at the
sample clock times. Samples are materialised once and kept, so every read of a recording returns
the same values, and formatted JSON text of whole blocks is cached for fast bulk reads.

Time: recording time tau = (clock - start) * speed; sample k of a channel at rate r lies at
tau = k / r. With speed 1 (the default) recording time is wall time.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from hil.protocols.otii_json import format_numbers

#: channel -> (kind, significant digits of the JSON numbers it is sent with)
CHANNELS: dict[str, tuple[str, int]] = {
    "mc": ("analog", 5), "mv": ("analog", 6), "mp": ("analog", 5), "me": ("analog", 9),
    "ac": ("analog", 5), "av": ("analog", 6), "ap": ("analog", 5), "ae": ("analog", 9),
    "sp": ("analog", 6), "sn": ("analog", 6), "vb": ("analog", 6), "vj": ("analog", 6),
    "tp": ("analog", 4), "rx": ("log", 0), "i1": ("digital", 0), "i2": ("digital", 0),
}
ARC_RATE = 4000
ACE_MAX_RATE = 50_000
IR_DROP_OHM = 0.05                    # output resistance: mv sags by this times the current
NOISE_A = {"low": 2e-9, "high": 0.4e-6}  # measurement noise (one sigma) per current range
LSB_A = {"low": 1e-10, "high": 1e-8}     # current quantum per range
DUT_BAUDRATE = 115_200
BLOCK = 4000                          # samples per cached block of formatted text
TEXT_CACHE_BYTES = 64 << 20
OC_GRID_S = 50e-6                     # over-current detector resolution (clock seconds)


def iso_time(t: float) -> str:
    """A hil.clock time as the ISO 8601 `start-time` of a recording (UTC, microseconds)."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="microseconds")


class Timeline:
    """A piecewise-constant value over clock time (the supply output, a pin level)."""

    def __init__(self, t: float, value: float) -> None:
        self.times = [t]
        self.values = [value]

    def set(self, t: float, value: float) -> None:
        if value != self.values[-1]:
            self.times.append(max(t, self.times[-1]))
            self.values.append(value)

    @property
    def value(self) -> float:
        return self.values[-1]

    def at(self, t: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(np.asarray(self.times), t, side="right") - 1
        return np.asarray(self.values)[np.clip(idx, 0, None)]


@dataclass
class DeviceInfo:
    """Identity of one simulated device, as listed by otii_get_devices."""

    device_id: str = "Arc12345678912345678912345678900001"
    name: str = "Arc-SIM"
    type: str = "Arc"
    hw_version: str = "Arc 1.4"
    fw_version: str = "1.3.2"

    def as_json(self) -> dict[str, str]:
        return {"device_id": self.device_id, "name": self.name, "type": self.type}


Load = Callable[[np.ndarray], np.ndarray]


@dataclass
class Wiring:
    """What the device's outputs and inputs are connected to (the DUT, or nothing)."""

    load: Load = lambda t: np.zeros(np.shape(t))
    supply: Callable[[bool, float], None] = lambda on, volts: None
    gpo: Callable[[int, bool], None] = lambda pin, value: None
    gpi: Callable[[int, float], bool] = lambda pin, t: False
    gpi_edges: Callable[[int, float, float], list[tuple[float, bool]]] = lambda p, a, b: []
    uart_lines: Callable[[float, float], list[tuple[float, str]]] = lambda a, b: []
    uart_write: Callable[[bytes], None] = lambda data: None


def wire_dut(dut: Any) -> Wiring:
    """Connect a device's main output, GPIO and UART to a VirtualDut (hil.sim.dut)."""
    return Wiring(
        load=dut.current_at,
        supply=lambda on, volts: dut.set_supply(on, volts),
        gpo=dut.set_input,
        gpi=lambda pin, t: bool(dut.output_at(pin, t)[0]),
        gpi_edges=dut.output_edges,
        uart_lines=lambda a, b: [(ln.time, ln.text) for ln in dut.uart_lines(a, b)],
        uart_write=dut.feed,
    )


@dataclass
class SimDevice:
    """Settings and supply state of one Arc/Ace. Every method takes the clock time `now`."""

    info: DeviceInfo
    wiring: Wiring = field(default_factory=Wiring)
    main: bool = False
    main_voltage: float = 3.3
    max_current: float = 5.0
    range: str = "low"
    channels: set[str] = field(default_factory=set)
    rates: dict[str, int] = field(default_factory=dict)
    uart: bool = False
    baudrate: int = DUT_BAUDRATE
    connected: bool = True
    unplugs: list[float] = field(default_factory=list)      # clock times it was unplugged
    trips: int = 0
    settings: dict[str, Any] = field(default_factory=dict)   # validate-and-store values
    supply: Timeline = field(default_factory=lambda: Timeline(0.0, 0.0))
    _oc_checked: float = 0.0

    @property
    def is_ace(self) -> bool:
        return self.info.type == "Ace"

    def rate(self, channel: str) -> int:
        return self.rates.get(channel, ARC_RATE)

    def set_main(self, on: bool, now: float) -> None:
        self.check_overcurrent(now)
        self.main = bool(on)
        self._apply(now)

    def set_voltage(self, volts: float, now: float) -> None:
        self.check_overcurrent(now)
        self.main_voltage = float(volts)
        if self.main:
            self._apply(now)

    def _apply(self, now: float) -> None:
        out = self.main_voltage if self.main and self.connected else 0.0
        self.supply.set(now, out)
        self._oc_checked = now
        self.wiring.supply(out > 0, self.main_voltage)

    def unplug(self, now: float) -> None:
        """The USB cable is pulled: output off, data ends, commands fail."""
        self.check_overcurrent(now)
        self.connected = False
        self.unplugs.append(now)
        self._apply(now)

    def plug(self, now: float) -> None:
        """The USB cable is back: the device is listed again, its main output off."""
        self.connected, self.main = True, False
        self._apply(now)

    def current(self, t: np.ndarray) -> np.ndarray:
        """True current (A) through the main output at clock times t (zero where it is off)."""
        t = np.asarray(t, dtype=np.float64)
        return np.where(self.supply.at(t) > 0, self.wiring.load(t), 0.0)

    def check_overcurrent(self, now: float) -> float | None:
        """Switch main off at the first instant since the last check where the current exceeded
        max_current, like the hardware's cut-off. Returns that instant, or None."""
        start, self._oc_checked = self._oc_checked, now
        if not (self.main and self.connected) or now <= start:
            return None
        start = max(start, now - 10.0)
        t = np.arange(start, now, OC_GRID_S)
        over = np.flatnonzero(self.current(t) > self.max_current)
        if over.size == 0:
            return None
        trip = float(t[over[0]])
        self.main = False
        self.trips += 1
        self.supply.set(trip, 0.0)
        self.wiring.supply(False, self.main_voltage)
        return trip


class _Samples:
    """Materialised main-channel samples of one device in one recording at one rate:
    measured current (quantised, with range noise) and cumulative energy."""

    def __init__(self, device: SimDevice, start: float, rate: int, speed: float, seed: int) -> None:
        self.device, self.start, self.rate, self.speed = device, start, rate, speed
        self.mc = np.empty(0)
        self.me = np.empty(0)
        self.n = 0
        self._rng = np.random.default_rng(seed)

    def times(self, i: int, j: int) -> np.ndarray:
        """Clock times of samples i..j-1."""
        return self.start + np.arange(i, j, dtype=np.float64) / (self.rate * self.speed)

    def extend(self, n: int) -> None:
        if n <= self.n:
            return
        if n > self.mc.size:
            cap = max(n, 2 * self.mc.size, 4 * BLOCK)
            self.mc = np.concatenate([self.mc[:self.n], np.empty(cap - self.n)])
            self.me = np.concatenate([self.me[:self.n], np.empty(cap - self.n)])
        t = self.times(self.n, n)
        rng = self.device.range
        i = self.device.current(t) + NOISE_A[rng] * self._rng.standard_normal(t.size)
        i = np.rint(i / LSB_A[rng]) * LSB_A[rng]
        v = self.volts(t, i)
        e0 = self.me[self.n - 1] if self.n else 0.0
        self.mc[self.n:n] = i
        self.me[self.n:n] = e0 + np.cumsum(v * i) / self.rate
        self.n = n

    def volts(self, t: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Main output voltage at clock times t for measured currents i (µV resolution)."""
        return np.rint((self.device.supply.at(t) - IR_DROP_OHM * i) * 1e6) / 1e6


def _channel_values(s: _Samples, ch: str, i: int, j: int) -> np.ndarray:
    """Values of analog channel `ch` for samples i..j-1 (already materialised)."""
    mc = s.mc[i:j]
    if ch == "mc":
        return mc
    if ch == "me":
        return s.me[i:j]
    t = s.times(i, j)
    mv = s.volts(t, mc)
    if ch in ("mv", "sp"):
        return mv
    if ch == "mp":
        return mv * mc
    if ch == "vb":
        return np.full(j - i, 5.0)
    if ch == "tp":
        return np.full(j - i, 25.0)
    return np.zeros(j - i)          # ADC channels, sense-, DC jack: nothing connected


class TextCache:
    """Formatted JSON numbers of whole blocks, least recently used evicted first."""

    def __init__(self, max_bytes: int = TEXT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._size = 0

    def get(self, key: tuple[Any, ...], make: Callable[[], bytes]) -> bytes:
        text = self._blocks.get(key)
        if text is not None:
            self._blocks.move_to_end(key)
            return text
        text = make()
        self._blocks[key] = text
        self._size += len(text)
        while self._size > self.max_bytes and self._blocks:
            self._size -= len(self._blocks.popitem(last=False)[1])
        return text

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        return key in self._blocks


@dataclass
class Track:
    """One channel of one device in a recording."""

    device: SimDevice
    channel: str
    rate: int
    recorded: bool = True

    @property
    def kind(self) -> str:
        return CHANNELS[self.channel][0]


class Recording:
    """A recording: tracks of every enabled channel, growing while it runs."""

    def __init__(self, rec_id: int, name: str, devices: list[SimDevice], start: float,
                 speed: float, seed: int, cache: TextCache) -> None:
        self.id, self.name, self.start, self.speed = rec_id, name, start, speed
        self.stop: float | None = None
        self.tracks: dict[tuple[str, str], Track] = {}
        self._samples: dict[tuple[str, int], _Samples] = {}
        self._cache = cache
        self._warmed: dict[tuple[str, str], int] = {}     # track -> samples formatted ahead
        self.offset = 0.0
        self.log_offsets: dict[tuple[str, str], float] = {}
        self.logs: list[dict[str, Any]] = []          # recording_log entries
        for k, dev in enumerate(devices):
            for ch in sorted(dev.channels):
                rate = dev.rate(ch) if CHANNELS[ch][0] == "analog" else 0
                self.tracks[(dev.info.device_id, ch)] = Track(dev, ch, rate)
                if rate:
                    key = (dev.info.device_id, rate)
                    if key not in self._samples:
                        self._samples[key] = _Samples(dev, start, rate, speed,
                                                      seed * 7919 + rec_id * 131 + k)

    # ----------------------------------------------------------------- time and size
    @property
    def running(self) -> bool:
        return self.stop is None

    def end(self, track: Track, now: float) -> float:
        """Clock time where this track's data ends (now while running)."""
        end = now if self.stop is None else self.stop
        unplugged = [t for t in track.device.unplugs if t >= self.start]
        if unplugged:
            end = min(end, unplugged[0])
        return max(end, self.start)

    def tau(self, t: float) -> float:
        return (t - self.start) * self.speed

    def track(self, device: SimDevice, channel: str) -> Track:
        """The track of a channel; an empty one if the channel was not enabled at start."""
        found = self.tracks.get((device.info.device_id, channel))
        if found is not None:
            return found
        rate = device.rate(channel) if CHANNELS[channel][0] == "analog" else 0
        return Track(device, channel, rate, recorded=False)

    def count(self, track: Track, now: float) -> int:
        if not track.recorded:
            return 0
        if track.kind == "analog":
            return int(np.floor(self.tau(self.end(track, now)) * track.rate + 1e-9))
        return len(self.events(track, now))

    def materialise(self, now: float) -> None:
        """Generate every analog sample up to `now` (samples never change once made)."""
        for track in self.tracks.values():
            if track.kind == "analog":
                self._samples_of(track).extend(self.count(track, now))

    def _samples_of(self, track: Track) -> _Samples:
        return self._samples[(track.device.info.device_id, track.rate)]

    # ----------------------------------------------------------------- analog data
    def analog(self, track: Track, i: int, j: int, now: float) -> np.ndarray:
        if not track.recorded:
            return np.zeros(0)
        s = self._samples_of(track)
        s.extend(min(j, self.count(track, now)))
        return _channel_values(s, track.channel, i, min(j, s.n))

    def analog_text(self, track: Track, i: int, j: int, now: float) -> bytes:
        """JSON numbers of samples i..j-1, whole blocks from the text cache."""
        j = min(j, self.count(track, now))
        digits = CHANNELS[track.channel][1]
        parts: list[bytes] = []
        k = i
        while k < j:
            b0 = (k // BLOCK) * BLOCK
            b1 = b0 + BLOCK
            if k == b0 and b1 <= j:
                key = (self.id, track.device.info.device_id, track.channel, b0)
                parts.append(self._cache.get(
                    key, lambda b0=b0, b1=b1: format_numbers(self.analog(track, b0, b1, now), digits)))
                k = b1
            else:
                e = min(j, b1)
                parts.append(format_numbers(self.analog(track, k, e, now), digits))
                k = e
        return b",".join(p for p in parts if p)

    def warm_cache(self, now: float) -> None:
        """Format newly finished blocks of mc/mv ahead of reads, once each (what a real
        server's storage layer does); blocks evicted later are formatted again on demand."""
        for key, track in self.tracks.items():
            if track.kind == "analog" and track.channel in ("mc", "mv"):
                done = (self.count(track, now) // BLOCK) * BLOCK
                for b0 in range(self._warmed.get(key, 0), done, BLOCK):
                    self.analog_text(track, b0, b0 + BLOCK, now)
                self._warmed[key] = max(done, self._warmed.get(key, 0))

    def index_at(self, track: Track, tau: float, now: float) -> int:
        n = self.count(track, now)
        if track.kind == "analog":
            return int(min(max(np.floor(tau * track.rate + 1e-9), 0), n))
        times = [e["timestamp"] for e in self.events(track, now)]
        return int(np.searchsorted(times, tau, side="left"))

    def statistics(self, track: Track, t_from: float, t_to: float, now: float) -> dict[str, float]:
        zero = {"min": 0.0, "max": 0.0, "average": 0.0, "energy": 0.0, "charge": 0.0}
        if track.kind != "analog":
            return zero
        i = self.index_at(track, t_from, now)
        j = self.index_at(track, t_to, now)
        if j <= i:
            return zero
        v = self.analog(track, i, j, now)
        stats = {"min": float(v.min()), "max": float(v.max()), "average": float(v.mean()),
                 "energy": 0.0, "charge": 0.0}
        if track.channel in ("mc", "mv", "mp", "me"):
            mc = self._samples_of(track).mc[i:j]
            mp = self.analog(Track(track.device, "mp", track.rate), i, j, now)
            stats["energy"] = float(mp.sum() / track.rate)
            stats["charge"] = float(mc.sum() / track.rate)
        return stats

    # ----------------------------------------------------------------- event channels
    def events(self, track: Track, now: float) -> list[dict[str, Any]]:
        """Entries of a digital (i1/i2) or log (rx) channel, timestamps in recording time."""
        if not track.recorded:
            return []
        end = self.end(track, now)
        w = track.device.wiring
        if track.kind == "digital":
            pin = int(track.channel[1])
            out = [{"timestamp": 0.0, "value": bool(w.gpi(pin, self.start))}]
            out += [{"timestamp": self.tau(t), "value": bool(v)}
                    for t, v in w.gpi_edges(pin, self.start, end) if t > self.start]
            return out
        if not track.device.uart:
            return []
        lines = w.uart_lines(self.start, end)
        garble = track.device.baudrate != DUT_BAUDRATE
        return [{"timestamp": self.tau(t), "value": _garbled(text) if garble else text}
                for t, text in lines]

    # ----------------------------------------------------------------- shapes
    def as_json(self) -> dict[str, Any]:
        return {"recording_id": self.id, "name": self.name, "start-time": iso_time(self.start),
                "running": self.running,
                "measurements": [{"device_id": d, "channel": c, **({"sample_rate": t.rate}
                                                                   if t.rate else {})}
                                 for (d, c), t in self.tracks.items()]}

    def info(self, track: Track, now: float) -> dict[str, Any]:
        if track.kind == "analog":
            to = self.count(track, now) / track.rate
        else:
            to = self.tau(self.end(track, now))
        return {"offset": self.offset, "from": 0.0, "to": to, "sample_rate": track.rate}


def _garbled(text: str) -> str:
    """What a UART at the wrong baud rate makes of a line."""
    return "".join("\ufffd" if (ord(c) * 7) % 3 else "~" for c in text[: max(1, len(text) // 2)])


@dataclass
class Project:
    """An open project: its recordings and user logs."""

    id: int
    recordings: list[Recording] = field(default_factory=list)
    filename: str = ""
    user_logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    saved: bool = True

    @property
    def running(self) -> Recording | None:
        last = self.recordings[-1] if self.recordings else None
        return last if last is not None and last.running else None

