"""The writer against the real dev Swift: naming, segments, tags, manifests, dedup, abort."""

from __future__ import annotations

import os

import blake3
import pytest
import trio

from seqwrite import EMPTY_HASH, StoredContent, TooLarge, Writer
from writer.helpers import (
    assert_nothing_tagged,
    assert_tagged,
    cas_get,
    make_store,
    stored_manifest,
    write_all,
)

pytestmark = pytest.mark.swift

KiB = 1024


async def test_three_segments_round_trip(store, layout, raw_swift):
    seg = 256 * KiB
    data = os.urandom(3 * seg + 12345)
    content = await write_all(store, layout, data, segment_size=seg)
    assert content.hash == blake3.blake3(data).hexdigest()
    assert content.kind == "manifest" and content.size == len(data)
    assert [s.size for s in content.segments] == [seg, seg, seg, 12345]
    assert cas_get(raw_swift, layout, content.hash) == data
    manifest = stored_manifest(raw_swift, layout, content.hash)
    assert [m["name"] for m in manifest] == [
        f"/{layout.tmp_container}/{s.tmp_name}" for s in content.segments]
    for s, off in zip(content.segments, range(0, len(data), seg), strict=True):
        assert s.hash == blake3.blake3(data[off:off + seg]).hexdigest()
    assert_tagged(raw_swift, layout, content)


async def test_segment_size_clamped_to_swift_max_file_size(store, layout, raw_swift):
    limit = store.limits.max_file_size
    assert limit < 64 * 2**20, "the session's dev Swift runs with a lowered max_file_size"
    data = os.urandom(2 * limit + 10)
    content = await write_all(store, layout, data, segment_size=10 * limit, piece=1 << 20)
    assert [s.size for s in content.segments] == [limit, limit, 10]
    assert cas_get(raw_swift, layout, content.hash) == data


@pytest.mark.parametrize("extra, nsegs", [(0, 1), (1, 2), (-1, 1)])
async def test_rollover_boundary(store, layout, raw_swift, extra, nsegs):
    seg = 128 * KiB
    data = os.urandom(seg + extra)
    content = await write_all(store, layout, data, segment_size=seg, small_threshold=4 * KiB)
    assert len(content.segments) == nsegs
    assert cas_get(raw_swift, layout, content.hash) == data
    assert_tagged(raw_swift, layout, content)


async def test_small_file_threshold(store, layout, raw_swift):
    small = os.urandom(64 * KiB)
    content = await write_all(store, layout, small, segment_size=256 * KiB)
    assert content.kind == "object" and not content.segments
    assert cas_get(raw_swift, layout, content.hash) == small
    status, headers = raw_swift.head_object(*layout.cas_path(content.hash))
    assert "x-static-large-object" not in {k.lower() for k in headers}
    over = os.urandom(64 * KiB + 1)
    content = await write_all(store, layout, over, segment_size=256 * KiB)
    assert content.kind == "manifest" and len(content.segments) == 1
    assert cas_get(raw_swift, layout, content.hash) == over


async def test_empty_file_stores_nothing(store, layout, raw_swift):
    content = await write_all(store, layout, b"", segment_size=256 * KiB)
    assert (content.hash, content.size, content.kind) == (EMPTY_HASH, 0, "empty")
    assert raw_swift.head_object(*layout.cas_path(EMPTY_HASH))[0] == 404


async def test_dedup_same_content_twice(store, layout, raw_swift):
    data = os.urandom(300 * KiB)
    first = await write_all(store, layout, data, segment_size=128 * KiB)
    second = await write_all(store, layout, data, segment_size=128 * KiB)
    assert first.hash == second.hash and not first.deduplicated and second.deduplicated
    cas = raw_swift.list_container(layout.cas_container(first.hash))
    assert [o["name"] for o in cas] == [first.hash]
    # the redundant segments of the second write are retired
    for s in second.segments:
        assert raw_swift.head_object(layout.tmp_container, s.tmp_name)[0] == 404
    assert cas_get(raw_swift, layout, first.hash) == data
    small = os.urandom(1000)
    a = await write_all(store, layout, small, segment_size=128 * KiB)
    b = await write_all(store, layout, small, segment_size=128 * KiB)
    assert a.hash == b.hash and b.deduplicated


async def test_abort_publishes_and_tags_nothing(store, layout, raw_swift):
    data = os.urandom(3 * 128 * KiB)
    async with trio.open_nursery() as nursery:
        writer = Writer(store, layout, nursery, segment_size=128 * KiB, small_threshold=4 * KiB)
        await writer.write(data)
        writer.abort()
    digest = blake3.blake3(data).hexdigest()
    assert raw_swift.head_object(*layout.cas_path(digest))[0] == 404
    assert_nothing_tagged(raw_swift, layout)


async def test_too_many_segments_refused(store, layout, raw_swift, monkeypatch):
    import dataclasses
    monkeypatch.setattr(store, "limits", dataclasses.replace(store.limits,
                                                             max_manifest_segments=2))
    data = os.urandom(3 * 64 * KiB)
    with pytest.raises(TooLarge, match="segments"):
        await write_all(store, layout, data, segment_size=64 * KiB, small_threshold=KiB)
    assert raw_swift.head_object(*layout.cas_path(blake3.blake3(data).hexdigest()))[0] == 404


async def test_many_writers_share_few_connections(dev_swift, layout, raw_swift):
    store = make_store(dev_swift.auth_url, dev_swift, max_connections=2)
    await store.open()
    datas = [os.urandom(200 * KiB + i) for i in range(6)]
    results: dict[int, StoredContent] = {}

    async def one(i: int) -> None:
        results[i] = await write_all(store, layout, datas[i], segment_size=64 * KiB,
                                     small_threshold=KiB)

    async with trio.open_nursery() as nursery:
        for i in range(len(datas)):
            nursery.start_soon(one, i)
    for i, data in enumerate(datas):
        assert cas_get(raw_swift, layout, results[i].hash) == data
    await store.aclose()
