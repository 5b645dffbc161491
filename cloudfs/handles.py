"""The open-file table: one `Handle` per open file description (FUSE file handle).

A handle knows which version of the file it reads (the pieces and size at open, or after a
commit of this mount), whether it may write, whether an O_TRUNC is still pending, and its
sticky error: once a write or commit through a handle failed, every later flush and fsync of
it fails too (a `dup`'d descriptor never reports a silent success after a failure).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import trio

from cloudfs.errors import FsError
from cloudfs.reader import FileReader
from sqlfsn import Piece

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Handle:
    """One open file description.

    Attributes:
        fh: the FUSE file handle.
        inode: the file.
        writable: opened for writing (O_WRONLY or O_RDWR).
        pending_truncate: opened with O_TRUNC and not written yet: the content is emptied at
            this handle's close (a write session carries the truncation once one starts).
        pieces, size: the version this handle reads.
        open_version: the file's version at open or at this handle's last commit (a pending
            O_TRUNC applies to that version only).
        pending_mtime_ns: a modification time set while the O_TRUNC is pending (kept by it).
        reader: the block-cached reader of `pieces`, made by the first read.
        error: why an earlier write or commit failed (sticky), or None.
        append: opened with O_APPEND: every write goes at the end of the file as the
            namespace knows it, whatever offset the kernel computed from its cached size
            (another mount may have appended since).
    """

    fh: int
    inode: int
    writable: bool
    pending_truncate: bool
    pieces: list[Piece] = field(default_factory=list)
    size: int = 0
    open_version: int = 0
    pending_mtime_ns: int | None = None
    reader: FileReader | None = None
    error: str | None = None
    append: bool = False

    def check_error(self) -> None:
        """EIO if an earlier write or commit through this handle failed."""
        if self.error is not None:
            raise FsError(errno.EIO, f"inode {self.inode}: an earlier write failed "
                          f"({self.error}); nothing after it was stored")

    def show(self, pieces: list[Piece], size: int) -> None:
        """Read `pieces` from now on (a new version this mount committed)."""
        self.pieces, self.size = pieces, size
        if self.reader is not None:
            self.reader.close()
            self.reader = None


class HandleTable:
    """The handles of this mount, with a count of those open for writing (a stop waits for
    them to close)."""

    def __init__(self) -> None:
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._writable = 0
        self._no_writers = trio.Event()
        self._no_writers.set()

    def __len__(self) -> int:
        return len(self._handles)

    def add(self, inode: int, *, writable: bool, truncate: bool, pieces: list[Piece],
            size: int, version: int) -> Handle:
        h = Handle(self._next_fh, inode, writable, truncate, pieces, size, version)
        self._next_fh += 1
        self._handles[h.fh] = h
        if writable:
            self._writable += 1
            self._no_writers = trio.Event()
        return h

    def get(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise FsError(errno.EBADF, f"unknown file handle {fh}") from None

    def find(self, fh: int) -> Handle | None:
        return self._handles.get(fh)

    def remove(self, fh: int) -> Handle | None:
        h = self._handles.pop(fh, None)
        if h is not None:
            if h.reader is not None:
                h.reader.close()
            if h.writable:
                self._writable -= 1
                if not self._writable:
                    self._no_writers.set()
        return h

    def of_inode(self, inode: int) -> Iterator[Handle]:
        return (h for h in list(self._handles.values()) if h.inode == inode)

    def count(self, inode: int) -> int:
        return sum(1 for _ in self.of_inode(inode))

    @property
    def writable(self) -> int:
        """How many handles are open for writing."""
        return self._writable

    async def wait_no_writers(self) -> None:
        """Until no handle is open for writing."""
        while self._writable:
            await self._no_writers.wait()

    def __iter__(self) -> Iterator[Handle]:
        return iter(list(self._handles.values()))
