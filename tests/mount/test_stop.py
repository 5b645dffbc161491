"""Stopping the mount never publishes a write the application did not close (docs/SEMANTICS.md,
"Stopping the mount"), and a second mount of a namespace is refused.

Each stop test writes through a real mount while the daemon is stopped by SIGTERM, SIGINT or a
lazy unmount, then mounts again and checks the path holds exactly its previous content, or
exactly the new one when (and only when) close returned 0.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import fusermount_u, in_mount_table

pytestmark = [pytest.mark.mount, pytest.mark.swift]

MiB = 1 << 20

# What the file holds before the interrupted write, and how that write starts.
KINDS = ("overwrite", "new", "append", "cache")


def _old(path: Path, kind: str) -> bytes | None:
    """Create the previous content for `kind`; None: the file does not exist before."""
    if kind == "new":
        return None
    old = os.urandom(3 * MiB + 17)
    path.write_bytes(old)
    return old


def _open_and_write(path: Path, kind: str, data: bytes) -> int:
    """Open `path` as `kind` writes it and write `data`; the descriptor (left open)."""
    if kind in ("overwrite", "new"):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, data)
    elif kind == "append":
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.write(fd, data)
    else:  # a write-cache session: writes inside the file, read back
        fd = os.open(path, os.O_RDWR)
        os.pwrite(fd, data, 1000)
        assert os.pread(fd, 10, 1000) == data[:10]
    return fd


def _expected_new(old: bytes | None, kind: str, data: bytes) -> bytes:
    if kind in ("overwrite", "new"):
        return data
    assert old is not None
    if kind == "append":
        return old + data
    return old[:1000] + data + old[1000 + len(data):]


def _try_more(fd: int) -> tuple[int | None, int | None]:
    """Write once more and close: (errno of the write, errno of the close), None = success."""
    results: list[int | None] = []
    for op in (lambda: os.write(fd, b"more"), lambda: os.close(fd)):
        try:
            op()
            results.append(None)
        except OSError as exc:
            results.append(exc.errno)
    return results[0], results[1]


def _content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("kind", KINDS)
def test_stop_aborts_what_was_not_closed(cloudfs_mount, kind, sig):
    """A stop (SIGTERM, SIGINT, systemctl stop) never publishes a write the application did
    not close: after stop_timeout the write is aborted, the path keeps exactly its previous
    content, one log line names the path, and the application's next write or close fails."""
    cloudfs_mount.configure("cloudfs", stop_timeout=1)
    cloudfs_mount.remount()
    path = cloudfs_mount.path / f"{kind}.bin"
    old = _old(path, kind)
    fd = _open_and_write(path, kind, os.urandom(2 * MiB + 5))
    cloudfs_mount.proc.send_signal(sig)
    assert cloudfs_mount.wait_exit() == 0
    write_err, close_err = _try_more(fd)
    assert write_err is not None, "a write after the stop must fail"
    cloudfs_mount.kill()  # clears the dead mount entry
    cloudfs_mount.start()
    # A new file exists from its open (O_CREAT is a namespace operation), empty.
    assert _content(path) == (b"" if old is None else old)
    log = cloudfs_mount.log_text()
    assert f"/{kind}.bin: not closed when the mount stopped" in log, log[-2000:]


@pytest.mark.parametrize("kind", KINDS)
def test_writer_that_closes_in_time_is_committed(cloudfs_mount, kind):
    """A writer that closes within stop_timeout after the signal is committed: close returns 0
    and the path holds exactly the new content after the next mount. Meanwhile new opens for
    writing fail with EROFS, and reads work."""
    path = cloudfs_mount.path / f"{kind}.bin"
    old = _old(path, kind)
    other = cloudfs_mount.path / "other"
    other.write_bytes(b"other")
    first, rest = os.urandom(2 * MiB), os.urandom(MiB + 3)
    fd = _open_and_write(path, kind, first)
    cloudfs_mount.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while "SIGTERM: stopping" not in cloudfs_mount.log_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(OSError) as refused:
        os.open(cloudfs_mount.path / "late", os.O_WRONLY | os.O_CREAT)
    assert refused.value.errno == errno.EROFS
    assert other.read_bytes() == b"other"
    if kind == "cache":
        os.pwrite(fd, rest, 1000 + len(first))
    else:
        os.write(fd, rest)
    os.close(fd)  # returns 0: committed
    assert cloudfs_mount.wait_exit() == 0
    cloudfs_mount.kill()
    cloudfs_mount.start()
    assert _content(path) == _expected_new(old, kind, first + rest)
    assert not (cloudfs_mount.path / "late").exists()


def test_fsynced_bytes_stay_after_a_stop(cloudfs_mount):
    """What was fsynced stays; bytes after the last fsync are not published by a stop."""
    cloudfs_mount.configure("cloudfs", stop_timeout=1)
    cloudfs_mount.remount()
    path = cloudfs_mount.path / "synced"
    synced, later = os.urandom(MiB + 100), os.urandom(MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    os.write(fd, synced)
    os.fsync(fd)
    os.write(fd, later)
    cloudfs_mount.proc.send_signal(signal.SIGTERM)
    assert cloudfs_mount.wait_exit() == 0
    _try_more(fd)
    cloudfs_mount.kill()
    cloudfs_mount.start()
    assert path.read_bytes() == synced


def test_second_signal_ends_the_wait(cloudfs_mount):
    """A second SIGTERM during the wait for open writers aborts them at once."""
    cloudfs_mount.configure("cloudfs", stop_timeout=600)
    cloudfs_mount.remount()
    path = cloudfs_mount.path / "slow"
    old = _old(path, "overwrite")
    fd = _open_and_write(path, "overwrite", os.urandom(MiB))
    cloudfs_mount.proc.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert cloudfs_mount.proc.poll() is None, "the stop waits for the open writer"
    cloudfs_mount.proc.send_signal(signal.SIGTERM)
    assert cloudfs_mount.wait_exit(timeout=60) == 0  # not the 600 s of stop_timeout
    _try_more(fd)
    cloudfs_mount.kill()
    cloudfs_mount.start()
    assert path.read_bytes() == old


def test_close_in_progress_completes_before_exit(cloudfs_mount, fault_proxy):
    """A close that is uploading when the stop comes completes (the application closed the
    file): close returns 0, then the mount exits, and the file holds the new content."""
    path = cloudfs_mount.path / "closing"
    data = os.urandom(2 * MiB + 1)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    os.write(fd, data)
    fault_proxy.add_rule("PUT", r"multipart-manifest=put", "stall", seconds=3)
    result: list[BaseException | None] = []

    def close() -> None:
        try:
            os.close(fd)
            result.append(None)
        except OSError as exc:
            result.append(exc)

    closer = threading.Thread(target=close)
    closer.start()
    deadline = time.monotonic() + 10
    while not fault_proxy.seen("PUT", r"multipart-manifest=put"):
        assert time.monotonic() < deadline, "the close never reached the manifest PUT"
        time.sleep(0.02)
    cloudfs_mount.proc.send_signal(signal.SIGTERM)
    closer.join(30)
    assert result == [None]
    assert cloudfs_mount.wait_exit() == 0
    cloudfs_mount.start()
    assert path.read_bytes() == data


@pytest.mark.parametrize("kind", KINDS)
def test_lazy_unmount_lets_open_writers_finish(cloudfs_mount, kind):
    """A lazy unmount (umount -l, fusermount3 -u -z) detaches the mount point; files already
    open keep working, and a writer's close commits its content before the daemon exits."""
    path = cloudfs_mount.path / f"{kind}.bin"
    old = _old(path, kind)
    first, rest = os.urandom(2 * MiB), os.urandom(MiB)
    fd = _open_and_write(path, kind, first)
    fusermount_u(cloudfs_mount.path, lazy=True)
    assert not in_mount_table(cloudfs_mount.path)
    if kind == "cache":
        os.pwrite(fd, rest, 1000 + len(first))
    else:
        os.write(fd, rest)
    os.close(fd)
    assert cloudfs_mount.wait_exit() == 0
    cloudfs_mount.start()
    assert _content(path) == _expected_new(old, kind, first + rest)


def test_second_mount_refused_then_allowed_after_sigkill(cloudfs_mount, tmp_path):
    """A second mount of a mounted namespace is refused with one line naming the holder (host,
    pid, mountpoint, since when) and a non-zero exit; after SIGKILL of the first daemon a new
    mount succeeds without manual steps."""
    other = tmp_path / "mnt2"
    other.mkdir()
    cmd = [sys.executable, "-m", "cloudfs", "mount", "--config", str(cloudfs_mount.config),
           str(other)]
    for foreground in ([], ["--foreground"]):
        proc = subprocess.run(cmd + foreground, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "already mounted" in lines[0]
        assert f"pid {cloudfs_mount.proc.pid}" in lines[0]
        assert str(cloudfs_mount.path) in lines[0] and " since " in lines[0]
        assert "Traceback" not in proc.stderr
        assert not in_mount_table(other)
    mkfs = subprocess.run([sys.executable, "-m", "cloudfs", "mkfs", "--force", "--config",
                           str(cloudfs_mount.config)], capture_output=True, text=True)
    assert mkfs.returncode == 2 and "is mounted" in mkfs.stderr
    (cloudfs_mount.path / "kept").write_bytes(b"kept")
    cloudfs_mount.kill()
    cloudfs_mount.path = other
    cloudfs_mount.start()
    assert (other / "kept").read_bytes() == b"kept"
