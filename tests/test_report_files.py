"""hil.report.plots and hil.report.csv_files: PNGs and CSVs of power traces and stream captures,
read back, and attached to the test's Allure result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.errors import ValidationError
from hil.instruments.power_trace import PowerTrace
from hil.instruments.stream_capture import SignalData, StreamCapture
from hil.report import csv_files, plots
from hil.report.csv_files import read_stream_csv, write_csv
from hil.report.plots import plot_power, plot_stream
from stream_builders import synthetic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Mark:
    """Stands in for a console mark or an expect match: anything with a clock `.time`."""

    time: float


def uniform(n: int, rate: float = 1000.0) -> np.ndarray:
    return np.arange(n) / rate


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert 10_000 < len(data) < 2_000_000


# ------------------------------------------------------------------ power trace CSV


def test_power_csv_round_trip(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_files, "POWER_ROWS", 64)    # several blocks plus a ragged tail
    rng = np.random.default_rng(2)
    t = uniform(1000, rate=1e5) + 12.5
    current, volts = rng.lognormal(-8, 2, 1000), 3.3 - rng.random(1000) * 0.01
    path = write_csv(PowerTrace(t, current, volts), tmp_path / "sub" / "trace.csv")
    assert path.read_text().splitlines()[0] == "time_s,current_a,voltage_v"
    back = np.loadtxt(path, delimiter=",", skiprows=1)
    assert back.shape == (1000, 3)
    assert np.allclose(back[:, 0], t, rtol=1e-11, atol=0)
    assert np.allclose(back[:, 1], current, rtol=1e-8, atol=0)
    assert np.allclose(back[:, 2], volts, rtol=1e-8, atol=0)


def test_power_csv_of_a_constant_voltage_window(tmp_path) -> None:
    trace = PowerTrace(uniform(100), np.ones(100), 3.3)
    back = np.loadtxt(write_csv(trace.window(0.01, 0.02), tmp_path / "w.csv"), delimiter=",",
                      skiprows=1)
    assert back.shape == (11, 3) and np.all(back[:, 2] == 3.3)


def test_write_csv_refuses_other_things(tmp_path) -> None:
    with pytest.raises(TypeError, match="PowerTrace or a StreamCapture, got ndarray"):
        write_csv(np.ones(3), tmp_path / "x.csv")  # type: ignore[arg-type]


# ------------------------------------------------------------------ stream capture CSV


def _assert_same(a: StreamCapture, b: StreamCapture) -> None:
    assert (a.source, a.lost_packets) == (b.source, b.lost_packets)
    assert list(a.signals) == list(b.signals)
    np.testing.assert_array_equal(a.packet_numbers, b.packet_numbers)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    np.testing.assert_array_equal(a.arrival, b.arrival)
    for key, s in a.signals.items():
        t = b.signals[key]
        assert (s.name, s.rate, s.channels, s.block_size, s.unit) == \
            (t.name, t.rate, t.channels, t.block_size, t.unit)
        assert s.samples.dtype == t.samples.dtype
        np.testing.assert_array_equal(s.samples, t.samples)
        assert (s.packet_index is None) == (t.packet_index is None)
        np.testing.assert_array_equal(s.packet_indices(), t.packet_indices())


def test_stream_csv_round_trip(tmp_path):
    acc = SignalData("acc", 100.0, ["x, left", "y"], np.arange(6, dtype=np.float32).reshape(2, 3),
                     packet_index=[0, 0, 2])   # packet 1 and the rest carry no acc
    capture = synthetic(n_packets=4, block=2, extra={"acc": acc})
    capture.lost_packets = 3
    path = write_csv(capture, tmp_path / "sub" / "capture.csv")
    _assert_same(capture, read_stream_csv(path))
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# hil-stream-capture {")
    assert lines[1] == ('packet,packet_number,timestamp,arrival,signal,time,'
                        'eeg.C3,eeg.C4,"acc.x, left",acc.y')


def test_stream_csv_keeps_packets_without_samples(tmp_path):
    capture = StreamCapture("events", {}, [7, 8], [1.5, 2.5], [3.0, 4.0])
    _assert_same(capture, read_stream_csv(write_csv(capture, tmp_path / "c.csv")))


def test_read_stream_csv_rejects_other_files(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a hil stream capture CSV"):
        read_stream_csv(path)


def test_read_stream_csv_names_the_file_and_line_of_a_broken_row(tmp_path):
    path = write_csv(synthetic(n_packets=3, block=2), tmp_path / "c.csv")
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace(lines[4].split(",")[-1], "oops")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"c\.csv: broken hil stream capture CSV: line 5: "
                                         r".*could not convert string to float: 'oops'"):
        read_stream_csv(path)


def test_stream_csv_refuses_column_names_it_could_not_read_back(tmp_path):
    """Signal "a.b" channel "c" and signal "a" channel "b.c" would share column a.b.c."""
    one = SignalData("x", 1.0, ["c"], np.zeros((1, 2)))
    two = SignalData("y", 1.0, ["b.c"], np.zeros((1, 2)))
    capture = StreamCapture("s", {"a.b": one, "a": two}, [0, 1], [0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"column names repeat \(a\.b\.c\)"):
        write_csv(capture, tmp_path / "c.csv")


@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 20), block=st.integers(1, 4), rate=st.floats(0.5, 1e4),
       seed=st.integers(0, 2**32 - 1))
def test_stream_csv_round_trip_property(tmp_path_factory, n, block, rate, seed):
    rng = np.random.default_rng(seed)
    capture = synthetic(n_packets=n, block=block, rate=rate,
                        wave=lambda t, c: rng.normal(size=t.size) * 1e6)
    capture.timestamps = rng.normal(size=n) * 1e9
    path = write_csv(capture, tmp_path_factory.mktemp("csv") / "c.csv")
    _assert_same(capture, read_stream_csv(path))


# ------------------------------------------------------------------ plots


def test_power_plot_writes_a_png_with_marks(tmp_path) -> None:
    t0 = 1000.0
    current = np.where(np.arange(20_000) % 1000 < 100, 38e-3, 4e-6)
    trace = PowerTrace(uniform(20_000, 10_000), current, 3.3, t0=t0, marks={"boot": t0 + 0.1})
    _check_png(plot_power(trace, tmp_path / "p.png",
                          marks={"tx": Mark(t0 + 1.0), "far": t0 + 99, "again": "boot"}))
    _check_png(plot_power(trace, tmp_path / "sub" / "log.png", log=True, title="sleep vs tx"))


def test_power_plot_log_scale_survives_zero_current_and_large_traces(tmp_path) -> None:
    current = np.zeros(300_001)
    current[1000:1100] = 0.1
    _check_png(plot_power(PowerTrace(uniform(current.size, 1e5), current, 3.3),
                          tmp_path / "z.png", log=True))


def test_power_plot_rejects_an_unknown_mark_before_drawing(tmp_path) -> None:
    trace = PowerTrace(uniform(100), np.ones(100), 3.3)
    with pytest.raises(ValidationError, match="no mark 'tx'"):
        plot_power(trace, tmp_path / "p.png", marks={"radio": "tx"})
    assert not (tmp_path / "p.png").exists()


def test_envelope_keeps_one_sample_spikes() -> None:
    y = np.zeros(1_000_003)
    y[123_457] = 5.0
    t, low, high = plots.envelope(np.arange(y.size, dtype=float), y, 1000)
    assert high.max() == 5.0 and low.max() == 0.0 and t.size == low.size == high.size <= 1001


def test_stream_plot_writes_png(tmp_path):
    extra = {"acc": SignalData("acc", 25.0, ["x", "y", "z", "a", "b", "c"],
                               np.random.default_rng(0).normal(size=(6, 100)), block_size=1)}
    capture = synthetic(n_packets=100, block=10, extra=extra)
    _check_png(plot_stream(capture, tmp_path / "plots" / "capture.png"))


def test_stream_plot_of_a_long_integer_capture(tmp_path):
    counts = SignalData("adc", 1000.0, ["raw"], np.arange(200_000, dtype=np.int16)[None, :] % 977,
                        block_size=1000)
    capture = StreamCapture("adc", {"adc": counts}, np.arange(200), np.arange(200.0),
                            np.arange(200.0))
    _check_png(plot_stream(capture, tmp_path / "adc.png"))


def test_stream_plot_of_empty_capture(tmp_path):
    path = plot_stream(StreamCapture("none", {}, [], [], []), tmp_path / "empty.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_plots_need_no_display_and_load_matplotlib_only_when_plotting(tmp_path) -> None:
    """A fresh interpreter with no DISPLAY and an interactive MPLBACKEND: importing the report
    modules leaves matplotlib unloaded, and plotting still writes a PNG."""
    script = textwrap.dedent(f'''
        import sys
        import numpy as np
        from hil.instruments.power_trace import PowerTrace
        from hil.report import plots, csv_files
        assert "matplotlib" not in sys.modules, "imported matplotlib too early"
        trace = PowerTrace(np.arange(10) / 10, np.ones(10), 3.3)
        plots.plot_power(trace, {str(tmp_path / "headless.png")!r})
        print("ok")
    ''')
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["MPLBACKEND"] = "TkAgg"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert (tmp_path / "headless.png").read_bytes()[:8] == PNG_SIGNATURE


# ------------------------------------------------------------------ Allure attachments


ATTACHING_TEST = '''
import numpy as np
from hil.errors import ValidationError
from hil.instruments.power_trace import PowerTrace
from hil.report.csv_files import write_csv
from hil.report.plots import plot_power, plot_stream
from stream_builders import synthetic

def test_writes_files(tmp_path):
    trace = PowerTrace(np.arange(100) / 100, np.ones(100), 3.3)
    plot_power(trace, tmp_path / "power.png")
    write_csv(trace, tmp_path / "power.csv")
    capture = synthetic(n_packets=5)
    plot_stream(capture, tmp_path / "eeg.png")
    write_csv(capture, tmp_path / "eeg.csv")
    write_csv(trace, tmp_path / "quiet.csv", attach=False)
'''


def _run_attaching_test(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_attaching=ATTACHING_TEST)
    tests = str(Path(__file__).parent)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rootdir",
                                         str(pytester.path), *args,
                                         "--override-ini", f"pythonpath={tests}")


def test_files_a_test_writes_are_attached_to_its_allure_result(pytester: pytest.Pytester):
    result = _run_attaching_test(pytester, "--alluredir", "allure-results")
    result.assert_outcomes(passed=1)
    results = [json.loads(p.read_text())
               for p in (pytester.path / "allure-results").glob("*-result.json")]
    assert [r["name"] for r in results] == ["test_writes_files"]
    attached = {a["name"]: a for a in results[0]["attachments"]}
    assert sorted(attached) == ["eeg.csv", "eeg.png", "power.csv", "power.png"]
    assert attached["power.png"]["type"] == "image/png"
    assert attached["eeg.csv"]["type"] == "text/csv"
    stored = pytester.path / "allure-results" / attached["power.csv"]["source"]
    assert stored.read_text().startswith("time_s,current_a,voltage_v\n")


def test_without_alluredir_the_writers_still_work(pytester: pytest.Pytester):
    result = _run_attaching_test(pytester)
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "allure-results").exists()
