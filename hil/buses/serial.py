"""Serial buses over pyserial URLs, and the rig kind "serial" (url = "sim:dut": virtual DUT).

`SerialBus(url)` opens anything `serial.serial_for_url` does: /dev/ttyUSB0, /dev/pts/N,
socket://host:port, rfc2217://host:port, loop:// ... and adds DTR/RTS/break control.
"""
from __future__ import annotations

import os
import select
import termios
import time
from typing import Any

import serial
from serial.serialposix import Serial as PosixSerial
from serial.urlhandler.protocol_socket import Serial as SocketSerial

from hil.buses.bus import Bus
from hil.buses.transport import BIG_READ, FdWaiter
from hil.errors import BusConnectError, BusError

POLL = 0.05     # how often a reader blocked in pyserial's read() looks at the closing flag
VTIME = 0.1     # longest blocking read of a local port (termios VTIME, in tenths of a second)


class SerialTransport:
    """A pyserial port.

    A local port (a device path, a pty) is read straight from its file descriptor: waiting in
    poll, but during a flood (reads of 4 KiB and more) with blocking reads that return after at
    most 0.1 s of silence (VMIN=0, VTIME=1) — on a pty that is far faster than poll-then-read.
    Writes go through a second, non-blocking descriptor, so they can time out. socket:// is
    read from its socket. Both are `direct`. Other URLs (rfc2217://, loop:// ...) go through
    pyserial's own read(), by the reader thread only."""

    def __init__(self, port: serial.SerialBase, url: str) -> None:
        self.port = port
        self.description = url
        self._fd: int | None = port.fd if type(port) is PosixSerial else None
        self._socket = type(port) is SocketSerial
        self.direct = self._fd is not None or self._socket
        self._waiter = FdWaiter(port.fileno()) if self.direct else None
        self._idle = True                   # no flood: poll before the next read
        self._first = b""                   # a byte the polled wait() already took
        self._wfd = -1
        if self._fd is not None:
            # Reads block (below); writes need a non-blocking descriptor of their own so a
            # device that takes nothing makes a write time out instead of hang.
            self._wfd = os.open(port.port, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
            self._out = select.poll()
            self._out.register(self._wfd, select.POLLOUT)
            os.set_blocking(self._fd, True)
            attrs = termios.tcgetattr(self._fd)
            attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 0, int(VTIME * 10)
            termios.tcsetattr(self._fd, termios.TCSANOW, attrs)
        if self._socket:
            port.timeout = 0                # non-blocking reads once poll saw data

    def wait(self) -> bool:
        if self._fd is not None and not self._idle:
            return True                     # the read itself waits (at most VTIME)
        if self._waiter is not None:
            return self._waiter.wait()
        self._first = self.port.read(1)     # blocks at most POLL seconds
        return bool(self._first)

    def wait_for(self, timeout: float) -> bool:
        assert self._waiter is not None, "only direct transports serve callers"
        if self._fd is not None and timeout >= VTIME:
            return True                     # the read itself waits (at most VTIME)
        return self._waiter.wait(timeout)

    def read_into(self, room: memoryview) -> int | None:
        if self._fd is not None:
            n = os.readv(self._fd, [room])
            self._idle = n < BIG_READ       # only a flood is read with blocking reads
            # VMIN=0: an empty read is silence, unless the device hung up
            return n or (0 if self._waiter.hung_up() else None)  # type: ignore[union-attr]
        if self._socket:
            data = self.port.read(len(room))
        else:
            data, self._first = self._first, b""
            waiting = min(self.port.in_waiting, len(room) - len(data))
            data += self.port.read(waiting) if waiting > 0 else b""
        room[:len(data)] = data
        return len(data) or None

    def write(self, data: bytes, timeout: float) -> None:
        if self._fd is not None:
            self._write_fd(data, timeout)
            return
        if self.port.write_timeout != timeout:
            self.port.write_timeout = timeout       # reconfigures the port: only when it changes
        try:
            self.port.write(data)
        except serial.SerialTimeoutException:
            raise TimeoutError from None
        except serial.SerialException as exc:
            raise OSError(str(exc)) from exc

    def _write_fd(self, data: bytes, timeout: float) -> None:
        """Write all of `data`, waiting for room at most `timeout` seconds."""
        try:                        # the common case: all of it fits at once
            done = os.write(self._wfd, data)
        except BlockingIOError:
            done = 0
        if done == len(data):
            return
        view, deadline = memoryview(data)[done:], time.monotonic() + timeout
        while view:
            try:
                view = view[os.write(self._wfd, view):]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not self._out.poll(int(left * 1000 + 0.999)):
                    raise TimeoutError from None

    def wake(self) -> None:
        if self._waiter is not None:
            self._waiter.wake()

    def pause_reader(self) -> None:
        if self._waiter is not None:
            self._waiter.pause()

    def resume_reader(self) -> None:
        if self._waiter is not None:
            self._waiter.resume()

    def close(self) -> None:
        if self._wfd >= 0:
            os.close(self._wfd)
        self.port.close()
        if self._waiter is not None:
            self._waiter.close()


def open_port(url: str, **settings: Any) -> serial.SerialBase:
    """Open a pyserial URL; a missing device or refused connection is a BusConnectError."""
    try:
        port = serial.serial_for_url(url, do_not_open=True)
        for name, value in settings.items():
            setattr(port, name, value)
        port.timeout = POLL
        port.open()
    except serial.SerialException as exc:
        raise BusConnectError(f"cannot open serial port {url}: {_reason(exc)}") from exc
    except (ValueError, OSError) as exc:
        raise BusConnectError(f"cannot open serial port {url}: {exc}") from exc
    return port


def _reason(exc: serial.SerialException) -> str:
    """The OS reason inside a pyserial error, without pyserial repeating the port name."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return f"{cause.strerror} (errno {cause.errno})"
    if exc.errno and isinstance(exc.errno, int):
        return f"{os.strerror(exc.errno)} (errno {exc.errno}); {exc}"
    return str(exc)


class SerialBus(Bus):
    """A bus over a serial port or any pyserial URL, with modem-line control.

    Port settings are pyserial's (parity "N", "E", "O", "M", "S"; stopbits 1, 1.5, 2).
    Other options (name, timeout, encoding, line_ending, retention ...): see `Bus`.
    """

    def __init__(self, url: str, baudrate: int = 115200, bytesize: int = 8, parity: str = "N",
                 stopbits: float = 1, xonxoff: bool = False, rtscts: bool = False,
                 dsrdtr: bool = False, **options: Any) -> None:
        stopbits = int(stopbits) if float(stopbits).is_integer() else stopbits
        self.port = open_port(url, baudrate=baudrate, bytesize=bytesize, parity=parity,
                              stopbits=stopbits, xonxoff=xonxoff, rtscts=rtscts, dsrdtr=dsrdtr)
        self.url = url
        try:
            transport = SerialTransport(self.port, url)
        except (OSError, termios.error) as exc:
            self.port.close()
            raise BusConnectError(f"cannot open serial port {url}: {exc}") from exc
        try:
            super().__init__(transport, **{"name": url, **options})
        except BaseException:
            transport.close()
            raise

    def set_dtr(self, on: bool) -> None:
        """Drive the DTR line (often wired to the board's reset or boot pin)."""
        self._modem("DTR", lambda: setattr(self.port, "dtr", bool(on)))

    def set_rts(self, on: bool) -> None:
        """Drive the RTS line."""
        self._modem("RTS", lambda: setattr(self.port, "rts", bool(on)))

    def send_break(self, duration: float = 0.25) -> None:
        """Hold the TX line low for `duration` seconds (a break condition)."""
        self._modem("a break", lambda: self.port.send_break(duration))

    def _modem(self, what: str, action: Any) -> None:
        if self.closed:
            raise BusError(f"{self.name}: the bus is closed")
        try:
            action()
        except (OSError, serial.SerialException) as exc:
            raise BusError(f"{self.name}: cannot set {what}: {exc}") from exc
