"""Settling against the real dev Swift: files of many pieces become one whole-file content,
byte-identical, without a visible change; the races with appends; crashes; the GC after."""

from __future__ import annotations

import os

import blake3
import pytest
from ccdhelpers import SEG, SMALL_THRESHOLD, Fs, KiB, mutations

from ccd import Consolidator, CrashInjected, Report, Settler, cleanup_pass
from seqwrite import WriterSettings
from sqlfsn import ROOT_INODE, Piece

pytestmark = pytest.mark.swift


def settler(fs: Fs, **kw) -> Settler:
    kw.setdefault("settle_grace", 0)
    return Settler(fs.ctx(), writers=WriterSettings(segment_size=SEG,
                                                   small_threshold=SMALL_THRESHOLD), **kw)


async def settle(fs: Fs, **kw) -> Report:
    report = Report("consolidation")
    await settler(fs, **kw).run_pass(report)
    return report


def digest(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def old_hashes(fs: Fs, inode: int) -> set[str]:
    return {p.hash for p in fs.ns.pieces(inode) if p.hash is not None}


async def appended(fs: Fs, name: bytes, appends: int) -> tuple[int, bytes]:
    """A file written once (3 segments), appended `appends` times (sizes 100 B to 3 KiB:
    small objects and segmented manifests), truncated up (a 5000-byte hole), appended once
    more. Returns (inode, its bytes)."""
    data = os.urandom(3 * SEG + 5)
    inode, _, _ = await fs.write(name, data)
    for i in range(appends):
        extra = os.urandom(100 + (i * 397) % 3000)
        await fs.append(inode, extra)
        data += extra
    fs.ns.setattr(inode, size=len(data) + 5000)
    data += bytes(5000)
    extra = os.urandom(2000)
    await fs.append(inode, extra)
    return inode, data + extra


async def test_many_pieces_settle_into_one_whole_content(fs: Fs):
    log_inode, log_data = await appended(fs, b"log", 50)
    # A partial range of one content: a file truncated down (its prefix), and a range in
    # the middle of a content (as a random write commits).
    big = os.urandom(2 * SEG + 77)
    prefix_inode, big_content, _ = await fs.write(b"prefix", big)
    fs.ns.setattr(prefix_inode, size=SEG + 3)
    middle_inode = fs.ns.create(ROOT_INODE, b"middle", 0o644, 0, 0).inode
    fs.ns.set_content(middle_inode, [Piece(big_content.hash, 1000, SEG)], SEG)
    whole_inode, whole_content, _ = await fs.write(b"whole", os.urandom(3000))
    files = {log_inode: log_data, prefix_inode: big[:SEG + 3], middle_inode: big[1000:1000 + SEG]}
    assert len(fs.ns.pieces(log_inode)) == 53
    assert any(p.hash is None for p in fs.ns.pieces(log_inode))
    before = {inode: fs.ns.getattr(inode) for inode in [*files, whole_inode]}
    old = set().union(*(old_hashes(fs, inode) for inode in files))
    for inode, data in files.items():
        assert fs.file_bytes(inode) == data

    report = await settle(fs)
    assert report.kept_errors == 0, report.errors
    assert report.counts["files_settled"] == 3
    assert report.nbytes["files_settled"] == sum(map(len, files.values()))
    for inode, data in files.items():
        assert fs.ns.pieces(inode) == [Piece(digest(data), 0, len(data))]
        assert fs.cas_bytes(digest(data)) == data  # raw GET of the whole-file CAS name
        assert fs.ns.getattr(inode) == before[inode]  # size, mtime, ctime, version
    assert fs.ns.pieces(whole_inode) == [Piece(whole_content.hash, 0, 3000)]
    assert fs.ns.getattr(whole_inode) == before[whole_inode]
    assert fs.ns.uploads() == []
    assert fs.ns.check() == []

    # Settled once: a second pass finds nothing to do and sends nothing that changes Swift.
    stats = fs.store.statistics()
    again = await settle(fs)
    assert again.as_dict() == {}
    assert mutations(stats, fs.store.statistics()) == {}

    # The new contents are consolidated in a pass; then the old pieces are garbage.
    consolidated = await Consolidator(fs.ctx(), retire_grace=0).run_pass()
    assert consolidated.kept_errors == 0, consolidated.errors
    young = await cleanup_pass(fs.ctx(3600.0), retire_grace=0)
    assert young.counts["cas_deleted"] == 0, "the old pieces are claimed for a grace"
    cleaned = await cleanup_pass(fs.ctx(0.0), retire_grace=0)
    assert cleaned.kept_errors == 0, cleaned.errors
    left = fs.cas_names()
    assert not (old - {big_content.hash}) & left, "the old pieces are collected"
    assert big_content.hash not in left  # only "prefix" and "middle" used it: gone too
    for inode, data in files.items():
        assert fs.cas_bytes(digest(data)) == data
        assert fs.file_bytes(inode) == data
    assert fs.cas_bytes(whole_content.hash) == fs.file_bytes(whole_inode)
    assert fs.ns.check() == []


async def test_settle_grace_skips_recently_changed_files(fs: Fs):
    inode, _, _ = await fs.write(b"f", os.urandom(2000))
    await fs.append(inode, os.urandom(2000))
    data = fs.file_bytes(inode)
    pieces = fs.ns.pieces(inode)
    stats = fs.store.statistics()
    report = await settle(fs, settle_grace=3600)
    assert report.as_dict() == {"settle_young": 1}
    assert mutations(stats, fs.store.statistics()) == {}
    assert fs.ns.pieces(inode) == pieces
    assert (await settle(fs, settle_grace=0)).counts["files_settled"] == 1
    assert fs.ns.pieces(inode) == [Piece(digest(data), 0, len(data))]


async def test_dry_run_changes_nothing(fs: Fs):
    inode, data = await appended(fs, b"log", 3)
    pieces, contents = fs.ns.pieces(inode), fs.ns.contents()
    stats = fs.store.statistics()
    report = Report("consolidation", dry_run=True)
    await settler(fs).run_pass(report, dry_run=True)
    assert report.counts["files_settled"] == 1 and report.nbytes["files_settled"] == len(data)
    assert "files to settle into one whole-file content: 1" in report.summary()
    assert stats == fs.store.statistics(), "a dry run sends no request at all"
    assert fs.ns.pieces(inode) == pieces and fs.ns.contents() == contents


async def test_an_append_between_read_and_commit_wins(fs: Fs):
    """The file is appended after settle read it and published the old bytes: settle's
    compare-and-swap fails, the appended bytes stay, and nothing referenced is deleted."""
    inode, data = await appended(fs, b"log", 5)
    extra = os.urandom(1500)

    async def append_now(settling: int) -> None:
        assert settling == inode
        await fs.append(inode, extra)

    report = await settle(fs, before_commit=append_now)
    assert report.kept_errors == 0, report.errors
    assert report.counts["settle_changed"] == 1 and report.counts["files_settled"] == 0
    assert fs.file_bytes(inode) == data + extra
    assert fs.cas_bytes(digest(data)) == data  # published, referenced by nothing
    assert fs.ns.uploads() == []
    cleaned = await cleanup_pass(fs.ctx(0.0), retire_grace=0)
    assert cleaned.kept_errors == 0, cleaned.errors
    assert digest(data) not in fs.cas_names(), "the dropped settle's content is garbage"
    assert fs.file_bytes(inode) == data + extra, "every piece the file names is still there"
    # The next pass settles the new version.
    assert (await settle(fs)).counts["files_settled"] == 1
    assert fs.ns.pieces(inode) == [Piece(digest(data + extra), 0, len(data) + len(extra))]
    assert fs.cas_bytes(digest(data + extra)) == data + extra


async def test_an_append_started_before_the_settle_commits_after_it(fs: Fs):
    """The other order: an append started on the old version (the mount's base_version)
    commits after the settle; it succeeds on the settled pieces, no byte lost."""
    inode, data = await appended(fs, b"log", 5)
    base_version = fs.ns.getattr(inode).version
    assert (await settle(fs)).counts["files_settled"] == 1
    extra = os.urandom(1500)
    await fs.append(inode, extra, base_version=base_version)
    assert fs.ns.pieces(inode)[0] == Piece(digest(data), 0, len(data))
    assert fs.file_bytes(inode) == data + extra
    cleaned = await cleanup_pass(fs.ctx(0.0), retire_grace=0)
    assert cleaned.kept_errors == 0, cleaned.errors
    assert fs.file_bytes(inode) == data + extra


async def test_crash_after_publish_keeps_the_file_and_cleanup_collects_after_grace(fs: Fs):
    inode, data = await appended(fs, b"log", 5)
    pieces = fs.ns.pieces(inode)
    with pytest.raises(CrashInjected):
        await settle(fs, crash_after="publish")
    assert fs.ns.pieces(inode) == pieces and fs.file_bytes(inode) == data
    assert fs.cas_bytes(digest(data)) == data  # the orphan: published, not committed
    [lease] = fs.ns.uploads()  # its lease, as a crashed process leaves it
    assert [n for n in fs.tmp_names() if f"/{lease.id}/" in n]
    young = await cleanup_pass(fs.ctx(3600.0), retire_grace=0)
    assert young.kept_errors == 0 and young.freed == 0, young.as_dict()
    assert fs.cas_bytes(digest(data)) == data
    cleaned = await cleanup_pass(fs.ctx(0.0), retire_grace=0)
    assert cleaned.kept_errors == 0, cleaned.errors
    assert digest(data) not in fs.cas_names()
    assert [n for n in fs.tmp_names() if f"/{lease.id}/" in n] == []
    assert fs.ns.uploads() == []
    assert fs.ns.pieces(inode) == pieces and fs.file_bytes(inode) == data
    assert (await settle(fs)).counts["files_settled"] == 1
    assert fs.cas_bytes(digest(data)) == data


async def test_a_read_error_leaves_the_file_untouched(fs: Fs):
    inode, data = await appended(fs, b"log", 3)
    pieces = fs.ns.pieces(inode)
    lost = pieces[2].hash
    assert lost is not None and fs.raw.delete_object(*fs.layout.cas_path(lost)) == 204
    report = await settle(fs)
    assert report.kept_errors == 1 and report.counts["files_settled"] == 0
    assert f"settling inode {inode}" in report.errors[0] and "\n" not in report.errors[0]
    assert fs.ns.pieces(inode) == pieces
    assert fs.ns.uploads() == []
    assert digest(data) not in fs.cas_names()


async def test_sparse_files_are_left_and_duplicates_dedup(fs: Fs):
    sparse = fs.ns.create(ROOT_INODE, b"sparse", 0o644, 0, 0).inode
    fs.ns.setattr(sparse, size=SEG)
    await fs.append(sparse, os.urandom(100))
    a, data = await appended(fs, b"a", 2)
    old_pieces = fs.ns.pieces(a)
    report = await settle(fs)
    assert report.counts["settle_sparse"] == 1 and report.counts["files_settled"] == 1
    assert report.counts["settle_dedup"] == 0
    # A file of the same pieces, settled once `a` is: its content is already stored. (Two
    # such files settled in the same pass may both publish, the second manifest replacing
    # the first with the same bytes: which of the two counts as the dedup is timing.)
    b = fs.ns.create(ROOT_INODE, b"b", 0o644, 0, 0).inode
    fs.ns.set_content(b, old_pieces, len(data))  # same pieces, same bytes
    report = await settle(fs)
    assert report.counts["files_settled"] == 1 and report.counts["settle_dedup"] == 1
    assert fs.ns.pieces(a) == fs.ns.pieces(b) == [Piece(digest(data), 0, len(data))]
    assert fs.ns.pieces(sparse)[0] == Piece(None, 0, SEG)
    assert fs.cas_bytes(digest(data)) == data
    assert KiB < len(data)


async def test_crash_after_the_commit_then_the_next_pass_consolidates(fs: Fs):
    inode, data = await appended(fs, b"log", 3)
    with pytest.raises(CrashInjected):
        await settle(fs, crash_after="settle")
    h = digest(data)
    assert fs.ns.pieces(inode) == [Piece(h, 0, len(data))]
    assert fs.ns.uploads() == []  # the commit ended the lease
    manifest = fs.stored_manifest(h)
    assert len(manifest) == 4 and all(".tmp/" in e["name"] for e in manifest)
    report = await Consolidator(fs.ctx(), retire_grace=0).run_pass()
    assert report.kept_errors == 0, report.errors
    assert [e for e in fs.stored_manifest(h) if ".tmp/" in e["name"]] == []
    assert not [n for n, t in fs.tmp_tags().items() if t.get("x-object-meta-bigfile") == h]
    assert fs.cas_bytes(h) == data and fs.file_bytes(inode) == data
