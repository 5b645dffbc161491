"""Names: lookup, mkdir, create, mknod, symlink, link, unlink, rmdir, readdir, validation."""

from __future__ import annotations

import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from sqlfsn import NAME_MAX, ROOT_INODE, TARGET_MAX, Namespace, errors

if TYPE_CHECKING:
    from conftest import FakeClock

R = ROOT_INODE


def names(ns: Namespace, inode: int) -> list[bytes]:
    return [e.name for e in ns.readdir(inode)]


# -- name validation, for every operation that takes a name -----------------------------

BAD_NAMES = [
    (b"x" * (NAME_MAX + 1), errors.NameTooLong),
    (b"", errors.InvalidName),
    (b".", errors.InvalidName),
    (b"..", errors.InvalidName),
    (b"a/b", errors.InvalidName),
    (b"a\0b", errors.InvalidName),
]

NAME_OPS: dict[str, Callable[[Namespace, int, bytes], Any]] = {
    "lookup": lambda ns, f, n: ns.lookup(R, n),
    "mkdir": lambda ns, f, n: ns.mkdir(R, n, 0o755, 0, 0),
    "create": lambda ns, f, n: ns.create(R, n, 0o644, 0, 0),
    "mknod": lambda ns, f, n: ns.mknod(R, n, stat.S_IFIFO | 0o644, 0, 0, 0),
    "symlink": lambda ns, f, n: ns.symlink(R, n, b"t", 0, 0),
    "link": lambda ns, f, n: ns.link(f, R, n),
    "unlink": lambda ns, f, n: ns.unlink(R, n),
    "rmdir": lambda ns, f, n: ns.rmdir(R, n),
    "rename_from": lambda ns, f, n: ns.rename(R, n, R, b"y"),
    "rename_to": lambda ns, f, n: ns.rename(R, b"f", R, n),
}


@pytest.mark.parametrize("op", sorted(NAME_OPS))
@pytest.mark.parametrize(("name", "error"), BAD_NAMES, ids=lambda v: repr(v)[:12])
def test_bad_names_are_refused(
    ns: Namespace, op: str, name: bytes, error: type[errors.NamespaceError]
) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    before = ns.getattr(R)
    with pytest.raises(error):
        NAME_OPS[op](ns, f.inode, name)
    assert ns.getattr(R) == before
    assert names(ns, R) == [b"f"]
    assert ns.check() == []


def test_longest_name_is_fine(ns: Namespace) -> None:
    name = b"\xff" * NAME_MAX
    f = ns.create(R, name, 0o644, 0, 0)
    assert ns.lookup(R, name) == f
    assert ns.check() == []


def test_names_must_be_bytes(ns: Namespace) -> None:
    with pytest.raises(TypeError):
        ns.lookup(R, "str")  # type: ignore[arg-type]
    assert ns.check() == []


# -- lookup / getattr -------------------------------------------------------------------


def test_lookup(ns: Namespace) -> None:
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    f = ns.create(d.inode, b"f", 0o644, 0, 0)
    assert ns.lookup(R, b"d") == ns.getattr(d.inode)
    assert ns.lookup(d.inode, b"f") == f
    with pytest.raises(errors.NotFound):
        ns.lookup(R, b"f")
    with pytest.raises(errors.NotFound):
        ns.lookup(999, b"f")
    with pytest.raises(errors.NotADirectory):
        ns.lookup(f.inode, b"x")
    with pytest.raises(errors.NotFound):
        ns.getattr(999)
    assert ns.check() == []


# -- creating ---------------------------------------------------------------------------


def test_mkdir(ns: Namespace, clock: FakeClock) -> None:
    clock.advance()
    d = ns.mkdir(R, b"d", 0o40750, 7, 8)  # file type bits in mode are ignored
    assert d.mode == stat.S_IFDIR | 0o750
    assert (d.nlink, d.uid, d.gid, d.size, d.version) == (2, 7, 8, 0, 0)
    assert d.atime_ns == d.mtime_ns == d.ctime_ns == clock.now
    root = ns.getattr(R)
    assert root.nlink == 3
    assert root.mtime_ns == root.ctime_ns == clock.now
    sub = ns.mkdir(d.inode, b"sub", 0o755, 0, 0)
    assert ns.getattr(d.inode).nlink == 3
    assert ns.getattr(R).nlink == 3
    assert sub.inode not in (R, d.inode)
    with pytest.raises(errors.Exists):
        ns.mkdir(R, b"d", 0o755, 0, 0)
    with pytest.raises(errors.NotFound):
        ns.mkdir(999, b"x", 0o755, 0, 0)
    f = ns.create(R, b"f", 0o644, 0, 0)
    with pytest.raises(errors.NotADirectory):
        ns.mkdir(f.inode, b"x", 0o755, 0, 0)
    with pytest.raises(errors.InvalidArgument):
        ns.mkdir(R, b"neg", 0o755, -1, 0)
    assert ns.check() == []


def test_create(ns: Namespace, clock: FakeClock) -> None:
    f = ns.create(R, b"f", 0o100640, 1, 2)
    assert f.mode == stat.S_IFREG | 0o640
    assert (f.nlink, f.size, f.version, f.rdev) == (1, 0, 0, 0)
    assert ns.getattr(R).nlink == 2
    assert ns.pieces(f.inode) == []
    for existing in (b"f",):
        with pytest.raises(errors.Exists):
            ns.create(R, existing, 0o644, 0, 0)
    ns.mkdir(R, b"d", 0o755, 0, 0)
    with pytest.raises(errors.Exists):
        ns.create(R, b"d", 0o644, 0, 0)
    with pytest.raises(errors.NotADirectory):
        ns.create(f.inode, b"x", 0o644, 0, 0)
    assert ns.check() == []


@pytest.mark.parametrize(
    ("kind", "rdev", "kept_rdev"),
    [
        (stat.S_IFREG, 5, 0),
        (stat.S_IFIFO, 5, 0),
        (stat.S_IFSOCK, 0, 0),
        (stat.S_IFCHR, 0x0103, 0x0103),
        (stat.S_IFBLK, 0x0801, 0x0801),
        (0, 0, 0),  # no type: a regular file, as mknod(2)
    ],
)
def test_mknod(ns: Namespace, kind: int, rdev: int, kept_rdev: int) -> None:
    node = ns.mknod(R, b"n", kind | 0o620, rdev, 3, 4)
    assert stat.S_IFMT(node.mode) == (kind or stat.S_IFREG)
    assert stat.S_IMODE(node.mode) == 0o620
    assert node.rdev == kept_rdev
    assert ns.lookup(R, b"n") == node
    with pytest.raises(errors.Exists):
        ns.mknod(R, b"n", kind | 0o620, rdev, 3, 4)
    assert ns.check() == []


@pytest.mark.parametrize("kind", [stat.S_IFDIR, stat.S_IFLNK, 0o170000])
def test_mknod_refuses_dirs_and_symlinks(ns: Namespace, kind: int) -> None:
    with pytest.raises(errors.InvalidArgument):
        ns.mknod(R, b"n", kind | 0o755, 0, 0, 0)
    assert names(ns, R) == []
    assert ns.check() == []


def test_symlink_and_readlink(ns: Namespace) -> None:
    s = ns.symlink(R, b"s", b"../some/where", 5, 6)
    assert s.mode == stat.S_IFLNK | 0o777
    assert s.size == len(b"../some/where")
    assert (s.nlink, s.uid, s.gid) == (1, 5, 6)
    assert ns.readlink(s.inode) == b"../some/where"
    f = ns.create(R, b"f", 0o644, 0, 0)
    with pytest.raises(errors.InvalidArgument):
        ns.readlink(f.inode)
    with pytest.raises(errors.InvalidArgument):
        ns.readlink(R)
    with pytest.raises(errors.NotFound):
        ns.readlink(999)
    with pytest.raises(errors.Exists):
        ns.symlink(R, b"s", b"x", 0, 0)
    long_target = b"t" * TARGET_MAX
    assert ns.readlink(ns.symlink(R, b"long", long_target, 0, 0).inode) == long_target
    with pytest.raises(errors.NameTooLong):
        ns.symlink(R, b"toolong", b"t" * (TARGET_MAX + 1), 0, 0)
    with pytest.raises(errors.InvalidArgument):
        ns.symlink(R, b"empty", b"", 0, 0)
    with pytest.raises(errors.InvalidArgument):
        ns.symlink(R, b"nul", b"a\0b", 0, 0)
    assert ns.check() == []


# -- hard links and unlink --------------------------------------------------------------


def test_link_and_unlink_count_names(ns: Namespace, clock: FakeClock) -> None:
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    f = ns.create(R, b"f", 0o644, 0, 0)
    clock.advance()
    g = ns.link(f.inode, d.inode, b"g")
    assert g.inode == f.inode
    assert g.nlink == 2
    assert g.ctime_ns == clock.now
    assert ns.getattr(d.inode).mtime_ns == clock.now
    assert ns.getattr(d.inode).nlink == 2  # a file link is no subdirectory
    assert ns.lookup(d.inode, b"g") == g
    ns.link(f.inode, R, b"h")
    assert ns.getattr(f.inode).nlink == 3
    assert ns.check() == []

    clock.advance()
    after = ns.unlink(R, b"f")
    assert after.nlink == 2
    assert after.ctime_ns == clock.now
    assert ns.getattr(R).mtime_ns == clock.now
    assert ns.unlink(d.inode, b"g").nlink == 1
    assert ns.check() == []
    last = ns.unlink(R, b"h")
    assert last.nlink == 0
    assert ns.getattr(f.inode).nlink == 0  # an orphan: still there
    assert ns.check() == []
    assert ns.check(include_orphans=True) == [f"inode {f.inode}: orphan (nlink 0)"]
    with pytest.raises(errors.NotFound):
        ns.link(f.inode, R, b"back")  # no resurrection of orphans
    assert ns.drop_if_orphan(f.inode) is True
    with pytest.raises(errors.NotFound):
        ns.getattr(f.inode)
    assert ns.check(include_orphans=True) == []


def test_link_errors(ns: Namespace) -> None:
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    f = ns.create(R, b"f", 0o644, 0, 0)
    with pytest.raises(errors.NotPermitted):
        ns.link(d.inode, R, b"d2")
    with pytest.raises(errors.Exists):
        ns.link(f.inode, R, b"d")
    with pytest.raises(errors.NotFound):
        ns.link(999, R, b"x")
    with pytest.raises(errors.NotFound):
        ns.link(f.inode, 999, b"x")
    with pytest.raises(errors.NotADirectory):
        ns.link(f.inode, f.inode, b"x")
    s = ns.symlink(R, b"s", b"f", 0, 0)
    assert ns.link(s.inode, d.inode, b"s2").nlink == 2  # symlinks may be hard linked
    assert ns.getattr(f.inode).nlink == 1
    assert ns.check() == []


def test_unlink_errors(ns: Namespace) -> None:
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    f = ns.create(R, b"f", 0o644, 0, 0)
    with pytest.raises(errors.IsADirectory):
        ns.unlink(R, b"d")
    with pytest.raises(errors.NotFound):
        ns.unlink(R, b"missing")
    with pytest.raises(errors.NotFound):
        ns.unlink(999, b"f")
    with pytest.raises(errors.NotADirectory):
        ns.unlink(f.inode, b"f")
    assert ns.getattr(d.inode).nlink == 2
    for kind in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR):
        ns.mknod(R, b"n", kind | 0o600, 1, 0, 0)
        assert ns.unlink(R, b"n").nlink == 0
    ns.symlink(R, b"s", b"x", 0, 0)
    assert ns.unlink(R, b"s").nlink == 0
    assert ns.purge_orphans() == 4
    assert ns.check(include_orphans=True) == []


# -- rmdir ------------------------------------------------------------------------------


def test_rmdir(ns: Namespace, clock: FakeClock) -> None:
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    sub = ns.mkdir(d.inode, b"sub", 0o755, 0, 0)
    ns.create(d.inode, b"f", 0o644, 0, 0)
    with pytest.raises(errors.NotEmpty):
        ns.rmdir(R, b"d")
    with pytest.raises(errors.NotADirectory):
        ns.rmdir(d.inode, b"f")
    with pytest.raises(errors.NotFound):
        ns.rmdir(R, b"missing")
    with pytest.raises(errors.NotFound):
        ns.rmdir(999, b"d")
    clock.advance()
    gone = ns.rmdir(d.inode, b"sub")
    assert (gone.inode, gone.nlink, gone.ctime_ns) == (sub.inode, 0, clock.now)
    parent = ns.getattr(d.inode)
    assert parent.nlink == 2
    assert parent.mtime_ns == parent.ctime_ns == clock.now
    assert ns.check() == []
    # A removed directory stays an orphan; nothing can be created in it any more.
    with pytest.raises(errors.NotFound):
        ns.create(sub.inode, b"late", 0o644, 0, 0)
    with pytest.raises(errors.NotFound):
        ns.mkdir(sub.inode, b"late", 0o755, 0, 0)
    with pytest.raises(errors.NotFound):
        ns.lookup(sub.inode, b"late")
    assert list(ns.readdir(sub.inode)) == []
    ns.unlink(d.inode, b"f")
    ns.rmdir(R, b"d")
    assert ns.getattr(R).nlink == 2
    assert ns.purge_orphans() == 3
    assert ns.check(include_orphans=True) == []


def test_root_cannot_be_removed_or_dropped(ns: Namespace) -> None:
    assert ns.drop_if_orphan(R) is False
    assert ns.purge_orphans() == 0
    assert ns.getattr(R).nlink == 2
    assert ns.check() == []


# -- readdir ----------------------------------------------------------------------------


def test_readdir_lists_in_creation_order_with_attrs(ns: Namespace) -> None:
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    f = ns.create(R, b"f", 0o644, 0, 0)
    s = ns.symlink(R, b"s", b"f", 0, 0)
    entries = list(ns.readdir(R))
    assert [e.name for e in entries] == [b"d", b"f", b"s"]
    assert [e.attr for e in entries] == [ns.getattr(d.inode), f, s]
    offsets = [e.next_offset for e in entries]
    assert offsets == sorted(offsets) and len(set(offsets)) == 3
    assert list(ns.readdir(d.inode)) == []
    with pytest.raises(errors.NotADirectory):
        ns.readdir(f.inode)
    with pytest.raises(errors.NotFound):
        ns.readdir(999)
    assert ns.check() == []


def test_readdir_resumes_while_entries_come_and_go(ns: Namespace) -> None:
    for i in range(300):  # more than one batch
        ns.create(R, b"f%03d" % i, 0o644, 0, 0)
    seen: list[bytes] = []
    offset = 0
    removed = set()
    added = []
    while True:
        chunk = []
        for entry in ns.readdir(R, offset):
            chunk.append(entry)
            if len(chunk) == 7:
                break
        if not chunk:
            break
        seen += [e.name for e in chunk]
        offset = chunk[-1].next_offset
        # Meanwhile: remove an entry not yet listed, remove one already listed, add one.
        n = len(seen)
        for victim in (b"f%03d" % (n + 3), seen[0]):
            if victim not in removed and n + 3 < 300:
                ns.unlink(R, victim)
                removed.add(victim)
        if n < 300:
            ns.create(R, b"new%03d" % n, 0o644, 0, 0)
            added.append(b"new%03d" % n)
    olds = [name for name in seen if name.startswith(b"f")]
    expected = [b"f%03d" % i for i in range(300)]
    # Every entry present throughout is listed exactly once, in order; removed ones that
    # were not listed yet are skipped; entries added meanwhile appear (after the old ones).
    assert olds == [name for name in expected if name not in removed or name in olds]
    assert len(seen) == len(set(seen))
    assert seen[len(olds) :] == added
    assert ns.check() == []


def test_readdir_offset_is_stable_after_removal(ns: Namespace) -> None:
    for name in (b"a", b"b", b"c", b"d"):
        ns.create(R, name, 0o644, 0, 0)
    first_two = list(ns.readdir(R))[:2]
    ns.unlink(R, b"b")  # the entry at the resume point itself disappears
    rest = list(ns.readdir(R, first_two[1].next_offset))
    assert [e.name for e in rest] == [b"c", b"d"]
    ns.unlink(R, b"c")
    ns.create(R, b"c", 0o644, 0, 0)  # re-created: a new, larger offset
    assert [e.name for e in ns.readdir(R, first_two[1].next_offset)] == [b"d", b"c"]
    assert ns.check() == []


def test_readdir_raises_eagerly(ns: Namespace) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    with pytest.raises(errors.NotADirectory):
        ns.readdir(f.inode)  # no next() needed
    assert ns.check() == []


def test_readdir_rows_are_readdir_as_plain_rows(ns: Namespace) -> None:
    """The mount's listing query (Namespace.readdir_rows, one query per batch): the same
    entries as readdir, as (offset, name, inode, mode, nlink, uid, gid, rdev, size, atime_ns,
    mtime_ns, ctime_ns), pages resumed at any offset; uid and gid up to 2**32 - 1."""
    ns.mkdir(R, b"d", 0o755, 0, 0)
    f = ns.create(R, b"f", 0o644, 4294967294, 4294967295)
    ns.setattr(f.inode, size=12345)
    ns.symlink(R, b"s", b"target", 1, 2)
    ns.mknod(R, b"c", 0o020600, 0x0103, 0, 0)
    for i in range(20):
        ns.create(R, b"e%02d" % i, 0o600, 3, 4)
    entries = list(ns.readdir(R))
    expected = [(e.next_offset, e.name, e.attr.inode, e.attr.mode, e.attr.nlink, e.attr.uid,
                 e.attr.gid, e.attr.rdev, e.attr.size, e.attr.atime_ns, e.attr.mtime_ns,
                 e.attr.ctime_ns) for e in entries]
    assert ns.readdir_rows(R, 0, 100) == expected
    pages, offset = [], 0
    while rows := ns.readdir_rows(R, offset, 7):
        pages.append(rows)
        offset = rows[-1][0]
    assert [len(p) for p in pages] == [7, 7, 7, 3] and sum(pages, []) == expected
    assert ns.readdir_rows(R, expected[5][0], 2) == expected[6:8]
    with pytest.raises(errors.NotADirectory):
        ns.readdir_rows(f.inode, 0, 10)
    with pytest.raises(errors.NotFound):
        ns.readdir_rows(999, 0, 10)


def test_statfs(ns: Namespace) -> None:
    ns.mkdir(R, b"d", 0o755, 0, 0)
    f = ns.create(R, b"f", 0o644, 0, 0)
    ns.symlink(R, b"s", b"long target", 0, 0)
    ns.setattr(f.inode, size=1000)
    assert ns.statfs() == (4, 1000)
    ns.unlink(R, b"f")
    assert ns.statfs() == (4, 1000)  # orphans still count
    ns.purge_orphans()
    assert ns.statfs() == (3, 0)
    assert ns.check() == []
