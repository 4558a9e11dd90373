"""Kind "tia": a TiA 1.0 stream client; host "sim" (or "sim:NAME", one simulator per name)
starts the TiA simulator, whose "dut" sources stream the virtual DUT's sensors."""
from __future__ import annotations

from hil.instruments.tia import DEFAULT_PORT, TiaClient
from hil.rig.kinds.common import DAY
from hil.rig.schema import PORT, Key, Resource, RigKind, is_sim
from hil.rig.simulators import Simulators

DEFAULT_SIM_SIGNALS = "eeg:8x4@500/sine,emg:2x4@500/noise,sensors:5x1@125/dut"


def open_tia(resource: Resource, sims: Simulators) -> TiaClient:
    host, port = resource["host"], resource["port"]
    if is_sim(host):
        from hil.sim.tia_server import TiaServer
        bench = sims.bench

        def factory() -> TiaServer:
            return TiaServer(resource["signals"], sample_order=resource["sample_order"],
                             realtime=resource["realtime"], speed=resource["speed"] * bench.speed,
                             seed=bench.seed, sensor=lambda name, t: bench.dut.sensor(name, t),
                             faults=resource["faults"] or None)
        try:
            server = bench.start("tia:" + (host[4:] or resource.name), factory)
        except Exception as exc:  # noqa: BLE001 - a bad signal or fault spec in the rig file
            raise resource.error(f"cannot start the TiA simulator: {exc}",
                                 key="signals") from None
        host, port = server.host, server.port
    return TiaClient(host, port, transport=resource["transport"],
                     sample_order=resource["sample_order"], timeout=resource["timeout"],
                     master_first=resource["master_first"], resync=resource["resync"],
                     rate_per_block=resource["rate_per_block"], source=resource.name)


KIND = RigKind(
    keys={
        "host": Key(str, sims=("sim", "sim:*"),
                         help='TiA server host, or "sim" for the simulator'),
        "port": Key(int, DEFAULT_PORT, min=PORT[0], max=PORT[1],
                    help="control port (not used for sim)"),
        "transport": Key(str, "tcp", choices=("tcp", "udp"), help="data connection"),
        "sample_order": Key(str, "channel_major", choices=("channel_major", "sample_major"),
                            help="order of samples in a block (spec §5.4)"),
        "timeout": Key(float, 5.0, min=0.001, max=DAY, help="seconds any one wait may take"),
        "master_first": Key(bool, False, help="accept the master's block first (pytia)"),
        "resync": Key(bool, False, help="skip malformed packets instead of failing"),
        "rate_per_block": Key(bool, False, help="samplingRate counts blocks (pytia)"),
        "signals": Key((str, list), DEFAULT_SIM_SIGNALS,
                       help="sim: TYPE:CHANNELSxBLOCK@RATE[/SOURCE][*],… or a list of tables"),
        "realtime": Key(bool, True, help="sim: pace packets in real time (false: flat out)"),
        "speed": Key(float, 1.0, min=1e-3, max=1e6, help="sim: real-time speed-up"),
        "faults": Key(str, "", help="sim: kind@at[xcount][:seconds][/every],…"),
    },
    open=open_tia,
    help="TiA 1.0 stream client (TOBI Interface A)",
)
