"""`hil capture tia HOST:PORT --seconds S [--json]`: record a live TiA stream and summarise it.

Prints per signal the channels, samples, nominal and measured rate, and for the stream the
packets, gaps, duplicates and lost packets. Exit status 1 when the stream had gaps.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from hil.errors import HilError
from hil.instruments.tia import DEFAULT_PORT, TiaClient


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text, DEFAULT_PORT
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _plain(value: Any) -> Any:
    """JSON-safe copy: NaN (a rate that could not be measured) becomes null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _text(summary: dict) -> str:
    lines = [f"{summary['source']}: {summary['packets']} packets in {summary['duration']:.3f} s, "
             f"gaps {summary['gaps']} ({summary['missing']} missing), "
             f"duplicates {summary['duplicates']}, lost {summary['lost']}"]
    for name, s in summary["signals"].items():
        lines.append(f"  {name:<12} {s['channels']:>4} ch  {s['samples']:>9} samples  "
                     f"rate {s['rate']:g} Hz (measured {s['measured_rate']:.6g} Hz)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hil capture tia", description=__doc__.splitlines()[0])
    p.add_argument("address", type=_address, metavar="HOST:PORT")
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    p.add_argument("--sample-order", choices=("channel_major", "sample_major"),
                   default="channel_major")
    p.add_argument("--master-first", action="store_true", help="accept master-first blocks")
    p.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args(argv)
    host, port = args.address
    try:
        with TiaClient(host, port, transport=args.transport, sample_order=args.sample_order,
                       master_first=args.master_first, timeout=args.timeout) as client:
            summary = client.capture(seconds=args.seconds).summary()
    except HilError as exc:
        print(f"hil capture tia: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(_plain(summary), indent=2) if args.json else _text(summary))
    return 1 if summary["gaps"] or summary["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
