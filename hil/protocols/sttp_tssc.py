"""STTP TSSC decoder (Time-Series Special Compression, DataPacket flag 0x08).

A TSSC packet's data is flags, uint32 count, version byte 85, uint16 sequence number and a
bit-packed stream. Encoder and decoder keep state across packets (last time stamps and deltas,
per point the last values and flags, and adaptive code statistics choosing 5–8 bit codes), so
packets must be decoded in order: sequence 0 resets the state, the sequence then runs 1…65535
and wraps to 1. The algorithm follows `sttpapi`'s `tssc/decoder.py` bit for bit, in plain Python
integers (int32/int64 wrap-around reproduced), and every read past the end, unknown code or
out-of-sequence packet is a ProtocolError naming the field and offset.
"""
from __future__ import annotations

import struct

import numpy as np

from hil.errors import ProtocolError
from hil.protocols.sttp_compact import Measurements

VERSION = 85
INT64_MAX = (1 << 63) - 1
# code words
END, POINT_XOR4, POINT_XOR32, TIME_DELTA1, TIME_XOR7 = 0, 1, 7, 8, 17
STATE_FLAGS2, STATE_FLAGS7, VALUE1, VALUE2, VALUE3, VALUE_ZERO = 18, 19, 20, 21, 22, 23
_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")


def _i64(x: int) -> int:
    return ((x + (1 << 63)) & 0xFFFF_FFFF_FFFF_FFFF) - (1 << 63)


def _i32(x: int) -> int:
    return ((x + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)


class _Point:
    """Per-point state: last id step, flags, values and the adaptive code table."""

    __slots__ = ("next_id", "flags1", "flags2", "value1", "value2", "value3", "stats", "sent",
                 "mode", "c1", "c2", "c3", "startup")

    def __init__(self) -> None:
        self.next_id = 0
        self.flags1 = self.flags2 = 0
        self.value1 = self.value2 = self.value3 = 0
        self.stats = [0] * 32
        self.sent = 0
        self.mode = 4
        self.c1, self.c2, self.c3 = VALUE1, VALUE2, VALUE3
        self.startup = 0

    def update_stats(self, code: int) -> None:
        self.sent += 1
        self.stats[code] += 1
        if ((self.startup == 0 and self.sent > 5) or (self.startup == 1 and self.sent > 20)):
            self.startup += 1
            self._adapt()
        elif self.startup == 2 and self.sent > 100:
            self._adapt()

    def _adapt(self) -> None:
        """Pick the cheapest of the four code modes for the codes seen since the last change."""
        code1, count1, code2, count2, code3, count3, total = 0, 0, 1, 0, 2, 0, 0
        for i, count in enumerate(self.stats):
            total += count
            if count > count3:
                if count > count1:
                    code3, count3, code2, count2, code1, count1 = code2, count2, code1, count1, i, count
                elif count > count2:
                    code3, count3, code2, count2 = code2, count2, i, count
                else:
                    code3, count3 = i, count
        self.stats = [0] * 32
        sizes = (total * 5, count1 + (total - count1) * 6,
                 count1 + count2 * 2 + (total - count1 - count2) * 7,
                 count1 + count2 * 2 + count3 * 3 + (total - count1 - count2 - count3) * 8)
        self.mode = sizes.index(min(sizes)) + 1
        self.c1, self.c2, self.c3 = code1, code2, code3
        self.sent = 0


MAX_COUNT = 1 << 20      # measurements one TSSC packet may hold (bit-serial decoding costs
                         # about a microsecond each: a lying packet cannot cost minutes)


class TsscDecoder:
    """Decodes the TSSC packets of one subscription (one signal index cache slot), in order.
    `known`: the runtime indices of the signal index cache; a point outside it is an error
    at once (each point keeps state, so a hostile stream of new points would fill memory)."""

    def __init__(self, known: frozenset[int] | None = None) -> None:
        self.known = known
        self.reset()

    def reset(self) -> None:
        self.sequence = 0                   # the sequence number expected next
        self.packets = 0
        self._ts1 = self._ts2 = 0
        self._d1 = self._d2 = self._d3 = self._d4 = INT64_MAX
        self._last = _Point()
        self._points: dict[int, _Point] = {}

    # ---------------------------------------------------------------- packets
    def decode_packet(self, data: bytes, offset: int = 0) -> Measurements:
        """Decode one DataPacket's data (flags byte first). `offset`: stream offset of data[0].

        The count field must match the measurements decoded; a packet out of sequence raises
        (its measurements cannot be decoded without the ones before it)."""
        if len(data) < 8:
            raise ProtocolError(f"TSSC packet of {len(data)} bytes is shorter than its header",
                                field="TSSC header", offset=offset)
        count, version, sequence = struct.unpack_from(">IBH", data, 1)
        if version != VERSION:
            raise ProtocolError(f"TSSC version {version}, expected {VERSION}",
                                field="TSSC version", offset=offset + 5)
        if sequence == 0:
            self.reset()
        elif sequence != self.sequence or self.packets == 0:
            raise ProtocolError(f"TSSC packet sequence {sequence}, expected {self.sequence} "
                                "(a packet was lost or the stream did not start with 0)",
                                field="TSSC sequence", offset=offset + 6)
        if count > MAX_COUNT:
            raise ProtocolError(f"TSSC packet claims {count} measurements, more than "
                                f"{MAX_COUNT} a packet may hold", field="measurement count",
                                offset=offset + 1)
        if count > (len(data) - 8) * 8:
            raise ProtocolError(f"TSSC packet claims {count} measurements in {len(data)} bytes",
                                field="measurement count", offset=offset + 1)
        out = self.decode_block(bytes(data[8:]), offset + 8, count)
        if len(out) != count:
            raise ProtocolError(f"TSSC packet counted {count} measurements but held {len(out)}",
                                field="measurement count", offset=offset + 1)
        self.packets += 1
        self.sequence = 1 if self.sequence >= 0xFFFF else self.sequence + 1
        return out

    def decode_block(self, data: bytes, offset: int = 0, limit: int | None = None
                     ) -> Measurements:
        """Decode one block's bit stream into columns (at most `limit` + 1 measurements)."""
        self._data, self._pos, self._end, self._offset = data, 0, len(data), offset
        self._bits = self._cache = 0
        ids: list[int] = []
        times: list[int] = []
        flags: list[int] = []
        values: list[int] = []
        cap = (limit if limit is not None else len(data) * 8) + 1
        while len(ids) < cap:
            got = self._next()
            if got is None:
                break
            pid, ts, fl, raw = got
            ids.append(pid)
            times.append(ts & 0xFFFF_FFFF_FFFF_FFFF)
            flags.append(fl)
            values.append(raw)
        raw_values = np.array(values, dtype=np.uint32)
        return Measurements(np.array(ids, dtype=np.int32),
                            raw_values.view(np.float32).astype(np.float64),
                            np.array(times, dtype=np.uint64), np.array(flags, dtype=np.uint32))

    # ---------------------------------------------------------------- bit stream
    def _fail(self, message: str, field: str) -> ProtocolError:
        return ProtocolError(f"TSSC {message}", field=field, offset=self._offset + self._pos)

    def _byte(self, field: str) -> int:
        if self._pos >= self._end:
            raise self._fail("stream ends inside a measurement", field)
        b = self._data[self._pos]
        self._pos += 1
        return b

    def _bytes(self, n: int, field: str) -> int:
        """n bytes, little-endian (the XOR payloads)."""
        if self._pos + n > self._end:
            raise self._fail("stream ends inside a measurement", field)
        v = int.from_bytes(self._data[self._pos:self._pos + n], "little")
        self._pos += n
        return v

    def _bit(self) -> int:
        if self._bits == 0:
            self._cache = self._byte("TSSC code")
            self._bits = 8
        self._bits -= 1
        return (self._cache >> self._bits) & 1

    def _bits_n(self, n: int) -> int:
        v = 0
        for _ in range(n):
            v = (v << 1) | self._bit()
        return v

    def _code(self) -> int:
        p = self._last
        mode = p.mode
        if mode == 1:
            code = self._bits_n(5)
        elif mode == 2:
            code = p.c1 if self._bit() else self._bits_n(5)
        elif mode == 3:
            code = p.c1 if self._bit() else p.c2 if self._bit() else self._bits_n(5)
        else:
            code = (p.c1 if self._bit() else p.c2 if self._bit() else
                    p.c3 if self._bit() else self._bits_n(5))
        p.update_stats(code)
        return code

    def _7bit(self, max_bytes: int, field: str) -> int:
        """The 7-bit variable-length unsigned integer of TSSC (last byte carries 8 bits)."""
        value = 0
        for i in range(max_bytes):
            b = self._byte(field)
            if i == max_bytes - 1:
                return value | (b << (7 * i))
            value |= (b & 0x7F) << (7 * i)
            if b < 0x80:
                return value
        return value

    # ---------------------------------------------------------------- one measurement
    def _next(self) -> tuple[int, int, int, int] | None:
        if self._pos == self._end and self._bits == 0:
            return None
        code = self._code()
        if code == END:
            self._bits = self._cache = 0
            return None
        if code <= POINT_XOR32:
            self._point_id(code)
            code = self._code()
            if code < TIME_DELTA1:
                raise self._fail(f"code {code} after a point id change, expected >= "
                                 f"{TIME_DELTA1}", "TSSC code")
        pid = self._last.next_id
        point = self._points.get(pid)
        if point is None:
            if self.known is not None and pid not in self.known:
                raise self._fail(f"point {pid} is not in the signal index cache",
                                 "TSSC point id")
            point = self._points[pid] = _Point()
            point.next_id = _i32(pid + 1)
        if code <= TIME_XOR7:
            ts = self._timestamp(code)
            code = self._code()
            if code < STATE_FLAGS2:
                raise self._fail(f"code {code} after a time stamp, expected >= {STATE_FLAGS2}",
                                 "TSSC code")
        else:
            ts = self._ts1
        if code <= STATE_FLAGS7:
            if code == STATE_FLAGS2:
                fl = point.flags2
            else:
                fl = self._7bit(5, "TSSC state flags") & 0xFFFF_FFFF
            point.flags2, point.flags1 = point.flags1, fl
            code = self._code()
            if code < VALUE1:
                raise self._fail(f"code {code} after state flags, expected >= {VALUE1}",
                                 "TSSC code")
        else:
            fl = point.flags1
        raw = self._value(code, point)
        self._last = point
        return pid, ts, fl, raw

    def _point_id(self, code: int) -> None:
        p = self._last
        if code == 1:
            x = self._bits_n(4)
        elif code == 2:
            x = self._bytes(1, "TSSC point id")
        elif code == 3:
            x = self._bits_n(4) ^ (self._bytes(1, "TSSC point id") << 4)
        elif code == 4:
            x = self._bytes(2, "TSSC point id")
        elif code == 5:
            x = self._bits_n(4) ^ (self._bytes(2, "TSSC point id") << 4)
        elif code == 6:
            x = self._bytes(3, "TSSC point id")
        else:
            x = self._bytes(4, "TSSC point id")
        p.next_id = _i32(x ^ (p.next_id & 0xFFFF_FFFF))

    def _timestamp(self, code: int) -> int:
        t1 = self._ts1
        if code <= 11:
            ts = _i64(t1 + (self._d1, self._d2, self._d3, self._d4)[code - 8])
        elif code <= 15:
            ts = _i64(t1 - (self._d1, self._d2, self._d3, self._d4)[code - 12])
        elif code == 16:
            ts = self._ts2
        else:
            ts = t1 ^ _i64(self._7bit(9, "TSSC time stamp"))
        delta = _i64(abs(_i64(t1 - ts)))
        d1, d2, d3, d4 = self._d1, self._d2, self._d3, self._d4
        if delta < d4 and delta != d1 and delta != d2 and delta != d3:
            if delta < d1:
                self._d1, self._d2, self._d3, self._d4 = delta, d1, d2, d3
            elif delta < d2:
                self._d2, self._d3, self._d4 = delta, d2, d3
            elif delta < d3:
                self._d3, self._d4 = delta, d3
            else:
                self._d4 = delta
        self._ts2, self._ts1 = t1, ts
        return ts

    def _value(self, code: int, p: _Point) -> int:
        if code == VALUE1:
            return p.value1
        if code == VALUE2:
            raw = p.value2
            p.value2, p.value1 = p.value1, raw
            return raw
        if code == VALUE3:
            raw = p.value3
        elif code == VALUE_ZERO:
            raw = 0
        elif 24 <= code <= 31:
            nibble = code in (24, 26, 28, 30)
            nbytes = (code - 24) // 2 + (0 if nibble else 1)
            x = self._bits_n(4) if nibble else 0
            if nbytes:
                x ^= self._bytes(nbytes, "TSSC value") << (4 if nibble else 0)
            raw = (x ^ p.value1) & 0xFFFF_FFFF
        else:
            raise self._fail(f"code {code} where a value code (>= {VALUE1}) belongs",
                             "TSSC code")
        p.value3, p.value2, p.value1 = p.value2, p.value1, raw
        return raw
