"""Fixtures for seqwrite tests: a SwiftStore on the session's dev Swift, a fresh layout."""

from __future__ import annotations

import pytest

from seqwrite import Layout, RetryPolicy, SwiftAuth, SwiftStore


@pytest.fixture
async def layout(swift_container: str, store: SwiftStore) -> Layout:
    layout = Layout(base=swift_container, shard_digits=1)
    for container in layout.all_containers():
        await store.put_container(container)
    return layout


def make_store(auth_url: str, dev_swift, **kw) -> SwiftStore:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("policy", RetryPolicy(deadline=20.0, first_backoff=0.05, max_backoff=1.0))
    return SwiftStore(SwiftAuth(auth_url, dev_swift.user, dev_swift.key), **kw)


@pytest.fixture
async def store(dev_swift) -> SwiftStore:
    store = make_store(dev_swift.auth_url, dev_swift)
    await store.open()
    yield store
    await store.aclose()
