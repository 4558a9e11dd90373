"""TiA 1.0 client: control connection, a fast data reader, captures as numpy (spec §2, §5, §7).

`TiaClient(host, port)` checks the protocol version, reads the meta-info and opens its data
connection (TCP, or UDP where loss shows as gaps in the connection packet numbers).
`capture(seconds=… | packets=…)` returns a `StreamCapture`; `blocks()` yields the stream chunk
by chunk for long runs. The reader `recv_into`s a large preallocated buffer and decodes whole
runs of packets at once (`StreamDecoder`), so cost is per chunk, not per packet.

Every wait has a timeout. A server that goes away mid-stream raises `ConnectionLost` naming
host:port and what had arrived; a malformed reply or packet raises `ProtocolError` naming the
field, host:port and connection, and the byte offset in that connection's stream (a malformed
packet, with `resync=True`, is skipped and counted instead). After a malformed packet the stream
has no framing: `stop()` still works, reading the stream again raises the same error.
"""
from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hil import clock
from hil.errors import (BusTimeout, ConnectionLost, InstrumentConnectError, InstrumentError,
                        ProtocolError)
from hil.instruments.stream_capture import SignalData, StreamCapture
from hil.progress import track
from hil.protocols import tia_control as ctl
from hil.protocols.tia_metainfo import MetaInfo, decode_metainfo
from hil.protocols.tia_packets import Run, StreamDecoder, count_gaps
from hil.timeout import Deadline

DEFAULT_PORT = 38500
READ_SIZE = 512 << 10        # bytes asked of one recv_into: ≥ 64 KiB (cost is per call), small
                             # enough that buffer and decoded blocks stay in the CPU cache
BUFFER_SIZE = 2 << 20        # receive buffer; grows if one packet is bigger
DRAIN_QUIET = 0.1            # after StopDataTransmission: the stream is over after this silence
UDP_BURST = 512              # datagrams read before decoding


@dataclass
class Block:
    """Packets decoded from one read: counters per packet, samples per signal.

    `counts[name][i]` is how many sample columns packet i carried for that signal.
    """

    numbers: np.ndarray
    timestamps: np.ndarray       # seconds, the sender's clock
    arrival: np.ndarray          # hil.clock.now() of the read that completed each packet
    samples: dict[str, np.ndarray]
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.numbers)

    def split(self, k: int) -> tuple[Block, Block]:
        """The first k packets and the rest."""
        cols = {name: int(c[:k].sum()) for name, c in self.counts.items()}
        head = Block(self.numbers[:k], self.timestamps[:k], self.arrival[:k],
                     {n: s[:, :cols[n]] for n, s in self.samples.items()},
                     {n: c[:k] for n, c in self.counts.items()})
        tail = Block(self.numbers[k:], self.timestamps[k:], self.arrival[k:],
                     {n: s[:, cols[n]:] for n, s in self.samples.items()},
                     {n: c[k:] for n, c in self.counts.items()})
        return head, tail


def _block_from_runs(runs: list[Run], meta: MetaInfo, arrival: float) -> Block:
    numbers = np.concatenate([r.numbers for r in runs]) if len(runs) > 1 else runs[0].numbers
    stamps = np.concatenate([r.timestamps_us for r in runs]) if len(runs) > 1 \
        else runs[0].timestamps_us
    samples: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for s in meta.signals:
        parts, cnt = [], []
        for r in runs:
            got = r.samples.get(s.type)
            if got is None:
                cnt.append(np.zeros(r.count, dtype=np.int64))
            else:
                parts.append(got)
                cnt.append(np.full(r.count, got.shape[1] // max(r.count, 1), dtype=np.int64))
        samples[s.type] = (parts[0] if len(parts) == 1 else
                           np.concatenate(parts, axis=1) if parts else
                           np.zeros((s.num_channels, 0), dtype=np.float32))
        counts[s.type] = cnt[0] if len(cnt) == 1 else np.concatenate(cnt)
    return Block(numbers, stamps * 1e-6, np.full(len(numbers), arrival), samples, counts)


class TiaClient:
    """One TiA server: its meta-info, one data connection, captures of its stream."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, *, transport: str = "tcp",
                 sample_order: str = "channel_major", timeout: float = 5.0,
                 master_first: bool = False, resync: bool = False,
                 rate_per_block: bool = False, source: str | None = None) -> None:
        """`master_first`: accept servers that put the master's block first (pytia).
        `rate_per_block`: the server's samplingRate counts blocks, not samples (pytia); the
        nominal rate is then samplingRate × blockSize. `resync`: skip malformed packets.
        `source`: the captures' name (measurement prefix); default tia://host:port."""
        self.host, self.port = host, port
        self.transport = transport.lower()
        if self.transport not in ("tcp", "udp"):
            raise ValueError(f"transport is 'tcp' or 'udp', got {transport!r}")
        self.timeout = timeout
        self.rate_per_block = rate_per_block
        self.source = source or f"tia://{host}:{port}"
        self.streaming = False
        self.lost_packets = 0           # over the whole connection
        self.duplicates = 0
        self.where = f"{host}:{port}"
        self._ctl_where = f"{self.where} control connection"
        self._ctl = self._connect(host, port)
        self._parser = ctl.ControlParser()
        self._replies: list[ctl.ControlMessage] = []
        self._data: socket.socket | None = None
        try:
            self.command(ctl.CHECK_PROTOCOL_VERSION)
            meta = self.command(ctl.GET_METAINFO, expect=ctl.METAINFO)
            try:
                self.meta: MetaInfo = decode_metainfo(meta.body, meta.body_offset)
            except ProtocolError as exc:
                raise exc.at(self._ctl_where)
            self.decoder = StreamDecoder(self.meta, sample_order=sample_order,
                                         master_first=master_first, resync=resync)
            reply = self.command(ctl.GET_DATA_CONNECTION, self.transport.upper(),
                                 expect=ctl.DATA_CONNECTION_PORT)
            self.data_port = self._port(reply)
            self._data = self._open_data(self.data_port)
        except BaseException:
            self._close_sockets()
            raise
        self._buf = bytearray(BUFFER_SIZE)
        self._start = self._end = 0
        self._received = 0              # data bytes received on this connection
        self._last_number: int | None = None
        self._pending: Block | None = None
        self._broken: ProtocolError | None = None     # the data stream lost its framing
        self._data_where = (f"{self.where} data connection on {self.transport.upper()} port "
                            f"{self.data_port}")

    # ---------------------------------------------------------------- connections
    def _connect(self, host: str, port: int) -> socket.socket:
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except OSError as exc:
            raise InstrumentConnectError(f"cannot reach TiA server {host}:{port}: "
                                         f"{exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _open_data(self, port: int) -> socket.socket:
        if self.transport == "tcp":
            sock = self._connect(self.host, port)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            try:
                sock.bind(("", port))
            except OSError as exc:
                sock.close()
                raise InstrumentConnectError(f"cannot receive TiA UDP data on port {port} from "
                                             f"{self.host}:{self.port}: {exc.strerror}") from None
        sock.settimeout(self.timeout)
        return sock

    def _port(self, reply: ctl.ControlMessage) -> int:
        """The port a reply names: ASCII digits ('²'.isdigit() is true too), 1..65535."""
        text = reply.argument
        if not (text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536):
            raise ProtocolError(f"TiA server {self.where} replied port {text[:40]!r}, not "
                                "1..65535", field=reply.command, where=self._ctl_where,
                                offset=reply.offset)
        return int(text)

    def command(self, name: str, argument: str = "", expect: str = ctl.OK) -> ctl.ControlMessage:
        """Send one request and wait (timeout) for its reply; Error replies raise."""
        where = f"{self.host}:{self.port}"
        try:
            self._ctl.sendall(ctl.encode(ctl.request(name, argument)))
        except OSError as exc:
            raise ConnectionLost(f"TiA server {where}: cannot send {name}: {exc}") from None
        reply = self._reply(name)
        if reply.is_error:
            raise InstrumentError(f"TiA server {where} refused {name}: "
                                  f"{reply.error_description()}")
        if reply.command != expect:
            raise ProtocolError(f"TiA server {where} answered {name} with {reply.command[:40]!r}, "
                                f"expected {expect!r}", field="status line",
                                where=self._ctl_where, offset=reply.offset)
        return reply

    def _reply(self, name: str) -> ctl.ControlMessage:
        deadline = Deadline(self.timeout)
        where = f"{self.host}:{self.port}"
        while not self._replies:
            self._collect(b"")          # a malformed reply behind the last one raises now
            self._ctl.settimeout(max(deadline.remaining, 0.001))
            try:
                chunk = self._ctl.recv(65536)
            except TimeoutError:
                raise BusTimeout(f"TiA server {where} did not answer {name} within "
                                 f"{self.timeout} s", tail=bytes(self._parser._buf[-200:])) from None
            except OSError as exc:
                raise ConnectionLost(f"TiA server {where} dropped the control connection "
                                     f"awaiting the reply to {name}: {exc}") from None
            if not chunk:
                raise ConnectionLost(f"TiA server {where} closed the control connection "
                                     f"instead of answering {name}")
            self._collect(chunk)
        return self._replies.pop(0)

    def _collect(self, chunk: bytes) -> None:
        """Parse replies; a malformed one raises once the good ones before it are taken."""
        try:
            for reply in self._parser.messages(chunk):
                self._replies.append(reply)
        except ProtocolError as exc:
            if not self._replies:
                raise exc.at(self._ctl_where)

    # ---------------------------------------------------------------- start / stop
    def start(self) -> None:
        """StartDataTransmission; the stream then runs until `stop()`."""
        if not self.streaming:
            self.command(ctl.START_DATA_TRANSMISSION)
            self.streaming = True

    def stop(self) -> None:
        """StopDataTransmission, then read what was already in flight (kept for the next read)."""
        if not self.streaming:
            return
        self.streaming = False
        self.command(ctl.STOP_DATA_TRANSMISSION)
        self._drain()

    def _drain(self) -> None:
        """Read until the stream is quiet; decoded packets are discarded (counters kept).

        A stream that lost its framing is only read, not decoded: its error was raised."""
        assert self._data is not None
        self._data.settimeout(DRAIN_QUIET)
        try:
            while True:
                try:
                    if self._read() == 0:
                        break
                except (TimeoutError, BlockingIOError):
                    break
                except OSError:
                    break
                if self._broken is not None:
                    self._start = self._end
                    continue
                try:
                    for _ in self._decode():
                        pass
                except ProtocolError:
                    self._start = self._end     # raised by the next read of the stream
        finally:
            self._data.settimeout(self.timeout)
            self._pending = None

    def server_state(self, timeout: float | None = None) -> list[str]:
        """Open the server-state connection and return the state messages sent at once."""
        reply = self.command(ctl.GET_SERVER_STATE_CONNECTION,
                             expect=ctl.SERVER_STATE_CONNECTION_PORT)
        port = self._port(reply)
        sock = self._connect(self.host, port)
        parser, states = ctl.ControlParser(), []
        sock.settimeout(timeout or min(self.timeout, 0.5))
        try:
            while not states:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                states += [m.command for m in parser.feed(chunk)]
        except TimeoutError:
            pass
        except OSError as exc:
            raise ConnectionLost(f"TiA server {self.where} dropped the server-state connection "
                                 f"(port {port}): {exc}") from None
        except ProtocolError as exc:
            raise exc.at(f"{self.where} server-state connection (port {port})")
        finally:
            sock.close()
        return states

    # ---------------------------------------------------------------- reading
    def _read(self) -> int:
        """One read into the buffer (TCP: up to READ_SIZE; UDP: a burst of datagrams)."""
        assert self._data is not None
        buf = self._buf
        if len(buf) - self._end < READ_SIZE:
            tail = self._end - self._start
            buf[:tail] = buf[self._start:self._end]
            self._start, self._end = 0, tail
            if len(buf) - tail < READ_SIZE:
                buf.extend(bytes(READ_SIZE))
        view = memoryview(buf)
        if self.transport == "tcp":
            n = self._data.recv_into(view[self._end:self._end + READ_SIZE])
            self._end += n
            self._received += n
            return n
        return self._read_udp(view)

    def _read_udp(self, view: memoryview) -> int:
        assert self._data is not None
        total = self._data.recv_into(view[self._end:])
        self._end += total
        self._data.setblocking(False)
        try:
            for _ in range(UDP_BURST):
                if len(view) - self._end < 65536:
                    break
                n = self._data.recv_into(view[self._end:])
                self._end += n
                total += n
        except BlockingIOError:
            pass
        finally:
            self._data.settimeout(self.timeout)
        self._received += total
        return total if total else 1     # an empty datagram is not the end of a UDP stream

    def _decode(self) -> Iterator[Block]:
        if self._broken is not None:
            raise self._broken
        kept = len(self.decoder.errors)
        try:
            runs, used = self.decoder.decode(memoryview(self._buf)[self._start:self._end])
        except ProtocolError as exc:
            self._broken = exc.at(self._data_where)
            raise self._broken from None
        finally:
            for skipped in self.decoder.errors[kept:]:
                skipped.at(self._data_where)
        self._start += used
        if not runs:
            return
        block = _block_from_runs(runs, self.meta, clock.now())
        lost, dup = count_gaps(block.numbers, self._last_number)
        self.lost_packets += lost
        self.duplicates += dup
        self._last_number = int(block.numbers[-1])
        yield block

    def _lost(self, what: str, packets: int) -> ConnectionLost:
        partial = self._end - self._start
        extra = (f", {partial} bytes of an unfinished packet from data stream offset "
                 f"{self._received - partial}" if partial else "")
        return ConnectionLost(f"TiA server {self.where} {what} after {packets} packets "
                              f"of this read ({self._received} data bytes on the connection"
                              f"{extra})")

    def blocks(self, seconds: float | None = None, packets: int | None = None) -> Iterator[Block]:
        """Yield decoded blocks until `seconds` have passed or `packets` arrived (or forever).

        Starts the stream if it is not running (and does not stop it: see `capture`).
        """
        self.start()
        deadline = Deadline(seconds) if seconds is not None else None
        got = 0
        while True:
            if self._pending is not None:
                block, self._pending = self._pending, None
            else:
                block = self._next_block(got)
                if block is None:
                    continue
            if packets is not None and got + len(block) >= packets:
                block, rest = block.split(packets - got)
                self._pending = rest if len(rest) else None
            got += len(block)
            if len(block):
                yield block
            if packets is not None and got >= packets:
                return
            if deadline is not None and deadline.expired:
                return

    def _next_block(self, got: int) -> Block | None:
        if self._broken is not None:
            raise self._broken
        try:
            n = self._read()
        except TimeoutError:
            raise BusTimeout(f"no TiA data from {self.where} for {self.timeout} s "
                             f"after {got} packets of this read ({self._received} data bytes "
                             "on the connection)",
                             tail=bytes(self._buf[max(self._start, self._end - 200):self._end])
                             ) from None
        except OSError as exc:
            raise self._lost(f"dropped the data connection ({exc})", got) from None
        if n == 0:
            raise self._lost("closed the data connection", got)
        for block in self._decode():
            return block
        return None

    def capture(self, seconds: float | None = None, packets: int | None = None) -> StreamCapture:
        """Record `seconds` of stream or `packets` packets into a StreamCapture.

        Starts the stream if needed and stops it again unless it was already running.
        """
        if seconds is None and packets is None:
            raise ValueError("capture() needs seconds= or packets=")
        was_streaming = self.streaming
        lost_before = self.lost_packets
        parts = []
        try:
            parts = list(track(self.blocks(seconds=seconds, packets=packets),
                               f"{self.source}: capturing", seconds, "packets"))
        finally:
            if not was_streaming:
                self.stop()
        return self._to_capture(parts, self.lost_packets - lost_before)

    def _to_capture(self, parts: list[Block], lost: int) -> StreamCapture:
        n = sum(len(b) for b in parts)
        signals = {}
        for s in self.meta.signals:
            counts = (np.concatenate([b.counts[s.type] for b in parts]) if parts
                      else np.zeros(0, dtype=np.int64))
            samples = (np.concatenate([b.samples[s.type] for b in parts], axis=1) if parts
                       else np.zeros((s.num_channels, 0), dtype=np.float32))
            regular = bool(np.all(counts == s.block_size)) and s.block_size >= 1
            index = None if regular else np.repeat(np.arange(n), counts)
            rate = s.sampling_rate * (s.block_size if self.rate_per_block else 1)
            signals[s.type] = SignalData(s.type, rate, list(s.channels), samples,
                                         block_size=max(s.block_size, 1), packet_index=index)

        def cat(attr: str, dtype: Any) -> np.ndarray:
            return (np.concatenate([getattr(b, attr) for b in parts]) if parts
                    else np.zeros(0, dtype=dtype))
        return StreamCapture(self.source, signals, cat("numbers", np.uint64),
                             cat("timestamps", np.float64), cat("arrival", np.float64), lost)

    # ---------------------------------------------------------------- teardown
    def safe_state(self) -> None:
        """Stop the stream (the instrument's safe state)."""
        try:
            self.stop()
        except (ConnectionLost, BusTimeout, OSError):
            self.streaming = False

    def close(self) -> None:
        """Stop the stream and disconnect."""
        try:
            self.safe_state()
        except InstrumentError:
            pass
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in (self._data, self._ctl):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass

    def __enter__(self) -> TiaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        sigs = ", ".join(f"{s.type} {s.num_channels}x{s.block_size}@{s.sampling_rate:g}"
                         for s in self.meta.signals)
        return f"TiaClient({self.source}, {self.transport}, {sigs})"
