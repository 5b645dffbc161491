"""A real single-node OpenStack Swift on 127.0.0.1 for development and tests (`cloudfs dev-swift`).

This module owns the dev Swift's lifecycle: the Swift venv (created on first use, never the
project's venv), the per-instance configuration under DIR, the five processes on ports P..P+4
(proxy P, account P+1, container P+2, object P+3, and memcached P+4 behind the proxy's `cache`
filter, as in every production Swift), their pid files, health checks and shutdown. Its Python API
serves the tests, `scripts/run` and the benchmarks: `start()`, `stop()`, `status()`,
`running()`, `find_free_port_range()`; devtools/cli.py makes it `cloudfs dev-swift`.

Layout of DIR:
    etc/   swift.conf, <server>-server.conf, *.ring.gz, instance.json (credentials, hash suffix)
    srv/   the single device sdb1 (all data: survives stop/start)
    log/   <server>.log (each server's stderr, `-v`), memcached.log
    run/   <server>.pid, memcached.pid, memcached.self.pid (memcached's own), lock

Facts this relies on (measured on the development machines): Swift binds with
SO_REUSEPORT, so a busy port must be detected before starting; constraints such as
max_file_size are read from swift.conf at import time (handled by swift_runner.py);
tempauth works without memcache when given fernet keys (kept: its tokens need no cache).

memcached is the system's binary (Debian package `memcached`, see scripts/install), but never
the system's service: each instance runs its own on 127.0.0.1:P+4 (no UDP, 64 MiB, one thread).
Without it the proxy has no account/container info cache, and every client request costs extra
HEADs to the account and container servers, which no real cluster does.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import pwd
import shutil
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools import keystone, ports, process, tls
from devtools.errors import ServiceError, UsageError
from devtools.keystone import KeystoneAccount
from devtools.swift_config import (  # noqa: F401 - CHUNK and RUNNER: part of this API
    CHUNK,
    MEMCACHED,
    PROCESSES,
    RUNNER,
    SERVERS,
    build_rings,
    instance_state,
)
from devtools.swift_config import write_configs as _write_configs  # tests replace it

log = logging.getLogger(__name__)

SWIFT_VERSION = "2.38.3"
DEFAULT_PORT = 8080
USER = "test:tester"
PORT_COUNT = len(PROCESSES)
KEYSTONE_PORT_COUNT = PORT_COUNT + 1  # and Keystone on P+5
AUTH_MODES = ("tempauth", "keystone")
MEMCACHED_MEMORY_MB = 64
START_TIMEOUT = 60.0  # typically healthy in ~4 s; the box can be loaded


class DevSwiftError(ServiceError):
    """The dev Swift failed to start (the message carries the servers' log tails)."""


@dataclass(frozen=True)
class DevSwift:
    """A running dev Swift: v1 auth credentials as the swift CLI expects them (ST_*), or, with
    Keystone, the account in `keystone` (OS_*; `auth_url`, `user` and `key` are then Keystone's
    URL, the user and its password)."""

    auth_url: str
    user: str
    key: str
    port: int
    dir: Path
    keystone: KeystoneAccount | None = None
    ca: str | None = None  # with TLS: the CA that signed the servers' certificates

    @property
    def cacert(self) -> str | None:
        return self.keystone.cacert if self.keystone is not None else self.ca

    def env(self, credential: str = "application") -> dict[str, str]:
        """The ST_AUTH/ST_USER/ST_KEY variables of the swift CLI (and OS_CACERT with TLS), or
        with Keystone the openstack CLI's OS_* (with the application credential, or the
        user's password)."""
        if self.keystone is not None:
            return self.keystone.env(credential)
        env = {"ST_AUTH": self.auth_url, "ST_USER": self.user, "ST_KEY": self.key}
        return env | ({"OS_CACERT": self.ca} if self.ca else {})


# ------------------------------------------------------------------------------ Swift venv


def swift_venv() -> Path:
    """Where the Swift server venv lives: $CLOUDFS_SWIFT_VENV or ~/.cache/cloudfs/swift-venv."""
    if env := os.environ.get("CLOUDFS_SWIFT_VENV"):
        return Path(env).expanduser().absolute()
    return Path.home() / ".cache" / "cloudfs" / "swift-venv"


def ensure_swift_venv() -> Path:
    """Returns the Swift venv's python, creating the venv first if needed (under a file lock)."""
    venv = swift_venv()
    python = venv / "bin" / "python"
    stamp = venv / f".cloudfs-swift-{SWIFT_VERSION}"
    if stamp.exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with process.locked(venv.parent / f"{venv.name}.lock"):
        if stamp.exists():  # another process built it while we waited
            return python
        print(f"creating Swift venv (first use, ~20 s): {venv}", file=sys.stderr, flush=True)
        if venv.exists():
            process.run([sys.executable, "-c", "import shutil, sys; shutil.rmtree(sys.argv[1])",
                         venv])
        process.run([sys.executable, "-m", "venv", venv])
        process.run([python, "-m", "pip", "install", "-q", f"swift=={SWIFT_VERSION}"])
        stamp.touch()
    return python


def find_free_port_range(auth: str = "tempauth") -> int:
    """A base port P with P..P+4 free (the proxy, three servers and memcached), and P+5 for
    Keystone."""
    return ports.find_free_port_range(KEYSTONE_PORT_COUNT if auth == "keystone" else PORT_COUNT)


def _processes(auth: str | None) -> dict[str, int]:
    """Name -> port offset of every process of an instance with this auth."""
    return {**PROCESSES, keystone.NAME: keystone.OFFSET} if auth == "keystone" else PROCESSES


# ------------------------------------------------------------------------------ processes


def _memcached_own_pid_file(dir: Path) -> Path:
    return dir / "run" / f"{MEMCACHED}.self.pid"


def _memcached_binary() -> str:
    """The system's memcached (not its service: each instance starts one of its own)."""
    binary = shutil.which(MEMCACHED)
    if binary is None:
        raise DevSwiftError(
            "memcached is not installed (the dev Swift's proxy needs it): run scripts/install "
            "(or apt-get install memcached)"
        )
    return binary


def _command(name: str, dir: Path, port: int, python: Path, memcached: str) -> list[str]:
    """The command line of one of DIR's processes; each one names DIR (see _is_running)."""
    if name == keystone.NAME:
        return keystone.command(dir, python)
    if name != MEMCACHED:
        return [str(python), str(RUNNER), "serve", name, str(dir / "etc" / f"{name}-server.conf")]
    cmd = [memcached, "-l", "127.0.0.1", "-p", str(port + PROCESSES[MEMCACHED]), "-U", "0"]
    cmd += ["-m", str(MEMCACHED_MEMORY_MB), "-t", "1", "-v"]
    # Names DIR in its command line. memcached (1.6.18) writes it also in the foreground, so not
    # the pid file we write (it would warn that the file names a running pid: its own).
    cmd += ["-P", str(_memcached_own_pid_file(dir))]
    if os.geteuid() == 0:  # memcached refuses to run as root without -u
        cmd += ["-u", pwd.getpwuid(os.geteuid()).pw_name]
    return cmd


def _label(name: str) -> str:
    return name if name in (MEMCACHED, keystone.NAME) else f"{name} server"


def _http(port: int, method: str, path: str, headers: dict[str, str] | None = None,
          context: ssl.SSLContext | None = None) -> Any:
    conn = (http.client.HTTPConnection("127.0.0.1", port, timeout=5) if context is None else
            http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context))
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp
    finally:
        conn.close()


def _memcached_ok(port: int) -> bool:
    """True if memcached on 127.0.0.1:port answers the `version` command."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"version\r\n")
        answer = b""
        while not answer.endswith(b"\r\n") and len(answer) < 200:
            if not (data := s.recv(200)):
                break
            answer += data
    return answer.startswith(b"VERSION ")


def _v1_token(port: int, key: str, context: ssl.SSLContext | None) -> tuple[str, str] | None:
    auth = _http(port, "GET", "/auth/v1.0", {"X-Auth-User": USER, "X-Auth-Key": key},
                 context)
    url, token = auth.getheader("X-Storage-Url"), auth.getheader("X-Auth-Token")
    if auth.status // 100 == 2 and url and token:
        return token, urllib.parse.urlsplit(url).path
    return None


def _wait_healthy(dir: Path, port: int, key: str, pids: dict[str, int],
                  account: KeystoneAccount | None = None, ca: str | None = None) -> None:
    """Polls memcached's `version` and /healthcheck on the four Swift ports (the proxy's over
    https with TLS), Keystone's token and a policy-checked request, then an authentication
    (v1, or Keystone's) and an account HEAD (so the proxy's first request already finds
    memcached up)."""
    deadline = time.monotonic() + START_TIMEOUT
    pending = set(pids)
    context = ssl.create_default_context(cafile=ca) if ca else None
    token: tuple[str, str] | None = None
    while True:
        for name in list(pending):
            if not process.is_running(pids[name], dir):
                raise DevSwiftError(f"the {_label(name)} (pid {pids[name]}) exited")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if name == MEMCACHED:
                    if _memcached_ok(port + PROCESSES[name]):
                        pending.discard(name)
                elif name == keystone.NAME:
                    assert account is not None
                    token = keystone.ready(account, port, context)
                    pending.discard(name)
                elif _http(port + SERVERS[name], "GET", "/healthcheck",
                           context=context if name == "proxy" else None).status == 200:
                    pending.discard(name)
        if not pending:
            with contextlib.suppress(OSError, http.client.HTTPException):
                token = token if account is not None else _v1_token(port, key, context)
                if token is not None:
                    status = _http(port, "HEAD", token[1], {"X-Auth-Token": token[0]},
                                   context).status
                    if status // 100 == 2:
                        return
        if time.monotonic() > deadline:
            waiting = ", ".join(sorted(pending)) or "an authenticated account HEAD"
            raise DevSwiftError(f"not healthy after {START_TIMEOUT:.0f} s (waiting for {waiting})")
        time.sleep(0.1)


# ------------------------------------------------------------------------------ API


def status(dir: Path) -> dict[str, Any]:
    """{"dir", "port", "auth", "tls", "running" (all of them), "servers": {name: {"pid", "port",
    "running"}}}, the servers being the four Swift servers, memcached and with Keystone auth
    Keystone."""
    dir = Path(dir).absolute()
    state_file = dir / "etc" / "instance.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    port, auth = state.get("port"), state.get("auth", "tempauth")
    servers = {}
    for server, offset in _processes(auth).items():
        pid = process.read_pid(dir, server)
        servers[server] = {
            "pid": pid,
            "port": port + offset if port else None,
            "running": pid is not None and process.is_running(pid, dir),
        }
    running = all(s["running"] for s in servers.values())
    return {"dir": str(dir), "port": port, "auth": auth, "tls": bool(state.get("tls")),
            "running": running, "servers": servers}


def running(dir: Path) -> DevSwift | None:
    """DIR's dev Swift if all its processes run, else None."""
    dir = Path(dir).absolute()
    st = status(dir)
    if not st["running"]:
        return None
    return _devswift(dir, st["port"], instance_state(dir))


def _devswift(dir: Path, port: int, state: dict[str, Any]) -> DevSwift:
    if state.get("auth") == "keystone":
        acct = keystone.account(dir, port, state["keystone"],
                                tls.files(dir) if state.get("tls") else None)
        return DevSwift(acct.auth_url, acct.user, acct.password, port, dir, acct)
    if state.get("tls"):
        return DevSwift(f"https://127.0.0.1:{port}/auth/v1.0", USER, state["key"], port, dir,
                        ca=str(tls.files(dir).ca))
    return DevSwift(f"http://127.0.0.1:{port}/auth/v1.0", USER, state["key"], port, dir)


def start(
    dir: Path,
    port: int = DEFAULT_PORT,
    *,
    max_file_size: int | None = None,
    max_manifest_segments: int | None = None,
    die_with_parent: bool = False,
    auth: str = "tempauth",
    tls_on: bool = False,
    token_expiration: int | None = None,
) -> DevSwift:
    """Starts DIR's dev Swift on ports port..port+4 (and Keystone on port+5 with
    auth="keystone") and waits until it serves an authenticated request.

    With `tls_on`, the proxy (and Keystone) serve https with a certificate of DIR's own CA
    (`DevSwift.cacert`). `token_expiration` (seconds, Keystone only) shortens token lifetimes
    for tests of expiry. If DIR's instance already runs with the same settings, returns it as
    is; with other settings, raises UsageError. A busy port raises UsageError naming it. A
    missing memcached raises DevSwiftError saying so. Any other failure stops what was started
    and raises DevSwiftError with the processes' log tails.
    `die_with_parent` makes the processes get SIGTERM when the calling *thread* exits (call it
    from the main thread).
    """
    if die_with_parent and threading.current_thread() is not threading.main_thread():
        raise ValueError("die_with_parent needs the main thread (PDEATHSIG follows the thread)")
    for name, value in (
        ("max_file_size", max_file_size),
        ("max_manifest_segments", max_manifest_segments),
        ("token_expiration", token_expiration),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be positive, not {value}")
    if auth not in AUTH_MODES:
        raise UsageError(f"auth must be one of {', '.join(AUTH_MODES)}, not {auth!r}")
    if token_expiration is not None and auth != "keystone":
        raise UsageError("token_expiration needs Keystone auth")
    dir = Path(dir).absolute()
    for sub in ("etc", "srv/sdb1", "log", "run"):
        (dir / sub).mkdir(parents=True, exist_ok=True)
    with process.locked(dir / "run" / "lock"):
        state = instance_state(dir)
        current = status(dir)
        wanted = {
            "port": port,
            "max_file_size": max_file_size,
            "max_manifest_segments": max_manifest_segments,
            "auth": auth,
            "tls": tls_on,
            "token_expiration": token_expiration,
        }
        defaults = {"auth": "tempauth", "tls": False}
        if current["running"]:
            if all(state.get(k, defaults.get(k)) == v for k, v in wanted.items()):
                log.info("the dev Swift in %s is already running on port %d", dir, port)
                return _devswift(dir, port, state)
            other = ", ".join(f"{k} {state.get(k, defaults.get(k))}" for k in wanted)
            raise UsageError(f"the dev Swift in {dir} already runs with other settings "
                             f"({other}): stop it first")
        if any(s["running"] for s in current["servers"].values()):
            log.warning("the dev Swift in %s was partially running: restarting it", dir)
            _stop_locked(dir)
        memcached = _memcached_binary()
        names = _processes(auth)
        last = port + max(names.values())
        for server, offset in names.items():
            if ports.port_in_use(port + offset):
                what = {MEMCACHED: "the dev Swift's memcached", keystone.NAME: "Keystone"}.get(
                    server, f"the Swift {server} server")
                raise UsageError(
                    f"port {port + offset} (for {what}) is already in use: "
                    f"choose another --port (ports {port}-{last} must be free)"
                )
        tls_files = tls.ensure(dir) if tls_on else None
        filters = None
        if auth == "keystone":
            python = keystone.ensure_venv(SWIFT_VERSION)
            state.setdefault("keystone", keystone.new_state())
            keystone.write_config(dir, port, state["keystone"], tls_files, token_expiration)
            filters = keystone.proxy_filters(port, state["keystone"], tls_files)
        else:
            python = ensure_swift_venv()
        _write_configs(dir, port, state, max_file_size, max_manifest_segments, filters,
                       tls_files)
        build_rings(python, dir, port, state)
        state.update(wanted)
        process.write_private(dir / "etc" / "instance.json", json.dumps(state, indent=1) + "\n")
        dev = _devswift(dir, port, state)
        pids: dict[str, int] = {}
        try:
            # Keystone first (the slowest to start), memcached before the proxy (it connects)
            for name in sorted(names, key=[keystone.NAME, MEMCACHED, *SERVERS].index):
                cmd = _command(name, dir, port, python, memcached)
                pids[name] = process.spawn(cmd, dir, name, die_with_parent=die_with_parent)
            _wait_healthy(dir, port, state["key"], pids, dev.keystone, dev.cacert)
        except BaseException as exc:
            tails = process.log_tails(dir, names)
            _stop_locked(dir)
            if isinstance(exc, DevSwiftError):
                raise DevSwiftError(f"dev Swift in {dir} failed to start: {exc}\n{tails}") from exc
            raise
    return dev


def stop(dir: Path) -> None:
    """Stops DIR's processes (Swift servers, memcached, Keystone) by the pids in DIR/run
    (SIGTERM, then SIGKILL after ~10 s). Only signals a pid whose command line still names
    DIR. Idempotent."""
    process.stop_dir(dir, _stop_locked)


def _stop_locked(dir: Path) -> None:
    process.stop_all(dir, _processes("keystone"), "dev Swift")
    _memcached_own_pid_file(dir).unlink(missing_ok=True)
