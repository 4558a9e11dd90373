"""STTP (IEEE 2664) framing: command and response frames, their codes, operational modes and
the Subscribe connection string (spec §1–§4, §6.1).

Every TCP frame is a big-endian uint32 length and that many bytes. A command is a code and its
data; a response is a code, the command it answers, a uint32 data length (checked here:
`sttpapi` ignores it, but a lying outer length shows up as a mismatch) and the data.
`FrameReader` parses a byte stream incrementally and names the stream offset of every problem.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from hil.errors import ProtocolError

MAX_FRAME = 32 << 20            # refuse lengths above this: no real frame comes near it
RESPONSE_HEADER = 6             # response code, in-response-to, data length
_LEN = struct.Struct(">I")
_RESP = struct.Struct(">IBBI")


class Command(IntEnum):
    """Subscriber → publisher command codes (spec §2)."""

    CONNECT = 0x00
    METADATA_REFRESH = 0x01
    SUBSCRIBE = 0x02
    UNSUBSCRIBE = 0x03
    ROTATE_CIPHER_KEYS = 0x04
    UPDATE_PROCESSING_INTERVAL = 0x05
    DEFINE_OPERATIONAL_MODES = 0x06
    CONFIRM_NOTIFICATION = 0x07
    CONFIRM_BUFFER_BLOCK = 0x08
    CONFIRM_UPDATE_BASE_TIMES = 0x09
    CONFIRM_UPDATE_SIGNAL_INDEX_CACHE = 0x0A
    CONFIRM_UPDATE_CIPHER_KEYS = 0x0B
    GET_PRIMARY_METADATA_SCHEMA = 0x0C
    GET_SIGNAL_SELECTION_SCHEMA = 0x0D


class Response(IntEnum):
    """Publisher → subscriber response codes (spec §2)."""

    SUCCEEDED = 0x80
    FAILED = 0x81
    DATA_PACKET = 0x82
    UPDATE_SIGNAL_INDEX_CACHE = 0x83
    UPDATE_BASE_TIMES = 0x84
    UPDATE_CIPHER_KEYS = 0x85
    DATA_START_TIME = 0x86
    PROCESSING_COMPLETE = 0x87
    BUFFER_BLOCK = 0x88
    NOTIFY = 0x89
    CONFIGURATION_CHANGED = 0x8A
    NOOP = 0xFF


class Modes(IntFlag):
    """Operational mode bits (spec §3)."""

    VERSION_MASK = 0x000000FF
    ENCODING_MASK = 0x00000300
    UTF8 = 0x00000200
    LEGACY_GZIP = 0x00000020
    LEGACY_TSSC = 0x00000040
    RECEIVE_EXTERNAL_METADATA = 0x02000000
    RECEIVE_INTERNAL_METADATA = 0x04000000
    COMPRESS_PAYLOAD = 0x20000000
    COMPRESS_SIGNAL_INDEX_CACHE = 0x40000000
    COMPRESS_METADATA = 0x80000000


class PacketFlags(IntFlag):
    """Flags byte of a DataPacket (spec §8)."""

    COMPACT = 0x02
    CIPHER_INDEX = 0x04
    COMPRESSED = 0x08
    CACHE_INDEX = 0x10


def is_command(code: int) -> bool:
    """A defined command code (including user commands 0xD0–0xDF)."""
    return code in Command._value2member_map_ or 0xD0 <= code <= 0xDF


def is_response(code: int) -> bool:
    """A defined response code (including user responses 0xE0–0xEF)."""
    return code in Response._value2member_map_ or 0xE0 <= code <= 0xEF


def code_name(code: int) -> str:
    """Readable name of a command or response code, for messages."""
    for enum in (Response, Command):
        if code in enum._value2member_map_:
            return enum(code).name
    return f"0x{code:02X}"


@dataclass(frozen=True)
class OperationalModes:
    """The uint32 a subscriber sends first: version, encoding and compression wishes."""

    value: int

    @classmethod
    def make(cls, version: int = 2, tssc: bool = False, gzip: bool = True) -> OperationalModes:
        """`hil`'s request: 0xC0000222 (UTF-8, gzip metadata and cache, no TSSC) by default."""
        value = version | Modes.UTF8 | Modes.LEGACY_GZIP
        if gzip:
            value |= Modes.COMPRESS_METADATA | Modes.COMPRESS_SIGNAL_INDEX_CACHE
        if tssc:
            value |= Modes.COMPRESS_PAYLOAD | Modes.LEGACY_TSSC
        return cls(int(value))

    @classmethod
    def decode(cls, data: bytes, offset: int = 0) -> OperationalModes:
        if len(data) != 4:
            raise ProtocolError(f"DefineOperationalModes carries {len(data)} bytes, expected 4",
                                field="operational modes", offset=offset)
        return cls(_LEN.unpack(data)[0])

    def encode(self) -> bytes:
        return _LEN.pack(self.value)

    @property
    def version(self) -> int:
        return self.value & 0x1F          # 0x20/0x40 are the legacy compression flags

    @property
    def utf8(self) -> bool:
        return self.value & Modes.ENCODING_MASK == Modes.UTF8

    @property
    def tssc(self) -> bool:
        return bool(self.value & Modes.COMPRESS_PAYLOAD)

    @property
    def compress_metadata(self) -> bool:
        return bool(self.value & Modes.COMPRESS_METADATA)

    @property
    def compress_cache(self) -> bool:
        return bool(self.value & Modes.COMPRESS_SIGNAL_INDEX_CACHE)


# ------------------------------------------------------------------------ frames
def encode_command(code: int, data: bytes = b"") -> bytes:
    """One command frame, to be sent with one `sendall` (spec §11 defect 6)."""
    return _LEN.pack(len(data) + 1) + bytes((code,)) + data


def encode_response(code: int, in_response_to: int, data: bytes = b"") -> bytes:
    """One response frame: outer length, code, command answered, data length, data."""
    return _RESP.pack(len(data) + RESPONSE_HEADER, code, in_response_to, len(data)) + data


def response_header(code: int, in_response_to: int, data_length: int) -> bytes:
    """The 10 bytes before a response's data (for writers that build frames in place)."""
    return _RESP.pack(data_length + RESPONSE_HEADER, code, in_response_to, data_length)


@dataclass(frozen=True)
class Frame:
    """One parsed frame: `code` (response or command), `in_response_to` (responses only),
    `data`, and the stream `offset` of its first (length) byte."""

    code: int
    in_response_to: int
    data: bytes
    offset: int

    @property
    def data_offset(self) -> int:
        """Stream offset of the first data byte."""
        return self.offset + (4 + RESPONSE_HEADER if self.in_response_to >= 0 else 5)


def check_response_header(code: int, answered: int, data_length: int, length: int,
                          offset: int) -> None:
    """Raise ProtocolError for a response header that breaks the rules of spec §1."""
    if not is_response(code):
        raise ProtocolError(f"undefined response code 0x{code:02X}", field="response code",
                            offset=offset + 4)
    if not is_command(answered):
        raise ProtocolError(f"{code_name(code)} answers undefined command code 0x{answered:02X}",
                            field="in-response-to", offset=offset + 5)
    if data_length != length - RESPONSE_HEADER:
        raise ProtocolError(f"{code_name(code)}: data length {data_length} but the frame "
                            f"length {length} leaves {length - RESPONSE_HEADER}",
                            field="data length", offset=offset + 6)


class FrameReader:
    """Incremental parser of one direction of an STTP TCP stream.

    `responses=True` parses publisher → subscriber frames, otherwise commands. `feed(bytes)`
    returns the complete frames; after a ProtocolError the stream has no framing left and
    every later feed raises the same error.
    """

    def __init__(self, responses: bool = True, max_frame: int = MAX_FRAME) -> None:
        self.responses = responses
        self.max_frame = max_frame
        self.consumed = 0                   # stream offset of self._buf[0]
        self._buf = bytearray()
        self._error: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Frame]:
        if self._error is not None:
            raise self._error
        self._buf += chunk
        frames, pos, buf = [], 0, self._buf
        try:
            while len(buf) - pos >= 4:
                length = _LEN.unpack_from(buf, pos)[0]
                offset = self.consumed + pos
                self._check_length(length, offset)
                if len(buf) - pos - 4 < length:
                    break
                frames.append(self._frame(bytes(buf[pos + 4:pos + 4 + length]), length, offset))
                pos += 4 + length
        except ProtocolError as exc:
            self._error = exc
            raise
        finally:
            del buf[:pos]
            self.consumed += pos
        return frames

    def _check_length(self, length: int, offset: int) -> None:
        least = RESPONSE_HEADER if self.responses else 1
        if not least <= length <= self.max_frame:
            raise ProtocolError(f"frame length {length} outside {least}..{self.max_frame}",
                                field="frame length", offset=offset)

    def _frame(self, body: bytes, length: int, offset: int) -> Frame:
        if not self.responses:
            return Frame(body[0], -1, body[1:], offset)
        code, answered, data_length = body[0], body[1], _LEN.unpack_from(body, 2)[0]
        check_response_header(code, answered, data_length, length, offset)
        return Frame(code, answered, body[RESPONSE_HEADER:], offset)


# ------------------------------------------------------------------------ messages
def status_text(data: bytes) -> str:
    """A Succeeded/Failed message: UTF-8, without the 4-byte length `sttpapi` puts before it
    (spec §11 defect 5; stripped only when it equals the remaining length)."""
    if len(data) >= 4 and _LEN.unpack_from(data)[0] == len(data) - 4:
        data = data[4:]
    return bytes(data).decode("utf-8", errors="replace")


def encode_subscribe(connection_string: str, flags: int = PacketFlags.COMPACT) -> bytes:
    """Subscribe command data: flags byte, uint32 length, UTF-8 connection string."""
    text = connection_string.encode("utf-8")
    return bytes((flags,)) + _LEN.pack(len(text)) + text


def decode_subscribe(data: bytes, offset: int = 0) -> tuple[int, str]:
    """(flags, connection string) of a Subscribe command's data."""
    if len(data) < 5:
        raise ProtocolError(f"Subscribe data is {len(data)} bytes, needs at least 5",
                            field="subscribe", offset=offset)
    length = _LEN.unpack_from(data, 1)[0]
    if length != len(data) - 5:
        raise ProtocolError(f"Subscribe connection string length {length}, but "
                            f"{len(data) - 5} bytes follow", field="connection string length",
                            offset=offset + 1)
    try:
        return data[0], bytes(data[5:]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"connection string is not UTF-8: {exc.reason}",
                            field="connection string", offset=offset + 5 + exc.start) from None


def parse_connection_string(text: str) -> dict[str, str]:
    """`key=value;…` split only at `;` outside braces; keys lower-cased, values trimmed and
    stripped of one pair of outer braces (spec §6.1). Unbalanced braces are an error."""
    pairs: dict[str, str] = {}
    for part in split_top_level(text, ";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ProtocolError(f"connection string part {part.strip()[:60]!r} is not key=value",
                                field="connection string")
        value = value.strip()
        if value.startswith("{") and value.endswith("}"):
            value = value[1:-1].strip()
        pairs[key.strip().lower()] = value
    return pairs


def split_top_level(text: str, sep: str) -> list[str]:
    """`text` split at `sep` where no brace is open and no quoted string runs."""
    parts, depth, start, quote = [], 0, 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise ProtocolError(f"unbalanced '}}' at character {i} of {text[:80]!r}",
                                    field="connection string")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ProtocolError(f"{depth} unclosed '{{' in {text[:80]!r}", field="connection string")
    parts.append(text[start:])
    return parts


def format_connection_string(pairs: dict[str, object]) -> str:
    """`key=value;…`; values holding `;`, `=` or braces are wrapped in braces; booleans as
    `true`/`false`."""
    out = []
    for key, value in pairs.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if any(c in text for c in ";={}"):
            text = "{" + text + "}"
        out.append(f"{key}={text}")
    return ";".join(out)


def parse_bool(text: str | None, default: bool = False) -> bool:
    """`true`/`True`/`1`/`yes` (case-insensitive) → True; absent → default."""
    if text is None or text == "":
        return default
    return text.strip().lower() in ("true", "1", "yes", "on")
