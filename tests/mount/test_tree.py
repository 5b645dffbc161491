"""Whole trees in and out of a real mount: rsync, remount, large files, names."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import blake3
import pytest

pytestmark = [pytest.mark.mount, pytest.mark.swift]

MiB = 1 << 20


def make_tree(root: Path) -> None:
    (root / "a/b/c").mkdir(parents=True)
    (root / "empty").write_bytes(b"")
    (root / "small.txt").write_bytes(b"hello cloudfs\n")
    (root / "a/medium.bin").write_bytes(os.urandom(200_000))
    (root / "a/b/segments.bin").write_bytes(os.urandom(3 * MiB + 12345))  # 4 segments of 1 MiB
    (root / "a/b/c/deep.txt").write_bytes(b"deep\n" * 1000)
    os.symlink("a/b/segments.bin", root / "link")
    os.symlink("/nonexistent/target", root / "a/dangling")
    os.link(root / "small.txt", root / "a/hardlink.txt")
    os.mkfifo(root / "a/fifo")
    os.chmod(root / "a/medium.bin", 0o640)
    os.utime(root / "small.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def rsync_diff(src: Path, dst: Path) -> str:
    out = subprocess.run(["rsync", "-anciH", "--delete", f"{src}/", f"{dst}/"],
                         capture_output=True, text=True, check=True)
    return out.stdout


def test_rsync_tree_round_trip_and_remount(cloudfs_mount, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    subprocess.run(["rsync", "-aH", f"{src}/", f"{cloudfs_mount.path}/"], check=True)
    assert rsync_diff(src, cloudfs_mount.path) == ""
    cloudfs_mount.remount()
    assert rsync_diff(src, cloudfs_mount.path) == ""
    st = os.stat(cloudfs_mount.path / "a/hardlink.txt")
    assert st.st_nlink == 2 and st.st_ino == os.stat(cloudfs_mount.path / "small.txt").st_ino


def test_large_file_stored_under_its_blake3(cloudfs_mount, tmp_path, raw_swift):
    data = os.urandom(5 * MiB + 777)
    src = tmp_path / "big"
    src.write_bytes(data)
    subprocess.run(["cp", str(src), str(cloudfs_mount.path / "big")], check=True)
    assert (cloudfs_mount.path / "big").read_bytes() == data
    digest = blake3.blake3(data).hexdigest()
    status, _, body = raw_swift.get_object(*cloudfs_mount.layout.cas_path(digest))
    assert status == 200 and body == data
    assert os.stat(cloudfs_mount.path / "big").st_blksize == MiB


def daemon_stats(mnt) -> dict:
    out = subprocess.run([sys.executable, "-m", "cloudfs", "stats", str(mnt)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_rename_of_large_file_is_metadata_only(cloudfs_mount, fault_proxy):
    """rename is atomic and metadata-only: it sends no request to Swift, for any file size."""
    data = os.urandom(3 * MiB)
    (cloudfs_mount.path / "d1").mkdir()
    (cloudfs_mount.path / "d2").mkdir()
    (cloudfs_mount.path / "d1/big").write_bytes(data)
    os.stat(cloudfs_mount.path / "d2")  # looked up before the rename, which then does only it
    before = daemon_stats(cloudfs_mount.path)["namespace_commits"]
    fault_proxy.clear_requests()
    os.rename(cloudfs_mount.path / "d1/big", cloudfs_mount.path / "d2/big")
    assert fault_proxy.requests == [], "rename must not touch Swift"
    assert daemon_stats(cloudfs_mount.path)["namespace_commits"] == before + 1, \
        "one namespace transaction"
    assert (cloudfs_mount.path / "d2/big").read_bytes() == data
    assert not (cloudfs_mount.path / "d1/big").exists()


def test_names_are_bytes_and_limited_to_255(cloudfs_mount):
    """Names are limited to 255 bytes; a longer name fails with ENAMETOOLONG in every
    operation, lookup included."""
    weird = os.fsencode(cloudfs_mount.path) + b"/caf\xc3\xa9-\xff\xfe-binary"
    with open(weird, "wb") as f:
        f.write(b"x")
    assert b"caf\xc3\xa9-\xff\xfe-binary" in os.listdir(os.fsencode(cloudfs_mount.path))
    long = cloudfs_mount.path / ("n" * 256)
    for op in (lambda: long.write_bytes(b"x"), lambda: long.stat(), lambda: long.mkdir()):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.ENAMETOOLONG
    ok = cloudfs_mount.path / ("n" * 255)
    ok.write_bytes(b"fine")
    assert ok.read_bytes() == b"fine"


def test_big_directory_listing(cloudfs_mount):
    d = cloudfs_mount.path / "many"
    d.mkdir()
    names = {f"file-{i:05d}" for i in range(1500)}
    for n in names:
        (d / n).write_bytes(b"")
    assert set(os.listdir(d)) == names


def test_mmap_read_and_statfs(cloudfs_mount):
    """mmap of a file for reading works; statfs reports the number of inodes and the bytes of
    all files."""
    data = os.urandom(3 * MiB)
    path = cloudfs_mount.path / "m"
    path.write_bytes(data)
    # In a child process: a page fault holds this process's mmap lock while the daemon reads
    # through the fault proxy, which runs as threads of this (the test) process.
    code = ("import mmap,sys,hashlib\n"
            f"f=open({str(path)!r},'rb'); mm=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)\n"
            "sys.stdout.write(hashlib.sha256(mm[:]).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out == hashlib.sha256(data).hexdigest()
    st = os.statvfs(cloudfs_mount.path)
    assert st.f_namemax == 255
    assert st.f_files - st.f_ffree == 2  # the root and "m"


def test_stats_count_swift_requests(cloudfs_mount):
    """`cloudfs stats MOUNTPOINT` prints the daemon's counters: Swift requests by method."""
    def stats() -> dict:
        return daemon_stats(cloudfs_mount.path)

    before = stats()["swift_requests"].get("PUT", 0)
    (cloudfs_mount.path / "s").write_bytes(b"counted")
    assert stats()["swift_requests"]["PUT"] == before + 1
    os.rename(cloudfs_mount.path / "s", cloudfs_mount.path / "t")
    assert stats()["swift_requests"]["PUT"] == before + 1
