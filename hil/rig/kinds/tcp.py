"""Kind "tcp": a byte stream over TCP with expect; host "sim" serves the virtual DUT's
console on a TCP port."""
from __future__ import annotations

from hil.buses.tcp import TcpBus
from hil.rig.kinds.common import BUS_KEYS, DAY, bus_options
from hil.rig.schema import PORT, Key, Resource, RigKind
from hil.rig.simulators import Simulators


def open_tcp(resource: Resource, sims: Simulators) -> TcpBus:
    host, port = resource["host"], resource["port"]
    if host == "sim":
        from hil.sim.dut_server import serve_tcp
        bench = sims.bench
        server = bench.start("dut-tcp", lambda: serve_tcp(bench.dut))
        host, port = server.host, server.port
    elif port == 0:
        raise resource.error("missing port: a real host needs its TCP port (1-65535)",
                             key="port")
    return TcpBus(host, port, resource["connect_timeout"], **bus_options(resource))


KIND = RigKind(
    keys={
        "host": Key(str, sims=("sim",), help='host name or address; "sim" for the virtual DUT'),
        "port": Key(int, 0, min=0, max=PORT[1], help="TCP port (not needed for sim)"),
        "connect_timeout": Key(float, 5.0, min=0.001, max=DAY,
                               help="seconds to wait for the connection"),
        **BUS_KEYS,
    },
    open=open_tcp,
    help="a byte stream over TCP with expect",
)
