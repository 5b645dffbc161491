"""Fixtures for the writer tests: a SwiftStore on the session's dev Swift (directly or through
the fault proxy), a fresh layout."""

from __future__ import annotations

import pytest

from seqwrite import Layout, SwiftStore
from writer.helpers import make_store


@pytest.fixture
async def store(dev_swift) -> SwiftStore:
    store = make_store(dev_swift.auth_url, dev_swift)
    await store.open()
    yield store
    await store.aclose()


@pytest.fixture
async def faulty_store(dev_swift, fault_proxy) -> SwiftStore:
    """A store whose requests pass through the fault proxy (short timeout)."""
    store = make_store(fault_proxy.url, dev_swift, timeout=2.0)
    await store.open()
    yield store
    await store.aclose()


@pytest.fixture
async def layout(swift_container: str, store: SwiftStore) -> Layout:
    layout = Layout(base=swift_container, shard_digits=1)
    for container in layout.all_containers():
        await store.put_container(container)
    return layout
