"""TiA 1.0 server simulator: control, TCP/UDP data and server-state connections (spec §2, §8).

Each client gets its own control session, data connection and packet numbering. The master
signal paces packets in real time (times `speed`), or `realtime=False` sends as fast as the
socket takes them: runs of packets are encoded with numpy into one buffer and sent with one
`sendall`. Packet ids count the master's packets since server start (shared by all clients),
connection packet numbers count per data connection, timestamps are the µs (server time) of
each packet's first sample.

Faults for tests (`faults="drop@100x5,stall@200:0.5,drop@50/1000"`: kind@at[xcount][:seconds]
[/every], positions are connection packet numbers, `/every` repeats the fault every so many):
drop (packets not sent, numbers skipped), duplicate (sent twice), size (size field too big by 4),
version2 (an old-format packet instead), corrupt (random bytes instead), stall (pause), disconnect
(close the data connection). `master_first=True` writes the master's block first.
"""
from __future__ import annotations

import argparse
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from hil import clock
from hil.errors import ProtocolError, SimulatorError
from hil.protocols import tia_control as ctl
from hil.protocols.tia_metainfo import MetaInfo, encode_metainfo
from hil.protocols.tia_packets import Layout, encode_run, layout_for
from hil.sim.signals import stop_on_signals
from hil.sim.tia_signals import (SensorFn, SignalSpec, generate, metainfo, parse_signals,
                                 toggle_changes, toggle_value)

log = logging.getLogger(__name__)

FAULT_KINDS = ("drop", "duplicate", "size", "version2", "corrupt", "stall", "disconnect")
RUN_BYTES = 1 << 20          # default size of one encoded run (one sendall) in fast mode
MAX_SLEEP = 0.05             # the sender looks at its stop flags at least this often


@dataclass(frozen=True)
class Fault:
    """One injected fault at connection packet number `at` (drop: `count` packets)."""

    kind: str
    at: int
    count: int = 1
    seconds: float = 0.0
    every: int = 0           # repeat every so many packets (0: once)

    def starts(self, first: int, n: int) -> list[int]:
        """Packet numbers in [first - count, first + n) where this fault starts."""
        if not self.every:
            return [self.at]
        lo = max(0, -(-(first - self.count - self.at) // self.every))
        hi = (first + n - self.at) // self.every
        return [self.at + m * self.every for m in range(lo, hi + 1)]


def parse_faults(spec: str | list[dict[str, Any]] | None) -> list[Fault]:
    """Faults from `"kind@at[xcount][:seconds][/every],…"` or tables {kind, at, count, …}."""
    if not spec:
        return []
    out = []
    items = spec.split(",") if isinstance(spec, str) else spec
    for item in items:
        if isinstance(item, str):
            kind, _, rest = item.strip().partition("@")
            rest, _, every = rest.partition("/")
            rest, _, seconds = rest.partition(":")
            at, _, count = rest.partition("x")
            try:
                fault = Fault(kind, int(at), int(count or 1), float(seconds or 0.5),
                              int(every or 0))
            except ValueError:
                raise SimulatorError(f"TiA fault {item!r}: expected kind@at[xcount][:seconds]") from None
        else:
            try:
                fault = Fault(str(item["kind"]), int(item["at"]), int(item.get("count", 1)),
                              float(item.get("seconds", 0.5)), int(item.get("every", 0)))
            except KeyError as exc:
                raise SimulatorError(f"TiA fault table {item!r} lacks {exc.args[0]!r}") from None
            except (TypeError, ValueError, AttributeError) as exc:
                raise SimulatorError(f"TiA fault table {item!r}: {exc}") from None
        if fault.kind not in FAULT_KINDS:
            raise SimulatorError(f"TiA fault kind {fault.kind!r}: one of {', '.join(FAULT_KINDS)}")
        if fault.at < 0 or fault.count < 1 or fault.every < 0 or not 0 <= fault.seconds < 3600:
            raise SimulatorError(f"TiA fault {item!r}: at and every must be ≥ 0, count ≥ 1, "
                                 "seconds 0..3600")
        out.append(fault)
    return out


class TiaServer:
    """A TiA server on `host:port` (port 0: any free port) streaming the configured signals."""

    def __init__(self, signals: str | list[dict[str, Any]] | list[SignalSpec] = "eeg:8x4@500",
                 *, host: str = "127.0.0.1", port: int = 0, sample_order: str = "channel_major",
                 realtime: bool = True, speed: float = 1.0, seed: int = 1,
                 sensor: SensorFn | None = None, faults: str | list | None = None,
                 colon_space: bool = True, master_first: bool = False,
                 run_bytes: int = RUN_BYTES) -> None:
        """`run_bytes`: bytes per send in fast mode (smaller keeps pytia's client in sync)."""
        self.signals = (list(signals) if signals and isinstance(signals[0], SignalSpec)
                        else parse_signals(signals))             # type: ignore[arg-type]
        self.meta: MetaInfo = metainfo(self.signals)
        self.sample_order = sample_order
        self.realtime = realtime
        self.speed = speed
        self.seed = seed
        self.sensor = sensor
        self.faults = parse_faults(faults)
        self.colon_space = colon_space
        self.master_first = master_first
        self.run_bytes = run_bytes
        self.packet_rate = self.meta.packet_rate
        self.t0 = time.monotonic()
        self.t0_clock = clock.now()
        try:
            self._metainfo = encode_metainfo(self.meta)
        except ValueError as exc:        # a label XML cannot carry
            raise SimulatorError(f"TiA simulator: {exc}") from None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sessions: list[_Session] = []
        self._state_socks: list[socket.socket] = []
        self._state_listener: socket.socket | None = None
        self._template: dict[tuple[int, int], np.ndarray] = {}
        try:
            self._listener = socket.create_server((host, port))
        except OSError as exc:
            raise SimulatorError(f"TiA simulator cannot listen on {host}:{port}: {exc}") from None
        self.host, self.port = self._listener.getsockname()[:2]
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, name=f"tia-sim:{self.port}",
                                        daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def clients(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions if s.alive)

    def close(self) -> None:
        """Tell state listeners we shut down, then close every connection."""
        if self._closed.is_set():
            return
        self._closed.set()
        shutdown = ctl.encode(ctl.ControlMessage(ctl.SERVER_STATE_SHUTDOWN), space=self.colon_space)
        with self._lock:
            sessions, states = list(self._sessions), list(self._state_socks)
        for sock in states:
            _quiet(lambda: sock.sendall(shutdown))
            _quiet(sock.close)
        for listener in (self._listener, self._state_listener):
            if listener is not None:
                _quiet(lambda: listener.shutdown(socket.SHUT_RDWR))    # wakes accept() now
                _quiet(listener.close)
        for s in sessions:
            s.close()
        self._thread.join(timeout=2)
        for s in sessions:
            s.join(timeout=2)

    def __enter__(self) -> TiaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                session = _Session(self, conn)
            except OSError:         # the client left before we could look at it
                _quiet(conn.close)
                continue
            with self._lock:
                self._sessions = [s for s in self._sessions if s.alive] + [session]
            session.start()

    # ------------------------------------------------------------------ server state
    def state_port(self) -> int:
        """Port of the server-state connection (opened on first request)."""
        with self._lock:
            if self._state_listener is None:
                self._state_listener = socket.create_server((self.host, 0))
                self._state_listener.settimeout(0.2)
                threading.Thread(target=self._accept_state, daemon=True,
                                 name=f"tia-sim-state:{self.port}").start()
            return self._state_listener.getsockname()[1]

    def _accept_state(self) -> None:
        running = ctl.encode(ctl.ControlMessage(ctl.SERVER_STATE_RUNNING), space=self.colon_space)
        assert self._state_listener is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._state_listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._state_socks.append(conn)
            _quiet(lambda: conn.sendall(running))

    # ------------------------------------------------------------------ encoding
    def encode(self, ids: np.ndarray, numbers: np.ndarray) -> tuple[bytes | memoryview, np.ndarray]:
        """Packets for master packet indices `ids` with connection numbers `numbers`.

        Returns (bytes, offsets): packet i is bytes[offsets[i]:offsets[i+1]].
        """
        periodic = [s for s in self.signals if not s.aperiodic]
        aperiodic = [s for s in self.signals if s.aperiodic]
        n = len(ids)
        present = np.zeros(n, dtype=np.int64)       # OR of aperiodic flags sent with each packet
        for s in aperiodic:
            present |= np.where(toggle_changes(s, ids, self.packet_rate), s.info().flag, 0)
        if not present.any():
            layout = self._layout(0)
            run = self._run(layout, ids, numbers, periodic)
            return memoryview(run).cast("B"), np.arange(n + 1) * layout.size
        chunks, sizes = [], np.empty(n, dtype=np.int64)
        cuts = np.flatnonzero(np.diff(present)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, n]):
            extra = int(present[a])
            layout = self._layout(extra)
            sigs = periodic + [s for s in aperiodic if s.info().flag & extra]
            sigs.sort(key=lambda s: layout.order.index(s.info().flag))
            chunks.append(self._run(layout, ids[a:b], numbers[a:b], sigs).tobytes())
            sizes[a:b] = layout.size
        return b"".join(chunks), np.r_[0, np.cumsum(sizes)]

    def release_templates(self) -> None:
        """Forget the fast-mode templates of the calling (finishing) sender thread."""
        me = threading.get_ident()
        with self._lock:
            for key in [k for k in self._template if k[0] == me]:
                del self._template[key]

    def _layout(self, aperiodic_flags: int) -> Layout:
        flags = sum(s.info().flag for s in self.signals if not s.aperiodic) | aperiodic_flags
        return layout_for(self.meta, flags, sample_order=self.sample_order,
                          master_first=self.master_first)

    def _run(self, layout: Layout, ids: np.ndarray, numbers: np.ndarray,
             signals: list[SignalSpec]) -> np.ndarray:
        ts = (ids * (1e6 / self.packet_rate)).astype(np.uint64)
        if not self.realtime and not any(s.aperiodic for s in signals):
            return self._fast_run(layout, ids, numbers, ts, signals)
        by_flag = {s.info().flag: s for s in signals}
        data = [self._samples(by_flag[f], ids) for f in layout.order]
        return encode_run(layout, numbers, ts, data, ids)

    def _fast_run(self, layout: Layout, ids: np.ndarray, numbers: np.ndarray, ts: np.ndarray,
                  signals: list[SignalSpec]) -> np.ndarray:
        """Fast mode: the samples of one pre-encoded run repeat; only headers are rewritten.

        One template per sending thread, rewritten in place: sendall() has copied it before
        the next run is made."""
        key = (threading.get_ident(), len(ids))
        run = self._template.get(key)
        if run is None:
            by_flag = {s.info().flag: s for s in signals}
            first = np.arange(len(ids), dtype=np.uint64)
            data = [self._samples(by_flag[f], first) for f in layout.order]
            run = encode_run(layout, first, first, data)
            with self._lock:
                self._template[key] = run
        run["number"], run["id"], run["timestamp"] = numbers, ids, ts
        return run

    def _samples(self, spec: SignalSpec, ids: np.ndarray) -> np.ndarray:
        if spec.aperiodic:
            return np.tile(toggle_value(spec, ids, self.packet_rate), (spec.channels, 1))
        first = int(ids[0]) * spec.block
        return generate(spec, first, len(ids) * spec.block, seed=self.seed, sensor=self.sensor,
                        clock_of=lambda idx: self.t0_clock + idx / (spec.rate * self.speed))


class _Session(threading.Thread):
    """One client's control connection, and the data stream it asked for."""

    def __init__(self, server: TiaServer, conn: socket.socket) -> None:
        super().__init__(name=f"tia-sim-ctl:{server.port}", daemon=True)
        self.server = server
        self.conn = conn
        self.peer = conn.getpeername()[0]
        self.data: _DataStream | None = None
        self.alive = True

    def close(self) -> None:
        self.alive = False
        _quiet(lambda: self.conn.shutdown(socket.SHUT_RDWR))
        _quiet(self.conn.close)
        if self.data is not None:
            self.data.close()

    def run(self) -> None:
        """Answer each request in turn; a malformed one gets an Error reply naming what was
        wrong, then the connection is closed (its framing is lost). A client gone: session over."""
        parser = ctl.ControlParser()
        self.conn.settimeout(0.2)
        try:
            while self.alive and not self.server._closed.is_set():
                try:
                    chunk = self.conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                for msg in parser.messages(chunk):
                    self._send(self.handle(msg))
        except ProtocolError as exc:
            log.info("TiA simulator %s: closing the control connection of %s: %s",
                     self.server.address, self.peer, exc)
            reply = ctl.error(f"malformed request: {exc}")
            _quiet(lambda: self._send(reply))
        except OSError:
            pass        # the client went away (or stopped reading): its session ends here
        finally:
            self.close()

    def _send(self, reply: ctl.ControlMessage) -> None:
        self.conn.sendall(ctl.encode(reply, space=self.server.colon_space))

    def handle(self, msg: ctl.ControlMessage) -> ctl.ControlMessage:
        if msg.version != ctl.VERSION:
            return ctl.error(f"unsupported protocol version {msg.version!r}, this server speaks "
                             f"TiA {ctl.VERSION}")
        cmd = msg.command
        if cmd == ctl.CHECK_PROTOCOL_VERSION:
            return ctl.ok()
        if cmd == ctl.GET_METAINFO:
            return ctl.ControlMessage(ctl.METAINFO, body=self.server._metainfo)
        if cmd == ctl.GET_DATA_CONNECTION:
            transport = msg.argument.upper()
            if transport not in ("TCP", "UDP"):
                return ctl.error(f"unknown data connection type {msg.argument!r} (TCP or UDP)")
            if self.data is not None:
                return ctl.error("this control connection already has a data connection")
            try:
                self.data = _DataStream(self.server, transport, self.peer)
            except OSError as exc:
                return ctl.error(f"cannot open a {transport} data connection: {exc}")
            return ctl.ControlMessage(ctl.DATA_CONNECTION_PORT, str(self.data.port))
        if cmd == ctl.START_DATA_TRANSMISSION:
            if self.data is None:
                return ctl.error("no data connection: send GetDataConnection first")
            self.data.started.set()
            return ctl.ok()
        if cmd == ctl.STOP_DATA_TRANSMISSION:
            if self.data is not None:
                self.data.started.clear()
            return ctl.ok()
        if cmd == ctl.GET_SERVER_STATE_CONNECTION:
            return ctl.ControlMessage(ctl.SERVER_STATE_CONNECTION_PORT,
                                      str(self.server.state_port()))
        return ctl.error(f"unknown command {cmd!r}")


class _DataStream(threading.Thread):
    """The data connection of one client: accepts (TCP), then sends while `started` is set."""

    def __init__(self, server: TiaServer, transport: str, peer: str) -> None:
        super().__init__(name=f"tia-sim-data:{server.port}", daemon=True)
        self.server = server
        self.udp = transport == "UDP"
        self.started = threading.Event()
        self._closed = threading.Event()
        self.sock: socket.socket | None = None
        if self.udp:
            # libtia style: the reply names the port the client receives on; we pick a free one.
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind((server.host, 0))
            self.port = probe.getsockname()[1]
            probe.close()
            self.dest = (peer, self.port)
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.listener = None
        else:
            self.listener = socket.create_server((server.host, 0))
            self.listener.settimeout(0.2)
            self.port = self.listener.getsockname()[1]
        self.next_number = 0
        self.start()

    def close(self) -> None:
        self._closed.set()
        self.started.clear()
        for s in (self.listener, self.sock):
            if s is not None:
                if not self.udp:
                    _quiet(lambda: s.shutdown(socket.SHUT_RDWR))
                _quiet(s.close)

    @property
    def done(self) -> bool:
        return self._closed.is_set() or self.server._closed.is_set()

    def run(self) -> None:
        try:
            if self.listener is not None and not self._accept():
                return
            self._stream()
        except OSError:
            pass        # the client went away: its stream ends here
        finally:
            self.close()
            self.server.release_templates()

    def _accept(self) -> bool:
        assert self.listener is not None
        while not self.done:
            try:
                self.sock, _ = self.listener.accept()
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return True
            except TimeoutError:
                continue
        return False

    def _stream(self) -> None:
        srv = self.server
        size = srv._layout(0).size
        max_run = max(1, srv.run_bytes // size)
        origin: float | None = None
        sent_since_origin = 0
        id_offset = 0
        while not self.done:
            if not self.started.wait(MAX_SLEEP):
                origin = None
                continue
            now = time.monotonic()
            if origin is None:
                origin, sent_since_origin = now, 0
                global_index = int((now - srv.t0) * srv.packet_rate * srv.speed)
                # real time: ids count master packets since server start; fast: ids = numbers
                id_offset = global_index - self.next_number if srv.realtime else 0
            if srv.realtime:
                due = int((now - origin) * srv.packet_rate * srv.speed) + 1 - sent_since_origin
                if due <= 0:
                    wait = (sent_since_origin / (srv.packet_rate * srv.speed)) - (now - origin)
                    time.sleep(min(max(wait, 0.0005), MAX_SLEEP))
                    continue
                n = min(due, max_run)
            else:
                n = max_run
            numbers = np.arange(self.next_number, self.next_number + n, dtype=np.uint64)
            data, offsets = srv.encode(numbers + np.uint64(id_offset), numbers)
            if not self._send(data, offsets, self.next_number):
                return
            self.next_number += n
            sent_since_origin += n

    def _send(self, data: bytes | memoryview, offsets: np.ndarray, first: int) -> bool:
        """Send one run, applying the faults that fall in it; False when the stream must end."""
        for action, arg in _fault_plan(self.server.faults, first, len(offsets) - 1):
            if action == "packets":
                a, b = arg
                self._write(data, offsets, a, b)
            elif action == "stall":
                time.sleep(arg)
            elif action == "disconnect":
                return False
            else:
                self._datagram_or_send(_faulty(action, bytes(data[offsets[arg]:offsets[arg + 1]]),
                                               self.server.seed))
        return True

    def _write(self, data: bytes | memoryview, offsets: np.ndarray, a: int, b: int) -> None:
        assert self.sock is not None
        if not self.udp:
            self.sock.sendall(memoryview(data)[offsets[a]:offsets[b]])
            return
        view = memoryview(data)
        for i in range(a, b):
            self._datagram_or_send(view[offsets[i]:offsets[i + 1]])

    def _datagram_or_send(self, packet: bytes | memoryview) -> None:
        assert self.sock is not None
        if not self.udp:
            self.sock.sendall(packet)
            return
        try:
            self.sock.sendto(packet, self.dest)
        except (ConnectionRefusedError, BlockingIOError):
            pass    # nobody listening (yet), or the buffer is full: UDP loses it, as on a wire


def _fault_plan(faults: list[Fault], first: int, n: int) -> Iterator[tuple[str, Any]]:
    """What to send for packets `first … first+n-1`: ("packets", (a, b)) ranges of the run,
    fault actions in between."""
    hits: dict[int, list[Fault]] = {}
    skip = np.zeros(n, dtype=bool)
    for f in faults:
        for at in f.starts(first, n):
            if f.kind == "drop":
                lo, hi = max(at, first) - first, min(at + f.count, first + n) - first
                if lo < hi:
                    skip[lo:hi] = True
            elif first <= at < first + n:
                hits.setdefault(at - first, []).append(f)
    if not hits and not skip.any():
        yield "packets", (0, n)
        return
    a = 0                                   # first packet of the pending normal range
    for i in sorted(set(hits) | set(np.flatnonzero(skip).tolist())):
        if a < i:
            yield "packets", (a, i)
        if skip[i]:
            a = i + 1
            continue
        replaced = False
        for f in hits[i]:
            if f.kind in ("stall", "disconnect"):
                yield f.kind, f.seconds
            elif f.kind == "duplicate":
                yield "packets", (i, i + 1)     # an extra copy; the packet itself follows
            else:
                yield f.kind, i
                replaced = True
        a = i + 1 if replaced else i
    if a < n:
        yield "packets", (a, n)


def _faulty(kind: str, packet: bytes, seed: int) -> bytes:
    """A damaged copy of one packet's bytes."""
    raw = bytearray(packet)
    if kind == "size":
        struct.pack_into("<I", raw, 1, len(raw) + 4)
    elif kind == "corrupt":
        raw[:] = np.random.default_rng(seed).integers(0, 256, len(raw), dtype=np.uint8).tobytes()
        raw[0] = 0xA5       # never a valid version byte, so a receiver must notice
    elif kind == "version2":
        # old format: flags word first with the version in its top bits, no per-type header
        _, _, flags, pid, number, ts = struct.unpack_from("<BIIQQQ", raw)
        nos = bin(flags).count("1")
        raw = bytearray(struct.pack("<IQQQ", flags | (2 << 24), pid, number, ts)
                        + bytes(raw[33 + 4 * nos:]))
    return bytes(raw)


def _quiet(fn: Any) -> None:
    try:
        fn()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """`hil sim tia`: run the simulator until interrupted."""
    p = argparse.ArgumentParser(prog="hil sim tia", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=38500, help="control port (0: any free port)")
    p.add_argument("--signals", default="eeg:8x4@500/sine,emg:2x4@500/noise",
                   help="TYPE:CHANNELSxBLOCK@RATE[/SOURCE][*],… (default %(default)s)")
    p.add_argument("--fast", action="store_true", help="send as fast as possible, not in real time")
    p.add_argument("--speed", type=float, default=1.0, help="real-time speed-up factor")
    p.add_argument("--sample-order", choices=("channel_major", "sample_major"),
                   default="channel_major")
    p.add_argument("--faults", default="", help="kind@at[xcount][:seconds],…")
    p.add_argument("--no-space", action="store_true", help="reply 'Name:value' without a space")
    p.add_argument("--master-first", action="store_true", help="master block first (deviation)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--run-bytes", type=int, default=RUN_BYTES,
                   help="fast mode: bytes per send (default %(default)s)")
    args = p.parse_args(argv)
    try:
        server = TiaServer(args.signals, host=args.host, port=args.port,
                           sample_order=args.sample_order, realtime=not args.fast,
                           speed=args.speed, seed=args.seed, faults=args.faults,
                           colon_space=not args.no_space, master_first=args.master_first,
                           run_bytes=args.run_bytes)
    except SimulatorError as exc:
        print(f"hil sim tia: {exc}", file=sys.stderr)
        return 2
    sigs = ", ".join(f"{s.type} {s.channels}x{s.block}@{s.rate:g}" for s in server.signals)
    try:
        with stop_on_signals() as stop:      # before saying where: a stop may come at once
            print(f"TiA simulator listening on {server.address} ({sigs})", flush=True)
            stop.wait()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
