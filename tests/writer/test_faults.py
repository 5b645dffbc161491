"""The writer through a fault-injecting proxy: transient faults heal, persistent ones fail
cleanly with nothing published and nothing tagged."""

from __future__ import annotations

import os

import blake3
import pytest
import trio

from seqwrite import RetryPolicy, StoreError, Writer
from writer.helpers import assert_nothing_tagged, assert_tagged, cas_get, make_store, write_all

pytestmark = pytest.mark.swift

KiB = 1024
SEG = 256 * KiB


@pytest.mark.parametrize("verify_md5", [False, True])
@pytest.mark.parametrize("action, kw", [
    ("drop", {"after_bytes": 100 * KiB}),   # connection dropped mid-body
    ("status:503", {}),                      # Swift answers 503
    ("stall", {"seconds": 4.0}),             # longer than the 2 s client timeout
])
async def test_transient_segment_fault_heals(faulty_store, fault_proxy, layout, raw_swift,
                                             action, kw, verify_md5):
    data = os.urandom(3 * SEG + 777)
    fault_proxy.add_rule("PUT", r"/\.tmp/.*/000001$", action, times=1, **kw)
    content = await write_all(faulty_store, layout, data, segment_size=SEG, small_threshold=KiB,
                              verify_md5=verify_md5)
    assert content.hash == blake3.blake3(data).hexdigest()
    assert cas_get(raw_swift, layout, content.hash) == data
    assert_tagged(raw_swift, layout, content)
    puts = [p for m, p in fault_proxy.requests if m == "PUT" and p.endswith("/000001")]
    assert len(puts) == 2, "the faulted segment was sent again from the spool"


async def test_bytes_corrupted_in_transit_are_caught_and_sent_again(faulty_store, fault_proxy,
                                                                    layout, raw_swift):
    """By default (verify_md5) every segment's md5 is compared with the ETag Swift computed of
    what it stored: a bit flipped on the way is caught, the segment is sent again from the
    spool, and the CAS name holds exactly the bytes of its hash."""
    data = os.urandom(3 * SEG + 777)
    fault_proxy.add_rule("PUT", r"/\.tmp/.*/000001$", "corrupt", times=1, after_bytes=5000)
    content = await write_all(faulty_store, layout, data, segment_size=SEG, small_threshold=KiB)
    assert cas_get(raw_swift, layout, content.hash) == data
    puts = [p for m, p in fault_proxy.requests if m == "PUT" and p.endswith("/000001")]
    assert len(puts) == 2, "the corrupted segment was sent again"


async def test_without_verify_md5_corruption_goes_unseen(faulty_store, fault_proxy, layout,
                                                         raw_swift):
    """What verify_md5 = false gives up: a flipped bit is stored, and the CAS name no longer
    returns the bytes of its hash (why the check is on by default)."""
    data = os.urandom(3 * SEG + 777)
    fault_proxy.add_rule("PUT", r"/\.tmp/.*/000001$", "corrupt", times=1, after_bytes=5000)
    content = await write_all(faulty_store, layout, data, segment_size=SEG, small_threshold=KiB,
                              verify_md5=False)
    stored = cas_get(raw_swift, layout, content.hash)
    assert blake3.blake3(stored).hexdigest() != content.hash


async def test_expired_token_on_a_segment_reauthenticates(faulty_store, fault_proxy, layout,
                                                          raw_swift):
    """A 401 in the middle of a streamed segment (the token expired) is healed: the store
    authenticates again and the segment is replayed from the spool."""
    data = os.urandom(3 * SEG)
    fault_proxy.add_rule("PUT", r"/\.tmp/.*/000001$", "status:401", times=1)
    auths = faulty_store.statistics().get("AUTH", 0)
    content = await write_all(faulty_store, layout, data, segment_size=SEG, small_threshold=KiB)
    assert cas_get(raw_swift, layout, content.hash) == data
    assert faulty_store.statistics().get("AUTH", 0) == auths + 1
    puts = [p for m, p in fault_proxy.requests if m == "PUT" and p.endswith("/000001")]
    assert len(puts) == 2


async def test_transient_faults_on_tag_and_manifest_heal(faulty_store, fault_proxy, layout,
                                                         raw_swift):
    data = os.urandom(2 * SEG)
    fault_proxy.add_rule("POST", r"/\.tmp/", "status:503", times=2)
    fault_proxy.add_rule("PUT", r"multipart-manifest=put", "drop", times=1)
    content = await write_all(faulty_store, layout, data, segment_size=SEG, small_threshold=KiB)
    assert cas_get(raw_swift, layout, content.hash) == data
    assert_tagged(raw_swift, layout, content)


async def test_persistent_fault_fails_cleanly(dev_swift, fault_proxy, layout, raw_swift):
    store = make_store(fault_proxy.url, dev_swift, timeout=2.0,
                       policy=RetryPolicy(deadline=2.0, first_backoff=0.05, max_backoff=0.2))
    await store.open()
    data = os.urandom(3 * SEG)
    fault_proxy.add_rule("PUT", r"/\.tmp/.*/000002$", "status:503", times=-1)
    with pytest.raises(StoreError):
        await write_all(store, layout, data, segment_size=SEG, small_threshold=KiB)
    fault_proxy.clear_rules()
    digest = blake3.blake3(data).hexdigest()
    assert raw_swift.head_object(*layout.cas_path(digest))[0] == 404
    assert_nothing_tagged(raw_swift, layout)
    await store.aclose()


async def test_cancelled_write_does_not_hang(dev_swift, fault_proxy, layout):
    """A write stuck on a stalled Swift is cancellable: it ends within the socket timeout."""
    store = make_store(fault_proxy.url, dev_swift, timeout=2.0)
    await store.open()
    fault_proxy.add_rule("PUT", r"/\.tmp/", "stall", times=-1, seconds=30)
    started = trio.current_time()
    with trio.move_on_after(1) as scope:
        async with trio.open_nursery() as nursery:
            writer = Writer(store, layout, nursery, segment_size=SEG, small_threshold=KiB)
            await writer.write(os.urandom(SEG))
            await writer.finish()
    elapsed = trio.current_time() - started
    fault_proxy.clear_rules()
    await store.aclose()
    assert scope.cancelled_caught
    assert elapsed < 8, f"cancellation took {elapsed:.1f}s"


async def test_lost_answer_to_manifest_put_keeps_segments(faulty_store, fault_proxy, layout,
                                                          raw_swift):
    """The manifest PUT lands but its answer is lost; the retry's 412 is our own manifest, so
    the segments it names are kept (deleting them would break the stored file)."""
    data = os.urandom(3 * SEG)
    fault_proxy.add_rule("PUT", r"multipart-manifest=put", "drop", times=1,
                         after_bytes=10**9)  # forward the whole request, then hang up
    content = await write_all(faulty_store, layout, data, segment_size=SEG, small_threshold=KiB)
    assert not content.deduplicated
    assert cas_get(raw_swift, layout, content.hash) == data
    assert_tagged(raw_swift, layout, content)


async def test_dedup_against_a_consolidated_object_reads_nothing(faulty_store, fault_proxy,
                                                                 layout, raw_swift):
    """Writing content that ccd already consolidated into a plain object: the 412 is checked
    with a HEAD (never by downloading the object), our segments are retired."""
    data = os.urandom(3 * SEG)
    first = await write_all(faulty_store, layout, data, segment_size=SEG, small_threshold=KiB)
    status, _ = raw_swift.put_object(*layout.cas_path(first.hash), data, {})[:2]
    assert status == 201  # what consolidation leaves: a plain object with the same bytes
    fault_proxy.clear_requests()
    second = await write_all(faulty_store, layout, data, segment_size=SEG, small_threshold=KiB)
    assert second.deduplicated
    assert not fault_proxy.seen("GET", layout.cas_path(first.hash)[1])
    for seg in second.segments:
        assert raw_swift.head_object(layout.tmp_container, seg.tmp_name)[0] == 404
