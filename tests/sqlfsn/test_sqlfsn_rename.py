"""rename: moves, replacement, exchange, noreplace, subtree moves, link counts, times."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from sqlfsn import ROOT_INODE, Namespace, errors

if TYPE_CHECKING:
    from conftest import FakeClock

R = ROOT_INODE


def names(ns: Namespace, inode: int) -> list[bytes]:
    return [e.name for e in ns.readdir(inode)]


def test_rename_file_within_directory_keeps_offset(ns: Namespace, clock: FakeClock) -> None:
    f = ns.create(R, b"a", 0o644, 0, 0)
    ns.create(R, b"z", 0o644, 0, 0)
    offset_before = next(iter(ns.readdir(R))).next_offset
    clock.advance()
    assert ns.rename(R, b"a", R, b"b") is None
    entries = list(ns.readdir(R))
    assert [e.name for e in entries] == [b"b", b"z"]
    assert entries[0].next_offset == offset_before
    moved = ns.lookup(R, b"b")
    assert moved.inode == f.inode
    assert moved.ctime_ns == clock.now
    assert moved.mtime_ns == f.mtime_ns
    root = ns.getattr(R)
    assert root.mtime_ns == root.ctime_ns == clock.now
    with pytest.raises(errors.NotFound):
        ns.lookup(R, b"a")
    assert ns.check() == []


def test_rename_across_directories(ns: Namespace, clock: FakeClock) -> None:
    a = ns.mkdir(R, b"a", 0o755, 0, 0)
    b = ns.mkdir(R, b"b", 0o755, 0, 0)
    sub = ns.mkdir(a.inode, b"sub", 0o755, 0, 0)
    ns.create(sub.inode, b"inner", 0o644, 0, 0)
    assert ns.getattr(a.inode).nlink == 3
    clock.advance()
    assert ns.rename(a.inode, b"sub", b.inode, b"moved") is None
    assert ns.getattr(a.inode).nlink == 2
    assert ns.getattr(b.inode).nlink == 3
    assert ns.getattr(R).nlink == 4
    for parent in (a.inode, b.inode):
        attr = ns.getattr(parent)
        assert attr.mtime_ns == attr.ctime_ns == clock.now
    assert ns.getattr(sub.inode).ctime_ns == clock.now
    assert names(ns, sub.inode) == [b"inner"]
    assert ns.lookup(b.inode, b"moved").inode == sub.inode
    f = ns.create(a.inode, b"f", 0o644, 0, 0)
    ns.rename(a.inode, b"f", R, b"f")  # files change no link counts
    assert ns.getattr(f.inode).nlink == 1
    assert ns.getattr(a.inode).nlink == 2
    assert ns.check() == []


def test_rename_replaces_file(ns: Namespace, clock: FakeClock) -> None:
    src = ns.create(R, b"src", 0o644, 0, 0)
    dst = ns.create(R, b"dst", 0o644, 0, 0)
    clock.advance()
    assert ns.rename(R, b"src", R, b"dst") == dst.inode
    assert ns.lookup(R, b"dst").inode == src.inode
    victim = ns.getattr(dst.inode)
    assert (victim.nlink, victim.ctime_ns) == (0, clock.now)  # an orphan now
    assert names(ns, R) == [b"dst"]
    assert ns.check() == []
    assert ns.drop_if_orphan(dst.inode)
    assert ns.check(include_orphans=True) == []


def test_rename_replaces_hard_linked_file(ns: Namespace) -> None:
    src = ns.create(R, b"src", 0o644, 0, 0)
    dst = ns.create(R, b"dst", 0o644, 0, 0)
    ns.link(dst.inode, R, b"dst2")
    assert ns.rename(R, b"src", R, b"dst") == dst.inode
    assert ns.getattr(dst.inode).nlink == 1
    assert ns.getattr(src.inode).nlink == 1
    assert ns.check() == []


def test_rename_onto_other_link_of_same_inode_is_a_noop(ns: Namespace, clock: FakeClock) -> None:
    f = ns.create(R, b"a", 0o644, 0, 0)
    ns.link(f.inode, R, b"b")
    before = ns.getattr(f.inode)
    clock.advance()
    assert ns.rename(R, b"a", R, b"b") is None
    assert names(ns, R) == [b"a", b"b"]
    assert ns.getattr(f.inode) == before
    assert ns.rename(R, b"a", R, b"a") is None
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    assert ns.rename(R, b"d", R, b"d") is None
    assert ns.rename(R, b"a", R, b"a", exchange=True) is None
    with pytest.raises(errors.Exists):
        ns.rename(R, b"a", R, b"b", noreplace=True)
    assert ns.getattr(d.inode).nlink == 2
    assert ns.check() == []


def test_rename_directory_over_empty_directory(ns: Namespace) -> None:
    a = ns.mkdir(R, b"a", 0o755, 0, 0)
    b = ns.mkdir(R, b"b", 0o755, 0, 0)
    ns.create(a.inode, b"keep", 0o644, 0, 0)
    assert ns.getattr(R).nlink == 4
    assert ns.rename(R, b"a", R, b"b") == b.inode
    assert ns.getattr(R).nlink == 3
    assert ns.getattr(b.inode).nlink == 0
    assert names(ns, ns.lookup(R, b"b").inode) == [b"keep"]
    assert ns.check() == []
    # across directories: the target's parent keeps its count (one subdir out, one in)
    c = ns.mkdir(R, b"c", 0o755, 0, 0)
    e = ns.mkdir(c.inode, b"e", 0o755, 0, 0)
    assert ns.rename(R, b"b", c.inode, b"e") == e.inode
    assert ns.getattr(c.inode).nlink == 3
    assert ns.getattr(R).nlink == 3
    assert ns.check() == []


def test_rename_type_mismatches(ns: Namespace) -> None:
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    full = ns.mkdir(R, b"full", 0o755, 0, 0)
    ns.create(full.inode, b"x", 0o644, 0, 0)
    ns.create(R, b"f", 0o644, 0, 0)
    with pytest.raises(errors.NotEmpty):
        ns.rename(R, b"d", R, b"full")
    with pytest.raises(errors.NotADirectory):
        ns.rename(R, b"d", R, b"f")
    with pytest.raises(errors.IsADirectory):
        ns.rename(R, b"f", R, b"d")
    with pytest.raises(errors.IsADirectory):
        ns.rename(R, b"f", R, b"full")
    assert names(ns, R) == [b"d", b"full", b"f"]
    assert ns.getattr(d.inode).nlink == 2
    assert ns.check() == []


def test_rename_into_own_subtree(ns: Namespace) -> None:
    a = ns.mkdir(R, b"a", 0o755, 0, 0)
    b = ns.mkdir(a.inode, b"b", 0o755, 0, 0)
    c = ns.mkdir(b.inode, b"c", 0o755, 0, 0)
    with pytest.raises(errors.InvalidMove):
        ns.rename(R, b"a", a.inode, b"self")
    with pytest.raises(errors.InvalidMove):
        ns.rename(R, b"a", c.inode, b"deep")
    with pytest.raises(errors.InvalidMove):
        ns.rename(a.inode, b"b", c.inode, b"x", exchange=False)
    with pytest.raises(errors.NotEmpty):  # target is an ancestor of the source
        ns.rename(b.inode, b"c", R, b"a")
    # moving a directory *up* is fine
    ns.rename(b.inode, b"c", R, b"c")
    assert ns.getattr(b.inode).nlink == 2
    assert ns.getattr(R).nlink == 4
    assert ns.check() == []


def test_rename_noreplace(ns: Namespace) -> None:
    ns.create(R, b"a", 0o644, 0, 0)
    ns.create(R, b"b", 0o644, 0, 0)
    with pytest.raises(errors.Exists):
        ns.rename(R, b"a", R, b"b", noreplace=True)
    assert ns.rename(R, b"a", R, b"c", noreplace=True) is None
    assert names(ns, R) == [b"c", b"b"]
    with pytest.raises(errors.InvalidArgument):
        ns.rename(R, b"c", R, b"b", noreplace=True, exchange=True)
    assert ns.check() == []


def test_rename_exchange(ns: Namespace, clock: FakeClock) -> None:
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    other = ns.mkdir(R, b"other", 0o755, 0, 0)
    f = ns.create(other.inode, b"f", 0o644, 0, 0)
    clock.advance()
    assert ns.rename(R, b"d", other.inode, b"f", exchange=True) is None
    assert ns.lookup(R, b"d").inode == f.inode
    assert ns.lookup(other.inode, b"f").inode == d.inode
    assert ns.getattr(R).nlink == 3  # lost d, gained a file
    assert ns.getattr(other.inode).nlink == 3  # gained d
    assert ns.getattr(d.inode).ctime_ns == ns.getattr(f.inode).ctime_ns == clock.now
    assert ns.check() == []
    ns.create(R, b"g", 0o644, 0, 0)
    with pytest.raises(errors.NotFound):
        ns.rename(R, b"g", R, b"missing", exchange=True)
    with pytest.raises(errors.NotFound):
        ns.rename(R, b"missing", R, b"g", exchange=True)
    # swapping two directories in one parent changes no counts
    e = ns.mkdir(R, b"e", 0o755, 0, 0)
    ns.rename(R, b"e", R, b"other", exchange=True)
    assert ns.lookup(R, b"other").inode == e.inode
    assert ns.getattr(R).nlink == 4
    assert ns.check() == []


def test_rename_exchange_refuses_subtree_cycles(ns: Namespace) -> None:
    a = ns.mkdir(R, b"a", 0o755, 0, 0)
    b = ns.mkdir(a.inode, b"b", 0o755, 0, 0)
    with pytest.raises(errors.InvalidMove):
        ns.rename(R, b"a", a.inode, b"b", exchange=True)
    with pytest.raises(errors.InvalidMove):
        ns.rename(a.inode, b"b", R, b"a", exchange=True)
    ns.create(a.inode, b"f", 0o644, 0, 0)
    with pytest.raises(errors.InvalidMove):  # a file swapped with its ancestor directory
        ns.rename(a.inode, b"f", R, b"a", exchange=True)
    assert ns.getattr(b.inode).nlink == 2
    assert ns.check() == []


def test_rename_missing_things(ns: Namespace) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    with pytest.raises(errors.NotFound):
        ns.rename(R, b"missing", R, b"x")
    with pytest.raises(errors.NotFound):
        ns.rename(999, b"f", R, b"x")
    with pytest.raises(errors.NotFound):
        ns.rename(R, b"f", 999, b"x")
    with pytest.raises(errors.NotADirectory):
        ns.rename(f.inode, b"f", R, b"x")
    with pytest.raises(errors.NotADirectory):
        ns.rename(R, b"f", f.inode, b"x")
    ns.rmdir(R, b"d")
    with pytest.raises(errors.NotFound):  # into a removed directory
        ns.rename(R, b"f", d.inode, b"x")
    assert names(ns, R) == [b"f"]
    assert ns.check() == []
