"""ZeroMQ event codec: multipart `[topic, JSON]` messages and their SQLite attribute rows.

Wire (spec events-replay §2): frame 0 is the UTF-8 topic, frame 1 one compact UTF-8 JSON
object: the event's attributes plus the reserved keys `__data_time` (when it happened, source
clock), `__wire_time` (when it went on the bus) and `__seq` (per publisher and topic, counts up
from 1 so a consumer sees loss). Times are float epoch seconds. Non-finite numbers go out as
`null`, because other JSON parsers reject NaN.

Rows (spec §4, decided here): one `attribute` row per non-reserved key with the value's text
and a `data_type`. Our schema's `attribute` view (`hil.protocols.events_db`) shows `int`,
`float` (the JSON text: exact), `bool` (`true`/`false`), `str`, `null` and `json` (lists,
objects). We also read `tcs_lib`'s `number`, `boolean` and
`string`; any other type is read as a string (and counted by the reader). Our typed values
decode by type; the fail-safe `convert_bool` then `convert_number` flags apply only to text
(`str`, `string`, `number`, `boolean`, unknown), so "1" stays a number and "true" a bool.

Pure: no sockets, no files, no clock; the caller passes `now`.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hil.errors import ProtocolError

DATA_TIME = "__data_time"
WIRE_TIME = "__wire_time"
SEQ = "__seq"
RESERVED = (DATA_TIME, WIRE_TIME, SEQ)

#: data types we write, and the text forms we read besides them
WRITTEN_TYPES = ("int", "float", "bool", "str", "null", "json")
TCS_TYPES = ("number", "boolean", "string")
TEXT_TYPES = frozenset({"str", "string", "number", "boolean"})
KNOWN_TYPES = frozenset(WRITTEN_TYPES) | TEXT_TYPES

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_encode = _ENCODER.encode
_decode_json = json.JSONDecoder().decode


class Event:
    """One received or replayed event: topic, the JSON body (reserved keys included) and the
    receive time (`hil.clock`, NaN when not received).

    A received event may keep its body as the raw frame (`decode_lazy`): `body` parses it on
    first access (ProtocolError when it is not a valid event body) and keeps the dict, so a
    consumer pays for JSON only on the events it looks at."""

    __slots__ = ("topic", "received", "_body", "_raw", "_error")

    def __init__(self, topic: str, body: dict[str, Any] | None = None,
                 received: float = math.nan, *, raw: bytes | None = None) -> None:
        if body is None and raw is None:
            body = {}
        self.topic = topic
        self.received = received
        self._body = body
        self._raw = raw
        self._error: ProtocolError | None = None

    def __repr__(self) -> str:
        shown = self._body if self._body is not None else _clip(self._raw)
        return f"Event({self.topic!r}, {shown}, received={self.received!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.topic, self.body, self.received) == (other.topic, other.body, other.received)

    __hash__ = None  # type: ignore[assignment]

    @property
    def body(self) -> dict[str, Any]:
        """The body as a dict (parsed from the raw frame on first access)."""
        body = self._body
        if body is None:
            if self._error is not None:
                raise self._error
            try:
                body = self._body = parse_body(self._raw or b"")
            except ProtocolError as exc:
                exc.message = f"event {self.topic!r}: {exc.message}"
                self._error = exc
                raise
        return body

    @property
    def raw(self) -> bytes:
        """The body as JSON bytes: the frame as received, else the dict encoded."""
        return self._raw if self._raw is not None else encode_body(self._body or {})

    @property
    def parsed(self) -> bool:
        """True once the body is a dict (given, or parsed without error)."""
        return self._body is not None

    @property
    def checked(self) -> bool:
        """True once the body is known to be valid or not (given, or a parse was tried)."""
        return self._body is not None or self._error is not None

    def decode_error(self) -> ProtocolError | None:
        """None when the body is valid (parsing it now if needed), else why it is not."""
        try:
            self.body
        except ProtocolError as exc:
            return exc
        return None

    def __getitem__(self, name: str) -> Any:
        try:
            return self.body[name]
        except KeyError:
            raise KeyError(f"event {self.topic!r} has no field {name!r} "
                           f"(fields: {', '.join(self.body) or 'none'})") from None

    def get(self, name: str, default: Any = None) -> Any:
        return self.body.get(name, default)

    @property
    def fields(self) -> dict[str, Any]:
        """The attributes without the reserved `__` keys."""
        return {k: v for k, v in self.body.items() if k not in RESERVED}

    @property
    def data_time(self) -> float | None:
        """`__data_time`, or `__wire_time` when the source gave none (spec §3.2)."""
        t = self.body.get(DATA_TIME)
        return self.wire_time if t is None else float(t)

    @property
    def wire_time(self) -> float | None:
        t = self.body.get(WIRE_TIME)
        return None if t is None else float(t)

    @property
    def seq(self) -> int | None:
        return self.body.get(SEQ)

    @property
    def time(self) -> float:
        """The event's time for correlation (`PowerTrace.between(a, b)`): data time, else wire
        time, else receive time."""
        t = self.data_time
        return self.received if t is None else t

    @property
    def latency(self) -> float:
        """Receive time minus `__wire_time` (s; NaN when either is unknown)."""
        wire = self.wire_time
        return math.nan if wire is None else self.received - wire

    def describe(self) -> str:
        """One short line for error messages (a malformed body shown raw, never raised)."""
        if self.decode_error() is not None:
            return f"{self.topic} (malformed) {_clip(self._raw, 160)}"
        text = _encode(_finite(self.fields))
        return f"{self.topic} {text[:160]}{'…' if len(text) > 160 else ''}"


# --------------------------------------------------------------------------- wire
def check_topic(topic: str) -> bytes:
    """Frame 0 of `topic` (a non-empty str without NUL); ProtocolError otherwise."""
    if not isinstance(topic, str) or not topic or "\x00" in topic:
        raise ProtocolError(f"an event topic must be a non-empty string without NUL, got "
                            f"{topic!r}", field="topic")
    return topic.encode()


def encode_body(body: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of `body`; non-finite floats become null. ProtocolError names a key
    whose value JSON cannot carry."""
    try:
        return _encode(body).encode()
    except ValueError:                      # NaN/inf somewhere: rare, so sanitise only then
        return _encode(_finite(body)).encode()
    except TypeError:
        for key, value in body.items():
            try:
                _encode(_finite(value))
            except (TypeError, ValueError) as exc:
                raise ProtocolError(f"event value {value!r} ({type(value).__name__}) cannot be "
                                    f"sent as JSON: {exc}", field=str(key)) from None
        raise ProtocolError("event body cannot be sent as JSON (a key is not a string?)",
                            field="body") from None


def encode(topic: str, body: Mapping[str, Any]) -> list[bytes]:
    """The two frames of one event."""
    return [check_topic(topic), encode_body(body)]


def prepare(event: Mapping[str, Any] | str | bytes, now: float) -> dict[str, Any]:
    """A copy of `event` (a dict, or a JSON object as str/bytes) with `__wire_time` set to
    `now` when absent (spec §3). The caller's dict is not modified."""
    if isinstance(event, (str, bytes, bytearray)):
        body = parse_body(event)
    elif isinstance(event, Mapping):
        body = dict(event)
    else:
        raise ProtocolError(f"an event is a dict or a JSON object string, got "
                            f"{type(event).__name__}", field="body")
    if body.get(WIRE_TIME) is None:
        body[WIRE_TIME] = now
    return body


def parse_body(data: str | bytes | bytearray) -> dict[str, Any]:
    """Frame 1 as a dict; ProtocolError if it is not one JSON object with valid reserved keys."""
    try:
        text = data.decode() if isinstance(data, (bytes, bytearray)) else data
        body = _decode_json(text)
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"event body is not UTF-8: {exc}", field="body") from None
    except ValueError as exc:
        raise ProtocolError(f"event body is not JSON: {exc}: {_clip(data)}",
                            field="body") from None
    except RecursionError:
        raise ProtocolError(f"event body is nested too deeply: {_clip(data)}",
                            field="body") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"event body must be a JSON object, got {type(body).__name__}: "
                            f"{_clip(data)}", field="body")
    for key in (DATA_TIME, WIRE_TIME):
        value = body.get(key)
        if value is not None and not _finite_number(value):
            raise ProtocolError(f"{key} must be a finite number (epoch seconds) or null, got "
                                f"{_clip(value, 60)}", field=key)
    seq = body.get(SEQ)
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)
                            or not 0 <= seq < MAX_SEQ):
        raise ProtocolError(f"{SEQ} must be an integer from 0 to 2**63-1, got "
                            f"{_clip(seq, 60)}", field=SEQ)
    if "\\u" in text:                  # escapes: lone surrogates, keys spelled as escapes
        _check_escaped(text, body)
    elif any(text.count(quoted) > 1 for key, quoted in _QUOTED if key in body):
        _check_duplicates(text)
    return body


MAX_SEQ = 1 << 63       # __seq is an SQLite INTEGER and a numpy uint64 in a capture
_QUOTED = tuple((key, f'"{key}"') for key in RESERVED)


def _finite_number(value: object) -> bool:
    """A JSON number that is finite as a float (a 400-digit integer is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_escaped(text: str, body: dict[str, Any]) -> None:
    """A body using \\u escapes: no lone UTF-16 surrogate (it cannot be stored or sent on as
    UTF-8), and no reserved key given twice under any spelling."""
    try:
        json.dumps(body, ensure_ascii=False).encode()      # NaN allowed here: only UTF-8
    except UnicodeEncodeError:
        raise ProtocolError(f"event body holds a lone UTF-16 surrogate escape: {_clip(text)}",
                            field="body") from None
    _check_duplicates(text)


def _check_duplicates(text: str) -> None:
    """ProtocolError if a reserved key appears twice at the top level: JSON readers disagree
    on which one counts (Python takes the last, SQLite the first)."""
    keys = [key for key, _ in json.loads(text, object_pairs_hook=lambda pairs: pairs)]
    for key in RESERVED:
        if keys.count(key) > 1:
            raise ProtocolError(f"event body gives {key} {keys.count(key)} times",
                                field=key)


def decode(frames: list[bytes], received: float = math.nan) -> Event:
    """An `Event` from the frames of one message; ProtocolError when they break §2."""
    topic = _topic(frames)
    try:
        return Event(topic, parse_body(frames[1]), received)
    except ProtocolError as exc:
        exc.message = f"event {topic!r}: {exc.message}"
        raise


def decode_lazy(frames: list[bytes], received: float = math.nan) -> Event:
    """An `Event` keeping frame 1 unparsed (its `body` parses on access); checks here only
    what costs nothing: two frames, a UTF-8 topic. ProtocolError otherwise."""
    topic = _topic(frames)
    return Event(topic, None, received, raw=frames[1])


def _topic(frames: list[bytes]) -> str:
    """The topic of a message of exactly two frames, non-empty UTF-8 (ProtocolError else)."""
    if len(frames) != 2:
        raise ProtocolError(f"an event has 2 frames [topic, JSON], got {len(frames)}: "
                            f"{[_clip(f, 40) for f in frames[:3]]}", field="frames")
    try:
        topic = frames[0].decode()
    except UnicodeDecodeError:
        raise ProtocolError(f"event topic is not UTF-8: {_clip(frames[0], 60)}",
                            field="topic") from None
    if not topic:
        raise ProtocolError("event topic is empty", field="topic")
    if "\x00" in topic:
        raise ProtocolError(f"event topic holds a NUL byte: {_clip(frames[0], 60)}",
                            field="topic")
    return topic


# `"__seq":N}` closing the text: in valid JSON that is the top-level key (the final brace
# closes the object; a quote followed by a colon opens a key), and the last duplicate wins
_SEQ_AT_END = re.compile(
    rb'(?<!\\)"__seq"[ \t\r\n]*:[ \t\r\n]*(0|[1-9][0-9]{0,18})[ \t\r\n]*\}[ \t\r\n]*\Z')
_SEQ_TAIL = 64


def raw_seq(raw: bytes) -> tuple[bool, int | None]:
    """`__seq` read from a body's text without parsing it: (True, seq or None) when the text
    settles it (the key closes the object, or appears nowhere, unescaped); (False, None) when
    only parsing can tell."""
    found = _SEQ_AT_END.search(raw, max(0, len(raw) - _SEQ_TAIL))
    if found is not None:
        seq = int(found.group(1))
        return (True, seq) if seq < MAX_SEQ else (False, None)   # too big: parsing says so
    if b'"__seq"' not in raw and b"\\u" not in raw:
        return True, None
    return False, None


def _clip(data: Any, n: int = 120) -> str:
    text = repr(data)
    return text if len(text) <= n else text[:n] + "…"


def _finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# --------------------------------------------------------------------------- rows
def convert_number(text: str) -> Any:
    """int, else float, else `text` unchanged (spec §1: fail-safe)."""
    try:
        return int(text)
    except (TypeError, ValueError):
        pass
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def convert_bool(text: str) -> Any:
    """"true"/"false" (any case) to bool, anything else unchanged (fail-safe)."""
    if isinstance(text, str):
        low = text.lower()
        if low == "true":
            return True
        if low == "false":
            return False
    return text


def from_row(text: str | None, data_type: str | None, *, numbers: bool = False,
             bools: bool = False) -> Any:
    """The value of one attribute row. Typed rows decode by type (ProtocolError when the text
    does not fit it); text rows stay text unless the conversion flags ask (bool first)."""
    if data_type == "str" or data_type not in _TYPED:
        if text is None:
            return None
        value: Any = text
        if bools:
            value = convert_bool(value)
        if numbers and isinstance(value, str):
            value = convert_number(value)
        return value
    if data_type == "null":
        return None
    if text is None:
        raise ProtocolError(f"a {data_type} attribute has no value (NULL)", field="value")
    return _TYPED[data_type](text)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProtocolError(f"int attribute {text!r} is not an integer", field="value") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ProtocolError(f"float attribute {text!r} is not a number", field="value") from None


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise ProtocolError(f"bool attribute {text!r} is not true/false", field="value")


def _json(text: str) -> Any:
    try:
        return _decode_json(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"json attribute is broken ({exc}): {_clip(text, 80)}",
                            field="value") from None


_TYPED = {"int": _int, "float": _float, "bool": _bool, "json": _json, "null": None}


# --------------------------------------------------------------------------- sequence numbers
@dataclass
class SeqStats:
    """How one topic's `__seq` numbers departed from 1, 2, 3 …: `missing` numbers in `gaps`
    runs (lost events), `repeats` (a number at or below the last one: a duplicate, or the
    publisher restarted), `unnumbered` events without `__seq`."""

    topic: str
    events: int = 0
    last: int | None = None
    missing: int = 0
    gaps: int = 0
    repeats: int = 0
    unnumbered: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.repeats)

    def observe(self, seq: int | None) -> None:
        self.events += 1
        if seq is None:
            self.unnumbered += 1
            return
        if self.last is not None:
            if seq > self.last + 1:
                self.missing += seq - self.last - 1
                self.gaps += 1
            elif seq <= self.last:
                self.repeats += 1
        self.last = seq

    def describe(self) -> str:
        return (f"{self.topic}: {self.events} events, {self.missing} missing in {self.gaps} "
                f"gaps, {self.repeats} repeated or restarted, {self.unnumbered} without __seq")


# --------------------------------------------------------------------------- prepared text
@dataclass(slots=True)
class Prepared:
    """An event whose attributes are already JSON text (`{...}`, no reserved keys), as a
    replay reads it from `event.body`: sent without decoding and re-encoding."""

    topic: str
    fields_json: str
    data_time: float | None
    wire_time: float | None

    def text(self, seq: int | None = None, wire_time: float | None = None) -> str:
        """The whole body: the attributes plus the reserved keys (floats as `repr`)."""
        tail = ""
        if self.data_time is not None:
            tail = f',"{DATA_TIME}":{float(self.data_time)!r}'
        wire = self.wire_time if self.wire_time is not None else wire_time
        if wire is not None:
            tail += f',"{WIRE_TIME}":{float(wire)!r}'
        if seq is not None:
            tail += f',"{SEQ}":{int(seq)}'
        if not tail:
            return self.fields_json
        inner = self.fields_json
        if inner[-1] != "}":
            inner = inner.rstrip()
        inner = inner[:-1]
        if inner.rstrip() == "{":            # no attributes: no comma before the first key
            return f"{{{tail[1:]}}}"
        return f"{inner}{tail}}}"
