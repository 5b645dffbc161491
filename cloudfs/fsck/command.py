"""The `cloudfs fsck --config FILE [--repair] [--json]` subcommand.

Without --repair fsck only reads (the namespace, and Swift with HEAD, GET and listings), so it
runs beside a live mount and ccd without harming them. --repair needs the filesystem
unmounted, and keeps it so while it runs:

- SQLite: refused while a mount holds the namespace's mount lock (`sqlfsn.mount_holder`,
  naming the holder); fsck then takes the lock itself for the whole run, so a mount started
  meanwhile is refused (naming `(cloudfs fsck --repair)` as the holder).
- PostgreSQL: refused. Mounts register in the namespace's `mount` table, but nothing there
  keeps a host from mounting while a repair runs (no lock fsck could hold for the run); fsck
  without --repair works there as on SQLite.

Opening the filesystem is wiring.filesystem's (one SetupError line, exit status 2).
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import sys
import time
from functools import partial

import trio

from cloudfs.commands import add_config_args, config_from
from cloudfs.errors import UsageError
from cloudfs.fsck.checks import Fsck, Settings
from cloudfs.fsck.findings import EXIT_INCOMPLETE, EXIT_INTERRUPTED, Result
from cloudfs.fsck.progress import Progress
from cloudfs.fsck.render import render
from cloudfs.fsck.repair import Repairer
from sqlfsn import MountInfo, Namespace, mount_holder
from sqlfsn.database import describe, is_postgres
from sqlfsn.errors import MountBusy, NamespaceError
from wiring.config import Config
from wiring.filesystem import open_filesystem

#: What a mount refused while `fsck --repair` runs is told holds the namespace.
REPAIR_HOLDER = "(cloudfs fsck --repair)"
READ_ONLY_HINT = "or run fsck without --repair (read-only, safe beside mounts)"


def refuse_unless_unmounted(cfg: Config) -> None:
    """UsageError unless the filesystem can be told unmounted (see the module docstring)."""
    cfg.require("database")
    if is_postgres(cfg.database):
        raise UsageError("--repair is refused on a PostgreSQL namespace: nothing keeps a "
                         "host from mounting it while the repair runs; " + READ_ONLY_HINT)
    holder = mount_holder(cfg.database)
    if holder is not None:
        raise UsageError(f"--repair needs the filesystem unmounted: {describe(cfg.database)} "
                         f"is mounted ({holder.describe()}); unmount it first, "
                         + READ_ONLY_HINT)


def hold(ns: Namespace) -> None:
    """Take the namespace's mount lock until `ns` is closed: no mount starts meanwhile."""
    try:
        ns.register_mount(MountInfo(socket.gethostname(), os.getpid(), REPAIR_HOLDER,
                                    time.time_ns()))
    except MountBusy as exc:
        raise UsageError(f"--repair needs the filesystem unmounted: it was just mounted "
                         f"({exc.detail}); " + READ_ONLY_HINT) from None


async def check(cfg: Config, *, repair: bool = False,
                progress_enabled: bool | None = None) -> Result:
    """One fsck run over the filesystem `cfg` names (the caller made sure, for `repair`, that
    it is unmounted)."""
    async with open_filesystem(cfg) as fs:
        if repair:
            hold(fs.ns)
        progress = Progress(enabled=progress_enabled,
                            requests=lambda: sum(fs.store.statistics().values()))
        fsck = Fsck(fs.ns, fs.store, fs.layout,
                    Settings(grace=cfg.grace, parallel=cfg.max_connections), progress)
        result = await fsck.run()
        if repair:
            result.repair = True
            Repairer(fs.ns, fsck).repair(result)
        return result


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions an exception group (trio's nurseries raise them) is made of."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in leaves(e)]
    return [exc]


def cmd_fsck(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    if args.repair:
        refuse_unless_unmounted(cfg)
    try:
        result = trio.run(partial(check, cfg, repair=args.repair))
    except BaseException as exc:  # noqa: BLE001 (what is not one of these is raised again)
        found = leaves(exc)
        if all(isinstance(e, KeyboardInterrupt) for e in found):
            print("cloudfs fsck: interrupted: " + (
                "the repairs made so far are kept (each is whole); run fsck again"
                if args.repair else "nothing was changed"), file=sys.stderr)
            return EXIT_INTERRUPTED
        if all(isinstance(e, NamespaceError | sqlite3.Error) for e in found):
            # the database failed in the middle
            print(f"cloudfs fsck: {found[0]}", file=sys.stderr)
            return EXIT_INCOMPLETE
        raise
    print(result.as_json() if args.json else render(result), flush=True)
    return result.exit_status()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fsck", help="check the filesystem against Swift (and repair what can be)",
        description="Cross-check the namespace and Swift: the namespace's own consistency, "
        "every content a file uses present in Swift with the right size (manifests and "
        "their segments too), objects no file references and leftover temporary segments "
        "(left to `ccd cleanup`), stale upload leases. Without --repair it only reads: "
        "safe beside a live mount. Exit status, summed as fsck(8)'s: 0 clean, 1 problems "
        "repaired, 4 problems left, 8 incomplete (a Swift request failed), 32 interrupted "
        "(Ctrl-C); 2 cannot start. "
        "See docs/OPERATIONS.md.")
    add_config_args(p)
    p.add_argument("--repair", action="store_true",
                   help="on an unmounted filesystem (SQLite namespaces only): move the files "
                   "whose content is gone to /lost+found, keeping their content, and end "
                   "stale upload leases; never deletes data")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_fsck)
