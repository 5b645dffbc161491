"""Tokens that expire while a mount writes: a Keystone whose tokens live 20 s, a write through
a real mount that takes ~30 s (a multi-segment file written slowly), then a read after the
token it started with has expired. Every request must carry a token that is still valid: the
store renews tokens before they expire (keystoneauth renews one that expires within 2 min, so
here every request gets a fresh token) and a 401 would be replayed with a new one."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from devservices import start_dev_swift
from mountsession import MiB, MountSession

from devtools import keystone, process
from devtools import swift as devswift
from devtools.swift import DevSwift
from seqwrite import Layout

pytestmark = [pytest.mark.mount, pytest.mark.slow]
LIFETIME = 20  # seconds


@pytest.fixture(scope="module")
def short_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevSwift]:
    dir = tmp_path_factory.mktemp("short-tokens")
    dev = start_dev_swift(dir, auth="keystone", tls_on=True, token_expiration=LIFETIME,
                          die_with_parent=True)
    try:
        yield dev
    finally:
        devswift.stop(dir)


def mounted(short_tokens: DevSwift, tmp_path: Path, container: str, *, retry_deadline: int,
            timeout: int) -> tuple[MountSession, dict[str, str], Path]:
    """A new filesystem in `container` over the short-token Keystone, mounted (not started):
    the session, the environment with its application credential, the config file."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ST_"))},
           **short_tokens.env("application")}
    config = tmp_path / "c.conf"
    config.write_text(f"[swift]\ncontainer = {container}\nretry_deadline = {retry_deadline}\n"
                      f"timeout = {timeout}\n"
                      f"[cloudfs]\ndatabase = {tmp_path / 'ns.db'}\n"
                      f"cache_dir = {tmp_path / 'cache'}\nsegment_size = 1M\n")
    subprocess.run([sys.executable, "-m", "cloudfs", "mkfs", "--config", str(config),
                    "--shard-digits", "0"], check=True, capture_output=True, env=env)
    (tmp_path / "mnt").mkdir()
    session = MountSession(tmp_path / "mnt", config, tmp_path / "ns.db", Layout(container, 0),
                           tmp_path / "mount.log", env=env)
    return session, env, config


def test_a_slow_multi_segment_write_outlives_its_token(short_tokens: DevSwift, tmp_path):
    session, env, _ = mounted(short_tokens, tmp_path, "expiry", retry_deadline=90, timeout=30)
    session.start()
    try:
        data = os.urandom(5 * MiB)
        started = time.monotonic()
        with open(session.path / "slow", "wb") as f:
            for i in range(5):
                f.write(data[i * MiB:(i + 1) * MiB])
                time.sleep(6.5)  # five segments over ~33 s: longer than a token lives
        assert time.monotonic() - started > LIFETIME + 5
        time.sleep(LIFETIME / 2)
        assert (session.path / "slow").read_bytes() == data
        stats = json.loads(subprocess.run(
            [sys.executable, "-m", "cloudfs", "stats", str(session.path)], check=True,
            capture_output=True, text=True, env=env).stdout)
        assert stats["swift_requests"]["AUTH"] >= 3, stats  # new tokens before expiry
    finally:
        assert session.stop() == 0, session.log_text()[-3000:]
    assert "Traceback" not in session.log_text()


def test_keystone_down_then_back(short_tokens: DevSwift, tmp_path):
    """Keystone stops while a mount runs: with tokens this short every request needs a new
    one, so a write fails, after the retry deadline, with EIO (no hang, no traceback); ccd
    started meanwhile refuses in one line; once Keystone is back, the same mount writes
    again."""
    session, env, config = mounted(short_tokens, tmp_path, "down", retry_deadline=20,
                                   timeout=15)
    session.expect_errors = True
    session.start()
    try:
        time.sleep(LIFETIME + 1)  # the token of the start has expired
        pid = process.read_pid(short_tokens.dir, keystone.NAME)
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        while process.is_running(pid, short_tokens.dir):
            time.sleep(0.1)
        data = os.urandom(2 * MiB)
        started = time.monotonic()
        with pytest.raises(OSError) as err, open(session.path / "during", "wb") as f:
            f.write(data)
        assert err.value.errno == errno.EIO
        assert time.monotonic() - started < 120

        # ccd (which runs beside the mount) starting meanwhile: one line, exit status 2.
        out = subprocess.run([sys.executable, "-m", "ccd.cli", "--config", str(config), "once"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "Connection refused" in out.stderr

        again = devswift.start(short_tokens.dir, short_tokens.port, auth="keystone",
                               tls_on=True, token_expiration=LIFETIME, die_with_parent=True)
        assert again.keystone == short_tokens.keystone
        (session.path / "after").write_bytes(data)
        assert (session.path / "after").read_bytes() == data
    finally:
        assert session.stop() == 0, session.log_text()[-3000:]
    assert "Traceback" not in session.log_text()
