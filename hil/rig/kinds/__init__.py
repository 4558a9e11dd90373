"""The registry of rig kinds: the built-in ones here, any a lab adds through the `hil.kinds`
entry-point group (`name = "package.module:KIND"`), imported only when used, and any a
conftest adds with `register()`."""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from hil.errors import RigError
from hil.rig.schema import RigKind

ENTRY_POINTS = "hil.kinds"

#: kind name -> "module:attribute" of its RigKind
BUILTIN: dict[str, str] = {
    "serial": "hil.rig.kinds.serial:KIND",
    "tcp": "hil.rig.kinds.tcp:KIND",
    "otii": "hil.rig.kinds.otii:KIND",
    "tia": "hil.rig.kinds.tia:KIND",
    "sttp": "hil.rig.kinds.sttp:KIND",
    "events": "hil.rig.kinds.events:KIND",
    "console_replay": "hil.rig.kinds.console_replay:KIND",
}
_registered: dict[str, str | RigKind] = {}


def register(name: str, kind: RigKind | str) -> None:
    """Add a kind for this process (a RigKind, or "module:attribute"), e.g. from a conftest
    before the rig file is loaded. A built-in kind cannot be replaced."""
    if name in BUILTIN:
        raise ValueError(f"kind {name!r} is built in and cannot be replaced")
    _registered[name] = kind


def registered() -> dict[str, str | RigKind]:
    """Every known kind: built-in ones, then registered and entry-point ones (which cannot
    shadow a built-in)."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINTS)}
    return {**found, **_registered, **BUILTIN}


def find(name: str, file: str = "", table: str = "") -> RigKind:
    """Import and return the RigKind registered under `name` (RigError if unknown or broken)."""
    kinds = registered()
    target = kinds.get(name)
    if target is None:
        raise RigError(f"unknown kind {name!r}; known kinds: {', '.join(sorted(kinds))}",
                       file=file, table=table, key="kind")
    if isinstance(target, RigKind):
        return target
    module, _, attr = target.partition(":")
    try:
        found = getattr(importlib.import_module(module), attr or "KIND")
    except Exception as exc:  # noqa: BLE001 - a lab's broken plug-in is a rig problem
        raise RigError(f"kind {name!r} cannot be loaded from {target}: "
                       f"{type(exc).__name__}: {exc}", file=file, table=table,
                       key="kind") from exc
    if not isinstance(found, RigKind):
        raise RigError(f"kind {name!r}: {target} is a {type(found).__name__}, not a RigKind",
                       file=file, table=table, key="kind")
    return found
