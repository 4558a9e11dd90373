"""`hil capture sttp HOST:PORT [--filter "…"] --seconds S [--json]`: record a live STTP stream
and summarise it.

With `--json`, one JSON object: `measurements` (total received), `frames`, `rate_hz` (frames
per second measured from the time stamps), `gaps`/`missing`/`duplicates`/`lost`, `signals` (per
point tag: signal id, count, first and last time as UNIX seconds, min, max) and `errors`.
Exit status 1 when frames were missing or lost, 2 when the capture failed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np

from hil.errors import HilError
from hil.instruments.sttp import DEFAULT_PORT, SttpSettings, SttpSubscriber
from hil.instruments.stream_capture import StreamCapture


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def summarise(capture: StreamCapture, errors: list[str]) -> dict[str, Any]:
    """The JSON summary of a capture (NaN/inf as null)."""
    stats = capture.packet_stats()
    signals = {}
    for name, data in capture.signals.items():
        values = data.samples[0].astype(np.float64)
        times = capture.timestamps[data.packet_indices()] if data.n_samples else np.zeros(0)
        finite = values[np.isfinite(values)]
        signals[name] = {"signal_id": data.channels[0], "count": int(data.n_samples),
                         "first_time": _num(times.min()) if times.size else None,
                         "last_time": _num(times.max()) if times.size else None,
                         "min": _num(finite.min()) if finite.size else None,
                         "max": _num(finite.max()) if finite.size else None}
    span = float(capture.timestamps.max() - capture.timestamps.min()) if capture.n_packets else 0.0
    rate = (capture.n_packets - 1) / span if span > 0 else None
    return {"source": capture.source,
            "measurements": int(sum(s.n_samples for s in capture.signals.values())),
            "frames": capture.n_packets, "rate_hz": rate, "duration": capture.duration,
            "gaps": stats.gaps, "missing": stats.missing, "duplicates": stats.duplicates,
            "lost": capture.lost_packets, "signals": signals, "errors": errors}


def _text(summary: dict[str, Any]) -> str:
    rate = summary["rate_hz"]
    lines = [f"{summary['source']}: {summary['measurements']} measurements in "
             f"{summary['frames']} frames ({rate or 0:.3f} frames/s), gaps {summary['gaps']} "
             f"({summary['missing']} missing), duplicates {summary['duplicates']}, "
             f"lost {summary['lost']}"]
    for name, s in summary["signals"].items():
        lines.append(f"  {name:<28} {s['count']:>8}  min {s['min']!s:<14} max {s['max']!s}")
    lines += [f"  error: {e}" for e in summary["errors"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hil capture sttp", description=__doc__.splitlines()[0])
    p.add_argument("address", type=_address, metavar="HOST:PORT")
    p.add_argument("--filter", default="", help="filter expression (default: everything)")
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--tssc", action="store_true", help="ask for TSSC compression")
    p.add_argument("--rate", type=float, default=0.0, help="nominal frames/s (0: metadata)")
    p.add_argument("--tls", action="store_true", help="TLS on the command channel")
    p.add_argument("--tls-ca", default="", help="CA file for TLS")
    p.add_argument("--insecure", action="store_true", help="TLS without certificate checks")
    p.add_argument("--resync", action="store_true", help="skip malformed data packets")
    p.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args(argv)
    if not (args.seconds > 0 and math.isfinite(args.seconds)):
        p.error(f"--seconds must be a positive number, got {args.seconds}")
    host, port = args.address
    settings = SttpSettings(filter=args.filter, compression="tssc" if args.tssc else "compact",
                            timeout=args.timeout, rate=args.rate, tls=args.tls,
                            tls_ca=args.tls_ca, tls_verify=not args.insecure,
                            resync=args.resync)
    try:
        with SttpSubscriber(host, port, settings) as sub:
            capture = sub.capture(seconds=args.seconds)
            summary = summarise(capture, [str(e) for e in sub.errors])
    except HilError as exc:
        if args.json:
            print(json.dumps({"measurements": 0, "signals": {}, "rate_hz": None,
                              "errors": [str(exc)]}))
        else:
            print(f"hil capture sttp: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else _text(summary))
    return 1 if summary["missing"] or summary["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
