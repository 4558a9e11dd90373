"""Replay of SQLite event databases: both schemas, ordering, filters, conversions, bad rows."""
from __future__ import annotations

import json
import math
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.errors import InstrumentError, ProtocolError, SimulatorError
from hil.protocols.events import DATA_TIME, WIRE_TIME, Event, parse_body
from hil.protocols.events_db import EventWriter
from hil.sim.events_mock import MockSource
from hil.sim.events_replay import Replay

T0 = 1767225600.0


def ours(path: Path, events: list[tuple[str, dict]]) -> Path:
    with EventWriter(path) as writer:
        writer.write([Event(topic, body) for topic, body in events])
    return path


def tcs_form(path: Path, rows: list[tuple[int, str, float | None, list[tuple]]]) -> Path:
    """A database the way tcs_lib stores it: __wire_time is an attribute row."""
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE event (id INTEGER PRIMARY KEY, topic TEXT, __data_time REAL);"
                     "CREATE TABLE attribute (event_id INTEGER, name TEXT, value TEXT, "
                     "data_type TEXT);")
    for event_id, topic, data_time, attrs in rows:
        db.execute("INSERT INTO event VALUES (?, ?, ?)", (event_id, topic, data_time))
        db.executemany("INSERT INTO attribute VALUES (?, ?, ?, ?)",
                       [(event_id, *a) for a in attrs])
    db.commit()
    db.close()
    return path


def schema_1(path: Path, rows: str) -> Path:
    """A database in hil's schema 1 (attribute rows in a table, no constraints), with `rows`."""
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE event (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, __data_time REAL, "
        "__wire_time REAL, __seq INTEGER, receive_time REAL, body TEXT);"
        "CREATE TABLE attribute (event_id INTEGER, name TEXT, value TEXT, data_type TEXT);"
        + rows)
    db.close()
    return path


def fields(items) -> list[tuple[str, dict]]:
    return [(t, {k: v for k, v in b.items() if not k.startswith("__")})
            for t, b in (i for i in items if i is not None)]


def test_our_schema_replays_identical_payloads(tmp_path):
    sent = [("a.x", {"n": 1, "f": 0.1, "s": "é\n\"", "b": True, "z": None, "j": [1, {"k": 2}],
                     DATA_TIME: T0, WIRE_TIME: T0 + 0.001}),
            ("a.y", {DATA_TIME: T0 + 0.5, WIRE_TIME: T0 + 0.501})]
    db = ours(tmp_path / "e.sqlite", sent)
    for replay in (Replay(db, speedup=0), Replay(db, speedup=0, keep_original=True)):
        got = list(replay.dicts())
        assert fields(got) == fields(sent)
        # times are rebased to the replay start, offsets kept (scale 1 when unlimited)
        assert got[1][1][DATA_TIME] - got[0][1][DATA_TIME] == pytest.approx(0.5, abs=1e-6)
        assert got[0][1][WIRE_TIME] - got[0][1][DATA_TIME] == pytest.approx(0.001, abs=1e-6)
    assert got[0][1]["__orig_wire_time"] == T0 + 0.001


def test_speedup_scales_the_rewritten_times(tmp_path):
    db = ours(tmp_path / "e.sqlite", [("t", {"k": i, DATA_TIME: T0 + i, WIRE_TIME: T0 + i})
                                      for i in range(3)])
    replay = Replay(db, speedup=1000)
    times = [b[DATA_TIME] for _, b in replay.dicts()]
    assert times[2] - times[0] == pytest.approx(2 / 1000, abs=1e-6)


def test_tcs_lib_form_with_conversions_and_wire_time_order(tmp_path):
    db = tcs_form(tmp_path / "tcs.sqlite", [
        (1, "tcs.mount", T0 + 2, [("el", "62.5", "number"), ("on", "true", "boolean"),
                                  ("__wire_time", str(T0 + 3), "number")]),
        (2, "tcs.mount", T0 + 1, [("el", "10", "number"), ("on", "False", "boolean"),
                                  ("name", "0042", "string"), ("__wire_time", str(T0 + 1.5),
                                                               "number")]),
        (3, "tcs.dome", T0 + 4, [("az", "x1", "number"), ("__wire_time", str(T0 + 4), "number")]),
    ])
    plain = fields(Replay(db, speedup=0).dicts())
    assert plain[0] == ("tcs.mount", {"el": "62.5", "on": "true"})      # text unless asked
    converted = fields(Replay(db, speedup=0, sort_by=WIRE_TIME, convert_number=True,
                              convert_bool=True).dicts())
    assert converted == [("tcs.mount", {"el": 10, "on": False, "name": 42}),
                         ("tcs.mount", {"el": 62.5, "on": True}),
                         ("tcs.dome", {"az": "x1"})]                     # fail-safe: unchanged
    by_data = fields(Replay(db, speedup=0, sort_by=DATA_TIME).dicts())
    assert [b.get("el") for _, b in by_data] == ["10", "62.5", None]
    wire = [b[WIRE_TIME] for _, b in Replay(db, speedup=0, sort_by=WIRE_TIME).dicts()]
    assert wire == sorted(wire)


def test_topic_filter_yields_none_for_filtered_events(tmp_path):
    db = ours(tmp_path / "e.sqlite", [("a.1", {"i": 1}), ("b.1", {"i": 2}), ("a.2", {"i": 3})])
    exact = Replay(db, speedup=0, topics=["a.1"])
    items = list(exact)
    assert items[1] is None and items[2] is None and items[0][0] == "a.1"
    assert exact.stats.filtered == 2 and exact.stats.sent == 1
    prefix = fields(Replay(db, speedup=0, topics=["a."], prefix=True).dicts())
    assert [b["i"] for _, b in prefix] == [1, 3]


def test_bad_rows_are_counted_skips_never_a_crash(tmp_path):
    db = tcs_form(tmp_path / "bad.sqlite", [
        (1, "ok", T0, [("v", "1", "int")]),
        (2, "t", T0 + 1, [("v", "{broken", "json")]),
        (3, "t", T0 + 2, [("v", None, "float")]),
        (4, "t", T0 + 3, [(None, "1", "str")]),
        (5, None, T0 + 4, [("v", "1", "str")]),
        (6, "t", None, [("v", "x", "mystery")]),
        (7, "ok", T0 + 5, [("v", "2", "int")]),
    ])
    replay = Replay(db, speedup=0)
    got = fields(replay.dicts())
    assert got == [("ok", {"v": 1}), ("t", {"v": "x"}), ("ok", {"v": 2})]
    stats = replay.stats
    assert stats.skipped == {"broken JSON": 1, "missing value": 1,
                             "missing attribute name": 1, "no topic": 1}
    assert stats.unknown_types == 1 and stats.null_times == 1
    assert "event 2" in " ".join(stats.examples) and "4 skipped" in stats.summary()
    with pytest.raises(ProtocolError, match="event 2: broken JSON"):
        list(Replay(db, speedup=0, strict=True).dicts())


def test_broken_body_text_in_our_schema_is_a_counted_skip(tmp_path):
    db = ours(tmp_path / "e.sqlite", [("t", {"v": 1}), ("t", {"v": 2}), ("t", {"v": 3})])
    con = sqlite3.connect(db)
    con.execute("UPDATE event SET body = '{oops' WHERE id = 1")
    con.execute("UPDATE event SET body = '[1, 2]' WHERE id = 3")
    con.commit()
    assert con.execute("SELECT event_id, value FROM attribute").fetchall() == [(2, "2")]
    con.close()
    for options in ({}, {"convert_number": True}):      # the fast path and the decoding one
        replay = Replay(db, speedup=0, **options)
        assert fields(replay.dicts()) == [("t", {"v": 2})]
        assert replay.stats.skipped == {"broken JSON": 2}
        with pytest.raises(ProtocolError, match="event 1: broken JSON"):
            list(Replay(db, speedup=0, strict=True, **options).dicts())


def test_conversions_apply_to_text_values_of_our_schema(tmp_path):
    db = ours(tmp_path / "e.sqlite", [("t", {"n": "42", "f": "2.5", "b": "TRUE", "x": "x1",
                                             "k": 7, "j": ["1"]})])
    assert fields(Replay(db, speedup=0, convert_number=True, convert_bool=True).dicts()) == \
        [("t", {"n": 42, "f": 2.5, "b": True, "x": "x1", "k": 7, "j": ["1"]})]
    assert fields(Replay(db, speedup=0, convert_bool=True).dicts()) == \
        [("t", {"n": "42", "f": "2.5", "b": True, "x": "x1", "k": 7, "j": ["1"]})]


def test_schema_1_files_replay_but_are_not_appended_to(tmp_path):
    """Schema 1 kept attribute rows in a table; such a file still replays."""
    db = schema_1(tmp_path / "v1.sqlite", "INSERT INTO event VALUES (1, 't', 1.0, 1.5, 1, 2.0, "
                  "'{\"v\":1}'); INSERT INTO attribute VALUES (1, 'v', '1', 'int');")
    assert fields(Replay(db, speedup=0).dicts()) == [("t", {"v": 1})]
    with pytest.raises(ProtocolError, match="schema 1.*record into a new file"):
        EventWriter(db)


def test_loop_shifts_times_and_reset_starts_over(tmp_path):
    db = ours(tmp_path / "e.sqlite", [("t", {"i": i, DATA_TIME: T0 + i, WIRE_TIME: T0 + i})
                                      for i in range(3)])
    replay = Replay(db, speedup=0, loop=True)
    stream = replay.dicts()
    got = [next(stream) for _ in range(7)]
    assert [b["i"] for _, b in got] == [0, 1, 2, 0, 1, 2, 0]
    times = [b[DATA_TIME] for _, b in got]
    assert all(b - a == pytest.approx(1.0, abs=1e-6) for a, b in zip(times, times[1:]))
    replay.stop()
    assert next(stream, "ended") == "ended"                     # stop() ends the iteration
    assert next(replay.dicts())[1]["i"] == 0                    # a new iteration starts over


def test_window_selects_by_timing_key(tmp_path):
    db = ours(tmp_path / "e.sqlite", [("t", {"i": i, WIRE_TIME: T0 + i}) for i in range(5)])
    got = fields(Replay(db, speedup=0, window=(T0 + 1, T0 + 3)).dicts())
    assert [b["i"] for _, b in got] == [1, 2, 3]


def test_mock_source_is_reproducible_and_writes_fixtures(tmp_path):
    a = MockSource(rate_hz=0, seed=7)
    first = [b for _, b in a.dicts()]
    again = [b for _, b in MockSource(rate_hz=0, seed=7).dicts()]
    assert len(first) == 1 and first[0]["temperature"] == again[0]["temperature"]
    db = tmp_path / "mock.sqlite"
    MockSource(rate_hz=10, seed=7, payload={"k": "~counter", "s": "~cycle:a|b"}).write_db(db, 4)
    got = fields(Replay(db, speedup=0).dicts())
    assert got == [("lrs2.hardware.status", {"k": i, "s": "ab"[i % 2]}) for i in range(4)]
    with pytest.raises(SimulatorError, match="unknown generator"):
        MockSource(payload={"x": "~bogus"})


@pytest.mark.parametrize("make, error, text", [
    (lambda p: p, InstrumentError, "does not exist"),
    (lambda p: (p.write_bytes(b"not a database at all" * 100), p)[1], InstrumentError,
     "not an SQLite database"),
    (lambda p: (sqlite3.connect(p).execute("CREATE TABLE x (a)"), p)[1], ProtocolError,
     "no table"),
])
def test_unusable_databases_are_clear_errors(tmp_path, make, error, text):
    path = make(tmp_path / "x.sqlite")
    with pytest.raises(error, match=text):
        Replay(path)


def test_bad_parameters_are_simulator_errors(tmp_path):
    db = ours(tmp_path / "e.sqlite", [("t", {})])
    with pytest.raises(SimulatorError, match="sort_by"):
        Replay(db, sort_by="time")
    with pytest.raises(SimulatorError, match="window"):
        Replay(db, window=(2.0, 1.0))



def test_a_received_batch_keeps_good_bodies_and_counts_each_bad_one(tmp_path):
    """write_frames (the recorder's path): hostile bodies cannot change their neighbours."""
    good = [(f"t.{i}", f'{{"i":{i},"__seq":{i + 1},"__wire_time":{T0 + i}}}'.encode())
            for i in range(4)]
    bad = [b'{"a":1}],["evil",0,1,1', b'{"__seq":"5"}', b'\xff{"a":1}', b'[1,2]',
           b'{"__data_time":true}', b'{"a":']
    frames = [(t, b, T0) for t, b in good[:2]] + [("x", b, T0) for b in bad] + \
        [(t, b, T0) for t, b in good[2:]]
    with EventWriter(tmp_path / "e.sqlite") as writer:
        assert writer.write_frames(frames) == len(bad)
        assert writer.write_frames([(t, b, T0) for t, b in good]) == 0      # the fast path
        assert writer.events_written == 8
    got = fields(Replay(tmp_path / "e.sqlite", speedup=0).dicts())
    assert got == [(t, {"i": i}) for i, (t, _) in enumerate(good)] * 2


_values = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8)
_bodies = st.one_of(
    st.dictionaries(st.text(max_size=6).filter(lambda k: not k.startswith("__")), _values,
                    max_size=4).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=24),
    st.sampled_from([b"{}", b'{"__seq":2}', b'{"__seq":"2"}', b'{"__wire_time":1e400}', b"[]",
                     b'{"a":NaN}', b'{"a":1}}', b'{"a":"\\ud800"}', b"\xef\xbb\xbf{}",
                     # found by an attacker's trial: SQLite and Python read these differently
                     b'{"v":1,"__data_time":1' + b"0" * 400 + b"}", b'{"x":NaN,"s":"\\ud800"}',
                     b'{"v":1}\x00junk', b'{"__wire_time":"x","__wire_time":1.5,"v":1}',
                     b'{"v":1,"__seq":"x","__seq":5}', b'{"\\u005f_seq":1,"__seq":2}',
                     b'{"__seq":99999999999999999999}', b'{"__seq":-1}',
                     b'{"a":' + b"[" * 1500 + b"]" * 1500 + b"}", b'{"s":"\\u00e9"}']))


@settings(max_examples=60, deadline=None)
@given(bodies=st.lists(_bodies, min_size=1, max_size=12))
def test_received_batches_store_exactly_the_bodies_the_codec_accepts(bodies):
    """write_frames on random, hostile and truncated bodies: what the codec accepts is
    stored (its fields as sent, in order, whatever its neighbours), each body it rejects is
    counted, nothing else. Numbers only Python reads (NaN, Infinity) are stored as null."""
    check = sqlite3.connect(":memory:")
    expected = []
    for body in bodies:
        try:
            fields_ = {k: v for k, v in parse_body(body).items() if not k.startswith("__")}
        except ProtocolError:
            continue
        if not check.execute("SELECT json_valid(?)", (body.decode(),)).fetchone()[0]:
            fields_ = {k: None if isinstance(v, float) and not math.isfinite(v) else v
                       for k, v in fields_.items()}
        expected.append(fields_)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "e.sqlite"
        with EventWriter(db) as writer:
            malformed = writer.write_frames([("t", b, T0) for b in bodies])
            assert writer.events_written == len(expected)
        assert malformed == len(bodies) - len(expected)
        got = [b for _, b in fields(Replay(db, speedup=0).dicts())]
    assert json.dumps(got) == json.dumps(expected)


def test_a_topic_holding_nul_is_malformed_not_cut(tmp_path):
    with EventWriter(tmp_path / "e.sqlite") as writer:
        assert writer.write_frames([("t\x00evil", b'{"v":1}', T0), ("t", b'{"v":2}', T0)]) == 1
    assert fields(Replay(tmp_path / "e.sqlite", speedup=0).dicts()) == [("t", {"v": 2})]


def test_deeply_nested_bodies_are_malformed_not_a_crash(tmp_path):
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ProtocolError, match="nested too deeply"):
        parse_body(deep)
    with EventWriter(tmp_path / "e.sqlite") as writer:
        assert writer.write_frames([("t", deep, T0), ("t", b'{"ok":1}', T0)]) == 1
    assert fields(Replay(tmp_path / "e.sqlite", speedup=0).dicts()) == [("t", {"ok": 1})]


def test_infinite_times_in_a_database_are_no_time_not_a_crash(tmp_path):
    db = schema_1(tmp_path / "old.sqlite",
                  "INSERT INTO event VALUES (1, 't', 1.0, 9e999, 1, 2.0, '{\"v\":1}');"
                  "INSERT INTO event VALUES (2, 't', -9e999, 2.0, 2, 2.0, '{\"v\":2}');")
    for options in ({}, {"sort_by": WIRE_TIME}, {"keep_original": True}):
        replay = Replay(db, speedup=0, **options)
        got = list(replay.dicts())
        assert sorted(b["v"] for _, b in got) == [1, 2], options
        assert all(math.isfinite(b[WIRE_TIME]) for _, b in got if b.get(WIRE_TIME) is not None)
