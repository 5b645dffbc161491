"""pyfuse3's report of an undelivered release reply is a DEBUG line; other errors stay."""

from __future__ import annotations

import logging

import pytest

from cloudfs import fuselog


def emitted(msg: str, *args: object) -> list[logging.LogRecord]:
    fuselog.install()
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep(level=logging.INFO)
    logger = logging.getLogger("pyfuse3")
    logger.addHandler(handler)
    try:
        logger.error(msg, *args)
    finally:
        logger.removeHandler(handler)
    return [r for r in seen if r.levelno >= handler.level]


def test_a_release_reply_after_unmount_is_not_an_error() -> None:
    assert emitted("fuse_release(): fuse_reply_* failed with %s",
                   "No such file or directory") == []


@pytest.mark.parametrize("msg, args", [
    ("fuse_release(): fuse_reply_* failed with %s", ("Invalid argument",)),
    ("fuse_read(): fuse_reply_* failed with %s", ("No such file or directory",)),
])
def test_other_reply_failures_stay_errors(msg: str, args: tuple[str]) -> None:
    records = emitted(msg, *args)
    assert len(records) == 1 and records[0].levelno == logging.ERROR
