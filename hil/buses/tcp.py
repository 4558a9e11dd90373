"""TCP buses: `TcpBus(host, port)` and the rig kind "tcp" (host = "sim": the virtual DUT)."""
from __future__ import annotations

import socket
import time
from typing import Any

from hil.buses.bus import Bus
from hil.buses.transport import FdWaiter
from hil.errors import BusConnectError


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

    def pause_reader(self) -> None:
        self._waiter.pause()

    def resume_reader(self) -> None:
        self._waiter.resume()

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
