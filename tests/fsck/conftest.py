"""Fixtures of the fsck tests: a fresh filesystem per test on the session's dev Swift, with its
namespace in an SQLite file (`tree`) or on each backend in turn (`any_tree`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fsckhelpers import Tree, make_store, write_config

from seqwrite import Layout
from sqlfsn import Namespace


async def _tree(dev_swift, raw_swift, container: str, database: str,
                tmp_path: Path) -> AsyncIterator[Tree]:
    """A filesystem as `cloudfs mkfs` leaves it (shard_digits 1: 16 CAS containers)."""
    store = make_store(dev_swift.auth_url, dev_swift.user, dev_swift.key)
    await store.open()
    layout = Layout(base=container, shard_digits=1)
    for name in layout.all_containers():
        await store.put_container(name)
    ns = Namespace.open(database, create=True)
    ns.set_meta("container", layout.base)
    ns.set_meta("shard_digits", str(layout.shard_digits))
    config = tmp_path / "cloudfs.conf"
    write_config(config, auth_url=dev_swift.auth_url, user=dev_swift.user, key=dev_swift.key,
                 container=container, database=database, cache=tmp_path / "cache")
    try:
        yield Tree(ns, store, layout, raw_swift, config)
    finally:
        ns.close()
        await store.aclose()


@pytest.fixture
async def tree(dev_swift, raw_swift, swift_container, tmp_path) -> AsyncIterator[Tree]:
    async for t in _tree(dev_swift, raw_swift, swift_container, str(tmp_path / "ns.db"),
                         tmp_path):
        yield t


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_tree(request, dev_swift, raw_swift, swift_container,
                   tmp_path) -> AsyncIterator[Tree]:
    database = (str(tmp_path / "ns.db") if request.param == "sqlite"
                else request.getfixturevalue("pg_url"))
    async for t in _tree(dev_swift, raw_swift, swift_container, database, tmp_path):
        yield t
