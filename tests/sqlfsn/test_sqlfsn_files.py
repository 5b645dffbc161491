"""setattr and truncation, content maps (set_content, pieces), orphans, xattrs."""

from __future__ import annotations

import re
import stat
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from sqlfsn import ROOT_INODE, Attr, Namespace, Piece, errors
from sqlfsn.sqlite import SqliteDatabase

if TYPE_CHECKING:
    from conftest import FakeClock

R = ROOT_INODE


def H(i: int) -> str:
    """A valid content hash, distinct per i."""
    return f"{i:064x}"


def file_with(ns: Namespace, pieces: list[Piece], name: bytes = b"f") -> Attr:
    """A regular file whose content is ``pieces`` (claiming every content they use)."""
    f = ns.create(R, name, 0o644, 0, 0)
    for p in pieces:
        if p.hash is not None:
            assert ns.claim_content(p.hash, 1000).ok
    return ns.set_content(f.inode, pieces, sum(p.length for p in pieces))


# -- setattr ----------------------------------------------------------------------------


def test_setattr_fields(ns: Namespace, clock: FakeClock) -> None:
    f = ns.create(R, b"f", 0o644, 1, 1)
    clock.advance()
    a = ns.setattr(f.inode, mode=stat.S_IFDIR | 0o4711, uid=10, gid=20)
    assert a.mode == stat.S_IFREG | 0o4711  # type kept, permission bits set
    assert (a.uid, a.gid) == (10, 20)
    assert a.ctime_ns == clock.now
    assert a.mtime_ns == f.mtime_ns
    assert a.version == f.version
    a = ns.setattr(f.inode, atime_ns=5, mtime_ns=6, ctime_ns=7)
    assert (a.atime_ns, a.mtime_ns, a.ctime_ns) == (5, 6, 7)
    assert ns.getattr(f.inode) == a
    assert ns.setattr(f.inode) == a  # nothing to change: nothing changes
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    assert ns.setattr(d.inode, mode=0o700).mode == stat.S_IFDIR | 0o700
    with pytest.raises(errors.NotFound):
        ns.setattr(999, uid=0)
    with pytest.raises(errors.InvalidArgument):
        ns.setattr(f.inode, uid=-1)
    with pytest.raises(errors.InvalidArgument):
        ns.setattr(f.inode, mtime_ns=1.5)  # type: ignore[arg-type]
    assert ns.setattr(f.inode, atime_ns=-10).atime_ns == -10  # before 1970
    assert ns.check() == []


def test_truncate_refuses_non_files(ns: Namespace) -> None:
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    s = ns.symlink(R, b"s", b"target", 0, 0)
    p = ns.mknod(R, b"p", stat.S_IFIFO | 0o644, 0, 0, 0)
    f = ns.create(R, b"f", 0o644, 0, 0)
    with pytest.raises(errors.IsADirectory):
        ns.setattr(d.inode, size=0)
    with pytest.raises(errors.InvalidArgument):
        ns.setattr(s.inode, size=0)
    with pytest.raises(errors.InvalidArgument):
        ns.setattr(p.inode, size=10)
    with pytest.raises(errors.InvalidArgument):
        ns.setattr(f.inode, size=-1)
    assert ns.getattr(s.inode).size == 6
    assert ns.check() == []


def test_truncate_grow_appends_and_extends_holes(ns: Namespace, clock: FakeClock) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    clock.advance()
    a = ns.setattr(f.inode, size=100)
    assert (a.size, a.version, a.mtime_ns, a.ctime_ns) == (100, 1, clock.now, clock.now)
    assert ns.pieces(f.inode) == [Piece(None, 0, 100)]
    ns.setattr(f.inode, size=150)
    assert ns.pieces(f.inode) == [Piece(None, 0, 150)]  # one hole, extended
    assert ns.check() == []
    g = file_with(ns, [Piece(H(1), 10, 50)], b"g")
    ns.setattr(g.inode, size=80)
    assert ns.pieces(g.inode) == [Piece(H(1), 10, 50), Piece(None, 0, 30)]
    assert ns.getattr(g.inode).version == g.version + 1
    assert ns.check() == []


def test_truncate_same_size_keeps_version(ns: Namespace, clock: FakeClock) -> None:
    f = file_with(ns, [Piece(H(1), 0, 10)])
    clock.advance()
    a = ns.setattr(f.inode, size=10)
    assert (a.version, a.mtime_ns, a.ctime_ns) == (f.version, f.mtime_ns, clock.now)
    assert ns.pieces(f.inode) == [Piece(H(1), 0, 10)]
    assert ns.check() == []


def test_truncate_shrink_trims_pieces(ns: Namespace, clock: FakeClock) -> None:
    pieces = [Piece(H(1), 0, 10), Piece(None, 0, 5), Piece(H(2), 100, 20)]
    f = file_with(ns, pieces)
    assert f.size == 35
    clock.advance()
    a = ns.setattr(f.inode, size=30, mtime_ns=42)
    assert (a.size, a.version, a.mtime_ns, a.ctime_ns) == (30, f.version + 1, 42, clock.now)
    assert ns.pieces(f.inode) == [Piece(H(1), 0, 10), Piece(None, 0, 5), Piece(H(2), 100, 15)]
    ns.setattr(f.inode, size=15)  # exactly at a piece boundary
    assert ns.pieces(f.inode) == [Piece(H(1), 0, 10), Piece(None, 0, 5)]
    ns.setattr(f.inode, size=12)
    assert ns.pieces(f.inode) == [Piece(H(1), 0, 10), Piece(None, 0, 2)]
    ns.setattr(f.inode, size=3)
    assert ns.pieces(f.inode) == [Piece(H(1), 0, 3)]
    ns.setattr(f.inode, size=20)
    assert ns.pieces(f.inode) == [Piece(H(1), 0, 3), Piece(None, 0, 17)]
    assert ns.check() == []
    ns.setattr(f.inode, size=0)
    assert ns.pieces(f.inode) == []
    assert ns.getattr(f.inode).size == 0
    assert ns.check() == []


# -- set_content ------------------------------------------------------------------------


def test_set_content_replaces_everything(ns: Namespace, clock: FakeClock) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    ns.claim_content(H(1), 100)
    ns.upload_begin("up1")
    clock.advance()
    a = ns.set_content(f.inode, [Piece(H(1), 0, 100)], 100, upload_id="up1")
    assert (a.size, a.version, a.mtime_ns, a.ctime_ns) == (100, 1, clock.now, clock.now)
    assert ns.uploads() == []
    assert ns.pieces(f.inode) == [Piece(H(1), 0, 100)]
    ns.claim_content(H(2), 50)
    clock.advance()
    a = ns.set_content(
        f.inode,
        [Piece(H(2), 10, 40), Piece(None, 0, 0), Piece(None, 0, 7)],
        47,
        expect_version=1,
        mtime_ns=123,
    )
    assert (a.size, a.version, a.mtime_ns, a.ctime_ns) == (47, 2, 123, clock.now)
    assert ns.pieces(f.inode) == [Piece(H(2), 10, 40), Piece(None, 0, 7)]  # empty dropped
    a = ns.set_content(f.inode, [], 0)
    assert (a.size, a.version) == (0, 3)
    assert ns.pieces(f.inode) == []
    assert ns.check() == []


def test_set_content_compare_and_swap(ns: Namespace) -> None:
    f = file_with(ns, [Piece(H(1), 0, 10)])
    before = ns.getattr(f.inode)
    ns.upload_begin("lease")
    with pytest.raises(errors.Conflict):
        ns.set_content(f.inode, [], 0, expect_version=f.version - 1, upload_id="lease")
    assert ns.getattr(f.inode) == before  # nothing changed, lease kept
    assert ns.pieces(f.inode) == [Piece(H(1), 0, 10)]
    assert [u.id for u in ns.uploads()] == ["lease"]
    ns.setattr(f.inode, size=5)  # truncation is a content change too
    with pytest.raises(errors.Conflict):
        ns.set_content(f.inode, [], 0, expect_version=f.version)
    ns.set_content(f.inode, [], 0, expect_version=f.version + 1, upload_id="lease")
    assert ns.uploads() == []
    assert ns.check() == []


def test_set_content_refuses_bad_input(ns: Namespace) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    s = ns.symlink(R, b"s", b"x", 0, 0)
    ns.claim_content(H(1), 10)
    ok = [Piece(H(1), 0, 10)]
    cases: list[tuple[int, list[Piece], int, type[errors.NamespaceError]]] = [
        (d.inode, ok, 10, errors.IsADirectory),
        (s.inode, ok, 10, errors.InvalidArgument),
        (999, ok, 10, errors.NotFound),
        (f.inode, ok, 11, errors.InvalidArgument),  # sum != size
        (f.inode, [Piece(H(1), 5, 10)], 10, errors.InvalidArgument),  # past the content end
        (f.inode, [Piece(H(2), 0, 10)], 10, errors.InvalidArgument),  # unclaimed
        (f.inode, [Piece("XYZ", 0, 10)], 10, errors.InvalidArgument),  # bad hash
        (f.inode, [Piece("AB" * 32, 0, 10)], 10, errors.InvalidArgument),  # upper case
        (f.inode, [Piece(None, 3, 10)], 10, errors.InvalidArgument),  # hole with offset
        (f.inode, [Piece(H(1), -1, 10)], 9, errors.InvalidArgument),
        (f.inode, [Piece(H(1), 0, -1)], -1, errors.InvalidArgument),
        (f.inode, [(H(1), 0, 10)], 10, errors.InvalidArgument),  # type: ignore[list-item]
    ]
    for inode, pieces, size, error in cases:
        with pytest.raises(error):
            ns.set_content(inode, pieces, size)
    assert ns.getattr(f.inode).version == 0
    assert ns.pieces(f.inode) == []
    with pytest.raises(errors.NotFound):
        ns.pieces(999)
    assert ns.pieces(d.inode) == []
    assert ns.check() == []


def test_set_content_refuses_condemned_content(ns: Namespace, clock: FakeClock) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    ns.claim_content(H(1), 10)
    clock.advance(10_000)
    assert ns.condemn(H(1), claimed_before_ns=clock.now)  # the writer was too slow
    with pytest.raises(errors.InvalidArgument, match="unclaimed content"):
        ns.set_content(f.inode, [Piece(H(1), 0, 10)], 10)
    assert ns.check() == []


def test_orphan_keeps_content_until_dropped(ns: Namespace) -> None:
    f = file_with(ns, [Piece(H(1), 0, 10)])
    ns.setxattr(f.inode, b"user.a", b"1")
    assert ns.unlink(R, b"f").nlink == 0
    assert ns.pieces(f.inode) == [Piece(H(1), 0, 10)]  # still readable while open
    a = ns.set_content(f.inode, [Piece(H(1), 0, 5)], 5)  # and writable
    assert a.nlink == 0
    assert H(1) in ns.referenced_hashes(claimed_since_ns=2**62)
    assert ns.check() == []
    assert ns.drop_if_orphan(f.inode) is True
    assert ns.drop_if_orphan(f.inode) is False
    assert ns.referenced_hashes(claimed_since_ns=2**62) == set()
    assert ns.check(include_orphans=True) == []


def test_drop_if_orphan_keeps_named_inodes(ns: Namespace) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    assert ns.drop_if_orphan(f.inode) is False
    assert ns.drop_if_orphan(999) is False
    assert ns.getattr(f.inode).nlink == 1
    assert ns.check() == []


def sync_statements(ns: Namespace, action: Callable[[], object]) -> list[str]:
    """The statements about commit durability that ``action`` sends, as the database sees
    them (SQLite: its trace callback; PostgreSQL: libpq's protocol trace)."""
    db = ns._db
    if isinstance(db, SqliteDatabase):
        seen: list[str] = []
        db.conn.set_trace_callback(seen.append)
        try:
            action()
        finally:
            db.conn.set_trace_callback(None)
        return [q for q in seen if "synchronous" in q]
    with tempfile.TemporaryFile("w+") as trace:
        pgconn = db._conn.pgconn
        pgconn.trace(trace.fileno())
        try:
            action()
        finally:
            pgconn.untrace()
        trace.seek(0)
        return re.findall(r"SET LOCAL synchronous_commit [A-Za-z =]+", trace.read())


def test_dropping_an_orphan_skips_the_sync_and_only_that(ns: Namespace) -> None:
    """drop_if_orphan commits without syncing the log (repaired by purge_orphans if lost);
    the unlink before it stays synced."""
    f = file_with(ns, [Piece(H(7), 0, 10)], b"f")
    sqlite = isinstance(ns._db, SqliteDatabase)
    # SQLite syncs unless told otherwise; a PostgreSQL session does not (postgres.py), and
    # a durable transaction restores the database's own setting for itself.
    synced = [] if sqlite else ["SET LOCAL synchronous_commit TO DEFAULT"]
    assert sync_statements(ns, lambda: ns.unlink(R, b"f")) == synced
    relaxed = sync_statements(ns, lambda: ns.drop_if_orphan(f.inode))
    if sqlite:
        assert relaxed == ["PRAGMA synchronous = NORMAL", "PRAGMA synchronous = FULL"]
        assert ns._db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    else:
        assert relaxed == []  # the session's own setting: off (postgres.py)
    assert sync_statements(ns, lambda: ns.create(R, b"g", 0o644, 0, 0)) == synced
    with pytest.raises(errors.NotFound):
        ns.getattr(f.inode)
    assert ns.check() == []


def test_purge_orphans(ns: Namespace) -> None:
    for name in (b"a", b"b", b"c"):
        file_with(ns, [Piece(H(7), 0, 10)], name)
    ns.mkdir(R, b"d", 0o755, 0, 0)
    ns.unlink(R, b"a")
    ns.unlink(R, b"b")
    ns.rmdir(R, b"d")
    assert ns.statfs() == (5, 30)
    assert ns.purge_orphans() == 3
    assert ns.purge_orphans() == 0
    assert ns.statfs() == (2, 10)
    assert ns.check(include_orphans=True) == []


# -- xattrs -----------------------------------------------------------------------------


def test_xattrs(ns: Namespace, clock: FakeClock) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    assert ns.listxattr(f.inode) == []
    clock.advance()
    ns.setxattr(f.inode, b"user.b", b"2")
    assert ns.getattr(f.inode).ctime_ns == clock.now
    ns.setxattr(f.inode, b"user.a", b"")
    assert ns.getxattr(f.inode, b"user.a") == b""
    assert ns.listxattr(f.inode) == [b"user.a", b"user.b"]
    ns.setxattr(f.inode, b"user.b", b"\0binary\xff")
    assert ns.getxattr(f.inode, b"user.b") == b"\0binary\xff"
    with pytest.raises(errors.NoSuchAttr):
        ns.getxattr(f.inode, b"user.c")
    with pytest.raises(errors.NotFound):
        ns.getxattr(999, b"user.c")
    with pytest.raises(errors.NotFound):
        ns.listxattr(999)
    with pytest.raises(errors.NotFound):
        ns.setxattr(999, b"user.c", b"")
    clock.advance()
    ns.removexattr(f.inode, b"user.a")
    assert ns.getattr(f.inode).ctime_ns == clock.now
    with pytest.raises(errors.NoSuchAttr):
        ns.removexattr(f.inode, b"user.a")
    with pytest.raises(errors.NotFound):
        ns.removexattr(999, b"user.a")
    assert ns.listxattr(f.inode) == [b"user.b"]
    assert ns.check() == []


def test_xattr_flags(ns: Namespace) -> None:
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    with pytest.raises(errors.NoSuchAttr):
        ns.setxattr(d.inode, b"user.x", b"1", replace=True)
    ns.setxattr(d.inode, b"user.x", b"1", create=True)
    with pytest.raises(errors.Exists):
        ns.setxattr(d.inode, b"user.x", b"2", create=True)
    ns.setxattr(d.inode, b"user.x", b"3", replace=True)
    assert ns.getxattr(d.inode, b"user.x") == b"3"
    with pytest.raises(errors.InvalidArgument):
        ns.setxattr(d.inode, b"user.x", b"4", create=True, replace=True)
    assert ns.getxattr(d.inode, b"user.x") == b"3"
    assert ns.check() == []


def test_xattr_names(ns: Namespace) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    with pytest.raises(errors.NameTooLong):
        ns.setxattr(f.inode, b"u" * 256, b"")
    with pytest.raises(errors.InvalidName):
        ns.setxattr(f.inode, b"", b"")
    with pytest.raises(errors.InvalidName):
        ns.getxattr(f.inode, b"a\0b")
    ns.setxattr(f.inode, b"user./odd..name", b"ok")  # '/' and '.' are fine in xattr names
    assert ns.listxattr(f.inode) == [b"user./odd..name"]
    assert ns.check() == []


@pytest.mark.parametrize("name", [b"system.posix_acl_access", b"security.selinux",
                                  b"security.capability"])
def test_xattr_namespaces_unsupported(ns: Namespace, name: bytes) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    with pytest.raises(errors.Unsupported):
        ns.setxattr(f.inode, name, b"x")
    with pytest.raises(errors.Unsupported):
        ns.getxattr(f.inode, name)
    with pytest.raises(errors.Unsupported):
        ns.removexattr(f.inode, name)
    ns.setxattr(f.inode, b"trusted.x", b"1")  # only those two namespaces are refused
    assert ns.listxattr(f.inode) == [b"trusted.x"]


def test_xattrs_go_with_the_inode(ns: Namespace) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    ns.setxattr(f.inode, b"user.x", b"1")
    ns.unlink(R, b"f")
    assert ns.getxattr(f.inode, b"user.x") == b"1"  # orphans keep theirs
    ns.drop_if_orphan(f.inode)
    with pytest.raises(errors.NotFound):
        ns.listxattr(f.inode)
    assert ns.check(include_orphans=True) == []
