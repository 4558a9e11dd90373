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
