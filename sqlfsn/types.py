"""types.py - the immutable values the namespace API returns and takes, and its constants.

Rows of admin listings (ContentInfo, UploadInfo) are NamedTuples so that they unpack like the
plain tuples they are; everything else is a frozen, slotted dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

#: Inode number of the root directory, created with the schema; it has no directory entry.
ROOT_INODE = 1

#: Longest directory entry (and xattr) name, in bytes (Linux NAME_MAX).
NAME_MAX = 255

#: Longest symlink target, in bytes (Linux PATH_MAX minus the terminating NUL).
TARGET_MAX = 4095


@dataclass(frozen=True, slots=True)
class Attr:
    """The attributes of one inode, as stored in the ``inode`` table.

    ``mode`` is the full st_mode (file type and permission bits). ``version`` is the
    content generation of a regular file: it changes whenever the content or size does.
    """

    inode: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    version: int


@dataclass(frozen=True, slots=True)
class Piece:
    """``length`` bytes of a regular file.

    With a ``hash``: bytes ``[obj_offset, obj_offset + length)`` of the stored content object
    named by that 64-hex blake3 hash. With ``hash=None``: a hole of ``length`` zero bytes
    (``obj_offset`` is then 0).
    """

    hash: str | None
    obj_offset: int
    length: int


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One readdir result. Pass ``next_offset`` to ``readdir`` to continue after it."""

    name: bytes
    attr: Attr
    next_offset: int


#: One entry of a directory listing as a plain row (``Namespace.readdir_rows``): its offset
#: (pass it back to continue after it), its name, then its inode's attributes in Attr's field
#: order without the version (``Attr(*row[2:], version)``): inode, mode, nlink, uid, gid,
#: rdev, size, atime_ns, mtime_ns, ctime_ns.
DirRow = tuple[int, bytes, int, int, int, int, int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Claim:
    """Outcome of ``claim_content``.

    ``ok`` False means the object is being deleted by the garbage collector since
    ``deleting_since_ns``: the writer must not rely on it (upload it again later).
    """

    ok: bool
    deleting_since_ns: int | None


#: The state of a content registry row (see the ``content`` table).
ContentState = Literal["live", "deleting"]


class ContentInfo(NamedTuple):
    """One row of the content registry (see the ``content`` table)."""

    hash: str
    size: int
    state: ContentState
    claimed_ns: int
    deleting_ns: int | None


class UnsettledFile(NamedTuple):
    """A regular file whose content is not one whole stored content (see ``unsettled_files``):
    ccd may *settle* it into one."""

    inode: int
    version: int  # the version these facts are about
    size: int
    ctime_ns: int  # set to now by every version change: "unchanged since"
    pieces: int  # number of pieces (holes included)


class UploadInfo(NamedTuple):
    """One upload lease (see the ``upload`` table)."""

    id: str
    started_ns: int
    heartbeat_ns: int
