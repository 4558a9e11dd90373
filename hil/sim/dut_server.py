"""Serve the virtual DUT's console like a real board's UART: on a pseudo-terminal and on TCP.

`serve_pty(dut)` gives a /dev/pts/N that pyserial (or a SerialBus) opens like a USB-UART;
`serve_tcp(dut)` gives host:port for socket clients. Either way bytes pass unchanged: input
feeds `dut.feed()`, firmware output goes to every reader.

Output is queued per reader in an `OutputBuffer` so the firmware thread never blocks for long:
while a reader keeps up, a full buffer holds the firmware back (nothing is lost, so a 10 MiB
`log` arrives intact); when the reader stalls or nobody is there, the buffer keeps only its
newest bytes and counts the dropped ones, like a UART with nobody listening.
"""
from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import socket
import sys
import termios
import threading
import time
from collections.abc import Callable
from typing import Any, Self

from hil.errors import SimulatorError
from hil.sim.dut import VirtualDut

log = logging.getLogger(__name__)

DEFAULT_BUFFER_BYTES = 1 << 20    # per reader: output waiting for the reader to take it
DEFAULT_STALL_SECONDS = 2.0       # a reader that takes nothing for this long is not listening
TCP_SNDBUF_BYTES = 256 * 1024     # kernel send buffer per TCP client (bounded, not autotuned)
CHUNK = 64 * 1024                 # largest single write to a transport
POLL_S = 0.1                      # how often blocked threads look at the closing flag
JOIN_S = 2.0                      # how long close() waits for each thread


class OutputBuffer:
    """Firmware output waiting for one reader, bounded to `limit` bytes.

    `put()` (firmware thread) waits for room while the reader makes progress, so a reader that
    keeps up loses nothing. Once no byte has been taken for `stall_seconds` although output is
    pending, the reader counts as gone: `put()` stops waiting and drops the oldest bytes.
    """

    def __init__(self, limit: int = DEFAULT_BUFFER_BYTES,
                 stall_seconds: float = DEFAULT_STALL_SECONDS) -> None:
        if limit <= 0:
            raise ValueError(f"buffer limit must be positive, got {limit}")
        self.limit = limit
        self.stall_seconds = stall_seconds
        self._buf = bytearray()
        self._held = 0                     # bytes the writer took but has not written yet
        self._progress_at = time.monotonic()
        self._dropped = 0
        self._closed = False
        self._cond = threading.Condition()

    @property
    def dropped(self) -> int:
        """Bytes thrown away because the reader was not reading."""
        return self._dropped

    @property
    def pending(self) -> int:
        """Bytes waiting in the buffer (never more than `limit`)."""
        return len(self._buf)

    def _stalled(self) -> bool:
        return time.monotonic() - self._progress_at >= self.stall_seconds

    def put(self, data: bytes) -> None:
        """Queue firmware output; may wait up to `stall_seconds` for a slow reader. Never raises."""
        for start in range(0, len(data), self.limit):
            self._put_piece(data[start:start + self.limit])

    def _put_piece(self, piece: bytes) -> None:
        with self._cond:
            if self._closed:
                return
            if not self._buf and not self._held:
                self._progress_at = time.monotonic()    # idle until now: the stall clock starts
            while (self._buf and len(self._buf) + len(piece) > self.limit and not self._closed
                   and not self._stalled()):
                left = self.stall_seconds - (time.monotonic() - self._progress_at)
                self._cond.wait(max(left, 0.001))
            self._buf += piece
            overflow = len(self._buf) - self.limit
            if overflow > 0:
                del self._buf[:overflow]
                self._dropped += overflow
            self._cond.notify_all()

    def take(self, max_bytes: int = CHUNK, timeout: float = POLL_S) -> bytes:
        """Remove and return up to `max_bytes` for the writer (b"" after `timeout` or on close).

        The writer reports back with `wrote()` or `discard()`."""
        with self._cond:
            if not self._buf and not self._closed:
                self._cond.wait(timeout)
            data = bytes(self._buf[:max_bytes])
            del self._buf[:len(data)]
            if data:
                self._held += len(data)   # not progress yet: only a delivered byte proves a reader
                self._cond.notify_all()
            return data

    def wrote(self, n: int) -> None:
        """The writer delivered `n` taken bytes: the reader is alive."""
        with self._cond:
            self._held -= n
            self._progress_at = time.monotonic()
            self._cond.notify_all()

    def stalled(self) -> bool:
        """True when output is pending and the reader took nothing for `stall_seconds`."""
        with self._cond:
            return bool(self._buf or self._held) and self._stalled()

    def discard(self, n: int) -> None:
        """The writer gives up on `n` taken bytes (reader stalled): count them as dropped."""
        with self._cond:
            self._held -= n
            self._dropped += n
            self._cond.notify_all()

    def close(self) -> None:
        """Release a waiting `put()` and `take()`; later output is ignored."""
        with self._cond:
            self._closed = True
            self._buf.clear()
            self._cond.notify_all()


def pump_output(buffer: OutputBuffer, write: Callable[[memoryview], int],
                running: Callable[[], bool]) -> None:
    """Move bytes from `buffer` to a transport until `running()` is false.

    `write(view)` returns how many bytes it wrote (0 if the transport had no room within about
    POLL_S). A chunk the reader does not take within the stall time is dropped, so the bytes a
    late reader sees are always the newest ones, in order."""
    held = memoryview(b"")
    while running():
        if not held:
            held = memoryview(buffer.take())
            continue
        n = write(held)
        if n:
            buffer.wrote(n)
            held = held[n:]
        elif buffer.stalled():
            buffer.discard(len(held))
            held = memoryview(b"")


def _set_raw(fd: int) -> None:
    """Put a tty into raw mode: no echo, no line editing, no CR/LF or flow-control translation."""
    attrs = termios.tcgetattr(fd)
    iflag, oflag, cflag, lflag = 0, 1, 2, 3
    attrs[iflag] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
                      | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON
                      | termios.IXOFF | termios.INPCK)
    attrs[oflag] &= ~termios.OPOST
    attrs[cflag] = (attrs[cflag] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    attrs[lflag] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG
                      | termios.IEXTEN)
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class _Service:
    """Shared life cycle of a console server: threads that log and record their errors."""

    name = "dut-console"

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []

    def _running(self) -> bool:
        return not self._closing.is_set()

    def _spawn(self, what: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        """Start a daemon thread that reports an unexpected exception instead of dying silently."""
        thread = threading.Thread(target=self._guarded, args=(what, target, *args),
                                  name=f"{self.name}-{what}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def _guarded(self, what: str, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except Exception as exc:
            self._fail(f"{what} stopped", exc)

    def _fail(self, context: str, exc: BaseException) -> None:
        """Record the first fatal error and log it with a traceback."""
        if self.error is None:
            self.error = exc
        log.error("%s: %s: %s", self, context, exc, exc_info=exc)

    def _join(self) -> None:
        me = threading.current_thread()
        for thread in self._threads:
            if thread is not me:
                thread.join(JOIN_S)
                if thread.is_alive():
                    log.warning("%s: thread %s did not stop within %.1f s",
                                self, thread.name, JOIN_S)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class PtyConsole(_Service):
    """The DUT console on a pseudo-terminal; open `.path` like a serial port."""

    name = "dut-pty"

    def __init__(self, dut: VirtualDut, *, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                 stall_seconds: float = DEFAULT_STALL_SECONDS) -> None:
        super().__init__()
        self.dut = dut
        self._master, self._slave = os.openpty()
        try:
            _set_raw(self._slave)           # the slave stays open: a client closing never EIOs
            os.set_blocking(self._master, False)
            self.path = os.ttyname(self._slave)
        except OSError as exc:
            self._close_fds()
            raise SimulatorError(f"cannot set up a pseudo-terminal for the DUT console: {exc}")
        self.output = OutputBuffer(buffer_bytes, stall_seconds)
        self._detach = dut.attach(self.output.put)
        self._spawn("reader", self._read_loop)
        self._spawn("writer", pump_output, self.output, self._write, self._running)

    def __repr__(self) -> str:
        return f"PtyConsole({self.path})"

    @property
    def dropped(self) -> int:
        return self.output.dropped

    @property
    def pending(self) -> int:
        return self.output.pending

    def _read_loop(self) -> None:
        """Client → DUT: bytes written to the slave come out of the master."""
        while self._running():
            ready, _, _ = select.select([self._master], [], [], POLL_S)
            if not ready:
                continue
            try:
                data = os.read(self._master, CHUNK)
            except BlockingIOError:
                continue
            self.dut.feed(data)

    def _write(self, data: memoryview) -> int:
        _, ready, _ = select.select([], [self._master], [], POLL_S)
        if not ready:
            return 0
        try:
            return os.write(self._master, data)
        except BlockingIOError:
            time.sleep(POLL_S / 10)
            return 0

    def close(self) -> None:
        """Stop serving: detach from the DUT, stop the threads, close the pty."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._detach()
        self.output.close()
        self._join()
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class _TcpClient:
    """One connected TCP client: its own output buffer, a reader and a writer thread."""

    def __init__(self, sock: socket.socket, peer: str, output: OutputBuffer) -> None:
        self.sock = sock
        self.peer = peer
        self.output = output
        self.gone = threading.Event()
        self._detach: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def listen_to(self, dut: VirtualDut) -> None:
        """Start receiving the DUT's output, greeted with its prompt if it waits at one (a board
        that booted before the client connected would otherwise show nothing)."""
        self._detach = dut.attach(self.output.put, greet=True)

    def stop_listening(self) -> None:
        """Stop receiving the DUT's output (once, whichever thread asks first)."""
        with self._lock:
            detach, self._detach = self._detach, None
        if detach is not None:
            detach()

    def hang_up(self) -> None:
        """Wake both threads (the reader closes the socket when it has finished)."""
        self.gone.set()
        self.output.close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass                             # already disconnected


class TcpConsole(_Service):
    """The DUT console on a TCP port. Every client sees all output from its connection on
    (starting with the prompt when the shell sits at one); input from any client goes to the DUT.

    A pty has no such greeting: opening a serial port is no event the board can see, as on
    hardware; Enter gets a prompt."""

    name = "dut-tcp"

    def __init__(self, dut: VirtualDut, host: str = "127.0.0.1", port: int = 0, *,
                 buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                 stall_seconds: float = DEFAULT_STALL_SECONDS) -> None:
        super().__init__()
        self.dut = dut
        self.buffer_bytes = buffer_bytes
        self.stall_seconds = stall_seconds
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._listener = socket.create_server((host, port), family=family)
        except OSError as exc:
            raise SimulatorError(f"cannot listen on {host}:{port} for the DUT console: "
                                 f"{exc.strerror or exc}") from None
        self._listener.settimeout(POLL_S)
        self.host, self.port = self._listener.getsockname()[:2]
        self._clients: list[_TcpClient] = []
        self._lock = threading.Lock()
        self._dropped_gone = 0               # dropped bytes of clients that have left
        self._acceptor = self._spawn("accept", self._accept_loop)

    def __repr__(self) -> str:
        return f"TcpConsole({self.host}:{self.port})"

    @property
    def clients(self) -> int:
        """How many clients are connected now."""
        with self._lock:
            return len(self._clients)

    @property
    def dropped(self) -> int:
        """Output bytes dropped for stalled clients, over all clients so far."""
        with self._lock:
            return self._dropped_gone + sum(c.output.dropped for c in self._clients)

    def _accept_loop(self) -> None:
        while self._running():
            try:
                sock, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if not self._running():
                    return
                log.warning("%s: accept failed (%s), still listening", self, exc)
                time.sleep(POLL_S)
                continue
            try:
                self._add_client(sock, f"{addr[0]}:{addr[1]}")
            except OSError as exc:           # the client vanished while being set up
                log.warning("%s: client %s:%s lost during set-up: %s", self, *addr[:2], exc)
                sock.close()

    def _add_client(self, sock: socket.socket, peer: str) -> None:
        if not self._running():
            sock.close()
            return
        sock.settimeout(POLL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TCP_SNDBUF_BYTES)
        client = _TcpClient(sock, peer, OutputBuffer(self.buffer_bytes, self.stall_seconds))
        client.listen_to(self.dut)
        with self._lock:
            self._clients.append(client)
        self._spawn(f"client-{peer}", self._serve_client, client)

    def _serve_client(self, client: _TcpClient) -> None:
        """Reader side of one client; owns the socket and cleans up when the client goes."""
        writer = threading.Thread(target=self._client_writer, args=(client,), daemon=True,
                                  name=f"{self.name}-send-{client.peer}")
        writer.start()
        try:
            while not client.gone.is_set() and self._running():
                try:
                    data = client.sock.recv(CHUNK)
                except TimeoutError:
                    continue
                except OSError:
                    break                    # reset by the peer: the client vanished
                if not data:
                    break                    # the client closed its side
                self.dut.feed(data)
        except Exception as exc:
            log.error("%s: client %s: reader failed, dropping the client: %s",
                      self, client.peer, exc, exc_info=exc)
        finally:
            self._remove_client(client)
            writer.join(JOIN_S)
            client.sock.close()

    def _client_writer(self, client: _TcpClient) -> None:
        try:
            pump_output(client.output, lambda view: self._send(client, view),
                        lambda: not client.gone.is_set() and self._running())
        except OSError:
            pass                             # broken pipe / reset: the client vanished
        except Exception as exc:
            log.error("%s: client %s: writer failed, dropping the client: %s",
                      self, client.peer, exc, exc_info=exc)
        finally:
            client.hang_up()

    @staticmethod
    def _send(client: _TcpClient, view: memoryview) -> int:
        try:
            return client.sock.send(view)
        except TimeoutError:
            return 0

    def _remove_client(self, client: _TcpClient) -> None:
        client.stop_listening()
        client.hang_up()
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)
                self._dropped_gone += client.output.dropped

    def close(self) -> None:
        """Stop listening, disconnect every client, stop the threads."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._acceptor.join(JOIN_S)          # no new clients from here on
        self._listener.close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.stop_listening()
            client.hang_up()
        self._join()


def serve_pty(dut: VirtualDut, **options: Any) -> PtyConsole:
    """Serve `dut`'s console on a new pseudo-terminal (see PtyConsole for options)."""
    return PtyConsole(dut, **options)


def serve_tcp(dut: VirtualDut, host: str = "127.0.0.1", port: int = 0,
              **options: Any) -> TcpConsole:
    """Serve `dut`'s console on a TCP port (0: any free port; see `.port`)."""
    return TcpConsole(dut, host, port, **options)


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hil sim dut",
        description="Run the virtual DUT and serve its console on a pseudo-terminal and/or a "
                    "TCP port until Ctrl-C or SIGTERM. Prints the pty path and/or host:port.")
    p.add_argument("--pty", action="store_true", help="serve the console on a pseudo-terminal")
    p.add_argument("--port", type=int, help="serve the console on this TCP port (0: any free)")
    p.add_argument("--host", default="127.0.0.1", help="TCP address to listen on")
    p.add_argument("--speed", type=float, default=1.0, help="firmware speed-up factor")
    p.add_argument("--seed", type=int, default=1, help="seed of the power/sensor noise")
    p.add_argument("--echo", action="store_true", help="the firmware echoes what it receives")
    p.add_argument("--powered", action=argparse.BooleanOptionalAction, default=True,
                   help="switch the DUT's supply on at start (default: on)")
    return p


def main(argv: list[str] | None = None) -> int:
    """`hil sim dut`: serve a standalone virtual DUT until interrupted."""
    args = _parser().parse_args(argv)
    if not args.pty and args.port is None:
        _parser().error("give --pty and/or --port N")
    if args.speed <= 0:
        _parser().error("--speed must be positive")
    logging.basicConfig(level=logging.INFO, format="hil sim dut: %(message)s")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda s, f: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    dut = VirtualDut(seed=args.seed, speed=args.speed, echo=args.echo)
    consoles: list[PtyConsole | TcpConsole] = []
    try:
        if args.pty:
            consoles.append(serve_pty(dut))
        if args.port is not None:
            consoles.append(serve_tcp(dut, args.host, args.port))
        if args.powered:                     # before printing: once a client can connect,
            dut.set_supply(True, 3.3)        # the board takes input (answered after boot)
        for console in consoles:
            address = console.path if isinstance(console, PtyConsole) else \
                f"{console.host}:{console.port}"
            print(address, flush=True)
        print("virtual DUT console running (TCP clients get the prompt on connect; on the pty "
              "press Enter for one); Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stop.wait(0.2):
            if any(c.error for c in consoles):
                return 1
        return 0
    except SimulatorError as exc:
        print(f"hil sim dut: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for console in consoles:
            console.close()
        dut.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

