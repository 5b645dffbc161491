"""Errors a user can meet, each with its errno (docs/SEMANTICS.md)."""

from __future__ import annotations

import errno
import os
import time

import pytest

pytestmark = [pytest.mark.mount, pytest.mark.swift]


def raises_errno(err: int, fn, *args) -> None:
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == err, f"{fn.__name__}{args}: {e.value}"


def test_namespace_errnos(cloudfs_mount):
    m = cloudfs_mount.path
    (m / "dir/sub").mkdir(parents=True)
    (m / "file").write_bytes(b"x")
    raises_errno(errno.ENOTEMPTY, os.rmdir, m / "dir")
    raises_errno(errno.EISDIR, open, m / "dir", "wb")
    raises_errno(errno.EISDIR, os.rename, m / "file", m / "dir")
    raises_errno(errno.ENOTDIR, os.mkdir, m / "file/sub")
    raises_errno(errno.ENOTDIR, os.rename, m / "dir/sub", m / "file")
    raises_errno(errno.EINVAL, os.rename, m / "dir", m / "dir/sub/inside")
    raises_errno(errno.ENOENT, os.stat, m / "missing")
    raises_errno(errno.ENOENT, os.unlink, m / "missing")
    raises_errno(errno.EEXIST, os.mkdir, m / "dir")
    (m / "target").mkdir()
    (m / "target/x").write_bytes(b"")
    raises_errno(errno.ENOTEMPTY, os.rename, m / "dir", m / "target")


def test_non_sequential_write_switches_to_the_write_cache(cloudfs_mount):
    """A write at any other offset switches the file to the local write cache (one log line
    says so): the bytes streamed so far are kept, the new ones land where they were written."""
    path = cloudfs_mount.path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"a" * 100)
        os.pwrite(fd, b"b", 10)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"a" * 10 + b"b" + b"a" * 89
    assert "using the write cache" in cloudfs_mount.log_text()


def test_writing_a_path_replaces_it_never_eexist(cloudfs_mount):
    """Writing to an existing file without O_TRUNC from offset 0 replaces the bytes written and
    keeps the rest of the file."""
    path = cloudfs_mount.path / "f"
    path.write_bytes(b"first version, longer")
    path.write_bytes(b"second")
    assert path.read_bytes() == b"second"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"THI")
    os.close(fd)
    assert path.read_bytes() == b"THIond", "without O_TRUNC the rest of the file stays"


def test_swift_outage_during_write_fails_close_and_keeps_old_content(cloudfs_mount,
                                                                      fault_proxy):
    """close(2) returns 0 only once the content is stored in Swift and committed in the
    namespace; a failed upload makes close(2) return EIO and the path keeps its previous
    content. After a failed write or close, every later close or fsync of that open file (a
    `dup`'d descriptor) also fails with `EIO`: a failure is never followed by a silent
    success."""
    cloudfs_mount.expect_errors = True
    path = cloudfs_mount.path / "precious"
    path.write_bytes(b"old content")
    fault_proxy.add_rule("PUT", r".", "status:503", times=-1)
    f = open(path, "wb")  # noqa: SIM115
    f.write(os.urandom(3 << 20))
    f.flush()
    dup = os.dup(f.fileno())
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno == errno.EIO
    fault_proxy.clear_rules()
    with pytest.raises(OSError) as e:  # the failure sticks to the open file until release
        os.close(dup)
    assert e.value.errno == errno.EIO
    assert path.read_bytes() == b"old content"


def test_swift_down_close_fails_at_the_deadline(cloudfs_mount, fault_proxy):
    """With Swift down, close answers EIO at the retry deadline: the clean-up of the aborted
    upload (DELETEs that fail too) goes on in the background, the application does not wait
    for it."""
    cloudfs_mount.expect_errors = True
    path = cloudfs_mount.path / "down"
    path.write_bytes(b"old content")
    f = open(path, "wb")  # noqa: SIM115
    f.write(os.urandom(3 << 20))
    fault_proxy.add_rule(None, r".", "status:503", times=-1)  # every request, DELETEs too
    started = time.monotonic()
    with pytest.raises(OSError) as e:
        f.close()
    elapsed = time.monotonic() - started
    fault_proxy.clear_rules()
    assert e.value.errno == errno.EIO
    # retry_deadline is 10 s here; the aborted upload's DELETEs would add up to 30 s more.
    assert elapsed < 10 + 8, f"close took {elapsed:.0f} s"
    assert path.read_bytes() == b"old content"


def test_more_errnos(cloudfs_mount):
    """Errno table: hard link to a directory EPERM, readlink of a non-symlink EINVAL. Reading
    back through the descriptor that is writing and truncating a file being written work."""
    m = cloudfs_mount.path
    (m / "d").mkdir()
    (m / "f").write_bytes(b"abc")
    raises_errno(errno.EPERM, os.link, m / "d", m / "d2")
    raises_errno(errno.EINVAL, os.readlink, m / "f")
    fd = os.open(m / "g", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"hello")
        assert os.pread(fd, 5, 0) == b"hello"
        os.ftruncate(fd, 2)
        assert os.pread(fd, 5, 0) == b"he"
    finally:
        os.close(fd)
    assert (m / "g").read_bytes() == b"he"


def test_rename_flags(cloudfs_mount):
    """RENAME_NOREPLACE and RENAME_EXCHANGE are supported."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    m = cloudfs_mount.path
    (m / "a").write_bytes(b"A")
    (m / "b").write_bytes(b"B")

    def renameat2(src, dst, flags):
        AT_FDCWD = -100
        if libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags):
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    raises_errno(errno.EEXIST, renameat2, m / "a", m / "b", 1)  # RENAME_NOREPLACE
    renameat2(m / "a", m / "b", 2)  # RENAME_EXCHANGE
    assert (m / "a").read_bytes() == b"B" and (m / "b").read_bytes() == b"A"
