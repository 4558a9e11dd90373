"""The rig doctor (`hil check`): open every resource of a rig as a test session would, and say for
each what it is, whether it answered, its versions, a round-trip time and, for simulated
resources, where the simulator listens.

Probing is by what a handle can do, not by its class: an instrument with an Otii device reports
the device and firmware and times a read; a TiA client times a control command; a bus (anything
with `write` and `read`) gets one line ending, as a person would press Enter in a terminal, and
its first reply is shown. Any other handle (a lab's own kind) is opened and closed.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from hil.errors import HilError
from hil.rig.loader import open_resource, simulators_for
from hil.rig.schema import Resource, Rig
from hil.rig.simulators import Simulators

ROUND_TRIPS = 3           # timed requests per resource; the median is reported
POKE_TIMEOUT_S = 1.0      # how long a bus may stay silent after the line ending
REPLY_SHOWN = 60          # characters of a bus's reply shown (its last non-empty line)
REPLY_WINDOW_S = 0.3      # how long the rest of a reply is collected after its first byte
REPLY_BYTES = 4096


@dataclass
class Probe:
    """What the doctor found out about one resource. `ok`: it opened (and closed) without error;
    `answered`: None when the kind has no way to ask (open is then all there is to know)."""

    name: str
    kind: str
    what: str
    simulated: bool
    ok: bool = False
    answered: bool | None = None
    open_s: float = 0.0
    latency_s: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    listening: list[str] = field(default_factory=list)
    reply: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OpenResult:
    """What happened when one resource was opened and closed (kept for older callers)."""

    name: str
    ok: bool
    seconds: float
    error: str = ""


def _toml_value(value: Any) -> str:
    """A setting as it would be written in TOML (strings quoted, true/false lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, list, dict)):
        return json.dumps(value)
    return repr(value)


def describe(resource: Resource) -> list[str]:
    """Lines describing one resource: its table, kind and every setting (defaults included)."""
    lines = [f"[{resource.name}]  kind = {_toml_value(resource.kind)}"
             + ("  (simulated)" if resource.simulated else "")]
    lines += [f"    {key} = {_toml_value(value)}" for key, value in resource.settings.items()]
    return lines


def what(resource: Resource) -> str:
    """The resource in a few words: its kind and where it is (url, or host:port)."""
    s = resource.settings
    if "url" in s:
        where = str(s["url"])
    elif "host" in s:
        where = str(s["host"]) if resource.simulated or not s.get("port") \
            else f"{s['host']}:{s['port']}"
    else:
        where = ""
    return f"{resource.kind} {where}".strip()


def error_text(exc: BaseException) -> str:
    """An error in one line: hil's own errors as they are, anything else with its type."""
    text = str(exc) or "(no message)"
    return text if isinstance(exc, HilError) else f"{type(exc).__name__}: {text}"


# ------------------------------------------------------------------ simulators
def address(simulator: Any) -> str:
    """Where a simulator listens: a pty path, a URL, or host:port."""
    for attr in ("path", "url"):
        value = getattr(simulator, attr, None)
        if isinstance(value, str) and value:
            return value
    host, port = getattr(simulator, "host", None), getattr(simulator, "port", None)
    return f"{host}:{port}" if host is not None and port is not None else type(simulator).__name__


def running(sims: Simulators) -> dict[str, str]:
    """The simulators running on `sims`, by their bench key, with their addresses."""
    if not sims.started:
        return {}
    started = getattr(sims.bench, "_sims", {})      # VirtualBench keeps them by key
    return {key: address(sim) for key, sim in list(started.items())}


# ------------------------------------------------------------------ what a handle can tell
def identify(handle: Any) -> dict[str, str]:
    """Versions and identity a handle can report without changing anything (may talk to it)."""
    found: dict[str, str] = {}
    device = getattr(type(handle), "device", None)
    if isinstance(device, property) and hasattr(handle, "config"):      # an Otii
        arc = handle.device
        found["device"] = f"{arc.name} ({arc.type})"
        version = arc.get_version()
        found["hardware"] = str(version.get("hw_version", "?"))
        found["firmware"] = str(version.get("fw_version", "?"))
    meta = getattr(handle, "meta", None)
    if meta is not None and hasattr(handle, "command"):                   # a TiA client
        found["protocol"] = "TiA 1.0"
        found["signals"] = ", ".join(f"{s.type} {len(s.channels)}ch@{s.sampling_rate:g}"
                                     for s in getattr(meta, "signals", ()))
    return found


def _median_time(call: Any) -> float:
    times = []
    for _ in range(ROUND_TRIPS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def round_trip(handle: Any, poke: bool) -> tuple[bool | None, float | None, str]:
    """(answered, median round trip in s, first reply) for a handle that can be asked."""
    if hasattr(handle, "config") and hasattr(handle, "is_on"):            # an Otii
        return True, _median_time(lambda: handle.is_on), ""
    if hasattr(handle, "meta") and hasattr(handle, "command"):            # a TiA client
        return True, _median_time(lambda: handle.command("CheckProtocolVersion")), ""
    if poke and hasattr(handle, "write") and hasattr(handle, "read") and hasattr(handle, "drain"):
        return _poke(handle)
    return None, None, ""


def _poke(bus: Any) -> tuple[bool, float | None, str]:
    """Send one line ending; the time to the first byte back and the reply's last line."""
    from hil.errors import BusError
    bus.drain()
    start = time.perf_counter()
    bus.write(getattr(bus, "line_ending", "\n"))
    try:
        first = bus.read(1, timeout=POKE_TIMEOUT_S)
    except BusError:
        return False, None, ""
    latency = time.perf_counter() - start
    reply = first
    deadline = time.monotonic() + REPLY_WINDOW_S      # what else the reply says, briefly
    while time.monotonic() < deadline and len(reply) < REPLY_BYTES:
        try:
            reply += bus.read(1, timeout=max(0.0, deadline - time.monotonic()))
        except BusError:
            break
    lines = [ln.strip() for ln in reply.decode("utf-8", "replace").splitlines() if ln.strip()]
    return True, latency, (lines[-1] if lines else "")[:REPLY_SHOWN]


# ------------------------------------------------------------------ probing a rig
def probe(resource: Resource, sims: Simulators, *, poke: bool = True) -> Probe:
    """Open one resource, ask it what it can tell, close it; failures become the error text."""
    result = Probe(resource.name, resource.kind, what(resource), resource.simulated)
    before = running(sims)
    start = time.perf_counter()
    try:
        handle = open_resource(resource, sims)
    except Exception as exc:
        result.open_s = time.perf_counter() - start
        result.error = error_text(exc)
        return result
    result.open_s = time.perf_counter() - start
    result.listening = [f"{key} at {where}" for key, where in running(sims).items()
                        if key not in before]
    try:
        result.versions = identify(handle)
        result.answered, result.latency_s, result.reply = round_trip(handle, poke)
    except Exception as exc:
        result.answered = False
        result.error = f"opened, but did not answer: {error_text(exc)}"
    try:
        handle.close()
    except Exception as exc:
        result.error = result.error or f"close failed: {error_text(exc)}"
    result.ok = not result.error
    return result


def probe_all(rig: Rig, *, poke: bool = True, wait: float = 0.0) -> list[Probe]:
    """Probe every resource of `rig` in file order, the simulators started once for the rig
    (and its labgrid place, if it names one, held meanwhile: waiting up to `wait` s)."""
    from hil.rig import labgrid
    with labgrid.held(rig, wait) as placed, simulators_for(placed) as sims:
        return [probe(resource, sims, poke=poke) for resource in placed.resources.values()]


def try_open(resource: Resource, sims: Simulators) -> OpenResult:
    """Open one resource and close it again; any failure becomes the result's error text."""
    p = probe(resource, sims, poke=False)
    return OpenResult(p.name, p.ok, p.open_s, p.error)


def open_all(rig: Rig) -> list[OpenResult]:
    """Open every resource of `rig` in file order, as a test session would."""
    return [OpenResult(p.name, p.ok, p.open_s, p.error) for p in probe_all(rig, poke=False)]
