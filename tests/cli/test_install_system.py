"""`scripts/install-system` leaves a system where the shipped units work: installed into a
root of the test's own, the units verify against the installed paths (`systemd-analyze
verify`, in a private mount namespace where that root's /usr/local/bin and /opt are the
system's), the commands run, and mount(8) finds the mount helper."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = ("cloudfs@.service", "ccd@.service", "ccd-cleanup@.service", "ccd-cleanup@.timer")


@pytest.mark.slow
def test_installed_units_verify_against_installed_paths(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = subprocess.run([str(REPO / "scripts" / "install-system"), "--root", str(root)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    units = root / "etc" / "systemd" / "system"
    assert {p.name for p in units.iterdir()} == set(UNITS)
    docs = root / "usr" / "local" / "share" / "doc" / "cloudfs"
    for unit in UNITS:
        for line in (units / unit).read_text().splitlines():
            if line.startswith("Documentation=file://"):
                assert (root / line.removeprefix("Documentation=file:///")).exists(), line
    assert (docs / "OPERATIONS.md").exists()
    assert (root / "usr/sbin/mount.fuse.cloudfs").readlink() == Path("/usr/local/bin/cloudfs")
    assert oct((root / "etc/cloudfs").stat().st_mode & 0o777) == "0o700"
    # Instances of the templates, verified with the installed binaries in place.
    check = tmp_path / "check"
    check.mkdir()
    names = []
    for unit in UNITS:
        name = unit.replace("@.", "@main.")
        (check / name).write_text((units / unit).read_text())
        names.append(str(check / name))
    script = (f"mount --bind {root}/usr/local/bin /usr/local/bin && "
              f"mount --bind {root}/opt /opt && "
              f"systemd-analyze verify {' '.join(names)} && "
              "/usr/local/bin/cloudfs --help >/dev/null && /usr/local/bin/ccd --help >/dev/null")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=120, cwd=check)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
