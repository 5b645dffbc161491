"""The directory attributes a mount keeps from its own last create or unlink
(cloudfs/knowndir.py): given only while nothing could have changed them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from cloudfs import knowndir
from cloudfs.knowndir import KnownDir
from sqlfsn import Attr


@dataclass
class Ns:
    """What KnownDir reads of a Namespace."""

    commits: int = 0
    touched_dir: tuple[Attr, int] | None = None


def attr(inode: int, mtime: int) -> Attr:
    return Attr(inode, 0o40755, 2, 0, 0, 0, 0, mtime, mtime, mtime, 0)


def known_after_a_change(ns: Ns, inode: int = 5) -> KnownDir:
    ns.commits += 1
    ns.touched_dir = (attr(inode, ns.commits), ns.commits)
    k = KnownDir(ns)  # type: ignore[arg-type]
    k.note()
    return k


def test_given_for_that_directory_only_until_anything_commits() -> None:
    ns = Ns()
    k = known_after_a_change(ns)
    assert k.get(5) == attr(5, 1)
    assert k.get(6) is None
    ns.commits += 1  # any other change made through this mount
    assert k.get(5) is None


def test_not_given_once_another_mount_was_heard() -> None:
    ns = Ns()
    k = known_after_a_change(ns)
    knowndir.heard[0] += 1
    assert k.get(5) is None


def test_not_given_when_the_change_kept_nothing() -> None:
    ns = Ns()
    k = known_after_a_change(ns)
    ns.touched_dir = None  # SQLite, or a change that returned no directory
    k.note()
    assert k.get(5) is None


def test_not_given_after_the_kernels_own_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = Ns()
    k = known_after_a_change(ns)
    later = time.monotonic() + knowndir.ATTR_TIMEOUT
    monkeypatch.setattr(knowndir.time, "monotonic", lambda: later)
    assert k.get(5) is None
