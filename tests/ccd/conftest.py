"""Fixtures of the ccd tests: a filesystem (namespace file + Swift containers) per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from ccdhelpers import Fs, make_store

from seqwrite import Layout, SwiftStore
from sqlfsn import Namespace


@pytest.fixture
async def store(dev_swift) -> AsyncIterator[SwiftStore]:
    store = make_store(dev_swift.auth_url, dev_swift)
    await store.open()
    yield store
    await store.aclose()


@pytest.fixture
async def fs(tmp_path, swift_container: str, store: SwiftStore, raw_swift) -> AsyncIterator[Fs]:
    """A fresh filesystem as `cloudfs mkfs` leaves it (shard_digits 1: 16 CAS containers)."""
    layout = Layout(base=swift_container, shard_digits=1)
    for container in layout.all_containers():
        await store.put_container(container)
    ns = Namespace.open(tmp_path / "ns.db", create=True)
    ns.set_meta("container", layout.base)
    ns.set_meta("shard_digits", str(layout.shard_digits))
    yield Fs(ns, store, layout, raw_swift)
    ns.close()
