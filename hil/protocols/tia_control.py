"""TiA 1.0 control messages, both ways (spec §2): encode, and an incremental parser fed bytes.

A message is a version line, a command or status line (`Name` or `Name: argument`), optional
header lines (`Content-Length: n`), an empty line and n bytes of body. Parsing is tolerant as
peers differ: spacing around ':' is free, CRLF is accepted, `Content-Length` is matched in any
case, several messages may arrive in one segment and one message in several. We always send LF.
Tolerance ends at the framing: a header longer than MAX_HEADER, a Content-Length that is not
ASCII digits or is above MAX_BODY is a ProtocolError naming the field and its stream offset.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field

from hil.errors import ProtocolError

VERSION = "1.0"
MAX_HEADER = 64 * 1024   # a header longer than this has no end: the peer is not speaking TiA
MAX_BODY = 16 << 20      # a body longer than this is not a meta-info (64 channels need ~4 KiB)

# Requests
CHECK_PROTOCOL_VERSION = "CheckProtocolVersion"
GET_METAINFO = "GetMetaInfo"
GET_DATA_CONNECTION = "GetDataConnection"
START_DATA_TRANSMISSION = "StartDataTransmission"
STOP_DATA_TRANSMISSION = "StopDataTransmission"
GET_SERVER_STATE_CONNECTION = "GetServerStateConnection"
# Replies and state messages
OK = "OK"
ERROR = "Error"
METAINFO = "MetaInfo"
DATA_CONNECTION_PORT = "DataConnectionPort"
SERVER_STATE_CONNECTION_PORT = "ServerStateConnectionPort"
SERVER_STATE_RUNNING = "ServerStateRunning"
SERVER_STATE_SHUTDOWN = "ServerStateShutdown"


@dataclass(frozen=True)
class ControlMessage:
    """One control message: `command` line (split at the first ':'), headers and body bytes.

    A parsed message knows the stream offsets of its first byte and of its body, so an error
    found in it later (a bad port, a bad meta-info) can say where it came from."""

    command: str
    argument: str = ""
    body: bytes = b""
    version: str = VERSION
    headers: dict[str, str] = field(default_factory=dict, compare=False)
    offset: int = field(default=0, compare=False)
    body_offset: int = field(default=0, compare=False)

    @property
    def is_error(self) -> bool:
        return self.command == ERROR

    def error_description(self) -> str:
        """The text of an Error reply: `<tiaError description=…/>` or plain text (pytia)."""
        text = self.body.decode("utf-8", "replace").strip()
        if text.startswith("<"):
            try:
                return ET.fromstring(text).get("description", text)
            except ET.ParseError:
                return text
        return text or self.argument or "(no description)"


def encode(msg: ControlMessage, *, space: bool = True) -> bytes:
    """Bytes of a message; `Content-Length` counts body bytes. `space=False`: `Name:arg`."""
    sep = ": " if space else ":"
    lines = [f"TiA {msg.version}", msg.command + (sep + msg.argument if msg.argument else "")]
    if msg.body:
        lines.append(f"Content-Length{sep}{len(msg.body)}")
    return ("\n".join(lines) + "\n\n").encode("utf-8") + msg.body


def request(command: str, argument: str = "") -> ControlMessage:
    return ControlMessage(command, argument)


def ok() -> ControlMessage:
    return ControlMessage(OK)


def error(description: str) -> ControlMessage:
    """An Error reply with a `<tiaError/>` body (the spec's form)."""
    el = ET.Element("tiaError", version=VERSION, description=description)
    return ControlMessage(ERROR, body=ET.tostring(el, encoding="unicode").encode("utf-8"))


@dataclass(frozen=True)
class _Header:
    """A parsed header: the message without its body, and how many body bytes follow."""

    message: ControlMessage
    length: int


class ControlParser:
    """Incremental parser: `feed(bytes)` returns the messages completed so far, in order.

    A malformed message raises ProtocolError naming the field and its stream offset, at once
    (not when more bytes arrive), and again on every later call: the stream has lost its
    framing. Work per call is proportional to the new bytes, however the stream is split.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._offset = 0          # stream offset of _buf[0]
        self._scan = 0            # header bytes of _buf already split into lines
        self._pending: _Header | None = None   # header parsed, body awaited
        self._error: ProtocolError | None = None    # the stream lost its framing here

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[ControlMessage]:
        """Add bytes; the messages they complete. If a malformed one follows, ProtocolError is
        raised and the good ones before it in this call are not returned: see `messages`."""
        return list(self.messages(data))

    def messages(self, data: bytes = b"") -> Iterator[ControlMessage]:
        """Add bytes now; yield each completed message, then raise at a malformed one (so a
        server can answer every good request before the bad one)."""
        self._buf += data
        return self._complete()

    def _complete(self) -> Iterator[ControlMessage]:
        while (msg := self._next()) is not None:
            yield msg

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n

    def _next(self) -> ControlMessage | None:
        if self._error is not None:
            raise self._error
        if self._pending is None:
            if not self._scan:
                self._skip_blank_lines()
            try:
                self._pending = self._header()
            except ProtocolError as exc:
                self._error = exc
                raise
            if self._pending is None:
                return None
        head = self._pending
        if len(self._buf) < head.length:
            return None
        self._pending = None
        body = bytes(self._buf[:head.length])
        self._consume(head.length)
        msg = head.message
        return ControlMessage(msg.command, msg.argument, body, msg.version, msg.headers,
                              msg.offset, msg.body_offset)

    def _skip_blank_lines(self) -> None:
        """Stray line ends between messages (some peers add them) are not messages."""
        n = 0
        while n < len(self._buf) and self._buf[n] in b"\r\n":
            n += 1
        self._consume(n)

    def _header_end(self) -> int | None:
        """Length of the header through its empty line, None while incomplete; lines already
        looked at are not looked at again."""
        while (nl := self._buf.find(b"\n", self._scan)) >= 0:
            empty = not self._buf[self._scan:nl].rstrip(b"\r")
            self._scan = nl + 1
            if empty:
                return nl + 1
        return None

    def _header(self) -> _Header | None:
        end = self._header_end()
        if end is None and len(self._buf) <= MAX_HEADER:
            return None
        if end is None or end > MAX_HEADER:
            raise ProtocolError(f"control message header longer than {MAX_HEADER} bytes "
                                "without an empty line", field="header", offset=self._offset)
        head = _parse_header(bytes(self._buf[:end]), self._offset)
        self._scan = 0
        self._consume(end)
        return head


def _parse_header(raw: bytes, at: int) -> _Header:
    """The header bytes (through the empty line) of the message at stream offset `at`."""
    lines: list[tuple[int, str]] = []        # (stream offset, text) of each non-empty line
    pos = 0
    for line in raw.split(b"\n")[:-2]:       # the last two parts: the empty line, and b""
        lines.append((at + pos, line.rstrip(b"\r").decode("utf-8", "replace")))
        pos += len(line) + 1
    first = lines[0][1].strip()
    if not first.startswith("TiA "):
        raise ProtocolError(f"control message starts with {first[:40]!r}, expected 'TiA 1.0'",
                            field="version line", offset=at)
    if len(lines) < 2 or not lines[1][1].strip():
        raise ProtocolError("control message has no command line after the version line",
                            field="command line",
                            offset=lines[1][0] if len(lines) > 1 else at + len(raw) - 1)
    command, _, argument = lines[1][1].partition(":")
    headers: dict[str, str] = {}
    length = 0
    for line_at, line in lines[2:]:
        key, colon, value = line.partition(":")
        if not colon:
            raise ProtocolError(f"control header line {line[:40]!r} has no ':'",
                                field="header", offset=line_at)
        key, value = key.strip().lower(), value.strip()
        if key == "content-length":
            length = _content_length(value, headers.get(key), line_at)
        headers[key] = value
    msg = ControlMessage(command.strip(), argument.strip(), b"", first[4:].strip(), headers,
                         offset=at, body_offset=at + len(raw))
    return _Header(msg, length)


def _content_length(text: str, earlier: str | None, at: int) -> int:
    """A Content-Length value: ASCII digits (int() would take '²' or '١٢'), at most MAX_BODY,
    the same as an earlier one."""
    if not (text.isascii() and text.isdigit()):
        raise ProtocolError(f"Content-Length {text[:40]!r} is not a byte count",
                            field="Content-Length", offset=at)
    digits = text.lstrip("0") or "0"          # int() refuses more than 4300 digits
    if len(digits) > 9 or int(digits) > MAX_BODY:
        raise ProtocolError(f"Content-Length {text[:40]} is more than {MAX_BODY} bytes, the "
                            "most a control message may carry here", field="Content-Length",
                            offset=at)
    if earlier is not None and int(earlier.lstrip("0") or "0") != int(digits):
        raise ProtocolError(f"two Content-Length headers disagree: {earlier[:40]} and "
                            f"{text[:40]}", field="Content-Length", offset=at)
    return int(digits)
