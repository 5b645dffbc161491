"""sqlite.py - the embedded backend: one SQLite file in WAL mode (the default).

Concurrency model: one connection per process, used from one thread. Two processes (the mount
and ccd) may open the same file: WAL lets readers run beside the single writer, every write is
one ``BEGIN IMMEDIATE`` transaction (it takes the write lock up front, so it never fails half
way on a lock upgrade, and no other writer runs until it ends: row locks and the rename lock
are not needed), and a writer waits up to BUSY_TIMEOUT_S for the other's transaction. Single
SELECTs run in autocommit mode and see the last committed state.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from . import errors, local
from .database import Cursor, Database, Isolation, Params, check_version
from .dialect import SQLITE
from .schema import SCHEMA_VERSION, create_tables, upgrade_tables

log = logging.getLogger(__name__)

#: How long a write waits for the other process's write transaction before failing. Our
#: transactions are short (milliseconds); this only rides out the other daemon's commit.
BUSY_TIMEOUT_S = 10.0

_SQLITE_NOTADB = 26


class SqliteDatabase(Database):
    """A namespace in an SQLite file (or in memory).

    Attributes:
        conn: the sqlite3 connection (autocommit; transactions are explicit).
    """

    dialect = SQLITE

    def __init__(self, conn: sqlite3.Connection, display: str) -> None:
        self.conn = conn
        self.display = display
        self._relaxed = False  # synchronous = NORMAL for the open transaction

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            raise errors.Unavailable(f"{self.display}: {exc}") from exc

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.OperationalError as exc:
            raise errors.Unavailable(f"{self.display}: {exc}") from exc

    def execute_ddl(self, sql: str) -> None:
        self.execute(sql)

    def begin(self, isolation: Isolation, *, durable: bool = True) -> None:
        if self.conn.in_transaction:
            raise RuntimeError("sqlfsn transactions do not nest")
        if isolation is Isolation.SNAPSHOT:
            self.execute("BEGIN DEFERRED")
            return
        # FULL (the default here): in WAL mode, NORMAL may lose the last commits on power
        # failure. NORMAL for this transaction only: its effect becomes durable with the next
        # durable commit of any process, since syncing the WAL syncs every frame before it.
        if not durable:
            self.execute("PRAGMA synchronous = NORMAL")
            self._relaxed = True
        try:
            self.execute("BEGIN IMMEDIATE")  # the one writer: no row locks needed
        except BaseException:
            self._restore_sync()
            raise

    def commit(self) -> None:
        try:
            self.execute("COMMIT")
        finally:
            self._restore_sync()

    def rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("%s: rollback failed: %s", self.display, exc)
        self._restore_sync()

    def _restore_sync(self) -> None:
        if self._relaxed:
            self._relaxed = False
            self.conn.execute("PRAGMA synchronous = FULL")

    def log_syncer(self) -> Callable[[], None] | None:
        if self.display == ":memory:":
            return lambda: None
        wal = os.path.abspath(self.display) + "-wal"

        def sync_wal() -> None:
            # Every frame a commit wrote is in the WAL file: syncing it is what a
            # synchronous=FULL commit does. No WAL file: the last checkpoint moved everything
            # into the database file and synced it before removing the WAL.
            try:
                fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

        return sync_wal

    def fetch_later(self, cursor: Cursor) -> Callable[[], Any]:
        row = cursor.fetchone()
        return lambda: row

    def lock_inodes(self, *inodes: int | None) -> None:
        pass  # BEGIN IMMEDIATE: no other writer runs until this transaction ends

    def lock_renames(self) -> None:
        pass  # BEGIN IMMEDIATE: no other writer runs until this transaction ends

    def close(self) -> None:
        self.conn.close()


def connect_sqlite(path: str, *, create: bool, clock: Callable[[], int]) -> SqliteDatabase:
    """Open the database file, set the pragmas, and create or verify the schema.

    ``":memory:"`` gives a private in-memory database (always created). Otherwise a missing
    file is created only if ``create``; an existing file must be an empty database (then
    ``create`` is needed too) or a namespace of exactly SCHEMA_VERSION. A new root directory
    gets ``clock()`` as its times and the calling process's uid and gid as owner. The file is
    created, or tightened, readable by its owner only (local.py).
    """
    memory = path == ":memory:"
    if memory:
        target, create = ":memory:", True
    else:
        quoted = urllib.parse.quote(os.path.abspath(path))
        target = f"file:{quoted}?mode={'rwc' if create else 'rw'}"
        if create:
            local.create_private(Path(path))
    try:
        conn = sqlite3.connect(target, uri=not memory, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.OperationalError as exc:
        raise errors.NotAFilesystem(f"{path}: cannot open ({exc})") from exc
    db = SqliteDatabase(conn, path)
    try:
        _set_pragmas(conn, path, memory=memory)
        _ensure_schema(db, create=create, clock=clock)
        if not memory:
            local.tighten(Path(path))
    except sqlite3.DatabaseError as exc:
        conn.close()
        if getattr(exc, "sqlite_errorcode", None) == _SQLITE_NOTADB:
            raise errors.NotAFilesystem(f"{path}: not an SQLite database") from exc
        raise
    except BaseException:
        conn.close()
        raise
    return db


def _set_pragmas(conn: sqlite3.Connection, path: str, *, memory: bool) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    # FULL: in WAL mode, NORMAL may lose the last commits on power failure; we promise a
    # committed rename or set_content survives, so every commit syncs the WAL.
    conn.execute("PRAGMA synchronous = FULL")
    journal = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if not memory and journal != "wal":
        log.warning("%s: journal_mode is %s, not wal: the other daemon will block", path, journal)


def _ensure_schema(db: SqliteDatabase, *, create: bool, clock: Callable[[], int]) -> None:
    conn, path = db.conn, db.display
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        # Possibly new: decide under the write lock, so two processes cannot both create.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise errors.NotAFilesystem(f"{path}: an SQLite database of something else")
                if not create:
                    raise errors.EmptyDatabase(f"{path}: empty database (open with create=True)")
                create_tables(db, now_ns=clock(), root_uid=os.getuid(), root_gid=os.getgid())
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                version = SCHEMA_VERSION
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    if version == SCHEMA_VERSION - 1:
        version = _upgrade(db, version)
    check_version(path, version)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or row[0] != str(SCHEMA_VERSION):
        raise errors.NotAFilesystem(f"{path}: meta schema_version {row} != user_version")


def _upgrade(db: SqliteDatabase, version: int) -> int:
    """Bring a namespace of the previous schema version to this one, under the write lock
    (of two processes opening it, the second finds it done)."""
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION - 1:
            upgrade_tables(db, version)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            version = SCHEMA_VERSION
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return int(version)
