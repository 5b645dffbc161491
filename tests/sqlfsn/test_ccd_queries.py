"""The registry queries ccd relies on: content_info, is_kept, is_referenced, segment_parents,
unkept_contents."""

from __future__ import annotations

from sqlfsn import ROOT_INODE, Namespace, Piece

H = "a" * 64  # a two-segment content
S1, S2 = "b" * 64, "c" * 64
SMALL = "d" * 64  # a single object
FAR_FUTURE = 2**63 - 1
SECOND = 10**9


def test_content_info(ns: Namespace, clock) -> None:
    assert ns.content_info(H) is None
    ns.claim_content(H, 30, [(S1, 10), (S2, 20)])
    info = ns.content_info(H)
    assert info is not None
    assert (info.hash, info.size, info.state, info.claimed_ns) == (H, 30, "live", clock.now)


def test_is_kept_by_claim_and_by_file(ns: Namespace, clock) -> None:
    ns.claim_content(H, 30, [(S1, 10), (S2, 20)])
    since = clock.now
    for h in (H, S1, S2):
        assert ns.is_kept(h, claimed_since_ns=since)
        assert not ns.is_referenced(h)  # claimed, not referenced
    assert not ns.is_kept(SMALL, claimed_since_ns=since)
    f = ns.create(ROOT_INODE, b"f", 0o644, 0, 0)
    ns.set_content(f.inode, [Piece(H, 0, 30)], 30)
    for h in (H, S1, S2):
        assert ns.is_referenced(h)  # referenced by a file, as a content or a segment


def test_segment_parents(ns: Namespace) -> None:
    ns.claim_content(H, 30, [(S1, 10), (S2, 20)])
    ns.claim_content(SMALL, 10, [(SMALL, 10)])  # a one-segment content lists itself
    assert ns.segment_parents(S1) == [H]
    assert ns.segment_parents(SMALL) == []
    assert ns.segment_parents(H) == []
    assert ns.condemn(H, claimed_before_ns=FAR_FUTURE)
    assert ns.segment_parents(S1) == [H]  # a 'deleting' row still lists it
    assert ns.content_deleted(H)
    assert ns.segment_parents(S1) == []


def test_unkept_contents(ns: Namespace, clock) -> None:
    ns.claim_content(H, 30, [(S1, 10), (S2, 20)])
    ns.claim_content(SMALL, 5)
    old = clock.now
    clock.advance(10 * SECOND)
    assert ns.unkept_contents(claimed_since_ns=old) == []
    assert ns.unkept_contents(claimed_since_ns=clock.now) == [H, SMALL]
    f = ns.create(ROOT_INODE, b"f", 0o644, 0, 0)
    ns.set_content(f.inode, [Piece(SMALL, 0, 5)], 5)
    assert ns.unkept_contents(claimed_since_ns=clock.now) == [H]
    ns.condemn(H, claimed_before_ns=clock.now)
    assert ns.unkept_contents(claimed_since_ns=clock.now) == []  # 'deleting' is not 'live'
