"""A real cloudfs mount (a `cloudfs mount --foreground` subprocess) on the session's dev Swift.

Each test gets its own filesystem (fresh container base and database) and mount point. The
daemon talks to Swift through the test's fault proxy, so tests can count Swift requests and
inject outages. Teardown unmounts with fusermount3, waits for the daemon, and asserts it
exited cleanly; a crashed daemon leaves no mount behind (auto_unmount).
"""

from __future__ import annotations

import configparser
import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from seqwrite import Layout
from sqlfsn import Namespace

MiB = 1 << 20
# A log line at WARNING or above (after its time stamp), or a traceback.
LOUD = re.compile(r"^(\S+ )?(WARNING|ERROR|CRITICAL) |^Traceback")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the daemon child: SIGTERM (a clean unmount) if the test process dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def in_mount_table(path: Path) -> bool:
    """Whether `path` is mounted, per /proc/mounts (os.path.ismount says False for a dead
    FUSE mount, whose stat fails with ENOTCONN)."""
    target = os.fsencode(os.path.abspath(path))
    with open("/proc/mounts", "rb") as f:
        return any(line.split()[1] == target for line in f)


def fusermount_u(path: Path, lazy: bool = False) -> None:
    subprocess.run(["fusermount3", "-u", *(["-z"] if lazy else []), str(path)],
                   capture_output=True, check=False)


@dataclass
class MountSession:
    """One filesystem and its mount. `start()`/`stop()` may be repeated (remount)."""

    path: Path
    config: Path
    database: Path
    layout: Layout
    log: Path
    proc: subprocess.Popen | None = None
    expect_errors: bool = False  # anything may be logged (tests of failures)
    allowed: list[str] = field(default_factory=list)  # regexes of expected WARNING/ERROR lines
    exits: list[int] = field(default_factory=list)

    def allow(self, *patterns: str) -> None:
        """Lines at WARNING or above matching one of `patterns` are expected in the log."""
        self.allowed.extend(patterns)

    def unexpected_log_lines(self) -> list[str]:
        """WARNING/ERROR/CRITICAL lines and tracebacks not allowed by the test."""
        bad = []
        for line in self.log_text().splitlines():
            if LOUD.match(line) and not any(re.search(p, line) for p in self.allowed):
                bad.append(line)
        return bad

    def start(self, timeout: float = 30.0, *, options: tuple[str, ...] = ()) -> None:
        """Start the daemon; `options` go before the subcommand (e.g. --log-level DEBUG)."""
        cmd = [sys.executable, "-m", "cloudfs", *options, "mount", "--foreground", "--config",
               str(self.config), str(self.path)]
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        logf.close()
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.path):
            if self.proc.poll() is not None:
                pytest.fail(f"mount daemon exited with {self.proc.returncode}:\n"
                            f"{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"mount not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 60.0) -> int:
        """Unmount the way a user does (fusermount3 -u) and wait for the daemon."""
        assert self.proc is not None
        fusermount_u(self.path)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"daemon did not exit after unmount:\n{self.log.read_text()[-3000:]}")
        self.proc = None
        self.exits.append(code)
        return code

    def kill(self) -> None:
        """SIGKILL the daemon (a crash); auto_unmount removes the mount."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        deadline = time.monotonic() + 10
        while in_mount_table(self.path) and time.monotonic() < deadline:
            time.sleep(0.05)  # auto_unmount removes it once every open file is closed
        if in_mount_table(self.path):
            fusermount_u(self.path, lazy=True)

    def remount(self) -> None:
        assert self.stop() == 0
        self.start()

    def configure(self, section: str, **settings: object) -> None:
        """Change settings of the config file (they apply at the next start)."""
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(self.config)
        if not parser.has_section(section):
            parser.add_section(section)
        for key, value in settings.items():
            parser[section][key] = str(value)
        with open(self.config, "w") as f:
            parser.write(f)

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the daemon to exit by itself (after a signal); its exit code."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"daemon still running after {timeout}s:\n{self.log_text()[-3000:]}")
        self.proc = None
        self.exits.append(code)
        return code

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


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


@pytest.fixture
def cloudfs_mount(dev_swift, fault_proxy, swift_container, tmp_path) -> Iterator[MountSession]:
    """A fresh filesystem, mounted; the daemon reaches Swift through `fault_proxy`."""
    config = tmp_path / "cloudfs.conf"
    database = tmp_path / "ns.db"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    write_config(config, auth_url=fault_proxy.url, user=dev_swift.user, key=dev_swift.key,
                 container=swift_container, database=database, cache=tmp_path / "cache")
    subprocess.run([sys.executable, "-m", "cloudfs", "mkfs", "--config", str(config)],
                   check=True, capture_output=True, env={**os.environ, "ST_AUTH": ""})
    session = MountSession(mnt, config, database, Layout(swift_container, 1),
                           tmp_path / "mount.log")
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
