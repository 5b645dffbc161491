"""The systemd units and the cron line: `systemd-analyze verify` must accept every unit
without a single complaint, and the cron line must run the same command as the timer."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNITS = ("cloudfs@.service", "ccd@.service", "ccd-cleanup@.service", "ccd-cleanup@.timer")
BINARIES = ("/usr/local/bin/cloudfs", "/usr/local/bin/ccd")


def verify(tmp_path: Path, edit: tuple[str, str] | None = None) -> subprocess.CompletedProcess:
    """Verify instantiated copies (templates need an instance name) whose ExecStart binaries
    point at a stub that exists (verify checks that they are executable)."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: scripts/install installs the systemd package")
    stub = tmp_path / "bin-stub"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    names = []
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text()
        for binary in BINARIES:
            text = text.replace(binary, str(stub))
        if edit is not None and unit == "ccd@.service":
            assert edit[0] in text
            text = text.replace(*edit)
        name = unit.replace("@.", "@test.")
        (units / name).write_text(text)
        names.append(str(units / name))
    return subprocess.run(["systemd-analyze", "verify", *names], capture_output=True,
                          text=True, timeout=60, cwd=units)


def test_units_verify_cleanly(tmp_path: Path):
    proc = verify(tmp_path)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


@pytest.mark.parametrize("edit", [("Type=notify", "Typo=notify"),
                                  ("Type=notify", "Type=notifyy")])
def test_a_broken_unit_fails_verification(tmp_path: Path, edit: tuple[str, str]):
    """The check above would notice a broken unit (verify only warns on unknown keys)."""
    proc = verify(tmp_path, edit)
    assert proc.returncode != 0 or proc.stderr.strip() != ""


def test_units_say_what_the_brief_requires():
    mount = (SYSTEMD / "cloudfs@.service").read_text()
    for line in ("Type=notify", "NotifyAccess=main", "KillMode=mixed",
                 "ExecStartPre=-/usr/bin/fusermount3 -u -z /mnt/cloudfs/%i",
                 "ExecStart=/usr/local/bin/cloudfs mount --foreground --config "
                 "/etc/cloudfs/%i.conf /mnt/cloudfs/%i"):
        assert line in mount.splitlines()
    assert "ExecStop=" not in mount
    daemon = (SYSTEMD / "ccd@.service").read_text()
    assert "ExecStart=/usr/local/bin/ccd --config /etc/cloudfs/%i.conf run" in daemon
    assert "Type=notify" in daemon
    timer = (SYSTEMD / "ccd-cleanup@.timer").read_text()
    assert "Persistent=true" in timer and "RandomizedDelaySec=" in timer


def test_units_take_the_secret_from_a_systemd_credential():
    """The secret comes from LoadCredential (read as $CREDENTIALS_DIRECTORY/secret), the
    OS_*/ST_* variables from an optional environment file; no unit holds a secret."""
    for unit in ("cloudfs@.service", "ccd@.service", "ccd-cleanup@.service"):
        lines = (SYSTEMD / unit).read_text().splitlines()
        assert "LoadCredential=secret:/etc/cloudfs/%i.secret" in lines, unit
        assert "EnvironmentFile=-/etc/cloudfs/%i.env" in lines, unit
        assert not any(re.match(r"Environment=.*(KEY|PASSWORD|SECRET)", ln) for ln in lines)


def test_cron_line_runs_the_cleanup():
    text = (SYSTEMD / "cloudfs.cron").read_text()
    jobs = [line for line in text.splitlines() if line and not line.startswith("#")
            and "=" not in line.split()[0]]
    assert len(jobs) == 1
    fields = jobs[0].split()
    assert re.fullmatch(r"\d+", fields[0]) and re.fullmatch(r"\d+", fields[1])
    assert fields[2:5] == ["*", "*", "*"] and fields[5] == "root"
    assert fields[6:] == ["ccd", "--config", "/etc/cloudfs/main.conf", "cleanup", "--quiet"]
