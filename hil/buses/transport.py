"""What a bus needs from a byte pipe (`Transport`), and `FdWaiter`, the poll-based wait that
TCP and local serial transports share."""
from __future__ import annotations

import os
import select
from typing import Protocol

BIG_READ = 4000             # a read this big suggests a flood: more bytes are waiting


class Transport(Protocol):
    """A byte pipe under a bus. The bus's reader thread waits and reads; with `direct`, a
    caller waiting in expect may read too (one at a time), which saves a thread switch."""

    description: str        # for messages: "/dev/ttyUSB0", "tcp 127.0.0.1:5000"
    direct: bool            # callers may use wait_for() and read() as well

    def wait(self) -> bool:
        """Block until bytes (or end of stream) can be read: True; False once `wake()`d."""

    def wait_for(self, timeout: float) -> bool:
        """Like `wait`, for at most `timeout` seconds (a caller's wait; only if `direct`)."""

    def read_into(self, room: memoryview) -> int | None:
        """Copy what arrived into `room` (after a positive wait: without blocking for long):
        the count; 0 at end of stream; None if nothing arrived."""

    def write(self, data: bytes, timeout: float) -> None:
        """Write all of `data` (TimeoutError if it cannot within `timeout`)."""

    def wake(self) -> None:
        """Make every wait return False from now on (the bus is closing)."""

    def pause_reader(self) -> None:
        """Keep the reader thread's `wait()` from waking for data (a caller reads now);
        only `direct` transports are asked."""

    def resume_reader(self) -> None:
        """Undo `pause_reader`: a `wait()` in progress returns at once if data is there."""

    def close(self) -> None: ...


def _ms(timeout: float) -> int:
    return max(0, int(timeout * 1000 + 0.999))


class FdWaiter:
    """Waits until a file descriptor is readable, or until `wake()` (a self-pipe).

    The reader thread's `wait()` (an epoll set) and a caller's `wait(timeout)` (a poll
    object) are separate, so both can wait at once. `pause()` stops the reader's set from
    reporting the fd's data, without waking it; `resume()` restores it (and wakes the reader
    if data is waiting): so a
    caller reading in its wait is not raced for the GIL by a reader thread woken by the same
    bytes, and ending the wait costs no thread wake-up unless bytes came meanwhile."""

    _EVENTS = select.POLLIN | select.POLLPRI

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._wake_r, self._wake_w = os.pipe()
        self._woken = False
        self._reader = select.epoll()
        self._reader.register(fd, self._EVENTS)
        self._reader.register(self._wake_r, select.POLLIN)
        self._watched = True
        self._caller = select.poll()
        self._caller.register(fd, self._EVENTS)
        self._caller.register(self._wake_r, select.POLLIN)
        self._out = select.poll()
        self._out.register(fd, select.POLLOUT)

    def wait(self, timeout: float | None = None) -> bool:
        """True when the fd is readable (or hung up); False when woken or timed out."""
        events = self._reader.poll() if timeout is None else self._caller.poll(_ms(timeout))
        if self._woken or (timeout is not None and not events):
            return False
        for fd, _ in events:
            if fd != self.fd:               # the wake pipe
                return False
        return True

    def writable(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds until the fd can take more bytes (one writer)."""
        return bool(self._out.poll(_ms(timeout)))

    def hung_up(self) -> bool:
        """True if the fd reports a hang-up or an error right now."""
        events = self._caller.poll(0)
        return any(fd == self.fd and ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
                   for fd, ev in events)

    def wake(self) -> None:
        self._woken = True
        os.write(self._wake_w, b"x")

    def pause(self) -> None:
        """Stop the reader's wait from waking for data (a hang-up still wakes it)."""
        self._set_reader_events(0)

    def resume(self) -> None:
        self._set_reader_events(self._EVENTS)

    def _set_reader_events(self, events: int) -> None:
        # one epoll_ctl(MOD): half the cost of taking the fd out and putting it back
        if self._watched != bool(events):
            self._watched = bool(events)
            try:
                self._reader.modify(self.fd, events)
            except (ValueError, OSError):
                pass                         # closed meanwhile (the bus is closing)

    def close(self) -> None:
        self._reader.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
