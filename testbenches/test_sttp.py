"""Grid telemetry test benches: an STTP (IEEE 2664) stream from PMUs, validated for rate,
gaps, monotonic time and value ranges, and a lossy stream proving that validation notices lost
and corrupted frames. Rig tables used:

    [grid]                      # a PMU data concentrator publishing STTP
    kind = "sttp"
    host = "sim"                # or the openPDC / openHistorian host
    rate = 30.0                 # frames per second the PMUs report at
    filter = "FILTER ActiveMeasurements WHERE SignalType IN ('FREQ', 'VPHM', 'IPHM', 'VPHA')"

    [grid_lossy]                # a stream losing 2 frames in 30 and corrupting one in 60
    kind = "sttp"
    host = "sim:lossy"
    faults = "drop@10x2/30,corrupt@25/60"
    resync = true
"""
from __future__ import annotations

import pytest

from hil import ValidationError

NOMINAL_HZ = 50.0
VOLTAGE_KV = 230.0 / 3 ** 0.5          # phase-to-neutral of a 230 kV bus


def test_grid_frequency_and_phasors(grid, measure):
    capture = grid.capture(seconds=1.0)
    freqs = [s for s in capture.signals if s.endswith(":FREQ")]
    volts = [s for s in capture.signals if s.endswith(":VPHM")]
    assert freqs and volts, f"no frequency or voltage points in {list(capture.signals)}"
    check = capture.validate(measure).no_gaps().monotonic()
    for name in freqs:
        check.rate(name, tolerance=0.05).value_range(name, NOMINAL_HZ - 0.5, NOMINAL_HZ + 0.5)
    for name in volts:
        check.value_range(name, 0.9 * VOLTAGE_KV * 1e3, 1.1 * VOLTAGE_KV * 1e3)
    for name in (s for s in capture.signals if s.endswith(":VPHA")):
        check.value_range(name, -180.0, 180.0)
    measure("grid.signals", len(capture.signals), low=1)


def test_grid_metadata_describes_every_signal(grid, measure):
    """Every subscribed signal has a point tag, signal id and type in the publisher's metadata."""
    capture = grid.capture(frames=5)
    for name, data in capture.signals.items():
        record = grid.metadata.by_tag[name]
        assert str(record.signal_id) == data.channels[0]
        assert record.signal_type in ("FREQ", "VPHM", "IPHM", "VPHA")
    measure("grid.frames", capture.n_packets, low=5, high=5)


def test_validation_notices_lost_and_corrupt_frames(grid_lossy, measure):
    capture = grid_lossy.capture(seconds=1.0)
    with pytest.raises(ValidationError, match="missing"):
        capture.validate().no_gaps()
    measure("grid_lossy.corrupt_frames_skipped", capture.lost_packets, low=1)
    measure("grid_lossy.errors_recorded", len(grid_lossy.errors), low=1)
