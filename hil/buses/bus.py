"""`Bus`: a byte stream (serial port, TCP socket) with expect, one API over every transport.

One reader thread per bus moves bytes from the transport into a ReceiveBuffer (absolute
offsets, arrival times, bounded), records them in the transcript and checks the watchers.
Every read call waits on that buffer and consumes what it returns: a read cursor moves past
each match, so the next expect looks only at later bytes. Matching rules (look-back, end of
data, text decoding) are described in `hil.buses.matcher`.

Latency: a caller waiting in expect reads the transport itself when it can (one reader at a
time, `_read_lock`), doing exactly what the reader thread would; the reader thread then keeps
out of the way for `STEP_ASIDE`. Bytes thus reach the caller without a thread switch, which on
a VM costs more than everything else in a write-to-match round trip.

Errors: `BusTimeout` (what was awaited, for how long, the tail of what did arrive),
`ConnectionLost` (peer closed or the reader failed: at once, not at the timeout),
`PatternError`, `WatcherTriggered` (a `fail_on` pattern appeared), all naming the bus.
"""
from __future__ import annotations

import os
import re
import select
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from hil import clock
from hil.buses.buffer import DEFAULT_RETENTION, ReceiveBuffer
from hil.buses.matcher import (MAX_MATCH, Found, Pattern, PatternLike, Search, check_encoding,
                               compile_pattern, compile_patterns, decode)
from hil.buses.transcript import Transcript, escape
from hil.errors import BusError, BusTimeout, ConnectionLost, PatternError, WatcherTriggered

T = TypeVar("T")
CHUNK = 256 * 1024          # most bytes read from a transport in one go
BIG_READ = 4000             # a read this big suggests a flood: more bytes are waiting
TAIL = 200                  # bytes of received data an error message shows
SETTLE = 0.05               # see matcher: a deferred match is taken after this much silence
MAX_HITS = 1000             # watcher hits kept per bus
STEP_ASIDE = 0.05           # the reader thread pauses this long after a caller read directly
CATCH_UP = 0.5              # drain waits at most this long for a read in progress
_DEFERRED = object()        # a step found a match that more bytes could still change


class Transport(Protocol):
    """What a bus needs from a byte pipe. The reader thread waits and reads; with `direct`,
    a caller waiting in expect may too (one at a time), which saves a thread switch."""

    description: str        # for messages: "/dev/ttyUSB0", "tcp 127.0.0.1:5000"
    direct: bool            # callers may use wait_for() and read() as well

    def wait(self) -> bool:
        """Block until bytes (or end of stream) can be read: True; False once `wake()`d."""

    def wait_for(self, timeout: float) -> bool:
        """Like `wait`, for at most `timeout` seconds (a caller's wait; only if `direct`)."""

    def read_into(self, room: memoryview) -> int | None:
        """Copy what arrived into `room` (after a positive wait: without blocking for long):
        the count; 0 at end of stream; None if nothing arrived."""

    def write(self, data: bytes, timeout: float) -> None:
        """Write all of `data` (TimeoutError if it cannot within `timeout`)."""

    def wake(self) -> None:
        """Make every wait return False from now on (the bus is closing)."""

    def close(self) -> None: ...


class FdWaiter:
    """Waits until a file descriptor is readable, or until `wake()` (a self-pipe).

    The reader thread's `wait()` and a caller's `wait(timeout)` use separate poll objects,
    so both can wait at once."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._r, self._w = os.pipe()
        self._polls = []
        for _ in range(2):
            poll = select.poll()
            poll.register(fd, select.POLLIN | select.POLLPRI)
            poll.register(self._r, select.POLLIN)
            self._polls.append(poll)
        self._out = select.poll()
        self._out.register(fd, select.POLLOUT)

    def wait(self, timeout: float | None = None) -> bool:
        """True when the fd is readable (or hung up); False when woken or timed out."""
        if timeout is None:
            events = self._polls[0].poll()
        else:
            events = self._polls[1].poll(max(0, int(timeout * 1000 + 0.999)))
        return bool(events) and all(fd != self._r for fd, _ in events)

    def writable(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds until the fd can take more bytes (one writer)."""
        return bool(self._out.poll(max(0, int(timeout * 1000 + 0.999))))

    def hung_up(self) -> bool:
        """True if the fd reports a hang-up or an error right now."""
        events = self._polls[1].poll(0)
        return any(fd == self.fd and ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
                   for fd, ev in events)

    def wake(self) -> None:
        os.write(self._w, b"x")

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


@dataclass(frozen=True)
class Mark:
    """A remembered point of a bus: bytes received so far, and when (`hil.clock.now()`)."""

    name: str
    offset: int
    time: float


@dataclass(slots=True, eq=False)
class Match:
    """What `expect` found: like `re.Match`, plus absolute byte offsets and the arrival time.

    `start`/`end` are byte offsets since the bus opened; `time` is when the chunk that completed
    the match arrived. Text patterns give str results, bytes patterns bytes. `before` is read
    from the receive buffer when first used (a flood may have dropped its oldest bytes by then).
    """

    index: int                          # which of the patterns matched
    pattern: PatternLike
    start: int
    end: int
    time: float
    text: str | bytes                   # the whole match, group(0)
    encoding: str = field(default="utf-8", repr=False)
    _regs: tuple[tuple[int, int], ...] = field(default=((0, 0),), repr=False)
    _origin: int = field(default=0, repr=False)    # where _regs offsets start
    _names: Mapping[str, int] = field(default_factory=dict, repr=False)
    _buffer: ReceiveBuffer | None = field(default=None, repr=False)
    _cursor: int = field(default=0, repr=False)    # where `before` starts
    _before: bytes | None = field(default=None, init=False, repr=False)

    @property
    def before_bytes(self) -> bytes:
        """The raw bytes from the read cursor up to the match."""
        if self._before is None:
            if self._buffer is None:
                self._before = b""
            else:
                with self._buffer.lock:
                    self._before = self._buffer.get(self._cursor, self.start)
        return self._before

    @property
    def before(self) -> str | bytes:
        """What arrived before the match (since the previous read), decoded for text patterns."""
        raw = self.before_bytes
        return decode(raw, self.encoding) if isinstance(self.text, str) else raw

    def group(self, *which: int | str) -> str | bytes | None | tuple[str | bytes | None, ...]:
        if len(which) > 1:
            return tuple(self._group(g) for g in which)
        return self._group(which[0] if which else 0)

    def groups(self, default: object = None) -> tuple[object, ...]:
        return tuple(default if g is None else g
                     for g in (self._group(i) for i in range(1, len(self._regs))))

    def groupdict(self, default: object = None) -> dict[str, object]:
        return {name: default if (g := self._group(i)) is None else g
                for name, i in self._names.items()}

    def __getitem__(self, g: int | str) -> str | bytes | None:
        return self._group(g)

    def _index(self, g: int | str) -> int:
        index = self._names[g] if isinstance(g, str) else g
        if not 0 <= index < len(self._regs):
            raise IndexError(f"no such group: {g!r}")
        return index

    def _group(self, g: int | str) -> str | bytes | None:
        s, e = self._regs[self._index(g)]
        return None if s < 0 else self.text[s - self._origin:e - self._origin]


@dataclass(frozen=True)
class WatcherHit:
    """A `fail_on` pattern appeared: where (byte offsets), when, and in which line."""

    pattern: PatternLike
    start: int
    end: int
    time: float
    line: str


@dataclass(eq=False)
class Watcher:
    """A `fail_on` pattern in force; `remove()` it, or use it as a context manager."""

    bus: Bus
    pattern: Pattern
    search: Search = field(repr=False)

    def remove(self) -> None:
        self.bus._remove_watcher(self)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class Bus:
    """A byte stream with expect over any `Transport` (see TcpBus, SerialBus).

    `timeout`: default for every wait (s). `encoding`: for str data and patterns (UTF-8 or a
    single-byte ASCII-compatible one). `line_ending`: appended by `writeline`. `retention`:
    bytes of received data kept. `max_match`: longest match of an unbounded regex that may
    span lines. `settle`: silence after which a match touching the end of data is taken.
    """

    def __init__(self, transport: Transport, *, name: str | None = None,
                 encoding: str = "utf-8", line_ending: str = "\n", timeout: float = 10.0,
                 retention: int = DEFAULT_RETENTION, max_match: int = MAX_MATCH,
                 settle: float = SETTLE) -> None:
        self.name = name or transport.description
        self.encoding = check_encoding(encoding)
        self.line_ending = line_ending
        self.timeout = timeout
        self.max_match = max_match
        self.settle = settle
        self.buffer = ReceiveBuffer(retention)
        self.transcript = Transcript(self.buffer, name=self.name, encoding=self.encoding,
                                     retention=retention)
        self.marks: dict[str, Mark] = {}
        self.watcher_hits: list[WatcherHit] = []
        self._transport = transport
        self._cursor = 0
        self._watchers: list[Watcher] = []
        self._unraised: list[WatcherHit] = []
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()     # held by whoever reads the transport
        self._closing = False
        self._stop = threading.Event()          # set at close
        self._direct_at = float("-inf")         # when a caller last read the transport
        self._want_read = False                 # a waiting caller would read if it could
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"hil-bus-reader {self.name}")
        self._reader.start()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # ------------------------------------------------------------------ writing
    def write(self, data: bytes | str) -> None:
        """Send bytes, or text encoded with the bus encoding."""
        if isinstance(data, str):
            data = data.encode(self.encoding)
        with self.buffer.lock:
            self._check_usable()
        with self._write_lock:
            self.transcript.sent(data, clock.now())
            try:
                self._transport.write(data, self.timeout)
            except TimeoutError:
                raise BusTimeout(f"{self.name}: timed out after {self.timeout:g} s writing "
                                 f"{len(data)} bytes (the peer is not reading)") from None
            except OSError as exc:
                raise ConnectionLost(f"{self.name}: write failed: {exc}") from exc

    def writeline(self, text: str) -> None:
        """Send `text` plus the bus's line ending."""
        self.write(text + self.line_ending)

    def write_hex(self, hex_string: str) -> None:
        """Send bytes written as hex digits, as older bench scripts do: "0a1b ff" -> 0a 1b ff."""
        digits = "".join(hex_string.split())
        bad = re.search(r"[^0-9a-fA-F]", digits)
        if bad or len(digits) % 2:
            where = (f"{bad.group()!r} is not a hex digit" if bad
                     else f"odd number of hex digits ({len(digits)})")
            raise ValueError(f"{self.name}: write_hex({hex_string!r}): {where}; expected pairs "
                             "of hex digits, spaces allowed, like '0a 1b ff'")
        self.write(bytes.fromhex(digits))

    # ------------------------------------------------------------------ reading
    def read(self, n: int, timeout: float | None = None) -> bytes:
        """Exactly the next `n` bytes (BusTimeout if they do not all arrive in time)."""
        def step(final: bool) -> bytes | None:
            start = self._start()
            if self.buffer.end - start < n:
                return None
            self._cursor = start + n
            return self.buffer.get(start, start + n)
        return self._await(step, timeout, lambda: f"{n} bytes")

    def read_until(self, terminator: str | bytes | Sequence[str | bytes] = b"\n",
                   timeout: float | None = None) -> str | bytes:
        """Everything up to and including the first terminator (str if it is str)."""
        patterns = compile_patterns(terminator, True, self.encoding)  # type: ignore[arg-type]

        def consume(found: Found) -> str | bytes:
            data = self.buffer.get(self._cursor, found.end)
            self._cursor = found.end
            return decode(data, self.encoding) if patterns[found.index].text else data
        return self._search(patterns, timeout, consume)

    def expect(self, pattern: PatternLike | Sequence[PatternLike],
               timeout: float | None = None) -> Match:
        """Wait for a regex (or the first of several) to appear; consume through the match."""
        return self._search(compile_patterns(pattern, False, self.encoding), timeout)

    def expect_exact(self, literal: str | bytes | Sequence[str | bytes],
                     timeout: float | None = None) -> Match:
        """Like `expect`, for literal text or bytes (no regex syntax)."""
        patterns = compile_patterns(literal, True, self.encoding)  # type: ignore[arg-type]
        return self._search(patterns, timeout)

    def query(self, data: bytes | str, expect: PatternLike | Sequence[PatternLike],
              timeout: float | None = None, *, exact: bool = False) -> Match:
        """Send `data` and wait for the answer. Unread output from before is discarded first
        (it stays in the transcript), so an old line cannot answer a new question."""
        self.drain()
        self.write(data)
        if exact:
            return self.expect_exact(expect, timeout)  # type: ignore[arg-type]
        return self.expect(expect, timeout)

    def lines(self, timeout: float | None = None) -> Iterator[str]:
        """Yield each received line (decoded, line ending removed) until `timeout` seconds
        have passed in all, or the stream ends (then the unterminated rest, if any)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                line = self.read_until(b"\n", max(0.0, deadline - time.monotonic()))
            except BusTimeout:
                return
            except ConnectionLost:
                rest = self.drain()
                if rest:
                    yield decode(rest, self.encoding)
                return
            end = -2 if line.endswith(b"\r\n") else -1  # type: ignore[arg-type]
            yield decode(line[:end], self.encoding)  # type: ignore[arg-type]

    def drain(self) -> bytes:
        """Discard and return everything received but not read yet."""
        self._catch_up()
        with self.buffer.lock:
            self._raise_watcher_hit()
            start, self._cursor = self._start(), self.buffer.end
            return self.buffer.get(start, self._cursor)

    def mark(self, name: str) -> Mark:
        """Remember this point (bytes received so far, and the time) as `marks[name]`."""
        with self.buffer.lock:
            mark = Mark(name, self.buffer.end, clock.now())
        self.marks[name] = mark
        return mark

    # ------------------------------------------------------------------ watchers
    def fail_on(self, pattern: PatternLike, *, exact: bool = False) -> Watcher:
        """Fail the test whenever `pattern` appears from now on ("panic", "assert failed").

        Checked on every chunk as it is read (by the reader thread, or by a waiting caller):
        a hit is recorded in `watcher_hits` and makes the next (or the waiting) bus call raise
        WatcherTriggered; `check_watchers()` raises it if no call did.
        """
        compiled = compile_pattern(pattern, exact, self.encoding)
        with self.buffer.lock:
            if compiled.matches_empty:
                raise PatternError(f"fail_on({pattern!r}) matches the empty string: it would "
                                   "fire on every chunk")
            watcher = Watcher(self, compiled, Search([compiled], self.buffer.end,
                                                     max_match=self.max_match,
                                                     encoding=self.encoding))
            self._watchers = [*self._watchers, watcher]
        return watcher

    def check_watchers(self) -> None:
        """Raise WatcherTriggered for a hit no bus call has raised yet (the plugin calls this
        after each test)."""
        self._catch_up()
        with self.buffer.lock:
            self._raise_watcher_hit()

    def _remove_watcher(self, watcher: Watcher) -> None:
        with self.buffer.lock:
            self._watchers = [w for w in self._watchers if w is not watcher]

    # ------------------------------------------------------------------ state, closing
    @property
    def received(self) -> int:
        """Bytes received since the bus opened."""
        return self.buffer.end

    @property
    def pending(self) -> int:
        """Bytes received and retained but not read yet."""
        with self.buffer.lock:
            return self.buffer.end - self._start()

    @property
    def closed(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop the reader and close the transport (idempotent)."""
        if self._closing:
            return
        self._closing = True
        self._stop.set()
        self._transport.wake()
        self._reader.join(timeout=2.0)
        with self._read_lock:
            self._transport.close()
        self.buffer.close()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ engine
    def _read_loop(self) -> None:
        """The reader thread: transport -> buffer, transcript, watchers. Never loses an error:
        it is kept in the buffer and raised (as ConnectionLost) by the next call."""
        transport, error, more = self._transport, None, False
        try:
            while not self._closing and not self.buffer.closed:
                rest = self._direct_at + STEP_ASIDE - time.monotonic()
                if rest > 0:            # callers read the transport themselves: keep out of
                    self._stop.wait(rest)   # their way (waking here would cost them the GIL)
                    continue
                # After a big chunk, more is likely there: read on at once. Else poll first.
                if more or transport.wait():
                    with self._read_lock:       # a caller may be reading: let it finish
                        if self._direct_at + STEP_ASIDE > time.monotonic():
                            more = False        # it read what woke us (and may read on):
                            continue            # do not block in a read it should do
                        count = self._read_into_buffer()
                        self._take(count)
                        if self._want_read:     # a caller wants to read: step aside after this
                            self._want_read, self._direct_at = False, time.monotonic()
                    more = (count or 0) >= CHUNK // 2
        except BaseException as exc:  # noqa: BLE001 - surfaced by the next bus call
            error = exc
        if not self._closing:
            self.buffer.close(error)

    def _read_into_buffer(self) -> int | None:
        """One read straight into the buffer's free room (hold `_read_lock`). (Reading on
        while more is there, to search bigger batches, measured slower on a pty: the kernel
        then hands out its data in smaller pieces.)"""
        with self.buffer.reserve(CHUNK) as room:
            return self._transport.read_into(room)

    def _take(self, count: int | None) -> None:
        """Commit what a read put into the buffer, record it in the transcript, check the
        watchers, wake waiters. 0 is the end of the stream, None nothing."""
        if count is None:
            return
        if not count:
            self.buffer.close()
            return
        t = clock.now()
        with self.buffer.lock:
            start, end = self.buffer.commit(count, t)
            self.transcript.received(start, end, t)
            if self._watchers:
                self._check_watchers()
            self.buffer.changed.notify_all()

    def _catch_up(self) -> None:
        """Read what already arrived, now (the reader thread may be stepping aside, or be
        committing a read: wait for that)."""
        transport = self._transport
        if transport.direct and self._read_lock.acquire(timeout=CATCH_UP):
            try:
                for _ in range(64):                 # bounded: a flood does not hold us here
                    if self._closing or self.buffer.closed or not transport.wait_for(0):
                        break
                    count = self._read_into_buffer()
                    self._take(count)
                    if not count:
                        break
            except Exception as exc:  # noqa: BLE001 - kept like the reader thread's errors
                self.buffer.close(exc)
            finally:
                self._read_lock.release()

    def _read_here(self, seconds: float) -> None:
        """Read the transport in this (waiting) thread, for at most `seconds`; hold
        `buffer.lock` and `_read_lock`."""
        buffer, count = self.buffer, None
        self._direct_at = time.monotonic()
        try:
            buffer.lock.release()
            try:
                if self._transport.wait_for(seconds):
                    count = self._read_into_buffer()
            finally:
                buffer.lock.acquire()
            if not self._closing:
                self._take(count)
        except Exception as exc:  # noqa: BLE001 - kept like the reader thread's errors
            buffer.close(exc)

    def _check_watchers(self) -> None:
        with self.buffer.lock:
            for watcher in self._watchers:
                while (found := watcher.search.step(self.buffer, final=True)) is not None:
                    watcher.search.skip_to(max(found.end, found.start + 1))
                    hit = WatcherHit(watcher.pattern.source, found.start, found.end,
                                     self.buffer.time_at(found.start),
                                     self._line_around(found.start, found.end))
                    if len(self.watcher_hits) < MAX_HITS:
                        self.watcher_hits.append(hit)
                    self._unraised.append(hit)
            if self._unraised:
                self.buffer.changed.notify_all()

    def _line_around(self, start: int, end: int) -> str:
        """The received line holding [start, end) (as much of it as has arrived)."""
        data, base, used = self.buffer.data, self.buffer.base, self.buffer.used
        lo = data.rfind(b"\n", max(0, start - base - 500), max(0, start - base)) + 1
        hi = data.find(b"\n", end - base, min(used, end - base + 500))
        hi = min(used, end - base + 500) if hi < 0 else hi
        line = bytes(data[max(lo, start - base - 500, 0):hi]).rstrip(b"\r")
        return escape(line, self.encoding)

    def _raise_watcher_hit(self) -> None:
        """Raise WatcherTriggered for the first unraised hit (hold `buffer.lock`)."""
        if not self._unraised:
            return
        hit, more = self._unraised[0], len(self._unraised) - 1
        self._unraised.clear()
        line = self._line_around(hit.start, hit.end) if hit.start >= self.buffer.base \
            else hit.line
        pattern = hit.pattern.pattern if isinstance(hit.pattern, re.Pattern) else hit.pattern
        raise WatcherTriggered(f"{self.name}: fail_on({pattern!r}) matched at byte "
                               f"{hit.start}, in line: '{line}'"
                               + (f" (and {more} more hits)" if more else ""))

    def _check_usable(self) -> None:
        """Raise for a watcher hit, a closed bus or a dead reader (hold `buffer.lock`)."""
        self._raise_watcher_hit()
        if self._closing:
            raise BusError(f"{self.name}: the bus is closed")
        if self.buffer.closed:
            raise self._lost("to write")

    def _start(self) -> int:
        """The read cursor, moved past bytes dropped by the retention limit."""
        return max(self._cursor, self.buffer.base)

    def _match(self, found: Found, patterns: Sequence[Pattern]) -> Match:
        """Turn what a Search found into a Match and move the cursor past it."""
        pattern = patterns[found.index]
        text, regs, origin = found.copy_out(pattern)
        buffer = self.buffer
        match = Match(found.index, pattern.source, found.start, found.end,
                      buffer.time_at(max(found.start, found.end - 1)), text, self.encoding,
                      regs, origin, found.match.re.groupindex if found.match else {},
                      buffer, self._cursor)
        self._cursor = found.end
        return match

    def _search(self, patterns: Sequence[Pattern], timeout: float | None,
                consume: Callable[[Found], T] | None = None) -> T:
        """Wait for the leftmost match of `patterns` after the cursor; `consume` it (default:
        into a Match)."""
        buffer = self.buffer
        searched = -1               # buffer.end the short way searched up to, found nothing
        with buffer.lock:           # often the answer is here already: take the short way
            search = Search(patterns, self._start(), self.max_match, self.encoding)
            if not (self._unraised or self._closing):
                found = search.step(buffer, buffer.closed)
                if found is not None and not found.deferred:
                    return consume(found) if consume else self._match(found, patterns)
                if found is None and not buffer.closed:
                    searched = buffer.end
        take = consume or (lambda found: self._match(found, patterns))

        def step(final: bool) -> object:
            nonlocal searched
            if searched >= 0:       # the first step of the wait: skip it if nothing arrived
                unchanged, searched = searched == buffer.end and not final, -1
                if unchanged:
                    return None
            found = search.step(buffer, final)
            if found is None or found.deferred:
                return _DEFERRED if found else None
            return take(found)

        def what() -> str:
            kinds = ["literal " + p.describe() if p.needle is not None else "regex " + p.describe()
                     for p in patterns]
            return kinds[0] if len(kinds) == 1 else "one of " + ", ".join(kinds)
        return self._await(step, timeout, what)  # type: ignore[return-value]

    def _await(self, step: Callable[[bool], object], timeout: float | None,
               what: Callable[[], str]) -> T:
        """Run `step(final)` on each arrival until it returns a result; raise on a watcher hit,
        at end of stream (ConnectionLost) or at the deadline (BusTimeout)."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        buffer = self.buffer
        # Waiting, this thread reads the transport itself when no one else is (it then holds
        # `_read_lock`): bytes reach it without a thread switch, and the reader thread rests.
        reading, direct = False, self._transport.direct
        with buffer.lock:
            try:
                if self._closing:
                    raise BusError(f"{self.name}: the bus is closed")
                began, deferred_since = buffer.end, 0.0
                while True:
                    if self._unraised:
                        self._raise_watcher_hit()
                    result = step(buffer.closed)
                    if result is not None and result is not _DEFERRED:
                        return result  # type: ignore[return-value]
                    if buffer.closed:
                        raise self._lost(f"waiting for {what()}")
                    wake = deadline
                    if result is _DEFERRED:  # take it after `settle` s of silence while waiting
                        deferred_since = deferred_since or time.monotonic()
                        quiet_from = max(deferred_since, clock.to_monotonic(buffer.last_time))
                        wake = min(deadline, quiet_from + self.settle)
                    left = wake - time.monotonic()
                    if left <= 0:
                        if result is _DEFERRED:
                            final = step(True)
                            if final is not None and final is not _DEFERRED:
                                return final  # type: ignore[return-value]
                        raise self._timeout(what(), limit, began)
                    if self._closing:
                        raise BusError(f"{self.name}: the bus was closed while waiting for "
                                       f"{what()}")
                    if direct and not reading:
                        reading = self._read_lock.acquire(blocking=False)
                        self._want_read = not reading   # asks the reader thread to step aside
                    if reading:
                        self._read_here(left)
                    else:
                        buffer.changed.wait(left)
            finally:
                if reading:                     # another waiting caller may read now
                    self._read_lock.release()
                    buffer.changed.notify_all()

    def _tail(self) -> tuple[bytes, str]:
        """The last bytes received (unread ones if any) and a phrase describing them."""
        start = self._start()
        unread = self.buffer.end - start
        if unread:
            data = self.buffer.get(max(start, self.buffer.end - TAIL), self.buffer.end)
            shown = escape(data, self.encoding)
            return data, f"last {len(data)} of {unread} unread bytes: '{shown}'"
        data = self.buffer.get(self.buffer.end - TAIL, self.buffer.end)
        if not data:
            return data, "nothing was ever received"
        return data, f"nothing unread; last bytes received before: '{escape(data, self.encoding)}'"

    def _timeout(self, what: str, limit: float, began: int) -> BusTimeout:
        tail, shown = self._tail()
        arrived = self.buffer.end - began
        return BusTimeout(f"{self.name}: timed out after {limit:g} s waiting for {what}; "
                          f"{arrived} bytes arrived meanwhile; {shown}", tail=tail)

    def _lost(self, doing: str) -> ConnectionLost:
        error = self.buffer.error
        if self._closing:
            reason = "the bus was closed"
        elif error is None:
            reason = "the peer closed the connection"
        else:
            reason = f"the reader failed: {type(error).__name__}: {error}"
        _, shown = self._tail()
        lost = ConnectionLost(f"{self.name}: connection lost {doing} ({reason}); {shown}")
        lost.__cause__ = error
        return lost
