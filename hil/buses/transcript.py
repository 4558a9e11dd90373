"""The transcript of a bus: every byte sent and received, with times, for the test report.

Received bytes are not copied: entries point into the bus's ReceiveBuffer, so the transcript
keeps exactly what the buffer retains. Sent bytes are kept here, bounded the same way.
`position()` then `render(since=position)` gives the part of one test.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from hil.buses.buffer import DEFAULT_RETENTION, TIME_RESOLUTION, ReceiveBuffer

MAX_ENTRIES = 100_000

_ESCAPES: dict[int, str] = {i: f"\\x{i:02x}" for i in [*range(32), *range(0x7F, 0xA0)]}
_ESCAPES.update({9: "\\t", 10: "\\n", 13: "\\r", ord("\\"): "\\\\"})
_ESCAPES.update({0xDC80 + i: f"\\x{0x80 + i:02x}" for i in range(128)})   # invalid bytes


def escape(data: bytes, encoding: str = "utf-8") -> str:
    r"""Bytes as one readable line: text as text, \r \n \t and other control or invalid bytes
    as escapes (so a log shows exactly what arrived)."""
    return data.decode(encoding, "surrogateescape").translate(_ESCAPES)


@dataclass(frozen=True)
class Entry:
    """One run of bytes in one direction. `lost` counts its bytes no longer retained."""

    time: float
    direction: str          # "rx" (received) or "tx" (sent)
    data: bytes
    lost: int = 0


class Transcript:
    """Both directions of one bus in time order, bounded by `retention` bytes and entries."""

    def __init__(self, received: ReceiveBuffer, *, name: str = "bus", encoding: str = "utf-8",
                 retention: int = DEFAULT_RETENTION, max_entries: int = MAX_ENTRIES) -> None:
        self.name = name
        self.encoding = encoding
        self._rx = received
        self._tx = bytearray()
        self._tx_base = 0
        self._retention = retention
        self._entries: deque[tuple[float, bool, int, int]] = deque(maxlen=max_entries)
        self._count = 0
        self._run_start = float("-inf")
        self._lock = threading.Lock()

    def received(self, start: int, end: int, t: float) -> None:
        """Record received bytes [start, end) of the buffer (called by the bus's reader)."""
        with self._lock:
            last = self._entries[-1] if self._entries else None
            if (last is not None and not last[1] and last[3] == start
                    and t - self._run_start < TIME_RESOLUTION):
                self._entries[-1] = (t, False, last[2], end)     # same run: extend it
                return
            self._append((t, False, start, end))
            self._run_start = t

    def sent(self, data: bytes, t: float) -> None:
        """Record bytes written to the bus."""
        with self._lock:
            start = self._tx_base + len(self._tx)
            self._tx += data
            if len(self._tx) > self._retention:
                excess = len(self._tx) - self._retention
                del self._tx[:excess]
                self._tx_base += excess
            self._append((t, True, start, start + len(data)))
            self._run_start = float("-inf")

    def position(self) -> int:
        """A position to pass to `render(since=...)` / `raw(since=...)` later."""
        with self._lock:
            self._run_start = float("-inf")       # later bytes go into a new entry
            return self._count

    def raw(self, since: int = 0) -> list[Entry]:
        """The entries recorded since `position` `since`, oldest first."""
        with self._lock:
            first = self._count - len(self._entries)
            rows = list(self._entries)[max(0, since - first):]
            tx, tx_base = bytes(self._tx), self._tx_base
        entries = []
        for t, is_tx, start, end in rows:
            if is_tx:
                lo = max(start, tx_base)
                data = tx[lo - tx_base:end - tx_base] if end > lo else b""
            else:
                with self._rx.lock:
                    data = self._rx.get(start, end)
            entries.append(Entry(t, "tx" if is_tx else "rx", data, (end - start) - len(data)))
        return entries

    def render(self, since: int = 0) -> str:
        """Human-readable: one row per line of text, `HH:MM:SS.ffffff rx|tx escaped-text`."""
        with self._lock:
            skipped = max(0, (self._count - len(self._entries)) - since)
        rows = [f"# transcript of {self.name}: local times, rx = received, tx = sent"]
        if skipped:
            rows.append(f"# ... {skipped} earlier entries no longer retained")
        for entry in self.raw(since):
            stamp = time.strftime("%H:%M:%S", time.localtime(entry.time))
            stamp += f".{int(entry.time % 1 * 1e6):06d}"
            if entry.lost:
                rows.append(f"{stamp} {entry.direction} [{entry.lost} bytes no longer retained]")
            for line in entry.data.splitlines(keepends=True):
                rows.append(f"{stamp} {entry.direction} {escape(line, self.encoding)}")
        return "\n".join(rows) + "\n"

    def _append(self, row: tuple[float, bool, int, int]) -> None:
        self._entries.append(row)
        self._count += 1
