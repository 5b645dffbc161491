"""The one errno table (cloudfs/errors.py): every domain error maps to its errno and level."""

from __future__ import annotations

import errno
import logging

import pytest

import seqwrite
import sqlfsn.errors as ns
from cloudfs.errors import ERRNO_TABLE, FsError, errno_of

CASES = [
    (ns.NotFound("x"), errno.ENOENT),
    (ns.Exists("x"), errno.EEXIST),
    (ns.NotEmpty("x"), errno.ENOTEMPTY),
    (ns.NotADirectory("x"), errno.ENOTDIR),
    (ns.IsADirectory("x"), errno.EISDIR),
    (ns.InvalidMove("x"), errno.EINVAL),
    (ns.NameTooLong("x"), errno.ENAMETOOLONG),
    (ns.InvalidName("x"), errno.EINVAL),
    (ns.InvalidArgument("x"), errno.EINVAL),
    (ns.NotPermitted("x"), errno.EPERM),
    (ns.NoSuchAttr("x"), errno.ENODATA),
    (ns.Unsupported("x"), errno.EOPNOTSUPP),
    (ns.Conflict("x"), errno.ESTALE),
    (seqwrite.TooLarge("x"), errno.EFBIG),
    (seqwrite.SpoolError(errno.ENOSPC, "x"), errno.ENOSPC),
    (seqwrite.ObjectNotFound("x"), errno.EIO),
    (seqwrite.StoreUnavailable("x"), errno.EIO),
    (seqwrite.Corrupted("x"), errno.EIO),
    (FsError(errno.EBUSY, "x"), errno.EBUSY),
    (FsError(errno.EROFS, "x"), errno.EROFS),
    (OSError(errno.ENOSPC, "x"), errno.ENOSPC),
]


@pytest.mark.parametrize(("exc", "expected"), CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_each_error_has_its_errno(exc: BaseException, expected: int) -> None:
    err, level = errno_of(exc)
    assert err == expected
    assert level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)


def test_unexpected_errors_are_eio_with_a_traceback() -> None:
    assert errno_of(KeyError("bug")) == (errno.EIO, -1)
    assert errno_of(seqwrite.SpoolError(None, "no errno")) == (errno.EIO, logging.ERROR)


def test_subclasses_come_before_their_bases() -> None:
    """First match wins: no entry may be shadowed by an earlier base class."""
    for i, (cls, _, _) in enumerate(ERRNO_TABLE):
        for earlier, _, _ in ERRNO_TABLE[:i]:
            assert not issubclass(cls, earlier), f"{cls.__name__} shadowed by {earlier.__name__}"


def test_every_namespace_error_is_in_the_table() -> None:
    mapped = {cls for cls, _, _ in ERRNO_TABLE}
    for cls in ns.NamespaceError.__subclasses__():
        if cls in (ns.NotAFilesystem, ns.MountBusy):
            continue  # raised at start-up only, never by a request
        assert cls in mapped, cls.__name__
