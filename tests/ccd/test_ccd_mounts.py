"""ccd cleanup beside several mounts of a PostgreSQL namespace: it unregisters the dead ones
(releasing their holds and write leases), deletes the unlinked files only they held, and
leaves live mounts, their holds and their upload leases alone."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from ccdhelpers import Fs

from ccd import cleanup_pass
from seqwrite import Layout, SwiftStore
from sqlfsn import ROOT_INODE, MountInfo, Namespace
from sqlfsn.mounts import META_MOUNT_TIMEOUT, MOUNT_LOCK_CLASS

pytestmark = pytest.mark.swift


@pytest.fixture
def pg_fs(pg_url: str, swift_container: str, store: SwiftStore, raw_swift
          ) -> Iterator[Fs]:
    layout = Layout(base=swift_container, shard_digits=1)
    ns = Namespace.open(pg_url, create=True)
    ns.set_meta("container", layout.base)
    ns.set_meta("shard_digits", str(layout.shard_digits))
    ns.set_meta(META_MOUNT_TIMEOUT, "6")  # heartbeats of 0.6 s; a crash is seen in 1.8 s
    yield Fs(ns, store, layout, raw_swift)
    ns.close()


async def test_cleanup_reaps_dead_mounts_only(pg_fs: Fs, pg_url: str) -> None:
    for container in pg_fs.layout.all_containers():
        await pg_fs.store.put_container(container)
    ns = pg_fs.ns
    with Namespace.open(pg_url) as dead_ns, Namespace.open(pg_url) as live_ns:
        dead = dead_ns.register_mount(MountInfo("h1", 1, "/mnt/1", 0))
        live = live_ns.register_mount(MountInfo("h2", 2, "/mnt/2", 0))
        # the live mount's listening session holds its lock; the dead one's ended
        lock = psycopg.connect(pg_url, autocommit=True)
        lock.execute("SELECT pg_advisory_lock(%s::int, %s::int)", (MOUNT_LOCK_CLASS, live))
        f = ns.create(ROOT_INODE, b"f", 0o644, 0, 0)
        g = ns.create(ROOT_INODE, b"g", 0o644, 0, 0)
        h = ns.create(ROOT_INODE, b"h", 0o644, 0, 0)
        dead_ns.hold_open(dead, f.inode)
        assert dead_ns.take_writer(dead, g.inode) is None
        live_ns.hold_open(live, h.inode)
        live_ns.upload_begin("live-upload")
        ns.unlink(ROOT_INODE, b"f")
        ns.unlink(ROOT_INODE, b"h")
        time.sleep(2.0)
        live_ns.mount_heartbeat(live)
        live_ns.upload_heartbeat(["live-upload"])
        dry = await cleanup_pass(pg_fs.ctx(3600.0), dry_run=True)
        assert dry.counts["mounts_reaped"] == 1
        assert len(ns.mounts()) == 2  # a dry run changes nothing
        live_ns.mount_heartbeat(live)
        report = await cleanup_pass(pg_fs.ctx(3600.0))
        assert report.kept_errors == 0, report.errors
        assert report.counts["mounts_reaped"] == 1
        assert report.counts["orphans_purged"] == 1  # f; h is held by the live mount
        assert [m.id for m in ns.mounts()] == [live]
        assert ns.holds() == [(live, h.inode)]
        assert ns.writer_of(g.inode) is None
        assert [u.id for u in ns.uploads()] == ["live-upload"]
        assert ns.getattr(h.inode).nlink == 0
        lock.close()
