"""`Bus`: a byte stream (serial port, TCP socket) with expect, one API over every transport.

One reader thread per bus moves bytes from the transport into a ReceiveBuffer (absolute
offsets, arrival times, bounded), records them in the transcript and checks the watchers.
Every read call waits on that buffer and consumes what it returns: a read cursor moves past
each match, so the next expect looks only at later bytes. Matching rules (look-back, end of
data, text decoding, engines) are described in `hil.buses.matcher`.

Latency without skew: a caller waiting in expect reads the transport itself when it can (one
reader at a time, `_read_lock`), so bytes reach it without a thread switch, which on a VM costs
more than everything else in a write-to-match round trip. The reader thread keeps off the
transport exactly while a caller is in such a wait: the transport stops the reader's epoll set
from reporting the fd's data (`pause_reader`, no wake-up), so the caller's bytes do not wake
the reader thread to race it for the GIL (20-40 µs a round trip, measured in alternating
blocks; interrupting the reader's poll at each wait start measured slower still). When the last
caller stops, the data is reported again (`resume_reader`), which wakes the reader only if
bytes are already there: no byte sits unread — and unstamped — while nobody reads. `mark()`
reads what already arrived before it takes its point.

Errors: `BusTimeout` (what was awaited, for how long, what was unread when the wait began and
what came during it, the tail), `ConnectionLost` (peer closed or the reader failed: at once,
not at the timeout), `PatternError`, `WatcherTriggered` (a `fail_on` pattern appeared), all
naming the bus. The frames of this module are hidden from pytest tracebacks
(`__tracebackhide__`), so a failure shows the test's line and the message.
"""
from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from hil import clock
from hil.buses.buffer import DEFAULT_RETENTION, ReceiveBuffer
from hil.buses.match import Mark, Match, Watcher, WatcherHit
from hil.buses.matcher import (MAX_MATCH, Found, Pattern, PatternLike, Search, SearchTooSlow,
                               check_encoding, compile_pattern, compile_patterns, decode)
from hil.buses.transcript import Transcript, escape
from hil.buses.transport import Transport
from hil.errors import (BusDataError, BusError, BusTimeout, ConnectionLost, PatternError,
                        WatcherTriggered)

__all__ = ["Bus"]

T = TypeVar("T")
CHUNK = 256 * 1024          # most bytes read from a transport in one go
TAIL = 200                  # bytes of received data an error message shows
SETTLE = 0.05               # see matcher: a deferred match is taken after this much silence
MAX_HITS = 1000             # watcher hits kept per bus (and hits awaiting their raise)
CATCH_UP = 0.5              # a catch-up waits at most this long for a read in progress
WATCHER_BUDGET = 0.1        # seconds a watcher's backtracking search may take per chunk
MIN_BUDGET = 0.01           # a search at the deadline still gets this long
_DEFERRED = object()        # a step found a match that more bytes could still change
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
        self.timeout = timeout                  # checked by the property's setter
        self.encoding = check_encoding(encoding)
        self.line_ending = line_ending
        self.max_match = max_match
        self.settle = settle
        self.buffer = ReceiveBuffer(retention)
        self.transcript = Transcript(self.buffer, name=self.name, encoding=self.encoding,
                                     retention=retention)
        self.marks: dict[str, Mark] = {}
        self.watcher_hits: list[WatcherHit] = []    # the first MAX_HITS hits
        self.hits_dropped = 0                   # hits beyond those, counted
        self._transport = transport
        self._cursor = 0
        self._watchers: list[Watcher] = []
        self._unraised: list[WatcherHit] = []   # hits no call has raised yet (at most MAX_HITS)
        self._unraised_more = 0                 # ... and how many more there were
        self._pending: BusError | None = None   # an error for the next call (a dropped watcher)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()      # held by whoever reads the transport
        self._turn = threading.Condition(threading.Lock())  # guards `_callers`:
        self._callers = 0                       # callers that read (or want to) in their wait
        self._parked = False                    # the reader thread rests in `_turn.wait()`
        self._waiting = 0                       # callers in a wait of any kind (buffer.lock)
        self._sleepers = 0                      # ... of them, asleep in `buffer.changed.wait`
        self._closing = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"hil-bus-reader {self.name}")
        self._reader.start()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @property
    def timeout(self) -> float:
        """Default seconds for every wait; a finite number, 0 or more (BusDataError if not)."""
        return self._wait_default

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._wait_default = _seconds(self.name, value)

    # ------------------------------------------------------------------ writing
    def write(self, data: bytes | str) -> None:
        """Send bytes, or text encoded with the bus encoding."""
        __tracebackhide__ = True
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
        __tracebackhide__ = True
        self.write(text + self.line_ending)

    def write_hex(self, hex_string: str) -> None:
        """Send bytes written as hex digits, as older bench scripts do: "0a1b ff" -> 0a 1b ff."""
        __tracebackhide__ = True
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
        __tracebackhide__ = True
        def step(final: bool, budget: float) -> bytes | None:
            start = self._start()
            if self.buffer.end - start < n:
                return None
            self._cursor = start + n
            return self.buffer.get(start, start + n)
        return self._await(step, self._limit(timeout),
                           lambda: f"{n} bytes")

    def read_until(self, terminator: str | bytes | Sequence[str | bytes] = b"\n",
                   timeout: float | None = None) -> str | bytes:
        """Everything up to and including the first terminator (str if it is str)."""
        __tracebackhide__ = True
        patterns = compile_patterns(terminator, True, self.encoding)  # type: ignore[arg-type]

        def consume(found: Found) -> str | bytes:
            data = self.buffer.get(self._cursor, found.end)
            self._cursor = max(self._cursor, found.end)
            return decode(data, self.encoding) if patterns[found.index].text else data
        return self._search(patterns, timeout, consume)

    def expect(self, pattern: PatternLike | Sequence[PatternLike],
               timeout: float | None = None) -> Match:
        """Wait for a regex (or the first of several) to appear; consume through the match."""
        __tracebackhide__ = True
        return self._search(compile_patterns(pattern, False, self.encoding), timeout)

    def expect_exact(self, literal: str | bytes | Sequence[str | bytes],
                     timeout: float | None = None) -> Match:
        """Like `expect`, for literal text or bytes (no regex syntax)."""
        __tracebackhide__ = True
        patterns = compile_patterns(literal, True, self.encoding)  # type: ignore[arg-type]
        return self._search(patterns, timeout)

    def query(self, data: bytes | str, expect: PatternLike | Sequence[PatternLike],
              timeout: float | None = None, *, exact: bool = False) -> Match:
        """Send `data` and wait for the answer. Unread output from before is discarded first
        (it stays in the transcript), so an old line cannot answer a new question."""
        __tracebackhide__ = True
        self.drain()
        self.write(data)
        if exact:
            return self.expect_exact(expect, timeout)  # type: ignore[arg-type]
        return self.expect(expect, timeout)

    def lines(self, timeout: float | None = None) -> Iterator[str]:
        """Yield each received line (decoded, line ending removed) until `timeout` seconds
        have passed in all, or the stream ends (then the unterminated rest, if any)."""
        deadline = time.monotonic() + self._limit(timeout)
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
        __tracebackhide__ = True
        self._catch_up()
        with self.buffer.lock:
            self._raise_pending()
            start, self._cursor = self._start(), self.buffer.end
            return self.buffer.get(start, self._cursor)

    def mark(self, name: str) -> Mark:
        """Remember this point (bytes received so far, and the time) as `marks[name]`. What
        already arrived is read first, so the point counts every byte that came before it."""
        self._catch_up()
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

    @property
    def watchers(self) -> tuple[Watcher, ...]:
        """The `fail_on` watchers in force, oldest first."""
        return tuple(self._watchers)

    def check_watchers(self) -> None:
        """Raise WatcherTriggered for a hit no bus call has raised yet (the plugin calls this
        after each test)."""
        __tracebackhide__ = True
        self._catch_up()
        with self.buffer.lock:
            self._raise_pending()

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
        with self._turn:
            self._turn.notify_all()
        self._transport.wake()
        self._reader.join(timeout=2.0)
        with self._read_lock:
            self._transport.close()
        self.buffer.close()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


    # ------------------------------------------------------------------ engine: reading
    def _read_loop(self) -> None:
        """The reader thread: transport -> buffer, transcript, watchers. It keeps off the
        transport while a caller reads in its wait, and never loses an error: that is kept in
        the buffer and raised (as ConnectionLost) by the next call."""
        transport, error, more, skipped = self._transport, None, False, 0
        try:
            while not self._closing and not self.buffer.closed:
                # While callers wait, the transport keeps the wait below from waking for data
                # (pause_reader), so the reader waits there: when the last caller stops, it
                # wakes only if bytes came meanwhile. Woken twice while a caller reads (a
                # hang-up, a flood's blocking reads), it rests until the last one stops.
                if self._callers and skipped > 1:
                    with self._turn:
                        while self._callers and not self._closing:
                            more, self._parked = False, True
                            self._turn.wait()
                        self._parked = False
                    skipped = 0
                # after a big chunk, more is likely there: read on at once
                ready = more or transport.wait()
                if not ready or self._callers:  # closing, or a caller reads now
                    more, skipped = False, skipped + 1
                    continue
                skipped = 0
                count = self._read_in_turn(more)
                more = (count or 0) >= min(CHUNK, self.buffer.max_read) // 2
        except BaseException as exc:  # noqa: BLE001 - surfaced by the next bus call
            error = exc
        if not self._closing:
            self.buffer.close(error)

    def _read_in_turn(self, more: bool) -> int | None:
        """One read by the reader thread, once no one else reads. If it had to wait for that,
        it reads only if bytes are still there (a blocking serial read would hold others off)."""
        if not self._read_lock.acquire(blocking=False):
            self._read_lock.acquire()
            if self._transport.direct and not self._transport.wait_for(0):
                self._release_read()
                return None
        try:
            count = self._read_into_buffer()
            self._take(count)
            return count
        finally:
            self._release_read()

    def _release_read(self) -> None:
        """Release `_read_lock`; a caller waiting to read (not notified by a commit) may now."""
        self._read_lock.release()
        if self._callers:
            with self.buffer.lock:
                self._wake_sleepers()

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
            self._wake_sleepers()

    def _wake_sleepers(self) -> None:
        """Wake the callers asleep in `buffer.changed.wait` (hold `buffer.lock`)."""
        if self._sleepers:
            self.buffer.changed.notify_all()

    def _catch_up(self) -> None:
        """Read what already arrived, now (waiting for a read in progress to finish)."""
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
                self._release_read()

    def _start_reading(self) -> None:
        """A caller begins a wait in which it reads the transport itself: the reader thread
        keeps off, and its wait no longer wakes for data (no race for the GIL when bytes
        come: that costs 20-40 µs a round trip on a VM)."""
        with self._turn:
            self._callers += 1
            if self._callers == 1:
                self._transport.pause_reader()

    def _stop_reading(self) -> None:
        """A caller's wait ends: the last one hands the transport back to the reader thread,
        whose wait wakes only if bytes are already there (or come later)."""
        with self._turn:
            self._callers -= 1
            if not self._callers:
                self._transport.resume_reader()
                if self._parked:
                    self._turn.notify()

    def _read_here(self, seconds: float) -> None:
        """Read the transport in this (waiting) thread, for at most `seconds`; hold
        `buffer.lock` and `_read_lock`."""
        buffer, count = self.buffer, None
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

    # ------------------------------------------------------------------ engine: watchers
    def _check_watchers(self) -> None:
        with self.buffer.lock:
            for watcher in self._watchers:
                try:
                    self._find_hits(watcher)
                except SearchTooSlow as exc:
                    self._drop_slow_watcher(watcher, exc)
            if self._unraised or self._pending:
                self._wake_sleepers()

    def _find_hits(self, watcher: Watcher) -> None:
        while (found := watcher.search.step(self.buffer, True, WATCHER_BUDGET)) is not None:
            watcher.search.skip_to(max(found.end, found.start + 1))
            hit = WatcherHit(watcher.pattern.source, found.start, found.end,
                             self.buffer.time_at(found.start),
                             self._line_around(found.start, found.end))
            if len(self.watcher_hits) < MAX_HITS:
                self.watcher_hits.append(hit)
            else:
                self.hits_dropped += 1
            if len(self._unraised) < MAX_HITS:
                self._unraised.append(hit)
            else:
                self._unraised_more += 1

    def _drop_slow_watcher(self, watcher: Watcher, exc: SearchTooSlow) -> None:
        """A watcher whose search backtracks out of its budget would cost every chunk that
        much: remove it, and fail the next call saying so."""
        self._watchers = [w for w in self._watchers if w is not watcher]
        if self._pending is None:
            self._pending = PatternError(
                f"{self.name}: fail_on({watcher.pattern.describe()}) was removed: searching it "
                f"took more than {exc.seconds:g} s on the bytes up to {self.buffer.end} "
                f"(catastrophic backtracking: {_why_not_re2()}); simplify it")

    def _line_around(self, start: int, end: int) -> str:
        """The received line holding [start, end) (as much of it as has arrived)."""
        data, base, used = self.buffer.data, self.buffer.base, self.buffer.used
        lo = data.rfind(b"\n", max(0, start - base - 500), max(0, start - base)) + 1
        hi = data.find(b"\n", end - base, min(used, end - base + 500))
        hi = min(used, end - base + 500) if hi < 0 else hi
        line = bytes(data[max(lo, start - base - 500, 0):hi]).rstrip(b"\r")
        return escape(line, self.encoding)

    def _raise_pending(self) -> None:
        """Raise a dropped watcher's error, or WatcherTriggered for the first unraised hit
        (hold `buffer.lock`)."""
        __tracebackhide__ = True
        if self._pending is not None:
            pending, self._pending = self._pending, None
            raise pending
        if not self._unraised:
            return
        hit, more = self._unraised[0], len(self._unraised) - 1 + self._unraised_more
        self._unraised.clear()
        self._unraised_more = 0
        line = self._line_around(hit.start, hit.end) if hit.start >= self.buffer.base \
            else hit.line
        pattern = hit.pattern.pattern if isinstance(hit.pattern, re.Pattern) else hit.pattern
        raise WatcherTriggered(f"{self.name}: fail_on({pattern!r}) matched at byte "
                               f"{hit.start}, in line: '{line}'"
                               + (f" (and {more} more hits)" if more else ""))

    def _check_usable(self) -> None:
        """Raise for a watcher hit, a closed bus or a dead reader (hold `buffer.lock`)."""
        __tracebackhide__ = True
        self._raise_pending()
        if self._closing:
            raise BusError(f"{self.name}: the bus is closed")
        if self.buffer.closed:
            raise self._lost("to write")

    # ------------------------------------------------------------------ engine: waiting
    def _limit(self, timeout: float | None) -> float:
        """The seconds a call may wait: its `timeout`, else the bus's (checked at open)."""
        __tracebackhide__ = True
        return self._wait_default if timeout is None else _seconds(self.name, timeout)

    def _start(self) -> int:
        """The read cursor, moved past bytes dropped by the retention limit."""
        cursor, base = self._cursor, self.buffer.base
        return cursor if cursor > base else base

    def _match(self, found: Found, patterns: Sequence[Pattern]) -> Match:
        """Turn what a Search found into a Match and move the cursor past it."""
        pattern = patterns[found.index]
        text, regs, origin = found.copy_out(pattern)
        buffer = self.buffer
        match = Match(found.index, pattern.source, found.start, found.end,
                      buffer.time_at(max(found.start, found.end - 1)), text, self.encoding,
                      regs, origin, pattern.names, buffer, self._cursor)
        self._cursor = max(self._cursor, found.end)     # two waiters: never move back
        return match

    def _search(self, patterns: Sequence[Pattern], timeout: float | None,
                consume: Callable[[Found], T] | None = None) -> T:
        """Wait for the leftmost match of `patterns` after the cursor; `consume` it (default:
        into a Match)."""
        __tracebackhide__ = True
        buffer = self.buffer
        limit = self._limit(timeout)
        searched = -1               # buffer.end the short way searched up to, found nothing
        with buffer.lock:           # often the answer is here already: take the short way
            start = self._start()
            search = Search(patterns, start, self.max_match, self.encoding)
            if not (self._unraised or self._pending or self._closing):
                if buffer.end == start and all(p.min_width for p in patterns):
                    found = None            # nothing unread, and every pattern needs a byte
                else:
                    found = self._step(search, buffer.closed, limit, limit)
                    if found is not None and not found.deferred:
                        return consume(found) if consume else self._match(found, patterns)
                if found is None and not buffer.closed:
                    searched = buffer.end

        def step(final: bool, budget: float) -> object:
            nonlocal searched
            if searched >= 0:       # the first step of the wait: skip it if nothing arrived
                unchanged, searched = searched == buffer.end and not final, -1
                if unchanged:
                    return None
            found = self._step(search, final, budget, limit)
            if found is None or found.deferred:
                return _DEFERRED if found else None
            return consume(found) if consume else self._match(found, patterns)
        return self._await(step, limit, lambda: _describe(patterns),  # type: ignore[return-value]
                           read_now=searched >= 0)

    def _step(self, search: Search, final: bool, budget: float, limit: float) -> Found | None:
        """One search step; a regex that backtracks past `budget` is a clear BusTimeout."""
        __tracebackhide__ = True
        try:
            return search.step(self.buffer, final, max(budget, MIN_BUDGET))
        except SearchTooSlow:
            pattern = search.trying.describe()
            raise BusTimeout(
                f"{self.name}: timed out after {limit:g} s waiting for "
                f"{_describe(search.patterns)}: searching "
                f"regex {pattern} did not finish in time (catastrophic backtracking on the "
                f"bytes up to {self.buffer.end}: {_why_not_re2()}); "
                "simplify the pattern", tail=self._tail()[0]) from None

    def _await(self, step: Callable[[bool, float], object], limit: float,
               what: Callable[[], str], read_now: bool = False) -> T:
        """Run `step(final, budget)` on each arrival until it returns a result; raise on a
        watcher hit, at end of stream (ConnectionLost) or at the deadline (BusTimeout).
        `read_now`: nothing can be found yet, so take the transport from the reader at once
        (the sooner, the less often its wait wakes for the answer to a write just made)."""
        __tracebackhide__ = True
        deadline = time.monotonic() + limit
        buffer = self.buffer
        # Waiting, this thread reads the transport itself when no one else is (it then holds
        # `_read_lock`): bytes reach it without a thread switch, and the reader thread rests.
        reading, counted, direct = False, False, self._transport.direct
        with buffer.lock:
            self._waiting += 1
            try:
                if self._closing:
                    raise BusError(f"{self.name}: the bus is closed")
                if direct and read_now:
                    counted = True
                    self._start_reading()
                began, unread = buffer.end, buffer.end - self._start()
                deferred_since = 0.0
                while True:
                    if self._unraised or self._pending:
                        self._raise_pending()
                    result = step(buffer.closed, deadline - time.monotonic())
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
                            final = step(True, MIN_BUDGET)
                            if final is not None and final is not _DEFERRED:
                                return final  # type: ignore[return-value]
                        raise self._timeout(what(), limit, unread, buffer.end - began)
                    if self._closing:
                        raise BusError(f"{self.name}: the bus was closed while waiting for "
                                       f"{what()}")
                    if direct and not counted:
                        counted = True
                        self._start_reading()
                    if direct and not reading:
                        reading = self._read_lock.acquire(blocking=False)
                    if reading:
                        self._read_here(left)
                    else:
                        self._sleepers += 1
                        try:
                            buffer.changed.wait(left)
                        finally:
                            self._sleepers -= 1
            finally:
                self._waiting -= 1
                if reading:                     # another waiting caller may read now
                    self._read_lock.release()
                    self._wake_sleepers()
                if counted:
                    self._stop_reading()

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

    def _timeout(self, what: str, limit: float, unread: int, arrived: int) -> BusTimeout:
        tail, shown = self._tail()
        return BusTimeout(f"{self.name}: timed out after {limit:g} s waiting for {what}; "
                          f"{unread} unread bytes when the wait began, {arrived} arrived during "
                          f"it; {shown}", tail=tail)

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


def _seconds(name: str, timeout: object) -> float:
    """`timeout` if it is a finite number of seconds, 0 or more (0: look at what already
    arrived, do not wait); else BusDataError (a ValueError) naming the bus."""
    __tracebackhide__ = True
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 0 <= timeout < math.inf:
        raise BusDataError(f"{name}: timeout must be a finite number of seconds, 0 or more; "
                           f"got {timeout!r}")
    return timeout


def _describe(patterns: Sequence[Pattern]) -> str:
    """What a wait is for, as its errors say it: "regex 'ok'", "one of literal 'a', ..."."""
    kinds = ["literal " + p.describe() if p.needle is not None else "regex " + p.describe()
             for p in patterns]
    return kinds[0] if len(kinds) == 1 else "one of " + ", ".join(kinds)


def _why_not_re2() -> str:
    return ("RE2 cannot run it as written (look-around, back-references, a `$` inside it, "
            "VERBOSE, or a str pattern on non-ASCII text), so the backtracking `regex` "
            "module does, with a time limit")
