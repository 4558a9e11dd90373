"""A recorded console session served as a simulated console: a lab session becomes a CI DUT.

The session (a bus transcript stored by `hil.instruments.console_recording`) is cut into
exchanges: each line the host sent (tx, line ending removed) is a command, and what the DUT
sent (rx) until the next tx is its reply, with each chunk's delay after the command. Output
before the first command (a boot banner) is the preamble.

`ReplayedConsole` behaves like the virtual DUT towards the console servers of
`hil.sim.dut_server` (`attach`, `feed`, `close`), so it is served on a real pseudo-terminal or
TCP port by the same code. Rules (decided here):

* every attach (the pty at start, each TCP client on connect) gets the preamble; with
  `hold=True` it waits for `begin()`, so a pty client opened after the server still sees the
  boot banner (bytes written to a pty nobody has opened yet may be flushed by the opener);
* a command is answered with its recorded reply, at the recorded delays divided by `speedup`
  (0 = at once); a command recorded several times answers with its replies in recorded order,
  the last one repeating;
* a command never recorded gets one error line naming it and the recorded commands, then the
  session's prompt (what its replies most often end with), and is kept in `.unknown`; an empty
  line that was never recorded is ignored.
"""
from __future__ import annotations

import argparse
import logging
import math
import queue
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hil.errors import HilError, SimulatorError
from hil.protocols.events_db import ConsoleEntry, read_console

log = logging.getLogger(__name__)

Chunk = tuple[float, bytes]          # (seconds after the command / session start, bytes)
MAX_LISTED = 12


@dataclass
class ConsoleScript:
    """A console session cut into a preamble and command → replies."""

    session: str
    preamble: list[Chunk] = field(default_factory=list)
    replies: dict[bytes, list[list[Chunk]]] = field(default_factory=dict)

    @classmethod
    def from_entries(cls, session: str, entries: Sequence[ConsoleEntry]) -> ConsoleScript:
        script = cls(session)
        start = entries[0].time if entries else 0.0
        current: list[Chunk] = script.preamble
        since = start
        typed = bytearray()
        for entry in entries:
            if entry.direction == "rx":
                current.append((max(0.0, entry.time - since), entry.data))
                continue
            typed += entry.data
            while True:
                cut = _line_end(typed)
                if cut is None:
                    break
                line, rest = bytes(typed[:cut[0]]), typed[cut[1]:]
                typed = bytearray(rest)
                current = []
                script.replies.setdefault(line, []).append(current)
                since = entry.time
        return script

    @property
    def commands(self) -> list[str]:
        return [c.decode(errors="replace") for c in self.replies]

    @property
    def prompt(self) -> bytes:
        """What the DUT's replies most often end with after their last line ("dut> "), b""
        if they end with a line ending."""
        tails = Counter(b"".join(data for _, data in reply).rpartition(b"\n")[2]
                        for replies in self.replies.values() for reply in replies)
        return max(tails, key=lambda t: (tails[t], t)) if tails else b""


def _line_end(data: bytearray) -> tuple[int, int] | None:
    """(end of the line, start of the next) for the first CR, LF or CRLF in `data`."""
    for i, b in enumerate(data):
        if b == 0x0A:
            return i, i + 1
        if b == 0x0D:
            if i + 1 < len(data) and data[i + 1] == 0x0A:
                return i, i + 2
            if i + 1 == len(data):
                return None                  # maybe CRLF: wait for the next byte
            return i, i + 1
    return None


class ReplayedConsole:
    """The DUT side of a recorded session (see the module docstring)."""

    def __init__(self, script: ConsoleScript, *, speedup: float = 1.0,
                 hold: bool = False) -> None:
        if math.isnan(speedup):
            raise SimulatorError("console replay speedup must be a number")
        self.script = script
        self.scale = speedup if 0 < speedup < math.inf else math.inf
        self.unknown: list[str] = []
        self.answered = 0
        self.error: BaseException | None = None
        self._used: dict[bytes, int] = {}
        self._listeners: list[Callable[[bytes], None]] = []
        self._typed = bytearray()
        self._held: list[Callable[[bytes], None]] | None = [] if hold else None
        self._lock = threading.Lock()
        self._work: queue.Queue[tuple[Callable[[bytes], None] | None, list[Chunk]] | None] = \
            queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="console-replay", daemon=True)
        self._thread.start()

    @classmethod
    def from_db(cls, db: str | Path, session: str | None = None, *,
                speedup: float = 1.0, hold: bool = False) -> ReplayedConsole:
        name, entries = read_console(db, session)
        return cls(ConsoleScript.from_entries(name, entries), speedup=speedup, hold=hold)

    def begin(self) -> None:
        """Play the preamble to the listeners held back so far (once)."""
        with self._lock:
            held, self._held = self._held, None
        for listener in held or []:
            self._work.put((listener, self.script.preamble))

    # ------------------------------------------------------------------ the console servers' side
    def attach(self, listener: Callable[[bytes], None], *, greet: bool = False
               ) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)
            if self._held is not None:
                self._held.append(listener)
                return lambda: self._detach(listener)
        self._work.put((listener, self.script.preamble))
        return lambda: self._detach(listener)

    def _detach(self, listener: Callable[[bytes], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def feed(self, data: bytes) -> None:
        """Bytes from the host: every complete line is a command."""
        with self._lock:
            self._typed += data
            while (cut := _line_end(self._typed)) is not None:
                line = bytes(self._typed[:cut[0]])
                del self._typed[:cut[1]]
                self._work.put((None, self._reply(line)))

    def _reply(self, line: bytes) -> list[Chunk]:
        replies = self.script.replies.get(line)
        if replies is None:
            if not line.strip():
                return []
            text = line.decode(errors="replace")
            self.unknown.append(text)
            listed = ", ".join(repr(c) for c in self.script.commands[:MAX_LISTED])
            more = "" if len(self.script.replies) <= MAX_LISTED else ", …"
            message = (f"[hil console replay] error: command {text!r} was never recorded in "
                       f"session {self.script.session!r}; recorded commands: {listed}{more}")
            log.warning("%s", message)
            return [(0.0, f"\r\n{message}\r\n".encode() + self.script.prompt)]
        k = self._used.get(line, 0)
        self._used[line] = k + 1
        self.answered += 1
        return replies[min(k, len(replies) - 1)]

    # ------------------------------------------------------------------ playing
    def _play(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item = self._work.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    return
                target, chunks = item
                elapsed = 0.0
                for delay, data in chunks:
                    if self.scale != math.inf and delay > elapsed:
                        if self._stop.wait((delay - elapsed) / self.scale):
                            return
                        elapsed = delay
                    self._emit(target, data)
        except Exception as exc:             # noqa: BLE001 - kept and logged, never silent
            self.error = exc
            log.error("console replay stopped: %s", exc, exc_info=exc)

    def _emit(self, target: Callable[[bytes], None] | None, data: bytes) -> None:
        with self._lock:
            listeners = [target] if target is not None else list(self._listeners)
        for listener in listeners:
            if target is None or listener in self._listeners:
                listener(data)

    def close(self) -> None:
        self._stop.set()
        self._work.put(None)
        self._thread.join(2.0)


def serve_replay(db: str | Path, session: str | None = None, *, speedup: float = 1.0,
                 transport: str = "pty", host: str = "127.0.0.1", port: int = 0,
                 hold: bool = False) -> Served:
    """Serve a recorded session on a new pty (`.path`) or TCP port (`.host`, `.port`);
    `hold`: the pty's preamble waits for `Served.begin()` (call it once the client is open)."""
    from hil.sim.dut_server import serve_pty, serve_tcp
    console = ReplayedConsole.from_db(db, session, speedup=speedup, hold=hold)
    try:
        server = (serve_pty(console) if transport == "pty"   # type: ignore[arg-type]
                  else serve_tcp(console, host, port))       # type: ignore[arg-type]
    except BaseException:
        console.close()
        raise
    return Served(console, server)


@dataclass
class Served:
    """A replayed console and the server that carries it; `close()` stops both."""

    console: ReplayedConsole
    server: object

    @property
    def path(self) -> str:
        return self.server.path  # type: ignore[attr-defined]

    @property
    def host(self) -> str:
        return self.server.host  # type: ignore[attr-defined]

    @property
    def port(self) -> int:
        return self.server.port  # type: ignore[attr-defined]

    def begin(self) -> None:
        self.console.begin()

    def close(self) -> None:
        self.server.close()  # type: ignore[attr-defined]
        self.console.close()


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """`hil sim console`: serve a recorded console session until Ctrl-C or SIGTERM."""
    p = argparse.ArgumentParser(prog="hil sim console",
                                description="Serve a recorded console session (hil record "
                                            "console) as a simulated DUT console.")
    p.add_argument("--db", required=True, help="SQLite database holding the session")
    p.add_argument("--session", help="session name (default: the first one)")
    p.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal")
    p.add_argument("--port", type=int, help="serve on this TCP port (0: any free)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--speedup", type=float, default=1.0,
                   help="reply timing speed-up (0 or inf: answer at once)")
    args = p.parse_args(argv)
    if args.pty == (args.port is not None):
        p.error("give exactly one of --pty and --port N")
    logging.basicConfig(level=logging.INFO, format="hil sim console: %(message)s")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda s, f: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        served = serve_replay(args.db, args.session, speedup=args.speedup,
                              transport="pty" if args.pty else "tcp", host=args.host,
                              port=args.port or 0)
    except (HilError, OSError) as exc:
        print(f"hil sim console: error: {exc}", file=sys.stderr)
        return 1
    try:
        print(served.path if args.pty else f"{served.host}:{served.port}", flush=True)
        script = served.console.script
        print(f"replaying session {script.session!r}: {len(script.replies)} commands "
              f"({', '.join(script.commands[:MAX_LISTED])}); Ctrl-C to stop",
              file=sys.stderr, flush=True)
        while not stop.wait(0.2):
            if served.console.error is not None:
                return 1
        return 0
    finally:
        served.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
