"""Signals of the TiA simulator: configuration and deterministic sample generators.

A signal is given as a string `TYPE:CHANNELSxBLOCK@RATE[/SOURCE][*]` (comma-separated list, the
first one, or the one marked `*`, is the master), e.g. `"eeg:8x4@500/sine,emg:2x4@500/noise"`,
or as tables `{type="eeg", channels=8, block=4, rate=500, source="sine", master=true}`.

Sources are pure functions of the sample index, so every client and every run sees the same
values: `sine` (10 Hz, amplitude 50, channel c shifted by c·π/4), `ramp` (c·100000 + index mod
100000: makes block order obvious), `noise` (seeded, unit sigma), `const` (c+1), `dut` (the
virtual DUT's sensors, one per channel), and for aperiodic types `toggle` (0/1 flipping `rate`
times per second; sent only when it flips).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hil.errors import SimulatorError
from hil.protocols.tia_metainfo import (APERIODIC, MAX_RATE, MetaInfo, SignalInfo,
                                        canonical_type)

SOURCES = ("sine", "ramp", "noise", "const", "dut", "toggle")
SINE_HZ = 10.0
SINE_AMPLITUDE = 50.0
DUT_SENSORS = ("temperature", "humidity", "accel_x", "accel_y", "accel_z")

_SPEC = re.compile(r"^\s*(?P<type>[\w-]+)\s*:\s*(?P<ch>\d+)\s*(?:x\s*(?P<blk>\d+))?\s*"
                   r"@\s*(?P<rate>[\d.]+)\s*(?:/\s*(?P<src>\w+))?\s*(?P<master>\*)?\s*$")


@dataclass(frozen=True)
class SignalSpec:
    """One simulated signal type: channels, block size, rate (samples/s per channel), source."""

    type: str
    channels: int
    block: int
    rate: float
    source: str = "sine"
    master: bool = False
    labels: tuple[str, ...] = ()

    @property
    def aperiodic(self) -> bool:
        return self.type in APERIODIC

    def info(self) -> SignalInfo:
        labels = self.labels or (DUT_SENSORS[:self.channels] if self.source == "dut" else
                                 tuple(f"{self.type}{i}" for i in range(1, self.channels + 1)))
        return SignalInfo(self.type, self.rate, self.block, tuple(labels))


def _checked(spec: SignalSpec) -> SignalSpec:
    canon = canonical_type(spec.type)
    if canon is None:
        raise SimulatorError(f"TiA signal: unknown type {spec.type!r}")
    if spec.source not in SOURCES:
        raise SimulatorError(f"TiA signal {canon}: unknown source {spec.source!r}; "
                             f"one of {', '.join(SOURCES)}")
    if not (1 <= spec.channels <= 65535 and 1 <= spec.block <= 65535
            and 0 < spec.rate <= MAX_RATE):
        raise SimulatorError(f"TiA signal {canon}: channels and block size must be 1..65535, "
                             f"the rate more than 0 and at most {MAX_RATE:g}")
    if spec.labels and len(spec.labels) != spec.channels:
        raise SimulatorError(f"TiA signal {canon}: {len(spec.labels)} labels for "
                             f"{spec.channels} channels")
    if spec.source == "dut" and spec.channels > len(DUT_SENSORS):
        raise SimulatorError(f"TiA signal {canon}: the DUT has only {len(DUT_SENSORS)} sensors")
    source = "toggle" if canon in APERIODIC else spec.source
    return replace(spec, type=canon, source=source)


def parse_signals(spec: str | list[dict[str, Any]]) -> list[SignalSpec]:
    """Signals from the string form or a list of tables; exactly one master (default: first)."""
    items: list[SignalSpec] = []
    if isinstance(spec, str):
        for part in filter(str.strip, spec.split(",")):
            m = _SPEC.match(part)
            if m is None:
                raise SimulatorError(f"TiA signal {part.strip()!r}: expected "
                                     "TYPE:CHANNELSxBLOCK@RATE[/SOURCE][*], e.g. eeg:8x4@500/sine")
            try:
                items.append(SignalSpec(m["type"], int(m["ch"]), int(m["blk"] or 1),
                                        float(m["rate"]), m["src"] or "sine", bool(m["master"])))
            except ValueError as exc:      # a rate like 1.2.3, a count of 5000 digits
                raise SimulatorError(f"TiA signal {part.strip()[:60]!r}: {exc}") from None
    else:
        for t in spec:
            try:
                items.append(SignalSpec(str(t["type"]), int(t["channels"]), int(t.get("block", 1)),
                                        float(t["rate"]), str(t.get("source", "sine")),
                                        bool(t.get("master", False)),
                                        tuple(str(x) for x in t.get("labels", ()))))
            except KeyError as exc:
                raise SimulatorError(f"TiA signal table {t!r} lacks {exc.args[0]!r}") from None
            except (TypeError, ValueError, AttributeError) as exc:
                raise SimulatorError(f"TiA signal table {t!r}: {exc}") from None
    items = [_checked(s) for s in items]
    if not items:
        raise SimulatorError("TiA simulator needs at least one signal")
    if len({s.type for s in items}) != len(items):
        raise SimulatorError("TiA signals: each type may appear once")
    masters = [s for s in items if s.master]
    if len(masters) > 1:
        raise SimulatorError("TiA signals: more than one master marked with '*'")
    master = masters[0] if masters else next((s for s in items if not s.aperiodic), None)
    if master is None or master.aperiodic:
        raise SimulatorError("TiA signals: the master must be a periodic type")
    items = [replace(s, master=s is master) for s in items]
    rate = master.rate / master.block
    for s in items:
        if not s.aperiodic and not math.isclose(s.rate / s.block, rate, rel_tol=1e-9):
            raise SimulatorError(f"TiA signal {s.type}: {s.rate:g}/{s.block} = {s.rate / s.block:g} "
                                 f"packets/s, but the master sends {rate:g} packets/s")
    return items


def metainfo(signals: list[SignalSpec]) -> MetaInfo:
    master = next(s for s in signals if s.master)
    return MetaInfo(tuple(s.info() for s in signals), master.rate, master.block,
                    {"id": "hil-sim", "firstName": "", "surname": ""}, master.type)


def _hash_uniform(index: np.ndarray, channel: int, seed: int) -> np.ndarray:
    """Uniform (0, 1) numbers as a pure function of (index, channel, seed): splitmix64."""
    x = index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x += np.uint64((seed * 1_000_003 + channel * 7919 + 1) & 0xFFFFFFFF) << np.uint64(20)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


SensorFn = Callable[[str, np.ndarray], np.ndarray]


def generate(spec: SignalSpec, first: int, n: int, *, seed: int = 1,
             sensor: SensorFn | None = None, clock_of: Callable[[np.ndarray], np.ndarray] | None
             = None) -> np.ndarray:
    """Samples `first … first+n-1` of a periodic signal as (channels, n) float32.

    For `dut`, `clock_of(index)` turns sample indices into hil.clock times for `sensor()`.
    """
    idx = np.arange(first, first + n, dtype=np.int64)
    out = np.empty((spec.channels, n), dtype=np.float32)
    t = idx / spec.rate
    for c in range(spec.channels):
        if spec.source == "sine":
            hz = min(SINE_HZ, spec.rate / 4)
            out[c] = SINE_AMPLITUDE * np.sin(2 * np.pi * hz * t + c * np.pi / 4)
        elif spec.source == "ramp":
            out[c] = c * 100_000 + idx % 100_000
        elif spec.source == "noise":
            u1, u2 = _hash_uniform(idx, 2 * c, seed), _hash_uniform(idx, 2 * c + 1, seed)
            out[c] = np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
        elif spec.source == "const":
            out[c] = c + 1
        elif spec.source == "dut":
            if sensor is None or clock_of is None:
                raise SimulatorError(f"TiA signal {spec.type}: source 'dut' needs a virtual DUT")
            out[c] = sensor(DUT_SENSORS[c], clock_of(idx))
        else:   # toggle, sampled as a periodic value
            out[c] = toggle_value(spec, idx, 1.0)
    return out


def toggle_value(spec: SignalSpec, packet: np.ndarray, packet_rate: float) -> np.ndarray:
    """Value of an aperiodic toggle at master packet indices: flips `rate` times per second."""
    period = max(1, round(packet_rate / spec.rate))
    return ((packet // period) % 2).astype(np.float32)


def toggle_changes(spec: SignalSpec, packets: np.ndarray, packet_rate: float) -> np.ndarray:
    """Mask of the master packets at which an aperiodic toggle changes (and so is sent)."""
    period = max(1, round(packet_rate / spec.rate))
    return packets % period == 0
