"""A real FUSE mount on Swift + Keystone over https, configured the way an operator does it:
no secret in the config file, the credentials from the openstack CLI's OS_* variables (or a
systemd credential), the CA from OS_CACERT. Then `ccd once` and `ccd cleanup` with the same
environment. Secrets must appear in no log line, no `cloudfs stats` and no command line."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mountsession import MiB, MountSession, in_mount_table

from devtools import tls
from devtools.swift import DevSwift
from seqwrite import Layout

pytestmark = pytest.mark.mount


@dataclass
class Fs:
    """A filesystem made with `cloudfs mkfs` over Keystone: its config and environment."""

    dir: Path
    config: Path
    env: dict[str, str]
    secrets: tuple[str, ...]
    layout: Layout

    def run(self, *argv: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                             env=env or self.env, timeout=300)
        if check:
            assert out.returncode == 0, out.stderr
        for secret in self.secrets:
            assert secret not in out.stdout + out.stderr
        return out

    def mount(self, name: str, env: dict[str, str] | None = None) -> MountSession:
        mnt = self.dir / name
        mnt.mkdir()
        session = MountSession(mnt, self.config, self.dir / "ns.db", self.layout,
                               self.dir / f"{name}.log", env=env or self.env)
        session.start()
        return session


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ST_"))}


def config_text(dir: Path, container: str, extra: str = "") -> str:
    """The filesystem's settings, and no credential at all."""
    return (f"[swift]\ncontainer = {container}\nretry_deadline = 15\ntimeout = 10\n{extra}"
            f"[cloudfs]\ndatabase = {dir / 'ns.db'}\ncache_dir = {dir / 'cache'}\n"
            "segment_size = 1M\nsmall_file_threshold = 64K\n")


@pytest.fixture(scope="module")
def fs(keystone_swift: DevSwift, tmp_path_factory: pytest.TempPathFactory) -> Fs:
    dir = tmp_path_factory.mktemp("ks-mount")
    container = f"ksfs-{os.urandom(4).hex()}"
    config = dir / "cloudfs.conf"
    config.write_text(config_text(dir, container))
    acct = keystone_swift.keystone
    assert acct is not None
    fs = Fs(dir, config, {**base_env(), **keystone_swift.env("application")},
            (acct.password, acct.application_credential_secret), Layout(container, 1))
    fs.run("cloudfs", "mkfs", "--config", str(config), "--shard-digits", "1")
    return fs


@pytest.fixture
def mounted(fs: Fs) -> Iterator[MountSession]:
    session = fs.mount("mnt")
    try:
        yield session
    finally:
        if session.proc is not None:
            assert session.stop() == 0, session.log_text()[-3000:]
        (fs.dir / "mnt").rmdir()
        assert not in_mount_table(session.path)
        text = session.log_text()
        assert "Traceback" not in text, text[-3000:]
        for secret in fs.secrets:
            assert secret not in text


def test_write_read_rename_append_then_ccd(fs: Fs, mounted: MountSession, keystone_raw):
    mnt = mounted.path
    data = os.urandom(5 * MiB + 123)  # five 1 MiB segments and a bit (Swift's limit: 4 MiB)
    src = fs.dir / "src"
    src.write_bytes(data)
    subprocess.run(["cp", str(src), str(mnt / "big")], check=True)
    assert filecmp.cmp(src, mnt / "big", shallow=False)
    os.rename(mnt / "big", mnt / "renamed")
    with open(mnt / "renamed", "ab") as f:
        f.write(b"appended")
    assert (mnt / "renamed").read_bytes() == data + b"appended"

    # No secret in the counters nor on the daemon's command line (what `ps` shows).
    stats = fs.run("cloudfs", "stats", str(mnt)).stdout
    assert json.loads(stats)["swift_requests"]["AUTH"] >= 1
    assert mounted.proc is not None
    cmdline = Path(f"/proc/{mounted.proc.pid}/cmdline").read_bytes().decode()
    for secret in fs.secrets:
        assert secret not in cmdline

    once = fs.run("ccd.cli", "--config", str(fs.config), "once", "--settle-grace", "0",
                  "--retire-grace", "0")
    assert "files consolidated: 1" in once.stdout or "settled" in once.stdout, once.stdout
    fs.run("ccd.cli", "--config", str(fs.config), "cleanup", "--grace", "0", "--retire-grace",
           "0")
    mounted.remount()
    assert (mnt / "renamed").read_bytes() == data + b"appended"
    listing = keystone_raw.list_container(fs.layout.tmp_container, prefix=".tmp/")
    assert listing == [], "ccd retired and cleaned up every temporary segment"


def test_password_from_a_systemd_credential(fs: Fs, keystone_swift: DevSwift):
    """What the shipped units do: the config names the user and project, the password comes
    from $CREDENTIALS_DIRECTORY/secret (LoadCredential=secret:...)."""
    acct = keystone_swift.keystone
    assert acct is not None and keystone_swift.cacert is not None
    creds = fs.dir / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "secret").write_text(acct.password + "\n")
    (creds / "secret").chmod(0o600)
    config = fs.dir / "unit.conf"
    config.write_text(config_text(fs.dir, fs.layout.base,
                                  f"auth_url = {acct.auth_url}\nuser = {acct.user}\n"
                                  f"project_name = {acct.project}\n"
                                  f"cacert = {keystone_swift.cacert}\n"))
    env = {**base_env(), "CREDENTIALS_DIRECTORY": str(creds)}
    session = MountSession(fs.dir / "mnt", config, fs.dir / "ns.db", fs.layout,
                           fs.dir / "unit.log", env=env)
    (fs.dir / "mnt").mkdir()
    session.start()
    try:
        (session.path / "small").write_bytes(b"via the credential")
        assert (session.path / "small").read_bytes() == b"via the credential"
    finally:
        assert session.stop() == 0
        (fs.dir / "mnt").rmdir()
    assert acct.password not in session.log_text()


def mount_fails(fs: Fs, env: dict[str, str], config: Path | None = None) -> str:
    """`cloudfs mount --foreground` that must fail at start: one line, exit 2."""
    mnt = fs.dir / "refused"
    mnt.mkdir(exist_ok=True)
    out = fs.run("cloudfs", "mount", "--foreground", "--config", str(config or fs.config),
                 str(mnt), env=env, check=False)
    assert out.returncode == 2, out.stderr
    assert not in_mount_table(mnt)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_wrong_secret_unknown_project_and_untrusted_ca_are_one_line(fs: Fs, tmp_path):
    line = mount_fails(fs, {**fs.env, "OS_APPLICATION_CREDENTIAL_SECRET": "wrong"})
    assert "authentication at" in line and "application credential" in line
    password = {k: v for k, v in fs.env.items() if not k.startswith("OS_APPLICATION")}
    acct_env = {**password, "OS_USERNAME": "cloudfs", "OS_PASSWORD": "not-the-password",
                "OS_PROJECT_NAME": "cloudfs"}
    assert "authentication at" in mount_fails(fs, acct_env)
    line = mount_fails(fs, {**acct_env, "OS_PASSWORD": fs.secrets[0],
                            "OS_PROJECT_NAME": "no-such-project"})
    assert "project no-such-project" in line
    other_ca = tls.ensure(tmp_path).ca
    line = mount_fails(fs, {**fs.env, "OS_CACERT": str(other_ca)})
    assert "not trusted" in line and str(other_ca) in line


def test_insecure_mounts_and_warns_at_every_start(fs: Fs):
    config = fs.dir / "insecure.conf"
    config.write_text(config_text(fs.dir, fs.layout.base, "insecure = true\n"))
    env = {k: v for k, v in fs.env.items() if k != "OS_CACERT"}
    line = mount_fails(fs, env)  # without the CA and without insecure: refused
    assert "not trusted" in line
    mnt = fs.dir / "insecure-mnt"
    mnt.mkdir()
    session = MountSession(mnt, config, fs.dir / "ns.db", fs.layout, fs.dir / "insecure.log",
                           env=env)
    for _ in range(2):
        session.start()
        (mnt / "insecure").write_bytes(b"over unverified https")  # it serves, it writes
        assert (mnt / "insecure").read_bytes() == b"over unverified https"
        assert session.stop() == 0
    warnings = [ln for ln in session.log_text().splitlines() if "NOT verified" in ln]
    assert len(warnings) == 2 and " WARNING " in warnings[0], session.log_text()
    assert "InsecureRequestWarning" not in session.log_text()
