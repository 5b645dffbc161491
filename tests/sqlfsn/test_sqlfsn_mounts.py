"""Mounts of one namespace (sqlfsn/mounts.py, listen.py): registration, liveness by heartbeat
and by session lock, holds that keep orphans, write leases, reaping the dead, the change
notifications, and the upgrade of a version-1 schema."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest

from sqlfsn import ROOT_INODE, SCHEMA_VERSION, MountInfo, Namespace, errors
from sqlfsn.listen import Listener
from sqlfsn.mounts import META_MOUNT_TIMEOUT, MOUNT_LOCK_CLASS

R = ROOT_INODE


def info(n: int = 1) -> MountInfo:
    return MountInfo(f"host{n}", 1000 + n, f"/mnt/{n}", 0)


def session_lock(url: str, mount_id: int) -> psycopg.Connection:
    """A connection holding mount_id's session lock (what a mount's Listener does)."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SELECT pg_advisory_lock(%s::int, %s::int)", (MOUNT_LOCK_CLASS, mount_id))
    return conn


def test_registration_is_listed_and_removed(spec: str) -> None:
    with Namespace.open(spec, create=True) as ns:
        mount_id = ns.register_mount(info())
        [m] = ns.mounts()
        assert (m.id, m.host, m.pid, m.mountpoint, m.alive) == (
            mount_id, "host1", 1001, "/mnt/1", True)
        assert abs(m.heartbeat_ns - time.time_ns()) < 60e9  # the server's clock
        assert ns.mount_heartbeat(mount_id)
        ns.unregister_mount(mount_id)
        assert ns.mounts() == []
        assert not ns.mount_heartbeat(mount_id)


def test_sqlite_has_one_mount_and_forgets_a_dead_one(db_path: Path) -> None:
    with Namespace.open(db_path, create=True) as ns:
        ns.register_mount(info(1))  # its process "dies": the lock goes with close()
    with Namespace.open(db_path) as other, Namespace.open(db_path) as ns:
        second = ns.register_mount(info(2))
        with pytest.raises(errors.MountBusy, match="host2"):
            other.register_mount(info(3))
        assert [m.id for m in ns.mounts()] == [second]
        assert not ns.shared
        # nothing of holds and leases is recorded: one mount keeps them in memory
        f = ns.create(R, b"f", 0o644, 0, 0)
        ns.hold_open(second, f.inode)
        assert ns.take_writer(second, f.inode) is None
        assert ns.holds() == [] and ns.writer_of(f.inode) is None


def test_mounts_of_postgres_share_and_release(pg_url: str) -> None:
    with Namespace.open(pg_url, create=True) as a, Namespace.open(pg_url) as b:
        assert a.shared
        ida, idb = a.register_mount(info(1)), b.register_mount(info(2))
        locks = [session_lock(pg_url, ida), session_lock(pg_url, idb)]
        f = a.create(R, b"f", 0o644, 0, 0)
        assert a.take_writer(ida, f.inode) is None
        assert a.take_writer(ida, f.inode) is None  # already ours
        holder = b.take_writer(idb, f.inode)
        assert holder is not None and holder.id == ida and holder.alive
        assert "host1" in holder.describe()
        a.release_writer(ida, f.inode)
        assert b.take_writer(idb, f.inode) is None
        assert a.writer_of(f.inode).id == idb
        b.unregister_mount(idb)  # a clean unmount releases its leases
        assert a.writer_of(f.inode) is None
        for conn in locks:
            conn.close()


def test_held_orphan_survives_until_released(pg_url: str) -> None:
    """An unlink on one mount never deletes a file another mount has open."""
    with Namespace.open(pg_url, create=True) as a, Namespace.open(pg_url) as b:
        ida, idb = a.register_mount(info(1)), b.register_mount(info(2))
        locks = [session_lock(pg_url, ida), session_lock(pg_url, idb)]
        f = a.create(R, b"f", 0o644, 0, 0)
        b.hold_open(idb, f.inode)
        b.hold_open(idb, f.inode)  # idempotent
        assert a.unlink(R, b"f").nlink == 0
        assert not a.drop_if_orphan(f.inode)
        assert a.purge_orphans() == 0
        assert b.getattr(f.inode).nlink == 0
        b.release_open(idb, f.inode)
        assert a.drop_if_orphan(f.inode)
        with pytest.raises(errors.NotFound):
            b.hold_open(idb, f.inode)
        for conn in locks:
            conn.close()


def test_create_takes_its_hold_in_its_own_transaction(pg_url: str) -> None:
    """create(hold_for=mount) holds the new file with its creation: an unlink on another
    mount, its drop and a purge keep it until the batched release (release_holds), which
    then deletes it as an orphan; a create for a mount whose row is gone raises MountLost
    (the file exists, unheld)."""
    with Namespace.open(pg_url, create=True) as a, Namespace.open(pg_url) as b:
        ida, idb = a.register_mount(info(1)), b.register_mount(info(2))
        locks = [session_lock(pg_url, ida), session_lock(pg_url, idb)]
        f = a.create(R, b"f", 0o644, 0, 0, hold_for=ida)
        a.create(R, b"g", 0o644, 0, 0)
        assert a.holds() == [(ida, f.inode)]
        assert b.unlink(R, b"f").nlink == 0 and b.unlink(R, b"g").nlink == 0
        assert not b.drop_if_orphan(f.inode)
        assert b.purge_orphans() == 1  # g only
        assert a.getattr(f.inode).nlink == 0
        # a drop queued together with the release: the release comes first
        assert a.release_holds(ida, [f.inode], [f.inode]) == [f.inode]
        with pytest.raises(errors.NotFound):
            a.getattr(f.inode)
        assert a.holds() == []
        # a drop of an orphan another mount holds, or of a live file: nothing deleted
        h = a.create(R, b"h", 0o644, 0, 0, hold_for=idb)
        k = a.create(R, b"k", 0o644, 0, 0)
        a.unlink(R, b"h")
        assert a.release_holds(ida, [h.inode], [h.inode, k.inode]) == []
        assert a.holds() == [(idb, h.inode)] and a.getattr(k.inode).nlink == 1
        assert b.release_holds(idb, [h.inode], [h.inode]) == [h.inode]
        b.unregister_mount(idb)
        with pytest.raises(errors.MountLost):
            a.create(R, b"lost", 0o644, 0, 0, hold_for=idb)
        assert a.lookup(R, b"lost").nlink == 1 and a.holds() == []
        for conn in locks:
            conn.close()


def test_batches_of_any_size_are_one_prepared_statement(pg_url: str) -> None:
    """release_holds of batches of different sizes: every hold released and every orphan
    dropped, by statements whose text does not depend on the batch's size (one array
    parameter), so that PostgreSQL prepares each once instead of parsing every batch."""
    with Namespace.open(pg_url, create=True) as ns:
        mount_id = ns.register_mount(info())
        lock = session_lock(pg_url, mount_id)
        inodes = [ns.create(R, b"f%d" % i, 0o644, 0, 0, hold_for=mount_id).inode
                  for i in range(60)]
        for i in range(60):
            ns.unlink(R, b"f%d" % i)
        start = 0
        for size in (1, 2, 3, 5, 8, 13, 28):
            batch = inodes[start:start + size]
            start += size
            assert ns.release_holds(mount_id, batch, batch) == batch
        assert ns.holds() == [] and ns.purge_orphans() == 0
        prepared = ns._db.execute(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'DELETE%'"
            " AND statement NOT LIKE '%dentry%'").fetchall()
        assert len(prepared) == 2, prepared  # the holds' DELETE and the orphans'
        lock.close()


def test_release_holds_drops_orphans_on_sqlite(db_path: Path) -> None:
    """SQLite records no holds: release_holds only drops the orphans it is given."""
    with Namespace.open(db_path, create=True) as ns:
        mount_id = ns.register_mount(info())
        f = ns.create(R, b"f", 0o644, 0, 0, hold_for=mount_id)
        g = ns.create(R, b"g", 0o644, 0, 0)
        assert ns.holds() == []
        ns.unlink(R, b"f")
        assert ns.release_holds(mount_id, [f.inode], [f.inode, g.inode]) == [f.inode]
        assert ns.getattr(g.inode).nlink == 1


def test_dead_by_heartbeat_releases_everything(pg_url: str) -> None:
    """A mount whose heartbeat stopped for mount_timeout is dead even though its session
    lives (a hung or partitioned host); reaping releases its leases and its orphans."""
    with Namespace.open(pg_url, create=True) as a, Namespace.open(pg_url) as b:
        a.set_meta(META_MOUNT_TIMEOUT, "2")
        b._liveness = None
        ida, idb = a.register_mount(info(1)), b.register_mount(info(2))
        locks = [session_lock(pg_url, ida), session_lock(pg_url, idb)]
        f = a.create(R, b"f", 0o644, 0, 0)
        g = a.create(R, b"g", 0o644, 0, 0)
        a.hold_open(ida, f.inode)
        assert a.take_writer(ida, g.inode) is None
        b.unlink(R, b"f")
        a.mount_heartbeat(ida)
        assert b.reap_mounts() == ([], 0)  # not yet (a loaded machine: just refreshed)
        time.sleep(2.2)
        b.mount_heartbeat(idb)
        alive = {m.id: m.alive for m in b.mounts()}
        assert alive == {ida: False, idb: True}
        reaped, purged = b.reap_mounts()
        assert [m.id for m in reaped] == [ida] and purged == 1
        with pytest.raises(errors.NotFound):
            b.getattr(f.inode)
        assert b.writer_of(g.inode) is None
        assert not a.mount_heartbeat(ida)  # it learns it was declared dead
        with pytest.raises(errors.MountLost):
            a.hold_open(ida, g.inode)
        with pytest.raises(errors.MountLost):
            a.take_writer(ida, g.inode)
        for conn in locks:
            conn.close()


def test_dead_by_session_end_soon_after(pg_url: str) -> None:
    """A mount whose database session ended (its process died) is dead after a few missed
    heartbeats, long before mount_timeout; its write lease is taken over."""
    with Namespace.open(pg_url, create=True) as a, Namespace.open(pg_url) as b:
        a.set_meta(META_MOUNT_TIMEOUT, "3")  # heartbeats every 0.3 s, crash after 0.9 s
        b._liveness = None
        ida, idb = a.register_mount(info(1)), b.register_mount(info(2))
        lock_a, lock_b = session_lock(pg_url, ida), session_lock(pg_url, idb)
        f = a.create(R, b"f", 0o644, 0, 0)
        assert a.take_writer(ida, f.inode) is None
        a.mount_heartbeat(ida)  # a loaded machine: the grace starts now
        lock_a.close()  # the process died
        assert b.take_writer(idb, f.inode).id == ida  # within the grace: still alive
        time.sleep(1.0)
        assert {m.id: m.alive for m in b.mounts()} == {ida: False, idb: True}
        assert b.take_writer(idb, f.inode) is None  # taken over, the dead row deleted
        assert [m.id for m in b.mounts()] == [idb]
        lock_b.close()


def test_hold_races_with_drop(pg_url: str) -> None:
    """Of a hold and a drop of the same orphan, one wins: a hold that returned always names
    an inode that still exists."""
    with Namespace.open(pg_url, create=True) as a, Namespace.open(pg_url) as b:
        ida, idb = a.register_mount(info(1)), b.register_mount(info(2))
        locks = [session_lock(pg_url, ida), session_lock(pg_url, idb)]
        for i in range(40):
            f = a.create(R, b"f%d" % i, 0o644, 0, 0)
            a.unlink(R, b"f%d" % i)
            held: list[bool] = []

            def hold(inode: int = f.inode, held: list[bool] = held) -> None:
                try:
                    b.hold_open(idb, inode)
                    held.append(True)
                except errors.NotFound:
                    held.append(False)

            t = threading.Thread(target=hold)
            t.start()
            dropped = a.drop_if_orphan(f.inode)
            t.join()
            assert held[0] != dropped, (i, held, dropped)
            if held[0]:
                assert b.getattr(f.inode).nlink == 0
                b.release_open(idb, f.inode)
                assert a.drop_if_orphan(f.inode)
        for conn in locks:
            conn.close()


def test_changes_are_notified_with_their_sender(pg_url: str) -> None:
    with Namespace.open(pg_url, create=True) as a:
        listener = Listener(pg_url)
        try:
            assert listener.wait(0.01).changes == []
            d = a.mkdir(R, b"d", 0o755, 0, 0)
            f = a.create(d.inode, b"f\xff", 0o644, 0, 0)
            a.setattr(f.inode, mode=0o600)
            a.setattr(f.inode, size=10)
            a.rename(d.inode, b"f\xff", R, b"g")
            got = listener.wait(2.0).changes
            deadline = time.monotonic() + 5
            while len(got) < 6 and time.monotonic() < deadline:
                got += listener.wait(0.2).changes
            assert {c.sender for c in got} == {a.session_id}
            seen = {(c.kind, c.inode, c.name) for c in got}
            assert ("attr", R, None) in seen  # mkdir touched the root
            assert ("attr", d.inode, None) in seen  # create touched d
            assert ("attr", f.inode, None) in seen  # chmod
            assert ("content", f.inode, None) in seen  # truncation: a new version
            assert ("entry", d.inode, b"f\xff") in seen  # renamed away
            # a replaced connection missed what was sent meanwhile: resync
            listener._conn.close()
            a.setattr(f.inode, mode=0o644)
            assert listener.wait(0.01).resync
        finally:
            listener.close()


def test_listener_holds_the_session_lock(pg_url: str) -> None:
    with Namespace.open(pg_url, create=True) as a, Namespace.open(pg_url) as b:
        a.set_meta(META_MOUNT_TIMEOUT, "3")
        b._liveness = None
        ida = a.register_mount(info(1))
        listener = Listener(pg_url)
        listener.lock_mount(ida)
        listener.wait(0.01)
        time.sleep(1.0)  # more than 3 heartbeats of 0.3 s
        assert [m.alive for m in b.mounts()] == [True]
        listener.close()
        deadline = time.monotonic() + 5  # the server ends the session soon after the close
        while b.mounts()[0].alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [m.alive for m in b.mounts()] == [False]


def _make_version_1(spec: str) -> None:
    """What a namespace of schema version 1 looked like: the same, without the mounts."""
    with Namespace.open(spec, create=True) as ns:
        ns.mkdir(R, b"kept", 0o755, 0, 0)
    statements = ["DROP TABLE mount_writer", "DROP TABLE mount_open", "DROP TABLE mount",
                  "UPDATE meta SET value = '1' WHERE key = 'schema_version'"]
    if spec.startswith("postgresql"):
        with psycopg.connect(spec, autocommit=True) as raw:
            raw.execute("DROP TRIGGER inode_changed ON inode")
            raw.execute("DROP TRIGGER dentry_changed ON dentry")
            raw.execute("DROP FUNCTION cloudfs_inode_changed, cloudfs_dentry_changed")
            for s in statements:
                raw.execute(s)
    else:
        raw = sqlite3.connect(spec)
        for s in statements + ["PRAGMA user_version = 1"]:
            raw.execute(s)
        raw.commit()
        raw.close()


def test_version_1_is_upgraded_when_opened(spec: str) -> None:
    _make_version_1(spec)
    with Namespace.open(spec) as ns:
        assert ns.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert ns.lookup(R, b"kept").nlink == 2
        assert ns.register_mount(info()) > 0
        assert ns.check() == []
    with Namespace.open(spec) as ns:  # and only once
        assert ns.check() == []
