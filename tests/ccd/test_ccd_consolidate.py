"""Consolidation against the real dev Swift: end state, idempotence, crash safety, readers."""

from __future__ import annotations

import os
import random
import threading

import pytest
import trio
from ccdhelpers import SEG, Fs, MiB, mutations
from swiftraw import SwiftRaw

from ccd import CRASH_POINTS, Consolidator, CrashInjected

pytestmark = pytest.mark.swift


async def write_mix(fs: Fs) -> list:
    """A multi-segment file, a single-segment file, a small file, and the multi-segment
    content written twice more (deduplicated). Returns [(content, data)]."""
    multi = os.urandom(5 * SEG + 1234)
    single = os.urandom(MiB + 4321)
    small = os.urandom(700)
    _, c_multi, _ = await fs.write(b"multi", multi)
    _, c_single, _ = await fs.write(b"single", single, segment_size=2 * MiB)
    _, c_small, _ = await fs.write(b"small", small)
    for name in (b"dup1", b"dup2"):
        _, dup, _ = await fs.write(name, multi)
        assert dup.hash == c_multi.hash and dup.deduplicated
    assert c_multi.kind == "manifest" and len(c_multi.segments) == 6
    assert c_single.kind == "manifest" and len(c_single.segments) == 1
    assert c_small.kind == "object"
    return [(c_multi, multi), (c_single, single), (c_small, small)]


async def test_one_pass_consolidates_everything(fs: Fs):
    files = await write_mix(fs)
    report = await Consolidator(fs.ctx(), retire_grace=0).run_pass()
    assert report.kept_errors == 0, report.errors
    assert report.counts["contents_consolidated"] == 2
    assert report.counts["manifests_rewritten"] == 1  # the single-segment file needs none
    assert report.counts["segments_copied"] == 7
    assert report.counts["segments_retired"] == 7
    fs.assert_consolidated(files)
    assert fs.tmp_names() == []
    assert fs.ns.check() == []
    # A second pass finds nothing to do and changes nothing.
    before = fs.store.statistics()
    again = await Consolidator(fs.ctx(), retire_grace=0).run_pass()
    assert mutations(before, fs.store.statistics()) == {}
    assert not again.changed and again.kept_errors == 0


async def test_retire_grace_keeps_old_segments_until_due(fs: Fs):
    files = await write_mix(fs)
    consolidator = Consolidator(fs.ctx(), retire_grace=3600)
    report = await consolidator.run_pass()
    assert report.counts["segments_marked"] == 7 and report.counts["segments_retired"] == 0
    tags = fs.tmp_tags()
    assert len(tags) == 7 and all("x-object-meta-retired-at" in h for h in tags.values())
    assert all("x-object-meta-bigfile" in h for h in tags.values()), "the tag stays"
    for content, data in files:
        assert fs.cas_bytes(content.hash) == data
    # Waiting segments cost no request but the listing, and change nothing.
    before = fs.store.statistics()
    again = await consolidator.run_pass()
    after = fs.store.statistics()
    assert mutations(before, after) == {} and after.get("HEAD", 0) == before.get("HEAD", 0)
    assert again.counts["waiting_retire"] == 7
    # Once due, they go (a new daemon: it HEADs them again and finds the marks).
    done = await Consolidator(fs.ctx(), retire_grace=0).run_pass()
    assert done.counts["segments_retired"] == 7
    fs.assert_consolidated(files)


async def test_redundant_tagged_segments_are_retired(fs: Fs):
    data = os.urandom(4 * SEG + 99)
    _, content, _ = await fs.write(b"f", data)
    # A dedup writer that died after tagging leaves segments the manifest does not name.
    leftover = [fs.put_tagged_leftover(data[i * SEG:(i + 1) * SEG], content.hash, seq=i)
                for i in range(2)]
    report = await Consolidator(fs.ctx(), retire_grace=0).run_pass()
    assert report.kept_errors == 0, report.errors
    assert report.counts["segments_retired"] == len(content.segments) + len(leftover)
    fs.assert_consolidated([(content, data)])
    assert fs.tmp_names() == []


async def test_unreferenced_and_unfinished_contents_are_left_alone(fs: Fs):
    data = os.urandom(3 * SEG)
    # Published but never committed (the mount died between publish and set_content), lease
    # still fresh: the writer may yet commit.
    _, content, upload = await fs.write(b"f", data, commit=False)
    report = await Consolidator(fs.ctx(), retire_grace=0).run_pass()
    assert report.counts["skipped_alive"] == len(content.segments)
    # Lease gone (stale): still no file references the content: left to cleanup.
    fs.ns.upload_end(upload)
    # An interrupted write whose lease is gone: untagged segments, cleanup's business.
    crashed = await fs.write_interrupted()
    fs.ns.upload_end(crashed)
    n_untagged = len(fs.tmp_names()) - len(content.segments)
    consolidator = Consolidator(fs.ctx(), retire_grace=0)
    before = fs.store.statistics()
    report = await consolidator.run_pass()
    assert report.counts["skipped_unreferenced"] == len(content.segments)
    assert report.counts["skipped_untagged"] == n_untagged
    assert mutations(before, fs.store.statistics()) == {}
    assert len(fs.tmp_names()) == len(content.segments) + n_untagged
    # The daemon remembers what it saw: the next pass costs one listing.
    before = fs.store.statistics()
    await consolidator.run_pass()
    assert {k: v for k, v in fs.store.statistics().items() if v != before.get(k)} == {
        "GET": before["GET"] + 1}


@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_crash_after_each_step_then_rerun(fs: Fs, point: str):
    files = await write_mix(fs)
    with pytest.raises(CrashInjected):
        await Consolidator(fs.ctx(), retire_grace=0, crash_after=point).run_pass()
    for content, data in files:  # readable in the crashed state
        assert fs.cas_bytes(content.hash) == data
    report = await Consolidator(fs.ctx(), retire_grace=0).run_pass()
    assert report.kept_errors == 0, report.errors
    fs.assert_consolidated(files)
    assert fs.tmp_names() == []


def reader(raw: SwiftRaw, fs: Fs, files: list, stop: threading.Event, out: dict) -> None:
    """Range GETs of the files' CAS objects until stopped; records reads and mismatches."""
    rng = random.Random(1)
    while not stop.is_set():
        content, data = rng.choice(files)
        start = rng.randrange(len(data))
        end = min(len(data), start + rng.randrange(1, 3 * SEG))
        status, _, body = raw.get_object(*fs.layout.cas_path(content.hash),
                                         range=f"bytes={start}-{end - 1}")
        out["reads"] += 1
        if status != 206 or body != data[start:end]:
            out["bad"].append((content.hash, start, end, status, len(body)))


@pytest.mark.slow
async def test_concurrent_reader_always_reads_the_right_bytes(fs: Fs, dev_swift):
    files = await write_mix(fs)
    files = [f for f in files if f[0].kind == "manifest"]
    raw = SwiftRaw(dev_swift.auth_url, dev_swift.user, dev_swift.key)
    raw.auth()
    stop = threading.Event()
    out: dict = {"reads": 0, "bad": []}
    thread = threading.Thread(target=reader, args=(raw, fs, files, stop, out), daemon=True)
    thread.start()
    try:
        await trio.sleep(0.3)
        for point in CRASH_POINTS:  # interrupted passes, then a full one
            with pytest.raises(CrashInjected):
                await Consolidator(fs.ctx(), crash_after=point).run_pass()
        report = await Consolidator(fs.ctx()).run_pass()
        assert report.kept_errors == 0, report.errors
        await trio.sleep(0.3)
    finally:
        stop.set()
        await trio.to_thread.run_sync(thread.join)
    assert out["bad"] == []
    assert out["reads"] > 10
    # With the default retire grace the old segments are still there for slow readers.
    assert len(fs.tmp_names()) == 7
