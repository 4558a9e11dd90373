"""Benchmark of hil's expect engine: throughput, latency and per-call cost, against peers.

A writer *process* pushes N MiB of console log lines, then a marker line, through a
pseudo-terminal and through loopback TCP. Each contender waits for the marker:

- raw ceiling: a bare os.read / recv_into loop that scans each chunk for the marker;
- hil: SerialBus (the pty slave opened by pyserial, like a real port) / TcpBus, with a regex
  `expect` and a literal `expect_exact`;
- pexpect: fdpexpect.fdspawn with default settings, and with searchwindowsize=2000;
- pyserial: Serial.read_until(marker).

Then: write-to-match latency (an echo peer answers each write; median and p99 over 3000 round
trips, judged against the bare write + blocking read round trip, the two in alternating blocks
of 100 so that both see the same moments of a noisy machine; each block opens its bus or fd
anew, so its first round trip, on a freshly opened connection, is reported apart), the cost of
10,000 sequential small expects (hil vs pexpect), and the *arrival-time error*: the peer stamps
each line with its CLOCK_MONOTONIC write time, ~1,000 lines/s, while the test side alternates
between waiting in expect and other work (sleeping, hashing with the GIL released, and, as
context only, pure-Python work that holds the GIL); the error is hil's arrival time minus the
write time. Peers that would take minutes are stopped at a smaller size, and the table says so.

    .venv/bin/python benchmarks/bench_expect.py [--sizes 1,10,50] [--roundtrips 3000]
        [--only throughput|latency|arrival] [--transports pty,tcp]

Prints a table, then exactly one line `RESULT {json}` with the figures, ratios and targets.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import re
import socket
import statistics
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pexpect.fdpexpect  # noqa: E402
import serial  # noqa: E402

from hil import clock  # noqa: E402
from hil.buses import SerialBus, TcpBus  # noqa: E402

MiB = 1 << 20
MARKER = b"DONE marker=4242"
REGEX = r"DONE marker=(\d+)"
LINE = b"log %08d sensor-node heartbeat lorem ipsum dolor sit amet\r\n"
#: Largest size (MiB) each slow peer is run at; beyond it the run would take minutes.
LIMITS = {"pexpect (default)": 10, "pyserial read_until": 1}
TARGETS = {"hil_vs_raw": 0.70, "vs_pexpect_default": 50.0, "vs_pexpect_window": 5.0,
           "latency_median_over_bare_us": 30.0, "latency_p99_us": 200.0,
           "arrival_p99_us": 1000.0, "arrival_max_us": 5000.0}
STAMPED = rb"t (\d+) (\d+)\n"     # a line the peer stamped: number, CLOCK_MONOTONIC ns


def payload(mib: int) -> bytes:
    """`mib` MiB of numbered log lines, then the marker line."""
    count = mib * MiB // len(LINE % 0) + 1
    return b"".join(LINE % i for i in range(count))[:mib * MiB] + MARKER + b"\r\n"


# ---------------------------------------------------------------------------- writer process
def writer(kind: str, control: mp.connection.Connection) -> None:
    """The peer, in its own process: pushes payloads, echoes, or sends small lines on command."""
    if kind == "pty":
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)           # kept open, so a contender closing it never hangs up
        control.send(os.ttyname(slave))
    else:
        server = socket.create_server(("127.0.0.1", 0))
        control.send(server.getsockname()[1])
    cache: dict[int, bytes] = {}
    while True:
        command, arg = control.recv()
        if command == "quit":
            return
        if kind == "pty":
            fd, conn = master, None
        else:
            conn, _ = server.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            fd = conn.fileno()
        if command == "push" and arg not in cache:
            cache[arg] = payload(arg)
        control.send("ready")
        control.recv()                                  # "go"
        if command == "push":
            view = memoryview(cache[arg])
            while view:
                view = view[os.write(fd, view[:256 * 1024]):]
        elif command == "lines":
            os.write(fd, b"".join(b"item %05d ok\r\n" % i for i in range(arg)))
        elif command == "echo":
            for _ in range(arg):
                os.write(fd, os.read(fd, 4096))
        elif command == "stamped":
            start = time.monotonic()
            for i in range(arg):
                pause = start + i / 1000 - time.monotonic()     # ~1,000 lines a second
                if pause > 0:
                    time.sleep(pause)
                os.write(fd, b"t %d %d\n" % (i, time.clock_gettime_ns(time.CLOCK_MONOTONIC)))
        control.send("done")
        control.recv()                                  # contender finished
        if conn is not None:
            conn.close()
        else:
            termios.tcflush(slave, termios.TCIFLUSH)    # nothing left over for the next one


class Peer:
    """The writer process for one transport, driven over a pipe."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.control, child = mp.get_context("spawn").Pipe()
        self.process = mp.get_context("spawn").Process(target=writer, args=(kind, child),
                                                       daemon=True)
        self.process.start()
        self.address = self.control.recv()

    def run(self, command: str, arg: int, open_reader: Callable[[], object],
            wait: Callable[[object], None], close: Callable[[object], None]) -> float:
        """Open the contender, start `command`, time `wait(contender)`; returns seconds."""
        self.control.send((command, arg))
        reader = open_reader()
        try:
            self.control.recv()                         # "ready"
            t0 = time.perf_counter()
            self.control.send("go")
            wait(reader)
            elapsed = time.perf_counter() - t0
            self.control.recv()                         # "done"
        finally:
            close(reader)
            self.control.send("finished")
        return elapsed

    def close(self) -> None:
        self.control.send(("quit", 0))
        self.process.join(5)


# ---------------------------------------------------------------------------- contenders
def open_raw(peer: Peer) -> object:
    if peer.kind == "pty":
        fd = os.open(peer.address, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        return fd
    return socket.create_connection(("127.0.0.1", peer.address))


def close_raw(reader: object) -> None:
    if isinstance(reader, int):
        os.close(reader)
    else:
        reader.close()  # type: ignore[attr-defined]


def raw_wait(reader: object) -> None:
    """The ceiling: read big chunks, look for the marker in each (with overlap), nothing else."""
    keep = len(MARKER) - 1
    tail = b""
    if isinstance(reader, int):
        while True:
            chunk = os.read(reader, 256 * 1024)
            if MARKER in tail + chunk[:keep] or MARKER in chunk:
                return
            tail = chunk[-keep:]
    buf = bytearray(256 * 1024)
    view = memoryview(buf)
    while True:
        n = reader.recv_into(buf)  # type: ignore[attr-defined]
        if not n:
            raise EOFError
        if MARKER in tail + bytes(view[:keep]) or buf.find(MARKER, 0, n) >= 0:
            return
        tail = bytes(view[max(0, n - keep):n])


def open_hil(peer: Peer) -> object:
    if peer.kind == "pty":
        return SerialBus(peer.address, timeout=300)
    return TcpBus("127.0.0.1", peer.address, timeout=300)


def open_pexpect(peer: Peer, window: int | None) -> object:
    reader = open_raw(peer)
    fd = reader if isinstance(reader, int) else reader.fileno()  # type: ignore[attr-defined]
    child = pexpect.fdpexpect.fdspawn(fd, timeout=600, searchwindowsize=window)
    child.hil_reader = reader  # keep the socket alive
    return child


def close_pexpect(child: object) -> None:
    close_raw(child.hil_reader)  # type: ignore[attr-defined]


def open_pyserial(peer: Peer) -> object:
    if peer.kind == "pty":
        return serial.Serial(peer.address, timeout=600)
    return serial.serial_for_url(f"socket://127.0.0.1:{peer.address}", timeout=600)


def contenders(peer: Peer) -> dict[str, tuple[Callable, Callable, Callable]]:
    """name -> (open, wait, close) for the throughput runs."""
    return {
        "raw ceiling": (lambda: open_raw(peer), raw_wait, close_raw),
        "hil expect (regex)": (lambda: open_hil(peer), lambda b: b.expect(REGEX),
                               lambda b: b.close()),
        "hil expect_exact": (lambda: open_hil(peer), lambda b: b.expect_exact(MARKER),
                             lambda b: b.close()),
        "pexpect (default)": (lambda: open_pexpect(peer, None),
                              lambda c: c.expect(REGEX.encode()), close_pexpect),
        "pexpect (window 2000)": (lambda: open_pexpect(peer, 2000),
                                  lambda c: c.expect(REGEX.encode()), close_pexpect),
        "pyserial read_until": (lambda: open_pyserial(peer),
                                lambda s: _check(s.read_until(MARKER)), lambda s: s.close()),
    }


def _check(data: bytes) -> None:
    if not data.endswith(MARKER):
        raise RuntimeError("pyserial read_until returned without the marker")


def limit_for(name: str) -> int | None:
    return next((mib for prefix, mib in LIMITS.items() if name.startswith(prefix)), None)


# ---------------------------------------------------------------------------- runs
FAST = ("raw ceiling", "hil expect (regex)", "hil expect_exact")


def throughput(peer: Peer, sizes: list[int], repeats: int
               ) -> tuple[dict[str, dict[int, float | None]], dict[str, float]]:
    """MiB/s of each contender at each size, and each hil contender's ratio to the raw ceiling.

    The fast contenders run interleaved, `repeats` rounds of raw, hil regex, hil literal: this
    machine's speed drifts by 2-3x within seconds, so each hil run is compared with the raw run
    of its own round, and the median of those paired ratios is reported (MiB/s: medians)."""
    table = contenders(peer)
    results: dict[str, dict[int, float | None]] = {name: {} for name in table}
    ratios: dict[str, float] = {}
    for mib in sizes:
        rounds: dict[str, list[float]] = {name: [] for name in FAST}
        for _ in range(repeats):
            for name in FAST:
                opener, wait, close = table[name]
                rounds[name].append(mib / peer.run("push", mib, opener, wait, close))
        for name in FAST:
            results[name][mib] = statistics.median(rounds[name])
            print(f"  {peer.kind:4} {name:24} {mib:3} MiB  {results[name][mib]:9.1f} MiB/s "
                  f"(median of {repeats}: {', '.join(f'{v:.0f}' for v in rounds[name])})",
                  flush=True)
        for name in FAST[1:]:
            ratios[f"{name} / raw, {mib} MiB"] = statistics.median(
                h / r for h, r in zip(rounds[name], rounds["raw ceiling"]))
    for name, (opener, wait, close) in table.items():
        if name in FAST:
            continue
        limit = limit_for(name)
        for mib in sizes:
            if limit is not None and mib > limit:
                results[name][mib] = None
                continue
            results[name][mib] = mib / peer.run("push", mib, opener, wait, close)
            print(f"  {peer.kind:4} {name:24} {mib:3} MiB  {results[name][mib]:9.1f} MiB/s",
                  flush=True)
    return results, ratios


LATENCY_BLOCK = 100           # round trips per block; bare and hil blocks alternate


def latency(peer: Peer, roundtrips: int) -> dict[str, float]:
    """Write-to-match latency over `roundtrips` echoed writes (µs), and for context the same
    round trip done bare (write, then blocking reads until the newline). Bare and hil run in
    alternating blocks of LATENCY_BLOCK, so both see the same moments of a noisy machine.
    Each block opens a new bus (or fd): its first round trip, on a connection just opened and
    after the block's set-up, goes to `first_*` (1 % of the samples: it would *be* the p99)."""
    samples: list[float] = []
    bare: list[float] = []
    first_hil: list[float] = []
    first_bare: list[float] = []

    def wait(bus: object, first: int, count: int) -> None:
        for i in range(first, first + count):
            t0 = time.perf_counter()
            bus.write(b"ping %d\n" % i)  # type: ignore[attr-defined]
            match = bus.expect(r"ping (\d+)")  # type: ignore[attr-defined]
            (first_hil if i == first else samples).append(time.perf_counter() - t0)
            assert match.group(1) == str(i)

    def wait_bare(reader: object, first: int, count: int) -> None:
        fd = reader if isinstance(reader, int) else reader.fileno()  # type: ignore[attr-defined]
        for i in range(first, first + count):
            t0 = time.perf_counter()
            os.write(fd, b"ping %d\n" % i)
            data = b""
            while not data.endswith(b"\n"):
                data += os.read(fd, 4096)
            (first_bare if i == first else bare).append(time.perf_counter() - t0)

    for first in range(0, roundtrips, LATENCY_BLOCK):
        count = min(LATENCY_BLOCK, roundtrips - first)
        peer.run("echo", count, lambda: open_raw(peer),
                 lambda r: wait_bare(r, first, count), close_raw)
        peer.run("echo", count, lambda: open_hil(peer),
                 lambda b: wait(b, first, count), lambda b: b.close())
    samples.sort()
    return {"median_us": statistics.median(samples) * 1e6,
            "p99_us": samples[int(len(samples) * 0.99) - 1] * 1e6,
            "bare_median_us": statistics.median(bare) * 1e6,
            "bare_p99_us": sorted(bare)[int(len(bare) * 0.99) - 1] * 1e6,
            "first_median_us": statistics.median(first_hil) * 1e6,
            "first_bare_median_us": statistics.median(first_bare) * 1e6}


def _busy_hashing(seconds: float, block: bytes = bytes(256 * 1024)) -> None:
    """Work that releases the GIL (hashlib does for big inputs), like numpy on a trace."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        hashlib.sha256(block).digest()


def _busy_python(seconds: float) -> None:
    """Work that holds the GIL: the reader thread gets it only at the switch interval."""
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n = sum(range(200)) + n % 7


def arrival(peer: Peer, lines: int, work: list[Callable[[float], None]]) -> dict[str, float]:
    """Arrival-time error (µs): hil's arrival time of each stamped line minus its write time,
    while the test side alternates 10 ms of expect with 10 ms of each kind of `work`."""
    errors: list[float] = []

    def run(bus: object) -> None:
        got, phase = 0, 0
        while got < lines:
            until = time.monotonic() + 0.010
            while got < lines and time.monotonic() < until:    # waiting in expect
                m = bus.expect(STAMPED, timeout=5)  # type: ignore[attr-defined]
                errors.append(clock.to_monotonic(m.time) - int(m.group(2)) / 1e9)
                got += 1
            if got < lines:
                work[phase % len(work)](0.010)                  # doing something else
                phase += 1

    peer.run("stamped", lines, lambda: open_hil(peer), run, lambda b: b.close())
    errors.sort()
    us = [e * 1e6 for e in errors]
    return {"p50": statistics.median(us), "p99": us[int(len(us) * 0.99) - 1], "max": us[-1],
            "lines": len(us)}


def arrival_bare(peer: Peer, lines: int, work: list[Callable[[float], None]]
                 ) -> dict[str, float]:
    """The machine's floor for the arrival-time error: a bare thread blocked in read() on the
    same pty or socket stamps each read, while the main thread does the same `work` phases
    (on a pty the kernel moves bytes to the reader in a worker thread of its own, which a busy
    2-core machine schedules late; hil cannot do better than this)."""
    errors: list[float] = []

    def run(reader: object) -> None:
        def read_all() -> None:
            data, got = b"", 0
            while got < lines:
                chunk = (os.read(reader, 65536) if isinstance(reader, int)
                         else reader.recv(65536))  # type: ignore[attr-defined]
                now = time.monotonic()
                if not chunk:
                    return
                data += chunk
                end = data.rfind(b"\n") + 1
                for m in re.finditer(STAMPED, data[:end]):
                    errors.append(now - int(m.group(2)) / 1e9)
                    got += 1
                data = data[end:]
        thread = threading.Thread(target=read_all, daemon=True)
        thread.start()
        phase = 0
        while thread.is_alive():
            work[phase % len(work)](0.010)
            phase += 1

    peer.run("stamped", lines, lambda: open_raw(peer), run, close_raw)
    errors.sort()
    us = [e * 1e6 for e in errors]
    return {"p50": statistics.median(us), "p99": us[int(len(us) * 0.99) - 1], "max": us[-1],
            "lines": len(us)}


def small_expects(peer: Peer, count: int) -> dict[str, float]:
    """Seconds for `count` sequential small expects, hil vs pexpect (default settings)."""
    def hil_wait(bus: object) -> None:
        for i in range(count):
            if int(bus.expect(r"item (\d+) ok").group(1)) != i:  # type: ignore[attr-defined]
                raise RuntimeError("hil: wrong item")

    def pexpect_wait(child: object) -> None:
        for i in range(count):
            child.expect(rb"item (\d+) ok")  # type: ignore[attr-defined]
            if int(child.match.group(1)) != i:  # type: ignore[attr-defined]
                raise RuntimeError("pexpect: wrong item")

    hil = min(peer.run("lines", count, lambda: open_hil(peer), hil_wait, lambda b: b.close())
              for _ in range(3))
    pex = min(peer.run("lines", count, lambda: open_pexpect(peer, None), pexpect_wait,
                       close_pexpect) for _ in range(3))
    return {"hil_s": hil, "pexpect_s": pex}


# ---------------------------------------------------------------------------- report
def table(kind: str, results: dict[str, dict[int, float | None]], sizes: list[int]) -> str:
    head = f"{kind + ' (MiB/s, medians)':26}" + "".join(f"{str(s) + ' MiB':>12}" for s in sizes)
    rows = [head, "-" * len(head)]
    for name, by_size in results.items():
        cells = "".join(f"{v:12.1f}" if v is not None else f"{'(skipped)':>12}"
                        for v in (by_size[s] for s in sizes))
        rows.append(f"{name:26}{cells}")
    skipped = [f"{n} stops at {limit_for(n)} MiB (quadratic / byte-at-a-time: minutes beyond)"
               for n in results if limit_for(n) and any(by_size is None for by_size in
                                                        results[n].values())]
    return "\n".join(rows + [f"  note: {s}" for s in dict.fromkeys(skipped)])


def throughput_checks(run: dict, sizes: list[int]) -> tuple[dict, dict]:
    """(ratios, target checks) of one transport's throughput runs."""
    tp, paired = run["throughput"], run["paired"]
    big, ten = max(sizes), (10 if 10 in sizes else max(s for s in sizes if s <= 10))
    ratios = {
        f"hil_vs_raw_{big}MiB": paired[f"hil expect (regex) / raw, {big} MiB"],
        f"hil_exact_vs_raw_{big}MiB": paired[f"hil expect_exact / raw, {big} MiB"],
        f"vs_pexpect_default_{ten}MiB": tp["hil expect (regex)"][ten]
        / tp["pexpect (default)"][ten],
        f"vs_pexpect_window_{ten}MiB": tp["hil expect (regex)"][ten]
        / tp["pexpect (window 2000)"][ten],
    }
    if tp["pexpect (window 2000)"].get(big):
        ratios[f"vs_pexpect_window_{big}MiB"] = (tp["hil expect (regex)"][big]
                                                 / tp["pexpect (window 2000)"][big])
    checks = {
        "hil_vs_raw>=0.70": min(ratios[f"hil_vs_raw_{big}MiB"],
                                ratios[f"hil_exact_vs_raw_{big}MiB"]) >= TARGETS["hil_vs_raw"],
        "vs_pexpect_default>=50": ratios[f"vs_pexpect_default_{ten}MiB"]
        >= TARGETS["vs_pexpect_default"],
        "vs_pexpect_window>=5": ratios[f"vs_pexpect_window_{ten}MiB"]
        >= TARGETS["vs_pexpect_window"],
    }
    return ratios, checks


def latency_checks(lat: dict[str, float]) -> dict[str, bool]:
    return {"latency_median<=bare+30us": lat["median_us"] <= lat["bare_median_us"]
            + TARGETS["latency_median_over_bare_us"],
            "latency_p99<=200us": lat["p99_us"] <= TARGETS["latency_p99_us"]}


def arrival_checks(err: dict[str, float]) -> dict[str, bool]:
    return {"arrival_p99<=1000us": err["p99"] <= TARGETS["arrival_p99_us"],
            "arrival_max<=5000us": err["max"] <= TARGETS["arrival_max_us"]}


def describe_latency(kind: str, lat: dict[str, float], roundtrips: int) -> str:
    return (f"{kind} write-to-match latency over {roundtrips} round trips: median "
            f"{lat['median_us']:.1f} us, p99 {lat['p99_us']:.1f} us (a bare write + blocking "
            f"read round trip, in alternating blocks: median {lat['bare_median_us']:.1f} us, "
            f"p99 {lat['bare_p99_us']:.1f} us); the first round trip of each block, on a "
            f"connection just opened, apart: median {lat['first_median_us']:.1f} us "
            f"(bare {lat['first_bare_median_us']:.1f} us)")


def describe_arrival(kind: str, err: dict[str, float], what: str) -> str:
    return (f"{kind} arrival-time error over {err['lines']:.0f} lines ({what}): p50 "
            f"{err['p50']:.0f} us, p99 {err['p99']:.0f} us, max {err['max']:.0f} us")


SECTIONS = ("throughput", "latency", "small", "arrival")


def run_transport(kind: str, sections: tuple[str, ...], args: argparse.Namespace) -> dict:
    """The chosen sections on one transport: figures, and the checks against the targets."""
    peer, run, checks = Peer(kind), {}, {}
    try:
        if "throughput" in sections:
            run["throughput"], run["paired"] = throughput(peer, args.sizes, args.repeats)
            run["ratios"], found = throughput_checks(run, args.sizes)
            checks.update(found)
        if "latency" in sections:
            run["latency"] = latency(peer, args.roundtrips)
            checks.update(latency_checks(run["latency"]))
            print(describe_latency(kind, run["latency"], args.roundtrips), flush=True)
        if "small" in sections:
            run["small"] = small_expects(peer, args.small)
        if "arrival" in sections:
            run["arrival_error_us"] = arrival(peer, args.lines, [time.sleep, _busy_hashing])
            run["arrival_error_bare_us"] = arrival_bare(peer, args.lines,
                                                        [time.sleep, _busy_hashing])
            checks.update(arrival_checks(run["arrival_error_us"]))
            print(describe_arrival(kind, run["arrival_error_us"], "expect / sleep / hashing"),
                  flush=True)
            print(describe_arrival(kind, run["arrival_error_bare_us"],
                                   "the machine's floor: a bare reader thread, same work"),
                  flush=True)
            run["arrival_error_gil_held_us"] = arrival(peer, args.lines, [_busy_python])
            print(describe_arrival(kind, run["arrival_error_gil_held_us"],
                                   "expect / pure-Python work holding the GIL; context, no "
                                   "target: the reader waits for the GIL's switch interval, "
                                   f"{sys.getswitchinterval() * 1e3:g} ms"), flush=True)
    finally:
        peer.close()
    run["targets"] = checks
    return run


def report(runs: dict[str, dict], args: argparse.Namespace) -> None:
    for kind, run in runs.items():
        if "throughput" in run:
            print(table(kind, run["throughput"], args.sizes))
            print(f"{kind} hil / raw ceiling, median of paired runs: " + ", ".join(
                f"{k.split(' / ')[0].replace('hil ', '')} {k.split(', ')[1]}: {v:.2f}"
                for k, v in run["paired"].items()))
        if "latency" in run:
            print(describe_latency(kind, run["latency"], args.roundtrips))
        if "small" in run:
            small = run["small"]
            print(f"{kind} {args.small} sequential small expects: hil "
                  f"{small['hil_s'] * 1e3:.1f} ms, pexpect {small['pexpect_s'] * 1e3:.1f} ms "
                  f"({small['pexpect_s'] / small['hil_s']:.1f}x)")
        if "arrival_error_us" in run:
            print(describe_arrival(kind, run["arrival_error_us"], "expect / sleep / hashing"))
        print(f"{kind} targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}"
                                             for k, v in run["targets"].items()) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10,50", help="MiB per run, comma-separated")
    parser.add_argument("--roundtrips", type=int, default=3000)
    parser.add_argument("--small", type=int, default=10_000, help="sequential small expects")
    parser.add_argument("--lines", type=int, default=3000, help="stamped lines (1,000/s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved rounds of the fast contenders")
    parser.add_argument("--transports", default="pty,tcp")
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only this section (repeatable); default: all")
    args = parser.parse_args(argv)
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    sections = tuple(args.only or SECTIONS)
    t_start = time.perf_counter()
    runs: dict[str, dict] = {}
    for kind in args.transports.split(","):
        print(f"== {kind}", flush=True)
        runs[kind] = run_transport(kind, sections, args)
    print()
    report(runs, args)
    result: dict = {"sections": list(sections), "targets": {}}
    for kind, run in runs.items():
        result["targets"][kind] = run.pop("targets")
        for key, value in run.items():
            if key == "throughput":
                value = {n: {str(k): v for k, v in r.items()} for n, r in value.items()}
            result.setdefault(key if key != "small" else "small_expects_10k_s", {})[kind] = value
    result["all_targets_met"] = all(all(c.values()) for c in result["targets"].values())
    result["runtime_s"] = round(time.perf_counter() - t_start, 1)
    print("RESULT " + json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
