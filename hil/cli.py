"""The `hil` command: simulators, captures and rig checks from the shell.

Each subcommand lives with the code it drives; this table only dispatches, so adding one is a
line here and a `main(argv) -> int` function there.
"""
from __future__ import annotations

import importlib
import sys

#: "words" -> ("module:function", one-line help). The function gets the remaining argv.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("sim", "dut"): ("hil.sim.dut_server:main", "run the virtual DUT console on a pty or TCP port"),
    ("sim", "otii"): ("hil.sim.otii_server:main", "run the Otii TCP server simulator"),
    ("sim", "tia"): ("hil.sim.tia_server:main", "run the TiA server simulator"),
    ("capture", "tia"): ("hil.instruments.tia_capture:main", "capture a live TiA stream and summarise it"),
    ("check",): ("hil.rig_check:main", "check a rig file and try to open every resource"),
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


if __name__ == "__main__":
    sys.exit(main())
