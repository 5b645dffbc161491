"""Tokens that expire while a mount writes: a Keystone whose tokens live 20 s, a write through
a real mount that takes ~30 s (a multi-segment file written slowly), then a read after the
token it started with has expired. Every request must carry a token that is still valid: the
store renews tokens before they expire (keystoneauth renews one that expires within 2 min, so
here every request gets a fresh token) and a 401 would be replayed with a new one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from devservices import start_dev_swift
from mountsession import MiB, MountSession

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


def test_a_slow_multi_segment_write_outlives_its_token(short_tokens: DevSwift, tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ST_"))},
           **short_tokens.env("application")}
    config = tmp_path / "c.conf"
    config.write_text(f"[swift]\ncontainer = expiry\nretry_deadline = 30\ntimeout = 10\n"
                      f"[cloudfs]\ndatabase = {tmp_path / 'ns.db'}\n"
                      f"cache_dir = {tmp_path / 'cache'}\nsegment_size = 1M\n")
    subprocess.run([sys.executable, "-m", "cloudfs", "mkfs", "--config", str(config),
                    "--shard-digits", "0"], check=True, capture_output=True, env=env)
    (tmp_path / "mnt").mkdir()
    session = MountSession(tmp_path / "mnt", config, tmp_path / "ns.db", Layout("expiry", 0),
                           tmp_path / "mount.log", env=env)
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
        stats = json.loads(os.getxattr(session.path, "user.cloudfs.stats"))
        assert stats["swift_requests"]["AUTH"] >= 3, stats  # new tokens before expiry
    finally:
        assert session.stop() == 0, session.log_text()[-3000:]
    assert "Traceback" not in session.log_text()
