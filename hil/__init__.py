"""hil: hardware-in-the-loop test benches on pytest."""
from hil.errors import (BusConnectError, BusError, BusTimeout, ConnectionLost, HilError,
                        InstrumentConnectError, InstrumentError, PatternError, ProtocolError,
                        RigError, SimulatorError, ValidationError, WatcherTriggered)

__all__ = [
    "BusConnectError", "BusError", "BusTimeout", "ConnectionLost", "HilError",
    "InstrumentConnectError", "InstrumentError", "PatternError", "ProtocolError", "RigError",
    "SimulatorError", "ValidationError", "WatcherTriggered",
]
__version__ = "0.1.0"
