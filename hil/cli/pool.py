"""`hil pool status POOL…`: every rig of a pool and who holds it (pid, host, since, what for).

Exit status 0; with `--free-only`, 1 when no rig is free (for scripts that wait for one).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hil.errors import RigError
from hil.rig.pool import RigPool


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hil pool status", description=__doc__.splitlines()[0])
    p.add_argument("pool", nargs="+", help="folders of rig files, or rig files")
    p.add_argument("--labels", default="", help="only rigs with all these labels (L1,L2)")
    p.add_argument("--lease-dir", default=None, help="where leases are kept (as for pytest "
                                                     "--rig-lease-dir)")
    p.add_argument("--free-only", action="store_true", help="exit 1 when no rig is free")
    args = p.parse_args(argv)
    labels = [w for w in args.labels.split(",") if w]
    try:
        pool = RigPool(args.pool, labels, Path(args.lease_dir) if args.lease_dir else None)
        status = pool.status()
    except RigError as exc:
        print(f"hil pool status: error: {exc}", file=sys.stderr)
        return 2
    width = max(len(rig.name) for rig, _ in status)
    print(f"rig pool: {len(status)} rig(s), leases in {pool.lease_dir}")
    for rig, holder in status:
        state = f"held by {holder}" if holder else "free"
        print(f"  {rig.name:<{width}}  {state}  ({rig.file})")
    free = sum(holder is None for _, holder in status)
    return 1 if args.free_only and not free else 0
