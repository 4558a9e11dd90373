"""Rebuild the recorded sessions the event benches replay (run from the repository root):

    .venv/bin/python testbenches/rigs/events/make_sessions.py

* `tcs-session.sqlite`: a telescope control system's events in `tcs_lib`'s form (no
  `__wire_time` column: it is an attribute row; data types number/boolean/string), as a lab
  would bring from its control-room recorder: the mount slews to a target, tracks, the dome
  follows, the weather station reports, the mount parks.
* `console-session.sqlite`: a console session recorded with `hil.instruments.console_recording`
  from the virtual DUT over a real TCP connection (the path `hil record console` takes).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

HERE = Path(__file__).parent
T0 = 1767225600.0          # 2026-01-01 00:00:00 UTC

# (seconds after T0, topic, {attribute: value}); values are stored as text like tcs_lib does
TCS_EVENTS: list[tuple[float, str, dict[str, object]]] = [
    (0.00, "tcs.mount.state", {"state": "idle", "az": 180.0, "el": 90.0, "target": "",
                               "on_target": False}),
    (0.10, "tcs.weather", {"temperature": 4.5, "humidity": 41, "wind": 3.2}),
    (0.40, "tcs.dome.status", {"shutter": "open", "az": 180.0}),
    (0.80, "tcs.mount.state", {"state": "slewing", "az": 180.0, "el": 90.0,
                               "target": "HD 209458", "on_target": False}),
    (1.20, "tcs.dome.status", {"shutter": "open", "az": 240.5}),
    (1.60, "tcs.weather", {"temperature": 4.4, "humidity": 42, "wind": 3.8}),
    (2.10, "tcs.mount.state", {"state": "tracking", "az": 241.27, "el": 62.53,
                               "target": "HD 209458", "on_target": True}),
    (2.50, "tcs.dome.status", {"shutter": "open", "az": 241.0}),
    (3.00, "tcs.weather", {"temperature": 4.3, "humidity": 42, "wind": 4.1}),
    (3.60, "tcs.mount.state", {"state": "tracking", "az": 241.31, "el": 62.61,
                               "target": "HD 209458", "on_target": True}),
    (4.40, "tcs.weather", {"temperature": 4.3, "humidity": 43, "wind": 3.9}),
    (5.00, "tcs.mount.state", {"state": "parking", "az": 241.31, "el": 62.61,
                               "target": "", "on_target": False}),
    (5.90, "tcs.mount.state", {"state": "idle", "az": 180.0, "el": 90.0, "target": "",
                               "on_target": False}),
    (6.00, "tcs.dome.status", {"shutter": "closed", "az": 180.0}),
]

CONSOLE_COMMANDS = ["version", "status", "sensor", "echo hello from the lab", "tx 2", "help"]


def _tcs_text(value: object) -> tuple[str, str]:
    if isinstance(value, bool):
        return ("true" if value else "false"), "boolean"
    if isinstance(value, (int, float)):
        return repr(value), "number"
    return str(value), "string"


def make_tcs(path: Path) -> None:
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE event (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, __data_time REAL);
        CREATE INDEX event_data_time ON event(__data_time);
        CREATE TABLE attribute (event_id INTEGER NOT NULL, name TEXT NOT NULL, value TEXT,
                                data_type TEXT NOT NULL);
        CREATE INDEX attribute_event ON attribute(event_id);
    """)
    for i, (dt, topic, attrs) in enumerate(TCS_EVENTS, 1):
        db.execute("INSERT INTO event VALUES (?, ?, ?)", (i, topic, T0 + dt))
        rows = [(i, name, *_tcs_text(value)) for name, value in attrs.items()]
        rows.append((i, "__wire_time", repr(T0 + dt + 0.002), "number"))
        db.executemany("INSERT INTO attribute VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.execute("PRAGMA page_size=512")
    db.execute("VACUUM")
    db.close()


def make_console(path: Path) -> None:
    from hil.buses.tcp import TcpBus
    from hil.instruments.console_recording import record_console
    from hil.sim.dut import VirtualDut
    from hil.sim.dut_server import serve_tcp

    path.unlink(missing_ok=True)
    dut = VirtualDut(powered=True)
    try:
        with serve_tcp(dut) as server:
            bus = TcpBus(server.host, server.port, name="console")
            try:
                bus.expect_exact("dut> ", timeout=5)
                for command in CONSOLE_COMMANDS:
                    bus.writeline(command)
                    bus.expect_exact("dut> ", timeout=5)
                record_console(path, bus.transcript, "lab-bench-1")
            finally:
                bus.close()
    finally:
        dut.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA page_size=512")
    db.execute("VACUUM")
    db.close()


if __name__ == "__main__":
    make_tcs(HERE / "tcs-session.sqlite")
    make_console(HERE / "console-session.sqlite")
    for name in ("tcs-session.sqlite", "console-session.sqlite"):
        print(f"{HERE / name}: {(HERE / name).stat().st_size} bytes")
