"""Kind "console_replay": a recorded console session (`hil record console`) served as the DUT's
console, on a real pseudo-terminal ("sim:pty") or TCP port ("sim:tcp"), opened as a bus with
expect like a serial or TCP console. A command the session never saw gets an error line."""
from __future__ import annotations

from typing import Any

from hil.buses.bus import Bus
from hil.rig.kinds.common import BUS_KEYS, DAY, bus_options
from hil.rig.schema import Key, Resource, RigKind
from hil.rig.simulators import Simulators


def open_console_replay(resource: Resource, sims: Simulators) -> Bus:
    from hil.sim.console_replay import serve_replay
    path = resource.path("db")
    if not path.is_file():
        raise resource.error(f"console database {path} does not exist", key="db")
    transport = resource["url"][4:]

    def factory() -> Any:
        return serve_replay(path, resource["session"] or None, speedup=resource["speedup"],
                            transport=transport, hold=transport == "pty")
    try:
        served = sims.bench.start(f"console-replay:{resource.name}", factory)
    except Exception as exc:  # noqa: BLE001 - no such session, a broken file: a rig problem
        raise resource.error(f"cannot replay the console session: {exc}", key="db") from None
    if transport == "pty":
        from hil.buses.serial import SerialBus
        bus = SerialBus(served.path, **bus_options(resource))
        served.begin()                       # the boot banner, now that the port is open
        return bus
    from hil.buses.tcp import TcpBus
    return TcpBus(served.host, served.port, resource["connect_timeout"], **bus_options(resource))


KIND = RigKind(
    keys={
        "url": Key(str, "sim:pty", choices=("sim:pty", "sim:tcp"),
                   help="serve the replay on a pseudo-terminal or a TCP port"),
        "db": Key(str, help="SQLite database holding the session (relative to the rig file)"),
        "session": Key(str, "", help="session name (empty: the first one in the file)"),
        "speedup": Key(float, 1.0, min=0.0, max=1e6,
                       help="reply timing speed-up (0: answer at once)"),
        "connect_timeout": Key(float, 5.0, min=0.001, max=DAY, help="sim:tcp: connect timeout"),
        **BUS_KEYS,
    },
    open=open_console_replay,
    help="a recorded console session replayed as the DUT's console",
)
