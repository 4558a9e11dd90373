"""StreamValidator: each check finds exactly the fault injected, records it, or raises."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.errors import ValidationError
from hil.instruments.stream_capture import SignalData, StreamCapture
from hil.instruments.validation import (CheckResult, dominant_frequency, sine_amplitude,
                                        within)
from stream_builders import Recorder, sine, synthetic

FAST = settings(max_examples=40, deadline=None)


def with_gaps_duplicates_and_reordering() -> StreamCapture:
    """Packets 0..99 received as: 10-12 missing (one gap), 50 twice, 70 and 71 swapped."""
    order = [i for i in range(100) if i not in (10, 11, 12)]
    order.insert(order.index(50) + 1, 50)
    a, b = order.index(70), order.index(71)
    order[a], order[b] = order[b], order[a]
    return synthetic(n_packets=100).take(order)


# ------------------------------------------------------------------ modes and records
def test_measure_mode_records_every_figure_and_never_raises():
    recorder = Recorder()
    validator = with_gaps_duplicates_and_reordering().validate(recorder)
    assert validator.no_gaps() is validator
    assert [c[0] for c in recorder.calls] == [
        "eeg.packets.missing", "eeg.packets.gaps", "eeg.packets.duplicates",
        "eeg.packets.reordered", "eeg.packets.lost"]
    assert [c[1] for c in recorder.calls] == [3, 1, 1, 1, 0]
    assert all(c[4] == 0 for c in recorder.calls)
    assert not validator.passed
    assert [r.name for r in validator.failures] == [
        "eeg.packets.missing", "eeg.packets.gaps", "eeg.packets.duplicates",
        "eeg.packets.reordered"]


def test_raising_mode_names_check_limits_value_and_where():
    capture = with_gaps_duplicates_and_reordering()
    with pytest.raises(ValidationError) as info:
        capture.validate().no_gaps()
    message = str(info.value)
    assert "eeg.packets.missing = 3 (expected <= 0)" in message
    assert "eeg.packets.duplicates = 1" in message
    assert "source 'eeg'" in message and "first gap after packet number 9" in message
    assert "eeg.packets.lost" not in message


def test_results_are_kept_in_raising_mode_too():
    validator = synthetic().validate()
    validator.rate("eeg").no_gaps().monotonic()
    assert validator.passed and len(validator.results) == 7
    assert all(isinstance(r, CheckResult) for r in validator.results)
    assert validator.results[0] == CheckResult("eeg.eeg.rate", pytest.approx(250.0), "Hz",
                                               pytest.approx(247.5), pytest.approx(252.5), True)


def test_could_not_measure_is_a_failure():
    assert not within(float("nan"), None, None)
    assert within(1.0, 1.0, 1.0) and not within(1.1, None, 1.0) and not within(0.9, 1.0, None)
    with pytest.raises(ValidationError, match="eeg.eeg.rate = nan"):
        synthetic(n_packets=1).validate().rate("eeg")


def test_unknown_signal_raises_key_error_in_both_modes():
    with pytest.raises(KeyError, match="no signal 'emg'"):
        synthetic().validate(Recorder()).rate("emg")


# ------------------------------------------------------------------ rate
def test_rate_matches_nominal_exactly():
    recorder = Recorder()
    synthetic(rate=512.0, block=16).validate(recorder).rate("eeg")
    name, value, unit, low, high = recorder.calls[0]
    assert (name, unit) == ("eeg.eeg.rate", "Hz")
    assert value == pytest.approx(512.0, rel=1e-12)
    assert (low, high) == pytest.approx((512 * 0.99, 512 * 1.01))


def test_rate_against_an_expected_value():
    capture = synthetic(rate=250.0)
    capture.validate().rate("eeg", expected=252.0, tolerance=0.01)
    with pytest.raises(ValidationError, match=r"eeg.eeg.rate = 250 Hz \(expected in \[257.*"
                                              r"source 'eeg', signal 'eeg'"):
        capture.validate().rate("eeg", expected=260.0, tolerance=0.01)


def test_rate_drops_with_lost_packets():
    capture = synthetic(n_packets=100).take([i for i in range(100) if i % 20])   # 5 % lost
    with pytest.raises(ValidationError, match="rate"):
        capture.validate().rate("eeg", tolerance=0.02)


# ------------------------------------------------------------------ gaps
def test_no_gaps_counts_lost_packets_of_the_driver():
    capture = synthetic()
    capture.lost_packets = 4
    with pytest.raises(ValidationError, match=r"eeg.packets.lost = 4 \(expected <= 0\)"):
        capture.validate().no_gaps()


def test_clean_stream_has_no_gaps_even_starting_late():
    synthetic(first_number=123_456).validate().no_gaps()


@FAST
@given(st.sets(st.integers(1, 98), max_size=40))
def test_no_gaps_reports_each_removed_packet(removed):
    capture = synthetic(n_packets=100, block=2).take([i for i in range(100) if i not in removed])
    recorder = Recorder()
    capture.validate(recorder).no_gaps()
    assert recorder.value("eeg.packets.missing") == len(removed)
    assert recorder.value("eeg.packets.duplicates") == 0


# ------------------------------------------------------------------ monotonic
def test_monotonic_counts_backward_steps():
    capture = synthetic(n_packets=50)
    capture.validate().monotonic()
    capture.timestamps[[10, 30]] -= 1.0        # two packets stamped a second early
    recorder = Recorder()
    capture.validate(recorder).monotonic()
    assert recorder.calls == [("eeg.timestamps.backwards", 2.0, "", None, 0)]
    with pytest.raises(ValidationError, match="first at packet 10 .number 10."):
        capture.validate().monotonic()


def test_equal_timestamps_are_not_backwards():
    capture = synthetic(n_packets=5)
    capture.timestamps[:] = 1.0
    capture.validate().monotonic()


# ------------------------------------------------------------------ jitter
def test_jitter_of_a_perfect_stream_is_zero():
    recorder = Recorder()
    synthetic().validate(recorder).jitter(max_ms=0.001)
    assert recorder.value("eeg.timestamps.jitter_max") == pytest.approx(0.0, abs=1e-6)
    assert recorder.calls[1][4] == 0.001


def test_jitter_finds_a_late_packet():
    capture = synthetic(n_packets=200, rate=250.0, block=10)   # 40 ms per packet
    capture.timestamps[100] += 0.003                           # stamped 3 ms late
    recorder = Recorder()
    capture.validate(recorder).jitter(max_ms=1.0, p99_ms=2.0)
    assert recorder.value("eeg.timestamps.jitter_max") == pytest.approx(3.0)
    # 2 of 199 steps are off by 3 ms: the 99th percentile interpolates between 0 and 3 ms
    assert recorder.value("eeg.timestamps.jitter_p99") == pytest.approx(0.06)
    with pytest.raises(ValidationError, match=r"jitter_max = 3 ms \(expected <= 1 ms\)"):
        capture.validate().jitter(max_ms=1.0)


def test_jitter_leaves_out_steps_across_gaps():
    capture = synthetic(n_packets=100).take([i for i in range(100) if i not in (40, 41)])
    capture.validate().jitter(max_ms=0.001)


def test_jitter_of_arrival_times():
    capture = synthetic(n_packets=100, rate=250.0, block=10)
    capture.arrival[50:] += 0.010       # a 10 ms stall, then on time again
    capture.validate().jitter(max_ms=0.001)
    with pytest.raises(ValidationError, match="eeg.arrival.jitter_max = 10"):
        capture.validate().jitter(max_ms=5, of="arrival")


def test_jitter_with_uneven_packets_uses_their_sample_counts():
    counts = [5, 10, 5, 10, 5, 10]
    index = np.repeat(np.arange(6), counts)
    stamps = 2.0 + np.r_[0, np.cumsum(counts[:-1])] / 100.0
    acc = SignalData("acc", 100.0, ["x"], np.zeros(index.size), packet_index=index)
    capture = StreamCapture("imu", {"acc": acc}, np.arange(6), stamps, stamps + 1)
    capture.validate().jitter(max_ms=1e-6)


# ------------------------------------------------------------------ value range
def test_value_range_pass_and_figures():
    recorder = Recorder()
    synthetic(wave=sine(amplitude=10.0)).validate(recorder).value_range("eeg", -25.0, 25.0)
    assert recorder.calls[0][:3] == ("eeg.eeg.min", pytest.approx(-20.0, abs=0.1), "uV")
    assert recorder.calls[1][0] == "eeg.eeg.max" and recorder.calls[1][4] == 25.0
    assert recorder.calls[2] == ("eeg.eeg.nonfinite", 0.0, "", None, 0)


def test_value_range_names_the_channel_and_the_time():
    capture = synthetic(n_packets=100, rate=250.0, block=10, wave=sine(amplitude=1.0))
    capture["eeg"].samples[1, 500] = 99.0                    # C4, t = 2 s
    capture.validate().value_range("eeg", -5, 5, channels=["C3"])
    with pytest.raises(ValidationError) as info:
        capture.validate().value_range("eeg", -5, 5)
    message = str(info.value)
    assert "eeg.eeg.max = 99 uV (expected <= 5 uV)" in message
    assert "C4: 1 of 1000 samples, first at t=2.0000 s" in message and "C3:" not in message


def test_value_range_counts_nan():
    capture = synthetic()
    capture["eeg"].samples[0, :3] = np.nan
    with pytest.raises(ValidationError, match="nonfinite = 3"):
        capture.validate().value_range("eeg", -10, 10)


def test_value_range_of_selected_channels_has_its_own_name():
    recorder = Recorder()
    synthetic().validate(recorder).value_range("eeg", high=100, channels=["C4", 0])
    assert recorder.calls[0][0] == "eeg.eeg[C4,C3].min"


# ------------------------------------------------------------------ waveform
def test_waveform_recovers_a_bin_centred_sine():
    recorder = Recorder()
    capture = synthetic(n_packets=100, rate=250.0, block=10, wave=sine(10.0, 50.0))
    capture.validate(recorder).waveform("eeg", 10.0, amplitude=100.0, channel="C4")
    assert recorder.value("eeg.eeg.C4.frequency") == pytest.approx(10.0, abs=1e-3)
    assert recorder.value("eeg.eeg.C4.amplitude") == pytest.approx(100.0, rel=1e-4)


def test_waveform_recovers_a_sine_between_bins():
    # 4 s at 250 Hz: bins are 0.25 Hz apart; 13.37 Hz sits between them
    capture = synthetic(n_packets=100, rate=250.0, block=10, wave=sine(13.37, 2.5))
    validator = capture.validate().waveform("eeg", 13.37, amplitude=2.5, freq_tolerance=0.002,
                                            amp_tolerance=0.005)
    assert validator.results[0].value == pytest.approx(13.37, abs=0.25 * 0.02)


def test_waveform_wrong_frequency_or_amplitude_fails():
    capture = synthetic(wave=sine(10.0, 1.0))
    expected = r"eeg.eeg.C3.frequency = 10 Hz \(expected in \[10.89, 11.11\] Hz\)"
    with pytest.raises(ValidationError, match=expected):
        capture.validate().waveform("eeg", 11.0)
    with pytest.raises(ValidationError, match="amplitude = 1 uV .* channel 'C3'"):
        capture.validate().waveform("eeg", 10.0, amplitude=2.0)


@FAST
@given(frequency=st.floats(1.0, 120.0), amplitude=st.floats(1e-3, 1e3),
       phase=st.floats(0, 2 * np.pi), noise=st.floats(0, 0.05))
def test_waveform_property(frequency, amplitude, phase, noise):
    rate, n = 250.0, 1000               # bins 0.25 Hz apart
    t = np.arange(n) / rate
    rng = np.random.default_rng(0)
    x = amplitude * (np.sin(2 * np.pi * frequency * t + phase) + noise * rng.normal(size=n)) + 3.0
    assert dominant_frequency(x, rate) == pytest.approx(frequency, abs=0.25 * 0.05)
    assert sine_amplitude(x, rate, dominant_frequency(x, rate)) == \
        pytest.approx(amplitude, rel=0.01)


def test_frequency_of_nothing_is_nan():
    assert np.isnan(dominant_frequency(np.zeros(100), 250.0))
    assert np.isnan(dominant_frequency(np.ones(3), 250.0))
    assert np.isnan(dominant_frequency(np.r_[np.nan, np.ones(99)], 250.0))
    assert np.isnan(sine_amplitude(np.ones(100), 250.0, float("nan")))


# ------------------------------------------------------------------ latency
def test_latency_spread_with_an_unknown_sender_epoch():
    capture = synthetic(n_packets=200, arrival_offset=12_345.678, latency=0.004)
    extra = np.zeros(200)
    extra[[20, 80]] = [0.002, 0.006]    # two packets 2 and 6 ms later than the rest
    capture.arrival += extra
    recorder = Recorder()
    capture.validate(recorder).latency(max_ms=10)
    assert [c[0] for c in recorder.calls] == ["eeg.latency_spread.p50", "eeg.latency_spread.p99",
                                              "eeg.latency_spread.max"]
    assert recorder.value("eeg.latency_spread.p50") == pytest.approx(0.0, abs=1e-6)
    assert recorder.value("eeg.latency_spread.max") == pytest.approx(6.0, abs=1e-6)
    with pytest.raises(ValidationError, match=r"latency_spread.max = 6 ms \(expected <= 5 ms\)"):
        capture.validate().latency(max_ms=5)


def test_absolute_latency_when_the_sender_uses_hil_clock():
    capture = synthetic(n_packets=100, rate=250.0, block=10, arrival_offset=0.0, latency=0.002)
    recorder = Recorder()
    capture.validate(recorder).latency(max_ms=50, p99_ms=45, clock="hil")
    # 40 ms block + 2 ms on the way
    assert recorder.value("eeg.latency.p50") == pytest.approx(42.0, abs=1e-6)
    assert recorder.calls[1][4] == 45
    with pytest.raises(ValidationError, match="eeg.latency.max = 42 ms"):
        capture.validate().latency(max_ms=20, clock="hil")


def test_latency_clock_is_checked():
    with pytest.raises(ValueError, match="'sender' or 'hil'"):
        synthetic().validate().latency(10, clock="gps")


def test_jitter_of_is_checked():
    """A typo in `of` must not silently judge the arrival times."""
    with pytest.raises(ValueError, match="'timestamps' or 'arrival'"):
        synthetic().validate().jitter(max_ms=1, of="arrivals")  # type: ignore[arg-type]


def test_full_chain():
    recorder = Recorder()
    validator = (synthetic(n_packets=100, wave=sine(10.0, 20.0)).validate(recorder)
                 .rate("eeg").no_gaps().monotonic().jitter(max_ms=1)
                 .value_range("eeg", -50, 50).waveform("eeg", 10.0, amplitude=20.0)
                 .latency(max_ms=5))
    assert validator.passed
    assert len(recorder.calls) == len(validator.results) == 1 + 5 + 1 + 2 + 3 + 2 + 3
    names = [c[0] for c in recorder.calls]
    assert len(set(names)) == len(names)
