"""Event stream throughput: replay and recorder against a bare pyzmq PUB/SUB loop, one run.

* bare     — a child process sends the same `[topic, JSON]` payloads (pre-encoded bytes,
             including the reserved keys; the first 100 000 recorded bodies, cycled) as fast as
             it can from a bound XPUB with our publisher's options (XPUB_VERBOSE, SNDHWM,
             LINGER), once the subscription has arrived; this process receives them on a SUB
             with our subscriber's options (RCVHWM, LINGER 0, heartbeats) in a plain
             `recv_multipart` loop that only counts. The ceiling of pyzmq here.
* replay   — `hil sim events --db FILE --speedup 0` (the real command, its own process)
             replays the recorded events into our `EventSubscriber`.
* recorder — the bare sender feeds our `EventRecorder`, which writes the SQLite schema.
The three run side by side in `--rounds` rounds (bare, replay, recorder, again …) so that a
shared machine's load hits them alike; each round's ratios are taken against that round's bare
loop, and the medians are reported. Lost events: replay events the subscriber did not get
(count and `__seq` gaps) plus events the recorder did not store, over all rounds, with the
documented socket settings (HWM 1 000 000, LINGER 200 ms).

Usage: `.venv/bin/python benchmarks/bench_events.py [--events N] [--rounds R]`.
Ends with `RESULT {json}`.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.instruments.event_recorder import EventRecorder, lost_events  # noqa: E402
from hil.instruments.events import (DEFAULT_RCVHWM, HEARTBEAT_MS,  # noqa: E402
                                    HEARTBEAT_TIMEOUT_MS, EventSubscriber)
from hil.protocols.events_db import EventWriter  # noqa: E402
from hil.sim.events_publisher import DEFAULT_LINGER_MS, DEFAULT_SNDHWM  # noqa: E402

TOPICS = ["tcs.mount.state", "tcs.dome.status", "tcs.weather"]
STATES = ["idle", "slewing", "tracking", "parking"]
T0 = 1767225600.0
TARGET = 0.3
SENDER = r"""
import sys, zmq
url, n, path, hwm, linger = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
lines = open(path, "rb").read().split(b"\n")
msgs = [l.split(b" ", 1) for l in lines if l]
ctx = zmq.Context(); s = ctx.socket(zmq.XPUB)          # as EventPublisher: no slow joiner
s.setsockopt(zmq.XPUB_VERBOSE, 1); s.setsockopt(zmq.SNDHWM, hwm); s.setsockopt(zmq.LINGER, linger)
s.setsockopt(zmq.RCVTIMEO, 60_000)
s.bind(url)
s.recv()                                                # the subscription has arrived
m = len(msgs)
for i in range(n):
    s.send_multipart(msgs[i % m])
s.send_multipart([b"hil.replay.done", b"{}"])
s.close(); ctx.term()
"""


def sender(url: str, n: int, payloads: Path) -> subprocess.Popen:
    """The bare sender child, bound at `url`, with our publisher's socket options."""
    return subprocess.Popen([sys.executable, "-c", SENDER, url, str(n), str(payloads),
                             str(DEFAULT_SNDHWM), str(DEFAULT_LINGER_MS)])


def body(i: int, rng: random.Random) -> tuple[str, str]:
    """Event i: topic and the JSON body a control system would send (with reserved keys)."""
    topic = TOPICS[i % 3]
    t = T0 + i * 1e-3
    seq = i // 3 + 1
    if topic == "tcs.mount.state":
        fields = (f'"state":"{STATES[(i // 30) % 4]}","az":{rng.uniform(0, 360)!r},'
                  f'"el":{rng.uniform(20, 90)!r},"target":"HD 209458","on_target":true')
    elif topic == "tcs.dome.status":
        fields = f'"shutter":"open","az":{rng.uniform(0, 360)!r},"moving":false'
    else:
        fields = (f'"temperature":{rng.gauss(5, 2)!r},"humidity":{rng.randint(20, 90)},'
                  f'"wind":{rng.uniform(0, 12)!r}')
    return topic, f'{{{fields},"__data_time":{t!r},"__wire_time":{t + 0.002!r},"__seq":{seq}}}'


def build(db: Path, payloads: Path, n: int) -> None:
    """The recorded database (written like the recorder writes) and the bare loop's payloads."""
    rng = random.Random(1)
    with EventWriter(db) as writer, payloads.open("wb") as out:
        batch = []
        for i in range(n):
            topic, text = body(i, rng)
            batch.append((topic, text.encode(), T0 + i * 1e-3 + 0.003))
            if i < 100_000:
                out.write(topic.encode() + b" " + text.encode() + b"\n")
            if len(batch) == 50_000:
                writer.write_frames(batch)
                batch = []
        writer.write_frames(batch)


def bare(url: str, n: int, payloads: Path) -> float:
    """Events/s of a plain SUB loop (our subscriber's socket options) fed by the bare sender."""
    import zmq
    child = sender(url, n, payloads)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    for option, value in ((zmq.RCVHWM, DEFAULT_RCVHWM), (zmq.LINGER, 0),
                          (zmq.HEARTBEAT_IVL, HEARTBEAT_MS),
                          (zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS),
                          (zmq.RCVTIMEO, 60_000)):
        sub.setsockopt(option, value)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(url)
    try:
        sub.recv_multipart()
        start = time.perf_counter()
        got = 1
        while True:
            frames = sub.recv_multipart()
            if frames[0] == b"hil.replay.done":
                break
            got += 1
        elapsed = time.perf_counter() - start
    finally:
        child.wait(30)
        sub.close(0)
        ctx.term()
    if got != n:
        print(f"  bare: received {got} of {n}", flush=True)
    return (got - 1) / elapsed


def replay(db: Path, url: str, n: int) -> tuple[float, int]:
    child = subprocess.Popen([sys.executable, "-m", "hil.cli", "sim", "events", "--db", str(db),
                              "--url", url, "--speedup", "0", "--wait", "1"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        bound = child.stdout.readline().strip() if child.stdout else url
        with EventSubscriber(bound, history=10_000, name="bench") as sub:
            first = sub.expect_event(timeout=30)
            deadline = time.monotonic() + 600
            seen, quiet_since = 0, time.monotonic()
            while sub.received < n + 1 and time.monotonic() < deadline:
                time.sleep(0.05)
                if sub.received != seen:
                    seen, quiet_since = sub.received, time.monotonic()
                elif time.monotonic() - quiet_since > 10:   # nothing more is coming
                    break
            last = sub.history()[-1]
            missing = sum(s.missing for s in sub.seq_stats().values())
            lost = max(n + 1 - sub.received, missing)
            print(f"  replay: received {sub.received}, __seq gaps {missing}, child exit "
                  f"{child.poll()}", flush=True)
            rate = (sub.received - 1) / (last.received - first.received)
    finally:
        child.terminate()
        child.wait(30)
    return rate, lost


def recorder(url: str, n: int, payloads: Path, db: Path) -> tuple[float, int]:
    child = sender(url, n, payloads)
    rec = EventRecorder(url, db, connect_timeout=0)
    try:
        deadline = time.monotonic() + 600
        while rec.received == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.perf_counter()
        while rec.written < n + 1 and time.monotonic() < deadline and rec.error is None:
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
    finally:
        child.wait(30)
        rec.close()
    return rec.written / elapsed, n + 1 - rec.written + lost_events(rec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3, help="side-by-side rounds (median taken)")
    args = p.parse_args()
    n = args.events
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    rounds: list[dict[str, float]] = []
    lost = {"replay": 0, "recorder": 0}
    with tempfile.TemporaryDirectory(prefix="hil-bench-events-") as tmp:
        tmpdir = Path(tmp)
        db, payloads = tmpdir / "recorded.sqlite", tmpdir / "payloads.txt"
        t = time.perf_counter()
        build(db, payloads, n)
        print(f"built {n} recorded events in {time.perf_counter() - t:.1f} s", flush=True)
        for r in range(args.rounds):
            bare_rate = bare(f"ipc://{tmpdir}/bare{r}.ipc", n, payloads)
            replay_rate, replay_lost = replay(db, f"ipc://{tmpdir}/replay{r}.ipc", n)
            rec_rate, rec_lost = recorder(f"ipc://{tmpdir}/rec{r}.ipc", n, payloads,
                                          tmpdir / f"rerecorded{r}.sqlite")
            (tmpdir / f"rerecorded{r}.sqlite").unlink(missing_ok=True)
            lost["replay"] += replay_lost
            lost["recorder"] += rec_lost
            rounds.append({"bare": bare_rate, "replay": replay_rate, "recorder": rec_rate})
            print(f"round {r + 1}: bare pyzmq PUB/SUB {bare_rate:,.0f} events/s; "
                  f"replay -> EventSubscriber {replay_rate:,.0f} ({replay_rate / bare_rate:.3f} "
                  f"of bare), lost {replay_lost}; bare sender -> EventRecorder -> SQLite "
                  f"{rec_rate:,.0f} ({rec_rate / bare_rate:.3f} of bare), lost {rec_lost}; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    def ratio(key: str) -> float:
        return statistics.median(r[key] / r["bare"] for r in rounds)

    summary = {
        "benchmark": "events", "events": n, "rounds": args.rounds, "unit": "events/s",
        "bare_pubsub": round(median("bare")),
        "replay_unlimited": round(median("replay")), "replay_of_bare": round(ratio("replay"), 3),
        "recorder": round(median("recorder")), "recorder_of_bare": round(ratio("recorder"), 3),
        "replay_of_bare_rounds": [round(r["replay"] / r["bare"], 3) for r in rounds],
        "recorder_of_bare_rounds": [round(r["recorder"] / r["bare"], 3) for r in rounds],
        "lost_replay": lost["replay"], "lost_recorder": lost["recorder"],
        "load_average": round(os.getloadavg()[0], 2),
        "targets": {"replay_of_bare": TARGET, "recorder_of_bare": TARGET, "lost": 0},
        "all_met": (ratio("replay") >= TARGET and ratio("recorder") >= TARGET
                    and lost["replay"] == 0 and lost["recorder"] == 0),
    }
    print("RESULT " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
