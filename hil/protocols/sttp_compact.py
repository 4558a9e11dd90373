"""STTP compact measurements (DataPacket 0x82, spec §8), decoded with numpy per packet or per
run of same-sized packets straight out of the receive buffer.

A compact record is flags (1), runtime signal index (int32), value (float32) and a time of 0,
2, 4 or 8 bytes. `decode_packet` decodes one packet's data; `split_stream` cuts a receive buffer
into frames and groups consecutive data packets with identical headers into a `DataRun`, which
`decode_run` decodes with one strided structured view. Packets without the count field
(`sttpapi`'s publisher, spec §11 defect 1) are recognised by their length.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from hil.errors import ProtocolError
from hil.protocols.sttp_cache import SignalIndexCache
from hil.protocols.sttp_frames import (MAX_FRAME, Frame, PacketFlags, Response,
                                       check_response_header)
from hil.protocols.sttp_ticks import PER_MILLISECOND

BASE_TIME_OFFSET = 0x40
TIME_INDEX = 0x80
#: compact flag bit → the full 32-bit state-flag mask it stands for (spec §8.1)
FLAG_MASKS = {0x01: 0x000000FC, 0x02: 0x0000EF03, 0x04: 0x00BF0000, 0x08: 0xE0000000,
              0x10: 0x00001000, 0x20: 0x00400000}
FULL_FLAGS = np.array([sum(m for bit, m in FLAG_MASKS.items() if b & bit) for b in range(256)],
                      dtype=np.uint32)
_HEAD = struct.Struct(">IBBIB")           # length, code, in-response-to, data length, flags
_U32 = struct.Struct(">I")


def record_dtype(time_bytes: int) -> np.dtype:
    """Packed big-endian record: flags, index, value and a time of 0/2/4/8 bytes."""
    fields = [("flags", "u1"), ("index", ">i4"), ("value", ">f4")]
    if time_bytes:
        fields.append(("time", {2: ">u2", 4: ">u4", 8: ">u8"}[time_bytes]))
    return np.dtype(fields)


RECORD = {n: record_dtype(n) for n in (0, 2, 4, 8)}


@dataclass(frozen=True)
class TimeMode:
    """How a subscription encodes time: `include_time`, millisecond offsets, the base times."""

    include_time: bool = True
    millisecond: bool = False
    base_times: tuple[int, int] = (0, 0)

    def time_bytes(self, flags: int) -> int:
        if not self.include_time:
            return 0
        if flags & BASE_TIME_OFFSET:
            return 2 if self.millisecond else 4
        return 8


@dataclass
class Measurements:
    """Decoded measurements as columns: runtime index, value, Ticks (raw 64 bits: leap-second
    bits kept; 0 without time) and full state flags (the compact summary expanded)."""

    index: np.ndarray
    value: np.ndarray
    ticks: np.ndarray
    flags: np.ndarray

    def __len__(self) -> int:
        return int(self.index.size)

    @classmethod
    def empty(cls) -> Measurements:
        return cls(np.zeros(0, np.int32), np.zeros(0, np.float64), np.zeros(0, np.uint64),
                   np.zeros(0, np.uint32))

    @classmethod
    def concat(cls, parts: list[Measurements]) -> Measurements:
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("index", "value", "ticks", "flags")))


# ------------------------------------------------------------------------ encoding
def compact_flags(full_flags: np.ndarray | int) -> np.ndarray:
    """The compact summary of full state flags (uint8), vectorised."""
    full = np.asarray(full_flags, dtype=np.uint32)
    out = np.zeros(full.shape, dtype=np.uint8)
    for bit, mask in FLAG_MASKS.items():
        out |= np.where(full & np.uint32(mask), np.uint8(bit), np.uint8(0))
    return out


def encode_records(index: np.ndarray, value: np.ndarray, ticks: np.ndarray | None,
                   flags: np.ndarray | int = 0) -> bytes:
    """Full-time (or, with ticks None, time-less) compact records."""
    n = len(index)
    rec = np.zeros(n, dtype=RECORD[0 if ticks is None else 8])
    rec["flags"] = compact_flags(np.broadcast_to(np.asarray(flags, dtype=np.uint32), (n,)))
    rec["index"], rec["value"] = index, value
    if ticks is not None:
        rec["time"] = ticks
    return rec.tobytes()


def encode_packet(index: np.ndarray, value: np.ndarray, ticks: np.ndarray | None,
                  flags: np.ndarray | int = 0, cache_slot: int = 0, with_count: bool = True
                  ) -> bytes:
    """DataPacket data: flags byte, count (unless `with_count=False`, as `sttpapi`), records."""
    head = PacketFlags.COMPACT | (PacketFlags.CACHE_INDEX if cache_slot else 0)
    count = _U32.pack(len(index)) if with_count else b""
    return bytes((head,)) + count + encode_records(index, value, ticks, flags)


# ------------------------------------------------------------------------ decoding
def _known(index: np.ndarray, cache: SignalIndexCache | None, offset_of: object) -> None:
    """Every runtime index must be in the cache; else a ProtocolError at the first unknown."""
    if cache is None or cache.covers(index):
        return
    unknown = np.flatnonzero(cache.positions(index) < 0)
    if unknown.size:
        j = int(unknown[0])
        raise ProtocolError(f"runtime signal index {int(index[j])} is not in the signal index "
                            f"cache ({len(cache)} entries; {unknown.size} such records)",
                            field="signal index", offset=offset_of(j))  # type: ignore[operator]


@dataclass(frozen=True)
class _Flags:
    """The compact flags bytes of some records, with their AND (`common`) and OR (`union`)
    over all records: equal when every record has the same flags (the usual case: no copy of
    the bytes, the full flags are one fill, and every record has the same time size)."""

    size: int
    common: int
    union: int
    mixed: np.ndarray | None         # the bytes (a copy: holds no receive buffer) unless uniform

    @classmethod
    def of(cls, rec: np.ndarray) -> _Flags:
        view = rec["flags"]
        if not view.size:
            return cls(0, 0, 0, None)
        common = int(np.bitwise_and.reduce(view, axis=None))
        union = int(np.bitwise_or.reduce(view, axis=None))
        mixed = view.astype(np.uint8).ravel() if common != union else None
        return cls(int(view.size), common, union, mixed)

    @property
    def compact(self) -> np.ndarray:
        if self.mixed is not None:
            return self.mixed
        return np.full(self.size, self.common, dtype=np.uint8)

    @property
    def mixed_time_sizes(self) -> bool:
        """Some records have a base-time offset and some a full time: sizes differ."""
        return bool((self.common ^ self.union) & BASE_TIME_OFFSET)

    def full(self) -> np.ndarray:
        """The full 32-bit state flags of every record."""
        if self.common == self.union == 0:
            return np.zeros(self.size, dtype=np.uint32)
        if self.common == self.union:
            return np.full(self.size, FULL_FLAGS[self.common], dtype=np.uint32)
        return FULL_FLAGS[self.compact]


def _times(rec: np.ndarray, mode: TimeMode, time_bytes: int, flags: _Flags,
           offset_of: object) -> np.ndarray:
    if time_bytes == 0:
        return np.zeros(flags.size, dtype=np.uint64)
    raw = rec["time"].astype(np.uint64).ravel()
    if time_bytes == 8:
        return raw
    which = (flags.compact & TIME_INDEX) != 0
    base = np.where(which, np.uint64(mode.base_times[1]), np.uint64(mode.base_times[0]))
    if not base.all():
        j = int(np.argmin(base != 0))
        raise ProtocolError("offset time stamp before any UpdateBaseTimes gave its base time",
                            field="base time", offset=offset_of(j))  # type: ignore[operator]
    return base + raw * np.uint64(PER_MILLISECOND if time_bytes == 2 else 1)


def _columns(rec: np.ndarray, mode: TimeMode, time_bytes: int,
             cache: SignalIndexCache | None, offset_of: object,
             flags: _Flags | None = None) -> Measurements:
    """The four columns of a (packets × records) or flat record view: one pass each."""
    index = rec["index"].astype(np.int32).ravel()
    _known(index, cache, offset_of)
    flags = flags or _Flags.of(rec)
    return Measurements(index, rec["value"].astype(np.float64).ravel(),
                        _times(rec, mode, time_bytes, flags, offset_of), flags.full())


def packet_layout(data: bytes | memoryview, mode: TimeMode, offset: int = 0
                  ) -> tuple[int, int, int] | None:
    """(records start, record count, record size) of compact packet data when all records
    share one size, with or without the count field; None when sizes are mixed."""
    remaining = len(data) - 1
    if remaining >= 4:
        count = _U32.unpack_from(data, 1)[0]
        if count == 0 and remaining == 4:
            return 5, 0, 9
        if remaining > 4:
            size = 9 + mode.time_bytes(data[5])
            if 4 + count * size == remaining:
                return 5, count, size
    if remaining == 0:
        return 1, 0, 9
    size = 9 + mode.time_bytes(data[1])
    if remaining % size == 0:
        return 1, remaining // size, size
    return None


def decode_packet(data: bytes | memoryview, mode: TimeMode = TimeMode(),
                  cache: SignalIndexCache | None = None, offset: int = 0) -> Measurements:
    """Decode one compact DataPacket's data (flags byte first). `offset`: stream offset of
    data[0], for errors. A packet that is neither compact nor TSSC is a ProtocolError."""
    if not len(data):
        raise ProtocolError("empty DataPacket", field="packet flags", offset=offset)
    flags = data[0]
    if flags & PacketFlags.COMPRESSED or not flags & PacketFlags.COMPACT:
        raise ProtocolError(f"DataPacket flags 0x{flags:02X}: not a compact packet",
                            field="packet flags", offset=offset)
    if flags & PacketFlags.CIPHER_INDEX:
        raise ProtocolError("encrypted DataPacket (CipherIndex flag) on TCP",
                            field="packet flags", offset=offset)
    layout = packet_layout(data, mode, offset)
    if layout is None:
        return _decode_mixed(data, mode, cache, offset)
    start, count, size = layout
    rec = np.frombuffer(data, dtype=RECORD[size - 9], count=count, offset=start)
    flags = _Flags.of(rec)
    if size != 9 and flags.mixed_time_sizes:
        return _decode_mixed(data, mode, cache, offset)
    return _columns(rec, mode, size - 9, cache, lambda j: offset + start + j * size, flags)


def _decode_mixed(data: bytes | memoryview, mode: TimeMode, cache: SignalIndexCache | None,
                  offset: int) -> Measurements:
    """Records of different sizes (some base-time offset, some full): one at a time.
    Needs the count field; the records must fill the packet exactly."""
    if len(data) < 5:
        raise ProtocolError(f"compact packet of {len(data)} bytes has no room for its count",
                            field="measurement count", offset=offset)
    count = _U32.unpack_from(data, 1)[0]
    if count > (len(data) - 5) // 11:
        raise ProtocolError(f"compact packet claims {count} measurements in {len(data)} bytes",
                            field="measurement count", offset=offset + 1)
    parts, pos = [], 5
    for _ in range(count):
        if pos >= len(data):
            raise ProtocolError("compact packet ends before its counted measurements",
                                field="measurement count", offset=offset + 1)
        size = 9 + mode.time_bytes(data[pos])
        if pos + size > len(data):
            raise ProtocolError(f"compact record of {size} bytes runs past the packet end",
                                field="compact record", offset=offset + pos)
        rec = np.frombuffer(data, dtype=RECORD[size - 9], count=1, offset=pos)
        at = offset + pos
        parts.append(_columns(rec, mode, size - 9, cache, lambda j, at=at: at))
        pos += size
    if pos != len(data):
        raise ProtocolError(f"{len(data) - pos} bytes after the {count} counted measurements",
                            field="measurement count", offset=offset + 1)
    return Measurements.concat(parts)


# ------------------------------------------------------------------------ runs of packets
@dataclass(frozen=True)
class DataRun:
    """`count` consecutive DataPacket frames of `size` bytes each with identical headers,
    starting at buffer position `start` (stream offset `offset`)."""

    start: int
    count: int
    size: int
    offset: int

    def flags(self, buf: bytearray | bytes) -> int:
        return buf[self.start + 10]


def split_stream(buf: bytearray | bytes, pos: int, end: int, offset: int,
                 max_frame: int = MAX_FRAME) -> tuple[list[Frame | DataRun], int]:
    """Cut buf[pos:end] into response frames; runs of same-header data packets become one
    `DataRun`. Returns the items and the position after the last complete frame.
    `offset` is the stream offset of buf[pos]."""
    items: list[Frame | DataRun] = []
    base = offset - pos
    while end - pos >= 4:
        length = _U32.unpack_from(buf, pos)[0]
        if not 6 <= length <= max_frame:
            raise ProtocolError(f"frame length {length} outside 6..{max_frame}",
                                field="frame length", offset=base + pos)
        if end - pos - 4 < length:
            break
        _, code, answered, data_length, _ = _HEAD.unpack_from(buf, pos) if length > 6 else \
            (*struct.unpack_from(">IBBI", buf, pos), 0)
        check_response_header(code, answered, data_length, length, base + pos)
        size = 4 + length
        if code == Response.DATA_PACKET and length > 6:
            k = (end - pos) // size
            if k > 1:
                rows = np.frombuffer(buf, np.uint8, count=k * size, offset=pos).reshape(k, size)
                head = rows[:, :min(15, size)]
                same = (head == head[0]).all(axis=1)
                k = k if same.all() else int(np.argmin(same))
                del rows, head
            items.append(DataRun(pos, k, size, base + pos))
            pos += k * size
        else:
            items.append(Frame(code, answered, bytes(buf[pos + 10:pos + size]), base + pos))
            pos += size
    return items, pos


def decode_run(buf: bytearray | bytes, run: DataRun, mode: TimeMode = TimeMode(),
               cache: SignalIndexCache | None = None) -> tuple[Measurements, np.ndarray]:
    """Decode a run of compact packets at once: (measurements, records per packet)."""
    data0 = memoryview(buf)[run.start + 10:run.start + run.size]
    try:
        layout = packet_layout(data0, mode) if data0[0] & PacketFlags.COMPACT else None
        uniform = layout is not None and not data0[0] & (PacketFlags.COMPRESSED |
                                                          PacketFlags.CIPHER_INDEX)
    finally:
        data0.release()
    if not uniform or run.count == 1:
        return _run_by_packet(buf, run, mode, cache)
    assert layout is not None
    start, count, size = layout
    rec = np.ndarray((run.count, count), dtype=RECORD[size - 9], buffer=buf,
                     offset=run.start + 10 + start, strides=(run.size, size))
    flags = _Flags.of(rec)
    if size != 9 and flags.mixed_time_sizes:
        del rec
        return _run_by_packet(buf, run, mode, cache)
    first = run.offset + 10 + start

    def offset_of(j: int) -> int:
        return first + (j // count) * run.size + (j % count) * size
    try:
        out = _columns(rec, mode, size - 9, cache, offset_of, flags)
    finally:
        del rec
    return out, np.full(run.count, count, dtype=np.int64)


def _run_by_packet(buf: bytearray | bytes, run: DataRun, mode: TimeMode,
                   cache: SignalIndexCache | None) -> tuple[Measurements, np.ndarray]:
    parts = []
    for i in range(run.count):
        at = run.start + i * run.size
        parts.append(decode_packet(bytes(buf[at + 10:at + run.size]), mode, cache,
                                   run.offset + i * run.size + 10))
    return Measurements.concat(parts), np.array([len(p) for p in parts], dtype=np.int64)


def decode_base_times(data: bytes, offset: int = 0) -> tuple[int, tuple[int, int]]:
    """UpdateBaseTimes data: (active time index 0/1, (base time 0, base time 1))."""
    if len(data) != 20:
        raise ProtocolError(f"UpdateBaseTimes carries {len(data)} bytes, expected 20",
                            field="base times", offset=offset)
    index, t0, t1 = struct.unpack(">iQQ", data)
    return (0 if index == 0 else 1), (t0, t1)


def encode_base_times(index: int, t0: int, t1: int) -> bytes:
    return struct.pack(">iQQ", index, t0, t1)
