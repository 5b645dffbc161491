"""The local disk a process writes to: one budget for the spool and the write cache.

Two things use the local disk (`cache_dir`): the spool, a copy of each segment in flight kept
to replay it after a transient failure (seqwrite/segment.py), and the mount's write cache of
files written at random offsets (cloudfs/rwcache.py). `LocalSpace` counts both against one
limit (`cache_size`) and against the disk itself: a reservation succeeds only if the disk
keeps at least `reserve` bytes free afterwards (statvfs at the time of asking), so cloudfs
never fills the disk, whoever else uses it.

A write cache must always be committable: committing streams its bytes through a Writer,
whose spool needs room too. So cache reservations leave `headroom` bytes of the budget to
spools, and a Writer whose spool cannot grow ends its segment early (a shorter segment,
uploaded and freed) instead of failing: the spool of one Writer then needs a chunk, not a
whole segment. Only when not even that is free, and no upload frees any, does a write fail
with ENOSPC.

All calls come from the trio thread.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

import trio

log = logging.getLogger(__name__)

#: The least free space kept on the disk: min(RESERVE, RESERVE_SHARE of the disk's size).
RESERVE = 1 << 30
RESERVE_SHARE = 0.1
#: The least a spool takes at once (or what is left of the segment): a Writer whose spool
#: cannot get this much ends its segment early.
MIN_SPOOL_CHUNK = 1 << 20


class Pending(Protocol):
    """Something that counted bytes it writes to the disk later."""

    def unwritten(self) -> int: ...


class LocalSpace:
    """Bytes this process may still put on the local disk under `directory`.

    Attributes:
        limit: most bytes counted at once (`cache_size`).
        used: bytes counted now (spools and caches).
        reserve: bytes the disk keeps free whatever the limit.
        headroom: bytes cache reservations leave to the spools of commits.
    """

    def __init__(self, directory: str, limit: int, *, reserve: int | None = None,
                 headroom: int | None = None) -> None:
        self.directory = directory
        self.limit = limit
        self.used = 0
        if headroom is None:  # room for a few spool chunks, a small share of a small budget
            headroom = max(MIN_SPOOL_CHUNK, min(16 * MIN_SPOOL_CHUNK, limit // 8))
        self.headroom = headroom
        if reserve is None:
            st = os.statvfs(directory)
            reserve = min(RESERVE, int(st.f_blocks * st.f_frsize * RESERVE_SHARE))
        self.reserve = reserve
        self._freed = trio.Event()
        self._writers: set[Pending] = set()

    def track(self, writer: Pending) -> None:
        """Count what `writer` took but has not yet written to the disk (a spool is written
        by a helper thread a little after its bytes are counted) until `untrack`."""
        self._writers.add(writer)

    def untrack(self, writer: Pending) -> None:
        self._writers.discard(writer)

    def free_on_disk(self) -> int:
        """Bytes the disk can still take before reaching the reserve, once the bytes counted
        but not yet written are.

        The bytes not yet written are summed before the disk is asked: a spool write that
        lands in between is then counted twice (once too cautious), never missed (the
        other order let three writers overfill a small disk)."""
        unwritten = sum(w.unwritten() for w in self._writers)
        st = os.statvfs(self.directory)
        return st.f_bavail * st.f_frsize - self.reserve - unwritten

    def available(self, *, keep: int = 0) -> int:
        """Bytes a reservation could take now, leaving `keep` bytes unused (of the budget, or
        of the disk if that is what binds)."""
        return max(0, min(self.limit - self.used, self.free_on_disk()) - keep)

    def try_take(self, n: int, *, keep: int = 0) -> bool:
        """Count `n` more bytes if they fit (leaving `keep` of the budget); whether they did."""
        if n > self.available(keep=keep):
            return False
        self.used += n
        return True

    def take_up_to(self, n: int, *, least: int) -> int:
        """Count as many of `n` bytes as fit, if at least `least` do; how many (0: none)."""
        got = min(n, self.available())
        if got < least:
            return 0
        self.used += got
        return got

    def give(self, n: int) -> None:
        """`n` counted bytes are gone from the disk."""
        if n:
            self.used = max(0, self.used - n)
            self._freed.set()
            self._freed = trio.Event()

    async def wait_freed(self) -> None:
        """Until some counted bytes are given back."""
        await self._freed.wait()

    def describe(self) -> str:
        return (f"{self.used} of {self.limit} bytes used, {max(0, self.free_on_disk())} free "
                f"on {self.directory} above its reserve of {self.reserve}")
