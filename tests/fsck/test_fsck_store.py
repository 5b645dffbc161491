"""fsck against a real Swift: each way the store can disagree with the namespace behind
cloudfs's back is found and reported by path, naming the object; what is normal garbage is a
note; what could not be checked says so."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from fsckhelpers import SEG, KiB, Tree, corrupt_on_disk, make_store, run_fsck, write_config

from ccd import Context
from ccd.consolidate import Consolidator
from cloudfs.fsck.checks import Fsck, Settings
from cloudfs.fsck.findings import Problem, Result
from seqwrite import StoredContent
from seqwrite.layout import META_BLAKE3
from sqlfsn import Piece


@dataclass
class Built:
    small: StoredContent  # /docs/small.txt: one plain object
    big: StoredContent  # /docs/big.bin: 3 segments of SEG bytes, a manifest
    one: StoredContent  # /one.bin: a manifest of one segment
    dup: StoredContent  # /dup-a, /dup-b, /sub/dup-c: one content, three files
    inodes: dict[str, int]


async def build(t: Tree) -> Built:
    inodes = {}
    inodes["small"], small = await t.write(b"/docs/small.txt", b"hello")
    inodes["big"], big = await t.write(b"/docs/big.bin", os.urandom(3 * SEG))
    inodes["one"], one = await t.write(b"/one.bin", os.urandom(100 * KiB))
    dup_bytes = os.urandom(2 * KiB)
    inodes["dup-a"], dup = await t.write(b"/dup-a", dup_bytes)
    for path in (b"/dup-b", b"/sub/dup-c"):
        _, again = await t.write(path, dup_bytes)
        assert again.hash == dup.hash
    # A file made of part of big's content, a hole and part of small's (appends and random
    # writes make such files).
    inodes["part"] = t.link(b"/part", [Piece(big.hash, 1000, 5000), Piece(None, 0, 10),
                                       Piece(small.hash, 1, 3)])
    await t.write(b"/empty", b"")
    assert big.kind == "manifest" and len(big.segments) == 3 and one.kind == "manifest"
    assert small.kind == "object"
    return Built(small, big, one, dup, inodes)


def only(result: Result) -> Problem:
    assert len(result.problems) == 1, result.problems
    return result.problems[0]


def paths(problem: Problem) -> set[str]:
    return {p for f in problem.files for p in f.paths}


async def test_a_clean_filesystem_checks_clean(tree: Tree) -> None:
    await build(tree)
    result = await tree.fsck()
    assert result.problems == [] and result.exit_status() == 0
    c = result.checked
    assert (c.files, c.stored_files, c.contents) == (8, 7, 4)
    assert c.objects >= 4 + 3 + 1  # the contents, big's three segments, one's segment
    assert set(c.requests) <= {"GET", "HEAD"}  # only reads
    assert result.notes.get("segments_pending") == 5  # big: 3, one: 1, dup: 1 (unconsolidated)


async def test_a_deleted_cas_object_is_missing(tree: Tree) -> None:
    built = await build(tree)
    tree.delete(*tree.cas(built.small.hash))
    p = only(await tree.fsck())
    assert p.kind == "missing" and p.content == built.small.hash
    assert p.object == "/".join(tree.cas(built.small.hash))
    assert p.object in p.detail and "404" in p.detail
    assert paths(p) == {"/docs/small.txt", "/part"}  # /part reads 3 bytes of it


async def test_a_content_of_many_files_lists_them_all(tree: Tree) -> None:
    built = await build(tree)
    tree.delete(*tree.cas(built.dup.hash))
    p = only(await tree.fsck())
    assert paths(p) == {"/dup-a", "/dup-b", "/sub/dup-c"}


async def test_a_deleted_manifest_is_missing(tree: Tree) -> None:
    built = await build(tree)
    tree.delete(*tree.cas(built.big.hash))
    result = await tree.fsck()
    p = only(result)
    assert p.kind == "missing" and paths(p) == {"/docs/big.bin", "/part"}
    # its three temporary segments are now explained by nothing: leftovers for the cleanup
    assert result.notes["segments_leftover"] == 3
    assert result.note_bytes["segments_leftover"] == 3 * SEG


async def test_a_deleted_segment_damages_the_file(tree: Tree) -> None:
    built = await build(tree)
    segment = built.big.segments[1].tmp_name
    tree.delete(tree.layout.tmp_container, segment)
    p = only(await tree.fsck())
    assert p.kind == "damaged" and p.object == f"{tree.layout.tmp_container}/{segment}"
    assert "segment 1 of" in p.detail and "missing" in p.detail
    assert paths(p) == {"/docs/big.bin", "/part"}


async def test_a_deleted_consolidated_segment_damages_the_file(tree: Tree) -> None:
    """After ccd moved the segments to their CAS names, those are what must exist."""
    built = await build(tree)
    report = await Consolidator(Context(tree.ns, tree.store, tree.layout),
                                retire_grace=0.0).run_pass()
    assert report.counts["contents_consolidated"] == 3 and not report.kept_errors
    assert (await tree.fsck()).problems == []
    segment = built.big.segments[2].hash
    tree.delete(*tree.cas(segment))
    p = only(await tree.fsck())
    assert p.kind == "damaged" and p.object == "/".join(tree.cas(segment))
    assert "segment 2 of" in p.detail
    assert paths(p) == {"/docs/big.bin", "/part"}


async def test_a_manifest_naming_its_segments_out_of_order_is_damaged(tree: Tree) -> None:
    """Same size, every segment present: only the registry tells the bytes are wrong."""
    built = await build(tree)
    entries = tree.manifest(built.big.hash)
    tree.put_manifest(built.big.hash, [entries[1], entries[0], entries[2]])
    p = only(await tree.fsck())
    assert p.kind == "damaged" and "segment 0 of" in p.detail
    assert f"the registry says {built.big.segments[0].hash}" in p.detail
    assert paths(p) == {"/docs/big.bin", "/part"}


async def test_a_truncated_manifest_is_damaged(tree: Tree) -> None:
    built = await build(tree)
    tree.put_manifest(built.big.hash, tree.manifest(built.big.hash)[:1])
    p = only(await tree.fsck())
    assert p.kind == "damaged"
    assert f"holds {SEG} bytes, the registry says {3 * SEG}" in p.detail


async def test_a_manifest_corrupted_on_disk_is_found(tree: Tree, dev_swift) -> None:
    """A disk that flips the manifest's bytes: Swift serves them once (its size and ETag
    unchanged), then quarantines the object; either way the file is reported."""
    built = await build(tree)
    corrupt_on_disk(dev_swift.dir, "/" + "/".join(tree.cas(built.big.hash)))
    p = only(await tree.fsck())
    assert p.kind in ("missing", "damaged") and p.content == built.big.hash
    assert paths(p) == {"/docs/big.bin", "/part"}


async def test_a_shorter_object_is_damaged(tree: Tree) -> None:
    built = await build(tree)
    status, _ = tree.raw.put_object(*tree.cas(built.small.hash), b"hell")
    assert status == 201
    p = only(await tree.fsck())
    assert p.kind == "damaged" and "holds 4 bytes, the registry says 5" in p.detail


async def test_an_object_saying_it_holds_other_bytes_is_damaged(tree: Tree) -> None:
    built = await build(tree)
    other = "f" * 64
    tree.raw.put_object(*tree.cas(built.small.hash), b"hello", headers={META_BLAKE3: other})
    p = only(await tree.fsck())
    assert p.kind == "damaged" and f"says it holds content {other}" in p.detail


async def test_a_piece_beyond_the_object_is_damaged(tree: Tree) -> None:
    """The registry agrees with the object, but a file reads past both."""
    built = await build(tree)
    tree.ns._db.execute("UPDATE file_piece SET length = 5000 WHERE hash = ?",
                        (built.small.hash,))
    result = await tree.fsck()
    assert any(p.kind == "namespace" for p in result.problems)  # sqlfsn's check sees it too
    [p] = [p for p in result.problems if p.kind == "damaged"]
    assert "files read up to byte" in p.detail


async def test_a_segment_the_registry_forgot_is_unprotected(tree: Tree) -> None:
    """A consolidated manifest names CAS segments; the garbage collector keeps exactly those
    the registry lists for the content."""
    built = await build(tree)
    await Consolidator(Context(tree.ns, tree.store, tree.layout), retire_grace=0.0).run_pass()
    tree.ns._db.execute("DELETE FROM content_segment WHERE content_hash = ?",
                        (built.big.hash,))
    p = only(await tree.fsck())
    assert p.kind == "unprotected" and "garbage collector may delete it" in p.detail
    assert p.object == "/".join(tree.cas(built.big.segments[0].hash))


async def test_garbage_is_a_note_not_a_problem(tree: Tree) -> None:
    await build(tree)
    await tree.publish(os.urandom(500))  # a writer died before committing: one plain object
    await tree.publish(os.urandom(3 * KiB))  # the same, streamed: a manifest and a segment
    leftover = tree.layout.tmp_name("0" * 32, 0)  # an interrupted write, its lease gone
    assert tree.raw.put_object(tree.layout.tmp_container, leftover, b"x" * 10)[0] == 201
    tree.ns._db.execute("DELETE FROM upload")
    result = await tree.fsck(grace=0.0)
    assert result.problems == [] and result.exit_status() == 0
    assert result.notes["unreferenced_objects"] == 2
    assert result.note_bytes["unreferenced_objects"] == 500  # a manifest's bytes are its segments'
    assert result.notes["segments_leftover"] == 2  # the interrupted write's, the manifest's
    assert (await tree.fsck()).notes.get("unreferenced_objects") is None  # claimed just now


async def test_stale_and_live_leases(tree: Tree) -> None:
    await build(tree)
    _, upload = await tree.publish(os.urandom(3 * KiB))
    assert (await tree.fsck()).problems == []  # heartbeated just now
    p = only(await tree.fsck(lease_timeout=0.0))
    assert p.kind == "stale_lease" and p.lease == upload and "no heartbeat for" in p.detail


async def test_what_cannot_be_checked_is_said(tree: Tree, dev_swift, fault_proxy) -> None:
    """A HEAD that keeps failing (past the retries) is neither missing nor fine."""
    built = await build(tree)
    fault_proxy.add_rule("HEAD", built.small.hash, "status:503", times=-1)
    store = make_store(fault_proxy.url, dev_swift.user, dev_swift.key, deadline=1.0)
    await store.open()
    try:
        result = await Fsck(tree.ns, store, tree.layout, Settings()).run()
    finally:
        await store.aclose()
    p = only(result)
    assert p.kind == "unchecked" and "503" in p.detail
    assert paths(p) == {"/docs/small.txt", "/part"}
    assert result.exit_status() == 8


async def test_a_race_with_a_writer_is_not_reported(tree: Tree) -> None:
    """A content found missing that no file uses any more by the re-check (the file was
    replaced and the old object collected while fsck ran) is not reported."""
    built = await build(tree)
    tree.delete(*tree.cas(built.dup.hash))
    checker = Fsck(tree.ns, tree.store, tree.layout, Settings())
    verify = checker.verifier.verify
    replaced = False

    async def verify_then_replace(use):  # type: ignore[no-untyped-def]
        nonlocal replaced
        verdict = await verify(use)
        if use.hash == built.dup.hash and not replaced:
            replaced = True
            for name in (b"dup-a", b"dup-b"):
                tree.ns.unlink(1, name)
            tree.ns.unlink(tree.ns.lookup(1, b"sub").inode, b"dup-c")
            tree.ns.purge_orphans()
        return verdict

    checker.verifier.verify = verify_then_replace  # type: ignore[method-assign]
    result = await checker.run()
    assert result.problems == []


async def test_both_backends(any_tree: Tree) -> None:
    built = await build(any_tree)
    assert (await any_tree.fsck()).problems == []
    any_tree.delete(*any_tree.cas(built.one.hash))
    p = only(await any_tree.fsck())
    assert p.kind == "missing" and paths(p) == {"/one.bin"}


async def test_swift_going_down_is_unknown_not_missing(tree: Tree, dev_swift, fault_proxy,
                                                       tmp_path) -> None:
    """Swift stops answering after fsck started (every object request and listing dropped,
    a connection error each): nothing is reported missing, the report says what could not be
    checked and why, the exit status is 8, and fsck gives up once a whole wave of requests
    failed instead of waiting out a retry deadline per content and per container."""
    built = await build(tree)
    for i in range(60):
        await tree.write(b"/many/f%02d" % i, b"content %d" % i)
    config = tmp_path / "down.conf"
    write_config(config, auth_url=fault_proxy.url, user=dev_swift.user, key=dev_swift.key,
                 container=tree.layout.base, database=tree.ns.database,
                 cache=tmp_path / "cache")
    config.write_text(config.read_text().replace("retry_deadline = 10", "retry_deadline = 2"))
    # Authentication, /info and the containers' HEAD at start-up pass; then nothing does.
    fault_proxy.add_rule("HEAD", r"^/v1/[^/]+/[^/]+/.", "drop", times=-1)
    fault_proxy.add_rule("GET", r"^/v1/[^/]+/[^/?]+", "drop", times=-1)
    started = time.monotonic()
    code, out, err = run_fsck(config, timeout=240)
    seconds = time.monotonic() - started
    assert code == 8, out + err
    assert "MISSING" not in out and "DAMAGED" not in out and "Traceback" not in err
    assert "result: incomplete" in out and "run fsck again once Swift answers" in out
    assert "Swift stopped answering" in out
    lines = [line for line in out.splitlines() if line.startswith("UNCHECKED")]
    # a line per content that failed before the give-up (by path), then one for the rest
    assert any("/docs/small.txt" in line or "contents used by" in line for line in lines)
    # at most the requests in flight when the streak reached max_connections (16), so < 2 * 16
    assert len(lines) < 2 * 16 + 3 and "contents used by" in lines[-3], out
    assert seconds < 150, f"fsck took {seconds:.0f} s with Swift down"
    code, out, _ = run_fsck(config, "--json", timeout=240)
    doc = json.loads(out)
    assert code == 8 and doc["result"] == "incomplete"
    assert {p["kind"] for p in doc["problems"]} == {"unchecked"}
    assert built.small.hash  # the filesystem itself is whole: without the faults, clean
    fault_proxy.clear_rules()
    code, out, _ = run_fsck(config)
    assert code == 0, out
