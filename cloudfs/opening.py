# Methods of Files kept in their own module: `self` is the whole Files (mypy's "misc" check
# wants an explicit self type to be a supertype of the mixin, which Files is not).
# mypy: disable-error-code="misc"
"""Opening files (a part of `cloudfs.files.Files`): new handles, the holds of open files on a
shared namespace, and what the mount shows of a file (its committed version, a pending
write-back version, the size a write in progress shows)."""

from __future__ import annotations

import contextlib
import errno
import os
from typing import TYPE_CHECKING

from cloudfs.errors import FsError
from cloudfs.session import Committing, Journaling, Streaming
from sqlfsn import Attr, Piece
from sqlfsn.errors import NotFound

if TYPE_CHECKING:
    from cloudfs.files import Files


class Opening:
    """Files' open path (mixed into Files; methods take the whole Files as self)."""

    def check_may_write(self: Files) -> None:
        """EROFS once the mount is stopping: it takes no new writes."""
        if self.stopping:
            raise FsError(errno.EROFS, "the mount is stopping: no new files are opened for "
                          "writing")

    def open(self: Files, inode: int, flags: int, attr: Attr | None = None, *,
             held: bool = False) -> int:
        """A new handle of `inode` (its attributes `attr`, if just read or made; `held`: this
        mount's hold of it was taken with its creation)."""
        attr = attr or self.ns.getattr(inode)
        writable = (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
        if writable:
            self.check_may_write()
        truncate = writable and bool(flags & os.O_TRUNC)
        if truncate and inode in self._sessions:
            raise FsError(errno.EBUSY, f"inode {inode} is being written by another handle; "
                          "cloudfs allows one writer per file at a time")
        if (self.mount_id is not None and not held and not self.handles.count(inode)
                and not self.holds.reopened(inode)):  # a release queued: cancelled, held
            self.ns.hold_open(self.mount_id, inode)  # before reading: kept from now on
        version, size, pieces = self._current(inode, attr)
        h = self.handles.add(inode, writable=writable, truncate=truncate, pieces=pieces,
                             size=size, version=version)
        h.append = writable and bool(flags & os.O_APPEND)
        return h.fh

    def hold_all_open(self: Files) -> None:
        """Hold every open file again (this mount registered anew, see shared.py)."""
        if self.mount_id is not None:
            for inode in {h.inode for h in self.handles}:
                with contextlib.suppress(NotFound):  # deleted meanwhile: reads still work
                    self.ns.hold_open(self.mount_id, inode)

    def _current(self: Files, inode: int, attr: Attr | None = None) -> tuple[int, int, list[Piece]]:
        """The version, size and pieces this mount shows of a file: its newest pending version
        in write-back mode, else the committed one (`attr`, if already read)."""
        pending = None if self.writeback is None else self.writeback.view(inode)
        if pending is not None:
            return pending.version, pending.size, pending.pieces
        attr = attr or self.ns.getattr(inode)
        return attr.version, attr.size, self.ns.pieces(inode) if attr.size else []

    def shown(self: Files, inode: int, size: int, mtime_ns: int) -> tuple[int, int]:
        """(size, mtime) as this mount shows them (getattr): a write in progress or a pending
        version over the committed (`size`, `mtime_ns`)."""
        pending = None if self.writeback is None else self.writeback.view(inode)
        if pending is not None:
            size, mtime_ns = pending.size, pending.mtime_ns
        writing = self._writing_size(inode, size)
        return (size if writing is None else writing), mtime_ns

    def inode_of(self: Files, fh: int) -> int | None:
        h = self.handles.find(fh)
        return None if h is None else h.inode

    def open_count(self: Files, inode: int) -> int:
        return self.handles.count(inode)

    @property
    def writing(self: Files) -> bool:
        """Whether any write is in progress or pending (else `shown` is the committed)."""
        return bool(self._sessions) or (self.writeback is not None
                                         and self.writeback.any_pending())

    def _writing_size(self: Files, inode: int, current: int) -> int | None:
        """The size the writer sees while a write is in progress over a file of `current`
        bytes. A pending O_TRUNC shows at close, like the rest of a write."""
        session = self._sessions.get(inode)
        if session is None:
            return None
        size = session.size
        if size is None:
            return None
        if (isinstance(session.state, Journaling | Streaming | Committing)
                and not session.replace_all):
            return max(size, current)  # a write inside the old content
        return size
