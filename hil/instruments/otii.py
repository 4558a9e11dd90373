"""The `power` instrument: a Qoitech Otii Arc/Ace, driven through the vendor's `otii-tcp-client`.

Real hardware and the simulator are reached the same way, over the Otii TCP server protocol, so a
test bench that passes on the simulated rig runs unchanged on a lab rig. Every failure of the
vendor client (its exceptions, socket errors, timeouts, malformed replies) surfaces as one error
of `hil.errors` naming the server (host:port), the command and the server's error code.

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

Wire: everything, recorded data included, goes over the vendor client's one connection, one
request at a time, with the very requests the vendor client sends (what a real Otii server is
known to accept). Only the waiting differs: a data request waits at most FETCH_TIMEOUT_S per read
where the vendor client would wait forever.

Unanswered commands: a command that timed out may still run on the server later. The connection
is then dropped (a late reply would desynchronise it), the next command opens a fresh one, and
`safe_state()` keeps checking for `settle` seconds that main stays off and no recording runs.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from otii_tcp_client import arc as otii_arc
from otii_tcp_client import otii_client, otii_connection, otii_exception
from otii_tcp_client import otii as otii_app
from otii_tcp_client.recording import remove_control_characters

from hil import clock
from hil.errors import InstrumentConnectError, InstrumentError, ProtocolError
from hil.instruments.power_trace import PowerTrace
from hil.protocols import otii_json as oj
from hil.timeout import Deadline

if TYPE_CHECKING:
    from otii_tcp_client.project import Project
    from otii_tcp_client.recording import Recording

T = TypeVar("T")

CHANNELS = ("mc", "mv", "mp", "me", "ac", "av", "ap", "ae", "sp", "sn", "vb", "vj", "tp",
            "rx", "i1", "i2")
ANALOG = set(CHANNELS) - {"rx", "i1", "i2"}
ARC_RATE = 4000
RECONNECT_TIMEOUT_S = 3.0
FETCH_TIMEOUT_S = 60.0       # longest wait for a piece of a data reply (vendor client: forever)
SETTLE_POLL_S = 0.1          # how often safe_state() looks while a late command may still run
SETTLE_FIXES = 3             # late switch-ons safe_state() undoes before it gives up
NO_DEVICE = "no device"      # errorcode of the error raised when the wanted device is absent
GONE = ("Device not connected", NO_DEVICE)


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
    settle: float = 5.0                    # s safe_state() watches after an unanswered command

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
        self._logged_in_here = False            # we logged in (and log out when done)
        self._recording = False
        self._lost = False                      # the connection broke: the next command reopens
        self._unanswered = False                # a command timed out: it may still run late
        self._generation = 0                    # connections opened so far
        self._voltage = config.voltage
        self._connect(config.connect_timeout)
        self.configure()

    def __repr__(self) -> str:
        dev = f" {self._arc.name} ({self._arc.type})" if self._arc is not None else ""
        return f"OtiiPower({self.name!r}, {self.config.where}{dev})"

    @property
    def _at(self) -> str:
        """How messages name this instrument: its name and the server's host:port."""
        return f"{self.name}: Otii at {self.config.where}"

    # ----------------------------------------------------------------- connection
    def _connect(self, timeout: float) -> None:
        cfg = self.config
        probe(cfg.host, cfg.port, timeout, self.name)
        mode = (otii_client.LicensingMode.AUTO if cfg.licensing == "auto"
                else otii_client.LicensingMode.MANUAL)
        if cfg.credentials and not os.path.isfile(cfg.credentials):
            raise InstrumentConnectError(f"{self._at}: credentials file {cfg.credentials!r} "
                                         f"not found")
        try:
            otii = otii_client.OtiiClient().connect(
                host=cfg.host, port=cfg.port, try_for_seconds=timeout, licensing=mode,  # type: ignore[arg-type]
                credentials=cfg.credentials)
        except otii_client.OtiiClientException as exc:
            raise InstrumentConnectError(
                f"{self._at} has no free Automation license within {timeout:g} s ({exc}); "
                f"return it elsewhere or use licensing = \"manual\"") from None
        except Exception as exc:
            err = self._wrap("connect", exc)
            code = getattr(err, "errorcode", None)
            if code == "Not logged in":
                err = InstrumentConnectError(
                    f"{err}: the Otii application is logged out and no login was possible; "
                    f"give credentials (a JSON file with username and password) or set "
                    f"OTII_USERNAME and OTII_PASSWORD")
            elif type(err) is InstrumentError:     # e.g. Could not login: still a connect failure
                err = InstrumentConnectError(str(err))
            raise _tag(err, "connect", code) from None
        otii.auto_reserved_licenses = sorted(set(self._licenses) |
                                             set(otii.auto_reserved_licenses))
        otii.auto_logged_in = otii.auto_logged_in or self._logged_in_here
        self._licenses = list(otii.auto_reserved_licenses)
        self._logged_in_here = otii.auto_logged_in
        self._otii = otii
        self._generation += 1
        try:
            self._arc = self._pick_device(otii)
            self._project = self._call("otii_get_active_project", otii.get_active_project)
        except BaseException:
            self._release()
            raise
        self._lost = False

    def _pick_device(self, otii: otii_client.Connect) -> otii_arc.Arc:
        devices = self._call("otii_get_devices", otii.get_devices, 0)
        found = pick_device(devices, self.config.device)
        if found is None:
            raise _tag(InstrumentConnectError(f"{self._at} has no "
                                              f"{_wanted(self.config.device)} connected; "
                                              f"devices found: {_listed(devices)}"),
                       "otii_get_devices", NO_DEVICE)
        return found

    def _reopen(self) -> None:
        """A fresh connection in place of one that broke (the server keeps the device's state)."""
        self._connect(min(self.config.connect_timeout, RECONNECT_TIMEOUT_S))

    def _drop(self) -> None:
        """Close a connection that cannot be trusted any more; the next command reopens one."""
        self._disconnect()
        self._lost = True

    def _disconnect(self) -> None:
        """Close the socket without talking (the connection is unusable or we are done)."""
        otii, self._otii, self._arc, self._project = self._otii, None, None, None
        self._recording = False
        if otii is not None:
            otii.connection.close_connection()

    @property
    def connected(self) -> bool:
        return self._otii is not None

    @property
    def device(self) -> otii_arc.Arc:
        """The Arc/Ace, on a live connection (a broken one is replaced first)."""
        if self._arc is None and self._lost:
            self._reopen()
        if self._arc is None:
            raise InstrumentConnectError(f"{self._at}: not connected (closed)")
        return self._arc

    def _require_project(self) -> Project:
        if self._project is None and self._lost:
            self._reopen()
        if self._project is None:
            raise InstrumentConnectError(f"{self._at}: not connected (closed)")
        return self._project

    # ----------------------------------------------------------------- errors
    def _call(self, cmd: str, fn: Callable[..., T], *args: Any) -> T:
        """Run one vendor-client call; any failure becomes a hil error naming `cmd`."""
        if self._otii is None:
            raise InstrumentConnectError(f"{self._at}: not connected; cannot send {cmd}")
        try:
            return fn(*args)
        except Exception as exc:
            raise self._wrap(cmd, exc, args) from None

    def _wrap(self, cmd: str, exc: Exception, args: tuple[Any, ...] = ()) -> Exception:
        where = self._at
        call = f"{cmd}({', '.join(map(repr, args))})"
        if isinstance(exc, otii_exception.Otii_Exception):
            return _server_error(where, cmd, call, exc.type, exc.message)
        if isinstance(exc, otii_app.OtiiException):
            return _tag(InstrumentError(f"{where}: {call} failed: {exc}"), cmd)
        broken: Exception
        if isinstance(exc, ProtocolError):
            broken = ProtocolError(f"{where}: bad reply to {call}: {exc.message}",
                                   field=exc.field, where=self.config.where, offset=exc.offset)
        elif isinstance(exc, ConnectionRefusedError):
            broken = InstrumentConnectError(f"{where} refused the connection (is its TCP "
                                            f"server enabled?)")
        elif isinstance(exc, TimeoutError):
            self._unanswered = self._unanswered or not _reads_only(cmd)
            broken = InstrumentError(f"{where}: no reply to {call} within the client's timeout "
                                     f"(the connection is dropped: a late reply would "
                                     f"desynchronise it; the command may still run later)")
        elif isinstance(exc, (otii_connection.DisconnectedException, OSError)):
            broken = InstrumentConnectError(f"{where}: connection lost during {call} "
                                            f"({type(exc).__name__}: {exc})")
        elif isinstance(exc, (ValueError, RecursionError)):   # JSONDecodeError, bad text
            pos = exc.pos if isinstance(exc, json.JSONDecodeError) else None
            what = f"not JSON at offset {pos} of the reply line" if pos is not None \
                else "unreadable"
            broken = ProtocolError(f"{where}: the reply to {call} is {what} "
                                   f"({type(exc).__name__}: {exc})", field="line",
                                   where=self.config.where, offset=pos)
        elif isinstance(exc, (KeyError, TypeError)):
            broken = ProtocolError(f"{where}: the reply to {call} lacks the expected key {exc}",
                                   field=str(exc), where=self.config.where)
        elif "Transaction id mismatch" in str(exc):
            broken = ProtocolError(f"{where}: the reply to {call} carries another transaction "
                                   f"id (a late or unsolicited message)",
                                   field="trans_id", where=self.config.where)
        else:
            broken = InstrumentError(f"{where}: {call} failed: {type(exc).__name__}: {exc}")
        self._drop()
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
        return self._main_on()

    def read(self, channel: str = "mc") -> float:
        """The present value of a channel (A, V, W, °C; level for i1/i2)."""
        value = self._call("arc_get_value", self.device.get_value, channel)
        return self._typed(f"arc_get_value({channel!r})", "value", value, (int, float, bool))

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
        value = self._call("arc_get_gpi", self.device.get_gpi, int(pin))
        return self._typed(f"arc_get_gpi({int(pin)})", "value", value, (bool,))

    def _typed(self, call: str, key: str, value: Any, types: tuple[type, ...]) -> Any:
        """`value` if the reply gave one of `types` (a bool is no number unless listed), else
        a ProtocolError: a "false" string must not read as True."""
        if type(value) in types and (type(value) is bool or np.isfinite(value)):
            return value
        raise ProtocolError(f"{self._at}: {call} answered {key} {value!r}, not "
                            f"{' or '.join(t.__name__ for t in types)}", field=key,
                            where=self.config.where)

    # ----------------------------------------------------------------- captures
    @contextmanager
    def capture(self, name: str = "") -> Iterator[Capture]:
        """Record while the block runs; at its end stop, fetch and fill the yielded Capture."""
        cap = Capture(name or self.name)
        project = self._require_project()
        if self._recording:
            raise InstrumentError(f"{self._at}: a capture is already running; captures of one "
                                  f"Otii cannot nest")
        generation = self._generation
        before = clock.now()
        self._call("project_start_recording", project.start_recording)
        after = clock.now()
        self._recording = True
        try:
            rec = self._call("project_get_last_recording", project.get_last_recording)
            if rec is None:
                raise InstrumentError(f"{self._at} reports no recording right after "
                                      f"project_start_recording")
            started = clock.now()
            yield cap
            if self._generation != generation:
                raise InstrumentError(f"{self._at}: the connection broke during capture "
                                      f"{cap.name!r} and was reopened; its recording is "
                                      f"stopped and not used")
        except BaseException:
            self._stop_quietly()
            raise
        ended = clock.now()
        self._call("project_stop_recording", project.stop_recording)
        if self._still_running(rec) is True:        # safe_state() will try to stop it again
            raise InstrumentError(f"{self._at}: recording {rec.name!r} is still running after "
                                  f"project_stop_recording (started again elsewhere?); its data "
                                  f"would be incomplete")
        self._recording = False
        local_t0 = (before + after) / 2
        t0 = local_t0 if self.config.clock == "local" or rec.start_time is None \
            else rec.start_time.timestamp()
        self._fill(cap, rec, t0, {"capture_start": started, "capture_end": ended})

    def _stop_quietly(self) -> None:
        """Stop the recording after a failure inside the capture (the first error wins)."""
        if self._project is not None:
            try:
                self._call("project_stop_recording", self._project.stop_recording)
            except Exception:
                pass
        self._recording = False

    def _fill(self, cap: Capture, rec: Recording, t0: float, marks: dict[str, float]) -> None:
        arc = self.device
        connected = self._call("arc_is_connected", arc.is_connected)
        if not self._typed("arc_is_connected", "connected", connected, (bool,)):
            raise InstrumentConnectError(f"{self._at}: device {arc.name} ({arc.id}) was "
                                         f"disconnected during capture {cap.name!r}")
        first, interval, current = self._analog(rec, "mc")
        if current.size == 0:
            raise InstrumentError(f"{self._at}: capture {cap.name!r} recorded no current "
                                  f"samples (channel mc enabled: {'mc' in self.config.channels})")
        voltage: np.ndarray | float = self._voltage
        if "mv" in self.config.channels:
            _, _, mv = self._analog(rec, "mv")
            if mv.size:
                n = min(mv.size, current.size)
                current, voltage = current[:n], mv[:n]
        start = t0 + first
        cap.recording = rec.name
        cap.rx = [LogLine(t0 + e["timestamp"], e["value"]) for e in self._events(rec, "rx")]
        cap.gpi = {int(ch[1]): [Edge(t0 + e["timestamp"], e["value"])
                                for e in self._events(rec, ch)]
                   for ch in ("i1", "i2") if ch in self.config.channels}
        time_ = np.arange(current.size, dtype=np.float64) * interval
        cap.trace = PowerTrace(time_, current, voltage, t0=start, marks=marks, name=cap.name)

    def _still_running(self, rec: Recording) -> Any:
        try:
            running = self._call("recording_is_running", rec.is_running)
            return self._typed("recording_is_running", "running", running, (bool,))
        except InstrumentError as exc:
            if getattr(exc, "errorcode", None) == "Invalid command":   # Otii < 3.3
                return "Invalid command"
            raise

    # ----------------------------------------------------------------- recorded data
    def _count(self, rec: Recording, channel: str) -> int:
        count = self._call("recording_get_channel_data_count", rec.get_channel_data_count,
                           self.device.id, channel)
        if type(count) is not int or count < 0:
            raise ProtocolError(f"{self._at}: recording_get_channel_data_count({channel!r}) "
                                f"answered {count!r}, not a count", field="count",
                                where=self.config.where)
        return count

    def _fetch(self, recording_id: int, device_id: str, channel: str, index: int,
               count: int) -> Any:
        """The `data` of one recording_get_channel_data request, sent exactly as the vendor
        client's Recording.get_channel_data sends it, on its connection (one request at a time),
        waiting at most FETCH_TIMEOUT_S for each piece of the reply."""
        assert self._otii is not None
        request = {"type": "request", "cmd": "recording_get_channel_data",
                   "data": {"device_id": device_id, "recording_id": recording_id,
                            "channel": channel, "index": index, "count": count}}
        reply = self._otii.connection.send_and_receive(request, FETCH_TIMEOUT_S)
        if reply["type"] == "error":
            raise otii_exception.Otii_Exception(reply)
        return reply["data"]

    def _analog(self, rec: Recording, channel: str,
                limit: int | None = None) -> tuple[float, float, np.ndarray]:
        """(timestamp of the first sample, interval, values) of an analog channel (at most
        `limit` values from its start), in chunks of 40 000 values like the vendor client."""
        arc = self.device
        count = self._count(rec, channel)
        count = count if limit is None else min(count, limit)
        values = np.empty(count, dtype=np.float64)
        first, interval = 0.0, 1.0 / self.config.sample_rate
        for start in range(0, count, oj.CHUNK_SIZE):
            n = min(oj.CHUNK_SIZE, count - start)
            data = self._call("recording_get_channel_data", self._fetch, rec.id, arc.id, channel,
                              start, n)
            try:
                t, dt, chunk = oj.analog_values(data, n, self.config.where)
            except ProtocolError as exc:
                raise ProtocolError(f"{self._at}: bad reply to recording_get_channel_data "
                                    f"({channel!r}, index {start}, count {n}): {exc.message}",
                                    field=exc.field, where=self.config.where) from None
            values[start:start + n] = chunk
            if start == 0:
                first, interval = t, dt
        return first, interval, values

    def _events(self, rec: Recording, channel: str) -> list[dict[str, Any]]:
        """The entries of a log (rx: text) or digital (i1/i2: level) channel, checked; rx text
        stripped of control characters like the vendor client does."""
        if channel not in self.config.channels:
            return []
        count = self._count(rec, channel)
        if not count:
            return []
        data = self._call("recording_get_channel_data", self._fetch, rec.id, self.device.id,
                          channel, 0, count)
        value = str if channel == "rx" else bool
        try:
            items = oj.events(data, value, self.config.where)
        except ProtocolError as exc:
            raise ProtocolError(f"{self._at}: bad reply to recording_get_channel_data "
                                f"({channel!r}): {exc.message}", field=exc.field,
                                where=self.config.where) from None
        if channel == "rx":
            return [{"timestamp": e["timestamp"], "value": remove_control_characters(e["value"])}
                    for e in items]
        return items

    # ----------------------------------------------------------------- safe state and close
    def safe_state(self) -> None:
        """Main output off and no recording running, both read back. Reconnects if the
        connection was lost (once more if it breaks on the way), so the DUT is left unpowered
        whatever happened to the test. After a command went unanswered (it may still run on the
        server), keeps reading back for `settle` s and undoes what a late command did.
        A device that is gone (unplugged) powers nothing: that counts as safe."""
        for attempt in (1, 2):
            try:
                if self._otii is None:
                    self._reopen()
                self._switch_off()
                if self._unanswered:
                    self._watch(self.config.settle)
                self._unanswered = False
                return
            except (InstrumentError, ProtocolError) as exc:
                if getattr(exc, "errorcode", None) in GONE:
                    self._recording = False
                    return
                self._drop()
                if attempt == 2:
                    raise

    def _switch_off(self) -> None:
        """Main off and the recording stopped, each verified by reading it back."""
        arc, project = self.device, self._require_project()
        for _ in range(2):                           # twice: a command may get lost inside
            self._call("arc_set_main", arc.set_main, False)
            if not self._main_on():
                break
        else:
            raise InstrumentError(f"{self._at}: main output of {arc.name} still on after "
                                  f"arc_set_main(False), twice")
        if self._recording:
            self._call("project_stop_recording", project.stop_recording)
        for _ in range(2):
            if not self._running():
                break
            self._call("project_stop_recording", project.stop_recording)
        else:
            raise InstrumentError(f"{self._at}: a recording still runs after "
                                  f"project_stop_recording, twice")
        self._recording = False

    def _main_on(self) -> bool:
        main = self._call("arc_get_main", self.device.get_main)
        return self._typed("arc_get_main", "value", main, (bool,))

    def _running(self) -> bool:
        """Whether the active project's last recording runs (True when the server cannot
        say: Otii < 3.3, so that a stop is sent anyway)."""
        project = self._require_project()
        rec = self._call("project_get_last_recording", project.get_last_recording)
        return rec is not None and self._still_running(rec) is not False

    def _watch(self, settle: float) -> None:
        """Read main and recording back until `settle` s pass with both off, switching off
        again whatever a late command switched on (SETTLE_FIXES times at most)."""
        fixes = 0
        quiet = Deadline(settle)
        while not quiet.expired:
            time.sleep(min(SETTLE_POLL_S, quiet.remaining))
            if not (self._main_on() or self._running()):
                continue
            fixes += 1
            if fixes > SETTLE_FIXES:
                raise InstrumentError(f"{self._at}: main output or recording came back on "
                                      f"{fixes} times after being switched off (another client "
                                      f"driving this Otii?)")
            self._switch_off()
            quiet = Deadline(settle)

    def close(self) -> None:
        """Safe state, return the license(s) reserved here, disconnect. Idempotent."""
        failure: Exception | None = None
        try:
            if self._otii is not None or self._licenses or self._lost:
                self.safe_state()
        except Exception as exc:
            failure = exc
        failure = self._release() or failure
        self._lost = False
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
            self._licenses, self._logged_in_here = [], False
        self._disconnect()
        return failure

    def __enter__(self) -> OtiiPower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pick_device(devices: list[otii_arc.Arc], want: str = "") -> otii_arc.Arc | None:
    """The device named or with id `want`, or the first Arc/Ace when `want` is ""."""
    for dev in devices:
        if (not want and dev.type in ("Arc", "Ace")) or want in (dev.id, dev.name):
            return dev
    return None


def _reads_only(cmd: str) -> bool:
    """Whether `cmd` only reads (arc_get_main, recording_is_running...): run late, it changes
    nothing, so safe_state() need not watch for it."""
    return cmd.split("_")[1:2] in (["get"], ["is"])


def _wanted(want: str) -> str:
    return f"device {want!r}" if want else "Arc or Ace"


def _listed(devices: list[otii_arc.Arc]) -> str:
    return ", ".join(f"{d.name} ({d.type}, {d.id})" for d in devices) or "none"


def probe(host: str, port: int, timeout: float, name: str) -> None:
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
    (`message` is the vendor exception's text)."""
    detail = str(message).replace("\t", "; ")
    text = f"{where} refused {call}: {code}" + (f" ({detail})" if detail else "")
    cls = InstrumentConnectError if code == "Device not connected" else InstrumentError
    return _tag(cls(text), cmd, code)


def _checked(cfg: OtiiConfig) -> OtiiConfig:
    """`cfg` if its values make sense (channel names, positive numbers), else ValueError."""
    unknown = [c for c in cfg.channels if c not in CHANNELS]
    if unknown:
        raise ValueError(f"channels: unknown channel(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(CHANNELS)}")
    if "mc" not in cfg.channels:
        raise ValueError("channels: must include 'mc' (the current a capture is made of)")
    for key in ("voltage", "max_current", "sample_rate", "connect_timeout", "uart_baudrate"):
        if not getattr(cfg, key) > 0:
            raise ValueError(f"{key}: must be positive, got {getattr(cfg, key)!r}")
    if not cfg.settle >= 0:
        raise ValueError(f"settle: must be 0 or more, got {cfg.settle!r}")
    return cfg
