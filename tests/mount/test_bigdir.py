"""Large directories through a real mount: the kernel's READDIRPLUS requests at the offsets it
was given, many requests per listing, while entries come and go through the same mount."""

from __future__ import annotations

import ctypes
import os
import struct

import pytest

from sqlfsn import ROOT_INODE, Namespace

pytestmark = [pytest.mark.mount, pytest.mark.swift]

SYS_GETDENTS64 = {"x86_64": 217, "aarch64": 61}[os.uname().machine]
_libc = ctypes.CDLL(None, use_errno=True)
N = 2000


def getdents(fd: int, size: int = 4096) -> list[tuple[int, bytes]]:
    """One getdents64(2) with a `size`-byte buffer (a page: the kernel then asks the daemon for
    a page of entries, ~24 with attributes): [(d_off, name)], empty at the end."""
    buf = ctypes.create_string_buffer(size)
    n = _libc.syscall(SYS_GETDENTS64, fd, buf, size)
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    out, pos, raw = [], 0, buf.raw[:n]
    while pos < n:
        _ino, off, reclen, _type = struct.unpack_from("<QqHB", raw, pos)
        name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
        if name not in (b".", b".."):
            out.append((off, name))
        pos += reclen
    return out


def fill(cloudfs_mount, name: bytes) -> list[bytes]:
    """A directory of N empty files made through the namespace API (the daemon stopped)."""
    cloudfs_mount.stop()
    names = [b"e%05d" % i for i in range(N)]
    with Namespace.open(cloudfs_mount.database) as ns:
        d = ns.mkdir(ROOT_INODE, name, 0o755, os.getuid(), os.getgid())
        for n in names:
            ns.create(d.inode, n, 0o644, os.getuid(), os.getgid())
    cloudfs_mount.start()
    return names


def test_paged_listing_while_entries_come_and_go(cloudfs_mount):
    names = fill(cloudfs_mount, b"big")
    d = os.fsencode(cloudfs_mount.path / "big")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    seen: list[bytes] = []
    removed: set[bytes] = set()
    added: list[bytes] = []
    try:
        while batch := getdents(fd):
            seen += [name for _, name in batch]
            n = len(seen)
            if n + 40 < N:  # one not listed yet, one listed, one new: through the mount
                for victim in (b"e%05d" % (n + 40), seen[-1]):
                    if victim not in removed and victim.startswith(b"e"):
                        os.unlink(os.path.join(d, victim))
                        removed.add(victim)
                new = b"new%05d" % n
                os.close(os.open(os.path.join(d, new), os.O_CREAT | os.O_WRONLY, 0o644))
                added.append(new)
    finally:
        os.close(fd)
    assert len(seen) == len(set(seen)), "no entry listed twice"
    olds = [name for name in seen if name.startswith(b"e")]
    # Every entry present throughout once, in order; those removed before their turn skipped
    # (POSIX would allow either); entries created meanwhile come after the old ones.
    assert olds == [name for name in names if name not in removed or name in olds]
    assert any(name in removed for name in olds), "some were removed after being listed"
    assert seen[len(olds):] == added
    assert sorted(os.listdir(d)) == sorted((set(names) - removed) | set(added))


def test_listing_resumes_at_any_offset_it_gave(cloudfs_mount):
    names = fill(cloudfs_mount, b"big")
    fd = os.open(cloudfs_mount.path / "big", os.O_RDONLY | os.O_DIRECTORY)
    try:
        listed: list[tuple[int, bytes]] = []
        while batch := getdents(fd):
            listed += batch
        assert [name for _, name in listed] == names
        for i in (N - 2, 5, 1234, 0):  # back and forth: seekdir to an offset the kernel gave
            os.lseek(fd, listed[i][0], os.SEEK_SET)
            assert [name for _, name in getdents(fd)][:3] == names[i + 1:i + 4]
    finally:
        os.close(fd)
