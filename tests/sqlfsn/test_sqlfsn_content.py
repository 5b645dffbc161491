"""The content registry (claims, condemnation, what the GC keeps) and upload leases."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sqlfsn import ROOT_INODE, Claim, ContentInfo, Namespace, Piece, UploadInfo, errors

if TYPE_CHECKING:
    from conftest import FakeClock

R = ROOT_INODE
GRACE = 1_000_000  # the collector's grace period in these tests, ns


def H(i: int) -> str:
    return f"{i:064x}"


def use(ns: Namespace, name: bytes, content: str, size: int) -> int:
    """A file whose whole content is ``content`` (already claimed); its inode."""
    f = ns.create(R, name, 0o644, 0, 0)
    ns.set_content(f.inode, [Piece(content, 0, size)], size)
    return f.inode


# -- claims -----------------------------------------------------------------------------


def test_claim_registers_live_content(ns: Namespace, clock: FakeClock) -> None:
    assert ns.claim_content(H(1), 100) == Claim(True, None)
    assert ns.contents() == [ContentInfo(H(1), 100, "live", clock.now, None)]
    clock.advance()
    assert ns.claim_content(H(1), 100).ok  # again: refreshes the claim
    assert ns.contents("live") == [ContentInfo(H(1), 100, "live", clock.now, None)]
    assert ns.contents("deleting") == []
    assert ns.content_segments(H(1)) == []
    with pytest.raises(errors.InvalidArgument):
        ns.contents("gone")
    assert ns.check() == []


def test_claim_fences_other_processes_at_once_without_its_own_sync(tmp_path: Path) -> None:
    """A claim commits without a WAL sync of its own (the set_content that references the
    content is synced, and syncs the claim with it), yet another connection (ccd's collector)
    sees it immediately."""
    db = tmp_path / "ns.db"
    mount = Namespace.open(str(db), create=True)
    collector = Namespace.open(str(db))
    pragmas: list[str] = []
    mount._db.conn.set_trace_callback(lambda q: pragmas.append(q) if "synchronous" in q else None)
    assert mount.claim_content(H(1), 100).ok
    assert pragmas == ["PRAGMA synchronous = NORMAL", "PRAGMA synchronous = FULL"]
    assert collector.is_kept(H(1), claimed_since_ns=0)
    assert [c.hash for c in collector.contents("live")] == [H(1)]
    pragmas.clear()
    use(mount, b"f", H(1), 100)  # create + set_content: synced
    assert pragmas == []
    assert mount._db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    mount.close()
    collector.close()


def test_claim_with_segments(ns: Namespace) -> None:
    segs = [(H(11), 60), (H(12), 40)]
    assert ns.claim_content(H(1), 100, segs).ok
    assert ns.content_segments(H(1)) == segs
    assert ns.claim_content(H(1), 100, [(H(13), 100)]).ok  # later claims keep the first
    assert ns.content_segments(H(1)) == segs
    assert ns.check() == []


def test_claim_refuses_malformed_input(ns: Namespace) -> None:
    ns.claim_content(H(1), 100)
    bad = [
        lambda: ns.claim_content("nothex", 1),
        lambda: ns.claim_content(H(2), -1),
        lambda: ns.claim_content(H(2), 10, [(H(3), 5)]),  # segments don't sum
        lambda: ns.claim_content(H(2), 10, [(H(3), 10), (H(4), 0)]),  # empty segment
        lambda: ns.claim_content(H(2), 10, [("x", 10)]),
        lambda: ns.claim_content(H(1), 101),  # a live content of another size
    ]
    for call in bad:
        with pytest.raises(errors.InvalidArgument):
            call()
    assert [c.hash for c in ns.contents()] == [H(1)]
    assert ns.check() == []


# -- what the collector keeps -----------------------------------------------------------


def test_referenced_hashes_rules(ns: Namespace, clock: FakeClock) -> None:
    ns.claim_content(H(1), 100, [(H(11), 50), (H(12), 50)])  # used by a file
    ns.claim_content(H(2), 10)  # claimed long ago, unused: garbage
    ns.claim_content(H(3), 10, [(H(31), 10)])  # claimed long ago, unused, with a segment
    use(ns, b"f", H(1), 100)
    clock.advance(10 * GRACE)
    ns.claim_content(H(4), 20, [(H(41), 20)])  # claimed recently, not used yet
    since = clock.now - GRACE
    assert ns.referenced_hashes(claimed_since_ns=since) == {H(1), H(11), H(12), H(4), H(41)}
    for h in (H(1), H(11), H(12), H(4), H(41)):
        assert ns.condemn(h, claimed_before_ns=since) is False
    for h in (H(2), H(3), H(31), H(99)):  # H(99): an object found without a row
        assert ns.condemn(h, claimed_before_ns=since) is True
    assert {c.hash: c.state for c in ns.contents()} == {
        H(1): "live",
        H(2): "deleting",
        H(3): "deleting",
        H(4): "live",
        H(31): "deleting",
        H(99): "deleting",
    }
    assert ns.contents("deleting")[-1] == ContentInfo(H(99), 0, "deleting", 0, clock.now)
    assert ns.check() == []
    for h in (H(2), H(3), H(31), H(99)):
        assert ns.content_deleted(h) is True
    assert ns.content_segments(H(3)) == []
    assert [c.hash for c in ns.contents()] == [H(1), H(4)]
    assert ns.content_deleted(H(1)) is False  # live rows are never forgotten
    assert ns.check() == []


def test_segments_kept_while_any_content_lists_them(ns: Namespace, clock: FakeClock) -> None:
    ns.claim_content(H(1), 20, [(H(10), 10), (H(20), 10)])
    ns.claim_content(H(2), 20, [(H(20), 10), (H(30), 10)])  # shares segment H(20)
    inode = use(ns, b"f", H(2), 20)
    clock.advance(10 * GRACE)
    since = clock.now - GRACE
    assert ns.referenced_hashes(claimed_since_ns=since) == {H(2), H(20), H(30)}
    assert ns.condemn(H(20), claimed_before_ns=since) is False
    assert ns.condemn(H(10), claimed_before_ns=since) is True
    assert ns.condemn(H(1), claimed_before_ns=since) is True
    ns.unlink(R, b"f")
    assert H(20) in ns.referenced_hashes(claimed_since_ns=since)  # orphan still open
    ns.drop_if_orphan(inode)
    assert ns.referenced_hashes(claimed_since_ns=since) == set()
    assert ns.condemn(H(20), claimed_before_ns=since) is True
    assert ns.check() == []


def test_condemn_refreshes_and_validates(ns: Namespace, clock: FakeClock) -> None:
    assert ns.condemn(H(5), claimed_before_ns=0)
    first = ns.contents()[0].deleting_ns
    clock.advance()
    assert ns.condemn(H(5), claimed_before_ns=0)
    assert ns.contents()[0].deleting_ns == clock.now != first
    with pytest.raises(errors.InvalidArgument):
        ns.condemn("0" * 63, claimed_before_ns=0)
    with pytest.raises(errors.InvalidArgument):
        ns.content_deleted("zz")
    assert ns.check() == []


# -- the dedup-vs-GC races ---------------------------------------------------------------


def test_race_claim_after_gc_listed(ns: Namespace, clock: FakeClock) -> None:
    """GC lists an unreferenced object; a writer dedups onto it; the condemnation fails."""
    ns.claim_content(H(1), 10)
    clock.advance(10 * GRACE)
    gc_threshold = clock.now - GRACE
    assert H(1) not in ns.referenced_hashes(claimed_since_ns=gc_threshold)  # GC: garbage?
    clock.advance()
    assert ns.claim_content(H(1), 10).ok  # writer: dedup, relies on the object
    assert ns.condemn(H(1), claimed_before_ns=gc_threshold) is False  # GC re-checks: no
    f = ns.create(R, b"f", 0o644, 0, 0)
    ns.set_content(f.inode, [Piece(H(1), 0, 10)], 10)
    assert ns.check() == []


def test_race_claim_after_condemn(ns: Namespace, clock: FakeClock) -> None:
    """GC condemned first: the writer's claim fails; it re-uploads after the deletion."""
    ns.claim_content(H(1), 10)
    clock.advance(10 * GRACE)
    assert ns.condemn(H(1), claimed_before_ns=clock.now - GRACE)
    condemned_at = clock.now
    clock.advance()
    assert ns.claim_content(H(1), 10) == Claim(False, condemned_at)
    assert ns.contents()[0].state == "deleting"  # the refused claim changed nothing
    f = ns.create(R, b"f", 0o644, 0, 0)
    with pytest.raises(errors.InvalidArgument, match="unclaimed"):
        ns.set_content(f.inode, [Piece(H(1), 0, 10)], 10)
    assert ns.content_deleted(H(1))  # the GC finished deleting the object
    assert ns.claim_content(H(1), 10).ok  # the writer claims, then uploads it anew
    ns.set_content(f.inode, [Piece(H(1), 0, 10)], 10)
    assert ns.check() == []


def test_race_claim_refused_for_condemned_segment(ns: Namespace, clock: FakeClock) -> None:
    """A writer relying on an existing segment object must not get one being deleted."""
    assert ns.condemn(H(7), claimed_before_ns=clock.now)
    assert ns.claim_content(H(1), 10, [(H(7), 4), (H(8), 6)]) == Claim(False, clock.now)
    assert [c.hash for c in ns.contents()] == [H(7)]
    assert ns.check() == []


def test_takeover_of_stale_condemnation(ns: Namespace, clock: FakeClock) -> None:
    """A GC that died after condemning: a writer may take the row over after a while."""
    assert ns.condemn(H(1), claimed_before_ns=clock.now)
    assert ns.condemn(H(7), claimed_before_ns=clock.now)
    condemned_at = clock.now
    clock.advance(100)
    recent = clock.now - 1_000  # threshold older than the condemnation: no takeover
    assert ns.claim_content(H(1), 10, takeover_deleting_older_than_ns=recent).ok is False
    clock.advance(10_000)
    threshold = clock.now - 1_000
    claim = ns.claim_content(H(1), 10, [(H(7), 10)], takeover_deleting_older_than_ns=threshold)
    assert claim == Claim(True, condemned_at), "a takeover says so: publish unconditionally"
    assert ns.contents() == [
        ContentInfo(H(1), 10, "live", clock.now, None),
        ContentInfo(H(7), 10, "live", clock.now, None),
    ]
    assert condemned_at < threshold
    assert ns.content_deleted(H(1)) is False  # the stale GC can no longer forget it
    assert ns.check() == []


def test_slow_writer_loses_its_claim(ns: Namespace, clock: FakeClock) -> None:
    """A claim protects only for the grace period; set_content then refuses, safely."""
    f = ns.create(R, b"f", 0o644, 0, 0)
    ns.claim_content(H(1), 10)
    clock.advance(GRACE - 1)
    assert ns.condemn(H(1), claimed_before_ns=clock.now - GRACE) is False  # still protected
    clock.advance(10)
    assert ns.condemn(H(1), claimed_before_ns=clock.now - GRACE) is True
    with pytest.raises(errors.InvalidArgument, match="unclaimed"):
        ns.set_content(f.inode, [Piece(H(1), 0, 10)], 10)
    assert ns.getattr(f.inode).size == 0
    assert ns.check() == []


def test_condemn_and_referenced_hashes_agree(ns: Namespace, clock: FakeClock) -> None:
    """condemn's indexed re-check gives the same answer as referenced_hashes."""
    import random

    rng = random.Random(7)
    for i in range(40):
        segs = [(H(1000 + rng.randrange(30)), 5), (H(1000 + rng.randrange(30)), 5)]
        ns.claim_content(H(i), 10, segs if rng.random() < 0.5 else ())
        clock.advance(rng.randrange(1000))
        if rng.random() < 0.3:
            use(ns, b"f%d" % i, H(i), 10)
    since = clock.now - 5_000
    kept = ns.referenced_hashes(claimed_since_ns=since)
    for h in [H(i) for i in range(40)] + [H(1000 + j) for j in range(30)]:
        assert ns.condemn(h, claimed_before_ns=since) is (h not in kept), h
    assert ns.check() == []


def test_condemnation_seen_by_other_process(spec: str, clock: FakeClock) -> None:
    file_ns = Namespace.open(spec, create=True, clock=clock)
    gc = Namespace.open(spec)
    file_ns.claim_content(H(1), 10)
    assert gc.condemn(H(1), claimed_before_ns=2**62)
    assert file_ns.claim_content(H(1), 10).ok is False
    gc.close()
    assert file_ns.check() == []
    file_ns.close()


# -- upload leases ----------------------------------------------------------------------


def test_upload_leases(ns: Namespace, clock: FakeClock) -> None:
    ns.upload_begin("a")
    t_a = clock.now
    clock.advance(100)
    ns.upload_begin("b")
    with pytest.raises(errors.Exists):
        ns.upload_begin("a")
    assert ns.uploads() == [UploadInfo("a", t_a, t_a), UploadInfo("b", clock.now, clock.now)]
    assert ns.uploads_alive(clock.now) == {"b"}
    clock.advance(100)
    assert ns.upload_heartbeat(["a", "gone"]) == {"gone"}
    assert ns.uploads_alive(clock.now) == {"a"}
    assert ns.uploads()[0] == UploadInfo("a", t_a, clock.now)
    assert ns.upload_end("a") is True
    assert ns.upload_end("a") is False
    assert ns.upload_heartbeat(["a"]) == {"a"}  # the writer learns its lease is gone
    assert [u.id for u in ns.uploads()] == ["b"]
    for bad in ("", "x/y"):
        with pytest.raises(errors.InvalidArgument):
            ns.upload_begin(bad)
    assert ns.check() == []


def test_set_content_ends_lease_atomically(ns: Namespace) -> None:
    f = ns.create(R, b"f", 0o644, 0, 0)
    ns.upload_begin("up")
    with pytest.raises(errors.InvalidArgument):  # unclaimed: nothing happens, lease kept
        ns.set_content(f.inode, [Piece(H(1), 0, 1)], 1, upload_id="up")
    assert [u.id for u in ns.uploads()] == ["up"]
    ns.claim_content(H(1), 1)
    ns.set_content(f.inode, [Piece(H(1), 0, 1)], 1, upload_id="up")
    assert ns.uploads() == []
    ns.set_content(f.inode, [], 0, upload_id="never-taken")  # a missing lease is fine
    assert ns.check() == []
