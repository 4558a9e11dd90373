"""What a rig kind accepts: `Key`s with types, defaults, choices and ranges, and `RigKind`.

A kind module (`hil.rig.kinds.*`, or a lab's own package through the `hil.kinds` entry-point
group) declares `KIND = RigKind(keys=…, open=…)`. `check_table` turns one TOML table into a
`Resource` whose every value was checked here, so openers never see nonsense such as a NaN
timeout or port 99999: every problem is a `RigError` naming file, table and key.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hil.errors import RigError

if TYPE_CHECKING:
    from hil.rig.labgrid import PlaceSpec
    from hil.rig.simulators import Simulators

REQUIRED = object()
PORT = (1, 65535)


@dataclass(frozen=True)
class Key:
    """One key of a kind: TOML type(s), default (REQUIRED if none), allowed values or range.

    Numbers must be finite; `min`/`max` are inclusive bounds (`None`: open on that side).
    `sims`: the simulators the key may name ("sim", "sim:dut"; "sim:*" for any "sim:NAME"),
    checked when the rig file loads; empty for a key that names none.
    """

    type: type | tuple[type, ...]
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    sims: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resource:
    """One checked table of a rig file, every key present (defaults filled in)."""

    name: str
    kind: str
    settings: Mapping[str, Any]
    file: Path

    def __getitem__(self, key: str) -> Any:
        return self.settings[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)

    @property
    def simulated(self) -> bool:
        """True when any value asks for a simulator ("sim" or "sim:<what>")."""
        return any(is_sim(v) for v in self.settings.values())

    def path(self, key: str) -> Path:
        """A file named by `key`, relative to the rig file's folder unless absolute."""
        return (self.file.parent / Path(self[key]).expanduser()).resolve()

    def error(self, message: str, key: str | None = None) -> RigError:
        """A RigError pointing at this table (and key), for openers that find a bad value."""
        return RigError(message, file=str(self.file), table=self.name, key=key)


@dataclass(frozen=True)
class GuardTarget:
    """What a dead-man's switch calls for a resource if the test process dies: the
    `module:function` and its keyword arguments (plain JSON values)."""

    call: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RigKind:
    """A kind of resource: its keys, and `open(resource, simulators) -> handle`.

    `guard(resource, handle)`, when given, names what brings the handle's instrument to its
    safe state from another process (used when the table says `guard = true`).
    """

    keys: Mapping[str, Key]
    open: Callable[[Resource, Simulators], Any]
    help: str = ""
    guard: Callable[[Resource, Any], GuardTarget] | None = None


@dataclass(frozen=True)
class Rig:
    """A whole rig file: resources by name, and what its `[rig]` table says of the rig
    itself (`name`, default the file's stem; `labels` for choosing rigs from a pool;
    `labgrid`, the labgrid place it is, whose resources fill its "labgrid:" values)."""

    file: Path
    resources: Mapping[str, Resource] = field(default_factory=dict)
    name: str = ""
    labels: frozenset[str] = frozenset()
    labgrid: PlaceSpec | None = None

    def __contains__(self, name: str) -> bool:
        return name in self.resources

    def __getitem__(self, name: str) -> Resource:
        return self.resources[name]

    @property
    def simulated_kinds(self) -> set[str]:
        return {r.kind for r in self.resources.values() if r.simulated}


def is_sim(value: Any) -> bool:
    """A rig value asking for a simulator: "sim" or "sim:<what>"."""
    return isinstance(value, str) and (value == "sim" or value.startswith("sim:"))


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
               dict: "table"}


def _type_name(t: type | tuple[type, ...]) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join(_TYPE_NAMES.get(x, x.__name__) for x in ts)


def check_value(key: str, spec: Key, value: Any, where: Callable[..., RigError]) -> Any:
    """`value` converted to the key's type (int → float) and checked, or a RigError."""
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        name = _type_name(spec.type)
        article = "an" if name[0] in "aeiou" else "a"
        raise where(f"expected {article} {name}, got {value!r}", key)
    if isinstance(value, float) and not math.isfinite(value):
        raise where(f"expected a finite number, got {value!r}", key)
    if spec.sims and is_sim(value) and value not in spec.sims \
            and not ("sim:*" in spec.sims and value.startswith("sim:")):
        offered = " or ".join('"sim:NAME"' if s == "sim:*" else f'"{s}"' for s in spec.sims)
        raise where(f"{value!r} names no simulator of this kind; it offers {offered}", key)
    if spec.choices is not None and value not in spec.choices:
        raise where(f"{value!r} is not one of {', '.join(map(repr, spec.choices))}", key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = spec.min, spec.max
        if (low is not None and value < low) or (high is not None and value > high):
            raise where(f"{value!r} is out of range {_range(low, high)}", key)
    return value


def _range(low: float | None, high: float | None) -> str:
    if high is None:
        return f"(at least {low:g})"
    if low is None:
        return f"(at most {high:g})"
    return f"({low:g} to {high:g})"
