"""The filesystem's configuration file, shared by the mount (cloudfs) and ccd.

One INI file (`--config`), every key documented in `EXAMPLE` below (`cloudfs config-example`).
Precedence, highest first: command-line flags, the environment (the openstack CLI's OS_*
variables, the swift CLI's ST_*, then the systemd credential `secret`), the file, the
defaults; the credentials chain is wiring/credentials.py. A missing or malformed setting
raises ConfigError naming the key (printed as one line by the CLIs, never a traceback).
"""

from __future__ import annotations

import configparser
import logging
import math
import os
import re
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from seqwrite import Auth
from wiring import credentials
from wiring.errors import ConfigError

log = logging.getLogger(__name__)

EXAMPLE = """\
# cloudfs configuration. Keys marked (required) have no default.
[swift]
# Where the credentials come from, highest first: command-line flags, the environment (the
# openstack CLI's OS_* variables, or the swift CLI's ST_AUTH/ST_USER/ST_KEY; then the systemd
# credential `secret`, LoadCredential=secret:FILE), this file, the defaults. Key by key.
# Secrets never go on the command line: put them here (mode 600), in a *_file, in the
# environment or in a systemd credential.
#
# The auth URL: tempauth v1 (.../auth/v1.0) or Keystone v3 (.../v3).
auth_url = http://127.0.0.1:8080/auth/v1.0
# 1 (tempauth) or 3 (Keystone). Default: 3 if the URL came from OS_AUTH_URL or its path ends
# in /v3, else 1.
#auth_version =
# tempauth: user (account:user) and key, or key_file (a file holding only the key).
user = test:tester
key = testing
#key_file = /etc/cloudfs/main.secret
#
# Keystone v3 with a password: the user (`user` is the user name; or user_id), its password or
# password_file, the project (project_name or project_id) and the domains of both, by name or
# id (a name without a domain is looked up in the domain with id "default").
#user = cloudfs
#user_id =
#password =
#password_file = /etc/cloudfs/main.secret
#user_domain_name = Default
#user_domain_id =
#project_name = cloudfs
#project_id =
#project_domain_name = Default
#project_domain_id =
# Keystone v3 with an application credential instead (what operators hand to services): its
# id, or its name and the user (`user` or user_id), and its secret (or a secret file).
#application_credential_id =
#application_credential_name =
#application_credential_secret =
#application_credential_secret_file = /etc/cloudfs/main.secret
# Which object-store endpoint of the catalog: region and interface (public, internal, admin).
#region_name = RegionOne
#interface = public
# Use this storage URL instead of the one the auth service names (either auth).
#storage_url = https://swift.example.com/v1/AUTH_0123
#
# TLS: https:// URLs are verified against the system's CA certificates, or the CA file cacert
# (OS_CACERT). insecure = true turns verification off (a warning is logged at every start).
#cacert = /etc/cloudfs/ca.pem
#insecure = false
#
# Base name of this filesystem's containers (see docs/LAYOUT.md).
container = cloudfs
# Seconds a single Swift request may take before it is abandoned and retried.
timeout = 60
# Seconds a failing operation is retried before the mount answers EIO.
retry_deadline = 300
# Concurrent Swift requests (connections) of one process.
max_connections = 16

[cloudfs]
# The namespace database (required), either
# - an SQLite file (a path, or sqlite:///path): WAL mode, for mounts on this one host; or
# - a PostgreSQL database, postgresql://user@host:port/dbname (a libpq URL; query parameters
#   such as ?sslmode=verify-full are honoured): for mounts on several hosts. The password comes
#   from a passfile (PGPASSFILE, or ?passfile=/path) or PGPASSWORD, never from the URL: the URL
#   is shown in logs. With PostgreSQL, cache_dir is required.
database = /var/lib/cloudfs/cloudfs.db
# Local spool and cache directory (segments in flight are spooled here, and the write cache
# of files written at random offsets lives here).
cache_dir = /var/cache/cloudfs
# Most bytes the write cache may hold; a write past it fails with ENOSPC.
cache_size = 10G
# Temporary segment size; never above Swift's max_file_size. Suffixes K, M, G (powers of 2).
segment_size = 5G
# Files up to this size are one plain object (no segment, no manifest).
small_file_threshold = 1M
# Compare the md5 of every uploaded segment with the ETag Swift computed of what it stored:
# an end-to-end check of every byte (as the swift CLI does by default). Small files are
# always checked (their md5 is sent with the PUT). Turning it off saves the md5 (a few
# hundred MiB/s of one core) and leaves segments checked by their sizes only, and bytes in
# transit protected by TCP (or TLS with an https URL).
verify_md5 = true
# Seconds a stopping mount (SIGTERM, SIGINT, systemctl stop) gives files open for writing to
# be closed; what is still open then is aborted (never published: the file keeps its previous
# content). Keep it below the unit's TimeoutStopSec.
stop_timeout = 60
# Write-back: close returns once the file is durable in a local journal under cache_dir
# (fsync'd), and the upload to Swift runs in the background; fsync(2), `cloudfs sync` and
# unmount wait for it. A crash replays the journal at the next mount. Other mounts (other
# hosts) see a file once it is uploaded. See docs/SEMANTICS.md. Off: close returns once the
# content is in Swift and committed.
write_back = false
# Files up to this size are written back; a bigger one streams to Swift as without write-back
# (its close waits for the upload). The journal shares cache_size with the write cache: when
# it is full, closes wait for their own upload (backpressure), they never fail for it.
write_back_max = 64M
# Prometheus metrics of the mount: off, PORT or HOST:PORT (HTTP /metrics; the host defaults
# to 127.0.0.1), or /path/name.prom (a node_exporter textfile). See docs/OPERATIONS.md.
metrics = off
# CAS containers = 16 ** shard_digits; read only by `cloudfs mkfs`.
shard_digits = 2
log_level = INFO

[ccd]
# Seconds before cleanup deletes what interrupted writes left and unreferenced content.
grace = 86400
# Seconds between consolidation passes of `ccd run`.
interval = 60
# Seconds a temporary segment is kept after its manifest stopped naming it (readers of the
# old manifest finish meanwhile).
retire_grace = 3600
# Seconds a file made of several pieces (appends, random writes, truncations) must stay
# unchanged before ccd settles it into one whole-file object (which re-uploads the file).
settle_grace = 600
# Prometheus metrics of ccd (as `metrics` above; `ccd cleanup` writes a textfile at exit).
ccd_metrics = off
"""

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def has_password(database: str) -> bool:
    """Whether a PostgreSQL URL carries a password (as user:password@ or ?password=)."""
    parts = urllib.parse.urlsplit(database)
    if not parts.scheme.startswith("postgres"):
        return False
    return parts.password is not None or "password" in urllib.parse.parse_qs(parts.query)


def parse_size(text: str, key: str) -> int:
    m = _SIZE_RE.match(text)
    if not m:
        raise ConfigError(f"{key}: {text!r} is not a size (e.g. 1048576, 64M, 5G)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting, resolved. See EXAMPLE for meanings."""

    auth_url: str = ""
    user: str = ""
    key: str = field(default="", repr=False)
    auth_version: str = ""
    user_id: str = ""
    password: str = field(default="", repr=False)
    user_domain_name: str = ""
    user_domain_id: str = ""
    project_name: str = ""
    project_id: str = ""
    project_domain_name: str = ""
    project_domain_id: str = ""
    application_credential_id: str = ""
    application_credential_name: str = ""
    application_credential_secret: str = field(default="", repr=False)
    region_name: str = ""
    interface: str = "public"
    storage_url: str = ""
    cacert: str = ""
    insecure: bool = False
    container: str = "cloudfs"
    timeout: float = 60.0
    retry_deadline: float = 300.0
    max_connections: int = 16
    database: str = ""
    cache_dir: str = ""
    cache_size: int = 10 * 2**30
    segment_size: int = 5 * 2**30
    small_file_threshold: int = 2**20
    shard_digits: int = 2
    verify_md5: bool = True
    stop_timeout: float = 60.0
    write_back: bool = False
    write_back_max: int = 64 * 2**20
    metrics: str = "off"
    log_level: str = "INFO"
    grace: float = 86400.0
    interval: float = 60.0
    retire_grace: float = 3600.0
    settle_grace: float = 600.0
    ccd_metrics: str = "off"
    source: str = ""  # the file it came from, for messages

    @property
    def auth(self) -> Auth:
        """The Swift credentials; ConfigError naming what is missing."""
        return credentials.build_auth(self)

    def require(self, *keys: str) -> Config:
        """Raise ConfigError naming the first of `keys` that is unset."""
        for key in keys:
            if not getattr(self, key):
                where = f" in {self.source}" if self.source else ""
                raise ConfigError(f"setting '{key}' is missing{where} "
                                  f"(see `cloudfs config-example`)")
        return self


# Section -> setting -> how its text is read: a type, "size" or "bool".
_FIELDS: dict[str, dict[str, object]] = {
    "swift": {"auth_url": str, "user": str, "key": str, "container": str, "timeout": float,
              "retry_deadline": float, "max_connections": int, **credentials.AUTH_FIELDS},
    "cloudfs": {"database": str, "cache_dir": str, "cache_size": "size", "segment_size": "size",
                "small_file_threshold": "size", "shard_digits": int, "log_level": str,
                "verify_md5": "bool", "stop_timeout": float, "metrics": str,
                "write_back": "bool", "write_back_max": "size"},
    "ccd": {"grace": float, "interval": float, "retire_grace": float, "settle_grace": float,
            "ccd_metrics": str},
}


def _convert(key: str, value: str, kind: object) -> object:
    if kind == "size":
        return parse_size(value, key)
    if kind == "bool":
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: {value!r} is not true/false")
    try:
        return kind(value)  # type: ignore[operator]
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not a valid {kind.__name__}") from None  # type: ignore[attr-defined]


def setting_from_text(key: str, text: str) -> object | None:
    """The value of setting `key` read from `text` (as in the file), or None if `key` is not a
    setting; ConfigError naming it if `text` is malformed."""
    for fields in _FIELDS.values():
        if key in fields:
            return _convert(key, text.strip(), fields[key])
    return None


def bool_option(option: str) -> tuple[str, bool] | None:
    """A true/false setting given alone as a mount option, as (setting, value):
    `write_back` is ("write_back", True), `nowrite_back` ("write_back", False); None if
    `option` is no such setting."""
    for name, value in ((option, True), (option[2:] if option.startswith("no") else "", False)):
        if name and any(fields.get(name) == "bool" for fields in _FIELDS.values()):
            return name, value
    return None


def load(path: str | os.PathLike[str] | None, *, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, object] | None = None) -> Config:
    """Read `path` (may be None), then apply the environment `env` (OS_*, ST_*, systemd
    credentials), then non-None `overrides` (wiring/credentials.py)."""
    values: dict[str, object] = {}
    source = ""
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {source} does not exist")
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(p) as f:
                parser.read_file(f)
        except OSError as exc:
            raise ConfigError(f"config file {source}: {exc.strerror}") from None
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: {str(exc).splitlines()[0]}") from None
        for section in parser.sections():
            if section not in _FIELDS:
                raise ConfigError(f"{source}: unknown section [{section}]")
            for key, value in parser.items(section):
                kind = _FIELDS[section].get(key)
                if kind is None:
                    raise ConfigError(f"{source}: unknown setting '{key}' in [{section}]")
                values[key] = _convert(key, value.strip(), kind)
        mode = p.stat().st_mode
        if any(values.get(k) for k in credentials.SECRETS) and mode & (stat.S_IRGRP
                                                                      | stat.S_IROTH):
            log.warning("%s holds a Swift secret and is readable by others; chmod 600 it",
                        source)
    values = credentials.merge(values, source, os.environ if env is None else env,
                               overrides or {})
    return check(replace(Config(), source=source, **values))  # type: ignore[arg-type]


def check(cfg: Config) -> Config:
    """`cfg` if every setting is in range; ConfigError naming the first that is not."""
    _check_ranges(cfg)
    return cfg


# The least value of each numeric setting (a zero timeout or a negative grace is a typo).
_MINIMUM: dict[str, float] = {
    "timeout": 0.001, "retry_deadline": 0, "max_connections": 1, "cache_size": 0,
    "segment_size": 1, "small_file_threshold": 0, "shard_digits": 0, "stop_timeout": 0,
    "write_back_max": 0,
    "grace": 0, "interval": 0.001, "retire_grace": 0, "settle_grace": 0,
}


def _check_ranges(cfg: Config) -> None:
    for key, least in _MINIMUM.items():
        value = getattr(cfg, key)
        if not math.isfinite(value) or value < least:
            raise ConfigError(f"{key}: {value} is out of range (at least {least:g})")
    if cfg.shard_digits > 3:
        raise ConfigError(f"shard_digits must be 0..3 (got {cfg.shard_digits})")
    if has_password(cfg.database):
        raise ConfigError("database: a password in the URL would be shown in logs; put it in a "
                          "passfile (PGPASSFILE or ?passfile=) or PGPASSWORD")
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log_level: {cfg.log_level!r} is not DEBUG/INFO/WARNING/ERROR")
