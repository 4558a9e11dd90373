"""The event codec: wire frames, reserved keys, attribute rows by data type (with properties)."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.errors import ProtocolError
from hil.protocols import events as codec
from hil.protocols.events import Prepared, SeqStats
from hil.protocols.events_db import EventWriter

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
names = st.text(min_size=1, max_size=12).filter(lambda k: not k.startswith("__"))
bodies = st.dictionaries(names, json_values, max_size=8)


@settings(max_examples=80, deadline=None)
@given(topic=st.text(min_size=1, max_size=30).filter(lambda t: "\x00" not in t), body=bodies)
def test_encode_decode_round_trip(topic, body):
    ev = codec.decode(codec.encode(topic, body), received=1.0)
    assert ev.topic == topic and ev.body == body and ev.fields == body


@settings(max_examples=80, deadline=None)
@given(body=st.dictionaries(names, json_values, max_size=8).filter(
    lambda b: not any("\x00" in str(k) + (v if isinstance(v, str) else "") for k, v in b.items())))
def test_attribute_view_rows_decode_to_the_written_values(body):
    """The stored form: EventWriter's `body` text seen through the `attribute` view (SQLite
    cuts a name or a text value at NUL there: documented in events_db)."""
    with tempfile.TemporaryDirectory() as tmp:
        with EventWriter(Path(tmp) / "e.sqlite") as writer:
            writer.write([codec.Event("t", body)])
            rows = writer._db.execute("SELECT name, value, data_type FROM attribute "
                                      "WHERE event_id = 1").fetchall()
    assert [name for name, _, _ in rows] == list(body)
    for name, text, kind in rows:
        assert kind in codec.WRITTEN_TYPES
        assert codec.from_row(text, kind) == body[name]
        if kind != "str":                # the conversion flags never touch a typed value
            assert codec.from_row(text, kind, numbers=True, bools=True) == body[name]


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=20))
def test_conversions_are_fail_safe(text):
    number = codec.convert_number(text)
    assert number == text or isinstance(number, (int, float))
    flag = codec.convert_bool(text)
    assert flag == text or flag is (text.lower() == "true")
    # an untyped or unknown-typed value never raises, whatever the flags
    for kind in ("str", "string", "number", "boolean", "weird"):
        codec.from_row(text, kind, numbers=True, bools=True)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=60))
def test_arbitrary_bytes_give_protocol_error_or_event(data):
    try:
        ev = codec.decode([b"t", data])
    except ProtocolError as exc:
        assert exc.field in ("body", codec.DATA_TIME, codec.WIRE_TIME, codec.SEQ)
    else:
        assert isinstance(ev.body, dict)


@settings(max_examples=80, deadline=None)
@given(seqs=st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_seq_stats_count_every_missing_number(seqs):
    stats = SeqStats("t")
    for s in seqs:
        stats.observe(s)
    rising = all(b > a for a, b in zip(seqs, seqs[1:]))
    if rising:
        assert stats.missing == seqs[-1] - seqs[0] - (len(seqs) - 1)
        assert stats.repeats == 0
    else:
        assert stats.repeats > 0


@settings(max_examples=60, deadline=None)
@given(body=bodies, d=st.floats(0, 2e9), w=st.floats(0, 2e9), seq=st.integers(1, 10**6))
def test_prepared_text_equals_encoded_dict(body, d, w, seq):
    fields = codec.encode_body(body).decode()
    decoded = codec.parse_body(Prepared("t", fields, d, w).text(seq))
    assert decoded == {**body, codec.DATA_TIME: d, codec.WIRE_TIME: w, codec.SEQ: seq}


def test_non_finite_numbers_go_out_as_null():
    ev = codec.decode(codec.encode("t", {"a": math.nan, "b": [math.inf, 1.5]}))
    assert ev.body == {"a": None, "b": [None, 1.5]}


def test_prepare_copies_and_stamps_wire_time_only_when_absent():
    event = {"x": 1}
    body = codec.prepare(event, now=5.0)
    assert body == {"x": 1, codec.WIRE_TIME: 5.0} and event == {"x": 1}
    assert codec.prepare('{"x": 2, "__wire_time": 1.5}', now=5.0)[codec.WIRE_TIME] == 1.5


@pytest.mark.parametrize("frames, field", [
    ([b"t"], "frames"),
    ([b"", b"{}"], "topic"),
    ([b"\xff", b"{}"], "topic"),
    ([b"t", b"[1]"], "body"),
    ([b"t", b"{broken"], "body"),
    ([b"t", b'{"__data_time": "noon"}'], codec.DATA_TIME),
    ([b"t", b'{"__seq": 1.5}'], codec.SEQ),
])
def test_malformed_messages_name_the_field(frames, field):
    with pytest.raises(ProtocolError) as info:
        codec.decode(frames)
    assert info.value.field == field


@pytest.mark.parametrize("text, kind, problem", [
    ("12x", "int", "not an integer"), ("{", "json", "broken"), (None, "float", "NULL"),
    ("maybe", "bool", "true/false")])
def test_bad_typed_rows_are_clear_errors(text, kind, problem):
    with pytest.raises(ProtocolError, match=problem):
        codec.from_row(text, kind)


def test_tcs_types_convert_only_when_asked():
    assert codec.from_row("42", "number") == "42"
    assert codec.from_row("42", "number", numbers=True) == 42
    assert codec.from_row("4.5", "number", numbers=True) == 4.5
    assert codec.from_row("TRUE", "boolean", bools=True) is True
    assert codec.from_row("1", "boolean", bools=True, numbers=True) == 1  # bool first: stays 1


def test_unencodable_value_names_its_key():
    with pytest.raises(ProtocolError) as info:
        codec.encode("t", {"ok": 1, "bad": object()})
    assert info.value.field == "bad"


# --------------------------------------------------------------------------- lazy decoding
seq_values = st.none() | st.integers(0, 2**40) | st.integers(-5, -1) | st.floats(0, 9) | \
    st.text(max_size=3)


@settings(max_examples=200, deadline=None)
@given(body=bodies, seq=seq_values, nested=st.booleans(), last=st.booleans(),
       space=st.sampled_from(["", " ", "\n "]))
def test_raw_seq_agrees_with_parsing_or_defers(body, seq, nested, last, space):
    """Whenever raw_seq settles `__seq` from the text, it is what parsing the body gives."""
    body = dict(body)
    if nested:
        body["inner"] = {"__seq": 99}
    if seq is not None:
        if last:
            body["__seq"] = seq
        else:
            body = {"__seq": seq, **body}
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":" + space)).encode()
    known, found = codec.raw_seq(raw)
    if known:
        assert found == codec.parse_body(raw).get("__seq")


@pytest.mark.parametrize("raw", [b'{"a":{"__seq":4}}', b'{"\\u005f_seq":3}', b'{"__seq":3,"b":1}'])
def test_raw_seq_defers_when_only_parsing_can_tell(raw):
    assert codec.raw_seq(raw) == (False, None)


def test_lazy_event_parses_on_access_and_names_the_topic():
    good = codec.decode_lazy([b"a.b", b'{"x":1,"__seq":2}'], received=5.0)
    assert not good.checked and good["x"] == 1 and good.seq == 2 and good.parsed
    bad = codec.decode_lazy([b"a.c", b"{not json"])
    assert not bad.checked
    with pytest.raises(ProtocolError, match="event 'a.c'.*not JSON"):
        bad.body
    assert bad.checked and not bad.parsed and "(malformed)" in bad.describe()
    with pytest.raises(ProtocolError, match="2 frames"):
        codec.decode_lazy([b"only-topic"])
