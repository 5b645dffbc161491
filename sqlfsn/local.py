"""The files of an SQLite namespace on the local disk: who may read them, who has it mounted.

An SQLite namespace is the database file plus SQLite's `-wal` and `-shm` files beside it, and
one file of ours, `-mount`:

* **Privacy.** The database holds every name, owner, size, xattr and content hash of the
  filesystem, also inside 0700 directories: whoever reads it bypasses the mount's permission
  checks. So it is created 0600 (SQLite gives `-wal` and `-shm` the database file's mode),
  and an existing one that others can read is tightened to 0600 when opened, with a warning
  naming the file (a namespace readable by others is never what an operator wants).
* **One mount.** A mount holds an exclusive `flock` on `-mount` for its lifetime and writes
  who it is into it (host, pid, mountpoint, since). The kernel releases the lock when the
  process dies (SIGKILL, a crash, a reboot), so a stale holder never blocks the next mount; a
  second mount while the first lives is refused with the holder named. ccd does not take the
  lock: it works beside the mount (WAL lets both use the database).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from . import errors

log = logging.getLogger(__name__)

#: Files of an SQLite namespace besides the database itself.
SIDE_SUFFIXES = ("-wal", "-shm", "-mount")


@dataclass(frozen=True, slots=True)
class MountInfo:
    """Who has a namespace mounted."""

    host: str
    pid: int
    mountpoint: str
    since_ns: int

    def describe(self) -> str:
        since = datetime.datetime.fromtimestamp(self.since_ns / 1e9, datetime.UTC)
        return (f"pid {self.pid} on host {self.host} at {self.mountpoint} since "
                f"{since:%Y-%m-%d %H:%M:%S} UTC")


def create_private(path: Path) -> None:
    """Create an empty database file readable by its owner only (if it does not exist)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def tighten(path: Path) -> None:
    """Make the database and its side files readable by their owner only, with one warning
    per file that others could read."""
    for p in (path, *(Path(f"{path}{s}") for s in SIDE_SUFFIXES)):
        try:
            mode = stat.S_IMODE(p.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                p.chmod(mode & 0o700)
            except OSError as exc:
                log.warning("%s is readable by others (mode %04o) and could not be made "
                            "private: %s", p, mode, exc.strerror)
                continue
            log.warning("%s was readable by others (mode %04o): made private (%04o); it holds "
                        "every name and attribute of the filesystem", p, mode, mode & 0o700)


class MountLock:
    """The exclusive mount lock of one SQLite namespace (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(f"{path}-mount")
        self._fd: int | None = None

    def acquire(self, info: MountInfo) -> None:
        """Take the lock and record `info`; errors.MountBusy naming the holder if taken."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_info(fd)
            os.close(fd)
            raise errors.MountBusy(holder.describe() if holder else "holder unknown",
                                   holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(info)).encode() + b"\n", 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (closing the descriptor releases it; the file stays)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def mount_holder(path: Path) -> MountInfo | None:
    """Who has the SQLite namespace at `path` mounted now, or None (nobody, or no such file)."""
    try:
        fd = os.open(f"{path}-mount", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_info(fd) or MountInfo("?", 0, "?", 0)
        return None
    finally:
        os.close(fd)


def _read_info(fd: int) -> MountInfo | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return MountInfo(str(data["host"]), int(data["pid"]), str(data["mountpoint"]),
                         int(data["since_ns"]))
    except (ValueError, KeyError, TypeError, OSError):
        return None
