"""Times set by copying tools stick through the commit at close, and survive a remount.

`cp -a` and `tar x` set a file's times on the open descriptor before closing it; rsync,
unzip and shutil.copy2 after closing it. Whatever the order, the times a tool sets are the
times the file keeps: each tool copies the same tree into a local directory (the oracle) and
into the mount, and after a remount every regular file's mtime (and atime) equals the local
copy's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mount, pytest.mark.swift]

MiB = 1 << 20
OLD_NS = 981_173_106_123_456_789  # 2001-02-03, with nanoseconds


FILES = {"empty": b"", "small.txt": b"hello\n" * 100, "big.bin": os.urandom(2 * MiB + 7),
         "sub/a": os.urandom(70_000), "sub/deeper/b": b"b" * 10}


def make_tree(root: Path) -> None:
    """Files of every write path: empty, small (one PUT), streamed (segments), nested."""
    (root / "sub" / "deeper").mkdir(parents=True)
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    set_times(root)


def set_times(root: Path) -> None:
    """Old, distinct atimes and mtimes (a copy's reads move the source's atime: reset)."""
    for i, name in enumerate(sorted(FILES)):
        os.utime(root / name, ns=(OLD_NS - i * 10**9 - 111, OLD_NS + i * 10**9 + 7))


def times(root: Path, *, atime: bool) -> dict[str, tuple[int, int | None]]:
    """name -> (mtime, atime or None) of every regular file below `root`."""
    out: dict[str, tuple[int, int | None]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_atime_ns if atime else None)
    return out


def _cp(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-a", f"{src}/.", str(dst)], check=True)


def _tar(src: Path, dst: Path) -> None:
    archive = src.parent / "tree.tar"
    if not archive.exists():
        subprocess.run(["tar", "--format=posix", "-cf", str(archive), "-C", str(src), "."],
                       check=True)
    subprocess.run(["tar", "-xf", str(archive), "-C", str(dst)], check=True)


def _rsync(src: Path, dst: Path) -> None:
    subprocess.run(["rsync", "-a", f"{src}/", f"{dst}/"], check=True)


def _unzip(src: Path, dst: Path) -> None:
    archive = src.parent / "tree.zip"
    if not archive.exists():
        subprocess.run(["zip", "-qr", str(archive), "."], cwd=src, check=True)
    subprocess.run(["unzip", "-q", str(archive), "-d", str(dst)], check=True)


def _copy2(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=shutil.copy2, dirs_exist_ok=True)


TOOLS = {"cp -a": _cp, "tar x": _tar, "rsync -a": _rsync, "unzip": _unzip,
         "shutil.copy2": _copy2}


@pytest.mark.parametrize("tool", list(TOOLS))
def test_copying_tools_keep_times(cloudfs_mount, tmp_path, tool):
    """rsync, cp -a, tar x, unzip and Python's shutil.copy2 all keep times: the kernel's view
    right after the copy, and the namespace after a remount, both equal a local copy's."""
    src = tmp_path / "src"
    make_tree(src)
    local = tmp_path / "local"
    local.mkdir()
    into = cloudfs_mount.path / "copy"
    into.mkdir()
    original = times(src, atime=True)
    TOOLS[tool](src, local)
    set_times(src)  # the copy's reads moved the source's atimes
    TOOLS[tool](src, into)
    # Compare atimes too where the tool keeps them (else both copies have their own "now").
    keeps_atime = times(local, atime=True) == original
    expected = times(local, atime=keeps_atime)
    assert len(expected) == 5
    assert times(into, atime=keeps_atime) == expected, "the kernel's cached attributes"
    cloudfs_mount.remount()
    assert times(into, atime=keeps_atime) == expected, "after a remount"
    for name in expected:
        assert (into / name).read_bytes() == (src / name).read_bytes()


def test_write_after_utimens_stamps_the_write_time(cloudfs_mount):
    """A write after the times were set on the open file counts as a modification: the commit
    stamps its own time, not the earlier one."""
    path = cloudfs_mount.path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"a" * 100)
    os.utime(fd, ns=(OLD_NS, OLD_NS))
    os.write(fd, b"b")
    os.close(fd)
    cloudfs_mount.remount()
    assert path.stat().st_mtime_ns > time.time_ns() - 600 * 10**9


def test_cp_a_keeps_atime_too(cloudfs_mount, tmp_path):
    """cp -a keeps access times as well (set on the open file with the mtime)."""
    src = tmp_path / "src"
    make_tree(src)
    original = times(src, atime=True)
    _cp(src, cloudfs_mount.path)
    cloudfs_mount.remount()
    assert times(cloudfs_mount.path, atime=True) == original
