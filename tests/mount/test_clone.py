"""`cloudfs cp --reflink` and `cloudfs snapshot` on a real mount and the dev Swift: instant
copies that share the stored content, compare equal to their source, stay independent of it,
survive its deletion and ccd's passes, copy a file being written at its committed version, and
(read-only snapshots) refuse every change with EROFS."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sqlfsn import Namespace

pytestmark = [pytest.mark.mount, pytest.mark.swift]

MiB = 1 << 20
CLOUDFS = [sys.executable, "-m", "cloudfs"]


def cloudfs(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*CLOUDFS, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def ccd(config: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "ccd.cli", "--config", str(config), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def swift_requests(mnt: Path) -> int:
    stats = json.loads(cloudfs("stats", str(mnt)).stdout)
    return sum(stats["swift_requests"].values())


def make_tree(root: Path) -> dict[str, bytes]:
    """A tree of every file kind: regular files (empty, small, several segments), a
    subdirectory, a symlink, a hard link pair, a FIFO, a socket, a character device; modes,
    owners, times and xattrs set."""
    data = {"small": os.urandom(100_000), "big": os.urandom(3 * MiB + 7), "empty": b""}
    root.mkdir()
    (root / "sub" / "deeper").mkdir(parents=True)
    for name, content in data.items():
        (root / name).write_bytes(content)
    (root / "sub" / "inner").write_bytes(b"inner\n")
    os.link(root / "small", root / "sub" / "small-link")
    os.symlink("../big", root / "sub" / "ln")
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "sock", stat.S_IFSOCK | 0o600)
    os.mknod(root / "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.chmod(root / "sub", 0o750)
    os.chown(root / "small", 1234, 5678)
    os.lchown(root / "sub" / "ln", 42, 43)
    os.setxattr(root / "big", "user.color", b"blue")
    os.setxattr(root / "sub", "user.dir", b"x")
    os.utime(root / "big", ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    os.utime(root / "sub" / "deeper", ns=(1_400_000_000_000_000_001, 1_400_000_000_000_000_002))
    return data


def kept(path: Path) -> dict[str, tuple[object, ...]]:
    """What `cp -a` keeps, by relative path: type and mode, owner, size, rdev, mtime, atime
    (regular files and symlinks), symlink target, xattrs, and which names share an inode."""
    out: dict[str, tuple[object, ...]] = {}
    first: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(path))
            st = os.lstat(p)
            target = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            xattrs = {} if stat.S_ISLNK(st.st_mode) else {
                n: os.getxattr(p, n) for n in os.listxattr(p)}
            times = (st.st_mtime_ns,) if stat.S_ISDIR(st.st_mode) else (st.st_mtime_ns,
                                                                          st.st_atime_ns)
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_rdev, st.st_nlink,
                        times, target, xattrs, first.setdefault(st.st_ino, rel))
    return out


def test_cp_reflink_copies_a_tree_of_every_kind_like_cp_a(cloudfs_mount, fault_proxy):
    """`cloudfs cp --reflink SRC DST` copies a tree of every file kind: `diff -r` finds no
    difference, and every stat field `cp -a` keeps is equal; no Swift request is made."""
    m = cloudfs_mount.path
    make_tree(m / "src")
    before = kept(m / "src")
    requests = swift_requests(m)
    fault_proxy.clear_requests()
    out = cloudfs("cp", "--reflink", "--json", str(m / "src"), str(m / "copy"))
    assert fault_proxy.requests == []
    assert swift_requests(m) == requests
    summary = json.loads(out.stdout)
    [copy] = summary["copies"]
    assert (copy["source"], copy["dest"], copy["files"]) == ("src", "copy", 4)  # one small
    assert copy["bytes"] == 100_000 + 3 * MiB + 7 + 6
    assert kept(m / "copy") == before
    assert kept(m / "src") == before
    diff = subprocess.run(["diff", "-r", "--no-dereference", "-x", "fifo", "-x", "sock",
                           "-x", "chr", str(m / "src"), str(m / "copy")],
                          capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    # `cp -a` of the same tree keeps the same (the reference); the clone kept the owner too.
    subprocess.run(["cp", "-a", str(m / "src"), str(m / "cpa")], check=True)
    assert kept(m / "cpa") == before
    # Copies into an existing directory take the source's name; single files too.
    (m / "into").mkdir()
    cloudfs("cp", "--reflink", str(m / "src" / "big"), str(m / "src" / "sub" / "ln"),
            str(m / "into"))
    assert (m / "into" / "big").read_bytes() == (m / "src" / "big").read_bytes()
    assert os.readlink(m / "into" / "ln") == "../big"
    cloudfs_mount.remount()
    assert kept(m / "copy") == before


def test_the_copy_and_the_source_change_independently(cloudfs_mount):
    """Writes to the copy leave the source unchanged, and the other way round."""
    m = cloudfs_mount.path
    data = make_tree(m / "src")
    cloudfs("cp", "--reflink", str(m / "src"), str(m / "copy"))
    with open(m / "copy" / "big", "r+b") as f:
        f.seek(MiB)
        f.write(b"changed in the copy")
    (m / "copy" / "sub" / "inner").write_bytes(b"rewritten\n")
    os.chmod(m / "copy" / "small", 0o600)
    os.setxattr(m / "copy" / "big", "user.color", b"red")
    with open(m / "src" / "small", "ab") as f:
        f.write(b"appended to the source")
    os.unlink(m / "src" / "sub" / "ln")
    assert (m / "src" / "big").read_bytes() == data["big"]
    assert (m / "src" / "sub" / "inner").read_bytes() == b"inner\n"
    assert os.getxattr(m / "src" / "big", "user.color") == b"blue"
    assert (m / "copy" / "small").read_bytes() == data["small"]
    assert (m / "copy" / "sub" / "small-link").read_bytes() == data["small"]  # its link
    assert os.readlink(m / "copy" / "sub" / "ln") == "../big"
    changed = bytearray(data["big"])
    changed[MiB:MiB + 19] = b"changed in the copy"
    assert (m / "copy" / "big").read_bytes() == bytes(changed)
    assert (m / "src" / "small").read_bytes() == data["small"] + b"appended to the source"
    assert stat.S_IMODE(os.stat(m / "src" / "small").st_mode) == 0o644


def test_deleting_the_source_then_ccd_keeps_the_copy_readable(cloudfs_mount, raw_swift):
    """Unlink of the source, then `ccd once` and `ccd cleanup --grace 0`: the copy reads back
    identical (its content objects are kept), while content only the source used is gone."""
    m = cloudfs_mount.path
    data = make_tree(m / "src")
    (m / "src" / "only-src").write_bytes(os.urandom(200_000))
    cloudfs("cp", "--reflink", str(m / "src" / "big"), str(m / "src" / "small"),
            str(m / "src" / "sub"), str(m))
    with Namespace.open(cloudfs_mount.database) as ns:
        only = ns.pieces(ns.lookup(ns.lookup(1, b"src").inode, b"only-src").inode)
        shared = ns.pieces(ns.lookup(1, b"big").inode)
    subprocess.run(["rm", "-rf", str(m / "src")], check=True)
    ccd(cloudfs_mount.config, "once", "--settle-grace", "0", "--retire-grace", "0")
    ccd(cloudfs_mount.config, "cleanup", "--grace", "0")
    layout = cloudfs_mount.layout
    assert raw_swift.head_object(*layout.cas_path(only[0].hash))[0] == 404  # cleanup ran
    assert raw_swift.head_object(*layout.cas_path(shared[0].hash))[0] == 200
    assert (m / "big").read_bytes() == data["big"]
    assert (m / "small").read_bytes() == data["small"]
    assert (m / "sub" / "small-link").read_bytes() == data["small"]
    assert (m / "sub" / "inner").read_bytes() == b"inner\n"
    cloudfs_mount.remount()  # nothing cached: every byte comes from Swift again
    assert (m / "big").read_bytes() == data["big"]
    assert (m / "sub" / "small-link").read_bytes() == data["small"]


def test_a_file_being_written_is_copied_at_its_committed_version(cloudfs_mount):
    """A clone during a write to the source copies the source's last committed version.
    (The writer is another process: a descriptor inherited by a forked child, here `cloudfs
    cp`, is closed at its exec, and every close commits: see "Every close(2)" above.)"""
    m = cloudfs_mount.path
    v1 = os.urandom(2 * MiB)
    (m / "f").write_bytes(v1)
    script = ("import os, sys; f = open(sys.argv[1], 'r+b'); f.write(os.urandom(1 << 20));"
              " f.flush(); print('written', flush=True); sys.stdin.readline();"
              " f.write(b'more'); f.close()")
    writer = subprocess.Popen([sys.executable, "-c", script, str(m / "f")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline() == "written\n"
        cloudfs("cp", "--reflink", str(m / "f"), str(m / "g"))
        assert (m / "g").read_bytes() == v1
        writer.stdin.write("go\n")
        writer.stdin.close()
        assert writer.wait(60) == 0
    finally:
        writer.kill()
    assert (m / "g").read_bytes() == v1
    assert (m / "f").read_bytes() != v1 and os.stat(m / "f").st_size == 2 * MiB


def test_read_only_snapshot_refuses_every_change_with_erofs(cloudfs_mount):
    """`cloudfs snapshot --read-only SRC DST`: reading works; writing, creating, unlinking,
    renaming into or out of it, setattr, xattrs and links answer EROFS; the source stays
    writable, and a copy of the snapshot is writable."""
    m = cloudfs_mount.path
    data = make_tree(m / "src")
    out = cloudfs("snapshot", "--read-only", "--json", str(m / "src"), str(m / "snap"))
    assert json.loads(out.stdout)["copies"][0]["read_only"] is True
    s = m / "snap"
    assert (s / "big").read_bytes() == data["big"]
    refused = [
        lambda: os.close(os.open(s / "big", os.O_RDWR)),
        lambda: os.close(os.open(s / "small", os.O_WRONLY | os.O_TRUNC)),
        lambda: os.close(os.open(s / "new", os.O_WRONLY | os.O_CREAT, 0o644)),
        lambda: os.mkdir(s / "sub" / "d"),
        lambda: os.unlink(s / "small"),
        lambda: os.rmdir(s / "sub" / "deeper"),
        lambda: os.rename(s / "small", s / "renamed"),
        lambda: os.rename(s / "small", m / "out"),
        lambda: os.rename(m / "src" / "empty", s / "in"),
        lambda: os.rename(s, m / "moved"),
        lambda: os.chmod(s / "big", 0o600),
        lambda: os.utime(s / "big"),
        lambda: os.truncate(s / "big", 0),
        lambda: os.setxattr(s / "big", "user.x", b"1"),
        lambda: os.removexattr(s / "big", "user.color"),
        lambda: os.link(s / "big", m / "hard"),
        lambda: os.link(m / "src" / "big", s / "hard"),
        lambda: os.symlink("x", s / "sl"),
        lambda: os.mkfifo(s / "ff"),
    ]
    for i, change in enumerate(refused):
        with pytest.raises(OSError) as exc:
            change()
        assert exc.value.errno == errno.EROFS, (i, exc.value)
    out = cloudfs("cp", "--reflink", str(m / "src" / "small"), str(s / "x"), ok=False)
    assert out.returncode == 2 and "EROFS" in out.stderr
    (m / "src" / "big").write_bytes(b"the source is writable")
    assert (s / "big").read_bytes() == data["big"]
    assert kept(s) == kept(m / "src") | {"big": kept(s)["big"]}
    cloudfs("cp", "--reflink", str(s), str(m / "thaw"))
    (m / "thaw" / "big").write_bytes(b"a copy of a snapshot is writable")
    cloudfs_mount.remount()  # the mark is in the namespace
    with pytest.raises(OSError) as exc:
        (s / "small").write_bytes(b"")
    assert exc.value.errno == errno.EROFS


def test_release_snapshot_makes_it_writable_then_removable(cloudfs_mount):
    """`cloudfs release-snapshot DST` makes a read-only snapshot writable again, so that
    `rm -rf` removes it; a path that is not a snapshot's root is refused."""
    m = cloudfs_mount.path
    make_tree(m / "src")
    cloudfs("snapshot", "--read-only", str(m / "src"), str(m / "snap"))
    out = cloudfs("release-snapshot", str(m / "snap" / "sub"), ok=False)
    assert out.returncode == 2 and "not the root of a read-only snapshot" in out.stderr
    with pytest.raises(OSError) as exc:
        os.unlink(m / "snap" / "small")
    assert exc.value.errno == errno.EROFS
    cloudfs("release-snapshot", str(m / "snap"))
    subprocess.run(["rm", "-rf", str(m / "snap")], check=True)
    assert sorted(os.listdir(m)) == ["src"]


def test_cp_errors_are_one_line(cloudfs_mount, tmp_path):
    """Clear errors, exit status 2, nothing copied: a path outside any cloudfs, a destination
    that exists, a directory into itself, several sources to a non-directory, a missing source,
    a snapshot of a file, --reflink=never."""
    m = cloudfs_mount.path
    make_tree(m / "src")
    outside = tmp_path / "outside"
    outside.write_bytes(b"x")
    cases = {
        "not inside a mounted cloudfs": [str(outside), str(m / "x")],
        "is not inside a mounted cloudfs": [str(m / "src" / "big"), str(tmp_path / "y")],
        "exists": [str(m / "src" / "big"), str(m / "src" / "small")],
        "into itself": [str(m / "src"), str(m / "src" / "sub" / "again")],
        "not an existing directory": [str(m / "src" / "big"), str(m / "src" / "small"),
                                      str(m / "nodir")],
        "No such file": [str(m / "missing"), str(m / "x")],
    }
    for message, args in cases.items():
        out = cloudfs("cp", "--reflink", *args, ok=False)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    out = cloudfs("snapshot", str(m / "src" / "big"), str(m / "snapfile"), ok=False)
    assert out.returncode == 2 and "is not one" in out.stderr
    out = cloudfs("cp", "--reflink=never", str(m / "src" / "big"), str(m / "x"), ok=False)
    assert out.returncode == 2
    assert sorted(os.listdir(m)) == ["src"]
