"""Settling (ccd): unsettled_files, versioned_pieces, settle, and how settle composes with
writers that read the old version (the compare-and-swap races), truncation and the GC fence.

Contents are modelled as bytes (``STORE``: hash -> bytes), so every test can compare the
bytes a file reads as, not only its rows."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest

from sqlfsn import ROOT_INODE, Namespace, Piece, errors

if TYPE_CHECKING:
    from conftest import FakeClock

R = ROOT_INODE
FAR_FUTURE = 2**63 - 1


def H(i: int) -> str:
    return f"{i:064x}"


# The stored contents of these tests: hash -> bytes.
STORE: dict[str, bytes] = {H(i): bytes([i]) * (10 * i) for i in range(1, 9)}
WHOLE = H(99)  # the settled content of the file of `appended_file`


def stored(ns: Namespace, h: str) -> None:
    assert ns.claim_content(h, len(STORE[h])).ok


def file_bytes(ns: Namespace, inode: int) -> bytes:
    out = b""
    for p in ns.pieces(inode):
        out += bytes(p.length) if p.hash is None else STORE[p.hash][p.obj_offset:p.obj_offset
                                                                    + p.length]
    return out


def appended_file(ns: Namespace, name: bytes = b"log") -> tuple[int, bytes]:
    """A file written once and appended twice, then truncated up (a hole): 4 pieces.
    STORE[WHOLE] is set to its bytes. Returns (inode, bytes)."""
    f = ns.create(R, name, 0o644, 0, 0)
    size = 0
    for h in (H(1), H(2), H(3)):
        stored(ns, h)
        a = ns.getattr(f.inode)
        ns.set_content(f.inode, [*ns.pieces(f.inode), Piece(h, 0, len(STORE[h]))],
                       size + len(STORE[h]), expect_version=a.version)
        size += len(STORE[h])
    ns.setattr(f.inode, size=size + 7)
    data = file_bytes(ns, f.inode)
    assert data == STORE[H(1)] + STORE[H(2)] + STORE[H(3)] + bytes(7)
    STORE[WHOLE] = data
    return f.inode, data


def test_unsettled_files_selects_every_kind_of_unsettled_content(ns: Namespace) -> None:
    inode, data = appended_file(ns)
    whole = ns.create(R, b"whole", 0o644, 0, 0)
    stored(ns, H(4))
    ns.set_content(whole.inode, [Piece(H(4), 0, 40)], 40)
    prefix = ns.create(R, b"prefix", 0o644, 0, 0)  # part of a content (truncated)
    ns.set_content(prefix.inode, [Piece(H(4), 0, 40)], 40)
    ns.setattr(prefix.inode, size=25)
    middle = ns.create(R, b"middle", 0o644, 0, 0)  # a range not at offset 0
    ns.set_content(middle.inode, [Piece(H(4), 5, 35)], 35)
    sparse = ns.create(R, b"sparse", 0o644, 0, 0)
    ns.setattr(sparse.inode, size=1000)  # one hole
    ns.create(R, b"empty", 0o644, 0, 0)
    gone = ns.create(R, b"gone", 0o644, 0, 0)  # unlinked (an orphan the mount may hold)
    ns.set_content(gone.inode, [Piece(H(4), 0, 10), Piece(H(4), 20, 10)], 20)
    ns.unlink(R, b"gone")
    ns.mkdir(R, b"dir", 0o755, 0, 0)
    ns.symlink(R, b"link", b"log", 0, 0)
    found = {u.inode: u for u in ns.unsettled_files()}
    assert sorted(found) == sorted([inode, prefix.inode, middle.inode, sparse.inode])
    a = ns.getattr(inode)
    assert found[inode] == (inode, a.version, len(data), a.ctime_ns, 4)
    assert found[sparse.inode].pieces == 1 and found[sparse.inode].size == 1000


def test_versioned_pieces_reads_one_version(ns: Namespace) -> None:
    inode, _ = appended_file(ns)
    attr, pieces = ns.versioned_pieces(inode)
    assert attr == ns.getattr(inode) and pieces == ns.pieces(inode)
    assert sum(p.length for p in pieces) == attr.size
    with pytest.raises(errors.NotFound):
        ns.versioned_pieces(999)


def test_settle_swaps_the_pieces_and_changes_nothing_users_see(ns: Namespace,
                                                               clock: FakeClock) -> None:
    inode, data = appended_file(ns)
    before = ns.getattr(inode)
    old_hashes = {p.hash for p in ns.pieces(inode) if p.hash}
    clock.advance(10**12)
    stored(ns, WHOLE)
    ns.upload_begin("settle-upload")
    assert ns.settle(inode, WHOLE, len(data), expect_version=before.version,
                     upload_id="settle-upload") == before
    assert ns.getattr(inode) == before  # size, mtime, ctime, version: all unchanged
    assert ns.pieces(inode) == [Piece(WHOLE, 0, len(data))]
    assert file_bytes(ns, inode) == data
    assert ns.uploads() == []
    assert ns.unsettled_files() == []
    # The old contents are referenced by nothing, but claimed at the settle: the GC keeps
    # them for its grace (readers of the old version), and not after.
    for h in old_hashes:
        assert ns.content_info(h).claimed_ns == clock.now  # type: ignore[union-attr]
        assert ns.is_kept(h, claimed_since_ns=clock.now - 1)
        assert not ns.is_kept(h, claimed_since_ns=clock.now + 1)
    assert ns.is_kept(WHOLE, claimed_since_ns=FAR_FUTURE)
    assert ns.check() == []


def test_settle_refuses_and_changes_nothing(ns: Namespace) -> None:
    inode, data = appended_file(ns)
    v = ns.getattr(inode).version
    pieces = ns.pieces(inode)
    with pytest.raises(errors.InvalidArgument, match="unclaimed"):
        ns.settle(inode, WHOLE, len(data), expect_version=v)  # never claimed
    stored(ns, WHOLE)
    with pytest.raises(errors.Conflict):
        ns.settle(inode, WHOLE, len(data), expect_version=v - 1)
    with pytest.raises(errors.InvalidArgument):
        ns.settle(inode, WHOLE, len(data) - 1, expect_version=v)
    stored(ns, H(5))
    with pytest.raises(errors.InvalidArgument, match="unclaimed"):
        ns.settle(inode, H(5), len(data), expect_version=v)  # a content of another size
    with pytest.raises(errors.NotFound):
        ns.settle(999, WHOLE, len(data), expect_version=0)
    d = ns.mkdir(R, b"d", 0o755, 0, 0)
    with pytest.raises(errors.InvalidArgument):
        ns.settle(d.inode, WHOLE, len(data), expect_version=d.version)
    with pytest.raises(errors.InvalidArgument):
        ns.settle(inode, "not a hash", len(data), expect_version=v)
    assert ns.pieces(inode) == pieces and ns.getattr(inode).version == v
    assert ns.check() == []


def test_append_committed_first_makes_the_settle_fail(ns: Namespace) -> None:
    """Settle read version v; an append commits v+1 before settle commits: settle's
    compare-and-swap fails and the appended bytes stay."""
    inode, data = appended_file(ns)
    read_version = ns.versioned_pieces(inode)[0].version
    stored(ns, H(6))
    ns.set_content(inode, [*ns.pieces(inode), Piece(H(6), 0, 60)], len(data) + 60,
                   expect_version=read_version)
    stored(ns, WHOLE)
    with pytest.raises(errors.Conflict):
        ns.settle(inode, WHOLE, len(data), expect_version=read_version)
    assert file_bytes(ns, inode) == data + STORE[H(6)]
    assert ns.check() == []


def test_settle_first_then_the_append_commits_on_the_settled_pieces(ns: Namespace) -> None:
    """An append opened version v (the mount's base_version), settle commits, then the
    append commits against v, composing with the pieces current at commit: it succeeds and
    the file is the old bytes plus the appended ones."""
    inode, data = appended_file(ns)
    base_version = ns.getattr(inode).version
    stored(ns, WHOLE)
    ns.settle(inode, WHOLE, len(data), expect_version=base_version)
    stored(ns, H(6))
    ns.set_content(inode, [*ns.pieces(inode), Piece(H(6), 0, 60)], len(data) + 60,
                   expect_version=base_version)
    assert file_bytes(ns, inode) == data + STORE[H(6)]
    assert ns.pieces(inode) == [Piece(WHOLE, 0, len(data)), Piece(H(6), 0, 60)]
    assert ns.check() == []


def test_settle_first_then_a_write_on_the_old_pieces_commits(ns: Namespace) -> None:
    """A random write (the write cache) took the old pieces as its base; settle commits;
    the write commits its own pieces, made of the old ones: right bytes, and the old
    contents are referenced again (the GC keeps them)."""
    inode, data = appended_file(ns)
    base_version, base = ns.versioned_pieces(inode)
    stored(ns, WHOLE)
    ns.settle(inode, WHOLE, len(data), expect_version=base_version.version)
    stored(ns, H(7))
    assert base[0] == Piece(H(1), 0, 10)  # the first piece is H(1)'s 10 bytes, so:
    new = [Piece(H(7), 0, 10), *base[1:]]  # bytes [0, 10) replaced by H(7)[:10]
    ns.set_content(inode, new, len(data), expect_version=base_version.version)
    assert file_bytes(ns, inode) == STORE[H(7)][:10] + data[10:] != data
    assert ns.is_kept(H(2), claimed_since_ns=FAR_FUTURE)
    assert ns.check() == []


def test_pending_o_trunc_still_applies_after_a_settle(ns: Namespace) -> None:
    """The mount applies an O_TRUNC (open, no write, close) only if the version is still the
    one it opened: a settle in between must not make it skip the truncation."""
    inode, data = appended_file(ns)
    open_version = ns.getattr(inode).version
    stored(ns, WHOLE)
    ns.settle(inode, WHOLE, len(data), expect_version=open_version)
    assert ns.getattr(inode).version == open_version
    ns.set_content(inode, [], 0, expect_version=open_version)
    assert ns.getattr(inode).size == 0 and ns.pieces(inode) == []
    assert stat.S_ISREG(ns.getattr(inode).mode)
    assert ns.check() == []
