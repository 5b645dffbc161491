"""FileReader's pure logic (pieces, holes, read-ahead, the buffer budget) with a fake object map."""

from __future__ import annotations

import os

import trio

from cloudfs.reader import BlockBudget, Extent, FileReader
from sqlfsn import Piece


class FakeStream:
    def __init__(self, store: FakeStore, data: bytes, pos: int, end: int) -> None:
        self.store, self.data, self.pos, self.end = store, data, pos, end

    async def readinto(self, buf: memoryview) -> int:
        await trio.sleep(0)
        if self.store.fail_after is not None and self.store.streamed >= self.store.fail_after:
            raise OSError("stream cut")
        chunk = self.data[self.pos:min(self.end, self.pos + len(buf))]
        buf[:len(chunk)] = chunk
        self.pos += len(chunk)
        self.store.streamed += len(chunk)
        return len(chunk)

    def close(self) -> None:
        self.store.closed += 1


class FakeStore:
    """open_read over the fake objects; counts streams and streamed bytes."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.opened = self.closed = self.streamed = 0
        self.fail_after: int | None = None  # streamed bytes after which every read fails

    def open_read(self, container: str, name: str, offset: int, end: int) -> FakeStream:
        self.opened += 1
        return FakeStream(self, self.objects[name], offset, end)


class FakeObjects:
    """CAS objects in a dict; counts ranged reads. One extent per object (named by digest)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.reads = 0
        self.store = FakeStore(objects)
        self.local = None  # no write-back journal

    async def extents(self, digest: str, size_hint: int) -> list[Extent]:
        return [Extent(0, len(self.objects[digest]), "c", digest)]

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


async def test_sequential_read_ahead_streams():
    """Read-ahead of a sequential reader comes from one stream per object, in order; the block
    read on demand is a ranged read; holes are zeros."""
    a, b = os.urandom(40_000), os.urandom(30_000)
    objects = FakeObjects({"a" * 64: a, "b" * 64: b})
    pieces = [Piece("a" * 64, 100, 39_900), Piece(None, 0, 5000), Piece("b" * 64, 0, 30_000)]
    expected = a[100:] + bytes(5000) + b
    async with trio.open_nursery() as nursery:
        reader = FileReader(objects, pieces, len(expected), nursery, BlockBudget(8), block=4096,
                            ahead=3)
        got = [await reader.read(off, 1000) for off in range(0, len(expected), 1000)]
        assert b"".join(got) == expected
        assert objects.reads == 1  # block 0; every other block was streamed
        assert objects.store.opened == 2  # one stream per object, none for the hole
        reader.close()


async def test_a_failed_stream_falls_back_to_ranged_reads():
    data = os.urandom(64 * 1024)
    objects = FakeObjects({"d" * 64: data})
    objects.store.fail_after = 10_000
    async with trio.open_nursery() as nursery:
        reader = FileReader(objects, [Piece("d" * 64, 0, len(data))], len(data), nursery,
                            BlockBudget(8), block=4096, ahead=3)
        got = [await reader.read(off, 4096) for off in range(0, len(data), 4096)]
        assert b"".join(got) == data
        assert objects.store.opened >= 1 and objects.reads > 3  # the rest came as ranges
        reader.close()


async def test_a_jump_forward_opens_a_new_stream():
    data = os.urandom(256 * 1024)
    objects = FakeObjects({"e" * 64: data})
    async with trio.open_nursery() as nursery:
        reader = FileReader(objects, [Piece("e" * 64, 0, len(data))], len(data), nursery,
                            BlockBudget(8), block=4096, ahead=2)
        for off in (0, 4096, 8192, 200_000, 204_096, 208_192, 10_000):
            assert await reader.read(off, 4096) == data[off:off + 4096]
        assert objects.store.opened == 2
        reader.close()
