"""The SQLite event database: schema, a batched writer, and the console-session tables.

Schema we write (spec events-replay §4, decided here; the reader also takes `tcs_lib`'s form):

    event(id INTEGER PRIMARY KEY, topic TEXT NOT NULL, __data_time REAL, __wire_time REAL,
          __seq INTEGER, receive_time REAL, body TEXT)  -- reserved keys are columns, never rows
    attribute(event_id, name, value TEXT, data_type TEXT)  -- indexed by event_id; rowid keeps
                                                             -- the payload's key order
    console(id INTEGER PRIMARY KEY, session TEXT, time REAL, direction 'rx'|'tx', data BLOB)
    hil_meta(key PRIMARY KEY, value)                 -- schema version, writer

`attribute` rows are the payload for queries and for `tcs_lib`-style readers; `event.body`
keeps the same payload as the JSON text received (reserved keys removed, numbers exactly as
they were written), so a replay sends it without decoding and re-encoding. The recorder's
`write_frames` lets SQLite's JSON functions (C) split received bodies into rows; a batch with a
malformed body falls back to decoding each event here, skipping (and counting) the bad ones.

Writes go in batches, one transaction each, in WAL mode: a process killed (even SIGKILL)
leaves a valid database holding every committed batch. `close()` checkpoints back to a single
file. A database locked by another writer, read-only, full (disk or `max_bytes`) or not a
database gives an `InstrumentError` naming the file and what to do.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.errors import InstrumentError, ProtocolError
from hil.protocols.events import (DATA_TIME, RESERVED, SEQ, WIRE_TIME, Event, decode,
                                  encode_body, to_rows)

SCHEMA_VERSION = "1"
BUSY_TIMEOUT_S = 2.0

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS event (
    id           INTEGER PRIMARY KEY,
    topic        TEXT NOT NULL,
    {DATA_TIME}  REAL,
    {WIRE_TIME}  REAL,
    {SEQ}        INTEGER,
    receive_time REAL,
    body         TEXT
);
CREATE INDEX IF NOT EXISTS event_wire_time ON event({WIRE_TIME});
CREATE INDEX IF NOT EXISTS event_data_time ON event({DATA_TIME});
CREATE INDEX IF NOT EXISTS event_topic ON event(topic);
CREATE TABLE IF NOT EXISTS attribute (
    event_id  INTEGER NOT NULL REFERENCES event(id),
    name      TEXT NOT NULL,
    value     TEXT,
    data_type TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attribute_event ON attribute(event_id);
CREATE TABLE IF NOT EXISTS console (
    id        INTEGER PRIMARY KEY,
    session   TEXT NOT NULL,
    time      REAL NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('rx', 'tx')),
    data      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS console_session ON console(session, id);
CREATE TABLE IF NOT EXISTS hil_meta (key TEXT PRIMARY KEY, value TEXT);
"""


def db_error(path: str | Path, exc: sqlite3.Error, doing: str) -> InstrumentError:
    """A clear error for an SQLite failure on `path`."""
    text = str(exc)
    low = text.lower()
    if "locked" in low or "busy" in low:
        why = ("is locked by another process (a recorder or a program holding a write "
               "transaction); close it or record into another file")
    elif "full" in low:
        why = "is full (the disk, or the size limit given as max_bytes)"
    elif "readonly" in low or "read-only" in low:
        why = "is read-only (check the file's and its folder's permissions)"
    elif "not a database" in low or "malformed" in low:
        why = "is not an SQLite database (or is damaged)"
    elif "unable to open" in low:
        why = "cannot be opened (does its folder exist?)"
    else:
        why = "failed"
    return InstrumentError(f"event database {path} {why}: {doing}: sqlite: {text}")


class EventWriter:
    """Appends events and console entries to one database, a transaction per `write` call.

    One writer per file (ids are taken as max(id)+1 inside each transaction, so another writer
    in between is safe, but interleaved sessions are hard to read).
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT_S,
                 max_bytes: int | None = None, writer: str = "hil") -> None:
        self.path = Path(path)
        self.events_written = 0
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise db_error(self.path, exc, "opening") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if max_bytes is not None:
                page = self._db.execute("PRAGMA page_size").fetchone()[0]
                self._db.execute(f"PRAGMA max_page_count={max(1, int(max_bytes) // page)}")
            self._db.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
            self._db.execute("PRAGMA temp_store=MEMORY")
            self._db.execute(_INCOMING)
            self._check_schema()
            self._db.execute("INSERT OR REPLACE INTO hil_meta VALUES ('schema', ?), "
                             "('writer', ?)", (SCHEMA_VERSION, writer))
        except sqlite3.Error as exc:
            self._db.close()
            raise db_error(self.path, exc, "creating the schema") from None
        except ProtocolError:
            self._db.close()
            raise

    def _check_schema(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(event)")}
        missing = {"id", "topic", DATA_TIME, WIRE_TIME, SEQ, "receive_time", "body"} - columns
        if missing:
            raise ProtocolError(f"table event lacks columns {sorted(missing)}: the file is "
                                "not in hil's schema (a tcs_lib database can be replayed, not "
                                "appended to)", where=str(self.path))

    def write(self, events: Sequence[Event]) -> None:
        """Store `events` in one transaction (all or none)."""
        if not events:
            return
        event_rows: list[tuple[Any, ...]] = []
        attr_rows: list[tuple[Any, ...]] = []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            next_id = (self._db.execute("SELECT max(id) FROM event").fetchone()[0] or 0) + 1
            for i, ev in enumerate(events, next_id):
                body = ev.body
                fields = {k: v for k, v in body.items() if k not in RESERVED}
                event_rows.append((i, ev.topic, body.get(DATA_TIME), body.get(WIRE_TIME),
                                   body.get(SEQ), ev.received if ev.received == ev.received
                                   else None, encode_body(fields).decode()))
                attr_rows.extend((i, name, text, kind) for name, text, kind in to_rows(fields))
            self._db.executemany("INSERT INTO event VALUES (?,?,?,?,?,?,?)", event_rows)
            self._db.executemany("INSERT INTO attribute VALUES (?,?,?,?)", attr_rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise db_error(self.path, exc, f"writing a batch of {len(events)} events "
                                           "(not stored)") from None
        except ProtocolError:
            self._rollback()
            raise
        self.events_written += len(events)

    def write_frames(self, frames: Sequence[tuple[str, bytes, float]]) -> int:
        """Store received `(topic, JSON body, receive time)` in one transaction, split into
        rows by SQLite; returns how many were malformed (skipped, see `write`).

        The batch goes as it is into a temporary staging table (a cheap row each, no Python
        objects made per event), then two `INSERT … SELECT` statements split it: the heavy
        work runs in two calls that release the GIL for their whole length, so a receiving
        thread runs meanwhile. Staging rowids count from 1 (the table is empty between
        batches), so event id = rowid + next id − 1."""
        if not frames:
            return 0
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            next_id = (db.execute("SELECT max(id) FROM event").fetchone()[0] or 0) + 1
            b"\n".join([body for _, body, _ in frames]).decode()   # UTF-8, or the checked path
            db.executemany(_STAGE, frames)
            db.execute(_INSERT_EVENTS, (next_id - 1,))
            db.execute(_INSERT_ATTRIBUTES, (next_id - 1,))
            db.execute("DELETE FROM temp.incoming")
            if db.execute(_BAD_RESERVED, (next_id,)).fetchone()[0]:
                raise sqlite3.IntegrityError("a reserved key is not a number")
            db.execute("COMMIT")
        except (sqlite3.OperationalError, sqlite3.IntegrityError, UnicodeDecodeError) as exc:
            self._rollback()
            if isinstance(exc, sqlite3.OperationalError) and "JSON" not in str(exc):
                raise db_error(self.path, exc, f"writing a batch of {len(frames)} events "
                                               "(not stored)") from None
            return self._write_checked(frames)
        except sqlite3.Error as exc:
            self._rollback()
            raise db_error(self.path, exc, f"writing a batch of {len(frames)} events "
                                           "(not stored)") from None
        self.events_written += len(frames)
        return 0

    def _write_checked(self, frames: Sequence[tuple[str, bytes, float]]) -> int:
        """The slow path of a batch holding a malformed body: decode each, store the good."""
        good: list[Event] = []
        for topic, body, t in frames:
            try:
                good.append(decode([topic.encode(), body], t))
            except ProtocolError:
                continue
        self.write(good)
        return len(frames) - len(good)

    def write_console(self, session: str, entries: Iterable[tuple[float, str, bytes]]) -> int:
        """Store a console session's entries (time, "rx"/"tx", bytes); returns how many."""
        rows = [(session, float(t), d, bytes(data)) for t, d, data in entries]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO console(session, time, direction, data) "
                                 "VALUES (?,?,?,?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise db_error(self.path, exc, f"writing console session {session!r}") from None
        return len(rows)

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass                             # no transaction open: nothing to undo

    def close(self) -> None:
        """Fold the WAL back into the one file and close (a second call does nothing)."""
        db, self._db = self._db, None  # type: ignore[assignment]
        if db is None:
            return
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error:
            pass                             # still valid in WAL form; the next open folds it
        finally:
            db.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# the staging table of `write_frames`: one received message a row, split by the two below
_INCOMING = ("CREATE TEMP TABLE IF NOT EXISTS incoming (id INTEGER PRIMARY KEY, topic TEXT, "
             "body TEXT, receive_time REAL)")
_STAGE = "INSERT INTO temp.incoming(topic, body, receive_time) VALUES (?, CAST(? AS TEXT), ?)"
_INSERT_EVENTS = (
    "INSERT INTO event(id, topic, __data_time, __wire_time, __seq, receive_time, body) "
    "SELECT ?1 + id, iif(json_type(body) = 'object', topic, NULL), "
    f"json_extract(body, '$.{DATA_TIME}'), json_extract(body, '$.{WIRE_TIME}'), "
    f"json_extract(body, '$.{SEQ}'), receive_time, "
    f"json_remove(body, '$.{DATA_TIME}', '$.{WIRE_TIME}', '$.{SEQ}') FROM temp.incoming "
    "ORDER BY id")
# a batch whose reserved values are not all numbers takes the checked path
_BAD_RESERVED = (
    f"SELECT count(*) FROM event WHERE id >= ? AND ("
    f"typeof({DATA_TIME}) NOT IN ('real', 'integer', 'null') OR "
    f"typeof({WIRE_TIME}) NOT IN ('real', 'integer', 'null') OR "
    f"typeof({SEQ}) NOT IN ('integer', 'null'))")
# numbers keep their JSON text (`->`): a REAL would come back as 15 digits, not the repr.
# Rows go in event order, and within an event in json_each's (document) order, as a nested
# loop yields them; `ORDER BY s.id` is the scan order (no sort), so rowid keeps key order.
_INSERT_ATTRIBUTES = (
    "INSERT INTO attribute(event_id, name, value, data_type) "
    "SELECT ?1 + s.id, j.key, CASE j.type WHEN 'text' THEN j.value WHEN 'null' THEN NULL "
    "ELSE s.body -> j.fullkey END, "
    "CASE j.type WHEN 'integer' THEN 'int' WHEN 'real' THEN 'float' WHEN 'true' THEN 'bool' "
    "WHEN 'false' THEN 'bool' WHEN 'text' THEN 'str' WHEN 'null' THEN 'null' ELSE 'json' END "
    "FROM temp.incoming s, json_each(s.body) j "
    f"WHERE j.key NOT IN ('{DATA_TIME}', '{WIRE_TIME}', '{SEQ}') ORDER BY s.id")


# --------------------------------------------------------------------------- console sessions
@dataclass(frozen=True)
class ConsoleEntry:
    """One recorded run of console bytes: hil-clock time, "rx" (from the DUT) or "tx"."""

    time: float
    direction: str
    data: bytes


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection; InstrumentError names a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise InstrumentError(f"event database {path} does not exist")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                             check_same_thread=False)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise db_error(path, exc, "opening for reading") from None
    return db


def tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def console_sessions(path: str | Path) -> list[str]:
    """The console session names stored in `path`, oldest first."""
    db = open_readonly(path)
    try:
        if "console" not in tables(db):
            return []
        return [r[0] for r in db.execute(
            "SELECT session FROM console GROUP BY session ORDER BY min(id)")]
    finally:
        db.close()


def read_console(path: str | Path, session: str | None = None) -> tuple[str, list[ConsoleEntry]]:
    """(session name, entries) of one console session (the only/first one if not named)."""
    sessions = console_sessions(path)
    if not sessions:
        raise ProtocolError("holds no console session (record one with `hil record console`)",
                            where=str(path))
    if session is None or session == "":
        session = sessions[0]
    elif session not in sessions:
        raise ProtocolError(f"has no console session {session!r} (sessions: "
                            f"{', '.join(sessions)})", where=str(path), field="session")
    db = open_readonly(path)
    try:
        rows = db.execute("SELECT time, direction, data FROM console WHERE session = ? "
                          "ORDER BY id", (session,)).fetchall()
    finally:
        db.close()
    entries = []
    for t, direction, data in rows:
        if direction not in ("rx", "tx") or t is None or data is None:
            raise ProtocolError(f"console session {session!r} has a bad row: time {t!r}, "
                                f"direction {direction!r}", where=str(path))
        entries.append(ConsoleEntry(float(t), direction,
                                    data.encode() if isinstance(data, str) else bytes(data)))
    return session, entries
