"""`hil check RIG.toml [--open]`: validate a rig file and, optionally, open every resource once.

Loading checks every table against its kind's keys; `--open` then opens each resource on one
VirtualBench (simulators started as the rig asks) and closes it again, so a lab engineer learns
which cable, address or key is wrong before running a test bench.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from hil.errors import HilError
from hil.rig import Resource, Rig, load_rig, open_resource
from hil.sim.bench import VirtualBench


@dataclass(frozen=True)
class OpenResult:
    """What happened when one resource was opened and closed."""

    name: str
    ok: bool
    seconds: float
    error: str = ""


def _toml_value(value: Any) -> str:
    """A setting as it would be written in TOML (strings quoted, true/false lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, list, dict)):
        return json.dumps(value)
    return repr(value)


def describe(resource: Resource) -> list[str]:
    """Lines describing one resource: its table, kind and every setting (defaults included)."""
    lines = [f"[{resource.name}]  kind = {_toml_value(resource.kind)}"
             + ("  (simulated)" if resource.simulated else "")]
    lines += [f"    {key} = {_toml_value(value)}" for key, value in resource.settings.items()]
    return lines


def _error_text(exc: BaseException) -> str:
    """An error in one line: hil's own errors as they are, anything else with its type."""
    text = str(exc) or "(no message)"
    return text if isinstance(exc, HilError) else f"{type(exc).__name__}: {text}"


def try_open(resource: Resource, bench: VirtualBench) -> OpenResult:
    """Open one resource and close it again; any failure becomes the result's error text."""
    start = time.monotonic()
    try:
        handle = open_resource(resource, bench)
        handle.close()
    except Exception as exc:
        return OpenResult(resource.name, False, time.monotonic() - start, _error_text(exc))
    return OpenResult(resource.name, True, time.monotonic() - start)


def open_all(rig: Rig) -> list[OpenResult]:
    """Open every resource of `rig` in file order on one bench, as a test session would."""
    with VirtualBench(dut_on_otii="otii" in rig.simulated_kinds) as bench:
        return [try_open(resource, bench) for resource in rig.resources.values()]


def main(argv: list[str] | None = None) -> int:
    """Print the rig's resources (and open results); 0 when all is well, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="hil check", description=__doc__.splitlines()[0])
    parser.add_argument("rig", help="rig file (TOML)")
    parser.add_argument("--open", action="store_true",
                        help="open every resource once (starting simulators) and close it")
    args = parser.parse_args(argv)
    try:
        rig = load_rig(args.rig)
    except Exception as exc:                 # RigError, or a kind whose module cannot load
        print(f"hil check: error: {_error_text(exc)}", file=sys.stderr)
        return 1
    print(f"rig {rig.file}: {len(rig.resources)} resource(s)")
    for resource in rig.resources.values():
        print("\n".join(describe(resource)))
    if not args.open:
        return 0
    print("opening:", flush=True)
    try:
        results = open_all(rig)
    except Exception as exc:                 # a simulator failed to stop
        print(f"hil check: error while closing the simulators: {_error_text(exc)}",
              file=sys.stderr)
        return 1
    width = max(len(r.name) for r in results)
    for r in results:
        status = "OK" if r.ok else f"FAILED: {r.error}"
        print(f"    {r.name:<{width}}  {status}  ({r.seconds:.2f} s)")
    failed = [r.name for r in results if not r.ok]
    if failed:
        print(f"hil check: {len(failed)} of {len(results)} resource(s) failed to open: "
              f"{', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(results)} resource(s) opened and closed")
    return 0
