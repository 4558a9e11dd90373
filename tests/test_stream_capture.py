"""StreamCapture: access, sample times, rates, packet statistics, selection (files and plots:
test_report_files.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.instruments.stream_capture import (SignalData, StreamCapture, packet_stats)
from stream_builders import synthetic

FAST = settings(max_examples=40, deadline=None)


def test_signal_and_channel_access():
    capture = synthetic(n_packets=5, block=4)
    eeg = capture["eeg"]
    assert eeg.n_channels == 2 and eeg.n_samples == 20
    np.testing.assert_array_equal(eeg["C4"], eeg.samples[1])
    np.testing.assert_array_equal(eeg[0], eeg["C3"])
    np.testing.assert_array_equal(eeg[-1], eeg["C4"])
    assert "eeg" in capture and "emg" not in capture
    assert capture.n_packets == 5


def test_unknown_names_list_what_exists():
    capture = synthetic(n_packets=3)
    with pytest.raises(KeyError, match=r"no signal 'emg' \(signals: eeg\)"):
        capture["emg"]
    with pytest.raises(KeyError, match=r"no channel 'Cz' \(channels: C3, C4\)"):
        capture["eeg"]["Cz"]
    with pytest.raises(KeyError, match="2 channels, no channel 5"):
        capture["eeg"][5]


def test_one_channel_may_be_given_as_1d():
    s = SignalData("bat", 1.0, ["v"], np.arange(3.0))
    assert s.samples.shape == (1, 3)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="n_channels=3"):
        SignalData("eeg", 250.0, ["a", "b", "c"], np.zeros((2, 10)))
    with pytest.raises(ValueError, match="one entry per sample column"):
        SignalData("eeg", 250.0, ["a"], np.zeros((1, 10)), packet_index=np.zeros(9))
    eeg = SignalData("eeg", 250.0, ["a"], np.zeros((1, 10)), block_size=4)
    with pytest.raises(ValueError, match="3 packets need 12, got 10"):
        StreamCapture("x", {"eeg": eeg}, np.arange(3), np.arange(3.0), np.arange(3.0))
    with pytest.raises(ValueError, match="one entry per packet"):
        StreamCapture("x", {}, np.arange(3), np.arange(2.0), np.arange(3.0))
    bad = SignalData("eeg", 250.0, ["a"], np.zeros((1, 2)), packet_index=[0, 3])
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        StreamCapture("x", {"eeg": bad}, np.arange(3), np.arange(3.0), np.arange(3.0))


def test_packet_arrays_are_converted():
    capture = StreamCapture("x", {}, [0, 1], [0.0, 1.0], [2, 3])
    assert capture.packet_numbers.dtype == np.uint64
    assert capture.arrival.dtype == np.float64


def test_signal_times_follow_timestamps_and_rate():
    capture = synthetic(n_packets=20, rate=250.0, block=10, t0=7.0)
    np.testing.assert_allclose(capture.signal_times("eeg"), 7.0 + np.arange(200) / 250.0)


def test_signal_times_with_uneven_packets():
    # packets carry 2, 0, 3 columns; each block starts at its packet's timestamp
    acc = SignalData("acc", 10.0, ["x"], np.arange(5.0)[None, :], packet_index=[0, 0, 2, 2, 2])
    capture = StreamCapture("imu", {"acc": acc}, np.arange(3), [1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(capture.signal_times("acc"), [1.0, 1.1, 3.0, 3.1, 3.2])
    np.testing.assert_array_equal(capture.samples_per_packet("acc"), [2, 0, 3])


@FAST
@given(rate=st.floats(1.0, 20_000.0), block=st.integers(1, 64), n=st.integers(2, 200))
def test_measured_rate_is_exact_for_a_perfect_stream(rate, block, n):
    capture = synthetic(n_packets=n, rate=rate, block=block, channels=("a",))
    # exact up to the rounding of timestamps near t0 = 1000 s (about 1e-13 s each)
    assert capture.measured_rate("eeg") == pytest.approx(rate, rel=1e-6)


def test_measured_rate_counts_lost_samples():
    capture = synthetic(n_packets=100, rate=250.0, block=10)
    kept = capture.take([i for i in range(100) if i % 10 != 5])  # 10 % of packets gone
    assert kept.measured_rate("eeg") == pytest.approx(250.0 * (900 - 10) / 990)


def test_measured_rate_needs_two_packets():
    assert np.isnan(synthetic(n_packets=1).measured_rate("eeg"))


def test_duration_covers_all_packets():
    assert synthetic(n_packets=100, rate=250.0, block=10).duration == pytest.approx(4.0)
    assert synthetic(n_packets=1).duration == 0.0


# ------------------------------------------------------------------ packet numbers
def test_packet_stats_example():
    stats = packet_stats(np.array([0, 1, 2, 5, 6, 6, 4, 7], dtype=np.uint64))
    assert (stats.missing, stats.gaps, stats.duplicates, stats.reordered) == (1, 1, 1, 1)
    assert stats.first_gap_after == 2
    assert packet_stats(np.arange(10)).missing == 0
    assert packet_stats(np.empty(0)).packets == 0


def test_packet_stats_handles_large_uint64():
    base = np.uint64(2**63 + 5)
    stats = packet_stats(np.array([base, base + np.uint64(3)], dtype=np.uint64))
    assert stats.missing == 2 and stats.gaps == 1


@FAST
@given(st.integers(3, 300).flatmap(
    lambda n: st.tuples(st.just(n), st.sets(st.integers(1, n - 2), max_size=n - 2))))
def test_missing_equals_removed_numbers(case):
    n, removed = case
    numbers = np.array([i for i in range(n) if i not in removed], dtype=np.uint64)
    stats = packet_stats(numbers)
    runs = sum(1 for r in removed if r - 1 not in removed)
    assert stats.missing == len(removed)
    assert stats.gaps == runs
    assert stats.duplicates == stats.reordered == 0


@FAST
@given(st.lists(st.integers(0, 99), max_size=30))
def test_duplicates_are_counted(repeat_positions):
    numbers = list(range(100))
    for pos in sorted(repeat_positions, reverse=True):
        numbers.insert(pos + 1, numbers[pos])   # the same number again right after itself
    stats = packet_stats(np.array(numbers, dtype=np.uint64))
    assert stats.duplicates == len(repeat_positions)
    assert stats.missing == stats.reordered == 0


@FAST
@given(st.sets(st.integers(0, 49)))
def test_adjacent_swaps_count_as_reordered(pairs):
    numbers = list(range(100))
    for p in pairs:                              # swap the disjoint pairs (2p, 2p+1)
        numbers[2 * p], numbers[2 * p + 1] = numbers[2 * p + 1], numbers[2 * p]
    stats = packet_stats(np.array(numbers, dtype=np.uint64))
    assert stats.reordered == len(pairs)
    assert stats.missing == stats.duplicates == 0


def test_summary():
    capture = synthetic(n_packets=50, rate=250.0, block=5).take([*range(10), *range(12, 50)])
    summary = capture.summary()
    assert summary["packets"] == 48 and summary["missing"] == 2 and summary["gaps"] == 1
    assert summary["signals"]["eeg"]["samples"] == 240
    assert summary["signals"]["eeg"]["rate"] == 250.0
    assert summary["signals"]["eeg"]["measured_rate"] < 250.0
    json.dumps(summary)   # plain data


def test_repr_is_short():
    text = repr(synthetic(n_packets=1000))
    assert "1000 packets" in text and len(text) < 200


# ------------------------------------------------------------------ selection, concat
def test_take_keeps_samples_with_their_packets():
    capture = synthetic(n_packets=6, block=3)
    part = capture.take([4, 1, 1])
    np.testing.assert_array_equal(part.packet_numbers, [4, 1, 1])
    eeg = capture["eeg"]["C3"]
    np.testing.assert_array_equal(part["eeg"]["C3"], np.r_[eeg[12:15], eeg[3:6], eeg[3:6]])
    assert part["eeg"].packet_index is None


def test_take_with_explicit_index():
    acc = SignalData("acc", 10.0, ["x"], np.arange(5.0), packet_index=[0, 0, 2, 2, 2])
    capture = StreamCapture("imu", {"acc": acc}, np.arange(3), [1.0, 2.0, 3.0], [0.0] * 3)
    part = capture.take([2, 0])
    np.testing.assert_array_equal(part["acc"]["x"], [2.0, 3.0, 4.0, 0.0, 1.0])
    np.testing.assert_array_equal(part["acc"].packet_index, [0, 0, 0, 1, 1])


def test_between_selects_by_arrival_on_hil_clock():
    capture = synthetic(n_packets=100, rate=250.0, block=10)
    start = capture.arrival[10]

    class Mark:
        time = capture.arrival[20]

    window = capture.between(start, Mark())
    assert window.n_packets == 10
    np.testing.assert_array_equal(window.packet_numbers, np.arange(10, 20))


def test_concat_joins_packets_and_samples():
    a = synthetic(n_packets=10, block=4)
    b = synthetic(n_packets=5, block=4, first_number=10, t0=a.timestamps[-1] + 4 / 250.0)
    both = a.concat(b)
    assert both.n_packets == 15 and both["eeg"].n_samples == 60
    assert both["eeg"].packet_index is None
    assert both.packet_stats().missing == 0
    assert both.measured_rate("eeg") == pytest.approx(250.0)


def test_concat_with_explicit_index_shifts_it():
    a = synthetic(n_packets=2, block=2, channels=("x",))
    acc = SignalData("eeg", 250.0, ["x"], np.ones((1, 3)), block_size=2, packet_index=[0, 1, 1])
    b = StreamCapture("eeg", {"eeg": acc}, [2, 3], [5.0, 6.0], [7.0, 8.0])
    np.testing.assert_array_equal(a.concat(b)["eeg"].packet_index, [0, 0, 1, 1, 2, 3, 3])


def test_concat_refuses_different_signals():
    with pytest.raises(ValueError, match="channels"):
        synthetic(channels=("a",)).concat(synthetic(channels=("b",)))
    with pytest.raises(ValueError, match="signals"):
        synthetic().concat(StreamCapture("eeg", {}, [], [], []))
