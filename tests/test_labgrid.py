"""Labs over hosts: rig files naming a labgrid place, run for real against a labgrid coordinator
and exporter on loopback that export the simulated DUT's console (a network serial port) and
TiA simulators (network services). The test benches run there unchanged."""
from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from hil.errors import RigError
from hil.rig import load_rig
from hil.rig.labgrid import Exported, check_spec, resolve
from hil.rig.schema import Rig

from waiting import wait_until as _wait_until

WAIT = 20.0
wait_until = partial(_wait_until, timeout=WAIT)     # this file's waits are longer
RUN_TIMEOUT = 180.0           # one pytest run in a subprocess, on a busy machine
ROOT = Path(__file__).resolve().parents[1]
SIGNALS = "eeg:8x4@500/sine,emg:2x4@500/noise,sensors:5x1@125/dut"
PLACES = ("bench-1", "bench-2")

LAB_RIG = '''[rig]
name = "lab-bench"
labgrid = {{ coordinator = "{address}", {which} }}

[console]
kind = "serial"
url = "labgrid:NetworkSerialPort"     # the DUT's UART, exported by the bench's host

[eeg]
kind = "tia"
host = "labgrid:eeg"                  # the amplifier's TiA server

[eeg_lossy]
kind = "tia"
host = "labgrid:eeg_lossy"
'''


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------ rig files (no lab needed)
@pytest.mark.parametrize("table, said", [
    ("1", "expected a table"),
    ('{ place = "b", tags = { board = "x" } }', "either place"),
    ("{ }", "either place"),
    ('{ place = 3 }', "labgrid.place: expected a place name"),
    ('{ tags = { Board = "x" } }', "labgrid.tags"),
    ('{ tags = { board = "" } }', "labgrid.tags"),
    ('{ place = "b", coordinator = "host:99999" }', "labgrid.coordinator"),
    ('{ place = "b", exporter = "x" }', "unknown key 'exporter'"),
])
def test_a_bad_labgrid_table_names_the_file_and_key(tmp_path: Path, table: str,
                                                    said: str) -> None:
    rig = write(tmp_path / "r.toml", f'[rig]\nlabgrid = {table}\n[c]\nkind = "tcp"\nhost = "h"\n')
    with pytest.raises(RigError, match=re.escape(said)) as caught:
        load_rig(rig)
    assert "table [rig], key 'labgrid'" in str(caught.value) and str(rig) in str(caught.value)


@pytest.mark.parametrize("rig, said, key", [
    ('[c]\nkind = "tcp"\nhost = "labgrid:x"\n', "[rig] names no labgrid place", "host"),
    ('[rig]\nlabgrid = { place = "p" }\n[c]\nkind = "serial"\nurl = "x"\nencoding = "labgrid:x"',
     "can only give a url or a host", "encoding"),
    ('[rig]\nlabgrid = { place = "p" }\n[c]\nkind = "tcp"\nhost = "labgrid:"\n',
     "names no resource", "host"),
])
def test_labgrid_values_are_checked_when_the_rig_is_loaded(tmp_path: Path, rig: str, said: str,
                                                           key: str) -> None:
    with pytest.raises(RigError, match=re.escape(said)) as caught:
        load_rig(write(tmp_path / "r.toml", rig))
    assert f"table [c], key '{key}'" in str(caught.value)


def test_a_place_is_named_or_chosen_by_tags() -> None:
    assert check_spec({"place": "bench-1"}, "r.toml").filter == {"name": "bench-1"}
    spec = check_spec({"coordinator": "lab:20408", "tags": {"board": "nrf52"}}, "r.toml")
    assert spec.filter == {"board": "nrf52"} and spec.address == "lab:20408"


def _lab_rig(tmp_path: Path) -> Rig:
    return load_rig(write(tmp_path / "r.toml", '''[rig]\nlabgrid = { place = "p" }
[console]\nkind = "serial"\nurl = "labgrid:NetworkSerialPort"
[shell]\nkind = "tcp"\nhost = "labgrid:raw"
[power]\nkind = "otii"\nhost = "labgrid:otii"
[events]\nkind = "events"\nurl = "labgrid:zmq"
'''))


def test_exported_resources_become_urls_hosts_ports_and_baud_rates(tmp_path: Path) -> None:
    exported = [Exported("NetworkSerialPort", "NetworkSerialPort",
                         {"host": "pi-7", "port": 5001, "speed": 9600, "protocol": "rfc2217"}),
                Exported("raw", "NetworkSerialPort", {"host": "pi-7", "port": 5002,
                                                      "protocol": "raw"}),
                Exported("otii", "NetworkService", {"address": "10.0.0.9", "port": 1905}),
                Exported("zmq", "NetworkService", {"address": "fd00::9", "port": 5556})]
    rig = resolve(_lab_rig(tmp_path), exported, "p")
    assert rig["console"]["url"] == "rfc2217://pi-7:5001" and rig["console"]["baudrate"] == 9600
    assert (rig["shell"]["host"], rig["shell"]["port"]) == ("pi-7", 5002)
    assert (rig["power"]["host"], rig["power"]["port"]) == ("10.0.0.9", 1905)
    assert rig["events"]["url"] == "tcp://[fd00::9]:5556"
    raw = [Exported("NetworkSerialPort", "NetworkSerialPort",
                    {"host": "pi-7", "port": 5001, "protocol": "raw"}), *exported[1:]]
    assert resolve(_lab_rig(tmp_path), raw, "p")["console"]["url"] == "socket://pi-7:5001"


@pytest.mark.parametrize("change, said, table", [
    ({"otii": None}, "no resource named or of class 'otii'; it has: NetworkSerialPort, raw "
                     "(NetworkSerialPort), zmq (NetworkService)", "power"),
    ({"raw": Exported("raw", "NetworkSerialPort", {"host": "h", "port": 1})},
     "speaks RFC 2217", "shell"),
    ({"otii": Exported("otii", "NetworkService", {"address": "h", "port": 1,
                                                  "extra": {"proxy_required": True}})},
     "isolated mode", "power"),
    ({"otii": Exported("otii", "NetworkService", {"address": "h", "port": 1}, avail=False)},
     "is not available", "power"),
    ({"zmq": Exported("zmq", "USBSerialPort", {"path": "/dev/x"})}, "is a USBSerialPort",
     "events"),
])
def test_a_place_that_cannot_give_a_value_is_a_clear_error(tmp_path: Path, change: dict,
                                                           said: str, table: str) -> None:
    exported = {"NetworkSerialPort": Exported("NetworkSerialPort", "NetworkSerialPort",
                                              {"host": "h", "port": 1, "protocol": "raw"}),
                "raw": Exported("raw", "NetworkSerialPort", {"host": "h", "port": 2,
                                                             "protocol": "raw"}),
                "otii": Exported("otii", "NetworkService", {"address": "h", "port": 3}),
                "zmq": Exported("zmq", "NetworkService", {"address": "h", "port": 4})}
    exported.update(change)
    with pytest.raises(RigError, match=re.escape(said)) as caught:
        resolve(_lab_rig(tmp_path), [e for e in exported.values() if e], "p")
    assert f"table [{table}]" in str(caught.value)


def test_an_unreachable_coordinator_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("labgrid")
    from hil.rig.labgrid import acquire
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rig = write(tmp_path / "r.toml", f'[rig]\nlabgrid = {{ coordinator = "127.0.0.1:{port}", '
                                     'place = "p" }\n[c]\nkind = "tcp"\nhost = "labgrid:x"\n')
    with pytest.raises(RigError, match=rf"cannot reach the labgrid coordinator at "
                                       rf"127\.0\.0\.1:{port} .*table \[rig\], key 'labgrid'"):
        acquire(load_rig(rig))


# ------------------------------------------------------------------ a lab on loopback
class Output:
    """A subprocess's output lines, read by a thread, awaited with a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = WAIT) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if m := re.search(pattern, line):
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} in {timeout} s: {self.seen}")
            try:
                self.seen.append(self.lines.get(timeout=left))
            except queue.Empty:
                pass


@dataclass
class Lab:
    address: str
    folder: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def client(self, *args: str, user: str = "alice") -> subprocess.CompletedProcess:
        """labgrid-client as another user of the lab would run it."""
        env = {**os.environ, "LG_COORDINATOR": self.address, "LG_USERNAME": user}
        return subprocess.run([sys.executable, "-m", "labgrid.remote.client", *args], env=env,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT)

    def coordinator(self):
        from hil.rig.labgrid import Coordinator
        return Coordinator(self.address, name=("tests", "observer"))

    def rig(self, folder: Path, which: str) -> Path:
        return write(folder / "rigs" / "lab.toml", LAB_RIG.format(address=self.address,
                                                                  which=which))


def start(cmd: list[str], cwd: Path) -> tuple[subprocess.Popen, Output]:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, Output(proc)


EXPORTED_GROUP = '''{place}:
  NetworkSerialPort:
    host: 127.0.0.1
    port: {console}
    speed: 115200
    protocol: raw
  eeg:
    cls: NetworkService
    address: 127.0.0.1
    port: {eeg}
    username: ""
  eeg_lossy:
    cls: NetworkService
    address: 127.0.0.1
    port: {lossy}
    username: ""
'''


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A coordinator and an exporter (subprocesses on 127.0.0.1) and two places, bench-1 and
    bench-2 (tag board=sim), each exporting its own virtual DUT's console and TiA servers."""
    pytest.importorskip("labgrid", reason="labgrid is not installed (pip install 'hil[labgrid]')")
    from hil.sim.dut import VirtualDut
    from hil.sim.dut_server import serve_tcp
    from hil.sim.tia_server import TiaServer
    folder = tmp_path_factory.mktemp("lab")
    sims: list = []
    groups = []
    for place in PLACES:
        dut = VirtualDut(seed=len(sims) + 1, powered=True)
        console = serve_tcp(dut)
        eeg = TiaServer(SIGNALS, sensor=lambda name, t, dut=dut: dut.sensor(name, t))
        lossy = TiaServer("eeg:8x4@500/sine", faults="drop@20x3/50")
        sims += [lossy, eeg, console, dut]
        groups.append(EXPORTED_GROUP.format(place=place, console=console.port, eeg=eeg.port,
                                            lossy=lossy.port))
    write(folder / "places.yaml", "".join(
        f"{p}:\n  tags: {{board: sim}}\n  matches:\n  - {{exporter: '*', group: {p}, cls: '*'}}\n"
        for p in PLACES))
    write(folder / "exporter.yaml", "".join(groups))
    coordinator, out = start([sys.executable, "-m", "labgrid.remote.coordinator", "-l",
                              "127.0.0.1:0"], folder)
    port = out.wait_for(r"listening on 127\.0\.0\.1:(\d+)", RUN_TIMEOUT)[1]
    lab = Lab(f"127.0.0.1:{port}", folder, [coordinator])
    try:
        exporter, _ = start([sys.executable, "-m", "labgrid.remote.exporter", "-c", lab.address,
                             "-n", "lab-host", "exporter.yaml"], folder)
        lab.procs.append(exporter)
        observer = lab.coordinator()
        try:
            wait_until(lambda: len(observer.resource_paths()) == 3 * len(PLACES),
                       "the exporter's resources at the coordinator", timeout=RUN_TIMEOUT)
        finally:
            observer.close()
        yield lab
    finally:
        for proc in reversed(lab.procs):
            proc.terminate()
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(WAIT)
        for sim in sims:
            sim.close()


def holders(lab: Lab) -> dict[str, str | None]:
    """Who holds each place now (None: free), and no reservation may be left over."""
    c = lab.coordinator()
    try:
        return {name: p.acquired for name, p in c.places().items()} | {
            "reservations": ", ".join(f"{o} {s}" for _, o, s in c.reservations()) or None}
    finally:
        c.close()


FREE = {**{p: None for p in PLACES}, "reservations": None}


def bench(pytester: pytest.Pytester, lab: Lab, which: str = 'place = "bench-1"') -> Path:
    """The project's test benches, copied unchanged, and a rig file naming a lab place."""
    for name in ("conftest.py", "test_console.py", "test_streams.py"):
        shutil.copy(ROOT / "testbenches" / name, pytester.path / name)
    return lab.rig(pytester.path, which)


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_the_test_benches_run_unchanged_on_places_reserved_by_tags_per_worker(
        pytester: pytest.Pytester, lab: Lab) -> None:
    pytest.importorskip("xdist")
    rig = bench(pytester, lab, 'tags = { board = "sim" }')
    result = pytester.runpytest_subprocess("--rig", str(rig), "-n", "2", "-p", "no:cacheprovider",
                                           "--junitxml", "junit.xml", "test_console.py",
                                           "test_streams.py", timeout=RUN_TIMEOUT)
    said = f"{result.stdout.str()}\n{result.stderr.str()}"
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 12 and not outcomes.get("failed"), said
    tests = ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
    places = {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
              .get("hil.labgrid_place") for case in tests}
    assert set(places.values()) == set(PLACES), places     # each worker its own place
    assert holders(lab) == FREE


@pytest.mark.timeout(2 * RUN_TIMEOUT + 60)
def test_a_place_held_by_another_user_is_named_then_waited_for(pytester: pytest.Pytester,
                                                               lab: Lab) -> None:
    from hil.rig.labgrid import acquire
    rig = bench(pytester, lab)
    write(pytester.path / "test_one.py", "def test_version(console):\n"
                                        "    console.query('version\\n', expect='version: ')\n")
    assert lab.client("-p", "bench-1", "acquire").returncode == 0
    try:
        with pytest.raises(RigError, match=r"labgrid place bench-1 is not free .*: bench-1 held "
                                           r"by alice on \S+ since .*--rig-wait"):
            acquire(load_rig(rig), wait=0)
        waiting = subprocess.Popen(
            [sys.executable, "-m", "pytest", "--rig", str(rig), "--rig-wait", "30",
             "-p", "no:cacheprovider", "test_one.py"], cwd=pytester.path, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "waiting" in (holders(lab)["reservations"] or ""),
                       "the second run's reservation", timeout=RUN_TIMEOUT)
            assert lab.client("-p", "bench-1", "release").returncode == 0
            out, _ = waiting.communicate(timeout=RUN_TIMEOUT)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait(WAIT)
        assert waiting.returncode == 0, out
        assert "1 passed" in out
        assert f"hil rig on labgrid place bench-1 (coordinator {lab.address})" in out
    finally:
        lab.client("-p", "bench-1", "release", "--kick")
    assert holders(lab) == FREE


@pytest.mark.timeout(2 * RUN_TIMEOUT + 60)
def test_sigterm_during_a_test_releases_the_place(pytester: pytest.Pytester, lab: Lab) -> None:
    rig = bench(pytester, lab)
    write(pytester.path / "test_hang.py", '''
from pathlib import Path

def test_hang(console):
    Path("started").write_text("")
    console.expect("never said", timeout=600)
''')
    run = subprocess.Popen([sys.executable, "-m", "pytest", "--rig", str(rig),
                            "-p", "no:cacheprovider", "test_hang.py"], cwd=pytester.path,
                           text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (pytester.path / "started").exists() or run.poll() is not None,
                   "the test to start", timeout=RUN_TIMEOUT)
        assert holders(lab)["bench-1"] is not None
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=RUN_TIMEOUT)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(WAIT)
    assert "KeyboardInterrupt" in out or "SIGTERM" in out, out
    assert holders(lab) == FREE


HOLD = '''
import sys
from hil.rig import load_rig
from hil.rig.labgrid import acquire
rig, hold = acquire(load_rig(sys.argv[1]))
print(hold.place, flush=True)
sys.stdin.read()
'''


def test_a_place_held_by_a_dead_process_of_this_host_is_taken_over(tmp_path: Path,
                                                                   lab: Lab) -> None:
    from hil.rig.labgrid import acquire
    rig = lab.rig(tmp_path, 'place = "bench-2"')
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(rig)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "bench-2"
        with pytest.raises(RigError, match=rf"bench-2 held by \S+ on \S+ \(pid {holder.pid}\)"):
            acquire(load_rig(rig), wait=0)
    finally:
        holder.kill()                 # SIGKILL: no teardown, labgrid keeps the place acquired
        holder.wait(WAIT)
    assert holders(lab)["bench-2"] is not None
    notes: list[str] = []
    resolved, hold = acquire(load_rig(rig), wait=WAIT, progress=notes.append)
    try:
        assert hold.place == "bench-2" and resolved["console"]["url"].startswith("socket://")
        assert any(f"pid {holder.pid}" in n and "is gone" in n for n in notes), notes
    finally:
        assert hold.release() == []
    assert holders(lab) == FREE
