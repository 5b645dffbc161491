"""Directory listings for the kernel's readdir: entries prepared ahead and kept between requests.

The kernel lists a directory in READDIRPLUS requests of up to 1 MiB (about 6,000 entries with
their attributes), one at a time, and between two requests it does its own part of the work:
it makes an inode and a dentry of every entry of the reply, in the listing program's process,
on the other core, and the program (`ls -l`) then stats each entry. A listing of an open
directory (`Listing`) is kept per directory handle so that the daemon's part runs while the
kernel does its own, instead of adding to it:

- rows come from the namespace in batches and are *prepared* at once (`prepare`: the mount
  makes each entry's pyfuse3.EntryAttributes), so a request only copies prepared entries into
  its reply (`take`), and the rows a reply had no room for are kept for the next request;
- after each reply, the entries the next request will want are fetched and prepared
  (`prefetch`), while the kernel digests the reply. A request is answered with what is kept
  (a reply shorter than the kernel's buffer is a valid reply; the kernel asks again); only
  when nothing is kept does a request fetch, one batch. The first batches are small and grow
  (a small directory costs one small query, a big one starts replying at once);
- kept entries are served only while fresh: for at most HOLD seconds, and only while this
  mount changed nothing in the namespace (its commit counter); otherwise the request's rows
  are fetched again from its offset. A reply's attributes are never older than HOLD more than
  those of a reply built on the spot; nothing this mount changed is ever served stale.

Offsets are the namespace's (dentry ids): a request at any offset the kernel was given is
answered from that offset, whether or not entries are kept for it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

from sqlfsn import DirRow, Namespace

FIRST_BATCH = 256  # rows of a listing's first query: most directories are smaller
MAX_BATCH = 8192  # rows of one query at most (a 1 MiB reply holds ~6,000 entries)
GROWTH = 4  # while no reply was full yet, fetch this many times the last reply's entries
MARGIN = 1.25  # fetch ahead this much more than the last full reply held (names vary)
HOLD = 0.5  # seconds kept entries may be served after they were fetched
_OFFSET, _NAME, _INODE = itemgetter(0), itemgetter(1), itemgetter(2)  # of a DirRow


class Entries(NamedTuple):
    """Entries of a listing after an offset, in offset order, as parallel lists (a reply
    passes them to C-level loops: no Python code per entry)."""

    offsets: list[int]  # each entry's offset (the next request after it starts there)
    names: list[bytes]
    items: list[Any]  # what `prepare` made of each row
    inodes: list[int]
    rows: list[DirRow]


def _same(rows: list[DirRow]) -> Sequence[Any]:
    return rows


class Listing:
    """One open directory's listing: its entries after the offset the next request starts
    from.

    Attributes:
        inode: the directory.
        room: entries the last full reply held (0 until a reply was full): about what the
            next request will want.
        last_sent: entries the last reply carried.
    """

    def __init__(self, ns: Namespace, inode: int,
                 prepare: Callable[[list[DirRow]], Sequence[Any]] = _same, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ns = ns
        self.inode = inode
        self.room = 0
        self.last_sent = 0
        self._prepare = prepare
        self._clock = clock
        self._kept = Entries([], [], [], [], [])  # kept[_pos:] follow offset _after
        self._pos = 0
        self._after = -1  # the offset the kept entries follow (-1: nothing kept)
        self._end = False  # the directory has no rows after the kept ones
        self._fetched_at = 0.0  # when the oldest kept entry was fetched
        self._commits = -1  # the namespace's commit counter then
        self._batch = FIRST_BATCH  # the next query's rows when nothing is kept

    def take(self, offset: int) -> Entries:
        """Entries after `offset`, in offset order: the kept ones if they follow it and are
        fresh, else one query. Empty at the end of the directory. NotFound, NotADirectory.
        The lists may be the listing's own: read them, do not change them."""
        if offset != self._after or not self._fresh():
            self._forget(offset)
        if not self.kept() and not self._end:
            self._fetch(self._batch)
            self._batch = min(GROWTH * self._batch, MAX_BATCH)
        p = self._pos
        k = self._kept
        if p == 0:
            return k
        return Entries(k.offsets[p:], k.names[p:], k.items[p:], k.inodes[p:], k.rows[p:])

    def consumed(self, n: int) -> None:
        """The first `n` entries of the last `take()` were sent: the listing goes on after
        them."""
        if n:
            self._pos += n
            self._after = self._kept.offsets[self._pos - 1]

    def kept(self) -> int:
        return len(self._kept.offsets) - self._pos

    def _want(self) -> int:
        """Entries the next request will probably take."""
        if self.room:
            return int(self.room * MARGIN) + 1
        return min(GROWTH * self.last_sent, MAX_BATCH)

    def wants_prefetch(self) -> bool:
        """Whether the next request (at the offset the last reply ended) will want entries
        that are not kept yet, or kept ones that may have gone stale by then."""
        return (not self._end and self._after >= 0
                and (self._want() > self.kept() or self._aging()))

    def prefetch(self) -> None:
        """Fetch and prepare what the next request will want, and keep it. Meant to run right
        after a reply, while the kernel digests it. Kept entries that would go stale before
        the next request is likely to come (older than HOLD / 2) are fetched again."""
        if not self.wants_prefetch():
            return
        if self._aging() or not self._fresh():
            self._forget(self._after)
        self._fetch(min(max(self._want() - self.kept(), FIRST_BATCH), MAX_BATCH))

    def _aging(self) -> bool:
        return self.kept() > 0 and self._clock() - self._fetched_at > HOLD / 2

    def _fresh(self) -> bool:
        return (self._commits == self.ns.commits
                and self._clock() - self._fetched_at <= HOLD)

    def _forget(self, offset: int) -> None:
        self._kept = Entries([], [], [], [], [])
        self._pos = 0
        self._after = offset
        self._end = False

    def _fetch(self, limit: int) -> None:
        """Add up to `limit` entries after the last kept one."""
        k, p = self._kept, self._pos
        if not self.kept():  # nothing kept: start afresh (and so the clock)
            self._fetched_at = self._clock()
            self._commits = self.ns.commits
        after = k.offsets[-1] if self.kept() else self._after
        # The rows and what is made of them are many objects that live until the reply:
        # no garbage collection while they are made (it would walk them, in vain, every
        # ~700 allocations).
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            rows = self.ns.readdir_rows(self.inode, after, limit)
            new = Entries(list(map(_OFFSET, rows)), list(map(_NAME, rows)),
                          list(self._prepare(rows)), list(map(_INODE, rows)), rows)
        finally:
            if gc_was_on:
                gc.enable()
        self._end = len(rows) < limit
        if self.kept():
            new = Entries(k.offsets[p:] + new.offsets, k.names[p:] + new.names,
                          k.items[p:] + new.items, k.inodes[p:] + new.inodes,
                          k.rows[p:] + new.rows)
        self._kept, self._pos = new, 0
