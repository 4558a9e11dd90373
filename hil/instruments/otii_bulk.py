"""A thin reader for bulk Otii recording data: analog channels fetched over a connection of our own.

The vendor client reads a reply by appending every 128 KiB piece to a string and splitting the
whole string again, then json.loads the ~400 kB line of a 40 000-value chunk into a list of
floats. This reader sends the very same `recording_get_channel_data` requests (same chunk size,
so the server sees nothing unusual) on its own connection to the same server, and:

- pipelines them: the next request goes out before the current reply is parsed (the server
  answers in order), so the server prepares a chunk while we parse the previous one;
- frames replies in one reused receive buffer (CRLF searched only in the new bytes);
- parses the reply without its values array (`otii_json.decode_values`), and the numbers of
  that array with `otii_json.parse_numbers` straight into their place in the result.

Only bulk data goes this way; every command still goes through the vendor client.
"""
from __future__ import annotations

import itertools
import math
import socket
from collections import deque
from typing import Any

import numpy as np

from hil.errors import ProtocolError
from hil.protocols import otii_json as oj

RECV_BYTES = 1 << 20
#: Requests in flight at once (1 = wait for each reply before sending the next request).
PIPELINE = 3
_ids = itertools.count(1)


class BulkReader:
    """Analog channel data of recordings on the Otii TCP server at host:port (lazy connect).

    Raises `otii_json.ErrorReply` for an error reply, ProtocolError for a malformed one and
    OSError/TimeoutError for transport failures; the caller wraps them. After any of those the
    connection is closed (a half-read reply would desynchronise it) and reopened on next use.

    `replies`: set it to a list and every reply line received (not the greeting) is appended to
    it: tests and benchmarks compare against exactly what came over the wire.
    """

    def __init__(self, host: str, port: int, timeout: float = 60.0,
                 chunk: int = oj.CHUNK_SIZE) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.chunk = chunk
        self.replies: list[bytes] | None = None
        self._sock: socket.socket | None = None
        self._buf = bytearray(RECV_BYTES)
        self._start = self._end = self._scan = 0    # unread bytes: _buf[_start:_end]
        self._lines: deque[bytes] = deque()

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _open(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._start = self._end = self._scan = 0
            self._lines.clear()
            greeting = oj.decode(self._line(), where=self.where)
            if greeting.get("type") == "error":
                self.close()
                raise oj.ErrorReply(greeting)
        return self._sock

    def _line(self) -> bytes:
        """The next CRLF-terminated line (without the CRLF), like the vendor client frames."""
        assert self._sock is not None
        while not self._lines:
            if self._end == len(self._buf):                 # full: compact, or grow
                if self._start:
                    unread = self._end - self._start
                    self._buf[:unread] = self._buf[self._start:self._end]
                    self._scan -= self._start
                    self._start, self._end = 0, unread
                else:
                    self._buf.extend(bytes(len(self._buf)))
            n = self._sock.recv_into(memoryview(self._buf)[self._end:])
            if n == 0:
                self.close()
                raise ConnectionResetError(f"Otii at {self.where} closed the connection")
            self._end += n
            while (cut := self._buf.find(oj.CRLF, self._scan, self._end)) >= 0:
                self._lines.append(bytes(self._buf[self._start:cut]))
                self._start = self._scan = cut + 2
            self._scan = max(self._start, self._end - 1)
            if self._start == self._end:
                self._start = self._end = self._scan = 0
        return self._lines.popleft()

    def _reply(self) -> bytes:
        """The next reply line (recorded in `replies` when that is a list)."""
        line = self._line()
        if self.replies is not None:
            self.replies.append(line)
        return line

    def request(self, cmd: str, data: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return the `data` of its reply."""
        sock = self._open()
        trans_id = f"hil-bulk-{next(_ids)}"
        try:
            sock.sendall(oj.encode(oj.request(cmd, data, trans_id)))
            return oj.check_reply(oj.decode(self._reply(), where=self.where), trans_id)
        except BaseException:
            self.close()
            raise

    def analog(self, recording_id: int, device_id: str, channel: str, count: int,
               index: int = 0) -> tuple[float, float, np.ndarray]:
        """(timestamp of the first value, interval, values) of `count` values from `index`,
        in chunks of `chunk` (40 000, like the vendor client), PIPELINE requests in flight."""
        out = np.empty(count, dtype=np.float64)
        chunks = [(start, min(self.chunk, count - start)) for start in range(0, count, self.chunk)]
        in_flight: deque[tuple[str, int, int]] = deque()
        timestamp, interval = 0.0, 0.0
        sock = self._open()

        def send(start: int, n: int) -> None:
            trans_id = f"hil-bulk-{next(_ids)}"
            sock.sendall(oj.encode(oj.request("recording_get_channel_data", {
                "device_id": device_id, "recording_id": recording_id, "channel": channel,
                "index": index + start, "count": n}, trans_id)))
            in_flight.append((trans_id, start, n))

        try:
            waiting = iter(chunks)
            for start, n in itertools.islice(waiting, PIPELINE):
                send(start, n)
            while in_flight:
                trans_id, start, n = in_flight.popleft()
                line = self._reply()
                for nxt in itertools.islice(waiting, 1):   # keep the server busy meanwhile
                    send(*nxt)
                data = self._values(line, trans_id, channel, out[start:start + n])
                if start == 0:
                    timestamp = _number(data, "timestamp", self.where)
                    interval = _number(data, "interval", self.where)
        except BaseException:
            self.close()                          # replies still in flight: start afresh
            raise
        return timestamp, interval, out

    def _values(self, line: bytes, trans_id: str, channel: str,
                dest: np.ndarray) -> dict[str, Any]:
        """Check one reply, put its values into `dest` (which they must fill exactly) and
        return its `data`."""
        msg, text = oj.decode_values(line, where=self.where)
        data = oj.check_reply(msg, trans_id)
        try:
            if text is not None:
                oj.parse_numbers(text, dest, field="values", where=self.where)
            else:                                 # values not where expected: read the list
                values = data.get("values")
                if not isinstance(values, list):
                    raise ProtocolError(f"no values list but {oj.json_type(values)}",
                                        field="values", where=self.where)
                got = oj.numbers_array(values, "values", self.where)
                if got.size != dest.size:
                    raise ProtocolError(f"{got.size} values", field="values", where=self.where)
                dest[...] = got
        except ProtocolError as exc:
            raise ProtocolError(f"Otii at {self.where} sent a bad {channel} chunk of "
                                f"{dest.size} values: {exc}", field="values",
                                where=self.where) from None
        return data

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._lines.clear()
        self._start = self._end = self._scan = 0
        if sock is not None:
            sock.close()


def _number(data: dict[str, Any], key: str, where: str) -> float:
    value = data.get(key)
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ProtocolError(f"Otii at {where} sent {key} {value!r}, not a number", field=key,
                            where=where)
    return float(value)
