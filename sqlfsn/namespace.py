"""namespace.py - ``Namespace``, the public face of sqlfsn: open a database, use the API.

The operations live in mixins, one module per concern: tree.py (names), files.py (attributes,
content maps, orphans, xattrs), content.py (content registry, upload leases), on top of
core.py (connection, transactions). This module only assembles them and adds the check.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .check import run_checks
from .content import ContentOps
from .core import connect
from .files import FileOps
from .local import MountInfo, MountLock
from .tree import TreeOps

log = logging.getLogger(__name__)


class Namespace(TreeOps, FileOps, ContentOps):
    """A cloudfs namespace stored in one SQLite file. Synchronous; use from one thread.

    Every method is one transaction (or one consistent read) and raises a subclass of
    ``errors.NamespaceError`` (having changed nothing) when the operation is refused.
    Names and xattr names/values are bytes; times are integer nanoseconds.
    """

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        clock: Callable[[], int] = time.time_ns,
    ) -> Namespace:
        """Open the namespace in ``path`` (``":memory:"``: a new private in-memory one).

        ``create``: create the file and schema if the file is missing or empty. Raises
        errors.NotAFilesystem for a missing file (without ``create``), a non-SQLite file,
        a database of something else, or a schema version this code does not know.
        ``clock`` gives "now" for every time stamp (tests inject a fake one).
        """
        namespace = cls(connect(path, create=create, clock=clock), clock)
        if os.fspath(path) != ":memory:":
            namespace._mount_lock = MountLock(Path(path))
        return namespace

    _mount_lock: MountLock | None = None

    def register_mount(self, info: MountInfo) -> None:
        """Register the mount of this process (call once, before serving).

        SQLite allows one mount per namespace: an exclusive lock on the database's `-mount`
        file, released by the kernel when this process ends however it ends, or by
        ``close()``. MountBusy (naming the holder) if another process holds it. An in-memory
        namespace has no other process: nothing to register."""
        if self._mount_lock is not None:
            self._mount_lock.acquire(info)

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
        with self._snapshot() as c:
            return run_checks(c, include_orphans=include_orphans)
