"""core.py - the database connection and what every part of the namespace shares.

Owns: opening the SQLite file (pragmas, schema creation and version check), the write
transaction (``_txn``), argument validation (names, hashes) and the small inode helpers that
tree.py, files.py and content.py build on.

Concurrency model: one connection per process, used from one thread. Two processes (the mount
and ccd) may open the same file: WAL lets readers run beside the single writer, every write is
one ``BEGIN IMMEDIATE`` transaction (it takes the write lock up front, so it never fails half
way on a lock upgrade), and a writer waits up to BUSY_TIMEOUT_S for the other's transaction.
Single SELECTs run in autocommit mode and see the last committed state.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import stat
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import errors, local
from .schema import SCHEMA_VERSION, create_tables
from .types import NAME_MAX, Attr

log = logging.getLogger(__name__)

#: How long a write waits for the other process's write transaction before failing. Our
#: transactions are short (milliseconds); this only rides out the other daemon's commit.
BUSY_TIMEOUT_S = 10.0

#: The columns of ``inode`` that make an Attr, in Attr's field order.
ATTR_COLUMNS = "id, mode, nlink, uid, gid, rdev, size, atime_ns, mtime_ns, ctime_ns, version"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SQLITE_NOTADB = 26


def check_name(name: bytes) -> None:
    """Raise unless ``name`` can be a directory entry name (see the dentry table)."""
    if not isinstance(name, bytes):
        raise TypeError(f"names are bytes, not {type(name).__name__}")
    if len(name) > NAME_MAX:
        raise errors.NameTooLong(f"{len(name)} bytes > {NAME_MAX}: {name[:32]!r}...")
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise errors.InvalidName(repr(name))


def check_hash(value: object) -> str:
    """Return ``value`` if it is a content hash (64 lowercase hex digits), else raise."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise errors.InvalidArgument(f"not a 64-hex-digit lowercase hash: {value!r}")
    return value


def check_count(what: str, value: object, *, minimum: int = 0) -> int:
    """Return ``value`` if it is an int >= minimum (bools excluded), else raise."""
    if type(value) is not int or value < minimum:
        raise errors.InvalidArgument(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def check_time(what: str, value: object) -> None:
    """Raise unless ``value`` is None or an int (nanoseconds; before 1970 is negative)."""
    if value is not None and type(value) is not int:
        raise errors.InvalidArgument(f"{what} must be integer nanoseconds, got {value!r}")


def connect(
    path: str | os.PathLike[str], *, create: bool, clock: Callable[[], int]
) -> sqlite3.Connection:
    """Open the database file, set the pragmas, and create or verify the schema.

    ``":memory:"`` gives a private in-memory database (always created). Otherwise a missing
    file is created only if ``create``; an existing file must be an empty database (then
    ``create`` is needed too) or a namespace of exactly SCHEMA_VERSION. A new root directory
    gets ``clock()`` as its times and the calling process's uid and gid as owner.
    """
    spec = os.fspath(path)
    memory = spec == ":memory:"
    if memory:
        target, create = ":memory:", True
    else:
        quoted = urllib.parse.quote(os.path.abspath(spec))
        target = f"file:{quoted}?mode={'rw' if not create else 'rwc'}"
        if create:
            local.create_private(Path(spec))
    try:
        conn = sqlite3.connect(target, uri=not memory, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.OperationalError as exc:
        raise errors.NotAFilesystem(f"{spec}: cannot open ({exc})") from exc
    try:
        _set_pragmas(conn, spec, memory=memory)
        _ensure_schema(conn, spec, create=create, clock=clock)
        if not memory:
            local.tighten(Path(spec))
    except sqlite3.DatabaseError as exc:
        conn.close()
        if getattr(exc, "sqlite_errorcode", None) == _SQLITE_NOTADB:
            raise errors.NotAFilesystem(f"{spec}: not an SQLite database") from exc
        raise
    except BaseException:
        conn.close()
        raise
    return conn


def _set_pragmas(conn: sqlite3.Connection, spec: str, *, memory: bool) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    # FULL: in WAL mode, NORMAL may lose the last commits on power failure; we promise a
    # committed rename or set_content survives, so every commit syncs the WAL.
    conn.execute("PRAGMA synchronous = FULL")
    journal = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if not memory and journal != "wal":
        log.warning("%s: journal_mode is %s, not wal: the other daemon will block", spec, journal)


def _ensure_schema(
    conn: sqlite3.Connection, spec: str, *, create: bool, clock: Callable[[], int]
) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        # Possibly new: decide under the write lock, so two processes cannot both create.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise errors.NotAFilesystem(f"{spec}: an SQLite database of something else")
                if not create:
                    raise errors.NotAFilesystem(f"{spec}: empty database (open with create=True)")
                create_tables(conn, now_ns=clock(), root_uid=os.getuid(), root_gid=os.getgid())
                version = SCHEMA_VERSION
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    if version != SCHEMA_VERSION:
        newer = "newer" if version > SCHEMA_VERSION else "older"
        raise errors.NotAFilesystem(
            f"{spec}: schema version {version} is {newer} than this sqlfsn's "
            f"{SCHEMA_VERSION}; {'upgrade cloudfs' if newer == 'newer' else 'no upgrade path'}"
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or row[0] != str(SCHEMA_VERSION):
        raise errors.NotAFilesystem(f"{spec}: meta schema_version {row} != user_version")


class Core:
    """State and helpers shared by the operation mixins.

    Attributes:
        _conn: the connection (autocommit; writes go through ``_txn``).
        _clock: returns the current time in integer nanoseconds.
        commits: how many write transactions this connection committed.
    """

    _conn: sqlite3.Connection
    _clock: Callable[[], int]

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], int]) -> None:
        self._conn = conn
        self._clock = clock
        self.commits = 0  # write transactions committed by this connection (statistics)

    def close(self) -> None:
        """Close the connection (uncommitted work cannot exist: every write commits)."""
        self._conn.close()

    @contextmanager
    def _txn(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE, COMMIT on success, ROLLBACK on error.

        ``durable=False`` commits without syncing the WAL, for housekeeping whose loss in a
        power failure is repaired anyway (e.g. dropping an orphan: purge_orphans at the next
        mount). Its effect becomes durable with the next durable commit of any process, since
        syncing the WAL syncs every frame before it: nothing durable can depend on it alone."""
        conn = self._conn
        if conn.in_transaction:
            raise RuntimeError("sqlfsn transactions do not nest")
        if not durable:
            conn.execute("PRAGMA synchronous = NORMAL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
                self.commits += 1
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            if not durable:
                conn.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs that see one consistent state."""
        conn = self._conn
        if conn.in_transaction:
            raise RuntimeError("sqlfsn transactions do not nest")
        conn.execute("BEGIN DEFERRED")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    # -- meta ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """The value of filesystem parameter ``key`` (see the meta table), or None."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Set filesystem parameter ``key``; 'schema_version' is sqlfsn's own."""
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise errors.InvalidArgument("meta keys and values are non-empty str")
        if key == "schema_version":
            raise errors.InvalidArgument("schema_version is managed by sqlfsn")
        with self._txn() as c:
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- inode helpers (call inside a transaction when the answer guides a write) ----------

    def _attr_or_none(self, inode: int) -> Attr | None:
        row = self._conn.execute(
            f"SELECT {ATTR_COLUMNS} FROM inode WHERE id = ?", (inode,)
        ).fetchone()
        return None if row is None else Attr(*row)

    def _attr(self, inode: int) -> Attr:
        """The inode's attributes; NotFound if there is no such inode."""
        attr = self._attr_or_none(inode)
        if attr is None:
            raise errors.NotFound(f"inode {inode}")
        return attr

    def _dir(self, inode: int, *, live: bool = True) -> Attr:
        """The attributes of directory ``inode``.

        NotFound if it does not exist (or, with ``live``, was removed: nlink 0, so no new
        entries may appear in it); NotADirectory if it is something else.
        """
        attr = self._attr_or_none(inode)
        if attr is None or (live and attr.nlink == 0 and stat.S_ISDIR(attr.mode)):
            raise errors.NotFound(f"directory {inode}")
        if not stat.S_ISDIR(attr.mode):
            raise errors.NotADirectory(f"inode {inode}")
        return attr

    def _entry(self, parent: int, name: bytes) -> tuple[int, int, int] | None:
        """(dentry id, inode, mode) of entry ``name`` in ``parent``, or None."""
        return self._conn.execute(
            "SELECT d.id, d.inode, i.mode FROM dentry d JOIN inode i ON i.id = d.inode"
            " WHERE d.parent = ? AND d.name = ?",
            (parent, name),
        ).fetchone()

    def _touch_dir(self, inode: int, now: int, nlink_delta: int = 0) -> None:
        """A directory's entries changed: set its mtime and ctime, adjust its nlink."""
        self._conn.execute(
            "UPDATE inode SET mtime_ns = ?, ctime_ns = ?, nlink = nlink + ? WHERE id = ?",
            (now, now, nlink_delta, inode),
        )
