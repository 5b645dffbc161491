"""The in-process tier (S3QL's t3_fs_api style): cloudfs's FUSE Operations called directly, on
a real namespace (SQLite in the test's directory) and the session's real dev Swift, with no
kernel in between. Faster and more precise than a mount: a test sees exactly which call
answered which errno, and ends by checking the namespace's invariants.

pyfuse3's request context and setattr fields have read-only attributes, so the tests duck-type
their own (as S3QL's tests do).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from writer.helpers import make_store

from cloudfs.files import Files
from cloudfs.ops import Operations
from cloudfs.reader import BlockBudget
from seqwrite import Layout, SwiftStore, WriterSettings
from seqwrite.space import LocalSpace
from sqlfsn import Namespace

KiB, MiB = 1 << 10, 1 << 20


@dataclass
class Ctx:
    uid: int = 1000
    gid: int = 1000
    pid: int = 4242
    umask: int = 0o022


@dataclass
class Fields:
    update_atime: bool = False
    update_mtime: bool = False
    update_ctime: bool = False
    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_size: bool = False


@dataclass
class Fs:
    ops: Operations
    ns: Namespace
    files: Files
    store: SwiftStore
    layout: Layout
    space: LocalSpace
    ctx: Ctx


@pytest.fixture
async def fs(dev_swift, swift_container: str, tmp_path: Path) -> AsyncIterator[Fs]:
    """Operations over a fresh namespace and layout; 64 KiB segments, 8 KiB small files."""
    store = make_store(dev_swift.auth_url, dev_swift)
    await store.open()
    layout = Layout(base=swift_container, shard_digits=0)
    for container in layout.all_containers():
        await store.put_container(container)
    ns = Namespace.open(tmp_path / "ns.db", create=True)
    spool = tmp_path / "spool"
    spool.mkdir()
    space = LocalSpace(str(spool), 64 * MiB)
    writers = WriterSettings(segment_size=64 * KiB, small_threshold=8 * KiB,
                             spool_dir=str(spool), space=space)
    try:
        async with trio.open_nursery() as nursery:
            files = Files(ns, store, layout, nursery, writers=writers,
                          read_budget=BlockBudget(8))
            yield Fs(Operations(ns, files), ns, files, store, layout, space, Ctx())
            files.abort_unclosed()
            nursery.cancel_scope.cancel()
        assert ns.check() == [], "the namespace's invariants hold at the end of every test"
        assert space.used == 0, "every byte counted on the local disk was given back"
    finally:
        ns.close()
        await store.aclose()
