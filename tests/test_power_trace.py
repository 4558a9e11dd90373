"""PowerTrace on synthetic traces whose integrals, pulses and percentiles are known exactly."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.errors import ValidationError
from hil.instruments.power_trace import BatteryLife, PowerTrace, format_si, si_scale
from hil.instruments.pulses import Pulse, Pulses, edges


def uniform(n: int, rate: float = 1000.0) -> np.ndarray:
    return np.arange(n) / rate


def square_wave(n: int = 1000, period: int = 50, width: int = 10, offset: int = 20,
                high: float = 20e-3, low: float = 0.0) -> np.ndarray:
    """`low` with `width`-sample pulses of `high` every `period` samples from `offset`."""
    current = np.full(n, low)
    phase = (np.arange(n) - offset) % period
    current[(phase < width) & (np.arange(n) >= offset)] = high
    return current


@dataclass
class Mark:
    """Stands in for a console mark or an expect match: anything with a clock `.time`."""

    time: float


# ------------------------------------------------------------------ construction, arrays, repr


def test_arrays_units_and_sizes() -> None:
    trace = PowerTrace(uniform(1001), np.full(1001, 2e-3), 3.3, t0=100.0, name="dut")
    assert len(trace) == 1001
    assert trace.duration == pytest.approx(1.0)
    assert trace.sample_rate == pytest.approx(1000.0)
    assert trace.uniform
    assert trace.voltage.shape == (1001,) and trace.voltage[0] == 3.3
    assert np.allclose(trace.power, 6.6e-3)
    assert (trace.start, trace.end) == (100.0, pytest.approx(101.0))
    assert trace.absolute_time[-1] == pytest.approx(101.0)


def test_arrays_are_read_only_views_not_copies() -> None:
    current = np.full(10, 1e-3)
    trace = PowerTrace(uniform(10), current, 3.0)
    assert np.shares_memory(trace.current, current)
    with pytest.raises(ValueError):
        trace.current[0] = 5.0


def test_from_samples_builds_a_uniform_time_axis() -> None:
    trace = PowerTrace.from_samples(np.ones(501), sample_rate=250.0, voltage=1.8, t0=5.0)
    assert trace.time[1] == pytest.approx(1 / 250) and trace.duration == pytest.approx(2.0)
    assert trace.t0 == 5.0 and trace.uniform


def test_repr_shows_duration_samples_and_mean() -> None:
    text = repr(PowerTrace(uniform(1001), np.full(1001, 2e-3), 3.3, name="sleep"))
    assert "'sleep'" in text and "1 s" in text and "1001 samples" in text and "2 mA" in text


def test_lists_and_ints_are_accepted() -> None:
    trace = PowerTrace([0, 1, 2], [1, 1, 1], [3, 3, 3])
    assert trace.charge() == 2.0 and trace.energy() == 6.0


# ------------------------------------------------------------------ integrals


def test_constant_current_charge_and_energy_are_i_times_t() -> None:
    current, volts, seconds = 5e-3, 3.3, 2.0
    trace = PowerTrace(uniform(2001), np.full(2001, current), volts)
    assert trace.charge() == pytest.approx(current * seconds, rel=1e-12)
    assert trace.charge_mah() == pytest.approx(current * seconds / 3.6, rel=1e-12)
    assert trace.energy() == pytest.approx(current * volts * seconds, rel=1e-12)
    assert trace.average_power() == pytest.approx(current * volts, rel=1e-12)
    assert trace.average_current() == pytest.approx(current, rel=1e-12)
    assert trace.mean() == pytest.approx(current, rel=1e-12)


def test_linear_ramp_is_integrated_exactly() -> None:
    t = uniform(1001, rate=500.0)                      # 2 s
    trace = PowerTrace(t, 1e-3 + 2e-3 * t, 3.0)
    expected = 1e-3 * 2 + 2e-3 * 2 ** 2 / 2
    assert trace.charge() == pytest.approx(expected, rel=1e-12)
    assert trace.energy() == pytest.approx(3.0 * expected, rel=1e-12)


def test_non_uniform_time_is_integrated_on_its_real_spacing() -> None:
    rng = np.random.default_rng(7)
    t = np.concatenate(([0.0], np.cumsum(rng.uniform(1e-4, 5e-3, 999))))
    trace = PowerTrace(t, 2e-3 + 1e-3 * t, 3.3)
    end = t[-1]
    assert not trace.uniform
    assert trace.charge() == pytest.approx(2e-3 * end + 1e-3 * end ** 2 / 2, rel=1e-12)
    assert trace.energy() == pytest.approx(3.3 * trace.charge(), rel=1e-12)
    assert trace.sample_rate == pytest.approx(999 / end)


def test_a_gap_in_the_time_axis_counts_with_its_real_length() -> None:
    t = np.concatenate((uniform(101), 1.0 + uniform(101)))[np.r_[0:101, 102:202]]
    trace = PowerTrace(t, np.full(t.size, 1.0), 1.0)
    assert trace.charge() == pytest.approx(t[-1] - t[0], rel=1e-12)


def test_voltage_array_energy_is_the_trapezoid_of_power() -> None:
    t = uniform(1001)                                  # 1 s, voltage sagging linearly 3.3 -> 3.1
    volts = 3.3 - 0.2 * t
    trace = PowerTrace(t, np.full(t.size, 10e-3), volts)
    assert trace.energy() == pytest.approx(10e-3 * (3.3 - 0.1), rel=1e-12)
    assert trace.average_power() == pytest.approx(10e-3 * 3.2, rel=1e-12)


def test_single_sample_trace() -> None:
    trace = PowerTrace([0.0], [3e-3], 3.3)
    assert trace.duration == 0.0 and trace.charge() == 0.0 and trace.energy() == 0.0
    assert trace.average_current() == 3e-3 and math.isnan(trace.sample_rate)
    assert trace.percentile(50) == 3e-3


# ------------------------------------------------------------------ statistics and percentiles


def test_statistics_match_numpy() -> None:
    current = np.random.default_rng(1).lognormal(-8, 2, 5001)
    trace = PowerTrace(uniform(current.size), current, 3.3)
    assert trace.mean() == pytest.approx(current.mean(), rel=1e-12)
    assert trace.std() == pytest.approx(current.std(), rel=1e-12)
    assert (trace.min(), trace.max()) == (current.min(), current.max())
    qs = [0, 1, 50, 90, 99, 99.9, 100]
    assert np.allclose(trace.percentile(qs), np.percentile(current, qs), rtol=1e-12, atol=0)


def test_percentile_takes_a_number_or_a_list() -> None:
    trace = PowerTrace(uniform(11), np.arange(11.0), 1.0)
    assert trace.percentile(50) == 5.0 and isinstance(trace.percentile(50), float)
    assert trace.percentile([10, 95]).tolist() == [1.0, 9.5]


@pytest.mark.parametrize("q", [-1, 100.5, [], [50, float("nan")]])
def test_percentile_rejects_q_outside_0_100(q: object) -> None:
    with pytest.raises(ValidationError, match="0..100"):
        PowerTrace(uniform(5), np.ones(5), 1.0).percentile(q)  # type: ignore[arg-type]


def _kinds(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    t = np.arange(n)
    return {
        "normal": rng.normal(3e-3, 1e-4, n),
        "sleep_and_tx": np.where(t % 60 < 10, 38e-3, 4.2e-6) + rng.normal(0, 1e-7, n),
        "heavy_ties": rng.integers(0, 5, n) * 1e-3,
        "constant": np.full(n, 7e-6),
        "mostly_zero": np.where(rng.random(n) < 0.97, 0.0, rng.random(n)),
        "sorted": np.sort(rng.random(n)),
        "reversed": np.sort(rng.random(n))[::-1].copy(),
        "periodic": np.sin(t * 2 * np.pi / 97),
    }


@pytest.mark.parametrize("kind", list(_kinds(8)))
def test_percentiles_equal_numpy_whatever_the_values(kind: str) -> None:
    a = _kinds(20_011)[kind]
    trace = PowerTrace(uniform(a.size), a, 1.0)
    qs = [0, 0.01, 10, 50, 90, 99, 99.99, 100]
    assert np.array_equal(trace.percentile(qs), np.percentile(a, qs))


def test_percentiles_of_a_large_trace_equal_numpy() -> None:
    current = _kinds(1_001_001)["sleep_and_tx"]
    trace = PowerTrace(uniform(current.size, 1e5), current, 3.3)
    qs = [0.1, 50, 90, 99, 99.99]
    assert np.array_equal(trace.percentile(qs), np.percentile(current, qs))


def test_percentile_keeps_the_shape_of_q() -> None:
    trace = PowerTrace(uniform(11), np.arange(11.0), 1.0)
    assert trace.percentile([[10, 20], [30, 40]]).tolist() == [[1.0, 2.0], [3.0, 4.0]]


# ------------------------------------------------------------------ pulses


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=120))
def test_edges_are_the_runs_of_true(bits: list[bool]) -> None:
    runs, k = [], 0
    while k < len(bits):
        if bits[k]:
            s = k
            while k < len(bits) and bits[k]:
                k += 1
            runs.append((s, k))
        else:
            k += 1
    start, end = edges(np.array(bits, dtype=bool))
    assert list(zip(start.tolist(), end.tolist())) == runs


@pytest.mark.parametrize("busy", [False, True])
def test_pulses_of_a_long_varied_trace_match_the_reference(busy: bool) -> None:
    """Pulses of varying length, one running to the very end, a voltage array; `busy`: the
    current is above the threshold most of the time."""
    rng = np.random.default_rng(4)
    n = 50_000
    current = np.where((np.arange(n) % 700) < 90, 38e-3, 3e-3) + rng.normal(0, 1e-4, n)
    current[(np.arange(n) % 5000) < 4] = 50e-3       # short pulses too, and lengths vary
    current[-30:] = 40e-3                            # a pulse to the very end
    threshold = 10e-3
    if busy:
        threshold = 2e-3
        current[(np.arange(n) % 700) >= 650] = 1e-3
    volts = np.linspace(3.3, 3.0, n)
    trace = PowerTrace(uniform(n), current, volts)
    got = trace.pulses(threshold)
    expected = reference_pulses(trace.time, trace.current, threshold)
    assert len(got) == len(expected) > 60
    assert np.allclose(list(zip(got.starts, got.ends, got.peaks, got.charges)), expected,
                       rtol=1e-9)
    runs = zip(got.start_index, got.end_index)
    weights = np.full(n, 1e-3)
    weights[[0, -1]] = 0.5e-3
    assert np.allclose(got.energies, [np.sum((current * volts * weights)[s:e]) for s, e in runs],
                       rtol=1e-9)


def test_square_wave_pulses_count_width_and_charge() -> None:
    rate, volts = 1000.0, 3.3
    trace = PowerTrace(uniform(1000, rate), square_wave(), volts)   # pulses at 20, 70, ... 970
    pulses = trace.pulses(threshold=10e-3)
    assert len(pulses) == 20
    assert pulses.start_index.tolist() == list(range(20, 1000, 50))
    assert np.allclose(pulses.starts, (np.arange(20, 1000, 50) - 0.5) / rate)
    assert np.allclose(pulses.durations, 10 / rate)
    assert np.allclose(pulses.charges, 20e-3 * 10 / rate, rtol=1e-12)
    assert np.allclose(pulses.energies, volts * 20e-3 * 10 / rate, rtol=1e-12)
    assert np.all(pulses.peaks == 20e-3) and np.allclose(pulses.means, 20e-3)
    assert pulses.charges.sum() == pytest.approx(trace.charge(), rel=1e-12)   # baseline is 0


def test_pulse_records() -> None:
    pulses = PowerTrace(uniform(1000), square_wave(), 3.3).pulses(10e-3)
    first = pulses[0]
    assert isinstance(pulses, Pulses) and isinstance(first, Pulse) and first == pulses[-20]
    assert first.duration == pytest.approx(first.end - first.start)
    assert first.charge_mah == pytest.approx(first.charge / 3.6)
    assert [p.start for p in pulses[:2]] == [first.start, pulses[1].start]
    assert list(pulses) == pulses and len(list(pulses)) == 20
    with pytest.raises(IndexError):
        pulses[20]


def test_min_width_drops_short_pulses() -> None:
    current = np.zeros(300)
    current[[10]] = 1.0                  # 1 sample
    current[50:53] = 1.0                 # 3 samples
    current[100:110] = 1.0               # 10 samples
    pulses = PowerTrace(uniform(300), current, 1.0).pulses(0.5, min_width=3e-3)
    assert pulses.durations.tolist() == pytest.approx([3e-3, 10e-3])


def test_pulses_touching_the_trace_ends_are_cut_at_the_ends() -> None:
    current = np.zeros(100)
    current[:5] = 2.0
    current[95:] = 2.0
    pulses = PowerTrace(uniform(100), current, 1.0).pulses(1.0)
    assert pulses.starts.tolist() == [0.0, pytest.approx(0.0945)]
    assert pulses.ends.tolist() == [pytest.approx(0.0045), pytest.approx(0.099)]
    assert pulses.charges == pytest.approx([2.0 * 4.5e-3, 2.0 * 4.5e-3])


def test_no_pulses() -> None:
    pulses = PowerTrace(uniform(100), np.ones(100), 1.0).pulses(threshold=2.0)
    assert len(pulses) == 0 and pulses == [] and "[]" in repr(pulses)


def test_a_trace_entirely_above_threshold_is_one_pulse() -> None:
    trace = PowerTrace(uniform(11), np.full(11, 3.0), 2.0)
    (pulse,) = trace.pulses(1.0)
    assert pulse.start == 0.0 and pulse.end == 0.01 and pulse.charge == pytest.approx(0.03)
    assert pulse.energy == pytest.approx(trace.energy())


@pytest.mark.parametrize("threshold, min_width, message", [
    (float("nan"), 0.0, "threshold must be a finite current"),
    (float("inf"), 0.0, "threshold must be a finite current"),
    (1.0, float("nan"), "min_width must be >= 0 s"),
    (1.0, -1e-3, "min_width must be >= 0 s"),
])
def test_pulses_reject_a_threshold_or_width_that_would_find_nothing_silently(
        threshold: float, min_width: float, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PowerTrace(uniform(1000), square_wave(), 3.3).pulses(threshold, min_width=min_width)


def test_pulse_energy_with_a_voltage_array() -> None:
    volts = np.linspace(3.3, 3.0, 1000)
    trace = PowerTrace(uniform(1000), square_wave(), volts)
    pulses = trace.pulses(10e-3)
    runs = zip(pulses.start_index, pulses.end_index)
    expected = [20e-3 * volts[s:e].sum() / 1000 for s, e in runs]
    assert np.allclose(pulses.energies, expected, rtol=1e-12)


def reference_pulses(t: np.ndarray, i: np.ndarray, threshold: float) -> list[tuple[float, ...]]:
    """Sample by sample, the obvious way: (start, end, peak, charge) of each run above threshold."""
    n = len(t)
    weights = [((t[min(k + 1, n - 1)] - t[max(k - 1, 0)]) / 2) for k in range(n)]
    runs, k = [], 0
    while k < n:
        if i[k] > threshold:
            s = k
            while k < n and i[k] > threshold:
                k += 1
            start = t[0] if s == 0 else (t[s - 1] + t[s]) / 2
            end = t[-1] if k == n else (t[k - 1] + t[k]) / 2
            runs.append((start, end, max(i[s:k]), sum(i[j] * weights[j] for j in range(s, k))))
        else:
            k += 1
    return runs


@settings(max_examples=60, deadline=None)
@given(levels=st.lists(st.sampled_from([0.0, 1e-6, 5e-3, 40e-3]), min_size=2, max_size=80),
       steps=st.lists(st.floats(1e-4, 1e-2), min_size=80, max_size=80))
def test_pulses_match_a_sample_by_sample_reference(levels: list[float], steps: list[float]) -> None:
    t = np.concatenate(([0.0], np.cumsum(steps[:len(levels) - 1])))
    i = np.array(levels)
    for time in (t, uniform(len(levels))):
        pulses = PowerTrace(time, i, 3.3).pulses(1e-3)
        expected = reference_pulses(time, i, 1e-3)
        got = list(zip(pulses.starts, pulses.ends, pulses.peaks, pulses.charges))
        assert np.allclose(got, expected, rtol=1e-9, atol=1e-15) if expected else got == []


# ------------------------------------------------------------------ window and between


def test_window_is_an_inclusive_view_on_the_same_time_axis() -> None:
    trace = PowerTrace(uniform(1001), np.arange(1001.0), 3.3)
    window = trace.window(0.1, 0.2)
    assert len(window) == 101 and window.time[0] == pytest.approx(0.1)
    assert window.current[0] == 100.0 and window.current[-1] == 200.0
    assert np.shares_memory(window.current, trace.current)
    assert window.t0 == trace.t0 and window.uniform
    assert window.window(0.15, 0.16).current.tolist() == list(np.arange(150.0, 161.0))


def test_window_statistics_are_of_the_window() -> None:
    current = np.where(uniform(2001) < 1.0, 4e-6, 40e-3)
    trace = PowerTrace(uniform(2001), current, 3.3)
    sleep = trace.window(0.1, 0.9)
    assert sleep.mean() == pytest.approx(4e-6) and sleep.charge() == pytest.approx(4e-6 * 0.8)
    assert sleep.percentile(99) == pytest.approx(4e-6) and sleep.pulses(1e-3) == []


@pytest.mark.parametrize("start, end, message", [
    (0.1005, 0.1009, "contains no samples"),
    (-0.5, 0.2, "reaches outside the trace"),
    (0.5, 1.7, "reaches outside the trace"),
    (0.4, 0.3, "ends before it starts"),
])
def test_window_errors_say_what_was_asked_and_what_the_trace_covers(
        start: float, end: float, message: str) -> None:
    trace = PowerTrace(uniform(1001), np.ones(1001), 3.3)
    with pytest.raises(ValidationError, match=message) as info:
        trace.window(start, end)
    assert f"{start:.6g}" in str(info.value) and "covers [0, 1] s" in str(info.value)


def test_window_tolerates_one_sample_interval_and_clips_on_request() -> None:
    trace = PowerTrace(uniform(1001), np.ones(1001), 3.3)
    assert len(trace.window(-0.0005, 0.0105)) == 11
    assert len(trace.window(-5, 0.5, clip=True)) == 501
    with pytest.raises(ValidationError, match="contains no samples"):
        trace.window(2, 3, clip=True)


def test_between_takes_marks_matches_clock_floats_and_mark_names() -> None:
    t0 = 1_700_000_000.0
    marks = {"sleep": t0 + 0.2, "awake": Mark(t0 + 0.4)}
    trace = PowerTrace(uniform(1001), np.arange(1001.0), 3.3, t0=t0, marks=marks)  # type: ignore
    expected = trace.window(0.2, 0.4).current
    assert np.array_equal(trace.between(Mark(t0 + 0.2), Mark(t0 + 0.4)).current, expected)
    assert np.array_equal(trace.between(t0 + 0.2, t0 + 0.4).current, expected)
    assert np.array_equal(trace.between("sleep", "awake").current, expected)
    assert trace.marks == {"sleep": t0 + 0.2, "awake": t0 + 0.4}


def test_between_errors_name_the_marks_and_the_clock_range() -> None:
    t0 = 1_700_000_000.0
    trace = PowerTrace(uniform(1001), np.ones(1001), 3.3, t0=t0, marks={"boot": t0})
    with pytest.raises(ValidationError, match="reaches outside") as info:
        trace.between(Mark(t0 - 5), Mark(t0 + 0.5))
    assert "Mark at" in str(info.value) and "clock 1700000000.000000 .. 1700000001.000000" in str(
        info.value)
    with pytest.raises(ValidationError, match=r"no mark 'sleep' \(marks: boot\)"):
        trace.between("sleep", "boot")
    with pytest.raises(ValidationError, match="not a clock time"):
        trace.between(object(), t0 + 1)


# ------------------------------------------------------------------ battery life


def test_battery_life_is_capacity_over_average_current() -> None:
    trace = PowerTrace(uniform(101), np.full(101, 1e-3), 3.0)
    life = trace.battery_life(1000)
    assert isinstance(life, BatteryLife)
    assert life.hours == pytest.approx(1000.0) and life.days == pytest.approx(1000 / 24)
    assert life.timedelta.total_seconds() == pytest.approx(3.6e6)
    assert trace.battery_life(1000, derating=0.8).hours == pytest.approx(800.0)
    yearly = trace.battery_life(1000, self_discharge=0.1)
    assert yearly.hours == pytest.approx(1000 / (1.0 + 1000 * 0.1 / (365.25 * 24)))
    assert "days" in str(yearly) and "1 mA" in str(yearly)


def test_battery_life_uses_the_time_weighted_average() -> None:
    current = np.where(uniform(1001) < 0.5, 1e-3, 3e-3)      # 1 mA then 3 mA: 2 mA average
    life = PowerTrace(uniform(1001), current, 3.0).battery_life(2400)
    assert life.average_current == pytest.approx(2e-3, rel=1e-3)
    assert life.hours == pytest.approx(1200, rel=1e-3)


def test_battery_life_without_drain_is_infinite() -> None:
    life = PowerTrace(uniform(10), np.zeros(10), 3.0).battery_life(1000)
    assert life.hours == math.inf and life.timedelta.days > 900_000


@pytest.mark.parametrize("args", [(0,), (-5,), (100, 0.0), (100, 1.5), (100, 1.0, -0.1)])
def test_battery_life_rejects_nonsense(args: tuple[float, ...]) -> None:
    with pytest.raises(ValidationError):
        PowerTrace(uniform(10), np.ones(10), 3.0).battery_life(*args)


# ------------------------------------------------------------------ formatting


def test_si_formatting() -> None:
    assert format_si(4.2e-6, "A") == "4.2 µA"
    assert format_si(38e-3, "A") == "38 mA"
    assert format_si(1.0, "s") == "1 s" and format_si(0, "A") == "0 A"
    assert format_si(50_000, "Hz") == "50 kHz" and format_si(-2e-9, "A") == "-2 nA"
    assert si_scale(0.5) == (1e3, "m")


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("time, current, voltage, message", [
    ([], [], 3.3, "empty"),
    ([0, 1, 2], [1, 1], 3.3, "current has 2 samples but time has 3"),
    ([0, 1, 2], [1, 1, 1], [3, 3], "voltage has 2 samples but time has 3"),
    ([0, 1, 2], [1, np.nan, 1], 3.3, "current has 1 NaN/inf samples, the first at index 1"),
    ([0, 1, 2], [1, 1, 1], [3, 3, np.inf], "voltage has 1 NaN/inf samples, the first at index 2"),
    ([0, np.nan, 2], [1, 1, 1], 3.3, "time has 1 NaN/inf samples, the first at index 1"),
    ([0, 2, 1], [1, 1, 1], 3.3, r"time must increase strictly: time\[1\] = 2.0"),
    ([0, 1, 1], [1, 1, 1], 3.3, "time must increase strictly"),
    ([[0, 1]], [[1, 1]], 3.3, "must be a 1-D array"),
    ([0, 1], ["a", "b"], 3.3, "current must be numbers"),
    ([0, 1], [1, 1], None, "voltage must be a number or an array"),
    ([0, 1], [1, 1], float("nan"), "voltage is nan"),
])
def test_bad_input_is_a_validation_error_saying_what(time, current, voltage, message) -> None:
    with pytest.raises(ValidationError, match=message):
        PowerTrace(time, current, voltage)


def test_from_samples_rejects_a_bad_rate() -> None:
    with pytest.raises(ValidationError, match="sample_rate"):
        PowerTrace.from_samples(np.ones(3), 0, 3.3)


# ------------------------------------------------------------------ summary


def test_summary_is_json_ready_and_consistent() -> None:
    trace = PowerTrace(uniform(1001), square_wave(1001), 3.3, name="tx")
    summary = trace.summary()
    json.dumps(summary)
    assert summary["samples"] == 1001 and summary["name"] == "tx"
    assert summary["charge_c"] == trace.charge() and summary["energy_j"] == trace.energy()
    assert summary["p99_a"] == trace.percentile(99) and summary["mean_a"] == trace.mean()


# ------------------------------------------------------------------ properties


@settings(max_examples=80, deadline=None)
@given(pieces=st.lists(st.tuples(st.floats(0, 0.1), st.integers(1, 40)), min_size=1, max_size=30),
       rate=st.sampled_from([1e3, 1e4, 4e6]))
def test_charge_of_a_piecewise_constant_trace_is_the_sum_of_its_pieces(
        pieces: list[tuple[float, int]], rate: float) -> None:
    """Each sample stands for one interval, the two end samples for half of one (trapezoid)."""
    current = np.concatenate([np.full(n, level) for level, n in pieces])
    if current.size < 2:
        return
    dt = 1 / rate
    expected = sum(level * n * dt for level, n in pieces) - (current[0] + current[-1]) * dt / 2
    trace = PowerTrace(uniform(current.size, rate), current, 2.5)
    assert trace.charge() == pytest.approx(expected, rel=1e-9, abs=1e-18)
    assert trace.energy() == pytest.approx(2.5 * expected, rel=1e-9, abs=1e-18)


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(st.floats(1e-5, 1e-2), min_size=2, max_size=200),
       data=st.data())
def test_energy_is_additive_over_adjacent_windows(steps: list[float], data: st.DataObject) -> None:
    t = np.concatenate(([0.0], np.cumsum(steps)))
    current = np.random.default_rng(len(steps)).lognormal(-7, 2, t.size)
    volts = 3.3 - 0.1 * t / t[-1]
    trace = PowerTrace(t, current, volts)
    k = data.draw(st.integers(0, t.size - 1))
    left, right = trace.window(t[0], t[k]), trace.window(t[k], t[-1])
    assert left.energy() + right.energy() == pytest.approx(trace.energy(), rel=1e-9)
    assert left.charge() + right.charge() == pytest.approx(trace.charge(), rel=1e-9)
