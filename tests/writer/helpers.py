"""Helpers shared by the writer tests."""

from __future__ import annotations

import json

import trio

from seqwrite import (
    Layout,
    RetryPolicy,
    StoredContent,
    StoreError,
    SwiftAuth,
    SwiftStore,
    Writer,
)


def make_store(auth_url: str, dev_swift, **kw) -> SwiftStore:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("policy", RetryPolicy(deadline=20.0, first_backoff=0.05, max_backoff=1.0))
    return SwiftStore(SwiftAuth(auth_url, dev_swift.user, dev_swift.key), **kw)


async def write_all(store: SwiftStore, layout: Layout, data: bytes, *, segment_size: int,
                    small_threshold: int = 64 * 1024, piece: int = 100_000,
                    **kw) -> StoredContent:
    """Write `data` through a Writer; its StoreError (if any) is raised as is, not grouped."""
    failure: StoreError | None = None
    async with trio.open_nursery() as nursery:
        writer = Writer(store, layout, nursery, segment_size=segment_size,
                        small_threshold=small_threshold, **kw)
        try:
            for off in range(0, len(data), piece):
                await writer.write(data[off:off + piece])
            result = await writer.finish()
        except StoreError as exc:
            failure = exc
    if failure is not None:
        raise failure
    return result


def cas_get(raw, layout: Layout, digest: str) -> bytes:
    status, _, body = raw.get_object(*layout.cas_path(digest))
    assert status == 200
    return body


def stored_manifest(raw, layout: Layout, digest: str) -> list[dict]:
    status, _, body = raw.get_object(*layout.cas_path(digest), query="multipart-manifest=get")
    assert status == 200
    return json.loads(body)


def assert_tagged(raw, layout: Layout, content: StoredContent) -> None:
    for seg in content.segments:
        status, headers = raw.head_object(layout.tmp_container, seg.tmp_name)
        assert status == 200
        h = {k.lower(): v for k, v in headers.items()}
        assert h["x-object-meta-bigfile"] == content.hash
        assert h["x-object-meta-blake3"] == seg.hash


def assert_nothing_tagged(raw, layout: Layout) -> None:
    for obj in raw.list_container(layout.tmp_container, prefix=".tmp/"):
        status, headers = raw.head_object(layout.tmp_container, obj["name"])
        assert status == 404 or "x-object-meta-bigfile" not in {k.lower() for k in headers}
