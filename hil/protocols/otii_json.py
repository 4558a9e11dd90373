"""Otii TCP server wire format: one ASCII JSON object per CRLF-terminated line.

Pure codec shared by the Otii simulator (server side) and by the driver and tests (client
side): line framing, message builders, the error-reply shapes the vendor client reads (spec §6),
a fast writer for the large analog-data replies (`format_numbers`), and checks that turn a
decoded data reply into exact values (`analog_values`, `events`). No sockets, no threads: bytes
in, values out. Whatever a peer sends, decoding gives correct values or a ProtocolError naming
the field (and, for a line that is not JSON, the offset in it).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hil.errors import ProtocolError

PORT = 1905
CRLF = b"\r\n"
CHUNK_SIZE = 40_000          # values per recording_get_channel_data request of the vendor client
MAX_LINE_BYTES = 64 << 20    # longest line either side keeps (a 40 000-value chunk is ~1 MB)
MAX_NESTING = 500            # error messages name where a line nests deeper than this

#: Error codes of spec §6 and the `data` fields the vendor client reads for each (all strings,
#: except `value`, `max_size` and `data`, which may be any JSON value).
ERROR_FIELDS: dict[str, tuple[str, ...]] = {
    "Command failure": ("message",),
    "Device not connected": ("device_id",),
    "Invalid command": (),
    "Invalid key type": ("key", "expected_type", "received_type"),
    "Invalid key value": ("key", "value"),
    "Missing key in request": ("key",),
    "Not able to parse request": ("parse_error", "data"),
    "Request too large": ("read_size", "max_size"),
    "Command not valid for device type": (),
    "Command timeout": (),
    "Connection denied": (),
    "Could not login": (),
    "License could not be reserved": (),
    "License could not be returned": (),
    "No license": (),
    "Not logged in": (),
    "Not ready": (),
    "Operation not supported": (),
    "Project does not exist": (),
}
ERROR_CODES: tuple[str, ...] = tuple(ERROR_FIELDS)
_ANY_TYPED = {"value", "max_size", "data"}

_NO_ID = object()   # marks "the request carried no trans_id": the reply then carries none either


class ErrorReply(Exception):
    """An `error` reply received by a client: the server refused a request."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.code = str(reply.get("errorcode", ""))
        self.cmd = str(reply.get("cmd", ""))
        self.data = reply.get("data") if isinstance(reply.get("data"), dict) else {}
        detail = ", ".join(f"{k}={v!r}" for k, v in self.data.items())
        super().__init__(f"{self.cmd}: {self.code}" + (f" ({detail})" if detail else ""))


def check_reply(reply: dict[str, Any], trans_id: Any = _NO_ID) -> dict[str, Any]:
    """A reply's `data` if it answers `trans_id` and is not an error; else raise.

    ErrorReply for `type: error`; ProtocolError for a reply to another request, or one
    without `data`.
    """
    if reply.get("type") == "error":
        raise ErrorReply(reply)
    if trans_id is not _NO_ID and reply.get("trans_id") != trans_id:
        raise ProtocolError(f"reply carries trans_id {reply.get('trans_id')!r}, expected "
                            f"{trans_id!r}", field="trans_id")
    data = reply.get("data")
    if not isinstance(data, dict):
        raise ProtocolError(f"reply to {reply.get('cmd')!r} has no data object", field="data")
    return data


class RequestError(Exception):
    """A request the server refuses: becomes an `error` reply with `code` and `data`."""

    def __init__(self, code: str, **data: Any) -> None:
        super().__init__(f"{code}: {data}" if data else code)
        self.code = code
        self.data = data
        self.request: Request | None = None     # set when the line parsed far enough to reply


@dataclass(frozen=True)
class Request:
    """One parsed request line. `trans_id` is echoed verbatim (None when the request had none)."""

    cmd: str
    data: dict[str, Any] = field(default_factory=dict)
    trans_id: Any = None
    has_trans_id: bool = True
    has_data: bool = True

    @property
    def reply_id(self) -> Any:
        return self.trans_id if self.has_trans_id else _NO_ID


# ------------------------------------------------------------------------------- framing
def encode(message: dict[str, Any], line_end: bytes = CRLF) -> bytes:
    """One message as one ASCII line (non-ASCII escaped, no inner newlines) plus the line end."""
    return json.dumps(message, ensure_ascii=True, separators=(",", ":"),
                      allow_nan=False).encode("ascii") + line_end


def decode(line: bytes | str, where: str = "") -> dict[str, Any]:
    """Parse one line into a message object; anything else is a ProtocolError with field
    "line", naming `where` and the offset in the line where parsing failed."""
    try:
        obj = json.loads(line)
    except ValueError as exc:                   # json.JSONDecodeError, UnicodeDecodeError
        offset = getattr(exc, "pos", getattr(exc, "start", None))
        raise ProtocolError(f"Otii sent a line that is not JSON at offset {offset} of the "
                            f"line ({_reason(exc)}): {_shown(line)}", field="line",
                            where=where, offset=offset) from None
    except RecursionError:
        offset = _nesting_offset(line)
        raise ProtocolError(f"Otii sent a line nested more than {MAX_NESTING} deep at offset "
                            f"{offset} of the line: {_shown(line)}", field="line", where=where,
                            offset=offset) from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"Otii sent JSON that is not an object: {json_type(obj)}",
                            field="line", where=where, offset=0)
    return obj


def _reason(exc: ValueError) -> str:
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)


def _shown(line: bytes | str) -> str:
    text = line[:80] if isinstance(line, str) else line[:80].decode("utf-8", "replace")
    return repr(text) + (f" ... ({len(line)} long)" if len(line) > 80 else "")


def _nesting_offset(line: bytes | str) -> int | None:
    """Offset of the bracket that nests `line` more than MAX_NESTING deep (strings skipped)."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    depth, in_string, escaped = 0, False, False
    for k, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return k
        elif ch in "]}":
            depth -= 1
    return None


@dataclass(frozen=True)
class Oversized:
    """In LineSplitter output: a line longer than its limit, dropped (`size` bytes without
    its line end)."""

    size: int


class LineSplitter:
    """Server-side framing: split on LF, strip one trailing CR, drop empty lines (spec §1).

    A line longer than `max_bytes` is not kept: its bytes are dropped as they come and, when
    its end arrives, it comes out as `Oversized(size)` in its place, so the server answers it
    once and in order.
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._dropped = 0              # bytes of the current line dropped for its size

    def feed(self, data: bytes) -> list[bytes | Oversized]:
        self._buf += data
        out: list[bytes | Oversized] = []
        if b"\n" in data:
            *lines, rest = bytes(self._buf).split(b"\n")
            self._buf = bytearray(rest)
            for ln in lines:
                if ln.endswith(b"\r"):
                    ln = ln[:-1]
                size, self._dropped = self._dropped + len(ln), 0
                if size > self.max_bytes:
                    out.append(Oversized(size))
                elif ln.strip():
                    out.append(ln)
        if len(self._buf) > self.max_bytes:
            self._dropped += len(self._buf)
            self._buf.clear()
        return out

    @property
    def pending(self) -> int:
        """Bytes kept of the line not yet ended."""
        return len(self._buf)


class CrlfSplitter:
    """Client-side framing exactly like the vendor client: only CRLF ends a line. A line
    growing past `max_bytes` is a ProtocolError (the vendor client would keep reading)."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES, where: str = "") -> None:
        self.max_bytes, self.where = max_bytes, where
        self._buf = bytearray()
        self._scan = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while (end := self._buf.find(CRLF, self._scan)) >= 0:
            if end > self.max_bytes:
                break
            out.append(bytes(self._buf[:end]))
            del self._buf[:end + 2]
            self._scan = 0
        if len(self._buf) - (self._buf.endswith(b"\r")) > self.max_bytes:
            raise ProtocolError(f"Otii sent a line longer than {self.max_bytes} bytes without "
                                f"CRLF (offset {self.max_bytes} of the line)", field="line",
                                where=self.where, offset=self.max_bytes)
        self._scan = max(0, len(self._buf) - 1)
        return out


# ------------------------------------------------------------------------------- messages
def request(cmd: str, data: dict[str, Any] | None = None, trans_id: Any = None) -> dict[str, Any]:
    """A request like the vendor client builds it: no `data` key when there are no parameters."""
    msg: dict[str, Any] = {"type": "request", "cmd": cmd}
    if data is not None:
        msg["data"] = data
    if trans_id is not None:
        msg["trans_id"] = trans_id
    return msg


def _with_id(msg: dict[str, Any], trans_id: Any) -> dict[str, Any]:
    if trans_id is not _NO_ID:
        msg["trans_id"] = trans_id
    return msg


def response(cmd: str, trans_id: Any, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A successful reply; `data` is always present (at least {})."""
    msg = _with_id({"type": "response", "cmd": cmd}, trans_id)
    msg["data"] = {} if data is None else data
    return msg


def error(code: str, cmd: str = "", trans_id: Any = "", **fields: Any) -> dict[str, Any]:
    """An error reply whose `data` carries every field the vendor client reads for `code`.

    Missing fields are filled with placeholders and string fields are made strings, so the
    client raises `Otii_Exception` (never KeyError/TypeError) for every code.
    """
    data = dict(fields)
    for name in ERROR_FIELDS.get(code, ()):
        if name not in data:
            data[name] = "" if name not in _ANY_TYPED else None
        elif name not in _ANY_TYPED and not isinstance(data[name], str):
            data[name] = str(data[name])
    msg = {"type": "error", "errorcode": code, "cmd": cmd}
    _with_id(msg, trans_id)
    msg["data"] = data
    return msg


def error_for(req: Request, exc: RequestError) -> dict[str, Any]:
    return error(exc.code, req.cmd, req.reply_id, **exc.data)


def greeting(otii_version: str = "3.6.0", protocol_version: str = "0.1",
             server: str = "otii-server") -> dict[str, Any]:
    """The unsolicited first message of every connection (spec §3.1)."""
    return {"type": "information", "info": "connected",
            "data": {"otii_version": otii_version, "protocol_version": protocol_version,
                     "server": server}}


def denied(message: str) -> dict[str, Any]:
    """Refusing a connection: `trans_id` must be "" so the client raises Otii_Exception."""
    msg = error("Connection denied", "", "", message=message)
    msg["payload"] = {"message": message}
    return msg


def progress(cmd: str, trans_id: Any, value: float) -> dict[str, Any]:
    return _with_id({"type": "progress", "cmd": cmd}, trans_id) | {"progress_value": value}


def parse_request(line: bytes | str) -> Request:
    """A request line -> Request; a line that is not a JSON request raises RequestError."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError) as exc:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        reason = (f"nested more than {MAX_NESTING} deep at offset {_nesting_offset(line)}"
                  if isinstance(exc, RecursionError) else str(exc))
        raise RequestError("Not able to parse request", parse_error=reason,
                           data=text[:1000]) from None
    if not isinstance(msg, dict):
        raise RequestError("Not able to parse request", parse_error="not a JSON object",
                           data=msg)
    cmd = msg.get("cmd")
    has_id = "trans_id" in msg
    data = msg.get("data", {})
    req = Request(cmd if isinstance(cmd, str) else "", data if isinstance(data, dict) else {},
                  msg.get("trans_id"), has_id, "data" in msg)
    exc = None
    if not isinstance(cmd, str):
        exc = RequestError("Missing key in request", key="cmd")
    elif not isinstance(data, dict):
        exc = RequestError("Invalid key type", key="data", expected_type="object",
                           received_type=json_type(data))
    if exc is not None:
        exc.request = req
        raise exc
    return req


def json_type(value: Any) -> str:
    """JSON type name of a decoded value, as used in `Invalid key type` replies."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# ------------------------------------------------------------------------------- bulk data
_LUT4 = np.frombuffer("".join(f"{i:04d}" for i in range(10_000)).encode(), dtype=np.uint8)
_LUT4 = _LUT4.reshape(10_000, 4)
_LUT2 = _LUT4[:100, 2:]
_POW10 = 10.0 ** np.arange(-120, 121)          # _POW10[k + 120] == 10**k


def format_numbers(values: np.ndarray, digits: int) -> bytes:
    """Values as comma-separated JSON numbers with `digits` significant digits.

    Every number has the same width: an integer mantissa and a two-digit exponent, e.g.
    `31002e-07` (3.1002e-3); negative values keep one digit less (`-4201e-13`) and zero is
    `0.000e+00` (as wide as the others). Fixed width means the text is one numpy byte matrix
    filled column by column (digits from a lookup table), with no per-value Python work: about
    10x faster than `repr` per value, and `json.loads` reads every number back as a float.
    """
    if not 2 <= digits <= 15:
        raise ValueError(f"digits must be within 2..15, got {digits}")
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size
    if n == 0:
        return b""
    if not np.isfinite(v).all():
        raise ValueError("JSON has no NaN or infinity")
    neg = v < 0
    kept = np.where(neg, digits - 1, digits)              # significant digits of each value
    a = np.abs(v)
    zero = a < 1e-80                                      # below any instrument resolution
    a[zero] = 1.0
    e = np.floor(np.log10(a)).astype(np.int64) - (kept - 1)   # value = m * 10**e
    m = np.rint(a * _POW10[120 - e])
    high = m >= _POW10[120 + kept]                      # log10 rounded down a power too far
    e[high] += 1
    m[high] = np.rint(a[high] * _POW10[120 - e[high]])
    if np.abs(e).max() > 99:
        raise ValueError("value out of the range of a two-digit exponent")
    m = m.astype(np.int64)
    width = digits + 4
    mat = np.empty((n, width + 1), dtype=np.uint8)
    rest, col = m, digits
    while col > 0:                                        # mantissa, four digits at a time
        take = min(4, col)
        rest, r = np.divmod(rest, 10 ** take)
        mat[:, col - take:col] = _LUT4[r, 4 - take:]
        col -= take
    mat[neg, 0] = ord("-")
    mat[:, digits] = ord("e")
    mat[:, digits + 1] = np.where(e < 0, ord("-"), ord("+"))
    mat[:, digits + 2:digits + 4] = _LUT2[np.abs(e)]
    mat[:, width] = ord(",")
    if zero.any():
        text = b"0." + b"0" * (digits - 2) + b"e+00," if digits > 2 else b"0e+000,"
        mat[zero] = np.frombuffer(text, dtype=np.uint8)
    return mat.tobytes()[:-1]


def analog_reply(cmd: str, trans_id: Any, timestamp: float, interval: float, numbers: bytes,
                 line_end: bytes = CRLF) -> bytes:
    """The encoded line of an analog `recording_get_channel_data` reply around pre-formatted
    numbers (from `format_numbers`), without building a list of floats."""
    head = {"type": "response", "cmd": cmd}
    _with_id(head, trans_id)
    head_text = json.dumps(head, separators=(",", ":"))[:-1]
    return b"".join((
        head_text.encode("ascii"),
        b',"data":{"data_type":"analog","timestamp":', repr(float(timestamp)).encode(),
        b',"interval":', repr(float(interval)).encode(), b',"values":[', numbers, b"]}}",
        line_end))


# ------------------------------------------------------------------------------- bulk data: reading
def analog_values(data: Any, count: int, where: str = "") -> tuple[float, float, np.ndarray]:
    """(timestamp of the first value, interval, values) of the `data` of an analog
    `recording_get_channel_data` reply that must hold exactly `count` values.

    The values must be finite JSON numbers (a bool, string, null, NaN or an integer beyond any
    double is refused, never converted): the result is exactly json.loads' numbers as float64.
    """
    if not isinstance(data, dict):
        raise ProtocolError(f"analog data is {json_type(data)}, not an object", field="data",
                            where=where)
    kind = data.get("data_type", "analog")
    if kind != "analog":
        raise ProtocolError(f"data_type {kind!r}, expected 'analog'", field="data_type",
                            where=where)
    timestamp = finite_number(data, "timestamp", where)
    interval = finite_number(data, "interval", where)
    items = data.get("values")
    if not isinstance(items, list):
        raise ProtocolError(f"values is {json_type(items)}, not an array", field="values",
                            where=where)
    if len(items) != count:
        raise ProtocolError(f"{len(items)} values, {count} asked for", field="values",
                            where=where)
    return timestamp, interval, numbers_array(items, "values", where)


def numbers_array(items: list[Any], field: str = "values", where: str = "") -> np.ndarray:
    """A decoded JSON list as float64; anything but finite numbers is a ProtocolError naming
    `field` and the index of the first bad item."""
    if set(map(type, items)) <= {float, int}:       # bool is no number: type() excludes it
        try:
            values = np.array(items, dtype=np.float64)
        except OverflowError:                       # an integer beyond any double
            values = None
        if values is not None and np.isfinite(values).all():
            return values
    k, item = next((k, item) for k, item in enumerate(items) if _finite(item) is None)
    shown = repr(item) if len(repr(item)) <= 40 else repr(item)[:37] + "..."
    raise ProtocolError(f"{field}[{k}] is {json_type(item)} {shown}, not a finite number",
                        field=field, where=where)


def finite_number(data: dict[str, Any], key: str, where: str = "") -> float:
    """data[key] as a float if it is a finite JSON number, else a ProtocolError naming `key`."""
    value = _finite(data.get(key))
    if value is None:
        raise ProtocolError(f"{key} is {json_type(data.get(key))} {data.get(key)!r}, not a "
                            f"finite number", field=key, where=where)
    return value


def events(data: Any, value: type = object, where: str = "") -> list[dict[str, Any]]:
    """The `values` of a digital or log `recording_get_channel_data` reply: entries with a
    finite `timestamp` and a `value` of type `value` (bool for i1/i2, str for rx)."""
    items = data.get("values") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ProtocolError(f"values is {json_type(items)}, not an array", field="values",
                            where=where)
    for k, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("value"), value):
            got = json_type(item.get("value")) if isinstance(item, dict) else json_type(item)
            raise ProtocolError(f"values[{k}] has no {value.__name__} value ({got})",
                                field="values", where=where)
        if _finite(item.get("timestamp")) is None:
            raise ProtocolError(f"values[{k}] has timestamp {item.get('timestamp')!r}, not a "
                                f"finite number", field="values", where=where)
    return items


def _finite(item: Any) -> float | None:
    """float(item) for a finite JSON number (bool is no number), else None."""
    if type(item) not in (int, float):
        return None
    try:
        value = float(item)
    except OverflowError:                       # an integer beyond any double
        return None
    return value if math.isfinite(value) else None
