"""The read-only snapshots' guard: which FUSE requests would change a read-only tree.

A read-only snapshot is marked by its root inode (sqlfsn/clone.py: a meta row), and an inode
is read-only when it or one of its ancestors is such a root. The FUSE layer asks the guard
before every change (cloudfs/ops.py) and answers EROFS (sqlfsn.errors.ReadOnly, through
cloudfs/errors.py). The mount keeps the set of roots in memory: loaded at the start, added to
by the snapshots it makes itself and less those it releases (cloudfs/clones.py; one mount
per namespace). With no
read-only snapshot the guard costs nothing; with some, one query walking up the names of the
inode in question.

Refused: every change of a read-only inode (attributes, xattrs, opening for writing, new
names of it) and of the entries of a read-only directory (create, mkdir, mknod, symlink, link
into, unlink, rmdir, rename from or into it), and renaming or removing a snapshot's root
itself. Nothing can thus leave or enter a read-only tree, so its extent never changes.
ccd (settle, consolidation) is not the FUSE layer: it keeps working on snapshot files, as it
changes no byte of them.
"""

from __future__ import annotations

import logging
import os

from sqlfsn import Namespace
from sqlfsn.errors import NotFound, ReadOnly

log = logging.getLogger(__name__)


class ReadOnlyGuard:
    """Refuses changes inside read-only snapshots (raises sqlfsn.errors.ReadOnly)."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.roots = ns.read_only_roots()

    def add(self, root: int) -> None:
        """A read-only snapshot was made at ``root``."""
        self.roots = self.roots | {root}

    def remove(self, root: int) -> None:
        """The read-only snapshot at ``root`` was made writable again."""
        self.roots = self.roots - {root}

    def inodes(self, *inodes: int) -> None:
        """Refuse if any of these inodes is read-only."""
        if not self.roots:
            return
        for inode in inodes:
            if self.ns.in_read_only(inode, self.roots):
                raise ReadOnly(f"inode {inode}")

    def entry(self, parent: int, name: bytes) -> None:
        """Refuse a change of entry ``name`` of ``parent``: the directory is read-only, or
        the entry is a snapshot's root (renamed, removed, replaced)."""
        if not self.roots:
            return
        self.inodes(parent)
        try:
            inode = self.ns.lookup(parent, name).inode
        except NotFound:
            return
        if inode in self.roots:
            raise ReadOnly(f"{name!r} in directory {parent} is a read-only snapshot")

    def open(self, inode: int, flags: int) -> None:
        """Refuse opening a read-only file for writing (or with O_TRUNC)."""
        if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
            self.inodes(inode)
