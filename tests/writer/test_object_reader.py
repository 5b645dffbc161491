"""SwiftStore.open_read: one streamed GET read in pieces, re-opened where a fault cut it."""

from __future__ import annotations

import os

import pytest

from seqwrite import ObjectNotFound, RetryPolicy, StoreError
from writer.helpers import make_store

pytestmark = pytest.mark.swift

MiB = 1 << 20


async def read_all(reader, step: int) -> bytes:
    out = []
    while chunk := await reader.read(step):
        out.append(chunk)
    return b"".join(out)


async def test_streamed_read_is_one_request(store, swift_container, raw_swift):
    data = os.urandom(3 * MiB + 123)
    raw_swift.put_object(swift_container, "obj", data)
    before = store.statistics().get("GET", 0)
    reader = store.open_read(swift_container, "obj", 1000, len(data) - 7)
    assert await read_all(reader, 256 * 1024 + 1) == data[1000:-7]
    assert store.statistics().get("GET", 0) - before == 1
    assert await reader.read(10) == b""


@pytest.mark.parametrize("action, kw", [
    ("drop_response", {"after_bytes": MiB}),   # the body is cut after 1 MiB
    ("status:503", {}),                        # the first GET is refused
])
async def test_streamed_read_reopens_after_a_transient_fault(dev_swift, fault_proxy,
                                                             swift_container, raw_swift,
                                                             action, kw):
    store = make_store(fault_proxy.url, dev_swift, timeout=2.0,
                       policy=RetryPolicy(deadline=5.0, first_backoff=0.05, max_backoff=0.2))
    await store.open()
    data = os.urandom(4 * MiB)
    raw_swift.put_object(swift_container, "obj", data)
    fault_proxy.add_rule("GET", r"/obj$", action, times=1, **kw)
    reader = store.open_read(swift_container, "obj", 0, len(data))
    assert await read_all(reader, 3 * MiB // 2) == data
    gets = fault_proxy.seen("GET", r"/obj$")
    assert len(gets) == 2, gets  # the faulty GET and one re-opened where it stopped
    await store.aclose()


async def test_streamed_read_fails_cleanly(dev_swift, fault_proxy, swift_container, raw_swift):
    store = make_store(fault_proxy.url, dev_swift, timeout=2.0,
                       policy=RetryPolicy(deadline=1.0, first_backoff=0.05, max_backoff=0.2))
    await store.open()
    raw_swift.put_object(swift_container, "obj", os.urandom(MiB))
    fault_proxy.add_rule("GET", r"/obj$", "status:503", times=-1)
    with pytest.raises(StoreError):
        await store.open_read(swift_container, "obj", 0, MiB).read(MiB)
    fault_proxy.clear_rules()
    with pytest.raises(ObjectNotFound):
        await store.open_read(swift_container, "missing", 0, MiB).read(MiB)
    await store.aclose()
