"""TCP buses: `TcpBus(host, port)` and the rig kind "tcp" (host = "sim": the virtual DUT)."""
from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from hil.buses.buffer import DEFAULT_RETENTION
from hil.buses.bus import Bus, FdWaiter
from hil.errors import BusConnectError
from hil.rig import Key, Resource, RigKind

if TYPE_CHECKING:
    from hil.sim.bench import VirtualBench


class TcpTransport:
    """A connected socket: wait in poll (which `wake()` interrupts), then take what arrived."""

    direct = True

    def __init__(self, host: str, port: int, connect_timeout: float = 5.0) -> None:
        self.description = f"tcp {host}:{port}"
        try:
            self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        except socket.gaierror as exc:
            raise BusConnectError(f"cannot connect to {host}:{port}: unknown host "
                                  f"({exc.strerror})") from exc
        except TimeoutError as exc:
            raise BusConnectError(f"cannot connect to {host}:{port}: no answer within "
                                  f"{connect_timeout:g} s (host unreachable or filtered)") from exc
        except OSError as exc:
            raise BusConnectError(f"cannot connect to {host}:{port}: "
                                  f"{exc.strerror or exc}") from exc
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._waiter = FdWaiter(self.sock.fileno())

    def wait(self) -> bool:
        return self._waiter.wait()

    def wait_for(self, timeout: float) -> bool:
        return self._waiter.wait(timeout)

    def read_into(self, room: memoryview) -> int | None:
        try:
            return self.sock.recv_into(room, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None

    def write(self, data: bytes, timeout: float) -> None:
        view, deadline = memoryview(data), time.monotonic() + timeout
        while view:
            try:
                view = view[self.sock.send(view, socket.MSG_DONTWAIT):]
            except BlockingIOError:
                if not self._waiter.writable(deadline - time.monotonic()):
                    raise TimeoutError from None

    def wake(self) -> None:
        self._waiter.wake()

    def close(self) -> None:
        self.sock.close()
        self._waiter.close()


class TcpBus(Bus):
    """A bus over a TCP connection (a console server, a device's raw socket port).

    Connection refused, unknown host or no answer within `connect_timeout` raise
    BusConnectError naming host:port and the reason. Other options: see `Bus`.
    """

    def __init__(self, host: str, port: int, connect_timeout: float = 5.0,
                 **options: Any) -> None:
        transport = TcpTransport(host, port, connect_timeout)
        try:
            super().__init__(transport, **options)
        except BaseException:
            transport.close()
            raise
        self.host, self.port = host, port


def open_tcp(resource: Resource, bench: VirtualBench) -> TcpBus:
    """The "tcp" rig kind's opener; host "sim" serves the virtual DUT's console on TCP."""
    host, port = resource["host"], resource["port"]
    if host == "sim":
        from hil.sim.dut_server import serve_tcp
        server = bench.start("dut-tcp", lambda: serve_tcp(bench.dut))
        host, port = server.host, server.port
    elif isinstance(host, str) and host.startswith("sim:"):
        raise resource.error(f"unknown simulator {host!r}; the tcp kind offers host = \"sim\"",
                             key="host")
    elif not 0 < port < 65536:
        raise resource.error(f"port {port} is not a TCP port (1-65535)", key="port")
    return TcpBus(host, port, resource["connect_timeout"], name=resource.name,
                  timeout=resource["timeout"], encoding=resource["encoding"],
                  line_ending=resource["line_ending"], retention=resource["retention"])


RIG_KIND = RigKind(
    keys={
        "host": Key(str, help='host name or address; "sim" for the virtual DUT'),
        "port": Key(int, 0, help="TCP port (any for sim)"),
        "connect_timeout": Key(float, 5.0, help="seconds to wait for the connection"),
        "timeout": Key(float, 10.0, help="default expect/read timeout, seconds"),
        "encoding": Key(str, "utf-8", help="text encoding (UTF-8 or single-byte)"),
        "line_ending": Key(str, "\n", help="what writeline() appends"),
        "retention": Key(int, DEFAULT_RETENTION, help="received bytes kept in memory"),
    },
    open=open_tcp,
    help="a byte stream over TCP with expect",
)
