"""The receive buffer: every byte a bus received, addressed by absolute offset, with arrival times.

One reader fills it (`reserve` room, read into it, `commit`); everything else (expect, read,
watchers, the transcript) reads it while holding `lock`; `changed` (a Condition on that lock)
is notified after each commit and at the end of the stream.

Memory is bounded by `retention`: the bytes live in `data[:used]`, one anonymous memory map of
`retention` bytes (the OS supplies its pages as they are first written, 2 MiB pages where it
can). When it is full, everything but the newest quarter is
dropped (`dropped` counts it) and that quarter moves to the front: a flood costs a third of a
copy per byte. A read takes at most a quarter of `retention`, so **the newest `retention // 4`
bytes are always kept**: a read never discards bytes just received, and a match up to that long
is never lost to a drop. Offsets keep counting from the first byte ever received.

Why a memory map and not a plain bytearray: `benchmarks/bench_expect.py --only throughput
--sizes 1,50` (hil / raw ceiling at 50 MiB, median of 5 paired runs, regex / literal, two
alternating runs each on this loaded 2-core VM) gave, with a bytearray growing to `retention`:
pty 0.80/0.78 and 0.67/0.80, TCP 0.82/0.85 and 0.51/0.54 (target 0.70 missed); with this map:
pty 1.27/1.14 and 1.26/1.39, TCP 1.09/1.37 and 1.02/0.99. The kernel here gives huge pages only
to memory advised so (`transparent_hugepage` = madvise), and 4 KiB pages over a 16 MiB buffer
cost the difference. The former pool that reused maps between buses bought nothing measurable
on these targets and is gone.
"""
from __future__ import annotations

import bisect
import mmap
import threading
from array import array

DEFAULT_RETENTION = 16 * 1024 * 1024
#: The smallest retention a bus accepts: it keeps the newest 1 KiB whatever happens, and reads
#: of 1 KiB are still cheap. (The rig checks its `retention` key against this.)
MIN_RETENTION = 4096
HUGE_PAGE = 2 * 1024 * 1024
#: Chunks arriving within this many seconds of the first chunk of a run share one entry of the
#: arrival-time index (stamped with the latest arrival), so a serial line trickling one byte
#: per read cannot grow the index faster than 10,000 entries a second (MAX_INDEX bounds it).
#: It is also the most a byte's arrival time can be late by: at 1 ms it was the whole p99 of
#: bench_expect's arrival error on TCP (1.1 ms; 0.5 ms at 100 µs).
TIME_RESOLUTION = 0.0001
#: Most entries the arrival-time index keeps: beyond it, pairs of entries in its older half are
#: merged (older bytes get coarser times), so a slow trickle cannot outgrow `retention`.
MAX_INDEX = 65536


def _new_map(size: int) -> mmap.mmap:
    """`size` bytes of anonymous memory, in 2 MiB pages where the kernel allows."""
    data = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if size >= HUGE_PAGE and hasattr(mmap, "MADV_HUGEPAGE"):
        try:                            # 512x fewer page faults and TLB misses in a flood
            data.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    data[0] = 0     # fault the first page in now: zeroing a 2 MiB page costs ~200 µs, which
    return data     # the first read would otherwise add to the first expect's latency


class ReceiveBuffer:
    """Received bytes `data[:used]` covering absolute offsets [base, end), and when they arrived.

    Read the attributes and call the reading methods only while holding `lock`. `closed` is
    set at end of stream (peer closed, device gone, bus closed); `error` then holds the
    reader's exception, if any.
    """

    def __init__(self, retention: int = DEFAULT_RETENTION) -> None:
        if retention < MIN_RETENTION:
            raise ValueError(f"retention must be at least {MIN_RETENTION} bytes, got {retention}")
        self.retention = retention
        self.data = _new_map(retention)
        self.used = 0
        self.base = 0                   # absolute offset of data[0] == bytes dropped so far
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.closed = False
        self.error: BaseException | None = None
        self.last_time = 0.0            # arrival time of the newest byte
        self.nonascii_end = 0           # end offset of the newest chunk holding a byte >= 0x80
        self._ends = array("q")         # arrival index: end offset of each run of chunks ...
        self._times = array("d")        # ... and the time its last chunk arrived
        self._first = 0                 # index entries before this one cover dropped bytes
        self._run_start = float("-inf")

    @property
    def end(self) -> int:
        """Absolute offset one past the newest byte (= total bytes ever received)."""
        return self.base + self.used

    @property
    def dropped(self) -> int:
        """Bytes discarded by the retention limit."""
        return self.base

    @property
    def max_read(self) -> int:
        """The most bytes one `reserve` hands out (a quarter of the retention)."""
        return self.retention // 4

    def reserve(self, size: int) -> memoryview:
        """Room for up to `size` more bytes at the end (at most `max_read`; dropping old bytes
        if full), for a reader to fill without holding the lock, then `commit()`. Release the
        view before the next reserve (`with buffer.reserve(n) as room:`)."""
        with self.lock:
            size = min(size, self.max_read)
            if self.used + size > self.retention:
                self._drop(self.used - self.max_read)
            return memoryview(self.data)[self.used:self.used + size]

    def commit(self, n: int, t: float) -> tuple[int, int]:
        """Take `n` bytes written into the last reserved room as received at time `t`; returns
        their absolute (start, end). The caller then notifies `changed`."""
        with self.lock:
            start = self.base + self.used
            if not self.data[self.used:self.used + n].isascii():
                self.nonascii_end = start + n
            self.used += n
            self._stamp(start + n, t)
        return start, start + n

    def append(self, chunk: bytes, t: float) -> tuple[int, int]:
        """Add one chunk that arrived at time `t` (in pieces of `max_read`); returns its span."""
        with self.lock:
            start = self.end
            for at in range(0, len(chunk), self.max_read):
                piece = chunk[at:at + self.max_read]
                with self.reserve(len(piece)) as room:
                    room[:] = piece
                self.commit(len(piece), t)
            return start, self.end

    def close(self, error: BaseException | None = None) -> None:
        """Mark the end of the stream (with the reader's exception, if it died of one)."""
        with self.lock:
            if not self.closed:
                self.closed, self.error = True, error
            self.changed.notify_all()

    def time_at(self, offset: int) -> float:
        """Arrival time of the byte at absolute `offset` (the oldest retained time if dropped)."""
        i = bisect.bisect_right(self._ends, offset, self._first)
        return self._times[i] if i < len(self._ends) else self.last_time

    def get(self, start: int, end: int) -> bytes:
        """A copy of absolute [start, end), clipped to what is retained."""
        base = self.base
        return self.data[max(start, base) - base:min(max(end, base), self.end) - base]

    def view(self) -> memoryview:
        """The retained bytes, `data[:used]`, without a copy (release it before the buffer
        changes: use it inside `with buffer.lock` only)."""
        return memoryview(self.data)[:self.used]

    def _drop(self, count: int) -> None:
        """Forget the oldest `count` bytes, moving the rest to the front."""
        keep = self.used - count
        if keep:
            self.data.move(0, count, keep)
        self.used = keep
        self.base += count
        self._first = bisect.bisect_right(self._ends, self.base, self._first)
        if self._first > 1024 and self._first * 2 > len(self._ends):
            del self._ends[:self._first]
            del self._times[:self._first]
            self._first = 0

    def _stamp(self, end: int, t: float) -> None:
        self.last_time = t
        if len(self._ends) > self._first and t - self._run_start < TIME_RESOLUTION:
            self._ends[-1], self._times[-1] = end, t
            return
        self._ends.append(end)
        self._times.append(t)
        self._run_start = t
        if len(self._ends) - self._first > MAX_INDEX:
            self._coarsen()

    def _coarsen(self) -> None:
        """Merge pairs of entries in the older half of the index (each pair keeps the later
        end and time), halving that half: bounded memory, exact times for recent bytes."""
        lo = self._first
        mid = lo + (len(self._ends) - lo) // 2
        mid -= (mid - lo) % 2
        self._ends[lo:mid] = self._ends[lo + 1:mid:2]
        self._times[lo:mid] = self._times[lo + 1:mid:2]
