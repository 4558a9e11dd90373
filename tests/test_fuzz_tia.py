"""Property tests of the TiA codecs: any input gives correct values or a ProtocolError that names
the field and the stream offset; never another exception, never wrong data.

Each codec meets random bytes, truncations, oversized fields, mutated valid encodings, round
trips, and incremental parsing split at random points (which must equal parsing in one go). Each
is also compared with a straightforward reference written here: whole input in hand, one
message or packet at a time, no caches, no vector tricks.
"""
from __future__ import annotations

import math
import re
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.errors import ProtocolError
from hil.protocols import tia_control as ctl
from hil.protocols.tia_metainfo import (APERIODIC, FLAGS, MAX_BLOCK, MAX_CHANNELS, MAX_RATE, NAMES,
                                        MetaInfo, SignalInfo, canonical_type, decode_metainfo,
                                        encode_metainfo)
from hil.protocols.tia_packets import (HEADER_SIZE, MAX_PACKET, Packet, StreamDecoder,
                                       decode_packet, encode_packet)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given positions (taken modulo its length, any order)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])] or [b""]


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few bytes replaced, inserted or deleted, or cut short."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "insert", "delete", "cut"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "set" and out:
            out[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del out[at:at + draw(st.integers(1, 4))]
        else:
            del out[at:]
    return bytes(out)


def assert_names_field_and_offset(exc: ProtocolError, length: int) -> None:
    assert exc.field and exc.offset is not None and 0 <= exc.offset <= length, repr(exc)
    assert f"field {exc.field!r}" in str(exc) and f"stream offset {exc.offset}" in str(exc)


# ============================================================================ control messages
def _no_newline(min_size: int = 0) -> st.SearchStrategy[str]:
    return (st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
                    min_size=min_size, max_size=20).map(str.strip))


messages_st = st.builds(
    ctl.ControlMessage,
    command=_no_newline(1).map(lambda t: t.replace(":", "").strip()).filter(bool),
    argument=_no_newline(),
    body=st.binary(max_size=40),
    version=st.one_of(st.just("1.0"), _no_newline(1).filter(bool)))

Outcome = tuple[list[tuple[str, str, str, bytes]], tuple[str, int] | None]


def control_outcome(chunks: list[bytes]) -> Outcome:
    """Messages (command, argument, version, body) until the first error, and that error."""
    parser, got = ctl.ControlParser(), []
    try:
        for chunk in chunks:
            for m in parser.messages(chunk):
                got.append((m.command, m.argument, m.version, m.body))
    except ProtocolError as exc:
        assert_names_field_and_offset(exc, sum(map(len, chunks)))
        return got, (exc.field, exc.offset)
    return got, None


_HEADER = re.compile(rb"(?:[^\n]*\n)*?\r*\n")     # whole lines through the first empty one


def reference_control(data: bytes) -> Outcome:
    """The rules of tia_control, applied to the whole stream at once, one message at a time."""
    got, pos = [], 0
    while True:
        while pos < len(data) and data[pos] in b"\r\n":
            pos += 1
        m = _HEADER.match(data, pos)
        header_end = m.end() if m else len(data)      # incomplete: at least this long
        if header_end - pos > ctl.MAX_HEADER:
            return got, ("header", pos)
        if m is None:
            return got, None
        lines, at = [], pos
        for raw in data[pos:m.end()].split(b"\n")[:-2]:
            lines.append((at, raw.rstrip(b"\r").decode("utf-8", "replace")))
            at += len(raw) + 1
        if not lines[0][1].strip().startswith("TiA "):
            return got, ("version line", pos)
        if len(lines) < 2 or not lines[1][1].strip():
            return got, ("command line", lines[1][0] if len(lines) > 1 else m.end() - 1)
        length, seen = 0, None
        for at, line in lines[2:]:
            key, colon, value = line.partition(":")
            if not colon:
                return got, ("header", at)
            if key.strip().lower() == "content-length":
                digits = value.strip().lstrip("0") or "0"
                if not re.fullmatch(r"[0-9]+", value.strip(), re.ASCII) or len(digits) > 12 \
                        or int(digits) > ctl.MAX_BODY or seen not in (None, int(digits)):
                    return got, ("Content-Length", at)
                length = seen = int(digits)
        if len(data) - m.end() < length:
            return got, None
        command, _, argument = lines[1][1].partition(":")
        got.append((command.strip(), argument.strip(), lines[0][1].strip()[4:].strip(),
                    data[m.end():m.end() + length]))
        pos = m.end() + length


@FUZZ
@given(messages_st, st.booleans())
def test_control_round_trip(msg, space):
    [back] = ctl.ControlParser().feed(ctl.encode(msg, space=space))
    assert back == msg and back.offset == 0
    assert back.body_offset == len(ctl.encode(msg, space=space)) - len(msg.body)


@FUZZ
@given(st.lists(messages_st, max_size=5), st.lists(st.integers(0, 10_000), max_size=8))
def test_control_pipeline_split_anywhere_equals_one_go(msgs, cuts):
    raw = b"".join(ctl.encode(m) for m in msgs)
    whole = control_outcome([raw])
    assert whole == control_outcome(split(raw, cuts)) == reference_control(raw)
    assert whole == ([(m.command, m.argument, m.version, m.body) for m in msgs], None)


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 10_000), max_size=6))
def test_control_random_bytes(data, cuts):
    whole = control_outcome([data])
    assert whole == control_outcome(split(data, cuts)) == reference_control(data)


# A stream that looks like TiA: valid messages and TiA-ish fragments, glued together.
_fragments = st.lists(st.one_of(
    messages_st.map(ctl.encode),
    st.sampled_from([b"TiA 1.0\n", b"TiA 1.0\r\n", b"OK\n", b"\n", b"\r\n", b"\r", b":",
                     b"Content-Length: 3\n", b"content-length:2\r\n", b"Content-Length: \xc2\xb2\n",
                     b"Content-Length: 99999999999\n", b"X-Other: y\n", b"no colon\n", b"\xff\xfe",
                     b"Content-Length: 1\nContent-Length: 2\n", b"TiA\n", b" \n", b" ",
                     b"\r\r\n", b"\t"]),
    st.binary(max_size=6)), max_size=12).map(b"".join)


# Or line by line: TiA-ish lines, either line end, now and then some body bytes.
_lines = st.lists(st.tuples(
    st.sampled_from([b"TiA 1.0", b"TiA 2.0", b"TiA", b"OK", b"MetaInfo", b"Error",
                     b"DataConnectionPort: 5", b"Content-Length: 3", b"content-length :0",
                     b"Content-Length: \xc2\xb2", b"Content-Length: 3 ", b"Content-Length: +3",
                     b" ", b"", b"", b"", b"\r", b"no colon", b"X: y", b"\xff"]),
    st.sampled_from([b"\n", b"\r\n", b"\r\r\n"]),
    st.sampled_from([b"", b"", b"", b"abc", b"\n\n"])), max_size=16).map(
    lambda parts: b"".join(line + end + body for line, end, body in parts))


@FUZZ
@given(st.one_of(_fragments, _lines), st.lists(st.integers(0, 10_000), max_size=6))
def test_control_tia_like_fragments(data, cuts):
    whole = control_outcome([data])
    assert whole == control_outcome(split(data, cuts)) == reference_control(data)


@FUZZ
@given(st.lists(messages_st, min_size=1, max_size=3).flatmap(
    lambda ms: mutated(b"".join(ctl.encode(m) for m in ms))),
    st.lists(st.integers(0, 10_000), max_size=6))
def test_control_mutated_encodings(data, cuts):
    whole = control_outcome([data])
    assert whole == control_outcome(split(data, cuts)) == reference_control(data)


def test_control_truncated_at_every_position_is_incomplete_never_an_error():
    msgs = [ctl.ok(), ctl.ControlMessage(ctl.METAINFO, body=b"<tiaMetaInfo/>"),
            ctl.ControlMessage(ctl.DATA_CONNECTION_PORT, "38501"), ctl.error("no")]
    raw = b"".join(ctl.encode(m) for m in msgs)
    ends = np.cumsum([len(ctl.encode(m)) for m in msgs])
    for i in range(len(raw) + 1):
        got, err = control_outcome([raw[:i]])
        assert err is None and len(got) == int(np.searchsorted(ends, i, side="right"))


@FEW
@given(st.characters(whitelist_categories=("Nd", "No")).filter(lambda c: not c.isascii()),
       st.integers(0, 3))
def test_control_unicode_digits_are_not_a_content_length(digit, pad):
    raw = b"TiA 1.0\nMetaInfo\nContent-Length: " + ("1" * pad + digit).encode() + b"\n\nabc"
    assert control_outcome([raw]) == ([], ("Content-Length", 17))


@pytest.mark.parametrize("value", [str(ctl.MAX_BODY + 1), "9" * 30, "9" * 5000])
def test_control_oversized_body_is_refused_before_it_arrives(value):
    raw = f"TiA 1.0\nMetaInfo\nContent-Length: {value}\n\n".encode()
    assert control_outcome([raw]) == ([], ("Content-Length", 17))


def test_control_content_length_with_leading_zeros_counts_its_value():
    raw = b"TiA 1.0\nMetaInfo\nContent-Length: " + b"0" * 5000 + b"3\n\nabc"
    assert control_outcome([raw]) == ([("MetaInfo", "", "1.0", b"abc")], None)


def test_control_oversized_header_is_refused_however_it_is_split():
    raw = b"TiA 1.0\nOK\n" + b"X: y\n" * (ctl.MAX_HEADER // 5) + b"\n"
    assert control_outcome([raw]) == ([], ("header", 0))
    assert control_outcome(split(raw, [100, 5000])) == ([], ("header", 0))
    assert control_outcome([raw[:ctl.MAX_HEADER + 1]]) == ([], ("header", 0))


def test_control_error_sticks_and_good_messages_before_it_come_out():
    parser = ctl.ControlParser()
    good = ctl.encode(ctl.ok())
    it = parser.messages(good + b"junk\n\n")
    assert next(it).command == "OK"
    with pytest.raises(ProtocolError) as first:
        next(it)
    with pytest.raises(ProtocolError) as again:
        parser.feed(ctl.encode(ctl.ok()))
    assert first.value.offset == again.value.offset == len(good)


# ============================================================================ meta-info
_label = st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                               blacklist_characters="\ufffe\uffff")
                 | st.sampled_from("\t\n\r"), max_size=12)


@st.composite
def metas(draw: st.DrawFn) -> MetaInfo:
    types = draw(st.lists(st.sampled_from(sorted(FLAGS)), min_size=1, max_size=4, unique=True))
    signals = tuple(SignalInfo(t, draw(st.floats(0, MAX_RATE, allow_subnormal=False)),
                               draw(st.integers(0, MAX_BLOCK)),
                               tuple(draw(st.lists(_label, max_size=4))))
                    for t in types)
    master = signals[0]
    subject = draw(st.dictionaries(st.sampled_from(["id", "firstName", "surname", "sex"]), _label,
                                   min_size=1))
    return MetaInfo(signals, master.sampling_rate, master.block_size, subject, master.type)


@FUZZ
@given(metas(), st.booleans())
def test_metainfo_round_trip(meta, declaration):
    back = decode_metainfo(encode_metainfo(meta, declaration=declaration))
    assert back == meta and back.master == meta.master


def meta_outcome(data: bytes, offset: int = 0) -> MetaInfo | tuple[str, int]:
    try:
        return decode_metainfo(data, offset)
    except ProtocolError as exc:
        assert_names_field_and_offset(exc, offset + len(data))
        return exc.field, exc.offset


def _ref_number(el: ET.Element, attr: str, limit: float, integer: bool) -> float:
    """A number as the reference reads it: ASCII, no '_', finite, 0..limit, whole if asked."""
    text = el.get(attr)
    if text is None or not text.isascii() or "_" in text:
        raise ValueError(attr)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(attr) from None
    if not (math.isfinite(value) and 0 <= value <= limit and (value.is_integer() or not integer)):
        raise ValueError(attr)
    return value


def reference_metainfo(data: bytes) -> MetaInfo | str:
    """ElementTree and plain float(): the decoded meta-info, or the name of the bad field."""
    try:
        root = ET.fromstring(data.strip(b" \t\r\n").decode("utf-8", "replace"))
    except ET.ParseError:
        return "xml"
    if root.tag != "tiaMetaInfo":
        return "tiaMetaInfo"
    signals: list[SignalInfo] = []
    try:
        for el in root.findall("signal"):
            if el.get("type") is None:
                raise ValueError("type")
            canon = canonical_type(el.get("type"))
            if canon is None:
                continue
            rate = _ref_number(el, "samplingRate", MAX_RATE, False)
            block = int(_ref_number(el, "blockSize", MAX_BLOCK, True))
            count = int(_ref_number(el, "numChannels", MAX_CHANNELS, True))
            labels = [f"{canon}{i}" for i in range(1, count + 1)]
            for ch in el.iter("channel"):
                nr = int(_ref_number(ch, "nr", MAX_CHANNELS, True))
                if not 1 <= nr <= count:
                    raise ValueError("nr")
                labels[nr - 1] = ch.get("label", labels[nr - 1])
            if canon in {s.type for s in signals}:
                raise ValueError("type")
            signals.append(SignalInfo(canon, rate, block, tuple(labels)))
        master = root.find("masterSignal")
        if master is not None:
            rate = _ref_number(master, "samplingRate", MAX_RATE, False)
            block = int(_ref_number(master, "blockSize", MAX_BLOCK, True))
        else:
            rate, block = ((signals[0].sampling_rate, signals[0].block_size) if signals
                           else (0.0, 1))
    except ValueError as exc:
        return str(exc)
    subject = root.find("subject")
    return MetaInfo(tuple(signals), rate, block,
                    dict(subject.attrib) if subject is not None else {})


_numbers = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "Infinity", "1e400", "-1e400", "1e-400", "1e9",
                     "1e10", "²", "１", "١٢", "1_000", "0x10", " 5 ", "5.", "-0", "+3", ".5",
                     "4.0", "4.5", "65535", "65536", "-1", "", " ", "e5", "1e", "--1", "3 4"]),
    st.integers(-5, 70_000).map(str), st.floats().map(repr), st.text(max_size=5))
_attr = st.sampled_from(["type", "samplingRate", "blockSize", "numChannels", "nr", "label"])


@st.composite
def meta_documents(draw: st.DrawFn) -> bytes:
    """XML built from meta-info parts with hostile values: well-formed, often wrong."""
    def element(tag: str, inner: str = "") -> str:
        attrs = draw(st.dictionaries(_attr, st.one_of(_numbers, st.sampled_from(
            ["eeg", "EEG", "emg", "user1", "button", "brainwaves"]))))
        text = " ".join(f"{k}={_quote(v)}" for k, v in attrs.items())
        return f"<{tag} {text}>{inner}</{tag}>"
    children = []
    for _ in range(draw(st.integers(0, 4))):
        tag = draw(st.sampled_from(["signal", "signal", "masterSignal", "subject", "other"]))
        inner = "".join(element(draw(st.sampled_from(["channel", "x"])))
                        for _ in range(draw(st.integers(0, 3))))
        children.append(element(tag, inner))
    root = draw(st.sampled_from(["tiaMetaInfo", "tiaMetaInfo", "tiametainfo"]))
    return f"<{root}>{''.join(children)}</{root}>".encode()


def _quote(value: str) -> str:
    return '"' + value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;") + '"'


@FUZZ
@given(meta_documents(), st.integers(0, 10_000))
def test_metainfo_hostile_values_match_the_reference(data, offset):
    got, ref = meta_outcome(data, offset), reference_metainfo(data)
    if isinstance(ref, MetaInfo):
        assert got == ref
    else:
        assert isinstance(got, tuple) and got[0] == ref
        assert offset <= got[1] < offset + len(data)


@FUZZ
@given(metas().flatmap(lambda m: mutated(encode_metainfo(m))))
def test_metainfo_mutated_encodings(data):
    got, ref = meta_outcome(data), reference_metainfo(data)
    assert got == ref if isinstance(ref, MetaInfo) else (isinstance(got, tuple) and got[0] == ref)
    if isinstance(got, tuple) and got[0] not in ("xml", "DOCTYPE"):
        assert data[got[1]:got[1] + 1] == b"<"      # the offset of the element at fault


@FUZZ
@given(st.binary(max_size=200))
def test_metainfo_random_bytes(data):
    meta_outcome(data)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=4), st.sampled_from(
    [b"<signal ", b"\xb5", b"\xf0\x90\x80", b"\xe2\x82\xac", b"\xc2"])), max_size=12).map(b"".join))
def test_metainfo_offsets_count_raw_bytes_even_when_they_are_not_utf8(data):
    doc = (b'<tiaMetaInfo><subject id="' + data.replace(b"<", b"").replace(b"&", b"")
           .replace(b'"', b"") + b'"/><signal type="eeg"/></tiaMetaInfo>')
    got = meta_outcome(doc)
    assert isinstance(got, tuple)
    if got[0] != "xml":
        assert doc[got[1]:].startswith(b"<signal")


def test_metainfo_truncated_at_every_position():
    meta = MetaInfo((SignalInfo("eeg", 500, 4, ("C3", "Cz")), SignalInfo("button", 0, 1, ("b",))),
                    500, 4, {"id": "x"})
    raw = encode_metainfo(meta, declaration=True)
    for i in range(len(raw)):
        got = meta_outcome(raw[:i], offset=7)
        assert got == meta if raw[i:].isspace() else got[0] == "xml"


@pytest.mark.parametrize("attr, value", [
    ("samplingRate", "inf"), ("samplingRate", "nan"), ("samplingRate", "1e10"),
    ("blockSize", "inf"), ("blockSize", "1e400"), ("blockSize", "65536"),
    ("numChannels", "1e9"), ("numChannels", "1e400"), ("numChannels", "-1"), ("numChannels", "²"),
])
def test_metainfo_numbers_out_of_range_name_the_attribute(attr, value):
    attrs = {"type": "eeg", "samplingRate": "500", "blockSize": "4", "numChannels": "2"}
    attrs[attr] = value
    doc = ("<tiaMetaInfo>\n<signal " + " ".join(f'{k}="{v}"' for k, v in attrs.items())
           + "/></tiaMetaInfo>").encode()
    with pytest.raises(ProtocolError) as info:
        decode_metainfo(doc, offset=100)
    at = 100 + doc.index(b"<signal")
    assert (info.value.field, info.value.offset) == (attr, at)
    assert f"{attr}={value!r}" in str(info.value) and f"stream offset {at}" in str(info.value)


def test_metainfo_with_a_dtd_is_refused_before_any_entity_is_expanded():
    entities = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 30))
    bomb = (f'<?xml version="1.0"?>\n<!DOCTYPE t [<!ENTITY e0 "lol">{entities}]>'
            '<tiaMetaInfo><subject id="&e29;"/></tiaMetaInfo>').encode()
    field, at = meta_outcome(bomb)
    assert field == "DOCTYPE" and bomb.index(b"<!DOCTYPE") <= at < bomb.index(b"<!ENTITY")


# ============================================================================ data packets
PERIODIC_TYPES = sorted(t for t in FLAGS if t not in APERIODIC)


@st.composite
def packet_streams(draw: st.DrawFn) -> tuple[MetaInfo, bytes, str, bool]:
    """A meta-info, a valid stream of packets for it, its sample order and master-first flag."""
    periodic = draw(st.lists(st.sampled_from(PERIODIC_TYPES), min_size=1, max_size=3, unique=True))
    aperiodic = draw(st.lists(st.sampled_from(sorted(APERIODIC)), max_size=2, unique=True))
    infos = tuple(SignalInfo(t, 100.0, draw(st.integers(1, 3)),
                             tuple("c" for _ in range(draw(st.integers(0, 3)))))
                  for t in periodic + aperiodic)
    master = draw(st.sampled_from(infos[:len(periodic)]))
    meta = MetaInfo(infos, 100.0, master.block_size, master=master.type)
    order = draw(st.sampled_from(["channel_major", "sample_major"]))
    master_first = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    raw = b""
    for number in range(draw(st.integers(0, 6))):
        blocks = {}
        for s in infos:
            if s.aperiodic and not draw(st.booleans()):
                continue
            blk = draw(st.integers(0, 3)) if s.aperiodic else s.block_size
            bits = rng.integers(0, 2**32, (s.num_channels, blk), dtype=np.uint32)
            blocks[s.flag] = bits.view(np.float32)
        packet = Packet(number, int(rng.integers(0, 2**63)), blocks, int(rng.integers(0, 2**63)))
        raw += encode_packet(packet, sample_order=order,
                             master=master.flag if master_first else 0)
    return meta, raw, order, master_first


PacketTuple = tuple[int, int, int, tuple[tuple[int, bytes, tuple[int, ...]], ...]]


def _packet_tuple(number: int, pid: int, ts: int, blocks: dict[int, np.ndarray]) -> PacketTuple:
    return (number, pid, ts, tuple((f, np.ascontiguousarray(b).tobytes(), b.shape)
                                   for f, b in sorted(blocks.items())))


StreamOutcome = tuple[list[PacketTuple], tuple[str, int] | None, int]


def reference_packets(meta: MetaInfo, data: bytes, order: str, master_first: bool,
                      resync: bool = False) -> StreamOutcome:
    """Packets one at a time with struct: (packets, first error, bytes skipped by resync)."""
    by_flag = {s.flag: s for s in meta.signals}
    master = FLAGS[meta.master] if master_first and meta.master else 0

    def check(pos: int) -> tuple[str, int] | int | None:
        """The error at pos, None while incomplete, or the packet's size."""
        if data[pos] != 3:
            return "version", pos
        if len(data) - pos < HEADER_SIZE:
            return None
        _, size, flags, _, _, _ = struct.unpack_from("<BIIQQQ", data, pos)
        if flags & ~meta.flags:
            return "flags", pos
        bits = [1 << i for i in range(32) if flags >> i & 1]
        if master in bits:
            bits = [master] + [b for b in bits if b != master]
        nos = len(bits)
        if size < HEADER_SIZE + 4 * nos or size > MAX_PACKET:
            return "size", pos
        if len(data) - pos < HEADER_SIZE + 4 * nos:
            return None
        vh = struct.unpack_from(f"<{2 * nos}H", data, pos + HEADER_SIZE)
        for i, f in enumerate(bits):
            if vh[i] != by_flag[f].num_channels:
                return f"channels[{NAMES[f]}]", pos
            if not by_flag[f].aperiodic and vh[nos + i] != by_flag[f].block_size:
                return f"blockSize[{NAMES[f]}]", pos
        if size != HEADER_SIZE + 4 * nos + 4 * sum(vh[i] * vh[nos + i] for i in range(nos)):
            return "size", pos
        return size

    out, pos, skipped = [], 0, 0
    while pos < len(data):
        result = check(pos)
        if isinstance(result, tuple):
            if not resync:
                return out, result, 0
            nxt = pos + 1
            while nxt < len(data) and isinstance(check(nxt), tuple):
                nxt += 1
            skipped += nxt - pos
            pos = nxt
            continue
        if result is None or len(data) - pos < result:
            break
        _, size, flags, pid, number, ts = struct.unpack_from("<BIIQQQ", data, pos)
        bits = [1 << i for i in range(32) if flags >> i & 1]
        if master in bits:
            bits = [master] + [b for b in bits if b != master]
        nos = len(bits)
        vh = struct.unpack_from(f"<{2 * nos}H", data, pos + HEADER_SIZE)
        at, blocks = pos + HEADER_SIZE + 4 * nos, {}
        for i, f in enumerate(bits):
            ch, blk = vh[i], vh[nos + i]
            values = np.frombuffer(data, "<f4", ch * blk, at) if ch * blk else \
                np.zeros(0, np.float32)
            blocks[f] = values.reshape(ch, blk) if order == "channel_major" else \
                values.reshape(blk, ch).T
            at += 4 * ch * blk
        out.append(_packet_tuple(number, pid, ts, blocks))
        pos += size
    return out, None, skipped


def stream_outcome(meta: MetaInfo, chunks: list[bytes], order: str, master_first: bool,
                   resync: bool = False) -> StreamOutcome:
    """StreamDecoder fed like a reader: keep the unused rest, append the next chunk."""
    dec = StreamDecoder(meta, sample_order=order, master_first=master_first, resync=resync)
    out, buf = [], b""
    try:
        for chunk in chunks:
            buf += chunk
            runs, used = dec.decode(buf)
            buf = buf[used:]
            for r in runs:
                for k in range(r.count):
                    blocks = {f: r.samples[NAMES[f]][:, k * blk:(k + 1) * blk]
                              for f, blk in zip(r.layout.order, r.layout.blocks)}
                    out.append(_packet_tuple(int(r.numbers[k]), int(r.ids[k]),
                                             int(r.timestamps_us[k]), blocks))
    except ProtocolError as exc:
        assert not resync
        assert_names_field_and_offset(exc, sum(map(len, chunks)))
        return out, (exc.field, exc.offset), 0
    assert dec.offset == sum(map(len, chunks)) - len(buf)
    return out, None, dec.skipped_bytes


def check_stream(meta: MetaInfo, data: bytes, order: str, master_first: bool,
                 cuts: list[int]) -> None:
    """Vector decoder, one go and chunked, equals the reference; resync likewise never fails."""
    ref, ref_err, _ = reference_packets(meta, data, order, master_first)
    for chunks in ([data], split(data, cuts)):
        got, err, _ = stream_outcome(meta, chunks, order, master_first)
        assert err == ref_err
        assert got == (ref if err is None else ref[:len(got)])
    ref_r = reference_packets(meta, data, order, master_first, resync=True)
    assert stream_outcome(meta, [data], order, master_first, True) == ref_r
    assert stream_outcome(meta, split(data, cuts), order, master_first, True) == ref_r


_cuts = st.lists(st.integers(0, 100_000), max_size=6)


@FUZZ
@given(packet_streams(), _cuts)
def test_packets_round_trip_split_anywhere(stream, cuts):
    meta, raw, order, master_first = stream
    ref, err, _ = reference_packets(meta, raw, order, master_first)
    assert err is None and len(ref) == len({p[0] for p in ref})
    check_stream(meta, raw, order, master_first, cuts)


@FUZZ
@given(packet_streams().flatmap(lambda s: st.tuples(st.just(s), mutated(s[1]))), _cuts)
def test_packets_mutated_encodings_match_the_reference(stream_and_data, cuts):
    (meta, _, order, master_first), data = stream_and_data
    check_stream(meta, data, order, master_first, cuts)


@FUZZ
@given(packet_streams(), st.binary(max_size=200), st.booleans(), _cuts)
def test_packets_random_bytes(stream, data, versioned, cuts):
    meta, _, order, master_first = stream
    check_stream(meta, b"\x03" + data if versioned else data, order, master_first, cuts)


@FEW
@given(packet_streams())
def test_packets_truncated_at_every_position(stream):
    meta, raw, order, master_first = stream
    full = stream_outcome(meta, [raw], order, master_first)[0]
    for i in range(len(raw)):
        got, err, _ = stream_outcome(meta, [raw[:i]], order, master_first)
        assert err is None and got == full[:len(got)]
        if raw:
            try:
                decode_packet(raw[:i], meta, sample_order=order, master_first=master_first)
            except ProtocolError as exc:
                assert i < len(raw) and exc.field == "size" and exc.offset == 0


@pytest.mark.parametrize("size", [MAX_PACKET + 1, 0xFFFFFFFF])
def test_packet_size_beyond_the_limit_is_refused_from_its_header_alone(size):
    meta = MetaInfo((SignalInfo("eeg", 500, 1, ("a",)),), 500, 1)
    header = struct.pack("<BIIQQQ", 3, size, FLAGS["eeg"], 0, 0, 0)
    with pytest.raises(ProtocolError) as info:
        StreamDecoder(meta).decode(header)
    assert (info.value.field, info.value.offset) == ("size", 0)


def test_resync_over_megabytes_of_garbage_skips_them_all():
    meta = MetaInfo((SignalInfo("eeg", 500, 1, ("a",)),), 500, 1)
    good = encode_packet(Packet(1, 2, {FLAGS["eeg"]: np.ones((1, 1), np.float32)}))
    garbage = np.random.default_rng(3).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    dec = StreamDecoder(meta, resync=True)
    data = good + garbage.replace(b"\x03", b"\x04") + good
    runs, used = dec.decode(data)
    assert [int(r.numbers[0]) for r in runs] == [1, 1] and used == len(data)
    assert dec.skipped_bytes == len(garbage) and dec.error_count == 1
