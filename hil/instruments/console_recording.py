"""Store a bus transcript (a console session) in the event database, for `hil sim console`.

`record_console(db, bus.transcript, session="boot-and-status")` appends every entry the
transcript still retains (time, "rx"/"tx", bytes) to the `console` table of the same SQLite
file the event recorder writes. Bytes the transcript no longer retains cannot be stored:
`ConsoleRecording.lost` says how many, so a replay built from a cut session is never silent.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hil.protocols.events_db import EventWriter


class _Entry(Protocol):
    time: float
    direction: str
    data: bytes
    lost: int


class _Transcript(Protocol):
    def raw(self, since: int = 0) -> list[_Entry]: ...


@dataclass(frozen=True)
class ConsoleRecording:
    """What `record_console` stored."""

    session: str
    entries: int
    bytes: int
    lost: int


def record_console(db: str | Path, transcript: _Transcript, session: str,
                   since: int = 0) -> ConsoleRecording:
    """Append the transcript's entries from position `since` as console session `session`."""
    entries = [e for e in transcript.raw(since) if e.data]
    lost = sum(e.lost for e in transcript.raw(since))
    with EventWriter(db, writer="hil.instruments.console_recording") as writer:
        writer.write_console(session, ((e.time, e.direction, e.data) for e in entries))
    return ConsoleRecording(session, len(entries), sum(len(e.data) for e in entries), lost)
