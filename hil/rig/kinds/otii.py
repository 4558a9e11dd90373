"""Kind "otii": a Qoitech Otii Arc/Ace over the Otii TCP server; host "sim" starts the Otii
simulator measuring the virtual DUT and connects to it over TCP like to real hardware."""
from __future__ import annotations

import json
import os
from dataclasses import replace

from hil.instruments.otii import ARC_RATE, CHANNELS, OtiiConfig, OtiiPower
from hil.rig.kinds.common import DAY
from hil.rig.schema import PORT, GuardTarget, Key, Resource, RigKind, is_sim
from hil.rig.simulators import Simulators

KEYS: dict[str, Key] = {
    "host": Key(str, sims=("sim",), help='Otii TCP server address, or "sim" for the simulator'),
    "port": Key(int, 1905, min=PORT[0], max=PORT[1], help="Otii TCP server port (not used "
                                                           "for sim)"),
    "device": Key(str, "", help="device name or id; empty = the first Arc/Ace"),
    "licensing": Key(str, "auto", choices=("auto", "manual"),
                     help="auto: reserve a license on connect and return it on close"),
    "credentials": Key(str, "", help="JSON file with username/password, relative to the rig "
                                     "file; empty = OTII_USERNAME/OTII_PASSWORD"),
    "voltage": Key(float, 3.3, min=0.1, max=27.0, help="main output voltage, V (the device checks its own range)"),
    "max_current": Key(float, 0.5, min=0.001, max=5.0, help="over-current cut-off, A"),
    "range": Key(str, "low", choices=("low", "high"), help="low = auto-range, high = forced"),
    "channels": Key(list, ["mc", "mv"], help="channels to record (mc required; rx = UART log)"),
    "sample_rate": Key(int, ARC_RATE, min=1, max=50_000,
                       help="samples/s (settable on an Ace; an Arc has 4000)"),
    "uart_baudrate": Key(int, 115_200, min=50, max=20_000_000,
                         help="UART baud rate for rx and uart_write"),
    "connect_timeout": Key(float, 10.0, min=0.001, max=DAY,
                           help="s to wait for the server and a license"),
    "clock": Key(str, "server", choices=("server", "local"),
                 help="t0 of traces: the server's start-time, or local round-trip timing"),
    "settle": Key(float, 5.0, min=0.0, max=DAY,
                  help="s safe_state keeps checking main off and recording stopped after a "
                       "command went unanswered (it may still run late on the server)"),
    "guard": Key(bool, False, help="dead-man's switch: if the test process dies without "
                                   "teardown, a guardian process switches main power off"),
}


def config_from(res: Resource) -> OtiiConfig:
    """The OtiiConfig of a checked rig table (channel names checked here)."""
    channels = res["channels"]
    if not all(isinstance(c, str) for c in channels):
        raise res.error(f"expected an array of channel names, got {channels!r}", "channels")
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise res.error(f"unknown channel(s) {', '.join(map(repr, unknown))}; known: "
                        f"{', '.join(CHANNELS)}", "channels")
    if "mc" not in channels:
        raise res.error("channels must include 'mc' (the current a capture is made of)",
                        "channels")
    values = {k: res[k] for k in KEYS if k != "guard"}
    values["channels"] = tuple(channels)
    if values["credentials"]:
        values["credentials"] = str(res.path("credentials"))
    return OtiiConfig(**values)


def sim_account(res: Resource, cfg: OtiiConfig) -> dict[str, str]:
    """The account a simulated Otii accepts: the one the table logs in with (its credentials
    file, else OTII_USERNAME/OTII_PASSWORD), so the simulated rig logs in like a real one."""
    if cfg.credentials:
        try:
            data = json.loads(open(cfg.credentials, encoding="utf-8").read())
            return {str(data["username"]): str(data["password"])}
        except FileNotFoundError:
            raise res.error(f"credentials file {cfg.credentials} not found",
                            key="credentials") from None
        except (OSError, ValueError, KeyError, TypeError):
            raise res.error(f"credentials file {cfg.credentials} is not JSON with \"username\" "
                            "and \"password\"", key="credentials") from None
    user, password = os.environ.get("OTII_USERNAME"), os.environ.get("OTII_PASSWORD")
    if user and password:
        return {user: password}
    raise res.error("a simulated Otii requires login like a real one: give a credentials "
                    "file, or set OTII_USERNAME and OTII_PASSWORD", key="credentials")


def open_power(res: Resource, sims: Simulators) -> OtiiPower:
    cfg = config_from(res)
    if is_sim(cfg.host):
        from hil.sim.otii_server import OtiiServer
        accounts = sim_account(res, cfg)
        bench = sims.bench
        server = bench.start("otii", lambda: OtiiServer(dut=bench.dut, speed=bench.speed,
                                                        seed=bench.seed, accounts=accounts))
        cfg = replace(cfg, host=server.host, port=server.port)
    return OtiiPower(cfg, name=res.name)


def guard(res: Resource, power: OtiiPower) -> GuardTarget:
    """Main off through a connection of the guardian's own, to the server `power` uses."""
    cfg = power.config
    return GuardTarget("hil.instruments.otii_guard:switch_off",
                       {"host": cfg.host, "port": cfg.port, "device": cfg.device,
                        "credentials": cfg.credentials, "timeout": cfg.connect_timeout})


KIND = RigKind(keys=KEYS, open=open_power, guard=guard,
               help="Qoitech Otii Arc/Ace power analyzer over the Otii TCP server")
