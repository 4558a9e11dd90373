"""STTP signal index cache (UpdateSignalIndexCache, spec §7): runtime index → signal GUID.

Response data = [cache slot byte, protocol version > 1] + body, the body gzip'd when asked.
Decoding sniffs the gzip magic instead of trusting the request (lenient, spec §3), accepts a
binary length that counts itself (C++) or not (`sttpapi`), and reports a slot byte other than
0/1 (`sttpapi`'s 0xFF, spec §11 defect 2) as `slot=None`: "store in both slots".
"""
from __future__ import annotations

import gzip
import struct
import uuid
import zlib
from dataclasses import dataclass, field

import numpy as np

from hil.errors import ProtocolError

GZIP_MAGIC = b"\x1f\x8b"
MAX_ENTRIES = 10_000_000
_U32 = struct.Struct(">I")
_ENTRY = struct.Struct(">i16sI")


@dataclass
class SignalIndexCache:
    """One cache: parallel lists per entry, and a fast runtime-index → position lookup."""

    indices: list[int] = field(default_factory=list)
    signal_ids: list[uuid.UUID] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    subscriber_id: uuid.UUID = uuid.UUID(int=0)

    def __post_init__(self) -> None:
        self._sorted: np.ndarray | None = None
        self._order: np.ndarray | None = None
        self._lut: np.ndarray | None = None
        self._holes = True

    def __len__(self) -> int:
        return len(self.indices)

    def _build(self) -> None:
        """Sorted keys for sparse indices; for the usual dense ones a look-up table too
        (built on first use: `decode_body` fills the lists after construction)."""
        keys = np.asarray(self.indices, dtype=np.int64)
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]
        self._lut = None
        if len(keys) and 0 <= keys.min() and keys.max() < 4 * len(keys) + 1024:
            self._lut = np.full(int(keys.max()) + 1, -1, dtype=np.int64)
            self._lut[keys] = np.arange(len(keys))
            self._holes = bool((self._lut < 0).any())

    @property
    def table(self) -> np.ndarray | None:
        """runtime index → entry position (-1: none) for dense caches, else None."""
        if self._sorted is None:
            self._build()
        return self._lut

    def covers(self, runtime: np.ndarray) -> bool:
        """True when every runtime index is in the cache. A cache of 0..n-1 without holes
        needs only the maximum, taken unsigned so that a negative index counts as huge: one
        pass, no look-up."""
        if not runtime.size:
            return True
        lut = self.table
        if lut is not None and not self._holes and runtime.dtype.kind in "iu":
            unsigned = runtime.view(runtime.dtype.str.replace("i", "u"))    # byte order kept
            return int(unsigned.max()) < len(lut)
        return bool((self.positions(runtime) >= 0).all())

    def positions(self, runtime: np.ndarray) -> np.ndarray:
        """Entry position of each runtime index, -1 where the cache has none (vectorised)."""
        lut = self.table
        assert self._order is not None and self._sorted is not None
        runtime = np.asarray(runtime)
        if lut is not None:                # the usual dense indices: one table look-up
            if runtime.size and 0 <= runtime.min() and runtime.max() < len(lut):
                return lut[runtime]
            inside = (runtime >= 0) & (runtime < len(lut))
            return np.where(inside, lut[np.where(inside, runtime, 0)], -1)
        runtime = runtime.astype(np.int64)
        if not len(self._sorted):
            return np.full(runtime.shape, -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted, runtime), len(self._sorted) - 1)
        return np.where(self._sorted[at] == runtime, self._order[at], -1)

    def signal_id(self, runtime: int) -> uuid.UUID | None:
        pos = int(self.positions(np.array([runtime]))[0])
        return self.signal_ids[pos] if pos >= 0 else None


def encode_body(cache: SignalIndexCache) -> bytes:
    """The uncompressed body; its binary length counts the whole body (spec §7)."""
    parts = [cache.subscriber_id.bytes, _U32.pack(len(cache))]
    for index, sid, source, key in zip(cache.indices, cache.signal_ids, cache.sources, cache.ids):
        text = source.encode("utf-8")
        parts.append(_ENTRY.pack(index, sid.bytes, len(text)) + text + struct.pack(">Q", key))
    body = b"".join(parts)
    return _U32.pack(len(body) + 4) + body


def encode_cache(cache: SignalIndexCache, slot: int | None = 0, compress: bool = True) -> bytes:
    """UpdateSignalIndexCache data: slot byte (None: protocol version 1, no byte) + body."""
    body = encode_body(cache)
    if compress:
        body = gzip.compress(body, compresslevel=6, mtime=0)
    return body if slot is None else bytes((slot,)) + body


def decode_cache(data: bytes, version: int = 2, offset: int = 0
                 ) -> tuple[int | None, SignalIndexCache]:
    """(slot, cache) of UpdateSignalIndexCache data. `offset`: stream offset of data[0]."""
    slot: int | None = 0
    if version > 1:
        if not data:
            raise ProtocolError("UpdateSignalIndexCache without its cache slot byte",
                                field="cache slot", offset=offset)
        slot = data[0] if data[0] in (0, 1) else None
        data, offset = data[1:], offset + 1
    if bytes(data[:2]) == GZIP_MAGIC:
        data = _gunzip(data, "signal index cache", offset)
        offset = -1                   # positions inside a gzip body are not stream offsets
    return slot, decode_body(data, offset)


def _gunzip(data: bytes, what: str, offset: int, limit: int = 256 << 20) -> bytes:
    try:
        d = zlib.decompressobj(wbits=31)
        out = d.decompress(bytes(data), limit)
        if d.unconsumed_tail:
            raise ProtocolError(f"{what} inflates beyond {limit} bytes", field=what,
                                offset=offset)
        if not d.eof:
            raise ProtocolError(f"{what}: gzip stream truncated", field=what, offset=offset)
        return out
    except zlib.error as exc:
        raise ProtocolError(f"{what}: bad gzip data ({exc})", field=what, offset=offset) from None


def decode_body(data: bytes, offset: int = 0) -> SignalIndexCache:
    """Parse an uncompressed cache body; errors name the field and (offset ≥ 0) where."""
    def where(pos: int) -> int | None:
        return offset + pos if offset >= 0 else None

    def need(pos: int, n: int, what: str) -> None:
        if pos + n > len(data):
            raise ProtocolError(f"signal index cache ends inside {what} ({len(data)} bytes)",
                                field=what, offset=where(pos))
    need(0, 24, "cache header")
    binary_length = _U32.unpack_from(data, 0)[0]
    if binary_length > len(data):
        raise ProtocolError(f"signal index cache says {binary_length} bytes, has {len(data)}",
                            field="binary length", offset=where(0))
    subscriber = uuid.UUID(bytes=bytes(data[4:20]))
    count = _U32.unpack_from(data, 20)[0]
    if count > min(MAX_ENTRIES, (len(data) - 24) // 32):
        raise ProtocolError(f"signal index cache claims {count} entries in {len(data)} bytes",
                            field="entry count", offset=where(20))
    cache = SignalIndexCache(subscriber_id=subscriber)
    pos = 24
    for _ in range(count):
        need(pos, _ENTRY.size, "cache entry")
        index, sid, size = _ENTRY.unpack_from(data, pos)
        pos += _ENTRY.size
        need(pos, size + 8, "cache entry source")
        try:
            source = bytes(data[pos:pos + size]).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("cache entry source is not UTF-8", field="cache entry source",
                                offset=where(pos)) from None
        pos += size
        cache.indices.append(index)
        cache.signal_ids.append(uuid.UUID(bytes=sid))
        cache.sources.append(source)
        cache.ids.append(struct.unpack_from(">Q", data, pos)[0])
        pos += 8
    if len(set(cache.indices)) != len(cache.indices):
        raise ProtocolError("signal index cache maps one runtime index twice",
                            field="runtime index", offset=where(24))
    return cache
