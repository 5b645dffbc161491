"""listen.py - what the other mounts of a PostgreSQL namespace changed, and this mount's
session lock.

Every change of an inode row or of a name is announced on ``schema.CHANGES_CHANNEL`` when its
transaction commits (the triggers in schema.py). A mount reads them on a connection of its own,
``Listener``, from a thread of its own (sqlfsn stays synchronous: ``wait`` blocks), and holds
on that connection its session advisory lock ``(mounts.MOUNT_LOCK_CLASS, mount id)``: when the
mount's process dies, its sessions end and the lock with them, which tells the other mounts at
once (see mounts.py).

Notifications are delivered in commit order, after the commit, to every session listening at
that moment. A connection that broke and was replaced missed what was sent meanwhile: the
first ``wait`` after a reconnection says so (``Changes.resync``), and the mount must assume
that anything changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg

from . import errors
from .database import describe
from .mounts import MOUNT_LOCK_CLASS
from .postgres import conninfo, one_line
from .schema import CHANGES_CHANNEL

log = logging.getLogger(__name__)

_KINDS: dict[str, Literal["attr", "content", "entry"]] = {
    "a": "attr", "c": "content", "e": "entry"}


@dataclass(frozen=True, slots=True)
class Change:
    """One change committed by some session.

    ``attr``: inode ``inode``'s attributes changed (or it was deleted); ``content``: its content
    changed (a new version); ``entry``: the name ``name`` of directory ``inode`` was removed or
    renamed away. ``sender``: the committing session (``Namespace.session_id``)."""

    kind: Literal["attr", "content", "entry"]
    inode: int
    name: bytes | None
    sender: int


@dataclass(slots=True)
class Changes:
    """What one ``wait`` returned: the changes in commit order, and whether some may have been
    missed (``resync``: the connection was replaced, assume that anything changed)."""

    changes: list[Change] = field(default_factory=list)
    resync: bool = False


def parse(payload: str, sender: int) -> Change | None:
    """The Change a payload of the triggers announces, or None if it is malformed."""
    parts = payload.split(" ")
    kind = _KINDS.get(parts[0])
    try:
        if kind == "entry" and len(parts) == 3:
            return Change(kind, int(parts[1]), bytes.fromhex(parts[2]), sender)
        if kind is not None and len(parts) == 2:
            return Change(kind, int(parts[1]), None, sender)
    except ValueError:
        pass
    log.warning("ignoring a malformed change notification %r", payload)
    return None


class Listener:
    """The change notifications of one PostgreSQL namespace, and a mount's session lock.

    Use from one thread. The connection is opened by the first ``wait`` and replaced by a later
    one when it broke; a failure to connect or a lost connection is ``errors.Unavailable``
    (call ``wait`` again later).
    """

    def __init__(self, spec: str) -> None:
        self.display = describe(spec)
        self._conninfo = conninfo(spec)
        self._conn: psycopg.Connection[Any] | None = None
        self._mount_id: int | None = None
        self._locked = False
        self._connected_before = False

    def lock_mount(self, mount_id: int) -> None:
        """Hold mount ``mount_id``'s session lock from the next ``wait`` on (and again after
        every reconnection), instead of any other mount id's."""
        if mount_id != self._mount_id and self._locked and self._conn is not None:
            self._unlock()
        self._mount_id = mount_id
        self._locked = False

    def wait(self, timeout: float) -> Changes:
        """The changes committed since the last call, waiting up to ``timeout`` seconds for
        the first one."""
        resync = False
        if self._conn is None or self._conn.broken or self._conn.closed:
            self._connect()
            resync = self._connected_before
            self._connected_before = True
        conn = self._conn
        assert conn is not None
        try:
            if not self._locked and self._mount_id is not None:
                self._lock()
            notifies = list(conn.notifies(timeout=timeout, stop_after=1))
            notifies += conn.notifies(timeout=0)
        except psycopg.Error as exc:
            self._drop()
            raise errors.Unavailable(f"{self.display}: listening: {one_line(exc)}") from None
        out = Changes(resync=resync)
        for n in notifies:
            change = parse(n.payload, n.pid)
            if change is not None:
                out.changes.append(change)
        return out

    def close(self) -> None:
        self._drop()

    def _connect(self) -> None:
        self._drop()
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
            conn.execute(f"LISTEN {CHANGES_CHANNEL}")
        except psycopg.Error as exc:
            raise errors.Unavailable(
                f"{self.display}: cannot listen for changes ({one_line(exc)})") from None
        self._conn = conn
        self._locked = False

    def _lock(self) -> None:
        assert self._conn is not None and self._mount_id is not None
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s::int, %s::int)",
                                 (MOUNT_LOCK_CLASS, self._mount_id)).fetchone()
        self._locked = bool(row and row[0])
        if not self._locked:  # an old session of ours that the server has not noticed gone
            log.info("mount %d: session lock still held elsewhere; trying again",
                     self._mount_id)

    def _unlock(self) -> None:
        assert self._conn is not None
        try:
            self._conn.execute("SELECT pg_advisory_unlock(%s::int, %s::int)",
                               (MOUNT_LOCK_CLASS, self._mount_id))
        except psycopg.Error:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._locked = False
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass
