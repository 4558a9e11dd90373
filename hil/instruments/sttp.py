"""STTP (IEEE 2664) subscriber: metadata, subscriptions, and captures as numpy (spec §3–§9).

`SttpSubscriber(host, port, settings)` connects (TLS when asked), defines its operational
modes (UTF-8, gzip metadata and cache; TSSC only when `compression="tssc"`) and reads the
publisher's metadata into `.metadata` (devices; measurements with signal id, point tag, signal
type, description). `capture(seconds=… | frames=…)` subscribes with the filter expression,
reads, unsubscribes cleanly (the stream is drained until the publisher confirms) and returns a
`StreamCapture` keyed by point tag, frames as packets (see `sttp_capture`).

The reader `recv_into`s up to 1 MiB at a time into one preallocated buffer (an unfinished frame
moves to its front), taking whatever else is already queued without waiting (a fast stream is
decoded 1 MiB at a time, not in the ~400 KiB loopback TCP hands over a call), and decodes whole
runs of same-sized data packets with one strided numpy view, a cast per column; runtime indices
become signal keys through one table (cost per read, not per packet or measurement in Python).
Cache updates are confirmed, and base times, start times, notifications and keep-alives
handled, between the runs. Every wait has a timeout.
`sttpapi`'s publisher defects (spec §11) are tolerated: count-less packets, cache slot 0xFF,
length-prefixed messages.
A malformed frame raises ProtocolError naming field, host:port and stream offset; with
`resync=True` a malformed data packet (its framing intact) is skipped and counted as lost.
"""
from __future__ import annotations

import socket
import ssl
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hil import clock
from hil.errors import (BusTimeout, ConnectionLost, InstrumentConnectError, InstrumentError,
                        ProtocolError)
from hil.instruments.sttp_capture import Chunk, build_capture, frame_starts
from hil.instruments.stream_capture import StreamCapture
from hil.progress import track
from hil.protocols import sttp_compact as cm
from hil.protocols import sttp_frames as fr
from hil.protocols.sttp_cache import SignalIndexCache, decode_cache
from hil.protocols.sttp_frames import Command, OperationalModes, PacketFlags, Response
from hil.protocols.sttp_metadata import Metadata, decode_metadata
from hil.protocols.sttp_tssc import TsscDecoder
from hil.timeout import Deadline

DEFAULT_PORT = 7165
READ_SIZE = 1 << 20          # bytes asked of one recv_into: measured best of 256 KiB … 2 MiB
BUFFER_SIZE = 4 << 20        # receive buffer; grows if one frame is bigger
MAX_KEPT = 100               # status texts and packet errors kept (the rest only counted)
MAX_TEXT = 500               # characters of one status text kept
VERSION = "hil"


@dataclass(frozen=True)
class SttpSettings:
    """How to subscribe. `rate`: nominal frames/s (0: the device's FramesPerSecond from the
    metadata, else estimated). `compression`: "compact" or "tssc" (asked; the publisher may
    still send compact). `tls_ca`: CA file ("" = system store); `tls_verify=False` accepts any
    certificate. `resync`: skip malformed data packets (counted as lost) instead of failing."""

    filter: str = ""
    compression: str = "compact"
    gzip: bool = True
    include_time: bool = True
    timeout: float = 5.0
    rate: float = 0.0
    tls: bool = False
    tls_ca: str = ""
    tls_verify: bool = True
    resync: bool = False
    source: str | None = None
    version: int = 2


@dataclass
class _Slot:
    """One signal index cache slot: the cache, its global keys, its TSSC state, and for a
    dense cache a table runtime index → global key (one gather per read, no search). On a
    connection's first subscription that table is the identity: keys are the indices."""

    cache: SignalIndexCache
    keys: np.ndarray
    tssc: TsscDecoder = field(default_factory=TsscDecoder)
    key_table: np.ndarray | None = None
    identity: bool = False

    def __post_init__(self) -> None:
        self.tssc.known = frozenset(self.cache.indices)    # a point outside: error, at once
        table = self.cache.table
        if table is not None and len(self.keys):
            self.key_table = np.where(table >= 0, self.keys[np.maximum(table, 0)], -1
                                      ).astype(np.int32)
            self.identity = bool((self.key_table == np.arange(len(table))).all())

    def keys_of(self, index: np.ndarray) -> np.ndarray:
        """Global keys of runtime indices the codec has checked against this cache."""
        if self.identity:
            return index.astype(np.int32, copy=False)
        if self.key_table is not None:
            return self.key_table.take(index)
        return self.keys[self.cache.positions(index)]


class SttpSubscriber:
    """One connection to an STTP publisher."""

    def __init__(self, host: str, port: int = DEFAULT_PORT,
                 settings: SttpSettings | None = None) -> None:
        self.settings = s = settings or SttpSettings()
        if s.compression not in ("compact", "tssc"):
            raise ValueError(f"compression is 'compact' or 'tssc', got {s.compression!r}")
        self.host, self.port = host, port
        self.where = f"{host}:{port}"
        self.source = s.source or f"sttp://{host}:{port}"
        self.timeout = s.timeout
        self.modes = OperationalModes.make(s.version, tssc=s.compression == "tssc", gzip=s.gzip)
        self.metadata = Metadata()
        self.subscribed = False
        self.lost_packets = 0               # data packets skipped (resync), whole connection
        self.measurements_received = 0
        self.errors: list[ProtocolError] = []   # the first MAX_KEPT packet errors ...
        self.messages: list[str] = []       # ... status texts, notifications (clipped) ...
        self.dropped_notes = 0              # ... and how many of either were not kept
        self.unexpected_replies = 0         # replies to commands nobody awaited (dropped)
        self._awaiting: set[int] = set()    # commands whose reply `command()` waits for
        self.cache_updates = 0
        self.configuration_changed = False
        self.data_start_time: int | None = None
        self._time = cm.TimeMode(s.include_time)
        self._slots: list[_Slot | None] = [None, None]
        self._names: list[str] = []         # global signal keys: point tag (or signal id)
        self._ids: list[str] = []
        self._key_of: dict[Any, int] = {}
        self._key_by_name: dict[str, int] = {}  # the same keys by name (no list search)
        self._replies: list[fr.Frame] = []
        self._chunks: list[Chunk] = []
        self._backlog: deque[tuple[Any, float]] = deque()   # frames read, not yet handled
        self._buf = bytearray(BUFFER_SIZE)
        self._start = self._end = 0
        self._received = 0
        self._broken: ProtocolError | None = None
        self._sock = self._connect()
        try:
            self.command(Command.DEFINE_OPERATIONAL_MODES, self.modes.encode())
            self.refresh_metadata()
        except BaseException:
            self._sock.close()
            raise

    # ---------------------------------------------------------------- connection
    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise InstrumentConnectError(f"cannot reach STTP publisher {self.where}: "
                                         f"{exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if not self.settings.tls:
            return sock
        context = ssl.create_default_context(cafile=self.settings.tls_ca or None)
        if not self.settings.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            return context.wrap_socket(sock, server_hostname=self.host)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise InstrumentConnectError(f"TLS handshake with STTP publisher {self.where} "
                                         f"failed: {exc}") from None

    def _send(self, code: int, data: bytes = b"") -> None:
        try:
            self._sock.sendall(fr.encode_command(code, data))   # one sendall: spec §11 #6
        except OSError as exc:
            raise ConnectionLost(f"STTP publisher {self.where}: cannot send "
                                 f"{fr.code_name(code)}: {exc}") from None

    def command(self, code: int, data: bytes = b"", timeout: float | None = None) -> fr.Frame:
        """Send a command and wait for its Succeeded (returned) or Failed (InstrumentError)."""
        self._awaiting.add(code)
        try:
            self._send(code, data)
            deadline = Deadline(self.timeout if timeout is None else timeout)
            while True:
                for i, reply in enumerate(self._replies):
                    if reply.in_response_to == code:
                        del self._replies[i]
                        if reply.code == Response.FAILED:
                            raise InstrumentError(
                                f"STTP publisher {self.where} refused {fr.code_name(code)}: "
                                f"{fr.status_text(reply.data)}")
                        return reply
                self._pump(deadline, f"the reply to {fr.code_name(code)}")
        finally:
            self._awaiting.discard(code)        # a late reply is then unexpected, not kept

    def refresh_metadata(self) -> Metadata:
        """Ask for the publisher's metadata again (e.g. after ConfigurationChanged)."""
        reply = self.command(Command.METADATA_REFRESH)
        try:
            self.metadata = decode_metadata(reply.data, reply.data_offset)
        except ProtocolError as exc:
            raise exc.at(self.where) from None
        self.configuration_changed = False
        return self.metadata

    # ---------------------------------------------------------------- subscriptions
    def connection_string(self, filter_expression: str | None = None) -> str:
        expression = self.settings.filter if filter_expression is None else filter_expression
        pairs: dict[str, object] = {
            "includeTime": self.settings.include_time, "processingInterval": -1,
            "useMillisecondResolution": False, "requestNaNValueFilter": False,
            "assemblyInfo": f"source=hil;version={VERSION}"}
        if expression.strip():
            pairs["filterExpression"] = expression
        return fr.format_connection_string(pairs)

    def subscribe(self, filter_expression: str | None = None) -> None:
        """Subscribe (filter: the settings' by default) and wait for the signal index cache."""
        updates = self.cache_updates
        self._chunks.clear()
        self.subscribed = True          # data may follow the reply within the same read
        try:
            self.command(Command.SUBSCRIBE, fr.encode_subscribe(self.connection_string(
                filter_expression)))
        except BaseException:
            self.subscribed = False
            raise
        deadline = Deadline(self.timeout)
        while self.cache_updates == updates:
            self._pump(deadline, "the signal index cache after Subscribe")

    def unsubscribe(self) -> None:
        """Unsubscribe and read until the publisher confirms: nothing of the old stream is left
        in flight afterwards (data read meanwhile is discarded)."""
        if not self.subscribed:
            return
        self.subscribed = False
        self.command(Command.UNSUBSCRIBE)
        self._chunks.clear()

    @property
    def signals(self) -> list[str]:
        """Point tags (or signal ids) of the active subscription."""
        slot = next((s for s in self._slots if s is not None), None)
        return [self._names[k] for k in slot.keys] if slot is not None else []

    def signal_id(self, name: str) -> str:
        """The signal id (GUID text) of a point tag of this connection."""
        try:
            return self._ids[self._key_by_name[name]]
        except KeyError:
            raise KeyError(f"STTP publisher {self.where}: no signal {name!r} on this "
                           "connection") from None

    # ---------------------------------------------------------------- reading
    def _pump(self, deadline: Deadline, awaiting: str) -> None:
        """One read, then every complete frame in the buffer handled."""
        if self._broken is not None:
            raise self._broken
        if self._backlog:                   # frames left by an error: handle them first
            self._drain_backlog()
            return
        tail = self._end - self._start
        if self._start >= tail or len(self._buf) - self._end < READ_SIZE:
            # The unfinished frame moves to the front (cheap: no bigger than what was consumed
            # since), so every read lands in the same cache-warm bytes.
            self._buf[:tail] = self._buf[self._start:self._end]
            self._start, self._end = 0, tail
            if len(self._buf) - tail < READ_SIZE:
                self._buf.extend(bytes(READ_SIZE))
        self._sock.settimeout(max(deadline.remaining, 0.001))
        try:
            with memoryview(self._buf) as view:
                n = self._sock.recv_into(view[self._end:self._end + READ_SIZE])
                if n:
                    n += self._gather_more(view, self._end + n, self._end + READ_SIZE)
        except (TimeoutError, socket.timeout):
            raise BusTimeout(f"STTP publisher {self.where} sent nothing more while awaiting "
                             f"{awaiting} ({self._received} bytes received)",
                             tail=bytes(self._buf[max(self._start, self._end - 200):self._end])
                             ) from None
        except OSError as exc:
            raise self._lost(f"dropped the connection ({exc})", awaiting) from None
        if n == 0:
            raise self._lost("closed the connection", awaiting)
        self._end += n
        self._received += n
        self._handle_buffer()

    def _gather_more(self, view: memoryview, at: int, end: int) -> int:
        """Bytes already queued on the socket, up to `end`, without waiting: a fast stream
        is then decoded in reads of about READ_SIZE (handling a read costs some 60 µs of
        numpy calls whatever its size, and loopback TCP hands over ~400 KiB a call)."""
        got, timeout = 0, self._sock.gettimeout()
        self._sock.settimeout(0.0)
        try:
            while at + got < end:
                n = self._sock.recv_into(view[at + got:end])
                if not n:
                    break                    # closed: the next read says so
                got += n
        except OSError:
            pass                             # nothing more queued (or an error the next read
                                             # raises, after the bytes before it are decoded)
        finally:
            self._sock.settimeout(timeout)
        return got

    def _lost(self, what: str, awaiting: str) -> ConnectionLost:
        partial = self._end - self._start
        extra = (f"; {partial} bytes of an unfinished frame from stream offset "
                 f"{self._received - partial}" if partial else "")
        return ConnectionLost(f"STTP publisher {self.where} {what} while awaiting {awaiting} "
                              f"({self._received} bytes received{extra})")

    def _handle_buffer(self) -> None:
        offset = self._received - (self._end - self._start)
        try:
            items, pos = cm.split_stream(self._buf, self._start, self._end, offset)
        except ProtocolError as exc:
            self._broken = exc.at(self.where)
            raise self._broken from None
        arrival = clock.now()
        self._start = pos
        self._backlog.extend((item, arrival) for item in items)
        self._drain_backlog()

    def _drain_backlog(self) -> None:
        """Handle the frames read and not handled yet. A frame that raises leaves the ones
        after it here, for the next `_pump` (before it reads, so data runs still point at
        their bytes): an error in one frame loses no other."""
        while self._backlog:
            item, arrival = self._backlog.popleft()
            if isinstance(item, cm.DataRun):
                self._data_run(item, arrival)
            else:
                self._response(item)

    def _response(self, frame: fr.Frame) -> None:
        code = frame.code
        try:
            if code in (Response.SUCCEEDED, Response.FAILED):
                if frame.in_response_to not in self._awaiting:
                    self.unexpected_replies += 1        # nobody asks: not kept, they would pile up
                    return
                if code == Response.SUCCEEDED and frame.in_response_to != \
                        Command.METADATA_REFRESH and frame.data:
                    self._note(fr.status_text(frame.data))
                self._replies.append(frame)
            elif code == Response.UPDATE_SIGNAL_INDEX_CACHE:
                self._cache_update(frame)
            elif code == Response.UPDATE_BASE_TIMES:
                index, times = cm.decode_base_times(frame.data, frame.data_offset)
                self._time = cm.TimeMode(self.settings.include_time, False, times)
            elif code == Response.DATA_START_TIME:
                if len(frame.data) != 8:
                    raise ProtocolError(f"DataStartTime carries {len(frame.data)} bytes, not 8",
                                        field="data start time", offset=frame.data_offset)
                self.data_start_time = int.from_bytes(frame.data, "big")
            elif code == Response.CONFIGURATION_CHANGED:
                self.configuration_changed = True
            elif code in (Response.NOTIFY, Response.PROCESSING_COMPLETE):
                self._note(fr.status_text(frame.data[4:] if code == Response.NOTIFY
                                          else frame.data))
                if code == Response.NOTIFY and len(frame.data) >= 4:
                    self._send(Command.CONFIRM_NOTIFICATION, bytes(frame.data[:4]))
            elif code == Response.DATA_PACKET:            # a data packet with no data at all
                raise ProtocolError("DataPacket without data", field="packet flags",
                                    offset=frame.data_offset)
        except ProtocolError as exc:
            raise exc.at(self.where) from None

    def _note(self, text: str) -> None:
        """Keep a status text (the first MAX_KEPT, clipped): a chatty peer cannot fill memory."""
        if len(self.messages) < MAX_KEPT:
            self.messages.append(text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…")
        else:
            self.dropped_notes += 1

    def _cache_update(self, frame: fr.Frame) -> None:
        slot, cache = decode_cache(frame.data, self.modes.version, frame.data_offset)
        keys = np.array([self._key(sid) for sid in cache.signal_ids], dtype=np.int32)
        entry = _Slot(cache, keys)
        if slot is None:            # sttpapi's 0xFF (spec §11 defect 2): both slots
            self._note(f"signal index cache with slot byte {frame.data[0]}: "
                       "stored in both slots")
            self._slots = [entry, _Slot(cache, keys)]
        else:
            self._slots[slot] = entry
        self.cache_updates += 1
        if self.modes.version > 1:
            self._send(Command.CONFIRM_UPDATE_SIGNAL_INDEX_CACHE)

    def _key(self, signal_id: Any) -> int:
        key = self._key_of.get(signal_id)
        if key is None:
            record = self.metadata.by_id.get(signal_id)
            name = record.point_tag if record is not None and record.point_tag else str(signal_id)
            if name in self._key_by_name:
                name = f"{name} ({signal_id})"
            key = self._key_of[signal_id] = self._key_by_name[name] = len(self._names)
            self._names.append(name)
            self._ids.append(str(signal_id))
        return key

    def _slot(self, flags: int, offset: int) -> _Slot:
        slot = self._slots[1 if flags & PacketFlags.CACHE_INDEX else 0]
        if slot is None:
            raise ProtocolError("DataPacket before any signal index cache for slot "
                                f"{1 if flags & PacketFlags.CACHE_INDEX else 0}",
                                field="cache slot", offset=offset, where=self.where)
        return slot

    def _data_run(self, run: cm.DataRun, arrival: float) -> None:
        flags = run.flags(self._buf)
        try:
            slot = self._slot(flags, run.offset + 10)
            if flags & PacketFlags.COMPRESSED:
                parts = [self._tssc(slot, run, i) for i in range(run.count)]
                got = cm.Measurements.concat(parts)
                counts = np.array([len(p) for p in parts], dtype=np.int64)
            else:
                got, counts = cm.decode_run(self._buf, run, self._time, slot.cache)
        except ProtocolError as exc:
            exc.at(self.where)
            if not self.settings.resync:
                raise
            got, counts = self._salvage(run, exc)
            slot = self._slots[1 if flags & PacketFlags.CACHE_INDEX else 0] or slot
        if not self.subscribed or not len(counts):
            return
        keys = slot.keys_of(got.index)
        self.measurements_received += len(got)
        self._chunks.append(Chunk(keys, got.value, got.ticks, got.flags, counts, arrival))

    def _tssc(self, slot: _Slot, run: cm.DataRun, i: int) -> cm.Measurements:
        at = run.start + i * run.size
        got = slot.tssc.decode_packet(bytes(self._buf[at + 10:at + run.size]),
                                      run.offset + i * run.size + 10)
        cm._known(got.index, slot.cache, lambda j: run.offset + i * run.size + 10)
        return got

    def _salvage(self, run: cm.DataRun, first: ProtocolError
                 ) -> tuple[cm.Measurements, np.ndarray]:
        """resync: decode the run packet by packet, skipping (and counting) the bad ones."""
        parts, counts = [], []
        for i in range(run.count):
            at = run.start + i * run.size
            data = bytes(self._buf[at + 10:at + run.size])
            try:
                slot = self._slot(data[0], run.offset + i * run.size + 10)
                if data[0] & PacketFlags.COMPRESSED:
                    got = self._tssc(slot, run, i)
                else:
                    got = cm.decode_packet(data, self._time, slot.cache,
                                           run.offset + i * run.size + 10)
            except ProtocolError as exc:
                if len(self.errors) < MAX_KEPT:
                    self.errors.append(exc.at(self.where))
                else:
                    self.dropped_notes += 1
                self.lost_packets += 1
                continue
            parts.append(got)
            counts.append(len(got))
        return cm.Measurements.concat(parts), np.array(counts, dtype=np.int64)

    # ---------------------------------------------------------------- captures
    def chunks(self, seconds: float | None = None, frames: int | None = None
               ) -> Iterator[Chunk]:
        """Yield received measurements read by read until `seconds` passed or `frames`
        frames arrived (a subscription must be active)."""
        if not self.subscribed:
            raise InstrumentError(f"STTP publisher {self.where}: not subscribed")
        deadline = Deadline(seconds) if seconds is not None else None
        quiet = Deadline(self.timeout)      # no data for this long is an error: bytes that
        seen, last = 0, None                # carry none (keep-alives, replies) do not count
        while True:
            if self._chunks:
                quiet = Deadline(self.timeout)
            while self._chunks:
                chunk = self._chunks.pop(0)
                if frames is not None and self.settings.include_time:
                    starts = frame_starts(chunk.ticks, last)
                    total = np.cumsum(starts) + seen
                    if total.size and total[-1] > frames:
                        cut = int(np.searchsorted(total, frames + 1))
                        chunk = _head(chunk, cut)
                        starts = starts[:cut]
                    seen += int(starts.sum())
                    last = int(chunk.ticks[-1]) if len(chunk) else last
                elif frames is not None:
                    chunk = _head_packets(chunk, frames - seen)
                    seen += int(chunk.packet_counts.size)
                yield chunk
                if frames is not None and seen >= frames:
                    return
            if deadline is not None and deadline.expired:
                return
            wait = quiet.remaining if deadline is None else min(quiet.remaining,
                                                                deadline.remaining)
            if wait > 0:
                try:
                    self._pump(Deadline(wait), "data")
                    continue
                except BusTimeout:
                    pass
            if deadline is not None and deadline.expired:
                return
            raise BusTimeout(f"no STTP data from {self.where} for {self.timeout:g} s "
                             f"({seen} frames of this capture, {self._received} bytes on the "
                             "connection)")

    def capture(self, seconds: float | None = None, frames: int | None = None,
                filter_expression: str | None = None) -> StreamCapture:
        """Record `seconds` of the stream or `frames` frames into a StreamCapture keyed by point
        tag. Subscribes first (and unsubscribes after) unless a subscription is active."""
        if seconds is None and frames is None:
            raise ValueError("capture() needs seconds= or frames=")
        was_subscribed = self.subscribed
        if not was_subscribed:
            self.subscribe(filter_expression)
        lost_before = self.lost_packets
        try:
            got = list(track(self.chunks(seconds=seconds, frames=frames),
                             f"{self.source}: capturing", seconds, "measurements"))
        finally:
            if not was_subscribed:
                self.unsubscribe()
        return build_capture(self.source, got, self._names, self._ids, self._nominal_rate(),
                             self.settings.include_time, self.lost_packets - lost_before)

    def _nominal_rate(self) -> float:
        if self.settings.rate > 0:
            return self.settings.rate
        for slot in self._slots:
            if slot is not None and slot.cache.signal_ids:
                return self.metadata.frame_rate(slot.cache.signal_ids[0])
        return 0.0

    # ---------------------------------------------------------------- teardown
    def safe_state(self) -> None:
        """Stop streaming (unsubscribe), the instrument's safe state."""
        try:
            self.unsubscribe()
        except (ConnectionLost, BusTimeout, ProtocolError, InstrumentError, OSError):
            self.subscribed = False

    def close(self) -> None:
        """Unsubscribe and disconnect."""
        if self._broken is None:
            self.safe_state()
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> SttpSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"SttpSubscriber({self.source}, {len(self.metadata.measurements)} measurements, "
                f"{'subscribed' if self.subscribed else 'idle'})")


def _head(chunk: Chunk, n: int) -> Chunk:
    """The first n measurements of a chunk."""
    return Chunk(chunk.keys[:n], chunk.values[:n], chunk.ticks[:n], chunk.flags[:n],
                 _counts_head(chunk.packet_counts, n), chunk.arrival)


def _counts_head(counts: np.ndarray, n: int) -> np.ndarray:
    ends = np.cumsum(counts)
    keep = int(np.searchsorted(ends, n))
    out = counts[:keep + 1].copy()
    if out.size:
        out[-1] = n - (ends[keep - 1] if keep else 0)
    return out[out > 0]


def _head_packets(chunk: Chunk, packets: int) -> Chunk:
    n = int(chunk.packet_counts[:packets].sum())
    head = _head(chunk, n)
    head.packet_counts = chunk.packet_counts[:packets]
    return head
