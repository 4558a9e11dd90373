"""Configuration strings of the legacy bus commands: `tcp(host=10.0.0.3,port=2300,timeout=2)`.

Syntax: `module(key=value,key=value,...)`, or just `key=value,...`. Spaces around keys and
values are dropped; a value may hold a nested conf string (`bus=tcp(host=h,port=1)`), whose
commas do not split. A value `undef` means "not given" (the default applies). Each module
states its keys (`Key`): an unknown, repeated, missing or malformed key is a `RigError` naming
the key, the link and the conf string.
"""
from __future__ import annotations

import codecs
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hil.buses.compat.codec import NIBBLE_ORDERS
from hil.errors import RigError


@dataclass(frozen=True)
class Key:
    """One key of a conf string: how its text becomes a value (`parse` raises ValueError with
    what was expected), its default, and a line of help."""

    parse: Callable[[str], Any]
    default: Any = None
    required: bool = False
    help: str = ""


@dataclass(frozen=True)
class Conf:
    """A parsed conf string: the module name ("" if not given) and the raw values by key."""

    name: str
    params: Mapping[str, str]


def parse(conf_string: str, where: str = "") -> Conf:
    """Split a conf string into its module name and `key=value` pairs (values stay text)."""
    if not isinstance(conf_string, str):
        raise RigError(f"{where}conf string: expected a str like 'tcp(host=h,port=1)', got "
                       f"{type(conf_string).__name__}")
    text = conf_string.strip()
    name, body = "", text
    if "(" in text.split("=", 1)[0]:
        name, _, body = text.partition("(")
        name = name.strip()
        if not body.endswith(")"):
            raise _error(conf_string, where, "must end with ')', as in name(key=value,...)")
        body = body[:-1]
        if not name.isidentifier():
            raise _error(conf_string, where, f"module name {name!r} is not a name")
    params: dict[str, str] = {}
    for item in _split(body, conf_string, where):
        key, equal, value = item.partition("=")
        key = key.strip()
        if not equal or not key.isidentifier():
            raise _error(conf_string, where, f"item {item.strip()!r} is not key=value")
        if key in params:
            raise _error(conf_string, where, "is given twice", key)
        params[key] = value.strip()
    return Conf(name, params)


def settings(conf_string: str, module: str, keys: Mapping[str, Key],
             where: str = "") -> dict[str, Any]:
    """Parse `conf_string` for `module` and check it against `keys`: a dict of every key's
    value (its default when not given or `undef`)."""
    conf = parse(conf_string, where)
    if conf.name and conf.name != module:
        raise _error(conf_string, where, f"is for module {conf.name!r}; this is {module!r} "
                     f"(write {module}(...))")
    values: dict[str, Any] = {}
    for key, value in conf.params.items():
        if key not in keys:
            raise _error(conf_string, where, f"unknown key; {module} takes "
                         f"{', '.join(keys)}", key)
    for key, spec in keys.items():
        text = conf.params.get(key, "undef")
        if text == "undef":
            if spec.required:
                raise _error(conf_string, where, f"is missing: {spec.help}", key)
            values[key] = spec.default
            continue
        try:
            values[key] = spec.parse(text)
        except ValueError as exc:
            raise _error(conf_string, where, f"value {text!r}: {exc}", key) from None
    return values


# ------------------------------------------------------------------ value parsers
def integer(low: int, high: int) -> Callable[[str], int]:
    def parse_int(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise ValueError(f"expected a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value
    return parse_int


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected seconds, a number > 0 like 2 or 0.5") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("expected seconds, a number > 0 like 2 or 0.5")
    return value


def choice(*options: str) -> Callable[[str], str]:
    def parse_choice(text: str) -> str:
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text
    return parse_choice


def text(value: str) -> str:
    if not value:
        raise ValueError("expected a non-empty value")
    return value


def encoding(value: str) -> str:
    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError("unknown text encoding") from None
    return value


def flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1 or 0 (true/false)")


#: Keys every module takes: the link's default timeout and the hil additions.
COMMON_KEYS: dict[str, Key] = {
    "timeout": Key(seconds, 60.0, help="default timeout of the link's reads, s (60)"),
    "nibbles": Key(choice(*NIBBLE_ORDERS), "high_first",
                   help="hex digit order of the _bin_ functions within a byte"),
    "encoding": Key(encoding, "utf-8", help="text encoding of the plain functions"),
    "skip_nul": Key(flag, False, help="expect ignores NUL bytes received inside the pattern"),
}


# ------------------------------------------------------------------ helpers
def _split(body: str, conf_string: str, where: str) -> list[str]:
    """`body` split at its top-level commas (commas inside parentheses do not split)."""
    items, depth, start = [], 0, 0
    for i, c in enumerate(body):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise _error(conf_string, where, f"unbalanced ')' at character {i}")
        elif c == "," and depth == 0:
            items.append(body[start:i])
            start = i + 1
    if depth:
        raise _error(conf_string, where, "unbalanced '(': a ')' is missing")
    items.append(body[start:])
    return [item for item in items if item.strip()]


def _error(conf_string: str, where: str, problem: str, key: str | None = None) -> RigError:
    subject = f"key '{key}' " if key else ""
    error = RigError(f"{where}conf string {conf_string!r}: {subject}{problem}")
    error.key = key                         # named in the message already
    return error
