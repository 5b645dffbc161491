"""A real Keystone v3 beside the dev Swift (`cloudfs dev-swift start DIR --auth keystone`).

This module owns what the dev Swift needs to authenticate with Keystone instead of tempauth:
the service venv holding Swift, Keystone and keystonemiddleware (a venv of its own, so the
tempauth venv that other checkouts use is never touched), Keystone's configuration and
provisioning state in DIR, its command line, its readiness check, the proxy's `authtoken` +
`keystoneauth` filters, and the OS_* variables a client needs. devtools/swift.py runs the
process with the Swift servers (same pid files, logs, stop); devtools/runners/keystone_runner.py
sets Keystone up and serves it inside the venv.

Layout added to DIR:
    etc/keystone.conf, etc/keystone.json (mode 600: passwords, ids, port, TLS files)
    keystone/  keystone.db (SQLite), fernet-keys/, credential-keys/
    log/keystone.log (the process's output), log/keystone-server.log (Keystone's own log)
    tls/       ca.pem, server.pem, server.key (with --tls; devtools/tls.py)

Facts this relies on (measured here, see the project's keystone notes): Keystone 30 has no
WSGI console script (the runner serves `initialize_public_application()` with werkzeug); it is
ready ~4-5 s after the process starts (~9 s on the first start, with set-up); auth_token needs
`interface = public` and `cache = swift.cache` (python-memcached is not installed); the first
concurrent policy-checked requests to a fresh Keystone can fail (an enforcer set-up race), so
readiness includes one token request and one policy-checked request.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import ssl
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools import process

NAME = "keystone"
OFFSET = 5  # Keystone listens on the proxy port + 5
KEYSTONE_VERSION = "30.0.0"
MIDDLEWARE_VERSION = "13.0.1"
REGION = "RegionOne"
PROJECT = "cloudfs"
USER = "cloudfs"
RUNNER = Path(__file__).parent / "runners" / "keystone_runner.py"
CREDENTIAL_KINDS = ("application", "password")


@dataclass(frozen=True)
class KeystoneAccount:
    """What a client of the dev Keystone needs (the OS_* variables)."""

    auth_url: str
    project: str
    user: str
    password: str
    application_credential_id: str
    application_credential_secret: str
    cacert: str | None

    def env(self, credential: str = "application") -> dict[str, str]:
        """The openstack CLI's variables: with the application credential (default) or the
        user's password."""
        env = {"OS_AUTH_URL": self.auth_url, "OS_IDENTITY_API_VERSION": "3",
               "OS_REGION_NAME": REGION, "OS_INTERFACE": "public"}
        if credential == "application":
            env |= {"OS_AUTH_TYPE": "v3applicationcredential",
                    "OS_APPLICATION_CREDENTIAL_ID": self.application_credential_id,
                    "OS_APPLICATION_CREDENTIAL_SECRET": self.application_credential_secret}
        else:
            env |= {"OS_AUTH_TYPE": "password", "OS_USERNAME": self.user,
                    "OS_PASSWORD": self.password, "OS_PROJECT_NAME": self.project,
                    "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default"}
        if self.cacert:
            env["OS_CACERT"] = self.cacert
        return env


# ------------------------------------------------------------------------------ venv


def service_venv() -> Path:
    """$CLOUDFS_KEYSTONE_VENV or ~/.cache/cloudfs/swift-venv-ks30: Swift, Keystone and
    keystonemiddleware together (the tempauth venv, swift-venv, is left as it is)."""
    if env := os.environ.get("CLOUDFS_KEYSTONE_VENV"):
        return Path(env).expanduser().absolute()
    return Path.home() / ".cache" / "cloudfs" / "swift-venv-ks30"


def ensure_venv(swift_version: str) -> Path:
    """The service venv's python, creating the venv first if needed (under a file lock)."""
    venv = service_venv()
    python = venv / "bin" / "python"
    stamp = venv / f".cloudfs-swift-{swift_version}-keystone-{KEYSTONE_VERSION}"
    if stamp.exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with process.locked(venv.parent / f"{venv.name}.lock"):
        if stamp.exists():
            return python
        print(f"creating the Keystone + Swift venv (first use, ~1 min): {venv}",
              file=sys.stderr, flush=True)
        if venv.exists():
            process.run([sys.executable, "-c",
                         "import shutil, sys; shutil.rmtree(sys.argv[1])", venv])
        process.run([sys.executable, "-m", "venv", venv])
        process.run([python, "-m", "pip", "install", "-q", f"swift=={swift_version}",
                     f"keystone=={KEYSTONE_VERSION}",
                     f"keystonemiddleware=={MIDDLEWARE_VERSION}"])
        stamp.touch()
    return python


# ------------------------------------------------------------------------------ state, config


def new_state() -> dict[str, Any]:
    """Passwords and ids, generated once per DIR (kept in instance.json)."""
    ids = {k: uuid.uuid4().hex for k in (
        "role_member", "role_service", "role_admin", "project_cloudfs", "project_service",
        "service_swift", "endpoint_swift")}
    return {
        "admin_password": secrets.token_urlsafe(16),
        "password": secrets.token_urlsafe(16),
        "swift_password": secrets.token_urlsafe(16),
        "ids": ids,
        "application_credential": {
            "id": uuid.uuid4().hex, "name": "cloudfs-dev",
            # as Keystone makes them
            "secret": base64.urlsafe_b64encode(secrets.token_bytes(64)).rstrip(b"=").decode(),
        },
    }


def scheme(tls: bool) -> str:
    return "https" if tls else "http"


def auth_url(port: int, tls: bool) -> str:
    return f"{scheme(tls)}://127.0.0.1:{port + OFFSET}/v3"


def write_config(dir: Path, port: int, state: dict[str, Any], tls_files: Any,
                 token_expiration: int | None) -> None:
    """etc/keystone.conf and etc/keystone.json for the runner."""
    kdir = dir / "keystone"
    for sub in ("fernet-keys", "credential-keys"):
        (kdir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    tls = tls_files is not None
    conf = f"""\
[DEFAULT]
log_file = {dir / "log" / "keystone-server.log"}
[database]
connection = sqlite:///{kdir / "keystone.db"}
[token]
provider = fernet
expiration = {token_expiration or 3600}
[fernet_tokens]
key_repository = {kdir / "fernet-keys"}
[fernet_receipts]
key_repository = {kdir / "fernet-keys"}
[credential]
key_repository = {kdir / "credential-keys"}
[identity]
# bcrypt's minimum: a development speed (the default is 12)
password_hash_rounds = 4
"""
    process.write_private(dir / "etc" / "keystone.conf", conf)
    runner_state = {
        **state, "port": port + OFFSET, "region": REGION, "project": PROJECT, "user": USER,
        "auth_url": auth_url(port, tls), "swift_url": f"{scheme(tls)}://127.0.0.1:{port}",
        "tls": {"cert": str(tls_files.cert), "key": str(tls_files.key)} if tls else None,
    }
    process.write_private(dir / "etc" / "keystone.json", json.dumps(runner_state, indent=1))


def proxy_filters(port: int, state: dict[str, Any], tls_files: Any) -> str:
    """The proxy's `authtoken` and `keystoneauth` filter sections."""
    cafile = f"cafile = {tls_files.ca}\n" if tls_files is not None else ""
    return f"""
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = {auth_url(port, tls_files is not None)}
auth_url = {auth_url(port, tls_files is not None)}
auth_type = password
username = swift
password = {state["swift_password"]}
project_name = service
user_domain_id = default
project_domain_id = default
delay_auth_decision = true
# Swift's own memcache client (the cache filter): python-memcached is not installed
cache = swift.cache
# bootstrap makes public endpoints only (the default is internal)
interface = public
{cafile}
[filter:keystoneauth]
use = egg:swift#keystoneauth
reseller_prefix = AUTH_
operator_roles = admin, member
"""


def command(dir: Path, python: Path) -> list[str]:
    """Names DIR/etc/ (how devtools.process recognises DIR's processes)."""
    return [str(python), str(RUNNER), "serve", str(dir / "etc" / "keystone.json")]


def account(dir: Path, port: int, state: dict[str, Any], tls_files: Any) -> KeystoneAccount:
    app = state["application_credential"]
    return KeystoneAccount(auth_url(port, tls_files is not None), PROJECT, USER,
                           state["password"], app["id"], app["secret"],
                           str(tls_files.ca) if tls_files is not None else None)


# ------------------------------------------------------------------------------ readiness


def _request(port: int, context: ssl.SSLContext | None, method: str, path: str,
             headers: dict[str, str], body: bytes | None = None
             ) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp, data
    finally:
        conn.close()


def token(acct: KeystoneAccount, port: int, context: ssl.SSLContext | None
          ) -> tuple[str, str]:
    """A project-scoped token of the cloudfs user and the account's storage path (one
    password authentication, stdlib only). Raises OSError/HTTPException if not ready."""
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": acct.user, "domain": {"id": "default"}, "password": acct.password}}},
        "scope": {"project": {"name": acct.project, "domain": {"id": "default"}}}}}
    status, resp, data = _request(port + OFFSET, context, "POST", "/v3/auth/tokens",
                                  {"Content-Type": "application/json"},
                                  json.dumps(body).encode())
    if status != 201:
        raise ConnectionError(f"Keystone token request: {status}")
    project_id = json.loads(data)["token"]["project"]["id"]
    return resp.getheader("X-Subject-Token") or "", f"/v1/AUTH_{project_id}"


def ready(acct: KeystoneAccount, port: int, context: ssl.SSLContext | None
          ) -> tuple[str, str]:
    """Keystone answers a token request and a policy-checked request (the warm-up that the
    enforcer race needs); returns (token, storage path) for the proxy's check."""
    tok, path = token(acct, port, context)
    status, _, _ = _request(port + OFFSET, context, "GET", "/v3/auth/tokens",
                            {"X-Auth-Token": tok, "X-Subject-Token": tok})
    if status != 200:
        raise ConnectionError(f"Keystone token validation: {status}")
    return tok, path
