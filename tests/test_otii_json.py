"""The Otii JSON-lines codec: framing, message shapes, error replies, fast number formatting."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from otii_tcp_client.otii_exception import Otii_Exception

from hil.errors import ProtocolError
from hil.protocols import otii_json as oj


def test_encode_is_one_ascii_line_ending_in_crlf() -> None:
    line = oj.encode(oj.response("arc_get_property", "7", {"value": "µA\nnext"}))
    assert line.endswith(b"\r\n") and line.count(b"\n") == 1
    assert line.isascii()
    assert json.loads(line)["data"]["value"] == "µA\nnext"


def test_decode_refuses_what_is_not_a_json_object() -> None:
    with pytest.raises(ProtocolError, match="not JSON"):
        oj.decode(b"<html>", where="h:1")
    with pytest.raises(ProtocolError, match="not an object"):
        oj.decode(b"[1, 2]")


def test_line_splitter_takes_lf_or_crlf_and_skips_empty_lines() -> None:
    split = oj.LineSplitter()
    assert split.feed(b'{"a":1}\r\n\r\n{"b"') == [b'{"a":1}']
    assert split.pending == 4
    assert split.feed(b':2}\n') == [b'{"b":2}']


def test_crlf_splitter_only_ends_lines_at_crlf_like_the_vendor_client() -> None:
    split = oj.CrlfSplitter()
    assert split.feed(b'{"a":1}\n{"b":2}\r') == []
    assert split.feed(b'\n{"c"') == [b'{"a":1}\n{"b":2}']
    assert split.feed(b':3}\r\n') == [b'{"c":3}']


def test_request_without_parameters_has_no_data_key() -> None:
    assert oj.request("otii_is_logged_in", trans_id="1") == {
        "type": "request", "cmd": "otii_is_logged_in", "trans_id": "1"}


def test_parse_request_defaults_and_failures() -> None:
    req = oj.parse_request(b'{"type":"request","cmd":"otii_logout"}')
    assert (req.cmd, req.data, req.has_trans_id, req.has_data) == ("otii_logout", {}, False, False)
    with pytest.raises(oj.RequestError) as bad:
        oj.parse_request(b"{nope")
    assert bad.value.code == "Not able to parse request" and bad.value.request is None
    with pytest.raises(oj.RequestError) as missing:
        oj.parse_request(b'{"type":"request","trans_id":"x9"}')
    assert missing.value.code == "Missing key in request"
    assert missing.value.request is not None and missing.value.request.trans_id == "x9"


def test_reply_without_id_when_the_request_had_none() -> None:
    req = oj.parse_request(b'{"cmd":"otii_logout"}')
    assert "trans_id" not in oj.response(req.cmd, req.reply_id)


@pytest.mark.parametrize("code", oj.ERROR_CODES)
def test_every_error_code_makes_a_clean_vendor_exception(code: str) -> None:
    reply = json.loads(oj.encode(oj.error(code, "arc_get_main", "5")))
    exc = Otii_Exception(reply)            # KeyError/TypeError here would break the client
    assert exc.type == code
    assert set(oj.ERROR_FIELDS[code]) <= set(reply["data"])


def test_error_fields_the_client_concatenates_are_strings() -> None:
    reply = oj.error("Request too large", "x", "1", read_size=5_000_000, max_size=4_194_304)
    assert reply["data"]["read_size"] == "5000000"
    assert "Bytes received when aborted" in Otii_Exception(reply).message


def test_connection_denied_has_an_empty_trans_id() -> None:
    msg = oj.denied("busy")
    assert msg["trans_id"] == "" and msg["errorcode"] == "Connection denied"


def test_check_reply() -> None:
    assert oj.check_reply(oj.response("c", "1", {"x": 1}), "1") == {"x": 1}
    with pytest.raises(oj.ErrorReply) as err:
        oj.check_reply(oj.error("Invalid key value", "c", "1", key="value", value=9))
    assert err.value.code == "Invalid key value" and err.value.data["value"] == 9
    with pytest.raises(ProtocolError, match="trans_id"):
        oj.check_reply(oj.response("c", "2"), "1")


def test_format_numbers_fixed_width_examples() -> None:
    text = oj.format_numbers(np.array([3.1002e-3, 4.213e-6, -2e-9, 0.0, 25.0]), 5)
    assert text == b"31002e-07,42130e-10,-2000e-12,0.000e+00,25000e-03"
    assert oj.format_numbers(np.array([]), 5) == b""
    with pytest.raises(ValueError):
        oj.format_numbers(np.array([math.nan]), 5)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=1, max_size=50), st.integers(min_value=2, max_value=12))
def test_format_numbers_round_trips_within_its_digits(values: list[float], digits: int) -> None:
    v = np.array(values)
    text = oj.format_numbers(v, digits)
    back = np.array(json.loads(b"[" + text + b"]"), dtype=float)
    assert all(isinstance(x, float) for x in json.loads(b"[" + text + b"]"))
    assert len({len(p) for p in text.split(b",")}) == 1          # every number equally wide
    kept = np.where(v < 0, digits - 1, digits)
    tol = np.abs(v) * 0.51 * 10.0 ** (1 - kept) + 1e-80
    assert np.all(np.abs(back - v) <= tol)


def test_analog_reply_parses_like_a_normal_response() -> None:
    values = np.linspace(0, 1e-3, 7)
    line = oj.analog_reply("recording_get_channel_data", "12", 0.5, 0.00025,
                           oj.format_numbers(values, 6))
    assert line.endswith(b"\r\n")
    msg = json.loads(line)
    assert msg["trans_id"] == "12" and msg["type"] == "response"
    assert msg["data"]["data_type"] == "analog" and msg["data"]["timestamp"] == 0.5
    assert np.allclose(msg["data"]["values"], values, rtol=1e-5)

# ------------------------------------------------------------------ properties: decoding lines
# Whatever a peer sends, the codec gives correct values or a ProtocolError naming the field
# (and, for a line that is not JSON, the offset in it): never another exception, never a
# silently wrong value.

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                      st.floats(allow_nan=False, allow_infinity=False))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=20)
message = st.dictionaries(st.text(max_size=8), json_value, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_of_random_bytes_is_an_object_or_a_protocol_error(line: bytes) -> None:
    try:
        obj = oj.decode(line, where="h:1")
    except ProtocolError as exc:
        assert exc.field == "line" and exc.where == "h:1"
        assert exc.offset is None or 0 <= exc.offset <= len(line)
    else:
        assert isinstance(obj, dict) and obj == json.loads(line)


@settings(max_examples=200, deadline=None)
@given(message, st.data())
def test_decode_of_a_truncated_line_is_a_protocol_error_with_its_offset(
        msg: dict, data: st.DataObject) -> None:
    line = oj.encode(msg)[:-2]
    assert oj.decode(line) == msg
    cut = data.draw(st.integers(min_value=0, max_value=len(line) - 1))
    with pytest.raises(ProtocolError) as err:
        oj.decode(line[:cut])
    assert err.value.field == "line" and err.value.offset is not None
    assert 0 <= err.value.offset <= cut


@pytest.mark.parametrize("depth", [10, 400, 5_000, 200_000])
@pytest.mark.parametrize("opener, closer", [(b"[", b"]"), (b'{"a":', b"}")])
def test_deeply_nested_lines_are_protocol_errors_not_recursion_errors(
        depth: int, opener: bytes, closer: bytes) -> None:
    line = b'{"data":' + opener * depth + b"1" + closer * depth + b"}"
    try:
        msg = oj.decode(line)
    except ProtocolError as exc:
        assert depth >= 5_000 and exc.field == "line" and exc.offset is not None
        before = line[:exc.offset]                            # where it got too deep
        assert before.count(b"[") + before.count(b"{") == oj.MAX_NESTING
        assert line[exc.offset:exc.offset + 1] in (b"[", b"{")
    else:
        assert msg == json.loads(line)
    with pytest.raises(oj.RequestError) as err:               # the server side alike
        oj.parse_request(opener * depth)
    assert err.value.code in ("Not able to parse request", "Missing key in request")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=100))
def test_parse_request_only_raises_request_errors(line: bytes) -> None:
    try:
        req = oj.parse_request(line)
    except oj.RequestError as exc:
        assert exc.code in ("Not able to parse request", "Missing key in request",
                            "Invalid key type")
    else:
        assert isinstance(req.cmd, str) and isinstance(req.data, dict)


def test_an_oversized_line_is_refused_by_both_splitters() -> None:
    client = oj.CrlfSplitter(max_bytes=100)
    assert client.feed(b"x" * 60) == []
    with pytest.raises(ProtocolError) as err:
        client.feed(b"x" * 60 + b"\r\n")
    assert err.value.field == "line" and err.value.offset == 100
    server = oj.LineSplitter(max_bytes=100)
    assert server.feed(b'{"a":1}\n' + b"y" * 150) == [b'{"a":1}']
    assert server.pending <= 100                              # the excess is not kept
    out = server.feed(b"y" * 500 + b'\r\n{"b":2}\n')
    assert out == [oj.Oversized(650), b'{"b":2}']             # one answer per line, in order


# ------------------------------------------------------------------ properties: values arrays
def _reference(items: list) -> np.ndarray | None:
    """What the values must be: json.loads' numbers as float64; None when any is no finite
    number (bool, string, null, NaN, infinity or beyond any double)."""
    loaded = json.loads(json.dumps(items))
    if any(type(v) not in (int, float) for v in loaded):
        return None
    try:
        arr = np.array(loaded, dtype=np.float64)
    except OverflowError:
        return None
    return arr if np.isfinite(arr).all() else None


item = st.one_of(st.floats(), st.integers(min_value=-10**400, max_value=10**400),
                 st.booleans(), st.none(), st.text(max_size=3), st.lists(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(
    min_value=-2**60, max_value=2**60)), max_size=30) | st.lists(item, max_size=30))
def test_analog_values_are_json_loads_numbers_or_a_protocol_error(items: list) -> None:
    data = {"data_type": "analog", "timestamp": 0.25, "interval": 0.00025, "values": items}
    want = _reference(items)
    if want is None:
        with pytest.raises(ProtocolError) as err:
            oj.analog_values(data, len(items), where="h:1")
        assert err.value.field == "values" and err.value.where == "h:1"
        bad = next(k for k in range(len(items)) if _reference([items[k]]) is None)
        assert f"values[{bad}]" in str(err.value)            # the first bad item, by index
    else:
        t, dt, got = oj.analog_values(data, len(items))
        assert (t, dt) == (0.25, 0.00025) and got.dtype == np.float64
        assert np.array_equal(got, want) and np.array_equal(np.signbit(got), np.signbit(want))


@settings(max_examples=100, deadline=None)
@given(st.lists(finite, min_size=1, max_size=60), st.integers(min_value=2, max_value=12))
def test_analog_reply_lines_read_back_as_json_loads_reads_them(
        values: list[float], digits: int) -> None:
    line = oj.analog_reply("recording_get_channel_data", "9", 1.5, 0.001,
                           oj.format_numbers(np.array(values), digits))
    data = oj.check_reply(oj.decode(line[:-2]), "9")
    _, _, got = oj.analog_values(data, len(values))
    assert np.array_equal(got, np.array(json.loads(line)["data"]["values"], dtype=np.float64))


@pytest.mark.parametrize("data, field", [
    ({"timestamp": 0, "interval": 1, "values": [1.0]}, None),
    ({"timestamp": 0, "interval": 1, "values": [1.0, 2.0]}, "values"),     # count differs
    ({"timestamp": 0, "interval": 1, "values": {"0": 1.0}}, "values"),
    ({"timestamp": 0, "interval": 1}, "values"),
    ({"timestamp": "0", "interval": 1, "values": [1.0]}, "timestamp"),
    ({"timestamp": 0, "interval": True, "values": [1.0]}, "interval"),
    ({"timestamp": 0, "interval": 1e999, "values": [1.0]}, "interval"),
    ({"data_type": "digital", "timestamp": 0, "interval": 1, "values": [1.0]}, "data_type"),
    ([1.0], "data"),
    # the shape that fooled the old fast path: a values array inside another object
    ({"values": [], "meta": {"values": [1.5]}, "timestamp": 0, "interval": 1}, "values"),
])
def test_analog_values_checks_the_reply_shape(data: object, field: str | None) -> None:
    if field is None:
        assert oj.analog_values(data, 1)[2].tolist() == [1.0]
        return
    with pytest.raises(ProtocolError) as err:
        oj.analog_values(data, 1)
    assert err.value.field == field


def test_events_need_a_timestamp_and_a_value_of_the_type() -> None:
    levels = [{"timestamp": 0.5, "value": True}, {"timestamp": 1, "value": False}]
    assert oj.events({"values": levels}, bool) == levels
    assert oj.events({"values": [{"timestamp": 0, "value": "boot"}]}, str)[0]["value"] == "boot"
    for bad in ([{"value": True}], [{"timestamp": "x", "value": True}], [{"timestamp": 1}],
                [{"timestamp": 1, "value": 1}], [3]):
        with pytest.raises(ProtocolError, match=r"values\[0\]") as err:
            oj.events({"values": bad}, bool, where="h:2")
        assert err.value.field == "values" and err.value.where == "h:2"
    with pytest.raises(ProtocolError):
        oj.events({"values": None})
