"""Concurrent hosts on one PostgreSQL namespace: the races the transactions must win.

Each race test forces the dangerous interleaving instead of hoping for it: a *blocker*
connection holds a row lock that every contender needs only after it has made its decision
(its checks are plain reads, which row locks never block). The contenders start, run up to
that row and wait; once every one still running waits on a lock, the blocker lets go. Without
sqlfsn's rename lock, row locks or SERIALIZABLE transactions, every contender would have
decided on the same stale state and all of them would commit (a directory cycle, a child in a
removed directory, two commits from one version, a claim on a condemned object); with them,
exactly one wins and the others see its result. The storm test then runs three processes of
random operations on one tree and requires ``check()`` to stay clean.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from sqlfsn import ROOT_INODE, Claim, Namespace, Piece, errors

R = ROOT_INODE
GRACE = 10**9
WAIT_S = 20.0


def H(i: int) -> str:
    return f"{i:064x}"


@pytest.fixture
def open_ns(pg_url: str) -> Iterator[Callable[[], Namespace]]:
    """Opens connections ("hosts") to one fresh namespace; closes them all at the end."""
    opened: list[Namespace] = []

    def open_one() -> Namespace:
        ns = Namespace.open(pg_url, create=True)
        opened.append(ns)
        return ns

    yield open_one
    for ns in opened:
        ns.close()


def lock_waiters(monitor: psycopg.Connection[Any], exclude: set[int]) -> int:
    """Backends of this database waiting for a lock (the blocker and monitor excluded)."""
    row = monitor.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND NOT pid = ANY(%s)",
        (list(exclude),),
    ).fetchone()
    assert row is not None
    return int(row[0])


def race(url: str, block: str, params: tuple[Any, ...],
         contenders: list[Callable[[], Any]]) -> list[tuple[str, Any]]:
    """Run ``contenders`` (each with its own connection) in threads while a blocker holds the
    locks of ``block`` (a SELECT ... FOR UPDATE); release it once every running contender
    waits for a lock. Returns each contender's ("ok", value) or ("error", class name)."""
    outcomes: list[tuple[str, Any]] = [("unfinished", None)] * len(contenders)

    def run(i: int) -> None:
        try:
            outcomes[i] = ("ok", contenders[i]())
        except errors.NamespaceError as exc:
            outcomes[i] = ("error", type(exc).__name__)

    with psycopg.connect(url) as blocker, psycopg.connect(url, autocommit=True) as monitor:
        locked = blocker.execute(block, params).fetchall()
        assert locked, "the blocker must hold at least one row"
        exclude = {blocker.info.backend_pid, monitor.info.backend_pid}
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(contenders))]
        for t in threads:
            t.start()
            time.sleep(0.05)  # in this order, so that the first one usually leads
        deadline = time.monotonic() + WAIT_S
        while lock_waiters(monitor, exclude) < sum(t.is_alive() for t in threads):
            assert time.monotonic() < deadline, "contenders neither wait nor finish"
            time.sleep(0.01)
        blocker.rollback()
    for t in threads:
        t.join(WAIT_S)
        assert not t.is_alive()
    return outcomes


def test_renames_of_two_directories_into_each_other(pg_url: str, open_ns) -> None:
    """x/a -> b/c/a and y/b -> a/d/b at once: without the rename lock both subtree checks pass
    (no row is locked by both: their parents are x, c and y, d) and a and b form a cycle
    detached from the root."""
    ns = open_ns()
    hosts = [open_ns(), open_ns()]
    x, y = ns.mkdir(R, b"x", 0o755, 0, 0).inode, ns.mkdir(R, b"y", 0o755, 0, 0).inode
    a, b = ns.mkdir(x, b"a", 0o755, 0, 0).inode, ns.mkdir(y, b"b", 0o755, 0, 0).inode
    c, d = ns.mkdir(b, b"c", 0o755, 0, 0).inode, ns.mkdir(a, b"d", 0o755, 0, 0).inode
    outcomes = race(
        pg_url,
        "SELECT id FROM dentry WHERE inode IN (%s, %s) FOR UPDATE",  # the entries they move
        (a, b),
        [lambda: hosts[0].rename(x, b"a", c, b"a"), lambda: hosts[1].rename(y, b"b", d, b"b")],
    )
    assert sorted(outcomes) == [("error", "InvalidMove"), ("ok", None)], outcomes
    assert ns.check() == []


def test_create_in_a_directory_being_removed(pg_url: str, open_ns) -> None:
    """rmdir of d and a create in d at once: without the directory's row lock rmdir finds d
    empty, the create finds d alive, and a file ends up in a removed directory."""
    ns = open_ns()
    hosts = [open_ns(), open_ns()]
    d = ns.mkdir(R, b"d", 0o755, 0, 0).inode
    outcomes = race(
        pg_url,
        "SELECT id FROM dentry WHERE inode = %s FOR UPDATE",  # d's entry: rmdir deletes it
        (d,),
        [lambda: hosts[0].rmdir(R, b"d"), lambda: hosts[1].create(d, b"f", 0o644, 0, 0)],
    )
    assert outcomes[0] in (("ok", outcomes[0][1]), ("error", "NotEmpty")), outcomes
    assert outcomes[1][0] == "ok" or outcomes[1] == ("error", "NotFound"), outcomes
    assert (outcomes[0][0] == "ok") != (outcomes[1][0] == "ok"), outcomes
    assert ns.check() == []


def test_link_races_the_unlink_of_the_last_name(pg_url: str, open_ns) -> None:
    """link(f) into d and the unlink of f's only name at once: without the locks the link
    tests nlink 1, the unlink makes it 0, and the link then names an orphan (which the mount
    may be dropping: the kernel forgot it). The link must see the unlink, or the unlink the
    link."""
    ns = open_ns()
    hosts = [open_ns(), open_ns()]
    f = ns.create(R, b"f", 0o644, 0, 0).inode
    d = ns.mkdir(R, b"d", 0o755, 0, 0).inode
    outcomes = race(
        pg_url,
        "SELECT id FROM inode WHERE id = %s FOR UPDATE",  # d: the link's new parent
        (d,),
        [lambda: hosts[0].link(f, d, b"g").nlink, lambda: hosts[1].unlink(R, b"f").nlink],
    )
    assert outcomes in ([("error", "NotFound"), ("ok", 0)], [("ok", 2), ("ok", 1)]), outcomes
    assert ns.check() == []


def test_two_compare_and_swap_commits_from_one_version(
    pg_url: str, open_ns, caplog: pytest.LogCaptureFixture
) -> None:
    """Two writers commit on version 1 at once: exactly one wins; the other's transaction
    fails to serialize, is run again inside sqlfsn, and then gets Conflict."""
    caplog.set_level(logging.DEBUG, logger="sqlfsn.core")
    ns = open_ns()
    hosts = [open_ns(), open_ns()]
    f = ns.create(R, b"f", 0o644, 0, 0).inode
    for i in (1, 2, 3):
        assert ns.claim_content(H(i), 10).ok
    assert ns.set_content(f, [Piece(H(1), 0, 10)], 10).version == 1
    outcomes = race(
        pg_url,
        "SELECT id FROM inode WHERE id = %s FOR UPDATE",
        (f,),
        [lambda: hosts[0].set_content(f, [Piece(H(2), 0, 10)], 10, expect_version=1).version,
         lambda: hosts[1].set_content(f, [Piece(H(3), 0, 10)], 10, expect_version=1).version],
    )
    assert sorted(outcomes) == [("error", "Conflict"), ("ok", 2)], outcomes
    winner = H(2) if outcomes[0] == ("ok", 2) else H(3)
    assert ns.pieces(f) == [Piece(winner, 0, 10)]
    assert any("run again" in r.getMessage() for r in caplog.records)  # retried, not raised
    assert ns.check() == []


def test_claim_races_condemn(pg_url: str, open_ns) -> None:
    """A writer claims (dedups onto) H while the collector condemns it: without serializable
    transactions both decide on "live, claimed long ago" and both succeed, so the collector
    deletes an object the writer relies on. Exactly one must win."""
    ns = open_ns()
    writer, collector = open_ns(), open_ns()
    assert ns.claim_content(H(1), 10, [(H(11), 4), (H(12), 6)]).ok
    threshold = time.time_ns() + GRACE  # the claim above is older than the grace period
    outcomes = race(
        pg_url,
        "SELECT hash FROM content WHERE hash = %s FOR UPDATE",
        (H(1),),
        [lambda: collector.condemn(H(1), claimed_before_ns=threshold),
         lambda: writer.claim_content(H(1), 10, [(H(11), 4), (H(12), 6)])],
    )
    condemned, claim = outcomes[0][1], outcomes[1][1]
    assert outcomes[0][0] == outcomes[1][0] == "ok", outcomes
    assert isinstance(claim, Claim)
    assert condemned != claim.ok, outcomes  # one of the two, never both
    state = ns.content_info(H(1))
    assert state is not None and state.state == ("deleting" if condemned else "live")
    assert ns.check() == []


def test_set_content_races_condemn(pg_url: str, open_ns) -> None:
    """A writer commits a file using H while the collector condemns H: without serializable
    transactions the collector finds no piece naming H and the writer finds H live, and the
    file ends up naming content being deleted."""
    ns = open_ns()
    writer, collector = open_ns(), open_ns()
    f = ns.create(R, b"f", 0o644, 0, 0).inode
    assert ns.claim_content(H(1), 10).ok
    threshold = time.time_ns() + GRACE
    outcomes = race(
        pg_url,
        "SELECT hash FROM content WHERE hash = %s FOR UPDATE",
        (H(1),),
        [lambda: collector.condemn(H(1), claimed_before_ns=threshold),
         lambda: writer.set_content(f, [Piece(H(1), 0, 10)], 10).version],
    )
    assert outcomes in ([("ok", True), ("error", "InvalidArgument")],
                         [("ok", False), ("ok", 1)]), outcomes
    assert ns.check() == []


def test_rename_lock_is_taken_only_between_directories(pg_url: str, open_ns) -> None:
    """A rename within one directory does not wait for a rename between two others."""
    ns = open_ns()
    host = open_ns()
    x = ns.mkdir(R, b"x", 0o755, 0, 0).inode
    ns.create(x, b"f", 0o644, 0, 0)
    with psycopg.connect(pg_url) as holder:  # holds the rename lock, as a slow mover would
        from sqlfsn.postgres import RENAME_LOCK_KEY

        holder.execute("SELECT pg_advisory_xact_lock(%s)", (RENAME_LOCK_KEY,))
        started = time.monotonic()
        host.rename(x, b"f", x, b"g")
        assert time.monotonic() - started < 1.0
        done = threading.Event()
        mover = threading.Thread(target=lambda: (host.rename(x, b"g", R, b"g"), done.set()))
        mover.start()
        assert not done.wait(0.5)  # between directories: waits for the lock
        holder.rollback()
        mover.join(WAIT_S)
    assert done.is_set()
    assert ns.lookup(R, b"g").nlink == 1
    assert ns.check() == []


# -- three processes of random operations -------------------------------------------------

NAMES = [b"a", b"b", b"c"]
STORM_OPS = 150


def storm(url: str, seed: int, ops: int, queue: Any) -> None:
    """One "host": random creates, removals and renames among a few directories."""
    rng = random.Random(seed)
    refused: dict[str, int] = {}
    with Namespace.open(url) as ns:
        for _ in range(ops):
            dirs = [R] + [e.attr.inode for p in (R,) for e in ns.readdir(p)
                          if e.attr.mode & 0o040000]
            for d in list(dirs[1:]):
                try:
                    dirs += [e.attr.inode for e in ns.readdir(d) if e.attr.mode & 0o040000]
                except errors.NotFound:
                    pass
            p, q = rng.choice(dirs), rng.choice(dirs)
            name, other = rng.choice(NAMES), rng.choice(NAMES)
            op = rng.choice(["mkdir", "create", "rmdir", "unlink", "rename", "rename", "link"])
            try:
                if op == "mkdir":
                    ns.mkdir(p, name, 0o755, 0, 0)
                elif op == "create":
                    ns.create(p, name, 0o644, 0, 0)
                elif op == "rmdir":
                    ns.rmdir(p, name)
                elif op == "unlink":
                    ns.unlink(p, name)
                elif op == "rename":
                    ns.rename(p, name, q, other)
                else:
                    ns.link(ns.lookup(p, name).inode, q, other)
            except errors.Unavailable:
                raise
            except errors.NamespaceError as exc:
                refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
    queue.put(refused)


@pytest.mark.slow
def test_three_processes_rename_and_rmdir_storm(pg_url: str) -> None:
    with Namespace.open(pg_url, create=True) as ns:
        for name in NAMES:
            d = ns.mkdir(R, name, 0o755, 0, 0)
            ns.mkdir(d.inode, name, 0o755, 0, 0)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=storm, args=(pg_url, seed, STORM_OPS, queue)) for seed in (1, 2, 3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    refused = [queue.get(timeout=5) for _ in procs]
    assert all(sum(r.values()) < STORM_OPS for r in refused), refused  # most operations ran
    with Namespace.open(pg_url) as ns:
        assert ns.check() == []
