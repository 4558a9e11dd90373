"""TiA control messages: encoding, tolerant incremental parsing, malformed input."""
from __future__ import annotations

import pytest

from hil.errors import ProtocolError
from hil.protocols import tia_control as ctl


def parse_all(data: bytes) -> list[ctl.ControlMessage]:
    return ctl.ControlParser().feed(data)


def test_encode_uses_lf_space_and_byte_content_length():
    body = "<x label=\"µV\"/>".encode()
    raw = ctl.encode(ctl.ControlMessage(ctl.METAINFO, body=body))
    assert raw == b"TiA 1.0\nMetaInfo\nContent-Length: " + str(len(body)).encode() + b"\n\n" + body
    assert ctl.encode(ctl.request(ctl.GET_DATA_CONNECTION, "TCP"), space=False) == \
        b"TiA 1.0\nGetDataConnection:TCP\n\n"


@pytest.mark.parametrize("raw", [
    b"TiA 1.0\nGetDataConnection: TCP\n\n",
    b"TiA 1.0\nGetDataConnection:TCP\n\n",
    b"TiA 1.0\r\nGetDataConnection :  TCP \r\n\r\n",
])
def test_colon_spacing_and_crlf_are_tolerated(raw):
    [msg] = parse_all(raw)
    assert (msg.version, msg.command, msg.argument) == ("1.0", "GetDataConnection", "TCP")


@pytest.mark.parametrize("header", [b"Content-Length: 5", b"Content-Length:5",
                                    b"content-length :5", b"CONTENT-LENGTH:   5"])
def test_content_length_variants(header):
    [msg] = parse_all(b"TiA 1.0\nMetaInfo\n" + header + b"\n\nhello")
    assert msg.body == b"hello"


def test_pipelined_messages_in_one_segment_come_out_in_order():
    raw = b"".join(ctl.encode(m) for m in (ctl.ok(), ctl.ControlMessage(ctl.METAINFO, body=b"<a/>"),
                                           ctl.ControlMessage(ctl.DATA_CONNECTION_PORT, "38501")))
    msgs = parse_all(raw)
    assert [m.command for m in msgs] == ["OK", "MetaInfo", "DataConnectionPort"]
    assert msgs[1].body == b"<a/>" and msgs[2].argument == "38501"


def test_one_message_fed_byte_by_byte():
    raw = ctl.encode(ctl.ControlMessage(ctl.METAINFO, body=b"<tiaMetaInfo/>\n\n"))
    parser = ctl.ControlParser()
    out = []
    for i in range(len(raw)):
        out += parser.feed(raw[i:i + 1])
        if i < len(raw) - 1:
            assert out == []
    assert out[0].body == b"<tiaMetaInfo/>\n\n" and parser.buffered == 0


def test_body_is_counted_in_bytes_not_characters():
    body = "<signal label=\"Ω1\"/>".encode()
    [msg] = parse_all(ctl.encode(ctl.ControlMessage(ctl.METAINFO, body=body)) + b"TiA 1.0\nOK\n\n")[:1]
    assert msg.body.decode() == "<signal label=\"Ω1\"/>"


def test_error_descriptions_xml_and_plain_text():
    [xml] = parse_all(ctl.encode(ctl.error("not running")))
    assert xml.is_error and xml.error_description() == "not running"
    [plain] = parse_all(b"TiA 1.0\nError\nContent-Length:12\n\nno such thing")
    assert plain.error_description() == "no such thin"   # exactly 12 bytes were the body
    [bare] = parse_all(b"TiA 1.0\nError\n\n")
    assert bare.error_description() == "(no description)"


@pytest.mark.parametrize("raw, field, offset", [
    (b"HTTP/1.1 200 OK\n\n", "version line", 0),
    (b"TiA 1.0\n\n", "command line", 8),
    (b"TiA 1.0\nMetaInfo\nContent-Length: lots\n\n", "Content-Length", 17),
    (b"TiA 1.0\nOK\nno colon here\n\n", "header", 11),
])
def test_malformed_messages_name_the_field_and_the_offset_of_its_line(raw, field, offset):
    with pytest.raises(ProtocolError) as info:
        parse_all(raw)
    assert (info.value.field, info.value.offset) == (field, offset)
    assert f"field {field!r}" in str(info.value)
    assert f"stream offset {offset}" in str(info.value)


def test_endless_header_is_an_error():
    with pytest.raises(ProtocolError, match="without an empty line"):
        parse_all(b"TiA 1.0\n" + b"x" * (ctl.MAX_HEADER + 10))


def test_error_offset_points_at_the_bad_message():
    good = ctl.encode(ctl.ok())
    with pytest.raises(ProtocolError) as info:
        parse_all(good + b"garbage\n\n")
    assert info.value.offset == len(good)
    assert str(info.value).endswith(f"(field 'version line', stream offset {len(good)})")
