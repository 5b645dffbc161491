"""The attributes of the directory this mount changed last, for the kernel's next getattr.

A create or an unlink changes its directory's mtime, ctime (and a mkdir its nlink); the
kernel drops the directory's cached attributes, and, checking permissions itself
(default_permissions), asks for them again before the next create or unlink in that
directory: one GETATTR per file, one more round trip to PostgreSQL each. The transaction
that changed the directory already returned its new attributes (`Namespace.touched_dir`);
`KnownDir.get` answers that GETATTR from them instead.

They are exactly what the database holds as long as nothing else changed the directory,
which is checked, not assumed: the answer is given only while this mount's connection has
committed nothing since (`Namespace.commits`: any other change made through this mount, a
clone included, ends it), while no change notification of another mount or process has
been heard since (`heard`, counted by the change listener, cloudfs/shared.py), and for at
most ATTR_TIMEOUT seconds, the time the kernel itself may keep attributes without asking
(the bound docs/SEMANTICS.md gives for changes made elsewhere). A notification that is late
is late for the kernel's own cache alike: the bound is the same.

Only on a shared namespace (PostgreSQL): on SQLite a getattr costs no round trip.
"""

from __future__ import annotations

import time

from cloudfs.attrs import ATTR_TIMEOUT
from sqlfsn import Attr, Namespace

#: Change notifications of other sessions heard by this process's listener (one mount per
#: process: pyfuse3 is a process-wide singleton). Written by the listener thread only.
heard = [0]


class KnownDir:
    """The last directory this mount's own create or unlink changed (one slot)."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self._slot: tuple[Attr, int, int, float] | None = None
        self.hits = 0

    def note(self) -> None:
        """Right after a create or unlink: keep what it left of its directory."""
        touched = self.ns.touched_dir
        if touched is None:
            self._slot = None
            return
        attr, commits = touched
        self._slot = (attr, commits, heard[0], time.monotonic())

    def get(self, inode: int) -> Attr | None:
        """`inode`'s attributes if they are known to be the database's (see above)."""
        slot = self._slot
        if slot is None:
            return None
        attr, commits, seen, since = slot
        if (attr.inode != inode or commits != self.ns.commits or seen != heard[0]
                or time.monotonic() - since >= ATTR_TIMEOUT):
            return None
        self.hits += 1
        return attr
