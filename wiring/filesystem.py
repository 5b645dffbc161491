"""Opening a cloudfs filesystem from its Config: namespace, Swift store, layout, directories.

Both daemons start the same way: the namespace database (which names the Swift containers),
then Swift (authenticate, read the cluster's limits, check the containers exist). Every way
that can fail is one `SetupError` line naming the cause, never a traceback. The local
directories (cache, spool, logs) are created readable by their owner only: they hold file
content in flight.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from seqwrite import Layout, RetryPolicy, StoreError, SwiftStore, WriterSettings
from seqwrite.layout import layout_from_meta
from seqwrite.space import LocalSpace
from sqlfsn import Namespace
from sqlfsn.database import describe, is_postgres, sqlite_path
from sqlfsn.errors import EmptyDatabase, NotAFilesystem, Unavailable
from wiring.config import Config
from wiring.errors import SetupError

log = logging.getLogger(__name__)

# A 'deleting' mark older than this may be taken over by a writer (the collector died): longer
# than any one collector request can take (see `stale_deletion_ns`).
STALE_DELETION_NS = 15 * 60 * 10**9


@dataclass(frozen=True, slots=True)
class Filesystem:
    """An opened filesystem: its namespace, its (authenticated) store and its layout."""

    ns: Namespace
    store: SwiftStore
    layout: Layout


def cache_dir(cfg: Config) -> Path:
    """The local cache directory: `cache_dir`, or `cache` beside an SQLite database (a
    PostgreSQL database has no "beside": then `cache_dir` is required)."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    if is_postgres(cfg.database):
        raise SetupError("setting 'cache_dir' is required when the database is PostgreSQL")
    return Path(sqlite_path(cfg.database)).parent / "cache"


def private_dir(path: Path) -> Path:
    """`path` as a directory: created readable by its owner only, or an
    existing one (a warning if others can enter it: it is the operator's directory, perhaps
    shared, so it is not changed). SetupError if it cannot be made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise SetupError(f"cannot create {path}: {exc.strerror}") from None
    if mode & 0o077 and path not in _warned:
        _warned.add(path)
        log.warning("%s is accessible to other users (mode %04o): cloudfs keeps file content "
                    "and logs there; consider chmod 700", path, mode)
    return path


_warned: set[Path] = set()


def spool_dir(cfg: Config) -> Path:
    """Where segments in flight are spooled: `<cache_dir>/spool`."""
    return private_dir(private_dir(cache_dir(cfg)) / "spool")


def journal_dir(cfg: Config, ns: Namespace) -> Path:
    """The write-back journal of this filesystem: `<cache_dir>/journal-<fs_uuid>` (one per
    filesystem, so a journal is never replayed into another one)."""
    fs_uuid = ns.get_meta("fs_uuid")
    if not fs_uuid:
        raise SetupError(f"{describe(cfg.database)} has no fs_uuid: not a cloudfs namespace")
    return private_dir(cache_dir(cfg)) / f"journal-{fs_uuid}"


def writer_settings(cfg: Config, spool: Path) -> WriterSettings:
    """The Writer's settings, the same for the mount and ccd's settle: their spools (and the
    mount's write cache) count against one LocalSpace of `cache_size` on the spool's disk."""
    space = LocalSpace(str(spool), cfg.cache_size)
    free = space.free_on_disk()
    if cfg.cache_size > free:
        log.warning("cache_size is %s but %s has only %s free above its reserve of %s: local "
                    "writes (spool, write cache) wait or fail with ENOSPC when the disk is "
                    "full, before cache_size", _size(cfg.cache_size), spool, _size(max(0, free)),
                    _size(space.reserve))
    return WriterSettings(segment_size=cfg.segment_size,
                          small_threshold=cfg.small_file_threshold,
                          spool_dir=str(spool), verify_md5=cfg.verify_md5, space=space)


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def stale_deletion_ns(cfg: Config) -> int:
    """When a writer may take over a 'deleting' mark: well after any collector request that
    was in flight when the mark was set has ended (ccd retries for retry_deadline, each
    request lasting at most timeout)."""
    return max(STALE_DELETION_NS, int(2 * (cfg.retry_deadline + cfg.timeout) * 1e9))


def open_namespace(cfg: Config) -> Namespace:
    """The filesystem's namespace database (an SQLite file or a PostgreSQL URL); SetupError,
    one line without a password, if it is missing, unreachable or not a namespace."""
    cfg.require("database")
    if not is_postgres(cfg.database) and not Path(sqlite_path(cfg.database)).is_file():
        raise SetupError(f"no filesystem at {cfg.database}: run `cloudfs mkfs` first")
    try:
        return Namespace.open(cfg.database)
    except EmptyDatabase:
        raise SetupError(f"no filesystem in {describe(cfg.database)}: run `cloudfs mkfs` "
                         "first") from None
    except NotAFilesystem as exc:
        raise SetupError(f"{describe(cfg.database)}: {exc}") from None
    except Unavailable as exc:
        raise SetupError(str(exc)) from None


def layout_of(ns: Namespace) -> Layout:
    """The Swift layout the namespace records (written by `cloudfs mkfs`)."""
    try:
        return layout_from_meta(ns.get_meta)
    except ValueError as exc:
        raise SetupError(str(exc)) from None


def make_store(cfg: Config, *, deadline: float | None = None) -> SwiftStore:
    """A store for the configured account (not yet authenticated). With `insecure`, says at
    every start that certificates are not verified."""
    auth = cfg.auth
    if auth.tls.insecure:
        log.warning("TLS certificates are NOT verified (insecure = true): anyone on the path "
                    "to %s can read and change the data and the credentials", cfg.auth_url)
    try:
        return SwiftStore(auth, max_connections=cfg.max_connections, timeout=cfg.timeout,
                          policy=RetryPolicy(deadline=cfg.retry_deadline if deadline is None
                                             else deadline))
    except ValueError as exc:
        raise SetupError(str(exc)) from None


async def open_store(cfg: Config, layout: Layout | None, *,
                     open_deadline: float | None = None) -> SwiftStore:
    """An authenticated store (and, given a layout, its containers checked). Start-up gives up
    after `open_deadline` seconds of failures (default: retry_deadline), saying so in one
    line; the store's operations then retry for the full retry_deadline."""
    store = make_store(cfg, deadline=open_deadline)
    retry_log = logging.getLogger("seqwrite.retry")
    level = retry_log.level
    retry_log.setLevel(logging.ERROR)  # the failure is said once, below
    try:
        await store.open()
        missing = layout is not None and await store.head_container(layout.tmp_container) is None
    except StoreError as exc:
        await store.aclose()
        raise SetupError(f"cannot reach Swift at {cfg.auth_url}: {exc}") from None
    finally:
        retry_log.setLevel(level)
    if missing:
        await store.aclose()
        assert layout is not None
        raise SetupError(f"container {layout.tmp_container} does not exist in Swift: "
                         "run `cloudfs mkfs`")
    store.policy = RetryPolicy(deadline=cfg.retry_deadline)
    return store


@asynccontextmanager
async def open_filesystem(cfg: Config, *, open_deadline: float | None = None
                          ) -> AsyncIterator[Filesystem]:
    """The namespace, then Swift; both closed at exit."""
    cfg.require("database")
    cfg.auth  # noqa: B018 - a missing credential is said before the database is opened
    ns = open_namespace(cfg)
    try:
        layout = layout_of(ns)
        store = await open_store(cfg, layout, open_deadline=open_deadline)
        try:
            yield Filesystem(ns, store, layout)
        finally:
            await store.aclose()
    finally:
        ns.close()
