"""FileReader's pure logic (pieces, holes, read-ahead, the buffer budget) with a fake object map."""

from __future__ import annotations

import os

import trio

from cloudfs.reader import BlockBudget, FileReader
from sqlfsn import Piece


class FakeObjects:
    """CAS objects in a dict; counts reads."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.reads = 0

    async def read(self, digest: str, offset: int, length: int, *, size_hint: int) -> bytes:
        self.reads += 1
        await trio.sleep(0)
        return self.objects[digest][offset:offset + length]


async def test_pieces_holes_and_ranges():
    a, b = os.urandom(5000), os.urandom(3000)
    objects = FakeObjects({"a" * 64: a, "b" * 64: b})
    pieces = [Piece("a" * 64, 1000, 3000), Piece(None, 0, 500), Piece("b" * 64, 0, 3000)]
    expected = a[1000:4000] + bytes(500) + b
    async with trio.open_nursery() as nursery:
        reader = FileReader(objects, pieces, len(expected), nursery, BlockBudget(4), block=1024)
        for off, size in [(0, 10), (2990, 1000), (3400, 200), (6000, 1000), (6499, 5), (0, 10**6)]:
            assert await reader.read(off, size) == expected[off:off + size]
        reader.close()


async def test_idle_readers_holding_every_buffer_do_not_block_others():
    data = os.urandom(64 * 1024)
    objects = FakeObjects({"c" * 64: data})
    budget = BlockBudget(2)
    async with trio.open_nursery() as nursery:
        idle = FileReader(objects, [Piece("c" * 64, 0, len(data))], len(data), nursery, budget,
                          block=4096, ahead=3)
        assert await idle.read(0, 100) == data[:100]  # holds its block + read-ahead: all buffers
        other = FileReader(objects, [Piece("c" * 64, 0, len(data))], len(data), nursery,
                           budget, block=4096)
        with trio.fail_after(5):
            assert await other.read(50_000, 10_000) == data[50_000:60_000]
        idle.close()
        other.close()
