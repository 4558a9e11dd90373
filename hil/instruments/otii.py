"""The `power` instrument: a Qoitech Otii Arc/Ace, driven through the vendor's `otii-tcp-client`.

Real hardware and the simulator are reached the same way, over the Otii TCP server protocol, so a
test bench that passes on the simulated rig runs unchanged on a lab rig. Every failure of the
vendor client (its exceptions, socket errors, timeouts, malformed replies) surfaces as one error
of `hil.errors` naming the server, the command and the server's error code.

    power.on(voltage=3.3)
    with power.capture() as trace:        # starts a recording
        console.query("tx 3\\n", expect="tx: done")
    trace.between(mark_a, mark_b).mean()   # filled when the block ends: a PowerTrace

Clock: a recording's samples are timed relative to its start. With `clock = "server"` (default)
the trace's t0 is the recording's `start-time` as the server reports it: exact for the simulator
and for an Otii server on this host. For a server on another host whose clock may be skewed, use
`clock = "local"`: t0 is then the middle of the `project_start_recording` round trip measured
here (error at most half the round-trip time). A simulator run with `speed` != 1 times recordings
in virtual seconds, so console marks do not line up with its traces.

Fetching: commands go through the vendor client. Analog samples (the bulk of a capture) are read
by default with our thin reader (hil.instruments.otii_bulk) on a second connection to the same
server: the same requests, pipelined, with the numbers parsed by numpy straight into the trace's
array (about 2.5x the vendor client's rate on the simulator; exactly the same values). The
vendor client re-splits its whole receive buffer on every 128 KiB piece of a reply and builds a
list of floats. `fetch = "vendor"` uses the vendor client for those too.
"""
from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from otii_tcp_client import arc as otii_arc
from otii_tcp_client import otii_client, otii_connection, otii_exception
from otii_tcp_client import otii as otii_app

from hil import clock
from hil.errors import InstrumentConnectError, InstrumentError, ProtocolError
from hil.instruments.otii_bulk import BulkReader
from hil.instruments.power_trace import PowerTrace
from hil.protocols import otii_json as oj
from hil.rig import Key, Resource, RigKind

if TYPE_CHECKING:
    from otii_tcp_client.project import Project
    from otii_tcp_client.recording import Recording

    from hil.sim.bench import VirtualBench

T = TypeVar("T")

CHANNELS = ("mc", "mv", "mp", "me", "ac", "av", "ap", "ae", "sp", "sn", "vb", "vj", "tp",
            "rx", "i1", "i2")
ANALOG = set(CHANNELS) - {"rx", "i1", "i2"}
ARC_RATE = 4000
RECONNECT_TIMEOUT_S = 3.0
NO_DEVICE = "no device"      # errorcode of the error raised when the wanted device is absent


@dataclass(frozen=True)
class OtiiConfig:
    """How to reach and set up one Otii (the keys of a `kind = "otii"` rig table)."""

    host: str
    port: int = 1905
    device: str = ""                       # name or id; "" = the first Arc/Ace
    licensing: str = "auto"                # "auto": reserve (and return) a license; "manual"
    credentials: str = ""                  # JSON file {username, password}; "" = env variables
    voltage: float = 3.3
    max_current: float = 0.5
    range: str = "low"                     # "low" = auto-range, "high" = forced high range
    channels: tuple[str, ...] = ("mc", "mv")
    sample_rate: int = ARC_RATE            # an Arc samples at 4000/s; an Ace can be set
    uart_baudrate: int = 115_200           # for the `rx` channel and uart_write()
    connect_timeout: float = 10.0
    clock: str = "server"                  # t0 from the server's start-time, or "local"
    fetch: str = "direct"                  # analog data: own thin reader, or "vendor" client

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LogLine:
    """One line of the Otii's UART rx log, at its `hil.clock` time (usable in `between()`)."""

    time: float
    text: str


@dataclass(frozen=True)
class Edge:
    """A level change of a GPI pin (i1/i2) at a `hil.clock` time."""

    time: float
    level: bool


class Capture:
    """What `power.capture()` yields. Empty while the recording runs; when the `with` block ends
    it holds the `PowerTrace` (`.trace`), the UART lines (`.rx`) and GPI edges (`.gpi`), and
    forwards every other attribute to the trace, so `trace.between(a, b)` just works."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.trace: PowerTrace | None = None
        self.rx: list[LogLine] = []
        self.gpi: dict[int, list[Edge]] = {}
        self.recording = ""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        trace = self.__dict__.get("trace")
        if trace is None:
            raise InstrumentError(f"power capture {self.name!r} is still recording: its trace is "
                                  f"filled when the `with power.capture()` block ends "
                                  f"(tried to read .{attr})")
        return getattr(trace, attr)

    def __len__(self) -> int:
        return len(self.trace) if self.trace is not None else 0

    def __repr__(self) -> str:
        return f"Capture({self.trace!r})" if self.trace is not None else \
            f"Capture({self.name!r}, recording)"

    def line(self, pattern: str) -> LogLine:
        """The first rx line matching the regex `pattern`."""
        for ln in self.rx:
            if re.search(pattern, ln.text):
                return ln
        shown = "; ".join(ln.text for ln in self.rx[-5:]) or "nothing"
        raise InstrumentError(f"no UART line of capture {self.name!r} matches {pattern!r} "
                              f"(last lines: {shown})")


class OtiiPower:
    """A connected Otii Arc/Ace: supply on/off, captures, UART and GPIO, safe state.

    Opening connects, reserves a license (licensing "auto"), picks the device, switches its main
    output off and applies the configuration.
    """

    def __init__(self, config: OtiiConfig, name: str = "power") -> None:
        self.config = config
        self.name = name
        self._otii: otii_client.Connect | None = None
        self._arc: otii_arc.Arc | None = None
        self._project: Project | None = None
        self._licenses: list[int] = []          # reserved by us on an earlier connection
        self._recording = False
        self._voltage = config.voltage
        self._bulk = BulkReader(config.host, config.port)
        self._connect(config.connect_timeout)
        self.configure()

    def __repr__(self) -> str:
        dev = f" {self._arc.name} ({self._arc.type})" if self._arc is not None else ""
        return f"OtiiPower({self.name!r}, {self.config.where}{dev})"

    # ----------------------------------------------------------------- connection
    def _connect(self, timeout: float) -> None:
        cfg = self.config
        _probe(cfg.host, cfg.port, timeout, self.name)
        mode = (otii_client.LicensingMode.AUTO if cfg.licensing == "auto"
                else otii_client.LicensingMode.MANUAL)
        if cfg.credentials and not os.path.isfile(cfg.credentials):
            raise InstrumentConnectError(f"{self.name}: Otii credentials file "
                                         f"{cfg.credentials!r} not found")
        try:
            otii = otii_client.OtiiClient().connect(
                host=cfg.host, port=cfg.port, try_for_seconds=timeout, licensing=mode,  # type: ignore[arg-type]
                credentials=cfg.credentials)
        except otii_client.OtiiClientException as exc:
            raise InstrumentConnectError(
                f"{self.name}: Otii at {cfg.where} has no free Automation license within "
                f"{timeout:g} s ({exc}); return it elsewhere or use licensing = \"manual\"") from None
        except Exception as exc:
            err = self._wrap("connect", exc)
            if type(err) is InstrumentError:       # e.g. Could not login: still a connect failure
                err = _tag(InstrumentConnectError(str(err)), "connect",
                           getattr(err, "errorcode", None))
            raise err from None
        otii.auto_reserved_licenses = sorted(set(self._licenses) |
                                             set(otii.auto_reserved_licenses))
        self._licenses = list(otii.auto_reserved_licenses)
        self._otii = otii
        try:
            self._arc = self._pick_device(otii)
            self._project = self._call("otii_get_active_project", otii.get_active_project)
        except BaseException:
            self._release()
            raise

    def _pick_device(self, otii: otii_client.Connect) -> otii_arc.Arc:
        want = self.config.device
        devices = self._call("otii_get_devices", otii.get_devices, 0)
        for dev in devices:
            if (not want and dev.type in ("Arc", "Ace")) or want in (dev.id, dev.name):
                return dev
        found = ", ".join(f"{d.name} ({d.type}, {d.id})" for d in devices) or "none"
        what = f"device {want!r}" if want else "Arc or Ace"
        raise _tag(InstrumentConnectError(f"{self.name}: Otii at {self.config.where} has no "
                                          f"{what} connected; devices found: {found}"),
                   "otii_get_devices", NO_DEVICE)

    def _disconnect(self) -> None:
        """Close the socket without talking (the connection is unusable or we are done)."""
        otii, self._otii, self._arc, self._project = self._otii, None, None, None
        self._recording = False
        self._bulk.close()
        if otii is not None:
            otii.connection.close_connection()

    @property
    def connected(self) -> bool:
        return self._otii is not None

    @property
    def device(self) -> otii_arc.Arc:
        if self._arc is None:
            raise InstrumentConnectError(f"{self.name}: not connected to the Otii at "
                                         f"{self.config.where} (lost earlier; safe_state() "
                                         f"reconnects)")
        return self._arc

    # ----------------------------------------------------------------- errors
    def _call(self, cmd: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one vendor-client call; any failure becomes a hil error naming `cmd`."""
        if self._otii is None:
            raise InstrumentConnectError(f"{self.name}: not connected to the Otii at "
                                         f"{self.config.where}; cannot send {cmd}")
        try:
            return fn(*args)
        except Exception as exc:
            raise self._wrap(cmd, exc, args) from None

    def _wrap(self, cmd: str, exc: Exception, args: tuple[Any, ...] = ()) -> Exception:
        where = f"{self.name}: Otii at {self.config.where}"
        call = f"{cmd}({', '.join(map(repr, args))})"
        if isinstance(exc, otii_exception.Otii_Exception):
            return _server_error(where, cmd, call, exc.type, exc.message)
        if isinstance(exc, oj.ErrorReply):
            return _server_error(where, cmd, call, exc.code, {"data": exc.data})
        if isinstance(exc, ProtocolError):
            self._disconnect()
            return _tag(ProtocolError(f"{where}: bad reply to {call}: {exc}", field=exc.field,
                                      where=self.config.where), cmd)
        if isinstance(exc, otii_app.OtiiException):
            return _tag(InstrumentError(f"{where}: {call} failed: {exc}"), cmd)
        broken: Exception
        if isinstance(exc, ConnectionRefusedError):
            broken = InstrumentConnectError(f"{where} refused the connection (is its TCP "
                                            f"server enabled?)")
        elif isinstance(exc, TimeoutError):
            broken = InstrumentError(f"{where}: no reply to {call} within the client's timeout "
                                     f"(the connection is dropped: a late reply would "
                                     f"desynchronise it)")
        elif isinstance(exc, (otii_connection.DisconnectedException, OSError)):
            broken = InstrumentConnectError(f"{where}: connection lost during {call} "
                                            f"({type(exc).__name__}: {exc})")
        elif isinstance(exc, (ValueError, UnicodeDecodeError)):   # json.JSONDecodeError
            broken = ProtocolError(f"{where}: the reply to {call} is not JSON ({exc})",
                                   where=self.config.where)
        elif isinstance(exc, (KeyError, TypeError)):
            broken = ProtocolError(f"{where}: the reply to {call} lacks the expected key {exc}",
                                   field=str(exc), where=self.config.where)
        elif "Transaction id mismatch" in str(exc):
            broken = ProtocolError(f"{where}: the reply to {call} carries another transaction "
                                   f"id (a late or unsolicited message)",
                                   field="trans_id", where=self.config.where)
        else:
            broken = InstrumentError(f"{where}: {call} failed: {type(exc).__name__}: {exc}")
        self._disconnect()
        return _tag(broken, cmd)

    # ----------------------------------------------------------------- configuration
    def configure(self, **changes: Any) -> None:
        """Apply the configuration (with `changes`, e.g. voltage=1.8, range="high")."""
        if changes:
            self.config = _checked(replace(self.config, **changes))
        cfg, arc = self.config, self.device
        self._call("arc_set_main", arc.set_main, False)
        self._call("arc_set_main_voltage", arc.set_main_voltage, cfg.voltage)
        self._voltage = cfg.voltage
        self._call("arc_set_max_current", arc.set_max_current, cfg.max_current)
        self._call("arc_set_range", arc.set_range, cfg.range)
        for ch in CHANNELS:
            self._call("arc_enable_channel", arc.enable_channel, ch, ch in cfg.channels)
        if arc.type == "Ace" or cfg.sample_rate != ARC_RATE:
            for ch in sorted(ANALOG & set(cfg.channels)):
                self._call("arc_set_channel_samplerate", arc.set_channel_samplerate, ch,
                           cfg.sample_rate)
        if "rx" in cfg.channels:
            self._enable_uart()

    def _enable_uart(self) -> None:
        arc = self.device
        self._call("arc_enable_uart", arc.enable_uart, True)
        self._call("arc_set_uart_baudrate", arc.set_uart_baudrate, self.config.uart_baudrate)

    # ----------------------------------------------------------------- supply
    def on(self, voltage: float | None = None) -> None:
        """Switch the main output on (at `voltage`, default the configured one)."""
        arc = self.device
        if voltage is not None:
            self._call("arc_set_main_voltage", arc.set_main_voltage, float(voltage))
            self._voltage = float(voltage)
        self._call("arc_set_main", arc.set_main, True)

    def off(self) -> None:
        """Switch the main output off."""
        self._call("arc_set_main", self.device.set_main, False)

    @property
    def is_on(self) -> bool:
        """The main output's state as the Otii reports it (an over-current trip turns it off)."""
        return bool(self._call("arc_get_main", self.device.get_main))

    def read(self, channel: str = "mc") -> float:
        """The present value of a channel (A, V, W, °C; level for i1/i2)."""
        return self._call("arc_get_value", self.device.get_value, channel)

    # ----------------------------------------------------------------- UART and GPIO
    def uart_write(self, text: str) -> None:
        """Send text on the Otii's UART TX line (to the DUT's RX)."""
        self._enable_uart()
        self._call("arc_write_tx", self.device.write_tx, text)

    def set_gpo(self, pin: int, value: bool) -> None:
        """Drive GPO pin 1 or 2."""
        self._call("arc_set_gpo", self.device.set_gpo, int(pin), bool(value))

    def get_gpi(self, pin: int) -> bool:
        """Read GPI pin 1 or 2."""
        return bool(self._call("arc_get_gpi", self.device.get_gpi, int(pin)))

    # ----------------------------------------------------------------- captures
    @contextmanager
    def capture(self, name: str = "") -> Iterator[Capture]:
        """Record while the block runs; at its end stop, fetch and fill the yielded Capture."""
        cap = Capture(name or self.name)
        project = self._require_project()
        if self._recording:
            raise InstrumentError(f"{self.name}: a capture is already running; captures of one "
                                  f"Otii cannot nest")
        before = clock.now()
        self._call("project_start_recording", project.start_recording)
        after = clock.now()
        self._recording = True
        try:
            rec = self._call("project_get_last_recording", project.get_last_recording)
            if rec is None:
                raise InstrumentError(f"{self.name}: the Otii reports no recording right after "
                                      f"project_start_recording")
            started = clock.now()
            yield cap
        except BaseException:
            self._stop_quietly()
            raise
        ended = clock.now()
        self._call("project_stop_recording", project.stop_recording)
        if self._still_running(rec) is True:        # safe_state() will try to stop it again
            raise InstrumentError(f"{self.name}: recording {rec.name!r} is still running after "
                                  f"project_stop_recording (started again elsewhere?); its data "
                                  f"would be incomplete")
        self._recording = False
        local_t0 = (before + after) / 2
        t0 = local_t0 if self.config.clock == "local" or rec.start_time is None \
            else rec.start_time.timestamp()
        self._fill(cap, rec, t0, {"capture_start": started, "capture_end": ended})

    def _require_project(self) -> Project:
        if self._project is None:
            raise InstrumentConnectError(f"{self.name}: not connected to the Otii at "
                                         f"{self.config.where}")
        return self._project

    def _stop_quietly(self) -> None:
        """Stop the recording after a failure inside the capture (the first error wins)."""
        if self._recording and self._project is not None:
            try:
                self._call("project_stop_recording", self._project.stop_recording)
            except Exception:
                pass
        self._recording = False

    def _fill(self, cap: Capture, rec: Recording, t0: float, marks: dict[str, float]) -> None:
        arc = self.device
        if not self._call("arc_is_connected", arc.is_connected):
            raise InstrumentConnectError(f"{self.name}: Otii device {arc.name} ({arc.id}) was "
                                         f"disconnected during capture {cap.name!r}")
        first, interval, current = self._analog(rec, "mc")
        if current.size == 0:
            raise InstrumentError(f"{self.name}: capture {cap.name!r} recorded no current samples "
                                  f"(channel mc enabled: {'mc' in self.config.channels})")
        voltage: np.ndarray | float = self._voltage
        if "mv" in self.config.channels:
            _, _, mv = self._analog(rec, "mv")
            if mv.size:
                n = min(mv.size, current.size)
                current, voltage = current[:n], mv[:n]
        start = t0 + first
        cap.recording = rec.name
        cap.rx = [LogLine(t0 + e["timestamp"], e["value"]) for e in self._events(rec, "rx")]
        cap.gpi = {int(ch[1]): [Edge(t0 + e["timestamp"], bool(e["value"]))
                                for e in self._events(rec, ch)]
                   for ch in ("i1", "i2") if ch in self.config.channels}
        time = np.arange(current.size, dtype=np.float64) * interval
        cap.trace = PowerTrace(time, current, voltage, t0=start, marks=marks, name=cap.name)

    def _still_running(self, rec: Recording) -> Any:
        try:
            return self._call("recording_is_running", rec.is_running)
        except InstrumentError as exc:
            if getattr(exc, "errorcode", None) == "Invalid command":   # Otii < 3.3
                return "Invalid command"
            raise

    def _analog(self, rec: Recording, channel: str,
                limit: int | None = None) -> tuple[float, float, np.ndarray]:
        """(timestamp of the first sample, interval, values) of an analog channel (at most
        `limit` values from its start)."""
        arc = self.device
        count = self._call("recording_get_channel_data_count", rec.get_channel_data_count,
                           arc.id, channel)
        count = count if limit is None else min(count, limit)
        if not count:
            return 0.0, 1.0 / self.config.sample_rate, np.zeros(0)
        if self.config.fetch == "direct":
            return self._call("recording_get_channel_data", self._bulk.analog, rec.id, arc.id,
                              channel, count)
        data = self._call("recording_get_channel_data", rec.get_channel_data, arc.id, channel,
                          0, count)
        values = np.asarray(data["values"], dtype=np.float64)
        if values.size != count:
            raise ProtocolError(f"{self.name}: Otii sent {values.size} {channel} samples, "
                                f"{count} announced", field="values", where=self.config.where)
        return float(data["timestamp"]), float(data["interval"]), values

    def _events(self, rec: Recording, channel: str) -> list[dict[str, Any]]:
        if channel not in self.config.channels:
            return []
        arc = self.device
        count = self._call("recording_get_channel_data_count", rec.get_channel_data_count,
                           arc.id, channel)
        if not count:
            return []
        data = self._call("recording_get_channel_data", rec.get_channel_data, arc.id, channel,
                          0, count)
        return list(data["values"])

    # ----------------------------------------------------------------- safe state and close
    def safe_state(self) -> None:
        """Recording stopped, main output off. Reconnects if the connection was lost (once more
        if it breaks on the way), so the DUT is left unpowered whatever happened to the test.
        A device that is gone (unplugged) powers nothing: that counts as safe."""
        for attempt in (1, 2):
            reconnected = self._otii is None
            try:
                if reconnected:
                    self._connect(min(self.config.connect_timeout, RECONNECT_TIMEOUT_S))
                if self._recording or reconnected:
                    self._call("project_stop_recording", self._require_project().stop_recording)
                    self._recording = False
                self._call("arc_set_main", self.device.set_main, False)
                return
            except InstrumentError as exc:
                if getattr(exc, "errorcode", None) in ("Device not connected", NO_DEVICE):
                    self._recording = False
                    return
                self._disconnect()
                if attempt == 2:
                    raise

    def close(self) -> None:
        """Safe state, return the license(s) reserved here, disconnect. Idempotent."""
        failure: Exception | None = None
        try:
            if self._otii is not None or self._licenses:
                self.safe_state()
        except Exception as exc:
            failure = exc
        failure = self._release() or failure
        if failure is not None:
            raise failure

    def _release(self) -> Exception | None:
        """Return the licenses reserved here, log out if we logged in, close. The error, if any."""
        otii, failure = self._otii, None
        if otii is not None:
            try:
                otii.disconnect()
            except Exception as exc:
                failure = self._wrap("otii_return_license", exc)
            self._licenses = []
        self._disconnect()
        return failure

    def __enter__(self) -> OtiiPower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _probe(host: str, port: int, timeout: float, name: str) -> None:
    """Fail at once when nothing listens (the vendor client would retry for its whole timeout)."""
    try:
        socket.create_connection((host, port), timeout=max(0.5, min(timeout, 5.0))).close()
    except ConnectionRefusedError:
        raise InstrumentConnectError(f"{name}: nothing listens on {host}:{port} (connection "
                                     f"refused): is the Otii application running with its TCP "
                                     f"server enabled?") from None
    except OSError as exc:
        raise InstrumentConnectError(f"{name}: cannot reach the Otii at {host}:{port}: "
                                     f"{exc.strerror or exc}") from None


def _tag(exc: Exception, cmd: str, code: str | None = None) -> Exception:
    exc.cmd = cmd               # type: ignore[attr-defined]
    exc.errorcode = code        # type: ignore[attr-defined]
    return exc


def _server_error(where: str, cmd: str, call: str, code: str, message: Any) -> Exception:
    """An Otii error reply as a hil error: the command, the error code and its details
    (`message` is the vendor exception's text, or a reply dict whose `data` has them)."""
    if isinstance(message, dict):
        data = message.get("data") or {}
        detail = json.dumps(data) if data else ""
    else:
        detail = str(message).replace("\t", "; ")
    text = f"{where} refused {call}: {code}" + (f" ({detail})" if detail else "")
    cls = InstrumentConnectError if code == "Device not connected" else InstrumentError
    return _tag(cls(text), cmd, code)


# =============================================================================== rig kind
def _checked(cfg: OtiiConfig, res: Resource | None = None) -> OtiiConfig:
    """Check values the rig-file types cannot express (channel names, positive numbers)."""
    def bad(message: str, key: str) -> Exception:
        return res.error(message, key) if res is not None else ValueError(f"{key}: {message}")
    unknown = [c for c in cfg.channels if c not in CHANNELS]
    if unknown:
        raise bad(f"unknown channel(s) {', '.join(map(repr, unknown))}; known: "
                  f"{', '.join(CHANNELS)}", "channels")
    if "mc" not in cfg.channels:
        raise bad("channels must include 'mc' (the current a capture is made of)", "channels")
    for key in ("voltage", "max_current", "sample_rate", "connect_timeout", "uart_baudrate"):
        if not getattr(cfg, key) > 0:
            raise bad(f"must be positive, got {getattr(cfg, key)!r}", key)
    return cfg


def config_from(res: Resource) -> OtiiConfig:
    """The OtiiConfig of a checked rig table."""
    values = {k: res[k] for k in KEYS}
    values["channels"] = tuple(str(c) for c in values["channels"])
    return _checked(OtiiConfig(**values), res)


def open_power(res: Resource, bench: VirtualBench) -> OtiiPower:
    """Open a `kind = "otii"` table; host "sim" starts the simulator on the virtual bench and
    connects to it over TCP like to real hardware."""
    cfg = config_from(res)
    if cfg.host == "sim":
        from hil.sim.otii_server import OtiiServer   # only simulated rigs need the simulator
        server = bench.start("otii", lambda: OtiiServer(dut=bench.dut, speed=bench.speed,
                                                        seed=bench.seed))
        cfg = replace(cfg, host=server.host, port=server.port)
    return OtiiPower(cfg, name=res.name)


KEYS: dict[str, Key] = {
    "host": Key(str, help='Otii TCP server address, or "sim" for the simulator'),
    "port": Key(int, 1905, help="Otii TCP server port (ignored for sim)"),
    "device": Key(str, "", help="device name or id; empty = the first Arc/Ace"),
    "licensing": Key(str, "auto", choices=("auto", "manual"),
                     help="auto: reserve a license on connect and return it on close"),
    "credentials": Key(str, "", help="JSON file with username/password; empty = "
                                     "OTII_USERNAME/OTII_PASSWORD"),
    "voltage": Key(float, 3.3, help="main output voltage, V"),
    "max_current": Key(float, 0.5, help="over-current cut-off, A"),
    "range": Key(str, "low", choices=("low", "high"), help="low = auto-range, high = forced"),
    "channels": Key(list, ["mc", "mv"], help="channels to record (mc required; rx = UART log)"),
    "sample_rate": Key(int, ARC_RATE, help="samples/s (settable on an Ace; an Arc has 4000)"),
    "uart_baudrate": Key(int, 115_200, help="UART baud rate for rx and uart_write"),
    "connect_timeout": Key(float, 10.0, help="s to wait for the server and a license"),
    "clock": Key(str, "server", choices=("server", "local"),
                 help="t0 of traces: the server's start-time, or local round-trip timing"),
    "fetch": Key(str, "direct", choices=("direct", "vendor"),
                 help="analog data: our thin reader on its own connection, or the vendor client"),
}

RIG_KIND = RigKind(keys=KEYS, open=open_power,
                   help="Qoitech Otii Arc/Ace power analyzer over the Otii TCP server")
