"""The local disk is never filled, and every write that succeeded can be committed
(docs/SEMANTICS.md, "Local disk"). The cache directory sits on a small tmpfs of the test's own,
with the default cache_size (10 GiB) far above it."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mount, pytest.mark.swift]

MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own, unmounted at the end."""
    def make(size_mib: int) -> Path:
        path = tmp_path / f"disk{size_mib}"
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs",
                        str(path)], check=True)
        mounted.append(path)
        return path

    mounted: list[Path] = []
    yield make  # type: ignore[misc]
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def disk_used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_write_cache_on_a_small_disk(cloudfs_mount, small_disk):
    """When the disk under cache_dir is full (before cache_size), a write fails with ENOSPC,
    the disk keeps its reserve, and close commits every write that succeeded."""
    disk = small_disk(40)
    cloudfs_mount.stop()
    cloudfs_mount.configure("cloudfs", cache_dir=disk, cache_size="10G")
    cloudfs_mount.start()
    assert "cache_size is 10.0 GiB but" in cloudfs_mount.log_text()
    path = cloudfs_mount.path / "sparse"
    size = 200 * MiB
    with open(path, "wb") as f:
        f.truncate(size)
    expected = {}  # block number -> bytes that were written successfully
    refused = 0
    rng = random.Random(7)
    fd = os.open(path, os.O_RDWR)
    try:
        for block in rng.sample(range(size // MiB), 60):
            data = os.urandom(MiB)
            try:
                n = os.pwrite(fd, data, block * MiB)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                refused += 1
                continue
            assert n == MiB
            expected[block] = data
        assert disk_used(disk) < 40 * MiB * 0.95, "the reserve is kept"
    finally:
        os.close(fd)  # must commit: raises on failure
    assert refused, "a 40 MiB disk cannot cache 60 MiB"
    assert len(expected) > 10
    cloudfs_mount.remount()
    with open(path, "rb") as f:
        for block in range(size // MiB):
            f.seek(block * MiB)
            assert f.read(MiB) == expected.get(block, bytes(MiB)), block


def test_streaming_writers_share_a_small_spool(cloudfs_mount, small_disk):
    """Sequential writers whose segments would not fit the disk end their segments early
    instead of failing: three 12 MiB files through a 6 MiB disk are stored whole."""
    disk = small_disk(6)
    cloudfs_mount.stop()
    cloudfs_mount.configure("cloudfs", cache_dir=disk, segment_size="4M")
    cloudfs_mount.start()
    datas = [os.urandom(12 * MiB + i) for i in range(3)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            with open(cloudfs_mount.path / f"f{i}", "wb") as f:
                for off in range(0, len(datas[i]), MiB):
                    f.write(datas[i][off:off + MiB])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    cloudfs_mount.remount()
    for i, data in enumerate(datas):
        assert (cloudfs_mount.path / f"f{i}").read_bytes() == data
