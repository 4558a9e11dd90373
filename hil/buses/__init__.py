"""Buses: byte streams with expect. One `Bus` API (expect, read_until, query, watchers,
transcript) over pluggable transports: `TcpBus` and `SerialBus` (any pyserial URL).

The modules, each one idea: `bus` (the Bus engine: reader thread, waits, errors), `match`
(what calls return: Match, Mark, Watcher, WatcherHit), `transport` (the Transport contract and
FdWaiter), `buffer` (ReceiveBuffer: bytes by absolute offset, arrival times, bounded),
`matcher` (incremental matching; its docstring states the look-back, end-of-data and text
rules), `engines` (RE2, else `regex` with a time limit), `transcript`, `tcp`, `serial`.
"""
from hil.buses.bus import Bus
from hil.buses.match import Mark, Match, Watcher, WatcherHit
from hil.buses.serial import SerialBus
from hil.buses.tcp import TcpBus
from hil.buses.transcript import Transcript

__all__ = ["Bus", "Mark", "Match", "SerialBus", "TcpBus", "Transcript", "Watcher",
           "WatcherHit"]
