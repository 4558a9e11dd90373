"""The one exception tree of hil: every failure a test bench can meet is a HilError.

Each message says what was expected, what happened, and where (bus, host:port, file and key).
"""
from __future__ import annotations


class HilError(Exception):
    """Root of every error hil raises on purpose."""


class BusError(HilError):
    """A byte stream (serial port, TCP socket) failed."""


class BusConnectError(BusError):
    """A bus could not be opened: device missing, connection refused, host unreachable."""


class ConnectionLost(BusError):
    """The peer closed or the device vanished while we were reading or writing."""


class BusTimeout(BusError, TimeoutError):
    """Something awaited on a bus did not arrive in time.

    `tail` holds the last bytes that did arrive, so the message shows what the DUT said instead.
    """

    def __init__(self, message: str, tail: bytes = b"") -> None:
        super().__init__(message)
        self.tail = tail


class PatternError(BusError, ValueError):
    """A pattern given to expect/read_until/fail_on is invalid (bad regex, empty literal)."""


class WatcherTriggered(BusError, AssertionError):
    """A fail_on() pattern appeared on a bus: the DUT said something that fails the test."""


class ProtocolError(HilError):
    """Bytes from a peer do not follow the wire format: names the field and the offset/where."""

    def __init__(self, message: str, field: str | None = None, where: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.where = where


class InstrumentError(HilError):
    """An instrument (power analyzer, stream server) refused a command or is unusable."""


class InstrumentConnectError(InstrumentError):
    """An instrument could not be reached or found (no server, no device)."""


class RigError(HilError):
    """A rig file is wrong: names the file, the table and the key."""

    def __init__(self, message: str, file: str | None = None, table: str | None = None,
                 key: str | None = None) -> None:
        where = ", ".join(p for p in (
            f"file {file}" if file else "",
            f"table [{table}]" if table else "",
            f"key '{key}'" if key else "") if p)
        super().__init__(f"{message} ({where})" if where else message)
        self.file, self.table, self.key = file, table, key


class ValidationError(HilError, AssertionError):
    """A measured value or a captured stream is outside what the test bench requires."""


class SimulatorError(HilError):
    """A simulator could not start or was misconfigured."""
