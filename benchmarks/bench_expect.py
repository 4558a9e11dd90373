"""Benchmark of hil's expect engine: throughput, latency and per-call cost, against peers.

A writer *process* pushes N MiB of console log lines, then a marker line, through a
pseudo-terminal and through loopback TCP. Each contender waits for the marker:

- raw ceiling: a bare os.read / recv_into loop that scans each chunk for the marker;
- hil: SerialBus (the pty slave opened by pyserial, like a real port) / TcpBus, with a regex
  `expect` and a literal `expect_exact`;
- pexpect: fdpexpect.fdspawn with default settings, and with searchwindowsize=2000;
- pyserial: Serial.read_until(marker).

Then: write-to-match latency (an echo peer answers each write; median and p99 over 1000 round
trips) and the cost of 10,000 sequential small expects (hil vs pexpect). Peers that would take
minutes are stopped at a smaller size, and the table says so.

    .venv/bin/python benchmarks/bench_expect.py [--sizes 1,10,50] [--roundtrips 1000]

Prints a table, then exactly one line `RESULT {json}` with the figures, ratios and targets.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import termios
import time
import tty
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pexpect.fdpexpect  # noqa: E402
import serial  # noqa: E402

from hil.buses import SerialBus, TcpBus  # noqa: E402

MiB = 1 << 20
MARKER = b"DONE marker=4242"
REGEX = r"DONE marker=(\d+)"
LINE = b"log %08d sensor-node heartbeat lorem ipsum dolor sit amet\r\n"
#: Largest size (MiB) each slow peer is run at; beyond it the run would take minutes.
LIMITS = {"pexpect (default)": 10, "pyserial read_until": 1}
TARGETS = {"hil_vs_raw": 0.70, "vs_pexpect_default": 50.0, "vs_pexpect_window": 5.0,
           "latency_median_us": 50.0, "latency_p99_us": 200.0}


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


def latency(peer: Peer, roundtrips: int) -> dict[str, float]:
    """Write-to-match latency over `roundtrips` echoed writes (µs), and for context the same
    round trip done bare (write, then blocking reads until the newline)."""
    samples: list[float] = []
    bare: list[float] = []

    def wait(bus: object) -> None:
        for i in range(roundtrips):
            t0 = time.perf_counter()
            bus.write(b"ping %d\n" % i)  # type: ignore[attr-defined]
            match = bus.expect(r"ping (\d+)")  # type: ignore[attr-defined]
            samples.append(time.perf_counter() - t0)
            assert match.group(1) == str(i)

    def wait_bare(reader: object) -> None:
        fd = reader if isinstance(reader, int) else reader.fileno()  # type: ignore[attr-defined]
        for i in range(roundtrips):
            t0 = time.perf_counter()
            os.write(fd, b"ping %d\n" % i)
            data = b""
            while not data.endswith(b"\n"):
                data += os.read(fd, 4096)
            bare.append(time.perf_counter() - t0)

    peer.run("echo", roundtrips, lambda: open_raw(peer), wait_bare, close_raw)
    peer.run("echo", roundtrips, lambda: open_hil(peer), wait, lambda b: b.close())
    samples.sort()
    return {"median_us": statistics.median(samples) * 1e6,
            "p99_us": samples[int(len(samples) * 0.99) - 1] * 1e6,
            "bare_median_us": statistics.median(bare) * 1e6}


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


def summarize(runs: dict[str, dict], sizes: list[int]) -> dict:
    """Ratios and targets from the raw figures."""
    out: dict = {"sizes_mib": sizes, "throughput_mib_s": {}, "ratios": {}, "targets": {}}
    big, ten = max(sizes), (10 if 10 in sizes else max(s for s in sizes if s <= 10))
    met = True
    for kind, run in runs.items():
        tp = run["throughput"]
        out["throughput_mib_s"][kind] = {n: {str(k): v for k, v in r.items()}
                                         for n, r in tp.items()}
        hil, paired = tp["hil expect (regex)"][big], run["paired"]
        ratios = {
            f"hil_vs_raw_{big}MiB": paired[f"hil expect (regex) / raw, {big} MiB"],
            f"hil_exact_vs_raw_{big}MiB": paired[f"hil expect_exact / raw, {big} MiB"],
            f"vs_pexpect_default_{ten}MiB": tp["hil expect (regex)"][ten]
            / tp["pexpect (default)"][ten],
            f"vs_pexpect_window_{ten}MiB": tp["hil expect (regex)"][ten]
            / tp["pexpect (window 2000)"][ten],
        }
        if tp["pexpect (window 2000)"].get(big):
            ratios[f"vs_pexpect_window_{big}MiB"] = hil / tp["pexpect (window 2000)"][big]
        out["ratios"][kind] = ratios
        checks = {
            "hil_vs_raw>=0.70": ratios[f"hil_vs_raw_{big}MiB"] >= TARGETS["hil_vs_raw"],
            "vs_pexpect_default>=50": ratios[f"vs_pexpect_default_{ten}MiB"]
            >= TARGETS["vs_pexpect_default"],
            "vs_pexpect_window>=5": ratios[f"vs_pexpect_window_{ten}MiB"]
            >= TARGETS["vs_pexpect_window"],
            "latency_median<=50us": run["latency"]["median_us"] <= TARGETS["latency_median_us"],
            "latency_p99<=200us": run["latency"]["p99_us"] <= TARGETS["latency_p99_us"],
            "small_expects<pexpect": run["small"]["hil_s"] < run["small"]["pexpect_s"],
        }
        out["targets"][kind] = checks
        out.setdefault("latency_us", {})[kind] = run["latency"]
        out.setdefault("small_expects_10k_s", {})[kind] = run["small"]
        met = met and all(checks.values())
    out["all_targets_met"] = met
    return out


def latency_only(kinds: list[str], roundtrips: int) -> int:
    """`--only latency`: the write-to-match latency section alone, against its targets."""
    figures: dict[str, dict[str, float]] = {}
    for kind in kinds:
        peer = Peer(kind)
        try:
            figures[kind] = lat = latency(peer, roundtrips)
        finally:
            peer.close()
        met = (lat["median_us"] <= TARGETS["latency_median_us"]
               and lat["p99_us"] <= TARGETS["latency_p99_us"])
        print(f"{kind} write-to-match latency over {roundtrips} round trips: "
              f"median {lat['median_us']:.1f} us, p99 {lat['p99_us']:.1f} us "
              f"(a bare write + blocking read round trip: median {lat['bare_median_us']:.1f} us)"
              f" - targets {'met' if met else 'MISSED'}", flush=True)
    print("RESULT " + json.dumps({"latency_us": figures}, separators=(",", ":")))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10,50", help="MiB per run, comma-separated")
    parser.add_argument("--roundtrips", type=int, default=1000)
    parser.add_argument("--small", type=int, default=10_000, help="sequential small expects")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved rounds of the fast contenders")
    parser.add_argument("--transports", default="pty,tcp")
    parser.add_argument("--only", choices=("latency",),
                        help="run only this section (prints its figures and a RESULT line)")
    args = parser.parse_args(argv)
    if args.only == "latency":
        return latency_only(args.transports.split(","), args.roundtrips)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    t_start = time.perf_counter()
    runs: dict[str, dict] = {}
    for kind in args.transports.split(","):
        print(f"== {kind}", flush=True)
        peer = Peer(kind)
        try:
            tp, paired = throughput(peer, sizes, args.repeats)
            runs[kind] = {
                "throughput": tp, "paired": paired,
                "latency": latency(peer, args.roundtrips),
                "small": small_expects(peer, args.small),
            }
        finally:
            peer.close()
    print()
    for kind, run in runs.items():
        print(table(kind, run["throughput"], sizes))
        print(f"{kind} hil / raw ceiling, median of paired runs: " + ", ".join(
            f"{k.split(' / ')[0].replace('hil ', '')} {k.split(', ')[1]}: {v:.2f}"
            for k, v in run["paired"].items()))
        lat, small = run["latency"], run["small"]
        print(f"{kind} write-to-match latency over {args.roundtrips} round trips: "
              f"median {lat['median_us']:.1f} us, p99 {lat['p99_us']:.1f} us "
              f"(a bare write + blocking read round trip: median {lat['bare_median_us']:.1f} us)")
        print(f"{kind} {args.small} sequential small expects: hil {small['hil_s'] * 1e3:.1f} ms, "
              f"pexpect {small['pexpect_s'] * 1e3:.1f} ms "
              f"({small['pexpect_s'] / small['hil_s']:.1f}x)\n")
    result = summarize(runs, sizes)
    result["runtime_s"] = round(time.perf_counter() - t_start, 1)
    for kind, checks in result["targets"].items():
        print(f"{kind} targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}"
                                             for k, v in checks.items()))
    print("RESULT " + json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
