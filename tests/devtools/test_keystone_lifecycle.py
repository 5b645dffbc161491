"""The dev Swift with Keystone (`dev-swift start DIR --auth keystone [--tls]`): evaluable OS_*
lines, status with Keystone, restarts on another port that keep the data and the credentials
(the endpoints follow the port), stop that stops Keystone too, busy ports refused."""

from __future__ import annotations

import shlex
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from swiftraw import SwiftRaw
from test_swift_lifecycle import processes_mentioning, swift_dir  # noqa: F401 - a fixture

from devtools import keystone
from devtools import swift as devswift
from devtools.errors import UsageError
from devtools.swift import DevSwift

CLI = [sys.executable, "-m", "cloudfs", "dev-swift"]


def raw_client(dev: DevSwift) -> SwiftRaw:
    """The oracle client with a Keystone token (password), https checked against the CA."""
    assert dev.keystone is not None
    ctx = ssl.create_default_context(cafile=dev.cacert) if dev.cacert else None
    raw = SwiftRaw(dev.auth_url, dev.user, dev.key, context=ctx)
    raw.token, path = keystone.token(dev.keystone, dev.port, ctx)
    raw.storage_url = f"{'https' if dev.cacert else 'http'}://127.0.0.1:{dev.port}{path}"
    return raw


def evaluated(output: str) -> dict[str, str]:
    """What a shell has after `eval` of the start command's output."""
    out = subprocess.run(["bash", "-c", f"{output}\nenv -0"], capture_output=True, check=True)
    pairs = (item.split(b"=", 1) for item in out.stdout.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs if k.startswith((b"OS_", b"ST_"))}


@pytest.mark.slow
@pytest.mark.swift
def test_keystone_tls_start_restart_stop(swift_dir: Path) -> None:  # noqa: F811
    port = devswift.find_free_port_range("keystone")
    out = subprocess.run([*CLI, "start", str(swift_dir), "--auth", "keystone", "--tls",
                          "--port", str(port)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    env = evaluated(out.stdout)
    assert env["OS_AUTH_URL"] == f"https://127.0.0.1:{port + 5}/v3"
    assert env["OS_CACERT"] == str(swift_dir / "tls" / "ca.pem")
    assert env["OS_APPLICATION_CREDENTIAL_ID"] and env["OS_APPLICATION_CREDENTIAL_SECRET"]
    assert "ST_AUTH" not in env and "OS_PASSWORD" not in env
    # With the password instead (the running instance: same lines otherwise, exit 0).
    again = subprocess.run([*CLI, "start", str(swift_dir), "--os-credential", "password"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    pw_env = evaluated(again.stdout)
    assert pw_env["OS_USERNAME"] == "cloudfs" and pw_env["OS_PROJECT_NAME"] == "cloudfs"
    assert "OS_APPLICATION_CREDENTIAL_ID" not in pw_env

    status = subprocess.run([*CLI, "status", str(swift_dir)], capture_output=True, text=True)
    assert status.returncode == 0 and "(keystone, https): running" in status.stdout
    assert f"keystone  port {port + 5}" in status.stdout
    dev = devswift.running(swift_dir)
    assert dev is not None and dev.keystone is not None
    raw = raw_client(dev)
    assert raw.put_container("keep") == 201
    assert raw.put_object("keep", "o", b"survives restarts")[0] == 201
    # Plain http to the https proxy is refused: it really serves TLS only.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthcheck HTTP/1.0\r\n\r\n")
        assert not s.recv(100).startswith(b"HTTP/1.")

    # Options left out keep DIR's settings; other settings are refused while it runs.
    same = subprocess.run([*CLI, "start", str(swift_dir), "--port", str(port)],
                          capture_output=True, text=True, timeout=60)
    assert same.returncode == 0 and evaluated(same.stdout) == env, same.stderr
    for flag in ("--auth=tempauth", "--no-tls"):
        other = subprocess.run([*CLI, "start", str(swift_dir), flag], capture_output=True,
                               text=True, timeout=60)
        assert other.returncode == 2 and "already runs with other settings" in other.stderr

    assert subprocess.run([*CLI, "stop", str(swift_dir)]).returncode == 0
    assert processes_mentioning(swift_dir) == []

    # Another port: Keystone's endpoints follow, the data and the credentials stay.
    port2 = devswift.find_free_port_range("keystone")
    dev2 = devswift.start(swift_dir, port2, auth="keystone", tls_on=True, die_with_parent=True)
    assert dev2.keystone is not None
    assert dev2.keystone.application_credential_id == env["OS_APPLICATION_CREDENTIAL_ID"]
    raw2 = raw_client(dev2)
    assert raw2.storage_url == raw.storage_url.replace(str(port), str(port2))
    assert raw2.get_object("keep", "o")[::2] == (200, b"survives restarts")
    devswift.stop(swift_dir)
    assert processes_mentioning(swift_dir) == []
    st = devswift.status(swift_dir)
    assert not st["running"] and "keystone" in st["servers"]


@pytest.mark.slow
@pytest.mark.swift
async def test_tempauth_over_https(swift_dir: Path) -> None:  # noqa: F811
    """--tls without Keystone: tempauth over https, every path of the store verified."""
    from seqwrite import SwiftAuth, SwiftStore, Tls

    dev = devswift.start(swift_dir, devswift.find_free_port_range(), tls_on=True,
                         die_with_parent=True)
    assert dev.auth_url.startswith("https://") and dev.env()["OS_CACERT"] == dev.cacert
    assert dev.cacert is not None
    store = SwiftStore(SwiftAuth(dev.auth_url, dev.user, dev.key, tls=Tls(dev.cacert)),
                       timeout=10)
    await store.open()
    await store.put_container("c")
    etag = await store.put_stream("c", "o", [b"over ", memoryview(b"https")])
    assert etag and await store.get("c", "o") == b"over https"
    assert await store.open_read("c", "o", 5, 10).read(5) == b"https"
    await store.aclose()
    devswift.stop(swift_dir)


def test_busy_keystone_port_is_refused_and_nothing_starts(tmp_path: Path) -> None:
    port = devswift.find_free_port_range("keystone")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port + 5))
        busy.listen()
        with pytest.raises(UsageError, match=f"port {port + 5} .*Keystone.*in use") as err:
            devswift.start(tmp_path, port, auth="keystone")
    assert f"ports {port}-{port + 5} must be free" in str(err.value)
    assert processes_mentioning(tmp_path) == []
    assert not list((tmp_path / "run").glob("*.pid"))


def test_settings_that_need_keystone_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="token_expiration needs Keystone"):
        devswift.start(tmp_path, devswift.find_free_port_range(), token_expiration=30)
    out = subprocess.run([*CLI, "start", str(tmp_path), "--auth", "ldap"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_the_lines_quote_what_needs_quoting() -> None:
    acct = keystone.KeystoneAccount("https://h/v3", "p", "u", "pw", "id", "a'b c", "/ca dir/ca")
    env = evaluated("\n".join(f"export {k}={shlex.quote(v)}" for k, v in acct.env().items()))
    assert env["OS_APPLICATION_CREDENTIAL_SECRET"] == "a'b c"
    assert env["OS_CACERT"] == "/ca dir/ca"
