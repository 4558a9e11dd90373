"""`hil record console RIG.toml:TABLE --db FILE`: record a console session for `hil sim console`.

Opens the rig table (a serial or TCP console), sends each `--send` command and waits for
`--expect` (the prompt) after it, or, without `--send`, relays lines typed on stdin and shows
the answers. The whole transcript (both directions, with times) is then stored as one session
in the `console` table of FILE, next to any recorded events.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hil.buses.transcript import escape
from hil.errors import BusTimeout, HilError
from hil.instruments.console_recording import record_console
from hil.rig.loader import load_rig, open_resource, simulators_for


def _split(target: str, rig: str | None) -> tuple[Path, str]:
    if rig is not None:
        return Path(rig), target
    file, sep, table = target.rpartition(":")
    if not sep or not file:
        raise HilError(f"give the table as RIG.toml:TABLE or pass --rig, got {target!r}")
    return Path(file), table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hil record console", description=__doc__.splitlines()[0])
    p.add_argument("table", help="RIG.toml:TABLE (or TABLE with --rig)")
    p.add_argument("--rig", help="rig file, when TABLE is given alone")
    p.add_argument("--db", required=True, help="SQLite file to store the session in")
    p.add_argument("--session", help="session name (default: TABLE-YYYYmmdd-HHMMSS)")
    p.add_argument("--send", action="append", default=[], help="a command to send (repeat)")
    p.add_argument("--expect", default=r"\S.*[>#$] $",
                   help="regex awaited after each --send command (the prompt)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per awaited answer")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds to collect output before the first command (banner)")
    args = p.parse_args(argv)
    try:
        rig_file, table = _split(args.table, args.rig)
        rig = load_rig(rig_file)
        if table not in rig:
            raise HilError(f"rig {rig_file} has no table [{table}] "
                           f"(tables: {', '.join(rig.resources)})")
        session = args.session or f"{table}-{time.strftime('%Y%m%d-%H%M%S')}"
        with simulators_for(rig) as sims:
            bus = open_resource(rig[table], sims)
            try:
                _converse(bus, args)
                saved = record_console(args.db, bus.transcript, session)
            finally:
                bus.close()
    except HilError as exc:
        print(f"hil record console: error: {exc}", file=sys.stderr)
        return 1
    print(f"hil record console: session {saved.session!r}: {saved.entries} entries, "
          f"{saved.bytes} bytes into {args.db}"
          + (f" ({saved.lost} bytes no longer retained, not stored)" if saved.lost else ""),
          file=sys.stderr)
    return 0


def _converse(bus, args: argparse.Namespace) -> None:  # noqa: ANN001 - any Bus
    deadline = time.monotonic() + args.settle
    while time.monotonic() < deadline:
        _show(bus.drain())
        time.sleep(0.05)
    if args.send:
        for command in args.send:
            bus.writeline(command)
            try:
                _show(bus.expect(args.expect, timeout=args.timeout).before)
            except BusTimeout as exc:
                if bus.received:
                    raise
                raise BusTimeout(f"{exc}; is the DUT on? One powered by an instrument of the "
                                 "rig (the simulated rig's otii too) stays off until a test "
                                 "switches it on") from None
        return
    print("type commands; end with Ctrl-D", file=sys.stderr, flush=True)
    for line in sys.stdin:
        bus.write(line)
        quiet_until = time.monotonic() + 0.5
        while time.monotonic() < quiet_until:
            data = bus.drain()
            if data:
                _show(data)
                quiet_until = time.monotonic() + 0.3
            time.sleep(0.02)


def _show(data: bytes | str) -> None:
    if data:
        text = data if isinstance(data, str) else escape(data).replace("\\n", "\n")
        sys.stderr.write(text)
        sys.stderr.flush()
