"""Stream test benches: an EEG-style TiA stream, validated for rate, gaps, range and waveform.

The rig feeds a 10 Hz, 50 µV test sine into the amplifier's EEG inputs (on the simulated rig:
the TiA simulator's `sine` source), so the waveform check has a known answer. Rig tables used:

    [eeg]                       # an EEG amplifier streaming TiA
    kind = "tia"
    host = "sim"
    signals = "eeg:8x4@500/sine,emg:2x4@500/noise,sensors:5x1@125/dut"

    [eeg_lossy]                 # the same kind of stream losing 3 packets in every 50
    kind = "tia"
    host = "sim"
    signals = "eeg:8x4@500/sine"
    faults = "drop@20x3/50"
"""
from __future__ import annotations

import pytest

from hil import ValidationError

TEST_SINE_HZ = 10.0
TEST_SINE_UV = 50.0


def test_eeg_stream_rate_gaps_range_waveform(eeg, measure, report):
    capture = eeg.capture(seconds=0.5)
    report.stream(capture)
    (capture.validate(measure)
        .rate("eeg").rate("emg").rate("sensors")
        .no_gaps()
        .monotonic()
        .value_range("eeg", -1.1 * TEST_SINE_UV, 1.1 * TEST_SINE_UV)
        .value_range("emg", -10.0, 10.0)
        .waveform("eeg", TEST_SINE_HZ, TEST_SINE_UV, channel=0, freq_tolerance=0.03)
        .waveform("eeg", TEST_SINE_HZ, TEST_SINE_UV, channel=7, freq_tolerance=0.03)
        .latency(max_ms=250.0))
    measure("eeg.block_size", capture["eeg"].block_size, low=2)


def test_eeg_stream_long_run_in_blocks(eeg, measure):
    """A long run read block by block: constant memory, every packet accounted for."""
    packets = columns = 0
    eeg.start()
    try:
        for block in eeg.blocks(seconds=0.3):
            packets += len(block)
            columns += block.samples["eeg"].shape[1]
    finally:
        eeg.stop()
    measure("eeg.blocks.packets", packets, low=1)
    measure("eeg.blocks.columns_per_packet", columns / packets, low=4, high=4)
    measure("eeg.blocks.lost", eeg.lost_packets, high=0)


def test_validation_notices_dropped_packets(eeg_lossy, measure, report):
    capture = eeg_lossy.capture(seconds=0.5)
    report.stream(capture)
    with pytest.raises(ValidationError, match="missing"):
        capture.validate().no_gaps()
    measure("eeg_lossy.lost_packets", capture.lost_packets, low=3)
    capture.validate(measure).rate("eeg", tolerance=0.1)   # 3 in 50 lost: rate 6 % low
