"""Kind "events": a ZeroMQ event subscriber (`EventSubscriber`). `url` is a publisher's
tcp:// or ipc:// address, or a simulator started on the virtual bench:

* "sim:replay" replays the SQLite database `db` (hil's or tcs_lib's schema) at `speedup`;
* "sim:mock" sends seeded status events on `mock_topic` at `mock_rate` Hz;
* "sim:dut" publishes the virtual DUT's power-state changes (`dut.power.state`).

A simulator waits for this subscriber before its first event, so nothing is lost to a slow
joiner; the subscriber then also listens to `hil.replay.` (the end-of-replay marker).
"""
from __future__ import annotations

from typing import Any

from hil.instruments.events import DEFAULT_HISTORY, DEFAULT_RCVHWM, EventSubscriber
from hil.rig.kinds.common import DAY
from hil.rig.schema import Key, Resource, RigKind, is_sim
from hil.rig.simulators import Simulators

SIMULATORS = ("sim:replay", "sim:mock", "sim:dut")
CONTROL_TOPIC = "hil.replay."


def _strings(resource: Resource, key: str) -> list[str]:
    values = resource[key]
    bad = [v for v in values if not isinstance(v, str) or not v]
    if bad:
        raise resource.error(f"expected an array of non-empty strings, got {bad[0]!r}", key=key)
    return list(values)


def _source(resource: Resource, sims: Simulators) -> Any:
    """The event source a simulated table asks for."""
    url = resource["url"]
    bench = sims.bench
    if url == "sim:replay":
        from hil.sim.events_replay import Replay
        if not resource["db"]:
            raise resource.error('url "sim:replay" needs the database to replay', key="db")
        path = resource.path("db")
        if not path.is_file():
            raise resource.error(f"event database {path} does not exist", key="db")
        return Replay(path, sort_by=resource["sort_by"],
                      speedup=resource["speedup"] * bench.speed,
                      topics=_strings(resource, "sim_topics") or None,
                      prefix=resource["sim_prefix"], convert_number=resource["convert_number"],
                      convert_bool=resource["convert_bool"], loop=resource["loop"])
    if url == "sim:mock":
        from hil.sim.events_mock import MockSource
        return MockSource(resource["mock_topic"], rate_hz=resource["mock_rate"] * bench.speed,
                          seed=bench.seed)
    from hil.sim.events_dut import DutEvents
    return DutEvents(bench.dut)


def open_events(resource: Resource, sims: Simulators) -> EventSubscriber:
    url = resource["url"]
    topics = _strings(resource, "topics")
    if is_sim(url):
        from hil.sim.events_server import EventServer
        try:
            source = _source(resource, sims)
        except Exception as exc:  # noqa: BLE001 - a bad database or payload: a rig problem
            if hasattr(exc, "table"):
                raise
            raise resource.error(f"cannot start the event simulator: {exc}", key="url") from None
        if topics:
            topics.append(CONTROL_TOPIC)
        server = sims.bench.start(f"events:{resource.name}", lambda: EventServer(
            source, "tcp://127.0.0.1:0", wait=max(1, len(topics)),
            wait_timeout=resource["connect_timeout"] + 30, name=resource.name))
        url = server.url
    elif not url.startswith(("tcp://", "ipc://", "inproc://", "pgm://", "epgm://", "ws://")):
        raise resource.error(f"{url!r} is no ZeroMQ address: give tcp://HOST:PORT, ipc://PATH "
                             f"or one of {', '.join(SIMULATORS)}", key="url")
    return EventSubscriber(url, topics, timeout=resource["timeout"],
                           connect_timeout=resource["connect_timeout"],
                           history=resource["history"], rcvhwm=resource["rcvhwm"],
                           name=resource.name, strict=resource["strict"])


KIND = RigKind(
    keys={
        "url": Key(str, sims=SIMULATORS,
                        help='publisher address (tcp://HOST:PORT, ipc://PATH), or "sim:replay", '
                             '"sim:mock", "sim:dut"'),
        "topics": Key(list, [], help="topic prefixes to subscribe to (empty: all); end them "
                                     'with "." or give full topics'),
        "timeout": Key(float, 10.0, min=0.001, max=DAY, help="default expect_event timeout, s"),
        "connect_timeout": Key(float, 5.0, min=0.0, max=DAY,
                               help="seconds to wait for the publisher at open (0: do not)"),
        "history": Key(int, DEFAULT_HISTORY, min=1, max=1 << 28, help="events kept in memory"),
        "rcvhwm": Key(int, DEFAULT_RCVHWM, min=0, max=1 << 31,
                      help="ZeroMQ receive high-water mark, messages (0: unlimited)"),
        "strict": Key(bool, True, help="a malformed message fails the next wait (else: counted)"),
        "db": Key(str, "", help="sim:replay: SQLite event database (relative to the rig file)"),
        "speedup": Key(float, 1.0, min=0.0, max=1e9,
                       help="sim:replay: speed-up (0: as fast as possible)"),
        "sort_by": Key(str, "none", choices=("none", "__data_time", "__wire_time"),
                       help="sim:replay: event order"),
        "sim_topics": Key(list, [], help="sim:replay: replay only these topics (empty: all)"),
        "sim_prefix": Key(bool, False, help="sim:replay: sim_topics are prefixes"),
        "loop": Key(bool, False, help="sim:replay: start again after the last event"),
        "convert_number": Key(bool, False, help="sim:replay: numeric text becomes a number"),
        "convert_bool": Key(bool, False, help="sim:replay: true/false text becomes a bool"),
        "mock_topic": Key(str, "lrs2.hardware.status", help="sim:mock: topic"),
        "mock_rate": Key(float, 1.0, min=0.0, max=1e6, help="sim:mock: events per second"),
    },
    open=open_events,
    help="ZeroMQ event subscriber (control-system and DUT events)",
)
