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

import base64
import contextlib
import http.client
import json
import logging
import os
import pwd
import secrets
import shutil
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools import ports, process
from devtools.errors import ServiceError, UsageError

log = logging.getLogger(__name__)

SWIFT_VERSION = "2.38.3"
DEFAULT_PORT = 8080
USER = "test:tester"
# Server name -> offset from the proxy port (the runner has the same table).
SERVERS: dict[str, int] = {"proxy": 0, "account": 1, "container": 2, "object": 3}
MEMCACHED = "memcached"
# Every process of an instance -> offset from the proxy port: the Swift servers and memcached.
PROCESSES: dict[str, int] = {**SERVERS, MEMCACHED: 4}
PORT_COUNT = len(PROCESSES)
MEMCACHED_MEMORY_MB = 64
START_TIMEOUT = 60.0  # typically healthy in ~4 s; the box can be loaded
# Run by path in the Swift venv, from a directory of its own: beside this module, Python would
# import this swift.py for the runner's `import swift`.
RUNNER = Path(__file__).parent / "runners" / "swift_runner.py"
CHUNK = 1048576  # 1 MiB server chunk sizes: ~+20 % throughput on loopback


class DevSwiftError(ServiceError):
    """The dev Swift failed to start (the message carries the servers' log tails)."""


@dataclass(frozen=True)
class DevSwift:
    """A running dev Swift: v1 auth credentials as the swift CLI expects them (ST_*)."""

    auth_url: str
    user: str
    key: str
    port: int
    dir: Path

    def env(self) -> dict[str, str]:
        """The ST_AUTH/ST_USER/ST_KEY variables of the swift CLI."""
        return {"ST_AUTH": self.auth_url, "ST_USER": self.user, "ST_KEY": self.key}


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


def find_free_port_range() -> int:
    """A base port P with P..P+4 free (the proxy, three servers and memcached)."""
    return ports.find_free_port_range(PORT_COUNT)


# ------------------------------------------------------------------------------ configuration


def _instance_state(dir: Path) -> dict[str, Any]:
    """Credentials and hash salts, generated once per DIR so data survives restarts."""
    path = dir / "etc" / "instance.json"
    if path.exists():
        state: dict[str, Any] = json.loads(path.read_text())
        return state
    state = {
        "key": secrets.token_hex(16),
        "fernet_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "hash_path_suffix": secrets.token_hex(16),
        "hash_path_prefix": secrets.token_hex(16),
    }
    process.write_private(path, json.dumps(state, indent=1) + "\n")
    return state


def _server_conf(dir: Path, server: str, port: int, pipeline: str, app: str, extra: str) -> str:
    return f"""\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port + SERVERS[server]}
workers = 0
user = {pwd.getpwuid(os.geteuid()).pw_name}
swift_dir = {dir / "etc"}
devices = {dir / "srv"}
mount_check = false
disable_fallocate = true
recon_cache_path = {dir / "run"}
log_name = {server}-server
log_level = INFO

[pipeline:main]
pipeline = {pipeline}

[app:{server}-server]
use = egg:swift#{app}
{extra}
[filter:healthcheck]
use = egg:swift#healthcheck
"""


def _write_configs(
    dir: Path,
    port: int,
    state: dict[str, Any],
    max_file_size: int | None,
    max_manifest_segments: int | None,
) -> None:
    etc = dir / "etc"
    constraints = (
        f"\n[swift-constraints]\nmax_file_size = {max_file_size}\n" if max_file_size else ""
    )
    (etc / "swift.conf").write_text(
        f"[swift-hash]\nswift_hash_path_suffix = {state['hash_path_suffix']}\n"
        f"swift_hash_path_prefix = {state['hash_path_prefix']}\n\n"
        f"[storage-policy:0]\nname = gold\ndefault = yes\n{constraints}"
    )
    slo = f"max_manifest_segments = {max_manifest_segments}\n" if max_manifest_segments else ""
    proxy_extra = (
        f"account_autocreate = true\nclient_chunk_size = {CHUNK}\nobject_chunk_size = {CHUNK}\n"
    )
    filters = "".join(
        f"\n[filter:{name}]\nuse = egg:swift#{egg}\n"
        for name, egg in [
            ("catch_errors", "catch_errors"),
            ("gatekeeper", "gatekeeper"),
            ("proxy-logging", "proxy_logging"),
            ("listing_formats", "listing_formats"),
            ("bulk", "bulk"),
            ("copy", "copy"),
            ("dlo", "dlo"),
        ]
    )
    proxy = _server_conf(
        dir,
        "proxy",
        port,
        "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempauth "
        "copy slo dlo proxy-logging proxy-server",
        "proxy",
        proxy_extra,
    )
    proxy += filters + (
        f"\n[filter:cache]\nuse = egg:swift#memcache\n"
        f"memcache_servers = 127.0.0.1:{port + PROCESSES[MEMCACHED]}\n"
        f"\n[filter:slo]\nuse = egg:swift#slo\n{slo}"
        f"\n[filter:tempauth]\nuse = egg:swift#tempauth\n"
        f"user_test_tester = {state['key']} .admin\n"
        f"fernet_key_1 = {state['fernet_key']}\nactive_fernet_key_id = 1\n"
    )
    process.write_private(etc / "proxy-server.conf", proxy)
    obj_extra = (
        f"network_chunk_size = {CHUNK}\ndisk_chunk_size = {CHUNK}\n"
        # Without an object-updater, a container update that times out is only queued: a
        # listing right after the PUT would miss the object. Give it time on a loaded box.
        "container_update_timeout = 10\nnode_timeout = 10\n"
    )
    for server, extra in (("account", ""), ("container", ""), ("object", obj_extra)):
        app = "object" if server == "object" else server
        conf = _server_conf(dir, server, port, f"healthcheck {server}-server", app, extra)
        (etc / f"{server}-server.conf").write_text(conf)


def _build_rings(python: Path, dir: Path, port: int, state: dict[str, Any]) -> None:
    """Rings carry the servers' ports: rebuilt when the port changes (placement is unchanged:
    one device holds every partition, and the hash salts are kept in instance.json)."""
    etc = dir / "etc"
    rings = [etc / f"{n}.ring.gz" for n in ("account", "container", "object")]
    if state.get("ring_port") == port and all(r.exists() for r in rings):
        return
    process.run([python, RUNNER, "rings", etc, str(port)])
    state["ring_port"] = port
    process.write_private(etc / "instance.json", json.dumps(state, indent=1) + "\n")


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
    return name if name == MEMCACHED else f"{name} server"


def _http(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
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


def _wait_healthy(dir: Path, port: int, key: str, pids: dict[str, int]) -> None:
    """Polls memcached's `version` and /healthcheck on the four Swift ports, then a v1 auth and
    an account HEAD (so the proxy's first request already finds memcached up)."""
    deadline = time.monotonic() + START_TIMEOUT
    pending = set(PROCESSES)
    while True:
        for name in list(pending):
            if not process.is_running(pids[name], dir):
                raise DevSwiftError(f"the {_label(name)} (pid {pids[name]}) exited")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if name == MEMCACHED:
                    if _memcached_ok(port + PROCESSES[name]):
                        pending.discard(name)
                elif _http(port + SERVERS[name], "GET", "/healthcheck").status == 200:
                    pending.discard(name)
        if not pending:
            with contextlib.suppress(OSError, http.client.HTTPException):
                auth = _http(port, "GET", "/auth/v1.0", {"X-Auth-User": USER, "X-Auth-Key": key})
                url, token = auth.getheader("X-Storage-Url"), auth.getheader("X-Auth-Token")
                if auth.status // 100 == 2 and url and token:
                    path = urllib.parse.urlsplit(url).path
                    if _http(port, "HEAD", path, {"X-Auth-Token": token}).status // 100 == 2:
                        return
        if time.monotonic() > deadline:
            waiting = ", ".join(sorted(pending)) or "the v1 auth"
            raise DevSwiftError(f"not healthy after {START_TIMEOUT:.0f} s (waiting for {waiting})")
        time.sleep(0.1)


# ------------------------------------------------------------------------------ API


def status(dir: Path) -> dict[str, Any]:
    """{"dir", "port", "running" (all five), "servers": {name: {"pid", "port", "running"}}}, the
    servers being the four Swift servers and memcached."""
    dir = Path(dir).absolute()
    state_file = dir / "etc" / "instance.json"
    port = json.loads(state_file.read_text()).get("port") if state_file.exists() else None
    servers = {}
    for server, offset in PROCESSES.items():
        pid = process.read_pid(dir, server)
        servers[server] = {
            "pid": pid,
            "port": port + offset if port else None,
            "running": pid is not None and process.is_running(pid, dir),
        }
    running = all(s["running"] for s in servers.values())
    return {"dir": str(dir), "port": port, "running": running, "servers": servers}


def running(dir: Path) -> DevSwift | None:
    """DIR's dev Swift if all its processes run, else None."""
    dir = Path(dir).absolute()
    st = status(dir)
    if not st["running"]:
        return None
    return _devswift(dir, st["port"], _instance_state(dir)["key"])


def _devswift(dir: Path, port: int, key: str) -> DevSwift:
    return DevSwift(f"http://127.0.0.1:{port}/auth/v1.0", USER, key, port, dir)


def start(
    dir: Path,
    port: int = DEFAULT_PORT,
    *,
    max_file_size: int | None = None,
    max_manifest_segments: int | None = None,
    die_with_parent: bool = False,
) -> DevSwift:
    """Starts DIR's dev Swift on ports port..port+4 and waits until it serves a v1 auth.

    If DIR's instance already runs with the same port and limits, returns it as is; with other
    settings, raises UsageError. A busy port raises UsageError naming it. A missing memcached
    raises DevSwiftError saying so. Any other failure stops what was started and raises
    DevSwiftError with the processes' log tails.
    `die_with_parent` makes the processes get SIGTERM when the calling *thread* exits (call it
    from the main thread).
    """
    if die_with_parent and threading.current_thread() is not threading.main_thread():
        raise ValueError("die_with_parent needs the main thread (PDEATHSIG follows the thread)")
    for name, value in (
        ("max_file_size", max_file_size),
        ("max_manifest_segments", max_manifest_segments),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be positive, not {value}")
    dir = Path(dir).absolute()
    for sub in ("etc", "srv/sdb1", "log", "run"):
        (dir / sub).mkdir(parents=True, exist_ok=True)
    with process.locked(dir / "run" / "lock"):
        state = _instance_state(dir)
        current = status(dir)
        wanted = {
            "port": port,
            "max_file_size": max_file_size,
            "max_manifest_segments": max_manifest_segments,
        }
        if current["running"]:
            if all(state.get(k) == v for k, v in wanted.items()):
                log.info("the dev Swift in %s is already running on port %d", dir, port)
                return _devswift(dir, port, state["key"])
            raise UsageError(
                f"the dev Swift in {dir} already runs with other settings (port "
                f"{state.get('port')}, max_file_size {state.get('max_file_size')}, "
                f"max_manifest_segments {state.get('max_manifest_segments')}): stop it first"
            )
        if any(s["running"] for s in current["servers"].values()):
            log.warning("the dev Swift in %s was partially running: restarting it", dir)
            _stop_locked(dir)
        memcached = _memcached_binary()
        for server, offset in PROCESSES.items():
            if ports.port_in_use(port + offset):
                what = "the dev Swift's memcached" if server == MEMCACHED else f"the Swift {server}"
                raise UsageError(
                    f"port {port + offset} (for {what} server) is already in use: "
                    f"choose another --port (ports {port}-{port + PORT_COUNT - 1} must be free)"
                )
        python = ensure_swift_venv()
        _write_configs(dir, port, state, max_file_size, max_manifest_segments)
        _build_rings(python, dir, port, state)
        state.update(wanted)
        process.write_private(dir / "etc" / "instance.json", json.dumps(state, indent=1) + "\n")
        pids: dict[str, int] = {}
        try:
            for name in (MEMCACHED, *SERVERS):  # memcached first: the proxy connects to it
                cmd = _command(name, dir, port, python, memcached)
                pids[name] = process.spawn(cmd, dir, name, die_with_parent=die_with_parent)
            _wait_healthy(dir, port, state["key"], pids)
        except BaseException as exc:
            tails = process.log_tails(dir, PROCESSES)
            _stop_locked(dir)
            if isinstance(exc, DevSwiftError):
                raise DevSwiftError(f"dev Swift in {dir} failed to start: {exc}\n{tails}") from exc
            raise
    return _devswift(dir, port, state["key"])


def stop(dir: Path) -> None:
    """Stops DIR's processes (Swift servers, memcached) by the pids in DIR/run (SIGTERM, then
    SIGKILL after ~10 s). Only signals a pid whose command line still names DIR. Idempotent."""
    process.stop_dir(dir, _stop_locked)


def _stop_locked(dir: Path) -> None:
    process.stop_all(dir, PROCESSES, "dev Swift")
    _memcached_own_pid_file(dir).unlink(missing_ok=True)
