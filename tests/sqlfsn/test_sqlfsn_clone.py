"""Clones (instant copies sharing stored content) and read-only snapshot marks, on every backend."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest

from sqlfsn import ROOT_INODE, Attr, Namespace, Piece, errors

if TYPE_CHECKING:
    from conftest import FakeClock

R = ROOT_INODE
GRACE = 1_000_000


def H(i: int) -> str:
    return f"{i:064x}"


def file_with(ns: Namespace, parent: int, name: bytes, pieces: list[Piece]) -> Attr:
    f = ns.create(parent, name, 0o640, 1000, 1000)
    for p in pieces:
        if p.hash is not None:
            assert ns.claim_content(p.hash, p.obj_offset + p.length).ok
    return ns.set_content(f.inode, pieces, sum(p.length for p in pieces))


def tree(ns: Namespace) -> dict[str, int]:
    """src/ with every kind of file, a hard link pair, a subdirectory and xattrs."""
    src = ns.mkdir(R, b"src", 0o750, 1000, 1000).inode
    sub = ns.mkdir(src, b"sub", 0o700, 1001, 1002).inode
    a = file_with(ns, src, b"a", [Piece(H(1), 0, 10), Piece(None, 0, 5), Piece(H(2), 3, 7)])
    ns.link(a.inode, sub, b"a-link")
    b = file_with(ns, sub, b"b", [Piece(H(3), 0, 100)])
    ns.create(src, b"empty", 0o600, 0, 0)
    ns.symlink(src, b"ln", b"../elsewhere", 1000, 1000)
    ns.mknod(src, b"fifo", stat.S_IFIFO | 0o644, 0, 1000, 1000)
    ns.mknod(src, b"chr", stat.S_IFCHR | 0o600, (1 << 8) | 3, 0, 0)
    ns.mknod(src, b"sock", stat.S_IFSOCK | 0o755, 0, 1000, 1000)
    ns.mkdir(sub, b"deeper", 0o755, 0, 0)
    ns.setxattr(a.inode, b"user.tag", b"v1")
    ns.setxattr(src, b"user.dir", b"")
    ns.setattr(b.inode, atime_ns=5, mtime_ns=7)
    return {"src": src, "sub": sub, "a": a.inode, "b": b.inode}


def walk(ns: Namespace, inode: int, path: bytes = b"") -> dict[bytes, tuple[object, ...]]:
    """Everything cp -a keeps, by path; hard links shown as the first path of the inode."""
    out: dict[bytes, tuple[object, ...]] = {}
    first: dict[int, bytes] = {}

    def visit(node: int, prefix: bytes) -> None:
        for e in ns.readdir(node):
            a = e.attr
            p = prefix + b"/" + e.name
            link = first.setdefault(a.inode, p)
            xattrs = {n: ns.getxattr(a.inode, n) for n in ns.listxattr(a.inode)}
            target = ns.readlink(a.inode) if stat.S_ISLNK(a.mode) else None
            out[p] = (a.mode, a.uid, a.gid, a.rdev, a.size, a.nlink, a.atime_ns, a.mtime_ns,
                      target, tuple(ns.pieces(a.inode)) if stat.S_ISREG(a.mode) else (),
                      xattrs, link)
            if stat.S_ISDIR(a.mode):
                visit(a.inode, p)

    visit(inode, path)
    return out


def test_clone_of_a_tree_copies_every_kind_like_cp_a(ns: Namespace, clock: FakeClock) -> None:
    t = tree(ns)
    before = walk(ns, t["src"])
    clock.advance(10_000)
    result = ns.clone(t["src"], R, b"copy")
    copy = ns.lookup(R, b"copy")
    assert result.inode == copy.inode
    assert walk(ns, copy.inode) == before  # same attributes, pieces, xattrs, link structure
    assert walk(ns, t["src"]) == before  # the source untouched
    src_attr = ns.getattr(t["src"])
    assert (copy.mode, copy.uid, copy.gid, copy.nlink) == (src_attr.mode, src_attr.uid,
                                                           src_attr.gid, src_attr.nlink)
    assert copy.mtime_ns == src_attr.mtime_ns and copy.ctime_ns == clock.now
    assert ns.getxattr(copy.inode, b"user.dir") == b""
    # New inodes everywhere, hard links kept as one inode with two names.
    a2 = ns.lookup(copy.inode, b"a")
    assert a2.inode != t["a"] and a2.nlink == 2 and a2.version == 0
    assert ns.lookup(ns.lookup(copy.inode, b"sub").inode, b"a-link").inode == a2.inode
    assert (result.inodes, result.names, result.files, result.pieces, result.xattrs) == (
        10, 11, 3, 4, 2)
    assert result.bytes == 22 + 100
    assert ns.getattr(R).nlink == 4  # root: ., .., src, copy
    assert ns.check() == []


def test_clone_of_one_file_counts_only_its_new_name(ns: Namespace) -> None:
    t = tree(ns)
    result = ns.clone(t["a"], R, b"a2")  # a has two names; the copy has one
    a2 = ns.getattr(result.inode)
    assert a2.nlink == 1 and a2.size == 22
    assert ns.pieces(a2.inode) == ns.pieces(t["a"])
    assert ns.getxattr(a2.inode, b"user.tag") == b"v1"
    link = ns.lookup(t["src"], b"ln").inode
    assert ns.readlink(ns.clone(link, R, b"ln2").inode) == b"../elsewhere"
    assert ns.check() == []


def test_deleting_the_source_keeps_the_copys_content(ns: Namespace, clock: FakeClock) -> None:
    """The GC keeps every hash a piece names: the copy's pieces keep the shared content
    after the source is gone (orphan dropped), and the copy's own deletion frees it."""
    t = tree(ns)
    ns.clone(t["src"], R, b"copy")
    for parent, name in ((t["sub"], b"a-link"), (t["sub"], b"b"), (t["src"], b"a")):
        gone = ns.unlink(parent, name)
        if gone.nlink == 0:
            assert ns.drop_if_orphan(gone.inode)
    clock.advance(10 * GRACE)
    since = clock.now - GRACE
    assert {H(1), H(2), H(3)} <= ns.referenced_hashes(claimed_since_ns=since)
    assert not any(ns.condemn(H(i), claimed_before_ns=since) for i in (1, 2, 3))
    copy = ns.lookup(R, b"copy").inode
    sub = ns.lookup(copy, b"sub").inode
    for parent, name in ((sub, b"a-link"), (sub, b"b"), (copy, b"a")):
        gone = ns.unlink(parent, name)
        if gone.nlink == 0:
            assert ns.drop_if_orphan(gone.inode)
    assert all(ns.condemn(H(i), claimed_before_ns=since) for i in (1, 2, 3))
    assert ns.check() == []


def test_the_copy_and_the_source_change_independently(ns: Namespace) -> None:
    t = tree(ns)
    copy = ns.clone(t["src"], R, b"copy").inode
    a2 = ns.lookup(copy, b"a").inode
    assert ns.claim_content(H(9), 4).ok
    ns.set_content(a2, [Piece(H(9), 0, 4)], 4)
    ns.setattr(a2, mode=0o600)
    ns.setxattr(a2, b"user.tag", b"changed")
    assert ns.pieces(t["a"])[0] == Piece(H(1), 0, 10)
    assert ns.getattr(t["a"]).mode & 0o777 == 0o640
    assert ns.getxattr(t["a"], b"user.tag") == b"v1"
    ns.setattr(t["b"], size=1)
    assert ns.getattr(ns.lookup(ns.lookup(copy, b"sub").inode, b"b").inode).size == 100
    ns.unlink(t["src"], b"empty")
    assert ns.lookup(copy, b"empty").size == 0
    assert ns.check() == []


def test_a_file_being_written_is_copied_at_its_committed_version(ns: Namespace) -> None:
    """Uncommitted bytes have no pieces yet: the copy has what set_content last committed."""
    f = file_with(ns, R, b"f", [Piece(H(1), 0, 10)])
    assert ns.claim_content(H(2), 20).ok  # a writer's claim, its set_content not yet done
    ns.upload_begin("u1")
    copy = ns.clone(f.inode, R, b"g")
    assert ns.pieces(copy.inode) == [Piece(H(1), 0, 10)]
    ns.set_content(f.inode, [Piece(H(2), 0, 20)], 20, upload_id="u1")
    assert ns.getattr(copy.inode).size == 10
    assert ns.check() == []


def test_clone_errors_change_nothing(ns: Namespace) -> None:
    t = tree(ns)
    before = walk(ns, R)
    with pytest.raises(errors.Exists):
        ns.clone(t["a"], t["src"], b"empty")
    with pytest.raises(errors.InvalidMove):
        ns.clone(t["src"], t["sub"], b"inside")
    with pytest.raises(errors.InvalidMove):
        ns.clone(t["src"], t["src"], b"inside")
    with pytest.raises(errors.InvalidMove):
        ns.clone(R, t["src"], b"root")
    with pytest.raises(errors.NotFound):
        ns.clone(99999, R, b"x")
    with pytest.raises(errors.NotFound):
        ns.clone(t["a"], 99999, b"x")
    with pytest.raises(errors.NotADirectory):
        ns.clone(t["sub"], t["a"], b"x")
    with pytest.raises(errors.InvalidName):
        ns.clone(t["a"], R, b"a/b")
    with pytest.raises(errors.InvalidArgument):
        ns.clone(t["a"], R, b"x", read_only=True)
    gone = ns.create(R, b"gone", 0o644, 0, 0)
    ns.unlink(R, b"gone")
    with pytest.raises(errors.NotFound):
        ns.clone(gone.inode, R, b"x")
    ns.drop_if_orphan(gone.inode)
    assert walk(ns, R) == before
    assert ns.read_only_roots() == frozenset()
    assert ns.check() == []


def test_read_only_snapshot_marks_its_root_found_by_ancestry(ns: Namespace) -> None:
    t = tree(ns)
    snap = ns.clone(t["src"], R, b"snap", read_only=True)
    assert snap.read_only
    roots = ns.read_only_roots()
    assert roots == frozenset({snap.inode})
    sub = ns.lookup(snap.inode, b"sub").inode
    deeper = ns.lookup(sub, b"deeper").inode
    a = ns.lookup(snap.inode, b"a").inode
    assert all(ns.in_read_only(i, roots) for i in (snap.inode, sub, deeper, a))
    assert not any(ns.in_read_only(i, roots) for i in (R, t["src"], t["sub"], t["a"]))
    assert not ns.in_read_only(t["a"], frozenset())
    # A copy of a read-only snapshot is writable unless asked otherwise.
    again = ns.clone(snap.inode, R, b"again")
    assert not ns.in_read_only(ns.lookup(again.inode, b"a").inode, ns.read_only_roots())
    assert ns.check() == []


def test_a_large_flat_tree_in_one_transaction(ns: Namespace) -> None:
    """Chunked statements (500 inodes each) cover every inode, pieces and xattrs included."""
    src = ns.mkdir(R, b"big", 0o755, 0, 0).inode
    assert ns.claim_content(H(1), 1).ok
    for i in range(1234):
        f = ns.create(src, b"f%d" % i, 0o644, 0, 0)
        ns.set_content(f.inode, [Piece(H(1), 0, 1)], 1)
    ns.setxattr(f.inode, b"user.last", b"1")
    commits = ns.commits
    result = ns.clone(src, R, b"big2")
    assert ns.commits == commits + 1
    assert (result.inodes, result.files, result.pieces, result.xattrs) == (1235, 1234, 1234, 1)
    assert ns.getxattr(ns.lookup(result.inode, b"f1233").inode, b"user.last") == b"1"
    assert ns.check() == []


def test_settling_the_source_or_the_copy_keeps_the_other(ns: Namespace) -> None:
    """ccd's settle works per file on shared content: settling the source leaves the copy's
    pieces (still kept by the GC), and the copy settles onto the same whole content."""
    t = tree(ns)
    copy = ns.clone(t["a"], R, b"a2").inode
    old = ns.pieces(t["a"])
    assert len(old) == 3 and ns.unsettled_files()[0].inode == t["a"]
    assert ns.claim_content(H(7), 22).ok
    ns.settle(t["a"], H(7), 22, expect_version=ns.getattr(t["a"]).version)
    assert ns.pieces(copy) == old
    assert ns.is_referenced(H(1)) and ns.is_referenced(H(2))
    assert [f.inode for f in ns.unsettled_files()] == [copy]
    ns.settle(copy, H(7), 22, expect_version=0)
    assert ns.pieces(copy) == ns.pieces(t["a"]) == [Piece(H(7), 0, 22)]
    assert not ns.is_referenced(H(1))
    assert ns.check() == []


def test_releasing_a_read_only_snapshot(ns: Namespace) -> None:
    t = tree(ns)
    snap = ns.clone(t["src"], R, b"snap", read_only=True).inode
    assert not ns.release_read_only(t["src"])
    assert ns.release_read_only(snap)
    assert ns.read_only_roots() == frozenset()
    assert not ns.release_read_only(snap)
    assert ns.check() == []
