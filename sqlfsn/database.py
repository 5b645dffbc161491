"""database.py - the one interface sqlfsn's operations use to talk SQL, whichever the engine.

Owns: the ``Database`` interface (statements, transactions at a chosen isolation, inode row
locks, the rename lock), the kinds of transaction (``Isolation``), how a database is named
(``open_database(spec)``: a path, ``sqlite:///path`` or ``postgresql://...``, shown in
messages without its password), and the schema-version check both engines share. The engines
are sqlite.py and postgres.py; their SQL differences are in dialect.py.

Errors: a driver error never leaves sqlfsn as itself when it means "the database cannot serve
the request" (unreachable, connection lost, disk full, locked for too long): that is
``errors.Unavailable``. A lost race inside a transaction (PostgreSQL's serialization failure
or deadlock) is ``Retry``, internal: core.py runs the transaction again. Anything else from a
driver (a constraint violated, bad SQL) is a bug in sqlfsn and propagates unchanged.
"""

from __future__ import annotations

import enum
import logging
import os
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from . import errors
from .dialect import Dialect
from .schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

#: Parameters of a statement: positional for ``?``, a mapping for ``:name``.
Params = Sequence[Any] | dict[str, Any]


class Cursor(Protocol):
    """What a statement returns (sqlite3's and psycopg's cursors both are one)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Isolation(enum.Enum):
    """The kinds of transaction sqlfsn runs. On SQLite every write is the one ``BEGIN
    IMMEDIATE`` writer, so the first two are the same there; on PostgreSQL they differ, and
    core.py says next to each operation why it uses which."""

    #: A write that locks the inode rows its decision depends on (``lock_inodes``) and, for a
    #: cross-directory rename, the rename lock. PostgreSQL: READ COMMITTED, so each statement
    #: after the locks sees every transaction that held them before.
    LOCKS = "locks"
    #: A write whose invariant is about rows that may not exist yet (nobody references this
    #: content): PostgreSQL SERIALIZABLE, whose conflict detection covers absent rows too.
    SERIALIZABLE = "serializable"
    #: Several reads that see one state: PostgreSQL REPEATABLE READ READ ONLY.
    SNAPSHOT = "snapshot"


class Retry(Exception):
    """The transaction lost a race (serialization failure, deadlock) and changed nothing:
    run it again. Never leaves sqlfsn."""


class ConnectionLost(errors.Unavailable):
    """The connection broke before the transaction's COMMIT was sent: nothing was committed,
    so core.py may run the transaction again on a new connection."""


class Database(ABC):
    """One connection to a namespace database. Synchronous; use from one thread.

    Attributes:
        dialect: the engine's SQL spelling (dialect.py).
        display: the database's name for messages, never with a password.
    """

    dialect: Dialect
    display: str

    @abstractmethod
    def execute(self, sql: str, params: Params = ()) -> Cursor:
        """Run one statement (``?`` / ``:name`` placeholders) and return its rows."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per row of parameters."""

    @abstractmethod
    def execute_ddl(self, sql: str) -> None:
        """Run one schema statement as written (no placeholders)."""

    @abstractmethod
    def begin(self, isolation: Isolation, *, durable: bool = True) -> None:
        """Start a transaction. ``durable=False``: its commit does not wait for the disk (the
        next durable commit of any connection makes it durable too)."""

    @abstractmethod
    def commit(self) -> None:
        """Commit; ``Retry`` if the engine refused it for a lost race."""

    @abstractmethod
    def rollback(self) -> None:
        """Roll back the open transaction, if any; never raises."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""

    def log_syncer(self) -> Callable[[], None] | None:
        """A function that makes every commit so far of this connection durable (and every
        earlier commit of any process: the engine writes one log) and may run in any thread
        while this connection goes on (SQLite: an fdatasync of the WAL file); None where the
        barrier needs the connection itself (PostgreSQL: ``Core.sync`` commits durably)."""
        return None

    @property
    def session_id(self) -> int | None:
        """The server's id of this connection's session (PostgreSQL: the backend pid, which
        change notifications carry; it changes when the connection is replaced), or None."""
        return None

    @abstractmethod
    def fetch_later(self, cursor: Cursor) -> Callable[[], Any]:
        """The first row of ``cursor``'s result, to be read after the COMMIT: PostgreSQL
        receives it with the COMMIT (one round trip less); SQLite reads it now (it cannot
        commit with a statement unfinished)."""

    @abstractmethod
    def lock_inodes(self, *inodes: int | None) -> None:
        """Lock these inode rows (None entries ignored) until the transaction ends, in
        ascending order so that two transactions cannot lock the same rows crosswise. A
        no-op where the transaction already excludes every other writer (SQLite)."""

    @abstractmethod
    def lock_renames(self) -> None:
        """Take the filesystem's rename lock until the transaction ends (a no-op where the
        transaction already excludes every other writer)."""


def describe(spec: str) -> str:
    """``spec`` fit for a message or a log line: a URL loses its password."""
    parts = urllib.parse.urlsplit(spec)
    if not parts.scheme.startswith("postgres") or parts.password is None:
        return spec
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def is_postgres(spec: str | os.PathLike[str]) -> bool:
    """Whether ``spec`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return isinstance(spec, str) and spec.startswith(("postgresql://", "postgres://"))


def sqlite_path(spec: str | os.PathLike[str]) -> str:
    """The file (or ":memory:") a non-PostgreSQL ``spec`` names: a path, or ``sqlite:///path``
    (absolute) / ``sqlite:path``."""
    text = os.fspath(spec)
    if text.startswith("sqlite:"):
        rest = text[len("sqlite:"):]
        if rest.startswith("//"):
            parts = urllib.parse.urlsplit(text)
            if parts.netloc not in ("", "localhost"):
                raise errors.NotAFilesystem(f"{text}: an SQLite database is a local file")
            return urllib.parse.unquote(parts.path)
        return rest
    return text


def open_database(
    spec: str | os.PathLike[str], *, create: bool, clock: Callable[[], int]
) -> Database:
    """Connect to the database ``spec`` names and create or verify its schema."""
    if is_postgres(spec):
        from .postgres import connect_postgres  # psycopg is imported only when needed

        return connect_postgres(str(spec), create=create, clock=clock)
    from .sqlite import connect_sqlite

    return connect_sqlite(sqlite_path(spec), create=create, clock=clock)


def check_version(display: str, version: str | int | None) -> None:
    """Raise NotAFilesystem unless ``version`` (the stored schema version) is this code's."""
    if version is None:
        raise errors.NotAFilesystem(f"{display}: no schema_version in meta")
    try:
        number = int(version)
    except ValueError:
        raise errors.NotAFilesystem(f"{display}: schema_version {version!r}") from None
    if number != SCHEMA_VERSION:
        newer = "newer" if number > SCHEMA_VERSION else "older"
        raise errors.NotAFilesystem(
            f"{display}: schema version {number} is {newer} than this sqlfsn's "
            f"{SCHEMA_VERSION}; {'upgrade cloudfs' if newer == 'newer' else 'no upgrade path'}"
        )
