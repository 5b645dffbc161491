"""The PostgreSQL backend's edges: naming databases, refusing the wrong ones, passwords and
TLS settings, connections that break, and a server that goes away and comes back."""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from pathlib import Path

import psycopg
import pytest

from devtools import ports
from devtools import postgres as devpostgres
from devtools.postgres import DevPostgres
from sqlfsn import ROOT_INODE, SCHEMA_VERSION, Namespace, errors
from sqlfsn.database import Database, Isolation, describe, sqlite_path

R = ROOT_INODE


def password_of(dev: DevPostgres) -> str:
    return dev.passfile.read_text().strip().rsplit(":", 1)[1]


def test_describe_hides_the_password() -> None:
    assert describe("postgresql://u:s3cret@h:5/db?sslmode=require") == (
        "postgresql://u:***@h:5/db?sslmode=require"
    )
    assert describe("postgresql://u@h/db") == "postgresql://u@h/db"
    assert describe("/var/lib/cloudfs/ns.db") == "/var/lib/cloudfs/ns.db"


def test_sqlite_urls(tmp_path: Path) -> None:
    assert sqlite_path(f"sqlite://{tmp_path}/ns.db") == f"{tmp_path}/ns.db"
    assert sqlite_path("sqlite:rel.db") == "rel.db"
    with pytest.raises(errors.NotAFilesystem, match="local file"):
        sqlite_path("sqlite://otherhost/ns.db")
    with Namespace.open(f"sqlite://{tmp_path}/ns.db", create=True) as ns:
        ns.mkdir(R, b"d", 0o755, 0, 0)
    with Namespace.open(tmp_path / "ns.db") as ns:
        assert ns.lookup(R, b"d").nlink == 2


def test_empty_database_needs_create(pg_url: str) -> None:
    with pytest.raises(errors.NotAFilesystem, match="empty database"):
        Namespace.open(pg_url)
    with Namespace.open(pg_url, create=True) as ns:
        assert ns.database == pg_url
        assert ns.check() == []


def test_database_of_something_else_is_refused(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as raw:
        raw.execute("CREATE TABLE photos (id integer)")
    with pytest.raises(errors.NotAFilesystem, match="something else.*photos"):
        Namespace.open(pg_url, create=True)
    with psycopg.connect(pg_url, autocommit=True) as raw:
        assert raw.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'inode'"
                           ).fetchone() == (0,)  # nothing was created beside it


def test_newer_schema_version_is_refused(pg_url: str) -> None:
    Namespace.open(pg_url, create=True).close()
    with psycopg.connect(pg_url, autocommit=True) as raw:
        raw.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'",
                    (str(SCHEMA_VERSION + 1),))
    with pytest.raises(errors.NotAFilesystem, match="newer than.*upgrade cloudfs"):
        Namespace.open(pg_url)


def test_schema_comments_do_not_need_sqlite(pg_url: str) -> None:
    """The same specification: every table of schema.py exists with its checks."""
    with Namespace.open(pg_url, create=True), psycopg.connect(pg_url) as raw:
        with pytest.raises(psycopg.errors.CheckViolation):
            raw.execute("INSERT INTO dentry (parent, name, inode) VALUES (1, '\\x2f'::bytea, 1)")
        raw.rollback()
        with pytest.raises(psycopg.errors.CheckViolation):
            raw.execute("INSERT INTO content VALUES ('ABC', 1, 'live', 0, NULL)")


def test_unreachable_server_is_one_clear_error() -> None:
    port = ports.find_free_port_range(1)
    url = f"postgresql://cloudfs:hunter2@127.0.0.1:{port}/cloudfs"
    started = time.monotonic()
    with pytest.raises(errors.Unavailable) as info:
        Namespace.open(url)
    assert time.monotonic() - started < 5
    text = str(info.value)
    assert "\n" not in text and "hunter2" not in text and "***" in text
    assert "cannot connect" in text and str(port) in text


def test_password_from_pgpassword_and_wrong_password(
    dev_postgres: DevPostgres, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Namespace.open(pg_url, create=True).close()
    name = urllib.parse.urlsplit(pg_url).path.lstrip("/")
    plain = f"postgresql://cloudfs@127.0.0.1:{dev_postgres.port}/{name}"
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    monkeypatch.setenv("PGPASSWORD", password_of(dev_postgres))
    with Namespace.open(plain) as ns:
        assert ns.check() == []
    monkeypatch.delenv("PGPASSWORD")
    wrong = f"postgresql://cloudfs:not-the-password@127.0.0.1:{dev_postgres.port}/{name}"
    with pytest.raises(errors.Unavailable, match="password authentication failed") as info:
        Namespace.open(wrong)
    assert "not-the-password" not in str(info.value)


def test_sslmode_is_honoured(dev_postgres: DevPostgres, pg_url: str) -> None:
    """The dev server has no TLS: sslmode=require must refuse it, not fall back (over TCP:
    libpq never uses TLS on a Unix socket)."""
    tcp = dev_postgres.url(urllib.parse.urlsplit(pg_url).path.lstrip("/"))
    with pytest.raises(errors.Unavailable, match="SSL"):
        Namespace.open(tcp + "&sslmode=require", create=True)
    with Namespace.open(tcp + "&sslmode=disable", create=True) as ns:
        assert ns.check() == []


def test_bad_urls(dev_postgres: DevPostgres) -> None:
    with pytest.raises(errors.NotAFilesystem, match="not a PostgreSQL URL") as info:
        Namespace.open("postgresql://u:sekrit@h:notaport/db?nonsense_option=1")
    assert "sekrit" not in str(info.value)
    missing = dev_postgres.url("no_such_database", socket=True)
    with pytest.raises(errors.Unavailable, match='database "no_such_database" does not exist'):
        Namespace.open(missing, create=True)


def backend_pid(ns: Namespace) -> int:
    return ns._db._conn.info.backend_pid  # type: ignore[attr-defined]


def test_a_killed_connection_is_replaced(pg_url: str) -> None:
    """The server ends the connection between operations (a restart, an administrator):
    the next read and the next write just work, on a new connection."""
    ns = Namespace.open(pg_url, create=True)
    ns.mkdir(R, b"d", 0o755, 0, 0)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid(ns),))
        assert ns.lookup(R, b"d").nlink == 2  # a read outside a transaction: run again
        admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid(ns),))
        ns.mkdir(R, b"e", 0o755, 0, 0)  # a transaction: BEGIN on a new connection
    assert ns.check() == []
    ns.close()


def test_a_connection_found_dead_at_begin_is_replaced(pg_url: str) -> None:
    """The server ended the connection a while ago (its goodbye is already in the socket):
    the BEGIN of the next write finds it dead; the transaction is begun again on a new
    connection, and the one after works too (a BEGIN that failed used to stay "in progress",
    so that every later transaction failed with "transactions do not nest")."""
    ns = Namespace.open(pg_url, create=True)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        for name in (b"d", b"e"):
            first = backend_pid(ns)
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            time.sleep(0.3)
            ns.mkdir(R, name, 0o755, 0, 0)
            assert backend_pid(ns) != first
    ns.mkdir(R, b"f", 0o755, 0, 0)
    assert [e.name for e in ns.readdir(R)] == [b"d", b"e", b"f"]
    assert ns.check() == []
    ns.close()


def test_connection_killed_inside_a_transaction_is_run_again(pg_url: str) -> None:
    """The connection dies while a create waits for a lock (nothing committed yet): the
    transaction is run again on a new connection, once, and the create happens once."""
    ns = Namespace.open(pg_url, create=True)
    done: list[object] = []
    with psycopg.connect(pg_url) as blocker, psycopg.connect(pg_url, autocommit=True) as admin:
        blocker.execute("SELECT 1 FROM inode WHERE id = 1 FOR UPDATE")
        first = backend_pid(ns)
        worker = threading.Thread(target=lambda: done.append(ns.create(R, b"f", 0o644, 0, 0)))
        worker.start()
        deadline = time.monotonic() + 10
        while admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                            (first,)).fetchone() != ("Lock",):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        time.sleep(0.2)
        blocker.rollback()
        worker.join(10)
    assert len(done) == 1 and backend_pid(ns) != first
    assert [e.name for e in ns.readdir(R)] == [b"f"]
    assert ns.check() == []
    ns.close()


@pytest.mark.slow
def test_server_going_away_and_coming_back() -> None:
    """Its own cluster, stopped under an open namespace: operations fail with Unavailable
    (one line, no driver exception) while it is down, and work again once it is back."""
    dev = devpostgres.start_throwaway(fast=True, die_with_parent=True)
    try:
        url = devpostgres.create_database(dev, "away")
        ns = Namespace.open(url, create=True)
        ns.mkdir(R, b"before", 0o755, 0, 0)
        devpostgres.stop(dev.dir)
        for operation in (lambda: ns.lookup(R, b"before"),
                          lambda: ns.mkdir(R, b"during", 0o755, 0, 0),
                          lambda: ns.check()):
            with pytest.raises(errors.Unavailable) as info:
                operation()
            assert re.fullmatch(r"database unavailable: postgresql://cloudfs@127\.0\.0\.1:\d+/"
                                r"away\?passfile=\S+: .+", str(info.value)), str(info.value)
        devpostgres.start(dev.dir, dev.port, fast=True, die_with_parent=True)
        ns.mkdir(R, b"after", 0o755, 0, 0)
        assert [e.name for e in ns.readdir(R)] == [b"before", b"after"]
        assert ns.check() == []
        ns.close()
    finally:
        devpostgres.remove(dev.dir)


def test_a_failed_transaction_leaves_no_statement_half_prepared(pg_url: str) -> None:
    """Statements are prepared on the server inside transactions too (psycopg does it at a
    statement's fifth run). A transaction whose pipeline fails just when a statement is to be
    prepared is rolled back, and the next runs of that statement work. psycopg, in pipeline
    mode, believed the skipped PREPARE done, and the next run failed with 'prepared statement
    "_pg3_1" does not exist' (the three-mount storm test met it as an EIO at close), until
    a failed pipeline made the connection forget what it prepared (postgres.py)."""
    ns = Namespace.open(pg_url, create=True)
    db = ns._db
    read = ("SELECT value FROM meta WHERE key = ?", ("schema_version",))
    # Every third run behind a failing statement, then good runs only. psycopg forgets its
    # record itself at the first explicit ROLLBACK it sees, not at the later ones.
    plan = [False, False, True] * 5 + [False] * 8
    failures: list[str] = []
    for fail in plan:
        db.begin(Isolation.LOCKS)
        try:
            if fail:
                db.execute("SELECT 1/0")  # queued: the pipeline fails here
            assert db.execute(*read).fetchone() == (str(SCHEMA_VERSION),)
            db.commit()
        except Exception as exc:
            db.rollback()
            failures.append(str(exc))
    assert len(failures) == 5 and all("division by zero" in f for f in failures), failures
    prepared = db.execute("SELECT count(*) FROM pg_prepared_statements"
                          " WHERE statement LIKE 'SELECT value FROM meta%'").fetchone()[0]
    assert prepared == 1  # the runs after the last failure prepared it, in transactions
    ns.close()


def test_durable_transactions_keep_the_databases_commit_setting(pg_url: str) -> None:
    """A PostgreSQL session commits without waiting for the WAL flush; a durable transaction
    runs with the database's own synchronous_commit (here 'local', as an operator may set
    'remote_apply' for synchronous replication), a lazy one with 'off'."""
    ns = Namespace.open(pg_url, create=True)
    name = ns._db.execute("SELECT current_database()").fetchone()[0]
    ns._db.execute_ddl(f'ALTER DATABASE "{name}" SET synchronous_commit = local')
    ns.close()
    ns = Namespace.open(pg_url)
    try:
        def level(db: Database) -> str:
            return str(db.execute("SHOW synchronous_commit").fetchone()[0])

        assert ns._write(level) == "local"
        with ns.lazily():
            assert ns._write(level) == "off"
        assert ns._db.execute("SHOW synchronous_commit").fetchone()[0] == "off"
    finally:
        ns._db.execute_ddl(f'ALTER DATABASE "{name}" RESET synchronous_commit')
        ns.close()
