"""`hil check [RIG] [--json]`: the rig doctor. Validate a rig file, then open every resource once
(the simulators it asks for started once, as in a test session) and report for each what it is,
whether it answered, its versions, a round-trip time, and where simulators listen.

Exit status 0 when every resource opened, 1 otherwise (the reason is given per resource), so a
lab engineer learns which cable, address or key is wrong before running a test bench.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hil.rig.check import Probe, describe, error_text, probe_all
from hil.rig.loader import load_rig

DEFAULT_RIG = Path("testbenches/rigs/sim.toml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hil check", description=__doc__.splitlines()[0])
    parser.add_argument("rig", nargs="?", default=str(DEFAULT_RIG),
                        help=f"rig file (TOML); default {DEFAULT_RIG}")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of text (for machines)")
    parser.add_argument("--no-open", action="store_true",
                        help="only check the file: open nothing")
    parser.add_argument("--no-poke", action="store_true",
                        help="do not send a line ending to buses to see whether they answer")
    parser.add_argument("--open", action="store_true", help=argparse.SUPPRESS)  # the default now
    return parser


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f} ms"


def _status(p: Probe) -> str:
    if not p.ok:
        return f"FAILED: {p.error}"
    if p.answered is None:
        return "OK (opened; this kind cannot be asked more)"
    if not p.answered:
        return (f"OK, but silent: no reply within a second (a DUT powered by an instrument of "
                f"this rig stays off until a test switches it on)")
    return "OK, answered"


def print_text(probes: list[Probe]) -> None:
    """One block per resource: status, what it is, versions, times, simulators."""
    width = max(len(p.name) for p in probes)
    for p in probes:
        print(f"    {p.name:<{width}}  {_status(p)}  ({p.open_s:.2f} s)")
        pad = " " * (width + 6)
        print(f"{pad}what: {p.what}{'  (simulated)' if p.simulated else ''}")
        if p.versions:
            print(f"{pad}versions: " + ", ".join(f"{k} {v}" for k, v in p.versions.items()))
        if p.latency_s is not None:
            print(f"{pad}round trip: {_ms(p.latency_s)}")
        if p.reply:
            print(f"{pad}reply: {p.reply!r}")
        for where in p.listening:
            print(f"{pad}simulator: {where}")


def main(argv: list[str] | None = None) -> int:
    """Check a rig file and probe every resource; 0 when all opened, 1 otherwise."""
    args = _parser().parse_args(argv)
    try:
        rig = load_rig(args.rig)
    except Exception as exc:                 # RigError, or a kind whose module cannot load
        if args.json:
            print(json.dumps({"rig": args.rig, "ok": False, "error": error_text(exc),
                              "resources": []}, indent=1))
        print(f"hil check: error: {error_text(exc)}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"rig {rig.file}: {len(rig.resources)} resource(s)")
        for resource in rig.resources.values():
            print("\n".join(describe(resource)))
    if args.no_open:
        if args.json:
            print(json.dumps({"rig": str(rig.file), "name": rig.name, "ok": True,
                              "resources": [{"name": r.name, "kind": r.kind,
                                             "simulated": r.simulated}
                                            for r in rig.resources.values()]}, indent=1))
        return 0
    if not args.json:
        print("opening:", flush=True)
    try:
        probes = probe_all(rig, poke=not args.no_poke)
    except Exception as exc:                 # a simulator failed to stop
        print(f"hil check: error while closing the simulators: {error_text(exc)}",
              file=sys.stderr)
        return 1
    failed = [p.name for p in probes if not p.ok]
    if args.json:
        print(json.dumps({"rig": str(rig.file), "name": rig.name, "ok": not failed,
                          "resources": [p.to_dict() for p in probes]}, indent=1))
    else:
        print_text(probes)
    if failed:
        for p in probes:
            if not p.ok:
                named = p.error if p.error.startswith(f"{p.name}: ") else f"{p.name}: {p.error}"
                print(f"hil check: {named}", file=sys.stderr)
        print(f"hil check: {len(failed)} of {len(probes)} resource(s) failed to open: "
              f"{', '.join(failed)}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"all {len(probes)} resource(s) opened and closed")
    return 0
