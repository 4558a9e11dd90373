"""Rig pools: leases that two processes never share, that die with their holder, that a worker
waits for; and pytest running over a pool (xdist workers, each_rig, two rigs at once)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hil import cli
from hil.errors import RigError
from hil.rig.pool import RigPool

WAIT = 20.0
SIM_RIG = '[rig]\nlabels = [{labels}]\n[console]\nkind = "tcp"\nhost = "sim"\n'

HOLD = '''
import sys
from pathlib import Path
from hil.rig.pool import RigPool
pool = RigPool([sys.argv[1]], lease_dir=Path(sys.argv[2]))
lease = pool.lease(float(sys.argv[3]), "holder")
print(lease.rig.name, flush=True)
sys.stdin.read()            # hold until the parent closes stdin (or kills us)
'''


def make_pool(folder: Path, count: int, labels: dict[int, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        words = (labels or {}).get(i, "")
        quoted = ", ".join(f'"{w}"' for w in words.split(",") if w)
        (folder / f"rig{i}.toml").write_text(SIM_RIG.format(labels=quoted))
    return folder


def holder(pool: Path, leases: Path, timeout: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD, str(pool), str(leases), str(timeout)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_leases_exclude_and_the_last_waiter_is_told_who_holds_them(tmp_path: Path) -> None:
    pool = RigPool([make_pool(tmp_path / "pool", 2)], lease_dir=tmp_path / "leases")
    a = pool.lease(1.0, "first")
    b = pool.lease(1.0, "second")
    assert {a.rig.name, b.rig.name} == {"rig0", "rig1"}
    with pytest.raises(RigError, match=rf"no free rig.*rig0 held by pid {os.getpid()} .*"
                                       rf"\((first|second)\)"):
        pool.lease(0.3, "third")
    a.release()
    c = pool.lease(1.0, "third")
    assert c.rig.name == a.rig.name
    b.release(), c.release()


def test_many_processes_racing_for_a_small_pool_never_share_a_rig(tmp_path: Path) -> None:
    folder = make_pool(tmp_path / "pool", 3)
    procs = [holder(folder, tmp_path / "leases") for _ in range(8)]
    try:
        outcomes = [p.stdout.readline().strip() for p in procs]   # name, or "" when it failed
        won = [o for o in outcomes if o]
        assert sorted(won) == ["rig0", "rig1", "rig2"]             # 3 winners, all different
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(WAIT)
    failed = [p for p in procs if p.returncode != 0]
    assert len(failed) == 5                                        # the others: RigError


def test_a_holder_killed_with_sigkill_frees_its_rig(tmp_path: Path) -> None:
    folder = make_pool(tmp_path / "pool", 1)
    proc = holder(folder, tmp_path / "leases")
    assert proc.stdout.readline().strip() == "rig0"
    pool = RigPool([folder], lease_dir=tmp_path / "leases")
    [(rig, held)] = pool.status()
    assert held is not None and held.pid == proc.pid and held.purpose == "holder"
    proc.send_signal(signal.SIGKILL)
    proc.wait(WAIT)
    lease = pool.lease(WAIT, "next")             # no clean-up ran, yet the rig is free
    assert lease.rig.name == "rig0"
    lease.release()


def test_a_stale_holder_file_is_not_honoured(tmp_path: Path) -> None:
    leases = tmp_path / "leases"
    leases.mkdir()
    (leases / "rig0.holder.json").write_text(json.dumps(
        {"pid": 999999, "host": "gone", "since": "2020-01-01T00:00:00+00:00"}))
    pool = RigPool([make_pool(tmp_path / "pool", 1)], lease_dir=leases)
    assert pool.status()[0][1] is None
    pool.lease(0.0).release()


def test_a_worker_waits_for_a_busy_rig_then_proceeds(tmp_path: Path) -> None:
    folder = make_pool(tmp_path / "pool", 1)
    proc = holder(folder, tmp_path / "leases")
    assert proc.stdout.readline().strip() == "rig0"
    pool = RigPool([folder], lease_dir=tmp_path / "leases")
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(pool.lease(WAIT, "waiter")))
    waiter.start()
    deadline = time.monotonic() + WAIT           # the waiter is waiting: the rig is held
    while pool.status()[0][1] is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not got
    proc.stdin.close()                           # the holder ends
    proc.wait(WAIT)
    waiter.join(WAIT)
    assert got and got[0].rig.name == "rig0"
    got[0].release()


def test_labels_choose_rigs_and_a_bad_choice_says_what_there_is(tmp_path: Path) -> None:
    folder = make_pool(tmp_path / "pool", 3, {0: "nrf52", 1: "nrf52,rev-b", 2: "esp32"})
    assert [r.name for r in RigPool([folder], ["nrf52"]).rigs] == ["rig0", "rig1"]
    assert [r.name for r in RigPool([folder], ["nrf52", "rev-b"]).rigs] == ["rig1"]
    with pytest.raises(RigError, match=r"no rig with labels stm32.*rig2: esp32"):
        RigPool([folder], ["stm32"])


def test_pool_status_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_pool(tmp_path / "pool", 2)
    leases = tmp_path / "leases"
    lease = RigPool([folder], lease_dir=leases).lease(1.0, "pytest gw0")
    assert cli.main(["pool", "status", str(folder), "--lease-dir", str(leases)]) == 0
    out = capsys.readouterr().out
    assert f"{lease.rig.name}  held by pid {os.getpid()}" in out and "(pytest gw0)" in out
    assert "free" in out
    lease.release()


# ------------------------------------------------------------------ pytest over a pool
BENCH = '''
import pytest

def test_console_answers(console, rig, measure):
    console.query("echo hi\\n", expect="hi")
    measure("x", 1.0)

@pytest.mark.each_rig
def test_every_rig(rig):
    assert rig["console"].query("echo each\\n", expect="each")

@pytest.mark.rigs(2)
def test_two_duts_talk(rigs):
    a, b = rigs
    assert a.name != b.name
    line = a["console"].query("version\\n", expect=r"version: (\\S+)").group(1)
    b["console"].writeline(f"echo from-{a.name}-{line}")   # relay A's answer to B
    b["console"].expect(f"from-{a.name}-{line}")
'''


def run_pool(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    make_pool(pytester.path / "pool", 2)
    pytester.makepyfile(BENCH)
    return pytester.runpytest_subprocess(
        "--rig-pool", "pool", "--rig-lease-dir", str(pytester.path / "leases"),
        "-p", "no:cacheprovider", "--hil-results", "out", "--junitxml", "junit.xml", *args)


def test_one_process_runs_each_rig_and_two_rigs_at_once(pytester: pytest.Pytester) -> None:
    result = run_pool(pytester, "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_every_rig?rig0? PASSED*", "*test_every_rig?rig1? PASSED*"])


def test_xdist_workers_each_lease_a_rig_and_results_name_it(pytester: pytest.Pytester) -> None:
    result = run_pool(pytester, "-n", "2", "-rs")
    outcomes = result.parseoutcomes()
    # each_rig cases run on the worker holding that rig, elsewhere they are skipped (xdist
    # alone decides which worker gets which); two rigs at once needs one process
    assert outcomes.get("failed") is None and "warnings" not in outcomes, result.stdout.str()
    assert outcomes["passed"] + outcomes["skipped"] == 4 and outcomes["passed"] >= 1
    result.stdout.fnmatch_lines(["*uses 2 rigs at once, while this xdist worker holds another "
                                 "rig: run it without -n*"])
    junit = (pytester.path / "junit.xml").read_text()
    assert 'name="hil.rig" value="rig' in junit
    records = json.loads((pytester.path / "out" / "measurements.json").read_text())
    assert records and all(r["rig"] in ("rig0", "rig1") for r in records)
    assert list((pytester.path / "out" / "transcripts").iterdir())[0].name in ("rig0", "rig1")


def test_rig_and_rig_pool_exclude_each_other(pytester: pytest.Pytester) -> None:
    make_pool(pytester.path / "pool", 1)
    pytester.makepyfile("def test_x(): pass\n")
    result = pytester.runpytest_subprocess("--rig-pool", "pool", "--rig", "pool/rig0.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--rig and --rig-pool exclude each other" in result.stderr.str()


def test_the_project_pool_is_the_simulated_rig_four_times() -> None:
    """testbenches/rigs/pool/ (the README's pool example) must not drift from sim.toml."""
    from hil.rig import load_rig
    rigs_dir = Path(__file__).resolve().parents[1] / "testbenches" / "rigs"
    sim = load_rig(rigs_dir / "sim.toml")
    pool = RigPool([rigs_dir / "pool"])
    assert [r.name for r in pool.rigs] == ["sim-1", "sim-2", "sim-3", "sim-4"]
    for rig in pool.rigs:
        assert {n: r.kind for n, r in rig.resources.items()} == \
            {n: r.kind for n, r in sim.resources.items()}
        for name, resource in rig.resources.items():      # same settings, paths resolved alike
            theirs = sim.resources[name]
            for key, value in resource.settings.items():
                if key in ("credentials", "db") and value:    # files named relative to each
                    assert resource.path(key) == theirs.path(key)
                else:
                    assert value == theirs.settings[key], (rig.name, name, key)
