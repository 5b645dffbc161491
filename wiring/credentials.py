"""Where the Swift credentials come from, and which wins: the credentials chain.

Precedence, highest first, the same for `cloudfs`, `ccd` and the systemd units:

1. the command line (`--auth-url`, `--user`, `--project-name`, `--cacert`, ...; never a
   secret: a command line is visible to every user in `ps`);
2. the environment: the openstack CLI's OS_* variables (Keystone v3) or the swift CLI's
   ST_AUTH/ST_USER/ST_KEY (tempauth v1), then the systemd credential `secret`
   (`$CREDENTIALS_DIRECTORY/secret`, from `LoadCredential=secret:...`), which holds the
   secret the configured authentication needs (key, password or application credential
   secret) unless a variable already gave it;
3. the config file: `[swift]` keys, a secret either inline or from `key_file`,
   `password_file`, `application_credential_secret_file`;
4. the defaults.

Each setting is taken from the highest level that has it, key by key (a unit can keep the
whole configuration in the file and only the password in a credential). Which authentication
is used: `auth_version` if a level sets it; else 3 when the URL came from OS_AUTH_URL, 1 when
it came from ST_AUTH, else 3 if the auth URL's path ends in /v3, else 1.
"""

from __future__ import annotations

import argparse
import logging
import stat
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from seqwrite import Auth, KeystoneAuth, SwiftAuth, Tls
from wiring.errors import ConfigError

if TYPE_CHECKING:
    from wiring.config import Config

log = logging.getLogger(__name__)

# [swift] keys of the credentials beyond auth_url, user and key (their kinds, as in config.py).
AUTH_FIELDS: dict[str, object] = {
    "auth_version": str, "key_file": str, "password": str, "password_file": str,
    "user_id": str, "user_domain_name": str, "user_domain_id": str, "project_name": str,
    "project_id": str, "project_domain_name": str, "project_domain_id": str,
    "application_credential_id": str, "application_credential_name": str,
    "application_credential_secret": str, "application_credential_secret_file": str,
    "region_name": str, "interface": str, "storage_url": str, "cacert": str,
    "insecure": "bool",
}
SECRETS = ("key", "password", "application_credential_secret")
CREDENTIAL = "secret"  # the systemd credential's name (LoadCredential=secret:/path)
DEFAULT_DOMAIN = "default"  # as the openstack CLI: a name without a domain is in "default"

# Environment variable -> setting. OS_TENANT_* and OS_ENDPOINT_TYPE are the older names that
# some providers' openrc files still export.
ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("OS_AUTH_URL", "auth_url"), ("OS_USERNAME", "user"), ("OS_USER_ID", "user_id"),
    ("OS_PASSWORD", "password"), ("OS_TENANT_NAME", "project_name"),
    ("OS_PROJECT_NAME", "project_name"), ("OS_TENANT_ID", "project_id"),
    ("OS_PROJECT_ID", "project_id"), ("OS_USER_DOMAIN_NAME", "user_domain_name"),
    ("OS_USER_DOMAIN_ID", "user_domain_id"), ("OS_PROJECT_DOMAIN_NAME", "project_domain_name"),
    ("OS_PROJECT_DOMAIN_ID", "project_domain_id"),
    ("OS_APPLICATION_CREDENTIAL_ID", "application_credential_id"),
    ("OS_APPLICATION_CREDENTIAL_NAME", "application_credential_name"),
    ("OS_APPLICATION_CREDENTIAL_SECRET", "application_credential_secret"),
    ("OS_REGION_NAME", "region_name"), ("OS_ENDPOINT_TYPE", "interface"),
    ("OS_INTERFACE", "interface"), ("OS_STORAGE_URL", "storage_url"), ("OS_CACERT", "cacert"),
    ("ST_AUTH", "auth_url"), ("ST_USER", "user"), ("ST_KEY", "key"),
)


def from_environment(env: Mapping[str, str]) -> dict[str, object]:
    """The settings the environment gives (empty variables count as unset)."""
    if env.get("ST_AUTH") and env.get("OS_AUTH_URL"):
        raise ConfigError("both ST_AUTH (tempauth) and OS_AUTH_URL (Keystone) are set in the "
                          "environment: unset one of them")
    values: dict[str, object] = {}
    for var, key in ENVIRONMENT:
        if env.get(var):
            values[key] = env[var]
    if isinstance(interface := values.get("interface"), str):
        values["interface"] = interface.removesuffix("URL")  # publicURL -> public
    if env.get("OS_AUTH_URL"):
        values["auth_version"] = "3"
    elif env.get("ST_AUTH"):
        values["auth_version"] = "1"
    return values


def read_secret_file(path: str, setting: str) -> str:
    """The secret in `path` (a trailing newline dropped); ConfigError naming `setting`."""
    p = Path(path)
    try:
        text = p.read_text().rstrip("\r\n")
        mode = p.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ConfigError(f"{setting} {path}: {reason}") from None
    if not text:
        raise ConfigError(f"{setting} {path}: the file is empty")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s is readable by others; chmod 600 it", path)
    return text


def secrets_from_files(values: dict[str, object], source: str) -> None:
    """Replace each `<secret>_file` of the config file by the secret it names."""
    for secret in SECRETS:
        path = values.pop(f"{secret}_file", None)
        if not path:
            continue
        if values.get(secret):
            raise ConfigError(f"{source}: set {secret} or {secret}_file, not both")
        values[secret] = read_secret_file(str(path), f"{secret}_file")


def auth_version(values: Mapping[str, object]) -> str:
    explicit = str(values.get("auth_version") or "")
    if explicit:
        if explicit not in ("1", "3"):
            raise ConfigError(f"auth_version: {explicit!r} is not 1 (tempauth) or 3 (Keystone)")
        return explicit
    path = urllib.parse.urlsplit(str(values.get("auth_url") or "")).path.rstrip("/")
    return "3" if path.endswith("/v3") else "1"


def secret_setting(values: Mapping[str, object]) -> str:
    """Which secret the configured authentication needs."""
    if auth_version(values) == "1":
        return "key"
    if values.get("application_credential_id") or values.get("application_credential_name"):
        return "application_credential_secret"
    return "password"


def merge(file: dict[str, object], source: str, env: Mapping[str, str],
          overrides: Mapping[str, object]) -> dict[str, object]:
    """The settings of every level, highest first per key (see the module's docstring)."""
    secrets_from_files(file, source)
    environment = from_environment(env)
    values = {**file, **environment, **{k: v for k, v in overrides.items() if v is not None}}
    secret = secret_setting(values)
    directory = env.get("CREDENTIALS_DIRECTORY")
    if directory and secret not in environment:
        path = Path(directory) / CREDENTIAL
        if path.exists():
            values[secret] = read_secret_file(str(path), f"systemd credential {CREDENTIAL}")
    return values


def build_auth(cfg: Config) -> Auth:
    """The credentials `cfg` configures; ConfigError naming what is missing or wrong."""
    where = f" (in {cfg.source}, the command line or the environment)" if cfg.source else ""
    if not cfg.auth_url:
        raise ConfigError(f"setting 'auth_url' is missing{where} (see `cloudfs config-example`)")
    tls = Tls(cfg.cacert, cfg.insecure)
    if cfg.cacert and not Path(cfg.cacert).is_file():
        raise ConfigError(f"cacert {cfg.cacert}: no such file")
    if auth_version({"auth_version": cfg.auth_version, "auth_url": cfg.auth_url}) == "1":
        for key in ("user", "key"):
            if not getattr(cfg, key):
                raise ConfigError(f"setting '{key}' is missing{where} (tempauth v1; "
                                  "see `cloudfs config-example`)")
        return SwiftAuth(cfg.auth_url, cfg.user, cfg.key, storage_url=cfg.storage_url, tls=tls)
    user_domain_id = cfg.user_domain_id or ("" if cfg.user_domain_name else DEFAULT_DOMAIN)
    project_domain_id = cfg.project_domain_id or (
        "" if cfg.project_domain_name else DEFAULT_DOMAIN)
    auth = KeystoneAuth(
        cfg.auth_url, username=cfg.user, user_id=cfg.user_id, password=cfg.password,
        user_domain_name=cfg.user_domain_name, user_domain_id=user_domain_id,
        project_name=cfg.project_name, project_id=cfg.project_id,
        project_domain_name=cfg.project_domain_name, project_domain_id=project_domain_id,
        application_credential_id=cfg.application_credential_id,
        application_credential_name=cfg.application_credential_name,
        application_credential_secret=cfg.application_credential_secret,
        region_name=cfg.region_name, interface=cfg.interface or "public",
        storage_url=cfg.storage_url, tls=tls)
    if (problem := auth.problem()) is not None:
        raise ConfigError(f"Keystone v3: {problem}{where}")
    return auth


# -- the command line ---------------------------------------------------------------------------

# flag -> setting; secrets have no flag on purpose.
FLAGS = (("--auth-url", "auth_url", "auth URL: tempauth v1 (.../auth/v1.0) or Keystone v3 "
          "(.../v3) (also ST_AUTH, OS_AUTH_URL)"),
         ("--auth-version", "auth_version", "1 (tempauth) or 3 (Keystone); default: from the "
          "URL"),
         ("--user", "user", "user name (also ST_USER, OS_USERNAME); secrets come from the "
          "environment, a systemd credential or the config file, never from the command line"),
         ("--project-name", "project_name", "Keystone project (also OS_PROJECT_NAME)"),
         ("--region", "region_name", "region of the object-store endpoint (also OS_REGION_NAME)"),
         ("--interface", "interface", "public, internal or admin endpoint (also OS_INTERFACE)"),
         ("--storage-url", "storage_url", "use this storage URL instead of the catalog's"),
         ("--cacert", "cacert", "CA file that verifies the servers' certificates (also "
          "OS_CACERT)"))


def add_arguments(group: argparse._ArgumentGroup) -> None:
    for flag, _, text in FLAGS:
        group.add_argument(flag, help=text)
    group.add_argument("--insecure", action="store_true", default=None,
                       help="do not verify TLS certificates (logs a warning at every start)")


def overrides(args: argparse.Namespace) -> dict[str, object]:
    found = {key: getattr(args, flag[2:].replace("-", "_"), None) for flag, key, _ in FLAGS}
    found["insecure"] = getattr(args, "insecure", None)
    return found
