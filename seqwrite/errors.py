"""Typed errors of the Swift layer and the writer.

Every failure that leaves seqwrite is one of these, so the FUSE layer can map it to an errno
in one table and the user gets one clear line. `str()` of each names the cause (and Swift's
transaction id where there is one: it is what Swift operators ask for).
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class: a Swift operation failed."""


class StoreUnavailable(StoreError):
    """Swift kept failing transiently (5xx, timeouts, dropped connections) until the deadline."""


class ObjectNotFound(StoreError):
    """The object or container does not exist in Swift (404). Not sqlfsn's NotFound (a name
    or inode missing from the namespace, ENOENT): a missing object is a damaged file (EIO)."""


class AlreadyExists(StoreError):
    """A conditional PUT (If-None-Match: *) found the object already stored (412)."""


class Rejected(StoreError):
    """Swift refused the request for a reason retrying cannot fix (4xx other than 404/412)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthFailed(StoreError):
    """Authentication failed (bad credentials or auth URL)."""


class CertificateError(AuthFailed):
    """The server's TLS certificate is not trusted (wrong or missing CA file). Not retried."""


class Corrupted(StoreError):
    """Swift holds bytes that are not what they should be: an ETag mismatch after a PUT, or
    a stored manifest that does not parse."""


class TooLarge(StoreError):
    """The content needs more than Swift's limits allow (segments per manifest, object size)."""


class WriterAborted(StoreError):
    """The write was aborted; nothing was published."""


class SpoolError(StoreError):
    """The local spool (the copy of a segment in flight) could not be written, e.g. the disk
    is full. Not retried: the write fails with the spool's errno."""

    def __init__(self, err: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = err
