"""Fixtures of the sqlfsn tests: a settable clock and namespaces in memory and on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlfsn import Namespace

#: Time the fake clock starts at (2025-ish, in ns), so times are realistic but exact.
START_NS = 1_750_000_000_000_000_000


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


@pytest.fixture(params=["memory", "file"])
def ns(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> Iterator[Namespace]:
    """A fresh namespace, once in memory and once in a WAL file."""
    path = ":memory:" if request.param == "memory" else str(tmp_path / "ns.db")
    namespace = Namespace.open(path, create=True, clock=clock)
    yield namespace
    namespace.close()


@pytest.fixture
def file_ns(clock: FakeClock, db_path: Path) -> Iterator[Namespace]:
    """A fresh namespace in a WAL file (for tests that open it a second time)."""
    namespace = Namespace.open(db_path, create=True, clock=clock)
    yield namespace
    namespace.close()
