"""The attributes the kernel is given: pyfuse3.EntryAttributes made from the namespace's.

One place for what every answer carries (the kernel's cache timeouts, the block size) and for
the two ways of making them: `fill` (a lookup's, getattr's, an entry shown as its writer sees
it) and `prepared` (a listing's batch of rows, made ahead of the request; see
cloudfs/listing.py), which must agree field for field
(tests/unit/test_listing.py::test_prepared_attributes_are_those_a_lookup_answers).
"""

from __future__ import annotations

import stat
from typing import Protocol

import pyfuse3

from cloudfs.listing import Entries
from sqlfsn import DirRow

BLKSIZE = 1 << 20  # st_blksize: cp and cat size their buffers from it (1 MiB requests)
ATTR_TIMEOUT = 1.0  # seconds the kernel may cache attributes and entries


class Shown(Protocol):
    """What a listing needs of cloudfs.files.Files."""

    def shown(self, inode: int, size: int, mtime_ns: int) -> tuple[int, int]: ...


def fill(e: pyfuse3.EntryAttributes, inode: int, mode: int, nlink: int, uid: int, gid: int,
         rdev: int, size: int, atime_ns: int, mtime_ns: int, ctime_ns: int) -> None:
    """Set every attribute of `e` (a lookup's, getattr's or a readdir entry's)."""
    e.st_ino = inode
    e.generation = 0
    e.entry_timeout = ATTR_TIMEOUT
    e.attr_timeout = ATTR_TIMEOUT
    e.st_mode = mode
    e.st_nlink = nlink
    e.st_uid = uid
    e.st_gid = gid
    e.st_rdev = rdev
    e.st_size = size
    e.st_blksize = BLKSIZE
    e.st_blocks = (size + 511) // 512
    e.st_atime_ns = atime_ns
    e.st_mtime_ns = mtime_ns
    e.st_ctime_ns = ctime_ns


def prepared(rows: list[DirRow]) -> list[pyfuse3.EntryAttributes]:
    """Each row's attributes as a listing's reply carries them (the committed size and mtime;
    see shown_items): one new EntryAttributes per entry, as `fill` makes it, except that the
    fields a new one has zeroed (generation, rdev, size, blocks) are set only when not zero.
    The loop is the listing's largest cost after the query: it runs ahead of the request."""
    out: list[pyfuse3.EntryAttributes] = []
    append = out.append
    new = pyfuse3.EntryAttributes
    for _, _, inode, mode, nlink, uid, gid, rdev, size, atime_ns, mtime_ns, ctime_ns in rows:
        e = new()
        e.st_ino = inode
        e.entry_timeout = ATTR_TIMEOUT
        e.attr_timeout = ATTR_TIMEOUT
        e.st_mode = mode
        e.st_nlink = nlink
        e.st_uid = uid
        e.st_gid = gid
        if rdev:
            e.st_rdev = rdev
        if size:
            e.st_size = size
            e.st_blocks = (size + 511) // 512
        e.st_blksize = BLKSIZE
        e.st_atime_ns = atime_ns
        e.st_mtime_ns = mtime_ns
        e.st_ctime_ns = ctime_ns
        append(e)
    return out


def shown_items(got: Entries, files: Shown) -> list[pyfuse3.EntryAttributes]:
    """got.items, where a file being written (or with a pending version) shows the size and
    mtime its writer sees (a new EntryAttributes: the kept ones stay as committed)."""
    items = list(got.items)  # the listing's own: a copy
    for i, (_, _, inode, mode, nlink, uid, gid, rdev, size, atime_ns, mtime_ns,
            ctime_ns) in enumerate(got.rows):
        if stat.S_ISREG(mode):
            shown_size, shown_mtime_ns = files.shown(inode, size, mtime_ns)
            if (shown_size, shown_mtime_ns) != (size, mtime_ns):
                items[i] = e = pyfuse3.EntryAttributes()
                fill(e, inode, mode, nlink, uid, gid, rdev, shown_size, atime_ns,
                     shown_mtime_ns, ctime_ns)
    return items
