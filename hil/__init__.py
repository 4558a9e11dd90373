"""hil: hardware-in-the-loop test benches on pytest.

What a test bench imports comes from here; fixtures come from the rig file through the plugin.
Names load on first use (PEP 562), so `import hil.protocols.tia_packets` or `from hil import
clock` loads only what it needs: no driver, no pyserial, no vendor client.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # buses
    **{name: "hil.buses" for name in ("Bus", "Mark", "Match", "Watcher", "SerialBus", "TcpBus")},
    # instruments
    "OtiiPower": "hil.instruments.otii", "OtiiConfig": "hil.instruments.otii",
    "Capture": "hil.instruments.otii", "PowerTrace": "hil.instruments.power_trace",
    "Pulses": "hil.instruments.pulses", "BatteryLife": "hil.instruments.power_trace",
    "TiaClient": "hil.instruments.tia", "StreamCapture": "hil.instruments.stream_capture",
    "SignalData": "hil.instruments.stream_capture",
    "StreamValidator": "hil.instruments.validation",
    # reports
    "Measurement": "hil.report.measurements", "plot_power": "hil.report.plots",
    "plot_stream": "hil.report.plots", "write_csv": "hil.report.csv_files",
    "read_stream_csv": "hil.report.csv_files",
    # rig
    "load_rig": "hil.rig",
    # errors
    **{name: "hil.errors" for name in (
        "HilError", "BusError", "BusConnectError", "ConnectionLost", "BusTimeout",
        "PatternError", "WatcherTriggered", "ProtocolError", "InstrumentError",
        "InstrumentConnectError", "RigError", "ValidationError", "SimulatorError")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hil' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value              # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:                        # for type checkers and IDEs: the same names, eagerly
    from hil.buses import Bus, Mark, Match, SerialBus, TcpBus, Watcher
    from hil.errors import (BusConnectError, BusError, BusTimeout, ConnectionLost, HilError,
                            InstrumentConnectError, InstrumentError, PatternError, ProtocolError,
                            RigError, SimulatorError, ValidationError, WatcherTriggered)
    from hil.instruments.otii import Capture, OtiiConfig, OtiiPower
    from hil.instruments.power_trace import BatteryLife, PowerTrace
    from hil.instruments.pulses import Pulses
    from hil.instruments.stream_capture import SignalData, StreamCapture
    from hil.instruments.tia import TiaClient
    from hil.instruments.validation import StreamValidator
    from hil.report.csv_files import read_stream_csv, write_csv
    from hil.report.measurements import Measurement
    from hil.report.plots import plot_power, plot_stream
    from hil.rig import load_rig
