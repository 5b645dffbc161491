"""Opening, creating and sharing a namespace database; meta; errors' text."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sqlfsn import ROOT_INODE, SCHEMA_VERSION, Namespace, errors

if TYPE_CHECKING:
    from conftest import FakeClock


def test_create_makes_root_and_meta(db_path: Path, clock: FakeClock) -> None:
    ns = Namespace.open(db_path, create=True, clock=clock)
    root = ns.getattr(ROOT_INODE)
    assert root.mode == stat.S_IFDIR | 0o755
    assert root.nlink == 2
    assert (root.uid, root.gid) == (os.getuid(), os.getgid())
    assert root.atime_ns == root.mtime_ns == root.ctime_ns == clock.now
    assert ns.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert ns.get_meta("created_ns") == str(clock.now)
    uuid.UUID(ns.get_meta("fs_uuid") or "")
    assert list(ns.readdir(ROOT_INODE)) == []
    assert ns.statfs() == (1, 0)
    assert ns.check() == []
    ns.close()


def test_reopen_keeps_everything(spec: str) -> None:
    db_path = spec
    with Namespace.open(db_path, create=True) as ns:
        d = ns.mkdir(ROOT_INODE, b"d", 0o700, 1, 2)
        ns.set_meta("block", "4096")
        fs_uuid = ns.get_meta("fs_uuid")
    with Namespace.open(db_path) as ns:
        assert ns.lookup(ROOT_INODE, b"d") == d
        assert ns.get_meta("block") == "4096"
        assert ns.get_meta("fs_uuid") == fs_uuid
        assert ns.check() == []
    with Namespace.open(db_path, create=True) as ns:  # create on an existing namespace: open
        assert ns.lookup(ROOT_INODE, b"d") == d
        assert ns.check() == []


def test_missing_file_without_create(db_path: Path) -> None:
    with pytest.raises(errors.NotAFilesystem, match="cannot open"):
        Namespace.open(db_path)
    assert not db_path.exists()


def test_empty_file_needs_create(db_path: Path) -> None:
    db_path.touch()
    with pytest.raises(errors.NotAFilesystem, match="create=True"):
        Namespace.open(db_path)
    with Namespace.open(db_path, create=True) as ns:
        assert ns.check() == []


def test_not_sqlite(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a database, just some text" * 100)
    with pytest.raises(errors.NotAFilesystem, match="not an SQLite database"):
        Namespace.open(db_path, create=True)


def test_other_sqlite_database(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(errors.NotAFilesystem, match="something else"):
        Namespace.open(db_path, create=True)


def test_newer_schema_version(db_path: Path) -> None:
    Namespace.open(db_path, create=True).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(errors.NotAFilesystem, match="newer than") as info:
        Namespace.open(db_path)
    assert "upgrade cloudfs" in str(info.value)


def test_meta_version_must_match(db_path: Path) -> None:
    Namespace.open(db_path, create=True).close()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(errors.NotAFilesystem, match="schema_version"):
        Namespace.open(db_path)


def test_concurrent_creation_makes_one_namespace(spec: str) -> None:
    db_path = spec
    results: list[object] = []

    def open_and_read() -> None:
        try:
            with Namespace.open(db_path, create=True) as ns:
                results.append(ns.get_meta("fs_uuid"))
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=open_and_read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert len(set(results)) == 1 and isinstance(results[0], str), results
    with Namespace.open(db_path) as ns:
        assert ns.statfs() == (1, 0)
        assert ns.check() == []


def test_memory_needs_no_create() -> None:
    with Namespace.open(":memory:") as ns:
        assert ns.getattr(ROOT_INODE).nlink == 2
        assert ns.check() == []


def test_file_is_in_wal_mode(file_ns: Namespace, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert file_ns.check() == []


def test_meta(ns: Namespace) -> None:
    assert ns.get_meta("nothing") is None
    ns.set_meta("segment_size", "1048576")
    ns.set_meta("segment_size", "2097152")
    assert ns.get_meta("segment_size") == "2097152"
    with pytest.raises(errors.InvalidArgument):
        ns.set_meta("schema_version", "2")
    with pytest.raises(errors.InvalidArgument):
        ns.set_meta("", "x")
    assert ns.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert ns.check() == []


def test_two_namespaces_see_each_others_commits(spec: str, clock: FakeClock) -> None:
    file_ns = Namespace.open(spec, create=True, clock=clock)
    other = Namespace.open(spec)
    d = file_ns.mkdir(ROOT_INODE, b"d", 0o755, 0, 0)
    assert other.lookup(ROOT_INODE, b"d") == d
    f = other.create(d.inode, b"f", 0o644, 0, 0)
    assert [e.name for e in file_ns.readdir(d.inode)] == [b"f"]
    h = "ab" * 32
    assert file_ns.claim_content(h, 10).ok
    assert other.set_content(f.inode, [], 0).version == 1
    assert other.set_content(f.inode, [], 0).version == 2
    other.set_content(f.inode, [], 0, expect_version=2)
    with pytest.raises(errors.Conflict):
        file_ns.set_content(f.inode, [], 0, expect_version=2)
    assert other.condemn(h, claimed_before_ns=0) is False  # claimed now by file_ns
    assert file_ns.getattr(f.inode).version == 3
    assert other.check() == []
    other.close()
    assert file_ns.check() == []
    file_ns.close()


def test_write_waits_for_the_other_process(file_ns: Namespace, db_path: Path) -> None:
    locked, release = threading.Event(), threading.Event()

    def hold_write_lock() -> None:
        conn = sqlite3.connect(db_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO meta VALUES ('held', 'yes')")
        locked.set()
        release.wait(5)
        time.sleep(0.2)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    assert locked.wait(5)
    release.set()
    started = time.monotonic()
    file_ns.mkdir(ROOT_INODE, b"after", 0o755, 0, 0)  # waits for the holder's commit
    assert time.monotonic() - started >= 0.1
    holder.join()
    assert file_ns.get_meta("held") == "yes"
    assert file_ns.check() == []


def test_error_text() -> None:
    assert str(errors.NotFound("b'x' in directory 5")) == "not found: b'x' in directory 5"
    assert str(errors.NotEmpty()) == "directory not empty"
    assert issubclass(errors.Conflict, errors.NamespaceError)
    names = [
        "NotFound",
        "Exists",
        "NotEmpty",
        "NotADirectory",
        "IsADirectory",
        "InvalidMove",
        "NameTooLong",
        "InvalidName",
        "InvalidArgument",
        "NotPermitted",
        "NoSuchAttr",
        "Conflict",
        "NotAFilesystem",
        "Unavailable",
    ]
    reasons = {getattr(errors, n).reason for n in names}
    assert len(reasons) == len(names)
