"""Two mounts of a PostgreSQL namespace while the PostgreSQL server restarts under them
(docs/OPERATIONS.md, "When the database goes away"): what needs the database fails with EIO
at once (nothing hangs), a write in progress across the restart is closed and published, the
mounts recover without a restart (still registered, hearing each other's changes), and
nothing closed before is lost."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MountSession
from test_multi_mount import BOUND, SLACK, mounts, two_mounts, within  # noqa: F401

from devtools import postgres as devpostgres
from devtools.postgres import DevPostgres
from sqlfsn import Namespace

pytestmark = pytest.mark.mount

#: What a mount logs while its database is down (each a line at WARNING or ERROR).
OUTAGE_LINES = r"database unavailable|heartbeat failed|not hearing other mounts' changes"


def restart(dev: DevPostgres) -> None:
    devpostgres.start(dev.dir, dev.port, fast=True, die_with_parent=True)


#: A writer in a process of its own, driven line by line: `w FILE` writes FILE's bytes, `c`
#: closes; each answers "ok" or the errno. (A descriptor of the test process would be closed
#: in every child it forks, pg_ctl's included, and each close commits: docs/SEMANTICS.md.)
WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    try:
        if cmd == "w":
            os.write(fd, open(arg, "rb").read())
        else:
            os.close(fd)
        print("ok", flush=True)
    except OSError as exc:
        print(exc.errno, flush=True)
"""


class Writer:
    def __init__(self, path: Path, scratch: Path) -> None:
        self.scratch = scratch
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def write(self, data: bytes) -> str:
        self.scratch.write_bytes(data)
        return self.ask(f"w {self.scratch}")

    def close(self) -> str:
        answer = self.ask("c")
        self.proc.communicate(timeout=30)
        return answer


@pytest.mark.parametrize("down_s", [1.0, 4.0])
def test_mounts_ride_out_a_postgres_restart(two_mounts: tuple[MountSession, MountSession],  # noqa: F811
                                            dev_postgres: DevPostgres, pg_url: str,
                                            tmp_path: Path, down_s: float) -> None:
    """PostgreSQL stops for `down_s` (plus the time pg_ctl takes: longer than the crash
    window of 1.5 s of the tests' 5 s mount timeout either way) while A writes a file and
    both mounts are otherwise idle."""
    a, b = two_mounts
    for s in (a, b):
        s.allow(OUTAGE_LINES)
    kept = os.urandom(300_000)
    (a.path / "kept").write_bytes(kept)
    chunks = [os.urandom(700_000) for _ in range(3)]
    writer = Writer(a.path / "w", tmp_path / "chunk")
    try:
        assert writer.write(chunks[0]) == "ok"  # A's write session and lease exist now
        devpostgres.stop(dev_postgres.dir)
        try:
            started = time.monotonic()
            with pytest.raises(OSError) as caught:
                os.stat(b.path / "never-looked-up")  # the kernel has to ask: the database
            assert caught.value.errno == errno.EIO
            with pytest.raises(OSError) as caught:
                (a.path / "new").write_bytes(b"x")
            assert caught.value.errno == errno.EIO
            assert time.monotonic() - started < 10  # no hang
            assert writer.write(chunks[1]) == "ok"  # streamed to Swift: no database needed
            time.sleep(max(0.0, down_s - (time.monotonic() - started)))
        finally:
            restart(dev_postgres)
        assert writer.write(chunks[2]) == "ok"
    finally:
        closed = writer.close()  # the commit, on a new connection
    assert closed == "ok"
    data = b"".join(chunks)
    within(BOUND + SLACK, lambda: (b.path / "w").stat().st_size == len(data))
    assert (b.path / "w").read_bytes() == data
    assert (b.path / "kept").read_bytes() == kept
    # both mounts recovered: registered and alive, hearing each other, new files work
    time.sleep(3 * 0.5)  # a few heartbeats: they reap again now
    (b.path / "after").write_bytes(b"after")
    assert (a.path / "after").read_bytes() == b"after"
    with Namespace.open(pg_url) as ns:
        alive = {m.pid for m in ns.mounts() if m.alive}
    assert a.proc is not None and b.proc is not None
    assert alive == {a.proc.pid, b.proc.pid}
    for s in (a, b):
        assert "declared dead" not in s.log_text()
        assert "released the holds" not in s.log_text()
