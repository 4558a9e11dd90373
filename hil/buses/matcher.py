r"""Patterns and the incremental search behind expect, read_until and watchers.

A `Search` looks for the leftmost match of any of its patterns in a ReceiveBuffer from a start
offset on. Each `step()` searches only the bytes that arrived since the previous step, plus as
much look-back as an unfinished match can span (the *look-back rule*):

- a literal: `len(literal) - 1` bytes;
- a regex of bounded width (`ab\d{1,4}`): its maximum width in bytes (plus its look-ahead);
- an unbounded regex that cannot cross a newline (`\d+`, `.*`, `[^,]*` — no `\n`, `\s`, `[^x]`
  or DOTALL): back to the start of the current line, at most `max_match` bytes;
- any other unbounded regex: `max_match` bytes (64 KiB by default). A match longer than that
  may be missed; raise `max_match` for such patterns.

So the cost is linear in the bytes received and no match is lost at a chunk boundary. Literals
and a regex's literal start are found with `find_literal` (memchr on the rarest byte), so a
flood is scanned at memory speed.

The *end-of-data rule*: a regex match that touches the end of the data received so far (or whose
`$`, `\b` or look-ahead looks at it) is deferred while more bytes could still change it:
`value=(\d+)` never returns `12` of a `12345` split as `12|345`. A deferred match is reported
when a later chunk arrives without changing it, or once no byte has arrived for the bus's
`settle` time (50 ms; counted from when expect first saw the match, so bytes in flight still
count), or at the deadline, or at end of stream: "the value, once the device stopped talking".
Never deferred: fixed-width patterns without look-ahead (`dut> `, any literal) and patterns
ending in a newline that nothing else in them can match (`value=(\d+)\r\n`).

Streaming has one inherent limit: the match reported is the leftmost in what has arrived. A
pattern whose earlier alternative needs more bytes (`abc|b` on `ab`) can report the later one.

The *text rule*: str patterns match the bytes decoded with the bus encoding (UTF-8 or a
single-byte ASCII-compatible one). An invalid byte decodes to U+FFFD, one per byte, never an
error — the same rule decodes `before`, groups and lines (`decode()`). Fast paths with identical
results: str literals are searched as their encoded bytes, and ASCII str regexes run on the raw
bytes while the searched window is pure ASCII. (One corner: on that path `\s` does not match
the ASCII separators \x1c-\x1f, which str regexes count as whitespace.)

String regexes are compiled with re.MULTILINE and `$` also matches before "\r\n" (console
lines end in CRLF). A compiled `re.Pattern` is used with its own flags.

*Cost*: `re` parses and checks every regex (errors, the look-back above), but the searching is
done by RE2 where it can (linear time) and otherwise by the `regex` module with a time budget
(`hil.buses.engines`), so a catastrophic pattern costs at most its caller's timeout, and never
holds the GIL that other buses need.
"""
from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Sequence
from collections.abc import Mapping
from dataclasses import dataclass, field
from re import _constants as C  # type: ignore[attr-defined]  # the stdlib's own regex parser
from re import _parser as P  # type: ignore[attr-defined]

from hil.buses.buffer import ReceiveBuffer
from hil.buses.engines import Engine, SearchTooSlow, Spans, backtracking, engine
from hil.errors import PatternError

__all__ = ["MAX_MATCH", "Found", "Pattern", "PatternLike", "Search", "SearchTooSlow",
           "check_encoding", "compile_pattern", "compile_patterns", "decode", "find_literal",
           "rarest"]

MAX_MATCH = 64 * 1024
#: Seconds a backtracking search may take when the caller gives no budget (watchers).
DEFAULT_BUDGET = 0.25
#: Bytes of already-searched text decoded before a window on the decoding path, so `^`, `\b`
#: and short look-behinds see what precedes it.
CONTEXT = 64
_UNBOUNDED = 1 << 30
LONG = 4096                 # find_literal scans this far plainly before its memchr jumps
_TO_FFFD = {0xDC80 + i: 0xFFFD for i in range(128)}   # surrogateescape'd byte -> U+FFFD
_FORWARD_AT = {C.AT_END, C.AT_END_LINE, C.AT_END_STRING, C.AT_BOUNDARY, C.AT_NON_BOUNDARY,
               C.AT_LOC_BOUNDARY, C.AT_LOC_NON_BOUNDARY, C.AT_UNI_BOUNDARY,
               C.AT_UNI_NON_BOUNDARY}
_NEWLINE_CATEGORIES = {C.CATEGORY_SPACE, C.CATEGORY_NOT_DIGIT, C.CATEGORY_NOT_WORD,
                       C.CATEGORY_LINEBREAK}
_REPEATS = {C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT}

PatternLike = str | bytes | re.Pattern


# ------------------------------------------------------------------------------ text rule
def check_encoding(encoding: str) -> str:
    """The codec name if hil can match text in it (UTF-8 or single-byte ASCII-compatible)."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    if name == "utf-8":
        return name
    try:
        single = len(bytes(range(256)).decode(name, "surrogateescape")) == 256
        ascii_ok = "A\r\n".encode(name) == b"A\r\n"
    except (UnicodeError, LookupError):
        single = ascii_ok = False
    if not (single and ascii_ok):
        raise ValueError(f"encoding {encoding!r} is not supported: use UTF-8 or a single-byte "
                         "ASCII-compatible encoding (latin-1, cp1252, ascii ...)")
    return name


def decode(data: bytes, encoding: str = "utf-8") -> str:
    """Bytes to text by the text rule: each invalid byte becomes U+FFFD; never raises."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return data.decode(encoding, "surrogateescape").translate(_TO_FFFD)


def _decode_partial(data: bytes, encoding: str, final: bool) -> tuple[str, str, int]:
    """Decode a window: (text to match, surrogateescape text for offsets, bytes consumed).

    Unless `final`, a UTF-8 sequence cut at the end stays undecoded (it may still complete).
    """
    if encoding != "utf-8":
        escaped = data.decode(encoding, "surrogateescape")
        return escaped.translate(_TO_FFFD), escaped, len(data)
    try:
        text, used = codecs.utf_8_decode(data, "strict", final)
        return text, text, used
    except UnicodeDecodeError:
        escaped, used = codecs.utf_8_decode(data, "surrogateescape", final)
        return escaped.translate(_TO_FFFD), escaped, used


# ------------------------------------------------------------------------------ patterns
@dataclass(frozen=True)
class Pattern:
    """One compiled pattern: what the user gave and how to search for it in raw bytes."""

    source: PatternLike
    text: bool                          # results are str (the pattern was str)
    needle: bytes | None = None         # a literal, encoded
    prefix: bytes = b""                 # a regex's literal start (see find_literal)
    rare: int = 0                       # index of the rarest byte of needle or prefix
    regex: Engine | None = None         # on raw bytes: bytes patterns, ASCII str patterns
    text_regex: Engine | None = None    # on decoded text, for windows that are not pure ASCII
    checked: re.Pattern | None = None   # what `re` compiled: the reference semantics
    names: Mapping[str, int] = field(default_factory=dict)     # named groups
    span: int | None = None             # bytes one match attempt may examine; None: unbounded
    line_bounded: bool = False          # an attempt never examines past a newline
    fixed: bool = True                  # more bytes can never change a match once found
    reach: int = 0                      # how far past a match's end its look-ahead looks
    min_width: int = 0                  # bytes or characters a match needs at least

    @property
    def matches_empty(self) -> bool:
        """True for a regex that matches the empty string (useless as a watcher)."""
        regex = self.checked
        return regex is not None and regex.fullmatch("" if self.text else b"") is not None

    def describe(self) -> str:
        return repr(self.source.pattern if isinstance(self.source, re.Pattern) else self.source)


@dataclass
class _Shape:
    """What a regex's parse tree says about how far a match attempt can look."""

    crosses_newline: bool = False
    peeks_ahead: bool = False
    lookahead: int = 0


def _class_has_newline(items: list) -> bool:
    negate = bool(items) and items[0][0] is C.NEGATE
    hit = any((op is C.LITERAL and av == 10) or (op is C.RANGE and av[0] <= 10 <= av[1])
              or (op is C.CATEGORY and av in _NEWLINE_CATEGORIES) for op, av in items)
    return hit != negate


def _walk(items: object, flags: int, shape: _Shape) -> None:
    """Record in `shape` whether the regex can consume a newline and what it looks ahead at."""
    for op, av in items:  # type: ignore[attr-defined]
        if op is C.LITERAL:
            shape.crosses_newline |= av == 10
        elif op is C.NOT_LITERAL:
            shape.crosses_newline |= av != 10
        elif op is C.ANY:
            shape.crosses_newline |= bool(flags & re.DOTALL)
        elif op is C.IN:
            shape.crosses_newline |= _class_has_newline(av)
        elif op is C.AT:
            shape.peeks_ahead |= av in _FORWARD_AT
        elif op in _REPEATS:
            _walk(av[2], flags, shape)
        elif op is C.SUBPATTERN:
            _walk(av[3], (flags | av[1]) & ~av[2], shape)
        elif op is C.ATOMIC_GROUP:
            _walk(av, flags, shape)
        elif op is C.BRANCH:
            for branch in av[1]:
                _walk(branch, flags, shape)
        elif op is C.GROUPREF_EXISTS:
            _walk(av[1], flags, shape)
            if av[2] is not None:
                _walk(av[2], flags, shape)
        elif op in (C.ASSERT, C.ASSERT_NOT) and av[0] == 1:      # look-ahead
            shape.peeks_ahead = True
            shape.lookahead = max(shape.lookahead, min(av[1].getwidth()[1], _UNBOUNDED))
            _walk(av[1], flags, shape)


def _crlf_dollar(source: str | bytes) -> str | bytes:
    r"""Rewrite each `$` outside a character class as `(?=\r?$)`: end of line before CRLF too."""
    text = source.decode("latin-1") if isinstance(source, bytes) else source
    out, i, in_class, class_start = [], 0, False, False
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            out.append(text[i:i + 2])
            i += 2
            class_start = False
            continue
        if in_class:
            if ch == "]" and not class_start:
                in_class = False
            class_start = class_start and ch == "^"
        elif ch == "[":
            in_class, class_start = True, True
        elif ch == "$":
            ch = r"(?=\r?$)"
        out.append(ch)
        i += 1
    result = "".join(out)
    return result.encode("latin-1") if isinstance(source, bytes) else result


def _compile(source: str | bytes, flags: int) -> re.Pattern:
    try:
        return re.compile(source, flags)
    except re.error as exc:
        raise PatternError(f"invalid regex {source!r}: {exc.msg} at position {exc.pos}") from None


def _engines(source: str | bytes, regex: re.Pattern,
             crlf_dollar: bool) -> tuple[Engine | None, Engine | None]:
    """(the engine on raw bytes, the engine on decoded text) for a regex `re` compiled."""
    if isinstance(source, bytes):
        return engine(source, regex.pattern, regex.flags, crlf_dollar, regex.groups), None
    text = backtracking(regex.pattern, regex.flags)
    if not source.isascii():
        return None, text
    flags = regex.flags & ~re.UNICODE      # the ASCII fast path: the same regex on bytes
    try:
        raw: Engine | None = engine(source.encode("ascii"), regex.pattern.encode("ascii"),
                                    flags, crlf_dollar, regex.groups, ascii_data=True)
    except PatternError:
        raw = None
    return raw, text


@functools.lru_cache(maxsize=512)
def compile_pattern(source: PatternLike, exact: bool = False,
                    encoding: str = "utf-8") -> Pattern:
    """Compile what a user passed to expect/read_until/fail_on (cached)."""
    if exact:
        return _literal(source, encoding)
    if isinstance(source, re.Pattern):
        regex, given, crlf = source, source.pattern, False
    elif isinstance(source, (str, bytes)):
        if not source:
            raise PatternError("empty pattern: it would match immediately, anywhere")
        regex, given, crlf = _compile(_crlf_dollar(source), re.MULTILINE), source, True
    else:
        raise PatternError(f"a pattern must be str, bytes or re.Pattern, got {source!r}")
    text = isinstance(regex.pattern, str)
    shape = _Shape()
    parsed = P.parse(regex.pattern, regex.flags)
    _walk(parsed, parsed.state.flags, shape)
    low, high = (min(w, _UNBOUNDED) for w in parsed.getwidth())
    fixed, line_bounded = low == high and not shape.peeks_ahead, not shape.crosses_newline
    if len(parsed) and parsed[-1] == (C.LITERAL, 10):
        # Ends with the only newline it can consume: an attempt stops at the first newline
        # after its start, so a match cannot grow (`value=(\d+)\r\n` is never deferred).
        head = _Shape()
        _walk(parsed[:-1], parsed.state.flags, head)
        if not (head.crosses_newline or head.lookahead):
            fixed = line_bounded = True
    per_char = 4 if text and encoding == "utf-8" else 1
    span = None if max(high, shape.lookahead) >= _UNBOUNDED else (high + shape.lookahead) * per_char
    prefix = _literal_prefix(parsed, text)
    raw, decoded = _engines(given, regex, crlf)
    return Pattern(source=source, text=text, prefix=prefix, rare=rarest(prefix) if prefix else 0,
                   regex=raw, text_regex=decoded, checked=regex, names=dict(regex.groupindex),
                   span=span, line_bounded=line_bounded, fixed=fixed, reach=shape.lookahead,
                   min_width=low)


def _literal_prefix(parsed: object, text: bool) -> bytes:
    """The literal bytes every match starts with (b"" if none or case-insensitive)."""
    if parsed.state.flags & re.IGNORECASE:  # type: ignore[attr-defined]
        return b""
    prefix = bytearray()
    for op, av in parsed:  # type: ignore[attr-defined]
        if op is not C.LITERAL or av >= (128 if text else 256):
            break
        prefix.append(av)
    return bytes(prefix)


def _literal(source: PatternLike, encoding: str) -> Pattern:
    if isinstance(source, str):
        try:
            needle = source.encode(encoding)
        except UnicodeEncodeError as exc:
            raise PatternError(f"literal {source!r} cannot be encoded in {encoding}: "
                               f"{exc.reason}") from None
    elif isinstance(source, bytes):
        needle = source
    else:
        raise PatternError(f"a literal must be str or bytes, got {source!r}")
    if not needle:
        raise PatternError("empty literal: it would match immediately, anywhere")
    return Pattern(source=source, text=isinstance(source, str), needle=needle,
                   rare=rarest(needle), span=len(needle), min_width=len(needle))


_COMPILED: dict[tuple, tuple[Pattern, ...]] = {}


def compile_patterns(sources: PatternLike | Sequence[PatternLike], exact: bool,
                     encoding: str) -> tuple[Pattern, ...]:
    """One pattern or a sequence of them, compiled (cached: expect is called in loops)."""
    key = (sources if not isinstance(sources, list) else tuple(sources), exact, encoding)
    try:
        return _COMPILED[key]
    except (KeyError, TypeError):
        pass
    if isinstance(sources, (str, bytes, re.Pattern)):
        patterns: tuple[Pattern, ...] = (compile_pattern(sources, exact, encoding),)
    elif isinstance(sources, Sequence) and sources:
        patterns = tuple(compile_pattern(s, exact, encoding) for s in sources)
    else:
        raise PatternError(f"expected a pattern or a non-empty list of patterns, got {sources!r}")
    if len(_COMPILED) > 1024:
        _COMPILED.clear()
    try:
        _COMPILED[key] = patterns
    except TypeError:
        pass
    return patterns


# ------------------------------------------------------------------------------ search
@dataclass(slots=True)
class Found:
    """A match found by a Search step (perhaps deferred by the end-of-data rule)."""

    index: int                      # which pattern
    start: int                      # absolute byte offsets
    end: int
    deferred: bool = False
    text: str | bytes | None = None     # group 0 of a regex match (None for literals)
    regs: Spans = ()                    # the group spans, as in `re.Match.regs` ...
    origin: int = 0                     # ... counted from this offset of `text`

    def copy_out(self, pattern: Pattern) -> tuple[str | bytes, Spans, int]:
        """(group 0, the group spans as in `re.Match.regs`, the offset those spans start at)."""
        if self.text is None:
            return pattern.source, ((0, self.end - self.start),), 0  # type: ignore[return-value]
        return self.text, self.regs, self.origin


class Search:
    """An incremental search for the leftmost match of `patterns` from offset `start` on.

    Call `step(buffer, final, budget)` while holding `buffer.lock`, each time bytes arrived.
    It returns a `Found` (perhaps deferred by the end-of-data rule) or None; `final` means no
    more bytes will be waited for (end of stream, deadline, settle time), so nothing is
    deferred. A regex RE2 cannot run may search for `budget` seconds at most: beyond,
    `SearchTooSlow` (then `trying` is the pattern that was too slow).
    """

    def __init__(self, patterns: Sequence[Pattern], start: int, max_match: int = MAX_MATCH,
                 encoding: str = "utf-8") -> None:
        self.patterns = patterns
        self.max_match = max_match
        self.encoding = encoding
        self._scan = [start] * len(patterns)    # per pattern: first start not yet settled
        self.trying: Pattern = patterns[0]     # the pattern being searched

    def step(self, buf: ReceiveBuffer, final: bool = False,
             budget: float = DEFAULT_BUDGET) -> Found | None:
        base = buf.base
        end = base + buf.used
        if len(self.patterns) == 1:             # the common case, kept short
            lo = self._scan[0] if self._scan[0] > base else base
            found, limit = self._find(0, self.patterns[0], buf, lo, end, final, budget)
            if found is not None and not found.deferred:
                return found
            tried = [(found, lo, limit)]
            best = found
        else:
            best, tried = None, []
            for i, pattern in enumerate(self.patterns):
                lo = self._scan[i] if self._scan[i] > base else base
                self.trying = pattern
                found, limit = self._find(i, pattern, buf, lo, end, final, budget)
                tried.append((found, lo, limit))
                if found is not None and (best is None or found.start < best.start):
                    best = found
            if best is not None and not best.deferred:
                return best
        for i, (found, lo, limit) in enumerate(tried):     # waiting on: apply the look-back
            retry = min(self._retry(self.patterns[i], buf, lo, end), limit)
            self._scan[i] = retry if found is None else min(retry, found.start)
        return best

    def skip_to(self, offset: int) -> None:
        """Search only from `offset` on (watchers: past a hit)."""
        self._scan = [max(s, offset) for s in self._scan]

    def _find(self, i: int, p: Pattern, buf: ReceiveBuffer, lo: int, end: int,
              final: bool, budget: float) -> tuple[Found | None, int]:
        """Leftmost match of one pattern in [lo, end), and how far the search got."""
        data, base = buf.data, buf.base
        if p.needle is not None:
            k = find_literal(data, p.needle, lo - base, end - base, p.rare)
            if k < 0:
                return None, end
            return Found(i, base + k, base + k + len(p.needle)), end
        if p.regex is not None and (not p.text or lo > buf.nonascii_end
                                    or _is_ascii(buf, lo - 1, end)):
            at = lo - base
            if p.prefix:            # jump to where a match can start: faster than the regex
                at = find_literal(data, p.prefix, at, end - base, p.rare)
                if at < 0:
                    return None, end
            with buf.view() as view:
                regs = p.regex.search(view, at, end - base, budget)
                if regs is None:
                    return None, end
                (s, e) = regs[0]
                text: str | bytes = bytes(view[s:e])
            if p.text:
                text = text.decode("ascii")     # the ASCII fast path of a str regex
            deferred = not final and not p.fixed and base + e + p.reach >= end
            return Found(i, base + s, base + e, deferred, text, regs, s), end
        return self._find_decoded(i, p, buf, lo, end, final, budget)

    def _find_decoded(self, i: int, p: Pattern, buf: ReceiveBuffer, lo: int, end: int,
                      final: bool, budget: float) -> tuple[Found | None, int]:
        """The text path: decode the window (plus a little context) and search the text."""
        data, base, utf8 = buf.data, buf.base, self.encoding == "utf-8"
        lo = _char_start(data, lo - base, end - base, utf8) + base
        ctx = _char_start(data, max(base, lo - CONTEXT) - base, lo - base, utf8) + base
        head = decode(bytes(data[ctx - base:lo - base]), self.encoding)
        text, escaped, used = _decode_partial(bytes(data[lo - base:end - base]), self.encoding,
                                              final)
        window = head + text
        searcher = p.text_regex
        assert searcher is not None, "a text-path pattern has a text engine"
        regs = searcher.search(window, len(head), len(window), budget)
        if regs is None:
            return None, lo + used
        (s, e) = regs[0]

        def to_bytes(char: int) -> int:
            chars = escaped[:char - len(head)]
            size = len(chars.encode(self.encoding, "surrogateescape")) if utf8 else len(chars)
            return lo + size

        deferred = not final and not p.fixed and e + p.reach >= len(window)
        return Found(i, to_bytes(s), to_bytes(e), deferred, window[s:e], regs, s), lo + used

    def _retry(self, p: Pattern, buf: ReceiveBuffer, lo: int, end: int) -> int:
        """The look-back rule: the first start whose match attempt may have hit `end`."""
        if p.needle is not None:
            return max(lo, end - len(p.needle) + 1)
        retry = end - self.max_match
        if p.span is not None:
            retry = max(retry, end - p.span)
        if p.line_bounded:
            nl = buf.data.rfind(b"\n", max(lo, retry) - buf.base, end - buf.base)
            if nl >= 0:
                retry = buf.base + nl + 1
        return max(lo, retry)


#: Bytes from most to least common in console text; a byte not listed counts as rarest.
_COMMON = b" etaoinsrhldcumfpgwybvkxjqz0123456789.,:-_/\r\n"
_MAX_MISSES = 8


def rarest(needle: bytes) -> int:
    """Index of the byte of `needle` least likely in console text."""
    return max(range(len(needle)), key=lambda k: (_COMMON.find(needle[k:k + 1]) < 0,
                                                  _COMMON.find(needle[k:k + 1])))


def find_literal(data: object, needle: bytes, lo: int, hi: int, j: int = 0) -> int:
    """`data.find(needle, lo, hi)`, faster over long stretches: past the first LONG bytes,
    jump between occurrences of the needle's rarest byte (index `j`) with memchr, as grep
    does; after a few false candidates, a plain find again."""
    k = data.find(needle, lo, min(hi, lo + LONG))  # type: ignore[attr-defined]
    if k >= 0 or hi - lo <= LONG:
        return k
    lo = max(lo, lo + LONG - len(needle) + 1)
    if len(needle) < 3:
        return data.find(needle, lo, hi)  # type: ignore[attr-defined]
    rare, k, last = needle[j:j + 1], lo + j, hi - len(needle) + j + 1
    if last <= k:
        return -1
    for _ in range(_MAX_MISSES):
        k = data.find(rare, k, last)  # type: ignore[attr-defined]
        if k < 0:
            return -1
        if data[k - j:k - j + len(needle)] == needle:  # type: ignore[index]
            return k - j
        k += 1
    return data.find(needle, k - j, hi)  # type: ignore[attr-defined]


def _is_ascii(buf: ReceiveBuffer, lo: int, end: int) -> bool:
    lo = max(lo, buf.base)
    return lo >= buf.nonascii_end or buf.data[lo - buf.base:end - buf.base].isascii()


def _char_start(data: bytearray, i: int, limit: int, utf8: bool) -> int:
    """`i`, moved past at most 3 UTF-8 continuation bytes so it starts a character."""
    if utf8:
        stop = min(limit, i + 3)
        while i < stop and 0x80 <= data[i] < 0xC0:
            i += 1
    return i
