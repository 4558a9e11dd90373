"""The links of the legacy bus commands, by id: the ones a script opened with `init_*`, and the
buses a rig provides by table name.

A script's link goes through the legacy states: `init` (settings known, nothing opened) ->
`config` (open) -> `inval` (closed, settings kept) -> `deinit` (forgotten). A rig's bus is
reached through `register_link(name, bus)` or a resolver (`link_resolver`, which the pytest
plugin installs so that every bus table of the rig is a link): it is open from the start, and
it belongs to the rig, so no legacy call ever closes it.
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hil.buses.bus import Bus
from hil.buses.compat.codec import NIBBLE_ORDERS, NibbleOrder
from hil.errors import BusError

Resolver = Callable[[str], Any]


class CompatWarning(UserWarning):
    """A legacy call did something other than its script asked, on purpose (the rig wins)."""


@dataclass(frozen=True)
class LinkOptions:
    """How a link's calls behave: default timeout, hex digit order, text encoding, NULs."""

    timeout: float
    nibbles: NibbleOrder = "high_first"
    encoding: str = "utf-8"
    skip_nul: bool = False


@dataclass(eq=False)
class Link:
    """One link id. `bus` is None while the link is not configured. `rig` is the rig's bus this
    link stands for (never closed here); `settings` the conf string's values (None for a rig
    link)."""

    id: str
    family: str                         # "tcp", "serial", or "rig" (a rig bus, no init)
    options: LinkOptions
    settings: dict[str, Any] | None = None
    bus: Bus | None = None
    rig: Bus | None = None
    address: str = ""                   # what config returned: "ip,port", the device
    why_closed: str = field(default="", repr=False)

    @property
    def describe(self) -> str:
        owner = "rig" if self.family == "rig" else f"{self.family}"
        return f"{owner} link {self.id!r}"


class Registry:
    """Every link by id, behind one lock (scripts may call from several threads)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.script: dict[tuple[str, str], Link] = {}     # (family, id) -> a script's link
        self.rig: dict[str, Link] = {}                    # name -> a registered rig bus
        self.resolvers: list[Resolver] = []
        self.gone: dict[tuple[str, str], str] = {}        # deinitialised: by which call

    def find(self, family: str, link_id: str) -> Link:
        """The link `link_id` as the `family` functions see it: the script's own, else the
        rig's; an unknown id is a BusError saying what would make it known."""
        with self.lock:
            link = self.script.get((family, link_id))
        if link is None:
            link = self.find_rig(link_id)
        if link is None:
            raise BusError(self._unknown(family, link_id))
        return link

    def find_rig(self, link_id: str) -> Link | None:
        """The rig's bus of that name as a link, or None."""
        with self.lock:
            link = self.rig.get(link_id)
            resolvers = list(self.resolvers)
        if link is not None:
            return link
        for resolve in reversed(resolvers):
            found = resolve(link_id)
            if found is not None:
                return rig_link(link_id, found)
        return None

    def others_using(self, bus: Bus) -> list[Link]:
        """The script links configured on `bus`."""
        with self.lock:
            return [link for link in self.script.values() if link.bus is bus]

    def _unknown(self, family: str, link_id: str) -> str:
        with self.lock:
            how = self.gone.get((family, link_id))
            other = [f for (f, i) in self.script if i == link_id and f != family]
            known = sorted({i for (f, i) in self.script if f == family} | set(self.rig))
        if how:
            return (f"{family} link {link_id!r} was deinitialised by {how}; "
                    f"init_{family}({link_id!r}, conf_string) it again to use it")
        if other:
            return (f"{link_id!r} is a {other[0]} link, not a {family} one: use the "
                    f"*_{other[0]} functions for it")
        return (f"unknown {family} link {link_id!r}: call init_{family}({link_id!r}, "
                f"conf_string) and config_{family}({link_id!r}) first, or declare [{link_id}] "
                f"in the rig file (known links: {', '.join(known) or 'none'})")


def rig_link(name: str, bus: object, nibbles: NibbleOrder = "high_first",
             skip_nul: bool = False) -> Link:
    """A rig's bus as a link (open, owned by the rig); anything but a Bus is a BusError."""
    if not isinstance(bus, Bus):
        raise BusError(f"rig resource {name!r} is a {type(bus).__name__}, not a bus: the legacy "
                       "bus functions reach only serial and tcp tables")
    if nibbles not in NIBBLE_ORDERS:
        raise BusError(f"register_link({name!r}): nibbles {nibbles!r}: expected one of "
                       f"{', '.join(NIBBLE_ORDERS)}")
    options = LinkOptions(timeout=bus.timeout, nibbles=nibbles, encoding=bus.encoding,
                          skip_nul=skip_nul)
    return Link(name, "rig", options, bus=bus, rig=bus, address=bus.name)


REGISTRY = Registry()


def register_link(name: str, bus: Bus, *, nibbles: NibbleOrder = "high_first",
                  skip_nul: bool = False) -> None:
    """Make an open bus available to the legacy functions as link `name` (a rig table).

    The legacy calls never close it: `inval`/`deinit` only detach the script from it."""
    link = rig_link(name, bus, nibbles, skip_nul)
    with REGISTRY.lock:
        REGISTRY.rig[name] = link


def unregister_link(name: str) -> None:
    """Forget a registered bus (it stays open; closing it is its owner's business)."""
    with REGISTRY.lock:
        REGISTRY.rig.pop(name, None)


@contextmanager
def link_resolver(resolve: Resolver) -> Iterator[None]:
    """While in force, an id no script opened and nobody registered is looked up with
    `resolve(id)`: a Bus to use, or None. The pytest plugin passes a function that returns the
    rig's bus fixture of that name, so transcripts and watchers work as for the fixture."""
    with REGISTRY.lock:
        REGISTRY.resolvers.append(resolve)
    try:
        yield
    finally:
        with REGISTRY.lock:
            REGISTRY.resolvers.remove(resolve)


def link_bus(link_id: str | int, family: str = "tcp") -> Bus:
    """The open Bus behind link `link_id` of `family` ("tcp" or "serial"; a rig link answers
    to both), to add a `fail_on` watcher or read its transcript."""
    link = REGISTRY.find(family, str(link_id))
    if link.bus is None:
        raise BusError(f"{link.describe} is not configured: config_{family}({link_id!r}) first")
    return link.bus


def open_links() -> dict[str, Bus]:
    """The buses scripts opened and have not closed, by link id (for transcripts)."""
    with REGISTRY.lock:
        return {link.id: link.bus for link in REGISTRY.script.values()
                if link.bus is not None and link.rig is None}


def deinit_all() -> list[str]:
    """Close every link a script opened and forget all script links (the rig's buses stay
    open). Returns the problems met; a test's teardown calls this so no link outlives it."""
    with REGISTRY.lock:
        links = list(REGISTRY.script.values())
        REGISTRY.script.clear()
        REGISTRY.gone.clear()
    problems = []
    closed: set[int] = set()
    for link in links:
        if link.bus is not None and link.rig is None and id(link.bus) not in closed:
            closed.add(id(link.bus))
            try:
                link.bus.close()
            except Exception as exc:  # report every failure, keep closing the rest
                problems.append(f"{link.describe}: close(): {type(exc).__name__}: {exc}")
    return problems


def shadow_warning(family: str, link_id: str) -> None:
    """Say that a script's init of a rig link keeps the rig's bus (its conf string unused)."""
    warnings.warn(CompatWarning(
        f"init_{family}({link_id!r}, ...): the rig provides {link_id!r}; its bus is used and "
        "this conf string is only checked (the rig file decides where a link goes)"),
        stacklevel=4)


__all__ = ["REGISTRY", "CompatWarning", "Link", "LinkOptions", "Registry", "deinit_all",
           "link_bus", "link_resolver", "open_links", "register_link", "unregister_link"]
