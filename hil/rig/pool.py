"""Rig pools: many rig files, each leased by at most one process at a time.

A lease is an OS file lock (`filelock`, flock on POSIX) on `<lease dir>/<rig name>.lock`, so it
goes when its process ends, however it ends (kill -9 included): a stale lease cannot exist,
and nothing ever has to be cleaned up by hand. Beside the lock, `<rig name>.holder.json`
names the holder (pid, host, start time, what for) for `hil pool status` and for the
message of a worker that found every rig busy; it is only believed while the lock is held.

Leases are keyed by rig name (the `[rig] name`, else the file's stem), so two checkouts of the
same lab on one host contend for the same physical rigs. The lease folder defaults to
`$HIL_LEASE_DIR`, else `hil-leases` in the system's temporary folder.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from hil.errors import RigError
from hil.rig.loader import load_rig
from hil.rig.schema import Rig

POLL = 0.2              # how often a waiting worker tries the rigs again
PROGRESS_EVERY = 10.0   # seconds between "still waiting" lines


def default_lease_dir() -> Path:
    return Path(os.environ.get("HIL_LEASE_DIR") or Path(tempfile.gettempdir()) / "hil-leases")


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: enough to find the process and judge how long it has had it."""

    pid: int
    host: str
    since: str          # ISO time the lease was taken
    purpose: str = ""   # e.g. "pytest gw2"

    def __str__(self) -> str:
        what = f" ({self.purpose})" if self.purpose else ""
        return f"pid {self.pid} on {self.host} since {self.since}{what}"


@dataclass
class Lease:
    """A rig held by this process until `release()` (or until the process ends)."""

    rig: Rig
    lock: FileLock
    holder: Holder

    def release(self) -> None:
        if self.lock.is_locked:
            _holder_file(Path(self.lock.lock_file)).unlink(missing_ok=True)
            self.lock.release(force=True)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder_file(lock_file: Path) -> Path:
    return lock_file.with_suffix(".holder.json")


def rig_files(spec: Sequence[str | Path]) -> list[Path]:
    """The rig files of a pool given as folders (their *.toml) and files, in a stable order."""
    files: list[Path] = []
    for entry in map(Path, spec):
        if entry.is_dir():
            files += sorted(p for p in entry.glob("*.toml") if p.is_file())
        elif entry.is_file():
            files.append(entry)
        else:
            raise RigError(f"rig pool entry {entry} is neither a folder nor a rig file")
    return files


class RigPool:
    """Rig files to lease from, chosen by labels (every label must be on the rig)."""

    def __init__(self, spec: Sequence[str | Path], labels: Iterable[str] = (),
                 lease_dir: Path | None = None) -> None:
        wanted = frozenset(labels)
        loaded = [load_rig(path) for path in rig_files(spec)]
        self.rigs = [rig for rig in loaded if wanted <= rig.labels]
        if not self.rigs:
            have = "; ".join(f"{r.name}: {', '.join(sorted(r.labels)) or '-'}" for r in loaded)
            raise RigError(f"the rig pool {', '.join(map(str, spec))} has no rig"
                           + (f" with labels {', '.join(sorted(wanted))} (rigs and their "
                              f"labels: {have or 'none'})" if wanted else ""))
        names = [r.name for r in self.rigs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise RigError(f"the rig pool names a rig twice ({', '.join(twice)}): give each "
                           f"rig file its own [rig] name")
        self.lease_dir = lease_dir or default_lease_dir()

    def _lock(self, rig: Rig) -> FileLock:
        self.lease_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(self.lease_dir / f"{rig.name}.lock")

    def try_lease(self, rig: Rig, purpose: str = "") -> Lease | None:
        """Lease `rig` now if it is free, else None."""
        lock = self._lock(rig)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return None
        holder = Holder(os.getpid(), socket.gethostname(),
                        datetime.now(timezone.utc).isoformat(timespec="seconds"), purpose)
        _holder_file(Path(lock.lock_file)).write_text(json.dumps(asdict(holder)))
        return Lease(rig, lock, holder)

    def lease(self, timeout: float, purpose: str = "",
              progress: Callable[[str], None] | None = None,
              names: Iterable[str] | None = None) -> Lease:
        """The first free rig (of `names`, if given), waiting up to `timeout` seconds; then a
        RigError naming who holds each rig."""
        wanted = None if names is None else set(names)
        candidates = [r for r in self.rigs if wanted is None or r.name in wanted]
        deadline = time.monotonic() + timeout
        next_note = time.monotonic() + PROGRESS_EVERY
        while True:
            for rig in candidates:
                if lease := self.try_lease(rig, purpose):
                    return lease
            now = time.monotonic()
            if now >= deadline:
                raise RigError(f"no free rig in the pool after {timeout:g} s: "
                               f"{self.describe_holders()}")
            if progress is not None and now >= next_note:
                progress(f"hil: waiting for a free rig ({deadline - now:.0f} s left): "
                         f"{self.describe_holders()}")
                next_note = now + PROGRESS_EVERY
            time.sleep(min(POLL, max(0.0, deadline - now)))

    def status(self) -> list[tuple[Rig, Holder | None]]:
        """Each rig and who holds it (None: free). Held means locked right now."""
        result = []
        for rig in self.rigs:
            lease = self.try_lease(rig, "status check")
            if lease is not None:
                lease.release()
                result.append((rig, None))
                continue
            result.append((rig, self._holder(rig)))
        return result

    def _holder(self, rig: Rig) -> Holder:
        try:
            data = json.loads(_holder_file(Path(self._lock(rig).lock_file)).read_text())
            return Holder(**data)
        except (OSError, ValueError, TypeError):
            return Holder(0, "?", "?", "holder not recorded yet")

    def describe_holders(self) -> str:
        return "; ".join(f"{rig.name} held by {holder}" if holder else f"{rig.name} free"
                         for rig, holder in self.status())
