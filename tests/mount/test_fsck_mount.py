"""`cloudfs fsck` with a real mount (docs/OPERATIONS.md, "cloudfs fsck"): beside the live
mount it changes nothing and the mount goes on; damage done behind cloudfs's back is reported
by path while mounted; `--repair` is refused while mounted, moves the damaged files to
/lost+found once unmounted (where reading them gives EIO, and the rest of the tree is whole);
no mount starts while a repair runs; and on a PostgreSQL namespace beside its mount, the same
read-only check, with --repair refused."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fsckhelpers import corrupt_on_disk, run_fsck
from mountsession import MiB, MountSession

from cloudfs.fsck.command import REPAIR_HOLDER, hold
from seqwrite import Layout
from sqlfsn import Namespace

pytestmark = [pytest.mark.mount, pytest.mark.swift]


def namespace_rows(database: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, read-only (the heartbeat of leases left out: a live writer
    renews it every minute whatever fsck does)."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'"
                                           " AND name NOT LIKE 'sqlite_%'")]
        rows = {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
        rows["upload"] = sorted(db.execute("SELECT id, started_ns FROM upload").fetchall())
        return rows
    finally:
        db.close()


def swift_objects(raw, layout: Layout) -> dict[str, list[tuple[str, str, int]]]:
    return {c: [(o["name"], o["hash"], o["bytes"]) for o in raw.list_container(c)]
            for c in layout.all_containers()}


def write_tree(m: Path) -> dict[str, bytes]:
    files = {"docs/a.txt": b"alpha\n", "docs/big.bin": os.urandom(3 * MiB + 17),
             "mid.bin": os.urandom(200_000), "keep.txt": b"keep me\n"}
    (m / "docs").mkdir()
    for name, data in files.items():
        (m / name).write_bytes(data)
    with open(m / "log.txt", "ab") as f:  # two pieces: a write, then an append
        f.write(b"one\n")
    with open(m / "log.txt", "ab") as f:
        f.write(b"two\n")
    files["log.txt"] = b"one\ntwo\n"
    return files


def wait_for_segments_of_a_lease(session: MountSession, raw) -> None:
    """Until a temporary segment of a write in progress is stored (listed)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with Namespace.open(session.database) as ns:
            leases = {u.id for u in ns.uploads()}
        listed = raw.list_container(session.layout.tmp_container, prefix=".tmp/")
        if any(Layout.upload_of(o["name"]) in leases for o in listed):
            return
        time.sleep(0.1)
    pytest.fail("no segment of the write in progress was stored")


# A writer holding a file open in a process of its own: a descriptor of the test process would
# be closed by every subprocess it starts (fork, then exec), and every close commits.
WRITER = """
import os, sys
with open(sys.argv[1], "wb") as f:
    f.write(os.urandom(6 * 2**20 + 5))
    f.flush()
    print("written", flush=True)
    sys.stdin.readline()
    f.write(b"end")
"""


def test_fsck_beside_a_live_mount_changes_nothing(cloudfs_mount: MountSession, raw_swift):
    m = cloudfs_mount.path
    files = write_tree(m)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(m / "growing.bin")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "written\n"
        wait_for_segments_of_a_lease(cloudfs_mount, raw_swift)
        before = (namespace_rows(cloudfs_mount.database),
                  swift_objects(raw_swift, cloudfs_mount.layout))
        code, out, err = run_fsck(cloudfs_mount.config, "--json")
        after = (namespace_rows(cloudfs_mount.database),
                 swift_objects(raw_swift, cloudfs_mount.layout))
        assert code == 0, out + err
        doc = json.loads(out)
        assert doc["result"] == "clean" and doc["problems"] == []
        assert set(doc["checked"]["requests"]) <= {"GET", "HEAD"}
        assert doc["notes"]["segments_in_progress"]["count"] >= 1  # the open writer's
        assert after == before
        code, out, err = run_fsck(cloudfs_mount.config, "--repair")
        assert code == 2 and out == ""
        assert "--repair needs the filesystem unmounted" in err
        assert f"pid {cloudfs_mount.proc.pid}" in err and str(m) in err
    finally:
        writer.communicate("go\n", timeout=60)
    assert writer.returncode == 0
    for name, data in files.items():
        assert (m / name).read_bytes() == data
    assert (m / "growing.bin").stat().st_size == 6 * MiB + 8


def test_damage_found_while_mounted_and_repaired_once_unmounted(cloudfs_mount: MountSession,
                                                                raw_swift, dev_swift):
    """Behind cloudfs's back: a CAS object deleted, a segment of a manifest deleted, a manifest
    deleted, a manifest's bytes rotted on disk; each found and reported by path."""
    m = cloudfs_mount.path
    layout = cloudfs_mount.layout
    files = write_tree(m)
    for name in ("gone.bin", "rot.bin"):  # a manifest of one segment each
        (m / name).write_bytes(os.urandom(300_000))
    with Namespace.open(cloudfs_mount.database) as ns:
        docs = ns.lookup(1, b"docs").inode
        small = ns.pieces(ns.lookup(docs, b"a.txt").inode)[0].hash
        big = ns.pieces(ns.lookup(docs, b"big.bin").inode)[0].hash
        gone = ns.pieces(ns.lookup(1, b"gone.bin").inode)[0].hash
        rot = ns.pieces(ns.lookup(1, b"rot.bin").inode)[0].hash
    assert small and big and gone and rot
    assert raw_swift.delete_object(*layout.cas_path(small)) == 204
    status, _, body = raw_swift.get_object(*layout.cas_path(big),
                                           query="multipart-manifest=get")
    segment = json.loads(body)[1]["name"].lstrip("/").partition("/")[2]
    assert raw_swift.delete_object(layout.tmp_container, segment) == 204
    assert raw_swift.delete_object(*layout.cas_path(gone)) == 204
    corrupt_on_disk(dev_swift.dir, "/" + "/".join(layout.cas_path(rot)))

    code, out, _ = run_fsck(cloudfs_mount.config)
    assert code == 4, out
    lines = out.splitlines()
    assert f"MISSING      /docs/a.txt: {'/'.join(layout.cas_path(small))} is missing from " \
        "Swift (404)" in lines
    assert any(line.startswith(f"DAMAGED      /docs/big.bin: segment 1 of "
                               f"{'/'.join(layout.cas_path(big))}, {layout.tmp_container}/"
                               f"{segment}, is missing") for line in lines), out
    assert f"MISSING      /gone.bin: {'/'.join(layout.cas_path(gone))} is missing from " \
        "Swift (404)" in lines
    assert any(line.startswith(("MISSING      /rot.bin: ", "DAMAGED      /rot.bin: "))
               and "/".join(layout.cas_path(rot)) in line for line in lines), out
    assert "result: problems (4 left), exit status 4" in out

    swift = swift_objects(raw_swift, layout)
    assert cloudfs_mount.stop() == 0
    code, out, err = run_fsck(cloudfs_mount.config, "--repair")
    assert code == 1, out + err
    assert swift_objects(raw_swift, layout) == swift  # nothing deleted, nothing written

    cloudfs_mount.allow(r"cloudfs\.ops: read: ")  # the EIO of the damaged files, below
    # A ranged GET of big.bin whose range reaches its deleted segment: Swift's SLO middleware
    # answers 206 and cuts the body where the segment is missing, which no client can tell
    # from a dropped connection; the read retries it as transient (a WARNING from the 6th
    # try) until its deadline, then answers EIO. Whether a read takes that path or gets
    # Swift's 409 at once depends on which range the kernel's read-ahead asks first.
    cloudfs_mount.allow(r"seqwrite\.retry: GET \S+: transient failure \(.*IncompleteRead")
    cloudfs_mount.start()
    assert sorted(os.listdir(m / "lost+found")) == ["docs%2Fa.txt", "docs%2Fbig.bin",
                                                    "gone.bin", "rot.bin"]
    assert sorted(os.listdir(m / "docs")) == []
    with pytest.raises(OSError) as eio:
        (m / "lost+found" / "docs%2Fbig.bin").read_bytes()
    assert eio.value.errno == errno.EIO
    note = os.getxattr(m / "lost+found" / "docs%2Fa.txt", "user.cloudfs.fsck").decode()
    assert "moved from /docs/a.txt" in note and "missing from Swift" in note
    for name in ("mid.bin", "keep.txt", "log.txt"):
        assert (m / name).read_bytes() == files[name]
    code, out, _ = run_fsck(cloudfs_mount.config)
    assert code == 0 and "damaged files already in /lost+found: 4" in out


def test_no_mount_starts_while_a_repair_runs(cloudfs_mount: MountSession):
    assert cloudfs_mount.stop() == 0
    with Namespace.open(cloudfs_mount.database) as ns:
        hold(ns)  # what `fsck --repair` does for the whole of its run
        proc = subprocess.run([sys.executable, "-m", "cloudfs", "mount", "--foreground",
                               "--config", str(cloudfs_mount.config), str(cloudfs_mount.path)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert REPAIR_HOLDER in proc.stderr and "already mounted" in proc.stderr
    cloudfs_mount.start()  # the repair is over: the mount starts


def test_fsck_on_postgresql_beside_a_mount(pg_mount: MountSession, pg_url: str,
                                           raw_swift) -> None:
    """The same checks on a PostgreSQL namespace: clean and read-only beside the mount, a
    deleted object reported by path; --repair is refused there (nothing keeps a host from
    mounting a PostgreSQL namespace while a repair runs)."""
    m = pg_mount.path
    files = write_tree(m)
    code, out, err = run_fsck(pg_mount.config, "--json")
    assert code == 0, out + err
    doc = json.loads(out)
    assert doc["result"] == "clean" and doc["checked"]["files"] == len(files)
    assert set(doc["checked"]["requests"]) <= {"GET", "HEAD"}
    with Namespace.open(pg_url) as ns:
        small = ns.pieces(ns.lookup(1, b"keep.txt").inode)[0].hash
    assert small
    assert raw_swift.delete_object(*pg_mount.layout.cas_path(small)) == 204
    code, out, _ = run_fsck(pg_mount.config)
    assert code == 4
    assert f"MISSING      /keep.txt: {'/'.join(pg_mount.layout.cas_path(small))}" in out
    code, out, err = run_fsck(pg_mount.config, "--repair")
    assert code == 2 and out == "" and "refused on a PostgreSQL namespace" in err
    assert (m / "mid.bin").read_bytes() == files["mid.bin"]  # the mount went on
