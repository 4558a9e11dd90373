"""TiA 1.0 control messages, both ways (spec §2): encode, and an incremental parser fed bytes.

A message is a version line, a command or status line (`Name` or `Name: argument`), optional
header lines (`Content-Length: n`), an empty line and n bytes of body. Parsing is tolerant as
peers differ: spacing around ':' is free, CRLF is accepted, `Content-Length` is matched in any
case, several messages may arrive in one segment and one message in several. We always send LF.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from hil.errors import ProtocolError

VERSION = "1.0"
MAX_HEADER = 64 * 1024   # a header longer than this has no end: the peer is not speaking TiA

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
    """One control message: `command` line (split at the first ':'), headers and body bytes."""

    command: str
    argument: str = ""
    body: bytes = b""
    version: str = VERSION
    headers: dict[str, str] = field(default_factory=dict, compare=False)

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


class ControlParser:
    """Incremental parser: `feed(bytes)` returns the messages completed so far, in order."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._offset = 0          # stream offset of _buf[0], for error messages
        self._pending: tuple[ControlMessage, int] | None = None   # header parsed, body awaited

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[ControlMessage]:
        self._buf += data
        out: list[ControlMessage] = []
        while (msg := self._next()) is not None:
            out.append(msg)
        return out

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n

    def _next(self) -> ControlMessage | None:
        if self._pending is None:
            self._skip_blank_lines()
            header = self._header()
            if header is None:
                return None
            self._pending = header
        msg, length = self._pending
        if len(self._buf) < length:
            return None
        self._pending = None
        body = bytes(self._buf[:length])
        self._consume(length)
        return ControlMessage(msg.command, msg.argument, body, msg.version, msg.headers)

    def _skip_blank_lines(self) -> None:
        """Stray line ends between messages (some peers add them) are not messages."""
        n = 0
        while n < len(self._buf) and self._buf[n] in b"\r\n":
            n += 1
        self._consume(n)

    def _header(self) -> tuple[ControlMessage, int] | None:
        lines: list[str] = []
        pos = 0
        while True:
            nl = self._buf.find(b"\n", pos)
            if nl < 0:
                if len(self._buf) > MAX_HEADER:
                    raise ProtocolError(f"control message header longer than {MAX_HEADER} bytes "
                                        "without an empty line", field="header",
                                        where=f"stream offset {self._offset}")
                return None
            line = bytes(self._buf[pos:nl]).rstrip(b"\r")
            pos = nl + 1
            if not line:
                break
            lines.append(line.decode("utf-8", "replace"))
        start = self._offset
        msg, length = self._parse_header(lines, start)
        self._consume(pos)
        return msg, length

    @staticmethod
    def _parse_header(lines: list[str], where: int) -> tuple[ControlMessage, int]:
        first = lines[0].strip() if lines else ""
        if not first.startswith("TiA "):
            raise ProtocolError(f"control message starts with {first[:40]!r}, expected 'TiA 1.0'",
                                field="version line", where=f"stream offset {where}")
        if len(lines) < 2 or not lines[1].strip():
            raise ProtocolError("control message has no command line after the version line",
                                field="command line", where=f"stream offset {where}")
        command, _, argument = lines[1].partition(":")
        headers: dict[str, str] = {}
        for line in lines[2:]:
            key, colon, value = line.partition(":")
            if not colon:
                raise ProtocolError(f"control header line {line[:40]!r} has no ':'",
                                    field="header", where=f"stream offset {where}")
            headers[key.strip().lower()] = value.strip()
        length = 0
        if "content-length" in headers:
            text = headers["content-length"]
            if not text.isdigit():
                raise ProtocolError(f"Content-Length {text!r} is not a byte count",
                                    field="Content-Length", where=f"stream offset {where}")
            length = int(text)
        msg = ControlMessage(command.strip(), argument.strip(), b"", first[4:].strip(), headers)
        return msg, length
