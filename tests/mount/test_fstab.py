"""Mounting at boot: `mount -t fuse.cloudfs CONFIG MOUNTPOINT -o ...` through mount.fuse3's
helper convention, `umount`, and fstab lines through systemd's fstab generator
(docs/OPERATIONS.md, "Mounting at boot")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import in_mount_table

pytestmark = [pytest.mark.mount, pytest.mark.swift]

GENERATOR = Path("/lib/systemd/system-generators/systemd-fstab-generator")


def daemons(config: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"cloudfs {config} "],
                         capture_output=True, text=True)
    return out.stdout.split()


def test_mount_helper_convention_and_umount(cloudfs_mount):
    """`mount -t fuse.cloudfs CONFIG MOUNTPOINT -o OPTIONS` runs mount.fuse3, which runs
    `cloudfs CONFIG MOUNTPOINT -o OPTIONS`: that mounts (FUSE options pass through, cloudfs
    settings such as stop_timeout override the file, fstab-only options are dropped) and
    returns once mounted (a true/false setting alone, `write_back`, turns it on);
    `umount` unmounts and the daemon exits. (mount(8) itself runs its
    helpers with a fixed PATH, where `scripts/install-system` puts `mount.fuse.cloudfs`; here
    mount.fuse3 is run as mount(8) runs it, with the test's cloudfs on PATH.)"""
    cloudfs_mount.stop()
    mnt, config = cloudfs_mount.path, cloudfs_mount.config
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["/sbin/mount.fuse3", str(config), str(mnt), "-t", "cloudfs", "-o",
                           "rw,allow_other,_netdev,nofail,noatime,stop_timeout=5,write_back"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    try:
        assert in_mount_table(mnt)
        with open("/proc/mounts") as f:
            line = next(x for x in f if x.split()[1] == str(mnt))
        assert line.split()[2] == "fuse.cloudfs"
        assert "allow_other" in line
        (mnt / "f").write_bytes(b"mounted by mount(8)")
        assert (mnt / "f").read_bytes() == b"mounted by mount(8)"
        assert len(daemons(config)) == 1
        status = subprocess.run([sys.executable, "-m", "cloudfs", "status", str(mnt)],
                                capture_output=True, text=True, timeout=60)
        assert "write-back   on" in status.stdout, status.stdout + status.stderr
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    deadline = time.monotonic() + 30
    while daemons(config) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemons(config) == [] and not in_mount_table(mnt)
    cloudfs_mount.start()
    assert (mnt / "f").read_bytes() == b"mounted by mount(8)"


def test_fstab_line_makes_a_valid_mount_unit(cloudfs_mount, tmp_path):
    """systemd's fstab generator turns an fstab line of type fuse.cloudfs into a mount unit
    (and an automount unit with x-systemd.automount) that `systemd-analyze verify` accepts;
    _netdev orders it after the network."""
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{cloudfs_mount.config} /mnt/cloudfs-test fuse.cloudfs "
                     "_netdev,x-systemd.automount,allow_other 0 0\n")
    out = [tmp_path / d for d in ("normal", "early", "late")]
    for d in out:
        d.mkdir()
    subprocess.run([str(GENERATOR), *map(str, out)], check=True, env={**os.environ,
                   "SYSTEMD_FSTAB": str(fstab)})
    mount = out[0] / "mnt-cloudfs\\x2dtest.mount"
    automount = out[0] / "mnt-cloudfs\\x2dtest.automount"
    text = mount.read_text()
    assert "Type=fuse.cloudfs" in text and f"What={cloudfs_mount.config}" in text
    assert (out[0] / "remote-fs.target.requires" / automount.name).exists()
    proc = subprocess.run(["systemd-analyze", "verify", str(mount), str(automount)],
                          capture_output=True, text=True, timeout=60, cwd=out[0])
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
