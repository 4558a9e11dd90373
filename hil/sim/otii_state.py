"""What the simulated Otii's commands act on and how they read their requests.

`OtiiState` is everything one Otii application holds (devices, projects, licenses, battery
emulators). `Args` reads a request's `data` the way a real server checks it, raising the error
replies of spec §6 (missing key, wrong JSON type, value out of range). `COMMANDS` is the registry
of handlers `(state, args) -> reply data`, filled by hil.sim.otii_commands (import that module to
get all 99 commands of otii-tcp-client 1.0.13).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hil import clock
from hil.protocols.otii_json import RequestError, json_type
from hil.sim.otii_device import CHANNELS, Project, Recording, SimDevice, TextCache, Track

_MISSING = object()

#: Arc/Ace limits the simulator enforces (Invalid key value outside them).
VOLTAGE_RANGE = {"Arc": (0.5, 5.0), "Ace": (0.5, 25.0)}
MAX_CURRENT_RANGE = (0.001, 5.0)
EXP_VOLTAGE_RANGE = (1.2, 5.0)
BAUD_RANGE = (110, 4_000_000)

#: Commands a server refuses with `Not logged in` until `otii_login` succeeds.
NEEDS_LOGIN = frozenset({"otii_get_licenses", "otii_reserve_license", "otii_return_license",
                         "otii_has_license"})

#: Commands that servers older than the given version answer with `Invalid command` (spec §6).
INTRODUCED = {"otii_is_logged_in": (3, 5, 5), "otii_has_license": (3, 5, 5),
              "recording_is_running": (3, 3, 0), "project_create_user_log": (3, 6, 0),
              "recording_append_user_log": (3, 6, 0), "recording_get_user_log_data": (3, 6, 0),
              "recording_offset_user_log": (3, 6, 0)}

LICENSE_COVERS = {"Admin": ("Automation", "Battery"), "All": ("Automation", "Battery"),
                  "Enterprise": ("Automation", "Battery"), "Automation": ("Automation",),
                  "Battery": ("Battery",)}

BATTERY_PROFILES = [
    {"battery_profile_id": "1ce61608-9164-41a9-affb-221f1ea9f187", "name": "CR2032-NoName",
     "manufacturer": "NoName", "model": "CR2032", "capacity": 225.0, "voltage": 3.0},
    {"battery_profile_id": "b2ce2796-80f7-4386-8759-be31466927b8", "name": "CR2450-NoName",
     "manufacturer": "NoName", "model": "CR2450", "capacity": 620.0, "voltage": 3.0},
]


class Args:
    """Typed access to a request's `data`, raising the error replies a real server sends."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def _get(self, key: str, expected: str, ok: Callable[[Any], bool], default: Any) -> Any:
        if key not in self.data or (self.data[key] is None and default is not _MISSING):
            if default is _MISSING:
                raise RequestError("Missing key in request", key=key)
            return default
        value = self.data[key]
        if not ok(value):
            raise RequestError("Invalid key type", key=key, expected_type=expected,
                               received_type=json_type(value))
        return value

    def text(self, key: str, default: Any = _MISSING) -> str:
        return self._get(key, "string", lambda v: isinstance(v, str), default)

    def flag(self, key: str, default: Any = _MISSING, ints: bool = False) -> bool:
        ok = (lambda v: isinstance(v, (bool, int))) if ints else (lambda v: isinstance(v, bool))
        return bool(self._get(key, "boolean", ok, default))

    def number(self, key: str, lo: float | None = None, hi: float | None = None,
               default: Any = _MISSING) -> float:
        v = self._get(key, "number", _is_number, default)
        if v is not None and ((lo is not None and v < lo) or (hi is not None and v > hi)
                              or not math.isfinite(v)):
            raise RequestError("Invalid key value", key=key, value=v)
        return v

    def integer(self, key: str, lo: int | None = None, hi: int | None = None,
                default: Any = _MISSING) -> int:
        v = self._get(key, "number", lambda x: _is_number(x) and float(x).is_integer(), default)
        if v is not None and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            raise RequestError("Invalid key value", key=key, value=v)
        return v if v is None else int(v)

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        v = self.text(key)
        if v not in options:
            raise RequestError("Invalid key value", key=key, value=v)
        return v

    def channel(self, key: str = "channel") -> str:
        return self.choice(key, tuple(CHANNELS))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class Bulk:
    """An analog data reply whose numbers are already JSON text (see otii_json.analog_reply)."""

    timestamp: float
    interval: float
    numbers: bytes


@dataclass
class OtiiState:
    """Everything one simulated Otii application holds. Guarded by the server's lock."""

    devices: list[SimDevice]
    speed: float = 1.0
    seed: int = 1
    otii_version: str = "3.6.0"
    logged_in: bool = False
    username: str = "sim-user"                  # who is logged in (when logged_in)
    accounts: dict[str, str] | None = None     # username -> password; None accepts anyone
    licenses: list[dict[str, Any]] = field(default_factory=lambda: [
        {"id": 1, "type": "Automation", "available": True, "reserved_to": "", "hostname": "",
         "addons": []}])
    strict_license: bool = False
    projects: dict[int, Project] = field(default_factory=dict)
    active: int | None = None
    saved: dict[str, Project] = field(default_factory=dict)
    emulators: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache: TextCache = field(default_factory=TextCache)
    now: Callable[[], float] = clock.now
    _ids: dict[str, int] = field(default_factory=dict)

    def next_id(self, what: str) -> int:
        self._ids[what] = self._ids.get(what, 0) + 1
        return self._ids[what]

    # ----------------------------------------------------------------- lookups
    def device(self, a: Args, key: str = "device_id") -> SimDevice:
        device_id = a.text(key)
        for dev in self.devices:
            if dev.info.device_id == device_id and dev.connected:
                return dev
        raise RequestError("Device not connected", device_id=device_id)

    def project(self, a: Args) -> Project:
        pid = a.integer("project_id")
        if pid not in self.projects:
            raise RequestError("Project does not exist")
        return self.projects[pid]

    def active_project(self) -> Project:
        if self.active is None:
            self.active = self.new_project().id
        return self.projects[self.active]

    def new_project(self) -> Project:
        proj = Project(self.next_id("project"))
        self.projects[proj.id] = proj
        return proj

    def recording(self, a: Args) -> tuple[Project, Recording]:
        rid = a.integer("recording_id")
        for proj in self.projects.values():
            for rec in proj.recordings:
                if rec.id == rid:
                    return proj, rec
        raise RequestError("Invalid key value", key="recording_id", value=rid)

    def track(self, a: Args) -> tuple[Recording, Track]:
        _, rec = self.recording(a)
        device_id = a.text("device_id")
        channel = a.channel()
        for dev in self.devices:
            if dev.info.device_id == device_id:
                return rec, rec.track(dev, channel)
        raise RequestError("Device not connected", device_id=device_id)

    def has_license(self, kind: str) -> bool:
        return any(lic["reserved_to"] and kind in LICENSE_COVERS.get(lic["type"], ())
                   for lic in self.licenses)

    def running(self) -> list[Recording]:
        return [p.running for p in self.projects.values() if p.running is not None]

    # ----------------------------------------------------------------- time passes
    def tick(self, now: float, warm: bool = False) -> None:
        """Let time pass up to `now`: over-current cut-offs, then recording samples."""
        for dev in self.devices:
            dev.check_overcurrent(now)
        for rec in self.running():
            rec.materialise(now)
            if warm:
                rec.warm_cache(now)

    def refuses(self, cmd: str) -> RequestError | None:
        """Why this server would refuse `cmd` before looking at its data, if it would."""
        if cmd not in COMMANDS or _version(self.otii_version) < INTRODUCED.get(cmd, (0,)):
            return RequestError("Invalid command")
        if cmd in NEEDS_LOGIN and not self.logged_in:
            return RequestError("Not logged in")
        if self.strict_license and cmd.split("_")[0] in ("arc", "project", "recording",
                                                         "battery") \
                and not self.has_license("Automation"):
            return RequestError("No license")
        return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


Handler = Callable[[OtiiState, Args], "dict[str, Any] | Bulk"]
COMMANDS: dict[str, Handler] = {}


def command(*names: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            COMMANDS[name] = fn
        return fn
    return register


def battery_profile(a: Args, key: str = "battery_profile_id") -> dict[str, Any]:
    """The battery profile a request names (Invalid key value if there is none)."""
    pid = a.text(key)
    for p in BATTERY_PROFILES:
        if p["battery_profile_id"] == pid:
            return p
    raise RequestError("Invalid key value", key=key, value=pid)
