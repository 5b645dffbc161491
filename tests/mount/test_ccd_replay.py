"""`ccd replay`: the closed files a write-back mount left in its journal reach Swift and the
namespace without a mount (the host rebooted and the filesystem is not mounted here again),
with the mount's own replay code; refused while a mount holds the journal, and a mount
starting while it runs is refused. Real mount, real Swift (through the fault proxy, to hold
the uploads back), SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import BACKENDS
from mountsession import MiB, MountSession
from test_write_back import cli, committed, journal_files, restart, swift_down, sync

pytestmark = [pytest.mark.mount, pytest.mark.swift]


@pytest.fixture
def wb(cloudfs_mount: MountSession) -> MountSession:
    """The test's mount, restarted in write-back mode."""
    restart(cloudfs_mount, write_back="true")
    return cloudfs_mount


def ccd(mount: MountSession, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ccd.cli", "--config", str(mount.config),
                           "replay", *args], capture_output=True, text=True, timeout=300)


def _closed_then_killed(wb: MountSession, fault_proxy) -> dict[str, bytes]:
    """Closed files of every kind (new, overwritten, appended, several versions of one file)
    written while Swift refuses every PUT, then SIGKILL: all of them only in the journal.
    What each path must hold."""
    wb.expect_errors = True  # SIGKILL
    (wb.path / "over").write_bytes(b"old content")
    (wb.path / "app").write_bytes(b"head:")
    sync(wb)
    swift_down(wb, fault_proxy)
    expect = {"new": os.urandom(30_000), "over": os.urandom(2 * MiB),
              "app": b"head:" + os.urandom(777), "twice": b"second version"}
    (wb.path / "new").write_bytes(expect["new"])
    (wb.path / "over").write_bytes(expect["over"])
    with open(wb.path / "app", "ab") as f:
        f.write(expect["app"][5:])
    (wb.path / "twice").write_bytes(b"first version, longer")
    (wb.path / "twice").write_bytes(expect["twice"])
    assert committed(wb, "over") == (len(b"old content"), 1)
    wb.kill()
    assert len(journal_files(wb)) == 5
    return expect


@BACKENDS
def test_ccd_replay_uploads_a_dead_mounts_journal(wb, fault_proxy, backend):
    """After SIGKILL of a write-back mount whose closed files could not be uploaded, `ccd
    replay` (no mount) uploads and commits them: the namespace has them, the journal is
    empty, and a mount afterwards reads them exactly (from Swift: nothing is left to
    replay)."""
    expect = _closed_then_killed(wb, fault_proxy)
    fault_proxy.clear_rules()
    done = ccd(wb)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "closed files uploaded and committed from the write-back journal: 5" in done.stdout
    assert journal_files(wb) == []
    for name, data in expect.items():
        assert committed(wb, name)[0] == len(data), name
    again = ccd(wb)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout
    wb.start()
    for name, data in expect.items():
        assert (wb.path / name).read_bytes() == data, name


def test_ccd_replay_is_refused_while_mounted(wb):
    """A mount holds its journal (and uploads it itself): `ccd replay` with the same
    cache_dir says so and exits 2, changing nothing."""
    done = ccd(wb)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "in use by another process" in done.stderr and "ccd replay" in done.stderr


def test_a_mount_starting_during_ccd_replay_is_refused(wb, fault_proxy):
    """While `ccd replay` works on the journal (here waiting for Swift), a mount of the
    filesystem with the same cache_dir is refused (the journal's lock), so no record is
    uploaded twice at once; once Swift answers the replay finishes, and the next mount
    finds everything committed."""
    expect = _closed_then_killed(wb, fault_proxy)
    fault_proxy.clear_requests()
    replaying = subprocess.Popen([sys.executable, "-m", "ccd.cli", "--config",
                                  str(wb.config), "replay"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not fault_proxy.seen("PUT", r"^/v1/"):  # the replay is uploading
            assert replaying.poll() is None, replaying.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        refused = cli("mount", "--foreground", "--config", str(wb.config), str(wb.path),
                      timeout=60)
        assert refused.returncode == 2, refused.stderr
        assert "in use by another process" in refused.stderr
        fault_proxy.clear_rules()
        out, err = replaying.communicate(timeout=120)
    finally:
        if replaying.poll() is None:
            replaying.kill()
            replaying.wait()
    assert replaying.returncode == 0, out + err
    assert journal_files(wb) == []
    wb.start()
    for name, data in expect.items():
        assert (wb.path / name).read_bytes() == data, name


def test_ccd_replay_with_swift_unreachable_keeps_the_journal(wb, fault_proxy):
    """`ccd replay` while Swift refuses every PUT gives up after --stall seconds without
    progress: exit 1, the count of files left, and every record still in the journal; run
    again once Swift answers, it uploads them all."""
    expect = _closed_then_killed(wb, fault_proxy)
    failed = ccd(wb, "--stall", "3")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "5 closed files" in failed.stderr and "stay in the journal" in failed.stderr
    assert "kept because of errors: 5" in failed.stdout
    assert len(journal_files(wb)) == 5
    assert committed(wb, "new")[0] == 0
    fault_proxy.clear_rules()
    done = ccd(wb)
    assert done.returncode == 0, done.stdout + done.stderr
    assert journal_files(wb) == []
    for name, data in expect.items():
        assert committed(wb, name)[0] == len(data), name
