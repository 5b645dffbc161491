"""When namespace changes become durable on a mount (docs/SEMANTICS.md, "Durability"): name
and attribute changes commit lazily; close after a content commit, fsync of a file or a
directory, `cloudfs sync` and a background flush every second are durable barriers. Counted
with `cloudfs stats` (namespace_lazy_commits, namespace_syncs, namespace_unsynced)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import BACKENDS
from test_tree import daemon_stats

pytestmark = [pytest.mark.mount, pytest.mark.swift]


@BACKENDS
def test_close_after_a_write_makes_the_create_and_the_attributes_durable(cloudfs_mount, backend):
    before = daemon_stats(cloudfs_mount.path)
    path = cloudfs_mount.path / "f"
    with open(path, "wb") as f:
        f.write(b"content")
        os.fchmod(f.fileno(), 0o600)
        os.utime(f.fileno(), ns=(1, 2))
    after = daemon_stats(cloudfs_mount.path)
    # create, chmod and utimes commit lazily (the content commit too where a barrier can run
    # beside the loop: SQLite), and the close returns once all of it is durable
    assert after["namespace_lazy_commits"] >= before["namespace_lazy_commits"] + 3
    if backend == "sqlite":
        assert after["namespace_unsynced"] == 0
        assert after["namespace_syncs"] > before["namespace_syncs"]
    # On PostgreSQL the content commit is itself a synchronous commit (covering every record
    # before it), but the mount's own housekeeping commits lazily right after the close (the
    # release of the file's hold, heartbeats), so nothing is left to count here.
    assert path.read_bytes() == b"content"


@BACKENDS
def test_fsync_of_a_directory_and_cloudfs_sync_are_durable_barriers(cloudfs_mount, backend):
    # Nothing unsynced when they return is the claim, counted on SQLite only: on PostgreSQL
    # the mount's heartbeats commit on the same connection, lazily (the beat) and durably
    # (reaping dead mounts), so a beat falling in between moves both counts.
    before = daemon_stats(cloudfs_mount.path)
    os.mkdir(cloudfs_mount.path / "d")
    fd = os.open(cloudfs_mount.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    after = daemon_stats(cloudfs_mount.path)
    if backend == "sqlite":
        assert after["namespace_unsynced"] == 0
        assert after["namespace_syncs"] > before["namespace_syncs"]
    os.mkdir(cloudfs_mount.path / "e")
    subprocess.run([sys.executable, "-m", "cloudfs", "sync", str(cloudfs_mount.path)],
                   check=True, capture_output=True)
    last = daemon_stats(cloudfs_mount.path)
    if backend == "sqlite":
        assert last["namespace_unsynced"] == 0
        assert last["namespace_syncs"] > after["namespace_syncs"]


def test_a_lazy_change_is_durable_within_the_flush_interval(cloudfs_mount):
    before = daemon_stats(cloudfs_mount.path)
    os.mkdir(cloudfs_mount.path / "d")
    deadline = time.monotonic() + 10
    while daemon_stats(cloudfs_mount.path)["namespace_unsynced"] and time.monotonic() < deadline:
        time.sleep(0.2)
    after = daemon_stats(cloudfs_mount.path)
    assert after["namespace_unsynced"] == 0
    assert after["namespace_syncs"] > before["namespace_syncs"]
