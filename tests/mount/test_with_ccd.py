"""The mount and ccd together: files written through the mount are consolidated by
`ccd once` and read back identical, also by a mount that had cached the old segment map;
files appended through the mount are settled by `ccd once` into one whole-file object."""

from __future__ import annotations

import os
import subprocess
import sys

import blake3
import pytest

from sqlfsn import ROOT_INODE, Namespace, Piece

pytestmark = [pytest.mark.mount, pytest.mark.swift]

MiB = 1 << 20


def ccd(config, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "ccd.cli", "--config", str(config), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def tagged_tmp_segments(raw, layout) -> list[str]:
    names = []
    for obj in raw.list_container(layout.tmp_container, prefix=".tmp/"):
        status, headers = raw.head_object(layout.tmp_container, obj["name"])
        if status == 200 and "x-object-meta-bigfile" in {k.lower() for k in headers}:
            names.append(obj["name"])
    return names


def test_ccd_once_after_mount_writes(cloudfs_mount, raw_swift, fault_proxy):
    """After writing files through the mount, `ccd once` leaves no .tmp segment tagged and
    every file reads back identical, also through segment maps the mount had cached."""
    m = cloudfs_mount.path
    files = {"big": os.urandom(9 * MiB + 5), "one": os.urandom(MiB // 2 + 3),
             "small": b"tiny", "dup": None}
    files["dup"] = files["big"]
    for name, data in files.items():
        (m / name).write_bytes(data)
    for name, data in files.items():
        assert (m / name).read_bytes() == data  # caches the segment map of "big"
    assert tagged_tmp_segments(raw_swift, cloudfs_mount.layout)
    ccd(cloudfs_mount.config, "once", "--retire-grace", "0")
    assert tagged_tmp_segments(raw_swift, cloudfs_mount.layout) == []
    fault_proxy.clear_requests()
    for name, data in files.items():
        assert (m / name).read_bytes() == data
    manifest_reads = fault_proxy.seen("GET", r"multipart-manifest=get")
    assert manifest_reads, "the cached segment map was stale and must have been read again"
    cloudfs_mount.remount()
    for name, data in files.items():
        assert (m / name).read_bytes() == data


def test_ccd_settles_a_file_appended_through_the_mount(cloudfs_mount, raw_swift, fault_proxy):
    """Many small pieces make reads slower, so ccd settles such a file in the background once
    it has not changed for settle_grace (default 10 minutes): the file becomes one object
    named by the blake3 of its whole content, and its bytes, size and times do not change."""
    path = cloudfs_mount.path / "journal"
    records = [os.urandom(300 + (i * 37) % 400) for i in range(200)]
    for record in records:
        with open(path, "ab") as f:
            f.write(record)
    data = b"".join(records)  # ~100 KiB: above the mount's 64 KiB small-file threshold
    before = os.stat(path)
    with Namespace.open(cloudfs_mount.database) as ns:
        inode = ns.lookup(ROOT_INODE, b"journal").inode
        old = ns.pieces(inode)
    assert len(old) == 200
    held = open(path, "rb")  # noqa: SIM115 - a descriptor opened before the settle
    try:
        out = ccd(cloudfs_mount.config, "once", "--settle-grace", "0", "--retire-grace", "0")
        assert "files settled into one whole-file content: 1" in out, out
        digest = blake3.blake3(data).hexdigest()
        with Namespace.open(cloudfs_mount.database) as ns:
            assert ns.pieces(inode) == [Piece(digest, 0, len(data))]
        layout = cloudfs_mount.layout
        status, headers, body = raw_swift.get_object(*layout.cas_path(digest))
        assert status == 200 and body == data
        assert "x-static-large-object" not in headers  # consolidated in the same pass
        fault_proxy.clear_requests()
        assert path.read_bytes() == data  # a new open reads the settled piece
        gets = [p for m, p in fault_proxy.requests if m == "GET"]
        assert gets and all(digest in p for p in gets), gets
        after = os.stat(path)
        assert (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == \
            (before.st_size, before.st_mtime_ns, before.st_ctime_ns)
        assert held.read() == data  # the old pieces, still stored
    finally:
        held.close()
    ccd(cloudfs_mount.config, "cleanup", "--grace", "0")
    for piece in old:
        assert raw_swift.head_object(*layout.cas_path(piece.hash))[0] == 404
    assert path.read_bytes() == data
    with open(path, "ab") as f:  # appending goes on as before, on top of the settled piece
        f.write(b"more\n")
    assert path.read_bytes() == data + b"more\n"
