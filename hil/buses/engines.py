r"""Regex engines with a bound on their cost, behind one small `search` call.

Python's `re` backtracks: `(a+)+b` on 27 "a" takes seconds, holding the GIL, so one bus would
freeze every other. So a regex runs on:

- **RE2** (`google-re2`) wherever the pattern allows it: time linear in the bytes searched,
  GIL released. The pattern text is passed through with three rewrites that keep `re`'s
  meaning: `\Z` -> `\z`, `\s` -> `[[:space:]]` (RE2's `\s` lacks `\v`), and the bus's `$`
  (end of line, also before "\r\n") -> `(\r?)$` at the very end of a pattern, whose extra
  group is taken off the result again;
- else the **`regex`** module (back-references, look-around, `$` inside a pattern, VERBOSE,
  bytes patterns with IGNORECASE, str patterns on non-ASCII text where `\w`, `\d`, `\b` follow
  Unicode as `re` does): it backtracks like `re`, but runs with `concurrent=True` (GIL
  released) and a `timeout`; running out of it raises `SearchTooSlow`.

Both return the spans of `re.Match.regs` (group 0 first), so callers see `re` semantics.
"""
from __future__ import annotations

import re
from typing import Protocol

import regex
from re2 import _re2

from hil.errors import PatternError

Spans = tuple[tuple[int, int], ...]
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"))


class SearchTooSlow(Exception):
    """A backtracking search used up its time budget (catastrophic backtracking)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the search did not finish within {seconds:.3g} s")
        self.seconds = seconds


class Engine(Protocol):
    """One compiled regex: the leftmost match in `subject[pos:endpos]` (context around it
    visible to `^`, `\b` and look-behind), or None."""

    name: str

    def search(self, subject: object, pos: int, endpos: int, budget: float) -> Spans | None:
        """`budget`: seconds a backtracking engine may spend (RE2 needs none)."""


class Re2Engine:
    """RE2: linear time, no back-references or look-around."""

    name = "RE2"

    def __init__(self, program: _re2.RE2, cr_group: bool) -> None:
        self._program = program
        self._cr_group = cr_group       # the last group is the `\r?` of a rewritten `$`

    def search(self, subject: object, pos: int, endpos: int, budget: float) -> Spans | None:
        spans = self._program.Match(_UNANCHORED, subject, pos, endpos)
        if spans[0][0] < 0:
            return None
        if self._cr_group:
            *spans, cr = spans
            spans[0] = (spans[0][0], cr[0])
        return tuple(spans)


class RegexEngine:
    """The `regex` module: what RE2 cannot run, with a timeout and the GIL released."""

    name = "regex (backtracking, with a timeout)"

    def __init__(self, compiled: regex.Pattern) -> None:
        self._regex = compiled

    def search(self, subject: object, pos: int, endpos: int, budget: float) -> Spans | None:
        try:
            m = self._regex.search(subject, pos, endpos, concurrent=True, timeout=budget)
        except TimeoutError:
            raise SearchTooSlow(budget) from None
        return None if m is None else m.regs


def engine(source: str | bytes, rewritten: str | bytes, flags: int, crlf_dollar: bool,
           groups: int, ascii_data: bool = False) -> Engine:
    """The engine for a regex: RE2 if it can take `source` exactly, else `regex` running
    `rewritten` (what `re` compiled). `crlf_dollar`: the bus's `$` rule applies to `source`.
    `ascii_data`: it only ever searches ASCII (then RE2's Latin-1 case folding is `re`'s)."""
    if ascii_data or not flags & re.IGNORECASE:
        translated = _re2_source(source, flags, crlf_dollar)
        if translated is not None:
            program = _re2_program(*translated, isinstance(source, str), groups)
            if program is not None:
                return program
    return backtracking(rewritten, flags)


def backtracking(rewritten: str | bytes, flags: int) -> RegexEngine:
    """The `regex` module's engine for what `re` compiled (same syntax, same meaning)."""
    keep = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.VERBOSE | re.ASCII | re.UNICODE
    try:
        return RegexEngine(regex.compile(rewritten, flags & keep))
    except (regex.error, ValueError) as exc:
        raise PatternError(f"regex {rewritten!r} cannot be searched with a time limit: "
                           f"{exc}") from None


def _re2_program(text: str, cr_group: bool, is_str: bool, groups: int) -> Re2Engine | None:
    options = _re2.RE2.Options()
    options.encoding = _re2.RE2.Options.Encoding.LATIN1     # bytes: one byte, one character
    options.log_errors = False
    try:
        pattern = text.encode("ascii" if is_str else "latin-1")
    except UnicodeEncodeError:
        return None                     # a non-ASCII str pattern: not run on raw bytes
    program = _re2.RE2(pattern, options)
    if not program.ok() or program.NumberOfCapturingGroups() != groups + cr_group:
        return None
    return Re2Engine(program, cr_group)


def _re2_source(source: str | bytes, flags: int, crlf_dollar: bool) -> tuple[str, bool] | None:
    r"""`source` rewritten for RE2 with `re`'s meaning, and whether a `(\r?)$` group was
    appended; None where RE2 would mean something else (it then refuses what it lacks)."""
    if flags & (re.VERBOSE | re.LOCALE):
        return None
    text = source.decode("latin-1") if isinstance(source, bytes) else source
    out: list[str] = []
    i, depth, in_class, class_start, top_bar, cr = 0, 0, False, False, False, False
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            pair = text[i:i + 2]
            if pair in (r"\s", r"\S"):
                posix = "[:^space:]" if pair == r"\S" else "[:space:]"
                pair = posix if in_class else f"[{posix}]"
            out.append(r"\z" if pair == r"\Z" else pair)
            i += 2
            class_start = False
            continue
        if in_class:
            if ch == "]" and not class_start:
                in_class = False
            class_start = class_start and ch == "^"
        elif ch == "[":
            in_class, class_start = True, True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            top_bar = True
        elif ch == "{" and text.startswith("{,", i):
            return None                 # `re`'s {,n}; RE2 reads it as literal text
        elif ch == "$" and (crlf_dollar or not flags & re.MULTILINE):
            if not crlf_dollar or i != len(text) - 1 or depth:
                return None             # only a final top-level `$` has an RE2 twin
            out.append(r"(\r?)$")
            cr = True
            i += 1
            continue
        out.append(ch)
        i += 1
    if cr and top_bar:
        return None
    inline = "".join(letter for flag, letter in _FLAGS if flags & flag)
    return (f"(?{inline})" if inline else "") + "".join(out), cr
