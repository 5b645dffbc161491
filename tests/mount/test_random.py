"""Random writes through the local write cache: overwrite, read back, sparse files, truncate,
mmap writes, fsx-style random operations, and the cache limit (ENOSPC)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BACKENDS

pytestmark = [pytest.mark.mount, pytest.mark.swift]

MiB = 1 << 20
FSX = Path(__file__).with_name("fsx_child.py")


def test_overwrite_in_place_and_read_back(cloudfs_mount, fault_proxy):
    """Writes at any offset, overwrites inside the file and reading back through the writing
    descriptor work (O_RDWR); untouched ranges are neither downloaded nor re-uploaded."""
    path = cloudfs_mount.path / "f"
    data = bytearray(os.urandom(3 * MiB))
    path.write_bytes(data)
    fault_proxy.clear_requests()
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, b"PATCH", 1_000_000)
        data[1_000_000:1_000_005] = b"PATCH"
        assert os.pread(fd, 10, 999_998) == bytes(data[999_998:1_000_008])
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(data)
    puts = [p for m, p in fault_proxy.requests if m == "PUT"]
    assert len(puts) == 1, f"only the 5 patched bytes are uploaded: {puts}"


def test_sparse_file_holes_read_as_zeros(cloudfs_mount):
    """Sparse files: holes read as zeros."""
    path = cloudfs_mount.path / "sparse"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        os.pwrite(fd, b"end", 5 * MiB)
        os.pwrite(fd, b"start", 0)
    finally:
        os.close(fd)
    got = path.read_bytes()
    assert len(got) == 5 * MiB + 3
    assert got[:5] == b"start" and got[-3:] == b"end" and got[5:-3] == bytes(5 * MiB - 5)


@pytest.mark.slow
@BACKENDS
@pytest.mark.parametrize("seed", [1, 2])
def test_fsx_random_operations(cloudfs_mount, seed):
    """fsx-style random write/read/truncate/mapwrite/fsync operations agree with an
    in-memory copy after every step, and after close."""
    out = subprocess.run([sys.executable, str(FSX), str(cloudfs_mount.path / f"fsx{seed}"),
                          str(seed), "1500", str(3 * MiB)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.strip() == "ok 1500"


def test_write_cache_limit_gives_enospc(cloudfs_mount, tmp_path):
    """When the write cache is full, a write fails with ENOSPC (the disk is never filled);
    the file keeps every write that succeeded."""
    cloudfs_mount.configure("cloudfs", cache_size="3M")  # 1 MiB of it is commit headroom
    cloudfs_mount.remount()
    path = cloudfs_mount.path / "big"
    path.write_bytes(os.urandom(4 * MiB))
    expected = bytearray(path.read_bytes())
    fd = os.open(path, os.O_RDWR)
    failed = 0
    try:
        for i in range(8):
            off, chunk = i * 500_000, os.urandom(400_000)
            while chunk:  # write(2) returns a short count when a later part is refused
                try:
                    n = os.pwrite(fd, chunk, off)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    failed += 1
                    break
                expected[off:off + n] = chunk[:n]
                off, chunk = off + n, chunk[n:]
    finally:
        os.close(fd)
    assert failed, "the 2 MiB cache must have refused some of 3.2 MB of writes"
    assert failed < 8, "and accepted some"
    assert path.read_bytes() == bytes(expected)
    assert "write cache is full" in cloudfs_mount.log_text()


def test_crash_before_close_keeps_previous_version(cloudfs_mount, tmp_path):
    """The cache is committed at close or fsync, and close does not return before the upload:
    a file closed successfully is in Swift; a crash before close loses what was in the cache
    (the path keeps its previous version)."""
    cloudfs_mount.expect_errors = True
    path = cloudfs_mount.path / "doc"
    old = os.urandom(MiB)
    path.write_bytes(old)
    code = ("import os,time\n"
            f"fd=os.open({str(path)!r}, os.O_RDWR)\n"
            "os.pwrite(fd, b'X'*1000, 5000)\n"
            "print('written', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"written"
    cloudfs_mount.kill()
    child.kill()
    child.wait()
    cloudfs_mount.start()
    assert path.read_bytes() == old
