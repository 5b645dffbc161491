"""The `cloudfs mkfs`, `cloudfs mount` and `cloudfs config-example` subcommands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import uuid
from pathlib import Path

import trio

from cloudfs.errors import UsageError
from cloudfs.mount import MountOptions, run
from seqwrite import Layout, StoreError
from seqwrite.layout import META_CONTAINER, META_SHARD_DIGITS
from sqlfsn import Namespace, mount_holder
from wiring import credentials
from wiring.config import EXAMPLE, Config, load, parse_size
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
    g.add_argument("--database", help="namespace database (SQLite file)")
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
    db = Path(cfg.database)
    if db.exists() and not args.force:
        raise UsageError(f"{db} already holds a filesystem; use --force to replace it "
                         "(its files will be lost)")
    holder = mount_holder(db)
    if holder is not None:
        raise UsageError(f"{db} is mounted ({holder.describe()}): unmount it first")
    layout = Layout(cfg.container, cfg.shard_digits)
    fs_id = trio.run(_make_containers, cfg, layout, args.force)
    if db.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    ns = Namespace.open(db, create=True)
    ns.set_meta("fs_uuid", fs_id)  # the same id as the container's marker object
    ns.set_meta(META_CONTAINER, layout.base)
    ns.set_meta(META_SHARD_DIGITS, str(layout.shard_digits))
    ns.close()
    print(f"created filesystem {fs_id}: database {db}, Swift containers {layout.base} and "
          f"{len(layout.cas_containers())} CAS containers {layout.cas_containers()[0]}...")
    return 0


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
    opts = MountOptions(args.mountpoint, foreground=args.foreground,
                        allow_other=args.allow_other, fuse_options=tuple(args.o or ()))
    if args.log_level is None:  # the command line wins over the file
        logging.getLogger().setLevel(getattr(logging, cfg.log_level.upper()))
    return run(cfg, opts)


def cmd_stats(args: argparse.Namespace) -> int:
    try:
        raw = os.getxattr(args.mountpoint, "user.cloudfs.stats")
    except OSError as exc:
        raise UsageError(f"{args.mountpoint}: not a cloudfs mount ({exc.strerror})") from None
    print(json.dumps(json.loads(raw), indent=2, sort_keys=True))
    return 0


def cmd_config_example(args: argparse.Namespace) -> int:
    print(EXAMPLE, end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mkfs", help="create a filesystem: Swift containers and namespace database",
                       description="Create the Swift containers and the namespace database. "
                       "Refuses to replace an existing filesystem without --force.")
    add_config_args(p)
    p.add_argument("--shard-digits", type=int, choices=(0, 1, 2, 3),
                   help="CAS containers = 16**N (default 2 = 256; fixed for the filesystem)")
    p.add_argument("--force", action="store_true", help="replace an existing filesystem")
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
                       "method since the mount, open files, writes in progress.")
    p.add_argument("mountpoint")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("config-example", help="print a commented example config file")
    p.set_defaults(func=cmd_config_example)
