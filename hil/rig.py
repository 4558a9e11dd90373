"""Rig files: a TOML file whose every table is one named resource (a bus or an instrument).

`load_rig(path)` parses and checks the whole file against each kind's keys, so a wrong rig file
is one clear `RigError` at start-up naming the file, table and key. `open_resource()` opens one
entry, starting the simulator it asks for (value "sim" or "sim:...") on the shared VirtualBench.
"""
from __future__ import annotations

import importlib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hil.errors import RigError

if TYPE_CHECKING:
    from hil.sim.bench import VirtualBench

REQUIRED = object()

#: kind name -> "module:attribute" of its RigKind, imported only when a rig uses that kind.
KINDS: dict[str, str] = {
    "serial": "hil.buses.serial:RIG_KIND",
    "tcp": "hil.buses.tcp:RIG_KIND",
    "otii": "hil.instruments.otii:RIG_KIND",
    "tia": "hil.instruments.tia:RIG_KIND",
}


@dataclass(frozen=True)
class Key:
    """One key a kind accepts: its TOML type(s), default (REQUIRED if none) and allowed values."""

    type: type | tuple[type, ...]
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None
    help: str = ""


@dataclass(frozen=True)
class RigKind:
    """What a kind of resource accepts and how to open it: `open(resource, bench) -> handle`.

    The handle has `close()`; it may have `safe_state()` (called after every test) and
    `transcript` (a bus transcript the plugin saves per test).
    """

    keys: Mapping[str, Key]
    open: Callable[[Resource, VirtualBench], Any]
    help: str = ""


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
        return any(isinstance(v, str) and (v == "sim" or v.startswith("sim:"))
                   for v in self.settings.values())

    def error(self, message: str, key: str | None = None) -> RigError:
        """A RigError pointing at this table (and key), for openers that find a bad value."""
        return RigError(message, file=str(self.file), table=self.name, key=key)


@dataclass(frozen=True)
class Rig:
    """A whole rig file: resources by name."""

    file: Path
    resources: Mapping[str, Resource] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.resources

    def __getitem__(self, name: str) -> Resource:
        return self.resources[name]

    @property
    def simulated_kinds(self) -> set[str]:
        return {r.kind for r in self.resources.values() if r.simulated}


def kind(name: str, file: str = "", table: str = "") -> RigKind:
    """Import and return the RigKind registered under `name`."""
    target = KINDS.get(name)
    if target is None:
        raise RigError(f"unknown kind '{name}'; known kinds: {', '.join(sorted(KINDS))}",
                       file=file, table=table, key="kind")
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise RigError(f"kind '{name}' cannot be loaded from {target}: {exc}",
                       file=file, table=table, key="kind") from exc


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
             dict: "table"}
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join(names.get(x, x.__name__) for x in ts)


def _check_value(key: str, spec: Key, value: Any, file: str, table: str) -> Any:
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        name = _type_name(spec.type)
        article = "an" if name[0] in "aeiou" else "a"
        raise RigError(f"expected {article} {name}, got {value!r}",
                       file=file, table=table, key=key)
    if spec.choices is not None and value not in spec.choices:
        raise RigError(f"{value!r} is not one of {', '.join(map(repr, spec.choices))}",
                       file=file, table=table, key=key)
    return value


def check_table(name: str, table: Any, file: str) -> Resource:
    """Check one table against its kind's keys and fill in the defaults."""
    if not isinstance(table, dict):
        raise RigError(f"top-level key '{name}' must be a table ([{name}]), got {table!r}",
                       file=file, table=name)
    if "kind" not in table:
        raise RigError(f"missing 'kind' (one of {', '.join(sorted(KINDS))})",
                       file=file, table=name, key="kind")
    kind_name = table["kind"]
    if not isinstance(kind_name, str):
        raise RigError(f"expected a string, got {kind_name!r}", file=file, table=name, key="kind")
    spec = kind(kind_name, file, name)
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if key == "kind":
            continue
        if key not in spec.keys:
            raise RigError(f"unknown key for kind '{kind_name}'; known keys: "
                           f"{', '.join(sorted(spec.keys))}", file=file, table=name, key=key)
        settings[key] = _check_value(key, spec.keys[key], value, file, name)
    for key, k in spec.keys.items():
        if key not in settings:
            if k.default is REQUIRED:
                raise RigError(f"missing required key for kind '{kind_name}'",
                               file=file, table=name, key=key)
            settings[key] = k.default
    return Resource(name=name, kind=kind_name, settings=settings, file=Path(file))


def load_rig(path: str | Path) -> Rig:
    """Read and check a rig file. Every problem is a RigError naming file, table and key."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RigError("rig file not found", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise RigError(f"rig file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                       file=str(path)) from None
    except OSError as exc:
        raise RigError(f"cannot read rig file: {exc.strerror}", file=str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RigError(f"not valid TOML: {exc}", file=str(path)) from None
    if not data:
        raise RigError("rig file defines no resources (no tables)", file=str(path))
    resources = {name: check_table(name, table, str(path)) for name, table in data.items()}
    return Rig(file=path, resources=resources)


def open_resource(resource: Resource, bench: VirtualBench) -> Any:
    """Open one resource (starting its simulator on `bench` if it asks for one)."""
    return kind(resource.kind).open(resource, bench)
