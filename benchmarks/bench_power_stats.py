"""Statistics half of the power benchmark: PowerTrace analysis of 10 million samples against the
plain numpy a user would write for the same figures.

What is counted, on the same arrays (time t, current, a constant 3.3 V):
    PowerTrace: construction (input validation) + mean() + energy() + percentile([50, 90, 99])
                + pulses(threshold), on a fresh trace (nothing cached);
    numpy:      np.mean(current) + 3.3 * np.trapezoid(current, t)
                + np.percentile(current, [50, 90, 99]) + `numpy_pulses` (mask, np.diff, reduceat).
Target: PowerTrace total <= 1.2 x numpy. Construction is inside the ratio because mean() and
energy() reuse the sum the constructor's NaN check takes; the calls alone are reported too.
Every figure is the best of `repeat` rounds, both sides timed in the same rounds (shared machine).

A side figure justifies the one piece of speed code left in the power report path: writing a
trace as CSV (`hil.report.csv_files.write_csv`) against np.savetxt of the same rows.

    .venv/bin/python benchmarks/bench_power_stats.py [samples]
prints a table and `RESULT {json}`; `bench_stats()` returns the same flat dict.
"""
from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hil.instruments.power_trace import PowerTrace   # noqa: E402
from hil.report.csv_files import write_csv           # noqa: E402

TARGET = 1.2
RATE = 50_000.0           # Hz, a typical Otii Arc main-channel rate
VOLTS = 3.3
THRESHOLD = 10e-3         # A, between idle (3.1 mA) and radio TX (38 mA)
QS = [50, 90, 99]
CSV_SAMPLES = 1_000_000
CALLS: dict[str, Callable[[PowerTrace], Any]] = {
    "mean": lambda tr: tr.mean(),
    "energy": lambda tr: tr.energy(),
    "percentile": lambda tr: tr.percentile(QS),
    "pulses": lambda tr: tr.pulses(THRESHOLD),
}


def dut_current(samples: int, rate: float = RATE, seed: int = 1) -> np.ndarray:
    """A sensor node's current: µA sleep, 3 mA idle, 38 mA radio bursts (4 ms per 24 ms), noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    current = 4.2e-6 + rng.normal(0.0, 0.15e-6, samples)
    awake = (t % 10.0) < 4.0                        # awake 4 s of every 10
    current[awake] = 3.1e-3 + rng.normal(0.0, 40e-6, int(awake.sum()))
    tx = awake & ((t % 0.024) < 0.004)
    current[tx] = 38e-3 + rng.normal(0.0, 0.8e-3, int(tx.sum()))
    return current


def numpy_pulses(t: np.ndarray, current: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Pulses the plain numpy way: runs of current > threshold, their edge times (the trace's
    ends for runs touching them), peak, and trapezoid charge and energy."""
    n = current.size
    above = current > threshold
    change = np.flatnonzero(np.diff(above)) + 1
    if above[0]:
        change = np.concatenate(([0], change))
    if above[-1]:
        change = np.concatenate((change, [n]))
    start, end = change[0::2], change[1::2]
    bounds = change if change[-1] < n else change[:-1]
    dt = t[1] - t[0]
    ends = np.where(start == 0, current[0], 0.0) + np.where(end == n, current[-1], 0.0)
    charge = (np.add.reduceat(current, bounds)[0::2] - ends / 2) * dt
    return {"start": np.where(start == 0, t[0], (t[start - 1] + t[start]) / 2),
            "end": np.where(end == n, t[-1], (t[end - 1] + t[np.minimum(end, n - 1)]) / 2),
            "peak": np.maximum.reduceat(current, bounds)[0::2], "charge": charge,
            "energy": VOLTS * charge}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_stats(samples: int = 10_000_000, repeat: int = 7) -> dict[str, Any]:
    """Run the benchmark; the dict holds ms, ratios to plain numpy and whether the target is met."""
    t = np.arange(samples) / RATE
    current = dut_current(samples)
    plain: dict[str, Callable[[], Any]] = {
        "mean": lambda: np.mean(current),
        "energy": lambda: VOLTS * np.trapezoid(current, t),
        "percentile": lambda: np.percentile(current, QS),
        "pulses": lambda: numpy_pulses(t, current, THRESHOLD),
    }
    best: dict[str, float] = {}

    def keep(key: str, seconds: float) -> None:
        best[key] = min(best.get(key, float("inf")), seconds)

    ours: dict[str, Any] = {}
    theirs: dict[str, Any] = {}
    for _ in range(repeat):
        build, trace = _timed(lambda: PowerTrace(t, current, VOLTS))
        keep("construction", build)
        total = build
        for name, call in CALLS.items():
            seconds, ours[name] = _timed(lambda: call(trace))
            keep(f"hil.{name}", seconds)
            total += seconds
        keep("hil", total)
        total = 0.0
        for name, call in plain.items():
            seconds, theirs[name] = _timed(call)
            keep(f"np.{name}", seconds)
            total += seconds
        keep("np", total)
    calls = best["hil"] - best["construction"]
    ratio = best["hil"] / best["np"]
    same = (np.array_equal(ours["percentile"], theirs["percentile"])
            and np.isclose(ours["mean"], theirs["mean"], rtol=1e-12)
            and np.isclose(ours["energy"], theirs["energy"], rtol=1e-9)
            and np.allclose(ours["pulses"].charges, theirs["pulses"]["charge"], rtol=1e-9)
            and np.allclose(ours["pulses"].starts, theirs["pulses"]["start"], rtol=1e-12)
            and np.array_equal(ours["pulses"].peaks, theirs["pulses"]["peak"]))
    return {                     # keys prefixed: bench_power.py merges this into its RESULT
        "stats_definition": "PowerTrace(t, i, V) + mean() + energy() + percentile([50,90,99]) + "
                            "pulses(thr), vs np.mean + V*np.trapezoid + np.percentile + "
                            "numpy pulses (mask, diff, reduceat)",
        "stats_samples": samples,
        "stats_hil_ms": round(best["hil"] * 1e3, 2),
        "stats_numpy_ms": round(best["np"] * 1e3, 2),
        "stats_ratio": round(ratio, 3),
        "stats_target": TARGET,
        "stats_target_met": bool(ratio <= TARGET),
        "stats_construction_ms": round(best["construction"] * 1e3, 2),
        "stats_calls_ms": round(calls * 1e3, 2),
        "stats_calls_ratio": round(calls / best["np"], 3),
        "stats_hil_call_ms": {name: round(best[f"hil.{name}"] * 1e3, 2) for name in CALLS},
        "stats_numpy_call_ms": {name: round(best[f"np.{name}"] * 1e3, 2) for name in CALLS},
        "stats_same_figures": bool(same),
        "stats_pulses_found": len(ours["pulses"]),
        "stats_repeat": repeat,
        **bench_csv(),
    }


def bench_csv(samples: int = CSV_SAMPLES, repeat: int = 3) -> dict[str, Any]:
    """write_csv of a trace against np.savetxt of the same three columns and formats."""
    t = np.arange(samples) / RATE
    current = dut_current(samples)
    trace = PowerTrace(t, current, VOLTS)
    best = {"hil": float("inf"), "savetxt": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.csv"
        for _ in range(repeat):
            best["hil"] = min(best["hil"], _timed(lambda: write_csv(trace, path, attach=False))[0])
            rows = np.column_stack((t, current, np.full(samples, VOLTS)))
            seconds, _ = _timed(lambda: np.savetxt(io.StringIO(), rows, delimiter=",",
                                                   fmt=["%.12g", "%.9g", "%.9g"]))
            best["savetxt"] = min(best["savetxt"], seconds)
    return {"csv_samples": samples, "csv_write_ms": round(best["hil"] * 1e3, 1),
            "csv_savetxt_ms": round(best["savetxt"] * 1e3, 1),
            "csv_savetxt_over_write": round(best["savetxt"] / best["hil"], 2)}


def print_table(result: dict[str, Any]) -> None:
    print(f"PowerTrace statistics vs plain numpy, {result['stats_samples']:,} samples, "
          f"best of {result['stats_repeat']}")
    print(f"{'figure':28s} {'hil ms':>9s} {'numpy ms':>9s}")
    print(f"{'construction (validation)':28s} {result['stats_construction_ms']:9.2f} {'-':>9s}")
    for name in CALLS:
        print(f"{name:28s} {result['stats_hil_call_ms'][name]:9.2f} "
              f"{result['stats_numpy_call_ms'][name]:9.2f}")
    print(f"{'total':28s} {result['stats_hil_ms']:9.2f} {result['stats_numpy_ms']:9.2f}")
    print("mean() and energy() reuse the sum the constructor's NaN check takes.")
    print(f"ratio hil/numpy {result['stats_ratio']} (calls alone {result['stats_calls_ratio']}), "
          f"target <= {result['stats_target']}: "
          f"{'met' if result['stats_target_met'] else 'NOT met'}; "
          f"{result['stats_pulses_found']} pulses; same figures: {result['stats_same_figures']}")
    print(f"CSV of {result['csv_samples']:,} samples: write_csv {result['csv_write_ms']} ms, "
          f"np.savetxt {result['csv_savetxt_ms']} ms "
          f"({result['csv_savetxt_over_write']}x)")


if __name__ == "__main__":
    outcome = bench_stats(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000)
    print_table(outcome)
    print("RESULT " + json.dumps(outcome))
