"""A real cloudfs mount (a `cloudfs mount --foreground` subprocess) that tests start, stop,
remount and kill: used by the mount tests (tests/mount) and the Keystone tests."""

from __future__ import annotations

import configparser
import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from seqwrite import Layout

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
    env: dict[str, str] | None = None  # the daemon's environment (default: ours)
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

    def start(self, timeout: float = 30.0, *, options: tuple[str, ...] = (),
              mount_options: tuple[str, ...] = ()) -> None:
        """Start the daemon; `options` go before the subcommand (e.g. --log-level DEBUG),
        `mount_options` after it (e.g. -o write_back)."""
        cmd = [sys.executable, "-m", "cloudfs", *options, "mount", "--foreground", "--config",
               str(self.config), *mount_options, str(self.path)]
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent, env=self.env)
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
