"""The `database` setting names an SQLite file or a PostgreSQL database: config, opening
(`wiring.filesystem.open_namespace`, the one place a filesystem's database is opened) and
`cloudfs mkfs`. Failures are one line, exit status 2, and never show a password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from devtools import ports
from sqlfsn import ROOT_INODE, Namespace
from wiring.config import EXAMPLE, ConfigError, load
from wiring.errors import SetupError
from wiring.filesystem import cache_dir, open_namespace


def config_file(tmp_path: Path, database: str, *, swift: object = None,
                container: str = "c", cache: bool = True) -> Path:
    lines = ["[swift]", f"container = {container}"]
    if swift is not None:
        lines += [f"auth_url = {swift.auth_url}", f"user = {swift.user}",  # type: ignore[attr-defined]
                  f"key = {swift.key}"]  # type: ignore[attr-defined]
    lines += ["[cloudfs]", f"database = {database}", "shard_digits = 0"]
    if cache:
        lines.append(f"cache_dir = {tmp_path / 'cache'}")
    path = tmp_path / "cloudfs.conf"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def mkfs(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudfs", "mkfs", "--config", str(config),
                           *extra], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ST_AUTH": ""})


def test_example_documents_both_forms() -> None:
    assert "postgresql://user@host:port/dbname" in EXAMPLE
    assert "sqlite:///path" in EXAMPLE


def test_a_password_in_the_url_is_refused(tmp_path: Path) -> None:
    for url in ("postgresql://u:s3cret@db/fs", "postgresql://u@db/fs?password=s3cret"):
        with pytest.raises(ConfigError, match="passfile") as info:
            load(config_file(tmp_path, url))
        assert "s3cret" not in str(info.value)
    assert load(config_file(tmp_path, "postgresql://u@db/fs?passfile=/p")).database


def test_postgres_needs_a_cache_dir(tmp_path: Path) -> None:
    cfg = load(config_file(tmp_path, "postgresql://u@db/fs", cache=False))
    with pytest.raises(SetupError, match="cache_dir"):
        cache_dir(cfg)
    sqlite_cfg = load(config_file(tmp_path, f"sqlite://{tmp_path}/fs/ns.db", cache=False))
    assert cache_dir(sqlite_cfg) == tmp_path / "fs" / "cache"


def test_open_namespace_on_postgres(tmp_path: Path, pg_url: str) -> None:
    cfg = load(config_file(tmp_path, pg_url))
    with pytest.raises(SetupError, match="no filesystem in .*run `cloudfs mkfs` first"):
        open_namespace(cfg)
    Namespace.open(pg_url, create=True).close()
    ns = open_namespace(cfg)
    assert ns.getattr(ROOT_INODE).nlink == 2
    ns.close()


def test_open_namespace_unreachable_is_one_line(tmp_path: Path) -> None:
    port = ports.find_free_port_range(1)
    cfg = load(config_file(tmp_path, f"postgresql://cloudfs@127.0.0.1:{port}/fs"))
    with pytest.raises(SetupError, match=f"database unavailable: .*:{port}/fs: cannot connect"
                       ) as info:
        open_namespace(cfg)
    assert "\n" not in str(info.value)


def test_mkfs_on_postgres(tmp_path: Path, pg_url: str, dev_swift, swift_container: str) -> None:
    """mkfs creates the schema in an empty database, then refuses it: it holds a filesystem."""
    config = config_file(tmp_path, pg_url, swift=dev_swift, container=swift_container)
    made = mkfs(config)
    assert made.returncode == 0, made.stderr
    assert "created filesystem" in made.stdout and "passfile" in made.stdout
    with Namespace.open(pg_url) as ns:
        assert ns.get_meta("fs_uuid") in made.stdout
        assert ns.check() == []
    again = mkfs(config, "--force")
    assert again.returncode == 2
    assert "already holds a filesystem" in again.stderr and "Traceback" not in again.stderr


def test_mkfs_refuses_a_database_of_something_else(tmp_path: Path, pg_url: str,
                                                   dev_swift, swift_container: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as raw:
        raw.execute("CREATE TABLE invoices (id int)")
    result = mkfs(config_file(tmp_path, pg_url, swift=dev_swift, container=swift_container))
    assert result.returncode == 2
    assert "something else" in result.stderr and "invoices" in result.stderr
    assert "Traceback" not in result.stderr


def test_mkfs_unreachable_database(tmp_path: Path, dev_swift) -> None:
    port = ports.find_free_port_range(1)
    env_password = {"PGPASSWORD": "pw-in-the-environment"}
    config = config_file(tmp_path, f"postgresql://cloudfs@127.0.0.1:{port}/fs", swift=dev_swift)
    result = subprocess.run([sys.executable, "-m", "cloudfs", "mkfs", "--config", str(config)],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "ST_AUTH": "", **env_password})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0], result.stderr
    assert "pw-in-the-environment" not in result.stderr + result.stdout
