"""errors.py - the ways a namespace operation can fail, one class per way.

sqlfsn knows no errno numbers: the FUSE layer maps these classes to errnos in one table.
Every error is raised before anything is changed (the operation's transaction is rolled
back), so a caller never has to repair half-done work. The one exception is said in its
place: ``Unavailable`` when the connection broke during a COMMIT.
"""

from __future__ import annotations


class NamespaceError(Exception):
    """Base class of every error sqlfsn raises on purpose.

    ``str(err)`` is one line: the class's ``reason``, then the detail given by the raiser,
    e.g. ``"not found: b'x' in directory 5"``.
    """

    reason = "namespace error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class NotFound(NamespaceError):
    """No such inode, directory entry, or (as parent) live directory."""

    reason = "not found"


class Exists(NamespaceError):
    """The name (or xattr, or upload lease) exists and the operation needs it absent."""

    reason = "already exists"


class NotEmpty(NamespaceError):
    """A directory to remove or replace still has entries."""

    reason = "directory not empty"


class NotADirectory(NamespaceError):
    """A directory was required (as parent, rmdir or rename target of a directory)."""

    reason = "not a directory"


class IsADirectory(NamespaceError):
    """The operation does not apply to directories (unlink, truncate, rename onto one)."""

    reason = "is a directory"


class InvalidMove(NamespaceError):
    """A rename would move a directory into itself or into its own subtree."""

    reason = "cannot move a directory into itself"


class NameTooLong(NamespaceError):
    """A name is longer than NAME_MAX (255) bytes, or a symlink target than 4095."""

    reason = "name too long"


class InvalidName(NamespaceError):
    """A name is empty, b'.', b'..', or contains b'/' or a NUL byte."""

    reason = "invalid name"


class InvalidArgument(NamespaceError):
    """An argument is malformed or does not fit the inode (e.g. readlink of a file)."""

    reason = "invalid argument"


class NotPermitted(NamespaceError):
    """The operation is never allowed on this kind of inode (hard link to a directory)."""

    reason = "operation not permitted"


class NoSuchAttr(NamespaceError):
    """The extended attribute does not exist."""

    reason = "no such extended attribute"


class Unsupported(NamespaceError):
    """The filesystem does not support this kind of request (e.g. an xattr namespace)."""

    reason = "not supported"


class Conflict(NamespaceError):
    """A compare-and-swap failed: the file's content version is not the expected one."""

    reason = "content version conflict"


class ReadOnly(NamespaceError):
    """The inode lies in a read-only snapshot (clone.py): it may not change."""

    reason = "read-only snapshot"


class MountBusy(NamespaceError):
    """The namespace is mounted by another process; ``holder`` says which (or is None)."""

    reason = "already mounted"

    def __init__(self, detail: str = "", holder: object = None) -> None:
        super().__init__(detail)
        self.holder = holder


class MountLost(NamespaceError):
    """This mount's registration is gone: another mount or ccd declared it dead (no heartbeat
    for the mount timeout) and released its holds and write leases. Register again."""

    reason = "mount registration lost"


class NotAFilesystem(NamespaceError):
    """The database is missing, not a database, not a cloudfs namespace, or of another
    version."""

    reason = "not a cloudfs namespace"


class EmptyDatabase(NotAFilesystem):
    """The database exists but is empty: no namespace yet (open it with create=True)."""


class Unavailable(NamespaceError):
    """The database cannot serve the request: unreachable, connection lost, out of space,
    locked by another process for too long, or still losing races after many retries. The
    operation did not happen, except where the detail says the connection broke during the
    COMMIT (then it may have)."""

    reason = "database unavailable"
