"""Replay an SQLite event database at N× speed: the `TCSDBReplay` of spec events-replay §1, §5.

Reads hil's schema and `tcs_lib`'s (`__wire_time` as an attribute row, types number/boolean/
string). Decisions (spec §5, §9):

* Order: `sort_by` "none" (insertion, `event.id`), "__data_time" or "__wire_time" (then id).
  "none" paces by `__wire_time`, falling back to `__data_time`.
* Pacing: absolute schedule on the monotonic clock, `due_i = max(due_{i-1}, w0 + (t_i - t0) /
  speedup)`: sleep overshoot never accumulates; a late replay sends a burst, skipping nothing;
  a NULL or backwards time goes out right after its predecessor. `speedup` 0, negative or
  infinite = as fast as possible (never sleeps).
* Times: on the first event the replay remembers its time `t0` and the wall clock `w`; every
  event's `__data_time` and `__wire_time` become `w + (t - t0) / speedup` (scale 1 when
  unlimited), so a replay looks live and lines up with instruments; `keep_original` adds the
  recorded values as `__orig_data_time` / `__orig_wire_time`. `__seq` is the publisher's.
* Topics: exact names by default, prefixes with `prefix=True`. As in `tcs_lib`, iteration yields
  `None` for a filtered-out event (and for a skipped bad one); `start()` loops skip it.
* Bad rows never crash a replay: an event with a broken value (bad JSON, NULL for a typed
  value, a nameless attribute, no topic) is skipped and counted in `stats` with an example;
  unknown data types are read as strings and counted; `strict=True` raises instead.
* `loop`: start again after the last event, times shifted by the replay's length plus one
  mean step. `reset()` forgets the anchor so the next iteration starts afresh.
"""
from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.errors import ProtocolError, SimulatorError
from hil.protocols import events as codec
from hil.protocols.events_db import open_readonly, tables

SORT_KEYS = ("none", codec.DATA_TIME, codec.WIRE_TIME)
FETCH_ROWS = 8192
MAX_EXAMPLES = 10
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
Item = codec.Prepared | tuple[str, dict[str, Any]] | None


@dataclass
class ReplayStats:
    """What one replay did: events sent, filtered out, skipped (by reason), oddities."""

    sent: int = 0
    filtered: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    unknown_types: int = 0
    null_times: int = 0
    loops: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{k}: {v}" for k, v in self.skipped.items())
        parts = [f"{self.sent} events sent", f"{self.filtered} filtered out",
                 f"{skipped} skipped" + (f" ({reasons})" if skipped else "")]
        if self.unknown_types:
            parts.append(f"{self.unknown_types} values of unknown data type read as text")
        if self.null_times:
            parts.append(f"{self.null_times} events without a time (sent after their "
                         "predecessor)")
        if self.loops:
            parts.append(f"{self.loops} loops")
        return ", ".join(parts)


@dataclass(frozen=True)
class _Layout:
    """How this database stores things: our schema or tcs_lib's."""

    wire_column: bool
    seq_column: bool
    body_column: bool


class Replay:
    """Events of one SQLite database, paced like the recording (see the module docstring)."""

    def __init__(self, db: str | Path, *, sort_by: str = "none", speedup: float = 1.0,
                 topics: Sequence[str] | None = None, prefix: bool = False,
                 convert_number: bool = False, convert_bool: bool = False, loop: bool = False,
                 window: tuple[float, float] | None = None, keep_original: bool = False,
                 strict: bool = False) -> None:
        if sort_by not in SORT_KEYS:
            raise SimulatorError(f"sort_by must be one of {', '.join(SORT_KEYS)}, got "
                                 f"{sort_by!r}")
        if not isinstance(speedup, (int, float)) or math.isnan(speedup):
            raise SimulatorError(f"speedup must be a number, got {speedup!r}")
        if window is not None and not window[0] <= window[1]:
            raise SimulatorError(f"window start must not be after its end, got {window}")
        self.db = Path(db)
        self.sort_by = sort_by
        self.speedup = float(speedup)
        self.unlimited = not (0 < self.speedup < math.inf)
        self.topics = None if not topics else tuple(topics)
        self.prefix = prefix
        self.convert_number = convert_number
        self.convert_bool = convert_bool
        self.loop = loop
        self.window = window
        self.keep_original = keep_original
        self.strict = strict
        self.stats = ReplayStats()
        self._stop = threading.Event()
        self._layout = self._inspect()

    def __repr__(self) -> str:
        return (f"Replay({str(self.db)!r}, sort_by={self.sort_by!r}, speedup={self.speedup:g}, "
                f"topics={self.topics}, loop={self.loop})")

    # ------------------------------------------------------------------ schema
    def _inspect(self) -> _Layout:
        db = open_readonly(self.db)
        try:
            found = tables(db)
            missing = {"event", "attribute"} - found
            if missing:
                raise ProtocolError(f"is not an event database: no table(s) "
                                    f"{', '.join(sorted(missing))}", where=str(self.db))
            event_cols = {r[1] for r in db.execute("PRAGMA table_info(event)")}
            attr_cols = {r[1] for r in db.execute("PRAGMA table_info(attribute)")}
        finally:
            db.close()
        for table, needed, have in (("event", {"id", "topic", codec.DATA_TIME}, event_cols),
                                    ("attribute", {"event_id", "name", "value", "data_type"},
                                     attr_cols)):
            if needed - have:
                raise ProtocolError(f"table {table} lacks column(s) "
                                    f"{', '.join(sorted(needed - have))}", where=str(self.db))
        return _Layout(wire_column=codec.WIRE_TIME in event_cols,
                       seq_column=codec.SEQ in event_cols, body_column="body" in event_cols)

    @property
    def _fast(self) -> bool:
        """Send `event.body` as it is (hil's schema, no conversion asked)."""
        return self._layout.body_column and not (self.convert_number or self.convert_bool
                                                 or self.keep_original)

    def _query(self) -> tuple[str, tuple[Any, ...]]:
        wire = ("e.__wire_time" if self._layout.wire_column else
                "(SELECT CAST(w.value AS REAL) FROM attribute w WHERE w.event_id = e.id "
                "AND w.name = '__wire_time' ORDER BY w.rowid LIMIT 1)")
        key = {"none": None, codec.DATA_TIME: "e.__data_time", codec.WIRE_TIME: wire}[self.sort_by]
        where, args = "", ()
        if self.window is not None:
            timing = key or f"COALESCE({wire}, e.__data_time)"
            where, args = f"WHERE {timing} BETWEEN ? AND ?", tuple(self.window)
        order = f"{key}, e.id" if key else "e.id"
        if self._layout.body_column:
            return (f"SELECT e.id, e.topic, e.__data_time, {wire}, "
                    f"CASE WHEN NOT json_valid(e.body) THEN NULL WHEN json_type(e.body) = "
                    f"'object' THEN e.body END FROM event e {where} "
                    f"ORDER BY {order}"), args
        sql = (f"SELECT e.id, e.topic, e.__data_time, {wire}, a.name, a.value, a.data_type "
               f"FROM event e LEFT JOIN attribute a ON a.event_id = e.id {where} "
               f"ORDER BY {order}, a.rowid")
        return sql, args

    def count(self) -> int:
        """Events in the database (before topic filter and bad-row skips)."""
        db = open_readonly(self.db)
        try:
            return int(db.execute("SELECT count(*) FROM event").fetchone()[0])
        finally:
            db.close()

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """End a running iteration soon (wakes a pacing sleep)."""
        self._stop.set()

    def reset(self) -> None:
        """Forget the anchor and the statistics: the next iteration replays from the start."""
        self._stop.clear()
        self.stats = ReplayStats()

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[list[str] | None]:
        """`[topic, JSON]` per event, None for a filtered-out or skipped one (spec §1)."""
        for item in self.stream():
            if item is None:
                yield None
            elif isinstance(item, codec.Prepared):
                yield [item.topic, item.text()]
            else:
                yield [item[0], _ENCODE(item[1])]

    def dicts(self) -> Iterator[tuple[str, dict[str, Any]] | None]:
        """`(topic, body)` per event, paced; None for a filtered-out or skipped one."""
        for item in self.stream():
            if isinstance(item, codec.Prepared):
                yield item.topic, codec.parse_body(item.text())
            else:
                yield item

    def stream(self) -> Iterator[Item]:
        """Paced items: `Prepared` text (hil's schema, no conversion), `(topic, body)` built
        from attribute rows, or None (filtered out, skipped)."""
        self.reset()
        clock = _Schedule(self.speedup)
        shift = 0.0
        while not self._stop.is_set():
            last_key = None
            first_key = None
            sent_before = self.stats.sent
            for item, key in self._pass(clock, shift):
                if key is not None:
                    first_key = key if first_key is None else first_key
                    last_key = key
                yield item
                if self._stop.is_set():
                    return
            sent = self.stats.sent - sent_before
            if not self.loop or sent == 0:
                return
            span = (last_key - first_key) if first_key is not None else 0.0
            step = span / (sent - 1) if sent > 1 and span > 0 else 1.0
            shift += span + step
            self.stats.loops += 1

    def _pass(self, clock: _Schedule, shift: float) -> Iterator[tuple[Item, float | None]]:
        """One pass over the database: (item, timing key of a sent event)."""
        db = open_readonly(self.db)
        try:
            sql, args = self._query()
            try:
                cursor = db.execute(sql, args)
            except sqlite3.Error as exc:
                raise ProtocolError(f"cannot read events: {exc}", where=str(self.db)) from None
            if self._fast:
                yield from self._fast_pass(cursor, clock, shift)
                return
            if self._layout.body_column:
                while rows := cursor.fetchmany(FETCH_ROWS):
                    for event_id, topic, data_t, wire_t, text in rows:
                        yield self._event(event_id, topic, data_t, wire_t, text, clock, shift)
                return
            for event_id, topic, data_t, wire_t, attrs in _grouped(cursor):
                yield self._event(event_id, topic, data_t, wire_t, attrs, clock, shift)
        finally:
            db.close()

    def _fast_pass(self, cursor: sqlite3.Cursor, clock: _Schedule,
                   shift: float) -> Iterator[tuple[Item, float | None]]:
        """Rows with a valid `body` go out as that text (the others are skipped, counted)."""
        sort_by, stats, stop = self.sort_by, self.stats, self._stop
        accepts = self._accepts if self.topics is not None else None
        while rows := cursor.fetchmany(FETCH_ROWS):
            for event_id, topic, data_t, wire_t, body in rows:
                if body is None or not isinstance(topic, str) or not topic:
                    yield self._event(event_id, topic, data_t, wire_t, body, clock, shift)
                    continue
                if accepts is not None and not accepts(topic):
                    stats.filtered += 1
                    yield None, None
                    continue
                # text, or not finite (x - x is 0.0 only for a finite float): _number decides
                if data_t is not None and (type(data_t) is not float or data_t - data_t):
                    data_t = _number(data_t)
                if wire_t is not None and (type(wire_t) is not float or wire_t - wire_t):
                    wire_t = _number(wire_t)
                key = (data_t if sort_by == codec.DATA_TIME else wire_t
                       if sort_by == codec.WIRE_TIME or wire_t is not None else data_t)
                if key is None:
                    stats.null_times += 1
                    start, scale = clock.wait(None, stop)
                else:
                    start, scale = clock.wait(key + shift, stop)
                t0 = clock.t0 - shift
                stats.sent += 1
                yield codec.Prepared(
                    topic, body,
                    None if data_t is None else start + (data_t - t0) / scale,
                    None if wire_t is None else start + (wire_t - t0) / scale), key

    def _accepts(self, topic: str) -> bool:
        if self.topics is None:
            return True
        if self.prefix:
            return topic.startswith(self.topics)
        return topic in self.topics

    def _event(self, event_id: int, topic: Any, data_t: Any, wire_t: Any,
               payload: list[tuple[Any, Any, Any]] | str | None, clock: _Schedule,
               shift: float) -> tuple[tuple[str, dict[str, Any]] | None, float | None]:
        """One event as (topic, body) at its time: `payload` is its attribute rows, or its
        `body` text (hil's schema; None when that text is not valid JSON)."""
        if not isinstance(topic, str) or not topic:
            return self._bad(event_id, "no topic", f"topic is {topic!r}"), None
        if not self._accepts(topic):
            self.stats.filtered += 1
            return None, None
        if payload is None:
            return self._bad(event_id, "broken JSON", "body is not a JSON object"), None
        attrs = _body_rows(payload) if isinstance(payload, str) else payload
        if attrs is None:
            return self._bad(event_id, "broken JSON", "body is not a JSON object"), None
        body: dict[str, Any] = {}
        numbers, bools = self.convert_number, self.convert_bool
        for name, value, kind in attrs:
            if name is None:
                if kind is None and value is None and len(attrs) == 1:
                    break                      # an event without attributes (LEFT JOIN)
                return self._bad(event_id, "missing attribute name",
                                 f"attribute with no name, value {value!r}"), None
            if name in codec.RESERVED:
                if name == codec.WIRE_TIME and wire_t is None:
                    wire_t = _number(value)
                elif name == codec.DATA_TIME and data_t is None:
                    data_t = _number(value)
                continue
            if kind is _DECODED:
                body[name] = codec.from_row(value, "str", numbers=numbers, bools=bools) \
                    if isinstance(value, str) else value
                continue
            if kind not in codec.KNOWN_TYPES:
                self.stats.unknown_types += 1
            try:
                body[name] = codec.from_row(value, kind, numbers=numbers, bools=bools)
            except ProtocolError as exc:
                return self._bad(event_id, _reason(exc), f"attribute {name!r}: "
                                 f"{exc.message}"), None
        data_t, wire_t = _number(data_t), _number(wire_t)
        if self.sort_by == codec.DATA_TIME:
            key = data_t
        elif self.sort_by == codec.WIRE_TIME:
            key = wire_t
        else:
            key = wire_t if wire_t is not None else data_t
        if key is None:
            self.stats.null_times += 1
        start, scale = clock.wait(None if key is None else key + shift, self._stop)
        if data_t is not None:
            body[codec.DATA_TIME] = start + (data_t + shift - clock.t0) / scale
        if wire_t is not None:
            body[codec.WIRE_TIME] = start + (wire_t + shift - clock.t0) / scale
        if self.keep_original:
            body["__orig_data_time"], body["__orig_wire_time"] = data_t, wire_t
        self.stats.sent += 1
        return (topic, body), key

    def _bad(self, event_id: int, reason: str, detail: str) -> None:
        if self.strict:
            raise ProtocolError(f"event {event_id}: {reason}: {detail}", where=str(self.db))
        self.stats.note(reason, f"event {event_id}: {detail}")
        return None


class _Schedule:
    """The absolute schedule of one replay (spec §5.3)."""

    def __init__(self, speedup: float) -> None:
        self.unlimited = not (0 < speedup < math.inf)
        self.scale = 1.0 if self.unlimited else speedup
        self.t0: float = 0.0
        self.anchored = False
        self._t0_known = False
        self.w0 = 0.0
        self.wall0 = 0.0
        self.due = 0.0

    def wait(self, key: float | None, stop: threading.Event) -> tuple[float, float]:
        """Sleep until the event with timing key `key` is due; returns (wall anchor, scale)."""
        if not self.anchored:
            self.w0 = self.due = time.monotonic()
            self.wall0 = time.time()
            self.anchored = True
            self.t0 = key if key is not None else 0.0
            self._t0_known = key is not None
            return self.wall0, self.scale
        if key is None:
            return self.wall0, self.scale
        if not self._t0_known:                 # the first events had no time: anchor here
            self.t0, self._t0_known = key - (self.due - self.w0) * self.scale, True
        if not self.unlimited:
            self.due = max(self.due, self.w0 + (key - self.t0) / self.scale)
            left = self.due - time.monotonic()
            if left > 0:
                stop.wait(left)
        return self.wall0, self.scale


def _grouped(cursor: sqlite3.Cursor) -> Iterator[tuple[int, Any, Any, Any,
                                                       list[tuple[Any, Any, Any]]]]:
    """Join rows grouped per event: (id, topic, data time, wire time, [(name, value, type)])."""
    current: int | None = None
    head: tuple[Any, Any, Any] = (None, None, None)
    attrs: list[tuple[Any, Any, Any]] = []
    while True:
        rows = cursor.fetchmany(FETCH_ROWS)
        if not rows:
            break
        for event_id, topic, data_t, wire_t, name, value, kind in rows:
            if event_id != current:
                if current is not None:
                    yield current, head[0], head[1], head[2], attrs
                current, head, attrs = event_id, (topic, data_t, wire_t), []
            attrs.append((name, value, kind))
    if current is not None:
        yield current, head[0], head[1], head[2], attrs


_DECODED = object()            # the data type of a value decoded from `body` already


def _body_rows(text: str) -> list[tuple[str, Any, object]] | None:
    """A `body` text as (name, value, _DECODED) rows; None if it is not a JSON object."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    return [(name, value, _DECODED) for name, value in body.items()] or [(None, None, None)]


def _number(value: Any) -> float | None:
    """A stored time as a float; None for NULL, text that is no number, or non-finite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    return t if math.isfinite(t) else None


def _reason(exc: ProtocolError) -> str:
    text = exc.message
    if "broken" in text:
        return "broken JSON"
    if "NULL" in text:
        return "missing value"
    return "bad value"
