"""A real cloudfs mount (a `cloudfs mount --foreground` subprocess) on the session's dev Swift.

Each test gets its own filesystem (fresh container base and database) and mount point. The
daemon talks to Swift through the test's fault proxy, so tests can count Swift requests and
inject outages. Teardown unmounts with fusermount3, waits for the daemon, and asserts it
exited cleanly; a crashed daemon leaves no mount behind (auto_unmount).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mountsession import MiB, MountSession, fusermount_u, in_mount_table  # noqa: F401

from seqwrite import Layout
from sqlfsn import Namespace


def write_config(path: Path, *, auth_url: str, user: str, key: str, container: str,
                 database: Path, cache: Path, **extra: object) -> None:
    settings = {"segment_size": "1M", "small_file_threshold": "64K", "shard_digits": "1",
                "retry_deadline": "10", "timeout": "5", "stop_timeout": "10",
                "cache_size": "1G"}
    settings.update({k: str(v) for k, v in extra.items()})
    swift_keys = {"timeout", "retry_deadline", "max_connections"}
    lines = ["[swift]", f"auth_url = {auth_url}", f"user = {user}", f"key = {key}",
             f"container = {container}"]
    lines += [f"{k} = {v}" for k, v in settings.items() if k in swift_keys]
    lines += ["[cloudfs]", f"database = {database}", f"cache_dir = {cache}"]
    lines += [f"{k} = {v}" for k, v in settings.items() if k not in swift_keys]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


# `@BACKENDS` runs a test using `cloudfs_mount` once per namespace backend.
BACKENDS = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])


@pytest.fixture
def backend() -> str:
    """The namespace backend of `cloudfs_mount`: "sqlite" unless a test is parametrized over
    it (`@BACKENDS`), then also "postgres" (a fresh database on the session's dev PostgreSQL)."""
    return "sqlite"


def new_filesystem(tmp_path: Path, auth_url: str, dev_swift, container: str,
                   database: Path | str) -> MountSession:
    """A fresh filesystem in `tmp_path` (its config, `mkfs`), not mounted yet."""
    config = tmp_path / "cloudfs.conf"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    write_config(config, auth_url=auth_url, user=dev_swift.user, key=dev_swift.key,
                 container=container, database=database, cache=tmp_path / "cache")
    subprocess.run([sys.executable, "-m", "cloudfs", "mkfs", "--config", str(config)],
                   check=True, capture_output=True, env={**os.environ, "ST_AUTH": ""})
    return MountSession(mnt, config, database, Layout(container, 1),  # type: ignore[arg-type]
                        tmp_path / "mount.log")


@pytest.fixture
def cloudfs_mount(request, backend, dev_swift, fault_proxy, swift_container, tmp_path
                  ) -> Iterator[MountSession]:
    """A fresh filesystem, mounted; the daemon reaches Swift through `fault_proxy`. Its
    namespace is an SQLite file, or a PostgreSQL database when `backend` is "postgres"."""
    database: Path = tmp_path / "ns.db"
    if backend == "postgres":
        database = request.getfixturevalue("pg_url")  # dropped after this fixture's teardown
    else:
        assert backend == "sqlite", backend
    session = new_filesystem(tmp_path, fault_proxy.url, dev_swift, swift_container, database)
    mnt = session.path
    session.start()
    try:
        yield session
    finally:
        if session.proc is not None:
            code = session.stop()
            assert code == 0, f"daemon exit code {code}:\n{session.log_text()[-3000:]}"
        if in_mount_table(mnt):
            fusermount_u(mnt, lazy=True)
            pytest.fail("the mount was left behind")
        if not session.expect_errors:
            bad = session.unexpected_log_lines()
            assert not bad, "unexpected lines in the daemon's log:\n" + "\n".join(bad[:20])
        with Namespace.open(database) as ns:
            problems = ns.check()
        assert problems == [], f"the namespace is inconsistent after the test: {problems}"


@pytest.fixture
def pg_mount(dev_swift, dev_postgres, swift_container, pg_url, tmp_path
             ) -> Iterator[MountSession]:
    """A filesystem whose namespace is in PostgreSQL, mounted; at the end: a clean stop, no
    unexpected log line, and the database password in none."""
    session = new_filesystem(tmp_path, dev_swift.auth_url, dev_swift, swift_container, pg_url)
    mnt = session.path
    session.start()
    try:
        yield session
    finally:
        if session.proc is not None:
            assert session.stop() == 0, session.log_text()[-3000:]
        assert not in_mount_table(mnt)
        assert not session.unexpected_log_lines(), session.log_text()[-3000:]
        password = dev_postgres.passfile.read_text().strip().rsplit(":", 1)[1]
        assert password not in session.log_text()
