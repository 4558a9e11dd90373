"""A thin reader for bulk Otii recording data: analog channels fetched over a connection of our own.

The vendor client reads a reply by appending every 128 KiB piece to a string and splitting the
whole string again, which for the ~400 kB lines of a 40 000-value chunk costs about half as much
again as parsing them. This reader sends the very same `recording_get_channel_data` requests
(same chunk size, so the server sees nothing unusual) on its own connection to the same server,
frames replies with the shared codec (linear in the bytes received), and converts each chunk to
numpy once. Only bulk data goes this way; every command still goes through the vendor client.
"""
from __future__ import annotations

import itertools
import json
import socket
from typing import Any

import numpy as np

from hil.errors import ProtocolError
from hil.protocols import otii_json as oj

RECV_BYTES = 1 << 20
_ids = itertools.count(1)


class BulkReader:
    """Analog channel data of recordings on the Otii TCP server at host:port (lazy connect).

    Raises `otii_json.ErrorReply` for an error reply, ProtocolError for a malformed one and
    OSError/TimeoutError for transport failures; the caller wraps them.
    """

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._sock: socket.socket | None = None
        self._split = oj.CrlfSplitter()
        self._buf = bytearray(RECV_BYTES)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _open(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock, self._split = sock, oj.CrlfSplitter()
            greeting = oj.decode(self._line(), where=self.where)
            if greeting.get("type") == "error":
                self.close()
                raise oj.ErrorReply(greeting)
        return self._sock

    def _line(self) -> bytes:
        assert self._sock is not None
        view = memoryview(self._buf)
        while True:
            n = self._sock.recv_into(view)
            if n == 0:
                self.close()
                raise ConnectionResetError(f"Otii at {self.where} closed the connection")
            lines = self._split.feed(view[:n])
            if lines:
                if len(lines) > 1:
                    raise ProtocolError(f"Otii at {self.where} sent {len(lines)} replies to one "
                                        f"request", where=self.where)
                return lines[0]

    def request(self, cmd: str, data: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return the `data` of its reply."""
        sock = self._open()
        trans_id = f"hil-bulk-{next(_ids)}"
        try:
            sock.sendall(oj.encode(oj.request(cmd, data, trans_id)))
            line = self._line()
            return oj.check_reply(_loads(line, self.where), trans_id)
        except BaseException:
            self.close()          # a half-read reply would desynchronise the connection
            raise

    def analog(self, recording_id: int, device_id: str, channel: str, count: int,
               index: int = 0) -> tuple[float, float, np.ndarray]:
        """(timestamp of the first value, interval, values) of `count` values from `index`,
        in chunks of 40 000 like the vendor client."""
        out = np.empty(count, dtype=np.float64)
        timestamp, interval = 0.0, 0.0
        for k, start in enumerate(range(0, count, oj.CHUNK_SIZE)):
            n = min(oj.CHUNK_SIZE, count - start)
            data = self.request("recording_get_channel_data", {
                "device_id": device_id, "recording_id": recording_id, "channel": channel,
                "index": index + start, "count": n})
            values = data.get("values")
            if not isinstance(values, list) or len(values) != n:
                got = len(values) if isinstance(values, list) else type(values).__name__
                raise ProtocolError(f"Otii at {self.where} sent {got} {channel} values for a "
                                    f"chunk of {n}", field="values", where=self.where)
            out[start:start + n] = values
            if k == 0:
                timestamp, interval = float(data["timestamp"]), float(data["interval"])
        return timestamp, interval, out

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _loads(line: bytes, where: str) -> dict[str, Any]:
    try:
        msg = json.loads(line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return oj.decode(line, where=where)     # raises the ProtocolError with the details
    if not isinstance(msg, dict):
        raise ProtocolError(f"Otii at {where} sent JSON that is not an object", where=where)
    return msg
