"""The STTP filter-expression subset the publisher simulator evaluates (spec §6.2).

`select(expression, rows)` returns the rows (ActiveMeasurements: dicts of column → value) an
expression names: several statements separated by `;` (outside quotes and braces), each either
`FILTER [TOP n] ActiveMeasurements WHERE <condition> [ORDER BY <column> [ASC|DESC]]` or a plain
signal GUID, `SOURCE:n` key or point tag. Conditions: `=`, `==`, `<>`, `!=`, `<`, `<=`, `>`,
`>=`, `[NOT] LIKE` (`%`, `_`), `[NOT] IN (…)`, `IS [NOT] NULL`, combined with AND / OR / NOT and
parentheses; columns and keywords are case-insensitive, string comparison is case-insensitive.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from hil.errors import ProtocolError
from hil.protocols.sttp_frames import split_top_level

Row = dict[str, Any]
Predicate = Callable[[Row], bool]
TABLES = ("activemeasurements",)
_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^']|'')*')
  | (?P<brace>\{[^{}]*\})
  | (?P<num>-?\d+(?:\.\d+)?(?![\w:-]))
  | (?P<op><>|!=|<=|>=|==|=|<|>|\(|\)|,)
  | (?P<word>[A-Za-z_][\w.:-]*)
)""", re.VERBOSE)


def select(expression: str, rows: Sequence[Row]) -> list[Row]:
    """Rows matched by the expression, without repeats, in statement order."""
    chosen: dict[int, Row] = {}
    for statement in split_top_level(expression, ";"):
        statement = statement.strip()
        if statement:
            for row in _statement(statement, rows):
                chosen.setdefault(id(row), row)
    return list(chosen.values())


def _statement(text: str, rows: Sequence[Row]) -> list[Row]:
    if not text.upper().startswith("FILTER "):
        return [r for r in rows if _names(r, text.strip("{} '\""))]
    parser = _Parser(text)
    return parser.run(rows)


def _names(row: Row, ident: str) -> bool:
    """A plain identifier: signal GUID, measurement key or point tag (case-insensitive)."""
    try:
        return uuid.UUID(ident) == uuid.UUID(str(row.get("signalid")))
    except ValueError:
        low = ident.lower()
        return low in (str(row.get("id", "")).lower(), str(row.get("pointtag", "")).lower())


def _like(pattern: str) -> re.Pattern[str]:
    parts = ("." if c == "_" else ".*" if c == "%" else re.escape(c) for c in pattern)
    return re.compile("^" + "".join(parts) + "$", re.IGNORECASE | re.DOTALL)


def _key(value: Any) -> Any:
    """Values compared case-insensitively as text, numbers as numbers, GUIDs normalised."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = str(value).strip("{}")
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text.lower()


def _compare(op: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    a, b = _key(a), _key(b)
    if isinstance(a, str) != isinstance(b, str):
        a, b = str(a).lower(), str(b).lower()
    if op in ("=", "=="):
        return a == b
    if op in ("<>", "!="):
        return a != b
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


class _Parser:
    """Recursive descent over one FILTER statement."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise self.error(f"unexpected character {text[pos]!r} at {pos}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def error(self, message: str) -> ProtocolError:
        return ProtocolError(f"filter expression {self.text[:120]!r}: {message}",
                             field="filterExpression")

    def peek(self) -> str:
        return self.tokens[self.i][1].upper() if self.i < len(self.tokens) else ""

    def take(self, *expected: str) -> str:
        if self.i >= len(self.tokens):
            raise self.error(f"ends where {' or '.join(expected) or 'more'} was expected")
        kind, value = self.tokens[self.i]
        if expected and value.upper() not in expected:
            raise self.error(f"{value!r} where {' or '.join(expected)} was expected")
        self.i += 1
        return value

    def run(self, rows: Sequence[Row]) -> list[Row]:
        self.take("FILTER")
        top = None
        if self.peek() == "TOP":
            self.take()
            count = self.take()
            if not count.isdigit():
                raise self.error(f"TOP {count!r} is not a count")
            top = int(count)
        table = self.take().lower()
        if table not in TABLES:
            raise self.error(f"unknown table {table!r}; the simulator offers ActiveMeasurements")
        predicate: Predicate = lambda row: True  # noqa: E731
        if self.peek() == "WHERE":
            self.take()
            predicate = self.or_expr()
        order: tuple[str, bool] | None = None
        if self.peek() == "ORDER":
            self.take()
            self.take("BY")
            column = self.take().lower()
            descending = self.peek() == "DESC"
            if self.peek() in ("ASC", "DESC"):
                self.take()
            order = (column, descending)
        if self.i != len(self.tokens):
            raise self.error(f"unexpected {self.tokens[self.i][1]!r} after the statement")
        found = [r for r in rows if predicate(r)]
        if order is not None:
            column, descending = order
            found.sort(key=lambda r: (r.get(column) is None, _key(r.get(column))),
                       reverse=descending)
        return found[:top] if top is not None else found

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.peek() == "OR":
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda row: any(p(row) for p in parts))

    def and_expr(self) -> Predicate:
        parts = [self.not_expr()]
        while self.peek() == "AND":
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else (lambda row: all(p(row) for p in parts))

    def not_expr(self) -> Predicate:
        if self.peek() == "NOT":
            self.take()
            inner = self.not_expr()
            return lambda row: not inner(row)
        if self.peek() == "(":
            self.take()
            inner = self.or_expr()
            self.take(")")
            return inner
        return self.comparison()

    def literal(self) -> Any:
        if self.i >= len(self.tokens):
            raise self.error("ends where a value was expected")
        kind, value = self.tokens[self.i]
        self.i += 1
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "num":
            return float(value) if "." in value else int(value)
        if kind in ("brace", "word"):
            if value.upper() in ("TRUE", "FALSE"):
                return value.upper() == "TRUE"
            return value.strip("{}")
        raise self.error(f"{value!r} where a value was expected")

    def comparison(self) -> Predicate:
        kind, column = self.tokens[self.i] if self.i < len(self.tokens) else ("", "")
        if kind != "word":
            raise self.error(f"{column or 'end'!r} where a column name was expected")
        self.i += 1
        col = column.lower()
        negate = False
        if self.peek() == "IS":
            self.take()
            if self.peek() == "NOT":
                self.take()
                negate = True
            self.take("NULL")
            return lambda row: (row.get(col) in (None, "")) != negate
        if self.peek() == "NOT":
            self.take()
            negate = True
        if self.peek() == "LIKE":
            self.take()
            pattern = _like(str(self.literal()))
            return lambda row: bool(pattern.match(str(row.get(col) or ""))) != negate
        if self.peek() == "IN":
            self.take()
            self.take("(")
            values = [self.literal()]
            while self.peek() == ",":
                self.take()
                values.append(self.literal())
            self.take(")")
            keys = {_key(v) for v in values}
            return lambda row: (_key(row.get(col)) in keys) != negate
        if negate:
            raise self.error("NOT must be followed by LIKE or IN here")
        op = self.take("=", "==", "<>", "!=", "<", "<=", ">", ">=")
        value = self.literal()
        return lambda row: _compare(op, row.get(col), value)
