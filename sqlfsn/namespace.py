"""namespace.py - ``Namespace``, the public face of sqlfsn: open a database, use the API.

The operations live in mixins, one module per concern: tree.py (names), files.py (attributes,
content maps, orphans), xattrs.py, content.py (content registry, upload leases),
fsck_queries.py (the reads of `cloudfs fsck`), on top of
core.py (transactions) and database.py (the connection: SQLite or PostgreSQL). This module
only assembles them and adds the check.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .check import run_checks
from .clone import CloneOps
from .content import ContentOps
from .database import is_postgres, open_database, sqlite_path
from .files import FileOps
from .fsck_queries import FsckOps
from .local import MountInfo, MountLock
from .mounts import MountOps
from .tree import TreeOps
from .xattrs import XattrOps

log = logging.getLogger(__name__)


class Namespace(CloneOps, TreeOps, FileOps, XattrOps, ContentOps, FsckOps, MountOps):
    """A cloudfs namespace in an SQLite file or a PostgreSQL database. Synchronous; use
    from one thread.

    Every method is one transaction (or one consistent read) and raises a subclass of
    ``errors.NamespaceError`` (having changed nothing) when the operation is refused.
    Names and xattr names/values are bytes; times are integer nanoseconds.
    """

    @classmethod
    def open(
        cls,
        spec: str | os.PathLike[str],
        *,
        create: bool = False,
        clock: Callable[[], int] = time.time_ns,
    ) -> Namespace:
        """Open the namespace ``spec`` names: an SQLite file (a path or ``sqlite:///path``;
        ``":memory:"``: a new private in-memory one) or a PostgreSQL database
        (``postgresql://user@host:port/dbname``, libpq conventions, see postgres.py).

        ``create``: create the schema if the database is empty (and, for SQLite, the file if
        it is missing). Raises errors.NotAFilesystem for a missing file (without
        ``create``), a file that is no SQLite database, a database of something else, or a
        schema version this code does not know; errors.Unavailable for a PostgreSQL server
        that cannot be reached or refuses the connection. Messages never show a password.
        ``clock`` gives "now" for every time stamp (tests inject a fake one).
        """
        namespace = cls(open_database(spec, create=create, clock=clock), clock)
        if not is_postgres(spec) and sqlite_path(spec) != ":memory:":
            namespace._mount_lock = MountLock(Path(sqlite_path(spec)))
        return namespace

    _mount_lock: MountLock | None = None

    @property
    def database(self) -> str:
        """The database's name for messages (a URL without its password)."""
        return self._db.display

    def register_mount(self, info: MountInfo) -> int:
        """Register the mount of this process (once, before serving); its mount id.

        SQLite allows one mount per namespace: an exclusive lock on the database's `-mount`
        file, released by the kernel when this process ends however it ends, or by
        ``close()``; MountBusy (naming the holder) if another process holds it. An in-memory
        namespace has no other process. PostgreSQL allows any number of mounts: each has a
        row, a heartbeat and holds (see mounts.py). Either way the mount's row is recorded,
        so ``mounts()`` lists it."""
        if self._mount_lock is not None:
            self._mount_lock.acquire(info)
        try:
            return self._register(info)
        except BaseException:
            if self._mount_lock is not None:
                self._mount_lock.release()
            raise

    def close(self) -> None:
        """Close the connection and give up the mount registration, if any."""
        if self._mount_lock is not None:
            self._mount_lock.release()
        super().close()

    def __enter__(self) -> Namespace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def check(self, *, include_orphans: bool = False) -> list[str]:
        """Consistency violations, one line each; [] means consistent (see check.py).

        Orphans (nlink 0) are normal while a mount runs; they are reported only with
        ``include_orphans`` (e.g. after ``purge_orphans``, or offline).
        """
        return self._read(lambda db: run_checks(db, include_orphans=include_orphans))
