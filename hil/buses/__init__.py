"""Buses: byte streams with expect. One `Bus` API (expect, read_until, query, watchers,
transcript) over pluggable transports: `TcpBus` and `SerialBus` (any pyserial URL).

The engine: `buffer.ReceiveBuffer` (bytes by absolute offset, arrival times, bounded) and
`matcher.Search` (incremental matching; its docstring states the look-back, end-of-data and
text rules).
"""
from hil.buses.bus import Bus, Mark, Match, Transport, Watcher, WatcherHit
from hil.buses.matcher import MAX_MATCH, decode
from hil.buses.serial import SerialBus
from hil.buses.tcp import TcpBus
from hil.buses.transcript import Entry, Transcript, escape

__all__ = ["Bus", "Entry", "MAX_MATCH", "Mark", "Match", "SerialBus", "TcpBus", "Transcript",
           "Transport", "Watcher", "WatcherHit", "decode", "escape"]
