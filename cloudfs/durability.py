"""When the mount's namespace changes become durable: lazy commits, shared barriers.

The model (docs/SEMANTICS.md, "Durability"), as ext4's: name and attribute changes (create,
mkdir, chmod, chown, utimes, rename, unlink, xattrs...) commit without waiting for the disk
(`Namespace.lazily`); a content commit at close, fsync(2) of a file or a directory and
`cloudfs sync` return only after a durable barrier (`Barrier.wait`) that covers everything this
mount committed before; and a background flush (`Barrier.flush_every`) makes every commit
durable within FLUSH_INTERVAL seconds. A commit is visible at once and survives the death of
the daemon (SIGKILL); only an OS crash or a power failure (or, on PostgreSQL, the server's) can
lose the changes of the last FLUSH_INTERVAL seconds that no barrier covered yet.

Group commit: a barrier on SQLite is an fdatasync of the WAL file in a worker thread, so the
event loop serves other requests meanwhile, and every commit made before it started is covered:
the writers that ask while it runs share the next one. On PostgreSQL the barrier is one
synchronous commit on the mount's connection (it flushes the WAL up to itself).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import trio

from sqlfsn import Namespace

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds within which a lazy commit becomes durable without any barrier asked for.
FLUSH_INTERVAL = 1.0


class Barrier:
    """Durable barriers of one mount's namespace connection, shared by concurrent waiters."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self._syncer = ns.log_syncer()
        self._running: trio.Event | None = None

    @property
    def beside_loop(self) -> bool:
        """Whether a barrier runs beside the event loop (SQLite: an fdatasync in a thread);
        else it is a synchronous commit on the loop (PostgreSQL), no cheaper than a durable
        commit."""
        return self._syncer is not None

    async def wait(self) -> None:
        """Until every commit this mount made before the call is durable."""
        target = self.ns.commits
        while self.ns.synced < target:
            if self._running is not None:
                await self._running.wait()  # it may have started before our commit: loop
                continue
            self._running = done = trio.Event()
            try:
                if self._syncer is None:
                    self.ns.sync()
                else:
                    upto = self.ns.commits
                    await trio.to_thread.run_sync(self._syncer)
                    self.ns.note_synced(upto)
            finally:
                self._running = None
                done.set()

    async def durably(self, change: Callable[[], T]) -> T:
        """`change()` (namespace calls), durable when this returns: committed lazily, then a
        shared barrier where one can run beside the loop (SQLite); else committed durably
        (PostgreSQL: one synchronous commit, as the barrier would be)."""
        if self._syncer is None:
            return change()
        with self.ns.lazily():
            result = change()
        await self.wait()
        return result

    async def flush_every(self, interval: float = FLUSH_INTERVAL) -> None:
        """Background: whatever was committed lazily is durable within `interval` seconds."""
        while True:
            await trio.sleep(interval)
            if self.ns.synced < self.ns.commits:
                try:
                    await self.wait()
                except Exception as exc:  # the next barrier (or close, fsync) reports it
                    log.warning("background flush of the namespace failed: %s", exc)
