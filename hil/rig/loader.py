"""Rig files: a TOML file whose every table is one named resource (a bus or an instrument).

`load_rig(path)` parses and checks the whole file against each kind's keys, so a wrong rig file
is one clear `RigError` at start-up naming the file, table and key. `open_resource()` opens one
entry, starting the simulator it asks for (a value "sim" or "sim:...") on `Simulators`.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hil.errors import RigError
from hil.rig import kinds, labgrid
from hil.rig.schema import REQUIRED, Key, Resource, Rig, check_value
from hil.rig.simulators import Simulators

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
META = "rig"          # the reserved table about the rig itself: not a resource
META_KEYS = {"name": Key(str, "", help="the rig's name in pools and results (default: the "
                                      "file name without .toml)"),
             "labels": Key(list, [], help="words to choose rigs from a pool by"),
             "labgrid": Key(dict, {}, help='the labgrid place this rig is: { coordinator = '
                                          '"HOST:PORT", place = "NAME" } or tags = { ... }')}


def check_table(name: str, table: Any, file: str) -> Resource:
    """Check one table against its kind's keys and fill in the defaults."""
    def where(message: str, key: str | None = None) -> RigError:
        return RigError(message, file=file, table=name, key=key)
    if not isinstance(table, dict):
        raise where(f"top-level key '{name}' must be a table ([{name}]), got {table!r}")
    if not name.isidentifier() or not set(name) <= set(NAME_CHARS):
        raise where("a table name becomes a fixture name: use letters, digits and _ "
                    "(not starting with a digit)")
    if "kind" not in table:
        raise where(f"missing 'kind' (one of {', '.join(sorted(kinds.registered()))})", "kind")
    kind_name = table["kind"]
    if not isinstance(kind_name, str):
        raise where(f"expected a string, got {kind_name!r}", "kind")
    spec = kinds.find(kind_name, file, name)
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if key == "kind":
            continue
        if key not in spec.keys:
            raise where(f"unknown key for kind '{kind_name}'; known keys: "
                        f"{', '.join(sorted(spec.keys))}", key)
        settings[key] = check_value(key, spec.keys[key], value, where)
    for key, k in spec.keys.items():
        if key not in settings:
            if k.default is REQUIRED:
                raise where(f"missing required key for kind '{kind_name}'", key)
            settings[key] = k.default
    return Resource(name=name, kind=kind_name, settings=settings, file=Path(file))


def read_toml(path: Path) -> dict[str, Any]:
    """A rig file's TOML; every way of failing is a RigError naming the file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RigError("rig file not found", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise RigError(f"rig file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                       file=str(path)) from None
    except OSError as exc:
        raise RigError(f"cannot read rig file: {exc.strerror or exc}", file=str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RigError(f"not valid TOML: {exc}", file=str(path)) from None


def check_meta(table: Any, file: str) -> tuple[str, frozenset[str]]:
    """The `[rig]` table: the rig's name and labels."""
    def where(message: str, key: str | None = None) -> RigError:
        return RigError(message, file=file, table=META, key=key)
    if not isinstance(table, dict):
        raise where(f"'{META}' is reserved for a table about the rig itself ([{META}])")
    for key in table:
        if key not in META_KEYS:
            raise where(f"unknown key; [{META}] knows: {', '.join(sorted(META_KEYS))}", key)
    name = check_value("name", META_KEYS["name"], table.get("name", ""), where)
    labels = check_value("labels", META_KEYS["labels"], table.get("labels", []), where)
    if not all(isinstance(label, str) and label for label in labels):
        raise where(f"expected an array of words, got {labels!r}", "labels")
    return name or Path(file).stem, frozenset(labels)


def load_rig(path: str | Path) -> Rig:
    """Read and check a rig file. Every problem is a RigError naming file, table and key."""
    path = Path(path)
    data = read_toml(path)
    meta = data.pop(META, {})
    name, labels = check_meta(meta, str(path))
    place = labgrid.check_spec(meta[labgrid.KEY], str(path)) if labgrid.KEY in meta else None
    if not data:
        raise RigError("rig file defines no resources (no tables)", file=str(path))
    resources = {name: check_table(name, table, str(path)) for name, table in data.items()}
    rig = Rig(file=path, resources=resources, name=name, labels=labels, labgrid=place)
    labgrid.check_references(rig)
    return rig


def table_names(path: Path) -> set[str]:
    """The table names of a rig file, unchecked (for telling rig resources from typos)."""
    try:
        return {name for name, value in read_toml(path).items()
                if isinstance(value, dict) and name != META}
    except RigError:
        return set()


def simulators_for(rig: Rig) -> Simulators:
    """The (lazy) simulators of `rig`: the virtual DUT is on the Otii's supply when the rig
    simulates an Otii."""
    return Simulators(dut_on_otii="otii" in rig.simulated_kinds)


def open_resource(resource: Resource, sims: Simulators) -> Any:
    """Open one resource (starting its simulator on `sims` if it asks for one)."""
    return kinds.find(resource.kind, str(resource.file), resource.name).open(resource, sims)
