"""What bus calls hand back: a `Match` (like `re.Match`, plus byte offsets and arrival time),
a `Mark`, and the `fail_on` watcher types `Watcher` and `WatcherHit`."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hil.buses.buffer import ReceiveBuffer
from hil.buses.matcher import Pattern, PatternLike, Search, decode

if TYPE_CHECKING:
    from hil.buses.bus import Bus


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
        index = self._names.get(g, -1) if isinstance(g, str) else g
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
