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


class BusDataError(BusError, ValueError):
    """Data given to a bus call cannot be turned into bytes (bad hex digits, a bad escape), or
    an argument of a bus call is out of range (a byte count, a timeout)."""


class WatcherTriggered(BusError, AssertionError):
    """A fail_on() pattern appeared on a bus: the DUT said something that fails the test."""


class ProtocolError(HilError):
    """Bytes from a peer do not follow the wire format.

    `field` names what was wrong, `where` the peer (host:port, a file) and `offset` the byte
    offset in that peer's stream; the message shows each one known. Codecs are pure and do not
    know their peer: the client that fed them adds it with `raise exc.at(where)`.
    """

    def __init__(self, message: str, field: str | None = None, where: str | None = None,
                 offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.where = where
        self.offset = offset

    def at(self, where: str, offset: int | None = None) -> ProtocolError:
        """Fill in the peer (and offset) if the raiser did not know them; returns self."""
        if self.where is None:
            self.where = where
        if self.offset is None:
            self.offset = offset
        return self

    def __str__(self) -> str:
        parts = (f"field {self.field!r}" if self.field else "",
                 f"at {self.where}" if self.where else "",
                 f"stream offset {self.offset}" if self.offset is not None else "")
        # a wrapping caller may already have put one in its message: say each thing once
        shown = [p for p in parts if p and p not in self.message]
        return f"{self.message} ({', '.join(shown)})" if shown else self.message

    def __reduce__(self) -> tuple:
        return type(self), (self.message, self.field, self.where, self.offset)


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
