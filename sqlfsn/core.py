"""core.py - what every part of the namespace shares: transactions, validation, inode helpers.

Owns: running an operation as one transaction (``_write``, ``_read``) with bounded retries of
lost races, argument validation (names, hashes) and the small inode helpers that tree.py,
files.py and content.py build on. The database itself is database.py (SQLite: sqlite.py,
PostgreSQL: postgres.py).

Concurrency model: one connection per Namespace, used from one thread; any number of
processes (SQLite: on one host; PostgreSQL: on many) may open the same database. Single
SELECTs run in autocommit mode and see the last committed state. Each write is one
transaction of one of two kinds (``Isolation``), chosen per operation and commented there:

* LOCKS, for changes of names and attributes. On PostgreSQL: READ COMMITTED, and before
  deciding anything the transaction locks the inode rows its decision depends on
  (``lock_inodes``): the directories whose entries it reads or changes (parents first, in
  inode order), then an inode whose nlink or emptiness it tests. So two operations on one
  directory queue on its row instead of failing, and each statement after the locks sees what
  the previous holder committed. A rename between two directories first takes the
  filesystem's rename lock (``lock_renames``, as Linux's s_vfs_rename_mutex): only such
  renames change which directory lies below which, so their subtree checks cannot race.
* SERIALIZABLE, for the content registry's fence against the garbage collector and content
  commits: "no file and no recent claim references H" is a fact about rows that do not exist,
  which no row lock can hold; PostgreSQL's serializable isolation detects the conflict with a
  transaction adding such a row, and refuses one of the two.

Both kinds lock an inode's row before changing its content (set_content, settle, truncation),
so the two never wait for each other crosswise on one file. A lost race (a serialization
failure; a deadlock, which needs locks taken in different orders: e.g. two renames after a
third turned a parent into a child) rolls the transaction back and runs it again, up to
MAX_ATTEMPTS times with a short random backoff; then ``errors.Unavailable``. On SQLite every
write is the one ``BEGIN IMMEDIATE`` writer, so none of this can happen there.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import stat
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from . import errors
from .database import ConnectionLost, Database, Isolation, Retry
from .types import NAME_MAX, Attr

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Runs of one transaction before a still-losing race becomes errors.Unavailable. With the
#: backoff below that is about two seconds of trying.
MAX_ATTEMPTS = 30
#: First and largest pause before a transaction is run again, seconds (then random 50-100 %).
RETRY_PAUSE_S = (0.001, 0.1)

#: The columns of ``inode`` that make an Attr, in Attr's field order.
ATTR_COLUMNS = "id, mode, nlink, uid, gid, rdev, size, atime_ns, mtime_ns, ctime_ns, version"

#: A content hash: 64 lowercase hex digits (blake3-256); also the schema's CHECK.
HEX64 = re.compile(r"[0-9a-f]{64}")

# (dentry id, inode, mode) of entry ? in directory ?.
_ENTRY = (
    "SELECT d.id, d.inode, i.mode FROM dentry d JOIN inode i ON i.id = d.inode"
    " WHERE d.parent = ? AND d.name = ?"
)


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
    if not isinstance(value, str) or not HEX64.fullmatch(value):
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


class Core:
    """State and helpers shared by the operation mixins.

    Attributes:
        _db: the database connection (autocommit; writes go through ``_write``).
        _clock: returns the current time in integer nanoseconds.
        commits: how many write transactions this connection committed.
        lazy_commits: how many of them did not wait for the disk (``lazily``, durable=False).
        synced: how many of them (the first ``synced``) are known durable: up to the last
            durable commit or ``sync``.
        syncs: durable barriers made (``sync``, ``note_synced``).
    """

    _db: Database
    _clock: Callable[[], int]

    def __init__(self, db: Database, clock: Callable[[], int]) -> None:
        self._db = db
        self._clock = clock
        self.commits = 0  # write transactions committed by this connection (statistics)
        self.lazy_commits = 0
        self.synced = 0
        self.syncs = 0
        self._lazy = False
        #: The attributes of the directory this connection's last create or unlink changed,
        #: as that transaction left them, and ``commits`` right after it (PostgreSQL only:
        #: the mount answers the kernel's next getattr of it from there, cloudfs/ops.py).
        self.touched_dir: tuple[Attr, int] | None = None

    @property
    def shared(self) -> bool:
        """Whether other mounts may write this namespace (PostgreSQL); an SQLite namespace
        has one mount at a time (its mount lock)."""
        return self._db.dialect.is_postgres

    def close(self) -> None:
        """Close the connection (uncommitted work cannot exist: every write commits)."""
        self._db.close()

    def _write(
        self,
        work: Callable[[Database], T],
        *,
        isolation: Isolation = Isolation.LOCKS,
        durable: bool = True,
    ) -> T:
        """``work(db)`` as one write transaction: COMMIT on return, ROLLBACK on error, run
        again (bounded) if it lost a race or its connection broke before the COMMIT.

        ``durable=False`` commits without waiting for the disk, for housekeeping whose loss in
        a power failure is repaired anyway (e.g. dropping an orphan: purge_orphans at the next
        mount). Its effect becomes durable with the next durable commit of any process (both
        engines write one log, and syncing it syncs every record before): nothing durable can
        depend on it alone. ``work`` must not have effects outside the database: it may run
        more than once."""
        return self._transaction(work, isolation, durable)

    @contextlib.contextmanager
    def lazily(self) -> Iterator[None]:
        """Within: every write commits without waiting for the disk, as ``durable=False``.

        For a caller that issues its own durable barriers (the mount: fsync, close after a
        content commit, a background flush every second): such a commit is visible at once,
        survives the death of the process (SQLite: it is in the WAL file; PostgreSQL: the
        server has it), and becomes durable against an OS crash or power failure with the
        next durable commit of any process or the next ``sync``."""
        previous, self._lazy = self._lazy, True
        try:
            yield
        finally:
            self._lazy = previous

    def log_syncer(self) -> Callable[[], None] | None:
        """A durable barrier that may run in another thread (``Database.log_syncer``); after
        it returns, call ``note_synced`` with ``commits`` as read before it started. None:
        use ``sync``."""
        return self._db.log_syncer()

    def note_synced(self, upto: int) -> None:
        """The first ``upto`` commits are durable (a ``log_syncer`` run has returned)."""
        self.synced = max(self.synced, upto)
        self.syncs += 1

    def sync(self) -> None:
        """A durable barrier: every commit so far of this connection (and every earlier one of
        any process) is durable when this returns. SQLite: the WAL file is synced;
        PostgreSQL: one synchronous commit (it flushes the WAL up to itself)."""
        if self.synced >= self.commits:
            return
        upto = self.commits
        syncer = self._db.log_syncer()
        if syncer is not None:
            syncer()
        else:
            # An id makes the COMMIT write a record, and a synchronous commit waits for the
            # flush of the WAL up to it, every earlier record included.
            lazy, self._lazy = self._lazy, False
            try:
                self._write(lambda db: db.execute("SELECT txid_current()"))
            finally:
                self._lazy = lazy
        self.note_synced(upto)

    def _read(self, work: Callable[[Database], T]) -> T:
        """``work(db)`` in a read transaction: several SELECTs that see one consistent state."""
        return self._transaction(work, Isolation.SNAPSHOT, True)

    def _transaction(self, work: Callable[[Database], T], isolation: Isolation,
                     durable: bool) -> T:
        db = self._db
        durable = durable and not (self._lazy and isolation is not Isolation.SNAPSHOT)
        pause = RETRY_PAUSE_S[0]
        for attempt in range(1, MAX_ATTEMPTS + 1):
            db.begin(isolation, durable=durable)
            try:
                result = work(db)
                db.commit()
                if isolation is not Isolation.SNAPSHOT:
                    self.commits += 1
                    if durable:
                        self.synced = self.commits
                    else:
                        self.lazy_commits += 1
                return result
            except (Retry, ConnectionLost) as exc:
                db.rollback()
                level = logging.DEBUG if attempt < 5 else logging.INFO
                log.log(level, "%s transaction run again (attempt %d): %s",
                        isolation.value, attempt + 1, exc)
                last: Exception = exc
            except BaseException:
                db.rollback()
                raise
            time.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(2 * pause, RETRY_PAUSE_S[1])
        raise errors.Unavailable(
            f"{db.display}: a transaction still conflicted after {MAX_ATTEMPTS} attempts ({last})"
        )

    # -- meta ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """The value of filesystem parameter ``key`` (see the meta table), or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Set filesystem parameter ``key``; 'schema_version' is sqlfsn's own."""
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise errors.InvalidArgument("meta keys and values are non-empty str")
        if key == "schema_version":
            raise errors.InvalidArgument("schema_version is managed by sqlfsn")
        # One statement: nothing to decide, nothing to lock.
        self._write(
            lambda db: db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    # -- inode helpers (call inside a transaction when the answer guides a write) ----------

    def _attr_or_none(self, inode: int, *, lock: bool = False) -> Attr | None:
        """The inode's attributes, or None; ``lock``: also lock its row (``lock_inodes``)
        in the same statement."""
        locking = self._db.dialect.for_update if lock else ""
        row = self._db.execute(
            f"SELECT {ATTR_COLUMNS} FROM inode WHERE id = ?{locking}", (inode,)
        ).fetchone()
        return None if row is None else Attr(*row)

    def _attr(self, inode: int, *, lock: bool = False) -> Attr:
        """The inode's attributes (``lock``: as in _attr_or_none); NotFound if there is no
        such inode."""
        attr = self._attr_or_none(inode, lock=lock)
        if attr is None:
            raise errors.NotFound(f"inode {inode}")
        return attr

    def _dir(self, inode: int, *, live: bool = True, lock: bool = False) -> Attr:
        """The attributes of directory ``inode`` (``lock``: as in _attr_or_none).

        NotFound if it does not exist (or, with ``live``, was removed: nlink 0, so no new
        entries may appear in it); NotADirectory if it is something else.
        """
        return self._as_dir(inode, self._attr_or_none(inode, lock=lock), live=live)

    @staticmethod
    def _as_dir(inode: int, attr: Attr | None, *, live: bool) -> Attr:
        """``attr`` (of ``inode``) if it is a directory; the errors of ``_dir``."""
        if attr is None or (live and attr.nlink == 0 and stat.S_ISDIR(attr.mode)):
            raise errors.NotFound(f"directory {inode}")
        if not stat.S_ISDIR(attr.mode):
            raise errors.NotADirectory(f"inode {inode}")
        return attr

    def _entry(self, parent: int, name: bytes) -> tuple[int, int, int] | None:
        """(dentry id, inode, mode) of entry ``name`` in ``parent``, or None."""
        return self._db.execute(_ENTRY, (parent, name)).fetchone()  # type: ignore[no-any-return]

    def _dir_entry(self, parent: int, name: bytes, *, live: bool) -> tuple[int, int, int] | None:
        """Lock directory ``parent`` and check it (as ``_dir``), then its entry ``name`` (as
        ``_entry``). The two statements are sent together (PostgreSQL: one round trip): the
        server runs them in order, so the entry is read once the lock is held, and sees what
        the lock's previous holder committed."""
        db = self._db
        locked = db.execute(
            f"SELECT {ATTR_COLUMNS} FROM inode WHERE id = ?{db.dialect.for_update}", (parent,)
        )
        entry = db.execute(_ENTRY, (parent, name))
        row = locked.fetchone()
        self._as_dir(parent, None if row is None else Attr(*row), live=live)
        return entry.fetchone()  # type: ignore[no-any-return]

    def _link_delta(self, inode: int, delta: int, now: int) -> Callable[[], Attr]:
        """Add ``delta`` to the inode's nlink (a name added or removed), ctime = now; the
        new attributes, to be read after the COMMIT (``fetch_later``)."""
        row = self._db.fetch_later(self._db.execute(
            "UPDATE inode SET nlink = nlink + ?, ctime_ns = ? WHERE id = ?"
            f" RETURNING {ATTR_COLUMNS}",
            (delta, now, inode),
        ))
        return lambda: Attr(*row())

    def _touch_dir(self, inode: int, now: int, nlink_delta: int = 0) -> None:
        """A directory's entries changed: set its mtime and ctime, adjust its nlink."""
        self._db.execute(
            "UPDATE inode SET mtime_ns = ?, ctime_ns = ?, nlink = nlink + ? WHERE id = ?",
            (now, now, nlink_delta, inode),
        )

    def _touch_dir_returning(self, inode: int, now: int, nlink_delta: int = 0
                             ) -> Callable[[], Attr | None]:
        """As ``_touch_dir``; the directory's new attributes, to be read after the COMMIT
        (PostgreSQL: received with it), or None where they are not kept (SQLite)."""
        if not self.shared:
            self._touch_dir(inode, now, nlink_delta)
            return lambda: None
        row = self._db.fetch_later(self._db.execute(
            "UPDATE inode SET mtime_ns = ?, ctime_ns = ?, nlink = nlink + ? WHERE id = ?"
            f" RETURNING {ATTR_COLUMNS}", (now, now, nlink_delta, inode)))
        return lambda: Attr(*row())

    def _touch_dirs(self, first: int, second: int, now: int, moved: int) -> None:
        """Two directories' entries changed (one statement): mtime and ctime of both = now;
        ``moved`` subdirectories went from ``first`` to ``second`` (their nlinks follow)."""
        if first == second:
            self._touch_dir(first, now)
            return
        self._db.execute(
            "UPDATE inode SET mtime_ns = ?, ctime_ns = ?,"
            " nlink = nlink + CASE WHEN id = ? THEN ? ELSE ? END WHERE id IN (?, ?)",
            (now, now, first, -moved, moved, first, second),
        )
