"""postgres.py - the PostgreSQL backend (psycopg 3), for a filesystem mounted by several hosts.

The database is named by a libpq URL, ``postgresql://user@host:port/dbname?sslmode=...``: every
libpq convention holds (the password from PGPASSFILE / ``passfile=``, PGPASSWORD or the URL;
``sslmode`` and the other parameters in the query string; PG* environment variables for what
the URL leaves out). Messages name the database without its password (``describe``).

Connection: autocommit, transactions are explicit (``begin``): READ COMMITTED with row locks,
or SERIALIZABLE, or a read-only REPEATABLE READ snapshot (see ``Isolation``; core.py says
which operation uses which, and why). A transaction runs in libpq's pipeline mode: a statement
is sent at once but its result is waited for only when read, so BEGIN, row locks whose result
nobody reads, and the writes that end an operation travel with the next statement that is
read, or with the COMMIT (and results read after it: ``fetch_later``). A create, a rename of
a file or an unlink costs 2 round trips (they used to cost 7 or 8); errors of a queued
statement surface at the next read or at the COMMIT, still inside the transaction.

Statements are prepared on the server at their fifth run (psycopg's threshold), inside
transactions too: a create's statements are then neither parsed nor planned again, which
halved the server's CPU per create. A session commits with ``synchronous_commit = off``; a
durable transaction restores the database's own setting for itself (``begin``), so the
mount's many lazy transactions (cloudfs/durability.py) need no statement for it. Because
of the prepared statements, a connection pooler must run in session mode.

Unless the URL or the environment says otherwise, a connection attempt gives up after
CONNECT_TIMEOUT_S and TCP keepalives detect a dead server within about a minute, so a vanished
database ends in ``errors.Unavailable``, not a hang. A broken connection is replaced at the
next transaction, or by the next statement outside a transaction (those are reads, so they
are simply run again on the new connection).
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, NoReturn

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import errors
from .database import (
    ConnectionLost,
    Cursor,
    Database,
    Isolation,
    Params,
    Retry,
    check_version,
    describe,
)
from .dialect import POSTGRES, _translate
from .schema import SCHEMA_VERSION, create_tables, upgrade_tables

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
#: Runs of a statement before psycopg prepares it on the server (its default).
PREPARE_THRESHOLD = 5
#: libpq parameters set unless the URL (or the variable named) sets them.
_DEFAULTS = {
    "connect_timeout": (str(CONNECT_TIMEOUT_S), "PGCONNECT_TIMEOUT"),
    "application_name": ("cloudfs", "PGAPPNAME"),
    "keepalives": ("1", None),
    "keepalives_idle": ("30", None),
    "keepalives_interval": ("10", None),
    "keepalives_count": ("3", None),
}

#: SQLSTATEs of a lost race: serialization_failure, deadlock_detected. The transaction
#: changed nothing; it is run again.
_RETRY_STATES = frozenset({"40001", "40P01"})
#: SQLSTATE classes meaning the connection is gone: connection exception (08), operator
#: intervention (57: admin shutdown, crash shutdown, cannot connect now).
_LOST_CLASSES = ("08", "57")

_BEGIN = {
    # Row locks decide: every statement after them sees what the previous holder committed.
    Isolation.LOCKS: "BEGIN ISOLATION LEVEL READ COMMITTED",
    # Conflicts over rows that do not exist yet are detected (and refused with 40001).
    Isolation.SERIALIZABLE: "BEGIN ISOLATION LEVEL SERIALIZABLE",
    # One snapshot for several reads; a read-only REPEATABLE READ never fails to serialize.
    Isolation.SNAPSHOT: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
}

#: pg_advisory_xact_lock keys, per database: the rename lock (core.py), creating the schema.
RENAME_LOCK_KEY = 0x636C6F7564667301
SCHEMA_LOCK_KEY = 0x636C6F7564667302

#: The tables of a namespace (schema.py); a database holding other relations is refused.
TABLES_1 = frozenset(
    {"meta", "inode", "dentry", "content", "content_segment", "file_piece", "upload", "xattr"}
)
TABLES = TABLES_1 | {"mount", "mount_open", "mount_writer"}


def one_line(exc: BaseException, secret: str | None = None) -> str:
    """The driver's message as one line, without ``secret`` (a password) if it echoes it."""
    text = re.sub(r"\s*\n\s*", "; ", str(exc).strip()) or type(exc).__name__
    return text.replace(secret, "***") if secret else text


def _password(spec: str) -> str | None:
    parts = urllib.parse.urlsplit(spec)
    query = urllib.parse.parse_qs(parts.query)
    found = query.get("password")
    return parts.password or (found[0] if found else None)


def conninfo(spec: str) -> str:
    """The libpq connection string of the URL ``spec``, with our defaults (``_DEFAULTS``)
    where neither the URL nor the environment sets them; NotAFilesystem for a bad URL."""
    try:
        given = conninfo_to_dict(spec)
    except psycopg.Error as exc:
        raise errors.NotAFilesystem(
            f"{describe(spec)}: not a PostgreSQL URL ({one_line(exc, _password(spec))})"
        ) from None
    extra = {
        key: value
        for key, (value, env) in _DEFAULTS.items()
        if key not in given and not (env and os.environ.get(env))
    }
    return make_conninfo(spec, **extra)


class PostgresDatabase(Database):
    """A namespace in a PostgreSQL database (one connection)."""

    dialect = POSTGRES

    def __init__(self, spec: str) -> None:
        self.display = describe(spec)
        self._secret = _password(spec)
        self._conninfo = conninfo(spec)
        self._in_txn = False
        self._failed = False  # a driver error in the open transaction (see rollback)
        self._conn = self._open()

        self._pipeline: AbstractContextManager[Any] | None = None  # the open transaction's
        self._piped: psycopg.Pipeline | None = None

    def _open(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True,
                                   prepare_threshold=PREPARE_THRESHOLD)
            try:
                # A commit does not wait for the WAL flush unless its transaction is durable
                # (begin): most of a mount's are not (cloudfs/durability.py), and a durable
                # one says so in one statement, where a lazy one would have needed one too.
                conn.execute("SET synchronous_commit = off")
            except BaseException:
                conn.close()  # not left open behind the error
                raise
            return conn
        except psycopg.Error as exc:
            raise errors.Unavailable(
                f"{self.display}: cannot connect ({one_line(exc, self._secret)})"
            ) from None

    def _usable(self) -> None:
        """Replace a broken connection (only between transactions)."""
        if self._conn.broken or self._conn.closed:
            log.log(logging.INFO if self._conn.broken else logging.DEBUG,
                    "%s: reconnecting", self.display)
            self._conn.close()
            self._conn = self._open()

    def _raise(self, exc: psycopg.Error) -> NoReturn:
        """Raise what ``exc`` means (see ``_error``)."""
        self._failed = self._failed or self._in_txn
        error = self._error(exc)
        if error is exc:
            raise exc
        raise error from exc

    def _error(self, exc: psycopg.Error) -> Exception:
        """What a driver error means to sqlfsn (see database.py)."""
        state = exc.sqlstate or ""
        if state in _RETRY_STATES:
            return Retry(one_line(exc))
        if self._conn.broken or self._conn.closed or state.startswith(_LOST_CLASSES) or (
            isinstance(exc, psycopg.OperationalError) and not state
        ):
            return ConnectionLost(f"{self.display}: connection lost ({one_line(exc)})")
        if isinstance(exc, psycopg.OperationalError):
            return errors.Unavailable(f"{self.display}: {one_line(exc)}")
        return exc

    @property
    def in_transaction(self) -> bool:
        return self._in_txn

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        query = _translate(sql)
        if self._in_txn:
            try:
                return _Pending(self, self._conn.execute(query, params))
            except psycopg.Error as exc:
                self._raise(exc)
        for attempt in (1, 2):
            self._usable()
            try:
                return self._conn.execute(query, params)
            except psycopg.Error as exc:
                # Outside a transaction every statement is a read: run it again, once.
                if not isinstance(self._error(exc), ConnectionLost) or attempt == 2:
                    self._raise(exc)
        raise AssertionError("unreachable")

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.executemany(_translate(sql), rows)
        except psycopg.Error as exc:
            self._raise(exc)

    def execute_ddl(self, sql: str) -> None:
        try:
            self._conn.execute(sql)
        except psycopg.Error as exc:
            self._raise(exc)

    def begin(self, isolation: Isolation, *, durable: bool = True) -> None:
        if self._in_txn:
            raise RuntimeError("sqlfsn transactions do not nest")
        for attempt in (1, 2):
            self._usable()
            try:
                self._pipeline = self._conn.pipeline()
                self._piped = self._pipeline.__enter__()
                self._in_txn = True
                self._conn.execute(_BEGIN[isolation])
                if durable:
                    # The database's own setting for this transaction (the session's is off,
                    # _open): 'on' by default, or what the operator configured, e.g.
                    # remote_apply under synchronous replication. A lazy commit (the session's
                    # off) is the same promise as SQLite's synchronous=NORMAL: the next
                    # durable commit flushes the WAL up to itself, that record included.
                    self._conn.execute("SET LOCAL synchronous_commit TO DEFAULT")
                return
            except psycopg.Error as exc:
                # Nothing was sent to a live server yet: forget the transaction (a failed
                # BEGIN left in progress made every later one "nest"), and on a connection
                # found broken (the server restarted since the last use) begin again on a
                # new one, once.
                error = self._error(exc)
                self._failed = True
                self.rollback()
                if attempt == 2 or not isinstance(error, ConnectionLost):
                    if error is exc:
                        raise
                    raise error from exc

    def commit(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        try:
            self._conn.execute("COMMIT")
            if pipeline is not None:
                pipeline.__exit__(None, None, None)  # the last round trip
        except psycopg.Error as exc:
            self._failed = True
            error = self._error(exc)
            if isinstance(error, ConnectionLost):
                raise errors.Unavailable(
                    f"{self.display}: connection lost during COMMIT: the change may or may "
                    f"not have been applied ({one_line(exc)})"
                ) from exc
            if error is exc:
                raise
            raise error from exc
        finally:
            self._in_txn = False

    def rollback(self) -> None:
        failed, self._failed = self._failed, False
        self._in_txn = False
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            try:
                # the queued statements' errors: known. Also on a broken connection: a
                # pipeline left open is closed by the garbage collector, which logs a WARNING
                pipeline.__exit__(None, None, None)
            except psycopg.Error:
                failed = True
        if self._conn.broken or self._conn.closed:
            return  # replaced before its next use, prepared statements and all
        try:
            if self._conn.info.transaction_status != pq.TransactionStatus.IDLE:
                self._conn.execute("ROLLBACK")
            if failed:
                self._forget_prepared()
        except psycopg.Error as exc:
            log.info("%s: rollback failed: %s", self.display, one_line(exc))

    def _forget_prepared(self) -> None:
        """After a pipeline that failed: no statement prepared on the server, none known.

        psycopg prepares a statement on the server at its fifth run (PREPARE_THRESHOLD). In
        pipeline mode it records the statement as prepared when it queues the PREPARE, so a
        pipeline that failed before that PREPARE ran left psycopg naming a statement the
        server never made, and its next run failed with 'prepared statement "_pg3_N" does
        not exist' (an EIO at close in the three-mount storm test;
        test_a_failed_transaction_leaves_no_statement_half_prepared). So both records are
        emptied: psycopg's (its PrepareManager; a psycopg without one gets a new connection
        instead) and the server's (DEALLOCATE ALL). One round trip, only after a failure;
        the hot statements are prepared again after their next five runs."""
        manager = getattr(self._conn, "_prepared", None)
        if manager is None or not callable(getattr(manager, "clear", None)):
            self._conn.close()  # _usable opens a new one
            return
        manager.clear()
        self._conn.execute("DEALLOCATE ALL", prepare=False)

    def fetch_later(self, cursor: Cursor) -> Callable[[], Any]:
        return cursor.fetchone  # after the COMMIT: already received, no round trip

    def lock_inodes(self, *inodes: int | None) -> None:
        ids = sorted({i for i in inodes if i is not None})
        if ids:
            self.execute("SELECT 1 FROM inode WHERE id = ANY(?) ORDER BY id FOR UPDATE", (ids,))

    def lock_renames(self) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (RENAME_LOCK_KEY,))

    def close(self) -> None:
        self._conn.close()

    @property
    def session_id(self) -> int | None:
        return None if self._conn.closed else self._conn.info.backend_pid


class _Pending:
    """A statement's result inside a transaction: waited for (one round trip, for every
    statement queued before it too) only when read. Errors are sqlfsn's (``_raise``)."""

    def __init__(self, db: PostgresDatabase, cursor: psycopg.Cursor[Any]) -> None:
        self._db = db
        self._cursor = cursor
        self._pipeline = db._piped

    def _read(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except psycopg.Error as exc:
            self._db._raise(exc)

    def fetchone(self) -> Any:
        return self._read(self._cursor.fetchone)

    def fetchall(self) -> list[Any]:
        return self._read(self._cursor.fetchall)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())

    @property
    def rowcount(self) -> int:
        def count() -> int:
            assert self._pipeline is not None
            self._pipeline.sync()  # waits for every result so far (not the end of the BEGIN)
            return self._cursor.rowcount

        return self._read(count)  # type: ignore[no-any-return]


def connect_postgres(spec: str, *, create: bool, clock: Callable[[], int]) -> PostgresDatabase:
    """Connect, then create the schema in an empty database (``create``) or verify it.

    A database with any other table, view or sequence in its current schema is refused
    (NotAFilesystem), as is an empty one without ``create``. Unreachable: Unavailable.
    """
    db = PostgresDatabase(spec)
    try:
        _ensure_schema(db, create=create, clock=clock)
    except BaseException:
        db.close()
        raise
    return db


def _ensure_schema(db: PostgresDatabase, *, create: bool, clock: Callable[[], int]) -> None:
    db.begin(Isolation.LOCKS)
    try:
        # Decided under a lock, so that two processes cannot both create.
        db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
        schema = db.execute("SELECT current_schema()").fetchone()[0]
        if schema is None:
            raise errors.NotAFilesystem(f"{db.display}: no schema to create tables in")
        rows = db.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        ).fetchall()
        tables = {row[0] for row in rows}
        if not tables:
            if not create:
                raise errors.EmptyDatabase(
                    f"{db.display}: empty database (create it with `cloudfs mkfs`)"
                )
            create_tables(db, now_ns=clock(), root_uid=os.getuid(), root_gid=os.getgid())
        elif tables == TABLES_1 and _version(db) == str(SCHEMA_VERSION - 1):
            upgrade_tables(db, SCHEMA_VERSION - 1)  # under the schema lock: one upgrader
        elif tables != TABLES:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise errors.NotAFilesystem(
                f"{db.display}: a PostgreSQL database of something else (schema {schema} "
                f"holds {shown})"
            )
        version = _version(db)
        db.commit()
    except BaseException:
        db.rollback()
        raise
    check_version(db.display, version)


def _version(db: PostgresDatabase) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else str(row[0])
