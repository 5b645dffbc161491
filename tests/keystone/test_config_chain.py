"""The credentials chain (wiring/credentials.py): command line, then the environment (OS_*,
ST_*, then the systemd credential), then the config file, then the defaults. No Swift needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seqwrite import KeystoneAuth, SwiftAuth
from wiring import credentials
from wiring.config import _FIELDS, EXAMPLE, ConfigError, load

KS = "https://keystone.example:5000/v3"


def conf(tmp_path: Path, swift: str, name: str = "c.conf") -> Path:
    path = tmp_path / name
    path.write_text(f"[swift]\n{swift}\n[cloudfs]\ndatabase = {tmp_path / 'ns.db'}\n")
    path.chmod(0o600)
    return path


def secret_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_tempauth_from_the_file(tmp_path):
    cfg = load(conf(tmp_path, "auth_url = http://h:8080/auth/v1.0\nuser = a:b\nkey = k1"), env={})
    assert cfg.auth == SwiftAuth("http://h:8080/auth/v1.0", "a:b", "k1")


def test_environment_beats_the_file_and_the_command_line_beats_both(tmp_path):
    path = conf(tmp_path, "auth_url = http://file/auth/v1.0\nuser = a:file\nkey = kfile")
    env = {"ST_AUTH": "http://env/auth/v1.0", "ST_USER": "a:env"}
    cfg = load(path, env=env)
    assert (cfg.auth_url, cfg.user, cfg.key) == ("http://env/auth/v1.0", "a:env", "kfile")
    cfg = load(path, env=env, overrides={"user": "a:flag", "auth_url": None})
    assert (cfg.auth_url, cfg.user, cfg.key) == ("http://env/auth/v1.0", "a:flag", "kfile")


def test_openstack_variables_give_keystone_with_an_application_credential(tmp_path):
    env = {"OS_AUTH_URL": "https://auth.example/", "OS_APPLICATION_CREDENTIAL_ID": "abc",
           "OS_APPLICATION_CREDENTIAL_SECRET": "s3cr3t", "OS_REGION_NAME": "GRA",
           "OS_INTERFACE": "internal", "OS_CACERT": str(secret_file(tmp_path, "ca.pem", "x"))}
    auth = load(conf(tmp_path, "container = c"), env=env).auth
    assert isinstance(auth, KeystoneAuth) and auth.uses_application_credential
    assert (auth.auth_url, auth.application_credential_id) == ("https://auth.example/", "abc")
    assert (auth.region_name, auth.interface, auth.tls.cacert) == ("GRA", "internal",
                                                                   str(tmp_path / "ca.pem"))
    assert "s3cr3t" not in repr(auth)


def test_ovh_style_openrc(tmp_path):
    """What OVH's openrc.sh exports: tenant names, the endpoint type with its old suffix."""
    env = {"OS_AUTH_URL": "https://auth.cloud.ovh.net/v3", "OS_IDENTITY_API_VERSION": "3",
           "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
           "OS_TENANT_ID": "0123abcd", "OS_TENANT_NAME": "4567", "OS_USERNAME": "user-xyz",
           "OS_PASSWORD": "pw", "OS_REGION_NAME": "GRA", "OS_ENDPOINT_TYPE": "publicURL"}
    auth = load(None, env=env).auth
    assert isinstance(auth, KeystoneAuth) and not auth.uses_application_credential
    assert (auth.username, auth.password, auth.project_id, auth.project_name) == (
        "user-xyz", "pw", "0123abcd", "4567")
    assert (auth.user_domain_name, auth.interface, auth.region_name) == ("Default", "public",
                                                                        "GRA")


def test_keystone_from_the_file_with_a_password_file_and_default_domains(tmp_path):
    pw = secret_file(tmp_path, "pw", "from-file")
    cfg = load(conf(tmp_path, f"auth_url = {KS}\nuser = u\nproject_name = p\n"
                              f"password_file = {pw}"), env={})
    auth = cfg.auth
    assert isinstance(auth, KeystoneAuth)
    assert (auth.username, auth.password, auth.project_name) == ("u", "from-file", "p")
    assert (auth.user_domain_id, auth.project_domain_id) == ("default", "default")


def test_systemd_credential_beats_the_file_and_a_variable_beats_the_credential(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    secret_file(creds, credentials.CREDENTIAL, "from-credential")
    path = conf(tmp_path, f"auth_url = {KS}\nuser = u\nproject_name = p\npassword = in-file")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert load(path, env=env).password == "from-credential"
    assert load(path, env={**env, "OS_PASSWORD": "from-env"}).password == "from-env"
    assert load(path, env={}).password == "in-file"
    # The credential holds whichever secret the configured authentication needs.
    tempauth = conf(tmp_path, "auth_url = http://h/auth/v1.0\nuser = a:b", "t.conf")
    assert load(tempauth, env=env).key == "from-credential"
    app = conf(tmp_path, f"auth_url = {KS}\napplication_credential_id = i", "a.conf")
    assert load(app, env=env).application_credential_secret == "from-credential"


@pytest.mark.parametrize("swift, env, message", [
    ("password = a\npassword_file = /etc/passwd", {}, "password or password_file, not both"),
    ("password_file = /nonexistent/pw", {}, "password_file /nonexistent/pw: No such file"),
    ("", {"ST_AUTH": "http://a/auth/v1.0", "OS_AUTH_URL": KS}, "both ST_AUTH"),
    (f"auth_url = {KS}\nuser = u\npassword = x", {}, "project_name (or project_id) is missing"),
    (f"auth_url = {KS}\nuser = u\nproject_name = p", {}, "password is missing"),
    (f"auth_url = {KS}\napplication_credential_name = n\napplication_credential_secret = s",
     {}, "needs user"),
    (f"auth_url = {KS}\napplication_credential_id = i\napplication_credential_secret = s\n"
     "interface = private", {}, "interface must be one of public, internal, admin"),
    (f"auth_url = {KS}\napplication_credential_id = i\napplication_credential_secret = s\n"
     "cacert = /nonexistent/ca.pem", {}, "cacert /nonexistent/ca.pem: no such file"),
    ("auth_url = http://h/auth/v1.0\nuser = a:b\nauth_version = 2", {}, "auth_version"),
    ("auth_url = http://h/auth/v1.0\nuser = a:b", {}, "'key' is missing"),
    ("user = a:b\nkey = k", {}, "'auth_url' is missing"),
])
def test_config_errors_name_the_setting_and_never_the_secret(tmp_path, swift, env, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load(conf(tmp_path, swift), env=env).auth  # noqa: B018
    assert "s3cr3t" not in str(err.value)


def test_version_comes_from_the_url_unless_set(tmp_path):
    base = "user = u\nproject_name = p\npassword = x\nkey = k\n"
    assert isinstance(load(conf(tmp_path, f"auth_url = {KS}/\n{base}"), env={}).auth,
                      KeystoneAuth)
    assert isinstance(load(conf(tmp_path, f"auth_url = http://h/auth/v1.0\n{base}"),
                           env={}).auth, SwiftAuth)
    explicit = load(conf(tmp_path, f"auth_url = https://h:5000\nauth_version = 3\n{base}"),
                    env={})
    assert isinstance(explicit.auth, KeystoneAuth)


def test_every_key_is_documented_in_the_example():
    for section, keys in _FIELDS.items():
        assert f"[{section}]" in EXAMPLE
        for key in keys:
            assert f"\n{key} =" in EXAMPLE or f"\n#{key} =" in EXAMPLE, key


def test_the_example_is_a_valid_config(tmp_path):
    path = tmp_path / "example.conf"
    path.write_text(EXAMPLE)
    path.chmod(0o600)
    assert isinstance(load(path, env={}).auth, SwiftAuth)


def run(program: str, *options: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`cloudfs mkfs OPTIONS` or `ccd OPTIONS once` (ccd's options precede the command)."""
    argv = (["cloudfs", "mkfs", *options] if program == "cloudfs"
            else ["ccd.cli", *options, "once"])
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                          env=env, timeout=60)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ST_"))}


@pytest.mark.parametrize("program", ["cloudfs", "ccd"])
def test_both_programs_read_the_chain_the_same_way(tmp_path, program):
    """A config error is one line and exit status 2, for cloudfs and ccd alike, and a setting
    from the environment or the command line completes the file's."""
    path = conf(tmp_path, "auth_url = https://127.0.0.1:9/v3\nuser = u\npassword = s3cr3t\n"
                          "retry_deadline = 1")
    out = run(program, "--config", str(path), env=clean_env())
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "project_name (or project_id) is missing" in out.stderr
    for env, flags in (({"OS_PROJECT_NAME": "p"}, ()), ({}, ("--project-name", "p"))):
        out = run(program, "--config", str(path), *flags, env={**clean_env(), **env})
        assert out.returncode == 2 and "project_name" not in out.stderr, out.stderr
        assert "s3cr3t" not in out.stderr and "Traceback" not in out.stderr


def test_a_flag_beats_the_environment(tmp_path):
    """--auth-url wins over OS_AUTH_URL: mkfs then fails reaching the flag's (closed) port."""
    path = conf(tmp_path, f"auth_url = {KS}\nuser = u\npassword = s3cr3t\nretry_deadline = 1")
    out = run("cloudfs", "--config", str(path), "--project-name", "p", "--auth-url",
              "https://127.0.0.1:9/v3", env={**clean_env(), "OS_AUTH_URL": KS})
    assert out.returncode == 2 and "127.0.0.1:9" in out.stderr, out.stderr
    # One error line; a retry slow enough to be told (INFO "retry 3 in ...") may precede it.
    lines = [ln for ln in out.stderr.splitlines() if " INFO seqwrite.retry: " not in ln]
    assert len(lines) == 1 and lines[0].startswith("cloudfs mkfs: "), out.stderr
    assert "s3cr3t" not in out.stderr and "Traceback" not in out.stderr
