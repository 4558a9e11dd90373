"""Labs over hosts: a rig file naming a labgrid place, acquired through labgrid's coordinator.

`[rig] labgrid = {coordinator = "HOST:PORT", place = "NAME"}` (or `tags = {board = "nrf52"}`)
says which place of the lab the rig is. A table value "labgrid:NAME" in `url` or `host` is
filled in from the place's exported resource NAME (its name in the place, else its class) once
the place is acquired:

* a NetworkSerialPort becomes `rfc2217://host:port` (protocol rfc2217) or `socket://host:port`
  (protocol raw) in a serial `url`, or host and port in a `host`/`port` pair (raw only); its
  `speed` sets the table's `baudrate`;
* a NetworkService (any TCP service: Otii TCP server, TiA, STTP, ZeroMQ) becomes its address and
  port in `host`/`port`, `socket://address:port` in a serial `url`, else `tcp://address:port`.

Every acquisition goes through a labgrid reservation (filter: the tags, or the place's name), so
waiting is fair and a waiter that dies stops counting when its reservation expires. This client
calls itself `HOST:PID/USER`: labgrid keeps a place acquired when its holder vanishes, so a place
held by a dead process of this host is released rather than honoured. The labgrid package is
imported only when a rig names a place (it is an optional extra).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import getpass
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from hil.errors import RigError
from hil.rig.schema import Resource, Rig

PREFIX = "labgrid:"
KEY = "labgrid"                  # the key of the [rig] table
DEFAULT_PORT = 20408             # labgrid's coordinator port
CALL_TIMEOUT = 15.0              # seconds one coordinator request may take
POLL = 0.25                      # seconds between looks at a waiting reservation
PROGRESS_EVERY = 10.0            # seconds between "still waiting" lines
SPEC_KEYS = ("coordinator", "place", "tags")
TAG_KEY = re.compile(r"[a-z][a-z0-9_]+")
HOLDER = re.compile(r"(?P<host>[^/]+?)(?::(?P<pid>\d+))?/(?P<user>.+)")

Progress = Callable[[str], None]


# ------------------------------------------------------------------ the rig file's side
@dataclass(frozen=True)
class PlaceSpec:
    """Which labgrid place a rig is: by name, or any place carrying all of `tags`."""

    coordinator: str = ""        # HOST[:PORT]; empty: $LG_COORDINATOR, else 127.0.0.1:20408
    place: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.coordinator or os.environ.get("LG_COORDINATOR") or f"127.0.0.1:{DEFAULT_PORT}"

    @property
    def filter(self) -> dict[str, str]:
        """The reservation filter: the tags, or the place's name (labgrid's `name` tag)."""
        return dict(self.tags) if self.tags else {"name": self.place}

    def __str__(self) -> str:
        if self.place:
            return f"labgrid place {self.place}"
        return "a labgrid place tagged " + ", ".join(f"{k}={v}" for k, v in self.tags.items())


def check_spec(table: Any, file: str) -> PlaceSpec:
    """The `labgrid` value of a `[rig]` table, checked: a coordinator and a place or tags."""
    def where(message: str, key: str = KEY) -> RigError:
        return RigError(message, file=file, table="rig", key=key)
    if not isinstance(table, dict):
        raise where('expected a table such as { coordinator = "HOST:PORT", place = "NAME" }, '
                    f"got {table!r}")
    for key in table:
        if key not in SPEC_KEYS:
            raise where(f"unknown key {key!r} in {KEY}; it knows: {', '.join(SPEC_KEYS)}")
    coordinator, place, tags = (table.get(k, d) for k, d in
                                (("coordinator", ""), ("place", ""), ("tags", {})))
    if not isinstance(coordinator, str):
        raise where(f"{KEY}.coordinator: expected \"HOST:PORT\", got {coordinator!r}")
    host, _, port = coordinator.rpartition(":") if ":" in coordinator else (coordinator, "", "")
    if coordinator and (not host or (port and not (port.isdigit() and 0 < int(port) < 65536))):
        raise where(f"{KEY}.coordinator: expected \"HOST:PORT\", got {coordinator!r}")
    if not isinstance(place, str):
        raise where(f"{KEY}.place: expected a place name, got {place!r}")
    if not isinstance(tags, dict) or not all(isinstance(k, str) and TAG_KEY.fullmatch(k)
                                             and isinstance(v, str) and v
                                             for k, v in tags.items()):
        raise where(f"{KEY}.tags: expected a table of lower-case words to non-empty strings, "
                    f"e.g. {{ board = \"nrf52\" }}, got {tags!r}")
    if bool(place) == bool(tags):
        raise where(f"{KEY}: give either place = \"NAME\" or tags = {{ ... }} (one of the two)")
    return PlaceSpec(coordinator, place, dict(tags))


def check_references(rig: Rig) -> None:
    """Every "labgrid:NAME" value sits in a `url` or `host`, in a rig that names a place."""
    for resource in rig.resources.values():
        for key, value in resource.settings.items():
            if not (isinstance(value, str) and value.startswith(PREFIX)):
                continue
            if key not in ("url", "host"):
                raise resource.error(f"{value!r}: a {PREFIX} value can only give a url or a "
                                     "host (and its port)", key=key)
            if not value[len(PREFIX):]:
                raise resource.error(f"{value!r} names no resource: write {PREFIX}NAME, NAME "
                                     "being a resource of the place (or its class)", key=key)
            if rig.labgrid is None:
                raise resource.error(f"{value!r}, but [rig] names no labgrid place: add "
                                     f'{KEY} = {{ coordinator = "HOST:PORT", place = "NAME" }}',
                                     key=key)


# ------------------------------------------------------------------ mapping exported resources
@dataclass(frozen=True)
class Exported:
    """One resource of an acquired place, as its exporter describes it."""

    name: str                    # its name in the place (a match's rename, else its own)
    cls: str                     # labgrid class: NetworkSerialPort, NetworkService, ...
    params: Mapping[str, Any]
    path: str = ""               # exporter/group/class/name
    avail: bool = True

    def __str__(self) -> str:
        return self.name if self.name == self.cls else f"{self.name} ({self.cls})"


def resolve(rig: Rig, exported: Sequence[Exported], place: str) -> Rig:
    """`rig` with each "labgrid:NAME" value (and its port, baudrate) filled in from `exported`."""
    resources = {}
    for name, resource in rig.resources.items():
        updates: dict[str, Any] = {}
        for key, value in resource.settings.items():
            if isinstance(value, str) and value.startswith(PREFIX):
                found = _find(exported, value[len(PREFIX):], resource, key, place)
                updates.update(_settings(resource, key, found, place))
        resources[name] = (replace(resource, settings={**resource.settings, **updates})
                           if updates else resource)
    return replace(rig, resources=resources)


def _find(exported: Sequence[Exported], wanted: str, resource: Resource, key: str,
          place: str) -> Exported:
    found = ([e for e in exported if e.name == wanted]
             or [e for e in exported if e.cls == wanted])
    if len(found) > 1:
        raise resource.error(f"labgrid place {place} has several resources of class {wanted} "
                             f"({', '.join(e.name for e in found)}): name one", key=key)
    if not found:
        have = ", ".join(map(str, exported)) or "none (is its exporter running?)"
        raise resource.error(f"labgrid place {place} has no resource named or of class "
                             f"{wanted!r}; it has: {have}", key=key)
    chosen = found[0]
    if not chosen.avail:
        raise resource.error(f"resource {chosen.path or chosen} of labgrid place {place} is not "
                             "available (its exporter is gone or the device unplugged)", key=key)
    if chosen.params.get("extra", {}).get("proxy_required"):
        raise resource.error(f"resource {chosen.path or chosen} of labgrid place {place} is "
                             "exported in isolated mode (reachable only through an SSH proxy); "
                             "hil connects directly: export it without --isolated", key=key)
    return chosen


def _endpoint(found: Exported, resource: Resource, key: str) -> tuple[str, int]:
    host = found.params.get("host" if found.cls == "NetworkSerialPort" else "address")
    port = found.params.get("port")
    if not isinstance(host, str) or not host or not isinstance(port, int) or not 0 < port < 65536:
        raise resource.error(f"labgrid resource {found} exports no usable host and port "
                             f"(its parameters: {dict(found.params)})", key=key)
    return host, port


def _settings(resource: Resource, key: str, found: Exported, place: str) -> dict[str, Any]:
    """The table settings one exported resource gives (`url`, or `host` and `port`)."""
    if found.cls not in ("NetworkSerialPort", "NetworkService"):
        raise resource.error(f"labgrid resource {found} of place {place} is a {found.cls}; hil "
                             "maps NetworkSerialPort and NetworkService resources", key=key)
    host, port = _endpoint(found, resource, key)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    serial_line = found.cls == "NetworkSerialPort"
    protocol = found.params.get("protocol", "rfc2217") if serial_line else "raw"
    if protocol not in ("rfc2217", "raw"):
        raise resource.error(f"labgrid resource {found} speaks protocol {protocol!r}; hil knows "
                             "rfc2217 and raw", key=key)
    settings: dict[str, Any] = {}
    if serial_line and "baudrate" in resource.settings and isinstance(found.params.get("speed"),
                                                                      int):
        settings["baudrate"] = found.params["speed"]
    if key == "url" and resource.kind == "serial":
        scheme = "rfc2217" if protocol == "rfc2217" else "socket"
        return {**settings, "url": f"{scheme}://{netloc}"}
    if key == "url":
        if serial_line:
            raise resource.error(f"labgrid resource {found} is a serial line; a "
                                 f"'{resource.kind}' url wants a network service", key=key)
        return {"url": f"tcp://{netloc}"}
    if protocol == "rfc2217":
        raise resource.error(f"labgrid resource {found} speaks RFC 2217 (telnet framing): open "
                             'it with kind = "serial" and url = "labgrid:..."', key=key)
    if "port" not in resource.settings:
        raise resource.error(f"kind '{resource.kind}' has no port key for labgrid resource "
                             f"{found}", key=key)
    return {**settings, "host": host, "port": port}


# ------------------------------------------------------------------ the coordinator's side
@dataclass(frozen=True)
class Holder:
    """Who has acquired a place, from labgrid's "HOST/USER" (hil: "HOST:PID/USER")."""

    raw: str
    since: float = 0.0

    @property
    def parts(self) -> tuple[str, int | None, str]:
        m = HOLDER.fullmatch(self.raw)
        if m is None:
            return self.raw, None, "?"
        return m["host"], int(m["pid"]) if m["pid"] else None, m["user"]

    def __str__(self) -> str:
        host, pid, user = self.parts
        since = datetime.fromtimestamp(self.since).isoformat(timespec="seconds")
        return f"{user} on {host}{f' (pid {pid})' if pid else ''} since {since}"


def identity() -> tuple[str, str]:
    """(host, user) as labgrid-client names them ($LG_HOSTNAME, $LG_USERNAME override)."""
    return (os.environ.get("LG_HOSTNAME") or socket.gethostname(),
            os.environ.get("LG_USERNAME") or getpass.getuser())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def client_loop() -> asyncio.AbstractEventLoop:
    """The event loop every labgrid client of this process runs on, in a daemon thread of its
    own (gRPC's asyncio layer works with one loop per process: a second one fails its calls)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, daemon=True,
                             name="hil labgrid client").start()
        return _loop


class Coordinator:
    """labgrid's client session, on `client_loop()`: the gRPC stream keeps being served
    (keep-alives, place updates) however long a test runs, and no asyncio loop of the test
    process is touched. Every call waits at most `timeout` seconds."""

    def __init__(self, address: str, timeout: float = CALL_TIMEOUT,
                 name: tuple[str, str] | None = None) -> None:
        try:
            from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2
        except ImportError as exc:
            raise RigError(f"a rig names a labgrid place, but labgrid cannot be imported ({exc});"
                           " install it: pip install 'hil[labgrid]'") from None
        self.pb2, self.address, self.timeout = pb2, address, timeout
        host, user = name or (f"{identity()[0]}:{os.getpid()}", identity()[1])
        self.name = f"{host}/{user}"
        self.loop = client_loop()
        self.session = self._call(self._connect(host, user), "connect")

    async def _connect(self, host: str, user: str) -> Any:
        from labgrid.remote.client import ClientSession
        from labgrid.util.proxy import proxymanager

        class Session(ClientSession):          # our name: HOST:PID/USER
            def gethostname(self) -> str:
                return host

            def getuser(self) -> str:
                return user
        address = proxymanager.get_grpc_address(self.address, default_port=DEFAULT_PORT)
        session = Session(address=address, loop=asyncio.get_running_loop())
        await _own_connection(session)
        try:
            await session.start()
        except Exception as exc:
            await session.close()
            raise RigError(f"cannot reach the labgrid coordinator at {self.address} "
                           f"({type(exc).__name__}: {exc}); is labgrid-coordinator running "
                           "there, and is the address right?") from None
        return session

    def _call(self, coroutine: Any, what: str) -> Any:
        """Run `coroutine` on the client's loop; its failure as a RigError naming the request."""
        import grpc
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RigError(f"labgrid coordinator {self.address} did not answer {what} within "
                           f"{self.timeout:g} s") from None
        except grpc.aio.AioRpcError as exc:
            raise RigError(f"labgrid coordinator {self.address} refused {what}: "
                           f"{exc.details()}") from None
        except RigError:
            raise
        except Exception as exc:    # labgrid's ServerError/UserError, a lost connection
            raise RigError(f"labgrid coordinator {self.address}: {what} failed: "
                           f"{type(exc).__name__}: {exc}") from None

    async def _synced(self) -> Any:
        if not await self.session.sync_with_coordinator():
            raise RigError(f"lost the connection to labgrid coordinator {self.address}")
        return self.session

    def places(self) -> dict[str, Any]:
        """Every place (labgrid `Place` objects, as of now) by name."""
        async def get() -> dict[str, Any]:
            return dict((await self._synced()).places)
        return self._call(get(), "the list of places")

    def reserve(self, tags: Mapping[str, str]) -> str:
        """A reservation for a place carrying `tags`; its token."""
        async def create() -> str:
            fltr = self.pb2.Reservation.Filter(filter=dict(tags))
            reply = await self.session.stub.CreateReservation(
                self.pb2.CreateReservationRequest(filters={"main": fltr}, prio=0.0))
            return reply.reservation.token
        return self._call(create(), "a reservation")

    def poll(self, token: str) -> tuple[str, str]:
        """(state, allocated place or "") of a reservation; polling keeps it from expiring."""
        async def poll() -> tuple[str, str]:
            reply = await self.session.stub.PollReservation(
                self.pb2.PollReservationRequest(token=token))
            from labgrid.remote.common import ReservationState
            res = reply.reservation
            return ReservationState(res.state).name, res.allocations.get("main", "")
        return self._call(poll(), "a reservation poll")

    def reservations(self) -> list[tuple[str, str, str]]:
        """(token, owner, state) of every reservation."""
        async def get() -> list[tuple[str, str, str]]:
            from labgrid.remote.common import ReservationState
            reply = await self.session.stub.GetReservations(self.pb2.GetReservationsRequest())
            return [(r.token, r.owner, ReservationState(r.state).name)
                    for r in reply.reservations]
        return self._call(get(), "the list of reservations")

    def resource_paths(self) -> list[str]:
        """exporter/group/class/name of every resource the coordinator knows."""
        async def get() -> list[str]:
            session = await self._synced()
            return sorted(f"{exporter}/{group}/{entry.cls}/{name}"
                          for exporter, groups in session.resources.items()
                          for group, entries in groups.items()
                          for name, entry in entries.items() if entry.data.get("cls"))
        return self._call(get(), "the list of resources")

    def cancel(self, token: str) -> None:
        async def cancel() -> None:
            await self.session.stub.CancelReservation(
                self.pb2.CancelReservationRequest(token=token))
        self._call(cancel(), f"cancelling reservation {token}")

    def acquire(self, place: str) -> None:
        async def acquire() -> None:
            await self.session.stub.AcquirePlace(self.pb2.AcquirePlaceRequest(placename=place))
            await self._synced()
        self._call(acquire(), f"acquiring place {place}")

    def allow(self, place: str, user: str) -> None:
        async def allow() -> None:
            await self.session.stub.AllowPlace(
                self.pb2.AllowPlaceRequest(placename=place, user=user))
        self._call(allow(), f"allowing {user} on place {place}")

    def release(self, place: str, fromuser: str | None = None) -> None:
        """Release `place` (only if `fromuser` still holds it, when given)."""
        async def release() -> None:
            request = self.pb2.ReleasePlaceRequest(placename=place)
            if fromuser is not None:
                request.fromuser = fromuser
            await self.session.stub.ReleasePlace(request)
            await self._synced()
        self._call(release(), f"releasing place {place}")

    def exported(self, place: str) -> list[Exported]:
        """The resources `place` acquired, as their exporters describe them."""
        async def get() -> list[Exported]:
            session = await self._synced()
            p = session.places[place]
            found = []
            for path in p.acquired_resources:
                exporter, group, cls, name = path
                match = p.getmatch(path)
                shown = match.rename if match is not None and match.rename else name
                entry = session.resources.get(exporter, {}).get(group, {}).get(name)
                found.append(Exported(shown, cls, dict(entry.params) if entry else {},
                                      "/".join(path), bool(entry and entry.avail)))
            return found
        return self._call(get(), f"the resources of place {place}")

    def close(self) -> None:
        """Close the stream and the channel. Never raises."""
        async def stop() -> None:
            try:
                await self.session.stop()
            finally:
                await self.session.close()
        try:
            self._call(stop(), "closing the session")
        except RigError:
            pass


async def _own_connection(session: Any) -> None:
    """Give `session` a TCP connection of its own. gRPC shares one connection among channels
    to the same address, and the coordinator tells clients apart by connection: a second
    client of this process would otherwise be refused (two places held at once)."""
    import grpc
    from labgrid.remote.generated.labgrid_coordinator_pb2_grpc import CoordinatorStub
    options = [("grpc.keepalive_time_ms", 7500), ("grpc.keepalive_timeout_ms", 10000),
               ("grpc.http2.ping_timeout_ms", 10000), ("grpc.http2.max_pings_without_data", 0),
               ("grpc.use_local_subchannel_pool", 1)]     # labgrid-client's, and our own
    await session.channel.close()
    session.channel = grpc.aio.insecure_channel(session.address, options=options)
    session.stub = CoordinatorStub(session.channel)


def _holders(places: Mapping[str, Any], names: Sequence[str]) -> str:
    held = [f"{n} held by {Holder(places[n].acquired, places[n].changed)}" for n in names
            if places[n].acquired]
    reserved = [f"{n} reserved (token {places[n].reservation})" for n in names
                if not places[n].acquired and places[n].reservation]
    return "; ".join(held + reserved) or "none held (waiting for the coordinator to allocate)"


@dataclass
class PlaceHold:
    """A labgrid place this process holds until `release()` (its reservation too)."""

    spec: PlaceSpec
    coordinator: Coordinator
    place: str = ""
    token: str = ""

    def take(self, wait: float, progress: Progress | None = None) -> None:
        """Reserve a place of the spec, wait up to `wait` s for it, acquire it."""
        c = self.coordinator
        candidates = self._candidates()
        self.token = c.reserve(self.spec.filter)
        deadline = time.monotonic() + wait
        next_note = time.monotonic() + PROGRESS_EVERY
        while True:
            state, allocated = c.poll(self.token)
            if state in ("allocated", "acquired") and allocated:
                try:
                    c.acquire(allocated)
                except RigError:            # taken without a reservation in between: wait on
                    pass
                else:
                    self.place = allocated
                    break
            elif state not in ("waiting", "allocated", "acquired"):
                raise RigError(f"the labgrid reservation for {self.spec} became {state} "
                               f"(coordinator {c.address})")
            if self._free_stale(candidates, progress):
                # the coordinator frees a place for allocation one scheduling round after its
                # reservation is cancelled: a new reservation runs that round now
                c.cancel(self.token)
                self.token = ""
                self.token = c.reserve(self.spec.filter)
                continue
            now = time.monotonic()
            if now >= deadline:
                raise RigError(f"{self.spec} is not free (coordinator {c.address}): "
                               f"{_holders(c.places(), candidates)}; waited {wait:g} s "
                               "(--rig-wait SECONDS to wait longer)")
            if progress is not None and now >= next_note:
                progress(f"hil: waiting for {self.spec} ({deadline - now:.0f} s left): "
                         f"{_holders(c.places(), candidates)}")
                next_note = now + PROGRESS_EVERY
            time.sleep(min(POLL, max(0.0, deadline - now)))
        host, user = identity()
        c.allow(self.place, f"{host}/{user}")   # labgrid-client of this user works on it too

    def _candidates(self) -> list[str]:
        places = self.coordinator.places()
        wanted = set(self.spec.filter.items())
        names = [n for n, p in sorted(places.items())
                 if wanted <= set(p.tags.items()) | {("name", n)}]
        if not names:
            known = "; ".join(f"{n} ({', '.join(f'{k}={v}' for k, v in p.tags.items()) or '-'})"
                              for n, p in sorted(places.items())) or "none"
            raise RigError(f"labgrid coordinator {self.coordinator.address} has no {self.spec};"
                           f" its places (tags): {known}")
        return names

    def _free_stale(self, candidates: Sequence[str], progress: Progress | None) -> bool:
        """Release places, and cancel reservations, of dead hil processes of this host.
        True if anything was freed."""
        me = identity()[0]

        def dead(owner: str) -> bool:
            host, pid, _ = Holder(owner).parts
            return host == me and pid is not None and pid != os.getpid() and not _alive(pid)
        c = self.coordinator
        places = c.places()
        freed = False
        for name in candidates:
            owner = places[name].acquired
            if owner and dead(owner):
                c.release(name, fromuser=owner)
                freed = True
                if progress is not None:
                    progress(f"hil: released labgrid place {name}: its holder "
                             f"{Holder(owner, places[name].changed)} is gone")
        for token, owner, _ in c.reservations():
            if dead(owner):
                try:
                    c.cancel(token)
                    freed = True
                except RigError:            # expired or cancelled meanwhile
                    pass
        return freed

    def release(self) -> list[str]:
        """Release the place, cancel the reservation, close the connection. Never raises;
        returns the problems as text."""
        problems = []
        place, self.place = self.place, ""
        token, self.token = self.token, ""
        for step, action in ((f"release place {place}", place and (
                lambda: self.coordinator.release(place, fromuser=self.coordinator.name))),
                             (f"cancel reservation {token}", token and (
                lambda: self.coordinator.cancel(token)))):
            if action:
                try:
                    action()
                except Exception as exc:
                    problems.append(f"labgrid: {step}: {exc}")
        self.coordinator.close()
        return problems


def acquire(rig: Rig, wait: float = 0.0,
            progress: Progress | None = None) -> tuple[Rig, PlaceHold]:
    """Acquire the place `rig` names (waiting up to `wait` s) and return the rig with its
    "labgrid:" values filled in, and the hold to release. Released again if anything fails."""
    spec = rig.labgrid
    if spec is None:
        raise ValueError(f"rig {rig.name} names no labgrid place")
    try:
        hold = PlaceHold(spec, Coordinator(spec.address))
    except RigError as exc:
        raise _where(exc, rig) from None
    try:
        hold.take(wait, progress)
        return resolve(rig, hold.coordinator.exported(hold.place), hold.place), hold
    except BaseException as exc:
        problems = hold.release()
        if problems and isinstance(exc, RigError):
            exc.add_note("; ".join(problems))
        if isinstance(exc, RigError):
            raise _where(exc, rig) from None
        raise


def _where(exc: RigError, rig: Rig) -> RigError:
    """`exc`, naming the rig file's [rig] labgrid setting if it names no place yet."""
    if exc.file is not None:
        return exc
    located = RigError(str(exc), file=str(rig.file), table="rig", key=KEY)
    located.__notes__ = list(getattr(exc, "__notes__", []))
    return located


@contextmanager
def held(rig: Rig, wait: float = 0.0, progress: Progress | None = None) -> Iterator[Rig]:
    """`with held(rig) as rig:` the rig with its place acquired (if it names one), released
    at the end. For tools that open a rig outside pytest (`hil check`)."""
    if rig.labgrid is None:
        yield rig
        return
    resolved, hold = acquire(rig, wait, progress)
    try:
        yield resolved
    finally:
        hold.release()
