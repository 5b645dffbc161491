"""LocalSpace: the local-disk budget of spools and the write cache, on the real disk."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from seqwrite.space import LocalSpace


def test_limit_headroom_and_give(tmp_path: Path) -> None:
    space = LocalSpace(str(tmp_path), 10_000, reserve=0, headroom=3_000)
    assert space.try_take(7_000, keep=space.headroom)  # the cache may use up to limit-headroom
    assert not space.try_take(1, keep=space.headroom)
    assert space.take_up_to(5_000, least=1) == 3_000  # a spool may use the headroom
    assert space.take_up_to(5_000, least=1) == 0
    space.give(4_000)
    assert space.available() == 4_000 and space.used == 6_000


def test_the_disk_binds_before_the_limit(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    space = LocalSpace(str(tmp_path), 10 * free, reserve=free - 1_000_000)
    assert 0 < space.available() <= 1_000_000
    assert not space.try_take(2_000_000)


class Later:
    """Counted bytes a writer has not written yet."""

    def __init__(self, n: int) -> None:
        self.n = n

    def unwritten(self) -> int:
        return self.n


def test_counted_but_unwritten_bytes_are_not_counted_twice_as_free(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    space = LocalSpace(str(tmp_path), 10 * free, reserve=free - 1_000_000)
    writer = Later(600_000)
    space.track(writer)
    assert space.available() <= 400_000
    space.untrack(writer)
    assert space.available() > 400_000


async def test_wait_freed_wakes_on_give(tmp_path: Path) -> None:
    space = LocalSpace(str(tmp_path), 100, reserve=0)
    assert space.try_take(100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(space.wait_freed)
        await trio.sleep(0.01)
        space.give(10)
    assert space.try_take(10)
