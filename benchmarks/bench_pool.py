"""Rig pool benchmark: one suite over 1, 2, 4 and 8 simulated rigs, `pytest -n N --rig-pool`.

The suite is like real HIL benches: its time is spent waiting on the DUT (each test puts the
virtual DUT to sleep and waits for it to wake), not computing. With N rigs and N workers it
should take about 1/N of the one-rig time: target speed-up >= 0.8 x N up to 8 rigs on this
2-core machine. Wall time is the whole `pytest` process, start-up included (so the suite must
be long enough to amortise starting N workers on 2 cores). Two pytest plugins that are not
part of a lab's run are left out, as the project's own pyproject does for labgrid's: hypothesis's
(a test tool; 0.7 s of start-up per process) and labgrid's (hil drives labgrid through its
client; 0.8 s per process). Each worker then starts in about 0.5 s of CPU.

Lease overhead: a lease and its release (one file lock, one holder file) timed over many
rounds, against the target of 5 ms per test (a worker leases once per session, so per test
it is that divided by the tests the worker runs).

Ends with `RESULT {json}`.  Run: `.venv/bin/python benchmarks/bench_pool.py [--tests N]`
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from hil.rig.pool import RigPool  # noqa: E402

RIG = '[rig]\nname = "bench{i}"\n[console]\nkind = "tcp"\nhost = "sim"\n'
SUITE = '''
import pytest

@pytest.mark.parametrize("k", range({tests}))
def test_sleep_and_wake(console, k):
    console.query("sleep {seconds}\\n", expect="sleep: awake", timeout=30)
'''


def make_pool(folder: Path, rigs: int, name: str = "") -> Path:
    pool = folder / (name or f"pool{rigs}")
    pool.mkdir()
    for i in range(rigs):
        (pool / f"bench{i}.toml").write_text(RIG.format(i=i))
    return pool


def run_suite(folder: Path, rigs: int) -> float:
    """Wall seconds of the suite over `rigs` rigs with as many workers."""
    pool = make_pool(folder, rigs)
    args = [sys.executable, "-m", "pytest", str(folder / "test_suite.py"), "-q",
            "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:labgrid",
            "--rig-pool", str(pool),
            "--rig-lease-dir", str(folder / "leases"), "--hil-results", str(folder / "out")]
    if rigs > 1:
        args += ["-n", str(rigs)]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=folder, timeout=1800)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"suite over {rigs} rig(s) failed:\n{proc.stdout[-3000:]}"
                         f"{proc.stderr[-2000:]}")
    return wall


def lease_ms(folder: Path, rounds: int = 300) -> float:
    """Median milliseconds of one lease + release of a free rig."""
    pool = RigPool([make_pool(folder, 1, "lease-pool")], lease_dir=folder / "leases-lease")
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        pool.lease(1.0, "bench").release()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=96, help="tests in the suite")
    parser.add_argument("--seconds", type=float, default=1.0, help="DUT sleep per test")
    parser.add_argument("--rigs", default="1,2,4,8", help="rig counts to run")
    args = parser.parse_args()
    counts = [int(c) for c in args.rigs.split(",")]
    with tempfile.TemporaryDirectory(prefix="hil-bench-pool-") as tmp:
        folder = Path(tmp)
        (folder / "test_suite.py").write_text(SUITE.format(tests=args.tests,
                                                           seconds=args.seconds))
        walls = {}
        for rigs in counts:
            walls[rigs] = run_suite(folder, rigs)
            print(f"{rigs} rig(s): {args.tests} tests in {walls[rigs]:.1f} s", flush=True)
        per_lease = lease_ms(folder)
    base = walls[counts[0]] * counts[0]         # the one-rig time (counts start at 1)
    result = {
        "tests": args.tests, "dut_wait_s": args.seconds,
        "wall_s": {str(r): round(w, 2) for r, w in walls.items()},
        "speedup": {str(r): round(base / w, 2) for r, w in walls.items()},
        "speedup_per_rig": {str(r): round(base / w / r, 2) for r, w in walls.items()},
        "lease_release_ms": round(per_lease, 3),
        "lease_ms_per_test_at_max_rigs": round(per_lease / (args.tests / max(counts)), 4),
    }
    result["all_targets_met"] = (all(v >= 0.8 for v in result["speedup_per_rig"].values())
                                 and per_lease < 5.0)
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
