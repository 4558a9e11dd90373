"""Legacy bus commands: older bench scripts of the `cmd_tcp` / `cmd_serial` kind (module-level
functions addressing a link by id, configured by a conf string) run on hil's buses unchanged
but for their import: `from hil.buses.compat.cmd_tcp import *`.

Modules: `cmd_tcp`, `cmd_serial` (the commands), `family` (the command set once, over `Bus`),
`links` (link states and the registry: ids a script opened, buses a rig provides),
`conf` (conf strings), `codec` (escapes, hex, end markers). docs/compat.md maps each command
to the `Bus` API and lists what of the original behaviour differs.

The seam to the rig: `register_link(name, bus)` or, lazily, `link_resolver(fn)`; the pytest
plugin (or a conftest) installs one so a script's `write_tcp("dut", ...)` reaches the rig's
`[dut]` bus. `deinit_all()` closes what scripts opened (call it after each test).
"""
from __future__ import annotations

from hil.buses.compat.links import (CompatWarning, deinit_all, link_bus, link_resolver,
                                    open_links, register_link, unregister_link)
from hil.errors import HilError


def execcmd(command: str, *args: object) -> tuple[int, str]:
    """Run a legacy command by name the old way: `(1, result)`, or `(0, "tcp: message")`
    for a hil error, as scripts written against the command server's `execcmd` expect."""
    from hil.buses.compat import cmd_serial, cmd_tcp
    family = command.rsplit("_", 1)[-1]
    module = {"tcp": cmd_tcp, "serial": cmd_serial}.get(family)
    function = getattr(module, command, None) if command in getattr(module, "__all__", ()) \
        else None
    if function is None:
        return 0, f"{command}: no such command (the tcp and serial commands are known)"
    try:
        return 1, str(function(*args))
    except HilError as exc:
        return 0, f"{family}: {exc}"


__all__ = ["CompatWarning", "deinit_all", "execcmd", "link_bus", "link_resolver", "open_links",
           "register_link", "unregister_link"]
