"""Plain PUTs on kept-alive connections (seqwrite/direct.py): small files reuse one
connection, a connection the server closed while idle costs no retry, and the failures the
store's retry rules cover still heal (401, 503) or fail (a persistent fault)."""

from __future__ import annotations

import os

import blake3
import pytest

from seqwrite import RetryPolicy, StoreError
from writer.helpers import cas_get, make_store, write_all

pytestmark = pytest.mark.swift

KiB = 1024


async def write_small_with_fault(store, fault_proxy, layout, raw_swift, action: str,
                                 times: int, size: int = 5000) -> bytes:
    """A small file whose PUT meets `action` `times` times; it is stored exactly anyway.
    Returns its bytes."""
    data = os.urandom(size)
    fault_proxy.add_rule("PUT", blake3.blake3(data).hexdigest(), action, times=times)
    content = await write_all(store, layout, data, segment_size=64 * KiB,
                              small_threshold=8 * KiB)
    assert cas_get(raw_swift, layout, content.hash) == data
    return data


async def test_sequential_small_files_reuse_one_connection(store, layout, raw_swift):
    blobs = [os.urandom(3000 + i) for i in range(20)]
    for data in blobs:
        content = await write_all(store, layout, data, segment_size=64 * KiB,
                                  small_threshold=8 * KiB)
        assert content.kind == "object"
        assert cas_get(raw_swift, layout, content.hash) == data
    assert store._direct.opened == 1


async def test_a_connection_closed_while_idle_is_replaced_without_a_retry(
        faulty_store, fault_proxy, layout, raw_swift):
    """The proxy drops the connection on the next PUT without answering (as a server whose
    keep-alive timeout ran out): the PUT goes again at once on a new connection."""
    first = os.urandom(2000)
    await write_all(faulty_store, layout, first, segment_size=64 * KiB, small_threshold=8 * KiB)
    data = os.urandom(2000)
    digest = blake3.blake3(data).hexdigest()
    fault_proxy.add_rule("PUT", digest, "drop", times=1)
    content = await write_all(faulty_store, layout, data, segment_size=64 * KiB,
                              small_threshold=8 * KiB)
    assert cas_get(raw_swift, layout, content.hash) == data
    assert len(fault_proxy.seen("PUT", digest)) == 2
    assert faulty_store.stats.retries == 0
    assert faulty_store._direct.opened == 2


async def test_expired_token_on_a_small_file_reauthenticates(faulty_store, fault_proxy,
                                                             layout, raw_swift):
    auths = faulty_store.statistics().get("AUTH", 0)
    await write_small_with_fault(faulty_store, fault_proxy, layout, raw_swift, "status:401", 1)
    assert faulty_store.statistics().get("AUTH", 0) == auths + 1


async def test_transient_status_on_a_small_file_heals(faulty_store, fault_proxy, layout,
                                                      raw_swift):
    await write_small_with_fault(faulty_store, fault_proxy, layout, raw_swift, "status:503", 2)
    assert faulty_store.stats.retries == 2


async def test_persistent_fault_on_a_small_file_fails(dev_swift, fault_proxy, layout,
                                                      raw_swift):
    store = make_store(fault_proxy.url, dev_swift, timeout=2.0,
                       policy=RetryPolicy(deadline=1.0, first_backoff=0.05, max_backoff=0.2))
    await store.open()
    try:
        data = os.urandom(5000)
        digest = blake3.blake3(data).hexdigest()
        fault_proxy.add_rule("PUT", digest, "drop", times=-1)
        with pytest.raises(StoreError):
            await write_all(store, layout, data, segment_size=64 * KiB,
                            small_threshold=8 * KiB)
        assert store.stats.failures == 1
    finally:
        await store.aclose()
