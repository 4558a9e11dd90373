"""The legacy command set once, for any kind of link: `cmd_tcp` and `cmd_serial` are thin named
functions over a `LinkFamily` each.

Mapping to the `Bus` API (the docs page `docs/compat.md` has the table): write -> `Bus.write`
of the unescaped or hex-decoded bytes; read -> `Bus.read(n)`; read_until -> `Bus.read_until`
of the end markers; expect -> `Bus.expect_exact` (or `Bus.expect` of a NUL-tolerant regex);
wrnrd = write, then read (no drain before, as the legacy modules did not drain either).
Every hil error leaving a call carries a note naming the legacy call.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hil.buses.bus import Bus
from hil.buses.compat import codec
from hil.buses.compat.conf import Key, settings
from hil.buses.compat.links import REGISTRY, Link, LinkOptions, shadow_warning
from hil.buses.match import Match
from hil.errors import BusDataError, BusError, BusTimeout, HilError

Opener = Callable[[str, dict[str, Any]], tuple[Bus, str]]


class Found(str):
    """What expect returns: the legacy text "Pattern found", with hil's `Match` (offsets,
    arrival time on the hil clock, `before`) as `.match`."""

    match: Match

    def __new__(cls, match: Match) -> Found:
        found = super().__new__(cls, "Pattern found")
        found.match = match
        return found


@dataclass(frozen=True)
class LinkFamily:
    """One legacy bus module: its name ("tcp"), its conf-string keys, how a configured link
    opens its Bus (`open(link_id, settings) -> (bus, address)`), whether a read may return
    fewer bytes than asked at its timeout (serial did), and, for families whose links to one
    address share one connection (tcp did), how a link's address is found ("ip,port")."""

    name: str
    keys: Mapping[str, Key]
    open: Opener
    check: Callable[[dict[str, Any], str], None] = lambda values, where: None
    partial_reads: bool = False
    address_of: Callable[[str, dict[str, Any]], str] | None = None   # set: links share

    # ------------------------------------------------------------------ states
    def init(self, link_id: object, conf_string: str) -> str:
        link_id = _id(link_id)
        where = f"init_{self.name}({link_id!r}): "
        values = settings(conf_string, self.name, self.keys, where)
        self.check(values, where)
        options = LinkOptions(values["timeout"], values["nibbles"], values["encoding"],
                              values["skip_nul"])
        with REGISTRY.lock:
            if (self.name, link_id) in REGISTRY.script:
                raise BusError(f"{where}{self.name} link {link_id!r} is already initialised; "
                               f"deinit_{self.name}({link_id!r}) it first")
        rig = REGISTRY.find_rig(link_id)
        link = Link(link_id, self.name, options, values)
        if rig is not None:
            shadow_warning(self.name, link_id)
            link.rig, link.options = rig.bus, rig.options
        with REGISTRY.lock:
            REGISTRY.script[(self.name, link_id)] = link
            REGISTRY.gone.pop((self.name, link_id), None)
        return link_id

    def new_id(self) -> str:
        """The smallest free numeric id, for the older `init_*(conf_string)` form."""
        with REGISTRY.lock:
            used = {i for (family, i) in REGISTRY.script if family == self.name}
        return str(next(n for n in range(len(used) + 1) if str(n) not in used))

    def config(self, link_id: object) -> str:
        link_id = _id(link_id)
        with self._call("config", link_id):
            link = REGISTRY.find(self.name, link_id)
            if link.bus is not None:
                raise BusError(f"{link.describe} is already configured ({link.address})")
            if link.rig is not None:
                link.bus, link.address = link.rig, link.rig.name
                return link.address
            assert link.settings is not None
            shared = None
            if self.address_of is not None:
                link.address = self.address_of(link_id, link.settings)
                shared = self._shared(link)
            if shared is not None:
                link.bus = shared.bus
            else:
                link.bus, link.address = self.open(link_id, {**link.settings,
                                                             "timeout": link.options.timeout})
            link.why_closed = ""
            return link.address

    def inval(self, link_id: object) -> str:
        link_id = _id(link_id)
        with self._call("inval", link_id):
            link = REGISTRY.find(self.name, link_id)
            if link.family == "rig":          # a rig bus the script never init'ed: detach
                link = Link(link_id, self.name, link.options, rig=link.rig)
                with REGISTRY.lock:
                    REGISTRY.script[(self.name, link_id)] = link
                link.why_closed = f"invalidated by inval_{self.name}"
                return "ok"
            if link.bus is None:
                return "not configured"
            self._release(link)
            link.why_closed = f"invalidated by inval_{self.name}"
            return "ok"

    def deinit(self, link_id: object) -> str:
        link_id = _id(link_id)
        with self._call("deinit", link_id):
            with REGISTRY.lock:
                link = REGISTRY.script.get((self.name, link_id))
                if link is None:
                    return "not initialised"
                del REGISTRY.script[(self.name, link_id)]
                REGISTRY.gone[(self.name, link_id)] = f"deinit_{self.name}"
            if link.bus is not None:
                self._release(link)
            return "ok"

    # ------------------------------------------------------------------ data
    def write(self, link_id: object, data: str | bytes, binary: bool = False) -> str:
        link_id = _id(link_id)
        with self._call("write_bin" if binary else "write", link_id):
            link, bus = self._usable(link_id)
            bus.write(self._encode(link, data, binary))
            return "ok"

    def read(self, link_id: object, bytes_to_read: object, timeout: object = "undef",
             binary: bool = False) -> str:
        link_id = _id(link_id)
        with self._call("read_bin" if binary else "read", link_id):
            link, bus = self._usable(link_id)
            n = codec.count_arg(bytes_to_read)
            return self._result(link, self._read(bus, n, self._timeout(link, timeout)), binary)

    def read_until(self, link_id: object, eot: str | bytes, timeout: object = "undef",
                   binary: bool = False) -> str:
        link_id = _id(link_id)
        with self._call("read_bin_until" if binary else "read_until", link_id):
            link, bus = self._usable(link_id)
            markers = codec.end_markers(eot, link.options.encoding)
            data = bus.read_until(markers, self._timeout(link, timeout))
            assert isinstance(data, bytes)
            end = max((m for m in markers if data.endswith(m)), key=len)
            return self._result(link, data[:-len(end)], binary)

    def wrnrd(self, link_id: object, data: str | bytes, bytes_to_read: object,
              timeout: object = "undef", binary: bool = False) -> str:
        link_id = _id(link_id)
        with self._call("wrnrd_bin" if binary else "wrnrd", link_id):
            link, bus = self._usable(link_id)
            n = codec.count_arg(bytes_to_read)
            seconds = self._timeout(link, timeout)
            bus.write(self._encode(link, data, binary))
            return self._result(link, self._read(bus, n, seconds), binary)

    def wrnrd_until(self, link_id: object, data: str | bytes, eot: str | bytes,
                    timeout: object = "undef", binary: bool = False) -> str:
        link_id = _id(link_id)
        with self._call("wrnrd_bin_until" if binary else "wrnrd_until", link_id):
            link, bus = self._usable(link_id)
            markers = codec.end_markers(eot, link.options.encoding)
            seconds = self._timeout(link, timeout)
            bus.write(self._encode(link, data, binary))
            reply = bus.read_until(markers, seconds)
            assert isinstance(reply, bytes)
            end = max((m for m in markers if reply.endswith(m)), key=len)
            return self._result(link, reply[:-len(end)], binary)

    def expect(self, link_id: object, pattern: str | bytes, timeout: object = "undef") -> Found:
        link_id = _id(link_id)
        with self._call("expect", link_id):
            link, bus = self._usable(link_id)
            wanted = codec.unescape(pattern, link.options.encoding, "pattern")
            if not wanted:
                raise BusDataError("pattern: empty; expect needs at least one character")
            seconds = self._timeout(link, timeout)
            if link.options.skip_nul:
                if b"\0" in wanted:
                    raise BusDataError(f"pattern {pattern!r} holds a NUL byte, which this link "
                                       "skips in received data (skip_nul=1): it cannot match")
                regex = b"\\x00*".join(re.escape(bytes([b])) for b in wanted)
                return Found(bus.expect(regex, seconds))
            return Found(bus.expect_exact(wanted, seconds))

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def _call(self, what: str, link_id: str) -> Iterator[None]:
        """Note the legacy call on any hil error leaving it (shown under the message)."""
        try:
            yield
        except HilError as exc:
            exc.add_note(f"in {what}_{self.name}({link_id!r}, ...)")
            raise

    def _usable(self, link_id: str) -> tuple[Link, Bus]:
        link = REGISTRY.find(self.name, link_id)
        if link.bus is None:
            why = link.why_closed or "initialised but not configured yet"
            raise BusError(f"{link.describe} is not configured ({why}): "
                           f"call config_{self.name}({link_id!r}) first")
        return link, link.bus

    def _shared(self, link: Link) -> Link | None:
        """A configured link of this family to the same address, to share its connection."""
        with REGISTRY.lock:
            others = [o for (family, _), o in REGISTRY.script.items()
                      if family == self.name and o is not link and o.bus is not None
                      and o.rig is None and o.address == link.address]
        if not others:
            return None
        other = others[0]
        if other.options.timeout != link.options.timeout:
            raise BusError(f"{link.describe}: {other.describe} is already connected to "
                           f"{other.address} with timeout {other.options.timeout:g} s, this "
                           f"link asks {link.options.timeout:g} s; one connection has one "
                           "timeout (as in the legacy module): give both the same")
        return other

    def _release(self, link: Link) -> None:
        """Detach `link` from its bus; close it if it is the script's and nobody else's."""
        bus, link.bus = link.bus, None
        if bus is not None and link.rig is None and not REGISTRY.others_using(bus):
            bus.close()

    @staticmethod
    def _timeout(link: Link, timeout: object) -> float:
        return codec.timeout_arg(timeout, link.options.timeout)

    @staticmethod
    def _encode(link: Link, data: str | bytes, binary: bool) -> bytes:
        if binary:
            return codec.hex_to_bytes(data, link.options.nibbles)
        return codec.unescape(data, link.options.encoding)

    def _read(self, bus: Bus, n: int, seconds: float) -> bytes:
        """`n` bytes; on a family with partial reads, what came (at least one byte) when the
        timeout passed."""
        try:
            return bus.read(n, seconds)
        except BusTimeout:
            got = min(n, bus.pending)
            if not self.partial_reads or not got:
                raise
        return bus.read(got, 0)

    @staticmethod
    def _result(link: Link, data: bytes, binary: bool) -> str:
        if binary:
            return codec.bytes_to_hex(data, link.options.nibbles)
        return codec.drop_ignored(data.decode(link.options.encoding, "replace"))


def _id(link_id: object) -> str:
    """Link ids are strings; the numbers older scripts got from init are accepted as such."""
    if isinstance(link_id, bool) or not isinstance(link_id, (str, int)):
        raise BusDataError(f"link id {link_id!r}: expected a string (or an int)")
    return str(link_id)
