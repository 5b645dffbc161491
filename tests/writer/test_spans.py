"""stream_spans against the real dev Swift: order, holes, chunking, prefetch, failures."""

from __future__ import annotations

import os

import pytest
import trio

from seqwrite import ObjectNotFound, Span, StoreError, stream_spans

pytestmark = pytest.mark.swift

KiB = 1024


async def collect(store, spans, **kw) -> tuple[bytes, list[int]]:
    out: list[bytes] = []

    async def sink(data: bytes) -> None:
        out.append(data)

    n = await stream_spans(store, spans, sink, **kw)
    assert n == sum(map(len, out))
    return b"".join(out), [len(d) for d in out]


async def test_spans_stream_in_order_with_holes(store, layout, raw_swift):
    c = layout.tmp_container
    objs = {f"o{i}": os.urandom(1000 * (i + 1)) for i in range(30)}
    for name, data in objs.items():
        assert raw_swift.put_object(c, name, data)[0] == 201
    spans, expected = [], b""
    for i, (name, data) in enumerate(objs.items()):
        off = i * 7
        spans.append(Span(c, name, off, len(data) - off - i))
        expected += data[off:len(data) - i]
        if i % 5 == 0:
            spans.append(Span(None, "", 0, 333))
            expected += bytes(333)
    got, sizes = await collect(store, spans, chunk=4 * KiB, ahead=3)
    assert got == expected
    assert max(sizes) <= 4 * KiB  # one big span is several chunks, never one big GET
    assert (await collect(store, []))[0] == b""


async def test_prefetch_is_bounded_and_keeps_order(store, layout, raw_swift):
    """With a slow sink, at most `ahead` chunks are fetched beyond the one being consumed."""
    c = layout.tmp_container
    data = os.urandom(64 * KiB)
    assert raw_swift.put_object(c, "big", data)[0] == 201
    before = store.statistics().get("GET", 0)
    seen: list[int] = []

    async def slow_sink(chunk: bytes) -> None:
        seen.append(store.statistics().get("GET", 0) - before)
        await trio.sleep(0.05)

    await stream_spans(store, [Span(c, "big", 0, len(data))], slow_sink, chunk=KiB, ahead=4)
    assert len(seen) == 64
    for consumed, gets in enumerate(seen):
        assert gets <= consumed + 1 + 4, seen
    assert seen[-1] == 64 and max(seen[:10]) >= 4, "it does read ahead"
    # The byte budget binds before the count: 3 KiB = three 1 KiB chunks.
    seen.clear()
    before = store.statistics().get("GET", 0)
    await stream_spans(store, [Span(c, "big", 0, 16 * KiB)], slow_sink, chunk=KiB, ahead=8,
                       budget=3 * KiB)
    for consumed, gets in enumerate(seen):
        assert gets <= consumed + 1 + 3, seen


async def test_short_and_missing_reads_fail_and_stop_the_sink(store, layout, raw_swift):
    c = layout.tmp_container
    assert raw_swift.put_object(c, "short", b"x" * 100)[0] == 201
    got: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        got.append(chunk)

    with pytest.raises(StoreError, match="short read"):
        await stream_spans(store, [Span(c, "short", 0, 100), Span(c, "short", 50, 80)], sink)
    assert got == [b"x" * 100]
    got.clear()
    with pytest.raises(ObjectNotFound):
        await stream_spans(store, [Span(c, "missing", 0, 10), Span(c, "short", 0, 10)], sink)
    assert got == []
    with pytest.raises(ValueError):
        await stream_spans(store, [Span(c, "short", -1, 10)], sink)


async def test_sink_failure_propagates(store, layout, raw_swift):
    c = layout.tmp_container
    assert raw_swift.put_object(c, "o", os.urandom(10 * KiB))[0] == 201

    async def sink(chunk: bytes) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await stream_spans(store, [Span(c, "o", 0, 10 * KiB)], sink, chunk=KiB)
