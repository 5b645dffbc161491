"""What pyfuse3 logs that is not an error of ours.

The kernel sends RELEASE (and RELEASEDIR) without waiting for its answer, and forgets the
requests still pending when the filesystem is unmounted. A release that was still being
served then (a file closed just before `umount`: on PostgreSQL its hold is dropped in a
transaction) is served in full, but libfuse cannot deliver the reply, and pyfuse3 logs
"fuse_release(): fuse_reply_* failed with No such file or directory" as an ERROR. Nothing was
lost and nobody waited for the answer, so that one line is a DEBUG line here.
"""

from __future__ import annotations

import logging

_UNDELIVERED = frozenset({
    "fuse_release(): fuse_reply_* failed with %s",
    "fuse_releasedir(): fuse_reply_* failed with %s",
})
_GONE = "No such file or directory"  # strerror(ENOENT): the kernel no longer has the request


class UndeliveredReleases(logging.Filter):
    """Downgrades pyfuse3's report of a release reply the kernel stopped waiting for."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _UNDELIVERED and record.args == (_GONE,):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg += " (the kernel stopped waiting for it: unmounted meanwhile)"
        return True


def install() -> None:
    """Put the filter on pyfuse3's logger (once)."""
    logger = logging.getLogger("pyfuse3")
    if not any(isinstance(f, UndeliveredReleases) for f in logger.filters):
        logger.addFilter(UndeliveredReleases())
