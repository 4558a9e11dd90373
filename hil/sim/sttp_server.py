"""STTP publisher simulator (IEEE 2664 subset, spec §4–§8): metadata, filter expressions,
compact data packets at a frame rate or as fast as the socket takes them, several subscribers.

Each subscriber gets its own session: DefineOperationalModes first, MetadataRefresh (gzip'd
exactly when asked, spec §3), Subscribe with a brace-aware connection string and the filter
subset of `sttp_filter`, a signal index cache in slot 0 then alternating, and frames of
compact records (count always present, full Ticks) built in place with numpy, one packet per
frame. TSSC requests are answered with compact packets: subscribers dispatch on packet flags.

Faults for tests (`faults="drop@30x2/100,corrupt@50"`: kind@at[xcount][:seconds][/every];
positions are frame numbers of the subscription): drop (frames not sent), duplicate (sent
twice), corrupt (data replaced by random bytes, flags byte 0), stall (pause), disconnect (close
the connection), length (the outer length claims 64 bytes more), unknown (a record with a
runtime index that is not in the signal index cache).
"""
from __future__ import annotations

import argparse
import logging
import math
import select
import socket
import ssl
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from hil import clock
from hil.errors import ProtocolError, SimulatorError
from hil.protocols import sttp_frames as fr
from hil.protocols.sttp_cache import SignalIndexCache, encode_cache
from hil.protocols.sttp_compact import RECORD
from hil.protocols.sttp_frames import Command, OperationalModes, PacketFlags, Response
from hil.protocols.sttp_metadata import encode_metadata
from hil.protocols.sttp_ticks import from_unix
from hil.sim.signals import stop_on_signals
from hil.sim.sttp_filter import select as filter_rows
from hil.sim.sttp_points import PointSet, make_points

log = logging.getLogger(__name__)

DEFAULT_PORT = 7165
FAULT_KINDS = ("drop", "duplicate", "corrupt", "stall", "disconnect", "length", "unknown")
BATCH_BYTES = 1 << 20        # fast mode: bytes of frames per sendall
CYCLE_VALUES = 2 << 20       # fast mode: values of one repeating cycle kept as frames (17 B each)
POLL = 0.05                  # threads look at their stop flags at least this often
KEEPALIVE = 5.0              # NoOP after this much silence on a connection


@dataclass(frozen=True)
class Fault:
    """One injected fault at frame number `at` (drop: `count` frames), repeated `every`."""

    kind: str
    at: int
    count: int = 1
    seconds: float = 0.5
    every: int = 0

    def hits(self, frame: int) -> bool:
        rel = frame - self.at
        if rel < 0:
            return False
        if self.every:
            rel %= self.every
        return rel < (self.count if self.kind == "drop" else 1)


def parse_faults(spec: str | list[dict[str, Any]] | None) -> list[Fault]:
    """Faults from `"kind@at[xcount][:seconds][/every],…"` or tables {kind, at, count, …}."""
    if not spec:
        return []
    out = []
    for item in (spec.split(",") if isinstance(spec, str) else spec):
        try:
            if isinstance(item, str):
                kind, _, rest = item.strip().partition("@")
                rest, _, every = rest.partition("/")
                rest, _, seconds = rest.partition(":")
                at, _, count = rest.partition("x")
                fault = Fault(kind, int(at), int(count or 1), float(seconds or 0.5),
                              int(every or 0))
            else:
                fault = Fault(str(item["kind"]), int(item["at"]), int(item.get("count", 1)),
                              float(item.get("seconds", 0.5)), int(item.get("every", 0)))
        except (ValueError, KeyError, TypeError):
            raise SimulatorError(f"STTP fault {item!r}: expected kind@at[xcount][:seconds]"
                                 "[/every]") from None
        if fault.kind not in FAULT_KINDS:
            raise SimulatorError(f"STTP fault kind {fault.kind!r}: one of "
                                 f"{', '.join(FAULT_KINDS)}")
        if fault.at < 0 or fault.count < 1 or fault.every < 0 or not math.isfinite(fault.seconds):
            raise SimulatorError(f"STTP fault {item!r}: at >= 0, count >= 1, every >= 0")
        out.append(fault)
    return out


class SttpServer:
    """An STTP publisher on `host:port` (port 0: any free port)."""

    def __init__(self, points: int | PointSet = 100, *, rate: float = 30.0,
                 host: str = "127.0.0.1", port: int = 0, nominal: float = 50.0,
                 realtime: bool = True, seed: int = 1, faults: str | list | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None,
                 keepalive: float = KEEPALIVE, batch_bytes: int = BATCH_BYTES) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise SimulatorError(f"STTP simulator rate must be > 0 Hz, got {rate!r}")
        if isinstance(points, int) and not 1 <= points <= 1_000_000:
            raise SimulatorError(f"STTP simulator points must be 1..1000000, got {points}")
        self.points = (points if isinstance(points, PointSet)
                       else make_points(points, nominal=nominal, rate=rate, seed=seed))
        self.rate, self.realtime, self.seed = rate, realtime, seed
        self.faults = parse_faults(faults)
        self.keepalive, self.batch_bytes = keepalive, batch_bytes
        self.rows = self.points.rows()
        self.origin = math.floor(clock.now())          # value functions count from here
        self._tls: ssl.SSLContext | None = None
        if tls_cert:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                self._tls.load_cert_chain(tls_cert, tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise SimulatorError(f"STTP simulator cannot load TLS certificate {tls_cert}: "
                                     f"{exc}") from None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sessions: list[_Session] = []
        try:
            self._listener = socket.create_server((host, port))
        except OSError as exc:
            raise SimulatorError(f"STTP simulator cannot listen on {host}:{port}: {exc}") from None
        self.host, self.port = self._listener.getsockname()[:2]
        self._listener.settimeout(POLL * 4)
        self._thread = threading.Thread(target=self._accept, name=f"sttp-sim:{self.port}",
                                        daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def clients(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions if s.alive)

    def metadata_bytes(self, compress: bool) -> bytes:
        return encode_metadata(self.points.metadata, compress=compress)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            s.close()
        self._thread.join(timeout=2)
        for s in sessions:
            s.join(timeout=2)

    def __enter__(self) -> SttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            session = _Session(self, conn, f"{peer[0]}:{peer[1]}")
            with self._lock:
                self._sessions = [s for s in self._sessions if s.alive] + [session]
            session.start()


class _Session(threading.Thread):
    """One subscriber's command channel: commands in, responses and data out."""

    def __init__(self, server: SttpServer, conn: socket.socket, peer: str) -> None:
        super().__init__(name=f"sttp-sim-session:{server.port}", daemon=True)
        self.server, self.conn, self.peer = server, conn, peer
        self.alive = True
        self.modes: OperationalModes | None = None
        self.slot = 1                           # the first subscription switches to slot 0
        self.streamer: _Streamer | None = None
        self.write_lock = threading.Lock()
        self.last_sent = time.monotonic()
        self.subscriber_id = uuid.uuid4()

    def close(self) -> None:
        self.alive = False
        if self.streamer is not None:
            self.streamer.stop.set()
        for fn in (lambda: self.conn.shutdown(socket.SHUT_RDWR), self.conn.close):
            try:
                fn()
            except OSError:
                pass

    def send(self, code: int, answered: int, data: bytes = b"") -> None:
        with self.write_lock:
            self.conn.sendall(fr.encode_response(code, answered, data))
            self.last_sent = time.monotonic()

    def run(self) -> None:
        reader = fr.FrameReader(responses=False)
        try:
            if self.server._tls is not None:
                self.conn.settimeout(5.0)
                self.conn = self.server._tls.wrap_socket(self.conn, server_side=True)
                self.conn.settimeout(None)
            while self.alive and not self.server._closed.is_set():
                pending = isinstance(self.conn, ssl.SSLSocket) and self.conn.pending()
                if not pending and not select.select([self.conn], [], [], POLL)[0]:
                    if time.monotonic() - self.last_sent > self.server.keepalive:
                        self.send(Response.NOOP, Command.SUBSCRIBE)
                    continue
                chunk = self.conn.recv(65536)
                if not chunk:
                    break
                for frame in reader.feed(chunk):
                    self.handle(frame)
        except ProtocolError as exc:
            log.info("STTP simulator %s: closing %s: %s", self.server.address, self.peer, exc)
        except (OSError, ssl.SSLError, ValueError):
            pass          # the subscriber went away (or closed the socket under us)
        finally:
            self.stop_streaming()
            self.close()

    # ---------------------------------------------------------------- commands
    def fail(self, answered: int, message: str) -> None:
        self.send(Response.FAILED, answered, message.encode("utf-8"))

    def ok(self, answered: int, message: str = "") -> None:
        self.send(Response.SUCCEEDED, answered, message.encode("utf-8"))

    def handle(self, frame: fr.Frame) -> None:
        code = frame.code
        if self.modes is None and code != Command.DEFINE_OPERATIONAL_MODES:
            self.fail(code if fr.is_command(code) else Command.CONNECT,
                      "DefineOperationalModes must be the first command")
            raise ProtocolError(f"{fr.code_name(code)} before DefineOperationalModes",
                                field="command", offset=frame.offset)
        if code == Command.DEFINE_OPERATIONAL_MODES:
            self.define_modes(frame)
        elif code == Command.METADATA_REFRESH:
            assert self.modes is not None
            self.send(Response.SUCCEEDED, code,
                      self.server.metadata_bytes(self.modes.compress_metadata))
        elif code == Command.SUBSCRIBE:
            self.subscribe(frame)
        elif code == Command.UNSUBSCRIBE:
            self.stop_streaming()
            self.ok(code, "Unsubscribed")
        elif code == Command.UPDATE_PROCESSING_INTERVAL:
            self.ok(code, "Processing interval accepted")
        elif code in (Command.CONFIRM_NOTIFICATION, Command.CONFIRM_BUFFER_BLOCK,
                      Command.CONFIRM_UPDATE_BASE_TIMES,
                      Command.CONFIRM_UPDATE_SIGNAL_INDEX_CACHE,
                      Command.CONFIRM_UPDATE_CIPHER_KEYS):
            pass
        else:
            self.fail(code if fr.is_command(code) else Command.CONNECT,
                      f"command {fr.code_name(code)} is not supported by this simulator")

    def define_modes(self, frame: fr.Frame) -> None:
        modes = OperationalModes.decode(frame.data, frame.data_offset)
        if not 1 <= (modes.value & 0x1F) <= 3:
            self.fail(frame.code, f"protocol version {modes.version} not supported (1 to 3)")
            raise ProtocolError(f"version {modes.version}", field="operational modes")
        if not modes.utf8:
            self.fail(frame.code, "only UTF-8 string encoding is supported (IEEE 2664)")
            return
        self.modes = modes
        self.ok(frame.code, f"STTP v{modes.version} connection accepted: operational modes "
                            f"0x{modes.value:08X} applied")

    def subscribe(self, frame: fr.Frame) -> None:
        assert self.modes is not None
        try:
            _, text = fr.decode_subscribe(frame.data, frame.data_offset)
            params = fr.parse_connection_string(text)
            rows = self.select(params.get("filterexpression", ""))
        except ProtocolError as exc:
            self.fail(frame.code, f"subscription refused: {exc}")
            return
        for key in ("datachannel", "starttimeconstraint", "stoptimeconstraint"):
            if params.get(key):
                self.fail(frame.code, f"subscription refused: {key} (UDP data channel, "
                                      "historical replay) is not supported by this simulator")
                return
        if not rows:
            self.fail(frame.code, "subscription refused: no measurements matched the filter "
                                  f"expression {params.get('filterexpression', '')!r}")
            return
        self.stop_streaming()
        self.slot ^= 1
        positions = np.array([r["index"] for r in rows], dtype=np.int64)
        points = self.server.points.metadata.measurements
        cache = SignalIndexCache(list(range(len(rows))), [points[p].signal_id for p in positions],
                                 ["SIM"] * len(rows), [int(p) + 1 for p in positions],
                                 self.subscriber_id)
        self.ok(frame.code, f"subscribed to {len(rows)} measurements")
        self.send(Response.UPDATE_SIGNAL_INDEX_CACHE, Command.SUBSCRIBE,
                  encode_cache(cache, self.slot if self.modes.version > 1 else None,
                               self.modes.compress_cache))
        self.streamer = _Streamer(self, positions, self.slot,
                                  fr.parse_bool(params.get("includetime"), True))
        self.streamer.start()

    def select(self, expression: str) -> list[dict[str, Any]]:
        if not expression.strip():
            return list(self.server.rows)
        return filter_rows(expression, self.server.rows)

    def stop_streaming(self) -> None:
        streamer, self.streamer = self.streamer, None
        if streamer is not None:
            streamer.stop.set()
            streamer.join(timeout=5)
            if streamer.is_alive():
                self.close()


class _Streamer(threading.Thread):
    """Sends one subscription's frames: in real time, or flat out in batches.

    Frames are written into one preallocated batch whose headers and signal indices never
    change; each batch only gets its values and time stamps. Flat out, when every point
    repeats within a cycle of frames (the default points do: 600 frames at 30/s), the whole
    cycle is built once and batches are slices of it that only get their time stamps: the
    publisher then costs about a time stamp per value and the socket's copy."""

    def __init__(self, session: _Session, positions: np.ndarray, slot: int,
                 include_time: bool) -> None:
        super().__init__(name=f"sttp-sim-data:{session.server.port}", daemon=True)
        self.session, self.server = session, session.server
        self.positions, self.stop = positions, threading.Event()
        self.error: BaseException | None = None
        n = len(positions)
        record = RECORD[8 if include_time else 0]
        self.dtype = np.dtype([("len", ">u4"), ("code", "u1"), ("cmd", "u1"), ("dlen", ">u4"),
                               ("flags", "u1"), ("count", ">u4"), ("rec", record, (n,))])
        self.include_time = include_time
        self.flags = PacketFlags.COMPACT | (PacketFlags.CACHE_INDEX if slot else 0)
        self.frame_size = self.dtype.itemsize
        rate = self.server.rate
        self.first_time = math.ceil(clock.now() * rate) / rate     # on the wall-clock grid
        self.per_batch = max(1, self.server.batch_bytes // self.frame_size)
        self.cycle = None if self.server.realtime else self._cycle()
        # the reused batch, needed only when frames are computed batch by batch
        self.frames = self._template(self.per_batch if self.cycle is None else 0)

    def _template(self, count: int) -> np.ndarray:
        """`count` frames with their headers and signal indices set."""
        frames = np.zeros(count, dtype=self.dtype)
        frames["len"] = self.frame_size - 4
        frames["code"], frames["cmd"] = Response.DATA_PACKET, Command.SUBSCRIBE
        frames["dlen"] = self.frame_size - 10
        frames["flags"], frames["count"] = self.flags, len(self.positions)
        frames["rec"]["index"] = np.arange(len(self.positions), dtype=np.int32)
        return frames

    def _cycle(self) -> np.ndarray | None:
        """The frames 0 … period-1 with their values (times are set per batch), if small
        enough."""
        period = self.server.points.period_frames(self.server.rate)
        if period is None or period * len(self.server.points) > CYCLE_VALUES:
            return None
        frames = self._template(period)
        frames["rec"]["value"] = self._computed(0, period)
        return frames

    def _computed(self, first: int, count: int) -> np.ndarray:
        times = self.first_time + np.arange(first, first + count) / self.server.rate
        return self.server.points.values(times - self.server.origin)[:, self.positions]

    def batch(self, first: int, count: int) -> np.ndarray:
        """Frames first … first+count-1, valid until the next call (the batch is reused);
        fewer at the end of a precomputed cycle."""
        if self.cycle is not None:
            at = first % len(self.cycle)
            frames = self.cycle[at:at + count]
            count = len(frames)
        else:
            if count > len(self.frames):
                self.frames = self._template(count)
            frames = self.frames[:count]
            frames["rec"]["value"] = self._computed(first, count)
        if self.include_time:
            times = self.first_time + np.arange(first, first + count) / self.server.rate
            frames["rec"]["time"] = from_unix(times)[:, None]
        return frames

    def run(self) -> None:
        try:
            self._run()
        except OSError:
            pass          # the subscriber went away
        except BaseException as exc:   # noqa: BLE001 - kept for the test that owns the sim
            self.error = exc
            log.exception("STTP simulator stream failed")
            self.session.close()

    def _run(self) -> None:
        srv = self.server
        per_batch = self.per_batch
        frame = 0
        while not self.stop.is_set() and self.session.alive:
            if srv.realtime:
                due = int((clock.now() - self.first_time) * srv.rate) + 1 - frame
                if due <= 0:
                    wait = self.first_time + frame / srv.rate - clock.now()
                    self.stop.wait(min(max(wait, 0.0005), POLL))
                    continue
                count = min(due, per_batch)
            else:
                count = per_batch
            frames = self.batch(frame, count)
            if not self.send(frames, frame):
                return
            frame += len(frames)

    def send(self, frames: np.ndarray, first: int) -> bool:
        """Send a batch, applying the faults that fall in it; False ends the stream."""
        faults = self.server.faults
        hit = [f for f in faults if any(f.hits(n) for n in range(first, first + len(frames)))] \
            if faults else []
        if not hit:
            self.write(frames.view(np.uint8))
            return True
        for i in range(len(frames)):
            number = first + i
            kinds = {f.kind: f for f in hit if f.hits(number)}
            raw = frames[i:i + 1].view(np.uint8)
            if "stall" in kinds:
                self.stop.wait(kinds["stall"].seconds)
            if "disconnect" in kinds:
                self.session.close()
                return False
            if "drop" in kinds:
                continue
            if kinds.keys() & {"corrupt", "length", "unknown"}:
                raw = self.damage(bytearray(raw.tobytes()), kinds, number)
            self.write(raw)
            if "duplicate" in kinds:
                self.write(raw)
        return True

    def damage(self, raw: bytearray, kinds: dict[str, Fault], number: int) -> bytes:
        if "corrupt" in kinds:
            rng = np.random.default_rng(self.server.seed + number)
            raw[10:] = rng.integers(0, 256, len(raw) - 10, dtype=np.uint8).tobytes()
            raw[10] = 0x00              # packet flags neither Compact nor Compressed: noticed
        if "unknown" in kinds:
            raw[16:20] = (len(self.positions) + 1000).to_bytes(4, "big")
        if "length" in kinds:
            raw[0:4] = (len(raw) - 4 + 64).to_bytes(4, "big")
        return bytes(raw)

    def write(self, data: Any) -> None:
        with self.session.write_lock:
            self.session.conn.sendall(data)
            self.session.last_sent = time.monotonic()


def main(argv: list[str] | None = None) -> int:
    """`hil sim sttp`: run the publisher simulator until interrupted."""
    p = argparse.ArgumentParser(prog="hil sim sttp", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0: any free port")
    p.add_argument("--points", type=int, default=100, help="measurement points (default 100)")
    p.add_argument("--rate", type=float, default=30.0, help="frames per second (default 30)")
    p.add_argument("--nominal", type=float, default=50.0, help="grid frequency, 50 or 60 Hz")
    p.add_argument("--fast", action="store_true", help="send frames as fast as possible")
    p.add_argument("--faults", default="", help="kind@at[xcount][:seconds][/every],…")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tls-cert", default=None, help="PEM certificate: serve TLS")
    p.add_argument("--tls-key", default=None, help="PEM private key (if not in the cert file)")
    args = p.parse_args(argv)
    try:
        server = SttpServer(args.points, rate=args.rate, host=args.host, port=args.port,
                            nominal=args.nominal, realtime=not args.fast, seed=args.seed,
                            faults=args.faults, tls_cert=args.tls_cert, tls_key=args.tls_key)
    except SimulatorError as exc:
        print(f"hil sim sttp: {exc}", file=sys.stderr)
        return 2
    mode = "as fast as possible" if args.fast else f"at {args.rate:g} frames/s"
    try:
        with stop_on_signals() as stop:      # before saying where: a stop may come at once
            print(f"STTP simulator listening on {server.address} ({len(server.points)} points "
                  f"{mode}{', TLS' if args.tls_cert else ''})", flush=True)
            stop.wait()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
