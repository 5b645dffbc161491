"""The mount and ccd together: files written through the mount are consolidated by
`ccd once` and read back identical, also by a mount that had cached the old segment map."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
