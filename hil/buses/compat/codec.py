"""The data conventions of the legacy bus commands: escaped text, hex strings, end-of-transmission
lists, the characters plain reads drop, and the string-typed arguments ("undef", "2.5").

Pure functions, bytes and str in and out; every bad input is a `BusDataError` that names the
argument, the position and what was expected.
"""
from __future__ import annotations

import math
import re
from typing import Literal

from hil.errors import BusDataError

NibbleOrder = Literal["high_first", "low_first"]
NIBBLE_ORDERS: tuple[NibbleOrder, ...] = ("high_first", "low_first")
IGNORED = {0: None, 10: None, 13: None}    # NUL, LF, CR: dropped by the plain (text) reads
UNDEF = ("undef", "")                       # what the legacy API writes for "not given"

_SIMPLE_ESCAPES = {"\\": 0x5C, "'": 0x27, '"': 0x22, "a": 0x07, "b": 0x08, "f": 0x0C,
                   "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B, "e": 0x1B}
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|x.{0,2}|[0-7]{1,3}|.|\Z)", re.DOTALL)
_HEX = re.compile(r"[0-9a-fA-F]*")


def unescape(data: str | bytes, encoding: str = "utf-8", what: str = "data") -> bytes:
    r"""The bytes an escaped string stands for: \n \r \t \e (27) \\ \xHH \ooo ... as Python 2's
    `string_escape` (which the legacy modules used) plus the documented \e. Text is encoded with
    `encoding` first, so "\xff" is the byte 0xff and "é" its UTF-8 bytes. An unknown escape
    (\q) stays as it is, as it did; a cut \x escape or a trailing backslash is an error."""
    raw = data if isinstance(data, bytes) else _encode(data, encoding, what)
    if b"\\" not in raw:
        return raw

    def one(m: re.Match[bytes]) -> bytes:
        body = m.group(1).decode("latin-1")
        if body == "":
            raise BusDataError(f"{what} {_show(data)}: a trailing backslash escapes nothing "
                               r"(write \\ for a backslash)")
        if body[0] == "x":
            if len(body) != 3 or not all(c in "0123456789abcdefABCDEF" for c in body[1:]):
                raise BusDataError(f"{what} {_show(data)}: invalid escape \\{body} at "
                                   f"character {m.start()}: \\x needs two hex digits")
            return bytes([int(body[1:], 16)])
        if body[0] in "01234567":
            value = int(body, 8)
            if value > 0xFF:
                raise BusDataError(f"{what} {_show(data)}: octal escape \\{body} at character "
                                   f"{m.start()} is above \\377")
            return bytes([value])
        if body in _SIMPLE_ESCAPES:
            return bytes([_SIMPLE_ESCAPES[body]])
        return m.group(0)                   # unknown escape: kept, as string_escape did
    return _ESCAPE.sub(one, raw)


def hex_to_bytes(digits: str | bytes, order: NibbleOrder = "high_first",
                 what: str = "data") -> bytes:
    """Bytes written as hex, two characters a byte. `high_first` (the legacy modules' code,
    int(pair, 16)): "0a" is 0x0a. `low_first`: each pair's first character is the low nibble,
    so "a0" is 0x0a."""
    text = digits.decode("ascii", "replace") if isinstance(digits, bytes) else digits
    if not isinstance(text, str):
        raise BusDataError(f"{what}: expected a string of hex digits, got {type(digits).__name__}")
    good = _HEX.match(text).end()  # type: ignore[union-attr]
    if good < len(text):
        raise BusDataError(f"{what} {_show(text)}: {text[good]!r} at character {good} is not a "
                           "hex digit; expected pairs of 0-9 a-f, like '0a1bff'")
    if len(text) % 2:
        raise BusDataError(f"{what} {_show(text)}: odd number of hex digits ({len(text)}); "
                           "each byte is two digits, like '0a' for 10")
    if order == "low_first":
        text = "".join(text[i + 1] + text[i] for i in range(0, len(text), 2))
    return bytes.fromhex(text)


def bytes_to_hex(data: bytes, order: NibbleOrder = "high_first") -> str:
    """The hex string of `data` (lower case) in the given nibble order; see `hex_to_bytes`."""
    text = data.hex()
    if order == "low_first":
        text = "".join(text[i + 1] + text[i] for i in range(0, len(text), 2))
    return text


def end_markers(eot: str | bytes, encoding: str = "utf-8") -> list[bytes]:
    r"""The end-of-transmission markers of a comma-separated `eot` list, each unescaped
    ("\n,\r" -> [b"\n", b"\r"]). A marker may be several characters; empty ones are errors."""
    if isinstance(eot, bytes):
        parts = eot.split(b",")
    elif isinstance(eot, str):
        parts = eot.split(",")  # type: ignore[assignment]
    else:
        raise BusDataError(f"eot: expected a comma-separated string of end characters, "
                           f"got {type(eot).__name__}")
    if eot in UNDEF or eot == b"":
        raise BusDataError(r"eot: an end-of-transmission list is needed, like '\n' or '\r,\n'")
    markers = [unescape(p, encoding, "eot") for p in parts]
    for i, m in enumerate(markers):
        if not m:
            raise BusDataError(f"eot {_show(eot)}: item {i + 1} is empty (a doubled or trailing "
                               "comma?); each item is one or more characters")
    return markers


def drop_ignored(text: str) -> str:
    """A plain read's result without NUL, LF and CR, as the legacy text reads returned it."""
    return text.translate(IGNORED)


def timeout_arg(value: object, default: float) -> float:
    """A timeout argument: "undef"/""/None -> `default`, else seconds (str or number)."""
    if value is None or (isinstance(value, str) and value.strip() in UNDEF):
        return default
    seconds = _number(value, "timeout", "seconds, or 'undef' for the link's default")
    if not math.isfinite(seconds) or seconds < 0:
        raise BusDataError(f"timeout {value!r}: expected a finite number of seconds >= 0, "
                           "or 'undef' for the link's default")
    return seconds


def count_arg(value: object, what: str = "bytes_to_read") -> int:
    """A byte count argument (int or a string of digits), >= 0."""
    number = _number(value, what, "a whole number of bytes")
    if not number.is_integer() or number < 0:
        raise BusDataError(f"{what} {value!r}: expected a whole number of bytes >= 0")
    return int(number)


def _number(value: object, what: str, expected: str) -> float:
    if isinstance(value, bool):
        raise BusDataError(f"{what} {value!r}: expected {expected}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise BusDataError(f"{what} {value!r}: expected {expected}")


def _encode(text: object, encoding: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise BusDataError(f"{what}: expected str or bytes, got {type(text).__name__}")
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise BusDataError(f"{what} {_show(text)}: character {text[exc.start]!r} at "
                           f"{exc.start} has no {encoding} encoding") from None


def _show(value: str | bytes, limit: int = 60) -> str:
    """`value` for an error message, cut to `limit` characters."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit - 4] + "...'"
