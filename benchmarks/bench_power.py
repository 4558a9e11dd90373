"""Power benchmark: fetching a long Otii recording through the driver (and PowerTrace statistics).

bench_fetch: a 60 s, 4 kHz `mc` recording of the simulated Otii (run at `speed` x real time so it
takes well under a second to record) is fetched through `OtiiPower`, 40 000 values per request:
with its default thin reader (`fetch = "direct"`) and with the vendor client (`fetch = "vendor"`).
The reference is a bare `json.loads` of the very reply lines the server sent, timed in the same
run. Target: driver fetch rate >= 0.5 x the json.loads rate.

Each bench_* function returns a flat dict; main() merges those that exist into one line:
`RESULT {json}`.  Run: `.venv/bin/python benchmarks/bench_power.py`
"""
from __future__ import annotations

import json
import math
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hil.instruments.otii import OtiiConfig, OtiiPower  # noqa: E402
from hil.protocols import otii_json as oj               # noqa: E402
from hil.sim.dut import VirtualDut                      # noqa: E402
from hil.sim.otii_server import OtiiServer              # noqa: E402

TARGET_RATIO = 0.5


def _record(power: OtiiPower, seconds: float, speed: float) -> Any:
    """Record `seconds` of recording time with the DUT busy; returns the filled Capture and the
    wall time the driver took to stop and fetch it."""
    power.on()
    cm = power.capture("bench")
    cap = cm.__enter__()
    power.uart_write("tx 200\n")
    time.sleep(seconds / speed + 0.05)
    t = time.perf_counter()
    cm.__exit__(None, None, None)
    return cap, time.perf_counter() - t


def _raw_lines(server: OtiiServer, device_id: str, recording_id: int, count: int) -> list[str]:
    """The reply lines of a chunked mc fetch, read with a plain socket (CRLF framing)."""
    lines: list[str] = []
    with socket.create_connection((server.host, server.port)) as sock:
        split = oj.CrlfSplitter()

        def reply() -> str:
            while True:
                got = split.feed(sock.recv(1 << 17))
                if got:
                    return got[0].decode("ascii")

        reply()                                                    # greeting
        for k, index in enumerate(range(0, count, oj.CHUNK_SIZE)):
            n = min(oj.CHUNK_SIZE, count - index)
            sock.sendall(oj.encode(oj.request("recording_get_channel_data", {
                "device_id": device_id, "recording_id": recording_id, "channel": "mc",
                "index": index, "count": n}, trans_id=f"raw{k}")))
            lines.append(reply())
    return lines


def bench_fetch(seconds: float = 60.0, rate: int = 4000, speed: float = 100.0,
                rounds: int = 7) -> dict[str, Any]:
    """Fetch rate of a `seconds`-long mc recording vs json.loads of the same payloads.

    The three measurements are interleaved round by round and the best of each is kept, so
    load from other processes on the machine hits them alike.
    """
    n = int(seconds * rate)
    dut = VirtualDut(speed=speed)
    server = OtiiServer(dut, speed=speed)
    try:
        power = OtiiPower(OtiiConfig(host=server.host, port=server.port, channels=("mc",)))
        try:
            cap, _ = _record(power, seconds, speed)
            if len(cap) < n:
                raise RuntimeError(f"recorded {len(cap)} samples, wanted {n}")
            with server.lock:
                rec = server.state.active_project().recordings[-1]
            device_id = server.device.info.device_id
            lines = _raw_lines(server, device_id, rec.id, n)
            vendor_rec = power._project.get_last_recording()          # type: ignore[union-attr]
            direct = power.config
            vendor = replace(direct, fetch="vendor")
            best = {"fetch": math.inf, "vendor": math.inf, "loads": math.inf, "format": math.inf}
            for _ in range(rounds):
                power.config = direct
                t = time.perf_counter()
                _, _, mc = power._analog(vendor_rec, "mc", limit=n)   # the driver's fetch
                best["fetch"] = min(best["fetch"], time.perf_counter() - t)
                power.config = vendor
                t = time.perf_counter()
                _, _, mc_vendor = power._analog(vendor_rec, "mc", limit=n)
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
                    raise RuntimeError("direct and vendor fetch disagree")
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
        "json_loads_samples_per_s": round(n / best["loads"]),
        "fetch_ratio": round(ratio, 3),
        "fetch_target": TARGET_RATIO,
        "fetch_ok": ratio >= TARGET_RATIO,
        "vendor_fetch_samples_per_s": round(n / best["vendor"]),
        "vendor_fetch_ratio": round(best["loads"] / best["vendor"], 3),
        "server_format_samples_per_s": round(n / best["format"]),
    }


def main() -> int:
    results: dict[str, Any] = {}
    for name in ("bench_fetch", "bench_stats"):     # bench_stats: PowerTrace statistics
        fn = globals().get(name)
        if fn is not None:
            results.update(fn())
    print("RESULT " + json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
