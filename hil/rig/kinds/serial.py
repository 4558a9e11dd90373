"""Kind "serial": a serial port or any pyserial URL with expect; url "sim:dut" serves the
virtual DUT's console on a real pseudo-terminal."""
from __future__ import annotations

from hil.buses.serial import SerialBus
from hil.rig.kinds.common import BUS_KEYS, bus_options
from hil.rig.schema import Key, Resource, RigKind
from hil.rig.simulators import Simulators


def open_serial(resource: Resource, sims: Simulators) -> SerialBus:
    url = resource["url"]
    if url == "sim:dut":
        from hil.sim.dut_server import serve_pty
        bench = sims.bench
        url = bench.start("dut-pty", lambda: serve_pty(bench.dut)).path
    return SerialBus(url, resource["baudrate"], resource["bytesize"], resource["parity"],
                     resource["stopbits"], resource["xonxoff"], resource["rtscts"],
                     resource["dsrdtr"], **bus_options(resource))


KIND = RigKind(
    keys={
        "url": Key(str, sims=("sim:dut",),
                        help='device path or pyserial URL (rfc2217://, socket://, loop://); '
                             '"sim:dut" for the virtual DUT'),
        "baudrate": Key(int, 115200, min=50, max=20_000_000),
        "bytesize": Key(int, 8, choices=(5, 6, 7, 8)),
        "parity": Key(str, "N", choices=("N", "E", "O", "M", "S")),
        "stopbits": Key(float, 1.0, choices=(1.0, 1.5, 2.0)),
        "xonxoff": Key(bool, False, help="software flow control"),
        "rtscts": Key(bool, False, help="hardware flow control (RTS/CTS)"),
        "dsrdtr": Key(bool, False, help="hardware flow control (DSR/DTR)"),
        **BUS_KEYS,
    },
    open=open_serial,
    help="a serial port (or pyserial URL) with expect",
)
