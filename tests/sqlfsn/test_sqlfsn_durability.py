"""Lazy commits and durable barriers (Core.lazily, Core.sync, Core.log_syncer): what the
mount's durability model (docs/SEMANTICS.md, "Durability") rests on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sqlfsn import ROOT_INODE, Namespace

if TYPE_CHECKING:
    from conftest import FakeClock


def test_lazy_commits_are_counted_and_a_sync_covers_them(ns: Namespace) -> None:
    ns.mkdir(ROOT_INODE, b"durable", 0o755, 0, 0)
    assert (ns.commits, ns.lazy_commits, ns.synced) == (1, 0, 1)  # a durable commit
    with ns.lazily():
        ns.mkdir(ROOT_INODE, b"a", 0o755, 0, 0)
        ns.create(ROOT_INODE, b"f", 0o644, 0, 0)
        ns.getattr(ROOT_INODE)  # reads are no commits
    assert (ns.commits, ns.lazy_commits, ns.synced) == (3, 2, 1)
    with ns.lazily():
        ns.sync()  # a barrier inside lazily() is still a barrier
    assert ns.synced >= 3 and ns.syncs == 1
    with ns.lazily():
        ns.mkdir(ROOT_INODE, b"b", 0o755, 0, 0)
    assert ns.synced < ns.commits
    ns.mkdir(ROOT_INODE, b"c", 0o755, 0, 0)  # a durable commit syncs everything before it
    assert ns.synced == ns.commits
    syncs = ns.syncs
    ns.sync()  # nothing unsynced: no barrier
    assert ns.syncs == syncs


def test_sqlite_log_syncer_syncs_the_wal_file(file_ns: Namespace, db_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    with file_ns.lazily():
        file_ns.mkdir(ROOT_INODE, b"a", 0o755, 0, 0)
    syncer = file_ns.log_syncer()
    assert syncer is not None
    monkeypatch.setattr(os, "fdatasync", spy)
    upto = file_ns.commits
    syncer()
    file_ns.note_synced(upto)
    assert synced == [str(db_path) + "-wal"]
    assert file_ns.synced == file_ns.commits


_KILLED = textwrap.dedent("""
    import sys, time
    from sqlfsn import ROOT_INODE, Namespace
    ns = Namespace.open(sys.argv[1])
    with ns.lazily():
        ns.mkdir(ROOT_INODE, b"lazy", 0o755, 0, 0)
        ns.create(ROOT_INODE, b"file", 0o644, 0, 0)
    print("committed", flush=True)
    time.sleep(600)
""")


def test_sigkill_loses_no_lazy_commit(spec: str, clock: FakeClock) -> None:
    """A lazy commit is only at risk from an OS crash or power failure: the process's death
    loses nothing it committed (SQLite: the commit is in the WAL file; PostgreSQL: in the
    server)."""
    Namespace.open(spec, create=True, clock=clock).close()
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, spec], stdout=subprocess.PIPE,
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"committed\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    ns = Namespace.open(spec, clock=clock)
    try:
        assert ns.lookup(ROOT_INODE, b"lazy").inode
        assert ns.lookup(ROOT_INODE, b"file").inode
    finally:
        ns.close()
