"""Live → record → replay over real ZeroMQ sockets; subscriber errors; recorder durability."""
from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zmq

from hil.errors import BusTimeout, ConnectionLost, InstrumentConnectError, InstrumentError
from hil.instruments.event_recorder import EventRecorder
from hil.instruments.events import EventSubscriber
from hil.protocols import events as codec
from hil.protocols.events_db import EventWriter
from hil.sim.events_mock import MockSource
from hil.sim.events_publisher import EventPublisher
from hil.sim.events_replay import Replay
from hil.sim.events_server import DONE_TOPIC, EventServer
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = {"k": "~counter", "state": "~cycle:idle|busy|off", "t": "~uniform:-5:5",
           "ok": True, "note": "é \"quoted\"", "nested": [1, {"a": None}]}
N = 12


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, list[codec.Event]]:
    """A live mock session (20 Hz) recorded through the recorder; the events as sent."""
    db = tmp_path_factory.mktemp("events") / "live.sqlite"
    source = MockSource("live.status", rate_hz=20, count=N, payload=PAYLOAD, seed=3)
    # wait counts subscriptions: the recorder's one and the subscriber's two
    with EventServer(source, wait=3) as server:
        recorder = EventRecorder(server.url, db, ["live."], flush_s=0.05)
        with EventSubscriber(server.url, ["live.", "hil."]) as sub:
            sub.expect_event(DONE_TOPIC, timeout=10)
            live = sub.history(topic="live.")
        wait_until(lambda: recorder.written == N, "the recorder", timeout=10)
        recorder.close()
    return db, live


def test_recorder_stores_what_was_published(recorded):
    db, live = recorded
    assert [e.seq for e in live] == list(range(1, N + 1))
    got = list(Replay(db, speedup=0).dicts())
    assert [b["k"] for _, b in got] == list(range(N))
    assert [{k: v for k, v in b.items() if not k.startswith("__")} for _, b in got] == \
        [e.fields for e in live]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kinds = dict(con.execute("SELECT name, data_type FROM attribute WHERE event_id = 1"))
    assert kinds == {"k": "int", "state": "str", "t": "float", "ok": "bool", "note": "str",
                     "nested": "json"}
    con.close()


@pytest.mark.parametrize("speedup", [1.0, 10.0, math.inf])
def test_replay_round_trip_to_bare_sub_and_our_subscriber(recorded, speedup):
    db, live = recorded
    with EventServer(Replay(db, speedup=speedup), wait=2) as server:
        ctx = zmq.Context()
        bare = ctx.socket(zmq.SUB)
        bare.setsockopt(zmq.SUBSCRIBE, b"")
        bare.setsockopt(zmq.RCVTIMEO, 10_000)
        bare.connect(server.url)
        try:
            with EventSubscriber(server.url) as sub:
                sub.expect_event(DONE_TOPIC, timeout=15)
                ours = sub.history(topic="live.")
            raw = [bare.recv_multipart() for _ in range(N)]
        finally:
            bare.close(0)
            ctx.term()
    via_bare = [codec.decode(frames) for frames in raw]
    for got in (ours, via_bare):
        assert [e.topic for e in got] == [e.topic for e in live]
        assert [e.fields for e in got] == [e.fields for e in live]        # identical payloads
        assert [e.seq for e in got] == list(range(1, N + 1))              # nothing lost
    # timing: recorded spacing of the data times, scaled by the speed-up (exact arithmetic)
    scale = speedup if math.isfinite(speedup) else 1.0
    live_dt = np.diff([e.data_time for e in live])
    assert np.allclose(np.diff([e.data_time for e in ours]) * scale, live_dt, atol=1e-5)
    if math.isfinite(speedup):
        # absolute schedule: no event arrives before its (rewritten) wire time, and none
        # unreasonably late (a tolerance on the recorded arrival times)
        late = np.array([e.received - e.wire_time for e in ours])
        assert late.min() > -0.005 and np.median(late) < 0.25


def test_expect_event_predicates_iteration_and_capture():
    source = MockSource("dev.status", rate_hz=200, count=40, payload={"k": "~counter",
                                                                      "v": "~sine:1:2"}, seed=1)
    with EventServer(source) as server, EventSubscriber(server.url, ["dev."]) as sub:
        assert sub.expect_event("dev.status", {"k": 3}).seq == 4
        assert sub.expect_event("dev.", where=lambda e: e["k"] > 10)["k"] == 11
        taken = []
        for event in sub.events("dev.status", timeout=10):
            taken.append(event["k"])
            if len(taken) == 3:
                break
        assert taken == [12, 13, 14]
        sub.expect_event("dev.status", {"k": 39})
        with pytest.raises(BusTimeout, match=r"waiting for event dev.status where k=999.*"
                                             r"last \d+ of 40 events received"):
            sub.expect_event("dev.status", {"k": 999}, timeout=0.2)
        capture_source = sub.history(topic="dev.status")
        assert sub.check_sequence()["dev.status"].missing == 0
        assert sub.latency().n == 40
    from hil.instruments.events import events_to_capture
    capture = events_to_capture(capture_source)
    assert set(capture.signals) == {"k", "v"} and capture.n_packets == 40
    assert capture.packet_numbers.tolist() == list(range(1, 41)) and capture.lost_packets == 0


def test_lost_events_show_as_seq_gaps():
    with EventPublisher() as pub, EventSubscriber(pub.url, ["g."]) as sub:
        pub.wait_for_subscribers(1, timeout=10)
        pub.send_event("g.x", {"i": 1})
        pub.send_frames([b"g.x", b'{"i": 5, "__seq": 5}'])        # 2, 3, 4 never arrive
        sub.expect_event("g.x", {"i": 5})
        stats = sub.seq_stats()["g.x"]
        assert (stats.missing, stats.gaps) == (3, 1)
        with pytest.raises(Exception, match="3 missing in 1 gaps"):
            sub.check_sequence()


def test_subscriber_of_a_killed_publisher_gets_an_error_not_a_hang():
    child = subprocess.Popen([sys.executable, "-m", "hil.cli", "sim", "events", "--mock",
                              "--url", "tcp://127.0.0.1:0", "--rate", "50"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = child.stdout.readline().strip()
        with EventSubscriber(url) as sub:
            sub.expect_event("lrs2.hardware.status", timeout=10)
            child.kill()
            with pytest.raises(ConnectionLost, match="went away"):
                sub.expect_event("never.sent", timeout=30)
    finally:
        child.kill()
        child.wait(10)


def test_no_publisher_is_a_clear_connect_error():
    with pytest.raises(InstrumentConnectError, match="no event publisher answered"):
        EventSubscriber("tcp://127.0.0.1:9", connect_timeout=0.3)


def test_malformed_message_fails_the_next_wait():
    with EventPublisher() as pub, EventSubscriber(pub.url) as sub:
        pub.wait_for_subscribers(1, timeout=10)
        pub.send_frames([b"t", b"{not json"])
        with pytest.raises(Exception, match="not JSON"):
            sub.expect_event("t", timeout=5)


def test_wait_for_subscribers_times_out_clearly():
    with EventPublisher() as pub:
        with pytest.raises(BusTimeout, match="waiting for 1 subscriber"):
            pub.wait_for_subscribers(1, timeout=0.1)


def test_recorder_close_commits_pending_events(tmp_path):
    db = tmp_path / "r.sqlite"
    with EventPublisher() as pub:
        recorder = EventRecorder(pub.url, db, flush_s=3600)   # no timed commit: close() must
        pub.wait_for_subscribers(1, timeout=10)
        for i in range(50):
            pub.send_event("r.t", {"i": i})
        wait_until(lambda: recorder.received == 50, "50 events", timeout=10)
        assert recorder.written == 0
        recorder.close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM event").fetchone()[0] == 50
    con.close()


def test_recorder_killed_with_sigkill_leaves_a_valid_database(tmp_path):
    db = tmp_path / "killed.sqlite"
    source = MockSource("k.status", rate_hz=500, payload={"k": "~counter"})
    with EventServer(source, wait=1) as server:
        child = subprocess.Popen([sys.executable, "-m", "hil.cli", "record", "events", server.url,
                                  "--db", str(db), "--flush", "0.02"], cwd=ROOT,
                                 stderr=subprocess.DEVNULL)
        try:
            def committed() -> int:
                if not db.exists():
                    return 0
                try:
                    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                    try:
                        return con.execute("SELECT count(*) FROM event").fetchone()[0]
                    finally:
                        con.close()
                except sqlite3.Error:
                    return 0
            wait_until(lambda: committed() >= 20, "committed events", timeout=20)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    count, orphans = con.execute(
        "SELECT count(*), sum(NOT EXISTS (SELECT 1 FROM attribute a WHERE a.event_id = e.id)) "
        "FROM event e").fetchone()
    ks = [r[0] for r in con.execute("SELECT CAST(value AS INTEGER) FROM attribute ORDER BY "
                                    "event_id")]
    con.close()
    assert count >= 20 and orphans == 0
    assert ks == list(range(ks[0], ks[0] + len(ks)))          # whole batches, none torn


def test_locked_database_is_a_clear_error(tmp_path):
    db = tmp_path / "locked.sqlite"
    EventWriter(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(InstrumentError, match="is locked by another process"):
            EventWriter(db, busy_timeout=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_full_database_is_a_clear_error_and_keeps_earlier_batches(tmp_path):
    db = tmp_path / "full.sqlite"
    big = {"blob": "x" * 2000}
    writer = EventWriter(db, max_bytes=200_000)
    with pytest.raises(InstrumentError, match="is full"):
        for _ in range(200):
            writer.write([codec.Event("t", dict(big)) for _ in range(5)])
    written = writer.events_written
    writer.close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM event").fetchone()[0] == written > 0
    con.close()


def test_lazy_subscriber_reports_a_malformed_body_it_was_not_waiting_for():
    """Bodies are parsed when looked at: a bad one on another topic still fails the check."""
    from hil.errors import ValidationError
    with EventPublisher() as pub, EventSubscriber(pub.url, strict=False) as sub:
        pub.wait_for_subscribers(1, timeout=10)
        pub.send_frames([b"other", b'{"broken":'])
        pub.send_frames([b"t", b'{"__seq":1,"v":1}'])          # __seq not last: parsed
        pub.send_frames([b"t", b'{"v":2,"__seq":3}'])          # read from the text
        assert sub.expect_event("t", {"v": 2}, timeout=10)["__seq"] == 3
        assert sub.malformed == 0                              # never looked at yet
        assert sub.seq_stats("t")["t"].missing == 1
        with pytest.raises(ValidationError, match="1 malformed"):
            sub.check_sequence()
        assert [ev.topic for ev in sub.history()] == ["t", "t"]


HUGE = b"1" + b"0" * 400                # a JSON integer no float can hold


@pytest.mark.parametrize("hostile", [
    b'{"__seq":2,"__data_time":' + HUGE + b"}",       # parsed by the reader (seq not last)
    b'{"__data_time":' + HUGE + b',"__seq":2}',       # parsed lazily (seq read from the text)
    b'{"s":"\\ud800","__seq":2}',                     # a lone surrogate
    b'{"__seq":99999999999999999999}',                # no int64
    b'{"v":0,"__seq":-1}',
])
def test_hostile_numbers_and_text_are_malformed_and_the_reader_lives_on(hostile):
    with EventPublisher() as pub, EventSubscriber(pub.url, strict=False) as sub:
        pub.wait_for_subscribers(1, timeout=10)
        pub.send_frames([b"t", b'{"v":1,"__seq":1}'])
        pub.send_frames([b"t", hostile])
        pub.send_frames([b"t", b'{"v":3,"__seq":3}'])
        assert sub.expect_event("t", {"v": 3}, timeout=10)["__seq"] == 3
        assert [e["v"] for e in sub.history(topic="t")] == [1, 3]   # every body looked at
        assert sub.malformed == 1
