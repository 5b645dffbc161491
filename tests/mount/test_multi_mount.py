"""Two mounts (two cloudfs daemons standing for two hosts) of one filesystem whose namespace is
in PostgreSQL, sharing one dev Swift: what one writes the other reads, names changed on one
show on the other within the bound, one writer per file across mounts, racing appends lose no
closed append, and a SIGKILLed mount neither blocks the other nor stays registered."""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MountSession, in_mount_table, write_config
from test_write_back import restart, swift_down, sync

from seqwrite import Layout
from sqlfsn import Namespace

pytestmark = pytest.mark.mount

MOUNT_TIMEOUT = "5"  # seconds: heartbeats every 0.5 s, a crashed mount dead after ~1.5 s
BOUND = 1.0  # documented (docs/SEMANTICS.md): names and attributes show within this
SLACK = 2.0  # for a loaded machine


@pytest.fixture
def mounts(dev_swift, dev_postgres, swift_container, pg_url, tmp_path
           ) -> Iterator[Callable[[int], list[MountSession]]]:
    """start(n): n mounts (daemons, mount points, caches) of one new filesystem on one
    PostgreSQL database; at the end each is unmounted cleanly, its log has no unexpected
    WARNING/ERROR, check() is clean and no registration is left."""
    sessions: list[MountSession] = []

    def start(count: int) -> list[MountSession]:
        for name in "abc"[:count]:
            config = tmp_path / f"{name}.conf"
            mnt = tmp_path / f"mnt-{name}"
            mnt.mkdir()
            write_config(config, auth_url=dev_swift.auth_url, user=dev_swift.user,
                         key=dev_swift.key, container=swift_container, database=pg_url,
                         cache=tmp_path / f"cache-{name}")
            sessions.append(MountSession(mnt, config, pg_url,  # type: ignore[arg-type]
                                         Layout(swift_container, 1), tmp_path / f"{name}.log"))
        subprocess.run([sys.executable, "-m", "cloudfs", "mkfs", "--config",
                        str(sessions[0].config)],
                       check=True, capture_output=True, env={**os.environ, "ST_AUTH": ""})
        with Namespace.open(pg_url) as ns:
            ns.set_meta("mount_timeout", MOUNT_TIMEOUT)
        for s in sessions:
            s.start()
        return sessions

    try:
        yield start
    finally:
        for s in sessions:
            if s.proc is not None:
                assert s.stop() == 0, s.log_text()[-3000:]
            assert not in_mount_table(s.path)
            assert s.unexpected_log_lines() == [], s.log_text()[-3000:]
    with Namespace.open(pg_url) as ns:
        assert ns.check(include_orphans=True) == []
        assert ns.mounts() == []  # clean unmounts unregister


@pytest.fixture
def two_mounts(mounts: Callable[[int], list[MountSession]]
               ) -> tuple[MountSession, MountSession]:
    a, b = mounts(2)
    return a, b


def within(seconds: float, condition: Callable[[], bool]) -> float:
    """Seconds until `condition()` held (polling); fails after `seconds`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.02)
    return time.monotonic() - start


def try_write(path: Path, mode: str, data: bytes) -> int | None:
    """Open, write, close: None if the close returned, else the errno of the refusal: EBUSY
    at the write (another mount is writing; the close then fails too, EIO) or ESTALE at
    the close (another mount committed first)."""
    f = open(path, mode, buffering=0)  # noqa: SIM115
    try:
        f.write(data)
    except OSError as exc:
        assert exc.errno == errno.EBUSY, exc
        with pytest.raises(OSError) as closing:
            f.close()
        assert closing.value.errno == errno.EIO
        return errno.EBUSY
    try:
        f.close()
    except OSError as exc:
        assert exc.errno == errno.ESTALE, exc
        return errno.ESTALE
    return None


def test_file_written_on_a_is_read_on_b(two_mounts: tuple[MountSession, MountSession]) -> None:
    a, b = two_mounts
    data = os.urandom(3_000_000)  # several segments
    (a.path / "f").write_bytes(data)
    assert (b.path / "f").read_bytes() == data
    assert (b.path / "f").stat().st_size == len(data)
    # Overwritten on B while A holds the old version open: a new open on A right after B's
    # close reads the new one exactly (close-to-open), smaller or larger than the old.
    with open(a.path / "f", "rb") as old:
        assert old.read(1000) == data[:1000]
        new = os.urandom(500_000)
        (b.path / "f").write_bytes(new)
        assert (a.path / "f").read_bytes() == new
    (a.path / "f").stat()  # A's kernel caches the small size
    bigger = os.urandom(2_500_000)
    (b.path / "f").write_bytes(bigger)
    assert (a.path / "f").read_bytes() == bigger


def test_page_cache_of_b_never_serves_a_version_its_open_did_not_see(
        two_mounts: tuple[MountSession, MountSession]) -> None:
    """B's page cache is warm with the old bytes; A overwrites the file in place with as many
    other bytes and sets its modification time back to the old one (same size, same mtime:
    nothing the kernel compares to decide that its pages are stale), and closes; a new open
    on B, right away and after B's attributes expired, reads exactly A's new bytes, never a
    cached page of the old version (cloudfs drops the pages at every open, and at another
    mount's content change)."""
    a, b = two_mounts
    size = 2_500_000  # several segments and many pages
    for round_ in range(3):
        old = os.urandom(size)
        (a.path / "f").write_bytes(old)
        before = (a.path / "f").stat()
        assert (b.path / "f").read_bytes() == old  # B's page cache holds every page
        assert (b.path / "f").read_bytes() == old  # (and a second read is served from it)
        new = os.urandom(size)
        with open(a.path / "f", "r+b", buffering=0) as f:  # no O_TRUNC: never smaller
            f.write(new)
        os.utime(a.path / "f", ns=(before.st_atime_ns, before.st_mtime_ns))
        for wait in (0.0, BOUND + 0.2):  # at once, then with B's attributes fetched again
            time.sleep(wait)
            seen = (b.path / "f").stat()
            assert (seen.st_size, seen.st_mtime_ns) == (size, before.st_mtime_ns)
            got = (b.path / "f").read_bytes()
            assert len(got) == size, round_
            stale = sum(got[i:i + 4096] != new[i:i + 4096] for i in range(0, size, 4096))
            assert stale == 0, f"round {round_}, after {wait} s: {stale} pages of B's read " \
                "are not A's new bytes"


def test_names_changed_on_a_show_on_b(two_mounts: tuple[MountSession, MountSession]) -> None:
    a, b = two_mounts
    (a.path / "d").mkdir()
    (a.path / "d" / "f").write_bytes(b"one")
    assert os.listdir(b.path / "d") == ["f"]
    assert (b.path / "d" / "f").stat().st_size == 3  # B's kernel caches the entry now
    os.rename(a.path / "d" / "f", a.path / "d" / "g")
    within(BOUND + SLACK, lambda: not (b.path / "d" / "f").exists())
    assert (b.path / "d" / "g").read_bytes() == b"one"
    (a.path / "d" / "g").write_bytes(b"longer now")
    within(BOUND + SLACK, lambda: (b.path / "d" / "g").stat().st_size == 10)
    os.unlink(a.path / "d" / "g")
    within(BOUND + SLACK, lambda: not (b.path / "d" / "g").exists())
    os.rmdir(a.path / "d")
    within(BOUND + SLACK, lambda: not (b.path / "d").exists())


def test_directory_attributes_after_creates_and_unlinks_agree_across_mounts(
        two_mounts: tuple[MountSession, MountSession]) -> None:
    """A mount answers the getattr of a directory it just changed from what its create or
    unlink returned (cloudfs/knowndir.py): what it shows is the database's, and a change of
    that directory made by the other mount shows within the bound."""
    a, b = two_mounts
    (a.path / "d").mkdir()

    def attrs(path: Path) -> tuple[int, int, int]:
        st = path.stat()
        return st.st_mtime_ns, st.st_ctime_ns, st.st_nlink

    for i in range(5):
        os.close(os.open(a.path / "d" / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
        shown = attrs(a.path / "d")  # right after the create: from the create's own answer
        within(BOUND + SLACK, lambda shown=shown: attrs(b.path / "d") == shown)
        os.close(os.open(b.path / "d" / f"g{i}", os.O_CREAT | os.O_WRONLY, 0o644))
        changed = attrs(b.path / "d")
        assert changed != shown
        within(BOUND + SLACK, lambda changed=changed: attrs(a.path / "d") == changed)
        os.unlink(a.path / "d" / f"f{i}")
        shown = attrs(a.path / "d")
        within(BOUND + SLACK, lambda shown=shown: attrs(b.path / "d") == shown)
        os.mkdir(a.path / "d" / f"s{i}")
        assert (a.path / "d").stat().st_nlink == 3 + i  # a mkdir's nlink + 1 shows at once
    with Namespace.open(str(a.database)) as ns:
        d = ns.lookup(1, b"d")
        assert attrs(a.path / "d") == (d.mtime_ns, d.ctime_ns, d.nlink)


def test_unlinked_on_a_while_open_on_b(two_mounts: tuple[MountSession, MountSession]) -> None:
    a, b = two_mounts
    data = os.urandom(200_000)
    (a.path / "f").write_bytes(data)
    with open(b.path / "f", "rb") as kept:
        os.unlink(a.path / "f")
        time.sleep(0.5)
        assert kept.read() == data  # B's hold keeps the file after A's unlink
    within(BOUND + SLACK, lambda: not (b.path / "f").exists())


def test_file_created_open_on_a_survives_unlink_on_b_and_ccd_cleanup(
        two_mounts: tuple[MountSession, MountSession]) -> None:
    """The hold a create takes in its own transaction (no hold_open after it) keeps a file
    still open on A after B unlinks it, through ccd cleanup; A's batched release at the
    close lets the orphan go (cloudfs/holds.py)."""
    a, b = two_mounts
    data = os.urandom(300_000)
    fd = os.open(a.path / "f", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)  # committed: the content is in Swift and referenced
        inode = os.fstat(fd).st_ino
        with Namespace.open(str(a.database)) as ns:
            assert a.proc is not None
            [mount_a] = [m.id for m in ns.mounts() if m.pid == a.proc.pid]
            assert (mount_a, inode) in ns.holds()
        os.unlink(b.path / "f")
        cleanup = subprocess.run([sys.executable, "-m", "ccd.cli", "--config", str(a.config),
                                  "cleanup"], capture_output=True, text=True, timeout=300)
        assert cleanup.returncode == 0, cleanup.stderr[-3000:]
        with Namespace.open(str(a.database)) as ns:
            assert ns.getattr(inode).nlink == 0  # an orphan, kept by A's hold
        assert os.pread(fd, len(data) + 1, 0) == data
    finally:
        os.close(fd)

    def gone() -> bool:
        with Namespace.open(str(a.database)) as ns:
            return all(i != inode for _, i in ns.holds()) and ns.check(
                include_orphans=True) == []

    within(BOUND + SLACK, gone)


def test_one_writer_across_mounts(two_mounts: tuple[MountSession, MountSession]) -> None:
    a, b = two_mounts
    b.allow(r"write lease")  # nothing expected; the EBUSY is logged at INFO
    (a.path / "f").write_bytes(b"old")
    with open(a.path / "f", "r+b", buffering=0) as writer:
        writer.write(b"AAA")
        with open(b.path / "f", "r+b", buffering=0) as other:
            with pytest.raises(OSError) as caught:
                other.write(b"BBB")
            assert caught.value.errno == errno.EBUSY
            with pytest.raises(OSError):  # sticky: its close says so too
                other.close()
    assert (b.path / "f").read_bytes() == b"AAA"
    with open(b.path / "f", "r+b", buffering=0) as now:  # the lease was released
        now.write(b"B")
    assert (a.path / "f").read_bytes() == b"BAA"


def test_racing_appends_lose_no_closed_append(
        two_mounts: tuple[MountSession, MountSession]) -> None:
    a, b = two_mounts
    (a.path / "log").write_bytes(b"")
    closed: list[bytes] = []
    refused: list[int] = []
    guard = threading.Lock()

    def appender(mnt: Path, tag: str) -> None:
        for i in range(15):
            record = f"{tag}{i:03d};".encode()
            for _attempt in range(200):  # refused while the other mount appends: again
                err = try_write(mnt / "log", "ab", record)
                if err is None:
                    break
                with guard:
                    refused.append(err)
                time.sleep(0.01)
            else:
                continue
            with guard:
                closed.append(record)

    for s in (a, b):
        s.allow(r"ESTALE|newer version|Conflict")
    threads = [threading.Thread(target=appender, args=(s.path, t)) for s, t in
               ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in (a, b):
        content = (s.path / "log").read_bytes()
        for record in closed:
            assert content.count(record) == 1, (record, content)
        assert len(content) == sum(len(r) for r in closed)  # nothing that was refused
    assert len(closed) == 30  # every append went through, some after refusals


def test_sigkill_of_a_does_not_block_b(two_mounts: tuple[MountSession, MountSession],
                                       pg_url: str) -> None:
    a, b = two_mounts
    b.allow(r"taking over")
    (a.path / "f").write_bytes(b"before")
    (a.path / "g").write_bytes(b"held")
    held = open(a.path / "g", "rb")  # noqa: SIM115 - open when A dies
    os.unlink(b.path / "g")  # an orphan that only A holds
    writer = open(a.path / "f", "r+b", buffering=0)  # noqa: SIM115
    writer.write(b"unfinished")  # A holds f's write lease, never closes
    assert a.proc is not None
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    for f in (held, writer):
        try:
            f.close()
        except OSError:
            pass  # ENOTCONN: the daemon is gone
    a.kill()  # waits for auto_unmount
    # B takes over the dead mount's lease: its write succeeds within a few heartbeats (dead
    # once its session lock is gone and its heartbeat 3 beats old, noticed at B's next beat:
    # about 9-12 s; 30 s leaves room for a slow machine).
    def b_writes() -> bool:
        return try_write(b.path / "f", "r+b", b"after!") is None

    within(30.0, b_writes)
    assert (b.path / "f").read_bytes() == b"after!"  # A's unfinished write was not published
    with Namespace.open(pg_url) as ns:
        def only_b() -> bool:
            return [m.pid for m in ns.mounts()] == [b.proc.pid if b.proc else -1]
        within(30.0, only_b)  # reaped by B's heartbeat
        assert not any(e for e in ns.holds() if e[0] != ns.mounts()[0].id)
        assert ns.check(include_orphans=False) == []
        # the orphan A held went with A's registration
        assert ns.check(include_orphans=True) == []


STORM_ERRNOS = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.EBUSY, errno.ESTALE,
                errno.EINVAL, errno.ENOTDIR, errno.EISDIR}


def test_rename_and_rmdir_storm_from_three_mounts_with_ccd(
        mounts: Callable[[int], list[MountSession]]) -> None:
    """Three mounts rename, create, unlink, mkdir and rmdir the same few names at once while
    ccd consolidates and cleans: only the errors a racing local process could get, then
    every mount lists the same tree and check() is clean (the fixture's end)."""
    sessions = mounts(3)
    config = str(sessions[0].config)
    ccd = subprocess.Popen([sys.executable, "-m", "ccd.cli", "--config", config, "run"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    failures: list[str] = []

    def storm(mnt: Path, seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(120):
            d, e = f"d{rnd.randrange(4)}", f"d{rnd.randrange(4)}"
            f, g = f"f{rnd.randrange(4)}", f"f{rnd.randrange(4)}"
            op = rnd.randrange(6)
            try:
                if op == 0:
                    os.mkdir(mnt / d)
                elif op == 1:
                    os.rmdir(mnt / d)
                elif op == 2:
                    os.rename(mnt / d, mnt / e)
                elif op == 3:
                    (mnt / d / f).write_bytes(os.urandom(rnd.randrange(1, 3000)))
                elif op == 4:
                    os.rename(mnt / d / f, mnt / e / g)
                else:
                    os.unlink(mnt / d / f)
            except OSError as exc:
                # the close after a write refused with EBUSY says EIO (sticky)
                cause = exc.__context__ if exc.errno == errno.EIO else exc
                if not isinstance(cause, OSError) or cause.errno not in STORM_ERRNOS:
                    failures.append(f"{mnt.name} op {op}: {exc!r}")

    try:
        threads = [threading.Thread(target=storm, args=(s.path, i))
                   for i, s in enumerate(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cleanup = subprocess.run([sys.executable, "-m", "ccd.cli", "--config", config,
                                  "cleanup"], capture_output=True, text=True, timeout=300)
        assert cleanup.returncode == 0, cleanup.stderr[-3000:]
    finally:
        ccd.terminate()
        _, err = ccd.communicate(timeout=60)
    assert failures == []
    assert "Traceback" not in err, err[-3000:]

    def tree(mnt: Path) -> list[str]:
        return sorted(str(p.relative_to(mnt)) for p in mnt.rglob("*"))

    first = tree(sessions[0].path)
    within(BOUND + SLACK, lambda: all(tree(s.path) == first for s in sessions[1:]))


def test_write_back_conflict_keeps_both_versions(
        two_mounts: tuple[MountSession, MountSession], fault_proxy) -> None:
    """docs/SEMANTICS.md, write-back conflicts, with two real mounts: A (write-back mode)
    closes a version of a file while its upload is held back (every PUT of A refused), B
    commits a newer version meanwhile; once A's upload goes through, the compare-and-swap
    on the version A wrote over fails, and A's closed bytes become
    `name.cloudfs-conflict-<stamp>-<seq>` beside the file, while the file keeps B's
    version: on both mounts, nothing lost."""
    a, b = two_mounts
    a.configure("swift", auth_url=fault_proxy.url)
    restart(a, write_back="true")
    a.allow("changed elsewhere .* is kept as")
    (b.path / "doc").write_bytes(b"the version both start from")
    assert (a.path / "doc").read_bytes() == b"the version both start from"
    swift_down(a, fault_proxy)
    ours, theirs = os.urandom(70_000), os.urandom(50_000)
    (a.path / "doc").write_bytes(ours)  # returns: only in A's journal
    assert (a.path / "doc").read_bytes() == ours
    assert (b.path / "doc").read_bytes() == b"the version both start from"
    (b.path / "doc").write_bytes(theirs)
    fault_proxy.clear_rules()
    sync(a)
    copies = [n for n in os.listdir(b.path) if n != "doc"]
    assert len(copies) == 1 and re.fullmatch(r"doc\.cloudfs-conflict-\d{8}-\d{6}-\d+",
                                             copies[0]), copies
    assert (b.path / "doc").read_bytes() == theirs
    assert (b.path / copies[0]).read_bytes() == ours
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime((b.path / copies[0]).stat().st_mtime))
    assert copies[0].startswith(f"doc.cloudfs-conflict-{stamp}-")  # the closed version's time
    within(BOUND + SLACK, lambda: (a.path / "doc").read_bytes() == theirs)
    assert (a.path / copies[0]).read_bytes() == ours
    said = re.search(r"doc: changed elsewhere \(version (\d+), not (\d+)\).* kept as "
                     r"'([^']+)' beside it", a.log_text())
    assert said and int(said[1]) == int(said[2]) + 1 and said[3] == copies[0], a.log_text()


def cloudfs_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudfs", *args], capture_output=True,
                          text=True, timeout=60)


def test_status_lists_every_mount_and_what_it_holds(
        two_mounts: tuple[MountSession, MountSession]) -> None:
    """`cloudfs status` on one mount lists every mount of the filesystem (host, pid, mount
    point, start, heartbeat, alive) with the files each has open and its write leases, as
    JSON and as a table."""
    import json
    import socket

    from cloudfs.status import render
    from wiring import control

    a, b = two_mounts
    (a.path / "f").write_bytes(b"old")
    (a.path / "g").write_bytes(b"other")
    with open(a.path / "f", "r+b", buffering=0) as writer, open(a.path / "g", "rb"):
        writer.write(b"new")  # A: two files open, one write lease
        # Asked from this process: a forked child would close its copies of the descriptors
        # at exec, and every close commits what was written so far (its lease goes).
        st = control.request(b.path, "status")
        table = render(st)
    proc = cloudfs_cli("status", "--json", str(b.path))  # the command prints the same
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["mounts"]) == 2
    assert "2 mount(s) alive" in cloudfs_cli("status", str(b.path)).stdout
    assert st["namespace"]["mount_timeout"] == float(MOUNT_TIMEOUT)
    by_pid = {m["pid"]: m for m in st["mounts"]}
    assert a.proc is not None and b.proc is not None
    assert set(by_pid) == {a.proc.pid, b.proc.pid}
    ma, mb = by_pid[a.proc.pid], by_pid[b.proc.pid]
    assert (ma["open_files"], ma["write_leases"], ma["this"]) == (2, 1, False)
    assert (mb["open_files"], mb["write_leases"], mb["this"]) == (0, 0, True)
    for m, s in ((ma, a), (mb, b)):
        assert m["alive"] and m["host"] == socket.gethostname()
        assert m["mountpoint"] == str(s.path)
        assert m["heartbeat_age"] < float(MOUNT_TIMEOUT)
        assert time.time() - 300 < m["started"] <= m["heartbeat"] < time.time() + 5
    assert "2 mount(s) alive" in table
    assert f"pid {a.proc.pid} {a.path}: since " in table
    assert "alive; 2 open files, 1 write leases" in table
    assert f"pid {b.proc.pid} {b.path} (this one): since " in table
    assert "mount timeout 5 s (heartbeats every 0.5 s)" in table
    # a mount found dead (and not reaped yet) says so
    st["mounts"][0]["alive"] = False
    assert "DEAD (a live mount or ccd cleanup reaps it)" in render(st)


def test_tune_mount_timeout_reaches_running_mounts(
        two_mounts: tuple[MountSession, MountSession]) -> None:
    """`cloudfs tune --mount-timeout` sets the heartbeat timeout; the running mounts use it
    from their next heartbeat. A bad value or too big a step down while mounts are alive:
    one line, exit status 2, nothing changed."""
    import json

    a, b = two_mounts
    config = str(a.config)

    def timeout_of(s: MountSession) -> float:
        out = cloudfs_cli("status", "--json", str(s.path))
        assert out.returncode == 0, out.stderr
        return float(json.loads(out.stdout)["namespace"]["mount_timeout"])

    shown = cloudfs_cli("tune", "--config", config)
    assert (shown.returncode, shown.stdout) == (0, "mount timeout 5 s (heartbeats every 0.5 s)\n")
    for bad, says in (("0.5s", "must be between 1 s and 86400 s"), ("soon", "not a duration"),
                      ("-3", "not a duration"), ("2d", "not a duration"),
                      ("1", "lower it in steps (at least 1.5 s now")):
        proc = cloudfs_cli("tune", "--config", config, "--mount-timeout", bad)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert proc.stderr.count("\n") == 1 and says in proc.stderr, (bad, proc.stderr)
        assert proc.stderr.startswith("cloudfs tune: --mount-timeout ") and proc.stdout == ""
    proc = cloudfs_cli("tune", "--config", config, "--mount-timeout", "1.5m")
    assert proc.returncode == 0, proc.stderr
    assert "mount timeout 90 s (was 5 s)" in proc.stdout
    for s in (a, b):
        within(5.0, lambda s=s: timeout_of(s) == 90.0)
        assert "mount timeout now 90 s (heartbeats every 9 s)" in s.log_text()
    with Namespace.open(a.database) as ns:
        assert ns.get_meta("mount_timeout") == "90"
    # back down in steps while both mounts are alive: 90 -> 27 refused below 27
    assert cloudfs_cli("tune", "--config", config, "--mount-timeout", "26s").returncode == 2
    assert cloudfs_cli("tune", "--config", config, "--mount-timeout", "27s").returncode == 0
