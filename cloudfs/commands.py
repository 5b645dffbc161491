"""The `cloudfs mkfs`, `cloudfs mount` and `cloudfs config-example` subcommands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from cloudfs.errors import UsageError
from cloudfs.mount import MountOptions, run
from cloudfs.status import render
from seqwrite import Layout, StoreError
from seqwrite.layout import META_CONTAINER, META_SHARD_DIGITS
from sqlfsn import Namespace, mount_holder
from sqlfsn.database import describe, is_postgres, sqlite_path
from sqlfsn.errors import EmptyDatabase, NamespaceError
from wiring import control, credentials, logs
from wiring.config import (
    EXAMPLE,
    Config,
    bool_option,
    check,
    load,
    parse_size,
    setting_from_text,
)
from wiring.filesystem import make_store

log = logging.getLogger(__name__)

MARKER = ".cloudfs"  # object in the temp container naming the filesystem that owns it


def add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration (flags override the environment's OS_*/ST_* "
                             "variables, which override the file)")
    g.add_argument("--config", metavar="FILE",
                   help="INI config file (see `cloudfs config-example`)")
    credentials.add_arguments(g)
    g.add_argument("--container", help="base name of the filesystem's containers")
    g.add_argument("--database",
                   help="namespace database: an SQLite file, or postgresql://user@host/dbname")
    g.add_argument("--cache-dir", help="local spool/cache directory")
    g.add_argument("--segment-size", help="temporary segment size, e.g. 5G or 64M")


def config_from(args: argparse.Namespace) -> Config:
    """The configuration: flags, then the environment, then the file (ConfigError, a one-line
    SetupError, names a bad setting)."""
    overrides = {
        **credentials.overrides(args), "container": args.container,
        "database": args.database, "cache_dir": args.cache_dir,
        "segment_size": (parse_size(args.segment_size, "--segment-size")
                         if args.segment_size else None),
    }
    return load(args.config, overrides=overrides)


# -- mkfs --------------------------------------------------------------------------------------

def cmd_mkfs(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    if args.shard_digits is not None:
        cfg = dataclasses.replace(cfg, shard_digits=args.shard_digits)
    cfg.require("database")
    cfg.auth  # noqa: B018 - says which credential is missing
    if is_postgres(cfg.database):
        _require_empty_postgres(cfg.database)
        db: str | Path = cfg.database
    else:
        db = Path(sqlite_path(cfg.database))
        if db.exists() and not args.force:
            raise UsageError(f"{db} already holds a filesystem; use --force to replace it "
                             "(its files will be lost)")
        holder = mount_holder(db)
        if holder is not None:
            raise UsageError(f"{db} is mounted ({holder.describe()}): unmount it first")
    layout = Layout(cfg.container, cfg.shard_digits)
    fs_id = trio.run(_make_containers, cfg, layout, args.force)
    if isinstance(db, Path):
        if db.exists():
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
        db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        ns = Namespace.open(db, create=True)
    except NamespaceError as exc:
        raise UsageError(str(exc)) from None
    if ns.get_meta(META_CONTAINER) is not None:  # another mkfs filled the database meanwhile
        ns.close()
        raise UsageError(f"{describe(str(db))} already holds a filesystem")
    ns.set_meta("fs_uuid", fs_id)  # the same id as the container's marker object
    ns.set_meta(META_CONTAINER, layout.base)
    ns.set_meta(META_SHARD_DIGITS, str(layout.shard_digits))
    ns.close()
    print(f"created filesystem {fs_id}: database {describe(str(db))}, Swift containers "
          f"{layout.base} and "
          f"{len(layout.cas_containers())} CAS containers {layout.cas_containers()[0]}...")
    return 0


def _require_empty_postgres(url: str) -> None:
    """UsageError unless the PostgreSQL database `url` is empty: mkfs never replaces what a
    database holds, even with --force (which then only concerns the Swift containers): drop
    and re-create the database for that."""
    try:
        Namespace.open(url).close()
    except EmptyDatabase:
        return
    except NamespaceError as exc:  # something else, another version, unreachable
        raise UsageError(str(exc)) from None
    raise UsageError(f"{describe(url)} already holds a filesystem; mkfs will not replace it "
                     "(drop and re-create the database for a new one)")


async def _make_containers(cfg: Config, layout: Layout, force: bool) -> str:
    store = make_store(cfg)
    try:
        await store.open()
        if await store.head(layout.tmp_container, MARKER) is not None and not force:
            raise UsageError(f"Swift container {layout.tmp_container} already holds a cloudfs "
                             "filesystem; use --force to replace it")
        fs_id = str(uuid.uuid4())
        limiter = trio.CapacityLimiter(8)

        async def make(name: str) -> None:
            async with limiter:
                await store.put_container(name)

        async with trio.open_nursery() as nursery:
            for name in layout.all_containers():
                nursery.start_soon(make, name)
        await store.put(layout.tmp_container, MARKER, fs_id.encode())
        return fs_id
    except StoreError as exc:
        raise UsageError(f"Swift at {cfg.auth_url}: {exc}") from None
    finally:
        await store.aclose()


# -- mount -------------------------------------------------------------------------------------

def cmd_mount(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    settings, fuse = split_options(args.o or ())
    if settings:
        cfg = check(dataclasses.replace(cfg, **settings))  # type: ignore[arg-type]
    opts = MountOptions(args.mountpoint, foreground=args.foreground,
                        allow_other=args.allow_other, fuse_options=tuple(fuse))
    if args.log_level is None:  # the command line wins over the file
        logs.set_level(cfg.log_level)
    return run(cfg, opts)


def split_options(groups: Sequence[str]) -> tuple[dict[str, object], list[str]]:
    """-o options: cloudfs settings (`stop_timeout=30`, `cache_dir=/x`, and a true/false
    setting alone or with `no` before it: `write_back`, `nowrite_back`; they override the
    config file, as flags do) and the rest, FUSE mount options (`allow_other`, `ro`, ...)."""
    settings: dict[str, object] = {}
    fuse: list[str] = []
    for option in (o.strip() for group in groups for o in group.split(",")):
        key, eq, text = option.partition("=")
        value = setting_from_text(key, text) if eq else None
        if not eq and (flag := bool_option(option)) is not None:
            key, value = flag
        if value is not None:
            settings[key] = value
        elif option:
            fuse.append(option)
    return settings, fuse


def _ask(mountpoint: str, op: str, timeout: float = 10.0) -> Any:
    try:
        return control.request(mountpoint, op, timeout=timeout)
    except control.ControlError as exc:
        raise UsageError(str(exc)) from None


def cmd_stats(args: argparse.Namespace) -> int:
    print(json.dumps(_ask(args.mountpoint, "stats"), indent=2, sort_keys=True))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    st = _ask(args.mountpoint, "status", args.timeout)
    print(json.dumps(st, indent=2, sort_keys=True) if args.json else render(st))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    timeout = args.timeout if args.timeout is not None else 365 * 86400.0
    done = _ask(args.mountpoint, "sync", timeout)
    if args.verbose:
        print(f"{done['uploaded']} closed files uploaded")
    return 0


def cmd_config_example(args: argparse.Namespace) -> int:
    print(EXAMPLE, end="")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mkfs", help="create a filesystem: Swift containers and namespace database",
                       description="Create the Swift containers and the namespace database. "
                       "Refuses to replace an existing filesystem without --force.")
    add_config_args(p)
    p.add_argument("--shard-digits", type=int, choices=(0, 1, 2, 3),
                   help="CAS containers = 16**N (default 2 = 256; fixed for the filesystem)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing filesystem (its SQLite file and Swift containers' "
                   "marker; a PostgreSQL database must be empty regardless)")
    p.set_defaults(func=cmd_mkfs)

    p = sub.add_parser("mount", help="mount a filesystem",
                       description="Mount the filesystem at MOUNTPOINT. Without --foreground, "
                       "returns once the mount is ready (or fails with the reason). Unmount with "
                       "`fusermount3 -u MOUNTPOINT`, SIGTERM or SIGINT: pending uploads finish "
                       "first, or fail loudly.")
    p.add_argument("mountpoint")
    add_config_args(p)
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("--allow-other", action="store_true", help="let other users access the mount")
    p.add_argument("-o", action="append", metavar="OPTIONS",
                   help="extra FUSE mount options, comma separated")
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser("stats", help="print a mounted filesystem's counters (JSON)",
                       description="Print the mount daemon's counters: Swift requests by "
                       "method since the mount, open files, writes in progress, namespace "
                       "commits, FUSE requests. Asks the daemon's control channel (only its "
                       "owner and root may).")
    p.add_argument("mountpoint")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("status", help="what a mount is doing now",
                       description="What the mount daemon is doing now: uploads in flight, "
                       "open files, local disk (spool and write cache) against its limits, "
                       "Swift requests, retries and failures, FUSE errors, the namespace and "
                       "the last ccd passes. Asks the daemon's control channel (only its owner "
                       "and root may); never a request to the mount itself.")
    p.add_argument("mountpoint")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up when the daemon does not answer within this (default 10)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("sync", help="wait until every closed file is in Swift",
                       description="Return once every file closed on the mount before this "
                       "command is uploaded to Swift and committed (write-back mode; without "
                       "it, at once). Any user who can reach the daemon's control channel may "
                       "run it; fsync(2) of a directory of the mount waits the same way.")
    p.add_argument("mountpoint")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="give up (exit 1) after this many seconds (default: wait)")
    p.add_argument("-v", "--verbose", action="store_true", help="say how many files it waited for")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("config-example", help="print a commented example config file")
    p.set_defaults(func=cmd_config_example)
