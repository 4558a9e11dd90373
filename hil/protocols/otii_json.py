"""Otii TCP server wire format: one ASCII JSON object per CRLF-terminated line.

Pure codec shared by the Otii simulator (server side) and by tests and thin readers (client
side): line framing, message builders, the error-reply shapes the vendor client reads (spec §6),
and fast paths for the large analog-data replies: writing them (`format_numbers`) and reading
them (`decode_values`, `parse_numbers`). No sockets, no threads: bytes in, values out.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hil.errors import ProtocolError

PORT = 1905
CRLF = b"\r\n"
CHUNK_SIZE = 40_000          # values per recording_get_channel_data request of the vendor client

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
    """Parse one line into a message object; anything else is a ProtocolError naming `where`."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        shown = line[:80] if isinstance(line, str) else line[:80].decode("utf-8", "replace")
        raise ProtocolError(f"Otii sent a line that is not JSON ({exc}): {shown!r}",
                            where=where) from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"Otii sent JSON that is not an object: {type(obj).__name__}",
                            where=where)
    return obj


class LineSplitter:
    """Server-side framing: split on LF, strip one trailing CR, drop empty lines (spec §1)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        if b"\n" not in data:
            return []
        *lines, rest = bytes(self._buf).split(b"\n")
        self._buf = bytearray(rest)
        out = []
        for ln in lines:
            if ln.endswith(b"\r"):
                ln = ln[:-1]
            if ln.strip():
                out.append(ln)
        return out

    @property
    def pending(self) -> int:
        """Bytes received after the last complete line."""
        return len(self._buf)


class CrlfSplitter:
    """Client-side framing exactly like the vendor client: only CRLF ends a line."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while (end := self._buf.find(CRLF, self._scan)) >= 0:
            out.append(bytes(self._buf[:end]))
            del self._buf[:end + 2]
            self._scan = 0
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
    except (ValueError, UnicodeDecodeError) as exc:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        raise RequestError("Not able to parse request", parse_error=str(exc), data=text) from None
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
VALUES_KEY = b'"values":['
#: Numbers read per step of the fast path (its temporaries stay small: no page faults).
PARSE_BLOCK = 8192
#: Longest number the fast path reads (longer ones go through json.loads).
PARSE_MAX_WIDTH = 32
#: Numbers of a block that may differ from its shapes and be read one by one.
PARSE_STRAYS = 64
_SHAPES_PER_BLOCK = 3
_NUMBER = re.compile(rb"(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([+-]?)([0-9]+))?")
_EXACT_POW10 = 10.0 ** np.arange(23)            # every power of ten a double holds exactly


def decode_values(line: bytes, where: str = "") -> tuple[dict[str, Any], bytes | None]:
    """A reply line parsed except for the `data.values` array: (message with that array
    emptied, the text between its brackets) for `parse_numbers`. Lines without such an array
    (errors, other commands, unusual spacing) come back whole: (message, None).

    The cut is proven right, not assumed: the rest must parse as JSON with `data.values` == [].
    """
    i = line.rfind(VALUES_KEY)
    j = line.rfind(b"]")
    if i >= 0 and j >= i + len(VALUES_KEY):
        head = line[:i + len(VALUES_KEY)] + line[j:]
        try:
            msg = json.loads(head)
        except (ValueError, UnicodeDecodeError):
            msg = None
        if (isinstance(msg, dict) and isinstance(msg.get("data"), dict)
                and msg["data"].get("values") == []):
            return msg, line[i + len(VALUES_KEY):j]
    return decode(line, where=where), None


def parse_numbers(text: bytes, out: np.ndarray | None = None, *, field: str = "values",
                  where: str = "") -> np.ndarray:
    """The JSON numbers of `text`, the inside of a JSON array (`1,-2.5e-3,0`), as float64:
    exactly what json.loads and float() make of them. Written into `out` when given (its size
    must match). Anything but numbers (NaN and Infinity included) raises a ProtocolError
    naming `field`.

    Fast path, for numbers of one width (what the simulator and printf-style servers send):
    a block of numbers becomes a byte matrix, one row per character position; the shape of one
    number (sign, digits, point, exponent) is checked against every row at once and the values
    computed from the digit rows. Each value is mantissa * 10**e, or mantissa / 10**-e, with an
    integer mantissa below 2**53 and |e| <= 22: both are exact doubles, so the one rounding is
    the correctly rounded result, as float() gives (Clinger's fast path). Numbers outside that
    are read one by one; other text goes through json.loads.
    """
    values = _fixed_width_numbers(text, out)
    if values is None:
        values = _json_numbers(text, field, where)
    if out is not None and values is not out:
        if values.size != out.size:
            raise ProtocolError(f"Otii sent {values.size} {field}, expected {out.size}",
                                field=field, where=where)
        out[...] = values
        return out
    return values


def _json_numbers(text: bytes, field: str, where: str) -> np.ndarray:
    """The exact, slow reading: json.loads, then every item must be a number."""
    def no_constants(name: str) -> float:
        raise ValueError(f"{name} is not a JSON number")

    try:
        items = json.loads(b"[" + bytes(text) + b"]", parse_constant=no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"Otii sent {field} that are not a JSON array of numbers ({exc}): "
                            f"{bytes(text[:80])!r}", field=field, where=where) from None
    return numbers_array(items, field, where)


def numbers_array(items: list[Any], field: str = "values", where: str = "") -> np.ndarray:
    """A decoded JSON list as float64; anything but finite numbers is a ProtocolError."""
    for k, item in enumerate(items):
        if _finite(item) is None:
            shown = repr(item) if len(repr(item)) <= 40 else repr(item)[:37] + "..."
            raise ProtocolError(f"Otii sent {field} with {json_type(item)} {shown} at index "
                                f"{k}, not a finite number", field=field, where=where)
    return np.array(items, dtype=np.float64)


def _finite(item: Any) -> float | None:
    """float(item) for a finite JSON number (bool is no number), else None."""
    if type(item) not in (int, float):
        return None
    try:
        value = float(item)
    except OverflowError:                       # an integer beyond any double
        return None
    return value if math.isfinite(value) else None


def _fixed_width_numbers(text: bytes, out: np.ndarray | None) -> np.ndarray | None:
    """The fast path of `parse_numbers`, or None when `text` is not for it."""
    n = len(text)
    if n == 0:
        return np.zeros(0)
    w = text.find(b",")
    w = n if w < 0 else w
    if not 1 <= w <= PARSE_MAX_WIDTH or (n + 1) % (w + 1):
        return None
    count = (n + 1) // (w + 1)
    if out is not None and out.size != count:
        return None                                  # the caller reports the count
    b = np.frombuffer(text, dtype=np.uint8)
    if count > 1 and not np.all(b[w::w + 1] == 44):  # a comma after every number
        return None
    rows = np.lib.stride_tricks.as_strided(b, shape=(w, count), strides=(1, w + 1),
                                           writeable=False)
    values = np.empty(count) if out is None else out
    for i in range(0, count, PARSE_BLOCK):
        block = np.ascontiguousarray(rows[:, i:i + PARSE_BLOCK])
        size = block.shape[1]
        pending: np.ndarray | None = None           # rows still to read; None: all of them
        for _ in range(_SHAPES_PER_BLOCK):
            # the shape: of the middle number (first and last are likelier to be odd ones)
            k = i + (size // 2 if pending is None else int(pending[pending.size // 2]))
            shaped = _shaped_numbers(block, text[k * (w + 1):k * (w + 1) + w])
            if shaped is None:
                break
            got, ok = shaped
            if pending is None:                     # all at once; misfits are read again
                values[i:i + size] = got
                pending = np.flatnonzero(~ok)
                block = block[:, pending]
            else:
                values[i + pending] = got
                pending, block = pending[~ok], block[:, ~ok]
            if pending.size <= PARSE_STRAYS // 4:
                break
        if pending is None or pending.size > PARSE_STRAYS:
            return None
        for k in (i + pending).tolist():             # strays: one by one, exactly
            number = _one_number(text[k * (w + 1):k * (w + 1) + w])
            if number is None:
                return None
            values[k] = number
    return values


def _one_number(token: bytes) -> float | None:
    try:
        item = json.loads(token, parse_constant=lambda name: None)
    except (ValueError, UnicodeDecodeError):
        return None
    return _finite(item)


def _shaped_numbers(chars: np.ndarray, token: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, ok) for the numbers in the columns of `chars` (a row per character position),
    ok where a number has the shape of `token` (its sign may differ) and the fast path's exact
    range. None when `token` is no JSON number or has more digits than the fast path takes."""
    shape = _NUMBER.fullmatch(token)
    if shape is None:
        return None
    minus, whole, frac, exp_sign, exp = shape.groups()
    width, m = chars.shape
    ints = len(minus) + len(whole)                   # rows of sign and integer digits
    fracs = -1 if frac is None else len(frac)
    digits = ints + max(fracs, 0)
    if digits > 18 or (exp is not None and len(exp) > 4):
        return None
    d = chars - np.uint8(48)                         # digit values (other bytes wrap past 9)
    neg = chars[0] == 45
    ok = (d[1:ints] < 10).all(axis=0)
    if ints >= 2:          # a minus sign takes the place of the first digit
        ok &= neg | (d[0] < 10)
        # JSON: an integer part of several digits does not start with 0
        ok &= ~((d[0] == 0) | (neg & (d[1] == 0) & (ints > 2)))
    else:
        ok &= d[0] < 10
    mantissa = d[0].astype(np.int64)
    mantissa[neg] = 0
    for r in range(1, ints):
        mantissa *= 10
        mantissa += d[r]
    row = ints
    if fracs >= 0:
        ok &= chars[row] == 46
        ok &= (d[row + 1:row + 1 + fracs] < 10).all(axis=0)
        for r in range(row + 1, row + 1 + fracs):
            mantissa *= 10
            mantissa += d[r]
        row += 1 + fracs
    scale = np.full(m, -max(fracs, 0), dtype=np.int64)
    if exp is not None:
        ok &= (chars[row] | 32) == 101                # e or E
        row += 1
        exp_neg = None
        if exp_sign:
            exp_neg = chars[row] == 45
            ok &= exp_neg | (chars[row] == 43)
            row += 1
        ok &= (d[row:row + len(exp)] < 10).all(axis=0)
        power = d[row].astype(np.int64)
        for r in range(row + 1, row + len(exp)):
            power *= 10
            power += d[r]
        if exp_neg is not None:
            np.negative(power, out=power, where=exp_neg)
        scale += power
        row += len(exp)
    if row != width:
        return None
    ok &= (scale >= -22) & (scale <= 22)
    if digits > 15:
        ok &= mantissa < 1 << 53
    np.clip(scale, -22, 22, out=scale)
    values = mantissa * _EXACT_POW10[np.maximum(scale, 0)]
    values /= _EXACT_POW10[np.maximum(-scale, 0)]
    np.negative(values, out=values, where=neg)
    if fracs < 0 and exp is None:                    # json reads an integer: -0 is 0
        values[neg & (mantissa == 0)] = 0.0
    return values, ok
