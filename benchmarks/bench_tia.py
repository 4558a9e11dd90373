"""TiA throughput: our client vs pytia's client vs a bare recv loop, fed by our simulator.

For each shape (8 channels × block 1, 64 × 1, 64 × 64) the simulator runs flat out in its own
process (`hil sim tia --fast`), and in turn feeds:
  * ours  — `TiaClient.blocks()`: recv_into a preallocated buffer, vector decode to numpy;
  * pytia — pytia 0.1.0's `TiAClient.get_data()` loop (skipped at 64 × 64: it breaks on
            packets above ~2 KB, spec §6.2);
  * raw   — the ceiling: the same control handshake, then a bare `recv_into` loop of the same
            read size, counting bytes (samples = bytes / packet size × samples per packet).
Each is measured REPEATS times, interleaved, and the median is kept (the machine is shared).
The simulator's own encode rate (no socket) shows it outruns every client it feeds. It sends
1 MiB per sendall to ours and raw, 16 KiB of whole packets to pytia (see RUN_BYTES).

Usage: `./run bench tia [--seconds S] [--repeats N]`. Ends with `RESULT {json}`.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hil.instruments import tia as tia_client  # noqa: E402
from hil.instruments.tia import TiaClient  # noqa: E402
from hil.sim.tia_server import TiaServer  # noqa: E402

SHAPES = {"8x1": (8, 1), "64x1": (64, 1), "64x64": (64, 64)}
# pytia's client loses framing whenever it catches up with a sender in the middle of a packet
# (spec §6.2); sends of 16 KiB of whole packets never leave it there, 1 MiB sends do at once.
RUN_BYTES = {"ours": 1 << 20, "raw": 1 << 20, "pytia": 16 << 10}
TARGETS = {"8x1": ("vs_pytia", 20.0), "64x1": ("vs_pytia", 10.0), "64x64": ("of_raw", 0.5)}


def signals(ch: int, blk: int) -> str:
    return f"eeg:{ch}x{blk}@{1000 * blk}/sine"


class Simulator:
    """`hil sim tia --fast` in a child process (its own GIL, like a real server)."""

    def __init__(self, spec: str, run_bytes: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hil.cli", "sim", "tia", "--port", "0", "--fast",
             "--signals", spec, "--run-bytes", str(run_bytes)], stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[1])
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        found = re.search(r"listening on (\S+):(\d+)", line)
        if not found:
            self.close()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.host, self.port = found[1], int(found[2])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def run_ours(sim: Simulator, seconds: float, spp: int) -> dict:
    client = TiaClient(sim.host, sim.port, timeout=10)
    samples = 0
    cpu, t = time.process_time(), time.perf_counter()
    for block in client.blocks(seconds=seconds):
        samples += block.samples["eeg"].size
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    client._close_sockets()
    return {"samples_per_s": samples / wall, "cpu": cpu / wall}


def run_raw(sim: Simulator, seconds: float, spp: int) -> dict:
    client = TiaClient(sim.host, sim.port, timeout=10)
    size = 33 + 4 + 4 * spp
    client.start()
    sock, view = client._data, memoryview(bytearray(tia_client.READ_SIZE))
    total = 0
    cpu, t = time.process_time(), time.perf_counter()
    while time.perf_counter() - t < seconds:
        total += sock.recv_into(view)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    client._close_sockets()
    return {"samples_per_s": total / size * spp / wall, "cpu": cpu / wall}


def run_pytia(sim: Simulator, seconds: float, spp: int) -> dict:
    import pytia
    pytia.pytia_logger.setLevel(logging.ERROR)
    client = pytia.TiAClient(sim.host, sim.port)
    client.connect()
    client.cmd_check_protocol_version()
    client.cmd_get_metainfo()
    _, port = client.cmd_get_data_connection_tcp()
    client.start_streaming_data_tcp(sim.host, port)
    packets, error = 0, None
    cpu, t = time.process_time(), time.perf_counter()
    try:
        while time.perf_counter() - t < seconds:
            packets += len(client.get_data())
    except struct.error as exc:          # pytia lost framing (spec §6.2)
        error = f"struct.error after {packets} packets: {exc}"
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    client.data_socket.close()
    client.disconnect()
    return {"samples_per_s": packets * spp / wall, "cpu": cpu / wall, "error": error}


def sim_encode_rate(ch: int, blk: int, seconds: float, run_bytes: int) -> float:
    """Samples/s the simulator encodes in fast mode (header rewrite of pre-encoded runs)."""
    server = TiaServer(signals(ch, blk), realtime=False)
    try:
        n = max(1, run_bytes // server._layout(0).size)
        samples, k, t = 0, 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            ids = np.arange(k, k + n, dtype=np.uint64)
            data, _ = server.encode(ids, ids)
            bytes(memoryview(data)[:64])
            samples += n * ch * blk
            k += n
        return samples / (time.perf_counter() - t)
    finally:
        server.close()


def measure(shape: str, seconds: float, repeats: int) -> dict:
    ch, blk = SHAPES[shape]
    spp = ch * blk
    runners: dict[str, Callable[[Simulator, float, int], dict]] = {"ours": run_ours, "raw": run_raw}
    if shape != "64x64":
        runners["pytia"] = run_pytia
    runs: dict[str, list[dict]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            sim = Simulator(signals(ch, blk), RUN_BYTES[name])
            try:
                runs[name].append(runner(sim, seconds, spp))
            finally:
                sim.close()
    out: dict = {"packet_bytes": 33 + 4 + 4 * spp}
    for name, results in runs.items():
        rates = [r["samples_per_s"] for r in results]
        out[name] = {"samples_per_s": statistics.median(rates),
                     "runs": [round(r) for r in rates],
                     "cpu": round(statistics.median(r["cpu"] for r in results), 2)}
        errors = [r["error"] for r in results if r.get("error")]
        if errors:
            out[name]["errors"] = errors
    out["sim_encode_samples_per_s"] = sim_encode_rate(ch, blk, min(seconds, 0.5), RUN_BYTES["ours"])
    if "pytia" in runners:
        out["sim_encode_pytia_runs"] = sim_encode_rate(ch, blk, min(seconds, 0.5),
                                                       RUN_BYTES["pytia"])
    ours = out["ours"]["samples_per_s"]
    out["of_raw"] = ours / out["raw"]["samples_per_s"]
    if "pytia" in out:
        out["vs_pytia"] = ours / out["pytia"]["samples_per_s"]
    kind, target = TARGETS[shape]
    out["target"] = f"{kind} >= {target}"
    out["met"] = out[kind] >= target
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shapes", default=",".join(SHAPES))
    args = p.parse_args(argv)
    results = {}
    for shape in args.shapes.split(","):
        results[shape] = r = measure(shape, args.seconds, args.repeats)
        line = (f"{shape:>6}: ours {r['ours']['samples_per_s'] / 1e6:8.1f} M samples/s, "
                f"raw {r['raw']['samples_per_s'] / 1e6:8.1f} M ({r['of_raw']:.0%} of raw)")
        if "pytia" in r:
            line += (f", pytia {r['pytia']['samples_per_s'] / 1e6:6.2f} M "
                     f"(ours {r['vs_pytia']:.1f}x)")
        line += (f", sim encodes {r['sim_encode_samples_per_s'] / 1e6:.0f} M  "
                 f"[{r['target']}: {'met' if r['met'] else 'MISSED'}]")
        print(line, flush=True)
    summary = {
        "benchmark": "tia", "seconds": args.seconds, "repeats": args.repeats,
        "unit": "samples/s (median)",
        "shapes": {s: {"ours": round(r["ours"]["samples_per_s"]),
                       "raw": round(r["raw"]["samples_per_s"]),
                       "pytia": round(r["pytia"]["samples_per_s"]) if "pytia" in r else None,
                       "vs_pytia": round(r["vs_pytia"], 1) if "vs_pytia" in r else None,
                       "of_raw": round(r["of_raw"], 3),
                       "sim_encode": round(r["sim_encode_samples_per_s"]),
                       "sim_encode_pytia_runs": round(r.get("sim_encode_pytia_runs", 0)) or None,
                       "pytia_errors": r.get("pytia", {}).get("errors"),
                       "target": r["target"], "met": r["met"]}
                   for s, r in results.items()},
        "all_met": all(r["met"] for r in results.values()),
    }
    print("RESULT " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
