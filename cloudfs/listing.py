"""Directory listings for the kernel's readdir: rows fetched ahead and kept between requests.

The kernel lists a directory in READDIRPLUS requests of up to 1 MiB (about 6,000 entries with
their attributes), and between two requests it does its own part of the work: it makes an
inode and a dentry of every entry of the reply, in the listing program's process, on the
other core. A listing of an open directory (`Listing`) is kept per directory handle:

- rows come from the namespace in batches that grow (a small directory costs one small
  query, a big one few queries per request), and the rows a reply had no room for are kept
  for the next request instead of being fetched again;
- after each reply the rows the next request will want are fetched in the background
  (`prefetch`), while the kernel digests the reply: the daemon's part of a big listing
  overlaps with the kernel's instead of adding to it;
- kept rows are served only while fresh: for at most HOLD seconds, and only while this mount
  changed nothing in the namespace (its commit counter); otherwise the request's rows are
  fetched again from its offset. A reply's attributes are never older than HOLD more than
  those of a reply built on the spot; nothing this mount changed is ever served stale.

Offsets are the namespace's (dentry ids): a request at any offset the kernel was given is
answered from that offset, whether or not rows are kept for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlfsn import DirRow, Namespace

FIRST_BATCH = 256  # rows of a listing's first query: most directories are smaller
MAX_BATCH = 8192  # rows of one query at most (a 1 MiB reply holds ~6,000 entries)
HOLD = 0.5  # seconds kept rows may be served after they were fetched


class Listing:
    """One open directory's listing: its rows after the offset the next request starts from.

    Attributes:
        inode: the directory.
        last_sent: entries the last request took (the next one will want about as many).
    """

    def __init__(self, ns: Namespace, inode: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ns = ns
        self.inode = inode
        self.last_sent = 0
        self._clock = clock
        self._rows: list[DirRow] = []  # kept rows: _rows[_pos:] follow offset _after
        self._pos = 0
        self._after = -1  # the offset the kept rows follow (-1: nothing kept)
        self._end = False  # the directory has no rows after the kept ones
        self._fetched_at = 0.0  # when the oldest kept row was fetched
        self._commits = -1  # the namespace's commit counter then
        self._batch = FIRST_BATCH

    def rows(self, offset: int) -> list[DirRow]:
        """Rows after `offset`, in offset order: the kept ones if they follow it and are
        fresh, else one query. Empty at the end of the directory. NotFound, NotADirectory."""
        if offset != self._after or not self._fresh():
            self._forget(offset)
        if self._pos == len(self._rows):
            if self._end:
                return []
            self._fetch(self._batch)
            self._batch = min(2 * self._batch, MAX_BATCH)
        return self._rows[self._pos:]

    def consumed(self, n: int) -> None:
        """The first `n` rows of the last `rows()` were sent: the listing goes on after them."""
        if n:
            self._pos += n
            self._after = self._rows[self._pos - 1][0]

    def kept(self) -> int:
        return len(self._rows) - self._pos

    def wants_prefetch(self) -> bool:
        """Whether the next request (at the offset the last reply ended) will want rows that
        are not kept yet."""
        return not self._end and self.last_sent > self.kept() and self._after >= 0

    def prefetch(self) -> None:
        """Fetch what the next request will want (about `last_sent` rows) and keep it.
        Meant to run right after a reply, while the kernel digests it."""
        if self.wants_prefetch() and self._fresh():
            self._fetch(min(max(self.last_sent - self.kept(), FIRST_BATCH), MAX_BATCH))

    def _fresh(self) -> bool:
        return (self._commits == self.ns.commits
                and self._clock() - self._fetched_at <= HOLD)

    def _forget(self, offset: int) -> None:
        self._rows = []
        self._pos = 0
        self._after = offset
        self._end = False

    def _fetch(self, limit: int) -> None:
        """Add up to `limit` rows after the last kept one."""
        if self._pos == len(self._rows):  # nothing kept: start afresh (and so the clock)
            self._rows, self._pos = [], 0
            self._fetched_at = self._clock()
            self._commits = self.ns.commits
        after = self._rows[-1][0] if self._rows else self._after
        rows = self.ns.readdir_rows(self.inode, after, limit)
        self._end = len(rows) < limit
        self._rows = self._rows[self._pos:] + rows if self._rows else rows
        self._pos = 0
