"""Measurement points of the STTP publisher simulator: grid telemetry from virtual PMUs.

Each device carries eight points in turn: frequency (near the 50/60 Hz nominal), df/dt,
voltage and current phasor magnitude and angle, an analog value and a digital status word.
Values are smooth functions of time, computed for a whole batch of frames with numpy, so a
subscriber can check ranges and waveforms against known answers.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from hil.protocols.sttp_metadata import Device, MeasurementRecord, Metadata

KINDS = ("FREQ", "DFDT", "VPHM", "VPHA", "IPHM", "IPHA", "ALOG", "DIGI")
REFERENCE = {"FREQ": "FQ", "DFDT": "DF", "VPHM": "PM1", "VPHA": "PA1", "IPHM": "PM2",
             "IPHA": "PA2", "ALOG": "AV1", "DIGI": "DV1"}
VOLTAGE = 230_000 / np.sqrt(3)       # phase-to-neutral kV of a 230 kV bus, in V
CURRENT = 400.0                      # A
FREQ_SWING = 0.02                    # Hz of the slow frequency wander
ANALOG_HZ = 1.0                      # the analog points are 1 Hz sines of amplitude 10
NAMESPACE = uuid.UUID("5b0c7e4e-39b1-4c52-9a3f-6c8f0b2a5e11")


@dataclass(frozen=True)
class PointSet:
    """The simulator's points: metadata, and per point base, amplitude, frequency and phase."""

    metadata: Metadata
    kinds: np.ndarray          # index into KINDS per point
    base: np.ndarray
    amp: np.ndarray
    freq: np.ndarray
    phase: np.ndarray

    def __len__(self) -> int:
        return len(self.metadata.measurements)

    def rows(self) -> list[dict[str, object]]:
        """The ActiveMeasurements rows filter expressions run against (lower-case columns)."""
        return [{"signalid": str(m.signal_id), "id": m.id, "pointtag": m.point_tag,
                 "signalreference": m.signal_reference, "signaltype": m.signal_type,
                 "signalacronym": m.signal_type, "device": m.device, "deviceacronym": m.device,
                 "description": m.description, "enabled": m.enabled, "index": i}
                for i, m in enumerate(self.metadata.measurements)]

    def values(self, t: np.ndarray) -> np.ndarray:
        """Values (frames × points, float32) at times t (s since the simulator's origin)."""
        arg = 2 * np.pi * self.freq[None, :] * t[:, None] + self.phase[None, :]
        out = self.base[None, :] + self.amp[None, :] * np.sin(arg)
        derivative = self.kinds == KINDS.index("DFDT")
        if derivative.any():
            out[:, derivative] = (self.amp[derivative] * np.cos(arg[:, derivative]))
        angles = np.isin(self.kinds, (KINDS.index("VPHA"), KINDS.index("IPHA")))
        out[:, angles] = (out[:, angles] + 180.0) % 360.0 - 180.0
        digital = self.kinds == KINDS.index("DIGI")
        out[:, digital] = (np.sin(arg[:, digital]) > 0).astype(np.float64)
        return out.astype(np.float32)


    def period_frames(self, rate: float, limit: int = 100_000) -> int | None:
        """The fewest frames (at `rate`) after which every point's value repeats, when at most
        `limit`: each point frequency times the period is a whole number of cycles."""
        cycles = np.unique(self.freq) / rate                # cycles per frame, per frequency
        for start in range(1, limit + 1, 4096):
            frames = np.arange(start, min(start + 4096, limit + 1))[:, None]
            whole = np.abs(frames * cycles - np.rint(frames * cycles)) < 1e-9
            hits = np.flatnonzero(whole.all(axis=1))
            if hits.size:
                return int(frames[hits[0], 0])
        return None


def make_points(n: int, nominal: float = 50.0, rate: float = 30.0, seed: int = 1,
                prefix: str = "GRID") -> PointSet:
    """`n` points on ceil(n / 8) devices `{prefix}_PMU001…`, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    devices, records = [], []
    kinds = np.arange(n) % len(KINDS)
    base = np.zeros(n)
    amp = np.zeros(n)
    freq = np.full(n, 0.2)
    phase = rng.uniform(0, 2 * np.pi, n)
    for p in range(n):
        d, kind = p // len(KINDS), KINDS[p % len(KINDS)]
        acronym = f"{prefix}_PMU{d + 1:03d}"
        if p % len(KINDS) == 0:
            devices.append(Device(acronym, f"Simulated PMU {d + 1}",
                                  uuid.uuid5(NAMESPACE, f"{seed}:{acronym}"), int(round(rate))))
        tag = f"{acronym}:{kind}"
        records.append(MeasurementRecord(
            uuid.uuid5(NAMESPACE, f"{seed}:{tag}"), tag, kind, f"SIM:{p + 1}",
            f"{acronym}-{REFERENCE[kind]}", acronym, f"{kind} of simulated PMU {d + 1}",
            phasor_index=(1 if kind.startswith("V") else 2) if kind[1:3] == "PH" else None))
        base[p], amp[p], freq[p] = {
            "FREQ": (nominal, FREQ_SWING, 0.2), "DFDT": (0.0, FREQ_SWING * 2 * np.pi * 0.2, 0.2),
            "VPHM": (VOLTAGE, VOLTAGE * 0.005, 0.1), "VPHA": (phase[p] * 57.3, 20.0, 0.05),
            "IPHM": (CURRENT, CURRENT * 0.1, 0.05), "IPHA": (phase[p] * 57.3 - 25, 20.0, 0.05),
            "ALOG": (0.0, 10.0, ANALOG_HZ), "DIGI": (0.0, 1.0, 0.5)}[kind]
    return PointSet(Metadata(devices, records), kinds, base, amp, freq, phase)
