"""TiA 1.0 meta-info: the XML that describes a server's signals, both ways (spec §3, §4).

Signal type names drift between implementations (`user_1` / `user1`, `sensor` / `sensors`), so
names go through an alias table, case-insensitively; a signal of an unknown type is logged and
left out instead of failing the whole description.

Numbers from the peer are plain ASCII decimals within the limits below (what the packet format
can carry); anything else is a ProtocolError naming the attribute and its byte offset. A DTD is
refused: a meta-info has none, and entity definitions are how XML bombs are built.
"""
from __future__ import annotations

import codecs
import logging
import math
import re
from dataclasses import dataclass, field
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

from hil.errors import ProtocolError

log = logging.getLogger(__name__)

#: Spec name -> flag (spec §4).
FLAGS: dict[str, int] = {
    "eeg": 0x1, "emg": 0x2, "eog": 0x4, "ecg": 0x8, "hr": 0x10, "bp": 0x20,
    "button": 0x40, "joystick": 0x80, "sensors": 0x100, "nirs": 0x200, "fmri": 0x400,
    "mouse": 0x800, "mouse-button": 0x1000,
    "user_1": 0x10000, "user_2": 0x20000, "user_3": 0x40000, "user_4": 0x80000,
    "undefined": 0x100000, "event": 0x200000,
}
NAMES: dict[int, str] = {flag: name for name, flag in FLAGS.items()}
#: Limits on numbers from a peer: channels and block sizes travel as uint16 in packets.
MAX_CHANNELS = 0xFFFF
MAX_BLOCK = 0xFFFF
MAX_RATE = 1e9           # samples/s per channel; a GHz EEG is a misread, not a device
#: Types sent only when their value changes: packets then vary in size.
APERIODIC: frozenset[str] = frozenset({"button", "joystick", "mouse", "mouse-button"})
#: Other spellings seen in the wild -> spec name (compared after lower-casing).
ALIASES: dict[str, str] = {
    "user1": "user_1", "user2": "user_2", "user3": "user_3", "user4": "user_4",
    "sensor": "sensors", "axes": "joystick", "keycode": "button",
    "mouse_button": "mouse-button", "mousebutton": "mouse-button", "mouse-btn": "mouse-button",
}


def canonical_type(name: str) -> str | None:
    """The spec name for a signal type name or alias (any case); None if unknown."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in FLAGS else None


def type_flag(name: str) -> int:
    """The flag of a signal type name or alias; ProtocolError if unknown."""
    canon = canonical_type(name)
    if canon is None:
        raise ProtocolError(f"unknown TiA signal type {name!r}; known: {', '.join(FLAGS)}",
                            field="type")
    return FLAGS[canon]


@dataclass(frozen=True)
class SignalInfo:
    """One signal type of a server: rate (samples/s per channel), block size, channel labels."""

    type: str
    sampling_rate: float
    block_size: int
    channels: tuple[str, ...]

    @property
    def flag(self) -> int:
        return FLAGS[self.type]

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def aperiodic(self) -> bool:
        return self.type in APERIODIC


@dataclass(frozen=True)
class MetaInfo:
    """A server's description: master pacing, subject, and signals in ascending flag order."""

    signals: tuple[SignalInfo, ...]
    master_rate: float
    master_block: int
    subject: dict[str, str] = field(default_factory=dict)
    master: str = ""   # type of the master signal: given, or the first listed matching its pacing

    def __post_init__(self) -> None:
        if not self.master:
            match = [s.type for s in self.signals
                     if s.sampling_rate == self.master_rate and s.block_size == self.master_block]
            object.__setattr__(self, "master", match[0] if match else "")
        ordered = tuple(sorted(self.signals, key=lambda s: s.flag))
        object.__setattr__(self, "signals", ordered)

    @property
    def packet_rate(self) -> float:
        """Packets per second sent by the master signal."""
        return self.master_rate / self.master_block if self.master_block else 0.0

    @property
    def flags(self) -> int:
        out = 0
        for s in self.signals:
            out |= s.flag
        return out

    def signal(self, name: str) -> SignalInfo:
        canon = canonical_type(name)
        for s in self.signals:
            if s.type == canon:
                return s
        raise KeyError(f"no signal {name!r}; have {', '.join(s.type for s in self.signals)}")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _xml_text(text: str, what: str) -> str:
    """`text` if XML 1.0 can carry it; a control character cannot be sent even escaped."""
    bad = _NOT_XML.search(text)
    if bad:
        raise ValueError(f"meta-info {what} {text[:40]!r} holds {bad[0]!r}, which XML cannot carry")
    return text


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def encode_metainfo(meta: MetaInfo, *, declaration: bool = False) -> bytes:
    """The XML body of a `MetaInfo` reply (UTF-8, spec names, attributes escaped)."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>'] if declaration else []
    lines.append('<tiaMetaInfo version="1.0">')
    subject = meta.subject or {"id": "sim", "firstName": "", "surname": ""}
    lines.append("<subject " + " ".join(f"{k}={quoteattr(_xml_text(v, k))}"
                                        for k, v in subject.items()) + "/>")
    lines.append(f'<masterSignal samplingRate="{_fmt(meta.master_rate)}" '
                 f'blockSize="{meta.master_block}"/>')
    # the master's signal first (as pytia does): XML carries no other way to say which it is
    for s in sorted(meta.signals, key=lambda s: (s.type != meta.master, s.flag)):
        lines.append(f'<signal type="{s.type}" samplingRate="{_fmt(s.sampling_rate)}" '
                     f'blockSize="{s.block_size}" numChannels="{s.num_channels}">')
        lines.extend(f"<channel nr=\"{i}\" label={quoteattr(_xml_text(label, 'label'))}/>"
                     for i, label in enumerate(s.channels, 1))
        lines.append("</signal>")
    lines.append("</tiaMetaInfo>")
    return ("\n".join(lines) + "\n").encode("utf-8")


# ------------------------------------------------------------------------------------ decoding
@dataclass
class _Element:
    """One element of the meta-info: its attributes, byte offset, and (for <signal>) channels."""

    tag: str
    attrs: dict[str, str]
    offset: int
    channels: list[_Element] = field(default_factory=list)

    def describe(self) -> str:
        kind = self.attrs.get("type")
        return f"<{self.tag} type={kind!r}>" if kind is not None else f"<{self.tag}>"


@dataclass
class _Document:
    root: _Element
    children: list[_Element]      # the root's children, with the <channel>s inside each


_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)


def _number(el: _Element, attr: str, limit: float, *, integer: bool) -> float:
    """An attribute as a number in 0..limit (an integer if `integer`); else ProtocolError."""
    text = el.attrs.get(attr)
    what = f"meta-info {el.describe()}"
    if text is None:
        raise ProtocolError(f"{what} lacks required attribute {attr!r}", field=attr,
                            offset=el.offset)
    value = float(text) if _NUMBER.fullmatch(text) else math.nan
    shown = f"{attr}={text[:40]!r}"
    if math.isnan(value):
        raise ProtocolError(f"{what} {shown} is not a number", field=attr, offset=el.offset)
    if not 0 <= value <= limit:
        raise ProtocolError(f"{what} {shown} is outside 0..{limit:g}", field=attr,
                            offset=el.offset)
    if integer and not value.is_integer():
        raise ProtocolError(f"{what} {shown} is not a whole number", field=attr,
                            offset=el.offset)
    return value


def _count(el: _Element, attr: str, limit: int) -> int:
    return int(_number(el, attr, limit, integer=True))


def _decode_signal(el: _Element) -> SignalInfo:
    canon = canonical_type(el.attrs["type"])
    assert canon is not None
    rate = _number(el, "samplingRate", MAX_RATE, integer=False)
    block = _count(el, "blockSize", MAX_BLOCK)
    count = _count(el, "numChannels", MAX_CHANNELS)
    labels = [f"{canon}{i}" for i in range(1, count + 1)]
    for ch in el.channels:
        nr = _count(ch, "nr", MAX_CHANNELS)
        if not 1 <= nr <= count:
            raise ProtocolError(f"meta-info {canon} <channel nr=\"{nr}\"> outside 1..{count}",
                                field="nr", offset=ch.offset)
        labels[nr - 1] = ch.attrs.get("label", labels[nr - 1])
    return SignalInfo(canon, rate, block, tuple(labels))


def _parse(text: str) -> _Document:
    """Well-formed XML (no DTD) -> the root, its children and the channels of each; offsets
    are UTF-8 byte offsets into `text`. Else ProtocolError with field 'xml' or 'DOCTYPE'.

    A str makes expat read UTF-8 whatever the XML declaration says, as ElementTree did."""
    parser = expat.ParserCreate()
    stack: list[_Element] = []
    children: list[_Element] = []
    roots: list[_Element] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        el = _Element(tag, attrs, parser.CurrentByteIndex)
        if not stack:
            roots.append(el)
        elif len(stack) == 1:
            children.append(el)
        elif tag == "channel":
            stack[1].channels.append(el)      # any depth below a child, as ElementTree.iter
        stack.append(el)

    def doctype(name: str, *_: object) -> None:
        raise ProtocolError(f"meta-info has a DOCTYPE ({name!r}); a TiA meta-info has none",
                            field="DOCTYPE", offset=parser.CurrentByteIndex)

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda tag: stack.pop()
    parser.StartDoctypeDeclHandler = doctype
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        raise ProtocolError(f"meta-info is not well-formed XML: {expat.ErrorString(exc.code)} "
                            f"at line {exc.lineno} column {exc.offset + 1}", field="xml",
                            offset=max(parser.ErrorByteIndex, 0)) from None
    return _Document(roots[0], children)


def decode_metainfo(body: bytes | str, offset: int = 0) -> MetaInfo:
    """Parse a meta-info XML body that starts at stream offset `offset`. Garbage, missing
    required attributes or numbers out of range -> ProtocolError naming attribute and offset."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    lead = len(raw) - len(raw.lstrip(_XML_SPACE))
    text, bad = _utf8_text(raw.strip(_XML_SPACE))
    try:
        return _decode(_parse(text))
    except ProtocolError as exc:
        exc.offset = offset + lead + _raw_offset(exc.offset or 0, bad)
        raise


_XML_SPACE = b" \t\r\n"


def _utf8_text(raw: bytes) -> tuple[str, list[tuple[int, int]]]:
    """`raw` as text, each run of bytes that is not UTF-8 read as one U+FFFD (as "replace" does:
    a Latin-1 µ in a label is no reason to fail), and the (offset, length) of those runs."""
    parts: list[str] = []
    bad: list[tuple[int, int]] = []
    view, pos = memoryview(raw), 0
    while True:
        try:
            parts.append(codecs.utf_8_decode(view[pos:], "strict", True)[0])
            return "".join(parts), bad
        except UnicodeDecodeError as exc:
            parts.append(codecs.utf_8_decode(view[pos:pos + exc.start], "strict", True)[0])
            parts.append("\ufffd")
            bad.append((pos + exc.start, exc.end - exc.start))
            pos += exc.end


def _raw_offset(at: int, bad: list[tuple[int, int]]) -> int:
    """A byte offset in the UTF-8 of `_utf8_text` back in the raw bytes (U+FFFD is 3 bytes)."""
    shift = 0
    for start, length in bad:
        if start + shift >= at:
            break
        shift += 3 - length
    return at - shift


def _decode(doc: _Document) -> MetaInfo:
    if doc.root.tag != "tiaMetaInfo":
        raise ProtocolError(f"meta-info root element is <{doc.root.tag}>, expected <tiaMetaInfo>",
                            field="tiaMetaInfo", offset=doc.root.offset)
    signals: list[SignalInfo] = []
    unknown: list[str] = []
    for el in doc.children:
        if el.tag != "signal":
            continue
        raw_type = el.attrs.get("type")
        if raw_type is None:
            raise ProtocolError("meta-info <signal> lacks required attribute 'type'",
                                field="type", offset=el.offset)
        if canonical_type(raw_type) is None:
            unknown.append(raw_type[:40])
            continue
        signal = _decode_signal(el)
        if any(s.type == signal.type for s in signals):
            raise ProtocolError(f"meta-info lists signal type {signal.type!r} twice",
                                field="type", offset=el.offset)
        signals.append(signal)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10]) + (", …" if len(unknown) > 10 else "")
        log.warning("TiA meta-info: ignoring %d signal(s) of unknown type: %s", len(unknown),
                    shown)
    master = next((el for el in doc.children if el.tag == "masterSignal"), None)
    if master is not None:
        rate = _number(master, "samplingRate", MAX_RATE, integer=False)
        block = _count(master, "blockSize", MAX_BLOCK)
    elif signals:
        rate, block = signals[0].sampling_rate, signals[0].block_size
    else:
        rate, block = 0.0, 1
    subject = next((el.attrs for el in doc.children if el.tag == "subject"), {})
    return MetaInfo(tuple(signals), rate, block, dict(subject))
