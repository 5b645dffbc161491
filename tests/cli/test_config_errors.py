"""Every command, with each required setting missing or malformed: one line naming it, exit 2.

The commands run as the user runs them (subprocesses of the real command lines) against a
config that is valid but for the one setting under test, so the error each prints is that
setting's. Nothing here needs Swift: every error is found before Swift is contacted.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sqlfsn import Namespace

CLOUDFS = [sys.executable, "-m", "cloudfs"]
CCD = [sys.executable, "-m", "ccd.cli"]
REQUIRED = ("database", "auth_url", "user", "key")

VALID = {
    "swift": {"auth_url": "http://127.0.0.1:9/auth/v1.0", "user": "a:b", "key": "sekrit-key",
              "container": "c", "timeout": "5", "retry_deadline": "1"},
    "cloudfs": {"database": "", "cache_dir": "", "shard_digits": "1"},
    "ccd": {"grace": "86400"},
}

# (section, key, bad value, words the one line must contain)
MALFORMED = [
    ("swift", "timeout", "soon", ["timeout", "soon"]),
    ("swift", "timeout", "0", ["timeout", "range"]),
    ("swift", "max_connections", "-3", ["max_connections"]),
    ("swift", "retry_deadline", "nan", ["retry_deadline"]),
    ("cloudfs", "segment_size", "0", ["segment_size"]),
    ("cloudfs", "cache_size", "ten gigs", ["cache_size", "not a size"]),
    ("cloudfs", "verify_md5", "maybe", ["verify_md5"]),
    ("cloudfs", "shard_digits", "9", ["shard_digits"]),
    ("cloudfs", "stop_timeout", "-1", ["stop_timeout"]),
    ("cloudfs", "log_level", "LOUD", ["log_level"]),
    ("cloudfs", "colour", "blue", ["unknown setting", "colour"]),
    ("wardrobe", "colour", "blue", ["unknown section", "wardrobe"]),
    ("ccd", "grace", "-5", ["grace"]),
]


def commands(tmp: Path, config: Path) -> dict[str, list[str]]:
    """Each command as a user types it, with `config`."""
    mnt = tmp / "mnt"
    mnt.mkdir(exist_ok=True)
    cfg = ["--config", str(config)]
    return {
        "cloudfs mkfs": [*CLOUDFS, "mkfs", *cfg],
        "cloudfs mount": [*CLOUDFS, "mount", str(mnt), *cfg],
        "cloudfs mount --foreground": [*CLOUDFS, "mount", "--foreground", str(mnt), *cfg],
        "ccd once": [*CCD, *cfg, "once"],
        "ccd run": [*CCD, *cfg, "run"],
        "ccd cleanup": [*CCD, *cfg, "cleanup"],
        "ccd replay": [*CCD, *cfg, "replay"],
    }


def write(path: Path, settings: dict[str, dict[str, str]]) -> Path:
    lines = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}" for k, v in values.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def base(tmp_path: Path) -> dict[str, dict[str, str]]:
    """A valid config whose namespace exists (so only the setting under test can fail)."""
    db = tmp_path / "ns.db"
    with Namespace.open(db, create=True) as ns:
        ns.set_meta("container", "c")
        ns.set_meta("shard_digits", "1")
    settings = {section: dict(values) for section, values in VALID.items()}
    settings["cloudfs"]["database"] = str(db)
    settings["cloudfs"]["cache_dir"] = str(tmp_path / "cache")
    return settings


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ST_", "OS_"))}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def run_all(cmds: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every command, run at the same time (they are independent: most of each is start-up)."""
    with concurrent.futures.ThreadPoolExecutor(len(cmds)) as pool:
        futures = {name: pool.submit(run, cmd) for name, cmd in cmds.items()}
        return {name: future.result() for name, future in futures.items()}


def assert_one_line(proc: subprocess.CompletedProcess[str], name: str, words: list[str]
                    ) -> None:
    assert proc.returncode == 2, (name, proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, (name, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    prog = " ".join(name.split()[:2])
    assert lines[0].startswith(f"{prog}:"), (name, lines[0])
    for word in words:
        assert word in lines[0], (name, word, lines[0])
    assert "sekrit-key" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("missing", REQUIRED)
def test_missing_required_setting(tmp_path, base, missing):
    """Each required setting missing: every command prints one line naming it, exit 2."""
    for section in base.values():
        section.pop(missing, None)
    config = write(tmp_path / "c.conf", base)
    for name, proc in run_all(commands(tmp_path, config)).items():
        assert_one_line(proc, name, [missing])


@pytest.mark.parametrize(("section", "key", "value", "words"), MALFORMED,
                         ids=[f"{k}={v}" for _, k, v, _ in MALFORMED])
def test_malformed_setting(tmp_path, base, section, key, value, words):
    """Each malformed setting: every command prints one line naming it, exit 2."""
    base.setdefault(section, {})[key] = value
    config = write(tmp_path / "c.conf", base)
    for name, proc in run_all(commands(tmp_path, config)).items():
        assert_one_line(proc, name, words)


def test_missing_config_file(tmp_path):
    """A config file that does not exist: one line naming it, exit 2."""
    for name, proc in run_all(commands(tmp_path, tmp_path / "nowhere.conf")).items():
        assert_one_line(proc, name, ["nowhere.conf"])


def test_unreadable_config_file(tmp_path, base):
    """A config file that cannot be read (here: a directory): one line naming it, exit 2."""
    for name, proc in run_all(commands(tmp_path, tmp_path)).items():
        assert_one_line(proc, name, [str(tmp_path)])
