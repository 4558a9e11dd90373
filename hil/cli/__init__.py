"""The `hil` command: simulators, captures and rig checks from the shell.

Each subcommand is a `main(argv) -> int` function: here in `hil.cli` for captures and checks,
beside each simulator for `hil sim …` (every simulator runs standalone too). This table only
dispatches, so adding a command is a line here and a function there.
"""
from __future__ import annotations

import importlib
import sys

#: "words" -> ("module:function", one-line help). The function gets the remaining argv.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("sim", "dut"): ("hil.sim.dut_server:main", "run the virtual DUT console on a pty or TCP port"),
    ("sim", "otii"): ("hil.sim.otii_server:main", "run the Otii TCP server simulator"),
    ("sim", "tia"): ("hil.sim.tia_server:main", "run the TiA server simulator"),
    ("sim", "events"): ("hil.sim.events_server:main",
                        "publish events: replay an SQLite event database, or mock events"),
    ("sim", "console"): ("hil.sim.console_replay:main",
                         "serve a recorded console session on a pty or TCP port"),
    ("record", "events"): ("hil.cli.record_events:main",
                           "record a live ZeroMQ event stream into SQLite"),
    ("record", "console"): ("hil.cli.record_console:main",
                            "record a console session (rig table) into SQLite"),
    ("capture", "tia"): ("hil.cli.capture_tia:main", "capture a live TiA stream and summarise it"),
    ("sim", "sttp"): ("hil.sim.sttp_server:main", "run the STTP publisher simulator"),
    ("capture", "sttp"): ("hil.cli.capture_sttp:main", "capture a live STTP stream and summarise it"),
    ("check",): ("hil.cli.check:main", "rig doctor: open every resource of a rig and report "
                                       "versions, answers, round trips (--json)"),
    ("report",): ("hil.cli.report:main", "build the single-file HTML report of the last run"),
    ("rig-docs",): ("hil.cli.rig_docs:main", "write the rig file reference from the kinds' schemas"),
    ("pool", "status"): ("hil.cli.pool:main", "show every rig of a pool and who holds it"),
}


def usage() -> str:
    lines = ["usage: hil COMMAND [ARGS...]", "", "commands:"]
    for words, (_, text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<14} {text}")
    lines.append("")
    lines.append("`hil COMMAND --help` shows a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for words, (target, _) in sorted(COMMANDS.items(), key=lambda kv: -len(kv[0])):
        if tuple(argv[:len(words)]) == words:
            module, _, func = target.partition(":")
            return int(getattr(importlib.import_module(module), func)(argv[len(words):]) or 0)
    print(usage(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2


