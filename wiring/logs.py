"""Where the daemons' log lines go, and how they look: one event per line, no secrets.

- Under systemd (`$JOURNAL_STREAM` names our stderr): lines go to stderr without a time stamp
  (the journal adds its own) and with a syslog priority prefix (`<4>` for a warning), which
  the journal turns into the entry's priority (`journalctl -p warning` works).
- Otherwise (a terminal, a test, a file): each line starts with a UTC time stamp.
- A mount started in the background from a shell logs to `<cache_dir>/mount.log`, rotated at
  LOG_FILE_BYTES (LOG_FILE_COPIES old copies kept), so it never grows without bound.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path

LOG_FILE_BYTES = 10 << 20
LOG_FILE_COPIES = 3
PLAIN = "%(levelname)s %(name)s: %(message)s"
TIMED = "%(asctime)s " + PLAIN

# syslog priorities (sd-daemon(3): "<N>" prefixes on stderr lines)
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


class _UtcFormatter(logging.Formatter):
    """Time stamps like 2026-11-30T06:30:13.123Z."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def _utc_formatter() -> logging.Formatter:
    return _UtcFormatter(TIMED)


def under_journal() -> bool:
    """Whether stderr is connected to the systemd journal."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream or ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    dev, _, ino = stream.partition(":")
    return f"{st.st_dev}" == dev and f"{st.st_ino}" == ino


def setup(level: str | int = "INFO") -> None:
    """Log to stderr: journal style under systemd, time-stamped otherwise."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JournalFormatter(PLAIN) if under_journal() else _utc_formatter())
    _install(handler, level)


def to_file(path: Path, level: str | int | None = None) -> None:
    """Log to `path` instead (mode 0600, rotated), time-stamped."""
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_FILE_BYTES,
                                                   backupCount=LOG_FILE_COPIES)
    os.chmod(path, 0o600)  # an older log readable by others: it names paths
    handler.setFormatter(_utc_formatter())
    _install(handler, level if level is not None else logging.getLogger().level)


def set_level(level: str | int) -> None:
    logging.getLogger().setLevel(level.upper() if isinstance(level, str) else level)


def _install(handler: logging.Handler, level: str | int) -> None:
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    set_level(level)
