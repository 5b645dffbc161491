"""`cloudfs status` and `cloudfs stats`: the daemon's control channel (docs/OPERATIONS.md,
"Status")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.mount, pytest.mark.swift]

MiB = 1 << 20
CLOUDFS = [sys.executable, "-m", "cloudfs"]


def status(mnt, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [*CLOUDFS, "status", str(mnt), *args]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def status_json(mnt) -> dict:
    proc = status(mnt, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_status_shows_uploads_open_files_and_limits(cloudfs_mount):
    """The status shows uploads in flight (files, bytes, oldest), open files, the local disk
    against its limit, Swift requests, the namespace; as a table and as JSON."""
    from wiring import control

    path = cloudfs_mount.path / "growing"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, os.urandom(6 * MiB))  # past the writer's 4 MiB hand-off: spooled
        # Asked from this process: a forked child would close its copy of `fd` at exec, and
        # every close commits what was written so far (docs/SEMANTICS.md).
        st = control.request(cloudfs_mount.path, "status")
        assert st["uploads"]["files"] == 1
        assert st["uploads"]["bytes"] == 6 * MiB
        assert st["open_files"] == {"all": 1, "for_writing": 1}
        assert st["local_disk"]["limit"] == 1 << 30
        assert st["local_disk"]["used"] > 0  # the spool of the segment in flight
        assert st["swift"]["requests"]["PUT"] >= 1
        assert st["namespace"]["backend"] == "sqlite"
        assert st["namespace"]["database"] == str(cloudfs_mount.database)
        assert st["namespace"]["mount_timeout"] == 30
        [me] = st["mounts"]  # SQLite: one mount, which counts what it holds itself
        assert me["this"] and me["alive"] and me["pid"] == cloudfs_mount.proc.pid
        assert me["mountpoint"] == str(cloudfs_mount.path)
        assert (me["open_files"], me["write_leases"]) == (1, 1)
        from cloudfs.status import render

        table = render(st)
        assert "uploads      1 files, 6.0 MiB not yet committed" in table
        assert "open files   1 (1 for writing)" in table
        assert "1 mount(s) alive" in table
        assert f"pid {me['pid']} {cloudfs_mount.path} (this one): since " in table
        assert "alive; 1 open files, 1 write leases" in table
    finally:
        os.close(fd)
    st = status_json(cloudfs_mount.path)
    assert st["uploads"]["files"] == 0 and st["open_files"]["all"] == 0


def test_status_shows_the_last_ccd_pass(cloudfs_mount):
    (cloudfs_mount.path / "f").write_bytes(os.urandom(3 * MiB))
    proc = subprocess.run([sys.executable, "-m", "ccd.cli", "--config",
                           str(cloudfs_mount.config), "once"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = status_json(cloudfs_mount.path)["ccd"]["consolidation"]
    assert last["counts"]["contents_consolidated"] == 1
    assert time.time() - last["at"] < 120
    table = status(cloudfs_mount.path).stdout
    assert "ccd          consolidation: last pass" in table
    assert "1 contents_consolidated" in table


ASK = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(json.dumps({"op": sys.argv[2]}).encode() + b"\\n")
print(s.makefile().readline(), end="")
"""


def test_only_the_owner_and_root_may_ask(cloudfs_mount):
    """Another local user is refused (EACCES): the status is not a file of the mount that any
    of its users could read."""
    from wiring.control import mount_device, runtime_dirs, socket_name

    sock = runtime_dirs()[0] / socket_name(mount_device(cloudfs_mount.path))
    for op in ("status", "stats"):
        proc = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", ASK,
                               str(sock), op], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        answer = json.loads(proc.stdout)
        assert answer["ok"] is False and answer["errno"] == 13, answer
        assert "owner and root" in answer["error"]
    assert os.listxattr(cloudfs_mount.path) == []


def test_not_a_mount_and_a_stopped_daemon(cloudfs_mount, tmp_path):
    """No daemon: one line naming the path, exit 2; a stopped (SIGSTOP) daemon does not hang
    the command: it gives up after its timeout."""
    proc = status(tmp_path)
    assert proc.returncode == 2 and "not a cloudfs mount point" in proc.stderr
    cloudfs_mount.proc.send_signal(signal.SIGSTOP)
    try:
        proc = status(cloudfs_mount.path, "--timeout", "2")
    finally:
        cloudfs_mount.proc.send_signal(signal.SIGCONT)
    assert proc.returncode == 2 and "does not answer" in proc.stderr


def test_stats_json(cloudfs_mount):
    proc = subprocess.run([*CLOUDFS, "stats", str(cloudfs_mount.path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert {"swift_requests", "open_files", "writes_in_progress", "namespace_commits",
            "fuse_requests"} <= set(stats)
