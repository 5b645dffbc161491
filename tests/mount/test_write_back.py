"""Write-back mode (config `write_back = true`), on a real mount and a real Swift: every claim
of docs/SEMANTICS.md's write-back section. Swift is made unreachable (or slow) through the
test's fault proxy to hold closed files in the journal while the test looks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BACKENDS
from mountsession import MiB, MountSession

from sqlfsn import Namespace

pytestmark = [pytest.mark.mount, pytest.mark.swift]

PUTS = r"^/v1/"  # every object request


def restart(mount: MountSession, mount_options: tuple[str, ...] = (), **settings: str) -> None:
    """Restart the mount with these [cloudfs] settings (and `cloudfs mount` options). First
    wait until its control channel answers: the daemon's own stat of the mount point after
    INIT is done by then (an unmount while that stat is in flight fails with EBUSY, and the
    daemon would not stop)."""
    deadline = time.monotonic() + 60
    while cli("status", str(mount.path)).returncode != 0:
        assert time.monotonic() < deadline, "the mount's control channel never answered"
        time.sleep(0.2)
    mount.stop()
    mount.configure("cloudfs", **settings)
    mount.start(mount_options=mount_options)


@pytest.fixture
def wb(cloudfs_mount: MountSession) -> MountSession:
    """The test's mount, restarted in write-back mode."""
    restart(cloudfs_mount, write_back="true")
    return cloudfs_mount


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudfs", *args], capture_output=True,
                          text=True, timeout=timeout)


def status(mount: MountSession) -> dict:
    done = cli("status", "--json", str(mount.path))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sync(mount: MountSession) -> None:
    done = cli("sync", str(mount.path))
    assert done.returncode == 0, done.stderr


def swift_down(mount: MountSession, fault_proxy) -> None:
    """Every PUT answers 503 (uploads fail and are retried, which the log says)."""
    mount.allow("upload of the closed version failed", "transient failure")
    fault_proxy.add_rule("PUT", PUTS, "status:503", times=-1)


def committed(mount: MountSession, name: str) -> tuple[int, int]:
    """(size, version) of /name as the namespace has committed it (what another mount sees)."""
    with Namespace.open(mount.database) as ns:
        attr = ns.lookup(1, name.encode())
        return attr.size, attr.version


def journal_files(mount: MountSession) -> list[Path]:
    """The journal's files that hold something."""
    cache = mount.path.parent / "cache"
    return [p for d in cache.glob("journal-*") for p in d.glob("j-*") if p.stat().st_size]


def test_close_returns_before_the_upload(wb, fault_proxy):
    """close returns once the file is durable in the local journal, before it is in Swift:
    with every Swift PUT failing, closes still return 0, readers on this mount see the new
    content at once, and `cloudfs status` shows the backlog."""
    swift_down(wb, fault_proxy)
    files = {f"f{i}": os.urandom(size) for i, size in enumerate((0, 1, 4096, 70_000, 3 * MiB))}
    for name, data in files.items():
        (wb.path / name).write_bytes(data)
    for name, data in files.items():
        assert (wb.path / name).read_bytes() == data
        assert (wb.path / name).stat().st_size == len(data)
    backlog = status(wb)["write_back"]
    written = [data for data in files.values() if data]  # an empty file is created, not written
    assert backlog["enabled"] and backlog["files"] == len(written)
    assert backlog["bytes"] == sum(map(len, written))
    assert f"write-back   on: {len(written)} closed files" in cli("status", str(wb.path)).stdout
    fault_proxy.clear_rules()
    sync(wb)
    assert status(wb)["write_back"]["files"] == 0


def test_mount_option_overrides_the_config(cloudfs_mount, fault_proxy):
    """`-o write_back` turns write-back on for that mount whatever the config says (a close
    with every Swift PUT failing returns 0, `cloudfs status` says on), and `-o nowrite_back`
    turns it off (a close returns once its file is committed, status says off)."""
    mount = cloudfs_mount
    restart(mount, ("-o", "noatime,write_back"), write_back="false")
    swift_down(mount, fault_proxy)
    (mount.path / "wb").write_bytes(b"written back")
    assert committed(mount, "wb")[0] == 0
    assert status(mount)["write_back"]["enabled"]
    fault_proxy.clear_rules()
    sync(mount)
    restart(mount, ("-o", "nowrite_back"), write_back="true")
    assert not status(mount)["write_back"]["enabled"]
    assert "write-back   off" in cli("status", str(mount.path)).stdout
    fault_proxy.add_rule("PUT", PUTS, "stall", seconds=2, times=1)
    (mount.path / "direct").write_bytes(b"uploaded at close")
    assert committed(mount, "direct")[0] == len(b"uploaded at close")
    assert (mount.path / "wb").read_bytes() == b"written back"


def test_other_mounts_see_a_file_once_uploaded(wb, fault_proxy):
    """Other mounts (which read the namespace) see a closed file once it is uploaded and
    committed; `cloudfs sync` returns once every file closed before it is."""
    path = wb.path / "doc"
    path.write_bytes(b"v1")
    sync(wb)
    assert committed(wb, "doc") == (2, 1)
    swift_down(wb, fault_proxy)
    path.write_bytes(b"version 2")
    assert path.read_bytes() == b"version 2"
    assert committed(wb, "doc") == (2, 1), "committed before it was in Swift"
    syncer = subprocess.Popen([sys.executable, "-m", "cloudfs", "sync", str(wb.path)])
    time.sleep(2)
    assert syncer.poll() is None, "sync returned while the upload could not be done"
    fault_proxy.clear_rules()
    assert syncer.wait(60) == 0
    assert committed(wb, "doc") == (9, 2)


def assert_in_swift_without_the_journal(wb, files: dict[str, bytes]) -> None:
    """Stop the mount, delete its write-back journal, start it again: every file of `files`
    (path under the mount -> bytes) reads back exactly, so it came from Swift."""
    wb.stop()
    for d in (wb.path.parent / "cache").glob("journal-*"):
        for p in d.glob("j-*"):
            p.unlink()
    wb.start()
    for name, data in files.items():
        assert (wb.path / name).read_bytes() == data


def test_content_is_in_swift_after_sync(wb, tmp_path):
    """Once `cloudfs sync` returns, the closed files are in Swift: they read back exactly
    after a remount without the local journal."""
    files = {f"d/f{i}": os.urandom(i * 7919) for i in range(30)}
    (wb.path / "d").mkdir()
    for name, data in files.items():
        (wb.path / name).write_bytes(data)
    sync(wb)
    assert_in_swift_without_the_journal(wb, files)


def test_uploads_commit_lazily_under_a_shared_barrier(wb, tmp_path):
    """An upload's commit does not stop the event loop for a disk sync of its own (SQLite):
    it commits lazily and waits for a barrier shared with the other uploads and closes, run
    beside the loop; the journal file goes only after it. After `cloudfs sync` every commit
    is durable, and the content reads back without the journal."""
    from test_tree import daemon_stats

    before = daemon_stats(wb.path)
    files = {f"f{i}": os.urandom(100 + i) for i in range(20)}
    for name, data in files.items():
        (wb.path / name).write_bytes(data)
    sync(wb)
    after = daemon_stats(wb.path)
    durable = ((after["namespace_commits"] - after["namespace_lazy_commits"])
               - (before["namespace_commits"] - before["namespace_lazy_commits"]))
    assert durable == 0, "an upload made a durable commit on the event loop"
    assert after["namespace_unsynced"] == 0
    assert status(wb)["write_back"]["files"] == 0
    assert_in_swift_without_the_journal(wb, files)


def test_fsync_waits_for_swift(wb, fault_proxy):
    """fsync(2) of a file returns once its content is in Swift and committed."""
    path = wb.path / "synced"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"x" * 100_000)
        fault_proxy.add_rule("PUT", PUTS, "stall", seconds=2, times=1)
        started = time.monotonic()
        os.fsync(fd)
        assert time.monotonic() - started >= 1.5, "fsync did not wait for the upload"
        assert committed(wb, "synced")[0] == 100_000
    finally:
        os.close(fd)


def test_fsync_of_a_directory_waits_for_every_closed_file(wb, fault_proxy):
    """fsync(2) of a directory of the mount waits like `cloudfs sync` (syncfs(2) is not
    forwarded to FUSE filesystems by the kernel)."""
    fault_proxy.add_rule("PUT", PUTS, "stall", seconds=2, times=1)
    (wb.path / "a").write_bytes(b"a" * 5000)
    assert committed(wb, "a")[0] == 0
    fd = os.open(wb.path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    assert committed(wb, "a")[0] == 5000


def test_syncfs_is_not_forwarded_and_does_not_wait(cloudfs_mount, fault_proxy):
    """syncfs(2) (`sync -f`) of the mount returns at once, without waiting for the closed
    files' uploads: Linux sends FUSE_SYNCFS (opcode 50) only to filesystems that ask for it
    (virtiofs), so the daemon gets no request at all. libfuse's debug log of the mount shows
    the FSYNCDIR request of an fsync(2) of a directory, and no opcode 50 for syncfs(2)."""
    mount = cloudfs_mount
    restart(mount, ("-o", "debug"), write_back="true")
    swift_down(mount, fault_proxy)
    (mount.path / "f").write_bytes(b"closed, not uploaded")
    started = time.monotonic()
    done = subprocess.run(["sync", "-f", str(mount.path / "f")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 5, "syncfs waited"
    assert committed(mount, "f")[0] == 0 and status(mount)["write_back"]["files"] == 1
    fault_proxy.clear_rules()
    fd = os.open(mount.path, os.O_RDONLY)
    try:
        os.fsync(fd)  # waits: FSYNCDIR reaches the daemon
    finally:
        os.close(fd)
    assert committed(mount, "f")[0] == len(b"closed, not uploaded")
    log = mount.log_text()
    assert re.search(r"opcode: FSYNCDIR \(30\)", log), "no debug log of FUSE requests"
    assert not re.search(r"opcode: \S+ \(50\)", log), "a FUSE_SYNCFS request reached the daemon"


def test_versions_pile_up_in_order(wb, fault_proxy):
    """Several closes of one file while Swift is unreachable (overwrite, append, overwrite
    with O_TRUNC, append again) are each seen at once on the mount, and are committed in
    order: the file ends as the last close left it."""
    swift_down(wb, fault_proxy)
    path = wb.path / "log"
    expect = b""
    for step in range(6):
        chunk = os.urandom(1000 + step)
        if step % 3 == 0:
            path.write_bytes(chunk)
            expect = chunk
        else:
            with open(path, "ab") as f:
                f.write(chunk)
            expect += chunk
        assert path.read_bytes() == expect
        assert path.stat().st_size == len(expect)
    fault_proxy.clear_rules()
    sync(wb)
    assert committed(wb, "log")[0] == len(expect)
    wb.remount()
    assert path.read_bytes() == expect


def test_times_set_after_close_stick(wb, fault_proxy):
    """utimens after close (rsync, `touch -d`) is kept by the later commit, and survives a
    crash before the upload."""
    wb.expect_errors = True  # SIGKILL below
    swift_down(wb, fault_proxy)
    path = wb.path / "old"
    path.write_bytes(b"content")
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    assert path.stat().st_mtime_ns == 1_000_000_000_000_000_000
    wb.kill()
    fault_proxy.clear_rules()
    wb.start()
    sync(wb)
    assert path.read_bytes() == b"content"
    assert path.stat().st_mtime_ns == 1_000_000_000_000_000_000


def test_big_files_stream_as_without_write_back(cloudfs_mount, fault_proxy):
    """A file bigger than write_back_max is streamed to Swift while it is written and its
    close waits for the upload, as without write-back; smaller ones are written back."""
    restart(cloudfs_mount, write_back="true", write_back_max="1M")
    big = os.urandom(3 * MiB)
    (cloudfs_mount.path / "big").write_bytes(big)
    assert committed(cloudfs_mount, "big")[0] == len(big), "close returned before the upload"
    fault_proxy.add_rule("PUT", PUTS, "stall", seconds=2, times=1)
    (cloudfs_mount.path / "small").write_bytes(b"s" * 1000)
    assert committed(cloudfs_mount, "small")[0] == 0
    sync(cloudfs_mount)
    assert (cloudfs_mount.path / "big").read_bytes() == big


def test_full_journal_makes_closes_wait_not_fail(cloudfs_mount, fault_proxy):
    """When the journal's share of cache_size is used up, a close waits for its own upload
    (backpressure) instead of failing: every write and close returns 0."""
    restart(cloudfs_mount, write_back="true", cache_size="2M")
    fault_proxy.add_rule("PUT", PUTS, "stall", seconds=1, times=4)
    files = {f"f{i}": os.urandom(700_000) for i in range(8)}
    for name, data in files.items():
        (cloudfs_mount.path / name).write_bytes(data)
    sync(cloudfs_mount)
    cloudfs_mount.remount()
    for name, data in files.items():
        assert (cloudfs_mount.path / name).read_bytes() == data


def test_unmount_uploads_the_backlog(wb, fault_proxy):
    """Unmount (fusermount3 -u) waits until every closed file is in Swift and committed."""
    fault_proxy.add_rule("PUT", PUTS, "stall", seconds=2, times=2)
    files = {f"f{i}": os.urandom(20_000 + i) for i in range(10)}
    for name, data in files.items():
        (wb.path / name).write_bytes(data)
    assert wb.stop() == 0
    for name, data in files.items():
        assert committed(wb, name)[0] == len(data)
    assert journal_files(wb) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, None], ids=["sigterm", "sigkill"])
def test_swift_down_at_stop_keeps_the_journal(wb, fault_proxy, sig):
    """A mount that stops (SIGTERM: after stop_timeout seconds without upload progress) or
    dies (SIGKILL) while Swift is unreachable keeps the closed files in its journal; the next
    mount uploads them, and they are there, exact."""
    wb.allow("are not in Swift yet")
    wb.expect_errors = sig is None
    swift_down(wb, fault_proxy)
    files = {f"f{i}": os.urandom(i * 1000) for i in range(12)}
    for name, data in files.items():
        (wb.path / name).write_bytes(data)
    if sig is None:
        wb.kill()
    else:
        wb.proc.send_signal(sig)
        assert wb.wait_exit(60) == 0
    assert len(journal_files(wb)) == len(files) - 1  # f0 is empty: created, never written
    fault_proxy.clear_rules()
    wb.start()
    sync(wb)
    for name, data in files.items():
        assert (wb.path / name).read_bytes() == data
        assert committed(wb, name)[0] == len(data)
    assert journal_files(wb) == []


def _kill_workload(root: Path, data: dict[str, bytes], then: Callable[[], None]
                   ) -> dict[str, bytes | None]:
    """Closed changes of every kind; what each path must hold afterwards (None: absent).
    `then` runs after the random write: a random write is not written back (its close
    uploads, as without write-back), so it is done while Swift is reachable."""
    expect: dict[str, bytes | None] = {}
    with open(root / "rand", "r+b") as f:
        f.seek(1000)
        f.write(data["rand"])
    base = bytearray(data["base"])
    base[1000:1000 + len(data["rand"])] = data["rand"]
    expect["rand"] = bytes(base)
    then()
    (root / "new").write_bytes(data["new"])
    expect["new"] = data["new"]
    (root / "over").write_bytes(data["over"])
    expect["over"] = data["over"]
    with open(root / "app", "ab") as f:
        f.write(data["app"])
    expect["app"] = data["base"] + data["app"]
    with open(root / "rand", "ab") as f:  # an append over the random write's version
        f.write(b"tail")
    expect["rand"] += b"tail"
    (root / "moved-src").write_bytes(data["moved"])
    os.rename(root / "moved-src", root / "moved")
    expect["moved"], expect["moved-src"] = data["moved"], None
    (root / "gone").write_bytes(data["new"])
    os.unlink(root / "gone")
    expect["gone"] = None
    return expect


@BACKENDS
@pytest.mark.parametrize("when", ["swift-down", "mid-upload"])
def test_kill_matrix(wb, fault_proxy, tmp_path, when, backend):
    """SIGKILL of the daemon with closed files not (or not fully) uploaded: after the next
    mount, every file closed before the kill is there and exact, a file open for writing at
    the kill keeps its previous content, and deleted or renamed files stay so. On SQLite and
    on PostgreSQL (there the killed mount's registration is reaped too); check() clean at the
    end (the fixture's teardown)."""
    wb.expect_errors = True
    base = os.urandom(50_000)
    for name in ("over", "app", "rand", "open"):
        (wb.path / name).write_bytes(base)
    sync(wb)
    data = {k: os.urandom(n) for k, n in (("new", 30_000), ("over", 2 * MiB), ("app", 777),
                                          ("rand", 5000), ("moved", 12_345))}
    data["base"] = base

    def faults() -> None:
        if when == "swift-down":
            swift_down(wb, fault_proxy)
        else:
            fault_proxy.add_rule("PUT", PUTS, "stall", seconds=30, times=-1)

    expect = _kill_workload(wb.path, data, faults)
    writer = subprocess.Popen(
        [sys.executable, "-c", "import os,sys,time\n"
         f"fd=os.open({str(wb.path / 'open')!r}, os.O_WRONLY|os.O_TRUNC)\n"
         "os.write(fd, b'unclosed'*1000); print('w', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE)
    assert writer.stdout.readline().strip() == b"w"
    expect["open"] = base
    if when == "mid-upload":
        deadline = time.monotonic() + 20
        while not fault_proxy.seen("PUT", PUTS):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    wb.kill()
    writer.kill()
    writer.wait()
    fault_proxy.clear_rules()
    wb.start()
    sync(wb)
    for name, content in expect.items():
        path = wb.path / name
        if content is None:
            assert not path.exists(), name
        else:
            assert path.read_bytes() == content, name
    wb.remount()  # once more, from Swift and the namespace alone
    for d in (wb.path.parent / "cache").glob("journal-*"):
        assert not [p for p in d.glob("j-*") if p.stat().st_size]
    for name, content in expect.items():
        if content is not None:
            assert (wb.path / name).read_bytes() == content, name
    if backend == "postgres":
        assert wb.proc is not None
        deadline = time.monotonic() + 20
        with Namespace.open(wb.database) as ns:
            while [m.pid for m in ns.mounts()] != [wb.proc.pid]:
                assert time.monotonic() < deadline, f"not reaped: {ns.mounts()}"
                time.sleep(0.2)
            assert ns.check(include_orphans=True) == []


def test_forged_record_in_unclosed_data_is_ignored(wb, tmp_path):
    """The journal's records carry a MAC keyed with the journal's secret: bytes an
    application wrote that look like a record (here a copy of a real trailer) are never
    replayed after a crash."""
    wb.expect_errors = True
    victim = wb.path / "victim"
    victim.write_bytes(b"victim's content")
    sync(wb)
    attacker = wb.path / "attacker"
    attacker.write_bytes(b"A" * 100)
    trailer_source = journal_files(wb)
    stolen = trailer_source[0].read_bytes()[100:] if trailer_source else b""
    forged = b"A" * 100 + stolen.replace(b"attacker", b"victim")
    writer = subprocess.Popen(
        [sys.executable, "-c", "import os,sys,time\n"
         f"fd=os.open({str(wb.path / 'attacker2')!r}, os.O_WRONLY|os.O_CREAT)\n"
         f"os.write(fd, {forged!r}); print('w', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE)
    assert writer.stdout.readline().strip() == b"w"
    wb.kill()
    writer.kill()
    writer.wait()
    wb.start()
    sync(wb)
    assert victim.read_bytes() == b"victim's content"


def test_second_mount_of_the_same_journal_is_refused(wb, tmp_path):
    """One journal per filesystem and host: a second mount process using the same cache_dir
    is refused (here the namespace's own lock answers first; the journal lock backs it)."""
    other = tmp_path / "mnt2"
    other.mkdir()
    done = cli("mount", "--foreground", "--config", str(wb.config), str(other), timeout=60)
    assert done.returncode != 0
    assert "already mounted" in done.stderr or "journal" in done.stderr


def test_journal_write_costs_no_swift_request(wb, fault_proxy):
    """A close in write-back mode sends nothing to Swift before it returns: the upload runs
    after it (counted by the fault proxy)."""
    fault_proxy.add_rule("PUT", PUTS, "stall", seconds=3, times=-1)
    fault_proxy.clear_requests()
    started = time.monotonic()
    for i in range(20):
        (wb.path / f"n{i}").write_bytes(b"n" * 2000)
    assert time.monotonic() - started < 3, "closes waited for Swift"
    fault_proxy.clear_rules()
    sync(wb)


def test_concurrent_readers_and_writers(wb):
    """Writers closing versions of a file while readers read it on the same mount: no read
    fails, and the file ends as the last close left it. (As on a local filesystem, a read
    concurrent with an O_TRUNC rewrite may see an intermediate state: SEMANTICS.md.)"""
    path = wb.path / "hot"
    versions = [bytes([i]) * (10_000 + i) for i in range(20)]
    path.write_bytes(versions[0])
    errors: list[OSError] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                path.read_bytes()
                reads += 1
            except OSError as exc:
                errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for v in versions[1:]:
            path.write_bytes(v)
    finally:
        stop.set()
        t.join()
    assert not errors and reads
    sync(wb)
    assert path.read_bytes() == versions[-1]


def test_a_read_in_progress_outlives_the_upload(wb, fault_proxy):
    """A reader that opened a file while its content was only in the journal keeps reading
    the right bytes after the upload committed it and the journal's files were reused."""
    fault_proxy.add_rule("PUT", PUTS, "stall", seconds=2, times=1)
    data = os.urandom(20 * MiB)
    path = wb.path / "big"
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as f:
        head = f.read(MiB)
        sync(wb)
        for i in range(40):  # reuse the journal's files
            (wb.path / f"other{i}").write_bytes(os.urandom(100_000))
        sync(wb)
        rest = f.read()
    assert head + rest == data


def test_cleanup_never_collects_what_the_journal_needs(wb, fault_proxy):
    """`ccd cleanup` (here with no grace at all) while closed files wait in the journal
    removes nothing they need: the journal holds their bytes, nothing in Swift is theirs
    until their upload, which claims its content as every write does. Here the content of a
    pending file was also another file's, which is unlinked and collected first: the upload
    stores it again, and the file reads back exact from Swift alone."""
    data = os.urandom(300_000)
    (wb.path / "first").write_bytes(data)
    sync(wb)
    swift_down(wb, fault_proxy)
    (wb.path / "second").write_bytes(data)  # the same content, pending
    (wb.path / "other").write_bytes(os.urandom(5000))  # pending, new content
    os.unlink(wb.path / "first")
    out = subprocess.run([sys.executable, "-m", "ccd.cli", "--config", str(wb.config),
                          "cleanup", "--grace", "0"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "unreferenced CAS objects deleted: 1" in out.stdout, out.stdout + out.stderr
    fault_proxy.clear_rules()
    sync(wb)
    wb.stop()
    for d in (wb.path.parent / "cache").glob("journal-*"):
        assert not [p for p in d.glob("j-*") if p.stat().st_size]
    wb.start()
    assert (wb.path / "second").read_bytes() == data
