"""Fixtures of the sqlfsn tests: a settable clock and namespaces on every backend.

    ns        a fresh namespace: SQLite in memory, SQLite in a WAL file, and PostgreSQL (a fresh
              database on the session's dev cluster): every test taking it runs three times.
    spec      the name of a fresh, empty database to open (possibly several times): an SQLite
              file path, or a PostgreSQL URL.
    file_ns   a fresh namespace in an SQLite file (db_path), for SQLite-only tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlfsn import Namespace

#: Time the fake clock starts at (2025-ish, in ns), so times are realistic but exact.
START_NS = 1_750_000_000_000_000_000

BACKENDS = ["memory", "file", "postgresql"]


class FakeClock:
    """A clock that only moves when told: ``clock.advance(ns)`` or ``clock.now = t``."""

    def __init__(self, now: int = START_NS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ns: int = 1_000) -> int:
        self.now += ns
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ns.db"


def _spec(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "memory":
        return ":memory:"
    if backend == "file":
        return str(tmp_path / "ns.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["file", "postgresql"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: an SQLite file, then a PostgreSQL database."""
    return _spec(request, request.param, tmp_path)


@pytest.fixture(params=BACKENDS)
def ns(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> Iterator[Namespace]:
    """A fresh namespace: in memory, in a WAL file, and in PostgreSQL."""
    namespace = Namespace.open(_spec(request, request.param, tmp_path), create=True, clock=clock)
    yield namespace
    namespace.close()


@pytest.fixture
def file_ns(clock: FakeClock, db_path: Path) -> Iterator[Namespace]:
    """A fresh namespace in a WAL file (for tests that open it a second time)."""
    namespace = Namespace.open(db_path, create=True, clock=clock)
    yield namespace
    namespace.close()
