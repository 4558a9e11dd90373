"""The receive buffer: every byte a bus received, addressed by absolute offset, with arrival times.

One reader fills it (`reserve` room, read into it, `commit`); everything else (expect, read,
watchers, the transcript) reads it while holding `lock`; `changed` (a Condition on that lock)
is notified after each commit and at the end of the stream.

Memory is bounded: the bytes live in `data[:used]`, one anonymous memory map of `retention`
bytes (the OS supplies pages as they are first written, huge pages where it can; the maps of
buffers that are gone are reused). When it is full, the oldest three
quarters are dropped (`dropped` counts them) and the newest quarter is moved to the front, so a
flood costs a third of a copy per byte, in warm memory. Offsets keep counting from the first
byte ever received.
"""
from __future__ import annotations

import bisect
import mmap
import threading
import weakref
from array import array

DEFAULT_RETENTION = 16 * 1024 * 1024
MIN_RETENTION = 4096
HUGE_PAGE = 2 * 1024 * 1024
#: Chunks arriving within this many seconds of the first chunk of a run share one entry of the
#: arrival-time index (stamped with the latest arrival), so a serial line trickling one byte
#: per read cannot grow the index faster than 1000 entries a second.
TIME_RESOLUTION = 0.001


_spare: dict[int, list[mmap.mmap]] = {}    # maps of buffers gone, by size, ready for reuse
_spare_lock = threading.Lock()
MAX_SPARE = 2


def _new_map(size: int) -> mmap.mmap:
    """A map of `size` bytes: a spare one (its pages already there), else a new one."""
    with _spare_lock:
        if _spare.get(size):
            return _spare[size].pop()
    data = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if size >= HUGE_PAGE and hasattr(mmap, "MADV_HUGEPAGE"):
        try:                            # 2 MiB pages: 512x fewer page faults in a flood
            data.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    return data


def _recycle(data: mmap.mmap) -> None:
    """Keep the map of a buffer nobody references any more, for the next bus (a suite that
    opens a bus per test then does not fault in 16 MiB each time)."""
    with _spare_lock:
        spares = _spare.setdefault(len(data), [])
        if len(spares) < MAX_SPARE:
            spares.append(data)
            return
    try:
        data.close()
    except BufferError:                 # still exported somewhere: the GC frees it later
        pass


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
        weakref.finalize(self, _recycle, self.data)
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

    def reserve(self, size: int) -> memoryview:
        """Room for up to `size` more bytes at the end (dropping old bytes if full), for a
        reader to fill without holding the lock, then `commit()`."""
        with self.lock:
            size = min(size, self.retention)
            if self.used + size > self.retention:
                self._drop(self.used - min(self.used // 4, self.retention - size))
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
        """Add one chunk that arrived at time `t` (reserve, copy, commit); returns its span."""
        with self.lock:
            start = self.base + self.used
            if len(chunk) > self.retention:         # only its newest bytes can be kept
                self._drop(self.used)
                self.base = start + len(chunk) - self.retention
                chunk = chunk[-self.retention:]
            with self.reserve(len(chunk)) as room:
                room[:] = chunk
            return start, self.commit(len(chunk), t)[1]

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
        else:
            self._ends.append(end)
            self._times.append(t)
            self._run_start = t
