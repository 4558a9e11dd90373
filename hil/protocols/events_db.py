"""The SQLite event database: schema, a batched writer, and the console-session tables.

Schema we write (spec events-replay §4, decided here; the reader also takes `tcs_lib`'s form):

    event(id INTEGER PRIMARY KEY, topic TEXT NOT NULL, __data_time REAL, __wire_time REAL,
          __seq INTEGER, receive_time REAL, body TEXT)  -- reserved keys are columns, never rows
    attribute(event_id, name, value, data_type)      -- a VIEW: one row per key of `body`
    console(id INTEGER PRIMARY KEY, session TEXT, time REAL, direction 'rx'|'tx', data BLOB)
    hil_meta(key PRIMARY KEY, value)                 -- schema version, writer

`event.body` is the payload as the JSON text received (reserved keys removed, numbers exactly as
they were written), so a replay sends it without decoding and re-encoding. The payload is stored
once: `attribute` is a view that SQLite's JSON functions compute from `body` (types `int`,
`float`, `bool`, `str`, `null`, `json`; numbers as their JSON text), for queries and for
`tcs_lib`-style readers (SQLite cuts a key or a text value at a NUL character there; `body`
keeps it whole). Schema 1 stored those rows a second time in a table; writing them cost more
than half of the recorder's time, so schema 2 (this one) derives them instead. A file of
schema 1 still replays; appending to it is refused with a clear error.

Writes go in batches, one transaction each, in WAL mode: a process killed (even SIGKILL)
leaves a valid database holding every committed batch. `close()` checkpoints back to a single
file. A database locked by another writer, read-only, full (disk or `max_bytes`) or not a
database gives an `InstrumentError` naming the file and what to do.
"""
from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from hil.errors import InstrumentError, ProtocolError
from hil.protocols.events import (DATA_TIME, MAX_SEQ, RESERVED, SEQ, WIRE_TIME, Event,
                                  decode, encode_body)

SCHEMA_VERSION = "2"
BUSY_TIMEOUT_S = 2.0

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS event (
    id           INTEGER PRIMARY KEY,
    topic        TEXT NOT NULL,
    {DATA_TIME}  REAL CHECK (abs({DATA_TIME}) < 9e999),   -- finite (9e999 is infinity)
    {WIRE_TIME}  REAL CHECK (abs({WIRE_TIME}) < 9e999),
    {SEQ}        INTEGER,
    receive_time REAL,
    body         TEXT
);
CREATE INDEX IF NOT EXISTS event_wire_time ON event({WIRE_TIME});
CREATE INDEX IF NOT EXISTS event_data_time ON event({DATA_TIME});
CREATE INDEX IF NOT EXISTS event_topic ON event(topic);
CREATE VIEW IF NOT EXISTS attribute(event_id, name, value, data_type) AS
    SELECT e.id, j.key,
           CASE j.type WHEN 'text' THEN j.value WHEN 'null' THEN NULL
                       WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                       -- the JSON text; SQLite cannot look up a key holding `"` by path
                       ELSE coalesce(e.body -> j.fullkey, j.value) END,
           CASE j.type WHEN 'integer' THEN 'int' WHEN 'real' THEN 'float'
                       WHEN 'true' THEN 'bool' WHEN 'false' THEN 'bool' WHEN 'text' THEN 'str'
                       WHEN 'null' THEN 'null' ELSE 'json' END
    FROM event e, json_each(CASE WHEN NOT json_valid(e.body) THEN '{{}}'
                                 WHEN json_type(e.body) = 'object' THEN e.body
                                 ELSE '{{}}' END) j;
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


def _finite_time(t: Any) -> Any:
    """A time to store: None for a missing or non-finite one."""
    return t if isinstance(t, (int, float)) and math.isfinite(t) else None


MAX_PLAIN_NESTING = 256


def _plain(bodies: list[bytes], blob: bytes, cuts: str) -> bool:
    """True when SQLite's JSON and the codec cannot read a batch differently, so the fast
    path may store it unchecked: no NUL (in a body or a topic), no \\u escape (a lone
    surrogate, a key spelled as escapes), no deep nesting (the codec refuses what SQLite
    takes; only a long body can be deep). A reserved key given twice is refused by SQL
    (`_RESERVED_OK`). Anything else takes the checked path. Checked on the whole batch at
    C speed: per body, Python calls cost the recorder a quarter of its rate."""
    if b"\x00" in blob or b"\\u" in blob or "\\u0000" in cuts:
        return False
    if max(map(len, bodies)) < 2 * MAX_PLAIN_NESTING:
        return True
    return all(b.count(b"{") + b.count(b"[") < MAX_PLAIN_NESTING for b in bodies
               if len(b) >= 2 * MAX_PLAIN_NESTING)


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
        kind = self._db.execute("SELECT type FROM sqlite_master WHERE name = 'attribute'")
        if kind.fetchone() != ("view",):
            raise ProtocolError("this event database is in hil's schema 1 (attribute rows in a "
                                "table); it replays as it is, but record into a new file",
                                where=str(self.path))

    def write(self, events: Sequence[Event]) -> None:
        """Store `events` in one transaction (all or none)."""
        if not events:
            return
        rows: list[tuple[Any, ...]] = []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            next_id = (self._db.execute("SELECT max(id) FROM event").fetchone()[0] or 0) + 1
            for i, ev in enumerate(events, next_id):
                body = ev.body
                fields = {k: v for k, v in body.items() if k not in RESERVED}
                rows.append((i, ev.topic, _finite_time(body.get(DATA_TIME)),
                             _finite_time(body.get(WIRE_TIME)), body.get(SEQ),
                             _finite_time(ev.received), encode_body(fields).decode()))
            self._db.executemany("INSERT INTO event VALUES (?,?,?,?,?,?,?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise db_error(self.path, exc, f"writing a batch of {len(events)} events "
                                           "(not stored)") from None
        except BaseException:               # a body the codec cannot encode, an interrupt:
            self._rollback()                # never leave the transaction open
            raise
        self.events_written += len(events)

    def write_frames(self, frames: Sequence[tuple[str, bytes, float]]) -> int:
        """Store received `(topic, JSON body, receive time)` in one transaction, the reserved
        keys taken out by SQLite; returns how many were malformed (skipped, see `write`).

        The whole batch is one `INSERT … SELECT` statement (its own transaction) over two
        parameters: the bodies joined into one blob, and a JSON array of (topic, time,
        offset, length) that cuts it. So all of SQLite's work runs in one call that releases
        the GIL once for its whole length: each statement hands the GIL back and forth, and
        while a receiving thread is busy each hand-back can wait out Python's switch
        interval (5 ms), which a row-by-row `executemany` pays per row. Bodies are cut by
        offset, never parsed as one text, so no body can change its neighbours. A body that
        is not UTF-8, not a JSON object, or has a reserved key that is not a (finite) number
        fails the batch, which then takes the checked path."""
        if not frames:
            return 0
        if self._insert_batch(frames, plain_only=True):
            return self._write_checked(frames)
        self.events_written += len(frames)
        return 0

    def _write_checked(self, frames: Sequence[tuple[str, bytes, float]]) -> int:
        """The slow path of a batch holding a malformed body: the bodies the codec accepts
        are stored as the fast path stores them (their text), in one statement if SQLite
        takes them all, else one by one; a body only Python reads (NaN, Infinity) is stored
        re-encoded, those numbers as null. Returns how many were malformed."""
        good, events = [], []
        for topic, body, t in frames:
            try:
                events.append(decode([topic.encode(), body], t))
            except ProtocolError:
                continue
            good.append((topic, body, t))
        if good and not self._insert_batch(good):
            self.events_written += len(good)
        else:
            for frame, event in zip(good, events):
                if self._insert_batch([frame]):
                    self.write([event])
                else:
                    self.events_written += 1
        return len(frames) - len(good)

    def _insert_batch(self, frames: Sequence[tuple[str, bytes, float]],
                      plain_only: bool = False) -> bool:
        """`frames` in one statement (one transaction); True if refused for their content
        (not UTF-8, not JSON objects, bad reserved keys; with `plain_only`, not `_plain`:
        nothing stored)."""
        bodies = [body for _, body, _ in frames]
        blob = b"".join(bodies)
        try:
            blob.decode()
        except UnicodeDecodeError:
            return True
        starts = accumulate(map(len, bodies), initial=1)
        cuts = json.dumps([(topic, t, start, len(body)) for (topic, body, t), start
                           in zip(frames, starts)])
        if plain_only and not _plain(bodies, blob, cuts):
            return True
        try:
            self._db.execute(_INSERT_BATCH, (cuts, blob))
        except (sqlite3.OperationalError, sqlite3.IntegrityError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and "JSON" not in str(exc):
                raise db_error(self.path, exc, f"writing a batch of {len(frames)} events "
                                               "(not stored)") from None
            return True
        except sqlite3.Error as exc:
            raise db_error(self.path, exc, f"writing a batch of {len(frames)} events "
                                           "(not stored)") from None
        return False

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


# `write_frames`' batch: ?1 = [[topic, receive time, 1-based offset, length], …] into the blob
# ?2 of bodies; ids follow on (max(id) + 1 …). A body that is no JSON object or has a reserved
# key of the wrong JSON type gets a NULL topic (NOT NULL fails the batch); a malformed one
# makes the JSON functions fail it.
def _at_most_once(key: str) -> str:
    """SQL: `"key"` does not appear in `body` a second time after its first (a reserved key
    given twice: JSON readers disagree on which one counts). Byte-wise on a BLOB: a quarter
    of the cost of counting with replace()."""
    needle = f"X'{json.dumps(key).encode().hex()}'"
    return f"instr(substr(CAST(body AS BLOB), instr(CAST(body AS BLOB), {needle}) + 1), " \
           f"{needle}) = 0"


_RESERVED_OK = (
    f"coalesce(json_type(body, '$.{DATA_TIME}'), 'null') IN ('integer', 'real', 'null') AND "
    f"coalesce(json_type(body, '$.{WIRE_TIME}'), 'null') IN ('integer', 'real', 'null') AND "
    f"coalesce(json_type(body, '$.{SEQ}'), 'null') IN ('integer', 'null') AND "
    f"coalesce(json_extract(body, '$.{SEQ}') BETWEEN 0 AND {MAX_SEQ - 1}, 1) AND "
    + " AND ".join(_at_most_once(key) for key in (DATA_TIME, WIRE_TIME, SEQ)))
_INSERT_BATCH = (
    "WITH s(k, topic, t, body) AS MATERIALIZED (SELECT c.key, c.value ->> 0, c.value ->> 1, "
    "CAST(substr(?2, c.value ->> 2, c.value ->> 3) AS TEXT) FROM json_each(?1) c) "
    "INSERT INTO event(topic, __data_time, __wire_time, __seq, receive_time, body) "
    f"SELECT iif(json_type(body) = 'object' AND {_RESERVED_OK}, topic, NULL), "
    f"json_extract(body, '$.{DATA_TIME}'), json_extract(body, '$.{WIRE_TIME}'), "
    f"json_extract(body, '$.{SEQ}'), t, "
    f"json_remove(body, '$.{DATA_TIME}', '$.{WIRE_TIME}', '$.{SEQ}') FROM s ORDER BY k")

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
        raise InstrumentError(f"SQLite database {path} does not exist")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                             check_same_thread=False)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise db_error(path, exc, "opening for reading") from None
    return db


def tables(db: sqlite3.Connection) -> set[str]:
    """Names of the tables and views in `db`."""
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN "
                                     "('table', 'view')")}


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
