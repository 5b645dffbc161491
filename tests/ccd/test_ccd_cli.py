"""The `ccd` command line: help, one-line errors with exit 2, once/cleanup end to end, the
daemon's sd_notify and SIGTERM handling, crash injection."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import blake3
import pytest
import trio
from ccdhelpers import SEG, Fs

from devtools.ports import find_free_port_range
from sqlfsn import Namespace, Piece

CCD = [sys.executable, "-m", "ccd.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ST_", "OS_", "NOTIFY_SOCKET", "CCD_"))}
    env.update(extra)
    return env


def ccd(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CCD, *args], capture_output=True, text=True, timeout=120,
                          env=clean_env(**env))


def write_config(path: Path, *, auth_url: str, user: str, key: str, container: str,
                 database: Path, grace: float = 86400, interval: float = 60,
                 retry_deadline: float = 2) -> Path:
    path.write_text(
        f"[swift]\nauth_url = {auth_url}\nuser = {user}\nkey = {key}\ncontainer = {container}\n"
        f"timeout = 5\nretry_deadline = {retry_deadline}\nmax_connections = 4\n"
        f"[cloudfs]\ndatabase = {database}\nshard_digits = 1\n"
        f"[ccd]\ngrace = {grace}\ninterval = {interval}\n")
    path.chmod(0o600)
    return path


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ccd ") and "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("args", [[], ["run"], ["once"], ["cleanup"]])
def test_help(args: list[str]):
    proc = ccd(*args, "--help")
    assert proc.returncode == 0 and proc.stderr == ""
    assert "usage: ccd" in proc.stdout
    if not args:
        for command in ("run", "once", "cleanup"):
            assert command in proc.stdout
    if args == ["cleanup"]:
        assert "--dry-run" in proc.stdout and "--grace" in proc.stdout
    if args in (["run"], ["once"]):
        assert "--settle-grace" in proc.stdout
    if args == ["once"]:
        assert "--dry-run" in proc.stdout


def test_missing_config_is_one_line_exit_2(tmp_path: Path):
    proc = ccd("--config", str(tmp_path / "nope.conf"), "once")
    assert_one_line_error(proc, "nope.conf", "does not exist")


def test_missing_database_is_one_line_exit_2(tmp_path: Path):
    cfg = write_config(tmp_path / "c.conf", auth_url="http://127.0.0.1:9/auth/v1.0",
                       user="u:u", key="sekrit-key", container="c",
                       database=tmp_path / "missing.db")
    proc = ccd("--config", str(cfg), "cleanup")
    assert_one_line_error(proc, "missing.db")
    assert "sekrit-key" not in proc.stderr + proc.stdout


def test_unreachable_swift_is_one_line_exit_2(tmp_path: Path):
    db = tmp_path / "ns.db"
    ns = Namespace.open(db, create=True)
    ns.set_meta("container", "c")
    ns.set_meta("shard_digits", "1")
    ns.close()
    port = find_free_port_range(count=1)
    cfg = write_config(tmp_path / "c.conf", auth_url=f"http://127.0.0.1:{port}/auth/v1.0",
                       user="u:u", key="sekrit-key", container="c", database=db,
                       retry_deadline=0.5)
    for command in ("once", "run", "cleanup"):
        proc = ccd("--config", str(cfg), command)
        assert_one_line_error(proc, "cannot reach Swift", str(port))
        assert "sekrit-key" not in proc.stderr + proc.stdout


@pytest.fixture
def config(fs: Fs, dev_swift, tmp_path: Path) -> Path:
    return write_config(tmp_path / "fs.conf", auth_url=dev_swift.auth_url, user=dev_swift.user,
                        key=dev_swift.key, container=fs.layout.base,
                        database=tmp_path / "ns.db", grace=2, interval=0.5)


async def run_ccd(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process([*CCD, *args], capture_stdout=True, capture_stderr=True,
                                  check=False, env=clean_env(**env))


async def test_once_cleanup_and_crash_injection(fs: Fs, config: Path, dev_swift):
    data = os.urandom(5 * SEG)
    _, content, _ = await fs.write(b"f", data)
    crashed = await run_ccd("--config", str(config), "once", CCD_CRASH_AFTER="rewrite")
    assert crashed.returncode == 70, crashed.stderr
    assert fs.cas_bytes(content.hash) == data
    proc = await run_ccd("--config", str(config), "--log-level", "WARNING", "once",
                         "--retire-grace", "0")
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert "ccd consolidation" in out and "temporary segments deleted: 5" in out
    fs.assert_consolidated([(content, data)])
    assert dev_swift.key.encode() not in proc.stdout + proc.stderr
    dry = await run_ccd("--config", str(config), "cleanup", "--dry-run", "--grace", "3600")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout.decode() and "nothing to do" in dry.stdout.decode()
    quiet = await run_ccd("--config", str(config), "cleanup", "--quiet", "--grace", "3600")
    assert quiet.returncode == 0 and quiet.stdout == b""


async def test_once_settles_with_dry_run_crash_and_cleanup(fs: Fs, config: Path):
    """`ccd once` settles a file of many pieces (after a dry run and a crash injected
    between publishing and committing), consolidates it in the same pass, and `ccd cleanup
    --grace 0` then collects the old pieces."""
    data = os.urandom(4 * SEG + 1)  # settled: above the 1 MiB small-file threshold
    inode, _, _ = await fs.write(b"log", data)
    for i in range(10):
        extra = os.urandom(500 + 300 * i)
        await fs.append(inode, extra)
        data += extra
    old = {p.hash for p in fs.ns.pieces(inode)}
    settled = blake3.blake3(data).hexdigest()
    dry = await run_ccd("--config", str(config), "once", "--settle-grace", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "files to settle into one whole-file content: 1" in dry.stdout.decode()
    assert "files to consolidate: " in dry.stdout.decode()
    assert settled not in fs.cas_names()
    tags = fs.tmp_tags()
    assert tags and all("x-object-meta-retired-at" not in h for h in tags.values())
    young = await run_ccd("--config", str(config), "once", "--settle-grace", "3600")
    assert young.returncode == 0, young.stderr
    assert "unsettled files changed within settle_grace (settled later): 1" in \
        young.stdout.decode()
    crashed = await run_ccd("--config", str(config), "once", "--settle-grace", "0",
                            CCD_CRASH_AFTER="publish")
    assert crashed.returncode == 70, crashed.stderr
    assert len(fs.ns.pieces(inode)) == 11 and fs.file_bytes(inode) == data
    # The crashed pass's lease counts as a write in progress for the grace (2 s here): the
    # settle below dedups against the content it published, whose temporary segments are
    # consolidated once that lease is dead.
    await trio.sleep(2.5)
    proc = await run_ccd("--config", str(config), "once", "--settle-grace", "0",
                         "--retire-grace", "0")
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert "files settled into one whole-file content: 1" in out, out
    assert fs.ns.pieces(inode) == [Piece(settled, 0, len(data))]
    assert fs.cas_bytes(settled) == data
    # Consolidated in the same pass: a plain object, no temporary segment left for it.
    assert "x-static-large-object" not in fs.cas_head(settled)[1]
    assert not [n for n, h in fs.tmp_tags().items()
                if h.get("x-object-meta-bigfile") == settled]
    cleaned = await run_ccd("--config", str(config), "cleanup", "--grace", "0")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not old & fs.cas_names()
    assert fs.cas_bytes(settled) == data and fs.file_bytes(inode) == data
    assert fs.ns.check() == []


@pytest.mark.slow
async def test_run_notifies_systemd_and_stops_on_sigterm(fs: Fs, config: Path, tmp_path: Path):
    data = os.urandom(5 * SEG)
    _, content, _ = await fs.write(b"f", data)
    sock_path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    proc = subprocess.Popen([*CCD, "--config", str(config), "run", "--retire-grace", "0"],
                            env=clean_env(NOTIFY_SOCKET=str(sock_path)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        messages = [sock.recv(4096).decode()]
        assert messages[0] == "READY=1"
        while not messages[-1].startswith("STATUS=last pass"):
            messages.append(sock.recv(4096).decode())
        assert "files consolidated: 1" in messages[-1], messages
        proc.send_signal(signal.SIGTERM)
        while messages[-1] != "STOPPING=1":
            messages.append(sock.recv(4096).decode())
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
        sock.close()
    assert "Traceback" not in err.decode()
    assert "SIGTERM: stopping" in err.decode()
    fs.assert_consolidated([(content, data)])
