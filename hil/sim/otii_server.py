"""A protocol-true Otii TCP server simulator: the vendor's otii-tcp-client works against it unchanged.

Transport and dispatch only: accept connections, greet, split request lines, run each command
(hil.sim.otii_commands) under one lock, write exactly one CRLF-terminated ASCII reply per request,
and never anything unsolicited after the greeting. Every request is kept in `requests` so tests
can assert the exact command sequence, and `faults` break the protocol on purpose so tests can
prove that clients (and test suites) notice.

Like a real Otii application it starts logged out: `otii_login` with one of `accounts` logs in
(licenses cannot be listed, reserved or returned before); `logged_in=True` starts logged in.

The first device is wired to a VirtualDut: main output -> its supply, GPO -> its inputs, GPI <- its
outputs, UART rx <- its console lines, UART tx -> its console input. `hil sim otii` runs one
standalone (with its own DUT, optionally serving that DUT's console too).
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil import clock
from hil.errors import SimulatorError
from hil.protocols import otii_json as oj
from hil.sim.otii_commands import COMMANDS, Args, Bulk, OtiiState
from hil.sim.otii_device import DeviceInfo, SimDevice, wire_dut

TICK_S = 0.05                 # over-current checks and sample generation between requests
MAX_REQUEST_BYTES = 4 << 20   # a longer line is answered with `Request too large`
GARBAGE = b"<html><body>502 Bad Gateway</body></html>"
#: The account a simulator accepts unless given others (username -> password).
SIM_ACCOUNTS = {"hil": "hil-sim"}


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the server saw it, and how it answered (password values redacted)."""

    time: float
    connection: int
    cmd: str
    trans_id: Any
    data: dict[str, Any]
    reply: str                 # "response", "error", "garbage" or "dropped"
    errorcode: str | None = None


@dataclass
class Faults:
    """Protocol faults to inject. Queued faults apply once, to the next request whose command
    matches (None matches any); flags and delays stay on until `OtiiServer.clear_faults()`."""

    lf_only: bool = False                     # end replies with LF only (client never sees them)
    numeric_trans_id: bool = False            # echo "7" as 7 (client: "Transaction id mismatch")
    errors: list[tuple[str | None, str, dict[str, Any]]] = field(default_factory=list)
    garbage: list[str | None] = field(default_factory=list)      # reply is not JSON
    drops: list[str | None] = field(default_factory=list)        # close instead of replying
    ignored: list[str | None] = field(default_factory=list)      # reply {} but do nothing
    unplugs: list[tuple[str | None, str | None]] = field(default_factory=list)  # (cmd, device)
    delays: dict[str, float] = field(default_factory=dict)       # cmd -> seconds before reply

    @staticmethod
    def take(queue: list[Any], cmd: str, key: Any = lambda item: item) -> Any:
        for k, item in enumerate(queue):
            if key(item) in (None, cmd):
                return queue.pop(k)
        return None


class OtiiServer:
    """Simulated Otii TCP server on `host:port` (port 0 picks a free one) measuring `dut`.

    Settings of the simulated application (licenses, login, strict licensing) live in `state`
    (an OtiiState); change them under `lock`.
    """

    def __init__(self, dut: Any = None, *, host: str = "127.0.0.1", port: int = 0,
                 speed: float = 1.0, seed: int = 1, devices: Iterable[DeviceInfo] | None = None,
                 otii_version: str = "3.6.0", accounts: dict[str, str] | None = None,
                 logged_in: bool = False) -> None:
        if speed <= 0:
            raise SimulatorError(f"Otii simulator speed must be positive, got {speed}")
        infos = [DeviceInfo()] if devices is None else list(devices)
        sims = [SimDevice(info) for info in infos]
        if dut is not None and sims:
            sims[0].wiring = wire_dut(dut)
        self.dut = dut
        self.state = OtiiState(devices=sims, speed=speed, seed=seed, otii_version=otii_version,
                               accounts=dict(SIM_ACCOUNTS if accounts is None else accounts),
                               logged_in=logged_in)
        self.lock = threading.RLock()
        self.faults = Faults()
        self.requests: list[LoggedRequest] = []
        self.connections = 0
        self.deny: str | None = None              # refuse connections with this message
        self.errors: list[str] = []               # simulator bugs caught in its threads
        self._clients: dict[int, socket.socket] = {}
        self._closed = threading.Event()
        try:
            self._listener = socket.create_server((host, port))
        except OSError as exc:
            raise SimulatorError(f"Otii simulator cannot listen on {host}:{port}: "
                                 f"{exc.strerror or exc}") from None
        self.host, self.port = self._listener.getsockname()[:2]
        self._threads = [threading.Thread(target=self._accept_loop, name="otii-sim-accept",
                                          daemon=True),
                         threading.Thread(target=self._tick_loop, name="otii-sim-tick",
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def __repr__(self) -> str:
        return f"OtiiServer({self.host}:{self.port}, {len(self.state.devices)} device(s))"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def device(self) -> SimDevice:
        """The first device (the one wired to the DUT)."""
        return self.state.devices[0]

    def write_credentials(self, path: str | Path) -> Path:
        """Write the first account as the vendor client's credentials file (JSON with username
        and password) to `path`, for clients that log in with `licensing = "auto"`."""
        if not self.state.accounts:
            raise SimulatorError("this Otii simulator has no account to write credentials for")
        username, password = next(iter(self.state.accounts.items()))
        path = Path(path)
        path.write_text(json.dumps({"username": username, "password": password}))
        return path

    # ----------------------------------------------------------------- fault injection
    def inject_error(self, code: str, cmd: str | None = None, **fields: Any) -> None:
        """Answer the next request (for `cmd`) with error `code`, fields filled per spec §6."""
        with self.lock:
            self.faults.errors.append((cmd, code, fields))

    def delay(self, cmd: str, seconds: float) -> None:
        """Answer every `cmd` `seconds` late (the command runs then, even if the client has
        given up and gone); 0 ends the delay."""
        with self.lock:
            if seconds > 0:
                self.faults.delays[cmd] = seconds
            else:
                self.faults.delays.pop(cmd, None)

    def clear_faults(self) -> None:
        """Switch every injected fault off (flags, delays, queued faults, refusing
        connections); devices unplugged stay so until `plug()`."""
        with self.lock:
            self.faults = Faults()
            self.deny = None

    def drop_connection(self, cmd: str | None = None) -> None:
        """Close client connections: now (cmd None and nothing pending) or at the next `cmd`."""
        with self.lock:
            if cmd is None:
                for sock in list(self._clients.values()):
                    _close(sock)
            else:
                self.faults.drops.append(cmd)

    def ignore(self, cmd: str) -> None:
        """Answer the next `cmd` with success but do nothing (a command lost inside the server)."""
        with self.lock:
            self.faults.ignored.append(cmd)

    def garble(self, cmd: str | None = None) -> None:
        """Make the reply to the next request (for `cmd`) a line that is not JSON."""
        with self.lock:
            self.faults.garbage.append(cmd)

    def unplug(self, device_id: str | None = None, cmd: str | None = None) -> None:
        """Pull a device's USB cable: now, or when `cmd` next arrives. Main goes off, data ends,
        its commands fail with `Device not connected`."""
        with self.lock:
            if cmd is None:
                self._unplug(device_id)
            else:
                self.faults.unplugs.append((cmd, device_id))

    def _unplug(self, device_id: str | None) -> None:
        for dev in self.state.devices:
            if device_id in (None, dev.info.device_id) and dev.connected:
                dev.unplug(clock.now())
                return

    def plug(self, device_id: str | None = None) -> None:
        """Plug an unplugged device back in (the first unplugged one when `device_id` is None):
        listed and usable again, main output off, settings kept. Recordings made while it was
        out keep their data ending at the unplug."""
        with self.lock:
            for dev in self.state.devices:
                if device_id in (None, dev.info.device_id) and not dev.connected:
                    dev.plug(clock.now())
                    return

    def push_information(self, info: str = "recording_stopped") -> None:
        """Misbehave: push an unsolicited `information` message to every client (spec §4.2
        says a real server must not; tests use this to prove they would notice)."""
        line = oj.encode({"type": "information", "info": info, "data": {}})
        with self.lock:
            for sock in list(self._clients.values()):
                _send(sock, line)

    # ----------------------------------------------------------------- request log
    def commands(self, connection: int | None = None) -> list[str]:
        """Commands received so far (of one connection), in order."""
        with self.lock:
            return [r.cmd for r in self.requests if connection in (None, r.connection)]

    def clear_log(self) -> None:
        with self.lock:
            self.requests.clear()

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Stop serving: close every connection, switch every output off (the DUT loses power)."""
        if self._closed.is_set():
            return
        self._closed.set()
        _close(self._listener)
        with self.lock:
            for sock in list(self._clients.values()):
                _close(sock)
            for dev in self.state.devices:
                if dev.main:
                    dev.set_main(False, clock.now())
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> OtiiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tick_loop(self) -> None:
        while not self._closed.wait(TICK_S):
            try:
                with self.lock:
                    self.state.tick(clock.now(), warm=True)
            except Exception as exc:          # a simulator bug: keep serving, keep the evidence
                self.errors.append(f"tick: {type(exc).__name__}: {exc}")

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
                cid = self.connections
                self._clients[cid] = sock
            threading.Thread(target=self._serve, args=(sock, cid), name=f"otii-sim-{cid}",
                             daemon=True).start()

    # ----------------------------------------------------------------- one connection
    def _serve(self, sock: socket.socket, cid: int) -> None:
        try:
            if self.deny is not None:
                _send(sock, oj.encode(oj.denied(self.deny)))
                return
            _send(sock, oj.encode(oj.greeting(self.state.otii_version), self._line_end()))
            splitter = oj.LineSplitter(MAX_REQUEST_BYTES)
            while not self._closed.is_set():
                data = sock.recv(1 << 16)
                if not data:
                    return
                for line in splitter.feed(data):
                    ok = (self._too_large(sock, cid, line.size) if isinstance(line, oj.Oversized)
                          else self._handle(sock, cid, line))
                    if not ok:
                        return
        except OSError:
            pass
        except Exception as exc:              # a simulator bug: drop this client, keep serving
            self.errors.append(f"connection {cid}: {type(exc).__name__}: {exc}")
        finally:
            with self.lock:
                self._clients.pop(cid, None)
            _close(sock)

    def _too_large(self, sock: socket.socket, cid: int, size: int) -> bool:
        """Answer a request line longer than MAX_REQUEST_BYTES (its trans_id is unknown)."""
        self._log(cid, oj.Request("", has_trans_id=False), "error", "Request too large")
        return _send(sock, oj.encode(oj.error("Request too large", "", "", read_size=str(size),
                                              max_size=MAX_REQUEST_BYTES), self._line_end()))

    def _handle(self, sock: socket.socket, cid: int, line: bytes) -> bool:
        """Answer one request line; False when the connection is to be closed."""
        try:
            req = oj.parse_request(line)
        except oj.RequestError as exc:
            req = exc.request
            reply = (oj.error_for(req, exc) if req is not None else
                     _unparsable(exc))
            self._log(cid, req or oj.Request("", has_trans_id=False), "error", exc.code)
            return _send(sock, oj.encode(reply, self._line_end()))
        with self.lock:
            faults = self.faults
            if faults.take(faults.drops, req.cmd) is not None:
                self._log(cid, req, "dropped")
                return False
            unplug = faults.take(faults.unplugs, req.cmd, key=lambda item: item[0])
            if unplug is not None:
                self._unplug(unplug[1])
            delay = faults.delays.get(req.cmd, 0.0)
        if delay:
            time.sleep(delay)
        with self.lock:
            out, kind, code = self._execute(req)
            if self.faults.take(self.faults.garbage, req.cmd) is not None:
                out, kind = GARBAGE + oj.CRLF, "garbage"
            self._log(cid, req, kind, code)
        if self.faults.lf_only:
            out = out[:-2] + b"\n"
        ok = _send(sock, out)
        return ok and req.cmd != "otii_shutdown"

    def _execute(self, req: oj.Request) -> tuple[bytes, str, str | None]:
        """Run one command under the lock: (encoded reply line, reply type, error code)."""
        st = self.state
        reply_id = req.reply_id
        if self.faults.numeric_trans_id and isinstance(reply_id, str) and reply_id.isdigit():
            reply_id = int(reply_id)
        injected = self.faults.take(self.faults.errors, req.cmd, key=lambda item: item[0])
        try:
            if injected is not None:
                raise oj.RequestError(injected[1], **injected[2])
            refusal = st.refuses(req.cmd)
            if refusal is not None:
                raise refusal
            st.tick(clock.now())
            if self.faults.take(self.faults.ignored, req.cmd) is not None:
                result: dict[str, Any] | Bulk = {}
            else:
                result = COMMANDS[req.cmd](st, Args(req.data))
        except oj.RequestError as exc:
            return oj.encode(oj.error(exc.code, req.cmd, reply_id, **exc.data)), "error", exc.code
        except Exception as exc:   # a simulator bug must still answer like a server would
            return (oj.encode(oj.error("Command failure", req.cmd, reply_id,
                                       message=f"simulator error: {type(exc).__name__}: {exc}")),
                    "error", "Command failure")
        if isinstance(result, Bulk):
            return (oj.analog_reply(req.cmd, reply_id, result.timestamp, result.interval,
                                    result.numbers), "response", None)
        return oj.encode(oj.response(req.cmd, reply_id, result)), "response", None

    def _line_end(self) -> bytes:
        return b"\n" if self.faults.lf_only else oj.CRLF

    def _log(self, cid: int, req: oj.Request, kind: str, code: str | None = None) -> None:
        data = {k: ("***" if k == "password" else v) for k, v in req.data.items()}
        with self.lock:
            self.requests.append(LoggedRequest(clock.now(), cid, req.cmd,
                                               req.trans_id if req.has_trans_id else None,
                                               data, kind, code))


def _unparsable(exc: oj.RequestError) -> dict[str, Any]:
    """`Not able to parse request`: the id is unknown, so the reply carries none (spec §6)."""
    msg = oj.error(exc.code, "", "", **exc.data)
    del msg["trans_id"]
    return msg


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# =============================================================================== hil sim otii
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hil sim otii",
                                description="Run the Otii TCP server simulator measuring a "
                                            "virtual DUT until interrupted.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=oj.PORT, help="TCP port (1905; 0 = any free)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="time scale: recordings and the DUT run this many times faster")
    p.add_argument("--seed", type=int, default=1, help="seed of the DUT and measurement noise")
    p.add_argument("--device-type", choices=("Arc", "Ace"), default="Arc")
    p.add_argument("--account", action="append", metavar="USER:PASSWORD",
                   help="an account otii_login accepts (repeatable; default "
                        f"{':'.join(next(iter(SIM_ACCOUNTS.items())))})")
    p.add_argument("--logged-in", action="store_true",
                   help="start logged in (a real Otii application starts logged out)")
    console = p.add_mutually_exclusive_group()
    console.add_argument("--console-port", type=int, metavar="N",
                         help="also serve the DUT console on this TCP port")
    console.add_argument("--console-pty", action="store_true",
                         help="also serve the DUT console on a pseudo-terminal")
    return p


def main(argv: list[str] | None = None) -> int:
    """`hil sim otii`: serve a simulated Otii (and optionally its DUT's console) until Ctrl-C."""
    import signal

    from hil.sim.dut import VirtualDut

    args = _parser().parse_args(argv)
    if args.speed <= 0:
        _parser().error("--speed must be positive")
    if any(":" not in a for a in args.account or ()):
        _parser().error("--account takes USER:PASSWORD")
    accounts = dict(a.split(":", 1) for a in args.account) if args.account else None
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda s, f: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    dut = VirtualDut(seed=args.seed, speed=args.speed)
    services: list[Any] = []
    try:
        info = DeviceInfo(device_id=f"{args.device_type}12345678912345678912345678900001",
                          name=f"{args.device_type}-SIM", type=args.device_type)
        server = OtiiServer(dut, host=args.host, port=args.port, speed=args.speed,
                            seed=args.seed, devices=[info], accounts=accounts,
                            logged_in=args.logged_in)
        services.append(server)
        print(f"otii: {server.host}:{server.port}", flush=True)
        if args.console_port is not None or args.console_pty:
            from hil.sim import dut_server   # the console server is optional: import on demand
            if args.console_pty:
                services.append(dut_server.serve_pty(dut))
                print(f"console: {services[-1].path}", flush=True)
            else:
                services.append(dut_server.serve_tcp(dut, args.host, args.console_port))
                print(f"console: {services[-1].host}:{services[-1].port}", flush=True)
        login = ("logged in" if args.logged_in else
                 f"logged out; accounts: {', '.join(server.state.accounts or {})}")
        print(f"Otii simulator running ({login}); Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        return 0
    except SimulatorError as exc:
        print(f"hil sim otii: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for service in reversed(services):
            service.close()
        dut.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
