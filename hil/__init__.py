"""hil: hardware-in-the-loop test benches on pytest.

What a test bench imports comes from here; fixtures come from the rig file through the plugin.
"""
from hil.buses import Bus, Mark, Match, SerialBus, TcpBus
from hil.errors import (BusConnectError, BusError, BusTimeout, ConnectionLost, HilError,
                        InstrumentConnectError, InstrumentError, PatternError, ProtocolError,
                        RigError, SimulatorError, ValidationError, WatcherTriggered)
from hil.instruments.power_trace import PowerTrace
from hil.instruments.stream_capture import SignalData, StreamCapture
from hil.rig import load_rig

__all__ = [
    "Bus", "Mark", "Match", "SerialBus", "TcpBus", "BusConnectError", "BusError", "BusTimeout", "ConnectionLost", "HilError",
    "InstrumentConnectError", "InstrumentError", "PatternError", "PowerTrace", "ProtocolError",
    "RigError", "SignalData", "SimulatorError", "StreamCapture", "ValidationError",
    "WatcherTriggered", "load_rig",
]
__version__ = "0.1.0"
