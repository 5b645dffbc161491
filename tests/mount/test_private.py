"""The namespace is private: its database, the cache and spool directories and the log are
readable by their owner only (docs/OPERATIONS.md, "Files and their modes")."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mount, pytest.mark.swift]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def namespace_files(db: Path) -> list[Path]:
    return [p for p in (db, *(Path(f"{db}{s}") for s in ("-wal", "-shm", "-mount")))
            if p.exists()]


def test_namespace_and_cache_are_private(cloudfs_mount, tmp_path):
    """mkfs, mount and ccd create the database files 0600 and the cache and spool 0700;
    another local user cannot read the database."""
    (cloudfs_mount.path / "secret-name").write_bytes(b"x" * 100)
    files = namespace_files(cloudfs_mount.database)
    assert {p.name for p in files} >= {"ns.db", "ns.db-wal", "ns.db-shm", "ns.db-mount"}
    for p in files:
        assert mode(p) == 0o600, p
    cache = tmp_path / "cache"
    assert mode(cache) == 0o700
    assert mode(cache / "spool") == 0o700
    denied = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(cloudfs_mount.database)],
                            capture_output=True)
    assert denied.returncode != 0 and b"Permission denied" in denied.stderr
    assert b"secret-name" not in denied.stdout


def test_loose_database_is_tightened_with_a_warning(cloudfs_mount):
    """An existing database readable by others is made private when mounted, one warning per
    file naming it."""
    cloudfs_mount.stop()
    for p in namespace_files(cloudfs_mount.database):
        p.chmod(0o644)
    cloudfs_mount.start()
    for p in namespace_files(cloudfs_mount.database):
        assert mode(p) == 0o600, p
    log = cloudfs_mount.log_text()
    assert f"{cloudfs_mount.database} was readable by others (mode 0644): made private" in log
    cloudfs_mount.expect_errors = False


def test_background_mount_log_is_private(cloudfs_mount, tmp_path):
    """A daemon started from a shell logs to <cache_dir>/mount.log, mode 0600."""
    cloudfs_mount.stop()
    mnt = cloudfs_mount.path
    proc = subprocess.run([sys.executable, "-m", "cloudfs", "mount", "--config",
                           str(cloudfs_mount.config), str(mnt)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    try:
        log = tmp_path / "cache" / "mount.log"
        assert mode(log) == 0o600
        assert "mounted" in log.read_text()
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
    for _ in range(200):
        if not os.path.ismount(mnt):
            break
        time.sleep(0.05)
    assert not os.path.ismount(mnt)


def test_command_line_log_level_beats_the_file(cloudfs_mount):
    """Flags win over the config file: `--log-level DEBUG` with `log_level = ERROR` logs at
    DEBUG."""
    cloudfs_mount.stop()
    cloudfs_mount.configure("cloudfs", log_level="ERROR")
    cloudfs_mount.start(options=("--log-level", "DEBUG"))
    (cloudfs_mount.path / "f").write_bytes(b"x")
    assert "DEBUG " in cloudfs_mount.log_text()
    cloudfs_mount.stop()
    before = len(cloudfs_mount.log_text())
    cloudfs_mount.start()
    (cloudfs_mount.path / "g").write_bytes(b"x")
    cloudfs_mount.stop()
    later = cloudfs_mount.log_text()[before:]
    assert "DEBUG " not in later and "INFO " not in later
    cloudfs_mount.start()


def test_ccd_creates_its_spool_private(cloudfs_mount, tmp_path):
    """ccd creates the cache and spool directories it needs 0700, like the mount."""
    cloudfs_mount.stop()
    cache = tmp_path / "cache"
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    proc = subprocess.run([sys.executable, "-m", "ccd.cli", "--config", str(cloudfs_mount.config),
                           "once"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert mode(cache) == 0o700 and mode(cache / "spool") == 0o700
    cloudfs_mount.start()
