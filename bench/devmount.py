"""A throwaway cloudfs for benchmarks: its own dev Swift, a fresh filesystem, a real mount.

    with dev_mount("mbench") as m:   # m.work, m.mnt, m.env, m.daemon, m.config
        ...
Everything is unmounted and stopped on exit, also on errors, and the work directory (with the
dev Swift's data) is deleted unless BENCH_KEEP is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools import swift as devswift  # noqa: E402


def wait_mounted(mnt: Path, daemon: subprocess.Popen, log: Path) -> None:
    """Until `mnt` is mounted; if the daemon exits first, exit with its log."""
    while not os.path.ismount(mnt):
        if daemon.poll() is not None:
            raise SystemExit(log.read_text())
        time.sleep(0.05)


@dataclass
class DevMount:
    work: Path
    mnt: Path
    config: Path
    env: dict[str, str]
    daemon: subprocess.Popen


@contextmanager
def dev_mount(name: str) -> Iterator[DevMount]:
    work = Path(tempfile.mkdtemp(prefix=f"cloudfs-{name}-"))
    swift = devswift.start(work / "swift", devswift.find_free_port_range(), die_with_parent=True)
    mnt = work / "mnt"
    mnt.mkdir()
    daemon = None
    try:
        env = swift.env()
        conf = work / "cloudfs.conf"
        conf.write_text(f"[swift]\nauth_url = {env['ST_AUTH']}\nuser = {env['ST_USER']}\n"
                        f"key = {env['ST_KEY']}\ncontainer = {name}\n[cloudfs]\n"
                        f"database = {work / 'ns.db'}\ncache_dir = {work / 'cache'}\n")
        conf.chmod(0o600)
        cli = [sys.executable, "-m", "cloudfs"]
        subprocess.run([*cli, "mkfs", "--config", str(conf)], check=True, capture_output=True)
        daemon = subprocess.Popen([*cli, "mount", "--foreground", "--config", str(conf),
                                   str(mnt)], stderr=open(work / "mount.log", "wb"))  # noqa: SIM115
        wait_mounted(mnt, daemon, work / "mount.log")
        yield DevMount(work, mnt, conf, env, daemon)
    finally:
        if daemon is not None:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
            try:
                daemon.wait(120)
            except subprocess.TimeoutExpired:
                daemon.kill()
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        devswift.stop(work / "swift")
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {work} (BENCH_KEEP)", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)  # its Swift data: GBs per run
