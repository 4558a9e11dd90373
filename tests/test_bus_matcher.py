"""The expect engine without threads: ReceiveBuffer + Search fed chunk by chunk, as the reader
thread would. Covers the look-back, end-of-data and text rules of hil.buses.matcher."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.buses.buffer import ReceiveBuffer
from hil.buses.matcher import (MAX_MATCH, Found, Search, check_encoding, compile_pattern,
                               compile_patterns, decode, find_literal, rarest)
from hil.errors import PatternError


def feed(chunks: list[bytes], patterns: object, *, exact: bool = False, encoding: str = "utf-8",
         max_match: int = MAX_MATCH) -> tuple[Found | None, list[Found | None], ReceiveBuffer]:
    """Append chunks one by one, stepping the search after each, like the bus does; at the end
    step once more with final=True (end of stream). Returns (result, per-step results, buffer)."""
    buf = ReceiveBuffer()
    compiled = compile_patterns(patterns, exact, encoding)  # type: ignore[arg-type]
    search = Search(compiled, 0, max_match=max_match, encoding=encoding)
    steps: list[Found | None] = []
    for i, chunk in enumerate(chunks):
        buf.append(chunk, float(i))
        found = search.step(buf)
        steps.append(found)
        if found is not None and not found.deferred:
            return found, steps, buf
    return search.step(buf, final=True), steps, buf


def group(found: Found | None, pattern: object, n: int = 0, exact: bool = False) -> object:
    """Group `n` of what a search found (as the bus's Match would give it)."""
    assert found is not None and not found.deferred
    text, regs, origin = found.copy_out(compile_pattern(pattern, exact))  # type: ignore[arg-type]
    s, e = regs[n]
    return text[s - origin:e - origin]


# ------------------------------------------------------------------ end-of-data rule
def test_a_number_split_across_chunks_is_not_cut_short() -> None:
    found, steps, _ = feed([b"boot\r\nvalue=12", b"345", b"\r\n"], r"value=(\d+)")
    assert steps[0] is not None and steps[0].deferred          # "12" could still grow
    assert steps[1] is not None and steps[1].deferred          # "12345" too
    assert group(found, r"value=(\d+)", 1) == "12345"
    assert (found.start, found.end) == (6, 17)                 # absolute byte offsets


def test_a_match_touching_the_end_is_taken_at_end_of_stream() -> None:
    found, steps, _ = feed([b"value=12", b"345"], r"value=(\d+)")
    assert all(s is not None and s.deferred for s in steps)
    assert group(found, r"value=(\d+)", 1) == "12345"


def test_fixed_width_patterns_and_literals_are_never_deferred() -> None:
    for pattern, exact in [(r"dut> ", False), (r"ERR\d{3}", False), ("dut> ", True)]:
        found, _, _ = feed([b"boot ok\r\ndut> "] if "dut" in pattern else [b"x ERR042"],
                           pattern, exact=exact)
        assert found is not None and not found.deferred


def test_a_pattern_ending_in_its_only_newline_is_not_deferred() -> None:
    found, steps, _ = feed([b"value=12\r\n"], r"value=(\d+)\r\n")
    assert steps == [found] and group(found, r"value=(\d+)\r\n", 1) == "12"


def test_dollar_waits_for_the_line_end_and_matches_before_crlf() -> None:
    found, steps, _ = feed([b"state: ok", b"\r", b"\n"], r"state: (\w+)$")
    assert steps[0].deferred and steps[1].deferred             # "ok" + "\r": not yet a line
    assert group(found, r"state: (\w+)$", 1) == "ok" and found.end == 9
    found, _, _ = feed([b"state: okay\r\n"], r"state: ok$")
    assert found is None                                       # "okay" is not "ok" at line end


def test_anchors_behave_per_line_with_crlf() -> None:
    data = [b"  value=1 trailing\r\nvalue=22\r\nxvalue=3\n"]
    found, _, _ = feed(data, r"^value=(\d+)$")
    assert group(found, r"^value=(\d+)$", 1) == "22"
    assert group(feed([b"a$b c\r\n"], r"[$]b")[0], r"[$]b") == "$b"      # $ in a class
    assert group(feed([b"price: $5\r\n"], r"\$(\d)$")[0], r"\$(\d)$", 1) == "5"


def test_word_boundary_at_the_end_is_deferred() -> None:
    found, steps, _ = feed([b"foo", b"d\r\n"], r"foo\b")
    assert steps[0].deferred and found is None                 # "food" is not "foo\b"


def test_leftmost_of_several_patterns_wins_and_reports_its_index() -> None:
    found, _, _ = feed([b"warn: x\r\nerror: y\r\n"], [r"error: (\w)", r"warn: (\w)"])
    assert found.index == 1 and group(found, r"warn: (\w)", 1) == "x"


# ------------------------------------------------------------------ look-back rule
def test_look_back_literal_is_its_length_minus_one() -> None:
    buf = ReceiveBuffer()
    search = Search(compile_patterns("marker", True, "utf-8"), 0)
    for _ in range(100):
        buf.append(b"x" * 997, 0.0)
        assert search.step(buf) is None
    assert search._scan[0] == buf.end - len("marker") + 1


def test_look_back_of_a_line_regex_is_the_current_line() -> None:
    buf = ReceiveBuffer()
    search = Search(compile_patterns(r"value=(\d+)", False, "utf-8"), 0)
    for i in range(100):
        buf.append(b"log %05d lorem ipsum\r\npartial li" % i, 0.0)
        assert search.step(buf) is None
    assert search._scan[0] == buf.end - len("partial li")


def test_look_back_of_a_multiline_regex_is_max_match() -> None:
    buf = ReceiveBuffer()
    search = Search(compile_patterns(r"(?s)BEGIN.*END", False, "utf-8"), 0, max_match=4096)
    for _ in range(50):
        buf.append(b"x" * 1000 + b"\n", 0.0)
        search.step(buf)
    assert search._scan[0] == buf.end - 4096


def test_multiline_match_within_max_match_is_found_across_many_chunks() -> None:
    chunks = [b"BEGIN\n"] + [b"line\n"] * 500 + [b"END\n"]
    found, _, _ = feed(chunks, r"(?s)BEGIN(.*?)END", max_match=8192)
    assert found is not None and found.start == 0 and found.end == 6 + 2500 + 3
    found, _, _ = feed(chunks, r"(?s)BEGIN(.*?)END", max_match=1024)
    assert found is None            # longer than max_match: documented limit


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_split_of_the_stream_finds_the_same_match(data: st.DataObject) -> None:
    """Property: chunk boundaries never lose, move or truncate a match."""
    cases = [
        (r"value=(\d+)", False), (r"ERR(\d{3})", False), (r"^temp=(\d+\.\d) C$", False),
        (r"(?s)BEGIN(.*?)END", False), ("marker-42", True), (rb"\xff(\d+)", False),
        (r"température=(\d+)°", False), (r"(\w+)!", False), (r"(?i)err(\d{3})\s", False),
        (r"(\w)\1", False),
    ]
    pattern, exact = data.draw(st.sampled_from(cases))
    alphabet = "abvlue=ERB0123456789 \r\n.CtmpéßG€" if isinstance(pattern, str) else None
    pieces = st.text(alphabet, max_size=30).map(str.encode) if alphabet else st.binary(max_size=30)
    tokens = [b"value=123456", b"ERR404", b"temp=21.5 C\r\n", b"BEGIN x\r\ny END", b"marker-42",
              b"\xff987", "température=37°".encode(), "café!".encode(), b"\r\n"]
    parts = data.draw(st.lists(st.one_of(pieces, st.sampled_from(tokens)), max_size=12))
    stream = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)]) if b > a]

    found, _, _ = feed(chunks, pattern, exact=exact)

    compiled = compile_pattern(pattern, exact)
    if exact:
        k = stream.find(compiled.needle)
        expected = None if k < 0 else (k, k + len(compiled.needle), pattern)
    elif isinstance(pattern, bytes):
        m = compiled.checked.search(stream)        # `re` is the reference
        expected = m and (m.start(), m.end(), m.group(1))
    else:
        text, raw = decode(stream), stream.decode("utf-8", "surrogateescape")   # same length

        def offset(char: int) -> int:
            return len(raw[:char].encode("utf-8", "surrogateescape"))
        m = compiled.checked.search(text)
        expected = m and (offset(m.start()), offset(m.end()), m.group(1))
    got = found and (found.start, found.end, group(found, pattern, 0 if exact else 1, exact))
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.binary(min_size=1, max_size=6), st.data())
def test_find_literal_is_bytes_find(hay: bytes, needle: bytes, data: st.DataObject) -> None:
    """The rare-byte shortcut finds exactly what bytes.find finds, in any range (long
    stretches of near misses included)."""
    hay = hay.replace(b"\x00", needle[:1]) + needle * data.draw(st.integers(0, 2))
    hay = (needle[:-1] + b"x") * data.draw(st.integers(0, 3000)) + hay
    lo = data.draw(st.integers(0, len(hay)))
    hi = data.draw(st.integers(lo, len(hay)))
    for j in {0, rarest(needle)}:
        assert find_literal(hay, needle, lo, hi, j) == hay.find(needle, lo, hi)
        assert find_literal(bytearray(hay), needle, lo, hi, j) == hay.find(needle, lo, hi)


# ------------------------------------------------------------------ text rule
def test_text_patterns_match_invalid_utf8_without_crashing() -> None:
    stream = [b"\xff\xfe boot \xe2\x82", b" value=7\r\n"]
    found, _, _ = feed(stream, r"value=(\d+)")
    assert group(found, r"value=(\d+)", 1) == "7" and found.start == 11


def test_invalid_bytes_decode_to_one_replacement_character_each() -> None:
    assert decode(b"a\xff\xe2\x82b") == "a\ufffd\ufffd\ufffdb"
    assert decode("température".encode()) == "température"
    assert decode(b"caf\xe9", "latin-1") == "café"


def test_a_str_regex_uses_unicode_rules_on_non_ascii_text() -> None:
    found, _, _ = feed(["user: café!\r\n".encode()], r"user: (\w+)")
    assert group(found, r"user: (\w+)", 1) == "café"          # not "caf" (bytes \w)


def test_a_multibyte_character_split_across_chunks() -> None:
    data = "temp=21°C\r\n".encode()
    cut = data.index(b"\xb0")                                   # inside the 2-byte "°"
    found, _, _ = feed([data[:cut], data[cut:]], r"temp=(\d+)°C")
    assert group(found, r"temp=(\d+)°C", 1) == "21" and found.end == len(data) - 2


def test_bytes_patterns_match_raw_bytes() -> None:
    found, _, _ = feed([b"\x00\x01\xfe", b"\xff\x10tail"], rb"\xfe\xff(.)")
    assert group(found, rb"\xfe\xff(.)", 1) == b"\x10" and found.start == 2
    found, _, _ = feed([b"abc\x00\xffdef"], b"\x00\xff", exact=True)
    assert (found.start, group(found, b"\x00\xff", exact=True)) == (3, b"\x00\xff")


def test_str_literals_match_their_encoded_bytes() -> None:
    found, _, _ = feed(["héllo wörld".encode()], "wörld", exact=True)
    assert found.start == len("héllo ".encode())
    found, _, _ = feed(["x wörld".encode("latin-1")], "wörld", exact=True, encoding="latin-1")
    assert found.start == 2


def test_only_utf8_and_single_byte_encodings_are_accepted() -> None:
    assert check_encoding("UTF8") == "utf-8" and check_encoding("latin-1") == "iso8859-1"
    for bad in ("utf-16", "no-such-codec"):
        with pytest.raises(ValueError, match="encoding"):
            check_encoding(bad)


# ------------------------------------------------------------------ bad patterns
@pytest.mark.parametrize("pattern, exact, message", [
    (r"value=(\d+", False, r"invalid regex 'value=\(\\\\d\+'.*missing \)"),
    ("", False, "empty pattern"),
    (b"", True, "empty literal"),
    (42, False, "expected a pattern"),
    ([42], False, "must be str, bytes or re.Pattern"),
    ([], False, "non-empty list"),
    ("wörld", True, "cannot be encoded in ascii"),
])
def test_bad_patterns_raise_pattern_error_naming_them(pattern: object, exact: bool,
                                                      message: str) -> None:
    encoding = "ascii" if pattern == "wörld" else "utf-8"
    with pytest.raises(PatternError, match=message):
        compile_patterns(pattern, exact, encoding)  # type: ignore[arg-type]


def test_a_precompiled_regex_is_used_as_given() -> None:
    regex = re.compile(r"a=(\d)", re.IGNORECASE)
    found, _, _ = feed([b"x=0\r\nA=1\r\na=2\r\n"], regex)
    assert group(found, regex, 1) == "1"
    regex = re.compile(r"^a=(\d)$")                # no MULTILINE: "^" is the buffer start only
    assert feed([b"x\na=1\na=2\n"], regex)[0] is None


# ------------------------------------------------------------------ the buffer
def test_retention_drops_the_oldest_bytes_and_counts_them() -> None:
    buf = ReceiveBuffer(retention=8192)
    for i in range(100):
        buf.append(bytes([i]) * 1000, float(i))
    assert buf.used <= 8192 and buf.dropped + buf.used == 100_000 == buf.end
    assert buf.get(buf.end - 3, buf.end) == bytes([99]) * 3
    assert buf.time_at(buf.end - 1) == 99.0 and buf.time_at(buf.end - 1001) == 98.0


def test_a_search_continues_past_dropped_bytes() -> None:
    buf = ReceiveBuffer(retention=4096)
    search = Search(compile_patterns("needle", True, "utf-8"), 0)
    for _ in range(20):
        buf.append(b"x" * 1000, 0.0)
        assert search.step(buf) is None
    buf.append(b"needle", 0.0)
    assert search.step(buf).start == 20_000
