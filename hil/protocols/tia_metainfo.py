"""TiA 1.0 meta-info: the XML that describes a server's signals, both ways (spec §3, §4).

Signal type names drift between implementations (`user_1` / `user1`, `sensor` / `sensors`), so
names go through an alias table, case-insensitively; a signal of an unknown type is logged and
left out instead of failing the whole description.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
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


def encode_metainfo(meta: MetaInfo, *, declaration: bool = False) -> bytes:
    """The XML body of a `MetaInfo` reply (UTF-8, spec names, attributes escaped)."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>'] if declaration else []
    lines.append('<tiaMetaInfo version="1.0">')
    subject = meta.subject or {"id": "sim", "firstName": "", "surname": ""}
    lines.append("<subject " + " ".join(f"{k}={quoteattr(v)}" for k, v in subject.items()) + "/>")
    lines.append(f'<masterSignal samplingRate="{_fmt(meta.master_rate)}" '
                 f'blockSize="{meta.master_block}"/>')
    # the master's signal first (as pytia does): XML carries no other way to say which it is
    for s in sorted(meta.signals, key=lambda s: (s.type != meta.master, s.flag)):
        lines.append(f'<signal type="{s.type}" samplingRate="{_fmt(s.sampling_rate)}" '
                     f'blockSize="{s.block_size}" numChannels="{s.num_channels}">')
        lines.extend(f"<channel nr=\"{i}\" label={quoteattr(label)}/>"
                     for i, label in enumerate(s.channels, 1))
        lines.append("</signal>")
    lines.append("</tiaMetaInfo>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _number(el: ET.Element, attr: str, kind: type, where: str) -> float | int:
    text = el.get(attr)
    if text is None:
        raise ProtocolError(f"meta-info <{el.tag}> lacks required attribute {attr!r}",
                            field=attr, where=where)
    try:
        value = kind(float(text)) if kind is int else kind(text)
    except ValueError:
        raise ProtocolError(f"meta-info <{el.tag}> {attr}={text!r} is not a number",
                            field=attr, where=where) from None
    if value < 0 or (kind is int and float(text) != int(value)):
        raise ProtocolError(f"meta-info <{el.tag}> {attr}={text!r} is not a valid count",
                            field=attr, where=where)
    return value


def _decode_signal(el: ET.Element, index: int) -> SignalInfo | None:
    where = f"<signal> #{index + 1}"
    raw_type = el.get("type")
    if raw_type is None:
        raise ProtocolError("meta-info <signal> lacks required attribute 'type'",
                            field="type", where=where)
    canon = canonical_type(raw_type)
    if canon is None:
        log.warning("TiA meta-info: ignoring signal of unknown type %r", raw_type)
        return None
    rate = float(_number(el, "samplingRate", float, where))
    block = int(_number(el, "blockSize", int, where))
    count = int(_number(el, "numChannels", int, where))
    labels = [f"{canon}{i}" for i in range(1, count + 1)]
    for ch in el.iter("channel"):
        nr = int(_number(ch, "nr", int, f"{where} <channel>"))
        if not 1 <= nr <= count:
            raise ProtocolError(f"meta-info {canon} channel nr={nr} outside 1..{count}",
                                field="nr", where=where)
        labels[nr - 1] = ch.get("label", labels[nr - 1])
    return SignalInfo(canon, rate, block, tuple(labels))


def decode_metainfo(body: bytes | str) -> MetaInfo:
    """Parse a meta-info XML body. Garbage or missing required attributes -> ProtocolError."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError as exc:
        line, col = exc.position
        raise ProtocolError(f"meta-info is not well-formed XML: {exc}", field="xml",
                            where=f"line {line} column {col}") from None
    if root.tag != "tiaMetaInfo":
        raise ProtocolError(f"meta-info root element is <{root.tag}>, expected <tiaMetaInfo>",
                            field="tiaMetaInfo", where="root")
    signals = [s for i, el in enumerate(root.findall("signal"))
               if (s := _decode_signal(el, i)) is not None]
    seen: set[str] = set()
    for s in signals:
        if s.type in seen:
            raise ProtocolError(f"meta-info lists signal type {s.type!r} twice", field="type",
                                where=f"<signal type={s.type!r}>")
        seen.add(s.type)
    master = root.find("masterSignal")
    if master is not None:
        rate = float(_number(master, "samplingRate", float, "<masterSignal>"))
        block = int(_number(master, "blockSize", int, "<masterSignal>"))
    elif signals:
        rate, block = signals[0].sampling_rate, signals[0].block_size
    else:
        rate, block = 0.0, 1
    subj = root.find("subject")
    subject = dict(subj.attrib) if subj is not None else {}
    return MetaInfo(tuple(signals), rate, block, subject)
