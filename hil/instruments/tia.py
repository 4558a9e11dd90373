"""TiA 1.0 client: control connection, a fast data reader, captures as numpy (spec §2, §5, §7).

`TiaClient(host, port)` checks the protocol version, reads the meta-info and opens its data
connection (TCP, or UDP where loss shows as gaps in the connection packet numbers).
`capture(seconds=… | packets=…)` returns a `StreamCapture`; `blocks()` yields the stream chunk
by chunk for long runs. The reader `recv_into`s a large preallocated buffer and decodes whole
runs of packets at once (`StreamDecoder`), so cost is per chunk, not per packet.

Every wait has a timeout. A server that goes away mid-stream raises `ConnectionLost` naming
host:port and what had arrived; a malformed packet raises `ProtocolError` (or, with
`resync=True`, is skipped and counted).
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
from hil.protocols import tia_control as ctl
from hil.protocols.tia_metainfo import MetaInfo, decode_metainfo
from hil.protocols.tia_packets import Run, StreamDecoder, count_gaps
from hil.rig import Key, RigKind
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
        self._ctl = self._connect(host, port)
        self._parser = ctl.ControlParser()
        self._replies: list[ctl.ControlMessage] = []
        self._data: socket.socket | None = None
        try:
            self.command(ctl.CHECK_PROTOCOL_VERSION)
            meta = self.command(ctl.GET_METAINFO, expect=ctl.METAINFO)
            self.meta: MetaInfo = decode_metainfo(meta.body)
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
        if not reply.argument.isdigit() or not 0 < int(reply.argument) < 65536:
            raise ProtocolError(f"TiA server {self.host}:{self.port} replied port "
                                f"{reply.argument!r}", field=reply.command,
                                where=f"{self.host}:{self.port}")
        return int(reply.argument)

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
            raise ProtocolError(f"TiA server {where} answered {name} with {reply.command!r}, "
                                f"expected {expect!r}", field="status line", where=where)
        return reply

    def _reply(self, name: str) -> ctl.ControlMessage:
        deadline = Deadline(self.timeout)
        where = f"{self.host}:{self.port}"
        while not self._replies:
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
            self._replies.extend(self._parser.feed(chunk))
        return self._replies.pop(0)

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
        """Read until the stream is quiet; decoded packets are discarded (counters kept)."""
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
                for _ in self._decode():
                    pass
        finally:
            self._data.settimeout(self.timeout)
            self._pending = None

    def server_state(self, timeout: float | None = None) -> list[str]:
        """Open the server-state connection and return the state messages sent at once."""
        reply = self.command(ctl.GET_SERVER_STATE_CONNECTION,
                             expect=ctl.SERVER_STATE_CONNECTION_PORT)
        sock = self._connect(self.host, self._port(reply))
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
        runs, used = self.decoder.decode(memoryview(self._buf)[self._start:self._end])
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
        extra = f", {partial} bytes of an unfinished packet" if partial else ""
        return ConnectionLost(f"TiA server {self.host}:{self.port} {what} after {packets} packets "
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
        try:
            n = self._read()
        except TimeoutError:
            raise BusTimeout(f"no TiA data from {self.host}:{self.port} for {self.timeout} s "
                             f"after {got} packets of this read ({self._received} data bytes "
                             "on the connection)") from None
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
            parts = list(self.blocks(seconds=seconds, packets=packets))
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


# -------------------------------------------------------------------- rig kind
DEFAULT_SIM_SIGNALS = "eeg:8x4@500/sine,emg:2x4@500/noise,sensors:5x1@125/dut"


def open_rig(resource: Any, bench: Any) -> TiaClient:
    """Open a `kind = "tia"` table; `host = "sim"` starts the simulator on the virtual bench."""
    host, port = resource["host"], resource["port"]
    if host == "sim" or host.startswith("sim:"):
        from hil.sim.tia_server import TiaServer   # the rig layer may start simulators
        key = "tia:" + (host[4:] or resource.name)

        def factory() -> TiaServer:
            return TiaServer(resource["signals"], sample_order=resource["sample_order"],
                             realtime=resource["realtime"],
                             speed=resource["speed"] * getattr(bench, "speed", 1.0),
                             seed=getattr(bench, "seed", 1),
                             sensor=lambda name, t: bench.dut.sensor(name, t),
                             faults=resource["faults"] or None)
        try:
            server = bench.start(key, factory)
        except Exception as exc:
            raise resource.error(f"cannot start the TiA simulator: {exc}", key="signals") from None
        host, port = server.host, server.port
    return TiaClient(host, port, transport=resource["transport"],
                     sample_order=resource["sample_order"], timeout=resource["timeout"],
                     master_first=resource["master_first"], resync=resource["resync"],
                     rate_per_block=resource["rate_per_block"], source=resource.name)


RIG_KIND = RigKind(
    keys={
        "host": Key(str, help='TiA server host, or "sim" for the simulator'),
        "port": Key(int, DEFAULT_PORT, help="control port (ignored for sim)"),
        "transport": Key(str, "tcp", choices=("tcp", "udp"), help="data connection"),
        "sample_order": Key(str, "channel_major", choices=("channel_major", "sample_major"),
                            help="order of samples in a block (spec §5.4)"),
        "timeout": Key(float, 5.0, help="seconds any one wait may take"),
        "master_first": Key(bool, False, help="accept the master's block first (pytia)"),
        "resync": Key(bool, False, help="skip malformed packets instead of failing"),
        "rate_per_block": Key(bool, False, help="samplingRate counts blocks (pytia)"),
        "signals": Key((str, list), DEFAULT_SIM_SIGNALS,
                       help="sim: TYPE:CHANNELSxBLOCK@RATE[/SOURCE][*],… or a list of tables"),
        "realtime": Key(bool, True, help="sim: pace packets in real time (false: flat out)"),
        "speed": Key(float, 1.0, help="sim: real-time speed-up"),
        "faults": Key(str, "", help="sim: kind@at[xcount][:seconds][/every],…"),
    },
    open=open_rig,
    help="TiA 1.0 stream client (TOBI Interface A)",
)
