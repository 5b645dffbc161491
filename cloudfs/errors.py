"""Errors of cloudfs, and THE table that maps every domain error to an errno.

pyfuse3 answers a request only when the handler returns or raises FUSEError; any other
exception leaves the caller hanging and takes the mount down. So every handler is wrapped by
`fuse_errors` (cloudfs/ops.py), which maps exceptions through `errno_of()`: known domain
errors to their errno, anything unexpected is logged with its traceback and becomes EIO.
"""

from __future__ import annotations

import errno
import logging

import seqwrite
import sqlfsn.errors as ns
from wiring.errors import SetupError

log = logging.getLogger(__name__)


class UsageError(SetupError):
    """A problem the user can fix; printed as one line, no traceback, exit status 2."""


class FsError(Exception):
    """A filesystem-level refusal with its errno, e.g. a second writer (EBUSY).

    The message is logged once at INFO: it tells the user why their operation failed."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


# (exception class, errno, log level). First match wins: subclasses before base classes.
ERRNO_TABLE: tuple[tuple[type[BaseException], int, int], ...] = (
    (ns.NotFound, errno.ENOENT, logging.DEBUG),
    (ns.Exists, errno.EEXIST, logging.DEBUG),
    (ns.NotEmpty, errno.ENOTEMPTY, logging.DEBUG),
    (ns.NotADirectory, errno.ENOTDIR, logging.DEBUG),
    (ns.IsADirectory, errno.EISDIR, logging.DEBUG),
    (ns.InvalidMove, errno.EINVAL, logging.DEBUG),  # a directory into its own subtree
    (ns.NameTooLong, errno.ENAMETOOLONG, logging.DEBUG),
    (ns.InvalidName, errno.EINVAL, logging.DEBUG),
    (ns.InvalidArgument, errno.EINVAL, logging.INFO),
    (ns.NotPermitted, errno.EPERM, logging.DEBUG),  # e.g. a hard link to a directory
    (ns.NoSuchAttr, errno.ENODATA, logging.DEBUG),
    # A change inside a read-only snapshot (`cloudfs snapshot --read-only`).
    (ns.ReadOnly, errno.EROFS, logging.DEBUG),
    # security.* and system.* xattrs: tools probe them on every file and cache this answer.
    (ns.Unsupported, errno.EOPNOTSUPP, logging.DEBUG),
    # Another writer committed a new version first (compare-and-swap lost).
    (ns.Conflict, errno.ESTALE, logging.WARNING),
    (seqwrite.TooLarge, errno.EFBIG, logging.WARNING),
    # The namespace database is unreachable or refused the transaction: the operation failed.
    (ns.Unavailable, errno.EIO, logging.ERROR),
    # This mount was declared dead by another (heartbeats late): it registers again.
    (ns.MountLost, errno.EIO, logging.ERROR),
    # The local spool could not be written (ENOSPC when the cache disk is full).
    (seqwrite.SpoolError, -1, logging.ERROR),
    # Swift unavailable past the retry deadline, refused, or inconsistent: the operation failed.
    (seqwrite.StoreError, errno.EIO, logging.ERROR),
    (FsError, -1, logging.INFO),  # errno carried by the exception
)


def errno_of(exc: BaseException) -> tuple[int, int]:
    """(errno, log level) for an exception; (EIO, -1) means unexpected (log the traceback)."""
    for cls, err, level in ERRNO_TABLE:
        if isinstance(exc, cls):
            if isinstance(exc, FsError | seqwrite.SpoolError):
                return exc.errno or errno.EIO, level
            return err, level
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno, logging.WARNING  # e.g. ENOSPC from the local spool
    return errno.EIO, -1
