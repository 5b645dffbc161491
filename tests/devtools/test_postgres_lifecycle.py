"""The dev PostgreSQL launcher: the CLI, data kept across restarts, busy ports, pid files,
nothing left running, and a server that dies with the process that started it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from test_swift_lifecycle import processes_mentioning, wait_no_processes

from devtools import postgres as devpostgres

CLI = [sys.executable, "-m", "cloudfs.cli"]


@pytest.fixture
def pg_dir() -> Iterator[Path]:
    """A directory for a test's own dev PostgreSQL (under /tmp: the `postgres` user must
    reach it), stopped and removed whatever happens."""
    dir = Path(tempfile.mkdtemp(prefix="cloudfs-pgtest-"))
    dir.chmod(0o755)
    try:
        yield dir
    finally:
        devpostgres.remove(dir)
        assert wait_no_processes(dir) == []


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_start_status_stop_keeps_data(pg_dir: Path) -> None:
    port = devpostgres.find_free_port()
    started = cli("dev-postgres", "start", pg_dir, "--port", port)
    assert started.returncode == 0, started.stderr
    line = started.stdout.strip()
    url = line.removeprefix("database = ")
    assert line.startswith("database = postgresql://cloudfs@127.0.0.1:") and f":{port}/" in url
    password = (pg_dir / "etc" / "pgpass").read_text().strip().rsplit(":", 1)[1]
    assert password not in line and oct((pg_dir / "etc" / "pgpass").stat().st_mode)[-3:] == "600"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    assert cli("dev-postgres", "start", pg_dir).stdout.strip() == line  # already running
    other = cli("dev-postgres", "start", pg_dir, "--port", port + 1)
    assert other.returncode == 2 and "other settings" in other.stderr
    status = cli("dev-postgres", "status", pg_dir)
    assert status.returncode == 0 and f"port {port}" in status.stdout
    pid = devpostgres.status(pg_dir)["pid"]
    assert pid in processes_mentioning(pg_dir)
    assert cli("dev-postgres", "stop", pg_dir).returncode == 0
    assert wait_no_processes(pg_dir) == []
    assert not (pg_dir / "run" / "postgres.pid").exists()
    assert cli("dev-postgres", "status", pg_dir).returncode == 3
    assert cli("dev-postgres", "stop", pg_dir).returncode == 0  # idempotent
    again = cli("dev-postgres", "start", pg_dir)  # the last port by default
    assert again.returncode == 0 and again.stdout.strip() == line, again.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]


def test_busy_port_is_refused(pg_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        result = cli("dev-postgres", "start", pg_dir, "--port", busy)
    assert result.returncode == 2
    assert f"port {busy} is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert processes_mentioning(pg_dir) == []


@pytest.mark.slow
def test_server_dies_with_the_process_that_started_it(pg_dir: Path) -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from devtools import postgres
            dev = postgres.start({str(pg_dir)!r}, postgres.find_free_port(), fast=True,
                                 die_with_parent=True)
            print(dev.port, flush=True)
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )
    assert starter.stdout is not None
    assert starter.stdout.readline().strip().isdigit()
    pid = devpostgres.status(pg_dir)["pid"]
    assert pid is not None and devpostgres.status(pg_dir)["running"]
    os.kill(starter.pid, signal.SIGKILL)
    starter.wait()
    assert wait_no_processes(pg_dir, timeout=20) == []
