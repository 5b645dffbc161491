"""A real PostgreSQL on 127.0.0.1 for development and tests (`cloudfs dev-postgres`).

This module owns a dev PostgreSQL's lifecycle: the cluster (`initdb`, once per DIR), its
configuration, the one server process (the postmaster; its own children die with it), its pid
file, readiness, and shutdown. The binaries are Debian's (package `postgresql`, installed by
scripts/install), found in /usr/lib/postgresql/*/bin: not on PATH, and never the system's
service. Its Python API serves the tests and the benchmarks: `start()`, `stop()`, `status()`,
`running()`, `find_free_port()`, `create_database()`, `drop_database()`, and for
throwaway clusters `start_throwaway()`, `remove()`; devtools/cli.py makes
it `cloudfs dev-postgres`.

Layout of DIR:
    etc/   postgresql.conf (port, sockets, durability), instance.json, pgpass (0600)
    data/  the cluster (PGDATA; survives stop/start)
    log/   postgres.log (the server's output)
    run/   postgres.pid, the Unix socket, lock

Access: role `cloudfs` (superuser), password authentication (scram-sha-256) on 127.0.0.1
and the socket, the random password kept in DIR/etc/pgpass, which the printed URL names
(`passfile=`), so the URL itself carries no secret. Database `cloudfs` is created on the
first start.

Facts this relies on (measured on the development machines): `initdb` and `postgres` refuse
to run as root, so as root they run as the `postgres` system user, which must own data/ and
run/ and be able to reach DIR; `initdb --no-sync` takes ~1.3 s, a start ~1 s.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools import ports, process
from devtools.errors import ServiceError, UsageError

log = logging.getLogger(__name__)

DEFAULT_PORT = 5433  # not 5432: a system PostgreSQL may hold that one
ROLE = "cloudfs"
DATABASE = "cloudfs"
NAME = "postgres"  # the process's name in run/ and log/
START_TIMEOUT = 60.0
SYSTEM_USER = "postgres"  # who runs initdb and the server when we are root


class DevPostgresError(ServiceError):
    """The dev PostgreSQL failed to start (the message carries the server log's tail)."""


@dataclass(frozen=True)
class DevPostgres:
    """A running dev PostgreSQL."""

    port: int
    dir: Path

    @property
    def passfile(self) -> Path:
        return self.dir / "etc" / "pgpass"

    def url(self, database: str = DATABASE, *, socket: bool = False) -> str:
        """The libpq URL of `database` (no password in it: `passfile=` names where it is),
        over TCP to 127.0.0.1, or (`socket`) over the Unix socket in DIR/run: faster, for
        clients on this host."""
        if socket:
            return (f"postgresql://{ROLE}@/{database}?host={self.dir / 'run'}&port={self.port}"
                    f"&passfile={self.passfile}")
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}?passfile={self.passfile}"


def bindir() -> Path:
    """The directory of Debian's PostgreSQL server binaries (the newest version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise DevPostgresError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/"
                               "postgres): run scripts/install (or apt-get install postgresql)")
    return Path(found[-1]).parent


def find_free_port() -> int:
    return ports.find_free_port_range(1)


# ------------------------------------------------------------------------------ running as

def _server_user() -> tuple[int, int] | None:
    """(uid, gid) the server runs as: the postgres system user when we are root, else None
    (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise DevPostgresError(f"running as root needs the '{SYSTEM_USER}' system user (made by "
                               "Debian's postgresql package): run scripts/install") from None
    return pw.pw_uid, pw.pw_gid


def _become(ids: tuple[int, int] | None) -> Callable[[], None] | None:
    if ids is None:
        return None
    uid, gid = ids

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return drop


def _check_reachable(dir: Path, ids: tuple[int, int] | None) -> None:
    """UsageError unless the server's user can reach DIR (search permission on its parents)."""
    if ids is None:
        return
    for parent in [dir, *dir.parents]:
        st = parent.stat()
        if st.st_uid == ids[0] or st.st_mode & 0o001 or (st.st_gid == ids[1] and
                                                          st.st_mode & 0o010):
            continue
        raise UsageError(f"the '{SYSTEM_USER}' user cannot reach {dir}: {parent} is not "
                         "searchable by others (chmod o+x it, or choose another DIR)")


def _own(path: Path, ids: tuple[int, int] | None) -> None:
    if ids is not None:
        os.chown(path, *ids)


# ------------------------------------------------------------------------------ cluster

def _instance_state(dir: Path) -> dict[str, Any]:
    path = dir / "etc" / "instance.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(dir: Path, state: dict[str, Any]) -> None:
    process.write_private(dir / "etc" / "instance.json", json.dumps(state, indent=1) + "\n")


def _initdb(dir: Path, ids: tuple[int, int] | None) -> None:
    """Create the cluster in DIR/data with role cloudfs and a random password (in pgpass)."""
    data = dir / "data"
    data.mkdir(mode=0o700)
    _own(data, ids)
    password = secrets.token_hex(16)
    pwfile = dir / "run" / "initdb.pw"  # readable by the server's user for initdb's run only
    process.write_private(pwfile, password + "\n")
    _own(pwfile, ids)
    try:
        proc = subprocess.run(
            [str(bindir() / "initdb"), "-D", str(data), "-U", ROLE, f"--pwfile={pwfile}",
             "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, preexec_fn=_become(ids), cwd=dir,
            env=process.clean_env(),
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-process.LOG_TAIL_LINES:])
        with contextlib.suppress(OSError):
            subprocess.run(["rm", "-rf", str(data)], check=False)
        raise DevPostgresError(f"initdb failed ({proc.returncode}):\n{tail}")
    process.write_private(dir / "etc" / "pgpass", f"*:*:*:{ROLE}:{password}\n")


def _write_config(dir: Path, port: int, fast: bool) -> Path:
    """DIR/etc/postgresql.conf: ours, including the cluster's own for everything else."""
    conf = dir / "etc" / "postgresql.conf"
    lines = [
        f"include = '{dir / 'data' / 'postgresql.conf'}'",
        f"data_directory = '{dir / 'data'}'",
        f"hba_file = '{dir / 'data' / 'pg_hba.conf'}'",
        f"ident_file = '{dir / 'data' / 'pg_ident.conf'}'",
        f"port = {port}",
        "listen_addresses = '127.0.0.1'",
        f"unix_socket_directories = '{dir / 'run'}'",
        "max_connections = 200",
        "log_min_messages = warning",
        "log_line_prefix = '%m [%p] '",
    ]
    if fast:
        # Throwaway clusters of the tests: no durability, the numbers say nothing about it.
        lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off",
                  "deadlock_timeout = 100ms"]
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _command(dir: Path) -> list[str]:
    """The server's command line; it names DIR/etc/ (how `process.is_running` knows it)."""
    return [str(bindir() / "postgres"), f"--config-file={dir / 'etc' / 'postgresql.conf'}"]


def _wait_ready(dev: DevPostgres, pid: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if not process.is_running(pid, dev.dir):
            raise DevPostgresError(f"the server (pid {pid}) exited")
        try:
            _admin(dev, lambda conn: conn.execute("SELECT 1"))
            return
        except ServiceError:
            pass
        if time.monotonic() > deadline:
            raise DevPostgresError(f"not accepting connections after {START_TIMEOUT:.0f} s")
        time.sleep(0.1)


def _admin(dev: DevPostgres, action: Callable[[Any], Any]) -> Any:
    """Run `action(connection)` on the `postgres` database (autocommit)."""
    import psycopg

    try:
        with psycopg.connect(dev.url("postgres", socket=True), autocommit=True,
                             connect_timeout=5) as conn:
            return action(conn)
    except psycopg.OperationalError as exc:
        raise ServiceError(str(exc).strip().splitlines()[0]) from exc


def create_database(dev: DevPostgres, name: str, *, socket: bool = False) -> str:
    """Create the empty database `name`; its URL (see `DevPostgres.url`)."""
    from psycopg import sql

    _admin(dev, lambda c: c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))))
    return dev.url(name, socket=socket)


def drop_database(dev: DevPostgres, name: str) -> None:
    """Drop database `name` if it exists, disconnecting its clients."""
    from psycopg import sql

    _admin(dev, lambda c: c.execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))))


# ------------------------------------------------------------------------------ API

def status(dir: Path) -> dict[str, Any]:
    """{"dir", "port", "pid", "running"}."""
    dir = Path(dir).absolute()
    pid = process.read_pid(dir, NAME)
    return {"dir": str(dir), "port": _instance_state(dir).get("port"), "pid": pid,
            "running": pid is not None and process.is_running(pid, dir)}


def running(dir: Path) -> DevPostgres | None:
    """DIR's dev PostgreSQL if its server runs, else None."""
    st = status(dir)
    return DevPostgres(st["port"], Path(st["dir"])) if st["running"] else None


def start(dir: Path, port: int = DEFAULT_PORT, *, fast: bool = False,
          die_with_parent: bool = False) -> DevPostgres:
    """Start DIR's dev PostgreSQL on 127.0.0.1:port (creating the cluster on first use) and
    wait until it accepts connections.

    If it already runs with the same port and `fast`, returns it as is; with other settings,
    UsageError. A busy port is UsageError. `fast` turns durability off (fsync, synchronous
    commit, full page writes): for throwaway test clusters only. `die_with_parent`: the
    server gets SIGINT (fast shutdown) when the calling *thread* exits (call it from the main
    thread). Any other failure stops what was started and raises DevPostgresError with the
    server log's tail.
    """
    if die_with_parent and threading.current_thread() is not threading.main_thread():
        raise ValueError("die_with_parent needs the main thread (PDEATHSIG follows the thread)")
    dir = Path(dir).absolute()
    ids = _server_user()
    for sub in ("etc", "log", "run"):
        (dir / sub).mkdir(parents=True, exist_ok=True)
    _check_reachable(dir, ids)
    _own(dir / "run", ids)
    with process.locked(dir / "run" / "lock"):
        state = _instance_state(dir)
        wanted = {"port": port, "fast": fast}
        current = status(dir)
        if current["running"]:
            if all(state.get(k) == v for k, v in wanted.items()):
                return DevPostgres(port, dir)
            raise UsageError(f"the dev PostgreSQL in {dir} already runs with other settings "
                             f"(port {state.get('port')}, fast {state.get('fast')}): stop it first")
        if ports.port_in_use(port):
            raise UsageError(f"port {port} is already in use: choose another --port")
        if not (dir / "data" / "PG_VERSION").exists():
            _initdb(dir, ids)
        _write_config(dir, port, fast)
        _save_state(dir, {**state, **wanted})
        dev = DevPostgres(port, dir)
        try:
            pid = process.spawn(_command(dir), dir, NAME, die_with_parent=die_with_parent,
                                user=_become(ids), death_signal=signal.SIGINT)
            _wait_ready(dev, pid)
            if not state.get("database_created"):
                create_database(dev, DATABASE)
                _save_state(dir, {**state, **wanted, "database_created": True})
        except BaseException as exc:
            tail = process.log_tails(dir, [NAME])
            _stop_locked(dir)
            if isinstance(exc, ServiceError):
                raise DevPostgresError(f"dev PostgreSQL in {dir} failed to start: {exc}\n"
                                       f"{tail}") from exc
            raise
    return dev


def start_throwaway(*, fast: bool = True, die_with_parent: bool = False,
                    parent: Path | None = None) -> DevPostgres:
    """A dev PostgreSQL in a new directory under `parent` (default /tmp: the `postgres` user
    must reach it, which pytest's private tmp dirs forbid), on a free port (retrying if
    another process takes it between the check and the start). `remove()` it when done; it
    is also stopped and removed at exit at the latest."""
    dir = Path(tempfile.mkdtemp(prefix="cloudfs-pg-", dir=parent))
    dir.chmod(0o755)
    atexit.register(remove, dir)
    for attempt in range(3):
        try:
            return start(dir, find_free_port(), fast=fast, die_with_parent=die_with_parent)
        except UsageError:
            if attempt == 2:
                remove(dir)
                raise
    raise AssertionError("unreachable")


def remove(dir: Path) -> None:
    """Stop DIR's server and delete DIR."""
    stop(dir)
    shutil.rmtree(dir, ignore_errors=True)


def stop(dir: Path) -> None:
    """Stop DIR's server by the pid in DIR/run: SIGINT (fast shutdown: clients are
    disconnected, the data is kept), SIGKILL after ~10 s. Idempotent."""
    process.stop_dir(dir, _stop_locked)


def _stop_locked(dir: Path) -> None:
    process.stop_all(dir, [NAME], "dev PostgreSQL", first=signal.SIGINT)
