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


# ------------------------------------------------------------------ reading bulk numbers


def _loads(text: bytes) -> np.ndarray:
    return np.array(json.loads(b"[" + text + b"]"), dtype=np.float64)


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal values and equal signs of zero (json.loads reads "-0" as 0 but "-0.0" as -0.0)."""
    return bool(np.array_equal(got, want) and np.array_equal(np.signbit(got), np.signbit(want)))


@pytest.mark.parametrize("text", [
    b"", b"7", b"-7", b"0", b"-0", b"-0.0", b"-0e0", b"1.5", b"10,20,30", b"1,-2,3",
    b"1e5,2E5,3e+5,4e-5", b"1.25e-3,-9.5E+2", b"0.1,0.2,0.3", b"1.00,2.00",
    b"31002e-07,-4201e-13,0.000e+00,25000e-03",
    b"12345678901234567,12345678901234568",                  # 17 digits: past 2**53
    b"9007199254740993,9007199254740992", b"123456789012345678901",
    b"1e-400,2e-400", b"1e22,1e23,1e-22,1e-23", b"5e-324", b"1.7976931348623157e308",
    b"1, 2,3", b"1,22,333",                                  # not one width: json.loads path
])
def test_parse_numbers_reads_what_json_loads_reads(text: bytes) -> None:
    got = oj.parse_numbers(text)
    assert got.dtype == np.float64 and _same(got, _loads(text))


@pytest.mark.parametrize("text", [
    b"01", b"-01", b"1.", b".5", b"+1", b"1e", b"1e+", b"--1", b"1,,2", b",1", b"1,",
    b"nan", b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"1" + b"0" * 400,
    b"true", b"null", b'"1"', b"[1]", b"{}", b"1 2", b"-", b"0x10", b"1_000", b"\xff",
    b"12,ab", b"1.5.2", b"1e5e5",
])
def test_parse_numbers_refuses_what_is_no_finite_json_number(text: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        oj.parse_numbers(text, field="values", where="otii:1905")
    assert info.value.field == "values" and info.value.where == "otii:1905"


def test_parse_numbers_into_out_checks_the_count() -> None:
    out = np.full(3, np.nan)
    assert oj.parse_numbers(b"1,2,3", out) is out and out.tolist() == [1.0, 2.0, 3.0]
    for text in (b"1,2", b"1,2,3,4", b"1, 2", b""):
        with pytest.raises(ProtocolError, match="expected 3") as info:
            oj.parse_numbers(text, np.empty(3))
        assert info.value.field == "values"


def test_parse_numbers_fast_path_with_odd_numbers_among_many(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of one width with a few numbers of another shape (zeros, a sign, a big mantissa)
    are read exactly; so is a block whose middle number is the odd one."""
    monkeypatch.setattr(oj, "PARSE_BLOCK", 64)
    rng = np.random.default_rng(2)
    values = rng.normal(3e-3, 1e-4, 1000)
    values[::97] = 0.0
    values[32] = 0.0                                        # the middle of the first block
    values[5::131] *= -1
    text = oj.format_numbers(values, 5)
    assert _same(oj.parse_numbers(text), _loads(text))
    tokens = text.split(b",")
    tokens[7] = b"9.999e-03"                                 # same width, other shape
    tokens[8] = b"99999999e0"
    odd = b",".join(tokens)
    assert _same(oj.parse_numbers(odd), _loads(odd))
    tokens[9] = b"9x999e-03"                                 # not a number: refused
    with pytest.raises(ProtocolError):
        oj.parse_numbers(b",".join(tokens))


def test_parse_numbers_takes_the_slow_path_when_most_numbers_are_odd(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    slow = oj._json_numbers
    monkeypatch.setattr(oj, "_json_numbers", lambda *a: calls.append(1) or slow(*a))
    mixed = b",".join(b"1.5e+00" if k % 2 else b"25000e-3" for k in range(400))
    assert _same(oj.parse_numbers(mixed), _loads(mixed)) and calls == [1]
    calls.clear()
    same = oj.format_numbers(np.linspace(1e-6, 1e-3, 400), 6)
    assert _same(oj.parse_numbers(same), _loads(same)) and calls == []


@settings(max_examples=150, deadline=None)
@given(st.lists(finite, min_size=1, max_size=300), st.integers(min_value=2, max_value=15))
def test_parse_numbers_of_format_numbers_equals_json_loads(values: list[float],
                                                           digits: int) -> None:
    text = oj.format_numbers(np.array(values), digits)
    assert _same(oj.parse_numbers(text), _loads(text))


json_number = st.one_of(
    st.integers(min_value=-10**30, max_value=10**30).map(lambda i: str(i).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.from_regex(rb"\A-?(0|[1-9][0-9]{0,19})(\.[0-9]{1,19})?([eE][+-]?[0-9]{1,3})?\Z"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(json_number, min_size=1, max_size=40), st.booleans())
def test_parse_numbers_of_any_json_numbers_equals_json_loads(tokens: list[bytes],
                                                            one_width: bool) -> None:
    if one_width:                          # one shape, one width: the fast path's input
        tokens = [tokens[0]] * len(tokens)
    text = b",".join(tokens)
    try:
        want = _loads(text)
    except (ValueError, OverflowError):
        want = None
    if want is None or not np.all(np.isfinite(want)):
        with pytest.raises(ProtocolError):
            oj.parse_numbers(text)
    else:
        assert _same(oj.parse_numbers(text), want)


def test_decode_values_cuts_out_the_values_array() -> None:
    values = np.array([1e-3, -2e-6, 0.0])
    line = oj.analog_reply("recording_get_channel_data", "9", 0.5, 0.00025,
                           oj.format_numbers(values, 5))[:-2]
    msg, text = oj.decode_values(line)
    assert msg["trans_id"] == "9" and msg["data"]["values"] == []
    assert msg["data"]["timestamp"] == 0.5
    assert text is not None and _same(oj.parse_numbers(text), _loads(text))
    empty = oj.analog_reply("recording_get_channel_data", "9", 0.0, 1.0, b"")[:-2]
    assert oj.decode_values(empty)[1] == b""


@pytest.mark.parametrize("line", [
    b'{"type":"error","errorcode":"Invalid key value","cmd":"x","trans_id":"1","data":{}}',
    b'{"type":"response","cmd":"x","data":{"values": [1,2]}}',            # spaced: no cut
    b'{"type":"response","cmd":"x","data":{"values":[1]},"values":[2]}',  # another "values"
    b'{"type":"response","cmd":"x","data":{"values":[1],"note":"]"}}',     # a "]" after it
    b'{"type":"response","cmd":"x","data":{"values":[1,2]},"extra":[3]}',
])
def test_decode_values_falls_back_to_the_whole_line(line: bytes) -> None:
    msg, text = oj.decode_values(line)
    assert text is None and msg == json.loads(line)


def test_decode_values_of_a_broken_line_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        oj.decode_values(b'{"type":"response","data":{"values":[1,2]', where="otii:1905")
