"""Cleanup and garbage collection against the real dev Swift (tiny graces, slept past)."""

from __future__ import annotations

import os
import re

import blake3
import pytest
import trio
from ccdhelpers import SEG, Fs, make_store

from ccd import Consolidator, cleanup_pass
from seqwrite import RetryPolicy
from sqlfsn import ROOT_INODE

pytestmark = pytest.mark.swift

GRACE = 2.0


async def age() -> None:
    """Sleep past the grace: what exists now is old from here on."""
    await trio.sleep(GRACE + 0.3)


def state(fs: Fs) -> tuple:
    return (sorted(fs.tmp_names()), fs.cas_names(), fs.ns.contents(), fs.ns.uploads())


async def test_interrupted_write_collected_in_progress_kept(fs: Fs):
    crashed = await fs.write_interrupted()
    running = await fs.write_interrupted()
    # A writer that died after claiming and tagging, before publishing its manifest.
    never = os.urandom(SEG)
    never_hash = blake3.blake3(never + b"the rest of the file").hexdigest()
    fs.ns.claim_content(never_hash, SEG + 20)
    tagged = fs.put_tagged_leftover(never, never_hash)
    names = fs.tmp_names()
    ours = {u: [n for n in names if f"/{u}/" in n] for u in (crashed, running)}
    assert len(ours[crashed]) >= 2 and len(ours[running]) >= 2
    await age()
    young = fs.put_tagged_leftover(os.urandom(100), never_hash)  # too young to judge
    fs.ns.upload_heartbeat([running])  # the mount of the running write is alive
    report = await cleanup_pass(fs.ctx(GRACE), retire_grace=0)
    assert report.kept_errors == 0, report.errors
    left = set(fs.tmp_names())
    assert left == set(ours[running]) | {young}
    assert tagged not in left
    assert [u.id for u in fs.ns.uploads()] == [running]
    assert report.counts["tmp_untagged"] == len(ours[crashed])
    assert report.counts["tmp_unpublished"] == 1
    assert report.counts["leases_removed"] == 1
    assert report.counts["cas_rows_removed"] == 1  # the claim of the never-published content
    assert fs.ns.content_info(never_hash) is None
    assert report.freed == len(ours[crashed]) * SEG + SEG


async def test_unlinked_content_collected_shared_kept(fs: Fs):
    a, shared, small = os.urandom(5 * SEG + 5), os.urandom(4 * SEG + 7), os.urandom(600)
    _, ca, _ = await fs.write(b"a", a)
    _, cs, _ = await fs.write(b"s1", shared)
    await fs.write(b"s2", shared)
    _, csmall, _ = await fs.write(b"small", small)
    await Consolidator(fs.ctx(), retire_grace=0).run_pass()
    b = os.urandom(4 * SEG + 9)
    _, cb, _ = await fs.write(b"b", b)  # not consolidated: its manifest names .tmp segments
    for name in (b"a", b"s1", b"small", b"b"):
        fs.ns.unlink(ROOT_INODE, name)
    fs.ns.purge_orphans()
    young = await cleanup_pass(fs.ctx(60.0), retire_grace=0)
    assert young.as_dict() == {}, "nothing is old enough yet"
    await age()
    report = await cleanup_pass(fs.ctx(GRACE), retire_grace=0)
    assert report.kept_errors == 0, report.errors
    seg_hashes = {s.hash for s in cs.segments}
    assert fs.cas_names() == {cs.hash} | seg_hashes
    assert fs.cas_bytes(cs.hash) == shared
    assert fs.tmp_names() == []
    # a's manifest and its 6 segments, the small file, b's manifest; b's 5 .tmp segments.
    assert report.counts["cas_deleted"] == 1 + 6 + 1 + 1
    assert report.counts["tmp_unpublished"] == len(cb.segments)
    assert report.nbytes["cas_deleted"] == len(a) + len(small)  # manifests free no data
    assert report.freed == len(a) + len(small) + len(b)
    assert {c.hash for c in fs.ns.contents()} == {cs.hash}
    assert fs.ns.check() == []
    assert csmall.hash not in fs.cas_names() and ca.hash not in fs.cas_names()
    # The last file referencing the shared content goes: so does the content.
    fs.ns.unlink(ROOT_INODE, b"s2")
    fs.ns.purge_orphans()
    report = await cleanup_pass(fs.ctx(GRACE), retire_grace=0)
    assert report.counts["cas_deleted"] == 1 + len(seg_hashes)
    assert fs.cas_names() == set() and fs.ns.contents() == []


async def test_published_but_never_committed_and_a_racing_claim(fs: Fs, monkeypatch):
    data = os.urandom(4 * SEG)
    # The mount died between publishing and committing: no file references the content.
    inode, content, upload = await fs.write(b"f", data, commit=False)
    fs.ns.upload_end(upload)
    assert (await cleanup_pass(fs.ctx(GRACE), retire_grace=0)).as_dict() == {}
    await age()
    # A writer dedups against it while the collector runs: it claims right after the
    # collector computed what to keep. The fence (condemn's transaction) must see the claim.
    real = fs.ns.referenced_hashes

    def racing(**kw):
        kept = real(**kw)
        segments = [(s.hash, s.size) for s in content.segments]
        assert fs.ns.claim_content(content.hash, content.size, segments).ok
        return kept

    monkeypatch.setattr(fs.ns, "referenced_hashes", racing)
    report = await cleanup_pass(fs.ctx(GRACE), retire_grace=0)
    monkeypatch.undo()
    assert report.counts["cas_rescued"] == 1 and report.counts["cas_deleted"] == 0
    assert report.counts["tmp_pending"] == len(content.segments)  # CAS(H) exists: kept
    assert fs.cas_bytes(content.hash) == data
    # Nobody commits it after all: once the claim ages out it is collected, with its
    # temporary segments, in one pass.
    await age()
    report = await cleanup_pass(fs.ctx(GRACE), retire_grace=0)
    assert report.counts["cas_deleted"] == 1
    assert report.counts["tmp_unpublished"] == len(content.segments)
    assert fs.cas_names() == set() and fs.tmp_names() == []
    assert fs.cas_head(content.hash)[0] == 404
    assert fs.ns.pieces(inode) == [] and fs.ns.check() == []


async def test_cleanup_deletes_retired_segments(fs: Fs):
    data = os.urandom(5 * SEG)
    _, content, _ = await fs.write(b"f", data)
    report = await Consolidator(fs.ctx(), retire_grace=3600).run_pass()
    assert report.counts["segments_marked"] == len(content.segments)
    await age()
    kept = await cleanup_pass(fs.ctx(GRACE))  # default retire grace: too early
    assert kept.counts["tmp_pending"] == len(content.segments)
    report = await cleanup_pass(fs.ctx(GRACE), retire_grace=0)
    assert report.counts["segments_retired"] == len(content.segments)
    assert fs.tmp_names() == [] and fs.cas_bytes(content.hash) == data


async def make_garbage(fs: Fs) -> dict[str, int]:
    """An interrupted write (stale lease), an unlinked consolidated file, a published but
    uncommitted content; aged past the grace."""
    crashed = await fs.write_interrupted()
    gone = os.urandom(3 * SEG)
    await fs.write(b"gone", gone)
    await Consolidator(fs.ctx(), retire_grace=0).run_pass()
    fs.ns.unlink(ROOT_INODE, b"gone")
    fs.ns.purge_orphans()
    _, orphan, upload = await fs.write(b"never", os.urandom(2 * SEG), commit=False)
    fs.ns.upload_end(upload)
    await age()
    untagged = [n for n in fs.tmp_names() if f"/{crashed}/" in n]
    return {"untagged": len(untagged), "orphan_segments": len(orphan.segments)}


async def test_listing_and_head_errors_delete_nothing(fs: Fs, dev_swift, fault_proxy):
    garbage = await make_garbage(fs)
    faulty = make_store(fault_proxy.url, dev_swift, timeout=2.0,
                        policy=RetryPolicy(deadline=0.3, first_backoff=0.05, max_backoff=0.1))
    await faulty.open()
    try:
        base = re.escape(fs.layout.base)
        fault_proxy.add_rule("GET", rf"/{base}(\.cas\.[0-9a-f])?(\?|$)", "status:503",
                             times=-1)
        before = state(fs)
        report = await cleanup_pass(fs.ctx(GRACE, store=faulty), retire_grace=0)
        assert report.kept_errors == 1 + len(fs.layout.cas_containers())
        assert report.counts["cas_deleted"] == report.counts["tmp_untagged"] == 0
        assert state(fs)[:3] == before[:3], "a listing error must delete nothing"
        # HEAD errors on the temporary segments, DELETE errors on CAS objects: every old
        # segment is kept; condemned rows stay 'deleting' and their objects stay.
        fault_proxy.clear_rules()
        fault_proxy.add_rule("HEAD", rf"/{base}/\.tmp/", "status:503", times=-1)
        fault_proxy.add_rule("DELETE", rf"/{base}\.cas\.", "status:503", times=-1)
        tmp_before, cas_before = fs.tmp_names(), fs.cas_names()
        report = await cleanup_pass(fs.ctx(GRACE, store=faulty), retire_grace=0)
        assert fs.tmp_names() == tmp_before and fs.cas_names() == cas_before
        # 2 manifests fail to delete; the 3 segments of one wait for it (deferred).
        assert report.kept_errors == len(tmp_before) + 2
        assert report.counts["cas_deferred"] == 3
        assert report.counts["cas_deleted"] == report.counts["tmp_untagged"] == 0
        assert len(fs.ns.contents("deleting")) == 2
        # Swift answers again: everything goes, the 'deleting' rows included.
        fault_proxy.clear_rules()
        report = await cleanup_pass(fs.ctx(GRACE, store=faulty), retire_grace=0)
        assert report.kept_errors == 0, report.errors
        assert report.counts["tmp_untagged"] == garbage["untagged"]
        assert fs.ns.contents() == []
        assert fs.tmp_names() == [] and fs.cas_names() == set()
    finally:
        await faulty.aclose()


async def test_dry_run_changes_nothing_and_reports(fs: Fs):
    garbage = await make_garbage(fs)
    before = state(fs)
    dry = await cleanup_pass(fs.ctx(GRACE), retire_grace=0, dry_run=True)
    assert state(fs) == before
    assert dry.dry_run and dry.kept_errors == 0
    assert dry.counts["tmp_untagged"] == garbage["untagged"]
    assert dry.counts["cas_deleted"] == 1 + 3 + 1  # gone's manifest and segments, the orphan
    assert dry.counts["leases_removed"] == 1
    text = dry.summary()
    assert "dry run" in text and "to delete" in text and "would be freed" in text
    real = await cleanup_pass(fs.ctx(GRACE), retire_grace=0)
    for event in ("tmp_untagged", "cas_deleted", "leases_removed"):
        assert real.counts[event] == dry.counts[event]
    assert real.nbytes["cas_deleted"] == dry.nbytes["cas_deleted"]
    assert fs.tmp_names() == [] and fs.cas_names() == set()

