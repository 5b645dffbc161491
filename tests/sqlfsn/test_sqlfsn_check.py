"""check(): each invariant's violation is found (on a corrupted copy of a good namespace)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import psycopg
import pytest

from sqlfsn import ROOT_INODE, Namespace, Piece

R = ROOT_INODE
H1 = f"{1:064x}"


def build(ns: Namespace) -> dict[str, int]:
    """root/d/f (file of H1), root/d/e (dir), root/s (symlink); the inode numbers."""
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    f = ns.create(d.inode, b"f", 0o644, 0, 0)
    e = ns.mkdir(d.inode, b"e", 0o755, 0, 0)
    s = ns.symlink(R, b"s", b"d/f", 0, 0)
    ns.claim_content(H1, 10, [(f"{11:064x}", 4), (f"{12:064x}", 6)])
    ns.set_content(f.inode, [Piece(H1, 0, 10)], 10)
    ns.setxattr(f.inode, b"user.x", b"1")
    return {"d": d.inode, "f": f.inode, "e": e.inode, "s": s.inode}


CORRUPTIONS = [
    ("DELETE FROM inode WHERE id = {f}", "inode {f} does not exist"),
    ("UPDATE dentry SET parent = 99 WHERE inode = {f}", "parent inode 99 does not exist"),
    (
        "INSERT INTO dentry (parent, name, inode) VALUES ({f}, x'78', {s})",
        "parent inode {f} is not a directory",
    ),
    ("UPDATE inode SET nlink = 2 WHERE id = {f}", "inode {f}: nlink 2 but 1 name(s)"),
    ("DELETE FROM dentry WHERE inode = {f}", "inode {f}: nlink 1 but no name (lost)"),
    ("UPDATE inode SET nlink = 5 WHERE id = {d}", "directory {d}: nlink 5 but 1 subdirectories"),
    ("INSERT INTO dentry (parent, name, inode) VALUES (1, x'6432', {d})", "directory {d}: 2 names"),
    ("DELETE FROM dentry WHERE inode = {d}", "directory {d}: no name (lost)"),
    ("UPDATE dentry SET parent = {e} WHERE inode = {d}", "inode {d}: not reachable"),
    ("UPDATE dentry SET parent = {e} WHERE inode = {d}", "inode {f}: not reachable"),
    ("UPDATE inode SET nlink = 0 WHERE id = {e}", "directory {e}: removed (nlink 0) but has"),
    ("UPDATE inode SET nlink = 0 WHERE id = {d}", "parent directory {d} was removed"),
    ("INSERT INTO dentry (parent, name, inode) VALUES ({d}, x'72', 1)", "names the root directory"),
    ("DELETE FROM inode WHERE id = 1", "root inode 1 missing"),
    ("UPDATE dentry SET name = x'2e2e' WHERE inode = {f}", "invalid name b'..'"),
    ("UPDATE dentry SET name = x'612f62' WHERE inode = {f}", "invalid name b'a/b'"),
    ("UPDATE inode SET size = 11 WHERE id = {f}", "size 11 but pieces hold 10 bytes"),
    ("UPDATE file_piece SET idx = 1", "expected index 0 (gap)"),
    ("DELETE FROM content", "content " + H1 + " has no content row"),
    ("DELETE FROM content", "segments of content " + H1 + ": no such content row"),
    ("UPDATE content SET state = 'deleting', deleting_ns = 1", "is being deleted"),
    ("UPDATE content SET deleting_ns = 1", "state 'live' with deleting_ns 1"),
    ("UPDATE content SET size = 5", "ends at 10, content " + H1 + " has 5 bytes"),
    ("UPDATE content_segment SET size = 5 WHERE seq = 0", "sum to 11, content has 10"),
    ("UPDATE content_segment SET seq = 5 WHERE seq = 0", "seq not 0..1"),
    ("UPDATE content_segment SET segment_hash = 'nope'", "bad hash 'nope'"),
    ("UPDATE file_piece SET hash = 'XYZ'", "bad hash 'XYZ'"),
    ("UPDATE file_piece SET obj_offset = 3, hash = NULL", "hole with obj_offset 3"),
    ("INSERT INTO file_piece VALUES ({s}, 0, NULL, 0, 6)", "inode is not a regular file"),
    ("UPDATE inode SET target = NULL WHERE id = {s}", "symlink without target"),
    ("UPDATE inode SET target = x'61' WHERE id = {f}", "target set on a non-symlink"),
    ("UPDATE inode SET size = 9 WHERE id = {s}", "symlink size 9 != target length 3"),
    ("UPDATE inode SET size = 9 WHERE id = {d}", "size 9 on a"),
    ("UPDATE inode SET rdev = 5 WHERE id = {f}", "rdev set on a non-device"),
    ("UPDATE inode SET mode = 7 << 12 WHERE id = {s}", "unknown file type"),
    ("INSERT INTO xattr VALUES (99, x'61', x'')", "xattr b'a': inode 99 does not exist"),
    ("DELETE FROM meta WHERE key = 'schema_version'", "meta: schema_version"),
]


@pytest.mark.parametrize(("sql", "expected"), CORRUPTIONS)
def test_check_finds(file_ns: Namespace, tmp_path: Path, sql: str, expected: str) -> None:
    inodes = build(file_ns)
    copy = tmp_path / "copy.db"
    with sqlite3.connect(copy) as dst, sqlite3.connect(tmp_path / "ns.db") as src:
        src.backup(dst)
    broken = Namespace.open(copy)
    assert broken.check() == []
    raw = sqlite3.connect(copy, isolation_level=None)
    raw.execute("PRAGMA foreign_keys = OFF")
    raw.execute("PRAGMA ignore_check_constraints = ON")
    raw.execute(sql.format(**inodes))
    raw.close()
    problems = broken.check()
    assert any(expected.format(**inodes) in p for p in problems), problems
    broken.close()
    assert file_ns.check() == []  # the original is untouched


def corrupt_postgres(url: str, sql: str) -> None:
    """Run ``sql`` on the PostgreSQL namespace ``url`` with its constraints off: CHECKs
    dropped, foreign keys (triggers) not fired (session_replication_role = replica)."""
    sql = re.sub(r"x'([0-9a-f]*)'", r"'\\x\1'::bytea", sql)
    with psycopg.connect(url, autocommit=True) as raw:
        checks = raw.execute(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE contype = 'c'"
            " AND connamespace = current_schema()::regnamespace"
        ).fetchall()
        for table, name in checks:
            raw.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        raw.execute("SET session_replication_role = replica")
        raw.execute(sql)


@pytest.mark.parametrize(("sql", "expected"), CORRUPTIONS)
def test_check_finds_on_postgres(pg_url: str, sql: str, expected: str) -> None:
    with Namespace.open(pg_url, create=True) as ns:
        inodes = build(ns)
        assert ns.check() == []
        corrupt_postgres(pg_url, sql.format(**inodes))
        problems = ns.check()
        assert any(expected.format(**inodes) in p for p in problems), problems


def test_orphans_reported_only_on_request(ns: Namespace) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    ns.unlink(R, b"f")
    assert ns.check() == []
    assert ns.check(include_orphans=True) == [f"inode {f.inode}: orphan (nlink 0)"]
    ns.purge_orphans()
    assert ns.check(include_orphans=True) == []
