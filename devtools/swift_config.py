"""The dev Swift's configuration files and rings, written into DIR/etc (devtools/swift.py
starts the servers). One proxy, account, container and object server on ports P..P+3 and a
memcached on P+4; the proxy authenticates with tempauth, or with Keystone (devtools/keystone.py
gives the filters), and serves http or https.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import secrets
from pathlib import Path
from typing import Any

from devtools import process
from devtools.tls import TlsFiles

# Server name -> offset from the proxy port (the runner has the same table).
SERVERS: dict[str, int] = {"proxy": 0, "account": 1, "container": 2, "object": 3}
MEMCACHED = "memcached"
# Every process of an instance -> offset from the proxy port: the Swift servers and memcached.
PROCESSES: dict[str, int] = {**SERVERS, MEMCACHED: 4}
# Run by path in the Swift venv, from a directory of its own: beside this module, Python would
# import devtools/swift.py for the runner's `import swift`.
RUNNER = Path(__file__).parent / "runners" / "swift_runner.py"
CHUNK = 1048576  # 1 MiB server chunk sizes: ~+20 % throughput on loopback


def instance_state(dir: Path) -> dict[str, Any]:
    """Credentials and hash salts, generated once per DIR so data survives restarts."""
    path = dir / "etc" / "instance.json"
    if path.exists():
        saved: dict[str, Any] = json.loads(path.read_text())
        return saved
    state = {
        "key": secrets.token_hex(16),
        "fernet_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "hash_path_suffix": secrets.token_hex(16),
        "hash_path_prefix": secrets.token_hex(16),
    }
    process.write_private(path, json.dumps(state, indent=1) + "\n")
    return state


def server_conf(dir: Path, server: str, port: int, pipeline: str, app: str, extra: str) -> str:
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


def write_configs(
    dir: Path,
    port: int,
    state: dict[str, Any],
    max_file_size: int | None,
    max_manifest_segments: int | None,
    keystone_filters: str | None = None,
    tls_files: TlsFiles | None = None,
) -> None:
    """Every server's configuration. The proxy authenticates with tempauth, or with
    keystonemiddleware's authtoken + keystoneauth given their `keystone_filters`; with
    `tls_files` it serves https (the other servers stay on plain http on loopback)."""
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
    auth = "tempauth" if keystone_filters is None else "authtoken keystoneauth"
    proxy = server_conf(
        dir,
        "proxy",
        port,
        f"catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk {auth} "
        "copy slo dlo proxy-logging proxy-server",
        "proxy",
        proxy_extra,
    )
    if tls_files is not None:  # eventlet's TLS: Swift warns it is for testing only
        proxy = proxy.replace("[DEFAULT]\n", f"[DEFAULT]\ncert_file = {tls_files.cert}\n"
                              f"key_file = {tls_files.key}\n", 1)
    proxy += filters + (
        f"\n[filter:cache]\nuse = egg:swift#memcache\n"
        f"memcache_servers = 127.0.0.1:{port + PROCESSES[MEMCACHED]}\n"
        f"\n[filter:slo]\nuse = egg:swift#slo\n{slo}"
    )
    if keystone_filters is None:
        proxy += (f"\n[filter:tempauth]\nuse = egg:swift#tempauth\n"
                  f"user_test_tester = {state['key']} .admin\n"
                  f"fernet_key_1 = {state['fernet_key']}\nactive_fernet_key_id = 1\n")
    else:
        proxy += keystone_filters
    process.write_private(etc / "proxy-server.conf", proxy)
    obj_extra = (
        f"network_chunk_size = {CHUNK}\ndisk_chunk_size = {CHUNK}\n"
        # Without an object-updater, a container update that times out is only queued: a
        # listing right after the PUT would miss the object. Give it time on a loaded box.
        "container_update_timeout = 10\nnode_timeout = 10\n"
    )
    for server, extra in (("account", ""), ("container", ""), ("object", obj_extra)):
        app = "object" if server == "object" else server
        conf = server_conf(dir, server, port, f"healthcheck {server}-server", app, extra)
        (etc / f"{server}-server.conf").write_text(conf)


def build_rings(python: Path, dir: Path, port: int, state: dict[str, Any]) -> None:
    """Rings carry the servers' ports: rebuilt when the port changes (placement is unchanged:
    one device holds every partition, and the hash salts are kept in instance.json)."""
    etc = dir / "etc"
    rings = [etc / f"{n}.ring.gz" for n in ("account", "container", "object")]
    if state.get("ring_port") == port and all(r.exists() for r in rings):
        return
    process.run([python, RUNNER, "rings", etc, str(port)])
    state["ring_port"] = port
    process.write_private(etc / "instance.json", json.dumps(state, indent=1) + "\n")
