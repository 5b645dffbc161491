"""The holds of a shared mount's open files, released in batches (PostgreSQL).

A mount on a shared namespace holds every file it has open (sqlfsn/mounts.py), so that an
unlink on another host never deletes a file still open here. Taking a hold must be done
before the open returns (the create takes it in its own transaction: `Namespace.create`'s
`hold_for`); releasing one, and dropping an orphan the kernel forgot, need not be: they are
queued here and sent together, one transaction per batch (`flush`), at most FLUSH_INTERVAL
seconds later (`flush_every`) or as soon as BATCH are queued. A file opened again before its
release was sent keeps its hold: the release is cancelled (`reopened`), no transaction at all.

Why a late or lost release is safe (invariant 3: an error means "keep"): a hold only ever
*keeps* an orphan (nlink 0) from being deleted. A release sent late keeps such an orphan a
little longer; a release never sent (the mount died with it queued, or PostgreSQL lost it)
is done by whoever deletes the mount's row: the clean unmount (`unregister_mount`), or the
reaper of a dead mount (`reap_mounts`, after the mount timeout), both of which then delete the
orphans no live mount holds. A drop lost the same way leaves an orphan that the same purges
(and the next mount's `purge_orphans`) delete. The garbage collector's fence is untouched:
an orphan's content stays referenced while its row exists, so GC keeps it until the drop.
The dangerous direction, a hold missing while the file is open, cannot arise from this
module: holds are taken synchronously, and a queued release is cancelled, not sent, when
its file is opened again (the event loop runs one handler at a time, and a flush snapshots
and sends its batch without yielding in between).

On SQLite (one mount, no holds recorded) nothing is queued: drops are done at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from sqlfsn import Namespace
from sqlfsn.errors import NamespaceError

log = logging.getLogger(__name__)

#: Seconds a queued release or drop waits at most before its batch is sent.
FLUSH_INTERVAL = 0.2
#: Queued releases plus drops that make a batch be sent at once.
BATCH = 256


class Holds:
    """Releases of holds and drops of orphans queued by one mount, sent in batches."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.mount_id: int | None = None
        #: Called at a flush for each queued drop: whether it may still be dropped (the
        #: kernel forgot it and nothing has it open); set by the FUSE layer.
        self.droppable: Callable[[int], bool] = lambda inode: True
        self._releasing: set[int] = set()
        self._dropping: set[int] = set()
        self.batches = 0  # transactions sent (statistics, tests)

    @property
    def deferred(self) -> bool:
        """Whether releases and drops are queued (a shared namespace) or done at once."""
        return self.ns.shared

    def release(self, inode: int) -> None:
        """This mount closed its last descriptor of `inode`: release the hold (queued)."""
        if self.mount_id is None or not self.deferred:
            return  # SQLite records no holds
        self._releasing.add(inode)
        self._maybe_flush()

    def reopened(self, inode: int) -> bool:
        """`inode` is opened again: True if its hold still stands (its release was queued,
        not sent, and is now cancelled), else the caller takes a hold."""
        if inode in self._releasing:
            self._releasing.discard(inode)
            return True
        return False

    def drop(self, inode: int) -> None:
        """Delete `inode` if it is an orphan no mount holds (queued on a shared namespace)."""
        if not self.deferred:
            self.ns.drop_if_orphan(inode)
            return
        self._dropping.add(inode)
        self._maybe_flush()

    def forget_releases(self) -> None:
        """This mount registered again: its old row went with every hold, queued releases
        included (the open files are held anew)."""
        self._releasing.clear()

    @property
    def queued(self) -> int:
        return len(self._releasing) + len(self._dropping)

    def _maybe_flush(self) -> None:
        if self.queued >= BATCH:
            try:
                self.flush()
            except NamespaceError as exc:  # kept queued: the next flush sends them
                log.warning("releasing holds failed (kept for the next try): %s", exc)

    def flush(self) -> None:
        """Send every queued release and drop, in one transaction. On error they stay
        queued (sent again by the next flush)."""
        if not self.queued:
            return
        release = sorted(self._releasing) if self.mount_id is not None else []
        drop = sorted(i for i in self._dropping if self.droppable(i))
        self.ns.release_holds(self.mount_id, release, drop)
        self._releasing.difference_update(release)
        self._dropping.clear()
        self.batches += 1

    async def flush_every(self, interval: float = FLUSH_INTERVAL) -> None:
        """Background: queued releases and drops are sent within `interval` seconds."""
        while True:
            await trio.sleep(interval)
            try:
                self.flush()
            except NamespaceError as exc:
                log.warning("releasing holds failed (kept for the next try): %s", exc)
