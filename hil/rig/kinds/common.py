"""Keys every bus kind shares, and the Bus options they become."""
from __future__ import annotations

from typing import Any

from hil.buses.buffer import DEFAULT_RETENTION, MIN_RETENTION
from hil.rig.schema import Key, Resource

DAY = 86_400.0

BUS_KEYS: dict[str, Key] = {
    "encoding": Key(str, "utf-8", help="text encoding (UTF-8 or a single-byte one)"),
    "line_ending": Key(str, "\n", help="what writeline() appends"),
    "timeout": Key(float, 10.0, min=0.001, max=DAY, help="default expect/read timeout, s"),
    "retention": Key(int, DEFAULT_RETENTION, min=MIN_RETENTION, max=1 << 32,
                     help="received bytes kept in memory"),
}


def bus_options(resource: Resource) -> dict[str, Any]:
    """The `Bus` keyword options of a checked bus table (an unknown encoding is a RigError)."""
    import codecs
    try:
        codecs.lookup(resource["encoding"])
    except LookupError:
        raise resource.error(f"unknown text encoding {resource['encoding']!r}",
                             key="encoding") from None
    return {"name": resource.name, "timeout": resource["timeout"],
            "encoding": resource["encoding"], "line_ending": resource["line_ending"],
            "retention": resource["retention"]}
