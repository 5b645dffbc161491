"""mounts.py - the mounts of a filesystem: registration, liveness, holds and write leases.

Several hosts may mount one PostgreSQL namespace; an SQLite namespace has one mount (the
exclusive lock of local.py). What mounts share lives in three tables (schema.py): ``mount``
(one row per mount, with a heartbeat), ``mount_open`` (holds: the files a mount has open) and
``mount_writer`` (write leases: the one mount writing a file).

Liveness. A mount refreshes its heartbeat every ``Liveness.heartbeat_s`` (a tenth of the meta
'mount_timeout', default 30 s). It is dead once its heartbeat is older than the timeout (a hung
or partitioned host), or, on PostgreSQL, once its database session ended (the session advisory
lock ``(MOUNT_LOCK_CLASS, id)``, held by the mount's listening connection, is gone: a crash or
a SIGKILL) and its heartbeat is CRASH_HEARTBEATS heartbeats old (the grace lets a connection
that broke come back). Heartbeats and "now" are the database server's clock, so the hosts'
clocks need not agree. Whoever notices a dead mount deletes its row (``reap_mounts``, or
``take_writer`` for a lease it wants): its holds and write leases go with it, and the orphans
no live mount holds are deleted.

Holds and orphans. A mount holds every file it has open (``hold_open`` at the first open, or
``create(hold_for=...)`` in the create's own transaction; ``release_open`` at the last close,
or ``release_holds`` for a batch, cloudfs/holds.py), so an unlink or a rename on another host
never deletes a file still open here: ``drop_if_orphan`` (files.py) and ``purge_orphans``
delete an orphan only when no mount holds it.

Write leases. A mount takes a file's lease at the first write of a session and releases it at
the commit or abort; another mount's ``take_writer`` gets the holder back (EBUSY at the mount).
The lease gives the one-writer rule its errno; what keeps a closed write from being lost is
the compare-and-swap on the version of every content commit (``set_content``).

SQLite records neither holds nor leases (its one mount keeps them in memory, and
``purge_orphans`` at mount start is exact): those methods return at once there.

Concurrency (PostgreSQL, READ COMMITTED with row locks, see core.py): a hold and a lease lock
their inode's row FOR KEY SHARE before inserting, and ``drop_if_orphan`` and the purge lock an
orphan's row FOR UPDATE before testing for holds, so of a hold and a delete of the same inode
one waits for the other and sees what it did.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import errors
from .core import Core, check_count
from .database import Database, Retry
from .local import MountInfo
from .types import ROOT_INODE

log = logging.getLogger(__name__)

#: First key of a mount's session advisory lock ``pg_advisory_lock(MOUNT_LOCK_CLASS, id)``
#: ('clfs'); the second is the mount id.
MOUNT_LOCK_CLASS = 0x636C6673
#: Meta key: seconds after which a mount whose heartbeat stopped is dead.
META_MOUNT_TIMEOUT = "mount_timeout"
DEFAULT_MOUNT_TIMEOUT_S = 30.0
#: Heartbeats per timeout: a mount is declared dead after this many missed heartbeats.
HEARTBEATS_PER_TIMEOUT = 10
#: Missed heartbeats after which a mount whose database session ended is dead (PostgreSQL).
CRASH_HEARTBEATS = 3

_MOUNT_COLUMNS = "id, host, pid, mountpoint, started_ns, heartbeat_ns"


def _among(db: Database, column: str, values: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
    """A condition "``column`` is one of ``values``" and its parameters. PostgreSQL: one
    array parameter, so that the statement's text is the same for any number of values and
    is prepared once; SQLite: one placeholder per value (the batches are short)."""
    if db.dialect.is_postgres:
        return f"{column} = ANY(?)", (list(values),)
    return f"{column} IN ({', '.join('?' * len(values))})", tuple(values)


@dataclass(frozen=True, slots=True)
class MountRecord:
    """One registered mount, and whether it is alive now (see the module docstring)."""

    id: int
    host: str
    pid: int
    mountpoint: str
    started_ns: int
    heartbeat_ns: int
    alive: bool

    def describe(self) -> str:
        since = datetime.datetime.fromtimestamp(self.started_ns / 1e9, datetime.UTC)
        return (f"mount {self.id}: pid {self.pid} on host {self.host} at {self.mountpoint} "
                f"since {since:%Y-%m-%d %H:%M:%S} UTC")


@dataclass(frozen=True, slots=True)
class Liveness:
    """The timing of heartbeats and of declaring a mount dead, from the meta
    'mount_timeout'."""

    timeout_s: float

    @property
    def heartbeat_s(self) -> float:
        """Seconds between two heartbeats of a mount."""
        return self.timeout_s / HEARTBEATS_PER_TIMEOUT

    @property
    def params(self) -> dict[str, int]:
        """The parameters of the ``_dead`` condition."""
        return {"timeout": int(self.timeout_s * 1e9),
                "crash": int(CRASH_HEARTBEATS * self.heartbeat_s * 1e9)}


class MountOps(Core):
    """Mount registration, liveness, holds and write leases; mixed into Namespace."""

    _liveness: Liveness | None = None

    @property
    def shared(self) -> bool:
        """Whether several mounts may serve this namespace at once (PostgreSQL)."""
        return self._db.dialect.is_postgres

    @property
    def session_id(self) -> int | None:
        """The database session of this namespace's connection (changes notified by it carry
        it; see listen.py), or None (SQLite)."""
        return self._db.session_id

    def liveness(self) -> Liveness:
        """The timing of heartbeats (meta 'mount_timeout', read once per connection, and
        again by ``reload_liveness``)."""
        if self._liveness is None:
            text = self.get_meta(META_MOUNT_TIMEOUT)
            try:
                timeout = DEFAULT_MOUNT_TIMEOUT_S if text is None else float(text)
            except ValueError:
                timeout = 0.0
            if not timeout > 0:
                log.warning("meta %s is %r, not a positive number of seconds: using %.0f",
                            META_MOUNT_TIMEOUT, text, DEFAULT_MOUNT_TIMEOUT_S)
                timeout = DEFAULT_MOUNT_TIMEOUT_S
            self._liveness = Liveness(timeout)
        return self._liveness

    def _dead(self, row: str) -> str:
        """SQL condition: the mount row ``row`` (a table name or alias) is dead; it takes the
        named parameters of ``Liveness.params``."""
        now = self._db.dialect.now_ns
        stale = f"{row}.heartbeat_ns < {now} - :timeout"
        if not self.shared:
            return f"({stale})"
        session_gone = (
            "NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            f" AND l.classid = {MOUNT_LOCK_CLASS} AND l.objid = CAST({row}.id AS oid)"
            " AND l.objsubid = 2)"
        )
        return f"({stale} OR ({row}.heartbeat_ns < {now} - :crash AND {session_gone}))"

    def _record(self, row: Any) -> MountRecord:
        mount_id, host, pid, mountpoint, started_ns, heartbeat_ns, alive = row
        return MountRecord(mount_id, host, pid, mountpoint, started_ns, heartbeat_ns,
                           bool(alive))

    # -- registration and liveness ------------------------------------------------------

    def _register(self, info: MountInfo) -> int:
        """Insert this mount's row (Namespace.register_mount takes SQLite's lock first)."""
        now = self._db.dialect.now_ns

        def work(c: Database) -> Callable[[], Any]:
            if not self.shared:
                # The -mount lock is ours: any other row is left by a process that died.
                c.execute("DELETE FROM mount")
            return c.fetch_later(c.execute(
                "INSERT INTO mount (host, pid, mountpoint, started_ns, heartbeat_ns)"
                f" VALUES (?, ?, ?, {now}, {now}) RETURNING id",
                (info.host, info.pid, info.mountpoint),
            ))

        mount_id = int(self._write(work)()[0])
        log.info("registered as mount %d", mount_id)
        return mount_id

    def mount_heartbeat(self, mount_id: int) -> bool:
        """Refresh the mount's heartbeat; False if its row is gone (it was declared dead: its
        holds and leases were released; register again)."""
        check_count("mount id", mount_id, minimum=1)
        now = self._db.dialect.now_ns

        def work(c: Database) -> Callable[[], Any]:
            return c.fetch_later(c.execute(
                f"UPDATE mount SET heartbeat_ns = {now} WHERE id = ? RETURNING id", (mount_id,)
            ))

        # Not synced: a heartbeat lost in a crash of the database is the next one's to redo.
        return self._write(work, durable=False)() is not None

    def unregister_mount(self, mount_id: int) -> int:
        """A clean unmount: delete the mount's row (its holds and leases with it), then the
        orphans no live mount holds; how many orphans were deleted."""
        check_count("mount id", mount_id, minimum=1)

        def work(c: Database) -> int:
            c.execute("DELETE FROM mount WHERE id = ?", (mount_id,))
            return self._purge_unheld(c)

        return self._write(work)

    def mounts(self) -> list[MountRecord]:
        """Every registered mount (live, or dead and not yet reaped), in registration order."""
        rows = self._db.execute(
            f"SELECT {_MOUNT_COLUMNS}, NOT {self._dead('mount')} FROM mount ORDER BY id",
            self.liveness().params,
        ).fetchall()
        return [self._record(row) for row in rows]

    def mount_usage(self) -> tuple[int, dict[int, tuple[int, int]]]:
        """The database's clock (ns, the heartbeats' clock) and what each mount holds, by
        mount id: (files it has open, write leases it holds); none on SQLite, whose one
        mount records neither (its status counts its own)."""
        now = int(self._db.execute(f"SELECT {self._db.dialect.now_ns}").fetchone()[0])
        if not self.shared:
            return now, {}
        rows = self._db.execute(
            "SELECT m.id, (SELECT count(*) FROM mount_open h WHERE h.mount = m.id),"
            " (SELECT count(*) FROM mount_writer w WHERE w.mount = m.id) FROM mount m"
        ).fetchall()
        return now, {int(m): (int(holds), int(leases)) for m, holds, leases in rows}

    def reload_liveness(self) -> Liveness:
        """Read the meta 'mount_timeout' again (a mount does at each heartbeat, so that
        `cloudfs tune --mount-timeout` reaches the running mounts)."""
        self._liveness = None
        return self.liveness()

    def reap_mounts(self) -> tuple[list[MountRecord], int]:
        """Delete the rows of dead mounts (releasing their holds and write leases), then the
        orphans no live mount holds. The reaped mounts and the number of orphans deleted."""

        def work(c: Database) -> tuple[list[MountRecord], int]:
            rows = c.execute(
                f"DELETE FROM mount WHERE {self._dead('mount')} RETURNING {_MOUNT_COLUMNS}, 0",
                self.liveness().params,
            ).fetchall()
            return [self._record(row) for row in rows], self._purge_unheld(c)

        reaped, purged = self._write(work)
        for mount in reaped:
            log.info("released the holds and write leases of dead %s", mount.describe())
        if purged:
            log.info("deleted %d unlinked files no live mount has open", purged)
        return reaped, purged

    def purge_orphans(self) -> int:
        """Delete every orphan no mount holds open (SQLite: every orphan; at its one mount's
        start nothing has them open); how many."""

        def work(c: Database) -> int:
            return self._purge_unheld(c)

        count = self._write(work)
        if count:
            log.info("purged %d orphan inodes", count)
        return count

    def _purge_unheld(self, c: Database) -> int:
        """Delete every orphan no mount holds (inside the caller's transaction)."""
        if not self.shared:
            cur = c.execute("DELETE FROM inode WHERE nlink = 0 AND id != ?", (ROOT_INODE,))
            return cur.rowcount
        # Lock the orphans first: a hold being taken (FOR KEY SHARE) is waited for, and the
        # DELETE, a new statement, sees it (READ COMMITTED). Later holds find the row gone.
        ids = [row[0] for row in c.execute(
            "SELECT id FROM inode WHERE nlink = 0 AND id != ? ORDER BY id FOR UPDATE",
            (ROOT_INODE,),
        ).fetchall()]
        if not ids:
            return 0
        rows = c.execute(
            "DELETE FROM inode WHERE id = ANY(?) AND nlink = 0 AND NOT EXISTS"
            " (SELECT 1 FROM mount_open h WHERE h.inode = inode.id) RETURNING id",
            (ids,),
        ).fetchall()
        return len(rows)

    # -- holds --------------------------------------------------------------------------

    def hold_open(self, mount_id: int, inode: int) -> None:
        """Record that mount ``mount_id`` has ``inode`` open (idempotent). NotFound if the
        inode is gone; MountLost if the mount's row is gone (it was declared dead)."""
        if not self.shared:
            return
        check_count("mount id", mount_id, minimum=1)

        def work(c: Database) -> tuple[Callable[[], Any], Callable[[], Any]]:
            # Three statements, one round trip with the COMMIT (results read after it).
            found = c.fetch_later(c.execute(
                "SELECT 1 FROM inode WHERE id = ? FOR KEY SHARE", (inode,)))
            registered = c.fetch_later(c.execute(
                "SELECT 1 FROM mount WHERE id = ? FOR KEY SHARE", (mount_id,)))
            c.execute(
                "INSERT INTO mount_open (inode, mount) SELECT i.id, m.id FROM inode i, mount m"
                " WHERE i.id = ? AND m.id = ? ON CONFLICT DO NOTHING", (inode, mount_id))
            return found, registered

        # Not synced: a hold lost in a crash of the database server is re-taken by the mount
        # when it registers again (every mount's session ends with the server).
        found, registered = self._write(work, durable=False)
        if found() is None:
            raise errors.NotFound(f"inode {inode}")
        if registered() is None:
            raise errors.MountLost(f"mount {mount_id}")

    def release_open(self, mount_id: int, inode: int) -> None:
        """Mount ``mount_id`` closed its last descriptor of ``inode``."""
        if not self.shared:
            return
        self._write(lambda c: c.execute(
            "DELETE FROM mount_open WHERE inode = ? AND mount = ?", (inode, mount_id)),
            durable=False)

    def release_holds(self, mount_id: int | None, release: Sequence[int],
                      drop: Sequence[int]) -> list[int]:
        """One transaction for a batch of a mount's housekeeping (cloudfs/holds.py): release
        its holds of the inodes ``release`` (it closed them), then delete those of ``drop``
        that are orphans no mount holds (``drop_if_orphan``, several at once); the ids
        deleted. Not synced, as ``release_open`` and ``drop_if_orphan``."""
        released = sorted(set(release)) if mount_id is not None else []
        if released:
            check_count("mount id", mount_id, minimum=1)
        dropped = sorted(set(drop) - {ROOT_INODE})

        def work(c: Database) -> Callable[[], list[Any]]:
            if released and self.shared:
                among, params = _among(c, "inode", released)
                c.execute(f"DELETE FROM mount_open WHERE mount = ? AND {among}",
                          (mount_id, *params))
            if not dropped:
                return list
            # As drop_if_orphan: the orphans' rows locked first (a hold being taken is
            # waited for), then the DELETE, a new statement, sees every hold.
            among, params = _among(c, "id", dropped)
            c.execute(f"SELECT 1 FROM inode WHERE {among} AND nlink = 0"
                      f" ORDER BY id{c.dialect.for_update}", params)
            rows = c.execute(
                f"DELETE FROM inode WHERE {among} AND nlink = 0 AND NOT EXISTS"
                " (SELECT 1 FROM mount_open h WHERE h.inode = inode.id) RETURNING id", params)
            if c.dialect.is_postgres:
                return rows.fetchall  # received with the COMMIT: one round trip in all
            got = rows.fetchall()  # SQLite cannot commit with a statement unfinished
            return lambda: got

        if not released and not dropped:
            return []
        return [row[0] for row in self._write(work, durable=False)()]

    def holds(self) -> list[tuple[int, int]]:
        """Every hold, as (mount id, inode), ordered."""
        rows = self._db.execute("SELECT mount, inode FROM mount_open ORDER BY mount, inode")
        return [(m, i) for m, i in rows.fetchall()]

    # -- write leases -------------------------------------------------------------------

    def take_writer(self, mount_id: int, inode: int) -> MountRecord | None:
        """Become the one writer of ``inode``: None when the lease is this mount's (taken now,
        or already), else the live mount that holds it. A lease held by a dead mount is taken
        over (the dead mount's row is deleted: all its leases and holds go). NotFound if the
        inode is gone; MountLost if this mount's row is gone."""
        if not self.shared:
            return None
        check_count("mount id", mount_id, minimum=1)
        now = self._db.dialect.now_ns
        insert = (f"INSERT INTO mount_writer (inode, mount, since_ns) SELECT i.id, m.id, {now}"
                  " FROM inode i, mount m WHERE i.id = :inode AND m.id = :mount"
                  " ON CONFLICT (inode) DO NOTHING RETURNING mount")
        args = {"inode": inode, "mount": mount_id, **self.liveness().params}

        def work(c: Database) -> MountRecord | None:
            c.execute("SELECT 1 FROM inode WHERE id = ? FOR KEY SHARE", (inode,))
            if c.execute(insert, args).fetchone() is not None:
                return None
            row = c.execute(
                f"SELECT m.id, m.host, m.pid, m.mountpoint, m.started_ns, m.heartbeat_ns,"
                f" NOT {self._dead('m')} FROM mount_writer w JOIN mount m ON m.id = w.mount"
                " WHERE w.inode = :inode", args,
            ).fetchone()
            if row is None:  # no lease, yet none inserted: the inode or our row is gone
                if c.execute("SELECT 1 FROM inode WHERE id = ?", (inode,)).fetchone() is None:
                    raise errors.NotFound(f"inode {inode}")
                if c.execute("SELECT 1 FROM mount WHERE id = ?", (mount_id,)).fetchone() is None:
                    raise errors.MountLost(f"mount {mount_id}")
                raise Retry("the lease was released meanwhile")
            holder = self._record(row)
            if holder.id == mount_id:
                return None
            if holder.alive:
                return holder
            log.info("inode %d: taking over the write lease of dead %s", inode,
                     holder.describe())
            c.execute("DELETE FROM mount WHERE id = ?", (holder.id,))
            self._purge_unheld(c)  # as a reap: the orphans only the dead mount held go too
            if c.execute(insert, args).fetchone() is None:
                raise Retry("another mount took the lease meanwhile")
            return None

        return self._write(work, durable=False)

    def release_writer(self, mount_id: int, inode: int) -> None:
        """Mount ``mount_id`` committed or aborted its write of ``inode``."""
        if not self.shared:
            return
        self._write(lambda c: c.execute(
            "DELETE FROM mount_writer WHERE inode = ? AND mount = ?", (inode, mount_id)),
            durable=False)

    def writer_of(self, inode: int) -> MountRecord | None:
        """The mount holding ``inode``'s write lease (alive or not), or None."""
        if not self.shared:
            return None
        row = self._db.execute(
            f"SELECT m.id, m.host, m.pid, m.mountpoint, m.started_ns, m.heartbeat_ns,"
            f" NOT {self._dead('m')} FROM mount_writer w JOIN mount m ON m.id = w.mount"
            " WHERE w.inode = :inode", {"inode": inode, **self.liveness().params},
        ).fetchone()
        return None if row is None else self._record(row)
