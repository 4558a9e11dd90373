"""Power benchmark: fetching a long Otii recording through the driver, and PowerTrace statistics.

bench_fetch: a 60 s, 4 kHz `mc` recording of the simulated Otii (run at `speed` x real time so it
takes well under a second to record) is fetched 40 000 values per request, one request at a time
on one connection, two ways: the driver's path (`OtiiPower`: the vendor client's requests on its
connection, numbers checked and put into one array) and the vendor client's own
`Recording.get_channel_data` (then np.asarray). The reference is a bare `json.loads` of the very
reply lines of those requests (read here on a plain socket), timed in the same run. Target:
driver fetch rate >= 0.5 x the json.loads rate.

bench_stats (benchmarks/bench_power_stats.py, also runnable alone): PowerTrace statistics of
10 million samples against one np.sum over them. Target: at most 5x.

Each bench_* function returns a flat dict; main() merges them into one line, with
`all_targets_met`: `RESULT {json}`.  Run: `.venv/bin/python benchmarks/bench_power.py`
"""
from __future__ import annotations

import json
import math
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from bench_power_stats import bench_stats                # noqa: E402
from hil.instruments.otii import OtiiConfig, OtiiPower  # noqa: E402
from hil.protocols import otii_json as oj               # noqa: E402
from hil.sim.dut import VirtualDut                      # noqa: E402
from hil.sim.otii_server import OtiiServer              # noqa: E402

TARGET_RATIO = 0.5


def _record(power: OtiiPower, seconds: float, speed: float) -> Any:
    """Record `seconds` of recording time with the DUT busy; returns the filled Capture."""
    power.on()
    with power.capture("bench") as cap:
        power.uart_write("tx 200\n")
        time.sleep(seconds / speed + 0.05)
    return cap


def _reply_lines(server: OtiiServer, recording_id: int, device_id: str, n: int) -> list[bytes]:
    """The reply lines of the fetch's requests, read on a plain socket, one request at a time."""
    lines: list[bytes] = []
    with socket.create_connection(server.address, timeout=30) as sock:
        split = oj.CrlfSplitter()

        def line() -> bytes:
            got: list[bytes] = []
            while not got:
                got = split.feed(sock.recv(1 << 20))
            return got[0]

        line()                                                    # the greeting
        for start in range(0, n, oj.CHUNK_SIZE):
            sock.sendall(oj.encode(oj.request("recording_get_channel_data", {
                "device_id": device_id, "recording_id": recording_id, "channel": "mc",
                "index": start, "count": min(oj.CHUNK_SIZE, n - start)}, f"ref-{start}")))
            lines.append(line())
    return lines


def bench_fetch(seconds: float = 60.0, rate: int = 4000, speed: float = 100.0,
                rounds: int = 7) -> dict[str, Any]:
    """Fetch rate of a `seconds`-long mc recording, driver and vendor client, vs json.loads of
    the same reply lines.

    The three measurements are interleaved round by round and the best of each is kept, so
    load from other processes on the machine hits them alike.
    """
    n = int(seconds * rate)
    dut = VirtualDut(speed=speed)
    server = OtiiServer(dut, speed=speed)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            creds = str(server.write_credentials(Path(tmp) / "credentials.json"))
            power = OtiiPower(OtiiConfig(host=server.host, port=server.port, channels=("mc",),
                                         credentials=creds))
        try:
            cap = _record(power, seconds, speed)
            if len(cap) < n:
                raise RuntimeError(f"recorded {len(cap)} samples, wanted {n}")
            rec = power._project.get_last_recording()                # type: ignore[union-attr]
            device_id = power.device.id
            lines = _reply_lines(server, rec.id, device_id, n)
            best = {"fetch": math.inf, "vendor": math.inf, "loads": math.inf, "format": math.inf}
            for _ in range(rounds):
                t = time.perf_counter()
                _, _, mc = power._analog(rec, "mc", limit=n)          # the driver's fetch
                best["fetch"] = min(best["fetch"], time.perf_counter() - t)
                t = time.perf_counter()
                data = rec.get_channel_data(device_id, "mc", 0, n)    # the vendor client's
                mc_vendor = np.asarray(data["values"], dtype=np.float64)
                best["vendor"] = min(best["vendor"], time.perf_counter() - t)
                t = time.perf_counter()
                for line in lines:
                    json.loads(line)
                best["loads"] = min(best["loads"], time.perf_counter() - t)
                t = time.perf_counter()
                for i in range(0, n, oj.CHUNK_SIZE):
                    oj.format_numbers(mc[i:i + oj.CHUNK_SIZE], 5)
                best["format"] = min(best["format"], time.perf_counter() - t)
                if mc.size != n or not np.array_equal(mc_vendor, mc):
                    raise RuntimeError("driver and vendor client fetch disagree")
        finally:
            power.close()
    finally:
        server.close()
        dut.close()
    ratio = best["loads"] / best["fetch"]
    return {
        "fetch_samples": n,
        "fetch_requests": len(lines),
        "fetch_payload_bytes": sum(len(line) for line in lines),
        "fetch_s": round(best["fetch"], 4),
        "fetch_samples_per_s": round(n / best["fetch"]),
        "vendor_fetch_samples_per_s": round(n / best["vendor"]),
        "json_loads_samples_per_s": round(n / best["loads"]),
        "fetch_ratio": round(ratio, 3),
        "vendor_fetch_ratio": round(best["loads"] / best["vendor"], 3),
        "fetch_vs_vendor_ratio": round(best["vendor"] / best["fetch"], 3),
        "fetch_target": TARGET_RATIO,
        "fetch_ok": ratio >= TARGET_RATIO,
        "server_format_samples_per_s": round(n / best["format"]),
    }


def main() -> int:
    results: dict[str, Any] = {}
    results.update(bench_fetch())
    results.update(bench_stats())
    results["all_targets_met"] = bool(results["fetch_ok"] and results["stats_target_met"])
    print("RESULT " + json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
